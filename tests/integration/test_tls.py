#!/usr/bin/env python3
"""
TLS on the HTTP services (CONTRACT §8, §11: --tls-cert, --tls-key,
--tls-client-ca). Standard library only.

A test CA, a server certificate (localhost / 127.0.0.1), a client
certificate from that CA and another from an unrelated CA are made with
`openssl` in a temporary directory. command-svc is started with TLS and
then with mutual TLS, query-svc with mutual TLS; the checks use Python's
ssl module:

- HTTPS works when the client trusts the CA (and fails when it does not);
- plain HTTP to the TLS port gets no HTTP answer;
- with mutual TLS a client without a certificate, or with one from another
  CA, is refused (403 client_certificate_required or a failed handshake),
  and a client with the right certificate is served.

Binaries: $FLEDGER_COMMAND_SVC and $FLEDGER_QUERY_SVC (default
build/<svc>/<svc> under the repository root).

    python3 tests/integration/test_tls.py -v
"""

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Http, Nats, Service, TempDir, make_signing_key, make_tokens  # noqa: E402

COMMAND_SVC = Path(os.environ.get("FLEDGER_COMMAND_SVC")
                   or harness.REPO_ROOT / "build" / "command-svc" / "command-svc")
QUERY_SVC = Path(os.environ.get("FLEDGER_QUERY_SVC")
                 or harness.REPO_ROOT / "build" / "query-svc" / "query-svc")

VIEW = json.loads((harness.REPO_ROOT / "schemas" / "views" / "user_activity.json").read_text())
EVENT = json.loads((harness.REPO_ROOT / "schemas" / "examples" / "events" / "single.json")
                   .read_text())

# What a refused TLS client may see: a failed or reset handshake, or no answer.
REFUSED = (ssl.SSLError, ConnectionError, http.client.HTTPException, socket.timeout, OSError)


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def make_ca(directory, name):
    """A self-signed CA (EC P-256): returns (cert path, key path)."""
    key, cert = f"{name}.key", f"{name}.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return Path(directory) / cert, Path(directory) / key


def make_leaf(directory, name, ca, extensions):
    """A certificate for name signed by ca (cert, key): returns (cert path, key path)."""
    key, csr, cert, ext = f"{name}.key", f"{name}.csr", f"{name}.pem", f"{name}.ext"
    (Path(directory) / ext).write_text(extensions)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}", cwd=directory)
    openssl("x509", "-req", "-in", csr, "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-CAcreateserial", "-days", "2", "-out", cert, "-extfile", ext, cwd=directory)
    return Path(directory) / cert, Path(directory) / key


SERVER_EXT = ("basicConstraints=critical,CA:FALSE\n"
              "keyUsage=critical,digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=serverAuth\n"
              "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
CLIENT_EXT = ("basicConstraints=critical,CA:FALSE\n"
              "keyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=clientAuth\n")


class Pki:
    """Everything the tests need, made once in a temporary directory."""

    def __init__(self, directory):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca(directory, "fledger-test-ca")
        self.other_ca = make_ca(directory, "other-ca")
        self.server = make_leaf(directory, "server", self.ca, SERVER_EXT)
        self.client = make_leaf(directory, "client", self.ca, CLIENT_EXT)
        self.stranger = make_leaf(directory, "stranger", self.other_ca, CLIENT_EXT)

    def context(self, trust=None, cert=None):
        """A client SSLContext trusting trust (default our CA), presenting cert."""
        ctx = ssl.create_default_context(cafile=str(trust or self.ca[0]))
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        return ctx


class HttpsClient(Http):
    """harness.Http over TLS with a given SSLContext."""

    def __init__(self, port, context, token=None, host="127.0.0.1", timeout=10.0):
        super().__init__(port, token, host=host, keep_alive=False, timeout=timeout)
        self.context = context

    def with_token(self, token):
        return HttpsClient(self.port, self.context, token, self.host, self.timeout)

    def _connection(self):
        self.close()
        self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                 context=self.context)
        return self._conn


