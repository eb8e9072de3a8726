#!/usr/bin/env bash
# `--version` of command-svc, query-svc and fledger: exit 0, the project
# version (meson's, in $FLEDGER_VERSION) on the first line, then the versions
# of the libraries each runs with; and `--help` lists --version.
# Binaries: $FLEDGER_COMMAND_SVC, $FLEDGER_QUERY_SVC, $FLEDGER_CLI.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
expected=${FLEDGER_VERSION:?set FLEDGER_VERSION to the meson project version}
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

check() { # name binary libraries...
  local name=$1 bin=$2 out rc lib
  shift 2
  out=$("$bin" --version 2>&1); rc=$?
  [ "$rc" -eq 0 ] || fail "$name --version exited $rc: $out"
  [ "$(head -n1 <<<"$out")" = "$name $expected" ] ||
    fail "$name --version first line is '$(head -n1 <<<"$out")', expected '$name $expected'"
  for lib in "$@"; do
    grep -qE "^  $lib +[0-9A-Za-z]" <<<"$out" || fail "$name --version has no $lib line: $out"
  done
  "$bin" --help 2>&1 | grep -q -- '--version' || fail "$name --help does not list --version"
  echo "$name: ok"
}

check command-svc "${FLEDGER_COMMAND_SVC:-$root/build/command-svc/command-svc}" \
  LMDB libnats libmicrohttpd jansson OpenSSL
check query-svc "${FLEDGER_QUERY_SVC:-$root/build/query-svc/query-svc}" \
  LMDB libnats libmicrohttpd jansson OpenSSL
check fledger "${FLEDGER_CLI:-$root/build/cli/fledger}" LMDB libmicrohttpd jansson OpenSSL

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "--version: 3 passed, 0 failed"
