"""
Integration-test harness for the fledger services (CONTRACT §2-§5, §8-§11).

Standard library only. Everything a test needs to run the real binaries
against a real nats-server and to check their answers independently of the
C code:

- free loopback ports and a temporary directory per test;
- `Nats`: a JetStream nats-server whose store directory survives stop/start;
- `make_signing_key`, `make_tokens`: an Ed25519 key (openssl) and a tokens
  file with the standard test principals;
- `Service`: any fledger binary started with flags, waited for on /healthz,
  stopped with SIGTERM, killed with SIGKILL, restarted;
- `Http`: a small HTTP client on http.client (optionally keep-alive);
- `NatsClient`: a minimal raw-protocol NATS client (CONNECT, PING/PONG, SUB,
  request/reply, MSG/HMSG) with JetStream helpers to read the stream
  message by message;
- log checks: leaf hashes, Ed25519 signatures through `openssl pkeyutl`,
  an RFC 9162 Merkle tree / inclusion / consistency proof implementation,
  checkpoint signatures.
"""

import base64
import concurrent.futures
import hashlib
import http.client
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

STREAM = "FLEDGER_EVENTS"
SUBJECT_PREFIX = "fledger.events."

# The principals every test can use (CONTRACT §8, §11).
PRINCIPALS = {
    "admin": ["admin"],
    "clicks-pipeline": ["producer"],
    "other-producer": ["producer"],
    "ranker": ["reader", "inference"],
    "aud": ["auditor"],
    "repl": ["replicator"],
}


# ---------------------------------------------------------------------------
# ports, directories, processes
# ---------------------------------------------------------------------------

def built_with_asan(binary):
    """Whether binary links AddressSanitizer: its memory figures (shadow
    memory, the quarantine of freed blocks) then say nothing about ours."""
    try:
        return b"libasan.so" in Path(binary).read_bytes()
    except OSError:
        return False


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0, host="127.0.0.1", proc=None):
    """Waits until host:port accepts a connection; False on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def wait_port_closed(port, timeout=10.0, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except OSError:
            return True
        time.sleep(0.02)
    return False


class TempDir:
    """A temporary directory, removed by close() unless FLEDGER_KEEP_TMP is set."""

    def __init__(self, prefix="fledger-it-"):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))

    def __truediv__(self, other):
        return self.path / other

    def close(self):
        if os.environ.get("FLEDGER_KEEP_TMP"):
            print(f"[harness] keeping {self.path}")
            return
        shutil.rmtree(self.path, ignore_errors=True)


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def poll(fn, timeout=10.0, interval=0.05):
    """Calls fn until it returns a truthy value; returns it, or the last value."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = fn()
    return value


class Nats:
    """A JetStream nats-server on a free loopback port; its store survives restarts."""

    def __init__(self, workdir, name="nats", port=None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.store = self.workdir / f"{name}-store"
        self.log_path = self.workdir / f"{name}.log"
        self.store.mkdir(parents=True, exist_ok=True)
        self.proc = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout=20.0):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        if not wait_port(self.port, timeout, proc=self.proc):
            self.kill()
            raise RuntimeError(f"nats-server did not start:\n{tail(self.log_path)}")
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15.0):
        if not self.running():
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()

    def client(self, timeout=5.0):
        return NatsClient("127.0.0.1", self.port, timeout=timeout)


# ---------------------------------------------------------------------------
# keys and tokens
# ---------------------------------------------------------------------------

def make_signing_key(path):
    """An Ed25519 private key in PEM, made with openssl genpkey."""
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(path)],
                   check=True, capture_output=True)
    return Path(path)


def public_pem_of(private_key_path):
    out = subprocess.run(["openssl", "pkey", "-in", str(private_key_path), "-pubout"],
                         check=True, capture_output=True)
    return out.stdout.decode()


def make_tokens(path, principals=None):
    """Writes a tokens file; returns {principal name: bearer token}."""
    principals = principals or PRINCIPALS
    tokens, entries = {}, []
    for name, roles in principals.items():
        token = f"{name}-{secrets.token_hex(16)}"
        tokens[name] = token
        entries.append({"name": name, "roles": list(roles),
                        "token_sha256": hashlib.sha256(token.encode()).hexdigest()})
    Path(path).write_text(json.dumps({"principals": entries}, indent=1))
    return tokens


def raw_public_key(pem):
    """The 32 raw bytes of an Ed25519 SubjectPublicKeyInfo PEM."""
    b64 = "".join(l for l in pem.strip().splitlines() if not l.startswith("-----"))
    der = base64.b64decode(b64)
    if len(der) != 44:
        raise ValueError(f"unexpected Ed25519 public key DER length {len(der)}")
    return der[-32:]


