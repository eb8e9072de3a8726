#!/usr/bin/env bash
# Read-path benchmark: starts nats-server, command-svc and query-svc on free
# loopback ports in a temporary directory, registers two identical views (one
# with audit_reads false, one with audit_reads true), writes the entities, and
# measures in one run
#  (a) GET /v1/features/<view>/<random entity> (5 features, 2 windows) over 50
#      keep-alive connections (wrk), unaudited and audited view, and their ratio,
#  (b) redis-server HGETALL of a random 5-field hash with redis-benchmark
#      (same connection count), and fledger / redis,
#  (c) projection lag (fledger_projection_lag_seconds, delta of the buckets)
#      while a paced writer holds 5,000 events/s,
#  (d) rebuild: a log of N events (N distinct entities) written in 1000-event
#      batches, then (once command-svc is idle) a fresh query-svc with an
#      empty data dir catches up,
#  (e) that query-svc's RSS (VmRSS, VmHWM) afterwards,
# and prints a markdown table.
#
# Usage: bench/run-query-bench.sh [--quick] [--events N] [build-dir] [seconds]
#   seconds: per read load (default 10; 5 with --quick)
#   --quick: 20k entities, 100k-event rebuild, 5 s loads (a smoke run, < 2 min)
#   --events N: events (= entities) of the rebuild log (default 1,000,000)
# shellcheck disable=SC2154  # the r_<load>_* results are assigned with eval in read_load
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
quick=0 rebuild_events='' pos=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --events) rebuild_events=$2; shift ;;
    --events=*) rebuild_events=${1#*=} ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep -v '^set -euo\|^# shellcheck' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) pos+=("$1") ;;
  esac
  shift
done
build=${pos[0]:-$root/build}
if [ "$quick" = 1 ]; then
  entities=20000 secs=${pos[1]:-5} lag_secs=5 redis_n=100000 rebuild_events=${rebuild_events:-100000}
else
  entities=100000 secs=${pos[1]:-10} lag_secs=15 redis_n=500000 rebuild_events=${rebuild_events:-1000000}
fi
extra=2          # window events per entity after the first (each entity: 1 + extra events)
lag_rate=5000    # (c) events/s, as 50-event batches
build=$(cd "$build" && pwd)
for tool in wrk redis-server redis-benchmark redis-cli nats-server curl ss python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install -y wrk redis-server nats-server curl iproute2)" >&2; exit 1; }
done
[ -x "$build/query-svc/query-svc" ] || { echo "no $build/query-svc/query-svc: build first" >&2; exit 1; }
helper=$root/bench/query_bench.py
export FLEDGER_BENCH_QUERY="?features=amount,clicks,category,is_mobile,score&windows=amount_sum_1h,clicks_count_24h"

work=$(mktemp -d)
declare -A pid=()
stop() { # stop NAME: SIGTERM, wait up to 10 s, then SIGKILL
  local p=${pid[$1]:-}
  [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "pid[$1]"
}
cleanup() {
  for name in "${!pid[@]}"; do kill "${pid[$name]}" 2>/dev/null || true; done
  for name in "${!pid[@]}"; do stop "$name"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "run-query-bench: $*" >&2; for f in "$work"/*.log "$work"/*/*.log; do [ -s "$f" ] && { echo "--- $f (tail)" >&2; tail -5 "$f" >&2; }; done; exit 1; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; die "$1 did not come up"; }
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {"d": d}))' "$1"; }
applied() { curl -s "$1/readyz" | grep -oE '"applied_seq": ?[0-9]+' | grep -oE '[0-9]+$' || echo 0; }
wait_applied() { # URL TARGET TIMEOUT_S
  local deadline=$(( $(date +%s) + $3 )) a
  while :; do
    a=$(applied "$1")
    [ "${a:-0}" -ge "$2" ] && return 0
    [ "$(date +%s)" -lt "$deadline" ] || die "query-svc applied_seq ${a:-?} < $2 after $3 s: $(curl -s "$1/readyz")"
    sleep 0.05
  done
}

