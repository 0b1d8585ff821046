#!/usr/bin/env bash
# Scheduler register-to-first-parents latency with 1,000 concurrent announcing peers (issue 3:
# target p99 <= 5 ms on a 2-core machine), against a same-run baseline (unary StatTask).
#
# Builds nothing: runs scheduler_bench (and dfscheduler) from a build dir.
#   bench/scheduler_latency.sh [BUILD_DIR] [extra scheduler_bench flags...]
# BUILD_DIR defaults to ./build. Runs, in order:
#   1. steady: 1,000 streams open, registers spread over 1 s (in-process scheduler)   <- the target
#   2. steady + piece traffic: every registered peer also reports a piece every second
#   3. stress: the same with a piece every 250 ms per peer (4,000 reports/s)
#   4. burst: all 1,000 registers at the same instant (a queueing bound, not the target)
#   5. steady against a real dfscheduler process (over loopback TCP)
set -euo pipefail

BUILD_DIR=${1:-build}
shift || true
BENCH="$BUILD_DIR/src/scheduler/scheduler_bench"
SCHEDULER="$BUILD_DIR/src/scheduler/dfscheduler"
for bin in "$BENCH" "$SCHEDULER"; do
  if [[ ! -x "$bin" ]]; then
    echo "scheduler_latency.sh: $bin not found; build it first (ninja -C $BUILD_DIR scheduler_bench dfscheduler)" >&2
    exit 2
  fi
done

echo "# $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "## 1. steady: 1000 peers, registers spread over 1s"
"$BENCH" --peers 1000 --spread-ms 1000 "$@" || true
echo "## 2. steady + a piece report per peer every second"
"$BENCH" --peers 1000 --spread-ms 1000 --piece-interval-ms 1000 "$@" || true
echo "## 3. stress: a piece report per peer every 250ms"
"$BENCH" --peers 1000 --spread-ms 1000 --piece-interval-ms 250 "$@" || true
echo "## 4. burst: 1000 registers at once"
"$BENCH" --peers 1000 --spread-ms 0 "$@" || true

echo "## 5. steady against a dfscheduler process"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$SCHEDULER" --listen "127.0.0.1:$PORT" --metrics "" --log-level warn &
SCHEDULER_PID=$!
trap 'kill "$SCHEDULER_PID" 2>/dev/null || true; wait "$SCHEDULER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
"$BENCH" --peers 1000 --spread-ms 1000 --target "127.0.0.1:$PORT" "$@" || true
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