def key_id_of(pem):
    """CONTRACT §4: hex of the first 8 bytes of SHA-256 of the raw public key."""
    return hashlib.sha256(raw_public_key(pem)).hexdigest()[:16]


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def __iter__(self):  # status, headers, body = response
        return iter((self.status, self.headers, self.body))

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


class Http:
    """
    A tiny HTTP/1.1 client. request() returns Response(status, headers with
    lower-case names, body bytes). With keep_alive, one connection is reused
    (a GET on a connection the server closed meanwhile is retried once).
    """

    def __init__(self, port, token=None, host="127.0.0.1", keep_alive=False, timeout=30.0):
        self.host, self.port, self.token = host, port, token
        self.keep_alive, self.timeout = keep_alive, timeout
        self._conn = None

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def with_token(self, token):
        return Http(self.port, token, self.host, self.keep_alive, self.timeout)

    def _connection(self):
        if self._conn is None or not self.keep_alive:
            self.close()
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def request(self, method, path, body=None, headers=None, token=...):
        token = self.token if token is ... else token
        h = {}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if not self.keep_alive:
            h["Connection"] = "close"
        if headers:
            h.update(headers)
        h = {k: v for k, v in h.items() if v is not None}
        if isinstance(body, str):
            body = body.encode()
        reused = self._conn is not None and self.keep_alive
        conn = self._connection()
        try:
            send_error = None
            try:
                conn.request(method, path, body=body, headers=h)
            except (BrokenPipeError, ConnectionResetError) as e:
                # The server may answer early (413) and close before reading
                # the whole body; its answer can still be read.
                if conn.sock is None:
                    raise
                send_error = e
            try:
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, OSError):
                if send_error is not None:
                    raise send_error
                raise
            out = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
            if not self.keep_alive or resp.will_close:
                self.close()
            return out
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()
            if reused and method in ("GET", "HEAD"):
                return self.request(method, path, body, headers, token)
            raise
        except BaseException:
            self.close()
            raise

    def json(self, method, path, obj=None, headers=None, token=...):
        """Sends obj as JSON; returns (status, headers, parsed body or None)."""
        h = {"Content-Type": "application/json"}
        if headers:
            h.update(headers)
        body = None if obj is None else json.dumps(obj).encode()
        r = self.request(method, path, body=body, headers=h, token=token)
        try:
            parsed = json.loads(r.body) if r.body else None
        except ValueError:
            parsed = None
        return r.status, r.headers, parsed

    def get(self, path, token=...):
        return self.request("GET", path, token=token)

    def get_json(self, path, token=...):
        r = self.get(path, token=token)
        return r.status, r.json() if r.body else None


# ---------------------------------------------------------------------------
# services
# ---------------------------------------------------------------------------

class Service:
    """
    A fledger service binary: start with flags, wait for GET /healthz, stop
    with SIGTERM, kill -9, restart. stderr (structured logs) is appended to
    <workdir>/<name>.stderr across restarts.
    """

    def __init__(self, binary, workdir, name, args, port=None, env=None, start_timeout=30.0):
        self.binary = str(binary)
        self.workdir = Path(workdir)
        self.name = name
        self.port = port or free_port()
        self.args = list(args)
        self.env = env
        self.start_timeout = start_timeout
        self.stderr_path = self.workdir / f"{name}.stderr"
        self.proc = None
        self.starts = 0

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def http(self, token=None, keep_alive=False, timeout=30.0):
        return Http(self.port, token, keep_alive=keep_alive, timeout=timeout)

    def command(self):
        return [self.binary, "--listen", f"127.0.0.1:{self.port}"] + self.args

    def start(self):
        assert not self.running(), f"{self.name} already running"
        env = dict(os.environ)
        # In a UBSan build, the first report stops the service, so that the
        # test that caused it fails there (scripts/test.sh sets the same).
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        if self.env:
            env.update(self.env)
        err = open(self.stderr_path, "ab")
        err.write(f"--- start #{self.starts + 1}: {' '.join(self.command())}\n".encode())
        err.flush()
        self.proc = subprocess.Popen(self.command(), stdout=err, stderr=err,
                                     stdin=subprocess.DEVNULL, env=env)
        err.close()
        self.starts += 1
        deadline = time.monotonic() + self.start_timeout
        probe = self.http(timeout=2.0)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} at start:\n"
                                   f"{self.stderr_tail()}")
            try:
                if probe.get("/healthz").status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"{self.name} did not answer /healthz:\n{self.stderr_tail()}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=30.0, check=True):
        """
        SIGTERM and wait; returns the exit code. With check, asserts exit
        code 0 and no sanitizer report in the service's stderr.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM:\n"
                                 f"{self.stderr_tail()}")
        if check and rc != 0:
            raise AssertionError(f"{self.name} exited with {rc} after SIGTERM (expected 0):\n"
                                 f"{self.stderr_tail()}")
        if check:
            self.assert_no_sanitizer_reports()
        return rc

    def kill(self):
        """kill -9; returns the (negative) exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()

    def restart(self, hard=False):
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    def stderr_tail(self, lines=40):
        return tail(self.stderr_path, lines)

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "WARNING: ThreadSanitizer", "ERROR: ThreadSanitizer")

    def sanitizer_reports(self):
        """Lines of stderr where a sanitizer (ASan, LSan, UBSan, TSan) reported a problem."""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return []
        return [l for l in text.splitlines() if any(m in l for m in self.SANITIZER_MARKS)]

    def assert_no_sanitizer_reports(self):
        """Raises AssertionError naming the reports when a sanitizer reported anything."""
        reports = self.sanitizer_reports()
        if reports:
            raise AssertionError(f"{self.name}: sanitizer reports {reports[:5]}\n"
                                 f"{self.stderr_tail(60)}")

    def stderr_records(self):
        """The structured log lines (JSON objects) written so far."""
        out = []
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return out
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