# ---- keys, tokens ------------------------------------------------------------
openssl genpkey -algorithm ed25519 -out "$work/command-key.pem" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$work/query-key.pem" 2>/dev/null
tok() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
sha() { printf %s "$1" | sha256sum | cut -c1-64; }
admin=$(tok) producer=$(tok) reader=$(tok) replicator=$(tok)
cat > "$work/tokens.json" <<JSON
{"principals":[{"name":"admin","roles":["admin"],"token_sha256":"$(sha "$admin")"},
 {"name":"bench-pipeline","roles":["producer"],"token_sha256":"$(sha "$producer")"},
 {"name":"ranker","roles":["reader","inference"],"token_sha256":"$(sha "$reader")"},
 {"name":"query-svc","roles":["replicator"],"token_sha256":"$(sha "$replicator")"}]}
JSON
printf %s "$replicator" > "$work/replicator.token"
python3 "$helper" view --name bench_plain --audit false > "$work/view-plain.json"
python3 "$helper" view --name bench_audited --audit true > "$work/view-audited.json"

start_command() { # DIR: nats-server + command-svc with data under DIR; sets nport cport curl_c
  local dir=$1
  mkdir -p "$dir"
  nport=$(port); cport=$(port)
  nats-server -js -a 127.0.0.1 -p "$nport" -sd "$dir/js" >"$dir/nats.log" 2>&1 & pid[nats]=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null && break; sleep 0.1; done
  "$build/command-svc/command-svc" --listen "127.0.0.1:$cport" --data-dir "$dir/log" \
    --nats "nats://127.0.0.1:$nport" --signing-key "$work/command-key.pem" --tokens "$work/tokens.json" \
    --log-level warn 2>"$dir/command.log" & pid[command]=$!
  curl_c=http://127.0.0.1:$cport
  wait_http "$curl_c/healthz"
}
register() { # VIEW-FILE
  local code
  code=$(curl -s -o "$work/register.out" -w '%{http_code}' -H "Authorization: Bearer $admin" \
    -H 'Content-Type: application/json' --data-binary @"$1" "$curl_c/v1/views")
  case $code in 200|201) ;; *) die "registering $1: HTTP $code $(cat "$work/register.out")" ;; esac
}
start_query() { # DIR CONSUMER: sets qport curl_q
  local dir=$1
  qport=$(port)
  "$build/query-svc/query-svc" --listen "127.0.0.1:$qport" --data-dir "$dir/query" \
    --nats "nats://127.0.0.1:$nport" --signing-key "$work/query-key.pem" --tokens "$work/tokens.json" \
    --command-url "$curl_c" --command-token-file "$work/replicator.token" --consumer "$2" \
    --log-level warn 2>"$dir/query.log" & pid[query]=$!
  curl_q=http://127.0.0.1:$qport
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk=$(getconf CLK_TCK)
# Nanoseconds the process's threads have spent runnable but waiting for a CPU
# (the machine is shared: this shows how much of a figure is contention).
runq_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {printf "%d\n", s}'; }
wait_quiet() { # PID TIMEOUT_S: until the process uses < 5% of a core over 1 s; prints the seconds waited
  local t0 c0 c1 deadline=$(( $(date +%s) + $2 ))
  t0=$(now)
  while [ "$(date +%s)" -lt "$deadline" ]; do
    c0=$(cpu_ticks "$1"); sleep 1; c1=$(cpu_ticks "$1")
    [ $(( (c1 - c0) * 100 )) -lt $(( 5 * clk )) ] && break
  done
  calc "round($(now) - $t0 - 1, 1)"
}
ms() { # wrk latency (850.00us, 1.23ms, 1.01s) -> ms
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/) n *= 1000; else if (v ~ /m$/) n *= 60000; printf "%.2f", n }'
}
tcp_count() { # STATE PORT: sockets on the query port (either end) in STATE
  ss -Htan state "$1" "( sport = :$2 or dport = :$2 )" 2>/dev/null | wc -l
}

echo "fledger read-path benchmark"
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "run: $([ "$quick" = 1 ] && echo quick || echo full), $entities entities x $((1 + extra)) events x 2 views, ${secs}s per read load, rebuild of $rebuild_events events"
echo

