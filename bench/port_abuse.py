#!/usr/bin/env python3
"""Port abuse: garbage, oversized length fields, truncated frames, half-open and slow connections
thrown at every port of a local cluster while a download runs.

What it does (loopback only, 127.0.0.1; Python 3 standard library only):

  1. Starts an nginx origin (per-request `limit_rate`, so a download takes ~--target-seconds), one
     dfscheduler, one seed dfdaemon and --peers peer dfdaemons, each on explicit free ports.
  2. Downloads a generated file to every peer at once (dfget --no-progress), --rounds times,
     each under another name (another task: no cache helps): the unloaded time is the median.
  3. Starts the abusers against EVERY port (daemon gRPC, piece, metrics, registry mirror and unix
     socket; scheduler gRPC and metrics), waits --ramp seconds, and downloads hard links of the same file under
     other names --rounds times while the abuse goes on for --seconds (longer when the rounds
     need it): the loaded time is the median. One download of 64 MiB on this loopback varies by
     +-15 % from run to run, so a single pair of samples can cross the 0.8 line by chance.
  4. Samples VmRSS/RssAnon of every daemon and the scheduler every second, probes every port with
     a well-behaved client every few seconds during the abuse, and at the end checks that every
     process is alive, every port serves a good client (piece PING->PONG, metrics GET 200, a gRPC
     call answered) and a fresh download succeeds on every peer.
  5. Prints one summary and exits 0 when every check passed; 1 when one failed: the loaded
     download slower than --min-speed-ratio (0.8) x the unloaded one, a port answering fewer than
     --min-availability (80 %) of its probes under abuse, a process dead, a port not serving after
     the abuse, RSS above the unloaded peak + --rss-growth-limit or still growing; 77 when
     something it needs is missing (nginx, a binary); 2 on bad usage; 130 when interrupted.

Every process it starts is stopped by pid at the end, also on Ctrl-C, SIGTERM and exceptions.
Every abuse loop is bounded in connections and bytes and stops by itself at its deadline.

  bench/port_abuse.py --build-dir build                      # 60 s, 512 MiB (docs/benchmarks.md)
  bench/port_abuse.py --build-dir build --seconds 10 --size 64MiB --target-seconds 6   # smoke
"""

import argparse
import ctypes
import errno
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
MiB = 1 << 20

# ---------------------------------------------------------------------------------------------
# Small helpers


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_size(text):
    t = text.strip()
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "k": 1 << 10, "m": 1 << 20,
             "g": 1 << 30, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "b": 1}
    for suffix in sorted(units, key=len, reverse=True):
        if t.lower().endswith(suffix):
            return int(float(t[: -len(suffix)]) * units[suffix])
    return int(t)


def fmt_mib(n_bytes):
    return f"{n_bytes / MiB:.1f} MiB"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rst_close(sock):
    """Closes with a reset (SO_LINGER 0): no TIME_WAIT left on either side."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def read_status(pid):
    """{'VmRSS': kB, 'RssAnon': kB} of a live process, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            out = {}
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "Threads"):
                    out[key] = int(rest.split()[0])
            return out
    except OSError:
        return None


def count_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def make_file(path, size):
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            b = os.urandom(min(8 * MiB, left))
            h.update(b)
            f.write(b)
            left -= len(b)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Processes: started in their own session, stopped by pid.

_libc = None


def _die_with_parent():
    # If this script is SIGKILLed, its children get SIGTERM from the kernel (PR_SET_PDEATHSIG).
    try:
        global _libc
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        _libc.prctl(1, signal.SIGTERM)
    except Exception:  # noqa: BLE001 - best effort only
        pass


class Procs:
    """Every process this run started. Not thread-safe: the main thread starts and stops."""

    def __init__(self):
        self.procs = []  # (name, Popen, log file)

    def start(self, name, argv, log_path):
        f = open(log_path, "ab")
        p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=f,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=_die_with_parent)
        self.procs.append((name, p, f))
        return p

    def stop_all(self):
        # Reverse order: peers before the seed, the seed before the scheduler and the origin.
        for name, p, _ in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 8
        for name, p, f in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {p.pid}) ignored SIGTERM; SIGKILL")
                p.kill()
                p.wait(timeout=5)
            f.close()
        self.procs = []


