#!/usr/bin/env python3
"""
Integration tests of the fledger CLI against real services (CONTRACT §4, §7,
§11): nats-server, command-svc and query-svc on free loopback ports.

- views, writes and reads through the CLI, reads over HTTP too (an allowed,
  a denied and an unauthenticated one);
- `fledger audit export` and `fledger audit verify`; the read records in the
  bundle against the exact answers received; the bundle's README commands
  run with bash, openssl, base64 and sha256sum only; a tampered copy fails;
- completeness: ranges at the start, in the middle and at the end of the
  logs, and empty ones; every single line removed, with or without its
  proof, fails `fledger audit verify` and the README's by-hand check;
- `fledger keys rotate` and a bundle spanning two keys;
- `fledger log verify` with a state file, and a rolled-back (rewritten) log
  that it must refuse.

Binaries: $FLEDGER_COMMAND_SVC, $FLEDGER_QUERY_SVC, $FLEDGER_CLI (defaults
under build/).

    python3 tests/integration/test_audit_cli.py -v
"""

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import (  # noqa: E402
    CommandEnv, Service, key_id_of, parse_ndjson, poll, public_pem_of, readyz)

BUILD = harness.REPO_ROOT / "build"
COMMAND_SVC = Path(os.environ.get("FLEDGER_COMMAND_SVC") or BUILD / "command-svc" / "command-svc")
QUERY_SVC = Path(os.environ.get("FLEDGER_QUERY_SVC") or BUILD / "query-svc" / "query-svc")
CLI = Path(os.environ.get("FLEDGER_CLI") or BUILD / "cli" / "fledger")
VIEW_FILE = harness.REPO_ROOT / "schemas" / "views" / "user_activity.json"
FORGE_LOG = Path(os.environ.get("FLEDGER_FORGE_LOG") or BUILD / "tests" / "forge_log")


def setUpModule():
    for name, path in (("command-svc", COMMAND_SVC), ("query-svc", QUERY_SVC), ("fledger", CLI)):
        if not path.is_file() or not os.access(path, os.X_OK):
            raise RuntimeError(f"{name} binary not found at {path}: build it or set its "
                               "FLEDGER_* variable")
    print(f"\n[integration] {CLI}, {COMMAND_SVC}, {QUERY_SVC}", file=sys.stderr)


def iso_now(offset_s=0.0):
    t = time.time() + offset_s
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


class Cli:
    """Runs the fledger binary with the stack's URLs and a principal's token file."""

    def __init__(self, workdir, tokens, command_url, query_url="http://127.0.0.1:1"):
        self.workdir = Path(workdir)
        self.command_url, self.query_url = command_url, query_url
        self.token_files = {}
        for name, token in tokens.items():
            path = self.workdir / f"{name}.token"
            path.write_text(token + "\n")
            path.chmod(0o600)
            self.token_files[name] = path

    def run(self, *args, who=None, stdin=None, env=None, timeout=300):
        """(returncode, stdout text, stderr text); global flags go before the command."""
        e = {k: v for k, v in os.environ.items() if not k.startswith("FLEDGER_")}
        e["XDG_STATE_HOME"] = str(self.workdir / "state")  # fledger read --after-write
        e.update(env or {})
        cmd = [str(CLI), "--command-url", self.command_url, "--query-url", self.query_url]
        if who:
            cmd += ["--token-file", str(self.token_files[who])]
        cmd += [str(a) for a in args]
        r = subprocess.run(cmd, input=stdin.encode() if isinstance(stdin, str) else stdin,
                           capture_output=True, timeout=timeout, env=e)
        return r.returncode, r.stdout.decode(), r.stderr.decode()


def readme_script(bundle_dir):
    """The ```sh blocks of the bundle's README, in order, as one bash script."""
    text = (Path(bundle_dir) / "README.md").read_text()
    blocks = re.findall(r"^```sh\n(.*?)^```$", text, re.S | re.M)
    assert len(blocks) >= 4, f"README has {len(blocks)} sh blocks"
    return "\n".join(blocks)