# ---- load --------------------------------------------------------------------
start_command "$work/a"
register "$work/view-plain.json"
register "$work/view-audited.json"
start_query "$work/a" bench-a
wait_http "$curl_q/healthz"
echo "loading $((entities * (1 + extra) * 2)) events..." >&2
python3 "$helper" load --url "$curl_c" --token "$producer" --views bench_plain,bench_audited \
  --entities "$entities" --extra "$extra" --conns 4 > "$work/load.json" || die "load failed"
load_tree=$(jget 'd["tree_size"]' < "$work/load.json")
t0=$(now)
wait_applied "$curl_q" "$load_tree" 300
load_catchup=$(calc "round($(now) - $t0, 2)")
# After catching up from GET /v1/log, query-svc may still be busy (e.g. taking
# the NATS backlog of the same events): let it settle before measuring reads.
load_settle=$(wait_quiet "${pid[query]}" 120)

# A sample read of each view: every feature PRESENT, windows holding 1 + extra events.
for v in bench_plain bench_audited; do
  curl -s -H "Authorization: Bearer $reader" "$curl_q/v1/features/$v/e$((entities / 2))$FLEDGER_BENCH_QUERY" > "$work/sample-$v.json"
  python3 - "$work/sample-$v.json" "$((1 + extra))" <<'EOF' || die "sample read of $v is wrong: $(cat "$work/sample-$v.json")"
import json, sys
d = json.load(open(sys.argv[1])); n = int(sys.argv[2])
assert len(d["features"]) == 5 and all(f["status"] == "PRESENT" for f in d["features"].values()), d
assert len(d["windows"]) == 2 and all(w["events"] == n for w in d["windows"].values()), d
EOF
done

# ---- (a) reads ---------------------------------------------------------------
export FLEDGER_BENCH_TOKEN=$reader FLEDGER_BENCH_ENTITIES=$entities
# A hook for profiling, as in run-command-bench.sh (e.g. perf record -p ${pid[query]}).
[ -z "${FLEDGER_BENCH_HOOK:-}" ] || eval "$FLEDGER_BENCH_HOOK"
read_load() { # VIEW LABEL
  local view=$1 out=$work/wrk-$2.txt est tw0 tw1 c0 c1
  FLEDGER_BENCH_VIEW=$view wrk -t1 -c50 -d2s -s "$root/bench/read_features.lua" "$curl_q" >/dev/null # warm-up
  sleep 0.5
  curl -s "$curl_q/metrics" > "$work/metrics-$2-0.txt"
  tw0=$(tcp_count time-wait "$qport"); c0=$(cpu_ticks "${pid[query]}"); rq0=$(runq_ns "${pid[query]}")
  FLEDGER_BENCH_VIEW=$view wrk -t1 -c50 -d"${secs}s" --latency -s "$root/bench/read_features.lua" "$curl_q" >"$out" &
  local w=$!
  # With keep-alive the same 50 connections carry the whole run: compare the
  # client ports established at 30% and 70% of it, and count new TIME-WAIT
  # sockets (the run's own connections close only at its end).
  sleep "$(calc "$secs * 0.3")"
  ss -Htan state established "( sport = :$qport )" | awk '{print $NF}' | sort > "$work/conns1"
  sleep "$(calc "$secs * 0.4")"
  ss -Htan state established "( sport = :$qport )" | awk '{print $NF}' | sort > "$work/conns2"
  tw1=$(tcp_count time-wait "$qport")
  est="$(wc -l < "$work/conns2") established at 70% of the run, $(comm -12 "$work/conns1" "$work/conns2" | wc -l) of them already open at 30%"
  wait "$w"
  c1=$(cpu_ticks "${pid[query]}"); rq1=$(runq_ns "${pid[query]}")
  curl -s "$curl_q/metrics" > "$work/metrics-$2-1.txt"
  local h
  for h in online_read_latency audit_commit_latency; do
    python3 "$helper" lag --name "fledger_${h}_seconds" --before "$work/metrics-$2-0.txt" --after "$work/metrics-$2-1.txt" \
      | jget '"%d, p50 ≈ %s ms, p99 ≈ %s ms" % (d["count"], d["p50"] and d["p50"]["estimate_ms"], d["p99"] and d["p99"]["estimate_ms"])' > "$work/hist-$2-$h.txt"
  done
  local rps p50 p99 reqs non2xx sockerr
  rps=$(awk '/Requests\/sec/ {print $2}' "$out")
  p50=$(ms "$(awk '$1 == "50%" {print $2}' "$out")"); p99=$(ms "$(awk '$1 == "99%" {print $2}' "$out")")
  reqs=$(awk '/requests in/ {print $1}' "$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$out"); non2xx=${non2xx:-0}
  sockerr=$(awk '/Socket errors/ {sub(/^ *Socket errors: */, ""); print}' "$out")
  eval "r_${2}_rps=$rps r_${2}_p50=$p50 r_${2}_p99=$p99 r_${2}_non2xx=$non2xx r_${2}_est='$est'"
  eval "r_${2}_tw=$((tw1 - tw0)) r_${2}_sockerr='${sockerr:-none}'"
  eval "r_${2}_runq=$(calc "round(($rq1 - $rq0) / 1e9, 1)")"
  eval "r_${2}_cpu_us=$(calc "round(($c1 - $c0) / $clk * 1e6 / max($reqs, 1), 1)")"
}
echo "read loads..." >&2
read_load bench_plain plain
read_load bench_audited audited

