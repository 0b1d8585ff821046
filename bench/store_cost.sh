#!/usr/bin/env bash
# Scheduler cost of the shared store: CPU per 1,000 piece reports with --store memory and with
# --store redis (a local redis-server), and Redis commands per piece report, in the same run.
#
#   bench/store_cost.sh [BUILD_DIR] [PEERS] [PIECE_INTERVAL_MS]
# Runs dfscheduler as a process, drives it with scheduler_bench --target (PEERS streams, each
# reporting a piece every PIECE_INTERVAL_MS while registers are spread over 2 s), and reads the
# scheduler's CPU time from /proc and its report count from /metrics. Everything it starts is
# stopped by pid at exit.
set -euo pipefail

BUILD_DIR=${1:-build}
PEERS=${2:-500}
INTERVAL=${3:-100}
BENCH="$BUILD_DIR/src/scheduler/scheduler_bench"
SCHEDULER="$BUILD_DIR/src/scheduler/dfscheduler"
for bin in "$BENCH" "$SCHEDULER" redis-server redis-cli curl; do
  command -v "$bin" >/dev/null || [[ -x "$bin" ]] || { echo "store_cost.sh: $bin missing" >&2; exit 2; }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu_ms() { awk '{ print ($14 + $15) * 1000 / '"$(getconf CLK_TCK)"' }' "/proc/$1/stat"; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
  --daemonize no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "# $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $PEERS peers, a piece per peer every ${INTERVAL} ms"
printf '%-8s %10s %14s %16s %14s %14s\n' store reports "cpu ms" "cpu ms/1000 rep" "redis cmds" "cmds/report"
for store in memory "redis://127.0.0.1:$REDIS_PORT/0"; do
  PORT=$(free_port); MPORT=$(free_port)
  "$SCHEDULER" --listen "127.0.0.1:$PORT" --metrics "127.0.0.1:$MPORT" --store "$store" \
    --log-level warn >"$WORK/scheduler.log" 2>&1 &
  SPID=$!
  PIDS+=("$SPID")
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$MPORT/healthz" >/dev/null && break; sleep 0.1; done
  redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  C0=$(cpu_ms "$SPID")
  "$BENCH" --target "127.0.0.1:$PORT" --peers "$PEERS" --spread-ms 2000 \
    --piece-interval-ms "$INTERVAL" --baseline-calls 200 >"$WORK/bench.log" 2>&1 || true
  sleep 1  # one more store round
  C1=$(cpu_ms "$SPID")
  REPORTS=$(curl -s "http://127.0.0.1:$MPORT/metrics" |
    awk '/^df_scheduler_peer_announces_total\{type="piece_finished"\}/ { print int($2) }')
  CMDS=$(redis-cli -p "$REDIS_PORT" info stats | awk -F: '/^total_commands_processed/ { print int($2) }')
  kill "$SPID"; wait "$SPID" 2>/dev/null || true
  name=$([[ $store == memory ]] && echo memory || echo redis)
  [[ $name == memory ]] && CMDS=0
  awk -v n="$name" -v r="$REPORTS" -v c0="$C0" -v c1="$C1" -v k="$CMDS" 'BEGIN {
    cpu = c1 - c0; printf "%-8s %10d %14.0f %16.1f %14d %14.3f\n", n, r, cpu,
      r ? cpu * 1000 / r : 0, k, r ? k / r : 0 }'
done