def run_bash(script, cwd):
    """Runs script with bash alone (stock tools on PATH); returns (rc, stdout, stderr)."""
    r = subprocess.run(["bash", "-c", script], cwd=str(cwd), capture_output=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def body_offset(path, index):
    """The byte offset of the base64 body of line index (from 0) of an NDJSON file."""
    data = Path(path).read_bytes()
    start = 0
    for _ in range(index):
        start = data.index(b"\n", start) + 1
    return data.index(b'"body":"', start) + len(b'"body":"')


def flip_byte(path, offset):
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x01
    Path(path).write_bytes(bytes(data))


class AuditCliTest(unittest.TestCase):
    """One stack for the whole story; the steps run in order (test_1 ... test_6)."""

    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        cls.env = CommandEnv(COMMAND_SVC)
        cls.query = None
        try:
            cls.start_time = iso_now(-2)
            tmp = cls.env.tmp.path
            cls.cli = Cli(tmp, cls.env.tokens, cls.env.svc.url)
            # query-svc's own key, made by the CLI
            rc, out, err = cls.cli.run("keygen", "--out", tmp / "query-signing.pem")
            assert rc == 0, err
            cls.keygen_out = out
            cls.query = Service(QUERY_SVC, tmp, "query-svc", [
                "--data-dir", str(tmp / "query-data"),
                "--nats", cls.env.nats.url,
                "--signing-key", str(tmp / "query-signing.pem"),
                "--tokens", str(cls.env.tokens_path),
                "--command-url", cls.env.svc.url,
                "--command-token-file", str(cls.cli.token_files["repl"]),
                "--consumer", "audit-cli-test",
            ])
            cls.query.start()
            cls.cli.query_url = cls.query.url
            cls.http_reads = []  # (kind, status, body bytes) of reads made over HTTP
            cls.cli_read = None
            cls.written_seqs = []
        except BaseException:
            if cls.query:
                cls.query.kill()
            cls.env.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.query and cls.query.running():
                cls.query.stop(check=False)
            reports = cls.query.sanitizer_reports() if cls.query else []
        finally:
            cls.env.close()
        if reports:
            raise AssertionError(f"query-svc sanitizer reports: {reports[:5]}")

    # -- helpers --
    def bundle(self, name):
        return self.env.tmp.path / name

    def export(self, name, **kw):
        out = self.bundle(name)
        rc, stdout, stderr = self.cli.run("audit", "export", "--from", self.start_time,
                                          "--out", out, who="aud", **kw)
        self.assertEqual(rc, 0, f"audit export failed:\n{stdout}\n{stderr}")
        return out

    # -- the story --
    def test_1_keygen_and_views(self):
        m = re.match(r"key_id: ([0-9a-f]{16})\n(-----BEGIN PUBLIC KEY-----\n.*)", self.keygen_out,
                     re.S)
        self.assertIsNotNone(m, self.keygen_out)
        key_path = self.env.tmp.path / "query-signing.pem"
        self.assertEqual(key_path.stat().st_mode & 0o777, 0o600)
        self.assertEqual(m.group(1), key_id_of(public_pem_of(key_path)))
        rc, _, err = self.cli.run("keygen", "--out", key_path)
        self.assertEqual(rc, 1, "keygen must not overwrite a key")
        self.assertIn("exists", err)

        rc, out, err = self.cli.run("views", "apply", VIEW_FILE, who="admin")
        self.assertEqual((rc, out), (0, "user_activity: created v1 (seq 1)\n"), err)
        rc, out, err = self.cli.run("views", "apply", VIEW_FILE, who="admin")
        self.assertEqual((rc, out), (0, "user_activity: unchanged (v1)\n"), err)

        # A directory: files in name order; an invalid one fails the command.
        views = self.env.tmp.path / "views"
        views.mkdir()
        bad = json.loads(VIEW_FILE.read_text())
        bad["name"] = "broken"
        bad["windows"].append({"name": "w", "fn": "sum", "of": "nope", "size": "5m"})
        (views / "a_broken.json").write_text(json.dumps(bad))
        shutil.copy(VIEW_FILE, views / "b_user_activity.json")
        (views / "notes.txt").write_text("not a view")
        rc, out, err = self.cli.run("views", "apply", views, who="admin")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("broken: error: HTTP 400", err)
        self.assertEqual(out, "user_activity: unchanged (v1)\n")
        # no token: a clear error, exit 1; no argument: usage, exit 2
        self.assertEqual(self.cli.run("views", "apply", VIEW_FILE)[0], 1)
        self.assertEqual(self.cli.run("views", "apply")[0], 2)

    def test_2_write(self):
        one = {"view": "user_activity", "entity_id": "u1",
               "event_ts": iso_now(-1),
               "features": {"dwell_ms": 1200.5, "last_click": "p42", "cart_items": 3}}
        rc, out, err = self.cli.run("write", who="clicks-pipeline", stdin=json.dumps(one))
        self.assertEqual(rc, 0, err)
        answer = json.loads(out)
        self.assertEqual(len(answer["results"]), 1)
        seqs = [r["seq"] for r in answer["results"]]
        # how to read it back, on stderr
        self.assertIn(f"read it back with --min-seq {seqs[0]}", err)

        # NDJSON from a file: 1200 events in two atomic batches (1000 + 200).
        lines = [json.dumps({"view": "user_activity", "entity_id": f"u{i % 7}",
                             "features": {"dwell_ms": float(i), "last_click": f"p{i}"}})
                 for i in range(1200)]
        path = self.env.tmp.path / "events.ndjson"
        path.write_text("\n".join(lines) + "\n")
        rc, out, err = self.cli.run("write", "--file", path, who="clicks-pipeline")
        self.assertEqual(rc, 0, err)
        answers = [json.loads(l) for l in out.splitlines()]
        self.assertEqual([len(a["results"]) for a in answers], [1000, 200])
        seqs += [r["seq"] for a in answers for r in a["results"]]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + 1201)))

        # u1's last event: features the allowed read will see
        last = {"view": "user_activity", "entity_id": "u1",
                "features": {"dwell_ms": 99.25, "last_click": "p-last"}}
        rc, out, err = self.cli.run("write", "--file", "-", who="clicks-pipeline",
                                    stdin=json.dumps({"events": [last]}))
        self.assertEqual(rc, 0, err)
        seqs.append(json.loads(out)["results"][0]["seq"])
        type(self).written_seqs = seqs
        self.assertIn(f"--min-seq {seqs[-1]}", err)
        state = self.env.tmp.path / "state" / "fledger" / "last-seq"
        self.assertIn(f"{self.cli.command_url} {seqs[-1]}", state.read_text().splitlines())

        # a rejected write: exit 1, the §9 error on stderr, nothing written
        rc, out, err = self.cli.run("write", who="clicks-pipeline",
                                    stdin=json.dumps({"view": "user_activity", "entity_id": "u1",
                                                      "features": {"nope": 1}}))
        self.assertEqual(rc, 1)
        self.assertIn("HTTP 400", err)
        rc, out, err = self.cli.run("write", who="ranker", stdin=json.dumps(one))
        self.assertEqual(rc, 1)
        self.assertIn("HTTP 403", err)
        self.assertEqual(readyz(self.env.http())["tree_size"], seqs[-1])
        # a failed write leaves the last seq as it was
        self.assertIn(f"{self.cli.command_url} {seqs[-1]}", state.read_text().splitlines())

    def test_3_reads(self):
        last_seq = self.written_seqs[-1]
        rc, out, err = self.cli.run("read", "user_activity", "u1", "--min-seq", last_seq,
                                    "--features", "dwell_ms,last_click", who="ranker")
        self.assertEqual(rc, 0, err)
        answer = json.loads(out)
        self.assertGreaterEqual(answer["applied_seq"], last_seq)
        self.assertEqual(answer["features"]["dwell_ms"]["value"], 99.25)
        self.assertEqual(answer["features"]["dwell_ms"]["seq"], last_seq)
        type(self).cli_read = (out.encode(), answer)

        # --after-write: the last seq this CLI wrote to that command-svc
        rc, out, err = self.cli.run("read", "user_activity", "u1", "--after-write",
                                    "--features", "dwell_ms", who="ranker")
        self.assertEqual(rc, 0, err)
        answer = json.loads(out)
        self.assertGreaterEqual(answer["applied_seq"], last_seq)
        self.assertEqual(answer["features"]["dwell_ms"]["seq"], last_seq)
        rc, _, err = self.cli.run("read", "user_activity", "u1", "--after-write", "--min-seq", 1,
                                  who="ranker")
        self.assertEqual(rc, 2, err)
        other = Cli(self.env.tmp.path, {}, "http://127.0.0.1:9", self.query.url)
        rc, _, err = other.run("read", "user_activity", "u1", "--after-write")
        self.assertEqual(rc, 1, err)
        self.assertIn("no write to http://127.0.0.1:9 recorded", err)

        # a read the CLI reports as denied (403) and one without a token (401)
        rc, _, err = self.cli.run("read", "user_activity", "u1", "--features", "cart_items",
                                  who="ranker")
        self.assertEqual(rc, 1)
        self.assertIn("HTTP 403", err)
        rc, _, err = self.cli.run("read", "user_activity", "u1")
        self.assertEqual(rc, 1)
        self.assertIn("HTTP 401", err)

        # over HTTP, keeping the exact bytes of each answer
        ranker = self.query.http(self.env.tokens["ranker"])
        r = ranker.get("/v1/features/user_activity/u1?features=dwell_ms,last_click&proof=1")
        self.assertEqual(r.status, 200, r)
        self.http_reads.append(("allowed", 200, r.body))
        r = ranker.get("/v1/features/user_activity/u1?features=cart_items")
        self.assertEqual(r.status, 403, r)
        self.http_reads.append(("denied", 403, r.body))
        r = self.query.http().get("/v1/features/user_activity/u1")
        self.assertEqual(r.status, 401, r)
        self.http_reads.append(("anonymous", 401, r.body))

    def test_4_export_and_verify(self):
        out = self.export("bundle")
        for name in ("events.ndjson", "reads.ndjson", "event-checkpoints.ndjson",
                     "read-checkpoints.ndjson", "inclusion.ndjson", "keys.json", "README.md"):
            self.assertTrue((out / name).is_file(), name)
        rc, stdout, stderr = self.cli.run("audit", "verify", out)
        self.assertEqual(rc, 0, stdout + stderr)
        self.assertIn("OK", stdout)
        # without --trust-key: each log's first key on first use, said with its id
        tmp = self.env.tmp.path
        command_id = key_id_of(public_pem_of(self.env.key_path))
        query_id = key_id_of(public_pem_of(tmp / "query-signing.pem"))
        self.assertIn(f"TOFU: no --trust-key given: trusting key {command_id}", stdout)
        self.assertIn(f"trusting key {query_id}", stdout)
        # with both services' keys: no trust on first use
        (tmp / "command-pub.pem").write_text(public_pem_of(self.env.key_path))
        (tmp / "query-pub.pem").write_text(public_pem_of(tmp / "query-signing.pem"))
        rc, t_out, t_err = self.cli.run("audit", "verify", out, "--trust-key",
                                          tmp / "command-pub.pem", "--trust-key",
                                          tmp / "query-pub.pem")
        self.assertEqual(rc, 0, t_out + t_err)
        self.assertNotIn("TOFU", t_out)
        # a key that keys.json lists is not trusted for it: the checkpoints signed
        # by a key other than the one given fail, naming that key
        rc, _, err = self.cli.run("keygen", "--out", tmp / "other-signing.pem")
        self.assertEqual(rc, 0, err)
        (tmp / "other-pub.pem").write_text(public_pem_of(tmp / "other-signing.pem"))
        rc, t_out, t_err = self.cli.run("audit", "verify", out, "--trust-key",
                                          tmp / "other-pub.pem", "--trust-key",
                                          tmp / "query-pub.pem")
        self.assertEqual(rc, 1, t_out + t_err)
        self.assertIn("event-checkpoints.ndjson:1", t_err)
        self.assertIn(f"signed by key {command_id}, which is not trusted", t_err)

        # events: every line written, view event included, ascending
        events = parse_ndjson((out / "events.ndjson").read_bytes())
        seqs = [e["seq"] for e in events]
        self.assertEqual(seqs, sorted(set(seqs)))
        self.assertEqual(seqs[0], 1)  # the view event
        self.assertEqual(json.loads(base64.b64decode(events[0]["body"]))["kind"], "view")
        self.assertTrue(set(self.written_seqs) <= set(seqs))

        # the range starts before the logs and ends now: no boundary line,
        # and each log's lines run from seq 1 to the last checkpoint
        reads = parse_ndjson((out / "reads.ndjson").read_bytes())
        self.assertEqual((out / "event-boundaries.ndjson").read_bytes(), b"")
        self.assertEqual((out / "read-boundaries.ndjson").read_bytes(), b"")
        self.assertEqual(reads[0]["seq"], 1)
        self.assertEqual([r["seq"] for r in reads], list(range(1, len(reads) + 1)))
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        self.assertIn("line before the range none (the log starts there)", stdout)
        self.assertEqual(json.loads((out / "range.json").read_text())["from"],
                         self.start_time)

        # inclusion: one per line, against the last checkpoint of each log
        inclusion = parse_ndjson((out / "inclusion.ndjson").read_bytes())
        self.assertEqual(len(inclusion), len(events) + len(reads))
        last_event_cp = parse_ndjson((out / "event-checkpoints.ndjson").read_bytes())[-1]
        self.assertEqual({p["tree_size"] for p in inclusion if p["log"] == "events"},
                         {last_event_cp["tree_size"]})

        # keys: command-svc's and query-svc's
        keys = {k["key_id"] for k in json.loads((out / "keys.json").read_text())["keys"]}
        self.assertIn(key_id_of(public_pem_of(self.env.key_path)), keys)
        self.assertIn(key_id_of(public_pem_of(self.env.tmp.path / "query-signing.pem")), keys)

        # reads: each HTTP read recorded with its status, principal, served
        # seqs and the SHA-256 of the exact answer body received
        records = [json.loads(base64.b64decode(l["body"])) for l in reads]
        self.assertTrue(all(r["kind"] == "read" for r in records))
        by_digest = {r["answer_sha256"]: r for r in records}
        expected_principal = {"allowed": "ranker", "denied": "ranker", "anonymous": None}
        for kind, status, body in self.http_reads:
            digest = hashlib.sha256(body).hexdigest()
            self.assertIn(digest, by_digest, f"the {kind} read is not in reads.ndjson")
            record = by_digest[digest]
            self.assertEqual(record["status"], status, kind)
            self.assertEqual(record["principal"], expected_principal[kind], kind)
            if status != 401:  # a request without a valid token is not parsed further
                self.assertEqual(record["view"], "user_activity", kind)
            if status == 200:
                answer = json.loads(body)
                # feature values only (CONTRACT §7); windows are named by applied_seq
                served = {f["seq"] for f in answer["features"].values() if "seq" in f}
                self.assertEqual(record["served_seqs"], sorted(served), kind)
                self.assertEqual(record["read_id"], answer["read_id"])
                self.assertIn(self.written_seqs[-1], record["served_seqs"])
            else:
                self.assertEqual(record["served_seqs"], [], kind)
        # the CLI's read: printed as received (plus a newline when it had none)
        cli_bytes, cli_answer = self.cli_read
        cli_record = [r for r in records if r.get("read_id") == cli_answer["read_id"]]
        self.assertEqual(len(cli_record), 1)
        self.assertIn(cli_record[0]["answer_sha256"],
                      {hashlib.sha256(cli_bytes).hexdigest(),
                       hashlib.sha256(cli_bytes[:-1]).hexdigest()})
        self.assertEqual(cli_record[0]["served_seqs"][-1], self.written_seqs[-1])

    def test_5_by_hand_with_stock_tools(self):
        """The README's commands, run by bash with openssl, base64, sha256sum (no python)."""
        copy = self.bundle("by-hand")
        shutil.copytree(self.bundle("bundle"), copy)
        script = readme_script(copy)

        # an event line (the 3rd) and the last event checkpoint
        events_script = script.replace("sed -n 1p events.ndjson", "sed -n 3p events.ndjson")
        self.assertNotEqual(events_script, script)
        rc, out, err = run_bash("set -e\n" + events_script, copy)
        self.assertEqual(rc, 0, out + err)
        self.assertRegex(out, r"OK leaf hash [0-9a-f]{64}")
        # format v2: the checkpoint's signature, and the line by inclusion
        self.assertIn("OK no line signature (format v2)", out)
        self.assertEqual(out.count("Signature Verified Successfully"), 1, out + err)
        self.assertIn("OK seq 3 is in the tree of size", out)
        self.assertIn("fledger-checkpoint-v1\n", out)
        # step 5, completeness: both logs from seq 1, no boundary line
        self.assertRegex(out, r"OK events: seqs 1 to \d+, none missing \(before the range: "
                              r"none, after it: none\)")
        self.assertRegex(out, r"OK reads: seqs 1 to \d+, none missing")

        # a read line (the 2nd) and the read-audit checkpoint, with its own prefix
        read_script = script
        for old, new in (("sed -n 1p events.ndjson", "sed -n 2p reads.ndjson"),
                         ("event-checkpoints.ndjson", "read-checkpoints.ndjson"),
                         ("fledger-checkpoint-v1", "fledger-read-checkpoint-v1"),
                         ('\\"log\\":\\"events\\"', '\\"log\\":\\"reads\\"')):
            self.assertIn(old, read_script)
            read_script = read_script.replace(old, new)
        rc, out, err = run_bash("set -e\n" + read_script, copy)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(out.count("Signature Verified Successfully"), 1, out + err)
        self.assertRegex(out, r"OK seq \d+ is in the tree of size \d+")

        # the same steps on a tampered line: the leaf hash no longer matches
        flip_byte(copy / "events.ndjson", body_offset(copy / "events.ndjson", 2) + 12)
        rc, out, err = run_bash(events_script, copy)
        self.assertNotIn("OK leaf hash", out)
        self.assertNotIn("OK seq 3 is in the tree", out)

    def test_6_tampered_copy_fails(self):
        copy = self.bundle("tampered")
        shutil.copytree(self.bundle("bundle"), copy)
        flip_byte(copy / "events.ndjson", body_offset(copy / "events.ndjson", 1) + 40)
        rc, out, err = self.cli.run("audit", "verify", copy)
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(err, r"FAILED: events\.ndjson:2: seq \d+: ")
        # the original still verifies
        self.assertEqual(self.cli.run("audit", "verify", self.bundle("bundle"))[0], 0)
        # a deleted inclusion proof
        copy2 = self.bundle("tampered2")
        shutil.copytree(self.bundle("bundle"), copy2)
        lines = (copy2 / "inclusion.ndjson").read_text().splitlines(True)
        (copy2 / "inclusion.ndjson").write_text("".join(lines[:4] + lines[5:]))
        rc, out, err = self.cli.run("audit", "verify", copy2)
        self.assertEqual(rc, 1)
        self.assertIn("inclusion.ndjson:5", err)

    def test_7_key_rotation_in_a_bundle(self):
        old_id = key_id_of(public_pem_of(self.env.key_path))
        rc, out, err = self.cli.run("keys", "rotate", "--key-file", self.env.key_path, "--pid",
                                    self.env.svc.proc.pid)
        self.assertEqual(rc, 0, out + err)
        new_id = key_id_of(public_pem_of(self.env.key_path))
        self.assertNotEqual(new_id, old_id)
        self.assertIn(f"old key_id: {old_id}", out)
        self.assertIn(f"new key_id: {new_id}", out)
        self.assertEqual(key_id_of(public_pem_of(Path(str(self.env.key_path) + ".old"))), old_id)
        rc, out, err = self.cli.run(
            "write", who="clicks-pipeline",
            stdin=json.dumps({"view": "user_activity", "entity_id": "u9",
                              "features": {"dwell_ms": 1.0}}))
        self.assertEqual(rc, 0, err)
        seq = json.loads(out)["results"][0]["seq"]
        rc, out, err = self.cli.run("read", "user_activity", "u9", "--min-seq", seq,
                                    "--features", "dwell_ms", who="ranker")
        self.assertEqual(rc, 0, err)
        bundle = self.export("bundle-rotated")
        rc, out, err = self.cli.run("audit", "verify", bundle)
        self.assertEqual(rc, 0, out + err)
        events = parse_ndjson((bundle / "events.ndjson").read_bytes())
        self.assertEqual({frozenset(e) for e in events}, {frozenset({"seq", "body", "leaf_hash"})})
        kinds = [json.loads(base64.b64decode(e["body"]))["kind"] for e in events]
        self.assertIn("key", kinds)
        self.assertEqual(parse_ndjson((bundle / "event-checkpoints.ndjson").read_bytes())[-1]
                         ["key_id"], new_id)
        # log verify over both keys
        rc, out, err = self.cli.run("log", "verify", "--state", self.env.tmp.path / "rot.json",
                                    who="aud")
        self.assertEqual(rc, 0, out + err)

    def test_8_empty_range(self):
        """A range that holds nothing: a warning; --require-lines makes it fail."""
        start, end = iso_now(3600), iso_now(7200)
        rc, out, err = self.cli.run("audit", "export", "--from", start, "--to", end,
                                    "--out", self.bundle("empty"), who="aud")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("exported 0 event lines and 0 read lines", out)
        self.assertIn("warning: no event-log line and no read record lies in", err)
        rc, out, err = self.cli.run("audit", "export", "--from", start, "--to", end,
                                    "--out", self.bundle("empty-required"), "--require-lines",
                                    who="aud")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("no event-log line and no read record lies in", err)
        self.assertNotIn("OK", out)
        # the empty range after the logs: proven by each log's last line
        empty = self.bundle("empty")
        for log, lines_name, bounds_name, cps_name in (
                ("events", "events.ndjson", "event-boundaries.ndjson", "event-checkpoints.ndjson"),
                ("reads", "reads.ndjson", "read-boundaries.ndjson", "read-checkpoints.ndjson")):
            self.assertEqual((empty / lines_name).read_bytes(), b"", log)
            bounds = parse_ndjson((empty / bounds_name).read_bytes())
            size = parse_ndjson((empty / cps_name).read_bytes())[-1]["tree_size"]
            self.assertEqual([b["seq"] for b in bounds], [size], log)
        rc, out, err = run_bash(readme_script(empty), empty)
        self.assertRegex(out, r"OK events: seqs (\d+) to \1, none missing \(before the range: "
                              r"\1, after it: none\)", out + err)
        self.assertRegex(out, r"OK reads: seqs (\d+) to \1, none missing", out + err)
        # a range with lines: no warning, and --require-lines passes
        rc, out, err = self.cli.run("audit", "export", "--from", self.start_time,
                                    "--out", self.bundle("full-required"), "--require-lines",
                                    who="aud")
        self.assertEqual(rc, 0, out + err)
        self.assertNotIn("warning", err)

    def verify_fails(self, bundle, what):
        rc, out, err = self.cli.run("audit", "verify", bundle)
        self.assertEqual(rc, 1, f"{what}: verify passed:\n{out}{err}")
        self.assertIn("FAILED: ", err, what)
        return err

    def test_9_completeness(self):
        """A range in the middle of both logs: boundary lines; no line can be hidden."""
        ranker = self.query.http(self.env.tokens["ranker"])

        def activity(tag, n):
            for i in range(n):  # one request each: times and seqs in step
                rc, _, err = self.cli.run(
                    "write", who="clicks-pipeline",
                    stdin=json.dumps({"view": "user_activity", "entity_id": f"c-{tag}",
                                      "features": {"dwell_ms": float(i)}}))
                self.assertEqual(rc, 0, err)
                r = ranker.get("/v1/features/user_activity/u1?features=dwell_ms")
                self.assertEqual(r.status, 200, r)

        activity("before", 2)
        time.sleep(0.3)
        gap = iso_now()
        time.sleep(0.3)
        start = iso_now()
        activity("in", 4)
        end = iso_now()
        time.sleep(0.3)
        activity("after", 2)

        middle = self.bundle("middle")
        rc, out, err = self.cli.run("audit", "export", "--from", start, "--to", end,
                                    "--out", middle, who="aud")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("exported 4 event lines and 4 read lines", out)
        # the read log by seq, for the lines around a range: role auditor
        r = self.query.http(self.env.tokens["aud"]).get("/v1/audit/log?from_seq=2&limit=2")
        self.assertEqual(r.status, 200, r)
        self.assertEqual([l["seq"] for l in parse_ndjson(r.body)], [2, 3])
        self.assertEqual(ranker.get("/v1/audit/log").status, 403)
        self.assertEqual(self.query.http().get("/v1/audit/log").status, 401)
        for bad in ("limit=0", "limit=10001", "from_seq=0", "from_seq=x"):
            r = self.query.http(self.env.tokens["aud"]).get(f"/v1/audit/log?{bad}")
            self.assertEqual(r.status, 400, bad)

        names = {"events": ("events.ndjson", "event-boundaries.ndjson"),
                 "reads": ("reads.ndjson", "read-boundaries.ndjson")}
        for log, (lines_name, bounds_name) in names.items():
            seqs = [l["seq"] for l in parse_ndjson((middle / lines_name).read_bytes())]
            bounds = [l["seq"] for l in parse_ndjson((middle / bounds_name).read_bytes())]
            self.assertEqual(seqs, list(range(seqs[0], seqs[0] + 4)), log)
            self.assertEqual(bounds, [seqs[0] - 1, seqs[-1] + 1], log)
        inclusion = parse_ndjson((middle / "inclusion.ndjson").read_bytes())
        self.assertEqual(len(inclusion), 12)
        rc, out, err = self.cli.run("audit", "verify", middle)
        self.assertEqual(rc, 0, out + err)
        self.assertRegex(out, r"events\.ndjson +4 lines, complete: line before the range seq "
                              r"\d+, after it seq \d+")

        # every single line, in the range or a boundary line, removed alone
        # or together with its proof
        cases = 0
        for log, files in names.items():
            for name in files:
                lines = (middle / name).read_text().splitlines(True)
                for i, line in enumerate(lines):
                    seq = json.loads(line)["seq"]
                    for with_proof in (False, True):
                        copy = self.bundle(f"hidden-{name}-{i}-{with_proof}")
                        shutil.copytree(middle, copy)
                        (copy / name).write_text("".join(lines[:i] + lines[i + 1:]))
                        if with_proof:
                            proofs = (copy / "inclusion.ndjson").read_text().splitlines(True)
                            kept = [p for p in proofs
                                    if not p.startswith(f'{{"log":"{log}","seq":{seq},')]
                            self.assertEqual(len(kept), len(proofs) - 1)
                            (copy / "inclusion.ndjson").write_text("".join(kept))
                        err = self.verify_fails(copy, f"{name} seq {seq} removed, proof "
                                                      f"removed: {with_proof}")
                        if with_proof and name in ("events.ndjson", "reads.ndjson"):
                            self.assertIn(f"seq {seq} is missing between {seq - 1} and "
                                          f"{seq + 1}", err)
                        cases += 1
        self.assertEqual(cases, 2 * (4 + 2 + 4 + 2))

        # the last event line and the line after it, both with their proofs
        copy = self.bundle("hidden-end")
        shutil.copytree(middle, copy)
        last = json.loads((copy / "events.ndjson").read_text().splitlines()[-1])["seq"]
        size = parse_ndjson((copy / "event-checkpoints.ndjson").read_bytes())[-1]["tree_size"]
        for name in ("events.ndjson", "event-boundaries.ndjson"):
            lines = (copy / name).read_text().splitlines(True)
            (copy / name).write_text("".join(lines[:-1]))
        proofs = (copy / "inclusion.ndjson").read_text().splitlines(True)
        (copy / "inclusion.ndjson").write_text("".join(
            p for p in proofs if not re.match(rf'{{"log":"events","seq":({last}|{last + 1}),', p)))
        err = self.verify_fails(copy, "the last line and the line after it")
        self.assertIn(f"the line after the range is missing: last exported seq {last - 1} < "
                      f"tree size {size}", err)

        # by hand (README): steps 1-3 on the line after the range, step 5 on
        # the bundle and on a copy without a line of the range and its proof
        script = readme_script(middle)
        after = json.loads((middle / "event-boundaries.ndjson").read_text().splitlines()[1])
        rc, out, err = run_bash("set -e\n" + script.replace("sed -n 1p events.ndjson",
                                                            "sed -n 2p event-boundaries.ndjson"),
                                middle)
        self.assertEqual(rc, 0, out + err)
        self.assertIn(f"OK seq {after['seq']} is in the tree of size", out)
        self.assertRegex(out, r"OK events: seqs \d+ to \d+, none missing \(before the range: "
                              r"\d+, after it: \d+\)")
        self.assertRegex(out, r"OK reads: seqs \d+ to \d+, none missing")
        for name, log in (("events.ndjson", "events"), ("reads.ndjson", "reads")):
            copy = self.bundle(f"by-hand-hidden-{log}")
            shutil.copytree(middle, copy)
            lines = (copy / name).read_text().splitlines(True)
            (copy / name).write_text("".join(lines[:1] + lines[2:]))
            rc, out, err = run_bash(script, copy)
            self.assertIn(f"BAD {log}: a seq between", out, out + err)
            self.assertNotIn(f"OK {log}:", out)

        # an empty range in the quiet gap: the two lines around it prove it
        empty = self.bundle("empty-gap")
        rc, out, err = self.cli.run("audit", "export", "--from", gap, "--to", gap,
                                    "--out", empty, who="aud")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("exported 0 event lines and 0 read lines", out)
        for log, (lines_name, bounds_name) in names.items():
            self.assertEqual((empty / lines_name).read_bytes(), b"", log)
            bounds = [l["seq"] for l in parse_ndjson((empty / bounds_name).read_bytes())]
            self.assertEqual(len(bounds), 2, log)
            self.assertEqual(bounds[1], bounds[0] + 1, log)
            lines = (empty / bounds_name).read_text().splitlines(True)
            for i in range(2):
                copy = self.bundle(f"empty-gap-{log}-{i}")
                shutil.copytree(empty, copy)
                (copy / bounds_name).write_text("".join(lines[:i] + lines[i + 1:]))
                self.verify_fails(copy, f"{bounds_name} line {i + 1} removed")
        rc, out, err = run_bash(readme_script(empty), empty)
        self.assertRegex(out, r"OK events: seqs (\d+) to \d+, none missing \(before the range: "
                              r"\1, after it: \d+\)", out + err)


