#!/usr/bin/env bash
# Runs fledger on a demo workload: installs what is missing, builds, makes a
# signing key per service and a token per principal in .run/, starts
# nats-server (JetStream, loopback), command-svc and query-svc, registers the
# example views from schemas/views/, starts a demo producer, prints
# ready-to-paste reads, and keeps running until Ctrl-C, then stops everything
# cleanly. Running it again reuses .run/ (keys, tokens and data survive).
# One demo per .run/: a second one refuses to start (a lock on .run/demo.lock).
#
# Ports: FLEDGER_NATS_PORT (4222), FLEDGER_COMMAND_PORT (8080),
# FLEDGER_QUERY_PORT (8081). FLEDGER_DEMO_DURATION=S stops after S seconds.
# FLEDGER_RUN_DIR: another directory than .run/ for keys, tokens, data, logs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/demo-lib.sh
source scripts/demo-lib.sh
run=${FLEDGER_RUN_DIR:-$root/.run}
shown=${run#"$root/"}  # in messages: .run for the default
nats_port=${FLEDGER_NATS_PORT:-4222}
command_port=${FLEDGER_COMMAND_PORT:-8080}
query_port=${FLEDGER_QUERY_PORT:-8081}

mkdir -p "$run"
chmod 700 "$run"
# Before anything else: one demo per .run/ (its logs, its JetStream store).
demo_lock "$run" || exit 1

# step_log NAME COMMAND...: runs a setup step with its output in $run/NAME.log.
step_log() {
  local log=$run/$1.log
  shift
  if ! "$@" >"$log" 2>&1; then
    echo "failed: $*; the end of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
}
demo_step "checking and installing Debian packages (apt-get; full log: $shown/setup.log)"
step_log setup bash scripts/install-deps.sh --runtime
demo_step "building with meson and ninja (full log: $shown/build.log)"
[ -f build/build.ninja ] || step_log build meson setup build
step_log build ninja -C build

demo_step "keys and tokens in $shown (tokens.env: one token per principal)"
for service in command query; do
  [ -f "$run/$service-key.pem" ] || build/cli/fledger keygen --out "$run/$service-key.pem" >/dev/null
done
demo_tokens "$run"
# shellcheck disable=SC1091
source "$run/tokens.env"

pids=() names=() logs=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for i in $(printf '%s\n' "${!pids[@]}" | sort -rn); do  # the last started first
    kill -TERM "${pids[i]}" 2>/dev/null || true; wait "${pids[i]}" 2>/dev/null || true
  done
  echo "stopped. Data, keys and tokens stay in $shown (remove it to start afresh)."
}
# Ctrl-C reaches every process of the demo at once: stop, then exit at once
# (returning to the loop below would report the services it just stopped).
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT
# started NAME LOG: records the process just started in the background.
started() { pids+=($!); names+=("$1"); logs+=("$2"); }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$nats_port" "$command_port" "$query_port"; do
  port_free "$p" || { trap - INT TERM EXIT; echo "port $p is in use: set FLEDGER_NATS_PORT / FLEDGER_COMMAND_PORT / FLEDGER_QUERY_PORT" >&2; exit 1; }
done

# The services must not inherit the lock's descriptor (9>&-): the lock is the demo script's.
demo_step "starting nats-server on :$nats_port (log: $shown/nats.log)"
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$run/nats" >"$run/nats.log" 2>&1 9>&- & started nats-server "$run/nats.log"
demo_step "starting command-svc on :$command_port (log: $shown/command.log)"
build/command-svc/command-svc --listen "127.0.0.1:$command_port" --data-dir "$run/command" \
  --nats "nats://127.0.0.1:$nats_port" --signing-key "$run/command-key.pem" \
  --tokens "$run/tokens.json" 2>"$run/command.log" 9>&- & started command-svc "$run/command.log"
