#!/usr/bin/env python3
"""
Operations checks on a running system (CONTRACT §9-§10): nats-server,
command-svc and query-svc on free loopback ports, with debug logging, the
example views of schemas/views/ and the example writes of
schemas/examples/events/, then reads of every kind. Then:

- `promtool check metrics` (Debian package `prometheus`) accepts both
  /metrics outputs, and the metric families of CONTRACT §10 are there;
- no secret (a bearer token, a rejected token, the replicator token, a
  private key) appears in either service's stderr or /metrics, and /metrics
  holds no entity ids or feature values;
- stderr is structured: one JSON object a line;
- every answer collected (each route, success and error statuses, both
  services) matches schemas/openapi.yaml: its status is documented for the
  operation and its body validates against the documented schema (NDJSON:
  every line against log-line.schema.json). This uses the pinned npm tools
  of tests/tooling (redocly bundles the spec, ajv validates).

A tool that is missing skips its check, unless $CI is set: then it fails.

Binaries: $FLEDGER_COMMAND_SVC and $FLEDGER_QUERY_SVC (default
build/<svc>/<svc> under the repository root).

    python3 tests/integration/test_ops.py -v
"""

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import unittest
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import (Nats, Service, TempDir, make_signing_key, make_tokens, metric_value,  # noqa: E402
                     parse_metrics, poll)

ROOT = harness.REPO_ROOT
COMMAND_SVC = Path(os.environ.get("FLEDGER_COMMAND_SVC")
                   or ROOT / "build" / "command-svc" / "command-svc")
QUERY_SVC = Path(os.environ.get("FLEDGER_QUERY_SVC")
                 or ROOT / "build" / "query-svc" / "query-svc")
TOOLING = ROOT / "tests" / "tooling"
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")

PRINCIPALS = dict(harness.PRINCIPALS)
PRINCIPALS.update({
    "fraud-model": ["reader", "fraud"],
    "payments-pipeline": ["producer"],
    "stats-job": ["producer"],
})

JSON = "application/json"

# Validates collected answers against the bundled (dereferenced) OpenAPI
# file: node - <tooling dir> <bundled.json> <cases.json> <log-line schema>.
CHECK_JS = r"""
const [tooling, specPath, casesPath, linePath] = process.argv.slice(2);
const fs = require('fs');
const Ajv2020 = require(tooling + '/node_modules/ajv/dist/2020').default;
const addFormats = require(tooling + '/node_modules/ajv-formats');
const read = p => JSON.parse(fs.readFileSync(p, 'utf8'));
// Drop what is not validation: nested $schema (the dereferenced files keep
// theirs) and OpenAPI examples.
function strip(o) {
  if (Array.isArray(o)) return o.map(strip);
  if (o && typeof o === 'object') {
    const r = {};
    for (const [k, v] of Object.entries(o))
      if (k !== '$schema' && k !== 'example' && k !== 'examples') r[k] = strip(v);
    return r;
  }
  return o;
}
const spec = read(specPath), cases = read(casesPath);
const ajv = new Ajv2020({strict: false, allErrors: true});
addFormats(ajv);
const line = ajv.compile(strip(read(linePath)));
const problems = [];
let checked = 0;
for (const c of cases) {
  const what = `${c.method.toUpperCase()} ${c.url} -> ${c.status}`;
  const op = (spec.paths[c.path] || {})[c.method];
  if (!op) { problems.push(`${what}: no operation ${c.method} ${c.path} in openapi.yaml`); continue; }
  const resp = op.responses[String(c.status)];
  if (!resp) { problems.push(`${what}: status not documented: ${c.body.slice(0, 200)}`); continue; }
  const type = (c.type || '').split(';')[0].trim();
  const media = (resp.content || {})[type];
  if (!media) { problems.push(`${what}: content type ${type} not documented`); continue; }
  checked++;
  if (type === 'application/x-ndjson') {
    // a line schema of the operation's own (an object schema), else LogLine
    const check = media.schema && media.schema.type === 'object'
      ? ajv.compile(strip(media.schema)) : line;
    for (const text of c.body.split('\n').filter(l => l !== '')) {
      if (!check(JSON.parse(text)))
        problems.push(`${what}: line ${text.slice(0, 80)}: ${ajv.errorsText(check.errors)}`);
    }
    continue;
  }
  if (type !== 'application/json') continue;
  const validate = ajv.compile(strip(media.schema));
  if (!validate(JSON.parse(c.body)))
    problems.push(`${what}: ${ajv.errorsText(validate.errors)}: ${c.body.slice(0, 300)}`);
}
console.log(JSON.stringify({checked, problems}));
"""


