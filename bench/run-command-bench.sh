#!/usr/bin/env bash
# Write-path benchmark: starts nats-server and command-svc on free loopback
# ports in a temporary directory, registers the example view, then measures
#  (a) single-event POSTs over 50 keep-alive connections (wrk),
#  (b) POSTs of 1000-event batches,
#  (c) in the same run, this machine's single-core Ed25519 signing rate,
#  (d) the anchor for durable single writes: redis-server with appendonly yes,
#      appendfsync always, redis-benchmark -t set -d 200 -c 50 (skipped when
#      redis-server is missing: apt-get install -y redis-server redis-tools),
# and prints a table. Log format v2 signs once per commit, so (b) is no
# longer bounded by (c). Usage: bench/run-command-bench.sh [build-dir] [seconds]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
case ${1:-} in -h|--help) sed -n '2,/^set -euo/p' "$0" | grep -v '^set -euo' | sed 's/^# \{0,1\}//'; exit 0 ;; esac
build=${1:-$root/build}
secs=${2:-10}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nport=$(port); cport=$(port)
openssl genpkey -algorithm ed25519 -out "$work/key.pem" 2>/dev/null
token=bench-$RANDOM$RANDOM
admin=admin-$RANDOM$RANDOM
sha() { printf %s "$1" | sha256sum | cut -c1-64; }
cat > "$work/tokens.json" <<JSON
{"principals":[{"name":"admin","roles":["admin"],"token_sha256":"$(sha "$admin")"},
 {"name":"clicks-pipeline","roles":["producer"],"token_sha256":"$(sha "$token")"}]}
JSON
nats-server -js -a 127.0.0.1 -p "$nport" -sd "$work/js" >"$work/nats.log" 2>&1 & pids+=($!)
"$build/command-svc/command-svc" --listen "127.0.0.1:$cport" --data-dir "$work/log" \
  --nats "nats://127.0.0.1:$nport" --signing-key "$work/key.pem" --tokens "$work/tokens.json" \
  --log-level warn 2>"$work/command.log" & pids+=($!)
url=http://127.0.0.1:$cport
for _ in $(seq 100); do curl -fs "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs -o /dev/null -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  --data-binary @"$root/schemas/views/user_activity.json" "$url/v1/views"

export FLEDGER_BENCH_TOKEN=$token
[ -z "${FLEDGER_BENCH_HOOK:-}" ] || eval "$FLEDGER_BENCH_HOOK"
wrk -t2 -c50 -d"${secs}s" --latency -s "$root/bench/write_event.lua" "$url" >"$work/single.txt"
wrk -t1 -c4 -d"${secs}s" -s "$root/bench/write_batch.lua" "$url" >"$work/batch.txt"
sign=$("$build/bench/bench_eventlog" --sign-only)
redis_set=""
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  rport=$(port)
  mkdir -p "$work/redis"
  redis-server --port "$rport" --bind 127.0.0.1 --dir "$work/redis" --appendonly yes \
    --appendfsync always --save '' --daemonize no >"$work/redis.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-benchmark -p "$rport" -t set -d 200 -c 50 -n $((secs * 20000)) -r 1000000 \
    --csv >"$work/redis.csv" 2>/dev/null || true
  # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms",...
  redis_set=$(awk -F'"' '/^"SET"/ {print $4 " " $10 " " $14}' "$work/redis.csv")
fi

rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
pct() { awk -v p="$2" '$1 == p {print $2}' "$1"; }
errors() { awk '/Non-2xx|Socket errors/ {print}' "$1"; }
single=$(rps "$work/single.txt"); batch=$(rps "$work/batch.txt")
batch_events=$(python3 -c "print(round($batch*1000))")
echo "fledger write-path benchmark ($(nproc) cores, ${secs}s per load)"
echo
echo "| measure | value |"
echo "|---|---|"
echo "| (a) single-event POSTs, 50 keep-alive connections | $(printf %.0f "$single") events/s, ack p50 $(pct "$work/single.txt" 50%), p99 $(pct "$work/single.txt" 99%) |"
echo "| (b) 1000-event batch POSTs, 4 connections | $batch_events events/s |"
echo "| (c) Ed25519 signing, one core | $sign signatures/s |"
echo "| (b) / (c) | $(python3 -c "print(round($batch_events/$sign, 2))") |"
if [ -n "$redis_set" ]; then
  read -r r_rps r_p50 r_p99 <<<"$redis_set"
  echo "| (d) Redis SET 200 B, appendonly yes, appendfsync always, redis-benchmark -c50 | $(printf %.0f "$r_rps") writes/s, p50 $r_p50 ms, p99 $r_p99 ms |"
  echo "| (a) / (d) | $(python3 -c "print(round($single/$r_rps, 2))") |"
else
  echo "| (d) Redis durable SET | skipped: redis-server not installed |"
fi
e1=$(errors "$work/single.txt"); e2=$(errors "$work/batch.txt")
[ -z "$e1$e2" ] || { echo; echo "errors: $e1 $e2"; }
