"""What the tests of the rig's analysis tools share: the per-piece debug line a daemon logs,
running a tool, checks collected rather than stopping at the first, and the bad-input cases every
tool must answer with a clear error and a non-zero exit (never a traceback)."""
import os
import subprocess
import sys

TASK = "a" * 64
BENCH_CLUSTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench",
                             "cluster")


def piece_line(time, piece, source, nbytes=1 << 20, ms=10.0):
    """A daemon's debug line for a piece committed `time` seconds into the minute."""
    return (f"2026-12-01T00:00:{time:06.3f}+00:00 debug dfdaemon piece {piece} of task {TASK} "
            f"done source={source} bytes={nbytes} ms={ms}\n")


class ToolTest:
    def __init__(self, tool):
        self.tool = tool
        self.path = os.path.join(BENCH_CLUSTER, f"{tool}.py")
        self.failures = []

    def run(self, *args):
        return subprocess.run([sys.executable, self.path, *args], capture_output=True, text=True)

    def check(self, cond, what):
        if not cond:
            self.failures.append(what)

    def expect_errors(self, cases):
        """`cases`: (args, words): the tool exits non-zero with `words` in its stderr."""
        for args, words in cases:
            r = self.run(*args)
            self.check(r.returncode != 0 and words in r.stderr,
                       f"{args}: exit {r.returncode}, stderr {r.stderr!r}")
            self.check("Traceback" not in r.stderr, f"{args}: a traceback instead of an error")

    def finish(self):
        """Prints the failures and the verdict; the exit code for ctest."""
        for f in self.failures:
            print("FAIL:", f)
        print(f"{self.tool}_tool:", "FAILED" if self.failures else "ok")
        return 1 if self.failures else 0
