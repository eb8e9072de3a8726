#!/usr/bin/env bash
# Training data: the point-in-time join route against pandas merge_asof.
#   bash bench/run-historical-bench.sh [--rows N] [--repeat K] [--before OTHER-BUILD] [build]
# (N = 100000 by default; --rows 1000000 for the large run.)
# --repeat K: each export (and merge_asof) runs K times and the fastest
# counts (wall time, and its CPU time), for a machine whose neighbours come
# and go.
# --before OTHER-BUILD: after the exports, the query-svc of another build
# (say, of the previous commit) takes over the same data directory and
# answers the same two exports: its rates join the table, and its answers
# must be byte for byte the same.
# Writes N events (5 double features, N/10 entities, event_ts spread over
# the last 2 hours, random order) to a fresh stack, lets query-svc apply
# them, then exports N rows (random entity, random time in the same span)
# with POST /v1/features:historical: 5 features, then 5 features + 2
# windows. The same events and rows go to Debian's pandas (run with
# /usr/bin/python3): merge_asof(rows, events, on="ts", by="entity_id"),
# sorts included, reading and writing excluded. Prints a table: rows/s of
# each, their ratio, and query-svc's RSS before and at its peak during the
# exports. Targets (reported, not asserted): fledger >= 0.5 x merge_asof;
# with 2 windows >= 100,000 rows/s; RSS growth < 50 MB.
# With PERF_DATA=FILE set, perf records query-svc (perf record -g) during the
# exports into FILE: perf report -i FILE --no-children shows where the time goes.
case ${1:-} in -h|--help) sed -n '2,/^case /p' "$0" | grep -v '^case ' | sed 's/^# \{0,1\}//'; exit 0 ;; esac
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=100000
repeat=1
before=
while [ $# -gt 0 ]; do
  case $1 in
    --rows) n=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --before) before=$(cd "$2" && pwd); shift 2 ;;
    *) break ;;
  esac
done
build=$(cd "${1:-$root/build}" && pwd)
/usr/bin/python3 -c 'import pandas' 2>/dev/null ||
  { echo "Debian's python3-pandas is needed (apt-get install python3-pandas)" >&2; exit 1; }
# shellcheck source=bench/stack.sh
source "$root/bench/stack.sh"

cat > "$work/hist-view.json" <<'JSON'
{"name":"histv","entity":"entity_id","features":{"f1":"double","f2":"double","f3":"double","f4":"double","f5":"double"},
 "windows":[{"name":"f1_sum_1h","fn":"sum","of":"f1","size":"1h"},
            {"name":"f2_count_10m","fn":"count","of":"f2","size":"10m"}],
 "acl":{"write":["bench-pipeline"],"read":["role:admin"]},"audit_reads":false}
JSON
curl -fs -o /dev/null -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  --data-binary @"$work/hist-view.json" "$curl_c/v1/views"

