#!/usr/bin/env bash
# Installs every Debian package the project needs to build, test and benchmark.
# Idempotent: packages already present are skipped; `apt-get update` runs at most once.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config clang-format git
  # fuzzing (make fuzz): clang and its libFuzzer/sanitizer runtimes
  clang-14 libclang-rt-14-dev
  # control plane
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  # origin access, config, CLI, logging, JSON, metadata store, metrics
  libcurl4-openssl-dev libssl-dev openssl libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev
  nlohmann-json3-dev libsqlite3-dev prometheus-cpp-dev
  # shared scheduler state (the Redis store): client library, and the server the tests start
  libhiredis-dev redis-server redis-tools
  # learning loop: libtorch for dftrainer and dfinference only (no other target links it)
  libtorch-dev
  # libtorch calls libblas.so.3 for matrix products: Debian's default is the reference BLAS
  # (libblas3); OpenBLAS, single-threaded like our torch calls, takes that name over through
  # update-alternatives and runs the bandwidth model's products several times faster
  libopenblas0-serial
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev nginx-light curl python3 python3-yaml iproute2 procps bc
  aria2 opentracker gnuplot-nox
  # a real terminal for the progress bar test (tests/e2e/everyday_test.cc)
  tmux
  # the Prometheus server that scrapes a daemon in everyday_test (skipped without it)
  prometheus
  # OCI registry mirror (docs/oci.md): the HTTP library of dfdaemon's mirror; a real registry,
  # skopeo and htpasswd (bcrypt) for tests/oci; RE2 for the mirror's proxy rules
  libcpp-httplib-dev docker-registry skopeo apache2-utils libre2-dev
  # containerd and ctr: tests/oci/oci_containerd_test pulls through the mirror with ctr
  containerd
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's nginx package starts a service on :80; we only use the binary with our own configs.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; fi
if command -v service >/dev/null 2>&1; then $SUDO service nginx stop >/dev/null 2>&1 || true; fi
# Likewise redis-server's service on :6379: tests and benchmarks start their own on free ports.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
if command -v service >/dev/null 2>&1; then $SUDO service redis-server stop >/dev/null 2>&1 || true; fi
# And prometheus's on :9090 (dftrainer's default port): the tests start their own on free ports.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
if command -v service >/dev/null 2>&1; then $SUDO service prometheus stop >/dev/null 2>&1 || true; fi
# And docker-registry's on :5000: tests/oci starts its own registries on free ports.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
if command -v service >/dev/null 2>&1; then $SUDO service docker-registry stop >/dev/null 2>&1 || true; fi
# And containerd's: tests/oci starts its own instances in temporary roots.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now containerd >/dev/null 2>&1 || true; fi
if command -v service >/dev/null 2>&1; then $SUDO service containerd stop >/dev/null 2>&1 || true; fi
echo "install-deps: done"
