#!/usr/bin/env bash
# Runs fledger on a demo workload: installs what is missing, builds, makes a
# signing key per service and a token per role in .run/, starts nats-server
# (JetStream, loopback), command-svc and query-svc, registers the example
# views from schemas/views/, starts a demo producer, prints ready-to-paste
# reads, and keeps running until Ctrl-C, then stops everything cleanly.
# Running it again reuses .run/ (keys, tokens and data survive).
#
# Ports: FLEDGER_NATS_PORT (4222), FLEDGER_COMMAND_PORT (8080),
# FLEDGER_QUERY_PORT (8081). FLEDGER_DEMO_DURATION=S stops after S seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run=$root/.run
nats_port=${FLEDGER_NATS_PORT:-4222}
command_port=${FLEDGER_COMMAND_PORT:-8080}
query_port=${FLEDGER_QUERY_PORT:-8081}

bash scripts/install-deps.sh --runtime
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null

mkdir -p "$run"
chmod 700 "$run"
for service in command query; do
  [ -f "$run/$service-key.pem" ] || build/cli/fledger keygen --out "$run/$service-key.pem" >/dev/null
done

# One token per role, kept in .run/tokens.env; the services get their hashes.
if [ ! -f "$run/tokens.env" ]; then
  : > "$run/tokens.env"
  chmod 600 "$run/tokens.env"
  entries=()
  while read -r var name roles; do
    token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "$var=$token" >> "$run/tokens.env"
    hash=$(printf %s "$token" | sha256sum | cut -c1-64)
    roles_json=$(printf '"%s",' ${roles//,/ }); roles_json=${roles_json%,}
    entries+=("{\"name\":\"$name\",\"roles\":[$roles_json],\"token_sha256\":\"$hash\"}")
  done <<'EOF'
ADMIN_TOKEN admin admin
PRODUCER_TOKEN clicks-pipeline producer
READER_TOKEN ranker reader,inference
FRAUD_TOKEN fraud-model reader,fraud
AUDITOR_TOKEN auditor auditor
REPLICATOR_TOKEN query-svc replicator
EOF
  (IFS=,; echo "{\"principals\":[${entries[*]}]}") > "$run/tokens.json"
  chmod 600 "$run/tokens.json"
fi
# shellcheck disable=SC1091
source "$run/tokens.env"
printf %s "$REPLICATOR_TOKEN" > "$run/replicator.token"
chmod 600 "$run/replicator.token"

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; wait "${pids[i]}" 2>/dev/null || true; done
  echo "stopped. Data, keys and tokens stay in .run/ (remove it to start afresh)."
}
trap stop INT TERM EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$nats_port" "$command_port" "$query_port"; do
  port_free "$p" || { trap - INT TERM EXIT; echo "port $p is in use: set FLEDGER_NATS_PORT / FLEDGER_COMMAND_PORT / FLEDGER_QUERY_PORT" >&2; exit 1; }
done
wait_http() {
  for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$1 did not come up; see the logs in .run/" >&2; exit 1
}

nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$run/nats" >"$run/nats.log" 2>&1 & pids+=($!)
build/command-svc/command-svc --listen "127.0.0.1:$command_port" --data-dir "$run/command" \
  --nats "nats://127.0.0.1:$nats_port" --signing-key "$run/command-key.pem" \
  --tokens "$run/tokens.json" 2>"$run/command.log" & pids+=($!)
wait_http "http://127.0.0.1:$command_port/healthz"
build/query-svc/query-svc --listen "127.0.0.1:$query_port" --data-dir "$run/query" \
  --nats "nats://127.0.0.1:$nats_port" --signing-key "$run/query-key.pem" \
  --tokens "$run/tokens.json" --command-url "http://127.0.0.1:$command_port" \
  --command-token-file "$run/replicator.token" --consumer demo-1 2>"$run/query.log" & pids+=($!)
wait_http "http://127.0.0.1:$query_port/healthz"

export FLEDGER_COMMAND_URL=http://127.0.0.1:$command_port
export FLEDGER_QUERY_URL=http://127.0.0.1:$query_port
FLEDGER_TOKEN=$ADMIN_TOKEN build/cli/fledger views apply schemas/views
FLEDGER_TOKEN=$PRODUCER_TOKEN build/cli/fledger demo --users 5000 --rate 200 \
  ${FLEDGER_DEMO_DURATION:+--duration "$FLEDGER_DEMO_DURATION"} 2>"$run/demo.log" & pids+=($!)
sleep 2

q=http://127.0.0.1:$query_port
c=http://127.0.0.1:$command_port
cat <<EOF

fledger is running: nats-server :$nats_port, command-svc :$command_port, query-svc :$query_port.
The demo producer writes clicks for 5000 users (logs: .run/*.log). Try, in another shell
(the tokens are also in .run/tokens.env):

  curl -s -H "Authorization: Bearer $READER_TOKEN" '$q/v1/features/user_activity/u42'
  curl -s -H "Authorization: Bearer $FRAUD_TOKEN" '$q/v1/features/user_activity/u42?features=cart_items&windows=clicks_5m,dwell_avg_1h'
  curl -s -H "Authorization: Bearer $READER_TOKEN" '$q/v1/features/user_activity/u42?proof=1'
  curl -s -H "Authorization: Bearer $READER_TOKEN" -H 'Content-Type: application/json' \\
       -d '{"features":["user_activity:dwell_ms","user_activity:clicks_5m"],"entities":{"user_id":["u1","u2"]}}' $q/get-online-features
  curl -s -H "Authorization: Bearer $AUDITOR_TOKEN" '$c/v1/log/checkpoint'
  curl -s $c/metrics | grep ^fledger_
  FLEDGER_TOKEN=$AUDITOR_TOKEN FLEDGER_COMMAND_URL=$c FLEDGER_QUERY_URL=$q build/cli/fledger audit export --from 2020-01-01T00:00:00Z --to 2100-01-01T00:00:00Z --out .run/audit --force
  build/cli/fledger audit verify .run/audit

Ctrl-C stops everything.
EOF
if [ -n "${FLEDGER_DEMO_DURATION:-}" ]; then
  sleep "$FLEDGER_DEMO_DURATION"
else
  while kill -0 "${pids[0]}" 2>/dev/null; do sleep 1; done
fi