def tool_or_skip(test, name, found):
    """Skips test when a tool is missing, or fails under CI."""
    if found:
        return
    if IN_CI:
        test.fail(f"{name} is missing (CI is set, so this is a failure): "
                  f"run scripts/install-deps.sh")
    test.skipTest(f"{name} is missing (scripts/install-deps.sh installs it)")


class OpsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir(prefix="fledger-ops-")
        cls.services = []
        cls.cases = []  # answers collected for the OpenAPI check
        try:
            cls._start()
            cls._workload()
        except BaseException:
            cls._teardown()
            raise

    @classmethod
    def tearDownClass(cls):
        cls._teardown()

    @classmethod
    def _teardown(cls):
        try:
            for svc in reversed(cls.services):
                if svc.running():
                    svc.stop(check=False)
            reports = [r for svc in cls.services for r in svc.sanitizer_reports()]
        finally:
            if getattr(cls, "nats", None):
                cls.nats.kill()
            cls.tmp.close()
        if reports:
            raise AssertionError(f"sanitizer reports: {reports[:5]}")

    @classmethod
    def _start(cls):
        tmp = cls.tmp
        cls.nats = Nats(tmp.path).start()
        cls.command_key = make_signing_key(tmp / "command-key.pem")
        cls.query_key = make_signing_key(tmp / "query-key.pem")
        cls.tokens = make_tokens(tmp / "tokens.json", PRINCIPALS)
        (tmp / "replicator.token").write_text(cls.tokens["repl"])
        common = ["--tokens", str(tmp / "tokens.json"), "--log-level", "debug"]
        cls.command = Service(COMMAND_SVC, tmp.path, "command-svc", [
            "--data-dir", str(tmp / "command-data"), "--nats", cls.nats.url,
            "--signing-key", str(cls.command_key)] + common)
        cls.services.append(cls.command)
        cls.command.start()
        cls.query = Service(QUERY_SVC, tmp.path, "query-svc", [
            "--data-dir", str(tmp / "query-data"), "--nats", cls.nats.url,
            "--signing-key", str(cls.query_key), "--command-url", cls.command.url,
            "--command-token-file", str(tmp / "replicator.token"),
            "--consumer", "ops-1"] + common)
        cls.services.append(cls.query)
        cls.query.start()
        # A query-svc whose command-svc is unreachable: /readyz answers 503.
        cls.stray = Service(QUERY_SVC, tmp.path, "query-svc-stray", [
            "--data-dir", str(tmp / "stray-data"), "--nats", "",
            "--signing-key", str(cls.query_key),
            "--command-url", f"http://127.0.0.1:{harness.free_port()}",
            "--command-token-file", str(tmp / "replicator.token"),
            "--consumer", "stray-1"] + common)
        cls.services.append(cls.stray)
        cls.stray.start()

    # -- requests, each recorded for the OpenAPI check --------------------

    @classmethod
    def call(cls, svc, method, url, route, principal=None, body=None, content_type=JSON,
             token=None):
        """Sends a request; records (route template, method, status, type, body)."""
        headers = {}
        if body is not None:
            headers["Content-Type"] = content_type
            if not isinstance(body, (str, bytes)):
                body = json.dumps(body)
        if principal is not None:
            token = cls.tokens[principal]
        r = svc.http().request(method, url, body=body, headers=headers, token=token)
        cls.cases.append({"path": route, "method": method.lower(), "url": url,
                          "status": r.status, "type": r.headers.get("content-type", ""),
                          "body": r.body.decode("utf-8", "replace")})
        return r

    @classmethod
    def _workload(cls):
        c, q = cls.command, cls.query
        cls.bogus_token = "bogus-" + base64.b32encode(os.urandom(15)).decode().lower()
        views = {}
        for path in sorted((ROOT / "schemas" / "views").glob("*.json")):
            view = json.loads(path.read_text())
            views[view["name"]] = view
            r = cls.call(c, "POST", "/v1/views", "/v1/views", "admin", view)
            assert r.status in (200, 201), (path, r)
        cls.call(c, "POST", "/v1/views", "/v1/views", "admin", views["user_activity"])  # 200
        cls.call(c, "POST", "/v1/views", "/v1/views", "ranker", views["user_activity"])  # 403
        cls.call(c, "POST", "/v1/views", "/v1/views", "admin",
                 {"name": "user_activity", "entity": "user_id", "features": {"dwell_ms": "int64"}})
        cls.call(c, "POST", "/v1/views", "/v1/views", "admin", {"name": "Bad"})
        cls.call(c, "POST", "/v1/views", "/v1/views", "admin", "{}", "text/plain")
        cls.call(c, "GET", "/v1/views", "/v1/views", "ranker")
        cls.call(c, "GET", "/v1/views", "/v1/views")
        cls.call(c, "GET", "/v1/views", "/v1/views", token=cls.bogus_token)
        cls.call(c, "GET", "/v1/views/transactions", "/v1/views/{name}", "aud")
        cls.call(c, "GET", "/v1/views/nope", "/v1/views/{name}", "aud")

        # The example writes, each by a producer its view lets write.
        cls.entities, cls.string_values = set(), set()
        last_seq = 0
        for path in sorted((ROOT / "schemas" / "examples" / "events").glob("*.json")):
            body = json.loads(path.read_text())
            events = body.get("events", [body])
            producer = views[events[0]["view"]]["acl"]["write"][0]
            for e in events:
                cls.entities.add(str(e["entity_id"]))
                cls.string_values.update(v for v in e["features"].values() if isinstance(v, str))
            r = cls.call(c, "POST", "/v1/events", "/v1/events", producer, body)
            assert r.status == 201, (path, r)
            last_seq = max(last_seq, r.json()["tree_size"])
            cls.call(c, "POST", "/v1/events", "/v1/events", producer, body)  # 200 duplicates
        for i in range(20):
            e = {"view": "user_activity", "entity_id": f"ops-user-{i % 4}",
                 "features": {"dwell_ms": 100.0 + i, "last_click": f"ops-item-{i}"}}
            cls.entities.add(e["entity_id"])
            cls.string_values.add(e["features"]["last_click"])
            r = cls.call(c, "POST", "/v1/events", "/v1/events", "clicks-pipeline", e)
            assert r.status == 201, r
            last_seq = r.json()["tree_size"]
        r = cls.call(c, "POST", "/push", "/push", "clicks-pipeline", {
            "push_source_name": "user_activity",
            "df": {"user_id": ["ops-user-0", "ops-user-1"],
                   "event_timestamp": ["2026-11-26 21:00:00", "2026-11-26T21:00:01Z"],
                   "dwell_ms": [1.5, None], "last_click": ["ops-push-a", "ops-push-b"]}})
        assert r.status == 201, r
        cls.string_values.update(["ops-push-a", "ops-push-b"])
        last_seq = r.json()["tree_size"]
        cls.last_seq = last_seq
        single = json.loads((ROOT / "schemas/examples/events/single.json").read_text())
        cls.call(c, "POST", "/v1/events", "/v1/events", "clicks-pipeline",
                 dict(single, features={"dwell_ms": 1.0}))  # 409: key reused
        cls.call(c, "POST", "/v1/events", "/v1/events", "clicks-pipeline", {"events": []})
        cls.call(c, "POST", "/v1/events", "/v1/events", "clicks-pipeline",
                 {"view": "nope", "entity_id": 1, "features": {"a": 1}})
        cls.call(c, "POST", "/v1/events", "/v1/events", "clicks-pipeline",
                 {"view": "transactions", "entity_id": 1, "features": {"amount": 1.0}})
        cls.call(c, "POST", "/v1/events", "/v1/events", "admin", b"x" * (1 << 20 | 1))
        cls.call(c, "POST", "/push", "/push", "clicks-pipeline",
                 {"push_source_name": "nope", "df": {}})

        # The log routes.
        for principal in ("aud", "repl", "ranker", None):
            cls.call(c, "GET", "/v1/log?from_seq=1&limit=100", "/v1/log", principal)
        cls.call(c, "GET", "/v1/log?limit=0", "/v1/log", "aud")
        cls.call(c, "GET", "/v1/log/checkpoint", "/v1/log/checkpoint", "repl")
        cls.call(c, "GET", "/v1/log/checkpoint?covering_seq=2", "/v1/log/checkpoint", "repl")
        cls.call(c, "GET", "/v1/log/checkpoint?tree_size=999999", "/v1/log/checkpoint", "repl")
        cls.call(c, "GET", f"/v1/log/proof/inclusion?seq=2&tree_size={last_seq}",
                 "/v1/log/proof/inclusion", "aud")
        cls.call(c, "GET", "/v1/log/proof/inclusion?seq=2", "/v1/log/proof/inclusion", "aud")
        cls.call(c, "GET", f"/v1/log/proof/consistency?first=3&second={last_seq}",
                 "/v1/log/proof/consistency", "aud")
        cls.call(c, "GET", "/v1/log/proof/consistency?first=3&second=3",
                 "/v1/log/proof/consistency", "ranker")
        cls.call(c, "GET", "/v1/keys", "/v1/keys")

        # Reads: wait for the last write, then every kind of read.
        F = "/v1/features/{view}/{entity_id}"
        r = cls.call(q, "GET", f"/v1/features/user_activity/ops-user-1?min_seq={last_seq}"
                     "&wait_ms=10000", F, "ranker")
        assert r.status == 200, r
        cls.call(q, "GET", "/v1/features/user_activity/u123?proof=1", F, "ranker")
        as_of = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
        cls.call(q, "GET", "/v1/features/transactions/acct-000731?proof=1&as_of="
                 + urllib.parse.quote(as_of), F, "fraud-model")
        cls.call(q, "GET", "/v1/features/transactions/acct-000731?features=merchant_id", F,
                 "ranker")  # 403: restricted feature
        cls.call(q, "GET", "/v1/features/user_activity/u123?features=nope", F, "ranker")
        cls.call(q, "GET", "/v1/features/nope/u123", F, "ranker")
        cls.call(q, "GET", "/v1/features/user_activity/u123", F)
        cls.call(q, "GET", "/v1/features/user_activity/u123", F, token=cls.bogus_token)
        cls.call(q, "GET", f"/v1/features/user_activity/u123?min_seq={last_seq + 1000}"
                 "&wait_ms=5", F, "ranker")
        B = "/v1/features:batch"
        cls.call(q, "POST", B, B, "ranker", {"view": "item_stats",
                                              "entity_ids": ["sku-1001", 42], "proof": True})
        cls.call(q, "POST", B, B, "ranker", {"view": "item_stats", "entity_ids": []})
        cls.call(q, "POST", B, B, "ranker", "[]", "text/plain")
        T = "/v1/features:historical"
        nd = "application/x-ndjson"
        head = json.dumps({"view": "user_activity", "features": ["dwell_ms"],
                           "windows": ["clicks_5m"], "point_in_time": "as_known"})
        row = json.dumps({"entity_id": "ops-user-1", "ts": as_of})
        r = cls.call(q, "POST", T, T, "ranker", f"{head}\n{row}\n", nd)
        assert r.status == 200, r
        cls.call(q, "POST", T, T, "ranker", f"{head}\n{row}\n{{}}\n", nd)  # 400, line 3
        cls.call(q, "POST", T, T, "ranker", head, JSON)  # 415
        cls.call(q, "POST", T, T, "aud", f"{head}\n", nd)  # 403
        G = "/get-online-features"
        cls.call(q, "POST", G, G, "ranker", {
            "features": ["user_activity:dwell_ms", "user_activity:clicks_5m"],
            "entities": {"user_id": ["ops-user-0", "ops-user-1", "nobody"]},
            "full_feature_names": True})
        cls.call(q, "POST", G, G, "ranker", {"features": ["nope:x"],
                                              "entities": {"user_id": ["u1"]}})
        H = "/v1/history/{view}/{entity_id}"
        cls.call(q, "GET", "/v1/history/user_activity/ops-user-0?limit=3", H, "aud")
        cls.call(q, "GET", "/v1/history/user_activity/ops-user-0", H, "ranker")
        cls.call(q, "GET", "/v1/history/user_activity/ops-user-0?from=yesterday", H, "aud")
        cls.call(q, "GET", "/v1/history/nope/ops-user-0", H, "aud")
        cls.call(q, "GET", "/v1/projection/digest", "/v1/projection/digest", "aud")
        cls.call(q, "GET", "/v1/projection/digest", "/v1/projection/digest", "ranker")
        cls.call(q, "GET", "/v1/audit/reads?from=2000-01-01T00:00:00Z", "/v1/audit/reads", "aud")
        cls.call(q, "GET", "/v1/audit/reads?from=x", "/v1/audit/reads", "aud")
        cls.call(q, "GET", "/v1/audit/reads", "/v1/audit/reads", "ranker")
        cls.call(q, "GET", "/v1/audit/log?from_seq=1&limit=2", "/v1/audit/log", "aud")
        cls.call(q, "GET", "/v1/audit/log?limit=0", "/v1/audit/log", "aud")
        cls.call(q, "GET", "/v1/audit/log", "/v1/audit/log", "ranker")
        poll(lambda: q.http().get("/v1/audit/checkpoint", token=cls.tokens["aud"]).status == 200)
        cls.call(q, "GET", "/v1/audit/checkpoint", "/v1/audit/checkpoint", "aud")
        cls.call(q, "GET", "/v1/audit/checkpoint?tree_size=999999", "/v1/audit/checkpoint",
                 "aud")
        cls.call(q, "GET", "/v1/audit/keys", "/v1/audit/keys")
        cls.call(q, "GET", "/v1/audit/proof/inclusion?seq=1&tree_size=1",
                 "/v1/audit/proof/inclusion", "aud")
        cls.call(q, "GET", "/v1/audit/proof/consistency?first=1&second=1",
                 "/v1/audit/proof/consistency", "aud")
        cls.call(q, "GET", "/v1/audit/proof/consistency?first=1",
                 "/v1/audit/proof/consistency", "aud")

        for svc in (c, q):
            for route in ("/healthz", "/readyz", "/metrics"):
                cls.call(svc, "GET", route, route)
        r = poll(lambda: cls.stray.http().get("/readyz").status == 503, timeout=5)
        cls.call(cls.stray, "GET", "/readyz", "/readyz")

        cls.metrics = {"command-svc": c.http().get("/metrics").body.decode(),
                       "query-svc": q.http().get("/metrics").body.decode()}

    # -- the checks ----------------------------------------------------------

    def test_promtool_accepts_metrics(self):
        promtool = shutil.which("promtool")
        tool_or_skip(self, "promtool (Debian package prometheus)", promtool)
        for name, text in self.metrics.items():
            with self.subTest(service=name):
                r = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                                   capture_output=True, timeout=60)
                out = (r.stdout + r.stderr).decode()
                self.assertEqual(r.returncode, 0, f"promtool on {name} /metrics:\n{out}")
                self.assertEqual(out.strip(), "", f"promtool on {name} /metrics:\n{out}")

    def test_contract_metrics_are_exported(self):
        command = parse_metrics(self.metrics["command-svc"])
        query = parse_metrics(self.metrics["query-svc"])
        for name, kind in [("fledger_ingest_events_total", "counter"),
                           ("fledger_append_latency_seconds", "histogram"),
                           ("fledger_publish_lag_events", "gauge"),
                           ("fledger_http_requests_total", "counter")]:
            self.assertEqual(command["TYPE"].get(name), kind, f"command-svc {name}")
        for name, kind in [("fledger_projection_lag_seconds", "histogram"),
                           ("fledger_online_read_latency_seconds", "histogram"),
                           ("fledger_http_requests_total", "counter")]:
            self.assertEqual(query["TYPE"].get(name), kind, f"query-svc {name}")
        self.assertGreaterEqual(metric_value(command, "fledger_ingest_events_total"),
                                self.last_seq)
        self.assertGreaterEqual(metric_value(command, "fledger_http_requests_total",
                                             route="/v1/events", code="201"), 1)
        self.assertGreaterEqual(metric_value(query, "fledger_online_read_latency_seconds_count"),
                                1)
        self.assertGreaterEqual(metric_value(query, "fledger_http_requests_total",
                                             route="/v1/features/{view}/{entity_id}",
                                             code="200"), 1)

    def secrets(self):
        """Every secret the services saw: tokens, a rejected token, private keys."""
        out = {f"token of {name}": token for name, token in self.tokens.items()}
        out["rejected bearer token"] = self.bogus_token
        for path in (self.command_key, self.query_key):
            pem = Path(path).read_text()
            body = "".join(l for l in pem.splitlines() if not l.startswith("-----"))
            out[f"private key {Path(path).name}"] = body
        return out

    def test_no_secrets_in_logs_or_metrics(self):
        places = {f"{svc.name} stderr": svc.stderr_path.read_text(errors="replace")
                  for svc in self.services}
        places.update({f"{name} /metrics": text for name, text in self.metrics.items()})
        self.assertTrue(any(len(t.splitlines()) > 3 for t in places.values()),
                        "the services logged almost nothing: the check would be vacuous")
        for place, text in places.items():
            for what, secret in self.secrets().items():
                self.assertNotIn(secret, text, f"{what} appears in {place}")
            self.assertNotIn("PRIVATE KEY", text, place)
            self.assertNotIn("Bearer ", text, place)

    def test_no_entity_ids_or_values_in_metrics(self):
        for name, text in self.metrics.items():
            for value in sorted(self.entities | self.string_values):
                self.assertIsNone(re.search(r"[\"{=,]" + re.escape(value) + r"[\",}]", text),
                                  f"{value!r} appears in {name} /metrics")

    def test_logs_are_one_json_object_a_line(self):
        for svc in self.services:
            for n, line in enumerate(svc.stderr_path.read_text(errors="replace").splitlines()):
                if line.startswith("--- start #"):  # written by the harness
                    continue
                with self.subTest(service=svc.name, line=n + 1):
                    record = json.loads(line)
                    self.assertIsInstance(record, dict)
                    self.assertIn("msg", record)
                    self.assertIn("level", record)

    def test_answers_match_openapi(self):
        node = shutil.which("node")
        redocly = TOOLING / "node_modules" / ".bin" / "redocly"
        tool_or_skip(self, "node", node)
        tool_or_skip(self, "tests/tooling/node_modules (npm ci --prefix tests/tooling)",
                     redocly.exists() and (TOOLING / "node_modules" / "ajv").exists())
        bundled = self.tmp / "openapi.bundled.json"
        env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true")
        r = subprocess.run([str(redocly), "bundle", str(ROOT / "schemas" / "openapi.yaml"),
                            "--dereferenced", "--ext", "json", "-o", str(bundled)],
                           capture_output=True, env=env, timeout=120)
        self.assertEqual(r.returncode, 0, (r.stdout + r.stderr).decode())
        # The answers collected cover every documented operation.
        spec = json.loads(bundled.read_text())
        documented = {(method, path) for path, item in spec["paths"].items()
                      for method in item if method in ("get", "post", "put", "delete", "patch")}
        collected = {(c["method"], c["path"]) for c in self.cases}
        self.assertEqual(documented - collected, set(), "operations never exercised")
        cases_path = self.tmp / "answers.json"
        cases_path.write_text(json.dumps(self.cases))
        r = subprocess.run([node, "-", str(TOOLING), str(bundled), str(cases_path),
                            str(ROOT / "schemas" / "log-line.schema.json")],
                           input=CHECK_JS.encode(), capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, (r.stdout + r.stderr).decode())
        result = json.loads(r.stdout)
        self.assertEqual(result["problems"], [], "\n".join(result["problems"]))
        self.assertEqual(result["checked"], len(self.cases))



