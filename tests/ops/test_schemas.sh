#!/usr/bin/env bash
# Checks schemas/ with the pinned npm tools of tests/tooling:
#   - redocly lints schemas/openapi.yaml (no errors allowed);
#   - ajv compiles every JSON Schema in strict mode;
#   - ajv accepts every schemas/views/*.json (view.schema.json) and
#     schemas/examples/events/*.json (event.schema.json);
#   - ajv rejects every schemas/examples/invalid/views/*.json and
#     schemas/examples/invalid/events/*.json, and a batch of 1001 events.
# The tools come from `npm ci --prefix tests/tooling` (scripts/install-deps.sh
# runs it). Without them the test is skipped (exit 77), unless CI is set:
# then it fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tooling=$root/tests/tooling
schemas=$root/schemas
bin=$tooling/node_modules/.bin

if ! command -v node >/dev/null 2>&1 || [ ! -x "$bin/redocly" ] || [ ! -x "$bin/ajv" ]; then
  if [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && [ "${CI}" != "0" ]; then
    echo "FAIL: node or tests/tooling/node_modules is missing (CI is set): run scripts/install-deps.sh" >&2
    exit 1
  fi
  echo "SKIP: node or tests/tooling/node_modules is missing (npm ci --prefix tests/tooling)"
  exit 77
fi

export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_COLOR=1
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
# strictRequired stays off: it does not see properties declared next to if/then.
ajv() { (cd "$tooling" && "$bin/ajv" "$@" --spec=draft2020 --strict-types=true --strict-tuples=true -c ajv-formats); }

echo "== redocly lint schemas/openapi.yaml (@redocly/cli $("$bin/redocly" --version 2>/dev/null | tail -1))"
if ! (cd "$tooling" && "$bin/redocly" lint "$schemas/openapi.yaml" --format=stylish 2>&1); then
  fail "redocly lint reported errors in schemas/openapi.yaml"
fi

echo "== ajv compile"
compile_args=()
for schema in "$schemas"/*.schema.json; do compile_args+=(-s "$schema"); done
ajv compile "${compile_args[@]}" 2>&1 || fail "a JSON Schema does not compile"

# ajv validate -s SCHEMA -d FILE... prints "<file> valid" or "<file> invalid"
# (then its errors) for each file; check each file's verdict.
expect() {
  local verdict=$1 schema=$2; shift 2
  local data_args=() file out
  for file in "$@"; do data_args+=(-d "$file"); done
  out=$(ajv validate -s "$schemas/$schema" "${data_args[@]}" --errors=line 2>&1) || true
  for file in "$@"; do
    if grep -qxF "$file $verdict" <<<"$out"; then
      if [ "$verdict" = invalid ]; then
        echo "rejected $(basename "$file"): $(grep -A1 -xF "$file invalid" <<<"$out" | tail -1 |
          grep -o '"message":"\([^"\\]\|\\.\)*"' | head -1)"
      else
        echo "valid $(basename "$file")"
      fi
    else
      fail "$file: expected $verdict against $schema; ajv said:"
      grep -A1 -F "$file" <<<"$out" >&2 || echo "$out" >&2
    fi
  done
}

shopt -s nullglob
views=("$schemas"/views/*.json)
events=("$schemas"/examples/events/*.json)
bad_views=("$schemas"/examples/invalid/views/*.json)
bad_events=("$schemas"/examples/invalid/events/*.json)
[ "${#views[@]}" -ge 1 ] || fail "no example views in schemas/views"
[ "${#events[@]}" -ge 2 ] || fail "expected a single event and a batch in schemas/examples/events"
[ "${#bad_views[@]}" -ge 1 ] || fail "no invalid view examples"
[ "${#bad_events[@]}" -ge 1 ] || fail "no invalid event examples"

echo "== example views and events must be valid"
expect valid view.schema.json "${views[@]}"
expect valid event.schema.json "${events[@]}"

echo "== invalid examples must be rejected"
expect invalid view.schema.json "${bad_views[@]}"
expect invalid event.schema.json "${bad_events[@]}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  printf '{"events":['
  for i in $(seq 1 1001); do
    [ "$i" -gt 1 ] && printf ','
    printf '{"view":"user_activity","entity_id":"u%d","features":{"dwell_ms":1.5}}' "$i"
  done
  printf ']}\n'
} >"$tmp/batch-of-1001.json"
expect invalid event.schema.json "$tmp/batch-of-1001.json"

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all schema checks passed"
