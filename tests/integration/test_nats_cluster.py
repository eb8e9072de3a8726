#!/usr/bin/env python3
"""
fledger on a 3-node NATS JetStream cluster (CONTRACT §5, §8), all on
loopback, and the NATS settings an operator gives:

- command-svc and two query-svcs get the whole server list in --nats; an R3
  stream; four writers with idempotency keys keep writing while we kill the
  node command-svc uses, kill the stream leader, kill the whole cluster and
  restart it, and kill -9 a query-svc. After each fault every acknowledged
  write is in the log exactly once, both query-svcs reach the same digest,
  and (R3) the publish backlog drains while the killed node is still down.
- Stream settings by flag (--nats-replicas, --nats-max-age,
  --nats-duplicate-window), applied at creation and warned about when an
  existing stream differs.
- NATS authentication: user + password file, token file, nkey seed file,
  each against a nats-server that requires it, and a .creds file against
  one in operator mode (JWTs made here with openssl); a wrong secret keeps the
  service from publishing, and bad settings (a broken URL in the list, an
  unreadable or malformed credentials file, two kinds at once) stop the
  start with a message naming them.

The scenario itself is `run_faults`, also used by bench/run-nats-bench.sh to
print the stall and catch-up times with R1 and with R3.
"""
import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COMMAND_SVC = os.environ.get("FLEDGER_COMMAND_SVC", str(ROOT / "build/command-svc/command-svc"))
QUERY_SVC = os.environ.get("FLEDGER_QUERY_SVC", str(ROOT / "build/query-svc/query-svc"))
VIEW = json.loads((ROOT / "schemas/views/user_activity.json").read_text())


# ---------------------------------------------------------------------------
# a 3-node cluster
# ---------------------------------------------------------------------------