def wait_tcp(port, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_unix(path, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(0.5)
                s.connect(path)
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------
# Wire encodings: the piece protocol (src/daemon/piece_protocol.h), HTTP/2 and HPACK.

PP_MAGIC = 0xDF50
PP_REQUEST, PP_PIECE, PP_ERROR, PP_PING, PP_PONG = 1, 2, 3, 4, 5


def pp_header(ftype, body_length, magic=PP_MAGIC, version=1, flags=0):
    return struct.pack(">HBBII", magic, version, ftype, flags, body_length)


def pp_ping(nonce=None):
    return pp_header(PP_PING, 8) + struct.pack(">Q", nonce if nonce is not None else
                                               random.getrandbits(64))


def pp_request(task_id, piece):
    return pp_header(PP_REQUEST, 68) + task_id.encode() + struct.pack(">I", piece)


def random_task_id():
    return os.urandom(32).hex()


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_RST, H2_SETTINGS, H2_PING, H2_GOAWAY, H2_WINDOW, H2_CONT = (
    0, 1, 3, 4, 6, 7, 8, 9)
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def h2_frame(ftype, flags, stream, payload=b"", length=None):
    n = len(payload) if length is None else length
    header = struct.pack(">I", n)[1:] + struct.pack(">BBI", ftype, flags, stream & 0x7FFFFFFF)
    return header + payload


def hpack_int(value, prefix_bits, first_byte_flags=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman."""
    n, v = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v


def grpc_request_headers(path):
    # :method POST (static 3), :scheme http (static 6), then literals.
    return (b"\x83\x86" + hpack_literal(":path", path) + hpack_literal(":authority", "127.0.0.1")
            + hpack_literal("content-type", "application/grpc") + hpack_literal("te", "trailers"))


def grpc_message(payload, length=None):
    return struct.pack(">BI", 0, len(payload) if length is None else length) + payload


# ---------------------------------------------------------------------------------------------
# Targets: one listening endpoint of one process.


class Target:
    def __init__(self, proc, kind, addr, grpc_path=None):
        self.proc = proc        # process name ("seed", "peer0", "scheduler")
        self.kind = kind        # "piece", "grpc", "http", "mirror" (the registry mirror port)
        self.addr = addr        # port (int) or unix socket path (str)
        self.grpc_path = grpc_path  # a read-only RPC answered by this server (probe, abuse)

    @property
    def name(self):
        where = "unix" if isinstance(self.addr, str) else str(self.addr)
        return f"{self.proc}/{self.kind}:{where}"

    def socket(self, timeout):
        if isinstance(self.addr, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.addr)
        else:
            s = socket.create_connection(("127.0.0.1", self.addr), timeout=timeout)
        return s

    def socket_nonblocking(self):
        """A socket whose connect was started and not waited for (half-open abuse)."""
        if isinstance(self.addr, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(self.addr)
            except OSError:  # EAGAIN: the listen backlog is full; not connected
                s.close()
                raise
            return s
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(("127.0.0.1", self.addr))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(rc, os.strerror(rc))
        return s


# ---------------------------------------------------------------------------------------------
# Good clients: what a well-behaved caller of each port sees.


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += b
    return bytes(buf)


def probe_piece(t, timeout):
    with t.socket(timeout) as s:
        nonce = random.getrandbits(64)
        s.sendall(pp_ping(nonce))
        h = recv_exact(s, 12)
        magic, version, ftype, _, blen = struct.unpack(">HBBII", h)
        body = recv_exact(s, blen) if blen <= 4096 else b""
        if magic != PP_MAGIC or ftype != PP_PONG or body != struct.pack(">Q", nonce):
            detail = body[4:80].decode(errors="replace") if ftype == PP_ERROR else ""
            return False, f"type {ftype} {detail}".strip()
        return True, "PONG"


def probe_http(t, timeout, path=b"/metrics", want=b" 200"):
    with t.socket(timeout) as s:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n" not in data:
            b = s.recv(4096)
            if not b:
                break
            data += b
        line = data.split(b"\r\n", 1)[0].decode(errors="replace")
        return line.startswith("HTTP/1.") and want.decode() in line[:13], line[:40] or "no answer"


def probe_mirror(t, timeout):
    """The mirror answers a path outside /v2/ itself, without its upstream: 404."""
    return probe_http(t, timeout, b"/probe", b" 404")


def probe_grpc(t, timeout):
    """One unary-shaped call of a real method with an empty message; any response HEADERS on
    stream 1 (response headers or trailers-only, whatever the grpc-status) means served."""
    with t.socket(timeout) as s:
        s.sendall(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0)
                  + h2_frame(H2_HEADERS, END_HEADERS, 1, grpc_request_headers(t.grpc_path))
                  + h2_frame(H2_DATA, END_STREAM, 1, grpc_message(b"")))
        while True:
            h = recv_exact(s, 9)
            length = int.from_bytes(h[:3], "big")
            ftype, flags, stream = h[3], h[4], int.from_bytes(h[5:9], "big") & 0x7FFFFFFF
            payload = recv_exact(s, length)
            if ftype == H2_SETTINGS and not flags & ACK:
                s.sendall(h2_frame(H2_SETTINGS, ACK, 0))
            elif ftype == H2_HEADERS and stream == 1:
                return True, "HEADERS"
            elif ftype == H2_GOAWAY:
                code = int.from_bytes(payload[4:8], "big") if len(payload) >= 8 else -1
                return False, f"GOAWAY {code}"
            elif ftype == H2_RST and stream == 1:
                return False, "RST_STREAM"


def probe_all(targets, timeout=3.0):
    """Probes every target at once (one thread each): {name: (ok, detail, seconds)}."""
    out = {}

    def one(t):
        out[t.name] = probe(t, timeout)

    threads = [threading.Thread(target=one, args=(t,), daemon=True) for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout + 5)
    return {t.name: out.get(t.name, (False, "probe hung", timeout + 5)) for t in targets}


def probe(t, timeout=3.0):
    fn = {"piece": probe_piece, "http": probe_http, "grpc": probe_grpc,
          "mirror": probe_mirror}[t.kind]
    start = time.time()
    try:
        ok, detail = fn(t, timeout)
    except (OSError, ConnectionError) as e:
        ok, detail = False, f"{type(e).__name__}: {e}"[:60]
    return ok, detail, time.time() - start


# ---------------------------------------------------------------------------------------------
# The abusers. Each loop is a thread over one target; all stop at `deadline` or on `stop`.


class Stats:
    """Counters per (target, attack). Thread-safe."""

    def __init__(self):
        self.mu = threading.Lock()
        self.c = {}

    def add(self, target, attack, key, n=1):
        with self.mu:
            d = self.c.setdefault(target.name, {}).setdefault(attack, {})
            d[key] = d.get(key, 0) + n

    def snapshot(self):
        with self.mu:
            return json.loads(json.dumps(self.c))


def piece_cases(known_task_ids):
    """Malformed or hostile piece-protocol inputs: (name, make_bytes, hold_seconds)."""
    tid = lambda: random_task_id().encode()  # noqa: E731
    cases = [
        ("huge_len_request", lambda: pp_header(PP_REQUEST, 0xFFFFFFFF) + os.urandom(1024), 0),
        ("huge_len_ping", lambda: pp_header(PP_PING, 0xFFFFFFFF) + os.urandom(64), 0),
        ("huge_len_error", lambda: pp_header(PP_ERROR, 0xFFFFFFFF) + os.urandom(64), 0),
        ("huge_len_piece", lambda: pp_header(PP_PIECE, 0x7FFFFFFF) + os.urandom(64), 0),
        ("huge_len_pong", lambda: pp_header(PP_PONG, 0x10000) + os.urandom(64), 0),
        ("unknown_type", lambda: pp_header(random.randint(6, 255), 0xFFFFFF00), 0),
        ("zero_len_request", lambda: pp_header(PP_REQUEST, 0), 0),
        ("error_frame_max_plus_one", lambda: pp_header(PP_ERROR, 1029) + b"x" * 1029, 0),
        ("piece_frame_huge_payload", lambda: pp_header(PP_PIECE, 24)
         + struct.pack(">IIQQ", 0, 0, 0, (1 << 64) - 1), 0),
        ("bad_version", lambda: pp_header(PP_REQUEST, 68, version=random.choice([0, 2, 255]))
         + tid() + b"\0\0\0\0", 0),
        ("bad_magic", lambda: pp_header(PP_REQUEST, 68, magic=random.getrandbits(16) | 1)
         + tid() + b"\0\0\0\0", 0),
        ("truncated_header", lambda: pp_header(PP_REQUEST, 68)[: random.randint(1, 11)], 0),
        ("truncated_body", lambda: pp_header(PP_REQUEST, 68) + tid()[: random.randint(0, 67)], 0),
        ("truncated_body_held", lambda: pp_header(PP_REQUEST, 68) + tid()[:30], 2.0),
        ("nonhex_task_id", lambda: pp_header(PP_REQUEST, 68) + b"Z" * 64 + b"\0\0\0\0", 0),
        ("unknown_tasks_pipelined", lambda: b"".join(
            pp_request(random_task_id(), random.getrandbits(32)) for _ in range(200)), 0),
        ("ping_flood_unread", lambda: pp_ping() * 2000, 0),
        ("flags_set_ping", lambda: pp_header(PP_PING, 8, flags=0xFFFFFFFF) + os.urandom(8), 0),
    ]
    for t in known_task_ids[:2]:
        cases.append(("real_task_piece_out_of_range",
                      lambda t=t: pp_request(t, 0xFFFFFFFF) + pp_request(t, 1 << 31), 0))
        # Asks for real pieces and reads none of them: the parent's send blocks until we go.
        cases.append(("real_piece_unread", lambda t=t: pp_request(t, 0) + pp_request(t, 1), 1.0))
    return cases


_static = {}


def _once(key, make):
    """Large constant payloads are built once (the abuse loops must stay cheap)."""
    if key not in _static:
        _static[key] = make()
    return _static[key]


def grpc_cases(path):
    settings = h2_frame(H2_SETTINGS, 0, 0)
    hdr = grpc_request_headers(path)
    extreme = b"".join(struct.pack(">HI", k, v) for k, v in [
        (1, 0xFFFFFFFF), (2, 1), (3, 0xFFFFFFFF), (4, 0x7FFFFFFF), (5, 0xFFFFFF), (6, 0xFFFFFFFF)])
    rapid_reset = lambda: b"".join(  # noqa: E731 - CVE-2023-44487 shape, 500 streams
        h2_frame(H2_HEADERS, END_HEADERS, sid, hdr)
        + h2_frame(H2_RST, 0, sid, struct.pack(">I", 8)) for sid in range(1, 1000, 2))
    continuation = lambda: h2_frame(H2_HEADERS, 0, 1, hdr) + b"".join(  # noqa: E731 - 4 MiB
        h2_frame(H2_CONT, 0, 1, hpack_literal("x-flood", "a" * 16000)) for _ in range(256))
    return [
        ("preface_then_garbage", lambda: H2_PREFACE + os.urandom(random.randint(1, 65536)), 0),
        ("truncated_preface", lambda: H2_PREFACE[: random.randint(1, 23)], 0),
        ("huge_frame_length", lambda: H2_PREFACE + settings
         + h2_frame(random.choice([H2_DATA, H2_HEADERS, H2_SETTINGS, 0xFF]), 0, 1,
                    os.urandom(1024), length=0xFFFFFF), 0),
        ("garbage_hpack", lambda: H2_PREFACE + settings
         + h2_frame(H2_HEADERS, END_HEADERS | END_STREAM, 1, os.urandom(16384)), 0),
        ("hpack_huge_int", lambda: H2_PREFACE + settings
         + h2_frame(H2_HEADERS, END_HEADERS, 1, b"\x00\x7f" + b"\xff" * 60 + b"\x01"), 0),
        ("extreme_settings", lambda: _once("extreme", lambda: H2_PREFACE
         + h2_frame(H2_SETTINGS, 0, 0, extreme) + h2_frame(H2_WINDOW, 0, 0, struct.pack(
             ">I", 0x7FFFFFFF)) + h2_frame(H2_PING, 0, 0, b"\0" * 8) * 1000), 0),
        ("continuation_flood", lambda: _once(("cont", path), lambda: H2_PREFACE + settings
                                             + continuation()), 0),
        ("rapid_reset", lambda: _once(("rst", path), lambda: H2_PREFACE + settings
                                      + rapid_reset()), 0),
        ("grpc_huge_message", lambda: H2_PREFACE + settings
         + h2_frame(H2_HEADERS, END_HEADERS, 1, hdr)
         + h2_frame(H2_DATA, 0, 1, grpc_message(os.urandom(1024), length=0xFFFFFFFF)), 0.5),
        ("grpc_garbage_message", lambda: H2_PREFACE + settings
         + h2_frame(H2_HEADERS, END_HEADERS, 1, hdr)
         + h2_frame(H2_DATA, END_STREAM, 1, grpc_message(os.urandom(random.randint(1, 8192)))),
         0.5),
        ("http1_request",
         lambda: b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 0),
        ("headers_then_silence", lambda: H2_PREFACE + settings
         + h2_frame(H2_HEADERS, END_HEADERS, 1, hdr), 2.0),
    ]


def http_cases():
    get = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    return [
        ("huge_header_value", lambda: _once("hh", lambda: get + b"X-Big: " + b"a" * MiB
                                            + b"\r\n\r\n"), 0),
        ("many_headers", lambda: _once("mh", lambda: get + b"".join(
            b"X-%d: y\r\n" % i for i in range(10000)) + b"\r\n"), 0),
        ("huge_uri", lambda: _once("hu", lambda: b"GET /" + b"a" * MiB
                                   + b" HTTP/1.1\r\nHost: x\r\n\r\n"), 0),
        ("huge_content_length", lambda: b"POST /metrics HTTP/1.1\r\nHost: x\r\n"
         b"Content-Length: 18446744073709551615\r\n\r\n" + os.urandom(1024), 0),
        ("negative_content_length", lambda: b"POST /metrics HTTP/1.1\r\nHost: x\r\n"
         b"Content-Length: -1\r\n\r\n", 0),
        ("huge_chunk", lambda: b"POST /metrics HTTP/1.1\r\nHost: x\r\n"
         b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n" + os.urandom(1024), 0),
        ("garbage_request_line", lambda: os.urandom(random.randint(1, 4096)) + b"\r\n\r\n", 0),
        ("truncated_request", lambda: get[: random.randint(1, len(get) - 1)], 0),
        ("headers_unfinished_held", lambda: get + b"X-a: b\r\n", 2.0),
        ("pipelined_gets_unread", lambda: (get + b"\r\n") * 500, 0),
        ("h2_preface_on_http", lambda: H2_PREFACE + os.urandom(1024), 0),
    ]


def mirror_cases():
    """The mirror port also takes CONNECT (docs/oci.md, "As a forward proxy"): heads for hosts
    not allowed, malformed, oversized or never finished, tunnels asked for by the hundred; and
    absolute-form requests, whose upstream would be the target's host (loopback ports only)."""
    return http_cases() + [
        ("connect_unlisted", lambda: b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n", 0),
        ("connect_garbage_target", lambda: b"CONNECT " + os.urandom(64).replace(b"\r", b"")
         .replace(b"\n", b"") + b" HTTP/1.1\r\n\r\n", 0),
        ("connect_huge_head", lambda: _once("ch", lambda: b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n"
                                            + b"X-Big: " + b"a" * MiB + b"\r\n\r\n"), 0),
        ("connect_head_held", lambda: b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: x\r\n", 2.0),
        ("connect_then_bytes", lambda: b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n"
         + os.urandom(4096), 0),
        ("absolute_form_ftp", lambda: b"GET ftp://127.0.0.1/v2/ HTTP/1.1\r\nHost: x\r\n\r\n", 0),
        ("absolute_form_userinfo", lambda: b"GET http://u:p@127.0.0.1:9/v2/ HTTP/1.1\r\n"
         b"Host: x\r\n\r\n", 0),
        ("blob_bad_digest", lambda: b"GET /v2/a/blobs/sha256:zz HTTP/1.1\r\nHost: x\r\n\r\n", 0),
    ]


def slow_stream(kind, grpc_path):
    """The endless byte stream a slow sender dribbles at 1 byte/s: plausible for the protocol."""
    if kind == "piece":
        while True:
            yield from pp_ping()
    elif kind == "grpc":
        yield from H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0)
        while True:
            yield from h2_frame(H2_PING, 0, 0, os.urandom(8))
    else:
        yield from b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        while True:
            yield from b"X-Slow: aaaaaaaaaaaaaaaa\r\n"


class Abuse:
    """Runs every abuse loop against every target until `stop` is set or `hard_deadline`."""

    def __init__(self, targets, args, known_task_ids):
        self.targets = targets
        self.args = args
        self.known_task_ids = known_task_ids  # callable -> list of task ids (piece cases)
        self.stats = Stats()
        self.stop = threading.Event()
        self.threads = []
        self.hard_deadline = 0.0
        self.sockets_held = 0
        self.mu = threading.Lock()

    def start(self, hard_deadline):
        self.hard_deadline = hard_deadline
        # Three protocol loops per port, so that held cases (up to 2 s) keep the rate.
        loops = (self.garbage_loop, self.protocol_loop, self.protocol_loop, self.protocol_loop,
                 self.half_open_loop, self.slow_loop)
        for t in self.targets:
            for fn in loops:
                th = threading.Thread(target=self._guard, args=(fn, t), daemon=True,
                                      name=f"{fn.__name__}-{t.name}")
                th.start()
                self.threads.append(th)

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(timeout=15)
        return [th.name for th in self.threads if th.is_alive()]

    def _running(self):
        return not self.stop.is_set() and time.time() < self.hard_deadline

    def _guard(self, fn, t):
        try:
            fn(t)
        except Exception as e:  # noqa: BLE001 - an abuser bug must not end the run silently
            self.stats.add(t, fn.__name__, f"abuser_exception:{type(e).__name__}:{e}"[:120])

    def _pause(self, seconds):
        self.stop.wait(seconds)

    def _paced(self, per_sec):
        """Yields at `per_sec` on average (random gaps), catching up when a case ran long;
        bounded to 3x the planned duration's count."""
        period = 1.0 / per_sec
        next_at = time.time()
        for _ in range(int(per_sec * self.args.seconds * 3) + 1):
            if not self._running():
                return
            yield
            next_at += period * random.uniform(0.5, 1.5)
            self._pause(max(0.0, next_at - time.time()))

    # -- Random garbage bursts: connect, send 1 B..64 KiB of random bytes, read a little, reset.
    def garbage_loop(self, t):
        for _ in self._paced(self.args.bursts_per_sec):
            self._send_case(t, "garbage", os.urandom(random.randint(1, 65536)), 0)

    # -- Protocol-aware malformed inputs: oversized lengths, truncated frames, floods.
    def protocol_loop(self, t):
        i = random.randrange(1000)  # the three loops of a port start at different cases
        for _ in self._paced(self.args.bursts_per_sec / 3):
            if t.kind == "piece":
                cases = piece_cases(self.known_task_ids())
            elif t.kind == "grpc":
                cases = grpc_cases(t.grpc_path)
            elif t.kind == "mirror":
                cases = mirror_cases()
            else:
                cases = http_cases()
            name, make, hold = cases[i % len(cases)]
            i += 1
            self._send_case(t, name, make(), hold)

    def _send_case(self, t, name, data, hold):
        try:
            s = t.socket(timeout=1.0)
        except OSError as e:
            self.stats.add(t, name, f"connect_error:{e.__class__.__name__}")
            return
        try:
            self.stats.add(t, name, "sent")
            try:
                s.sendall(data)
            except socket.timeout:
                self.stats.add(t, name, "send_blocked")  # the server stopped reading: fine
            except OSError:
                self.stats.add(t, name, "send_cut")  # the server closed early: fine
            if hold:
                self._pause(hold)
            s.settimeout(0.2)
            try:
                got = s.recv(65536)
                if got == b"":
                    self.stats.add(t, name, "closed_by_server")
            except (socket.timeout, OSError):
                pass
        finally:
            rst_close(s)

    # -- Half-open: N connections that never send a byte, re-opened when the server drops one.
    def half_open_loop(self, t):
        n = self.args.half_open
        socks = []
        # A server may drop each one every few seconds (a request timeout, an eviction): enough
        # re-opens to keep n held for the whole run, and no more.
        reopen_budget = int(n * (self.args.seconds / 2 + 10))
        opened = 0

        def open_one():
            nonlocal opened
            try:
                socks.append(t.socket_nonblocking())
                opened += 1
            except OSError as e:
                self.stats.add(t, "half_open", f"connect_error:{e.__class__.__name__}")

        for _ in range(n):
            if not self._running():
                break
            open_one()
        self.stats.add(t, "half_open", "opened", opened)
        with self.mu:
            self.sockets_held += len(socks)
        try:
            while self._running():
                self._pause(2.0)
                alive = []
                for s in socks:
                    try:
                        data = s.recv(65536, socket.MSG_DONTWAIT)
                        if data == b"":
                            raise ConnectionResetError
                        alive.append(s)  # the server wrote something (SETTINGS, an ERROR): keep
                    except (BlockingIOError, InterruptedError):
                        alive.append(s)
                    except OSError as e:
                        if e.errno == errno.ENOTCONN:  # connect still pending (backlog full)
                            alive.append(s)
                            continue
                        self.stats.add(t, "half_open", "dropped_by_server")
                        rst_close(s)
                dropped = len(socks) - len(alive)
                socks[:] = alive
                for _ in range(min(dropped, reopen_budget)):
                    reopen_budget -= 1
                    open_one()
                    self.stats.add(t, "half_open", "reopened")
        finally:
            self.stats.add(t, "half_open", "held_at_end", len(socks))
            for s in socks:
                rst_close(s)

    # -- Slow senders: M connections, each sending one byte per second of a plausible stream.
    def slow_loop(self, t):
        m = self.args.slow
        conns = []  # (socket, byte iterator, opened_at)
        budget = int(m * (self.args.seconds / 2 + 10))

        def open_one():
            try:
                s = t.socket(timeout=1.0)
                s.setblocking(False)
                conns.append((s, slow_stream(t.kind, t.grpc_path), time.time()))
                self.stats.add(t, "slow_1Bps", "opened")
            except OSError as e:
                self.stats.add(t, "slow_1Bps", f"connect_error:{e.__class__.__name__}")

        for _ in range(m):
            if not self._running():
                break
            open_one()
        try:
            while self._running():
                self._pause(1.0)
                alive = []
                for s, it, opened_at in conns:
                    try:
                        try:
                            s.recv(65536, socket.MSG_DONTWAIT)  # drain answers (PONGs, ...)
                        except BlockingIOError:
                            pass
                        s.send(bytes([next(it)]), socket.MSG_DONTWAIT)
                        alive.append((s, it, opened_at))
                    except BlockingIOError:
                        alive.append((s, it, opened_at))
                    except OSError:
                        self.stats.add(t, "slow_1Bps", "dropped_by_server")
                        self.stats.add(t, "slow_1Bps", "lived_s", int(time.time() - opened_at))
                        rst_close(s)
                dropped = len(conns) - len(alive)
                conns[:] = alive
                for _ in range(min(dropped, budget)):
                    budget -= 1
                    open_one()
        finally:
            self.stats.add(t, "slow_1Bps", "held_at_end", len(conns))
            for s, _, _ in conns:
                rst_close(s)


# ---------------------------------------------------------------------------------------------
# Monitors: RSS every second; a good client on every port every few seconds.


class RssSampler:
    def __init__(self, pids):
        self.pids = pids  # name -> pid
        self.samples = {n: [] for n in pids}  # name -> [(t, phase, vmrss_kb, rssanon_kb)]
        self.phase = "idle"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            now = time.time()
            for name, pid in self.pids.items():
                st = read_status(pid)
                if st:
                    self.samples[name].append((now, self.phase, st.get("VmRSS", 0),
                                               st.get("RssAnon", 0), st.get("Threads", 0),
                                               count_fds(pid)))
            self.stop.wait(1.0)

    def peak(self, name, phase, col=2):
        vals = [s[col] for s in self.samples[name] if s[1] == phase]
        return max(vals) if vals else 0

    def half_peaks(self, name, phase):
        """(peak VmRSS in the first half of `phase`, in the second half): flat when bounded."""
        vals = [s[2] for s in self.samples[name] if s[1] == phase]
        h = len(vals) // 2
        return (max(vals[:h]) if h else 0, max(vals[h:]) if vals[h:] else 0)

    def last(self, name, phase, col=2):
        vals = [s[col] for s in self.samples[name] if s[1] == phase]
        return vals[-1] if vals else 0


class Prober:
    """Probes every target every `period` seconds while the abuse runs (one thread)."""

    def __init__(self, targets, period):
        self.targets = targets
        self.period = period
        self.results = {t.name: [] for t in targets}  # name -> [(ok, detail, seconds)]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(self.period):
            for name, r in probe_all(self.targets).items():
                self.results[name].append(r)


# ---------------------------------------------------------------------------------------------
# The cluster


class Cluster:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.procs = Procs()
        self.daemons = []  # dicts: name, sock, grpc, piece, metrics, proxy, data, popen
        self.scheduler = None
        self.stalls = {}  # download name -> "made no progress" warnings of the peers

    def bin(self, rel):
        return os.path.join(self.args.build_dir, rel)

    def start(self, origin_rate):
        os.makedirs(os.path.join(self.work, "logs"), exist_ok=True)
        self._start_nginx(origin_rate)
        sp, sm = free_port(), free_port()
        p = self.procs.start("scheduler", [
            self.bin("src/scheduler/dfscheduler"), "--listen", f"127.0.0.1:{sp}",
            "--metrics", f"127.0.0.1:{sm}", "--log-level", self.args.log_level],
            os.path.join(self.work, "logs/dfscheduler.log"))
        self.scheduler = {"name": "scheduler", "grpc": sp, "metrics": sm, "popen": p}
        if not wait_tcp(sp, 15) or not wait_tcp(sm, 5):
            raise RuntimeError("dfscheduler did not start (see logs/dfscheduler.log)")
        self._start_daemon("seed", True)
        for i in range(self.args.peers):
            self._start_daemon(f"peer{i}", False)
        time.sleep(1.0)  # one announce interval or two: every host known to the scheduler

    def _start_nginx(self, origin_rate):
        d = os.path.join(self.work, "nginx")
        os.makedirs(d, exist_ok=True)
        self.origin_port = free_port()
        conf = os.path.join(d, "nginx.conf")
        user = "user root;\n" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
{user}events {{ worker_connections 1024; }}
http {{
  access_log {d}/access.log;
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  # sndbuf: limit_rate is enforced after each write; a small send buffer keeps the burst small
  # (loopback autotuning lets megabytes through at once), so the rate is what it says.
  server {{ listen 127.0.0.1:{self.origin_port} sndbuf=128k; root {self.work}/origin;
           limit_rate {origin_rate}; }}
}}
""")
        self.procs.start("nginx", ["nginx", "-c", conf, "-p", d, "-g", "daemon off;"],
                         os.path.join(self.work, "logs/nginx.log"))
        if not wait_tcp(self.origin_port, 10):
            raise RuntimeError("nginx did not start (see logs/nginx.log)")

    def _start_daemon(self, name, seed):
        d = {"name": name, "sock": os.path.join(self.work, f"{name}.sock"),
             "grpc": free_port(), "piece": free_port(), "metrics": free_port(),
             "proxy": free_port(),
             "data": os.path.join(self.args.data_root or self.work, name)}
        argv = [self.bin("src/daemon/dfdaemon"), "--hostname", name, "--ip", "127.0.0.1",
                "--listen-ip", "127.0.0.1", "--sock", d["sock"], "--data-dir", d["data"],
                "--grpc-port", d["grpc"], "--piece-port", d["piece"],
                "--metrics-port", d["metrics"], "--proxy-port", d["proxy"],
                # The mirror's upstream: the origin on loopback (the default is Docker Hub).
                "--registry-mirror", f"http://127.0.0.1:{self.origin_port}", "--scheduler",
                f"127.0.0.1:{self.scheduler['grpc']}", "--announce-interval", "500ms",
                "--log-level", self.args.log_level]
        if seed:
            argv.append("--seed")
        d["popen"] = self.procs.start(name, argv, os.path.join(self.work, f"logs/{name}.log"))
        ok = (wait_unix(d["sock"], 15) and wait_tcp(d["grpc"], 5) and wait_tcp(d["piece"], 5)
              and wait_tcp(d["metrics"], 5) and wait_tcp(d["proxy"], 5))
        if not ok:
            raise RuntimeError(f"{name} did not start (see logs/{name}.log)")
        self.daemons.append(d)

    @property
    def peers(self):
        return [d for d in self.daemons if d["name"] != "seed"]

    def log_path(self, name):
        return os.path.join(self.work, "logs", "dfscheduler.log" if name == "scheduler"
                            else f"{name}.log")

    def pids(self):
        out = {d["name"]: d["popen"].pid for d in self.daemons}
        out["scheduler"] = self.scheduler["popen"].pid
        return out

    def alive(self):
        out = {d["name"]: d["popen"].poll() for d in self.daemons}
        out["scheduler"] = self.scheduler["popen"].poll()
        return out  # name -> None while running, else the exit code (negative: signal)

    def targets(self):
        ts = []
        for d in self.daemons:
            n = d["name"]
            ts.append(Target(n, "grpc", d["grpc"], "/df.dfdaemon.v1.DfdaemonUpload/SyncPieces"))
            ts.append(Target(n, "piece", d["piece"]))
            ts.append(Target(n, "http", d["metrics"]))
            if not self.args.skip_mirror:
                ts.append(Target(n, "mirror", d["proxy"]))
            ts.append(Target(n, "grpc", d["sock"], "/df.dfdaemon.v1.DfdaemonDownload/StatTask"))
        ts.append(Target("scheduler", "grpc", self.scheduler["grpc"],
                         "/df.scheduler.v1.Scheduler/StatTask"))
        ts.append(Target("scheduler", "http", self.scheduler["metrics"]))
        return ts

    def seed_task_ids(self):
        try:
            return sorted(os.listdir(os.path.join(self.daemons[0]["data"], "content")))
        except OSError:
            return []

    def download_all(self, name, timeout):
        """dfget of /NAME on every peer at once. Returns (seconds until the last finished,
        {peer: (rc, seconds, stderr tail)})."""
        url = f"http://127.0.0.1:{self.origin_port}/{name}"
        log_start = {d["name"]: os.path.getsize(self.log_path(d["name"])) for d in self.peers}
        out_dir = os.path.join(self.work, "out")
        os.makedirs(out_dir, exist_ok=True)
        running = []
        start = time.time()
        for d in self.peers:
            out = os.path.join(out_dir, f"{d['name']}-{name}")
            errf = open(os.path.join(self.work, "logs", f"dfget-{d['name']}-{name}.log"), "wb+")
            p = subprocess.Popen([self.bin("src/dfget/dfget"), url, "-O", out, "--no-progress",
                                  "--daemon-sock", d["sock"], "--timeout", f"{int(timeout)}s"],
                                 stdin=subprocess.DEVNULL, stdout=errf, stderr=subprocess.STDOUT,
                                 start_new_session=True, preexec_fn=_die_with_parent)
            running.append((d, p, errf, out))
        results = {}
        try:
            for d, p, errf, out in running:
                try:
                    rc = p.wait(timeout=max(1, start + timeout + 10 - time.time()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    rc = p.wait()
                results[d["name"]] = [rc, time.time() - start, out]
        finally:
            for d, p, errf, out in running:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        # Completion times: poll order above makes later ones late by at most a poll; good
        # enough against tens of seconds, but use the output files' mtimes when they exist.
        for d, p, errf, out in running:
            r = results[d["name"]]
            if r[0] == 0 and os.path.exists(out):
                r[1] = max(0.0, os.stat(out).st_mtime - start)
            errf.seek(0)
            r.append(errf.read()[-300:].decode(errors="replace").strip())
            errf.close()
        total = max(r[1] for r in results.values())
        # A download that stalls logs "made no progress for <piece_timeout>" (not abuse-related
        # by itself: see docs/benchmarks.md, "Port abuse"); count them so a summary shows it.
        self.stalls[name] = sum(count_in_log(self.log_path(n), off, b"made no progress")
                                for n, off in log_start.items())
        return total, results

    def stop(self):
        self.procs.stop_all()


def check_outputs(results, want_sha):
    bad = []
    for name, (rc, secs, out, err) in results.items():
        if rc != 0:
            bad.append(f"{name}: dfget exit {rc}: {err}")
        elif sha256_file(out) != want_sha:
            bad.append(f"{name}: sha256 mismatch")
    for _, (_, _, out, _) in results.items():
        if os.path.exists(out):
            os.unlink(out)
    return bad


def count_in_log(path, since_offset, needle):
    try:
        with open(path, "rb") as f:
            f.seek(since_offset)
            return sum(1 for line in f if needle in line)
    except OSError:
        return 0


def log_warnings(path, since_offset):
    """Counts of distinct warning/error lines (first 80 chars after the level) since an offset."""
    counts = {}
    try:
        with open(path, "rb") as f:
            f.seek(since_offset)
            for raw in f:
                line = raw.decode(errors="replace")
                low = line.lower()
                if not any(k in low for k in (" warn", " error", "level=warn", "level=error",
                                              "fatal", "terminate", "sanitizer", "abort")):
                    continue
                key = line.strip()
                for sep in ("warn", "error", "WARN", "ERROR"):
                    if sep in key:
                        key = key[key.index(sep):]
                        break
                # Attackers' bytes end up in some lines (gRPC logs bad header values).
                key = "".join(c if c.isprintable() and c.isascii() else "?" for c in key[:90])
                counts[key] = counts.get(key, 0) + 1
    except OSError:
        pass
    return sorted(counts.items(), key=lambda kv: -kv[1])


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(os.path.dirname(here), "build"))
    ap.add_argument("--seconds", type=float, default=60, help="abuse duration (default 60)")
    ap.add_argument("--size", default="512MiB", help="file size (default 512MiB)")
    ap.add_argument("--peers", type=int, default=3, help="peer daemons besides the seed")
    ap.add_argument("--target-seconds", type=float, default=25,
                    help="unloaded download time the origin rate is chosen for (default 25)")
    ap.add_argument("--origin-rate", default="",
                    help="nginx limit_rate per request (e.g. 2m); overrides --target-seconds")
    ap.add_argument("--skip-mirror", action="store_true",
                    help="leave the registry mirror port out of the abuse (it is on by default "
                    "in dfdaemon; see docs/benchmarks.md, \"Port abuse\", for why ctest's "
                    "smoke run skips it for now)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="downloads unloaded and under abuse; the medians are compared (default 3)")
    ap.add_argument("--ramp", type=float, default=5, help="abuse seconds before the download")
    ap.add_argument("--half-open", type=int, default=200, help="half-open connections per port")
    ap.add_argument("--slow", type=int, default=16, help="1 byte/s senders per port")
    ap.add_argument("--bursts-per-sec", type=float, default=8,
                    help="garbage and protocol-abuse connections per second per port, each")
    ap.add_argument("--probe-period", type=float, default=5, help="good-client probe period")
    ap.add_argument("--min-speed-ratio", type=float, default=0.8)
    ap.add_argument("--min-availability", type=float, default=0.8,
                    help="share of good-client probes each port must answer under abuse")
    ap.add_argument("--rss-growth-limit", default="256MiB",
                    help="allowed peak RSS under abuse above the unloaded run's peak")
    ap.add_argument("--rss-late-growth-limit", default="64MiB",
                    help="allowed growth of the peak RSS from the first to the second half of "
                    "the abuse (a leak keeps growing); checked when the abuse lasts >= 45 s")
    ap.add_argument("--work-dir", default="", help="default: a new /tmp/port_abuse.* dir")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    ap.add_argument("--log-level", default="warn", help="of the daemons and the scheduler")
    ap.add_argument("--data-root", default="",
                    help="parent of the daemons' data dirs (default: the work dir); removed at "
                    "the end")
    ap.add_argument("--json", default="", help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, not {args.rounds}")
    return args


def preflight(args):
    missing = [b for b in ("src/daemon/dfdaemon", "src/scheduler/dfscheduler", "src/dfget/dfget")
               if not os.access(os.path.join(args.build_dir, b), os.X_OK)]
    if missing:
        return f"not built in {args.build_dir}: {', '.join(missing)}"
    if not shutil.which("nginx"):
        return "nginx not installed (scripts/install-deps.sh)"
    need_fds = ((args.peers + 1) * 5 + 2) * (args.half_open + args.slow + 40) + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need_fds:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need_fds), hard))
        except (ValueError, OSError):
            pass
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft < need_fds:
            return f"RLIMIT_NOFILE {soft} < {need_fds} needed for the half-open connections"
    return ""


def run(args, work, result):
    size = parse_size(args.size)
    origin_rate = args.origin_rate or f"{max(64, int(size / args.target_seconds / 4 / 1024))}k"
    origin = os.path.join(work, "origin")
    os.makedirs(origin, exist_ok=True)
    log(f"generating {fmt_mib(size)} file")
    want = make_file(os.path.join(origin, "unloaded-1.bin"), size)
    # Same bytes under other names: other URLs, other tasks, so no cache helps a later round.
    rounds = range(1, args.rounds + 1)
    for i in rounds:
        for phase in ("unloaded", "loaded"):
            if (phase, i) != ("unloaded", 1):
                os.link(os.path.join(origin, "unloaded-1.bin"),
                        os.path.join(origin, f"{phase}-{i}.bin"))
    check_size = min(size, 16 * MiB)
    want_check = make_file(os.path.join(origin, "check.bin"), check_size)

    cluster = Cluster(args, work)
    result["cluster"] = cluster
    log(f"starting nginx (limit_rate {origin_rate} per request), scheduler, seed, "
        f"{args.peers} peers")
    cluster.start(origin_rate)
    rss = RssSampler(cluster.pids())
    rss.thread.start()
    failures = []
    dl_timeout = max(120, args.target_seconds * 8)

    # -- Unloaded.
    rss.phase = "unloaded"
    unloaded_samples = []
    for i in rounds:
        log(f"unloaded download {i}/{args.rounds}")
        t, res = cluster.download_all(f"unloaded-{i}.bin", dl_timeout)
        bad = check_outputs(res, want)
        if bad:
            failures += [f"unloaded download: {b}" for b in bad]
            raise RuntimeError("; ".join(bad))
        log(f"unloaded {i}: {t:.1f} s")
        unloaded_samples.append(t)
    t_unloaded = statistics.median(unloaded_samples)

    # -- Loaded.
    rss.phase = "pre"
    time.sleep(2)  # RSS after the unloaded run settles
    start_rss = {n: read_status(p) or {} for n, p in cluster.pids().items()}
    targets = cluster.targets()
    abuse = Abuse(targets, args, cluster.seed_task_ids)
    log_offsets = {n: os.path.getsize(cluster.log_path(n)) for n in cluster.pids()}
    cpu_before = os.times()
    t0 = time.time()
    hard_deadline = t0 + args.seconds + args.rounds * dl_timeout + 30
    rss.phase = "abuse"
    log(f"abuse starts on {len(targets)} ports: {args.half_open} half-open + {args.slow} slow "
        f"per port, {args.bursts_per_sec}/s garbage and {args.bursts_per_sec}/s malformed "
        f"per port, for {args.seconds:.0f} s")
    abuse.start(hard_deadline)
    prober = Prober(targets, args.probe_period)
    prober.thread.start()
    abuse.stop.wait(args.ramp)
    loaded_samples = []
    for i in rounds:
        log(f"loaded download {i}/{args.rounds}")
        t, res = cluster.download_all(f"loaded-{i}.bin", dl_timeout)
        bad = check_outputs(res, want)
        failures += [f"loaded download {i}: {b}" for b in bad]
        log(f"loaded {i}: {t:.1f} s (abuse running for {time.time() - t0:.0f} s)")
        loaded_samples.append(t)
    t_loaded = statistics.median(loaded_samples)
    while time.time() < t0 + args.seconds and all(v is None for v in cluster.alive().values()):
        time.sleep(0.5)
    # Under-abuse probe of every port, the last word before the abusers go.
    under = probe_all(targets)
    prober.stop.set()
    prober.thread.join(timeout=30)
    abuse_seconds = time.time() - t0
    stuck = abuse.finish()
    cpu_after = os.times()
    rss.phase = "after"
    log(f"abuse stopped after {abuse_seconds:.0f} s")
    if stuck:
        failures.append(f"abuse threads did not stop: {stuck[:3]}")

    # -- After: alive, every port serves a good client, a fresh download works everywhere.
    time.sleep(1)
    alive = cluster.alive()
    for n, rc in alive.items():
        if rc is not None:
            failures.append(f"{n} died (exit {rc})")
    after = {}
    for t in targets:
        deadline = time.time() + 10
        while True:
            r = probe(t)
            if r[0] or time.time() > deadline:
                break
            time.sleep(0.5)
        after[t.name] = r
        if not r[0]:
            failures.append(f"{t.name} does not serve a good client after the abuse: {r[1]}")
    t_check, res = cluster.download_all("check.bin", dl_timeout)
    bad = check_outputs(res, want_check)
    failures += [f"download after the abuse: {b}" for b in bad]
    rss.stop.set()
    rss.thread.join(timeout=5)

    # -- Figures.
    ratio = t_unloaded / t_loaded if t_loaded > 0 else 0.0
    if ratio < args.min_speed_ratio:
        failures.append(f"loaded speed {ratio:.2f}x unloaded < {args.min_speed_ratio}")
    growth_limit_kb = parse_size(args.rss_growth_limit) // 1024
    late_growth_kb = parse_size(args.rss_late_growth_limit) // 1024
    rss_rows = []
    for n in cluster.pids():
        base_peak = max(rss.peak(n, "unloaded"), start_rss.get(n, {}).get("VmRSS", 0))
        row = {
            "process": n,
            "start_kb": start_rss.get(n, {}).get("VmRSS", 0),
            "unloaded_peak_kb": rss.peak(n, "unloaded"),
            "abuse_peak_kb": rss.peak(n, "abuse"),
            "abuse_half_peaks_kb": rss.half_peaks(n, "abuse"),
            "after_kb": rss.last(n, "after") or rss.last(n, "abuse"),
            "start_anon_kb": start_rss.get(n, {}).get("RssAnon", 0),
            "abuse_peak_anon_kb": rss.peak(n, "abuse", 3),
            "start_threads": start_rss.get(n, {}).get("Threads", 0),
            "abuse_peak_threads": rss.peak(n, "abuse", 4),
            "abuse_peak_fds": rss.peak(n, "abuse", 5),
        }
        rss_rows.append(row)
        h1, h2 = row["abuse_half_peaks_kb"]
        # RSS ramps up for ~20 s while the held connections pile up: only a long run can tell a
        # plateau from a leak.
        if abuse_seconds >= 45 and h2 > h1 + late_growth_kb:
            failures.append(f"{n}: RSS still growing under abuse: peak {h1 // 1024} MiB in the "
                            f"first half, {h2 // 1024} MiB in the second")
        if row["abuse_peak_kb"] > base_peak + growth_limit_kb:
            failures.append(f"{n}: RSS {row['abuse_peak_kb'] // 1024} MiB under abuse > "
                            f"{base_peak // 1024} MiB + {growth_limit_kb // 1024} MiB")
    availability = {}
    for t in targets:
        rs = prober.results[t.name]
        availability[t.name] = (sum(1 for r in rs if r[0]), len(rs),
                                max((r[2] for r in rs), default=0.0))
        ok_n, n = availability[t.name][:2]
        if n and ok_n < args.min_availability * n:
            failures.append(f"{t.name} answered {ok_n}/{n} good-client probes under abuse")
    stats = abuse.stats.snapshot()
    warnings = {n: log_warnings(cluster.log_path(n), off)[:6]
                for n, off in log_offsets.items()}
    result.update({
        "size_bytes": size, "origin_rate": origin_rate, "peers": args.peers,
        "abuse_seconds": abuse_seconds, "unloaded_s": t_unloaded, "loaded_s": t_loaded,
        "unloaded_samples_s": unloaded_samples, "loaded_samples_s": loaded_samples,
        "speed_ratio": ratio, "rss": rss_rows, "alive": alive,
        "under_abuse_probe": {k: list(v) for k, v in under.items()},
        "after_probe": {k: list(v) for k, v in after.items()},
        "availability_under_abuse": availability,
        "abuse_stats": stats,
        "garbage_per_port_per_s": sum(v.get("garbage", {}).get("sent", 0)
                                      for v in stats.values()) / len(targets) / abuse_seconds,
        "malformed_per_port_per_s": sum(
            x.get("sent", 0) for v in stats.values() for k, x in v.items()
            if k not in ("garbage", "half_open", "slow_1Bps")) / len(targets) / abuse_seconds,
        "abuser_cpu_s": (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
        "daemon_log_warnings": warnings, "failures": failures,
        "check_download_s": t_check,
        "stalls": {"unloaded": sum(cluster.stalls.get(f"unloaded-{i}.bin", 0) for i in rounds),
                   "loaded": sum(cluster.stalls.get(f"loaded-{i}.bin", 0) for i in rounds),
                   "check": cluster.stalls.get("check.bin", 0)},
    })
    return failures


def print_summary(r, args):
    p = print
    p("")
    p(f"port abuse: {fmt_mib(r['size_bytes'])} to {r['peers']} peers + seed on loopback, "
      f"origin limit_rate {r['origin_rate']}/request, {r['abuse_seconds']:.0f} s of abuse on "
      f"{len(r['availability_under_abuse'])} ports ({args.half_open} half-open + {args.slow} "
      f"slow senders per port, {r['garbage_per_port_per_s']:.1f}/s garbage + "
      f"{r['malformed_per_port_per_s']:.1f}/s malformed connections per port); abusers used "
      f"{r['abuser_cpu_s']:.0f} CPU-s")
    def samples(key):
        xs = r[key]
        return f" (median of {len(xs)}: {' '.join(f'{x:.1f}' for x in xs)})" if len(xs) > 1 else ""

    p(f"  unloaded download   {r['unloaded_s']:7.1f} s{samples('unloaded_samples_s')}")
    p(f"  loaded download     {r['loaded_s']:7.1f} s{samples('loaded_samples_s')}")
    p(f"  speed loaded/unloaded {r['speed_ratio']:5.2f}x  (must be >= {args.min_speed_ratio})")
    p(f"  download after abuse {r['check_download_s']:6.1f} s (16 MiB check file)")
    st = r["stalls"]
    if any(st.values()):
        p(f"  peers' 'made no progress' stalls: unloaded {st['unloaded']}, loaded {st['loaded']}, "
          f"after {st['check']} (each costs piece_timeout; see docs/benchmarks.md)")
    p("  RSS (VmRSS, MiB)   start  unloaded-peak  abuse-peak (1st half/2nd half)  after  |"
      " anon start->peak | threads start->peak | fds peak")
    for row in r["rss"]:
        h1, h2 = row["abuse_half_peaks_kb"]
        p(f"    {row['process']:<12} {row['start_kb'] / 1024:7.1f}"
          f" {row['unloaded_peak_kb'] / 1024:13.1f}"
          f" {row['abuse_peak_kb'] / 1024:11.1f} ({h1 / 1024:5.1f}/{h2 / 1024:5.1f})"
          f" {row['after_kb'] / 1024:16.1f}  |"
          f" {row['start_anon_kb'] / 1024:6.1f} -> {row['abuse_peak_anon_kb'] / 1024:6.1f}  |"
          f" {row['start_threads']:5d} -> {row['abuse_peak_threads']:5d}      | "
          f"{row['abuse_peak_fds'] or 0:5d}")
    dead = {n: rc for n, rc in r["alive"].items() if rc is not None}
    p(f"  crashes: {'none' if not dead else dead}")
    p("  good client on every port (under abuse: ok/probes, slowest; last probe under abuse;"
      " after):")
    for name, (ok, n, slowest) in r["availability_under_abuse"].items():
        u = r["under_abuse_probe"][name]
        a = r["after_probe"][name]
        p(f"    {name:<26} {ok:3d}/{n:<3d} {slowest:4.1f}s  | end: {'ok ' if u[0] else 'FAIL'} "
          f"{u[1][:30]:<30} | after: {'ok' if a[0] else 'FAIL ' + a[1][:40]}")
    for n, w in r["daemon_log_warnings"].items():
        if w:
            p(f"  {n} log under abuse: " + "; ".join(f"{c}x {k}" for k, c in w[:3]))
    if r["failures"]:
        p("FAIL:")
        for f in r["failures"]:
            p(f"  - {f}")
    else:
        p("PASS")


def main(argv):
    args = parse_args(argv)
    why = preflight(args)
    if why:
        print(f"port_abuse: SKIP: {why}")
        return SKIP

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python then keeps it so.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)
    work = args.work_dir or tempfile.mkdtemp(prefix="port_abuse.", dir="/tmp")
    os.makedirs(work, exist_ok=True)
    if args.data_root:
        args.data_root = tempfile.mkdtemp(prefix="port_abuse.", dir=args.data_root)
    result = {}
    failures = ["did not finish"]
    try:
        failures = run(args, work, result)
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping everything")
        return 130
    except RuntimeError as e:
        log(f"error: {e}")
        failures = [str(e)]
    finally:
        cluster = result.pop("cluster", None)
        if cluster is not None:
            cluster.stop()
        if args.data_root and not args.keep:
            shutil.rmtree(args.data_root, ignore_errors=True)
        if not args.keep:
            # On failure keep the logs (small), drop the data (large).
            if failures:
                for sub in os.listdir(work):
                    if sub != "logs":
                        shutil.rmtree(os.path.join(work, sub), ignore_errors=True)
                        if os.path.exists(os.path.join(work, sub)):
                            os.unlink(os.path.join(work, sub))
                log(f"logs kept in {work}/logs")
            else:
                shutil.rmtree(work, ignore_errors=True)
    if "speed_ratio" in result:
        print_summary(result, args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1, default=str)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
