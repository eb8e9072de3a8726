#!/usr/bin/env bash
# The whole test suite: a normal build and an ASan/UBSan build, each through
# `meson test`. A skipped test counts as a failure: a check that did not run
# has not passed. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

run_suite() {
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@"
  fi
  ninja -C "$dir"
  meson test -C "$dir" --print-errorlogs --num-processes 2
}

# Counts the results of the last `meson test` run in build dir $1.
count() {
  python3 - "$1/meson-logs/testlog.json" <<'PY'
import json, sys
ok = bad = skip = 0
for line in open(sys.argv[1]):
    result = json.loads(line).get("result")
    if result in ("OK", "EXPECTEDFAIL"):
        ok += 1
    elif result == "SKIP":
        skip += 1
    else:
        bad += 1
print(ok, bad, skip)
PY
}

status=0
run_suite build || status=1
read -r ok1 bad1 skip1 < <(count build)
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false || status=1
read -r ok2 bad2 skip2 < <(count build-asan)
echo
echo "normal build: $ok1 passed, $bad1 failed, $skip1 skipped"
echo "asan build: $ok2 passed, $bad2 failed, $skip2 skipped"
summary="suites: $((ok1 + ok2)) passed, $((bad1 + bad2 + skip1 + skip2)) failed, $((skip1 + skip2)) skipped"
echo "$summary"
# .ci/run repeats it as its last line, after the fuzzers.
echo "$summary" >build/suites-summary.txt
if [ $((skip1 + skip2)) -gt 0 ]; then
  echo "FAIL: skipped tests did not run and count as failures" >&2
  status=1
fi
exit $status
