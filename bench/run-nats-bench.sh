#!/usr/bin/env bash
# NATS cluster faults, R1 against R3: a 3-node nats-server cluster on
# loopback, command-svc and two query-svcs given the whole server list, four
# writers with idempotency keys (about 160 events/s), and the faults of
# tests/integration/test_nats_cluster.py: kill the node the publisher uses,
# kill the stream leader, kill the whole cluster and restart it, kill -9 a
# query-svc. After each fault every acknowledged write is checked to be in
# the log once and both query-svcs to reach the same digest. Prints, per
# fault and replica count, the longest publish stall (command-svc's published
# count standing still with a backlog waiting), the largest backlog and the
# query-svcs' catch-up time after the fault ended.
#
# Usage: bench/run-nats-bench.sh [build-dir]   (default: build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
case ${1:-} in -h|--help) sed -n '2,/^set -euo/p' "$0" | grep -v '^set -euo' | sed 's/^# \{0,1\}//'; exit 0 ;; esac
build=$(cd "${1:-$root/build}" && pwd)
export FLEDGER_COMMAND_SVC="$build/command-svc/command-svc"
export FLEDGER_QUERY_SVC="$build/query-svc/query-svc"
python3 - "$root" <<'PY'
import sys
root = sys.argv[1]
sys.path.insert(0, root + "/tests/integration")
import test_nats_cluster as t

rows = []
for replicas in (1, 3):
    env, cluster = t.make_env(replicas)
    try:
        report = {}
        for fault, stall, backlog, catch_up in t.run_faults(
                env, cluster, replicas, report, single_node_drains=(replicas == 3)):
            rows.append((replicas, fault, stall, backlog, catch_up))
        print(f"R{replicas}: {report['acked']} writes acknowledged, each in the log once; "
              f"digests equal", file=sys.stderr)
    finally:
        env.close(check=False)
        cluster.kill_all()
print("| stream | fault | longest publish stall (s) | max backlog | query-svc catch-up (s) |")
print("|---|---|---|---|---|")
for r, fault, stall, backlog, catch_up in rows:
    print(f"| R{r} | {fault} | {stall:.2f} | {backlog} | {catch_up:.2f} |")
PY