class TokensRequiredTest(unittest.TestCase):
    """Both services refuse to start without --tokens, unless
    --insecure-no-auth says so; with it, a request without a token passes."""

    def setUp(self):
        self.tmp = TempDir(prefix="fledger-tokens-")
        self.key = make_signing_key(self.tmp / "key.pem")
        self.services = []

    def tearDown(self):
        for svc in self.services:
            if svc.running():
                svc.kill()
        self.tmp.close()

    def args(self, binary, name):
        args = ["--data-dir", str(self.tmp / f"{name}-data"),
                "--nats", f"nats://127.0.0.1:{harness.free_port()}",
                "--signing-key", str(self.key)]
        if binary == QUERY_SVC:
            args += ["--command-url", f"http://127.0.0.1:{harness.free_port()}"]
        return args

    def test_tokens_required_unless_insecure_no_auth(self):
        for binary in (COMMAND_SVC, QUERY_SVC):
            with self.subTest(binary.name):
                r = subprocess.run([str(binary), "--listen", f"127.0.0.1:{harness.free_port()}",
                                    *self.args(binary, binary.name)],
                                   capture_output=True, text=True, timeout=30)
                self.assertNotEqual(r.returncode, 0, r.stderr)
                self.assertIn("--tokens is required", r.stderr)
                svc = Service(binary, self.tmp.path, f"{binary.name}-open",
                              self.args(binary, f"{binary.name}-open") + ["--insecure-no-auth"])
                self.services.append(svc)
                svc.start()
                records = svc.stderr_records()
                self.assertTrue(any("INSECURE" in r.get("msg", "") for r in records), records)
                # A route that needs a token with --tokens answers without one.
                route = "/v1/views" if binary == COMMAND_SVC else "/v1/features/v/e"
                r = svc.http().get(route, token=None)
                self.assertNotEqual(r.status, 401, r)
                make_tokens(self.tmp / "tokens.json")
                guarded = Service(binary, self.tmp.path, f"{binary.name}-guarded",
                                  self.args(binary, f"{binary.name}-guarded") +
                                  ["--tokens", str(self.tmp / "tokens.json")])
                self.services.append(guarded)
                guarded.start()
                self.assertEqual(guarded.http().get(route, token=None).status, 401)

    def test_a_port_in_use_is_a_clean_error(self):
        """Started on a port another process holds, a service says so and exits 1,
        with its threads still running (it crashed with SIGSEGV in exit())."""
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        try:
            # The crash was a race with the threads: ten tries each.
            for binary in (COMMAND_SVC, QUERY_SVC):
                for attempt in range(10):
                    with self.subTest(binary.name, attempt=attempt):
                        r = subprocess.run([str(binary), "--listen", f"127.0.0.1:{port}",
                                            *self.args(binary, f"{binary.name}-busy"),
                                            "--insecure-no-auth"],
                                           capture_output=True, text=True, timeout=30)
                        self.assertEqual(r.returncode, 1, r.stderr)
                        self.assertIn("Address already in use", r.stderr)
        finally:
            holder.close()


if __name__ == "__main__":
    harness.main()
