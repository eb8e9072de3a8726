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
for tool in nats-server curl python3 openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
[ -x "$build/query-svc/query-svc" ] || { echo "no $build/query-svc/query-svc: build first" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat"; }
wait_http() { for _ in $(seq 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 did not come up" >&2; exit 1; }
sha() { printf %s "$1" | sha256sum | cut -c1-64; }
tok() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

admin=$(tok) producer=$(tok) replicator=$(tok)
openssl genpkey -algorithm ed25519 -out "$work/command-key.pem" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$work/query-key.pem" 2>/dev/null
cat > "$work/tokens.json" <<JSON
{"principals":[{"name":"admin","roles":["admin"],"token_sha256":"$(sha "$admin")"},
 {"name":"bench-pipeline","roles":["producer"],"token_sha256":"$(sha "$producer")"},
 {"name":"query-svc","roles":["replicator"],"token_sha256":"$(sha "$replicator")"}]}
JSON
printf %s "$replicator" > "$work/replicator.token"
python3 "$root/bench/query_bench.py" view --name bench_plain --audit false > "$work/view.json"

nport=$(port) cport=$(port)
nats-server -js -a 127.0.0.1 -p "$nport" -sd "$work/js" >"$work/nats.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null && break; sleep 0.1; done
"$build/command-svc/command-svc" --listen "127.0.0.1:$cport" --data-dir "$work/log" \
  --nats "nats://127.0.0.1:$nport" --signing-key "$work/command-key.pem" --tokens "$work/tokens.json" \
  --log-level warn 2>"$work/command.log" & pids+=($!)
cpid=$!
curl_c=http://127.0.0.1:$cport
wait_http "$curl_c/healthz"
curl -fs -o /dev/null -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  --data-binary @"$work/view.json" "$curl_c/v1/views"
echo "writing $events events..." >&2
python3 "$root/bench/query_bench.py" load --url "$curl_c" --token "$producer" --views bench_plain \
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
  "$build/query-svc/query-svc" --listen "127.0.0.1:$qport" --data-dir "$work/query-$t" \
    --nats "nats://127.0.0.1:$nport" --signing-key "$work/query-key.pem" --tokens "$work/tokens.json" \
    --command-url "$curl_c" --command-token-file "$work/replicator.token" --consumer "rebuild-$t" \
    --log-level warn 2>"$work/query-$t.log" &
  qpid=$!
  pids+=("$qpid")
  while :; do
    a=$(curl -s "http://127.0.0.1:$qport/readyz" | grep -oE '"applied_seq": ?[0-9]+' | grep -oE '[0-9]+$' || true)
    [ "${a:-0}" -ge "$tree" ] && break
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