demo_wait_http "http://127.0.0.1:$command_port/healthz" "${pids[-1]}" command-svc "$run/command.log" || exit 1
demo_step "starting query-svc on :$query_port (log: $shown/query.log)"
build/query-svc/query-svc --listen "127.0.0.1:$query_port" --data-dir "$run/query" \
  --nats "nats://127.0.0.1:$nats_port" --signing-key "$run/query-key.pem" \
  --tokens "$run/tokens.json" --command-url "http://127.0.0.1:$command_port" \
  --command-token-file "$run/replicator.token" --consumer demo-1 2>"$run/query.log" 9>&- & started query-svc "$run/query.log"
demo_wait_http "http://127.0.0.1:$query_port/healthz" "${pids[-1]}" query-svc "$run/query.log" || exit 1

export FLEDGER_COMMAND_URL=http://127.0.0.1:$command_port
export FLEDGER_QUERY_URL=http://127.0.0.1:$query_port
demo_step "registering the example views of schemas/views/"
FLEDGER_TOKEN=$ADMIN_TOKEN build/cli/fledger views apply schemas/views
demo_step "starting the demo producer (log: $shown/demo.log)"
FLEDGER_TOKEN=$PRODUCER_TOKEN build/cli/fledger demo --users 5000 --rate 200 \
  ${FLEDGER_DEMO_DURATION:+--duration "$FLEDGER_DEMO_DURATION"} 2>"$run/demo.log" 9>&- & started "demo producer" "$run/demo.log"
sleep 2

q=http://127.0.0.1:$query_port
c=http://127.0.0.1:$command_port
cat <<EOF

fledger is running: nats-server :$nats_port, command-svc :$command_port, query-svc :$query_port.
The demo producer writes clicks for 5000 users (logs: $shown/*.log). Try, in another shell
(the tokens are also in $shown/tokens.env):

  curl -s -H "Authorization: Bearer $READER_TOKEN" '$q/v1/features/user_activity/u42'
  curl -s -H "Authorization: Bearer $FRAUD_TOKEN" '$q/v1/features/user_activity/u42?features=cart_items&windows=clicks_5m,dwell_avg_1h'
  curl -s -H "Authorization: Bearer $READER_TOKEN" '$q/v1/features/user_activity/u42?proof=1'
  curl -s -H "Authorization: Bearer $READER_TOKEN" -H 'Content-Type: application/json' \\
       -d '{"features":["user_activity:dwell_ms","user_activity:clicks_5m"],"entities":{"user_id":["u1","u2"]}}' $q/get-online-features
  curl -s -H "Authorization: Bearer $AUDITOR_TOKEN" '$c/v1/log/checkpoint'
  curl -s $c/metrics | grep ^fledger_
  FLEDGER_TOKEN=$AUDITOR_TOKEN FLEDGER_COMMAND_URL=$c FLEDGER_QUERY_URL=$q build/cli/fledger audit export --from "\$(date -u -d '1 hour ago' +%FT%TZ)" --out /tmp/bundle --force --require-lines
  build/cli/fledger audit verify /tmp/bundle

Ctrl-C stops everything.
EOF
# Until Ctrl-C (or FLEDGER_DEMO_DURATION), or until a process of the demo exits.
deadline=$((SECONDS + ${FLEDGER_DEMO_DURATION:-0}))
while [ -z "${FLEDGER_DEMO_DURATION:-}" ] || [ "$SECONDS" -lt "$deadline" ]; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[i]}" 2>/dev/null; then
      # A Ctrl-C reaches every process of the group: when it stopped this
      # one, the INT trap runs during this pause and ends the demo quietly.
      sleep 0.5
      status=0; wait "${pids[i]}" 2>/dev/null || status=$?
      if [ -n "${FLEDGER_DEMO_DURATION:-}" ] && [ "${names[i]}" = "demo producer" ] && [ "$status" = 0 ]; then
        unset 'pids[i]'  # the producer's --duration is over
        continue
      fi
      echo "${names[i]} exited (status $status); the end of ${logs[i]}:" >&2
      tail -n 20 "${logs[i]}" >&2 || true
      exit 1
    fi
  done
  sleep 1
done
