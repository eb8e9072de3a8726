#!/usr/bin/env python3
"""
The examples of schemas/ work as shipped with the demo's tokens: the tokens
scripts/demo.sh makes (demo_tokens of scripts/demo-lib.sh, run here as the
demo runs it), nats-server, command-svc and query-svc on free loopback ports.

- every view of schemas/views/ registers with ADMIN_TOKEN;
- every event of schemas/examples/events/ is written (201) with the token of
  the principal its view's acl.write names;
- every entity written is read back (200, PRESENT) with a token of the demo
  whose roles its view's acl.read allows;
- every principal and role the example views name has a token in
  tokens.env.

Binaries: $FLEDGER_COMMAND_SVC, $FLEDGER_QUERY_SVC (defaults under build/).

    python3 tests/integration/test_examples.py -v
"""

import hashlib
import json
import os
import subprocess
import sys
import unittest
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Http, Nats, Service, TempDir, make_signing_key  # noqa: E402

ROOT = harness.REPO_ROOT
COMMAND_SVC = Path(os.environ.get("FLEDGER_COMMAND_SVC")
                   or ROOT / "build" / "command-svc" / "command-svc")
QUERY_SVC = Path(os.environ.get("FLEDGER_QUERY_SVC")
                 or ROOT / "build" / "query-svc" / "query-svc")


def demo_tokens(run_dir):
    """Runs the demo's token generation; returns ({VAR: token}, [principal entries])."""
    subprocess.run(["bash", "-c", 'source "$1/scripts/demo-lib.sh" && demo_tokens "$2"', "_",
                    str(ROOT), str(run_dir)], check=True, timeout=60)
    env = {}
    for line in (Path(run_dir) / "tokens.env").read_text().splitlines():
        if line and not line.startswith("#"):
            var, _, token = line.partition("=")
            env[var] = token
    principals = json.loads((Path(run_dir) / "tokens.json").read_text())["principals"]
    return env, principals


class ExamplesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.nats = cls.command = cls.query = None
        try:
            run = cls.tmp.path
            cls.env, cls.principals = demo_tokens(run)
            by_hash = {hashlib.sha256(t.encode()).hexdigest(): t for t in cls.env.values()}
            # principal name -> (token, roles)
            cls.tokens = {p["name"]: (by_hash[p["token_sha256"]], p["roles"])
                          for p in cls.principals}
            make_signing_key(run / "command-key.pem")
            make_signing_key(run / "query-key.pem")
            cls.nats = Nats(run).start()
            cls.command = Service(COMMAND_SVC, run, "command-svc", [
                "--data-dir", str(run / "command"), "--nats", cls.nats.url,
                "--signing-key", str(run / "command-key.pem"),
                "--tokens", str(run / "tokens.json")]).start()
            cls.query = Service(QUERY_SVC, run, "query-svc", [
                "--data-dir", str(run / "query"), "--nats", cls.nats.url,
                "--signing-key", str(run / "query-key.pem"),
                "--tokens", str(run / "tokens.json"),
                "--command-url", cls.command.url,
                "--command-token-file", str(run / "replicator.token"),
                "--consumer", "examples-test"]).start()
            cls.views = {}
            for path in sorted((ROOT / "schemas" / "views").glob("*.json")):
                view = json.loads(path.read_text())
                cls.views[view["name"]] = view
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for svc in (cls.query, cls.command):
            if svc and svc.running():
                svc.stop(check=False)
        if cls.nats:
            cls.nats.kill()
        cls.tmp.close()

    def http(self, svc, principal):
        return Http(svc.port, self.tokens[principal][0])

    def reader_of(self, view):
        """A demo principal whose roles the view's acl.read allows for every feature."""
        allowed = set(view["acl"]["read"])
        for rule in view["acl"].get("features", {}).values():
            allowed &= set(rule["read"])
        for name, (_, roles) in self.tokens.items():
            if name in allowed or any(f"role:{r}" in allowed for r in roles):
                return name
        return None

    def test_1_every_principal_the_views_name_has_a_token(self):
        self.assertEqual(len(self.env), len(self.principals))
        for name, view in self.views.items():
            acl = view["acl"]
            entries = acl["write"] + acl["read"] + [
                e for rule in acl.get("features", {}).values() for e in rule["read"]]
            for entry in entries:
                if entry.startswith("role:"):
                    self.assertTrue(any(entry[5:] in roles for _, roles in self.tokens.values()),
                                    f"{name}: no demo token has the role of {entry}")
                else:
                    self.assertIn(entry, self.tokens, f"{name}: no demo token for {entry}")

    def test_2_views_then_examples_then_reads(self):
        for name, view in self.views.items():
            status, _, body = self.http(self.command, "admin").json("POST", "/v1/views", view)
            self.assertIn(status, (200, 201), (name, body))
        written = []  # (view, entity_id)
        last_seq = 0
        for path in sorted((ROOT / "schemas" / "examples" / "events").glob("*.json")):
            body = json.loads(path.read_text())
            events = body.get("events", [body])
            names = {e["view"] for e in events}
            self.assertEqual(len(names), 1, f"{path.name}: one view per example file")
            writer = self.views[names.pop()]["acl"]["write"][0]
            self.assertIn(writer, self.tokens, f"{path.name}: the demo has no token for {writer}")
            status, _, answer = self.http(self.command, writer).json("POST", "/v1/events", body)
            self.assertEqual(status, 201, (path.name, writer, answer))
            last_seq = max(last_seq, answer["tree_size"])
            written += [(e["view"], str(e["entity_id"])) for e in events]
        for view, entity in written:
            reader = self.reader_of(self.views[view])
            self.assertIsNotNone(reader, f"no demo token reads every feature of {view}")
            r = self.http(self.query, reader).get(
                f"/v1/features/{view}/{urllib.parse.quote(entity)}?min_seq={last_seq}"
                "&wait_ms=10000")
            self.assertEqual(r.status, 200, (view, entity, reader, r))
            present = [f for f in r.json()["features"].values() if f["status"] == "PRESENT"]
            self.assertTrue(present, (view, entity, r.json()))


if __name__ == "__main__":
    unittest.main()
