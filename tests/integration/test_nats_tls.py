#!/usr/bin/env python3
"""
TLS to NATS (CONTRACT §8): a nats-server that only speaks TLS, with a CA and
certificates made by openssl; command-svc publishes and query-svc consumes
over tls:// with --nats-ca. Without the CA the service cannot connect, and
its writes pile up in the publish backlog.
"""
import os
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COMMAND_SVC = os.environ.get("FLEDGER_COMMAND_SVC", str(ROOT / "build/command-svc/command-svc"))
QUERY_SVC = os.environ.get("FLEDGER_QUERY_SVC", str(ROOT / "build/query-svc/query-svc"))
VIEW = (ROOT / "schemas/views/user_activity.json").read_text()


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """A CA and a server certificate for 127.0.0.1, signed by it."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=fledger-test-ca", cwd=d)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (Path(d) / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    # A client certificate for services that must present one (verify: true).
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=fledger-service", cwd=d)
    (Path(d) / "client.cnf").write_text("extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "client.pem", "-days", "2", "-extfile", "client.cnf",
            cwd=d)


def nats_failures(svc):
    """The publisher's logged NATS connection failures."""
    return [r for r in svc.stderr_records()
            if r.get("component") == "publisher" and r.get("level") in ("warn", "error")
            and "NATS" in r.get("msg", "")]


class NatsTlsBase(unittest.TestCase):
    verify = False  # nats-server requires client certificates

    def setUp(self):
        self.tmp = harness.TempDir()
        self.dir = self.tmp.path
        make_pki(self.dir)
        self.nats_port = harness.free_port()
        conf = self.dir / "nats.conf"
        conf.write_text(
            f'listen: 127.0.0.1:{self.nats_port}\n'
            f'jetstream {{ store_dir: "{self.dir / "js"}" }}\n'
            f'tls {{ cert_file: "{self.dir / "server.pem"}", key_file: "{self.dir / "server.key"}",'
            f' ca_file: "{self.dir / "ca.pem"}"'
            f'{", verify: true" if self.verify else ""} }}\n')
        log = open(self.dir / "nats.log", "ab")
        self.nats = subprocess.Popen(["nats-server", "-c", str(conf)], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.assertTrue(harness.wait_port(self.nats_port, 20, proc=self.nats))
        self.tokens = harness.make_tokens(self.dir / "tokens.json")
        (self.dir / "repl.token").write_text(self.tokens["repl"])
        harness.make_signing_key(self.dir / "command.pem")
        harness.make_signing_key(self.dir / "query.pem")
        self.services = []

    def tearDown(self):
        for s in self.services:
            if s.running():
                s.kill()
        self.nats.kill()
        self.nats.wait()
        self.tmp.close()

    def command_svc(self, name, nats_args):
        svc = harness.Service(COMMAND_SVC, self.dir, name, [
            "--data-dir", str(self.dir / f"{name}-data"), "--nats", f"tls://127.0.0.1:{self.nats_port}",
            *nats_args, "--signing-key", str(self.dir / "command.pem"),
            "--tokens", str(self.dir / "tokens.json")])
        self.services.append(svc)
        return svc.start()



class NatsTlsTest(NatsTlsBase):
    def test_publish_and_consume_over_tls(self):
        command = self.command_svc("command", ["--nats-ca", str(self.dir / "ca.pem")])
        query = harness.Service(QUERY_SVC, self.dir, "query", [
            "--data-dir", str(self.dir / "query-data"), "--nats", f"tls://127.0.0.1:{self.nats_port}",
            "--nats-ca", str(self.dir / "ca.pem"), "--signing-key", str(self.dir / "query.pem"),
            "--tokens", str(self.dir / "tokens.json"), "--command-url", command.url,
            "--command-token-file", str(self.dir / "repl.token"), "--consumer", "tls-1"])
        self.services.append(query)
        query.start()
        admin = command.http(self.tokens["admin"])
        self.assertEqual(admin.request("POST", "/v1/views", VIEW.encode(),
                                       {"Content-Type": "application/json"}).status, 201)
        producer = command.http(self.tokens["clicks-pipeline"])
        status, _, answer = producer.json("POST", "/v1/events", {"events": [
            {"view": "user_activity", "entity_id": f"u{i}", "features": {"dwell_ms": i + 0.5}}
            for i in range(20)]})
        self.assertEqual(status, 201, answer)
        last = answer["results"][-1]["seq"]
        # The outbox reaches JetStream over TLS: the backlog drains.
        def drained():
            ready = command.http().get_json("/readyz")[1]
            return ready["publish_backlog"] == 0 and ready["nats_connected"]
        self.assertTrue(harness.poll(drained, timeout=20), command.http().get_json("/readyz"))
        # query-svc consumes over TLS too (it says so in /readyz) and serves the value.
        ok = harness.poll(lambda: query.http().get_json("/readyz")[1].get("nats_connected"),
                          timeout=20)
        self.assertTrue(ok, query.http().get_json("/readyz")[1])
        reader = query.http(self.tokens["ranker"])
        r = reader.get(f"/v1/features/user_activity/u7?features=dwell_ms&min_seq={last}&wait_ms=10000")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["features"]["dwell_ms"]["value"], 7.5)

    def test_without_the_ca_nothing_is_published(self):
        command = self.command_svc("command-noca", [])
        admin = command.http(self.tokens["admin"])
        self.assertEqual(admin.request("POST", "/v1/views", VIEW.encode(),
                                       {"Content-Type": "application/json"}).status, 201)
        # Wait until the publisher has tried and failed (it logs the failure).
        self.assertTrue(harness.poll(lambda: nats_failures(command), timeout=20),
                        command.stderr_tail(20))
        ready = command.http().get_json("/readyz")[1]
        self.assertFalse(ready["nats_connected"], ready)
        self.assertEqual(ready["publish_backlog"], 1, ready)