# The data: events.ndjson (one event a line) and rows.ndjson, same seed.
python3 - "$n" "$work" <<'PY'
import datetime, json, random, sys
n, work = int(sys.argv[1]), sys.argv[2]
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
span = 2 * 3600 * 10**6
rnd = random.Random(11)
entities = max(1, n // 10)
def ts(us_ago):
    return (now - datetime.timedelta(microseconds=us_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
with open(f"{work}/events.ndjson", "w") as f:
    for i in range(n):
        f.write(json.dumps({"view": "histv", "entity_id": f"e{rnd.randrange(entities)}",
                            "event_ts": ts(rnd.randrange(span)),
                            "features": {f"f{k}": round(rnd.uniform(0, 1000), 3)
                                         for k in range(1, 6)}}) + "\n")
with open(f"{work}/rows.ndjson", "w") as f:
    for i in range(n):
        f.write(json.dumps({"entity_id": f"e{rnd.randrange(entities)}",
                            "ts": ts(rnd.randrange(span))}) + "\n")
PY

echo "writing $n events..." >&2
python3 - "$curl_c" "$producer" "$work/events.ndjson" <<'PY'
import http.client, json, sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1]); token = sys.argv[2]
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
batch = []
def send():
    conn.request("POST", "/v1/events", body='{"events":[' + ",".join(batch) + "]}",
                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    r = conn.getresponse(); r.read()
    assert r.status in (200, 201), r.status
    batch.clear()
for line in open(sys.argv[3]):
    batch.append(line.strip())
    if len(batch) == 1000:
        send()
if batch:
    send()
PY
total=$(curl -s -H "Authorization: Bearer $admin" "$curl_c/v1/log/checkpoint" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tree_size"])')

qport=$(port)
start_query "$qport" "$work/query" hist-bench "$work/query.log"
q=http://127.0.0.1:$qport
wait_http "$q/healthz"
for _ in $(seq 6000); do [ "$(applied "$q")" -ge "$total" ] && break; sleep 0.1; done
[ "$(applied "$q")" -ge "$total" ] || { echo "query-svc did not catch up" >&2; exit 1; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
rss_before=$(rss_kib "$qpid")
# the peak RSS over the exports, sampled every 50 ms
( peak=0; while kill -0 "$qpid" 2>/dev/null && [ ! -f "$work/stop-sampling" ]; do
    r=$(rss_kib "$qpid" 2>/dev/null || echo 0); [ "$r" -gt "$peak" ] && peak=$r
    echo "$peak" > "$work/rss-peak"; sleep 0.05; done ) &
sampler=$!

export_once() { # OUT: prints the wall seconds of one export of $work/request.ndjson
  local t0 t1 code c0
  c0=$(cpu_s "$qpid")
  t0=$(date +%s.%N)
  code=$(curl -s -o "$1" -w '%{http_code}' -H "Authorization: Bearer $admin" \
    -H 'Content-Type: application/x-ndjson' --data-binary @"$work/request.ndjson" "$q/v1/features:historical")
  t1=$(date +%s.%N)
  [ "$code" = 200 ] || { echo "export answered $code: $(head -c 300 "$1")" >&2; exit 1; }
  [ "$(wc -l < "$1")" -eq "$n" ] || { echo "export: not $n lines" >&2; exit 1; }
  # query-svc's CPU seconds for it, beside the wall time: on a loaded machine
  # the wall time says more about the neighbours than about the route
  echo "$(cpu_s "$qpid") - $c0" | bc -l > "$1.cpu"
  echo "$t1 - $t0" | bc -l
}
export_rows() { # HEAD-JSON OUT: prints the wall seconds of the fastest of $repeat exports
  { printf '%s\n' "$1"; cat "$work/rows.ndjson"; } > "$work/request.ndjson"
  local best= s i
  for i in $(seq "$repeat"); do
    s=$(export_once "$2.try")
    if [ -z "$best" ] || [ "$(echo "$s < $best" | bc -l)" = 1 ]; then
      best=$s; mv "$2.try" "$2"; mv "$2.try.cpu" "$2.cpu"
    elif ! cmp -s "$2.try" "$2"; then
      echo "export: two runs answered differently" >&2; exit 1
    fi
  done
  rm -f "$2.try" "$2.try.cpu"
  echo "$best"
}
echo "exporting $n rows..." >&2
perf_pid=
if [ -n "${PERF_DATA:-}" ]; then
  perf record -q -g -o "$PERF_DATA" -p "$qpid" 2>"$work/perf.log" & perf_pid=$!
  sleep 1
fi
s_plain=$(export_rows '{"view":"histv","features":["f1","f2","f3","f4","f5"],"windows":[]}' "$work/out-plain.ndjson")
s_windows=$(export_rows '{"view":"histv","features":["f1","f2","f3","f4","f5"],"windows":["f1_sum_1h","f2_count_10m"]}' "$work/out-windows.ndjson")
touch "$work/stop-sampling"
if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
wait "$sampler" 2>/dev/null || true
rss_peak=$(cat "$work/rss-peak")

if [ -n "$before" ]; then
  echo "the same exports with $before..." >&2
  kill "$qpid"; wait "$qpid" 2>/dev/null || true
  this_build=$build build=$before
  start_query "$qport" "$work/query" hist-bench "$work/query-before.log"
  build=$this_build
  wait_http "$q/healthz"
  for _ in $(seq 6000); do [ "$(applied "$q")" -ge "$total" ] && break; sleep 0.1; done
  b_plain=$(export_rows '{"view":"histv","features":["f1","f2","f3","f4","f5"],"windows":[]}' "$work/before-plain.ndjson")
  b_windows=$(export_rows '{"view":"histv","features":["f1","f2","f3","f4","f5"],"windows":["f1_sum_1h","f2_count_10m"]}' "$work/before-windows.ndjson")
  same=yes
  cmp -s "$work/out-plain.ndjson" "$work/before-plain.ndjson" || same=NO
  cmp -s "$work/out-windows.ndjson" "$work/before-windows.ndjson" || same=NO
fi

echo "pandas merge_asof on the same data..." >&2
s_pandas=$(/usr/bin/python3 - "$work" "$repeat" <<'PY'
import json, sys, time
import pandas as pd
work, repeat = sys.argv[1], int(sys.argv[2])
ev = [json.loads(l) for l in open(f"{work}/events.ndjson")]
events = pd.DataFrame({"entity_id": [e["entity_id"] for e in ev],
                       "ts": pd.to_datetime([e["event_ts"] for e in ev], utc=True),
                       **{f"f{k}": [e["features"][f"f{k}"] for e in ev] for k in range(1, 6)}})
rows = pd.read_json(f"{work}/rows.ndjson", lines=True, dtype={"entity_id": str})
rows["ts"] = pd.to_datetime(rows["ts"], utc=True)
best = None
for _ in range(repeat):  # the fastest of --repeat runs, as for fledger
    t0 = time.perf_counter()
    out = pd.merge_asof(rows.sort_values("ts"), events.sort_values("ts"), on="ts",
                        by="entity_id", direction="backward")
    t1 = time.perf_counter()
    assert len(out) == len(rows)
    best = t1 - t0 if best is None else min(best, t1 - t0)
print(f"{best:.4f}")
PY
)

printf '\n%-48s %12s %10s %8s\n' "historical export, $n rows, $n events" "rows/s" "seconds" "CPU s"
cpu() { printf '%8.2f' "$(cat "$1.cpu")"; }
rate() { echo "$n / $1" | bc -l | xargs printf '%.0f'; }
printf '%-48s %12s %10.3f %s\n' "fledger route, 5 features (HTTP, NDJSON out)" "$(rate "$s_plain")" "$s_plain" "$(cpu "$work/out-plain.ndjson")"
printf '%-48s %12s %10.3f %s\n' "fledger route, 5 features + 2 windows" "$(rate "$s_windows")" "$s_windows" "$(cpu "$work/out-windows.ndjson")"
if [ -n "$before" ]; then
  printf '%-48s %12s %10.3f %s\n' "  --before build, 5 features" "$(rate "$b_plain")" "$b_plain" "$(cpu "$work/before-plain.ndjson")"
  printf '%-48s %12s %10.3f %s\n' "  --before build, 5 features + 2 windows" "$(rate "$b_windows")" "$b_windows" "$(cpu "$work/before-windows.ndjson")"
  printf '%-48s %12s\n' "  answers byte for byte the same" "$same"
fi
printf '%-48s %12s %10.3f\n' "pandas merge_asof, 5 features (in memory)" "$(rate "$s_pandas")" "$s_pandas"
printf '%-48s %12.2f\n' "fledger / pandas (5 features)" "$(echo "$s_pandas / $s_plain" | bc -l)"
printf '%-48s %9d MiB\n' "query-svc RSS before the exports" "$((rss_before / 1024))"
printf '%-48s %9d MiB\n' "query-svc RSS peak during them" "$((rss_peak / 1024))"
printf '%-48s %9d MiB\n' "growth" "$(((rss_peak - rss_before) / 1024))"
