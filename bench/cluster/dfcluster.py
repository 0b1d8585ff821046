#!/usr/bin/python3
"""dfcluster: a shaped network-namespace cluster benchmark.

Builds a cluster of hosts out of Linux network namespaces joined by bridges (one bridge per rack,
a router namespace between racks), shapes every host's upload and download and every rack link
with tc tbf, and runs, on the same topology and the same file, one after another:

  origin      every host downloads from the origin (nginx, sendfile on) with curl;
  bittorrent  aria2c on every host, one aria2c seeding on the origin, opentracker as tracker;
  dragonfly   this project: dfscheduler + dfdaemon --seed + dfdaemon per host + dfget per host,
              once per evaluator.

With --image the hosts pull an OCI image (uncompressed random layers) with skopeo instead:

  registry    docker-registry on the origin host; every host pulls from it directly;
  dragonfly   the same daemons, each also a registry mirror; every host pulls through its own.

For each system it records per-host completion times, the last host's time, the bytes the origin
served, and whether every copy's sha256 matches, and prints the last host's time as a ratio to the
lower bound of the topology (see docs/benchmarks.md). Results go to a JSON file and gnuplot PNGs.

Every copy of the file (the origin's, each host's output, each system's own storage) lives on a
tmpfs that the run mounts and removes (--storage disk to use the work dir's disk instead): the
simulated hosts share one machine and one disk, whose write bandwidth no real host shares.

Must run as root. Everything it creates (namespaces, veths, bridges, processes, files) carries the
prefix dfb<pid>- and is removed on exit, on Ctrl-C and on errors. `dfcluster.py cleanup` removes
what a killed run left behind.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY_DIR = Path(__file__).resolve().parent / "topologies"
ALL_SYSTEMS = ("origin", "bittorrent", "dragonfly")
NS_RE = re.compile(r"^dfb(\d+)-")

# tbf: the burst must hold at least one 64 KiB GSO packet (veth passes TSO super-packets; a smaller
# bucket makes tbf segment them in software) and about 5 ms at the rate; latency bounds the queue.
TBF_MIN_BURST_BYTES = 128 * 1024
TBF_BURST_SECONDS = 0.005
TBF_LATENCY = "50ms"

SUBNET_PREFIX = "10.201"  # rack r is 10.201.r.0/24; only ever configured inside our namespaces
ROUTER_HOST_OCTET = 254
SERVICES_HOST_OCTET = 250
ORIGIN_HOST_OCTET = 200
SEED_HOST_OCTET = 201

ORIGIN_HTTP_PORT = 8080
TRACKER_PORT = 6969
BT_LISTEN_PORT = 6881
SEEDER_RPC_PORT = 6800
SCHEDULER_PORT = 8002
SCHEDULER_METRICS_PORT = 8003
SCHEDULER_PORT_STEP = 100  # with --schedulers N, scheduler i listens on SCHEDULER_PORT + i * step
REDIS_PORT = 6379
TRAINER_PORT = 9090        # dftrainer, services namespace (evaluator ml)
TRAINER_METRICS_PORT = 9091
INFERENCE_PORT = 8001      # dfinference, services namespace (evaluator ml)
INFERENCE_METRICS_PORT = 8004
DAEMON_GRPC_PORT = 4000
DAEMON_METRICS_PORT = 4002
DAEMON_PIECE_PORT = 4005
DAEMON_PROXY_PORT = 4001  # dfdaemon's default --proxy-port (registry mirror on 127.0.0.1)
TRACKER_USER = "_opentracker"
REGISTRY_PORT = 5000  # docker-registry in the origin's namespace (--image)
REGISTRY_BIN = "/usr/bin/docker-registry"
SKOPEO_BIN = "/usr/bin/skopeo"
IMAGE_REPO = "test/img"
IMAGE_TAG = "1"
ALL_IMAGE_SYSTEMS = ("registry", "dragonfly")


def log(msg):
    print(f"[dfcluster {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------
# Units


def parse_rate(text):
    """'200mbit', '1gbit', '500kbit', '100Mbit/s' -> bits per second (int)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmg]?)(bit|bps)?(/s)?\s*", str(text).lower())
    if not m:
        raise ValueError(f"bad rate {text!r} (want e.g. 200mbit)")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]
    return int(float(m.group(1)) * scale)


