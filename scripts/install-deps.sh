#!/usr/bin/env bash
# Installs the Debian packages fledger builds, tests and runs with.
set -euo pipefail
packages=(
  build-essential pkg-config meson ninja-build
  libnats-dev liblmdb-dev lmdb-utils libmicrohttpd-dev libjansson-dev libssl-dev
  libgnutls28-dev libcriterion-dev
  nats-server openssl curl ca-certificates python3
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi
