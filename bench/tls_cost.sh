#!/usr/bin/env bash
# Cost of mutual TLS on the control plane (issue 14): the same scheduler load without TLS and
# with it, in the same run (tls_bench), with a throwaway CA and certificate made by openssl.
#   bench/tls_cost.sh [BUILD_DIR] [extra tls_bench flags, e.g. --peers 1000 --rounds 3]
# KEY=rsa uses an RSA-2048 key instead of ECDSA P-256 (handshakes cost more).
set -euo pipefail

BUILD_DIR=${1:-build}
shift || true
BENCH="$BUILD_DIR/src/scheduler/tls_bench"
if [[ ! -x "$BENCH" ]]; then
  echo "tls_cost.sh: $BENCH not found; build it first (ninja -C $BUILD_DIR tls_bench)" >&2
  exit 2
fi
command -v openssl >/dev/null || { echo "tls_cost.sh: needs the openssl CLI" >&2; exit 2; }

DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
if [[ "${KEY:-ec}" == rsa ]]; then
  NEWKEY=(-newkey rsa:2048)
else
  NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
fi
# The same commands as docs/security.md, "Mutual TLS".
openssl req -x509 "${NEWKEY[@]}" -nodes -keyout "$DIR/ca.key" -out "$DIR/ca.crt" -days 1 \
  -subj "/CN=bench-ca" 2>/dev/null
openssl req "${NEWKEY[@]}" -nodes -keyout "$DIR/node.key" -out "$DIR/node.csr" \
  -subj "/CN=bench-node" 2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n' \
  > "$DIR/node.ext"
openssl x509 -req -in "$DIR/node.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
  -out "$DIR/node.crt" -days 1 -extfile "$DIR/node.ext" 2>/dev/null
chmod 600 "$DIR/node.key"

echo "# $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), key ${KEY:-ec}"
"$BENCH" --tls-cert "$DIR/node.crt" --tls-key "$DIR/node.key" --tls-ca "$DIR/ca.crt" "$@"