def parse_size(text):
    """'512MiB', '16MiB', '1GiB', '1000000' -> bytes (int)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?)b?\s*", str(text).lower())
    if not m:
        raise ValueError(f"bad size {text!r} (want e.g. 512MiB)")
    base = 1024 if m.group(3) or m.group(2) else 1000
    power = " kmgt".index(m.group(2) or " ")
    return int(float(m.group(1)) * base**power)


def fmt_rate(bps):
    return f"{bps / 1e6:g}mbit" if bps else "unshaped"


def fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


# ----------------------------------------------------------------------------------------------
# Topology


@dataclass
class Rack:
    name: str
    index: int
    up_bps: int  # rack -> router (0 = unshaped)
    down_bps: int  # router -> rack


@dataclass
class Host:
    name: str
    role: str  # origin | seed | peer | services
    rack: Rack
    up_bps: int
    down_bps: int
    ip: str = ""
    ns: str = ""
    idc: str = ""
    location: str = ""
    port: str = ""  # the bridge-side veth name in the switch namespace


@dataclass
class Topology:
    name: str
    description: str
    racks: list
    origin: Host
    seed: Host
    peers: list
    services: Host

    @property
    def receivers(self):
        """The hosts that must end up with the file: the seed host and every peer."""
        return [self.seed] + self.peers

    @property
    def all_hosts(self):
        return [self.origin, self.services] + self.receivers


def load_topology(path):
    path = Path(path)
    if not path.exists() and (TOPOLOGY_DIR / f"{path}.yaml").exists():
        path = TOPOLOGY_DIR / f"{path}.yaml"
    doc = yaml.safe_load(path.read_text())
    defaults = doc.get("defaults", {})

    def rate(spec, key):
        value = spec.get(key, defaults.get(key))
        return parse_rate(value) if value not in (None, 0, "0", "unshaped") else 0

    racks = {}
    for i, r in enumerate(doc.get("racks") or [{"name": "r0"}]):
        racks[r["name"]] = Rack(r["name"], i, rate(r, "up") if "up" in r else 0,
                                rate(r, "down") if "down" in r else 0)
    first_rack = next(iter(racks.values()))

    def host(spec, name, role):
        rack = racks[spec.get("rack", first_rack.name)]
        return Host(name=name, role=role, rack=rack, up_bps=rate(spec, "up"),
                    down_bps=rate(spec, "down"), idc=spec.get("idc", rack.name),
                    location=spec.get("location", f"dc1|{rack.name}"))

    origin = host(doc["origin"], "origin", "origin")
    seed_spec = doc.get("seed", {})
    seed = host(seed_spec, seed_spec.get("name", "seed"), "seed")
    peers = []
    for spec in doc["peers"]:
        count = spec.get("count")
        if count is None:
            peers.append(host(spec, spec["name"], "peer"))
        else:
            prefix = spec.get("name", "p")
            start = spec.get("start", len([p for p in peers if p.name.startswith(prefix)]) + 1)
            for k in range(start, start + count):
                peers.append(host(spec, f"{prefix}{k:02d}", "peer"))
    svc_spec = doc.get("services", {"rack": origin.rack.name})
    services = Host("svc", "services", racks[svc_spec.get("rack", origin.rack.name)], 0, 0)
    names = [h.name for h in [origin, seed, services] + peers]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate host names")
    for h in [origin, seed, services] + peers:
        if not re.fullmatch(r"[a-z0-9]{1,12}", h.name):
            raise ValueError(f"{path}: host name {h.name!r} must be 1-12 chars [a-z0-9]")
    return Topology(doc.get("name", path.stem), doc.get("description", ""), list(racks.values()),
                    origin, seed, peers, services)


# ----------------------------------------------------------------------------------------------
# Lower bound


def lower_bound(topo, file_bytes):
    """Returns (seconds, binding term name, {term: seconds}) for delivering the file to every
    receiver (seed host + peers). Only the origin holds the file at t=0; every receiver may upload.
    Rates are the configured (shaped) rates; TCP/IP overhead is not subtracted."""
    f_bits = file_bytes * 8
    recv = topo.receivers
    n = len(recv)
    u_o = topo.origin.up_bps
    terms = {}
    terms["origin_uplink F/u_o"] = f_bits / u_o
    terms["slowest_download F/d_min"] = f_bits / min(h.down_bps for h in recv)
    terms["aggregate_upload N*F/(u_o+sum u)"] = n * f_bits / (u_o + sum(h.up_bps for h in recv))
    if len(topo.racks) > 1:
        o_rack = topo.origin.rack
        outside = [h for h in recv if h.rack is not o_rack]
        if outside and o_rack.up_bps:
            terms[f"origin_rack_{o_rack.name}_out F/L_out"] = f_bits / o_rack.up_bps
        for rack in topo.racks:
            members = [h for h in recv if h.rack is rack]
            if not members:
                continue
            if rack is not o_rack and rack.down_bps:
                terms[f"rack_{rack.name}_in F/L_in"] = f_bits / rack.down_bps
            supply = sum(h.up_bps for h in members) + (rack.down_bps or float("inf"))
            if rack is o_rack:
                supply += u_o
            if supply != float("inf"):
                terms[f"rack_{rack.name}_supply n_r*F/(sum u_r+L_in)"] = (
                    len(members) * f_bits / supply)
    name = max(terms, key=terms.get)
    return terms[name], name, terms


def origin_only_estimate(topo, file_bytes):
    """A rough time for every receiver to pull from the origin; used only for timeouts."""
    f_bits = file_bytes * 8
    est = len(topo.receivers) * f_bits / topo.origin.up_bps
    if len(topo.racks) > 1:
        o_rack = topo.origin.rack
        outside = [h for h in topo.receivers if h.rack is not o_rack]
        if o_rack.up_bps:
            est = max(est, len(outside) * f_bits / o_rack.up_bps)
        for rack in topo.racks:
            k = len([h for h in topo.receivers if h.rack is rack])
            if rack is not o_rack and rack.down_bps:
                est = max(est, k * f_bits / rack.down_bps)
    return est


# ----------------------------------------------------------------------------------------------
# Processes and commands


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(extra or {})
    return env


def sh(*argv, check=True, capture=False, quiet=False):
    argv = [str(a) for a in argv]
    r = subprocess.run(argv, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(argv)}\n{r.stderr.strip()}")
    if r.returncode != 0 and not quiet and not check:
        pass
    return r.stdout if capture else r.returncode


class Proc:
    """A process started in a namespace; a thread records when it exits."""

    def __init__(self, popen, name):
        self.popen = popen
        self.name = name
        self.end_time = None
        self.returncode = None
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self):
        rc = self.popen.wait()
        self.end_time = time.time()
        self.returncode = rc

    @property
    def pid(self):
        return self.popen.pid

    def running(self):
        return self.end_time is None


class Cluster:
    """Owns every namespace and process of one run. Not thread-safe: one caller thread."""

    def __init__(self, topo, work_dir, prefix):
        self.topo = topo
        self.work = Path(work_dir)
        self.prefix = prefix
        self.namespaces = []
        self.procs = []
        self.sw_ns = f"{prefix}sw"
        self.rt_ns = f"{prefix}rt"

    # -- network ---------------------------------------------------------------------------

    def _add_ns(self, name):
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
           check=False)

    @staticmethod
    def _tbf(ns, dev, bps):
        if not bps:
            return
        burst = max(TBF_MIN_BURST_BYTES, int(bps / 8 * TBF_BURST_SECONDS))
        sh("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{bps}bit",
           "burst", burst, "latency", TBF_LATENCY)

    def build(self):
        topo = self.topo
        multi = len(topo.racks) > 1
        self._add_ns(self.sw_ns)
        for rack in topo.racks:
            br = f"br{rack.index}"
            sh("ip", "-n", self.sw_ns, "link", "add", br, "type", "bridge", "stp_state", "0",
               "forward_delay", "0")
            sh("ip", "-n", self.sw_ns, "link", "set", br, "up")
        if multi:
            self._add_ns(self.rt_ns)
            sh("ip", "netns", "exec", self.rt_ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
            for rack in topo.racks:
                # rN in the router faces rack N (its egress = into the rack); lN is the bridge port
                # (its egress = out of the rack towards the router).
                r_dev, l_dev = f"r{rack.index}", f"l{rack.index}"
                sh("ip", "link", "add", r_dev, "netns", self.rt_ns, "type", "veth", "peer", "name",
                   l_dev, "netns", self.sw_ns)
                sh("ip", "-n", self.sw_ns, "link", "set", l_dev, "master", f"br{rack.index}")
                sh("ip", "-n", self.sw_ns, "link", "set", l_dev, "up")
                sh("ip", "-n", self.rt_ns, "addr", "add",
                   f"{SUBNET_PREFIX}.{rack.index}.{ROUTER_HOST_OCTET}/24", "dev", r_dev)
                sh("ip", "-n", self.rt_ns, "link", "set", r_dev, "up")
                self._tbf(self.rt_ns, r_dev, rack.down_bps)
                self._tbf(self.sw_ns, l_dev, rack.up_bps)
        counters = {r.index: 0 for r in topo.racks}
        for i, h in enumerate(topo.all_hosts):
            if h.role == "origin":
                octet = ORIGIN_HOST_OCTET
            elif h.role == "seed":
                octet = SEED_HOST_OCTET
            elif h.role == "services":
                octet = SERVICES_HOST_OCTET
            else:
                counters[h.rack.index] += 1
                octet = counters[h.rack.index]
            h.ip = f"{SUBNET_PREFIX}.{h.rack.index}.{octet}"
            h.ns = f"{self.prefix}{h.name}"
            h.port = f"h{i}"
            self._add_ns(h.ns)
            sh("ip", "link", "add", "eth0", "netns", h.ns, "type", "veth", "peer", "name", h.port,
               "netns", self.sw_ns)
            sh("ip", "-n", self.sw_ns, "link", "set", h.port, "master", f"br{h.rack.index}")
            sh("ip", "-n", self.sw_ns, "link", "set", h.port, "up")
            sh("ip", "-n", h.ns, "addr", "add", f"{h.ip}/24", "dev", "eth0")
            sh("ip", "-n", h.ns, "link", "set", "eth0", "up")
            if multi:
                sh("ip", "-n", h.ns, "route", "add", "default", "via",
                   f"{SUBNET_PREFIX}.{h.rack.index}.{ROUTER_HOST_OCTET}")
            self._tbf(h.ns, "eth0", h.up_bps)  # upload: host's egress
            self._tbf(self.sw_ns, h.port, h.down_bps)  # download: bridge port's egress to host
        log(f"cluster up: {len(topo.all_hosts)} host namespaces, {len(topo.racks)} rack(s)"
            f"{' + router' if multi else ''}, prefix {self.prefix}")

    def tx_bytes(self, host):
        out = sh("ip", "-n", host.ns, "-s", "-j", "link", "show", "eth0", capture=True)
        return json.loads(out)[0]["stats64"]["tx"]["bytes"]

    # -- processes ------------------------------------------------------------------------

    def start(self, host_or_ns, argv, log_name, env=None, cwd=None):
        ns = host_or_ns if isinstance(host_or_ns, str) else host_or_ns.ns
        log_path = self.work / "logs" / f"{log_name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(["ip", "netns", "exec", ns] + [str(a) for a in argv],
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=clean_env(env), cwd=cwd, start_new_session=True)
        proc = Proc(popen, log_name)
        self.procs.append(proc)
        return proc

    def stop(self, proc, timeout=5.0):
        if proc.running():
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.time() + timeout
            while proc.running() and time.time() < deadline:
                time.sleep(0.05)
            if proc.running():
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.popen.wait()
                time.sleep(0.01)

    def stop_all(self, procs=None):
        procs = list(self.procs if procs is None else procs)
        for p in procs:
            if p.running():
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in procs:
            self.stop(p, timeout=3.0)

    def run_in(self, host, argv, timeout=60):
        return subprocess.run(["ip", "netns", "exec", host.ns] + [str(a) for a in argv],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=clean_env(), timeout=timeout)

    def wait_tcp(self, host, ip, port, timeout=30.0):
        code = (f"import socket,sys,time\nd=time.time()+{timeout}\n"
                f"while time.time()<d:\n"
                f"  try: socket.create_connection(('{ip}',{port}),1).close(); sys.exit(0)\n"
                f"  except OSError: time.sleep(0.1)\nsys.exit(1)")
        return self.run_in(host, ["/usr/bin/python3", "-c", code], timeout=timeout + 5).returncode == 0

    # -- teardown -------------------------------------------------------------------------

    def destroy(self):
        self.stop_all()
        for ns in reversed(self.namespaces):
            kill_ns_processes(ns)
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces = []


def kill_ns_processes(ns):
    """Kills, by pid, whatever still runs in one of our namespaces."""
    out = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True).stdout
    for pid in out.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def cleanup_stale(all_prefixes=False):
    """Removes namespaces of dfcluster runs whose process is gone (or all with all_prefixes)."""
    out = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True).stdout
    removed = 0
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NS_RE.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        alive = Path(f"/proc/{pid}").exists() and pid != os.getpid()
        if alive and not all_prefixes:
            continue
        kill_ns_processes(name)
        sh("ip", "netns", "del", name, check=False)
        removed += 1
    log(f"cleanup: removed {removed} namespace(s)")
    # tmpfs data mounts of runs that were killed (their work dir is /tmp/dfb<pid>-*).
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f if line.startswith("dfcluster-data ")]
    for mnt in mounts:
        m = re.search(r"/dfb(\d+)-", mnt)
        stale = m and not Path(f"/proc/{m.group(1)}").exists()
        if not (stale or all_prefixes):
            continue
        sh("umount", "-l", mnt, check=False)
        log(f"cleanup: unmounted {mnt}")


# ----------------------------------------------------------------------------------------------
# Files, torrents


def make_file(path, size):
    h = hashlib.sha256()
    chunk = 8 << 20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            b = os.urandom(min(chunk, left))
            h.update(b)
            f.write(b)
            left -= len(b)
    return h.hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def run_on_two_threads(items, fn):
    """Calls fn(item) for every item, on 2 threads (hashing copies is CPU-bound; the machine has
    2 cores)."""
    items = list(items)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not items:
                    return
                item = items.pop()
            fn(item)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def check_copies(paths, want):
    """{host: True/False} whether each copy exists and has the source's sha256 (2 threads)."""
    result = {}

    def check(item):
        name, p = item
        result[name] = Path(p).is_file() and sha256_file(p) == want

    run_on_two_threads(paths.items(), check)
    return result


def bencode(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(bencode(i) for i in x) + b"e"
    if isinstance(x, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in x.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(type(x))


def bdecode(data):
    def dec(i):
        c = data[i:i + 1]
        if c == b"i":
            j = data.index(b"e", i)
            return int(data[i + 1:j]), j + 1
        if c in (b"l", b"d"):
            i += 1
            items = []
            while data[i:i + 1] != b"e":
                v, i = dec(i)
                items.append(v)
            if c == b"l":
                return items, i + 1
            return dict(zip(items[::2], items[1::2])), i + 1
        j = data.index(b":", i)
        n = int(data[i:j])
        return data[j + 1:j + 1 + n], j + 1 + n

    return dec(0)[0]


def torrent_piece_length(size):
    """Power of two from 256 KiB to 4 MiB giving at most about 1000 pieces."""
    pl = 256 << 10
    while size / pl > 1000 and pl < (4 << 20):
        pl *= 2
    return pl


def make_torrent(path, name, announce, piece_length):
    """Writes a single-file private torrent for `path`; returns (bytes, info_hash bytes)."""
    pieces = bytearray()
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(piece_length)
            if not b:
                break
            size += len(b)
            pieces += hashlib.sha1(b).digest()
    info = {"name": name, "length": size, "piece length": piece_length, "pieces": bytes(pieces),
            "private": 1}
    meta = {"announce": announce, "info": info, "created by": "dfcluster",
            "creation date": int(time.time())}
    return bencode(meta), hashlib.sha1(bencode(info)).digest()


# ----------------------------------------------------------------------------------------------
# OCI images (--image)


@dataclass
class Blob:
    digest: str  # sha256:HEX
    size: int
    media_type: str


@dataclass
class Image:
    """An OCI image of random tar layers, as pushed to the registry. `blobs` are the layers and
    the config: what a pull fetches by digest (the manifest is fetched by tag)."""
    layers: list
    config: Blob
    manifest: Blob

    @property
    def blobs(self):
        return self.layers + [self.config]

    @property
    def blob_bytes(self):
        return sum(b.size for b in self.blobs)


class _RandomReader:
    """A file-like source of `size` random bytes, for tarfile."""

    def __init__(self, size):
        self.left = size

    def read(self, n=-1):
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


class _HashingWriter:
    """Writes to a file while hashing what passes (sha256) and counting it."""

    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, b):
        self.sha.update(b)
        self.f.write(b)
        self.size += len(b)
        return len(b)


def _write_blob(layout, data, media_type):
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    return Blob(f"sha256:{digest}", len(data), media_type)


def _descriptor(b):
    return {"mediaType": b.media_type, "digest": b.digest, "size": b.size}


def make_image(layout, content_bytes, layers):
    """Writes an OCI image layout at `layout`, tagged IMAGE_TAG: `layers` uncompressed tar layers
    (media type ...layer.v1.tar), each one member of content_bytes / layers random bytes, so
    nothing can be saved by compression and no CPU goes to gzip; the config names their diff_ids
    (an uncompressed layer's diff_id is its digest). Returns the Image."""
    blob_dir = layout / "blobs/sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    per_layer = content_bytes // layers
    out = []
    for i in range(layers):
        tmp = blob_dir / f"layer{i}.tmp"
        with open(tmp, "wb") as f:
            w = _HashingWriter(f)
            with tarfile.open(fileobj=w, mode="w|", format=tarfile.USTAR_FORMAT,
                              copybufsize=1 << 20) as tar:
                info = tarfile.TarInfo(f"layer{i}.bin")
                info.size = per_layer + (content_bytes % layers if i == layers - 1 else 0)
                info.mode = 0o644
                tar.addfile(info, _RandomReader(info.size))
        digest = w.sha.hexdigest()
        tmp.rename(blob_dir / digest)
        out.append(Blob(f"sha256:{digest}", w.size, "application/vnd.oci.image.layer.v1.tar"))
    config = _write_blob(layout, json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [b.digest for b in out]}}).encode(),
        "application/vnd.oci.image.config.v1+json")
    manifest = _write_blob(layout, json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _descriptor(config), "layers": [_descriptor(b) for b in out]}).encode(),
        "application/vnd.oci.image.manifest.v1+json")
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [dict(
        _descriptor(manifest), annotations={"org.opencontainers.image.ref.name": IMAGE_TAG})]}
    (layout / "index.json").write_text(json.dumps(index))
    return Image(out, config, manifest)


