#!/usr/bin/python3
"""ml_gain: the scheduling gain of the `ml` evaluator on the rig (issue 17), where the network's
structure is hidden from the scheduler.

Runs dfcluster.py on the `racks` topology with `--announce none` (no link rates), in the same
session:
  hidden  the daemons announce no idc/location (`--hide-idc`): evaluators ml, default, latency;
  named   the rack names given: ml and default (ml must stay within 1.2x of default there).
Every dragonfly run first distributes `--warmup-files` untimed files through its own scheduler
(records; for ml, a model trained by dftrainer and served by dfinference), then the measured
file. The evaluator order alternates between repetitions (the machine drifts).

Prints, per variant and evaluator, the median over repetitions of the mean host completion time
and of the last host's, and the ratio ml / default on the same run (the baseline).

  bench/cluster/ml_gain.py [--reps 3] [--size 256MiB] [--out DIR] [-- extra dfcluster args]
Must run as root on a quiet machine (other builds or tests distort the rig).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(out, evaluators, hide, args, extra):
    argv = [sys.executable, str(HERE / "dfcluster.py"), "run", "--topology", "racks", "--size",
            args.size, "--systems", "dragonfly", "--evaluators", ",".join(evaluators),
            "--announce", "none", "--warmup-files", str(args.warmup_files), "--warmup-size",
            args.warmup_size, "--no-calibrate", "--out", str(out)] + (
                ["--hide-idc"] if hide else []) + extra
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=False)
    path = out / "results.json"
    return json.loads(path.read_text()) if path.exists() else []


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--size", default="256MiB")
    p.add_argument("--warmup-files", type=int, default=1)
    p.add_argument("--warmup-size", default="128MiB")
    p.add_argument("--out", default=f"/tmp/ml-gain-{time.strftime('%Y%m%d-%H%M%S')}")
    p.add_argument("--no-named", action="store_true", help="skip the rack-names-given variant")
    p.add_argument("extra", nargs="*", help="after --: passed to dfcluster.py run")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = [("hidden", True, ["ml", "default", "latency"])]
    if not args.no_named:
        variants.append(("named", False, ["ml", "default"]))
    rows = {}  # (variant, evaluator) -> [(mean, last)]
    for rep in range(args.reps):
        for variant, hide, evaluators in variants:
            order = evaluators if rep % 2 == 0 else list(reversed(evaluators))
            for rec in run(out / f"{variant}-{rep}", order, hide, args, args.extra):
                ev = rec.get("evaluator")
                if ev and rec.get("completed") and rec.get("sha256_ok"):
                    rows.setdefault((variant, ev), []).append(
                        (rec["mean_host_seconds"], rec["last_host_seconds"]))
                elif ev:
                    rows.setdefault((variant, ev), []).append((None, None))
    print(f"\nracks, --announce none, {args.size}, {args.warmup_files} warm-up file(s) of "
          f"{args.warmup_size}, {args.reps} repetitions (median; spread min-max)")
    print(f"{'variant':8} {'evaluator':9} {'mean s':>22} {'last host s':>22} {'mean/default':>13}")
    summary = {}
    for (variant, ev), vals in sorted(rows.items()):
        ok = [v for v in vals if v[0] is not None]
        if not ok:
            print(f"{variant:8} {ev:9} {'failed':>22}")
            continue
        means, lasts = [m for m, _ in ok], [l for _, l in ok]
        summary[(variant, ev)] = statistics.median(means)
        base = rows.get((variant, "default"), [])
        base_ok = [b[0] for b in base if b[0] is not None]
        ratio = (statistics.median(means) / statistics.median(base_ok)) if base_ok else float("nan")
        print(f"{variant:8} {ev:9} {statistics.median(means):8.2f} ({min(means):.2f}-{max(means):.2f})"
              f" {statistics.median(lasts):8.2f} ({min(lasts):.2f}-{max(lasts):.2f})"
              f" {ratio:13.2f}  [{len(ok)}/{len(vals)} runs ok]")
    hidden = summary.get(("hidden", "ml")), summary.get(("hidden", "default"))
    named = summary.get(("named", "ml")), summary.get(("named", "default"))
    if all(hidden):
        gain = 1 - hidden[0] / hidden[1]
        print(f"hidden racks: ml mean completion {gain * 100:+.1f}% lower than default "
              f"(target >= 25%) -> {'PASS' if gain >= 0.25 else 'FAIL'}")
    if all(named):
        print(f"racks named: ml / default = {named[0] / named[1]:.2f} (target <= 1.2) -> "
              f"{'PASS' if named[0] / named[1] <= 1.2 else 'FAIL'}")
    (out / "summary.json").write_text(json.dumps(
        {f"{v}/{e}": vals for (v, e), vals in rows.items()}, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