class CommandEnv:
    """
    A temp dir, a nats-server, a signing key, a tokens file and a command-svc,
    all wired together. close() tears everything down.
    """

    def __init__(self, binary, start=True, extra_args=()):
        self.tmp = TempDir()
        self.nats = Nats(self.tmp.path)
        self.key_path = make_signing_key(self.tmp / "signing.pem")
        self.tokens_path = self.tmp / "tokens.json"
        self.tokens = make_tokens(self.tokens_path)
        self.data_dir = self.tmp / "command-data"
        self.svc = Service(binary, self.tmp.path, "command-svc", [
            "--data-dir", str(self.data_dir),
            "--nats", self.nats.url,
            "--signing-key", str(self.key_path),
            "--tokens", str(self.tokens_path),
        ] + list(extra_args))
        if start:
            self.nats.start()
            self.svc.start()

    def http(self, principal=None, keep_alive=False, timeout=30.0):
        return self.svc.http(self.tokens[principal] if principal else None, keep_alive, timeout)

    def close(self):
        """Tears down; raises AssertionError when a sanitizer reported anything."""
        reports = []
        try:
            if self.svc.running():
                self.svc.kill()
            reports = self.svc.sanitizer_reports()
            if reports:
                print(f"[harness] sanitizer reports of command-svc:\n{self.svc.stderr_tail(200)}",
                      file=sys.stderr)
        finally:
            self.nats.kill()
            self.tmp.close()
        if reports:
            raise AssertionError(f"command-svc sanitizer reports: {reports[:5]}")


# ---------------------------------------------------------------------------
# a minimal NATS client (raw protocol)
# ---------------------------------------------------------------------------

class NatsError(Exception):
    pass


class NatsMsg:
    __slots__ = ("subject", "sid", "reply", "headers", "status", "data")

    def __init__(self, subject, sid, reply, headers, status, data):
        self.subject, self.sid, self.reply = subject, sid, reply
        self.headers, self.status, self.data = headers, status, data

    def __repr__(self):
        return f"<NatsMsg {self.subject} status={self.status} {self.data[:100]!r}>"


def parse_nats_headers(block):
    """'NATS/1.0[ code [desc]]\\r\\nK: V\\r\\n...\\r\\n\\r\\n' -> (status or None, {K: V})."""
    lines = block.decode("utf-8", "replace").split("\r\n")
    first = lines[0]
    if not first.startswith("NATS/1.0"):
        raise NatsError(f"bad header block {first!r}")
    rest = first[len("NATS/1.0"):].strip()
    status = int(rest.split()[0]) if rest else None
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        headers[k.strip()] = v.strip()
    return status, headers


