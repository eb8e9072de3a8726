# Sourced by run-rebuild-bench.sh and run-lag-bench.sh (bash): a temporary
# directory, keys and tokens, and nats-server plus command-svc on free
# loopback ports, stopped on exit. Expects $root and $build; sets $work,
# $helper, $producer, $reader, $nport, $curl_c and $cpid. FLEDGER_BENCH_KEEP_LOGS=DIR
# copies the services' logs there at the end.
# shellcheck shell=bash disable=SC2034,SC2154  # variables shared with the caller
for tool in nats-server curl python3 openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
[ -x "$build/query-svc/query-svc" ] || { echo "no $build/query-svc/query-svc: build first" >&2; exit 1; }
helper=$root/bench/query_bench.py

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "${FLEDGER_BENCH_KEEP_LOGS:-}" ] || cp "$work"/*.log "$FLEDGER_BENCH_KEEP_LOGS"/ 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 did not come up" >&2; exit 1; }
sha() { printf %s "$1" | sha256sum | cut -c1-64; }
tok() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
applied() { curl -s "$1/readyz" | grep -oE '"applied_seq": ?[0-9]+' | grep -oE '[0-9]+$' || echo 0; }

admin=$(tok) producer=$(tok) replicator=$(tok) reader=$(tok)
openssl genpkey -algorithm ed25519 -out "$work/command-key.pem" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$work/query-key.pem" 2>/dev/null
cat > "$work/tokens.json" <<JSON
{"principals":[{"name":"admin","roles":["admin"],"token_sha256":"$(sha "$admin")"},
 {"name":"bench-pipeline","roles":["producer"],"token_sha256":"$(sha "$producer")"},
 {"name":"query-svc","roles":["replicator"],"token_sha256":"$(sha "$replicator")"},
 {"name":"bench-reader","roles":["reader","inference"],"token_sha256":"$(sha "$reader")"}]}
JSON
printf %s "$replicator" > "$work/replicator.token"
python3 "$helper" view --name bench_plain --audit false > "$work/view.json"

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

start_query() { # PORT DATA-DIR CONSUMER LOG: a query-svc on this stack; sets $qpid
  "$build/query-svc/query-svc" --listen "127.0.0.1:$1" --data-dir "$2" \
    --nats "nats://127.0.0.1:$nport" --signing-key "$work/query-key.pem" --tokens "$work/tokens.json" \
    --command-url "$curl_c" --command-token-file "$work/replicator.token" --consumer "$3" \
    --log-level warn 2>"$4" &
  qpid=$!
  pids+=("$qpid")
}
