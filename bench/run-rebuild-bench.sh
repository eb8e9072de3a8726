#!/usr/bin/env bash
# Rebuild benchmark, alone: starts nats-server and command-svc on free
# loopback ports in a temporary directory, writes a log of N events (N
# distinct entities, 1000-event batches), waits until command-svc is idle,
# then starts a fresh query-svc with an empty data dir K times and times each
# until /readyz shows the last seq. Prints a markdown table.
#
# Usage: bench/run-rebuild-bench.sh [--events N] [--trials K] [build-dir]
#   --events N: events in the log (default 1,000,000)
#   --trials K: rebuilds of the same log (default 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
events=1000000 trials=2 pos=()
while [ $# -gt 0 ]; do
  case $1 in
    --events) events=$2; shift ;;
    --trials) trials=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep -v '^set -euo' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) pos+=("$1") ;;
  esac
  shift
done
build=$(cd "${pos[0]:-$root/build}" && pwd)
# shellcheck source=bench/stack.sh
. "$root/bench/stack.sh"
echo "writing $events events..." >&2
python3 "$helper" load --url "$curl_c" --token "$producer" --views bench_plain \
  --entities "$events" --extra 0 --conns 4 > "$work/load.json"
tree=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tree_size"])' "$work/load.json")
# command-svc goes on publishing to NATS after the last ack: wait until it is idle.
while :; do
  c0=$(cpu_s "$cpid"); sleep 1; c1=$(cpu_s "$cpid")
  python3 -c "import sys; sys.exit(0 if $c1 - $c0 < 0.05 else 1)" && break
done

echo "fledger rebuild benchmark"
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| trial | log | time | events/s | CPU query-svc | CPU command-svc |"
echo "|---|---|---|---|---|---|"
for t in $(seq "$trials"); do
  qport=$(port)
  cc0=$(cpu_s "$cpid")
  t0=$(date +%s.%N)
  start_query "$qport" "$work/query-$t" "rebuild-$t" "$work/query-$t.log"
  while :; do
    [ "$(applied "http://127.0.0.1:$qport")" -ge "$tree" ] && break
    kill -0 "$qpid" 2>/dev/null || { echo "query-svc exited: $(tail -3 "$work/query-$t.log")" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(date +%s.%N)
  qc=$(cpu_s "$qpid") cc1=$(cpu_s "$cpid")
  kill "$qpid"; wait "$qpid" 2>/dev/null || true
  rm -rf "$work/query-$t"
  python3 -c "
d = $t1 - $t0
print(f'| {$t} | {$tree} events | {d:.2f} s | {$tree / d:,.0f} | {$qc} s | {$cc1 - $cc0:.1f} s |')"
done