class TlsService(Service):
    """A Service whose readiness probe (and http()) speak HTTPS with a client context."""

    def __init__(self, *args, context, host="127.0.0.1", **kwargs):
        super().__init__(*args, **kwargs)
        self.context = context
        self.host = host

    @property
    def url(self):
        return f"https://{self.host}:{self.port}"

    def http(self, token=None, keep_alive=False, timeout=30.0):
        return HttpsClient(self.port, self.context, token, host=self.host, timeout=timeout)


def plain_http_fails(port):
    """True when plain HTTP to port gets no HTTP answer (or one that is not 2xx)."""
    try:
        r = Http(port, timeout=5.0).get("/healthz")
    except REFUSED:
        return True
    return r.status >= 400


class TlsTestBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir(prefix="fledger-tls-")
        cls.pki = Pki(cls.tmp / "pki")
        cls.tokens = make_tokens(cls.tmp / "tokens.json")
        cls.key = make_signing_key(cls.tmp / "signing.pem")
        cls.nats = Nats(cls.tmp.path).start()
        cls.services = []

    @classmethod
    def tearDownClass(cls):
        try:
            for svc in cls.services:
                if svc.running():
                    svc.stop(check=False)
            reports = [r for svc in cls.services for r in svc.sanitizer_reports()]
        finally:
            cls.nats.kill()
            cls.tmp.close()
        if reports:
            raise AssertionError(f"sanitizer reports: {reports[:5]}")

    @classmethod
    def start_command(cls, name, client_ca=False, context=None):
        args = ["--data-dir", str(cls.tmp / f"{name}-data"), "--nats", cls.nats.url,
                "--signing-key", str(cls.key), "--tokens", str(cls.tmp / "tokens.json"),
                "--tls-cert", str(cls.pki.server[0]), "--tls-key", str(cls.pki.server[1])]
        if client_ca:
            args += ["--tls-client-ca", str(cls.pki.ca[0])]
        svc = TlsService(COMMAND_SVC, cls.tmp.path, name, args,
                         context=context or cls.pki.context())
        cls.services.append(svc)
        return svc.start()


