#!/usr/bin/env python3
"""What each host's links carried over time, from the per-piece debug logs of a dfcluster.py run.

Run the swarm with `--daemon-log-level debug --keep-work --work-dir W`, then:

    bench/cluster/link_usage.py W/logs [--system dragonfly-default-none] [--window 10]

Every dfdaemon logs one line per committed piece ("piece N of task T done source=PEER bytes=B
ms=M"). The piece's bytes are spread evenly over the M milliseconds before the line, and added
to the source host's upload and to the logging host's download. The script prints, per host and
per window, the average rate in Mbit/s, and the total upload of the swarm per window: on a
topology where uploads bind (hetero), a total well below the sum of the uplinks is upload
capacity nobody used. The origin's column is what the seed peer took from it.
"""
import argparse
import collections
import os
import sys

import piece_log


def load(log_dir, system):
    # (end time, receiving host, source host, bytes, seconds) of the lines that carry a time
    return [(p.time, p.host, p.source, p.nbytes, p.seconds)
            for p in piece_log.read(log_dir, system) if p.seconds is not None]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("log_dir")
    ap.add_argument("--system", default="dragonfly-default-none")
    ap.add_argument("--window", type=float, default=10.0, help="seconds per column (default 10)")
    args = ap.parse_args()
    if args.window <= 0:
        sys.exit("--window must be positive")
    if not os.path.isdir(args.log_dir):
        sys.exit(f"{args.log_dir}: not a directory")
    events = load(args.log_dir, args.system)
    if not events:
        sys.exit(f"no per-piece debug lines of {args.system} in {args.log_dir} "
                 "(run with --daemon-log-level debug --keep-work)")
    t0 = min(end - secs for end, _, _, _, secs in events)
    up = collections.defaultdict(collections.Counter)
    down = collections.defaultdict(collections.Counter)
    w = args.window
    for end, host, source, nbytes, secs in events:
        start = end - max(secs, 1e-6) - t0
        stop = end - t0
        for k in range(int(start // w), int(stop // w) + 1):
            share = (min(stop, (k + 1) * w) - max(start, k * w)) / (stop - start)
            if share > 0:
                up[source][k] += nbytes * share
                down[host][k] += nbytes * share
    columns = max(max(c) for c in list(up.values()) + list(down.values()) if c) + 1
    hosts = sorted(set(up) | set(down), key=lambda h: (h == "origin", h == "seed", h))

    def rate(counter, k):
        return counter[k] * 8 / w / 1e6

    def table(title, series):
        print(f"{title}, Mbit/s per {w:g} s window (column = window start, s)")
        print("host     " + " ".join(f"{k * w:>6.0f}" for k in range(columns)))
        for h in hosts:
            print(f"{h:8} " + " ".join(f"{rate(series[h], k):6.0f}" for k in range(columns)))

    table("upload", up)
    total = [sum(rate(up[h], k) for h in hosts if h != "origin") for k in range(columns)]
    print("peers    " + " ".join(f"{x:6.0f}" for x in total) + "   (upload of all peers)")
    print()
    table("download", down)


if __name__ == "__main__":
    main()