class NatsClientCertTest(NatsTlsBase):
    """A nats-server with verify: true accepts only clients with a certificate
    its CA signed: --nats-cert/--nats-key."""

    verify = True

    def test_client_certificate_is_required_and_used(self):
        cert = ["--nats-ca", str(self.dir / "ca.pem"), "--nats-cert", str(self.dir / "client.pem"),
                "--nats-key", str(self.dir / "client.key")]
        bare = self.command_svc("command-bare", ["--nats-ca", str(self.dir / "ca.pem")])
        command = self.command_svc("command-cert", cert)
        query = harness.Service(QUERY_SVC, self.dir, "query", [
            "--data-dir", str(self.dir / "query-data"), "--nats", f"tls://127.0.0.1:{self.nats_port}",
            *cert, "--signing-key", str(self.dir / "query.pem"),
            "--tokens", str(self.dir / "tokens.json"), "--command-url", command.url,
            "--command-token-file", str(self.dir / "repl.token"), "--consumer", "tls-cert"])
        self.services.append(query)
        query.start()
        for svc in (bare, command):
            admin = svc.http(self.tokens["admin"])
            self.assertEqual(admin.request("POST", "/v1/views", VIEW.encode(),
                                           {"Content-Type": "application/json"}).status, 201)
        # With its certificate, command-svc publishes: the backlog drains.
        def drained():
            ready = command.http().get_json("/readyz")[1]
            return ready["publish_backlog"] == 0 and ready["nats_connected"]
        self.assertTrue(harness.poll(drained, timeout=20), command.http().get_json("/readyz"))
        self.assertTrue(harness.poll(lambda: query.http().get_json("/readyz")[1].get(
            "nats_connected"), timeout=20), query.http().get_json("/readyz")[1])
        # Without one, the server refuses it: the failure is logged, nothing is published.
        self.assertTrue(harness.poll(lambda: nats_failures(bare), timeout=20),
                        bare.stderr_tail(20))
        ready = bare.http().get_json("/readyz")[1]
        self.assertFalse(ready["nats_connected"], ready)
        self.assertEqual(ready["publish_backlog"], 1, ready)


if __name__ == "__main__":
    unittest.main()
