#!/usr/bin/env python3
"""Per-hop delay of a swarm, from the per-piece debug logs of a dfcluster.py run.

Run the swarm with `--daemon-log-level debug --keep-work`, then:

    bench/cluster/hop_delay.py WORK_DIR/logs [--system dragonfly-default-none]

Every dfdaemon logs one line per committed piece ("piece N of task T done source=PEER ...").
For a piece that host C took from parent P, the hop delay is the time C committed it minus the
time P committed it: what one hop of the distribution tree adds to the piece's way from the
origin. The script prints its distribution over all (child, piece) pairs, per-host medians, and
the depth of the tree (hops from the origin fetcher) against the finish order.
"""
import argparse
import os
import statistics
import sys

import piece_log


def load(log_dir, system):
    done = {}  # host -> {piece: (time, source host or "origin")}, the first commit of each
    for p in piece_log.read(log_dir, system):
        done.setdefault(p.host, {}).setdefault(p.piece, (p.time, p.source))
    return done


def quantiles(values):
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return f"n={len(values)} p10={pick(0.1)*1e3:.1f} ms median={pick(0.5)*1e3:.1f} ms " \
           f"p90={pick(0.9)*1e3:.1f} ms max={values[-1]*1e3:.1f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("log_dir")
    ap.add_argument("--system", default=None,
                    help="log name prefix (default: the first '<system>-dfdaemon-*.log' found)")
    args = ap.parse_args()
    if not os.path.isdir(args.log_dir):
        sys.exit(f"{args.log_dir}: not a directory")
    system = args.system
    if system is None:
        names = [n for n in os.listdir(args.log_dir) if "-dfdaemon-" in n]
        if not names:
            sys.exit(f"no '*-dfdaemon-*.log' in {args.log_dir}")
        system = sorted(names)[0].split("-dfdaemon-")[0]
    done = load(args.log_dir, system)
    if not done:
        sys.exit(f"no per-piece debug lines for {system} (run with --daemon-log-level debug)")
    delays, per_host = [], {}
    for host, pieces in done.items():
        for piece, (t, source) in pieces.items():
            if source == "origin" or source not in done or piece not in done[source]:
                continue
            d = t - done[source][piece][0]
            delays.append(d)
            per_host.setdefault(host, []).append(d)
    if not delays:
        sys.exit("no piece came from a parent")
    print(f"{system}: hop delay (child commit - parent commit), all pieces: {quantiles(delays)}")

    # Depth: hops from an origin fetch, per piece, then the median per host.
    def depth(host, piece, seen=()):
        t, source = done[host][piece]
        if source == "origin" or source not in done or piece not in done[source] or host in seen:
            return 0
        return 1 + depth(source, piece, seen + (host,))

    last = {h: max(t for t, _ in p.values()) for h, p in done.items()}
    print(f"{'host':8} {'last commit':>12} {'median hop':>11} {'median depth':>13}")
    t0 = min(min(t for t, _ in p.values()) for p in done.values())
    for host in sorted(done, key=lambda h: last[h]):
        hops = per_host.get(host, [])
        med = f"{statistics.median(hops)*1e3:.1f} ms" if hops else "-"
        depths = [depth(host, n) for n in done[host]]
        print(f"{host:8} {last[host]-t0:11.2f}s {med:>11} {statistics.median(depths):13.1f}")


if __name__ == "__main__":
    main()