def registry_conf(addr, storage):
    """docker-registry (distribution 2.x) configuration: filesystem storage, plain HTTP on
    `addr`, access log (Apache combined format) on stdout."""
    return (f"version: 0.1\nlog:\n  level: warn\n  formatter: text\n"
            f"  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
            f"  delete:\n    enabled: false\n"
            f"http:\n  addr: {addr}\n  secret: dfcluster\n")


REGISTRY_ACCESS_RE = re.compile(rb'"(\w+) (\S+) [^"]*" (\d{3}) (\d+|-)')


def registry_log_bytes(path, offset):
    """From the registry's access log after `offset`: (body bytes sent, requests, blob GETs)."""
    total = reqs = blob_gets = 0
    if not path.exists():
        return 0, 0, 0
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            m = REGISTRY_ACCESS_RE.search(line)
            if not m:
                continue
            reqs += 1
            if m.group(4) != b"-":
                total += int(m.group(4))
            if m.group(1) == b"GET" and b"/blobs/sha256:" in m.group(2):
                blob_gets += 1
    return total, reqs, blob_gets


def skopeo_argv(ctx, *args):
    """skopeo with an empty registries.conf (the machine's plays no part) and no policy file."""
    return [SKOPEO_BIN, "--registries-conf", ctx.cluster.work / "empty-registries.conf",
            "--insecure-policy"] + list(args)


def skopeo_pull_argv(ctx, registry, out):
    """Pulls the image into an OCI layout at `out`. Into an OCI layout skopeo fetches the layers
    in parallel, as containerd (3 at a time) and podman do; into a dir: it fetches them one after
    the other (skopeo 1.9: that destination has no thread-safe PutBlob). --preserve-digests: it
    would otherwise gzip each uncompressed layer on the host (CPU no runtime spends)."""
    return skopeo_argv(ctx, "copy", "--src-tls-verify=false", "--preserve-digests",
                       f"docker://{registry}/{IMAGE_REPO}:{IMAGE_TAG}", f"oci:{out}:{IMAGE_TAG}")


def check_image_copies(outs, image):
    """{host: True/False}: every blob of the image is in the host's OCI layout (blobs/sha256/HEX)
    and hashes to its digest (2 threads)."""
    result = {name: True for name in outs}

    def check(item):
        name, b = item
        p = Path(outs[name]) / "blobs/sha256" / b.digest.split(":", 1)[1]
        if not (p.is_file() and p.stat().st_size == b.size and
                "sha256:" + sha256_file(p) == b.digest):
            result[name] = False

    run_on_two_threads([(name, b) for name in outs for b in image.blobs], check)
    return result


def start_registry(ctx):
    """docker-registry in the origin's namespace on ORIGIN_IP:REGISTRY_PORT, storage under the
    work dir; pushes the image from its OCI layout with skopeo (inside the origin's namespace, so
    the push crosses no shaped link), then deletes the layout: the registry holds the bytes."""
    cl, o = ctx.cluster, ctx.topo.origin
    storage = cl.work / "registry"
    storage.mkdir(exist_ok=True)
    conf = cl.work / "registry.yml"
    conf.write_text(registry_conf(f"{o.ip}:{REGISTRY_PORT}", storage))
    (cl.work / "empty-registries.conf").write_text("")
    cl.start(o, [REGISTRY_BIN, "serve", conf], "registry")
    if not cl.wait_tcp(o, o.ip, REGISTRY_PORT, timeout=15):
        raise RuntimeError("docker-registry did not listen (see logs/registry.log)")
    layout = cl.work / "image"
    t = time.time()
    # --preserve-digests: skopeo would otherwise gzip the uncompressed layers on the way.
    r = cl.run_in(o, skopeo_argv(ctx, "copy", "--dest-tls-verify=false", "--preserve-digests",
                                 f"oci:{layout}:{IMAGE_TAG}",
                                 f"docker://{ctx.registry}/{IMAGE_REPO}:{IMAGE_TAG}"), timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"skopeo push failed: {r.stderr.strip()}")
    shutil.rmtree(layout.resolve(), ignore_errors=True)  # on tmpfs, `layout` is a symlink
    # The registry must serve what was built, byte for byte (no recompression on the way).
    for b in ctx.image.blobs:
        url = f"http://{ctx.registry}/v2/{IMAGE_REPO}/blobs/{b.digest}"
        r = cl.run_in(o, ["curl", "-sSI", "--fail", url])
        if r.returncode != 0:
            raise RuntimeError(f"the registry does not have {b.digest} after the push: "
                               f"{r.stderr.strip()}")
    log(f"registry: pushed {IMAGE_REPO}:{IMAGE_TAG} ({time.time() - t:.1f} s)")


# ----------------------------------------------------------------------------------------------
# The benchmark


@dataclass
class RunContext:
    args: argparse.Namespace
    topo: Topology
    cluster: Cluster
    file_bytes: int
    file_path: Path
    file_sha256: str
    file_url: str
    bound: float
    bound_term: str
    bound_terms: dict
    timeout: float
    calibration: dict = field(default_factory=dict)
    access_log: Path = None
    # --image: the image, the registry's address (ORIGIN_IP:PORT) and its access log; file_bytes
    # is then the image's blob bytes and file_url its largest layer's blob URL (calibration).
    image: Image = None
    registry: str = ""
    registry_log: Path = None


def nginx_conf(ctx, www, logs):
    o = ctx.topo.origin
    return f"""worker_processes 1;
user root;
daemon off;
pid {logs}/nginx.pid;
error_log {logs}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  log_format dfb '$msec $remote_addr "$request" $status $bytes_sent $body_bytes_sent $request_time';
  access_log {logs}/nginx-access.log dfb;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path {logs}/tmp-body;
  proxy_temp_path {logs}/tmp-proxy;
  fastcgi_temp_path {logs}/tmp-fastcgi;
  uwsgi_temp_path {logs}/tmp-uwsgi;
  scgi_temp_path {logs}/tmp-scgi;
  server {{
    listen {o.ip}:{ORIGIN_HTTP_PORT} reuseport backlog=4096;
    root {www};
  }}
}}
"""


def access_log_bytes(path, offset):
    """Sum of body bytes of requests logged after `offset`; (bytes, requests)."""
    total = reqs = 0
    if not path.exists():
        return 0, 0
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                try:
                    total += int(parts[-2])
                    reqs += 1
                except ValueError:
                    pass
    return total, reqs


def log_size(path):
    return path.stat().st_size if path.exists() else 0


def calibrate(ctx):
    """Single curl from the origin to one receiver per rack: measured goodput / shaped rate."""
    topo, cl = ctx.topo, ctx.cluster
    url_bytes = max(b.size for b in ctx.image.layers) if ctx.image else ctx.file_bytes
    out = {}
    targets = []
    for rack in topo.racks:
        members = [h for h in topo.receivers if h.rack is rack]
        if members:
            targets.append(members[0])
    for h in targets:
        rates = [topo.origin.up_bps, h.down_bps]
        if h.rack is not topo.origin.rack:
            rates += [topo.origin.rack.up_bps, h.rack.down_bps]
        expect = min(r for r in rates if r)
        n = min(url_bytes, int(expect / 8 * 4.0))  # about 4 s of transfer
        r = cl.run_in(h, ["curl", "-sS", "--fail", "-o", "/dev/null", "-r", f"0-{n - 1}", "-w",
                          "%{speed_download}", ctx.file_url], timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"calibration curl on {h.name} failed: {r.stderr.strip()}")
        bps = float(r.stdout) * 8
        out[f"origin->{h.name}"] = {"expected_bps": expect, "measured_bps": bps,
                                    "ratio": bps / expect, "bytes": n}
        log(f"calibration: origin->{h.name} curl {bps / 1e6:.1f} Mbit/s = {bps / expect:.3f} x "
            f"{fmt_rate(expect)} (TCP payload over shaped L2 rate; ~0.93-0.96 expected)")
    return out


def wait_all(procs_or_checks, timeout, label):
    """Polls until every check() is true or timeout; returns True when all finished."""
    deadline = time.time() + timeout
    last_report = time.time()
    while time.time() < deadline:
        pending = [c for c in procs_or_checks if not c()]
        if not pending:
            return True
        if time.time() - last_report > 30:
            log(f"{label}: {len(procs_or_checks) - len(pending)}/{len(procs_or_checks)} done")
            last_report = time.time()
        time.sleep(0.05)
    return False


class LinkSampler:
    """What every host's link carried, sampled once a second while a system runs: one
    `ip -s link` of the switch namespace, where each host's veth port counts the host's upload
    (rx) and download (tx). Cheap (one process a second) and independent of the system's logs, so
    it also works for BitTorrent and for runs without debug logs."""

    def __init__(self, cluster, hosts, period=1.0):
        self.cluster, self.period = cluster, period
        self.ports = {h.port: h.name for h in hosts}
        self.samples = []  # (seconds since start, {name: (up bytes, down bytes)})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self):
        out = sh("ip", "-n", self.cluster.sw_ns, "-s", "-j", "link", "show", capture=True)
        seen = {}
        for link in json.loads(out):
            name = self.ports.get(link.get("ifname"))
            if name:
                st = link["stats64"]
                seen[name] = (st["rx"]["bytes"], st["tx"]["bytes"])
        return seen

    def _run(self):
        t0 = time.time()
        while not self._stop.is_set():
            try:
                self.samples.append((time.time() - t0, self._read()))
            except Exception as e:  # a sample lost is not a run lost
                log(f"link sampler: {e}")
            self._stop.wait(self.period)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.samples.append((self.samples[-1][0] + self.period if self.samples else 0,
                                 self._read()))
        except Exception:
            pass

    def trace(self):
        """{"seconds": [...], "up_mbit": {host: [...]}, "down_mbit": {host: [...]}}: the mean
        rate between consecutive samples."""
        out = {"seconds": [], "up_mbit": {n: [] for n in self.ports.values()},
               "down_mbit": {n: [] for n in self.ports.values()}}
        for (t_a, a), (t_b, b) in zip(self.samples, self.samples[1:]):
            dt = t_b - t_a
            if dt <= 0:
                continue
            out["seconds"].append(round(t_b, 2))
            for n in self.ports.values():
                ua, da = a.get(n, (0, 0))
                ub, db = b.get(n, (0, 0))
                out["up_mbit"][n].append(round((ub - ua) * 8 / dt / 1e6, 1))
                out["down_mbit"][n].append(round((db - da) * 8 / dt / 1e6, 1))
        return out