class NatsClient:
    """
    Enough of the NATS client protocol for tests: connect, subscribe,
    publish, request/reply with an inbox, MSG and HMSG parsing, and the
    JetStream API calls to read a stream message by message.
    """

    def __init__(self, host, port, timeout=5.0):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.sid = 0
        self.pending = []  # messages read while waiting for something else
        line = self._read_line()
        if not line.startswith(b"INFO "):
            raise NatsError(f"expected INFO, got {line!r}")
        self.info = json.loads(line[5:])
        connect = {"verbose": False, "pedantic": False, "headers": True,
                   "no_responders": True, "lang": "python-test", "version": "0"}
        self._send(b"CONNECT " + json.dumps(connect).encode() + b"\r\n")
        self.ping()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- wire --
    def _send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise NatsError("connection closed by the server")
        self.buf += chunk

    def _read_line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _read_op(self):
        """Reads one protocol operation; returns a NatsMsg, 'PONG' or None (handled)."""
        line = self._read_line()
        if line.startswith(b"MSG "):
            parts = line.split()
            subject, sid = parts[1].decode(), int(parts[2])
            reply = parts[3].decode() if len(parts) == 5 else None
            size = int(parts[-1])
            data = self._read_exact(size + 2)[:-2]
            return NatsMsg(subject, sid, reply, {}, None, data)
        if line.startswith(b"HMSG "):
            parts = line.split()
            subject, sid = parts[1].decode(), int(parts[2])
            reply = parts[3].decode() if len(parts) == 6 else None
            hsize, total = int(parts[-2]), int(parts[-1])
            raw = self._read_exact(total + 2)[:-2]
            status, headers = parse_nats_headers(raw[:hsize])
            return NatsMsg(subject, sid, reply, headers, status, raw[hsize:])
        if line == b"PING":
            self._send(b"PONG\r\n")
            return None
        if line == b"PONG":
            return "PONG"
        if line.startswith(b"+OK") or line.startswith(b"INFO "):
            return None
        if line.startswith(b"-ERR"):
            raise NatsError(line.decode("utf-8", "replace"))
        raise NatsError(f"unexpected protocol line {line!r}")

    # -- operations --
    def ping(self):
        self._send(b"PING\r\n")
        while True:
            op = self._read_op()
            if op == "PONG":
                return
            if isinstance(op, NatsMsg):
                self.pending.append(op)

    def subscribe(self, subject, max_msgs=None):
        self.sid += 1
        self._send(f"SUB {subject} {self.sid}\r\n".encode())
        if max_msgs:
            self._send(f"UNSUB {self.sid} {max_msgs}\r\n".encode())
        return self.sid

    def unsubscribe(self, sid):
        self._send(f"UNSUB {sid}\r\n".encode())

    def publish(self, subject, data=b"", reply=None):
        head = f"PUB {subject} {reply + ' ' if reply else ''}{len(data)}\r\n".encode()
        self._send(head + data + b"\r\n")

    def next_msg(self, sid, timeout=None):
        for i, m in enumerate(self.pending):
            if m.sid == sid:
                return self.pending.pop(i)
        self.sock.settimeout(timeout or self.timeout)
        try:
            while True:
                op = self._read_op()
                if isinstance(op, NatsMsg):
                    if op.sid == sid:
                        return op
                    self.pending.append(op)
        except socket.timeout:
            raise NatsError(f"timeout waiting for a message on sid {sid}")
        finally:
            self.sock.settimeout(self.timeout)

    def request(self, subject, data=b"", timeout=None):
        inbox = f"_INBOX.{secrets.token_hex(8)}"
        sid = self.subscribe(inbox, max_msgs=1)
        self.publish(subject, data, reply=inbox)
        msg = self.next_msg(sid, timeout)
        if msg.status == 503:
            raise NatsError(f"no responders for {subject}")
        return msg

    def request_many(self, requests, timeout=None):
        """Pipelines [(subject, data)]; returns the replies in the same order."""
        prefix = f"_INBOX.{secrets.token_hex(8)}"
        sid = self.subscribe(prefix + ".*")
        out = bytearray()
        for i, (subject, data) in enumerate(requests):
            out += f"PUB {subject} {prefix}.{i} {len(data)}\r\n".encode() + data + b"\r\n"
        self._send(bytes(out))
        replies = [None] * len(requests)
        for _ in requests:
            msg = self.next_msg(sid, timeout)
            replies[int(msg.subject.rsplit(".", 1)[1])] = msg
        self.unsubscribe(sid)
        return replies

    # -- JetStream --
    def js_api(self, call, obj=None, timeout=None):
        reply = self.request(f"$JS.API.{call}", json.dumps(obj).encode() if obj is not None
                             else b"", timeout)
        return json.loads(reply.data)

    def stream_info(self, stream=STREAM):
        """The JetStream stream info; None when the stream does not exist."""
        info = self.js_api(f"STREAM.INFO.{stream}")
        if "error" in info:
            if info["error"].get("code") == 404:
                return None
            raise NatsError(f"STREAM.INFO: {info['error']}")
        return info

    def stream_messages(self, stream=STREAM, batch=200):
        """
        Every message of the stream, in stream order, as dicts
        {stream_seq, subject, msg_id, headers, data (bytes)}.
        """
        info = self.stream_info(stream)
        if info is None:
            return []
        state = info["state"]
        first, last = state["first_seq"], state["last_seq"]
        out = []
        seqs = list(range(first, last + 1)) if state["messages"] else []
        for i in range(0, len(seqs), batch):
            chunk = seqs[i:i + batch]
            replies = self.request_many(
                [(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"seq": s}).encode())
                 for s in chunk])
            for s, reply in zip(chunk, replies):
                answer = json.loads(reply.data)
                if "error" in answer:
                    if answer["error"].get("err_code") == 10037:  # no message (deleted)
                        continue
                    raise NatsError(f"MSG.GET {s}: {answer['error']}")
                m = answer["message"]
                headers = {}
                if m.get("hdrs"):
                    _, headers = parse_nats_headers(base64.b64decode(m["hdrs"]))
                out.append({"stream_seq": m["seq"], "subject": m["subject"],
                            "msg_id": headers.get("Nats-Msg-Id"), "headers": headers,
                            "data": base64.b64decode(m.get("data", ""))})
        return out