# ---- (b) redis ---------------------------------------------------------------
echo "redis..." >&2
rport=$(port)
mkdir -p "$work/redis"
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work/redis" \
  --logfile "$work/redis/redis.log" & pid[redis]=$!
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
python3 "$helper" resp --entities "$entities" | redis-cli -p "$rport" --pipe >"$work/redis/pipe.txt" 2>&1 \
  || die "redis load: $(cat "$work/redis/pipe.txt")"
[ "$(redis-cli -p "$rport" dbsize)" = "$entities" ] || die "redis holds $(redis-cli -p "$rport" dbsize) keys, not $entities"
redis-benchmark -p "$rport" -c 50 -n "$redis_n" -r "$entities" --csv HGETALL 'ent:__rand_int__' >"$work/redis/bench.csv" 2>&1
# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
IFS=, read -r _ redis_rps _ _ redis_p50 _ redis_p99 _ < <(grep -i '^"HGETALL' "$work/redis/bench.csv" | tr -d '"') \
  || die "redis-benchmark: $(cat "$work/redis/bench.csv")"
stop redis

# ---- (c) projection lag under a paced writer -----------------------------------
echo "projection lag at $lag_rate events/s for ${lag_secs}s..." >&2
curl -s "$curl_q/metrics" > "$work/metrics-before.txt"
python3 "$helper" paced --url "$curl_c" --token "$producer" --view bench_plain --entities "$entities" \
  --rate "$lag_rate" --batch 50 --seconds "$lag_secs" --conns 16 > "$work/paced.json" || die "paced writer failed"
wait_applied "$curl_q" "$(jget 'd["tree_size"]' < "$work/paced.json")" 60
curl -s "$curl_q/metrics" > "$work/metrics-after.txt"
python3 "$helper" lag --before "$work/metrics-before.txt" --after "$work/metrics-after.txt" > "$work/lag.json"
q_a_log=$work/a/query.log c_a_log=$work/a/command.log
q_a_errors=$(grep -c . "$q_a_log" || true)   # the services log at warn level: every line is a warning or an error
c_a_errors=$(grep -c . "$c_a_log" || true)
stop query; stop command; stop nats

# ---- (d) rebuild, (e) RSS ----------------------------------------------------
echo "rebuild: writing $rebuild_events events..." >&2
start_command "$work/d"
register "$work/view-plain.json"
python3 "$helper" load --url "$curl_c" --token "$producer" --views bench_plain \
  --entities "$rebuild_events" --extra 0 --conns 4 > "$work/rebuild-load.json" || die "rebuild load failed"