def print_link_trace(trace, label, window=10.0):
    """Upload per host in `window`-second columns, and the sum over all hosts."""
    secs = trace["seconds"]
    if not secs:
        return
    cols = int(secs[-1] // window) + 1
    lines = [f"{label}: upload, Mbit/s per {window:g} s window (link counters)",
             "host    " + "".join(f"{int(i * window):>6}" for i in range(cols))]
    total = [0.0] * cols
    for name, series in trace["up_mbit"].items():
        acc, cnt = [0.0] * cols, [0] * cols
        for t, v in zip(secs, series):
            i = min(int((t - 1e-9) // window), cols - 1)
            acc[i] += v
            cnt[i] += 1
        means = [acc[i] / cnt[i] if cnt[i] else 0.0 for i in range(cols)]
        total = [x + y for x, y in zip(total, means)]
        lines.append(f"{name:<8}" + "".join(f"{m:>6.0f}" for m in means))
    lines.append(f"{'all':<8}" + "".join(f"{m:>6.0f}" for m in total))
    print("\n".join(lines), flush=True)


def result_record(ctx, system, times, ok, origin_bytes, origin_reqs, tx_bytes, extra=None):
    topo = ctx.topo
    names = [h.name for h in topo.receivers]
    completed = all(times.get(n) is not None for n in names)
    sha_ok = bool(ok) and all(ok.get(n, False) for n in names)
    last = max(times.values()) if completed and times else None
    rec = {
        "system": system,
        "topology": topo.name,
        "file_bytes": ctx.file_bytes,
        "hosts": len(names),
        "completed": completed,
        "last_host_seconds": round(last, 3) if last is not None else None,
        "mean_host_seconds": (round(sum(times.values()) / len(times), 3) if completed else None),
        "lower_bound_seconds": round(ctx.bound, 3),
        "lower_bound_term": ctx.bound_term,
        "ratio_to_bound": round(last / ctx.bound, 3) if last is not None else None,
        "origin_bytes_served": origin_bytes,
        "origin_requests": origin_reqs,
        "origin_tx_bytes": tx_bytes,
        "origin_copies_served": round(origin_bytes / ctx.file_bytes, 3),
        "sha256_ok": sha_ok,
        "storage": ctx.args.storage,
        "sha256_per_host": ok,
        "per_host_seconds": {n: (round(times[n], 3) if times.get(n) is not None else None)
                             for n in names},
    }
    rec.update(extra or {})
    return rec


def out_path(ctx, host, system):
    d = ctx.cluster.work / "hosts" / host.name / system
    d.mkdir(parents=True, exist_ok=True)
    return d


def remove_copies(ctx, system):
    for h in ctx.topo.receivers:
        shutil.rmtree(ctx.cluster.work / "hosts" / h.name / system, ignore_errors=True)


def run_direct(ctx, system, tool, out_name, argv_for, log_path, served_from_log, check):
    """Every receiver fetches straight from the origin host at once (the baselines): `argv_for`
    (host, out path) is its `tool` command; `served_from_log`(log, offset) gives (bytes, requests, extra
    fields) from the origin's access log; `check`(outs) gives {host: ok}."""
    cl, topo = ctx.cluster, ctx.topo
    outs = {h.name: out_path(ctx, h, system) / out_name for h in topo.receivers}
    off = log_size(log_path)
    tx0 = cl.tx_bytes(topo.origin)
    t0 = time.time()
    procs = {h.name: cl.start(h, argv_for(h, outs[h.name]), f"{system}-{tool}-{h.name}")
             for h in topo.receivers}
    finished = wait_all([lambda p=p: not p.running() for p in procs.values()], ctx.timeout,
                        system)
    cl.stop_all(procs.values())
    time.sleep(0.3)
    times = {n: p.end_time - t0 for n, p in procs.items() if p.returncode == 0}
    failures = {n: p.returncode for n, p in procs.items() if p.returncode != 0}
    served, reqs, extra = served_from_log(log_path, off)
    ok = check(outs)
    remove_copies(ctx, system)
    return result_record(ctx, system, times, ok, served, reqs, cl.tx_bytes(topo.origin) - tx0,
                         {"timed_out": not finished, "failures": failures, **extra})


def run_origin(ctx):
    return run_direct(
        ctx, "origin", "curl", "file",
        lambda h, out: ["curl", "-sS", "--fail", "-o", out, ctx.file_url],
        ctx.access_log, lambda log, off: (*access_log_bytes(log, off), {}),
        lambda outs: check_copies(outs, ctx.file_sha256))


def run_registry(ctx):
    """--image baseline: every receiver pulls the image from the registry with skopeo, all at
    once, into an OCI layout."""
    def served(log, off):
        n, reqs, blob_gets = registry_log_bytes(log, off)
        return n, reqs, {"registry_blob_gets": blob_gets}

    return run_direct(
        ctx, "registry", "skopeo", "img",
        lambda h, out: skopeo_pull_argv(ctx, ctx.registry, out),
        ctx.registry_log, served, lambda outs: check_image_copies(outs, ctx.image))


def seeder_upload_bytes(ctx):
    body = json.dumps({"jsonrpc": "2.0", "id": "1", "method": "aria2.tellActive",
                       "params": ["token:dfb", ["uploadLength"]]})
    r = ctx.cluster.run_in(ctx.topo.origin, ["curl", "-s", "--max-time", "5", "-d", body,
                                             f"http://127.0.0.1:{SEEDER_RPC_PORT}/jsonrpc"])
    try:
        return sum(int(x["uploadLength"]) for x in json.loads(r.stdout)["result"])
    except (ValueError, KeyError, TypeError):
        return None


def aria2_common():
    return ["aria2c", "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
            "--enable-peer-exchange=false", f"--listen-port={BT_LISTEN_PORT}",
            "--bt-tracker-interval=5", "--seed-ratio=0.0", "--file-allocation=none",
            "--summary-interval=0", "--console-log-level=warn", "--allow-overwrite=true",
            "--auto-file-renaming=false", "--max-overall-upload-limit=0",
            "--bt-max-peers=0", "--disable-ipv6=true",
            "--show-console-readout=false"]


def tracker_complete(ctx, info_hash):
    q = urllib.parse.quote_from_bytes(info_hash)
    url = f"http://{ctx.topo.services.ip}:{TRACKER_PORT}/scrape?info_hash={q}"
    r = subprocess.run(["ip", "netns", "exec", ctx.topo.services.ns, "curl", "-s", "--max-time",
                        "2", url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       env=clean_env())
    try:
        files = bdecode(r.stdout)[b"files"]
        return files[info_hash][b"complete"]
    except Exception:  # noqa: BLE001 - tracker not up yet or odd reply
        return 0


def run_bittorrent(ctx):
    cl, topo = ctx.cluster, ctx.topo
    bt = cl.work / "bt"
    tracker_dir = bt / "tracker"
    tracker_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(bt, 0o755)
    os.chmod(tracker_dir, 0o755)
    announce = f"http://{topo.services.ip}:{TRACKER_PORT}/announce"
    piece_length = ctx.args.bt_piece_length or torrent_piece_length(ctx.file_bytes)
    data, info_hash = make_torrent(ctx.file_path, "file", announce, piece_length)
    torrent = bt / "file.torrent"
    torrent.write_bytes(data)
    (tracker_dir / "whitelist.txt").write_text(info_hash.hex() + "\n")
    os.chmod(tracker_dir / "whitelist.txt", 0o644)
    log(f"bittorrent: torrent {info_hash.hex()} piece length {fmt_bytes(piece_length)}")
    ensure_tracker_user()
    tracker = cl.start(topo.services, ["opentracker", "-i", topo.services.ip, "-p", TRACKER_PORT,
                                       "-P", TRACKER_PORT, "-u", TRACKER_USER, "-d", tracker_dir,
                                       "-w", "/whitelist.txt"], "bt-tracker")
    if not cl.wait_tcp(topo.services, topo.services.ip, TRACKER_PORT, timeout=10):
        raise RuntimeError("opentracker did not start (see logs/bt-tracker.log)")
    tx0 = cl.tx_bytes(topo.origin)
    # The seeder serves the origin's copy: the origin host is where the file lives.
    seeder = cl.start(topo.origin, aria2_common() + [
        f"--dir={ctx.file_path.parent}", "--bt-seed-unverified=true", "--check-integrity=false",
        "--enable-rpc=true", f"--rpc-listen-port={SEEDER_RPC_PORT}", "--rpc-secret=dfb", torrent], "bt-seeder")
    if not wait_all([lambda: tracker_complete(ctx, info_hash) >= 1], 20, "bt seeder"):
        raise RuntimeError("the seeding aria2c never announced to the tracker (see logs)")
    hook = bt / "done-hook.sh"
    hook.write_text('#!/bin/sh\ndate +%s.%N > "$DFB_DONE_FILE"\n')
    os.chmod(hook, 0o755)
    done_files = {h.name: bt / f"done-{h.name}" for h in topo.receivers}
    outs = {}
    procs = {}
    sampler = LinkSampler(cl, [topo.origin] + list(topo.receivers)).start()
    t0 = time.time()
    for h in topo.receivers:
        d = out_path(ctx, h, "bittorrent")
        outs[h.name] = d / "file"
        procs[h.name] = cl.start(h, aria2_common() + [
            f"--dir={d}", f"--on-bt-download-complete={hook}", torrent],
            f"bt-leecher-{h.name}", env={"DFB_DONE_FILE": str(done_files[h.name])})
    finished = wait_all([lambda f=f: f.exists() and f.stat().st_size > 0
                         for f in done_files.values()], ctx.timeout, "bittorrent")
    sampler.stop()
    link_trace = sampler.trace()
    print_link_trace(link_trace, "bittorrent")
    time.sleep(0.2)
    served = seeder_upload_bytes(ctx)
    tx = cl.tx_bytes(topo.origin) - tx0
    cl.stop_all(list(procs.values()) + [seeder, tracker])
    times = {}
    for name, f in done_files.items():
        try:
            times[name] = float(f.read_text().strip()) - t0
        except (OSError, ValueError):
            pass
    failures = {n: p.returncode for n, p in procs.items()
                if n not in times and p.returncode not in (None, 0)}
    ok = check_copies(outs, ctx.file_sha256)
    remove_copies(ctx, "bittorrent")
    return result_record(ctx, "bittorrent", times, ok, served if served is not None else -1, None,
                         tx, {"timed_out": not finished, "failures": failures,
                              "torrent_piece_length": piece_length, "link_trace": link_trace,
                              "info_hash": info_hash.hex(),
                              "origin_bytes_note": "uploadLength of the seeding aria2c"})


def ensure_tracker_user():
    r = subprocess.run(["getent", "passwd", TRACKER_USER], stdout=subprocess.DEVNULL)
    if r.returncode != 0:
        log(f"creating system user {TRACKER_USER} for opentracker (it refuses to run as root)")
        sh("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
           TRACKER_USER)


def dragonfly_binaries(build_dir, evaluator="default"):
    b = Path(build_dir)
    bins = {"dfscheduler": b / "src/scheduler/dfscheduler", "dfdaemon": b / "src/daemon/dfdaemon",
            "dfget": b / "src/dfget/dfget"}
    if evaluator == "ml":
        bins["dftrainer"] = b / "src/trainer/dftrainer"
        bins["dfinference"] = b / "src/inference/dfinference"
    return bins


def start_learning_loop(ctx, system, bins):
    """For --evaluators ml: dftrainer and dfinference in the services namespace over one model
    repository in the run's work dir. Returns (procs, extra dfscheduler args)."""
    cl, svc = ctx.cluster, ctx.topo.services
    base = cl.work / "learning" / system
    repo, dataset = base / "repo", base / "dataset"
    repo.mkdir(parents=True, exist_ok=True)
    procs = [
        cl.start(svc, [bins["dftrainer"], "--listen", f"{svc.ip}:{TRAINER_PORT}", "--metrics",
                       f"{svc.ip}:{TRAINER_METRICS_PORT}", "--repo", repo, "--threads", "1"],
                 f"{system}-dftrainer"),
        cl.start(svc, [bins["dfinference"], "--repo", repo, "--listen",
                       f"{svc.ip}:{INFERENCE_PORT}", "--metrics",
                       f"{svc.ip}:{INFERENCE_METRICS_PORT}", "--poll-interval", "1s"],
                 f"{system}-dfinference")]
    for port, name in ((TRAINER_PORT, "dftrainer"), (INFERENCE_PORT, "dfinference")):
        if not cl.wait_tcp(svc, svc.ip, port, timeout=30):
            raise RuntimeError(f"{name} did not listen (see logs/{system}-{name}.log)")
    args = ["--inference", f"{svc.ip}:{INFERENCE_PORT}", "--trainer", f"{svc.ip}:{TRAINER_PORT}",
            "--trainer-interval", "2s", "--dataset-dir", dataset]
    return procs, args


def scrape(ctx, host, addr):
    """The /metrics text of http://addr/ seen from `host`'s namespace ("" when it fails)."""
    code = (f"import urllib.request\n"
            f"print(urllib.request.urlopen('http://{addr}/metrics', timeout=5).read().decode())")
    try:
        r = ctx.cluster.run_in(host, ["/usr/bin/python3", "-c", code], timeout=15)
    except subprocess.TimeoutExpired:
        return ""
    return r.stdout


def metric(text, name):
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == name:
            return float(value)
    return None


def wait_for_model(ctx, system, timeout=240):
    """After the warm-up files: waits until dftrainer published a version, then gives the ml
    evaluator time to fetch predictions for the pairs it queued. Returns seconds waited."""
    svc, t0 = ctx.topo.services, time.time()
    while time.time() - t0 < timeout:
        text = scrape(ctx, svc, f"{svc.ip}:{TRAINER_METRICS_PORT}")
        if (metric(text, "df_trainer_versions_published_total") or 0) >= 1:
            time.sleep(5)  # dfinference polls every second; failed calls retry every 2 s
            return time.time() - t0
        time.sleep(1)
    raise RuntimeError(f"{system}: no model version published within {timeout} s "
                       f"(see logs/{system}-dftrainer.log)")


def announce_args(args, h, announce):
    """The link rates a dfdaemon announces: `exact` (its shaping times --upload-rate-factor),
    `none` (nothing: the scheduler must learn them), or a nominal RATE for every host whatever its
    shaping (an operator who writes the NIC speed everywhere)."""
    if announce == "none":
        return []
    if announce == "exact":
        up = int(h.up_bps * args.upload_rate_factor)
        down = int(h.down_bps * args.upload_rate_factor)
        return ["--upload-rate", fmt_rate(up), "--download-rate", fmt_rate(down)] if up and down else []
    return ["--upload-rate", announce, "--download-rate", announce]


def dragonfly_name(evaluator, announce, schedulers=1):
    suffix = f"-s{schedulers}" if schedulers > 1 else ""
    return f"dragonfly-{evaluator}-{announce}{suffix}"


def start_redis(ctx, system):
    """One redis-server in the services namespace for --schedulers N > 1: no persistence, its own
    dir under the work dir, stopped by pid with the rest. Returns (proc, redis:// url)."""
    cl, svc = ctx.cluster, ctx.topo.services
    rdir = cl.work / "redis" / system
    rdir.mkdir(parents=True, exist_ok=True)
    proc = cl.start(svc, ["redis-server", "--bind", svc.ip, "--port", REDIS_PORT, "--save", "",
                          "--appendonly", "no", "--dir", rdir, "--daemonize", "no",
                          "--protected-mode", "no", "--logfile", ""], f"{system}-redis")
    if not cl.wait_tcp(svc, svc.ip, REDIS_PORT, timeout=10):
        raise RuntimeError(f"redis-server did not listen on {svc.ip}:{REDIS_PORT} "
                           f"(see logs/{system}-redis.log)")
    return proc, f"redis://{svc.ip}:{REDIS_PORT}/0"


def scheduler_counters(ctx, metrics_addr):
    """What one dfscheduler did, from its /metrics: host announces (every host announces to every
    scheduler), peers registered and piece reports (only for the tasks that hash to it)."""
    code = (f"import urllib.request\n"
            f"print(urllib.request.urlopen('http://{metrics_addr}/metrics', timeout=5)"
            f".read().decode())")
    try:
        r = ctx.cluster.run_in(ctx.topo.services, ["/usr/bin/python3", "-c", code], timeout=15)
    except subprocess.TimeoutExpired:
        return {}
    wanted = {"df_scheduler_host_announces_total": "host_announces",
              "df_scheduler_registered_peers_total": "registered_peers",
              'df_scheduler_peer_announces_total{type="piece_finished"}': "piece_reports",
              'df_scheduler_ml_decisions_total{result="model"}': "ml_decisions_model",
              'df_scheduler_ml_decisions_total{result="cold"}': "ml_decisions_cold",
              'df_scheduler_ml_decisions_total{result="unavailable"}': "ml_decisions_unavailable",
              "df_scheduler_ml_predictions_total": "ml_predictions"}
    counters = {}
    for line in r.stdout.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            counters[wanted[name]] = int(float(value))
    return counters


def daemon_counters(ctx, hosts):
    """Counters summed over the dfdaemons' /metrics (read before they stop): pieces forwarded
    while still arriving (cut-through), endgame duplicate bytes, bytes uploaded, and with --image
    the mirrors' requests by kind."""
    wanted = {"df_daemon_forwarded_pieces_total": "forwarded_pieces",
              "df_daemon_endgame_duplicate_bytes_total": "endgame_duplicate_bytes",
              "df_daemon_upload_bytes_total": "upload_bytes"}
    if ctx.image:  # what the registry mirrors did: blobs served P2P, or from the registry
        wanted.update({f'df_daemon_proxy_requests_total{{kind="{k}"}}': f"mirror_{k}"
                       for k in ("p2p", "fallback", "pass_through", "refused", "error")})
    totals = {}
    for h in hosts:
        code = (f"import urllib.request\n"
                f"print(urllib.request.urlopen('http://{h.ip}:{DAEMON_METRICS_PORT}/metrics', "
                f"timeout=5).read().decode())")
        try:
            r = ctx.cluster.run_in(h, ["/usr/bin/python3", "-c", code], timeout=15)
        except subprocess.TimeoutExpired:
            continue
        for line in r.stdout.splitlines():
            name, _, value = line.rpartition(" ")
            if name in wanted:
                key = wanted[name]
                totals[key] = totals.get(key, 0) + int(float(value))
    return totals


def proc_usage(pid):
    """(user+system CPU seconds, peak RSS bytes) of a live process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/status") as f:
            hwm = next((int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:")), 0)
        return cpu, hwm
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def daemon_usage(daemons, hosts_done, file_bytes):
    """CPU and peak RSS of the dfdaemons (read before they are stopped; `ip netns exec` execs,
    so each process is the daemon itself). CPU per delivered GiB divides all daemons' CPU by
    the bytes the hosts received (hosts that finished x file size)."""
    per = {}
    for p in daemons:
        u = proc_usage(p.pid)
        if u:
            per[p.name.split("-dfdaemon-")[-1]] = {"cpu_seconds": round(u[0], 2),
                                                   "peak_rss_bytes": u[1]}
    if not per:
        return {}
    cpu = sum(v["cpu_seconds"] for v in per.values())
    delivered_gib = hosts_done * file_bytes / 2**30
    return {"cpu_seconds_total": round(cpu, 2),
            "cpu_seconds_per_delivered_gib": round(cpu / delivered_gib, 3) if delivered_gib else None,
            "peak_rss_bytes_max": max(v["peak_rss_bytes"] for v in per.values()),
            "per_daemon": per}


def run_dragonfly(ctx, evaluator, announce="exact"):
    cl, topo, args = ctx.cluster, ctx.topo, ctx.args
    n_sched = args.schedulers
    system = dragonfly_name(evaluator, announce, n_sched)
    bins = dragonfly_binaries(args.build_dir, evaluator)
    missing = [str(p) for p in bins.values() if not os.access(p, os.X_OK)]
    if missing:
        log(f"{system}: skipped: binaries missing ({', '.join(missing)})")
        return {"system": system, "topology": topo.name, "skipped": "binaries missing",
                "missing": missing, "completed": False, "sha256_ok": None,
                "last_host_seconds": None, "lower_bound_seconds": round(ctx.bound, 3),
                "origin_bytes_served": None}
    # Run copies: the build dir is rebuilt by others while a long benchmark runs.
    bin_dir = cl.work / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, path in list(bins.items()):
        shutil.copy2(path, bin_dir / name)
        bins[name] = bin_dir / name
    svc = topo.services
    ports = [SCHEDULER_PORT + i * SCHEDULER_PORT_STEP for i in range(n_sched)]
    metrics_addrs = [f"{svc.ip}:{SCHEDULER_METRICS_PORT + i * SCHEDULER_PORT_STEP}"
                     for i in range(n_sched)]
    sched_addr = ",".join(f"{svc.ip}:{p}" for p in ports)  # dfdaemon --scheduler a:p1,a:p2,...
    df = cl.work / "df" / system  # each run starts with empty caches
    started = []
    sched_counters = []
    image_extra = {}
    try:
        store_args = []
        if evaluator == "ml":
            procs, ml_args = start_learning_loop(ctx, system, bins)
            started.extend(procs)
            store_args += ml_args
        if n_sched > 1:
            redis, url = start_redis(ctx, system)
            started.append(redis)
            store_args += ["--store", url]
        for i, port in enumerate(ports):
            log_name = f"{system}-scheduler" + (f"-{i}" if n_sched > 1 else "")
            started.append(cl.start(svc, [bins["dfscheduler"], "--listen", f"{svc.ip}:{port}",
                                          "--metrics", metrics_addrs[i], "--evaluator", evaluator]
                                    + store_args + args.scheduler_arg, log_name))
        for i, port in enumerate(ports):
            if not cl.wait_tcp(svc, svc.ip, port, timeout=20):
                raise RuntimeError(f"dfscheduler did not listen on {svc.ip}:{port} "
                                   f"(see logs/{system}-scheduler*.log)")
        socks = {}
        for h in topo.receivers:
            hd = df / h.name
            (hd / "data").mkdir(parents=True, exist_ok=True)
            socks[h.name] = hd / "dfdaemon.sock"
            argv = [bins["dfdaemon"]] + (["--seed"] if h.role == "seed" else []) + [
                "--scheduler", sched_addr, "--data-dir", hd / "data", "--sock", socks[h.name],
                "--ip", h.ip, "--hostname", h.name, "--grpc-port", DAEMON_GRPC_PORT, "--piece-port", DAEMON_PIECE_PORT,
                "--metrics-port", DAEMON_METRICS_PORT, "--log-level", args.daemon_log_level] + (
                [] if args.hide_idc else ["--idc", h.idc, "--location", h.location]) + \
                announce_args(args, h, announce) + (
                ["--registry-mirror", f"http://{ctx.registry}"] if ctx.image else [])
            started.append(cl.start(h, argv + args.daemon_arg, f"{system}-dfdaemon-{h.name}"))
        deadline = time.time() + 30
        while time.time() < deadline and not all(s.exists() for s in socks.values()):
            dead = [p.name for p in started if not p.running()]
            if dead:
                raise RuntimeError(f"{system}: exited early: {', '.join(dead)} (see logs/)")
            time.sleep(0.1)
        waiting = [n for n, s in socks.items() if not s.exists()]
        if waiting:
            raise RuntimeError(f"{system}: no daemon socket after 30 s on {', '.join(waiting)}")
        for h in topo.receivers:  # piece port (and the mirror) up as well
            cl.wait_tcp(h, h.ip, DAEMON_PIECE_PORT, timeout=10)
            if ctx.image:
                cl.wait_tcp(h, "127.0.0.1", DAEMON_PROXY_PORT, timeout=10)
        time.sleep(args.settle)
        warmup = []
        for i in range(args.warmup_files):
            # Untimed files first, through the same scheduler and daemons: what a cluster has
            # learned (capacities, records, a trained model) before the measured file arrives.
            name = f"warmup-{system}-{i}"
            want = make_file(ctx.file_path.parent / name, args.warmup_size)
            wurl = ctx.file_url.rsplit("/", 1)[0] + "/" + name
            wouts = {h.name: out_path(ctx, h, system) / name for h in topo.receivers}
            wt0 = time.time()
            wprocs = {h.name: cl.start(h, [bins["dfget"], wurl, "-O", wouts[h.name],
                                           "--no-progress", "--daemon-sock", socks[h.name]],
                                       f"{system}-dfget-{name}-{h.name}")
                      for h in topo.receivers}
            wait_all([lambda p=p: not p.running() for p in wprocs.values()], ctx.timeout, name)
            cl.stop_all(wprocs.values())
            wok = all(p.returncode == 0 for p in wprocs.values()) and \
                all(check_copies(wouts, want).values())
            warmup.append({"file": name, "seconds": round(time.time() - wt0, 3), "ok": wok})
            log(f"{system}: warm-up {name}: {time.time() - wt0:.1f} s, "
                f"{'ok' if wok else 'FAILED'}")
            (ctx.file_path.parent / name).unlink(missing_ok=True)
            for o in wouts.values():
                Path(o).unlink(missing_ok=True)
        if evaluator == "ml" and args.warmup_files > 0:
            waited = wait_for_model(ctx, system)
            log(f"{system}: model published; waited {waited:.1f} s after the warm-up")
        off = log_size(ctx.registry_log if ctx.image else ctx.access_log)
        tx0 = cl.tx_bytes(topo.origin)
        outs = {h.name: out_path(ctx, h, system) / ("img" if ctx.image else "file")
                for h in topo.receivers}
        procs = {}
        sampler = LinkSampler(cl, [topo.origin] + list(topo.receivers)).start()
        t0 = time.time()
        for h in topo.receivers:
            if ctx.image:  # skopeo pulls through its own host's mirror
                argv = skopeo_pull_argv(ctx, f"127.0.0.1:{DAEMON_PROXY_PORT}", outs[h.name])
                procs[h.name] = cl.start(h, argv, f"{system}-skopeo-{h.name}")
                continue
            argv = [bins["dfget"], ctx.file_url, "--no-progress", "--daemon-sock", socks[h.name]]
            argv += args.dfget_arg
            if args.dfget_output == "stdout":
                # No output copy: the bytes go through a pipe into sha256sum, whose digest is the
                # "copy" that check_copies reads (bash for pipefail: a failed dfget fails).
                argv = ["bash", "-c", 'set -o pipefail; "$@" -O - | sha256sum > "$0"',
                        f"{outs[h.name]}.sha256"] + argv
            else:
                argv += ["-O", outs[h.name]]
            procs[h.name] = cl.start(h, argv, f"{system}-dfget-{h.name}")
        finished = wait_all([lambda p=p: not p.running() for p in procs.values()], ctx.timeout,
                            system)
        sampler.stop()
        link_trace = sampler.trace()
        print_link_trace(link_trace, system)
        cl.stop_all(procs.values())
        times = {n: p.end_time - t0 for n, p in procs.items() if p.returncode == 0}
        failures = {n: p.returncode for n, p in procs.items() if p.returncode != 0}
        sched_counters = [dict(addr=a, **scheduler_counters(ctx, m))
                          for a, m in zip(sched_addr.split(","), metrics_addrs)]
        usage = daemon_usage([p for p in started if "-dfdaemon-" in p.name], len(times),
                             ctx.file_bytes)
        usage["counters"] = daemon_counters(ctx, topo.receivers)
        cl.stop_all(started)
        started = []
        time.sleep(0.3)
        if ctx.image:
            served, reqs, blob_gets = registry_log_bytes(ctx.registry_log, off)
            image_extra = {"registry_blob_gets": blob_gets}
        else:
            served, reqs = access_log_bytes(ctx.access_log, off)
        tx = cl.tx_bytes(topo.origin) - tx0
        if ctx.image:
            ok = check_image_copies(outs, ctx.image)
        elif args.dfget_output == "stdout":
            ok = {n: Path(f"{o}.sha256").is_file()
                  and Path(f"{o}.sha256").read_text().split()[:1] == [ctx.file_sha256]
                  for n, o in outs.items()}
        else:
            ok = check_copies(outs, ctx.file_sha256)
    finally:
        cl.stop_all(started)
        remove_copies(ctx, system)
        shutil.rmtree(df, ignore_errors=True)
    return result_record(ctx, system, times, ok, served, reqs, tx,
                         {"timed_out": not finished, "failures": failures,
                          "evaluator": evaluator, "schedulers": n_sched,
                          "hide_idc": args.hide_idc, "warmup": warmup,
                          "scheduler_counters": sched_counters, "daemon_usage": usage,
                          "link_trace": link_trace, **image_extra})


# ----------------------------------------------------------------------------------------------
# Report and plots


def print_table(ctx, results):
    print()
    what = (f"image of {len(ctx.image.layers)} layer(s), {fmt_bytes(ctx.file_bytes)} of blobs"
            if ctx.image else f"file {fmt_bytes(ctx.file_bytes)}")
    print(f"topology {ctx.topo.name}: {len(ctx.topo.receivers)} receivers (seed host + "
          f"{len(ctx.topo.peers)} peers), {what}")
    print(f"lower bound {ctx.bound:.2f} s  (binding term: {ctx.bound_term})")
    for k, v in ctx.bound_terms.items():
        print(f"    {k:<48} {v:8.2f} s")
    # --image: each system's last host also as a ratio to the registry baseline's.
    base = next((r["last_host_seconds"] for r in results
                 if ctx.image and r["system"] == "registry" and r.get("last_host_seconds")), None)
    source, width = ("registry served", 17) if ctx.image else ("origin served", 15)
    hdr = (f"{'system':<22}{'last host s':>12}{'mean s':>9}{'x bound':>9}"
           + (f"{'x registry':>11}" if base else "") + f"{source:>{width}}{'copies':>8}  sha256")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        if r.get("skipped"):
            print(f"{r['system']:<22}  skipped: {r['skipped']}")
            continue
        last = f"{r['last_host_seconds']:.2f}" if r["last_host_seconds"] is not None else "DNF"
        mean = f"{r['mean_host_seconds']:.2f}" if r.get("mean_host_seconds") is not None else "-"
        ratio = f"{r['ratio_to_bound']:.3f}" if r.get("ratio_to_bound") is not None else "-"
        served = r["origin_bytes_served"]
        vs_base = ""
        if base:
            vs_base = (f"{r['last_host_seconds'] / base:.3f}"
                       if r["last_host_seconds"] is not None else "-")
        print(f"{r['system']:<22}{last:>12}{mean:>9}{ratio:>9}"
              + (f"{vs_base:>11}" if base else "") +
              f"{fmt_bytes(served) if served is not None and served >= 0 else '?':>{width}}"
              f"{r.get('origin_copies_served', 0):>8.2f}  "
              f"{'ok' if r['sha256_ok'] else 'MISMATCH/MISSING'}")
    for r in results:
        u = r.get("daemon_usage")
        if u and u.get("cpu_seconds_per_delivered_gib") is not None:
            print(f"{r['system']}: dfdaemon CPU {u['cpu_seconds_total']:.1f} s in all, "
                  f"{u['cpu_seconds_per_delivered_gib']:.2f} s per delivered GiB; "
                  f"peak RSS {u['peak_rss_bytes_max'] / 2**20:.0f} MiB (largest daemon); "
                  f"{u.get('counters', {})}")
    print()


def gp_quote(s):
    return s.replace('"', "'").replace("_", "\\\\_")


def plot(results, out_dir, stem):
    """Writes <stem>-cdf.png and <stem>-bars.png with gnuplot; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [r for r in results if not r.get("skipped") and r.get("per_host_seconds")]
    if not runs:
        return []
    topo = runs[0]["topology"]
    bound = runs[0]["lower_bound_seconds"]
    size = fmt_bytes(runs[0]["file_bytes"])
    tmp = Path(tempfile.mkdtemp(prefix="dfcluster-plot-"))
    try:
        cdf_cmds = []
        for i, r in enumerate(runs):
            ts = sorted(t for t in r["per_host_seconds"].values() if t is not None)
            n = len(r["per_host_seconds"])
            dat = tmp / f"cdf{i}.dat"
            lines = [f"{ts[0] if ts else 0} 0"] + [f"{t} {(k + 1) / n}"
                                                    for k, t in enumerate(ts)]
            dat.write_text("\n".join(lines) + "\n")
            cdf_cmds.append(f'"{dat}" using 1:2 with steps lw 2 title "{gp_quote(r["system"])}"')
        cdf_png = out_dir / f"{stem}-cdf.png"
        all_t = [t for r in runs for t in r["per_host_seconds"].values() if t is not None]
        xmax = max(all_t + [bound])
        xmin = min(all_t + [bound])
        lasts = [r["last_host_seconds"] for r in runs if r["last_host_seconds"]]
        # Log time axis when systems differ by more than 4x, or the fast ones are a thin line.
        logx = bool(lasts) and max(lasts) / min(lasts) > 4
        tics = ",".join(str(v) for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
                        if xmin * 0.8 <= v <= xmax * 1.25)
        xrange = (f"set logscale x\nset xrange [{xmin * 0.8}:{xmax * 1.25}]\n"
                  f"set xtics ({tics})" if logx
                  else f"set xrange [0:{xmax * 1.05 + 1}]")
        script = f"""set terminal pngcairo size 900,560 font "DejaVu Sans,11"
set output "{cdf_png}"
set title "{gp_quote(topo)}: completion-time CDF, {len(runs[0]['per_host_seconds'])} hosts, {size}"
set xlabel "seconds since start{' (log scale)' if logx else ''}"
set ylabel "fraction of hosts finished"
set yrange [0:1.05]
{xrange}
set key outside right top
set grid
set arrow from {bound},0 to {bound},1.05 nohead dt 2 lc rgb "black"
set label "lower bound {bound:.3g} s" at {bound},1.02 left offset 0.5,0
plot {", ".join(cdf_cmds)}
"""
        (tmp / "cdf.gp").write_text(script)
        sh("gnuplot", tmp / "cdf.gp")
        bars = tmp / "bars.dat"
        rows = []
        for r in runs:
            last = r["last_host_seconds"] if r["last_host_seconds"] is not None else 0
            ratio = f"{last:.1f} s, {last / bound:.2f}x" if last else "DNF"
            rows.append(f'"{gp_quote(r["system"])}" {last} "{ratio}"')
        rows.append(f'"lower bound" {bound} "{bound:.1f} s"')
        bars.write_text("\n".join(rows) + "\n")
        bars_png = out_dir / f"{stem}-bars.png"
        ymax = max([r["last_host_seconds"] or 0 for r in runs] + [bound]) * 1.15
        script = f"""set terminal pngcairo size 900,560 font "DejaVu Sans,11"
set output "{bars_png}"
set title "{gp_quote(topo)}: last host's completion time vs lower bound ({size})"
set ylabel "seconds until the last host finished"
set style data histogram
set style fill solid 0.8 border -1
set boxwidth 0.6
set yrange [0:{ymax}]
set grid ytics
set key off
set arrow from graph 0,first {bound} to graph 1,first {bound} nohead dt 2 lc rgb "black"
plot "{bars}" using 2:xtic(1) lc rgb "#4477aa", \\
     "" using 0:2:3 with labels offset 0,0.8 notitle
"""
        (tmp / "bars.gp").write_text(script)
        sh("gnuplot", tmp / "bars.gp")
        return [cdf_png, bars_png]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def plot_summary(result_files, png):
    """One grouped bar chart: each system's last-host time / lower bound, per topology."""
    runs = []
    for f in result_files:
        runs.extend(r for r in json.loads(Path(f).read_text()) if not r.get("skipped"))
    topologies = list(dict.fromkeys(r["topology"] for r in runs))
    systems = list(dict.fromkeys(r["system"] for r in runs))
    tmp = Path(tempfile.mkdtemp(prefix="dfcluster-plot-"))
    try:
        dat = tmp / "summary.dat"
        lines = []
        ymax = 1.0
        for t in topologies:
            row = [t]
            for s in systems:
                rs = [r for r in runs if r["topology"] == t and r["system"] == s
                      and r.get("ratio_to_bound")]
                row.append(f"{rs[-1]['ratio_to_bound']:.3f}" if rs else "NaN")
                if rs:
                    ymax = max(ymax, rs[-1]["ratio_to_bound"])
            lines.append(" ".join(row))
        dat.write_text("\n".join(lines) + "\n")
        cols = ", ".join(f'"{dat}" using {i + 2}:xtic(1) title "{gp_quote(s)}"'
                         for i, s in enumerate(systems))
        script = f"""set terminal pngcairo size 900,560 font "DejaVu Sans,11"
set output "{png}"
set title "last host's time / lower bound (1.0 = the physical limit)"
set ylabel "ratio to lower bound"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set logscale y 2
set yrange [0.8:{ymax * 1.5}]
set grid ytics
set key top left
set arrow from graph 0,first 1 to graph 1,first 1 nohead dt 2 lc rgb "black"
plot {cols}
"""
        (tmp / "summary.gp").write_text(script)
        sh("gnuplot", tmp / "summary.gp")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return png


# ----------------------------------------------------------------------------------------------
# Main


def git_commit():
    r = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return r.stdout.strip() or None


# Everything holding copies. The registry's storage (--image) stays on disk: it is only read,
# from the page cache, and the RAM is needed for the receivers' two copies each.
DATA_DIRS = ("hosts", "df", "www", "bt", "image")


def mount_data_tmpfs(work, size):
    """Puts every copy of the file (origin, each host's output and each system's storage) on a
    tmpfs of `size` bytes mounted at <work>/data, reached through symlinks. The simulated hosts
    share one machine and so one disk; without this the disk's write bandwidth, shared by all
    hosts, would be measured instead of the network. Returns the mount point."""
    avail = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    if size > 0.85 * avail:
        raise RuntimeError(f"tmpfs storage needs up to {fmt_bytes(size)} of RAM, "
                           f"{fmt_bytes(avail)} available")
    mnt = work / "data"
    mnt.mkdir(exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "dfcluster-data", mnt)  # raises
    for d in DATA_DIRS:
        (mnt / d).mkdir(mode=0o755)
        link = work / d
        if link.is_symlink() or link.exists():
            if link.is_dir() and not link.is_symlink():
                shutil.rmtree(link)
            else:
                link.unlink()
        link.symlink_to(mnt / d)
    return mnt


def unmount_data_tmpfs(work, mnt):
    for d in DATA_DIRS:
        if (work / d).is_symlink():
            (work / d).unlink()
    if sh("umount", mnt, check=False) != 0:
        sh("umount", "-l", mnt, check=False)
    try:
        mnt.rmdir()
    except OSError:
        pass


def cmd_run(args):
    if os.geteuid() != 0:
        log("must run as root (network namespaces, tc)")
        return args.skip_code if args.skip_code else 2
    topo = load_topology(args.topology)
    if args.peers is not None:
        topo.peers = topo.peers[:args.peers]
    known = ALL_IMAGE_SYSTEMS if args.image else ALL_SYSTEMS
    systems = [s.strip() for s in (args.systems or ",".join(known)).split(",") if s.strip()]
    for s in systems:
        if s not in known:
            raise SystemExit(f"unknown system {s!r}{' with --image' if args.image else ''}; "
                             f"choose from {', '.join(known)}")
    if args.announce is None:  # an image pull measures what an operator gets: no rates
        args.announce = "none" if args.image else "exact"
    if args.image:
        if args.layers < 1:
            raise SystemExit("--layers must be at least 1")
        if args.warmup_files:
            raise SystemExit("--warmup-files is for files; not with --image")
        for tool in (REGISTRY_BIN, SKOPEO_BIN):
            if not os.access(tool, os.X_OK):
                log(f"--image needs {tool} (scripts/install-deps.sh)")
                return args.skip_code if args.skip_code else 2
    if args.schedulers < 1:
        raise SystemExit("--schedulers must be at least 1")
    if args.schedulers > 1 and "dragonfly" in systems and not shutil.which("redis-server"):
        raise SystemExit("--schedulers > 1 needs redis-server (apt-get install redis-server)")
    file_bytes = parse_size(args.size)
    prefix = f"dfb{os.getpid()}-"
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix=prefix,
                                                                           dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    data_mount = None
    if args.storage == "tmpfs":
        n = len(topo.receivers)
        # Image: on each receiver the daemon's copy and skopeo's (the OCI layout is deleted once
        # pushed; the registry's copy is on disk). File: the origin's copy, each receiver's.
        tmpfs_bytes = (2 * n * file_bytes + (256 << 20) if args.image else
                       (n + 2) * file_bytes + n * args.warmup_files * args.warmup_size + (1 << 30))
        try:
            data_mount = mount_data_tmpfs(work, tmpfs_bytes)
        except RuntimeError as e:
            log(f"{e}; the copies go to the work dir's disk instead (storage: disk)")
            args.storage = "disk"
    out_dir = Path(args.out) if args.out else (
        REPO / "bench/cluster/results" / f"{topo.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(topo, work, prefix)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    results = []
    rc = 0
    try:
        www = work / "www"
        logs = work / "logs"
        www.mkdir(exist_ok=True)
        logs.mkdir(exist_ok=True)
        for d in (www, logs):
            os.chmod(d, 0o755)
        image = None
        if args.image:
            t = time.time()
            image = make_image(work / "image", file_bytes, args.layers)
            file_bytes = image.blob_bytes  # what every receiver must get: layers and config
            log(f"image: {args.layers} uncompressed layer(s) of random bytes, "
                f"{fmt_bytes(file_bytes)} of blobs ({time.time() - t:.1f} s)")
        bound, term, terms = lower_bound(topo, file_bytes)
        timeout = args.timeout or (2.5 * origin_only_estimate(topo, file_bytes) + 60)
        log(f"topology {topo.name} ({len(topo.receivers)} receivers), "
            f"{'image' if image else 'file'} {fmt_bytes(file_bytes)}, "
            f"work dir {work}, results {out_dir}, per-system timeout {timeout:.0f} s")
        log(f"lower bound {bound:.2f} s ({term})")
        cluster.build()
        if image:
            registry = f"{topo.origin.ip}:{REGISTRY_PORT}"
            largest = max(image.layers, key=lambda b: b.size)
            ctx = RunContext(args, topo, cluster, file_bytes, None, None,
                             f"http://{registry}/v2/{IMAGE_REPO}/blobs/{largest.digest}", bound,
                             term, terms, timeout, image=image, registry=registry,
                             registry_log=logs / "registry.log")
            start_registry(ctx)
        else:
            t = time.time()
            file_path = www / "file"
            digest = make_file(file_path, file_bytes)
            log(f"source file {fmt_bytes(file_bytes)} sha256 {digest[:16]}... "
                f"({time.time() - t:.1f} s)")
            ctx = RunContext(args, topo, cluster, file_bytes, file_path, digest,
                             f"http://{topo.origin.ip}:{ORIGIN_HTTP_PORT}/file", bound, term,
                             terms, timeout, access_log=logs / "nginx-access.log")
            (work / "nginx.conf").write_text(nginx_conf(ctx, www, logs))
            cluster.start(topo.origin, ["nginx", "-p", work, "-e", logs / "nginx-error.log",
                                         "-c", work / "nginx.conf"], "nginx")
            if not cluster.wait_tcp(topo.origin, topo.origin.ip, ORIGIN_HTTP_PORT, timeout=10):
                raise RuntimeError("nginx did not start (see logs/nginx-error.log)")
        ctx.calibration = {} if args.no_calibrate else calibrate(ctx)
        for system in systems:
            runs = [(e, a) for e in args.evaluators.split(",") if e
                    for a in args.announce.split(",") if a] if system == "dragonfly" \
                else [(None, None)]
            for ev, announce in runs:
                name = system if ev is None else dragonfly_name(ev, announce, args.schedulers)
                log(f"=== {name} ===")
                load_before = [round(x, 2) for x in os.getloadavg()]
                mark = len(cluster.procs)
                try:
                    if system == "origin":
                        rec = run_origin(ctx)
                    elif system == "registry":
                        rec = run_registry(ctx)
                    elif system == "bittorrent":
                        rec = run_bittorrent(ctx)
                    else:
                        rec = run_dragonfly(ctx, ev, announce)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001 - one system failing must not stop the rest
                    log(f"{name}: FAILED: {e}")
                    rec = {"system": name, "topology": topo.name, "error": str(e),
                           "completed": False, "sha256_ok": False, "last_host_seconds": None,
                           "lower_bound_seconds": round(bound, 3), "origin_bytes_served": None}
                finally:
                    cluster.stop_all(cluster.procs[mark:])  # whatever this system left running
                rec["calibration"] = ctx.calibration
                if image:
                    rec["image"] = {"layers": [b.digest for b in image.layers],
                                    "layer_bytes": [b.size for b in image.layers],
                                    "config": image.config.digest,
                                    "manifest": image.manifest.digest}
                rec["git_commit"] = git_commit()
                rec["loadavg_before"] = load_before  # 1, 5, 15 min: the machine's other load
                rec["loadavg_after"] = os.getloadavg()[0]
                rec["mode"] = "image" if image else "file"
                rec["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                rec["lower_bound_terms"] = {k: round(v, 3) for k, v in terms.items()}
                rec["tbf"] = {"latency": TBF_LATENCY, "min_burst_bytes": TBF_MIN_BURST_BYTES,
                              "burst_seconds": TBF_BURST_SECONDS}
                results.append(rec)
                if not rec.get("skipped") and rec.get("last_host_seconds") is not None:
                    log(f"{name}: last host {rec['last_host_seconds']:.2f} s = "
                        f"{rec['ratio_to_bound']:.3f} x bound, "
                        f"{'registry' if image else 'origin'} served "
                        f"{fmt_bytes(rec['origin_bytes_served'])}, sha256 "
                        f"{'ok' if rec['sha256_ok'] else 'MISMATCH'}")
                elif not rec.get("skipped"):
                    log(f"{name}: did not complete: {rec.get('error') or rec.get('failures')}")
                (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print_table(ctx, results)
        pngs = plot(results, out_dir, topo.name)
        log(f"results: {out_dir / 'results.json'}" + "".join(f"\n  plot: {p}" for p in pngs))
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        rc = 130
    except Exception as e:  # noqa: BLE001 - report, clean up, fail
        log(f"ERROR: {e}")
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.destroy()
        if data_mount:
            unmount_data_tmpfs(work, data_mount)
        if args.keep_work:
            log(f"kept work dir {work}" + (" (logs; the data was on tmpfs)" if data_mount else ""))
        elif not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for d in ("hosts", "www", "image", "registry"):
                shutil.rmtree(work / d, ignore_errors=True)
        log("cleaned up")
    if rc:
        return rc
    failed = [r["system"] for r in results
              if not r.get("skipped") and not (r.get("completed") and r.get("sha256_ok"))]
    skipped = [r["system"] for r in results if r.get("skipped")]
    if failed:
        log(f"FAILED: {', '.join(failed)}")
        return 1
    if skipped and args.skip_code:
        log(f"skipped: {', '.join(skipped)}")
        return args.skip_code
    return 0


def cmd_plot(args):
    results = json.loads(Path(args.results).read_text())
    stem = args.stem or results[0]["topology"]
    for p in plot(results, args.out, stem):
        print(p)
    return 0


def cmd_summary(args):
    print(plot_summary(args.results, Path(args.png)))
    return 0


def cmd_bound(args):
    topo = load_topology(args.topology)
    f = parse_size(args.size)
    bound, term, terms = lower_bound(topo, f)
    print(f"{topo.name}: {len(topo.receivers)} receivers, file {fmt_bytes(f)}")
    for k, v in terms.items():
        print(f"  {k:<48} {v:8.2f} s")
    print(f"lower bound {bound:.2f} s ({term})")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " See docs/benchmarks.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  sudo bench/cluster/dfcluster.py run --topology flat --size 512MiB\n"
               "  sudo bench/cluster/dfcluster.py run --topology racks --size 64MiB "
               "--systems origin,bittorrent\n"
               "  sudo bench/cluster/dfcluster.py run --topology flat --image --layers 4 "
               "--size 512MiB\n"
               "  bench/cluster/dfcluster.py bound --topology hetero --size 512MiB\n"
               "  sudo bench/cluster/dfcluster.py cleanup")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="build the cluster, run the systems, write results and plots")
    r.add_argument("--topology", default="flat",
                   help="YAML file or a name in bench/cluster/topologies (default flat)")
    r.add_argument("--size", default="512MiB",
                   help="file size, or with --image the image's content over all layers "
                        "(default 512MiB)")
    r.add_argument("--image", action="store_true",
                   help="distribute an OCI image instead of a file: docker-registry in the "
                        "origin's namespace, every receiver pulls it with skopeo (systems "
                        "registry, dragonfly)")
    r.add_argument("--layers", type=int, default=4,
                   help="--image: number of uncompressed random layers sharing --size "
                        "(default 4)")
    r.add_argument("--systems", default=None,
                   help="comma list from origin,bittorrent,dragonfly (default all, in that "
                        "order); with --image from registry,dragonfly (default both)")
    r.add_argument("--evaluators", default="default",
                   help="comma list of dfscheduler evaluators to run (default: default)")
    r.add_argument("--peers", type=int, help="use only the first N peers of the topology")
    r.add_argument("--build-dir", default=str(REPO / "build"),
                   help="where dfscheduler/dfdaemon/dfget were built (default <repo>/build)")
    r.add_argument("--out", help="results directory (default bench/cluster/results/<topo>-<time>)")
    r.add_argument("--work-dir", help="scratch directory (default a fresh /tmp/dfb<pid>-*)")
    r.add_argument("--keep-work", action="store_true", help="keep the work dir (logs) at exit")
    r.add_argument("--storage", choices=("tmpfs", "disk"), default="tmpfs",
                   help="where every copy of the file lives: tmpfs (default; the hosts share one "
                        "machine, so a disk would be a bottleneck no real host has) or the work "
                        "dir's disk")
    r.add_argument("--timeout", type=float,
                   help="per-system timeout in seconds (default 2.5x the origin-only estimate + 60)")
    r.add_argument("--bt-piece-length", type=parse_size, default=None,
                   help="torrent piece length (default: power of two, <=1000 pieces, 256KiB-4MiB)")
    r.add_argument("--settle", type=float, default=1.0,
                   help="seconds to wait after the daemons are up before dfget (default 1)")
    r.add_argument("--announce", default=None,
                   help="comma list, one dragonfly run per value: exact (each dfdaemon announces "
                        "its shaped rates), none (no rates: the scheduler learns them), or a RATE "
                        "such as 1gbit announced by every host (default: exact; with --image "
                        "none, the daemon's defaults)")
    r.add_argument("--schedulers", type=int, default=1,
                   help="dragonfly: run N dfschedulers sharing one redis-server in the services "
                        "namespace; every dfdaemon gets all N (rows named ...-sN when N > 1; "
                        "default 1: one scheduler, memory store)")
    r.add_argument("--upload-rate-factor", type=float, default=1.0,
                   help="dfdaemon --upload-rate = this x the host's shaped upload (default 1.0)")
    r.add_argument("--daemon-log-level", default="info")
    r.add_argument("--hide-idc", action="store_true",
                   help="daemons announce no idc/location: the scheduler must find the racks")
    r.add_argument("--warmup-files", type=int, default=0,
                   help="untimed files each dragonfly run distributes first (records; for "
                        "--evaluators ml also a trained model)")
    r.add_argument("--warmup-size", type=parse_size, default=parse_size("128MiB"),
                   help="size of each warm-up file (default 128MiB)")
    r.add_argument("--daemon-arg", action="append", default=[],
                   help="extra argument for every dfdaemon (repeatable)")
    r.add_argument("--scheduler-arg", action="append", default=[],
                   help="extra argument for dfscheduler (repeatable)")
    r.add_argument("--dfget-arg", action="append", default=[],
                   help="extra argument for every dfget (repeatable)")
    r.add_argument("--dfget-output", choices=("file", "stdout"), default="file",
                   help="dragonfly: dfget -O FILE (default), or -O - into sha256sum: no output "
                   "copy, so large files fit in RAM (each host keeps only its storage's copy)")
    r.add_argument("--no-calibrate", action="store_true", help="skip the single-curl calibration")
    r.add_argument("--skip-code", type=int, default=0,
                   help="exit with this code when a system was skipped (binaries missing) and "
                        "nothing failed; the smoke test uses 77")
    r.set_defaults(func=cmd_run)
    pl = sub.add_parser("plot", help="redraw the PNGs of a results.json")
    pl.add_argument("results")
    pl.add_argument("--out", default=".")
    pl.add_argument("--stem")
    pl.set_defaults(func=cmd_plot)
    sm = sub.add_parser("summary", help="grouped bar chart of ratios to the bound over results")
    sm.add_argument("results", nargs="+", help="results.json files (any topologies)")
    sm.add_argument("--png", default="summary.png")
    sm.set_defaults(func=cmd_summary)
    b = sub.add_parser("bound", help="print the lower bound of a topology and file size")
    b.add_argument("--topology", default="flat")
    b.add_argument("--size", default="512MiB")
    b.set_defaults(func=cmd_bound)
    c = sub.add_parser("cleanup", help="remove namespaces and processes left by killed runs")
    c.add_argument("--all", action="store_true",
                   help="also remove namespaces of runs that still seem alive")
    c.set_defaults(func=lambda a: cleanup_stale(a.all) or 0)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
