#!/usr/bin/env python3
"""bench/cluster/link_usage.py on a log directory it writes itself: known per-piece lines give
the rates they imply, and bad input (no directory, no per-piece lines, a bad window) is a clear
error with a non-zero exit. Run by ctest as link_usage_tool."""
import os
import subprocess
import sys
import tempfile

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "cluster",
                    "link_usage.py")
TASK = "a" * 64


def line(time, piece, source, nbytes, ms):
    return (f"2026-12-01T00:00:{time:06.3f}+00:00 debug dfdaemon piece {piece} of task {TASK} "
            f"done source={source} bytes={nbytes} ms={ms}\n")


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)


def rows(out, table):
    """{host: [rates]} of the upload or download table."""
    lines = out.split("\n")
    start = next(i for i, l in enumerate(lines) if l.startswith(table))
    got = {}
    for l in lines[start + 2:]:
        if not l.strip() or l.startswith("peers"):
            break
        parts = l.split()
        got[parts[0]] = [float(x) for x in parts[1:]]
    return got


def main():
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as d:
        mib = 1 << 20
        # p01 takes two 1 MiB pieces from the seed, each over 1 s of the first 2 s window; the
        # seed takes one 1.25 MiB piece from the origin over 1 s; a line of another system and
        # a garbage line are ignored.
        with open(os.path.join(d, "dragonfly-default-none-dfdaemon-p01.log"), "w") as f:
            f.write(line(11.0, 0, "seed-10.0.0.1-abc", mib, 1000))
            f.write(line(12.0, 1, "seed-10.0.0.1-abc", mib, 1000))
            f.write("garbage\n")
        with open(os.path.join(d, "dragonfly-default-none-dfdaemon-seed.log"), "w") as f:
            f.write(line(11.0, 0, "http://origin/file", 5 * mib // 4, 1000))
        with open(os.path.join(d, "other-dfdaemon-p02.log"), "w") as f:
            f.write(line(11.0, 0, "seed-10.0.0.1-abc", 100 * mib, 1000))
        r = run(d, "--window", "2")
        check(r.returncode == 0, f"exit {r.returncode}: {r.stderr}")
        if r.returncode == 0:
            up, down = rows(r.stdout, "upload"), rows(r.stdout, "download")
            mbit = lambda nbytes, secs: nbytes * 8 / secs / 1e6
            check(abs(up["seed"][0] - mbit(2 * mib, 2)) < 0.6, f"seed upload {up.get('seed')}")
            check(abs(down["p01"][0] - mbit(2 * mib, 2)) < 0.6, f"p01 download {down.get('p01')}")
            check(abs(up["origin"][0] - mbit(5 * mib // 4, 2)) < 0.6,
                  f"origin upload {up.get('origin')}")
            check("p02" not in up and "p02" not in down, "another system's log was read")

        empty = os.path.join(d, "empty")
        os.mkdir(empty)
        for args, words in [((os.path.join(d, "missing"),), "not a directory"),
                            ((empty,), "no per-piece debug lines"),
                            ((d, "--window", "0"), "--window must be positive"),
                            ((d, "--window", "x"), "invalid float value")]:
            r = run(*args)
            check(r.returncode != 0 and words in r.stderr,
                  f"{args}: exit {r.returncode}, stderr {r.stderr!r}")
            check("Traceback" not in r.stderr, f"{args}: a traceback instead of an error")
    for f in failures:
        print("FAIL:", f)
    print("link_usage_tool:", "FAILED" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