rb_tree=$(jget 'd["tree_size"]' < "$work/rebuild-load.json")
# command-svc goes on publishing the log to NATS after the last ack: let it
# finish, so that the rebuild is measured alone.
rb_cmd_settle=$(wait_quiet "${pid[command]}" 300)
echo "rebuild: a fresh query-svc catching up to $rb_tree..." >&2
cmd0=$(cpu_ticks "${pid[command]}")
t0=$(now)
start_query "$work/d" bench-d
qp=${pid[query]}
( while kill -0 "$qp" 2>/dev/null; do
    awk '$1 == "RssAnon:" {a = $2} $1 == "RssFile:" {f = $2} END {if (a) print a, f}' "/proc/$qp/status" 2>/dev/null
    sleep 0.2
  done ) > "$work/rss-samples" & pid[sampler]=$!
[ -z "${FLEDGER_BENCH_REBUILD_HOOK:-}" ] || eval "$FLEDGER_BENCH_REBUILD_HOOK"
wait_applied "$curl_q" "$rb_tree" 1800
rb_secs=$(calc "round($(now) - $t0, 2)")
rb_cpu=$(calc "round($(cpu_ticks "${pid[query]}") / $clk, 1)")
rb_cmd_cpu=$(calc "round(($(cpu_ticks "${pid[command]}") - $cmd0) / $clk, 1)")
rb_runq=$(calc "round($(runq_ns "${pid[query]}") / 1e9, 1)")
rb_settle=$(wait_quiet "${pid[query]}" 300)
stop sampler
read -r peak_anon peak_file peak_sum < <(awk '{if ($1 > a) a = $1; if ($2 > f) f = $2; if ($1 + $2 > s) s = $1 + $2} END {print a + 0, f + 0, s + 0}' "$work/rss-samples")
curl -s -H "Authorization: Bearer $reader" "$curl_q/v1/features/bench_plain/e$((rebuild_events - 1))?features=amount" \
  | grep -q PRESENT || die "after the rebuild, e$((rebuild_events - 1)) is not PRESENT"
status=/proc/${pid[query]}/status
kb() { awk -v k="$1:" '$1 == k {print $2}' "$status"; }
rss=$(kb VmRSS) hwm=$(kb VmHWM) anon=$(kb RssAnon) file=$(kb RssFile)
qdata=$(du -sm "$work/d/query" | cut -f1)
q_d_errors=$(grep -c . "$work/d/query.log" || true)
c_d_errors=$(grep -c . "$work/d/command.log" || true)

# ---- table -------------------------------------------------------------------
l() { jget "$1" < "$2"; }
mb() { calc "round($1 / 1024)"; }
echo
echo "| measure | value | target |"
echo "|---|---|---|"
echo "| load: $(l 'd["events"]' "$work/load.json") events in 1000-event batches (4 conns) | $(l 'd["events_per_s"]' "$work/load.json") events/s; query-svc caught up ${load_catchup} s after the last ack, then stayed busy ${load_settle} s more | |"
for k in plain audited; do
  eval "rps=\$r_${k}_rps p50=\$r_${k}_p50 p99=\$r_${k}_p99 non=\$r_${k}_non2xx cpu=\$r_${k}_cpu_us"
  label=$([ $k = plain ] && echo "unaudited view (audit_reads false)" || echo "audited view (audit_reads true)")
  target=$([ $k = plain ] && echo "p99 < 2 ms" || echo "p99 < 3 ms")
  echo "| (a) GET features, 5 features + 2 windows, $label, wrk -t1 -c50 | $(printf %.0f "$rps") reads/s, p50 ${p50} ms, p99 ${p99} ms; non-2xx $non; query-svc CPU ${cpu} µs/read | $target |"
