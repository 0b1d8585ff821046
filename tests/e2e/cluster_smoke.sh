#!/usr/bin/env bash
# Smoke test of the cluster benchmark rig (bench/cluster/dfcluster.py): origin + seed host + 2 peers
# on two shaped racks, a 16 MiB file, every system (origin-only curl, BitTorrent, this system).
# With --image: a 16 MiB OCI image of 2 layers in a docker-registry, pulled with skopeo directly
# and through each host's dfdaemon mirror (about 10 s).
# Exit 0: every system completed with every copy's sha256 correct.
# Exit 77 (ctest SKIP_RETURN_CODE): not root, a required tool is missing, or our binaries
#   (dfscheduler/dfdaemon/dfget) are not built yet while the other systems passed.
# Exit 1: any system failed, timed out, or produced a wrong copy.
# Usage: tests/e2e/cluster_smoke.sh [BUILD_DIR] [--image]   (default <repo>/build)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build_dir="${1:-$repo/build}"
mode="${2:-}"
tools="ip tc curl nginx aria2c opentracker gnuplot /usr/bin/python3"
run_args=(--size 16MiB)
if [ "$mode" = "--image" ]; then
  tools="ip tc curl gnuplot /usr/bin/python3 /usr/bin/docker-registry /usr/bin/skopeo"
  run_args=(--image --layers 2 --size 16MiB)
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "cluster_smoke: SKIP: needs root (network namespaces, tc)"; exit 77
fi
for tool in $tools; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "cluster_smoke: SKIP: $tool not installed (run scripts/install-deps.sh)"; exit 77
  fi
done
if ! /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
  echo "cluster_smoke: SKIP: python3-yaml not installed"; exit 77
fi

out="$(mktemp -d /tmp/cluster_smoke.XXXXXX)"
trap 'rm -rf "$out"' EXIT
# timeout(1) bounds the whole run; dfcluster cleans up on the SIGTERM it sends.
timeout -k 10 100 /usr/bin/python3 "$repo/bench/cluster/dfcluster.py" run \
  --topology "$repo/bench/cluster/topologies/smoke.yaml" "${run_args[@]}" \
  --build-dir "$build_dir" --out "$out" --timeout 30 --settle 0.5 --skip-code 77
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ -f "$out/results.json" ]; then
  cat "$out/results.json"
fi
exit "$rc"
