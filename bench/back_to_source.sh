#!/usr/bin/env bash
# Back-to-source benchmark (issue 2): the same file from a local nginx origin with curl and with
# dfget (through dfdaemon, no scheduler), in one run; prints both rates and the ratio.
# Then dfdaemon's peak RSS (VmHWM) over a larger download.
#
# Usage: bench/back_to_source.sh [--build-dir build] [--size 1GiB] [--rss-size 2GiB] [--runs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

BUILD_DIR=build SIZE=1GiB RSS_SIZE=2GiB RUNS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --rss-size) RSS_SIZE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
DFGET=$BUILD_DIR/src/dfget/dfget
DFDAEMON=$BUILD_DIR/src/daemon/dfdaemon
[ -x "$DFGET" ] && [ -x "$DFDAEMON" ] || { echo "build first: $DFGET, $DFDAEMON missing" >&2; exit 2; }

to_bytes() { numfmt --from=iec "${1%iB}" 2>/dev/null || numfmt --from=iec "${1%B}"; }
df_tmpdir
trap df_cleanup EXIT
mkdir -p "$DF_TMP/origin" "$DF_TMP/out"
bytes=$(to_bytes "$SIZE")
rss_bytes=$(to_bytes "$RSS_SIZE")
head -c "$bytes" /dev/urandom > "$DF_TMP/origin/file.bin"
port=$(df_free_port)
df_nginx "$DF_TMP/origin" "$port"
url="http://127.0.0.1:$port/file.bin"
cat "$DF_TMP/origin/file.bin" > /dev/null  # both clients read the origin file from page cache

sock=$DF_TMP/dfdaemon.sock
start_daemon() {
  "$DFDAEMON" --sock "$sock" --data-dir "$DF_TMP/data" --grpc-port 0 --piece-port 0 \
    --metrics-port 0 --proxy-port 0 --log-level warn 2>>"$DF_TMP/dfdaemon.log" &
  DAEMON_PID=$!
  DF_PIDS+=($DAEMON_PID)
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
}
stop_daemon() { kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; }
start_daemon

best_curl=0 best_dfget=0
for run in $(seq "$RUNS"); do
  rm -f "$DF_TMP/out/"*
  t0=$(df_now); curl -s -o "$DF_TMP/out/curl.bin" "$url"; t1=$(df_now)
  curl_rate=$(echo "$bytes / ($t1 - $t0)" | bc -l)
  # A new tag each run makes a new task, so dfget really goes to the origin every time.
  t0=$(df_now)
  "$DFGET" --no-progress --daemon-sock "$sock" --tag "run$run" "$url" -O "$DF_TMP/out/dfget.bin"
  t1=$(df_now)
  dfget_rate=$(echo "$bytes / ($t1 - $t0)" | bc -l)
  printf 'run %d: curl %.0f MB/s, dfget %.0f MB/s, ratio %.2f\n' "$run" \
    "$(echo "$curl_rate/1000000" | bc -l)" "$(echo "$dfget_rate/1000000" | bc -l)" \
    "$(echo "$dfget_rate/$curl_rate" | bc -l)"
  cmp -s "$DF_TMP/out/curl.bin" "$DF_TMP/out/dfget.bin" || { echo "dfget output differs!" >&2; exit 1; }
  (( $(echo "$curl_rate > $best_curl" | bc -l) )) && best_curl=$curl_rate
  (( $(echo "$dfget_rate > $best_dfget" | bc -l) )) && best_dfget=$dfget_rate
done
rm -rf "$DF_TMP/data" "$DF_TMP/out/"*
printf 'back_to_source %s: curl %.0f MB/s  dfget %.0f MB/s  ratio %.2f (target >= 0.80; best of %d)\n' \
  "$SIZE" "$(echo "$best_curl/1000000" | bc -l)" "$(echo "$best_dfget/1000000" | bc -l)" \
  "$(echo "$best_dfget/$best_curl" | bc -l)" "$RUNS"

# Peak RSS of a fresh dfdaemon over one download of RSS_SIZE.
stop_daemon
rm -f "$DF_TMP/origin/file.bin"
head -c "$rss_bytes" /dev/urandom > "$DF_TMP/origin/big.bin"
start_daemon
"$DFGET" --no-progress --daemon-sock "$sock" "http://127.0.0.1:$port/big.bin" -O "$DF_TMP/out/big.bin"
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$DAEMON_PID/status")
printf 'dfdaemon peak RSS over a %s download: %.1f MiB (target <= 100 MiB)\n' "$RSS_SIZE" "$(echo "$hwm_kb/1024" | bc -l)"
