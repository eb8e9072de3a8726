#!/usr/bin/env bash
# scripts/demo.sh without running the whole demo (no install, no build):
#   - a second demo on the same run directory refuses at once, names the
#     running demo's pid, and touches none of its files;
#   - the lock goes with the process that held it (a stale pid in the lock
#     file does not block);
#   - waiting for a service stops as soon as it exits, with the end of its log;
#   - the demo's tokens cover every principal the example views name
#     (the full check, with the services, is tests/integration/test_examples.py).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
failures=0 passed=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; passed=$((passed + 1)); }
tmp=$(mktemp -d)
holder=
cleanup() { [ -n "$holder" ] && kill "$holder" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# A running demo: demo.sh's own lock function, held by a background shell.
run=$tmp/run
mkdir -p "$run"
echo "the first demo's log" >"$run/nats.log"
bash -c 'source scripts/demo-lib.sh; demo_lock "$1" || exit 1; exec sleep 60' _ "$run" &
holder=$!
for _ in $(seq 50); do [ "$(cat "$run/demo.lock" 2>/dev/null)" = "$holder" ] && break; sleep 0.1; done
[ "$(cat "$run/demo.lock" 2>/dev/null)" = "$holder" ] || fail "the first demo did not take the lock"

start=$SECONDS
out=$(FLEDGER_RUN_DIR=$run FLEDGER_NATS_PORT=1 timeout 30 bash scripts/demo.sh 2>&1)
rc=$?
if [ "$rc" = 1 ] && grep -q "another demo is running in this checkout (pid $holder)" <<<"$out" &&
  [ $((SECONDS - start)) -lt 10 ] && [ "$(cat "$run/nats.log")" = "the first demo's log" ] &&
  ! grep -q '==> ' <<<"$out"; then
  pass "a second demo refuses (exit 1), names pid $holder, touches nothing"
else
  fail "a second demo: exit $rc after $((SECONDS - start)) s, output: $out; nats.log: $(cat "$run/nats.log")"
fi

kill "$holder"; wait "$holder" 2>/dev/null; holder=
if bash -c 'source scripts/demo-lib.sh; demo_lock "$1"' _ "$run" 2>"$tmp/err"; then
  pass "the lock is free once its demo is gone (stale pid file ignored)"
else
  fail "the lock is still held after its demo exited: $(cat "$tmp/err")"
fi

# A service that exits at start: no 30 s wait, its log's end is shown.
out=$(bash -c 'source scripts/demo-lib.sh
  (echo "cannot bind 127.0.0.1:1: permission denied" >&2; exit 3) 2>"$1/svc.log" &
  demo_wait_http http://127.0.0.1:1/healthz $! command-svc "$1/svc.log"' _ "$tmp" 2>&1)
rc=$?
if [ "$rc" = 1 ] && grep -q "command-svc exited (status 3)" <<<"$out" &&
  grep -q "cannot bind" <<<"$out"; then
  pass "waiting stops when the service exits, with its log's end"
else
  fail "demo_wait_http on an exited service: exit $rc, output: $out"
fi

# Every principal the example views name has a demo token.
bash -c 'source scripts/demo-lib.sh; demo_tokens "$1"' _ "$tmp" || fail "demo_tokens failed"
missing=$(python3 - "$tmp/tokens.json" schemas/views/*.json <<'PY'
import json, sys
principals = json.load(open(sys.argv[1]))["principals"]
names = {p["name"] for p in principals}
roles = {r for p in principals for r in p["roles"]}
for path in sys.argv[2:]:
    acl = json.load(open(path))["acl"]
    for entry in acl["write"] + acl["read"] + [e for f in acl.get("features", {}).values() for e in f["read"]]:
        if (entry[5:] not in roles) if entry.startswith("role:") else (entry not in names):
            print(f"{path}: {entry}")
PY
)
if [ -z "$missing" ]; then pass "the demo has a token for every principal of the example views"
else fail "no demo token for: $missing"; fi

echo "demo: $passed passed, $failures failed"
[ "$failures" = 0 ]