class ClusterNode:
    def __init__(self, workdir, name, port, cluster_port, routes):
        self.workdir, self.name = Path(workdir), name
        self.port, self.cluster_port = port, cluster_port
        self.conf = self.workdir / f"{name}.conf"
        self.log_path = self.workdir / f"{name}.log"
        store = self.workdir / f"{name}-store"
        store.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            f'server_name: {name}\nlisten: 127.0.0.1:{port}\n'
            f'jetstream {{ store_dir: "{store}" }}\n'
            f'cluster {{ name: fledger-test\n listen: 127.0.0.1:{cluster_port}\n'
            f' routes: [{", ".join(routes)}] }}\n')
        self.proc = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["nats-server", "-c", str(self.conf)], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        if not harness.wait_port(self.port, 20, proc=self.proc):
            raise RuntimeError(f"{self.name} did not start:\n{harness.tail(self.log_path)}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.running():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()


class Cluster:
    def __init__(self, workdir, n=3):
        ports = [harness.free_port() for _ in range(n)]
        cports = [harness.free_port() for _ in range(n)]
        routes = [f"nats-route://127.0.0.1:{p}" for p in cports]
        self.nodes = [ClusterNode(workdir, f"n{i + 1}", ports[i], cports[i], routes)
                      for i in range(n)]

    @property
    def urls(self):
        return ",".join(n.url for n in self.nodes)

    def start(self):
        for n in self.nodes:
            n.start()
        # JetStream is usable once the meta group has a leader.
        if not harness.poll(self.js_ready, timeout=30, interval=0.2):
            raise RuntimeError("the JetStream meta group elected no leader")

    def js_ready(self):
        for n in self.nodes:
            if not n.running():
                continue
            try:
                with harness.NatsClient("127.0.0.1", n.port, timeout=2) as c:
                    info = c.js_api("INFO")
                    if "error" not in info:
                        return True
            except (OSError, harness.NatsError, ValueError):
                pass
        return False

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def stream_leader(self):
        for n in self.nodes:
            if not n.running():
                continue
            try:
                with harness.NatsClient("127.0.0.1", n.port, timeout=2) as c:
                    info = c.stream_info() or {}
                    leader = info.get("cluster", {}).get("leader")
                    if leader:
                        return leader, info
            except (OSError, harness.NatsError, ValueError):
                pass
        return None, None

    def step_down(self, node):
        """Asks the stream leader on node to step down; waits for another."""
        with harness.NatsClient("127.0.0.1", node.port, timeout=5) as c:
            c.js_api("STREAM.LEADER.STEPDOWN.FLEDGER_EVENTS")
        harness.poll(lambda: (self.stream_leader()[0] or node.name) != node.name, timeout=20,
                     interval=0.2)

    def kill_all(self):
        for n in self.nodes:
            n.kill()


# ---------------------------------------------------------------------------
# writers and the checks after each fault
# ---------------------------------------------------------------------------

class Writers:
    """
    Threads that each write one event at a time with a fresh idempotency key
    and retry that same key until it is acknowledged (a producer with a
    client timeout). Records every acknowledged (key, seq).
    """

    def __init__(self, env, n=4, rate_per_writer=40):
        self.env, self.n, self.interval = env, n, 1.0 / rate_per_writer
        self.acked = {}
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = []
        self.errors = 0

    def _run(self, w):
        http = self.env.http("clicks-pipeline", keep_alive=True, timeout=10)
        i = 0
        while not self.stop_flag.is_set():
            key = f"w{w}-{i}"
            body = {"view": "user_activity", "entity_id": f"u{w}-{i % 50}",
                    "idempotency_key": key, "features": {"dwell_ms": float(i)}}
            while not self.stop_flag.is_set():
                try:
                    status, _, answer = http.json("POST", "/v1/events", body)
                except OSError:
                    status, answer = None, None
                    http.close()
                if status in (200, 201):
                    with self.lock:
                        seq = answer["results"][0]["seq"]
                        prev = self.acked.setdefault(key, seq)
                        assert prev == seq, f"{key} acknowledged as {prev} and {seq}"
                    break
                self.errors += 1
                time.sleep(0.05)
            i += 1
            time.sleep(self.interval)
        http.close()

    def start(self):
        for w in range(self.n):
            t = threading.Thread(target=self._run, args=(w,), daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)


class BacklogMonitor:
    """Samples command-svc's /readyz every 50 ms: the longest time the
    published count stood still while a backlog waited, and the largest
    backlog."""

    def __init__(self, command):
        self.command = command
        self.stop_flag = threading.Event()
        self.longest_stall = 0.0
        self.max_backlog = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        http = self.command.http(timeout=2)
        last_published, since = None, None
        while not self.stop_flag.is_set():
            try:
                body = http.get_json("/readyz")[1]
                backlog, size = body["publish_backlog"], body["tree_size"]
            except (OSError, ValueError, KeyError, TypeError):
                time.sleep(0.05)
                continue
            published = size - backlog
            now = time.monotonic()
            self.max_backlog = max(self.max_backlog, backlog)
            if backlog == 0 or published != last_published:
                last_published, since = published, now
            elif since is not None:
                self.longest_stall = max(self.longest_stall, now - since)
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(5)


def wait_backlog_empty(env, timeout):
    def empty():
        try:
            return harness.readyz(env.command.http(timeout=2))["publish_backlog"] == 0
        except (OSError, ValueError, KeyError, TypeError):
            return False
    return harness.poll(empty, timeout=timeout, interval=0.05)


def check_log_once(env, writers):
    """Every acknowledged write is in the log once, at the seq it was given."""
    lines = harness.read_log(env.http("repl"))
    by_key = {}
    for line in lines:
        body = harness.decode_body(line)
        key = body.get("idempotency_key")
        if key:
            by_key.setdefault(key, []).append(line["seq"])
    problems = []
    with writers.lock:
        acked = dict(writers.acked)
    for key, seq in acked.items():
        if by_key.get(key) != [seq]:
            problems.append(f"{key}: acknowledged as {seq}, in the log at {by_key.get(key)}")
    dups = {k: v for k, v in by_key.items() if len(v) > 1}
    if dups:
        problems.append(f"keys stored more than once: {list(dups.items())[:5]}")
    return problems, len(lines)


def publisher_server(env):
    """The server command-svc's publisher is connected to now (from its logs)."""
    url = None
    for rec in env.command.stderr_records():
        if rec.get("component") == "publisher" and rec.get("msg") in (
                "NATS connected", "NATS reconnected"):
            url = rec.get("server")
    return url


def run_faults(env, cluster, replicas, report=None, single_node_drains=True):
    """
    The fault scenario. Returns [(fault, longest publish stall s, max
    backlog, catch-up s)] and asserts the promises after each fault.
    """
    results = []
    writers = Writers(env)
    writers.start()
    time.sleep(1.0)

    def settle(fault, monitor, t_recovered):
        # Both query-svcs apply everything written so far, with one digest.
        target = env.tree_size()
        for q in env.queries:
            env.wait_caught_up(q, target, timeout=60)
        catch_up = time.monotonic() - t_recovered
        digests = {q.name: env.digest(q) for q in env.queries}
        values = list(digests.values())
        if values[0]["applied_seq"] != values[1]["applied_seq"]:
            # Equal prefixes compare equal only when equally applied.
            for q in env.queries:
                env.wait_caught_up(q, max(v["applied_seq"] for v in values), timeout=60)
            digests = {q.name: env.digest(q) for q in env.queries}
            values = list(digests.values())
        results.append((fault, monitor.longest_stall, monitor.max_backlog, catch_up))
        return digests

    def node_url(n):
        return f"nats://127.0.0.1:{n.port}"

    # 1. the node the publisher uses
    with BacklogMonitor(env.command) as mon:
        url = harness.poll(lambda: publisher_server(env), timeout=30)
        victim = next(n for n in cluster.nodes if node_url(n) == url)
        leader, _ = cluster.stream_leader()
        if replicas > 1 and leader == victim.name:
            # Keep the two faults apart: move the stream leader elsewhere.
            cluster.step_down(victim)
        victim.kill()
        drained_while_down = None
        if single_node_drains:
            time.sleep(1.0)
            drained_while_down = wait_backlog_empty(env, 20)
        time.sleep(1.0)
        victim.start()
        t = time.monotonic()
        assert wait_backlog_empty(env, 60), "the publish backlog did not drain"
        settle(f"kill the publisher's node ({victim.name})", mon, t)
        if single_node_drains:
            assert drained_while_down, \
                "with R3 the backlog must drain while one node is down"
    # 2. the stream leader
    with BacklogMonitor(env.command) as mon:
        leader, _ = cluster.stream_leader()
        assert leader, "no stream leader"
        victim = cluster.node(leader)
        victim.kill()
        drained_while_down = None
        if single_node_drains:
            time.sleep(1.0)
            drained_while_down = wait_backlog_empty(env, 20)
        time.sleep(1.0)
        victim.start()
        t = time.monotonic()
        assert wait_backlog_empty(env, 60), "the publish backlog did not drain"
        settle(f"kill the stream leader ({victim.name})", mon, t)
        if single_node_drains:
            assert drained_while_down, \
                "with R3 the backlog must drain while the old leader is down"
    # 3. the whole cluster
    with BacklogMonitor(env.command) as mon:
        cluster.kill_all()
        time.sleep(2.0)
        cluster.start()
        t = time.monotonic()
        assert wait_backlog_empty(env, 90), "the publish backlog did not drain"
        settle("kill the whole cluster, restart it", mon, t)
    # 4. a query-svc
    with BacklogMonitor(env.command) as mon:
        q = env.queries[1]
        q.kill()
        time.sleep(1.0)
        q.start()
        t = time.monotonic()
        settle(f"kill -9 a query-svc ({q.name})", mon, t)

    writers.stop()
    assert wait_backlog_empty(env, 60)
    target = env.tree_size()
    for q in env.queries:
        env.wait_caught_up(q, target, timeout=60)
    digests = [env.digest(q) for q in env.queries]
    assert digests[0] == digests[1], f"the query-svcs differ: {digests}"
    problems, n_lines = check_log_once(env, writers)
    assert not problems, problems[:10]
    assert len(writers.acked) > 100, f"only {len(writers.acked)} writes acknowledged"
    if report is not None:
        report["acked"] = len(writers.acked)
        report["log_lines"] = n_lines
    return results


def make_env(replicas):
    env = harness.QueryEnv(COMMAND_SVC, QUERY_SVC, n_query=0, start=False)
    try:
        cluster = Cluster(env.tmp.path)
        cluster.start()
        env.cluster = cluster
        env.command.args += ["--nats", cluster.urls, "--nats-replicas", str(replicas)]
        env.command.start()
        status, _, body = env.http("admin").json("POST", "/v1/views", VIEW)
        assert status == 201, body
        for i in range(2):
            env.add_query(nats_url=cluster.urls)
    except BaseException:
        env.close(check=False)
        if getattr(env, "cluster", None):
            env.cluster.kill_all()
        raise
    return env, cluster


class ClusterTest(unittest.TestCase):
    def test_faults_on_an_r3_cluster(self):
        env, cluster = make_env(3)
        try:
            # The stream was created with three replicas.
            leader, info = harness.poll(lambda: (lambda r: r if r[0] else None)(
                cluster.stream_leader()), timeout=30)
            self.assertEqual(info["config"]["num_replicas"], 3)
            self.assertEqual(len(info["cluster"].get("replicas", [])), 2)
            results = run_faults(env, cluster, 3)
            for fault, stall, backlog, catch_up in results:
                print(f"  {fault}: longest publish stall {stall:.2f} s, max backlog "
                      f"{backlog}, query-svc catch-up {catch_up:.2f} s", file=sys.stderr)
            # Logged: connects and disconnects of both services.
            msgs = {(r.get("component"), r.get("msg")) for r in env.command.stderr_records()}
            self.assertIn(("publisher", "NATS disconnected"), msgs)
            self.assertIn(("publisher", "NATS reconnected"), msgs)
            qmsgs = {(r.get("component"), r.get("msg"))
                     for q in env.queries for r in q.stderr_records()}
            self.assertIn(("consumer", "NATS disconnected"), qmsgs)
            # Consuming again at the end, and saying so.
            for q in env.queries:
                body = harness.poll(lambda q=q: (lambda b: b if b.get("source") == "nats"
                                                 else None)(env.query_state(q)[1]), timeout=20)
                self.assertTrue(body and body["nats_connected"], f"{q.name} not consuming")
                m = harness.parse_metrics(q.http().get("/metrics").body.decode())
                self.assertEqual(harness.metric_value(m, "fledger_nats_connected"), 1.0)
            m = harness.parse_metrics(env.command.http().get("/metrics").body.decode())
            self.assertEqual(harness.metric_value(m, "fledger_nats_connected"), 1.0)
        finally:
            if os.environ.get("FLEDGER_KEEP_LOGS"):
                import shutil
                shutil.copy(env.command.stderr_path, os.environ["FLEDGER_KEEP_LOGS"])
            env.close(check=False)
            cluster.kill_all()
        reports = [l for s in [env.command] + env.queries for l in s.sanitizer_reports()]
        self.assertEqual(reports, [])


# ---------------------------------------------------------------------------
# stream settings
# ---------------------------------------------------------------------------

class StreamSettingsTest(unittest.TestCase):
    def test_settings_applied_then_checked(self):
        env = harness.CommandEnv(COMMAND_SVC, extra_args=[
            "--nats-max-age", "2d", "--nats-duplicate-window", "5m"])
        try:
            with env.nats.client() as c:
                info = harness.poll(lambda: (lambda i: i if "config" in i else None)(
                    c.stream_info()), timeout=30)
            self.assertEqual(info["config"]["max_age"], 2 * 86400 * 10**9)
            self.assertEqual(info["config"]["duplicate_window"], 5 * 60 * 10**9)
            self.assertEqual(info["config"]["num_replicas"], 1)
            # Restarted with other settings: the stream is left as it is and
            # each difference is a warning naming the setting.
            env.svc.stop()
            env.svc.args += ["--nats-max-age", "3d", "--nats-duplicate-window", "1m"]
            env.svc.start()

            def warned():
                recs = [r for r in env.svc.stderr_records()
                        if r.get("msg", "").startswith("the NATS stream differs")]
                return {r.get("setting") for r in recs} >= {"max_age", "duplicate_window"}
            self.assertTrue(harness.poll(warned, timeout=30), env.svc.stderr_tail())
            with env.nats.client() as c:
                self.assertEqual(c.stream_info()["config"]["max_age"], 2 * 86400 * 10**9)
        finally:
            env.close()

    def test_default_max_age_is_the_longest_retention(self):
        env = harness.CommandEnv(COMMAND_SVC)
        try:
            with env.nats.client() as c:
                info = harness.poll(lambda: (lambda i: i if "config" in i else None)(
                    c.stream_info()), timeout=30)
            self.assertEqual(info["config"]["max_age"], 30 * 86400 * 10**9)
            view = dict(VIEW, name="long_kept", retention="90d")
            status, _, body = env.http("admin").json("POST", "/v1/views", view)
            self.assertEqual(status, 201, body)
            with env.nats.client() as c:
                raised = harness.poll(lambda: c.stream_info()["config"]["max_age"]
                                      == 90 * 86400 * 10**9, timeout=30)
            self.assertTrue(raised, env.svc.stderr_tail())
        finally:
            env.close()


# ---------------------------------------------------------------------------
# authentication and bad settings
# ---------------------------------------------------------------------------

B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def b32(data):
    bits, acc, out = 0, 0, []
    for byte in data:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append(B32[(acc >> bits) & 31])
    if bits:
        out.append(B32[(acc << (5 - bits)) & 31])
    return "".join(out)


def crc16(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def make_user_nkey(workdir):
    """(seed "SU…", public key "U…") of a fresh Ed25519 key made with openssl."""
    pem = Path(workdir) / "nkey.pem"
    harness.make_signing_key(pem)
    der = subprocess.run(["openssl", "pkey", "-in", str(pem), "-outform", "DER"],
                         check=True, capture_output=True).stdout
    raw_seed = der[-32:]
    pub = harness.raw_public_key(harness.public_pem_of(pem))
    user, seed_prefix = 20 << 3, 18 << 3
    seed_bytes = bytes([seed_prefix | (user >> 5), (user & 31) << 3]) + raw_seed
    seed_bytes += struct.pack("<H", crc16(seed_bytes))
    pub_bytes = bytes([user]) + pub
    pub_bytes += struct.pack("<H", crc16(pub_bytes))
    return b32(seed_bytes), b32(pub_bytes)


class AuthTest(unittest.TestCase):
    def setUp(self):
        self.tmp = harness.TempDir()
        self.dir = self.tmp.path
        self.tokens = harness.make_tokens(self.dir / "tokens.json")
        (self.dir / "repl.token").write_text(self.tokens["repl"])
        harness.make_signing_key(self.dir / "command.pem")
        harness.make_signing_key(self.dir / "query.pem")
        self.services, self.nats = [], None

    def tearDown(self):
        for s in self.services:
            if s.running():
                s.kill()
        if self.nats:
            self.nats.kill()
            self.nats.wait()
        reports = [l for s in self.services for l in s.sanitizer_reports()]
        self.tmp.close()
        self.assertEqual(reports, [])

    def start_nats(self, authorization, extra=""):
        self.nats_port = harness.free_port()
        conf = self.dir / "nats.conf"
        conf.write_text(f'listen: 127.0.0.1:{self.nats_port}\n'
                        f'jetstream {{ store_dir: "{self.dir / "js"}" }}\n' +
                        (f'authorization {{ {authorization} }}\n' if authorization else '') +
                        extra)
        log = open(self.dir / "nats.log", "ab")
        self.nats = subprocess.Popen(["nats-server", "-c", str(conf)], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.assertTrue(harness.wait_port(self.nats_port, 20, proc=self.nats))

    def url(self):
        return f"nats://127.0.0.1:{self.nats_port}"

    def command_svc(self, name, nats_args, start=True):
        svc = harness.Service(COMMAND_SVC, self.dir, name, [
            "--data-dir", str(self.dir / f"{name}-data"), "--nats", self.url(),
            *nats_args, "--signing-key", str(self.dir / "command.pem"),
            "--tokens", str(self.dir / "tokens.json")])
        self.services.append(svc)
        return svc.start() if start else svc

    def query_svc(self, name, command, nats_args):
        svc = harness.Service(QUERY_SVC, self.dir, name, [
            "--data-dir", str(self.dir / f"{name}-data"), "--nats", self.url(), *nats_args,
            "--signing-key", str(self.dir / "query.pem"), "--tokens", str(self.dir / "tokens.json"),
            "--command-url", command.url, "--command-token-file", str(self.dir / "repl.token"),
            "--consumer", name])
        self.services.append(svc)
        return svc.start()

    def publishes_and_consumes(self, good, bad, repair):
        """With `good` flags both services use NATS; with `bad` nothing is
        published, until `repair()` puts the right secret in the bad flags'
        file: then the publisher, whose connection the library gave up, makes
        a new one and publishes."""
        command = self.command_svc("command", good)
        admin = command.http(self.tokens["admin"])
        status, _, body = admin.json("POST", "/v1/views", VIEW)
        self.assertEqual(status, 201, body)
        self.assertTrue(harness.poll(
            lambda: harness.readyz(command.http())["publish_backlog"] == 0
            and harness.readyz(command.http())["nats_connected"], timeout=30),
            command.stderr_tail())
        query = self.query_svc("query", command, good)
        self.assertTrue(harness.poll(
            lambda: (query.http().get_json("/readyz")[1] or {}).get("source") == "nats",
            timeout=20), query.stderr_tail())
        wrong = self.command_svc("command-wrong", bad)
        w = wrong.http(self.tokens["admin"])
        status, _, body = w.json("POST", "/v1/views", VIEW)
        self.assertEqual(status, 201, body)
        time.sleep(1.5)  # several connection attempts (every 250 ms)
        ready = harness.readyz(wrong.http())
        self.assertFalse(ready["nats_connected"])
        self.assertEqual(ready["publish_backlog"], 1)
        self.assertTrue(any(r.get("component") == "publisher" and "NATS" in r.get("msg", "")
                            for r in wrong.stderr_records()
                            if r.get("level") in ("warn", "error")), wrong.stderr_tail())
        wrong_query = self.query_svc("query-wrong", command, bad)
        time.sleep(1.5)
        self.assertEqual((wrong_query.http().get_json("/readyz")[1] or {}).get("source"),
                         "polling", wrong_query.stderr_tail())
        repair()
        self.assertTrue(harness.poll(
            lambda: harness.readyz(wrong.http())["publish_backlog"] == 0
            and harness.readyz(wrong.http())["nats_connected"], timeout=20),
            wrong.stderr_tail())
        self.assertTrue(harness.poll(
            lambda: (wrong_query.http().get_json("/readyz")[1] or {}).get("source") == "nats",
            timeout=20), wrong_query.stderr_tail())

    def test_user_and_password_file(self):
        self.start_nats('user: fledger, password: "s3cret-pw"')
        (self.dir / "pw").write_text("s3cret-pw\n")
        (self.dir / "badpw").write_text("wrong\n")
        self.publishes_and_consumes(
            ["--nats-user", "fledger", "--nats-password-file", str(self.dir / "pw")],
            ["--nats-user", "fledger", "--nats-password-file", str(self.dir / "badpw")],
            lambda: (self.dir / "badpw").write_text("s3cret-pw\n"))

    def test_token_file(self):
        self.start_nats('token: "tok-123456"')
        (self.dir / "tok").write_text("tok-123456\n")
        (self.dir / "badtok").write_text("tok-000000\n")
        self.publishes_and_consumes(["--nats-token-file", str(self.dir / "tok")],
                                    ["--nats-token-file", str(self.dir / "badtok")],
                                    lambda: (self.dir / "badtok").write_text("tok-123456\n"))

    def test_nkey_seed_file(self):
        seed, pub = make_user_nkey(self.dir)
        other_seed, _ = make_user_nkey(self.dir)
        self.start_nats(f'users: [ {{ nkey: {pub} }} ]')
        (self.dir / "user.nk").write_text(seed + "\n")
        (self.dir / "other.nk").write_text(other_seed + "\n")
        self.publishes_and_consumes(["--nats-nkey", str(self.dir / "user.nk")],
                                    ["--nats-nkey", str(self.dir / "other.nk")],
                                    lambda: (self.dir / "other.nk").write_text(seed + "\n"))

    def test_bad_settings_stop_the_start(self):
        self.nats_port = harness.free_port()
        (self.dir / "pw").write_text("x\n")
        (self.dir / "empty").write_text("")
        (self.dir / "notcreds").write_text("hello\n")
        (self.dir / "notseed").write_text("SUNOTASEED\n")
        cases = [
            (["--nats", f"{self.url()},http://127.0.0.1:1"], "http://127.0.0.1:1"),
            (["--nats", f"{self.url()},nats://127.0.0.1:99999"], "nats://127.0.0.1:99999"),
            (["--nats", f"{self.url()},,{self.url()}"], "empty URL"),
            (["--nats", "nats://:4222"], "no host"),
            (["--nats-creds", str(self.dir / "missing.creds")], "missing.creds"),
            (["--nats-creds", str(self.dir / "notcreds")], "notcreds"),
            (["--nats-nkey", str(self.dir / "notseed")], "notseed"),
            (["--nats-token-file", str(self.dir / "empty")], "empty"),
            (["--nats-user", "u"], "--nats-password-file"),
            (["--nats-user", "u", "--nats-password-file", str(self.dir / "pw"),
              "--nats-token-file", str(self.dir / "pw")], "one kind"),
        ]
        for binary, extra in ((COMMAND_SVC, []), (QUERY_SVC, [
                "--signing-key", str(self.dir / "query.pem"), "--command-url",
                "http://127.0.0.1:1", "--command-token-file", str(self.dir / "repl.token")])):
            for args, named in cases:
                with self.subTest(binary=Path(binary).name, args=args):
                    proc = subprocess.run(
                        [binary, "--listen", f"127.0.0.1:{harness.free_port()}",
                         "--data-dir", str(self.dir / "never"), "--nats", self.url(),
                         "--signing-key", str(self.dir / "command.pem"),
                         "--tokens", str(self.dir / "tokens.json")] + extra + args,
                        capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
                    self.assertNotEqual(proc.returncode, 0)
                    err = proc.stderr.decode()
                    self.assertIn("bad NATS settings", err)
                    self.assertIn(named, err)
                    self.assertFalse((self.dir / "never").exists(), "opened before checking")


# ---------------------------------------------------------------------------
# operator mode: JWTs and a .creds file, made here with openssl
# ---------------------------------------------------------------------------

NKEY_PREFIX = {"S": 18 << 3, "O": 14 << 3, "A": 0, "U": 20 << 3}


def make_nkey(workdir, kind, name):
    """An nkey of kind O (operator), A (account) or U (user): its PEM, seed and public key."""
    pem = Path(workdir) / f"{name}.pem"
    harness.make_signing_key(pem)
    der = subprocess.run(["openssl", "pkey", "-in", str(pem), "-outform", "DER"],
                         check=True, capture_output=True).stdout
    pub = harness.raw_public_key(harness.public_pem_of(pem))
    t = NKEY_PREFIX[kind]
    seed = bytes([NKEY_PREFIX["S"] | (t >> 5), (t & 31) << 3]) + der[-32:]
    seed += struct.pack("<H", crc16(seed))
    public = bytes([t]) + pub
    public += struct.pack("<H", crc16(public))
    return {"pem": pem, "seed": b32(seed), "pub": b32(public)}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(issuer, subject, name, nats, workdir):
    """A NATS JWT (alg ed25519-nkey) about subject, signed by issuer's key."""
    claims = {"iat": int(time.time()), "iss": issuer["pub"], "name": name, "sub": subject,
              "nats": nats}
    claims["jti"] = b32(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest())
    signed = (b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "." +
              b64url(json.dumps(claims).encode()))
    msg = Path(workdir) / "jwt-msg"
    msg.write_bytes(signed.encode())
    sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", str(issuer["pem"]),
                          "-rawin", "-in", str(msg)], check=True, capture_output=True).stdout
    return f"{signed}.{b64url(sig)}"


ACCOUNT_LIMITS = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                  "wildcards": True, "conn": -1, "leaf": -1}


def operator_mode(workdir):
    """(nats-server configuration text, a good .creds text, a .creds text of an unknown account)."""
    op = make_nkey(workdir, "O", "operator")
    sys_account = make_nkey(workdir, "A", "sys")
    account = make_nkey(workdir, "A", "account")
    stranger = make_nkey(workdir, "A", "stranger")
    user = make_nkey(workdir, "U", "user")
    op_jwt = make_jwt(op, op["pub"], "O", {"type": "operator", "version": 2}, workdir)
    sys_jwt = make_jwt(op, sys_account["pub"], "SYS", {
        "limits": ACCOUNT_LIMITS, "type": "account", "version": 2}, workdir)
    js_limits = dict(ACCOUNT_LIMITS, mem_storage=-1, disk_storage=-1, streams=-1, consumer=-1)
    acc_jwt = make_jwt(op, account["pub"], "A", {
        "limits": js_limits, "type": "account", "version": 2}, workdir)
    user_claims = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user",
                   "version": 2}

    def creds(issuer):
        jwt = make_jwt(issuer, user["pub"], "U", user_claims, workdir)
        return (f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
                f"-----BEGIN USER NKEY SEED-----\n{user['seed']}\n------END USER NKEY SEED------\n")

    conf = (f'operator: "{op_jwt}"\nsystem_account: {sys_account["pub"]}\nresolver: MEMORY\n'
            f'resolver_preload: {{ {account["pub"]}: "{acc_jwt}", '
            f'{sys_account["pub"]}: "{sys_jwt}" }}\n')
    return conf, creds(account), creds(stranger)


class CredsTest(AuthTest):
    def test_creds_file(self):
        conf, good, bad = operator_mode(self.dir)
        self.start_nats(None, extra=conf)
        (self.dir / "user.creds").write_text(good)
        (self.dir / "stranger.creds").write_text(bad)
        self.publishes_and_consumes(["--nats-creds", str(self.dir / "user.creds")],
                                    ["--nats-creds", str(self.dir / "stranger.creds")],
                                    lambda: (self.dir / "stranger.creds").write_text(good))

    # the cases of AuthTest run once, there
    test_user_and_password_file = test_token_file = test_nkey_seed_file = None
    test_bad_settings_stop_the_start = None


if __name__ == "__main__":
    unittest.main()
