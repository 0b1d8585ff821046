#!/usr/bin/env python3
"""Checks a Grafana dashboard JSON against the metrics our binaries export.

usage: check_dashboard.py DASHBOARD.json SRC_DIR

Fails (exit 1, one line per problem) when the file is not valid JSON, a panel has no query or a
duplicate id, a query names a df_* metric that no binary registers (names are collected from the
sources under SRC_DIR: `.Name("df_...")` and the `Counter(r, "df_...")`/`Gauge(r, "df_...")`
helpers of the metrics files), or one of the panels the README promises is missing. A histogram's
`_bucket`, `_count` and `_sum` series count as its name.
"""
import json
import pathlib
import re
import sys

# Where a metric name is registered: prometheus-cpp's builder, our small helpers, and the
# hand-built df_healthy family of common/metrics.cc.
REGISTERED = re.compile(r'(?:\.Name\(|Counter\(r, |Gauge\(r, |family\.name = )\s*"(df_[a-z0-9_]+)"')
QUERIED = re.compile(r"\b(df_[a-z0-9_]+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")

# What an operator looks for first (issue 19): each needs a panel that queries it.
REQUIRED = {
    "throughput, peer vs origin": "df_daemon_download_bytes_total",
    "task outcomes": "df_daemon_tasks_failed_total",
    "piece failures by reason": "df_daemon_piece_failures_total",
    "scheduler decisions": "df_scheduler_decisions_total",
    "decision latency": "df_scheduler_decision_duration_seconds_bucket",
    "hosts": "df_scheduler_hosts",
    "peers": "df_scheduler_peers",
    "evictions": "df_daemon_evicted_bytes_total",
}


def exported_names(src_dir):
    names = set()
    for path in pathlib.Path(src_dir).rglob("*.cc"):
        names.update(REGISTERED.findall(path.read_text(errors="replace")))
    return names


def panels_of(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels of collapsed rows


def check(dashboard, exported):
    problems = []
    ids = set()
    exprs = []
    for panel in panels_of(dashboard):
        if panel.get("id") in ids:
            problems.append(f"duplicate panel id {panel.get('id')}")
        ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        targets = [t.get("expr", "") for t in panel.get("targets", [])]
        if not targets or not all(targets):
            problems.append(f"panel {panel.get('title')!r} has a target without a query")
        exprs.extend(targets)
    for expr in exprs:
        for name in QUERIED.findall(expr):
            base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
            if name not in exported and base not in exported:
                problems.append(f"{name} (in {expr!r}) is not exported by any binary")
    text = "\n".join(exprs)
    for what, metric in REQUIRED.items():
        if not re.search(rf"\b{metric}\b", text):
            problems.append(f"no panel for {what} (queries {metric})")
    if "histogram_quantile(0.5," not in text or "histogram_quantile(0.99," not in text:
        problems.append("no p50 and p99 of the decision latency")
    return problems


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        dashboard = json.loads(pathlib.Path(sys.argv[1]).read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"{sys.argv[1]}: {e}")
        return 1
    exported = exported_names(sys.argv[2])
    # The extraction itself must work, or every name would look unknown (or the check vacuous).
    for known in ("df_daemon_download_bytes_total", "df_scheduler_decisions_total"):
        if known not in exported:
            print(f"found no registration of {known} under {sys.argv[2]}: the check is broken")
            return 1
    problems = check(dashboard, exported)
    for p in problems:
        print(p)
    if not problems:
        print(f"{sys.argv[1]}: ok ({len(exported)} exported metrics known)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