def collect_stream(nats_port, stream=STREAM):
    """[(subject, Nats-Msg-Id, payload line bytes)] of every stream message, in order."""
    with NatsClient("127.0.0.1", nats_port) as nc:
        return [(m["subject"], m["msg_id"], m["data"]) for m in nc.stream_messages(stream)]


# ---------------------------------------------------------------------------
# the log: leaves, signatures, Merkle proofs (RFC 6962 / RFC 9162)
# ---------------------------------------------------------------------------

def sha256(data):
    return hashlib.sha256(data).digest()


def leaf_hash(body):
    return sha256(b"\x00" + body)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def _split(n):
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves):
    """MTH over a list of leaf hashes (RFC 9162 §2.1.1)."""
    if not leaves:
        return sha256(b"")
    # Iterative, bottom-up: equivalent to the recursive definition.
    level = list(leaves)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_root_recursive(leaves):
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(merkle_root_recursive(leaves[:k]), merkle_root_recursive(leaves[k:]))


def verify_inclusion(leaf_index, tree_size, leaf, proof, root):
    """RFC 9162 §2.1.3.2. leaf, proof items and root are raw 32-byte hashes."""
    if leaf_index >= tree_size:
        return False
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_root, second_root, proof):
    """RFC 9162 §2.1.4.2. Roots and proof items are raw 32-byte hashes."""
    if first > second or first == 0:
        return False
    if first == second:
        return not proof and first_root == second_root
    proof = list(proof)
    if first & (first - 1) == 0:  # an exact power of two
        proof.insert(0, first_root)
    if not proof:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


def checkpoint_message(cp):
    return (f"fledger-checkpoint-v1\n{cp['tree_size']}\n{cp['root_hash']}\n"
            f"{cp['timestamp']}\n").encode()


class Verifier:
    """
    Checks signatures with `openssl pkeyutl -verify -rawin` against the
    public keys served by GET /v1/keys (a dict key_id -> PEM).
    """

    def __init__(self, keys, workdir):
        self.workdir = Path(tempfile.mkdtemp(prefix="verify-", dir=str(workdir)))
        self.pub_paths = {}
        for key_id, pem in keys.items():
            p = self.workdir / f"{key_id}.pub.pem"
            p.write_text(pem)
            self.pub_paths[key_id] = p
        self._n = 0

    @classmethod
    def from_service(cls, http, workdir):
        r = http.get("/v1/keys", token=None)
        if r.status != 200:
            raise AssertionError(f"GET /v1/keys: {r}")
        keys = {k["key_id"]: k["public_key_pem"] for k in r.json()["keys"]}
        return cls(keys, workdir)

    def openssl_verify(self, key_id, message, sig):
        """True when openssl accepts sig (raw bytes) over message (raw bytes)."""
        if key_id not in self.pub_paths:
            return False
        self._n += 1
        stem = self.workdir / f"m{os.getpid()}-{id(message)}-{self._n}-{secrets.token_hex(4)}"
        msg_path, sig_path = Path(f"{stem}.bin"), Path(f"{stem}.sig")
        msg_path.write_bytes(message)
        sig_path.write_bytes(sig)
        try:
            r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey",
                                str(self.pub_paths[key_id]), "-rawin", "-in", str(msg_path),
                                "-sigfile", str(sig_path)], capture_output=True)
            return r.returncode == 0 and b"Signature Verified Successfully" in r.stdout
        finally:
            msg_path.unlink(missing_ok=True)
            sig_path.unlink(missing_ok=True)

    def check_line(self, line):
        """
        Checks one log line (dict or bytes): leaf_hash = SHA-256(0 || body)
        and the signature over the 32 leaf bytes. Returns a list of problems
        (empty when the line is good).
        """
        if isinstance(line, (bytes, str)):
            line = json.loads(line)
        problems = []
        body = base64.b64decode(line["body"], validate=True)
        leaf = leaf_hash(body)
        if leaf.hex() != line["leaf_hash"]:
            problems.append(f"seq {line['seq']}: leaf_hash {line['leaf_hash']} != {leaf.hex()}")
        try:
            if json.loads(body).get("seq") != line["seq"]:
                problems.append(f"seq {line['seq']}: body seq differs")
        except ValueError:
            problems.append(f"seq {line['seq']}: body is not JSON")
        if "sig" not in line and "key_id" not in line:
            # Format v2: no line signature; the line is proven by its
            # inclusion under a signed checkpoint (check_inclusion).
            if set(line) != {"seq", "body", "leaf_hash"}:
                problems.append(f"seq {line['seq']}: members {sorted(line)}")
        elif not self.openssl_verify(line["key_id"], leaf, base64.b64decode(line["sig"])):
            problems.append(f"seq {line['seq']}: signature does not verify (key {line['key_id']})")
        return problems

    def check_inclusion(self, line, proof, cp):
        """
        A line's inclusion proof ({"leaf_index", "tree_size", "hashes"}) against
        a checkpoint, folded RFC 9162 style, and the checkpoint's signature by
        openssl. A list of problems.
        """
        problems = self.check_line(line)
        leaf = bytes.fromhex(line["leaf_hash"])
        if proof["leaf_index"] != line["seq"] - 1 or proof["tree_size"] != cp["tree_size"]:
            problems.append(f"seq {line['seq']}: proof {proof} is not for this line and tree")
        elif not verify_inclusion(proof["leaf_index"], proof["tree_size"], leaf,
                                  [bytes.fromhex(h) for h in proof["hashes"]],
                                  bytes.fromhex(cp["root_hash"])):
            problems.append(f"seq {line['seq']}: inclusion proof does not fold to the root")
        return problems + self.check_checkpoint(cp)

    def check_lines(self, lines, workers=4):
        """check_line over many lines, in parallel openssl processes."""
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(self.check_line, lines))
        return [p for r in results for p in r]

    def check_checkpoint(self, cp):
        """The checkpoint signature with openssl; a list of problems."""
        problems = []
        if not self.openssl_verify(cp["key_id"], checkpoint_message(cp),
                                   base64.b64decode(cp["sig"])):
            problems.append(f"checkpoint {cp['tree_size']}: signature does not verify")
        return problems