class LogVerifyTest(unittest.TestCase):
    """`fledger log verify` with a state file against a log that grows, then rolls back."""

    @classmethod
    def setUpClass(cls):
        cls.env = CommandEnv(COMMAND_SVC)
        try:
            cls.cli = Cli(cls.env.tmp.path, cls.env.tokens, cls.env.svc.url)
            cls.state = cls.env.tmp.path / "state" / "log-state.json"
            cls.admin = cls.env.http("admin")
            status, _, body = cls.admin.json("POST", "/v1/views",
                                             json.loads(VIEW_FILE.read_text()))
            assert status == 201, body
        except BaseException:
            cls.env.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.env.close()

    def write(self, n, tag):
        lines = "\n".join(json.dumps({"view": "user_activity", "entity_id": f"{tag}{i}",
                                      "features": {"dwell_ms": float(i)}}) for i in range(n))
        rc, out, err = self.cli.run("write", who="clicks-pipeline", stdin=lines)
        self.assertEqual(rc, 0, err)
        return json.loads(out.splitlines()[-1])["tree_size"]

    def verify(self, **kw):
        return self.cli.run("log", "verify", "--state", self.state, who="aud", **kw)

    def test_log_verify_and_rollback(self):
        self.write(20, "a")
        # a copy of the log as it is now: the history to roll back to
        self.env.svc.stop()
        backup = self.env.tmp.path / "command-data.backup"
        shutil.copytree(self.env.data_dir, backup)
        self.env.svc.start()
        size_1 = self.write(30, "b")

        rc, out, err = self.verify()
        self.assertEqual(rc, 0, out + err)
        self.assertIn(f"OK: {size_1} lines verified", out)
        self.assertIn("first verification", out)
        self.assertEqual(json.loads(self.state.read_text())["checkpoint"]["tree_size"], size_1)
        self.assertEqual(self.state.stat().st_mode & 0o777, 0o600)

        size_2 = self.write(15, "c")
        # the state file given by $FLEDGER_LOG_STATE this time
        rc, out, err = self.cli.run("log", "verify", who="aud",
                                    env={"FLEDGER_LOG_STATE": str(self.state)})
        self.assertEqual(rc, 0, out + err)
        self.assertIn(f"consistent with tree size {size_1}", out)
        self.assertEqual(json.loads(self.state.read_text())["checkpoint"]["tree_size"], size_2)
        # nothing new: still fine
        self.assertEqual(self.verify()[0], 0)
        saved = self.state.read_text()

        # Roll back: command-svc restarted on the copy taken earlier.
        self.env.svc.stop()
        shutil.move(str(self.env.data_dir), str(self.env.tmp.path / "command-data.newer"))
        shutil.copytree(backup, self.env.data_dir)
        self.env.svc.start()
        self.assertLess(readyz(self.env.http())["tree_size"], size_2)
        rc, out, err = self.verify()
        self.assertEqual(rc, 1, out + err)
        self.assertIn("shrank", err)
        self.assertEqual(self.state.read_text(), saved, "a failed verification changed the state")

        # The rolled-back log grows past the verified size with other events:
        # same size or larger, different history.
        rewritten = self.write(60, "x")
        self.assertGreater(rewritten, size_2)
        rc, out, err = self.verify()
        self.assertEqual(rc, 1, out + err)
        self.assertIn("rewritten", err)
        self.assertEqual(self.state.read_text(), saved)

        # A fresh state accepts the new log as it is (a monitor's first look).
        rc, out, err = self.cli.run("log", "verify", "--state",
                                    self.env.tmp.path / "fresh.json", who="aud")
        self.assertEqual(rc, 0, out + err)

    def test_log_verify_catches_a_forged_line_of_a_live_service(self):
        """A proxy rewrites one line of GET /v1/log (its leaf hash recomputed)."""
        size = self.write(12, "forge")
        target = size - 5
        body = base64.b64decode(json.loads(
            self.env.http("aud").get(f"/v1/log?from_seq={target}&limit=1").body
            .splitlines()[0])["body"])
        old = b'"dwell_ms":'
        self.assertIn(old, body)
        proxy = harness.LogRewritingProxy(self.env.svc.port, target, old, b'"dwell_ms":9')
        try:
            cli = Cli(self.env.tmp.path, self.env.tokens, proxy.url)
            rc, out, err = cli.run("log", "verify", "--state",
                                   self.env.tmp.path / "forged-state.json", who="aud")
            self.assertEqual(rc, 1, out + err)
            self.assertGreater(proxy.rewritten, 0, "the proxy rewrote nothing")
            self.assertIn(f"FAILED: log line {target}:", err)
            self.assertFalse((self.env.tmp.path / "forged-state.json").exists(),
                             "a state was saved for a forged log")
            # the same through the real service: it verifies
            rc, out, err = self.cli.run("log", "verify", "--state",
                                        self.env.tmp.path / "honest-state.json", who="aud")
            self.assertEqual(rc, 0, out + err)
        finally:
            proxy.close()

    def test_usage_and_errors(self):
        rc, out, err = self.cli.run("log", "verify", "--bogus")
        self.assertEqual(rc, 2)
        self.assertIn("unknown flag --bogus", err)
        rc, out, err = self.cli.run("log", "verify", "--state", self.env.tmp.path / "s.json")
        self.assertEqual(rc, 1)
        self.assertIn("token", err)
        rc, out, err = self.cli.run("log", "verify", "--state", self.env.tmp.path / "s.json",
                                    who="ranker")
        self.assertEqual(rc, 1)
        self.assertIn("403", err)
        rc, out, err = self.cli.run("nonsense")
        self.assertEqual(rc, 2)
        rc, out, err = self.cli.run("--help")
        self.assertEqual(rc, 0)
        self.assertIn("audit export", out)
        for words in (["audit", "verify"], ["log", "verify"], ["demo"], ["write"], ["read"],
                      ["token"], ["keys", "rotate"], ["views", "apply"], ["audit", "export"],
                      ["keygen"]):
            rc, out, err = self.cli.run(*words, "--help")
            self.assertEqual(rc, 0, words)
            self.assertIn("Usage: fledger " + " ".join(words), out)
            # connection options only where the command reaches a service
            offline = words in (["audit", "verify"], ["token"], ["keygen"])
            self.assertEqual("--token-file" in out, not offline, words)
            self.assertEqual(out.count("--help"), 1, words)
        # token: a random token and the entry for the tokens file
        rc, out, err = self.cli.run("token", "--name", "svc", "--roles", "reader,fraud")
        self.assertEqual(rc, 0, err)
        token, entry = out.splitlines()
        self.assertRegex(token, r"^[0-9a-f]{64}$")
        self.assertEqual(json.loads(entry), {"name": "svc", "roles": ["reader", "fraud"],
                                             "token_sha256": hashlib.sha256(
                                                 token.encode()).hexdigest()})
        # the demo producer, briefly
        rc, out, err = self.cli.run("demo", "--users", "50", "--rate", "100", "--duration", "1",
                                    who="clicks-pipeline")
        self.assertEqual(rc, 0, out + err)
        m = re.search(r"(\d+) events written", out)
        self.assertTrue(m and int(m.group(1)) >= 50, out)


