#!/usr/bin/env bash
# Projection-lag benchmark, alone: starts nats-server, command-svc and
# query-svc on free loopback ports in a temporary directory, then runs a paced
# writer (B-event batches on an absolute schedule, up to 16 connections) K
# times and prints, per trial, command-svc's answer time as the writer saw it,
# command-svc's group-commit time (fledger_append_latency_seconds) and the
# projection lag, ingest → applied (fledger_projection_lag_seconds), all from
# the services' own histograms (bucket estimates), and the CPU time each
# service used. Prints a markdown table.
#
# Usage: bench/run-lag-bench.sh [--rate N] [--seconds S] [--trials K] [--batch B] [build-dir]
#   --rate N: events/s (default 5000)
#   --seconds S: per trial (default 10)
#   --trials K: (default 3)
#   --batch B: events per POST (default 50)
#   FLEDGER_BENCH_KEEP_LOGS=DIR: copy the services' logs there at the end
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rate=5000 secs=10 trials=3 batch=50 pos=()
while [ $# -gt 0 ]; do
  case $1 in
    --rate) rate=$2; shift ;;
    --seconds) secs=$2; shift ;;
    --trials) trials=$2; shift ;;
    --batch) batch=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep -v '^set -euo' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) pos+=("$1") ;;
  esac
  shift
done
build=$(cd "${pos[0]:-$root/build}" && pwd)
# shellcheck source=bench/stack.sh
. "$root/bench/stack.sh"
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[2])); print(eval(sys.argv[1], {}, {"d": d}))' "$1" "$2"; }
qport=$(port)
start_query "$qport" "$work/query" lag "$work/query.log"
curl_q=http://127.0.0.1:$qport
wait_http "$curl_q/healthz"

echo "fledger projection-lag benchmark"
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "paced writer: $rate events/s in $batch-event batches for ${secs}s per trial, up to 16 connections"
echo
echo "| trial | events/s | answer p50 / p99 (writer) | group commit p50 / p99 (command-svc) | lag p50 / p99 (query-svc) | CPU command-svc / query-svc |"
echo "|---|---|---|---|---|---|"
hist() { # NAME BEFORE AFTER -> "p50 / p99 ms"
  python3 "$helper" lag --name "$1" --before "$2" --after "$3" > "$work/h.json"
  jget '"%s / %s ms" % (d["p50"]["estimate_ms"], d["p99"]["estimate_ms"])' "$work/h.json"
}
for t in $(seq "$trials"); do
  curl -s "$curl_c/metrics" > "$work/c0"; curl -s "$curl_q/metrics" > "$work/q0"
  cc0=$(cpu_s "$cpid") qc0=$(cpu_s "$qpid")
  python3 "$helper" paced --url "$curl_c" --token "$producer" --view bench_plain --entities 100000 \
    --rate "$rate" --batch "$batch" --seconds "$secs" --conns 16 > "$work/paced.json"
  tree=$(jget 'd["tree_size"]' "$work/paced.json")
  for _ in $(seq 600); do [ "$(applied "$curl_q")" -ge "$tree" ] && break; sleep 0.05; done
  cc1=$(cpu_s "$cpid") qc1=$(cpu_s "$qpid")
  curl -s "$curl_c/metrics" > "$work/c1"; curl -s "$curl_q/metrics" > "$work/q1"
  echo "| $t | $(jget 'd["events_per_s"]' "$work/paced.json") | $(jget '"%s / %s ms" % (d["ack_p50_ms"], d["ack_p99_ms"])' "$work/paced.json") | $(hist fledger_append_latency_seconds "$work/c0" "$work/c1") | $(hist fledger_projection_lag_seconds "$work/q0" "$work/q1") | $(python3 -c "print('%.2f s / %.2f s' % ($cc1 - $cc0, $qc1 - $qc0))") |"
done
echo
echo "Histogram figures are bucket estimates (bounds …, 1, 2.5, 5, 10, 25, 50 ms, …), linear within a bucket."
