#!/usr/bin/env bash
# Static checks of the container deployment (no container engine needed):
#   - `docker-compose config -q` accepts compose.yaml (Debian package
#     docker-compose; `docker compose` v2 is used when v1 is absent);
#   - it has the services nats (JetStream, on a volume), command-svc,
#     query-svc and prometheus, and Prometheus scrapes both services at the
#     ports they listen on (`promtool check config` when promtool exists);
#   - deploy/make-secrets.sh makes every secret compose.yaml mounts, the
#     tokens of every principal, owned by the services' uid;
#   - the Dockerfile is multi-stage on Debian 12 and copies every source
#     directory that meson.build builds.
# Without docker-compose the test is skipped (exit 77), unless CI is set:
# then it fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

in_ci() { [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && [ "${CI}" != "0" ]; }
missing() {
  if in_ci; then
    echo "FAIL: $1 is missing (CI is set): run scripts/install-deps.sh" >&2
    exit 1
  fi
  echo "SKIP: $1 is missing (scripts/install-deps.sh installs it)"
  exit 77
}

if command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  missing "docker-compose (Debian package docker-compose)"
fi

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== ${compose[*]} $("${compose[@]}" version --short 2>/dev/null || true): config -q"
if ! "${compose[@]}" -f compose.yaml --project-directory "$root" config -q; then
  fail "compose.yaml is not a valid Compose file"
fi

# The check must be able to fail: a misspelt key is rejected.
sed 's/^services:/servces:/' compose.yaml >"$tmp/broken.yaml"
if "${compose[@]}" -f "$tmp/broken.yaml" --project-directory "$root" config -q >/dev/null 2>&1; then
  fail "${compose[*]} config accepted a broken file: the check above proves nothing"
fi

echo "== services, volumes and wiring"
services=$("${compose[@]}" -f compose.yaml --project-directory "$root" config --services | sort | tr '\n' ' ')
[ "$services" = "command-svc nats prometheus query-svc " ] ||
  fail "services are '$services', expected command-svc nats prometheus query-svc"
volumes=$("${compose[@]}" -f compose.yaml --project-directory "$root" config --volumes | sort | tr '\n' ' ')
for v in nats-data command-data query-data prometheus-data; do
  grep -qw -- "$v" <<<"$volumes" || fail "volume $v is missing (volumes: $volumes)"
done
rendered=$("${compose[@]}" -f compose.yaml --project-directory "$root" config)
grep -q -- '--jetstream' <<<"$rendered" || fail "nats runs without --jetstream"
grep -q 'nats-data:/data' <<<"$rendered" || fail "nats does not keep its store on the nats-data volume"
for svc_port in command-svc:8080 query-svc:8081; do
  port=${svc_port#*:}
  grep -q "FLEDGER_LISTEN: 0.0.0.0:$port" <<<"$rendered" || fail "no service listens on 0.0.0.0:$port"
  grep -q "\"$svc_port\"" deploy/prometheus.yml || fail "deploy/prometheus.yml does not scrape $svc_port"
done
for secret in command-key.pem query-key.pem tokens.json replicator.token; do
  grep -q "deploy/$secret" <<<"$rendered" || fail "deploy/$secret is not mounted"
done
if grep -E '^\s+- "?[0-9]+:[0-9]+' compose.yaml; then
  fail "a port is published on every interface; publish on 127.0.0.1 (the services speak plain HTTP)"
fi

echo "== deploy/make-secrets.sh (the secrets compose.yaml mounts)"
if bash deploy/make-secrets.sh "$tmp/deploy" >"$tmp/secrets.out" 2>&1; then
  for secret in command-key.pem query-key.pem tokens.json replicator.token; do
    grep -q "deploy/$secret" <<<"$rendered" || fail "compose.yaml does not mount deploy/$secret"
    [ -s "$tmp/deploy/$secret" ] || fail "make-secrets.sh did not make $secret"
    [ "$(id -u)" != 0 ] || [ "$(stat -c %u "$tmp/deploy/$secret")" = 10001 ] ||
      fail "$secret is not owned by the services' uid 10001"
  done
  openssl pkey -in "$tmp/deploy/command-key.pem" -noout 2>/dev/null || fail "command-key.pem is not a key"
  python3 - "$tmp/deploy" <<'PY' || fail "make-secrets.sh: tokens.json, tokens.env and replicator.token disagree"
import hashlib, json, sys
d = sys.argv[1]
principals = {p["name"]: p for p in json.load(open(f"{d}/tokens.json"))["principals"]}
tokens = dict(l.split("=", 1) for l in open(f"{d}/tokens.env").read().splitlines()
              if l and not l.startswith("#"))
hashes = {hashlib.sha256(t.encode()).hexdigest() for t in tokens.values()}
assert {p["token_sha256"] for p in principals.values()} == hashes, "tokens.env vs tokens.json"
repl = open(f"{d}/replicator.token").read()
assert principals["query-svc"]["roles"] == ["replicator"]
assert hashlib.sha256(repl.encode()).hexdigest() == principals["query-svc"]["token_sha256"]
for name in ("admin", "clicks-pipeline", "payments-pipeline", "stats-job", "ranker", "auditor"):
    assert name in principals, name
PY
else
  fail "deploy/make-secrets.sh failed: $(cat "$tmp/secrets.out")"
fi

echo "== the cluster overlay (compose.cluster.yaml)"
cluster=(-f compose.yaml -f compose.cluster.yaml --project-directory "$root")
if ! "${compose[@]}" "${cluster[@]}" config -q; then
  fail "compose.yaml with compose.cluster.yaml is not a valid Compose file"
fi
services=$("${compose[@]}" "${cluster[@]}" config --services | sort | tr '\n' ' ')
[ "$services" = "command-svc nats nats-2 nats-3 prometheus query-svc " ] ||
  fail "cluster services are '$services', expected three nats nodes beside the others"
rendered=$("${compose[@]}" "${cluster[@]}" config)
for node in nats nats-2 nats-3; do
  grep -q "nats://$node:6222" <<<"$rendered" || fail "no route to $node"
done
grep -qE "FLEDGER_NATS_REPLICAS: ['\"]?3" <<<"$rendered" || fail "the stream is not R3 on the cluster"
[ "$(grep -c 'FLEDGER_NATS: nats://nats:4222,nats://nats-2:4222,nats://nats-3:4222' <<<"$rendered")" = 2 ] ||
  fail "command-svc and query-svc do not both get the whole server list"
for v in nats-2-data nats-3-data; do
  grep -q "$v:/data" <<<"$rendered" || fail "a node does not keep its store on volume $v"
done

if command -v promtool >/dev/null 2>&1; then
  promtool check config deploy/prometheus.yml || fail "promtool rejects deploy/prometheus.yml"
elif in_ci; then
  fail "promtool is missing (CI is set): Debian package prometheus"
else
  echo "(promtool missing: deploy/prometheus.yml not checked)"
fi

echo "== Dockerfile"
froms=$(grep -cE '^FROM debian:(12|bookworm)' Dockerfile || true)
[ "$froms" -ge 2 ] || fail "Dockerfile should be multi-stage on debian:12 (found $froms FROM debian:12)"
grep -qE '^FROM .* AS build' Dockerfile || fail "Dockerfile has no build stage"
for dir in $(grep -oE "^subdir\('[^']+'\)" meson.build | sed -E "s/subdir\('([^']+)'\)/\1/"); do
  grep -qE "^COPY ($dir/|$dir/meson.build)" Dockerfile || fail "Dockerfile does not COPY $dir/ (meson.build builds it)"
done
# Every COPY source (outside --from stages) exists.
while read -r line; do
  set -f
  read -ra words <<<"$line"
  set +f
  for src in "${words[@]:1:${#words[@]}-2}"; do
    case $src in --*) continue ;; esac
    compgen -G "$src" >/dev/null || fail "Dockerfile copies $src, which does not exist"
  done
done < <(grep -E '^COPY ' Dockerfile | grep -v -- '--from=')

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "compose.yaml, deploy/prometheus.yml and Dockerfile look right"
