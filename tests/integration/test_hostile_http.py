#!/usr/bin/env python3
"""
Hostile HTTP clients against both real services, over raw sockets, with low
limits so that each test takes seconds: one well-formed answer per bad
request, request framing (Content-Length, chunked), the request deadline,
the per-address connection cap and query-svc's cap on reads parked for
their min_seq. Every test ends by checking that the service still serves.
"""
import json
import os
import socket
import sys
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Nats, Service, TempDir, make_signing_key  # noqa: E402

ROOT = harness.REPO_ROOT
COMMAND_SVC = Path(os.environ.get("FLEDGER_COMMAND_SVC")
                   or ROOT / "build" / "command-svc" / "command-svc")
QUERY_SVC = Path(os.environ.get("FLEDGER_QUERY_SVC")
                 or ROOT / "build" / "query-svc" / "query-svc")

LIMITS = ["--insecure-no-auth", "--max-connections-per-ip", "6", "--request-timeout", "1",
          "--max-body", "65536"]
PARKED = 2


def connect(port, source="127.0.0.1"):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock, quiet=1.5, total=5.0):
    """What the server sends until it closes or is quiet; (bytes, closed)."""
    data, closed, stop = b"", False, time.monotonic() + total
    while time.monotonic() < stop:
        sock.settimeout(quiet)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    return data, closed


def parse_one(data):
    """Exactly one HTTP/1.1 response: (status, headers, body); asserts on anything else."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response: {data[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert parts[0] == "HTTP/1.1" and parts[1].isdigit(), f"bad status line {lines[0]!r}"
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        assert colon, f"bad header line {line!r}"
        assert name.lower() not in headers, f"header {name} repeated in {data[:300]!r}"
        headers[name.lower()] = value.strip()
    length = int(headers["content-length"])
    assert len(rest) == length, f"not exactly one response: {data[:400]!r}"
    return int(parts[1]), headers, rest


def exchange(port, request, source="127.0.0.1"):
    with connect(port, source) as sock:
        sock.sendall(request)
        data, closed = read_all(sock)
    return parse_one(data) + (closed,)


def error_code(headers, body):
    assert headers.get("content-type") == "application/json", headers
    error = json.loads(body)["error"]
    assert isinstance(error["message"], str)
    return error["code"]


class HostileHttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir(prefix="fledger-hostile-")
        tmp = cls.tmp
        cls.services = []
        try:
            cls.nats = Nats(tmp.path).start()
            cls.command = Service(COMMAND_SVC, tmp.path, "command-svc", [
                "--data-dir", str(tmp / "command-data"), "--nats", cls.nats.url,
                "--signing-key", str(make_signing_key(tmp / "command-key.pem"))] + LIMITS)
            cls.services.append(cls.command)
            cls.command.start()
            # A query-svc that never catches up: every min_seq read waits.
            cls.query = Service(QUERY_SVC, tmp.path, "query-svc", [
                "--data-dir", str(tmp / "query-data"), "--nats", "",
                "--signing-key", str(make_signing_key(tmp / "query-key.pem")),
                "--command-url", f"http://127.0.0.1:{harness.free_port()}",
                "--max-parked-reads", str(PARKED)] + LIMITS)
            cls.services.append(cls.query)
            cls.query.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for svc in reversed(cls.services):
            if svc.running():
                svc.stop(check=False)
        if getattr(cls, "nats", None):
            cls.nats.kill()
        cls.tmp.close()

    def each_service(self):
        for svc in (self.command, self.query):
            with self.subTest(service=svc.name):
                yield svc

    def assert_serving(self, svc, source="127.0.0.1"):
        status, _, _, _ = exchange(svc.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                   b"Connection: close\r\n\r\n", source)
        self.assertEqual(status, 200)

    def test_conflicting_framing_is_400(self):
        for svc in self.each_service():
            for head in (b"Content-Length: 2\r\nContent-Length: 20\r\n",
                         b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n"):
                status, headers, body, closed = exchange(
                    svc.port, b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\n" + head + b"\r\n{}")
                self.assertEqual(status, 400)
                self.assertEqual(error_code(headers, body), "bad_request")
                self.assertTrue(closed)
            self.assert_serving(svc)

    def test_malformed_requests_get_one_answer_each(self):
        cases = [
            (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 505),
            (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", 431),
            (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"zz\r\nhello\r\n0\r\n\r\n", 400),
        ]
        for svc in self.each_service():
            for request, expected in cases:
                status, _, _, closed = exchange(svc.port, request)
                self.assertEqual(status, expected)
                self.assertTrue(closed)
            self.assert_serving(svc)

    def test_endless_chunked_body_gets_413_and_is_closed(self):
        for svc in self.each_service():
            sock = connect(svc.port)
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            stop = threading.Event()
            chunk = b"1000\r\n" + b"x" * 4096 + b"\r\n"

            def pour():
                try:
                    while not stop.is_set():
                        sock.sendall(chunk)
                except OSError:
                    pass
            pourer = threading.Thread(target=pour)
            pourer.start()
            data, closed = read_all(sock, quiet=3.0, total=5.0)
            stop.set()
            sock.close()
            pourer.join()
            status, headers, body = parse_one(data)
            self.assertEqual(status, 413)
            self.assertEqual(error_code(headers, body), "body_too_large")
            self.assertTrue(closed)
            self.assert_serving(svc)

    def test_slow_request_is_closed_by_the_deadline(self):
        for svc in self.each_service():
            with connect(svc.port) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                started, closed = time.monotonic(), False
                while not closed and time.monotonic() - started < 6:
                    try:
                        sock.sendall(b"s")
                        sock.settimeout(0.2)
                        closed = sock.recv(1) == b""
                    except socket.timeout:
                        pass
                    except OSError:
                        closed = True
                self.assertTrue(closed, "a byte every 0.2 s kept the request open for 6 s")
            self.assert_serving(svc)

    def test_connections_per_address_are_capped(self):
        for svc in self.each_service():
            held = [connect(svc.port, "127.0.0.3") for _ in range(6)]
            try:
                time.sleep(0.2)
                with connect(svc.port, "127.0.0.3") as extra:
                    try:
                        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    except OSError:
                        pass
                    data, closed = read_all(extra, quiet=1.0, total=2.0)
                self.assertEqual(data, b"")
                self.assertTrue(closed)
                self.assert_serving(svc, "127.0.0.4")
            finally:
                for sock in held:
                    sock.close()

    def test_parked_reads_are_capped(self):
        path = b"/v1/features/nothing_yet/e1?min_seq=1000000&wait_ms=8000"
        request = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        parked = []
        try:
            for i in range(PARKED):
                sock = connect(self.query.port, f"127.0.0.{10 + i}")
                sock.sendall(request)
                parked.append(sock)
            time.sleep(0.5)
            for sock in parked:  # still waiting
                sock.settimeout(0.1)
                self.assertRaises(socket.timeout, sock.recv, 1)
            status, headers, body, _ = exchange(self.query.port, request, "127.0.0.20")
            self.assertEqual(status, 503)
            self.assertEqual(error_code(headers, body), "too_many_waiting_reads")
            self.assertEqual(headers.get("retry-after"), "1")
            self.assert_serving(self.query)
        finally:
            for sock in parked:
                sock.close()


if __name__ == "__main__":
    unittest.main()
