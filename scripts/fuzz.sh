#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz (clang, ASan, UBSan) in
# build-fuzz and runs each for a bounded time, starting from its committed
# seed corpus (tests/fuzz/corpus/<harness>). Prints a table and exits 1 when
# any fuzzer found a crash, a leak, undefined behaviour, a timeout or an
# out-of-memory; the inputs that did it are in build-fuzz/fuzz-findings/.
#
# Usage: scripts/fuzz.sh [seconds-per-fuzzer] [harness...]
#   (default 20 s each, every harness; docs/fuzzing.md)
# Environment: CC (default clang-15, else clang), FUZZ_BUILD_DIR
# (default build-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
shift || true
case "$seconds" in '' | *[!0-9]*)
	echo "usage: scripts/fuzz.sh [seconds-per-fuzzer] [harness...]" >&2
	exit 2
	;;
esac
dir=${FUZZ_BUILD_DIR:-build-fuzz}
if [ -z "${CC:-}" ]; then
	if command -v clang-15 >/dev/null 2>&1; then CC=clang-15; else CC=clang; fi
fi
if ! command -v "$CC" >/dev/null 2>&1; then
	echo "fuzz.sh: $CC not found (apt-get install clang-15 libfuzzer-15-dev)" >&2
	exit 1
fi

if [ ! -f "$dir/build.ninja" ]; then
	CC=$CC meson setup "$dir" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
		>/dev/null
fi
ninja -C "$dir" fuzzers >"$dir/fuzzers-build.log" 2>&1 || {
	tail -40 "$dir/fuzzers-build.log" >&2
	echo "FAIL: the fuzzers do not build (full log: $dir/fuzzers-build.log)" >&2
	exit 1
}

if [ "$#" -gt 0 ]; then
	harnesses=("$@")
else
	harnesses=()
	for seeds in tests/fuzz/corpus/*/; do
		harnesses+=("$(basename "$seeds")")
	done
fi

# UB stops the run like a crash; leaks are reported at the end of each input.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1

dict_of() {
	case "$1" in
	time | query | codec) echo tests/fuzz/dict/text.dict ;;
	*) echo tests/fuzz/dict/json.dict ;;
	esac
}

status=0
rows=()
for h in "${harnesses[@]}"; do
	exe="$dir/tests/fuzz/fuzz_$h"
	seeds="tests/fuzz/corpus/$h"
	if [ ! -x "$exe" ] || [ ! -d "$seeds" ]; then
		echo "fuzz.sh: no harness $h" >&2
		exit 2
	fi
	work="$dir/fuzz-corpus/$h"
	findings="$dir/fuzz-findings/$h"
	log="$dir/fuzz-logs/$h.log"
	mkdir -p "$work" "$findings" "$(dirname "$log")"
	rm -f "$findings"/*
	rc=0
	# New inputs go to the work corpus; the committed seeds are only read.
	"$exe" "$work" "$seeds" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
		-dict="$(dict_of "$h")" -artifact_prefix="$findings/" -print_final_stats=1 \
		>"$log" 2>&1 || rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	inited=$(sed -n 's/.*INITED cov: \([0-9]*\) ft: \([0-9]*\).*/\1 \2/p' "$log" | tail -1)
	last=$(sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\).*/\1 \2/p' "$log" | tail -1)
	new_units=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
	read -r cov0 ft0 <<<"${inited:-0 0}"
	read -r cov1 ft1 <<<"${last:-0 0}"
	n_findings=$(find "$findings" -type f | wc -l)
	if [ "$rc" -ne 0 ] && [ "$n_findings" -eq 0 ]; then
		n_findings=1 # died without an artifact (e.g. the harness's set-up)
	fi
	if [ "$n_findings" -gt 0 ]; then
		status=1
		echo "fuzz.sh: $h: findings in $findings, log $log" >&2
		grep -m 3 -E "ERROR: |runtime error|invariant failed" "$log" >&2 || true
	fi
	rows+=("$(printf '%-14s %12s %9s %14s %10s %9s' "$h" "${execs:-?}" "$cov1" \
		"+$((cov1 - cov0))/+$((ft1 - ft0))" "${new_units:-?}" "$n_findings")")
done

echo
printf '%-14s %12s %9s %14s %10s %9s\n' harness executions coverage "new cov/ft" "new units" findings
for row in "${rows[@]}"; do echo "$row"; done
echo "($seconds s per fuzzer; logs in $dir/fuzz-logs)"
exit $status
