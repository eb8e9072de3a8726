#!/usr/bin/env bash
# Makes the files compose.yaml mounts as secrets, once, in deploy/ (or DIR):
#   command-key.pem, query-key.pem   the services' Ed25519 signing keys
#   tokens.json                      principals, roles and token hashes (the services')
#   replicator.token                 the token query-svc presents to command-svc
#   tokens.env                       the tokens themselves, one per principal (yours:
#                                    `source deploy/tokens.env`; never give it to a service)
# The principals are the demo's (scripts/demo-lib.sh): admin, a producer per
# example view (clicks-pipeline, payments-pipeline, stats-job), the readers
# ranker and fraud-model, auditor, and query-svc (replicator). Existing keys
# and tokens are kept; missing ones are made. The secrets are then made
# readable by the services' user (uid 10001) only: chown as root, else with
# sudo when there is one.
#
#   bash deploy/make-secrets.sh [DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/deploy}
# shellcheck source=scripts/demo-lib.sh
source "$root/scripts/demo-lib.sh"

mkdir -p "$dir"
for key in command-key.pem query-key.pem; do
  [ -f "$dir/$key" ] || (umask 077; openssl genpkey -algorithm ed25519 -out "$dir/$key")
done
demo_tokens "$dir"
secrets=("$dir/command-key.pem" "$dir/query-key.pem" "$dir/tokens.json" "$dir/replicator.token")
chmod 600 "${secrets[@]}" "$dir/tokens.env"
if [ "$(id -u)" -eq 0 ]; then
  chown 10001 "${secrets[@]}"
elif command -v sudo >/dev/null 2>&1; then
  sudo chown 10001 "${secrets[@]}"
else
  echo "not root and no sudo: as root, run  chown 10001 ${secrets[*]}" >&2
  exit 1
fi
echo "made in $dir: command-key.pem, query-key.pem, tokens.json, replicator.token (owner uid 10001)"
echo "and tokens.env (the tokens, for you: source $dir/tokens.env)"
