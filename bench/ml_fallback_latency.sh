#!/usr/bin/env bash
# Announce latency of the ml evaluator with the inference service up and with it killed (issue
# 17: within 10%). The ml evaluator never calls the service on a decision's path, so killing it
# must not slow a register down.
#
#   bench/ml_fallback_latency.sh [BUILD_DIR] [extra scheduler_bench flags...]
#
# 1. a model: the synthetic dataset (learning_bench --write-synthetic), dftrainer --train-once;
# 2. dfinference serves it; scheduler_bench (in-process dfscheduler, --evaluator ml) measures
#    register -> first parents with 1,000 peers (up);
# 3. dfinference killed (SIGKILL); the same run again (down); then up again (a second sample:
#    the machine is noisy, so the ratio is printed for both orders).
# Builds nothing: ninja -C BUILD_DIR scheduler_bench dftrainer dfinference learning_bench.
set -euo pipefail

BUILD_DIR=${1:-build}
shift || true
BENCH="$BUILD_DIR/src/scheduler/scheduler_bench"
TRAINER="$BUILD_DIR/src/trainer/dftrainer"
INFERENCE="$BUILD_DIR/src/inference/dfinference"
LEARNING="$BUILD_DIR/bench/learning/learning_bench"
for bin in "$BENCH" "$TRAINER" "$INFERENCE" "$LEARNING"; do
  if [[ ! -x "$bin" ]]; then
    echo "ml_fallback_latency.sh: $bin not found; build it first" >&2
    exit 2
  fi
done

WORK=$(mktemp -d)
INFERENCE_PID=""
cleanup() {
  if [[ -n "$INFERENCE_PID" ]]; then kill -9 "$INFERENCE_PID" 2>/dev/null || true; wait "$INFERENCE_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "# $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$LEARNING" --write-synthetic "$WORK/dataset" --hosts-per-rack 8
"$TRAINER" --train-once "$WORK/dataset" --repo "$WORK/repo" --epochs 2 --threads 1 --log-level warn

PORT=$(free_port)
start_inference() {
  "$INFERENCE" --repo "$WORK/repo" --listen "127.0.0.1:$PORT" --metrics "" --log-level warn &
  INFERENCE_PID=$!
  for _ in $(seq 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null; then break; fi
    sleep 0.1
  done
  sleep 1  # the first poll loads the version
}

p99() { sed -n 's/.*register->first parents:.* p50=\([0-9.]*\)ms.* p99=\([0-9.]*\)ms.*/\1 \2/p'; }
run() {
  "$BENCH" --peers 1000 --spread-ms 1000 --evaluator ml --inference "127.0.0.1:$PORT" "$@" | tee "$WORK/$LABEL.out"
}

start_inference
LABEL=up1 run "$@"
kill -9 "$INFERENCE_PID"; wait "$INFERENCE_PID" 2>/dev/null || true; INFERENCE_PID=""
LABEL=down run "$@"
start_inference
LABEL=up2 run "$@"

read -r UP1_P50 UP1_P99 < <(p99 < "$WORK/up1.out")
read -r DOWN_P50 DOWN_P99 < <(p99 < "$WORK/down.out")
read -r UP2_P50 UP2_P99 < <(p99 < "$WORK/up2.out")
python3 - "$UP1_P50" "$UP1_P99" "$DOWN_P50" "$DOWN_P99" "$UP2_P50" "$UP2_P99" <<'PY'
import sys
u1p50, u1p99, dp50, dp99, u2p50, u2p99 = map(float, sys.argv[1:])
up50, up99 = (u1p50 + u2p50) / 2, (u1p99 + u2p99) / 2
print(f"register -> first parents, ml evaluator, 1000 peers:")
print(f"  inference up   (mean of 2 runs): p50={up50:.3f}ms p99={up99:.3f}ms")
print(f"  inference down (SIGKILLed):      p50={dp50:.3f}ms p99={dp99:.3f}ms")
print(f"ratio down/up: p50={dp50 / up50:.2f} p99={dp99 / up99:.2f} (target <= 1.10) -> "
      f"{'PASS' if dp99 / up99 <= 1.10 else 'FAIL'}")
PY
