# Functions of scripts/demo.sh, sourced by it and by the tests
# (tests/ops/test_demo.sh, tests/integration/test_examples.py).

# demo_step TEXT: one progress line.
demo_step() { printf '==> %s\n' "$*"; }

# demo_lock DIR: an exclusive lock on DIR/demo.lock (flock, on fd 9), held
# until this shell exits; DIR/demo.lock then holds this shell's pid. When
# another process holds it, prints which demo runs there and returns 1.
# Children that outlive no demo should not inherit fd 9: start them with 9>&-.
demo_lock() {
  local lock=$1/demo.lock holder
  exec 9<>"$lock" || return 1
  if ! flock -n 9; then
    holder=$(head -n1 "$lock" 2>/dev/null || true)
    exec 9>&-
    if [ -n "$holder" ] && kill -0 "$holder" 2>/dev/null; then
      echo "another demo is running in this checkout (pid $holder) and uses $1;" \
        "stop it first (Ctrl-C in its terminal, or kill $holder)." >&2
    else
      echo "another demo's processes still use $1 (lock $lock held; its script, pid" \
        "${holder:-unknown}, is gone): stop them first (fuser -v $lock lists them)." >&2
    fi
    echo "Two demos cannot share one .run/ (one JetStream store, one set of logs)." >&2
    return 1
  fi
  echo "$$" >"$lock"
}

# demo_wait_http URL PID NAME LOG: waits (up to 30 s) until URL answers;
# stops as soon as the process PID has exited. On failure prints why and the
# end of LOG, and returns 1.
demo_wait_http() {
  local url=$1 pid=$2 name=$3 log=$4 status=0
  for _ in $(seq 300); do
    curl -fs -o /dev/null "$url" 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || status=$?
      echo "$name exited (status $status) before answering $url; the end of $log:" >&2
      tail -n 20 "$log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  echo "$name did not answer $url within 30 s; the end of $log:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

# The demo's principals: one token each, so that every principal the
# example views of schemas/views/ name (acl.write, and a reader for each
# role of acl.read) can be used. Columns: variable in tokens.env, principal,
# roles, what it is for.
demo_principals() {
  cat <<'PRINCIPALS'
ADMIN_TOKEN admin admin registers views
PRODUCER_TOKEN clicks-pipeline producer writes user_activity
PAYMENTS_TOKEN payments-pipeline producer writes transactions
STATS_TOKEN stats-job producer writes item_stats
READER_TOKEN ranker reader,inference reads user_activity, item_stats, transactions (not its restricted features)
FRAUD_TOKEN fraud-model reader,fraud reads every feature of user_activity and transactions
AUDITOR_TOKEN auditor auditor reads the logs, exports audit bundles
REPLICATOR_TOKEN query-svc replicator query-svc's token towards command-svc
PRINCIPALS
}

# demo_tokens DIR: DIR/tokens.env (VAR=token, one per principal; tokens
# already there are kept, missing ones made), DIR/tokens.json (the hashes,
# for the services) and DIR/replicator.token.
demo_tokens() {
  local dir=$1 var name roles purpose token hash roles_json entries=()
  declare -A have=()
  if [ -f "$dir/tokens.env" ]; then
    while IFS='=' read -r var token; do
      [[ $var =~ ^[A-Z_]+$ ]] && [ -n "$token" ] && have[$var]=$token
    done <"$dir/tokens.env"
  fi
  (
    umask 077
    {
      echo "# fledger tokens: source this file. One token per principal of tokens.json."
      while read -r var name roles purpose; do
        token=${have[$var]:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
        echo "# $var: principal $name, roles $roles: $purpose"
        echo "$var=$token"
      done < <(demo_principals)
    } >"$dir/tokens.env.tmp"
    mv "$dir/tokens.env.tmp" "$dir/tokens.env"
  )
  while IFS='=' read -r var token; do
    [[ $var =~ ^[A-Z_]+$ ]] && have[$var]=$token
  done <"$dir/tokens.env"
  while read -r var name roles purpose; do
    hash=$(printf %s "${have[$var]}" | sha256sum | cut -c1-64)
    roles_json=$(printf '"%s",' ${roles//,/ })
    entries+=("{\"name\":\"$name\",\"roles\":[${roles_json%,}],\"token_sha256\":\"$hash\"}")
  done < <(demo_principals)
  (umask 077; IFS=,; echo "{\"principals\":[${entries[*]}]}" >"$dir/tokens.json")
  (umask 077; printf %s "${have[REPLICATOR_TOKEN]}" >"$dir/replicator.token")
}
