#!/usr/bin/env python3
"""bench/cluster/hop_delay.py on a log directory it writes itself: a chain origin -> seed -> p01
-> p02 whose commit times give known hop delays and depths, and bad input (no directory, no
per-piece lines, no piece from a parent) is a clear error with a non-zero exit. Run by ctest as
hop_delay_tool."""
import os
import sys
import tempfile

from tool_test import ToolTest, piece_line

SYSTEM = "dragonfly-default-none"


def write(d, host, lines):
    with open(os.path.join(d, f"{SYSTEM}-dfdaemon-{host}.log"), "w") as f:
        f.writelines(lines)


def main():
    t = ToolTest("hop_delay")
    with tempfile.TemporaryDirectory() as d:
        # Two pieces: the seed commits at 10 s; p01 (host name with a dash, as peer ids allow)
        # 40 ms later; p02 60 ms after p01.
        write(d, "seed", [piece_line(10.0, 0, "origin"), piece_line(10.5, 1, "origin")])
        write(d, "p-01", [piece_line(10.04, 0, "seed-10.0.0.1-abc"),
                          piece_line(10.54, 1, "seed-10.0.0.1-abc")])
        write(d, "p02", [piece_line(10.10, 0, "p-01-10.0.0.2-def"),
                         piece_line(10.60, 1, "p-01-10.0.0.2-def"), "garbage\n"])
        r = t.run(d, "--system", SYSTEM)
        t.check(r.returncode == 0, f"exit {r.returncode}: {r.stderr}")
        out = r.stdout
        t.check("n=4 " in out and "median=60.0 ms" in out and "p10=40.0 ms" in out,
                f"overall line: {out.splitlines()[:1]}")
        rows = {l.split()[0]: l.split() for l in out.splitlines()[2:] if l.strip()}
        t.check(rows.get("p-01", [None] * 5)[2:5] == ["40.0", "ms", "1.0"],
                f"p-01: {rows.get('p-01')}")
        t.check(rows.get("p02", [None] * 5)[2:5] == ["60.0", "ms", "2.0"], f"p02: {rows.get('p02')}")
        t.check(rows.get("seed", [None] * 4)[2:4] == ["-", "0.0"], f"seed: {rows.get('seed')}")

        empty = os.path.join(d, "empty")
        os.mkdir(empty)
        only_origin = os.path.join(d, "only-origin")
        os.mkdir(only_origin)
        write(only_origin, "seed", [piece_line(10.0, 0, "origin")])
        t.expect_errors([((os.path.join(d, "missing"),), "not a directory"),
                         ((empty,), "no '*-dfdaemon-*.log'"),
                         ((empty, "--system", SYSTEM), "no per-piece debug lines"),
                         ((only_origin,), "no piece came from a parent")])
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
