#!/usr/bin/env bash
# Write -> readable benchmark: starts nats-server, command-svc and query-svc
# on free loopback ports in a temporary directory; while a paced writer holds
# a background load (default 2,000 events/s in 50-event batches), a prober
# POSTs one event at a time and reads it back from query-svc with
# min_seq = the write's seq (read your writes), and prints, per trial, the
# time from the POST's start to the read's answer, split into the write's
# acknowledgement and the read (its min_seq wait included). The prober is
# one Python client: its own cost (~0.1-0.2 ms a request) is in the figures.
#
# Usage: bench/run-readable-bench.sh [--rate N] [--seconds S] [--trials K] [--probes P] [build-dir]
#   --rate N: background events/s (default 2000)
#   --seconds S: per trial (default 10)
#   --trials K: (default 3)
#   --probes P: probes a second (default 200)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rate=2000 secs=10 trials=3 probes=200 pos=()
while [ $# -gt 0 ]; do
  case $1 in
    --rate) rate=$2; shift ;;
    --seconds) secs=$2; shift ;;
    --trials) trials=$2; shift ;;
    --probes) probes=$2; shift ;;
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
start_query "$qport" "$work/query" readable "$work/query.log"
curl_q=http://127.0.0.1:$qport
wait_http "$curl_q/healthz"
for _ in $(seq 100); do curl -fs -o /dev/null "$curl_q/readyz" && break; sleep 0.1; done

echo "fledger write -> readable benchmark"
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "background: $rate events/s in 50-event batches; probes: $probes/s, one event each, read back with min_seq; ${secs}s per trial"
echo
echo "| trial | background events/s | probes (errors) | write -> readable p50 / p99 | write ack p50 / p99 | read with min_seq p50 / p99 |"
echo "|---|---|---|---|---|---|"
for t in $(seq "$trials"); do
  python3 "$helper" paced --url "$curl_c" --token "$producer" --view bench_plain --entities 100000 \
    --rate "$rate" --batch 50 --seconds "$secs" --conns 16 > "$work/paced.json" &
  bg=$!
  sleep 0.5
  python3 "$helper" readable --url "$curl_c" --token "$producer" --query-url "$curl_q" \
    --read-token "$reader" --view bench_plain --rate "$probes" --seconds "$(python3 -c "print($secs - 1)")" \
    > "$work/readable.json"
  wait "$bg"
  r=$work/readable.json
  echo "| $t | $(jget 'd["events_per_s"]' "$work/paced.json") | $(jget '"%d (%d)" % (d["probes"], d["errors"])' "$r") | $(jget '"%s / %s ms" % (d["total_p50_ms"], d["total_p99_ms"])' "$r") | $(jget '"%s / %s ms" % (d["ack_p50_ms"], d["ack_p99_ms"])' "$r") | $(jget '"%s / %s ms" % (d["read_p50_ms"], d["read_p99_ms"])' "$r") |"
done
