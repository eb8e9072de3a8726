#!/usr/bin/env bash
# Window reads of a hot entity against a light one, over HTTP:
#   bash bench/run-window-bench.sh [build] [secs]
# Writes 20,000 events for entity "hot" (all inside the last hour) and 1 for
# "light" in a view with seven 1h windows (sum, avg, min, max, stddev,
# last_n, count), starts query-svc on the written log (the catch-up is the
# apply cost), then reads all seven windows of each entity with wrk -c50.
# Prints a table: reads/s and p99 of each, their ratio, apply µs per event
# and the read models' size on disk.
case ${1:-} in -h|--help) sed -n '2,/^case /p' "$0" | grep -v '^case ' | sed 's/^# \{0,1\}//'; exit 0 ;; esac
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
secs=${2:-10}
command -v wrk >/dev/null || { echo "wrk is needed" >&2; exit 1; }
# shellcheck source=bench/stack.sh
source "$root/bench/stack.sh"

cat > "$work/hot-view.json" <<'JSON'
{"name":"hotv","entity":"id","features":{"v":"double","n":"int64","tag":"string"},
 "windows":[{"name":"v_sum","fn":"sum","of":"v","size":"1h"},
            {"name":"v_avg","fn":"avg","of":"v","size":"1h"},
            {"name":"v_min","fn":"min","of":"v","size":"1h"},
            {"name":"v_max","fn":"max","of":"v","size":"1h"},
            {"name":"v_std","fn":"stddev","of":"v","size":"1h"},
            {"name":"tag_last5","fn":"last_n","of":"tag","size":"1h","n":5},
            {"name":"n_count","fn":"count","of":"n","size":"1h"}],
 "acl":{"write":["bench-pipeline"],"read":["role:admin"]},"audit_reads":false}
JSON
curl -fs -o /dev/null -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  --data-binary @"$work/hot-view.json" "$curl_c/v1/views"

python3 - "$curl_c" "$producer" <<'PY'
import datetime, http.client, json, random, sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1]); token = sys.argv[2]
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
now = datetime.datetime.now(datetime.timezone.utc)
def ts(sec_ago):
    return (now - datetime.timedelta(seconds=sec_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
rnd = random.Random(7)
events = [{"view": "hotv", "entity_id": "hot", "event_ts": ts(rnd.uniform(60, 3300)),
           "features": {"v": round(rnd.uniform(0, 1000), 3), "n": rnd.randrange(100), "tag": "t%d" % i}}
          for i in range(20000)]
events.append({"view": "hotv", "entity_id": "light", "event_ts": ts(120),
               "features": {"v": 1.5, "n": 1, "tag": "only"}})
for i in range(0, len(events), 1000):
    conn.request("POST", "/v1/events", body=json.dumps({"events": events[i:i + 1000]}),
                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    r = conn.getresponse(); r.read()
    assert r.status in (200, 201), r.status
PY
total=$(curl -s -H "Authorization: Bearer $admin" "$curl_c/v1/log/checkpoint" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tree_size"])')

qport=$(port)
t_start=$(date +%s.%N)
start_query "$qport" "$work/query" window-bench "$work/query.log"
q=http://127.0.0.1:$qport
wait_http "$q/healthz"
for _ in $(seq 1200); do [ "$(applied "$q")" -ge "$total" ] && break; sleep 0.05; done
t_end=$(date +%s.%N)
apply_us=$(python3 -c "print(round(($t_end - $t_start) * 1e6 / $total, 1))")
size_kb=$(du -sk "$work/query" | cut -f1)

check=$(curl -s -H "Authorization: Bearer $admin" "$q/v1/features/hotv/hot?windows=v_sum,n_count" |
  python3 -c 'import json,sys; d=json.load(sys.stdin)["windows"]; print(d["n_count"]["events"])')
[ "$check" = 20000 ] || { echo "the hot window holds $check events, not 20000" >&2; exit 1; }

cat > "$work/read.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $admin"
LUA
run() { # ENTITY -> "reads/s p99_ms"
  wrk -t1 -c50 -d"${secs}s" --latency -s "$work/read.lua" \
    "$q/v1/features/hotv/$1?features=v" 2>&1 |
    awk '/Requests\/sec/ {r=$2} /^ +99%/ {p=$2} END {print r, p}'
}
read -r light_rps light_p99 <<<"$(run light)"
read -r hot_rps hot_p99 <<<"$(run hot)"
echo "| measure | value |"
echo "|---|---|"
echo "| light entity (1 event), 7 windows of 1h, wrk -t1 -c50 | $light_rps reads/s, p99 $light_p99 |"
echo "| hot entity (20,000 events in the 1h windows), same read | $hot_rps reads/s, p99 $hot_p99 |"
echo "| hot / light | $(python3 -c "print(round($hot_rps / $light_rps, 2))") |"
echo "| catch-up of $total events (apply, NATS and log fetch) | $apply_us µs/event |"
echo "| read models on disk | $size_kb KiB |"