class LogVerifyTrustTest(unittest.TestCase):
    """`fledger log verify` key trust: --trust-key, trust on first use, rotations real and forged."""

    @classmethod
    def setUpClass(cls):
        cls.env = CommandEnv(COMMAND_SVC)
        try:
            cls.cli = Cli(cls.env.tmp.path, cls.env.tokens, cls.env.svc.url)
            status, _, body = cls.env.http("admin").json("POST", "/v1/views",
                                                         json.loads(VIEW_FILE.read_text()))
            assert status == 201, body
        except BaseException:
            cls.env.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.env.close()

    def write(self, n, tag, cli=None):
        lines = "\n".join(json.dumps({"view": "user_activity", "entity_id": f"{tag}{i}",
                                      "features": {"dwell_ms": float(i)}}) for i in range(n))
        rc, out, err = (cli or self.cli).run("write", who="clicks-pipeline", stdin=lines)
        self.assertEqual(rc, 0, err)
        return json.loads(out.splitlines()[-1])["tree_size"]

    def verify(self, *args, cli=None):
        state = self.env.tmp.path / f"state-{time.monotonic_ns()}.json"
        return (cli or self.cli).run("log", "verify", "--state", state, *args, who="aud")

    def pub_file(self, private_key, name):
        path = self.env.tmp.path / name
        path.write_text(public_pem_of(private_key))
        return path

    def test_receipts_kept_by_write_verify_offline(self):
        env = self.env
        receipts = env.tmp.path / "receipts.ndjson"
        pub = self.pub_file(env.key_path, "receipt.pub.pem")
        lines = "\n".join(json.dumps({"view": "user_activity", "entity_id": f"rc{i}",
                                      "features": {"dwell_ms": float(i)}}) for i in range(1203))
        rc, out, err = self.cli.run("write", "--receipt", receipts, who="clicks-pipeline",
                                    stdin=lines)
        self.assertEqual(rc, 0, err)
        rc, out, err = self.cli.run("write", "--receipt", receipts, who="clicks-pipeline",
                                    stdin=json.dumps({"view": "user_activity", "entity_id": "rc",
                                                      "features": {"dwell_ms": 1.0}}))
        self.assertEqual(rc, 0, err)
        kept = parse_ndjson(receipts.read_bytes())
        self.assertEqual([len(r["results"]) for r in kept], [1000, 203, 1])
        rc, out, err = self.cli.run("receipt", "verify", receipts, "--key", pub)
        self.assertEqual((rc, out), (0, "OK: 1204 events in 3 receipts are in the trees of "
                                        "their signed checkpoints\n"), err)

        # the same with stock tools: openssl for the checkpoint, an RFC 9162 fold
        verifier = harness.Verifier({key_id_of(public_pem_of(env.key_path)):
                                     public_pem_of(env.key_path)}, env.tmp.path)
        for receipt in kept:
            cp = receipt["checkpoint"]
            self.assertEqual(verifier.check_checkpoint(cp), [])
            for r in receipt["results"][::50]:
                self.assertTrue(harness.verify_inclusion(
                    r["proof"]["leaf_index"], cp["tree_size"], bytes.fromhex(r["leaf_hash"]),
                    [bytes.fromhex(h) for h in r["proof"]["hashes"]],
                    bytes.fromhex(cp["root_hash"])))

        # a changed leaf, a changed signature, another key: each named, exit 1
        def tampered(name, change):
            copy = [json.loads(json.dumps(r)) for r in kept]
            change(copy)
            path = env.tmp.path / name
            path.write_text("".join(json.dumps(r) + "\n" for r in copy))
            return self.cli.run("receipt", "verify", path, "--key", pub)

        seq = kept[1]["results"][5]["seq"]
        rc, out, err = tampered("leaf.ndjson", lambda c: c[1]["results"][5].update(
            leaf_hash="ab" * 32))
        self.assertEqual(rc, 1, out + err)
        self.assertIn(f"leaf.ndjson:2: seq {seq}: the proof does not lead", err)
        sig = bytearray(base64.b64decode(kept[0]["checkpoint"]["sig"]))
        sig[3] ^= 1
        rc, out, err = tampered("sig.ndjson", lambda c: c[0]["checkpoint"].update(
            sig=base64.b64encode(bytes(sig)).decode()))
        self.assertEqual(rc, 1, out + err)
        self.assertIn("sig.ndjson:1: the signature of the checkpoint", err)
        rc, out, err = tampered("noproof.ndjson", lambda c: c[2]["results"][0].pop("proof"))
        self.assertEqual(rc, 1, out + err)
        self.assertIn("noproof.ndjson:3: seq", err)
        other = self.pub_file(harness.make_signing_key(env.tmp.path / "other-r.pem"),
                              "other-r.pub.pem")
        rc, out, err = self.cli.run("receipt", "verify", receipts, "--key", other)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("which no --key is", err)
        self.assertEqual(self.cli.run("receipt", "verify", receipts)[0], 2)

    def test_trust_on_first_use_flags_and_rotations(self):
        env = self.env
        self.write(5, "a")
        key_a = key_id_of(public_pem_of(env.key_path))
        pub_a = self.pub_file(env.key_path, "a.pub.pem")
        other = harness.make_signing_key(env.tmp.path / "other.pem")
        pub_other = self.pub_file(other, "other.pub.pem")

        rc, out, err = self.verify()
        self.assertEqual(rc, 0, out + err)
        self.assertIn(f"TOFU: no --trust-key given: trusting key {key_a}", out)
        rc, out, err = self.verify("--trust-key", pub_a)
        self.assertEqual(rc, 0, out + err)
        self.assertNotIn("TOFU", out)
        # a key /v1/keys lists but that is not trusted
        rc, out, err = self.verify("--trust-key", pub_other)
        self.assertEqual(rc, 1, out + err)
        # format v2: no line signature; the checkpoint names the key
        self.assertIn(f"is signed by key {key_a}, which is not trusted", err)
        self.assertNotIn("OK", out)
        rc, out, err = self.verify("--trust-key", self.env.tmp.path / "absent.pem")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("absent.pem: no such file", err)

        # a legitimate rotation (SIGHUP with a new key file)
        size0 = readyz(env.http())["tree_size"]
        os.replace(harness.make_signing_key(env.tmp.path / "next.pem"), env.key_path)
        key_b = key_id_of(public_pem_of(env.key_path))
        env.svc.proc.send_signal(signal.SIGHUP)
        self.assertTrue(poll(lambda: readyz(env.http())["tree_size"] == size0 + 1, 10))
        self.write(3, "b")
        for args in ([], ["--trust-key", pub_a], ["--trust-key", f"{pub_other},{pub_a}"]):
            rc, out, err = self.verify(*args)
            self.assertEqual(rc, 0, f"{args}: {out} {err}")
            self.assertIn(f"trusting key {key_b} from the key event at seq {size0 + 1}", out)
            self.assertIn(f"by key {key_b}", out)
        # trusting only the new key: lines of format v2 carry no signature of
        # their own, and the latest checkpoint, signed by the new key, proves
        # the whole tree, the old key's lines included
        rc, out, err = self.verify("--trust-key", self.pub_file(env.key_path, "b.pub.pem"))
        self.assertEqual(rc, 0, out + err)
        self.assertIn(f"lines verified; root", out)
        self.assertIn(f"by key {key_b}", out)

        # a rotation forged under a third key: a copy of the log with a key
        # event signed (line and checkpoint) by that key only
        forger_key = harness.make_signing_key(env.tmp.path / "forger.pem")
        key_f = key_id_of(public_pem_of(forger_key))
        forged_dir = env.tmp.path / "forged-data"
        proc = subprocess.run([str(FORGE_LOG), str(env.data_dir), str(forged_dir),
                               str(forger_key)], capture_output=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        key_seq = int(proc.stdout)
        forger = harness.Service(COMMAND_SVC, env.tmp.path, "forger", [
            "--data-dir", str(forged_dir), "--nats", f"nats://127.0.0.1:{harness.free_port()}",
            "--signing-key", str(forger_key), "--tokens", str(env.tokens_path)])
        forger.start()
        try:
            forged_cli = Cli(env.tmp.path, env.tokens, forger.url)
            self.write(2, "f", cli=forged_cli)
            keys = {k["key_id"] for k in forger.http().get_json("/v1/keys")[1]["keys"]}
            self.assertIn(key_f, keys)
            for args in ([], ["--trust-key", pub_a]):
                rc, out, err = self.verify(*args, cli=forged_cli)
                self.assertEqual(rc, 1, f"{args}: {out} {err}")
                self.assertIn(f"line {key_seq} is signed by key {key_f}, which is not trusted",
                              err)
                self.assertNotIn("OK", out)
        finally:
            forger.stop(check=False)
            forger.assert_no_sanitizer_reports()


FIXTURE = harness.REPO_ROOT / "tests" / "fixtures" / "v1-log"


class FirstFormatLogTest(unittest.TestCase):
    """
    A log written by the first format (tests/fixtures/v1-log: every line signed,
    a key rotation at seq 12) opens, verifies, replicates, rebuilds and exports
    unchanged, and grows in format v2.
    """

    def setUp(self):
        self.env = CommandEnv(COMMAND_SVC, start=False)
        tmp = self.env.tmp.path
        shutil.copytree(FIXTURE / "command-data", self.env.data_dir)
        for name in ("command-signing.pem", "command-old-signing.pem", "query-signing.pem"):
            shutil.copy(FIXTURE / name, tmp / name)
            (tmp / name).chmod(0o600)
        shutil.copy(tmp / "command-signing.pem", self.env.key_path)
        (tmp / "query-data").mkdir()
        shutil.copytree(FIXTURE / "query-audit", tmp / "query-data" / "audit")
        self.env.nats.start()
        self.env.svc.start()
        self.cli = Cli(tmp, self.env.tokens, self.env.svc.url)
        self.query = None

    def tearDown(self):
        try:
            if self.query and self.query.running():
                self.query.stop(check=False)
            reports = self.query.sanitizer_reports() if self.query else []
        finally:
            self.env.close()
        self.assertEqual(reports, [])

    def start_query(self, *extra):
        tmp = self.env.tmp.path
        self.query = Service(QUERY_SVC, tmp, "query-svc", [
            "--data-dir", str(tmp / "query-data"), "--nats", self.env.nats.url,
            "--signing-key", str(tmp / "query-signing.pem"),
            "--tokens", str(self.env.tokens_path), "--command-url", self.env.svc.url,
            "--command-token-file", str(self.cli.token_files["repl"]),
            "--consumer", "fixture"] + list(extra))
        self.query.start()
        self.cli.query_url = self.query.url

    @staticmethod
    def applied(http):
        r = http.get("/readyz", token=None)
        return r.json().get("applied_seq") if r.body.startswith(b"{") else None

    def test_first_format_log_opens_verifies_replicates_rebuilds_and_exports(self):
        tmp = self.env.tmp.path
        old_pub = tmp / "old.pub.pem"
        old_pub.write_text(public_pem_of(tmp / "command-old-signing.pem"))
        old_id = key_id_of(public_pem_of(tmp / "command-old-signing.pem"))
        new_id = key_id_of(public_pem_of(tmp / "command-signing.pem"))
        auditor = self.env.http("aud")
        lines = harness.read_log(auditor)
        self.assertEqual(len(lines), 15)
        self.assertEqual([l["key_id"] for l in lines], [old_id] * 12 + [new_id] * 3)
        verifier = harness.Verifier.from_service(self.env.http(), tmp)
        self.assertEqual(verifier.check_lines(lines), [])

        # it grows in format v2
        rc, out, err = self.cli.run("write", who="clicks-pipeline", stdin=json.dumps(
            {"view": "user_activity", "entity_id": "u1", "features": {"dwell_ms": 5.5}}))
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["results"][0]["seq"], 16)
        lines = harness.read_log(auditor)
        self.assertEqual(set(lines[15]), {"seq", "body", "leaf_hash"})
        self.assertEqual(lines[:15], harness.read_log(auditor)[:15])

        # fledger log verify: the first line's key on first use, or the old key given
        for args in ([], ["--trust-key", old_pub]):
            state = tmp / f"state-{len(args)}.json"
            rc, out, err = self.cli.run("log", "verify", "--state", state, *args, who="aud")
            self.assertEqual(rc, 0, f"{args}: {out} {err}")
            self.assertIn(f"trusting key {new_id} from the key event at seq 12", out)
            self.assertIn("OK: 16 lines verified", out)

        # query-svc replicates it (trust on first use pins the key of line 1) and
        # keeps appending to its read log of the first format
        self.start_query()
        http = self.query.http()
        self.assertTrue(poll(lambda: self.applied(http) == 16, 20),
                        self.query.stderr_tail())
        pins = (tmp / "query-data" / "trusted-keys").read_text()
        self.assertEqual(key_id_of(pins.split("-----END PUBLIC KEY-----")[0]
                                   + "-----END PUBLIC KEY-----\n"), old_id)
        ranker = self.query.http(self.env.tokens["ranker"])
        r = ranker.get("/v1/features/user_activity/u1?features=dwell_ms")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["features"]["dwell_ms"]["value"], 5.5)
        reads = harness.parse_ndjson(self.query.http(self.env.tokens["aud"]).get(
            "/v1/audit/log?from_seq=1").body)
        self.assertEqual(len(reads), 4)
        self.assertEqual([("sig" in l) for l in reads], [True] * 3 + [False])

        # an export over both formats verifies offline
        rc, out, err = self.cli.run("audit", "export", "--from", "2026-01-01T00:00:00Z",
                                    "--out", tmp / "bundle", who="aud")
        self.assertEqual(rc, 0, out + err)
        rc, out, err = self.cli.run("audit", "verify", tmp / "bundle")
        self.assertEqual(rc, 0, out + err)

        # --rebuild: the replica and read models again from command-svc's log
        self.query.stop()
        self.start_query("--rebuild")
        http = self.query.http()
        self.assertTrue(poll(lambda: self.applied(http) == 16, 20),
                        self.query.stderr_tail())


if __name__ == "__main__":
    unittest.main()