def parse_ndjson(body):
    return [json.loads(l) for l in body.decode().splitlines() if l.strip()]


def read_log(http, from_seq=1, page=1000):
    """Every line of GET /v1/log from from_seq on (paged), as dicts."""
    out = []
    seq = from_seq
    while True:
        r = http.get(f"/v1/log?from_seq={seq}&limit={page}")
        if r.status != 200:
            raise AssertionError(f"GET /v1/log?from_seq={seq}: {r}")
        lines = parse_ndjson(r.body)
        out.extend(lines)
        if len(lines) < page:
            return out
        seq = lines[-1]["seq"] + 1


def read_log_raw(http, from_seq=1, page=1000):
    """Like read_log, but {seq: raw line bytes} (what NATS payloads must equal)."""
    out = {}
    seq = from_seq
    while True:
        r = http.get(f"/v1/log?from_seq={seq}&limit={page}")
        if r.status != 200:
            raise AssertionError(f"GET /v1/log?from_seq={seq}: {r}")
        raw = [l for l in r.body.split(b"\n") if l.strip()]
        for l in raw:
            out[json.loads(l)["seq"]] = l
        if len(raw) < page:
            return out
        seq = max(out) + 1


def decode_body(line):
    return json.loads(base64.b64decode(line["body"]))


# ---------------------------------------------------------------------------
# service state helpers
# ---------------------------------------------------------------------------

def readyz(http):
    """GET /readyz (no token) as a dict; raises on a non-200 answer."""
    r = http.get("/readyz", token=None)
    if r.status != 200:
        raise AssertionError(f"GET /readyz: {r}")
    return r.json()


def parse_metrics(text):
    """
    Prometheus text format -> {"TYPE": {name: type}, "samples": [(name,
    {label: value}, float)]}. Enough for the label syntax the services emit.
    """
    types, samples = {}, []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
            continue
        if line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels_text, value = rest.rsplit("}", 1)
            labels = {}
            i = 0
            while i < len(labels_text):
                eq = labels_text.index("=", i)
                key = labels_text[i:eq].strip().lstrip(",").strip()
                assert labels_text[eq + 1] == '"', line
                j = eq + 2
                val = []
                while labels_text[j] != '"':
                    if labels_text[j] == "\\":
                        j += 1
                        val.append({"n": "\n"}.get(labels_text[j], labels_text[j]))
                    else:
                        val.append(labels_text[j])
                    j += 1
                labels[key] = "".join(val)
                i = j + 1
                while i < len(labels_text) and labels_text[i] in ", ":
                    i += 1
        else:
            name, value = line.split(None, 1)
            labels = {}
        samples.append((name.strip(), labels, float(value.split()[0])))
    return {"TYPE": types, "samples": samples}


def metric_value(metrics, name, **labels):
    """The value of one sample (labels must match exactly the given subset); None if absent."""
    for n, l, v in metrics["samples"]:
        if n == name and all(l.get(k) == str(val) for k, val in labels.items()):
            return v
    return None


