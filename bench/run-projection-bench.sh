#!/usr/bin/env bash
# The read models' apply cost with window tiles against without, and hot
# against light window reads, at the library level (no HTTP):
#   bash bench/run-projection-bench.sh [--hot N] [build]
# (or [build] [N]); --hot 1000000 for the large case (~1 GB of memory, a
# minute; default 20000).
# Then the live path: apply runs of one event (one commit each).
case ${1:-} in -h|--help) sed -n '2,/^case /p' "$0" | grep -v '^case ' | sed 's/^# \{0,1\}//'; exit 0 ;; esac
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
hot=20000
if [ "${1:-}" = --hot ]; then hot=$2; shift 2; fi
build=$(cd "${1:-$root/build}" && pwd)
hot=${2:-$hot}
echo "== with tiles"
"$build/bench/bench_projection" --hot "$hot"
echo "== without tiles (reads scan raw events)"
"$build/bench/bench_projection_untiled" --hot "$hot" --secs 0.5
echo "== runs of one event, with tiles"
BENCH_HOT_ONLY=1 "$build/bench/bench_projection" --hot 5000 --run 1 --secs 0.2
echo "== runs of one event, without tiles"
BENCH_HOT_ONLY=1 "$build/bench/bench_projection_untiled" --hot 5000 --run 1 --secs 0.2