done
echo "| (a) audited / unaudited reads/s | $(calc "round($r_audited_rps / $r_plain_rps, 2)") | ≥ 0.8 |"
echo "| (b) redis HGETALL of a random 5-field hash ($entities keys), redis-benchmark -c50 | $(printf %.0f "$redis_rps") reads/s, p50 $redis_p50 ms, p99 $redis_p99 ms | |"
echo "| (b) fledger / redis reads/s (unaudited; audited) | $(calc "round($r_plain_rps / $redis_rps, 2)"); $(calc "round($r_audited_rps / $redis_rps, 2)") | ≥ 0.6 |"
echo "| (c) projection lag, paced writer $(l 'd["events_per_s"]' "$work/paced.json") events/s for ${lag_secs}s (50-event batches on up to 16 conns, $(l 'd["late_batches"]' "$work/paced.json") batches sent late; ack p50 $(l 'd["ack_p50_ms"]' "$work/paced.json") ms, p99 $(l 'd["ack_p99_ms"]' "$work/paced.json") ms) | p50 ≈ $(l 'd["p50"]["estimate_ms"]' "$work/lag.json") ms (bucket $(l '"%g–%g" % tuple(d["p50"]["bucket_ms"])' "$work/lag.json") ms), p99 ≈ $(l 'd["p99"]["estimate_ms"]' "$work/lag.json") ms (bucket $(l '"%g–%g" % tuple(d["p99"]["bucket_ms"])' "$work/lag.json") ms), $(l 'd["count"]' "$work/lag.json") events | p99 < 10 ms |"
echo "| (d) write $(l 'd["events"]' "$work/rebuild-load.json") events ($rebuild_events distinct entities), 1000-event batches, 4 conns | $(l 'd["events_per_s"]' "$work/rebuild-load.json") events/s ($(l 'd["seconds"]' "$work/rebuild-load.json") s) | |"
echo "| (d) rebuild: fresh query-svc, empty data dir, start → applied_seq = $rb_tree | ${rb_secs} s, $(calc "round($rb_tree / $rb_secs)") events/s (CPU: query-svc ${rb_cpu} s, command-svc ${rb_cmd_cpu} s; query-svc waited ${rb_runq} s for a CPU; busy ${rb_settle} s more after applied_seq was reached; started once command-svc was idle, ${rb_cmd_settle} s after the last write) | ≥ 100,000/s |"
echo "| (e) query-svc memory after (d) (once idle), $rebuild_events entities | VmRSS $(mb "$rss") MB (anon $(mb "$anon"), file $(mb "$file")), VmHWM $(mb "$hwm") MB (5/s samples during (d): peak anon $(mb "$peak_anon") MB, peak file $(mb "$peak_file") MB, peak sum $(mb "$peak_sum") MB); data dir ${qdata} MB | < 300 MB |"
echo
echo "Projection-lag figures are estimated from the histogram buckets (bounds 1, 2.5, 5, 10, 25, 50 ms, …), linear within a bucket."
echo
echo "Checks:"
for k in plain audited; do
  eval "echo \"- $k reads, connections (keep-alive: 50 and 50 expected): \$r_${k}_est; \$r_${k}_tw new TIME-WAIT sockets on the query port during the run (0 expected with keep-alive), socket errors: \$r_${k}_sockerr; query-svc threads waited \$r_${k}_runq s for a CPU during the ${secs} s\""
  echo "  - server-side histograms (bucket estimates): fledger_online_read_latency_seconds $(cat "$work/hist-$k-online_read_latency.txt"); fledger_audit_commit_latency_seconds $(cat "$work/hist-$k-audit_commit_latency.txt")"
done
echo "- sample reads: 5 features PRESENT and both windows holding $((1 + extra)) events, in both views"
echo "- warnings/errors logged (--log-level warn): query-svc $q_a_errors in load-(c), $q_d_errors in (d); command-svc $c_a_errors in load-(c), $c_d_errors in (d)"
for f in "$work/a/query.log" "$work/a/command.log" "$work/d/query.log" "$work/d/command.log"; do
  [ -s "$f" ] || continue
  python3 - "$f" <<'EOF'
import collections, json, sys
msgs = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    try:
        d = json.loads(line)
        msgs["%s: %s" % (d.get("level"), d.get("msg"))] += 1
    except ValueError:
        msgs["(not JSON) " + line.strip()[:100]] += 1
name = "/".join(sys.argv[1].split("/")[-2:])
for m, n in msgs.most_common(5):
    print("  - %s: %d x %s" % (name, n, m))
EOF
done