# ---------------------------------------------------------------------------
# query-svc: environments and read-audit checks (CONTRACT §5-§7)
# ---------------------------------------------------------------------------

# The standard principals plus the two a read ACL needs to be told apart:
# one in role:fraud (may read restricted features) and one reader that no
# view's read ACL lists.
QUERY_PRINCIPALS = dict(PRINCIPALS, **{
    "fraud-analyst": ["reader", "fraud"],
    "outsider": ["reader"],
})

READ_CHECKPOINT_PREFIX = "fledger-read-checkpoint-v1"


def checkpoint_message_with(prefix, cp):
    """The signed text of a checkpoint with the given prefix (§4, §7)."""
    return (f"{prefix}\n{cp['tree_size']}\n{cp['root_hash']}\n{cp['timestamp']}\n").encode()


def read_checkpoint_message(cp):
    return checkpoint_message_with(READ_CHECKPOINT_PREFIX, cp)


def verify_read_checkpoint(verifier, cp):
    """A read-log checkpoint's signature (prefix fledger-read-checkpoint-v1); problems."""
    if not verifier.openssl_verify(cp["key_id"], read_checkpoint_message(cp),
                                   base64.b64decode(cp["sig"])):
        return [f"read checkpoint {cp['tree_size']}: signature does not verify"]
    return []


