"""The per-piece debug lines of dfdaemon logs written by a dfcluster.py run, for the tools that
read them (hop_delay.py, link_usage.py).

With `--daemon-log-level debug`, every dfdaemon logs one line per committed piece:

    <time> debug dfdaemon piece N of task T done source=PEER_OR_origin bytes=B ms=M

and dfcluster.py names each host's log `<system>-dfdaemon-<host>.log`.
"""
import datetime
import os
import re
from typing import Iterator, NamedTuple, Optional

LINE = re.compile(r"^(\S+) debug dfdaemon piece (\d+) of task (\w+) done source=(\S+) "
                  r"bytes=(\d+)(?: ms=([\d.]+))?")


class PieceLine(NamedTuple):
    host: str          # the host that committed the piece (from the log's name)
    time: float        # when it committed it, seconds since the epoch
    piece: int
    source: str        # the host it came from, or "origin"
    nbytes: int
    seconds: Optional[float]  # the transfer's time; None in logs that predate it


def host_of_source(source):
    """The host of a piece's source: peer ids are "<hostname>-<ip>-<random>" (common/ids.h);
    "origin", a URL or anything else that is not a peer id is the origin."""
    if source.startswith(("http:", "https:", "origin")) or source.count("-") < 2:
        return "origin"
    return source.rsplit("-", 2)[0]


def read(log_dir, system) -> Iterator[PieceLine]:
    """Every per-piece line of `system`'s dfdaemon logs in `log_dir`, log by log in name order."""
    prefix = system + "-dfdaemon-"
    for name in sorted(os.listdir(log_dir)):
        if not (name.startswith(prefix) and name.endswith(".log")):
            continue
        host = name[len(prefix):-len(".log")]
        with open(os.path.join(log_dir, name), errors="replace") as f:
            for line in f:
                m = LINE.match(line)
                if not m:
                    continue
                yield PieceLine(host, datetime.datetime.fromisoformat(m.group(1)).timestamp(),
                                int(m.group(2)), host_of_source(m.group(4)), int(m.group(5)),
                                None if m.group(6) is None else float(m.group(6)) / 1000.0)