class TestTls(TlsTestBase):
    """command-svc with --tls-cert/--tls-key: HTTPS only, any client."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.svc = cls.start_command("command-tls")

    def test_https_with_the_ca(self):
        http = self.svc.http()
        r = http.get("/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"status": "ok"})
        admin = http.with_token(self.tokens["admin"])
        status, _, body = admin.json("POST", "/v1/views", VIEW)
        self.assertIn(status, (200, 201), body)
        status, _, body = http.with_token(self.tokens["clicks-pipeline"]).json(
            "POST", "/v1/events", EVENT)
        self.assertIn(status, (200, 201), body)
        self.assertEqual(len(body["results"]), 1)
        r = http.get("/v1/log/checkpoint", token=self.tokens["aud"])
        self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(r.json()["tree_size"], 2)

    def test_https_by_name_checks_the_certificate_name(self):
        r = HttpsClient(self.svc.port, self.pki.context(), host="localhost").get("/healthz")
        self.assertEqual(r.status, 200, r)

    def test_https_without_trusting_the_ca_fails(self):
        with self.assertRaises(ssl.SSLCertVerificationError):
            HttpsClient(self.svc.port, self.pki.context(trust=self.pki.other_ca[0])) \
                .get("/healthz")

    def test_plain_http_fails(self):
        self.assertTrue(plain_http_fails(self.svc.port))

    def test_client_certificate_not_needed(self):
        r = HttpsClient(self.svc.port, self.pki.context(cert=self.pki.stranger)).get("/healthz")
        self.assertEqual(r.status, 200, r)


class TestMutualTls(TlsTestBase):
    """command-svc with --tls-client-ca: only clients with a certificate from that CA."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.svc = cls.start_command("command-mtls", client_ca=True,
                                    context=cls.pki.context(cert=cls.pki.client))

    def assert_refused(self, context):
        try:
            r = HttpsClient(self.svc.port, context).get("/healthz")
        except REFUSED:
            return  # the handshake failed: refused
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.json()["error"]["code"], "client_certificate_required", r)

    def test_right_certificate_is_served(self):
        http = self.svc.http()
        self.assertEqual(http.get("/healthz").status, 200)
        status, _, body = http.with_token(self.tokens["admin"]).json("POST", "/v1/views", VIEW)
        self.assertIn(status, (200, 201), body)
        r = http.get("/v1/views/user_activity", token=self.tokens["ranker"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["name"], "user_activity")

    def test_client_without_certificate_is_refused(self):
        self.assert_refused(self.pki.context())

    def test_certificate_from_another_ca_is_refused(self):
        self.assert_refused(self.pki.context(cert=self.pki.stranger))

    def test_refusal_comes_before_authentication(self):
        """A valid token does not make up for a missing certificate."""
        try:
            r = HttpsClient(self.svc.port, self.pki.context(),
                            token=self.tokens["admin"]).get("/v1/views")
        except REFUSED:
            return
        self.assertEqual(r.status, 403, r)

    def test_plain_http_fails(self):
        self.assertTrue(plain_http_fails(self.svc.port))

    def test_refused_clients_leave_the_server_serving(self):
        for _ in range(3):
            self.assert_refused(self.pki.context(cert=self.pki.stranger))
        self.assertEqual(self.svc.http().get("/healthz").status, 200)


@unittest.skipUnless(QUERY_SVC.exists(), f"no query-svc binary at {QUERY_SVC}")
class TestClientsOverHttps(TlsTestBase):
    """query-svc (--command-url https://… --command-ca) and the fledger CLI
    (--ca-file) reach a command-svc that serves HTTPS only."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.command = cls.start_command("command-https-peers")
        (cls.tmp / "repl.token").write_text(cls.tokens["repl"])
        cls.query = Service(QUERY_SVC, cls.tmp.path, "query-over-https", [
            "--data-dir", str(cls.tmp / "query-https-data"), "--nats", cls.nats.url,
            "--signing-key", str(make_signing_key(cls.tmp / "query.pem")),
            "--tokens", str(cls.tmp / "tokens.json"),
            "--command-url", cls.command.url, "--command-ca", str(cls.pki.ca[0]),
            "--command-token-file", str(cls.tmp / "repl.token"), "--consumer", "https-1"])
        cls.services.append(cls.query)
        cls.query.start()
        status = cls.command.http(cls.tokens["admin"]).json("POST", "/v1/views", VIEW)[0]
        if status != 201:
            raise AssertionError(f"registering the view over HTTPS: {status}")

    def test_query_svc_replicates_over_https(self):
        status, _, body = self.command.http(self.tokens["clicks-pipeline"]).json(
            "POST", "/v1/events", {"view": "user_activity", "entity_id": "tls-user",
                                   "features": {"dwell_ms": 42.5}})
        self.assertEqual(status, 201, body)
        seq = body["results"][0]["seq"]
        r = self.query.http(self.tokens["ranker"]).get(
            f"/v1/features/user_activity/tls-user?features=dwell_ms&min_seq={seq}&wait_ms=10000")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["features"]["dwell_ms"]["value"], 42.5)
        ready = self.query.http().get_json("/readyz")[1]
        self.assertTrue(ready["command_reachable"], ready)

    def test_cli_verifies_the_log_over_https(self):
        cli = os.environ.get("FLEDGER_CLI") or str(harness.REPO_ROOT / "build" / "cli" / "fledger")
        token = self.tmp / "aud.token"
        token.write_text(self.tokens["aud"])
        env = dict(os.environ, FLEDGER_COMMAND_URL=self.command.url)
        base = [cli, "--token-file", str(token), "log", "verify",
                "--state", str(self.tmp / "state.json")]
        ok = subprocess.run(base[:3] + ["--ca-file", str(self.pki.ca[0])] + base[3:],
                            env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        # Without the CA the server's certificate is not trusted.
        refused = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(refused.returncode, 0, refused.stdout)


class TestClientsOverMutualTls(TlsTestBase):
    """query-svc (--command-cert/--command-key) and the fledger CLI
    (--client-cert/--client-key) present a client certificate to a command-svc
    that requires one."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.command = cls.start_command("command-mtls-peers", client_ca=True,
                                        context=cls.pki.context(cert=cls.pki.client))
        (cls.tmp / "repl.token").write_text(cls.tokens["repl"])
        cls.query = cls.query_svc("query-with-cert", "--command-cert", str(cls.pki.client[0]),
                                  "--command-key", str(cls.pki.client[1]))
        cls.query.start()
        status = cls.command.http(cls.tokens["admin"]).json("POST", "/v1/views", VIEW)[0]
        if status != 201:
            raise AssertionError(f"registering the view over mutual TLS: {status}")

    @classmethod
    def query_svc(cls, name, *extra):
        svc = Service(QUERY_SVC, cls.tmp.path, name, [
            "--data-dir", str(cls.tmp / f"{name}-data"), "--nats", cls.nats.url,
            "--signing-key", str(make_signing_key(cls.tmp / f"{name}.pem")),
            "--tokens", str(cls.tmp / "tokens.json"),
            "--command-url", cls.command.url, "--command-ca", str(cls.pki.ca[0]),
            "--command-token-file", str(cls.tmp / "repl.token"), "--consumer", name,
            *extra])
        cls.services.append(svc)
        return svc

    def cli(self, *args):
        cli = os.environ.get("FLEDGER_CLI") or str(harness.REPO_ROOT / "build" / "cli" / "fledger")
        token = self.tmp / "aud.token"
        token.write_text(self.tokens["aud"])
        env = dict(os.environ, FLEDGER_COMMAND_URL=self.command.url)
        return subprocess.run([cli, "--token-file", str(token), "--ca-file", str(self.pki.ca[0]),
                               *args, "log", "verify", "--state", str(self.tmp / "state.json")],
                              env=env, capture_output=True, text=True, timeout=60)

    def test_query_svc_replicates_with_its_certificate(self):
        status, _, body = self.command.http(self.tokens["clicks-pipeline"]).json(
            "POST", "/v1/events", {"view": "user_activity", "entity_id": "mtls-user",
                                   "features": {"dwell_ms": 7.25}})
        self.assertEqual(status, 201, body)
        seq = body["results"][0]["seq"]
        r = self.query.http(self.tokens["ranker"]).get(
            f"/v1/features/user_activity/mtls-user?features=dwell_ms&min_seq={seq}&wait_ms=10000")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["features"]["dwell_ms"]["value"], 7.25)
        self.assertTrue(self.query.http().get_json("/readyz")[1]["command_reachable"])

    def test_query_svc_without_a_certificate_is_refused(self):
        # There is something to replicate, and a query-svc with the
        # certificate gets it (see the test above).
        status, _, body = self.command.http(self.tokens["clicks-pipeline"]).json(
            "POST", "/v1/events", {"view": "user_activity", "entity_id": "bare-user",
                                   "features": {"dwell_ms": 1.5}})
        self.assertEqual(status, 201, body)
        bare = self.query_svc("query-without-cert")
        bare.start()
        try:
            # Wait until it has tried: its first outcome with command-svc is logged.
            def outcome():
                return [r for r in bare.stderr_records()
                        if r.get("msg") in ("command-svc reachable", "command-svc unreachable")]

            harness.poll(outcome, timeout=15)
            first = outcome()[0]
            self.assertEqual(first["msg"], "command-svc unreachable", bare.stderr_tail(20))
            self.assertIn("403", first.get("error", ""), first)  # refused by command-svc
            ready = bare.http().get_json("/readyz")[1]
            self.assertFalse(ready["command_reachable"], ready)
            self.assertEqual(ready["applied_seq"], 0, ready)
            self.assertEqual(ready["checkpoint_size"], 0, ready)
        finally:
            bare.stop(check=False)

    def test_cli_with_its_certificate(self):
        ok = self.cli("--client-cert", str(self.pki.client[0]), "--client-key", str(self.pki.client[1]))
        self.assertEqual(ok.returncode, 0, ok.stderr)
        refused = self.cli()
        self.assertNotEqual(refused.returncode, 0, refused.stdout)
        stranger = self.cli("--client-cert", str(self.pki.stranger[0]),
                            "--client-key", str(self.pki.stranger[1]))
        self.assertNotEqual(stranger.returncode, 0, stranger.stdout)

    def test_half_a_certificate_is_a_usage_error(self):
        half = self.cli("--client-cert", str(self.pki.client[0]))
        self.assertNotEqual(half.returncode, 0)
        self.assertIn("--client-key", half.stderr)
        mismatched = self.cli("--client-cert", str(self.pki.client[0]),
                              "--client-key", str(self.pki.stranger[1]))
        self.assertNotEqual(mismatched.returncode, 0)
        self.assertIn("not the private key of the certificate", mismatched.stderr)
        missing = self.cli("--client-cert", str(self.tmp / "no-such.pem"),
                           "--client-key", str(self.pki.client[1]))
        self.assertNotEqual(missing.returncode, 0)
        self.assertIn("no-such.pem: No such file", missing.stderr)
        swapped = self.cli("--client-cert", str(self.pki.client[1]),
                           "--client-key", str(self.pki.client[0]))
        self.assertIn("not a PEM certificate", swapped.stderr)
        # a key with a passphrase is refused, never prompted for
        locked = self.tmp / "locked.key"
        subprocess.run(["openssl", "pkey", "-in", str(self.pki.client[1]), "-aes256",
                        "-passout", "pass:secret", "-out", str(locked)], check=True)
        enc = self.cli("--client-cert", str(self.pki.client[0]), "--client-key", str(locked))
        self.assertNotEqual(enc.returncode, 0)
        self.assertIn("without a passphrase", enc.stderr)
        r = subprocess.run([QUERY_SVC, "--data-dir", str(self.tmp / "half-data"),
                            "--signing-key", str(self.key), "--tokens", str(self.tmp / "tokens.json"),
                            "--command-url", self.command.url,
                            "--command-cert", str(self.pki.client[0])],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--command-key", r.stderr)


class TestQueryMutualTls(TlsTestBase):
    """query-svc serves its own HTTPS the same way (here without a command-svc)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        token_file = cls.tmp / "replicator.token"
        token_file.write_text(cls.tokens["repl"])
        args = ["--data-dir", str(cls.tmp / "query-data"), "--nats", cls.nats.url,
                "--signing-key", str(make_signing_key(cls.tmp / "query.pem")),
                "--tokens", str(cls.tmp / "tokens.json"),
                "--command-url", f"http://127.0.0.1:{harness.free_port()}",
                "--command-token-file", str(token_file), "--consumer", "tls-1",
                "--tls-cert", str(cls.pki.server[0]), "--tls-key", str(cls.pki.server[1]),
                "--tls-client-ca", str(cls.pki.ca[0])]
        cls.svc = TlsService(QUERY_SVC, cls.tmp.path, "query-mtls", args,
                             context=cls.pki.context(cert=cls.pki.client))
        cls.services.append(cls.svc)
        cls.svc.start()

    def test_right_certificate_is_served(self):
        r = self.svc.http().get("/healthz")
        self.assertEqual(r.status, 200, r)
        r = self.svc.http().get("/v1/audit/keys")
        self.assertEqual(r.status, 200, r)

    def test_others_are_refused(self):
        for context in (self.pki.context(), self.pki.context(cert=self.pki.stranger)):
            try:
                r = HttpsClient(self.svc.port, context).get("/healthz")
            except REFUSED:
                continue
            self.assertEqual(r.status, 403, r)
        self.assertTrue(plain_http_fails(self.svc.port))


if __name__ == "__main__":
    harness.main()
