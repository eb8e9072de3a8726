#!/usr/bin/env bash
# Installs the Debian packages fledger builds, tests and runs with.
# --runtime: only what building and running needs (no test tooling).
set -euo pipefail
runtime_only=0
[ "${1:-}" = "--runtime" ] && runtime_only=1
packages=(
  build-essential pkg-config meson ninja-build
  libnats-dev liblmdb-dev lmdb-utils libmicrohttpd-dev libjansson-dev libssl-dev
  libgnutls28-dev libcriterion-dev libcurl4-openssl-dev
  nats-server openssl curl ca-certificates python3 python3-pandas
)
# Operations tests: docker-compose (compose.yaml), promtool (package
# prometheus), Node.js and npm (tests/tooling). A Node.js already installed
# is kept: NodeSource's nodejs bundles npm and conflicts with Debian's npm.
# The fuzzers (scripts/fuzz.sh): clang-15 and its libFuzzer; clang-format
# for the format check of .ci/run.
if [ "$runtime_only" = 0 ]; then
  packages+=(docker-compose prometheus clang-15 libfuzzer-15-dev clang-format)
  command -v node >/dev/null 2>&1 || packages+=(nodejs)
  command -v npm >/dev/null 2>&1 || packages+=(npm)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The pinned npm tools of the schema and OpenAPI checks (tests/tooling).
tooling="$(cd "$(dirname "$0")/.." && pwd)/tests/tooling"
if [ "$runtime_only" = 0 ] && [ ! -d "$tooling/node_modules" ]; then
  npm ci --prefix "$tooling" --no-audit --no-fund
fi
