#!/usr/bin/env python3
"""bench/cluster/link_usage.py on a log directory it writes itself: known per-piece lines give
the rates they imply, and bad input (no directory, no per-piece lines, a bad window) is a clear
error with a non-zero exit. Run by ctest as link_usage_tool."""
import os
import sys
import tempfile

from tool_test import ToolTest, piece_line


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
    t = ToolTest("link_usage")
    with tempfile.TemporaryDirectory() as d:
        mib = 1 << 20
        # p01 takes two 1 MiB pieces from the seed, each over 1 s of the first 2 s window; the
        # seed takes one 1.25 MiB piece from the origin over 1 s; a line of another system and
        # a garbage line are ignored.
        with open(os.path.join(d, "dragonfly-default-none-dfdaemon-p01.log"), "w") as f:
            f.write(piece_line(11.0, 0, "seed-10.0.0.1-abc", mib, 1000))
            f.write(piece_line(12.0, 1, "seed-10.0.0.1-abc", mib, 1000))
            f.write("garbage\n")
        with open(os.path.join(d, "dragonfly-default-none-dfdaemon-seed.log"), "w") as f:
            f.write(piece_line(11.0, 0, "http://origin/file", 5 * mib // 4, 1000))
        with open(os.path.join(d, "other-dfdaemon-p02.log"), "w") as f:
            f.write(piece_line(11.0, 0, "seed-10.0.0.1-abc", 100 * mib, 1000))
        r = t.run(d, "--window", "2")
        t.check(r.returncode == 0, f"exit {r.returncode}: {r.stderr}")
        if r.returncode == 0:
            up, down = rows(r.stdout, "upload"), rows(r.stdout, "download")
            mbit = lambda nbytes, secs: nbytes * 8 / secs / 1e6
            t.check(abs(up["seed"][0] - mbit(2 * mib, 2)) < 0.6, f"seed upload {up.get('seed')}")
            t.check(abs(down["p01"][0] - mbit(2 * mib, 2)) < 0.6, f"p01 download {down.get('p01')}")
            t.check(abs(up["origin"][0] - mbit(5 * mib // 4, 2)) < 0.6,
                    f"origin upload {up.get('origin')}")
            t.check("p02" not in up and "p02" not in down, "another system's log was read")

        empty = os.path.join(d, "empty")
        os.mkdir(empty)
        t.expect_errors([((os.path.join(d, "missing"),), "not a directory"),
                         ((empty,), "no per-piece debug lines"),
                         ((d, "--window", "0"), "--window must be positive"),
                         ((d, "--window", "x"), "invalid float value")])
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