def time_text(us):
    """Microseconds since the epoch as the services write them: ...T21:00:00.123000Z."""
    secs, frac = divmod(int(us), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"


def parse_time_text(text):
    """RFC 3339 in UTC ('Z', 0-9 fractional digits) -> microseconds since the epoch."""
    import calendar
    assert text.endswith("Z"), text
    main, _, frac = text[:-1].partition(".")
    secs = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000 + (int((frac + "000000")[:6]) if frac else 0)


def _nats_hpub(client, subject, headers, data):
    """HPUB: a core publish with headers (Nats-Msg-Id ...)."""
    head = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    hb = head.encode()
    client._send(f"HPUB {subject} {len(hb)} {len(hb) + len(data)}\r\n".encode()
                 + hb + data + b"\r\n")


NatsClient.hpublish = _nats_hpub


class QueryEnv:
    """
    A temp dir, a nats-server, command-svc and N query-svc instances wired
    together: one tokens file (QUERY_PRINCIPALS) for all, a replicator token
    file for the query services, each query service with its own signing
    key, data dir and durable consumer name. close() tears everything down
    and fails on sanitizer reports of any service.
    """

    def __init__(self, command_binary, query_binary, n_query=1, start=True,
                 command_args=(), principals=None, query_args=()):
        self.tmp = TempDir(prefix="fledger-qit-")
        self.query_binary = query_binary
        self.nats = Nats(self.tmp.path)
        self.key_path = make_signing_key(self.tmp / "command-signing.pem")
        self.tokens_path = self.tmp / "tokens.json"
        self.tokens = make_tokens(self.tokens_path, principals or QUERY_PRINCIPALS)
        self.repl_token_path = self.tmp / "replicator.token"
        self.repl_token_path.write_text(self.tokens["repl"] + "\n")
        self.command = Service(command_binary, self.tmp.path, "command-svc", [
            "--data-dir", str(self.tmp / "command-data"),
            "--nats", self.nats.url,
            "--signing-key", str(self.key_path),
            "--tokens", str(self.tokens_path),
        ] + list(command_args))
        self.queries = []
        self.retired = []  # query services replaced or removed, for sanitizer checks
        self.query_args = list(query_args)  # extra flags of every query-svc
        try:
            if start:
                self.nats.start()
                self.command.start()
            for i in range(n_query):
                self.add_query(start=start)
        except BaseException:
            self.close(check=False)
            raise

    def add_query(self, name=None, consumer=None, nats_url=None, command_url=None,
                  data_dir=None, extra_args=(), start=True, key_path=None):
        """A new query-svc (its own key, data dir, consumer); started unless start=False."""
        name = name or f"query-{len(self.queries) + len(self.retired) + 1}"
        key_path = key_path or make_signing_key(self.tmp / f"{name}-signing.pem")
        svc = Service(self.query_binary, self.tmp.path, name, [
            "--data-dir", str(data_dir or (self.tmp / f"{name}-data")),
            "--nats", self.nats.url if nats_url is None else nats_url,
            "--signing-key", str(key_path),
            "--tokens", str(self.tokens_path),
            "--command-url", command_url or self.command.url,
            "--command-token-file", str(self.repl_token_path),
            "--consumer", consumer or name,
        ] + self.query_args + list(extra_args))
        svc.key_path = key_path
        self.queries.append(svc)
        if start:
            svc.start()
        return svc

    def retire(self, svc):
        """Stops tracking svc as a live instance (it is still checked at close)."""
        if svc in self.queries:
            self.queries.remove(svc)
        self.retired.append(svc)

    @property
    def query(self):
        return self.queries[0]

    def http(self, principal=None, svc=None, keep_alive=False, timeout=30.0):
        """An Http client for svc (default command-svc) as principal (None: no token)."""
        svc = svc or self.command
        return svc.http(self.tokens[principal] if principal else None, keep_alive, timeout)

    def qhttp(self, principal=None, svc=None, keep_alive=False, timeout=30.0):
        """An Http client for a query service (default the first) as principal."""
        return self.http(principal, svc or self.query, keep_alive, timeout)

    def tree_size(self):
        return readyz(self.command.http())["tree_size"]

    def query_state(self, svc):
        """(status code, body) of svc's /readyz."""
        r = svc.http(timeout=5.0).get("/readyz", token=None)
        try:
            return r.status, r.json()
        except ValueError:
            return r.status, None

    def wait_caught_up(self, svc, tree_size=None, timeout=30.0):
        """
        Waits until svc's /readyz is 200 with applied_seq >= tree_size
        (default: command-svc's tree size now); returns the last /readyz body.
        Raises AssertionError with the last state on timeout.
        """
        target = self.tree_size() if tree_size is None else tree_size
        last = [None]

        def ok():
            try:
                status, body = self.query_state(svc)
            except OSError as e:
                last[0] = repr(e)
                return False
            last[0] = (status, body)
            return status == 200 and body and body.get("applied_seq", -1) >= target

        if not poll(ok, timeout=timeout, interval=0.05):
            raise AssertionError(f"{svc.name} did not catch up to seq {target} within "
                                 f"{timeout}s: last /readyz {last[0]}\n{svc.stderr_tail(20)}")
        return last[0][1]

    def digest(self, svc):
        status, body = self.qhttp("aud", svc).get_json("/v1/projection/digest")
        if status != 200:
            raise AssertionError(f"GET /v1/projection/digest on {svc.name}: {status} {body}")
        return body

    def assert_no_sanitizer_reports(self):
        """Raises AssertionError when any service so far has a sanitizer report."""
        for svc in self.queries + self.retired + [self.command]:
            svc.assert_no_sanitizer_reports()

    def close(self, check=True):
        """Tears down; raises AssertionError when a sanitizer reported anything."""
        reports = {}
        try:
            for svc in self.queries + self.retired + [self.command]:
                try:
                    if svc.running():
                        svc.kill()
                except OSError:
                    pass
                r = svc.sanitizer_reports()
                if r:
                    reports[svc.name] = r
                    print(f"[harness] sanitizer reports of {svc.name}:\n{svc.stderr_tail(200)}",
                          file=sys.stderr)
        finally:
            self.nats.kill()
            self.tmp.close()
        if reports and check:
            raise AssertionError(f"sanitizer reports: {reports}")


def main():
    """unittest.main, except that a run with skipped tests exits 77, which
    meson reports as SKIP (and scripts/test.sh as a failure): a check that
    did not run has not passed."""
    import unittest
    prog = unittest.main(module="__main__", exit=False)
    result = prog.result
    if not result.wasSuccessful():
        sys.exit(1)
    if result.skipped:
        print(f"{len(result.skipped)} test(s) skipped: exiting 77", file=sys.stderr)
        sys.exit(77)
    sys.exit(0)


class LogRewritingProxy:
    """
    An HTTP proxy in front of command-svc that passes everything through
    except GET /v1/log answers, where the line of one seq gets another body
    (with the matching leaf hash; the signature is left as it was).
    """

    def __init__(self, upstream_port, target_seq, old, new):
        self.upstream_port, self.target_seq, self.old, self.new = (
            upstream_port, target_seq, old, new)
        self.rewritten = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=10)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("authorization", "accept")}
                try:
                    conn.request("GET", self.path, headers=headers)
                    resp = conn.getresponse()
                    body = resp.read()
                    status, ctype = resp.status, resp.getheader("Content-Type", "")
                finally:
                    conn.close()
                body = proxy.filter(self.path, status, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def filter(self, path, status, body):
        """The body passed on for an upstream answer to GET path."""
        if urllib.parse.urlsplit(path).path == "/v1/log" and status == 200:
            return self.rewrite(body)
        return body

    def rewrite(self, body):
        out = []
        for raw in body.split(b"\n"):
            if raw.strip():
                line = json.loads(raw)
                if line["seq"] == self.target_seq:
                    b = base64.b64decode(line["body"])
                    assert self.old in b, b
                    b = b.replace(self.old, self.new)
                    line["body"] = base64.b64encode(b).decode()
                    line["leaf_hash"] = leaf_hash(b).hex()
                    raw = json.dumps(line, separators=(",", ":")).encode()
                    self.rewritten += 1
            out.append(raw)
        return b"\n".join(out)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
