#!/usr/bin/env python3
"""bench/cluster/hop_delay.py on a log directory it writes itself: a chain origin -> seed -> p01
-> p02 whose commit times give known hop delays and depths, and bad input (no directory, no
per-piece lines, no piece from a parent) is a clear error with a non-zero exit. Run by ctest as
hop_delay_tool."""
import os
import subprocess
import sys
import tempfile

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "cluster",
                    "hop_delay.py")
TASK = "a" * 64
SYSTEM = "dragonfly-default-none"


def line(time, piece, source):
    return (f"2026-12-01T00:00:{time:06.3f}+00:00 debug dfdaemon piece {piece} of task {TASK} "
            f"done source={source} bytes=1048576 ms=10.0\n")


def write(d, host, lines):
    with open(os.path.join(d, f"{SYSTEM}-dfdaemon-{host}.log"), "w") as f:
        f.writelines(lines)


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)


def main():
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as d:
        # Two pieces: the seed commits at 10 s; p01 (host name with a dash, as peer ids allow)
        # 40 ms later; p02 60 ms after p01.
        write(d, "seed", [line(10.0, 0, "origin"), line(10.5, 1, "origin")])
        write(d, "p-01", [line(10.04, 0, "seed-10.0.0.1-abc"), line(10.54, 1, "seed-10.0.0.1-abc")])
        write(d, "p02", [line(10.10, 0, "p-01-10.0.0.2-def"), line(10.60, 1, "p-01-10.0.0.2-def"),
                         "garbage\n"])
        r = run(d, "--system", SYSTEM)
        check(r.returncode == 0, f"exit {r.returncode}: {r.stderr}")
        out = r.stdout
        check("n=4 " in out and "median=60.0 ms" in out and "p10=40.0 ms" in out,
              f"overall line: {out.splitlines()[:1]}")
        rows = {l.split()[0]: l.split() for l in out.splitlines()[2:] if l.strip()}
        check(rows.get("p-01", [None] * 5)[2:5] == ["40.0", "ms", "1.0"], f"p-01: {rows.get('p-01')}")
        check(rows.get("p02", [None] * 5)[2:5] == ["60.0", "ms", "2.0"], f"p02: {rows.get('p02')}")
        check(rows.get("seed", [None] * 4)[2:4] == ["-", "0.0"], f"seed: {rows.get('seed')}")

        empty = os.path.join(d, "empty")
        os.mkdir(empty)
        only_origin = os.path.join(d, "only-origin")
        os.mkdir(only_origin)
        write(only_origin, "seed", [line(10.0, 0, "origin")])
        for args, words in [((os.path.join(d, "missing"),), "not a directory"),
                            ((empty,), "no '*-dfdaemon-*.log'"),
                            ((empty, "--system", SYSTEM), "no per-piece debug lines"),
                            ((only_origin,), "no piece came from a parent")]:
            r = run(*args)
            check(r.returncode != 0 and words in r.stderr,
                  f"{args}: exit {r.returncode}, stderr {r.stderr!r}")
            check("Traceback" not in r.stderr, f"{args}: a traceback instead of an error")
    for f in failures:
        print("FAIL:", f)
    print("hop_delay_tool:", "FAILED" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
