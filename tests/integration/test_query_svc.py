#!/usr/bin/env python3
"""
Integration tests of query-svc against a real nats-server and command-svc
(CONTRACT §5-§8). Standard library only; openssl checks every signature.

Each TestCase class starts its own nats-server, command-svc and query-svc
instances on free loopback ports in a temporary directory (harness.QueryEnv).
The binaries come from $FLEDGER_COMMAND_SVC and $FLEDGER_QUERY_SVC (default:
build/command-svc/command-svc and build/query-svc/query-svc under the
repository root). Random data is seeded: $FLEDGER_TEST_SEED.

Values are checked against a brute-force oracle in Python (Oracle below):
the latest value of a feature at as_of is the one of the event with the
greatest (event_ts, seq) at or before as_of; a window is its function over
the events whose event_ts lies in (as_of - size, as_of].

    python3 tests/integration/test_query_svc.py -v
"""

import base64
import hashlib
import http.client
import http.server
import json
import math
import os
import pathlib
import random
import secrets
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import (  # noqa: E402
    QueryEnv, Verifier, collect_stream, decode_body, free_port, key_id_of, leaf_hash,
    make_signing_key, merkle_root, parse_ndjson, parse_time_text, poll, public_pem_of, read_log,
    readyz, checkpoint_message, time_text, verify_inclusion, verify_read_checkpoint,
    LogRewritingProxy)

COMMAND_BINARY = Path(os.environ.get("FLEDGER_COMMAND_SVC")
                      or harness.REPO_ROOT / "build" / "command-svc" / "command-svc")
QUERY_BINARY = Path(os.environ.get("FLEDGER_QUERY_SVC")
                    or harness.REPO_ROOT / "build" / "query-svc" / "query-svc")
SEED = int(os.environ.get("FLEDGER_TEST_SEED", "20261126"))

US = 1_000_000
MINUTE = 60 * US
HOUR = 60 * MINUTE

# The §2 example view (schemas/views/user_activity.json) plus a window over
# the restricted cart_items, so that the ACL extends to a window.
UA_VIEW = json.loads((harness.REPO_ROOT / "schemas" / "views" / "user_activity.json")
                     .read_text())
UA_VIEW["windows"].append({"name": "items_sum_10m", "fn": "sum", "of": "cart_items",
                           "size": "10m"})

# Every window function over int64, double and string features.
STATS_VIEW = {
    "name": "stats",
    "entity": "item_id",
    "features": {"qty": "int64", "price": "double", "tag": "string"},
    "windows": [
        {"name": "n_price", "fn": "count", "of": "price", "size": "10m"},
        {"name": "n_tag_1h", "fn": "count", "of": "tag", "size": "1h"},
        {"name": "qty_sum", "fn": "sum", "of": "qty", "size": "10m"},
        {"name": "qty_sum_1h", "fn": "sum", "of": "qty", "size": "1h"},
        {"name": "price_sum", "fn": "sum", "of": "price", "size": "10m"},
        {"name": "price_avg", "fn": "avg", "of": "price", "size": "10m"},
        {"name": "qty_avg", "fn": "avg", "of": "qty", "size": "10m"},
        {"name": "price_min", "fn": "min", "of": "price", "size": "10m"},
        {"name": "price_max", "fn": "max", "of": "price", "size": "10m"},
        {"name": "qty_min", "fn": "min", "of": "qty", "size": "10m"},
        {"name": "qty_max", "fn": "max", "of": "qty", "size": "10m"},
        {"name": "tag_last", "fn": "last", "of": "tag", "size": "10m"},
        {"name": "tag_last3", "fn": "last_n", "of": "tag", "size": "10m", "n": 3},
        {"name": "price_std", "fn": "stddev", "of": "price", "size": "10m"},
    ],
    "acl": {"write": ["clicks-pipeline"], "read": ["role:inference"]},
}

# A view whose reads are not audited.
QUIET_VIEW = {
    "name": "quiet",
    "entity": "user_id",
    "features": {"score": "double"},
    "acl": {"write": ["clicks-pipeline"], "read": ["role:inference"]},
    "audit_reads": False,
}

DURATION = {"s": US, "m": MINUTE, "h": HOUR, "d": 24 * HOUR}


def duration_us(text):
    return int(text[:-1]) * DURATION[text[-1]]


def now_us():
    return int(time.time() * US)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def setUpModule():
    for what, binary in (("command-svc", COMMAND_BINARY), ("query-svc", QUERY_BINARY)):
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise RuntimeError(f"{what} binary not found at {binary}: build it or set "
                               f"FLEDGER_{what.upper().replace('-', '_')}")
    print(f"\n[integration] command-svc: {COMMAND_BINARY}\n[integration] query-svc: "
          f"{QUERY_BINARY}; seed {SEED}", file=sys.stderr)


# ---------------------------------------------------------------------------
# the oracle
# ---------------------------------------------------------------------------

class Oracle:
    """Every acknowledged feature event, and what a read must answer from them."""

    def __init__(self):
        self.events = []  # dicts: view, entity, ts (µs), seq, features

    def add(self, view, entity, ts, seq, features):
        self.events.append({"view": view, "entity": str(entity), "ts": ts, "seq": seq,
                            "features": dict(features)})

    def of(self, view, entity):
        return [e for e in self.events if e["view"] == view and e["entity"] == str(entity)]

    def latest(self, view, entity, feature, as_of):
        """The event (or None) with the greatest (ts, seq) at or before as_of carrying feature."""
        best = None
        for e in self.of(view, entity):
            if feature in e["features"] and e["ts"] <= as_of:
                if best is None or (e["ts"], e["seq"]) > (best["ts"], best["seq"]):
                    best = e
        return best

    def window(self, view_def, entity, w, as_of):
        """(value, events, seqs) of window w at as_of, by brute force."""
        size = duration_us(w["size"])
        inside = sorted((e for e in self.of(view_def["name"], entity)
                         if w["of"] in e["features"] and as_of - size < e["ts"] <= as_of),
                        key=lambda e: (e["ts"], e["seq"]))
        values = [e["features"][w["of"]] for e in inside]
        fn = w["fn"]
        if fn == "count":
            value = len(values)
        elif fn == "sum":
            value = sum(values) if values else 0
        elif not values:
            value = None
        elif fn == "avg":
            value = math.fsum(values) / len(values)
        elif fn == "min":
            value = min(values)
        elif fn == "max":
            value = max(values)
        elif fn == "last":
            value = values[-1]
        elif fn == "last_n":
            value = list(reversed(values))[:w.get("n", 1)]
        elif fn == "stddev":
            value = statistics.pstdev(values)
        else:
            raise AssertionError(f"unknown window function {fn}")
        return value, len(values), sorted(e["seq"] for e in inside)


def assert_number(test, actual, expected, context):
    if expected is None:
        test.assertIsNone(actual, context)
        return
    test.assertIsInstance(actual, (int, float), context)
    test.assertNotIsInstance(actual, bool, context)
    test.assertTrue(math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9),
                    f"{context}: {actual!r} != {expected!r}")


# ---------------------------------------------------------------------------
# the base class
# ---------------------------------------------------------------------------

class QueryCase(unittest.TestCase):
    """One nats-server + command-svc + query-svc(s) per TestCase class, views registered."""

    n_query = 1
    views = (UA_VIEW,)
    query_args = ()
    maxDiff = 6000

    @classmethod
    def setUpClass(cls):
        cls.env = QueryEnv(COMMAND_BINARY, QUERY_BINARY, n_query=cls.n_query,
                           query_args=cls.query_args)
        try:
            cls.admin = cls.env.http("admin")
            cls.producer = cls.env.http("clicks-pipeline", keep_alive=True)
            cls.cmd_auditor = cls.env.http("aud")
            cls.oracle = Oracle()
            cls.view_defs = {}
            for v in cls.views:
                status, _, body = cls.admin.json("POST", "/v1/views", v)
                if status != 201:
                    raise AssertionError(f"registering view {v['name']}: {status} {body}")
                cls.view_defs[v["name"]] = v
        except BaseException:
            cls.env.close(check=False)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.producer.close()
        cls.env.close()

    def tearDown(self):
        # A sanitizer report (UBSan "runtime error:", ASan, ...) in a
        # service's stderr fails the test that caused it, not only the class.
        self.env.assert_no_sanitizer_reports()

    # -- writing --
    def write(self, events, who=None):
        """Posts one batch (a list of (view, entity, ts µs, features)); returns the seqs."""
        body = {"events": [{"view": v, "entity_id": ent, "event_ts": time_text(ts),
                            "features": f} for v, ent, ts, f in events]}
        status, _, answer = (who or self.producer).json("POST", "/v1/events", body)
        self.assertEqual(status, 201, f"POST /v1/events: {answer}")
        seqs = [r["seq"] for r in answer["results"]]
        self.assertEqual(len(seqs), len(events))
        for (v, ent, ts, f), seq in zip(events, seqs):
            self.oracle.add(v, ent, ts, seq, f)
        return seqs

    def write1(self, view, entity, ts, features):
        return self.write([(view, entity, ts, features)])[0]

    # -- reading --
    def get(self, who, view, entity, svc=None, **params):
        """GET /v1/features/<view>/<entity>?params as who; returns the Response."""
        path = f"/v1/features/{view}/{urllib.parse.quote(str(entity), safe='')}"
        if params:
            path += "?" + urllib.parse.urlencode(params)
        return self.env.qhttp(who, svc).get(path)

    def read(self, who, view, entity, svc=None, **params):
        """A read that must be 200; returns the parsed answer."""
        r = self.get(who, view, entity, svc, **params)
        self.assertEqual(r.status, 200, f"GET {view}/{entity} {params}: {r}")
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"))
        return r.json()

    def assert_error(self, r, status, context=""):
        """§9 error answer with the given status."""
        self.assertEqual(r.status, status, f"{context}: {r}")
        body = r.json()
        self.assertEqual(set(body), {"error"}, f"{context}: {body}")
        self.assertIsInstance(body["error"].get("code"), str, context)
        self.assertTrue(body["error"].get("message"), context)
        return body["error"]

    # -- checking answers against the oracle --
    def check_feature(self, view, entity, name, obj, as_of, context):
        e = self.oracle.latest(view, entity, name, as_of)
        if e is None:
            self.assertEqual(obj.get("status"), "NOT_FOUND", f"{context}: {name} {obj}")
            self.assertIsNone(obj.get("value"), f"{context}: {name}")
            self.assertIsNone(obj.get("seq"), f"{context}: {name} NOT_FOUND with a seq")
            return
        max_age = self.view_defs[view].get("max_age")
        expected_status = ("OUTSIDE_MAX_AGE" if max_age and as_of - e["ts"] > duration_us(max_age)
                           else "PRESENT")
        self.assertEqual(obj.get("status"), expected_status, f"{context}: {name} {obj}")
        self.assertEqual(obj.get("seq"), e["seq"], f"{context}: {name} seq; {obj}")
        self.assertEqual(obj.get("event_ts"), time_text(e["ts"]), f"{context}: {name} event_ts")
        self.assertLessEqual(parse_time_text(obj["event_ts"]), as_of,
                             f"{context}: {name} from after as_of")
        expected = e["features"][name]
        if isinstance(expected, float):
            assert_number(self, obj.get("value"), expected, f"{context}: {name}")
        else:
            self.assertEqual(obj.get("value"), expected, f"{context}: {name}")
            self.assertEqual(type(obj.get("value")), type(expected), f"{context}: {name} type")

    def check_window(self, view, entity, w, obj, as_of, context):
        value, events, seqs = self.oracle.window(self.view_defs[view], entity, w, as_of)
        ctx = f"{context}: window {w['name']} {obj}"
        self.assertEqual(obj.get("from"), time_text(as_of - duration_us(w["size"])), ctx)
        self.assertEqual(obj.get("to"), time_text(as_of), ctx)
        self.assertEqual(obj.get("events"), events, ctx)
        if "seqs" in obj:
            self.assertEqual(sorted(obj["seqs"]), seqs, ctx)
        actual = obj.get("value")
        feature_type = self.view_defs[view]["features"][w["of"]]
        if w["fn"] == "count" or (w["fn"] == "sum" and feature_type == "int64"):
            self.assertIsInstance(actual, int, f"{ctx}: not an integer")
            self.assertNotIsInstance(actual, bool, ctx)
            self.assertEqual(actual, value, ctx)
        elif w["fn"] in ("avg", "stddev", "sum"):
            assert_number(self, actual, value, ctx)
        elif w["fn"] in ("min", "max") and feature_type == "int64":
            self.assertEqual(actual, value, ctx)
            if value is not None:
                self.assertIsInstance(actual, int, ctx)
        elif w["fn"] in ("min", "max"):
            assert_number(self, actual, value, ctx)
        else:  # last, last_n
            self.assertEqual(actual, value, ctx)

    def check_answer(self, answer, view, entity, as_of, features=None, windows=None,
                     context=""):
        """Every feature and window of an answer against the oracle at as_of."""
        vd = self.view_defs[view]
        self.assertEqual(answer.get("view"), view, context)
        self.assertEqual(answer.get("entity_id"), str(entity), context)
        self.assertEqual(answer.get("as_of"), time_text(as_of), context)
        if features is not None:
            self.assertEqual(set(answer["features"]), set(features), f"{context}: features")
        if windows is not None:
            self.assertEqual(set(answer.get("windows", {})), set(windows), f"{context}: windows")
        for name, obj in answer["features"].items():
            self.assertIn(name, vd["features"], context)
            self.check_feature(view, entity, name, obj, as_of, context)
        by_name = {w["name"]: w for w in vd.get("windows", [])}
        for name, obj in answer.get("windows", {}).items():
            self.assertIn(name, by_name, context)
            self.check_window(view, entity, by_name[name], obj, as_of, context)

    def caught_up(self, svc=None, timeout=30.0):
        return self.env.wait_caught_up(svc or self.env.query, timeout=timeout)


def answer_seqs(answer):
    """The seqs of the feature values an answer serves (CONTRACT §7: a
    record's served_seqs; window seqs are not listed, applied_seq covers them)."""
    seqs = set()
    for row in answer.get("rows", [answer]):
        for obj in row.get("features", {}).values():
            if obj.get("seq") is not None:
                seqs.add(obj["seq"])
    return sorted(seqs)


# ===========================================================================
# reads: latest, as_of, statuses, errors, windows, ACLs, Feast, batch,
# read your writes, proofs, history, read audit
# ===========================================================================

class ReadsTest(QueryCase):

    views = (UA_VIEW, STATS_VIEW, QUIET_VIEW)
    # Reads, waits and audited answers on two server threads at once.
    query_args = ("--http-threads", "2")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls._write_fixtures()
        except BaseException:
            cls.env.close(check=False)
            raise

    @classmethod
    def _write_fixtures(cls):
        """u-order: late events and equal event_ts; u-old: for max_age; stats: windows."""
        self = cls("run")  # a throwaway instance for the helpers
        t0 = (now_us() // US) * US - 2 * HOUR
        cls.t0 = t0
        ua = "user_activity"
        seqs = [
            self.write1(ua, "u-order", t0 + 100 * US,
                        {"dwell_ms": 1.5, "last_click": "a", "cart_items": 1}),
            self.write1(ua, "u-order", t0 + 300 * US, {"dwell_ms": 3.5, "last_click": "c"}),
            # late: older than what is there, must not overwrite it
            self.write1(ua, "u-order", t0 + 200 * US,
                        {"dwell_ms": 2.5, "last_click": "b", "cart_items": 2}),
            # same event_ts as the second, greater seq: wins
            self.write1(ua, "u-order", t0 + 300 * US, {"dwell_ms": 3.75}),
        ]
        # one batch, equal event_ts: the greater seq wins (latest, last, last_n)
        seqs += self.write([(ua, "u-order", t0 + 400 * US,
                             {"dwell_ms": 4.0, "is_mobile": False, "last_click": "e1"}),
                            (ua, "u-order", t0 + 400 * US, {"dwell_ms": 4.5, "last_click": "e2"})])
        # late again: older than the batch, newer than the rest
        seqs.append(self.write1(ua, "u-order", t0 + 350 * US,
                                {"is_mobile": True, "last_click": "d"}))
        cls.order_seqs = seqs
        # an integer entity id
        cls.int_seq = self.write1(ua, 42, t0 + 10 * US, {"dwell_ms": 42.5})
        # old enough for max_age (24h)
        cls.old_ts = (now_us() // US) * US - 2 * 24 * HOUR
        cls.old_seq = self.write1(ua, "u-old", cls.old_ts, {"dwell_ms": 9.25})
        # the quiet view
        cls.quiet_seq = self.write1("quiet", "q1", t0, {"score": 0.5})

        # ~50 deterministic events for the stats windows, posted out of order
        rng = random.Random(SEED)
        s0 = t0 - HOUR
        cls.s0 = s0
        events = []
        for i in range(50):
            if i % 7 == 3 and events:
                ts = events[rng.randrange(len(events))][2]  # an equal event_ts
            else:
                ts = s0 + rng.randrange(0, 30 * 60) * US + rng.choice([0, 250_000, 500_000])
            feats = {}
            while not feats:
                if rng.random() < 0.7:
                    feats["qty"] = rng.randint(-50, 1000)
                if rng.random() < 0.7:
                    feats["price"] = rng.randrange(-400, 4000) / 4
                if rng.random() < 0.6:
                    feats["tag"] = f"t{i}"
            events.append(("stats", "item-1", ts, feats))
        rng.shuffle(events)
        for i in range(0, len(events), 17):
            self.write(events[i:i + 17])
        cls.stats_ts = sorted(e[2] for e in events)
        cls.env.wait_caught_up(cls.env.query)

    # -- latest and as_of ----------------------------------------------------

    def test_latest_value_late_events_and_ties(self):
        last = max(self.order_seqs)
        t0 = self.t0
        a = self.read("fraud-analyst", "user_activity", "u-order", min_seq=last)
        self.assertGreaterEqual(a["applied_seq"], last)
        self.assertRegex(a["read_id"], r"^\S+$")
        f = a["features"]
        # hand-checked expectations (the oracle is checked too, below)
        self.assertEqual(f["dwell_ms"]["value"], 4.5, f)
        self.assertEqual(f["dwell_ms"]["seq"], self.order_seqs[5])
        self.assertEqual(f["dwell_ms"]["event_ts"], time_text(t0 + 400 * US))
        self.assertEqual(f["last_click"]["value"], "e2")
        self.assertEqual(f["last_click"]["seq"], self.order_seqs[5])
        self.assertIs(f["is_mobile"]["value"], False, "a late event overwrote a newer one")
        self.assertEqual(f["is_mobile"]["seq"], self.order_seqs[4])
        self.assertEqual(f["cart_items"]["value"], 2, "the late event is the newest here")
        self.assertEqual(f["cart_items"]["seq"], self.order_seqs[2])
        self.assertEqual(f["embedding"]["status"], "NOT_FOUND")
        self.assertIsNone(f["embedding"]["value"])
        for name in ("dwell_ms", "last_click", "is_mobile", "cart_items"):
            self.assertEqual(f[name]["status"], "PRESENT", name)
        self.check_answer(a, "user_activity", "u-order", parse_time_text(a["as_of"]),
                          features=UA_VIEW["features"],
                          windows=[w["name"] for w in UA_VIEW["windows"]], context="latest")

    def test_values_are_served_as_the_signed_text(self):
        """A value is the exact JSON text of its event's body: 0.1 stays 0.1, strings keep escapes."""
        text = 'quote " back \\ tab \t caf\u00e9 \u2028 end'
        seq = self.write1("user_activity", "u-text", now_us() - 5 * US,
                          {"dwell_ms": 0.1, "last_click": text, "cart_items": -7})
        r = self.get("fraud-analyst", "user_activity", "u-text", min_seq=seq,
                     features="dwell_ms,last_click,cart_items")
        self.assertEqual(r.status, 200, r)
        self.assertIn(b'"dwell_ms":{"value":0.1,"status":"PRESENT"', r.body)
        self.assertIn(b'"cart_items":{"value":-7,"status":"PRESENT"', r.body)
        f = r.json()["features"]
        self.assertEqual(f["last_click"]["value"], text)
        self.assertEqual(f["dwell_ms"]["seq"], seq)
        # the same bytes with proofs, in a batch and in Feast's columns
        r = self.get("fraud-analyst", "user_activity", "u-text", proof=1,
                     features="dwell_ms,last_click,cart_items")
        self.assertEqual(r.status, 200, r)
        self.assertIn(b'"dwell_ms":{"value":0.1,"status":"PRESENT"', r.body)
        f = r.json()["features"]
        self.assertEqual(f["last_click"]["value"], text)
        self.assertEqual(f["dwell_ms"]["proof"]["leaf_index"], seq - 1)
        q = self.env.qhttp("fraud-analyst")
        r = q.request("POST", "/v1/features:batch", json.dumps(
            {"view": "user_activity", "entity_ids": ["u-text"], "features": ["dwell_ms"]}).encode(),
            {"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        self.assertIn(b'"dwell_ms":{"value":0.1,', r.body)
        r = q.request("POST", "/get-online-features", json.dumps(
            {"features": ["user_activity:dwell_ms", "user_activity:cart_items"],
             "entities": {"user_id": ["u-text"]}}).encode(), {"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        self.assertIn(b'{"values":[0.1],"statuses":["PRESENT"]', r.body)
        self.assertIn(b'{"values":[-7],"statuses":["PRESENT"]', r.body)

    def test_as_of_points_in_time(self):
        t0 = self.t0
        points = [t0 + 50 * US, t0 + 100 * US, t0 + 150 * US, t0 + 200 * US - 1,
                  t0 + 250 * US, t0 + 300 * US, t0 + 349_999_999, t0 + 350 * US,
                  t0 + 399 * US, t0 + 400 * US, t0 + 400 * US + 1, t0 + 10 * MINUTE]
        for as_of in points:
            with self.subTest(as_of=time_text(as_of)):
                a = self.read("fraud-analyst", "user_activity", "u-order",
                              as_of=time_text(as_of), min_seq=max(self.order_seqs), proof=1)
                self.check_answer(a, "user_activity", "u-order", as_of,
                                  features=UA_VIEW["features"], context=f"as_of {as_of}")
                # nothing after as_of is visible, in features or windows
                for name, obj in a["features"].items():
                    if obj.get("event_ts"):
                        self.assertLessEqual(parse_time_text(obj["event_ts"]), as_of, name)
                for name, obj in a["windows"].items():
                    for s in obj.get("seqs", []):
                        e = next(e for e in self.oracle.events if e["seq"] == s)
                        self.assertLessEqual(e["ts"], as_of, f"window {name} seq {s}")
        # explicit: before everything, between events, at a tie
        a = self.read("ranker", "user_activity", "u-order", as_of=time_text(t0 + 50 * US))
        self.assertTrue(all(o["status"] == "NOT_FOUND" for o in a["features"].values()), a)
        a = self.read("ranker", "user_activity", "u-order", as_of=time_text(t0 + 250 * US))
        self.assertEqual(a["features"]["dwell_ms"]["value"], 2.5)
        self.assertEqual(a["features"]["last_click"]["value"], "b")
        self.assertEqual(a["windows"]["last_5_clicks"]["value"], ["b", "a"])
        a = self.read("ranker", "user_activity", "u-order", as_of=time_text(t0 + 300 * US))
        self.assertEqual(a["features"]["dwell_ms"]["value"], 3.75)
        a = self.read("ranker", "user_activity", "u-order", as_of=time_text(t0 + 399 * US))
        self.assertEqual(a["features"]["is_mobile"]["value"], True)
        self.assertEqual(a["features"]["last_click"]["value"], "d")
        a = self.read("ranker", "user_activity", "u-order", as_of=time_text(t0 + 400 * US))
        self.assertEqual(a["windows"]["last_5_clicks"]["value"], ["e2", "e1", "d", "c", "b"])
        self.assertEqual(a["windows"]["clicks_5m"]["value"], 5)  # "a" at as_of - 5m is out
        self.assertEqual(a["features"]["is_mobile"]["value"], False)

    def test_statuses(self):
        # an entity never written: every feature NOT_FOUND, empty windows
        a = self.read("fraud-analyst", "user_activity", "u-never-written")
        self.assertEqual(set(a["features"]), set(UA_VIEW["features"]))
        for name, obj in a["features"].items():
            self.assertEqual(obj["status"], "NOT_FOUND", name)
            self.assertIsNone(obj["value"], name)
        self.assertEqual(a["windows"]["clicks_5m"]["value"], 0)
        self.assertEqual(a["windows"]["items_sum_10m"]["value"], 0)
        self.assertIsNone(a["windows"]["dwell_avg_1h"]["value"])
        self.assertIsNone(a["windows"]["last_5_clicks"]["value"])
        # a feature never written for a written entity
        a = self.read("ranker", "user_activity", "u-old", features="embedding,dwell_ms")
        self.assertEqual(set(a["features"]), {"embedding", "dwell_ms"})
        self.assertEqual(a["features"]["embedding"]["status"], "NOT_FOUND")
        # older than max_age (24h) relative to as_of, value still given
        f = a["features"]["dwell_ms"]
        self.assertEqual(f["status"], "OUTSIDE_MAX_AGE", f)
        self.assertEqual(f["value"], 9.25)
        self.assertEqual(f["seq"], self.old_seq)
        self.assertEqual(f["event_ts"], time_text(self.old_ts))
        cases = [(self.old_ts - US, "NOT_FOUND"), (self.old_ts, "PRESENT"),
                 (self.old_ts + 23 * HOUR, "PRESENT"), (self.old_ts + 24 * HOUR, "PRESENT"),
                 (self.old_ts + 24 * HOUR + 1, "OUTSIDE_MAX_AGE")]
        for as_of, status in cases:
            a = self.read("ranker", "user_activity", "u-old", features="dwell_ms",
                          windows="", as_of=time_text(as_of))
            self.assertEqual(a["features"]["dwell_ms"]["status"], status,
                             f"as_of event_ts{(as_of - self.old_ts) / HOUR:+.6f}h: {a}")
        # an integer entity id reads as its decimal string
        a = self.read("ranker", "user_activity", 42, features="dwell_ms")
        self.assertEqual(a["entity_id"], "42")
        self.assertEqual(a["features"]["dwell_ms"]["value"], 42.5)
        # entity ids that need URL encoding (quoted by get())
        odd = ["a/b", "\u00fc ser", "x?y&z=1", "p%41", "#1"]
        seqs = self.write([("user_activity", ent, self.t0, {"dwell_ms": float(i)})
                           for i, ent in enumerate(odd)])
        for i, ent in enumerate(odd):
            a = self.read("ranker", "user_activity", ent, features="dwell_ms", windows="",
                          min_seq=seqs[-1])
            self.assertEqual(a["entity_id"], ent)
            self.assertEqual((a["features"]["dwell_ms"]["value"], a["features"]["dwell_ms"]["seq"]),
                             (float(i), seqs[i]), ent)
        # as_of with a zone offset is the same instant
        as_of = self.old_ts + 24 * HOUR + 1
        local = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(as_of // US + 2 * 3600))
        a = self.read("ranker", "user_activity", "u-old", features="dwell_ms", windows="",
                      as_of=f"{local}.000001+02:00")
        self.assertEqual(a["as_of"], time_text(as_of))
        self.assertEqual(a["features"]["dwell_ms"]["status"], "OUTSIDE_MAX_AGE")

    def test_errors(self):
        cases = [
            ("unknown view", "/v1/features/no_such_view/u1", 404),
            ("unknown feature", "/v1/features/user_activity/u1?features=no_such", 400),
            ("unknown window", "/v1/features/user_activity/u1?windows=no_such", 400),
            ("feature name as window", "/v1/features/user_activity/u1?windows=dwell_ms", 400),
            ("entity id of 300 bytes", "/v1/features/user_activity/" + "x" * 300, 400),
            ("entity id with a control character", "/v1/features/user_activity/a%01b", 400),
            ("bad as_of", "/v1/features/user_activity/u1?as_of=yesterday", 400),
            ("as_of without a zone", "/v1/features/user_activity/u1?as_of=2026-11-26T21:00:00",
             400),
            ("bad min_seq", "/v1/features/user_activity/u1?min_seq=abc", 400),
        ]
        ranker = self.env.qhttp("ranker")
        for name, path, status in cases:
            with self.subTest(name):
                self.assert_error(ranker.get(path), status, name)
        # a 256-byte entity id is fine
        self.read("ranker", "user_activity", "y" * 256, features="dwell_ms")

    # -- windows -------------------------------------------------------------

    def test_windows_against_brute_force(self):
        s0, ts = self.s0, self.stats_ts
        mid = ts[len(ts) // 2]
        points = [s0 - US, s0 + 5 * MINUTE, s0 + 10 * MINUTE + 500_000, mid,
                  mid + 10 * MINUTE,              # an event exactly at the exclusive bound
                  mid + 10 * MINUTE - 1,          # ... and just inside it
                  ts[-1], s0 + 35 * MINUTE, s0 + 2 * HOUR + 1]
        names = [w["name"] for w in STATS_VIEW["windows"]]
        for as_of in points:
            with self.subTest(as_of=time_text(as_of)):
                a = self.read("ranker", "stats", "item-1", as_of=time_text(as_of), proof=1)
                self.check_answer(a, "stats", "item-1", as_of,
                                  features=STATS_VIEW["features"], windows=names,
                                  context=f"stats as_of {time_text(as_of)}")
                for name, obj in a["windows"].items():
                    self.assertIn("seqs", obj, f"{name}: proof=1 without the window's seqs")
        # an empty window: count and sum 0, the others null
        a = self.read("ranker", "stats", "item-1", as_of=time_text(s0 + 3 * HOUR))
        for name, obj in a["windows"].items():
            fn = next(w["fn"] for w in STATS_VIEW["windows"] if w["name"] == name)
            self.assertEqual(obj["events"], 0, name)
            if fn in ("count", "sum"):
                self.assertEqual(obj["value"], 0, name)
            else:
                self.assertIsNone(obj["value"], name)
        # the data did exercise every function (not all windows empty)
        a = self.read("ranker", "stats", "item-1", as_of=time_text(mid))
        self.assertGreater(a["windows"]["n_tag_1h"]["value"], 3)
        self.assertEqual(len(a["windows"]["tag_last3"]["value"]), 3)

    # -- ACLs ----------------------------------------------------------------

    def test_acl(self):
        restricted_window = "items_sum_10m"
        a = self.read("ranker", "user_activity", "u-order")
        self.assertEqual(set(a["features"]), set(UA_VIEW["features"]) - {"cart_items"})
        self.assertEqual(set(a["windows"]),
                         {w["name"] for w in UA_VIEW["windows"]} - {restricted_window})
        # asking for it by name
        for params in ({"features": "cart_items"}, {"features": "dwell_ms,cart_items"},
                       {"windows": restricted_window}):
            with self.subTest(params=params):
                self.assert_error(self.get("ranker", "user_activity", "u-order", **params), 403)
        # role:fraud sees it
        a = self.read("fraud-analyst", "user_activity", "u-order",
                      features="cart_items", windows=restricted_window,
                      as_of=time_text(self.t0 + 300 * US))
        self.assertEqual(a["features"]["cart_items"]["value"], 2)
        self.assertEqual(a["windows"][restricted_window]["value"], 3)
        # a reader the view's read ACL does not list; an auditor (no reader role)
        self.assert_error(self.get("outsider", "user_activity", "u-order"), 403, "outsider")
        self.assert_error(self.get("aud", "user_activity", "u-order"), 403, "auditor")
        self.assert_error(self.get("clicks-pipeline", "user_activity", "u-order"), 403,
                          "producer")
        # no token, an unknown token
        r = self.get(None, "user_activity", "u-order")
        self.assert_error(r, 401, "no token")
        r = self.env.qhttp().get("/v1/features/user_activity/u-order", token="nope-" + "0" * 20)
        self.assert_error(r, 401, "unknown token")
        # the same rules on the batch and Feast routes
        q = self.env.qhttp("ranker")
        status, _, body = q.json("POST", "/v1/features:batch",
                                 {"view": "user_activity", "entity_ids": ["u-order"],
                                  "features": ["cart_items"]})
        self.assertEqual(status, 403, body)
        status, _, body = q.json("POST", "/get-online-features",
                                 {"features": ["user_activity:cart_items"],
                                  "entities": {"user_id": ["u-order"]}})
        self.assertEqual(status, 403, body)
        status, _, body = q.json("POST", "/get-online-features",
                                 {"features": [f"user_activity:{restricted_window}"],
                                  "entities": {"user_id": ["u-order"]}})
        self.assertEqual(status, 403, body)
        status, _, body = self.env.qhttp("outsider").json(
            "POST", "/v1/features:batch", {"view": "user_activity", "entity_ids": ["u-order"]})
        self.assertEqual(status, 403, body)
        status, _, body = self.env.qhttp().json(
            "POST", "/v1/features:batch", {"view": "user_activity", "entity_ids": ["u-order"]})
        self.assertEqual(status, 401, body)

    # -- Feast and batch -----------------------------------------------------

    def test_feast_get_online_features(self):
        ua = "user_activity"
        t = now_us()
        seqs = self.write([(ua, "u-feast", t - 60 * US, {"dwell_ms": 7.0, "last_click": "x"}),
                           (ua, "u-feast", t - 30 * US, {"last_click": "y"})])
        self.read("ranker", ua, "u-feast", min_seq=seqs[-1], features="dwell_ms")
        ids = ["u-order", "u-never", 42, "u-feast"]
        q = self.env.qhttp("ranker")
        before = now_us()
        status, headers, body = q.json("POST", "/get-online-features", {
            "features": ["user_activity:dwell_ms", "user_activity:clicks_5m"],
            "entities": {"user_id": ids}})
        after = now_us()
        self.assertEqual(status, 200, body)
        self.assertEqual(body["metadata"]["feature_names"], ["user_id", "dwell_ms", "clicks_5m"])
        results = body["results"]
        self.assertEqual(len(results), 3)
        for r in results:
            self.assertEqual(set(r), {"values", "statuses", "event_timestamps"}, r)
            for k in r:
                self.assertEqual(len(r[k]), len(ids), (k, r))
        self.assertEqual(results[0]["values"], ids)
        dwell, clicks = results[1], results[2]
        for i, ent in enumerate(ids):
            e = self.oracle.latest(ua, ent, "dwell_ms", after)
            if e is None:
                self.assertEqual(dwell["statuses"][i], "NOT_FOUND", ent)
                self.assertIsNone(dwell["values"][i], ent)
            else:
                self.assertEqual(dwell["statuses"][i], "PRESENT", ent)
                self.assertEqual(dwell["values"][i], e["features"]["dwell_ms"], ent)
                self.assertEqual(parse_time_text(dwell["event_timestamps"][i]), e["ts"], ent)
            # a window column: PRESENT, its value, the read's as_of as its timestamp
            self.assertEqual(clicks["statuses"][i], "PRESENT", ent)
            as_of = parse_time_text(clicks["event_timestamps"][i])
            self.assertTrue(before - US <= as_of <= after + US, clicks["event_timestamps"][i])
            expected, _, _ = self.oracle.window(self.view_defs[ua], ent, UA_VIEW["windows"][0],
                                                as_of)
            self.assertEqual(clicks["values"][i], expected, ent)
        self.assertEqual(clicks["values"][3], 2)
        # full feature names
        status, _, body = q.json("POST", "/get-online-features", {
            "features": ["user_activity:dwell_ms", "user_activity:clicks_5m"],
            "entities": {"user_id": ["u-order"]}, "full_feature_names": True})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["metadata"]["feature_names"],
                         ["user_id", "user_activity__dwell_ms", "user_activity__clicks_5m"])
        self.assertEqual(body["results"][1]["values"], [4.5])
        # more than 1000 ids; an unknown view; an unknown feature
        status, _, body = q.json("POST", "/get-online-features", {
            "features": ["user_activity:dwell_ms"],
            "entities": {"user_id": [f"u{i}" for i in range(1001)]}})
        self.assertEqual(status, 400, body)
        status, _, body = q.json("POST", "/get-online-features", {
            "features": ["user_activity:dwell_ms"],
            "entities": {"user_id": [f"u{i}" for i in range(1000)]}})
        self.assertEqual(status, 200, str(body)[:300])
        status, _, body = q.json("POST", "/get-online-features", {
            "features": ["no_such_view:dwell_ms"], "entities": {"user_id": ["u1"]}})
        self.assertEqual(status, 404, body)
        status, _, body = q.json("POST", "/get-online-features", {
            "features": ["user_activity:no_such"], "entities": {"user_id": ["u1"]}})
        self.assertEqual(status, 400, body)

    def test_batch_read(self):
        q = self.env.qhttp("ranker")
        as_of = self.t0 + 300 * US
        ids = ["u-order", 42, "u-never", "u-old"]
        status, _, body = q.json("POST", "/v1/features:batch", {
            "view": "user_activity", "entity_ids": ids, "as_of": time_text(as_of)})
        self.assertEqual(status, 200, body)
        self.assertIsInstance(body.get("applied_seq"), int, body)
        self.assertIsInstance(body.get("read_id"), str, body)
        self.assertEqual(len(body["rows"]), len(ids))
        for ent, row in zip(ids, body["rows"]):
            self.assertNotIn("applied_seq", row)
            self.assertNotIn("read_id", row)
            self.check_answer(row, "user_activity", ent, as_of,
                              features=set(UA_VIEW["features"]) - {"cart_items"},
                              context=f"batch row {ent}")
            single = self.read("ranker", "user_activity", ent, as_of=time_text(as_of))
            self.assertEqual(row["features"], single["features"], ent)
            self.assertEqual(row["windows"], single["windows"], ent)
        # features and windows lists
        status, _, body = q.json("POST", "/v1/features:batch", {
            "view": "user_activity", "entity_ids": ["u-order"], "features": ["dwell_ms"],
            "windows": ["clicks_5m"]})
        self.assertEqual(status, 200, body)
        self.assertEqual(set(body["rows"][0]["features"]), {"dwell_ms"})
        self.assertEqual(set(body["rows"][0]["windows"]), {"clicks_5m"})
        # limits and errors
        status, _, body = q.json("POST", "/v1/features:batch", {
            "view": "user_activity", "entity_ids": [f"u{i}" for i in range(1001)]})
        self.assertEqual(status, 400, body)
        for bad in ({"view": "no_such", "entity_ids": ["u1"]},
                    {"view": "user_activity", "entity_ids": ["u1"], "features": ["nope"]},
                    {"view": "user_activity", "entity_ids": ["x" * 300]},
                    {"view": "user_activity", "entity_ids": ["u1"], "as_of": "soon"}):
            status, _, body = q.json("POST", "/v1/features:batch", bad)
            self.assertEqual(status, 404 if bad["view"] == "no_such" else 400, (bad, body))

    # -- read your writes ----------------------------------------------------

    def test_read_your_writes(self):
        q = self.env.qhttp("ranker", keep_alive=True)
        for i in range(8):
            value = 100.0 + i
            seq = self.write1("user_activity", "u-ryw", now_us(), {"dwell_ms": value})
            r = q.get(f"/v1/features/user_activity/u-ryw?features=dwell_ms&min_seq={seq}"
                      "&wait_ms=5000")
            self.assertEqual(r.status, 200, r)
            a = r.json()
            self.assertGreaterEqual(a["applied_seq"], seq)
            self.assertEqual(a["features"]["dwell_ms"]["value"], value)
            self.assertEqual(a["features"]["dwell_ms"]["seq"], seq)
        q.close()
        far = self.env.tree_size() + 1_000_000
        start = time.monotonic()
        r = self.get("ranker", "user_activity", "u-ryw", min_seq=far, wait_ms=300)
        elapsed = time.monotonic() - start
        self.assert_error(r, 504, "min_seq far beyond")
        self.assertGreaterEqual(elapsed, 0.2, "504 long before wait_ms")
        self.assertLess(elapsed, 10.0, "504 long after wait_ms")

    # -- proofs ----------------------------------------------------------------

    def test_proofs(self):
        a = self.read("fraud-analyst", "user_activity", "u-order", proof=1,
                      min_seq=max(self.order_seqs))
        cp = a.get("checkpoint")
        self.assertIsInstance(cp, dict, f"proof=1 without a checkpoint: {a}")
        verifier = Verifier.from_service(self.env.http(), self.env.tmp.path)
        self.assertEqual(verifier.check_checkpoint(cp), [], "checkpoint signature")
        root = bytes.fromhex(cp["root_hash"])
        log = {l["seq"]: l for l in read_log(self.cmd_auditor)}
        present = 0
        for name, obj in a["features"].items():
            if obj["status"] == "NOT_FOUND":
                self.assertNotIn("proof", obj, name)
                continue
            present += 1
            proof = obj.get("proof")
            self.assertIsInstance(proof, dict, f"{name}: no proof")
            line = proof["line"]
            self.assertEqual(line["seq"], obj["seq"], name)
            body = base64.b64decode(line["body"])
            self.assertEqual(leaf_hash(body).hex(), line["leaf_hash"], f"{name}: leaf hash")
            ev = json.loads(body)
            self.assertEqual((ev["seq"], ev["view"], ev["entity_id"]),
                             (obj["seq"], "user_activity", "u-order"), name)
            self.assertEqual(ev["features"][name], obj["value"], f"{name}: value vs body")
            self.assertEqual(ev["event_ts"], obj["event_ts"], name)
            self.assertEqual(proof["leaf_index"], obj["seq"] - 1, name)
            self.assertEqual(proof["tree_size"], cp["tree_size"], name)
            self.assertTrue(verify_inclusion(proof["leaf_index"], proof["tree_size"],
                                             leaf_hash(body),
                                             [bytes.fromhex(h) for h in proof["hashes"]], root),
                            f"{name}: inclusion proof does not verify")
            self.assertEqual(verifier.check_line(line), [], f"{name}: line signature")
            self.assertEqual(line, log[obj["seq"]], f"{name}: line differs from command-svc's")
        self.assertEqual(present, 4)
        # the checkpoint is command-svc's: same root at that size
        self.assertEqual(merkle_root([bytes.fromhex(log[s]["leaf_hash"])
                                      for s in range(1, cp["tree_size"] + 1)]).hex(),
                         cp["root_hash"], "checkpoint root is not the log's")
        # window seqs with proof=1
        as_of = self.t0 + 500 * US
        a = self.read("fraud-analyst", "user_activity", "u-order", proof=1,
                      as_of=time_text(as_of))
        for w in UA_VIEW["windows"]:
            self.assertIn("seqs", a["windows"][w["name"]], w["name"])
            self.assertEqual(sorted(a["windows"][w["name"]]["seqs"]),
                             self.oracle.window(UA_VIEW, "u-order", w, as_of)[2], w["name"])
        # its read record lists the feature values only; the windows' events
        # are named by applied_seq (CONTRACT §7)
        window_seqs = {s for w in a["windows"].values() for s in w.get("seqs", [])}
        self.assertTrue(window_seqs - set(answer_seqs(a)), "no window-only seq to check")
        rec = [r for r in map(decode_body, self.audit_lines()) if r["read_id"] == a["read_id"]]
        self.assertEqual(len(rec), 1, "one record of the proof=1 read")
        self.assertEqual(rec[0]["served_seqs"], answer_seqs(a))
        self.assertEqual(rec[0]["applied_seq"], a["applied_seq"])

    # -- history -----------------------------------------------------------------

    def test_history(self):
        r = self.env.qhttp("aud").get("/v1/history/user_activity/u-order")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/x-ndjson"),
                        r.headers)
        lines = parse_ndjson(r.body)
        self.assertEqual(sorted(l["seq"] for l in lines), sorted(self.order_seqs))
        log = {l["seq"]: l for l in read_log(self.cmd_auditor)}
        for l in lines:
            self.assertEqual(l, log[l["seq"]], f"history line {l['seq']} differs from the log")
        verifier = Verifier.from_service(self.env.http(), self.env.tmp.path)
        self.assertEqual(verifier.check_lines(lines), [])
        # admin too; a reader may not; no token
        self.assertEqual(self.env.qhttp("admin").get("/v1/history/user_activity/u-order").status,
                         200)
        self.assert_error(self.env.qhttp("ranker").get("/v1/history/user_activity/u-order"),
                          403, "reader")
        self.assert_error(self.env.qhttp().get("/v1/history/user_activity/u-order"), 401)
        self.assert_error(self.env.qhttp("aud").get("/v1/history/no_such/u-order"), 404)
        r = self.env.qhttp("aud").get("/v1/history/user_activity/u-never")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(parse_ndjson(r.body), [])

    # -- read audit ----------------------------------------------------------------

    def audit_lines(self):
        r = self.env.qhttp("aud").get("/v1/audit/reads")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/x-ndjson"))
        return parse_ndjson(r.body)

    def test_read_audit(self):
        ent = "u-order"
        path = f"/v1/features/user_activity/{ent}"
        # an allowed read (with every seq shown), a 403 (view ACL), a 403 (feature
        # ACL), a 401, a batch read, a read of the quiet view
        ok = self.env.qhttp("ranker").get(path + f"?proof=1&as_of={time_text(self.t0 + 500 * US)}")
        self.assertEqual(ok.status, 200, ok)
        ok_answer = ok.json()
        denied = self.env.qhttp("outsider").get(path)
        self.assertEqual(denied.status, 403, denied)
        denied_feature = self.env.qhttp("ranker").get(path + "?features=cart_items")
        self.assertEqual(denied_feature.status, 403, denied_feature)
        anon = self.env.qhttp().get(path)
        self.assertEqual(anon.status, 401, anon)
        batch = self.env.qhttp("ranker").request(
            "POST", "/v1/features:batch",
            json.dumps({"view": "user_activity", "entity_ids": [ent, "u-never"],
                        "features": ["dwell_ms"], "windows": []}),
            headers={"Content-Type": "application/json"})
        self.assertEqual(batch.status, 200, batch)
        quiet = self.read("ranker", "quiet", "q1", min_seq=self.quiet_seq)
        self.assertEqual(quiet["features"]["score"]["value"], 0.5)

        # answered, hence recorded: no waiting
        lines = self.audit_lines()
        records = [decode_body(l) for l in lines]
        by_id = {rec["read_id"]: rec for rec in records}

        rec = by_id.get(ok_answer["read_id"])
        self.assertIsNotNone(rec, f"no audit record for read {ok_answer['read_id']}")
        self.assertEqual(rec["kind"], "read")
        self.assertEqual(rec["principal"], "ranker")
        self.assertTrue(rec["route"].startswith("/v1/features"), rec["route"])
        self.assertEqual(rec["view"], "user_activity")
        self.assertEqual(rec["entity_ids"], [ent])
        self.assertEqual(set(rec["features"]), set(ok_answer["features"]))
        self.assertEqual(set(rec["windows"]), set(ok_answer["windows"]))
        self.assertEqual(rec["served_seqs"], answer_seqs(ok_answer))
        self.assertTrue(rec["served_seqs"], "the read served values")
        # §7: the log prefix the answer was computed from, in the record itself
        self.assertEqual(rec["applied_seq"], ok_answer["applied_seq"])
        self.assertEqual(rec["answer_sha256"], sha256_hex(ok.body))
        self.assertEqual(rec["status"], 200)
        ts = parse_time_text(rec["ts"])
        self.assertLess(abs(ts - now_us()), 60 * US, rec["ts"])

        b = json.loads(batch.body)
        rec = by_id.get(b["read_id"])
        self.assertIsNotNone(rec, "no audit record for the batch read")
        self.assertEqual(rec["route"], "/v1/features:batch")
        self.assertEqual(rec["entity_ids"], [ent, "u-never"])
        self.assertEqual(rec["served_seqs"], answer_seqs(b))
        self.assertEqual(rec["applied_seq"], b["applied_seq"])
        self.assertEqual(rec["answer_sha256"], sha256_hex(batch.body))

        self.assertNotIn(quiet["read_id"], by_id, "a read of an audit_reads:false view recorded")

        first = by_id[ok_answer["read_id"]]["seq"]

        def find(status, principal, body):
            """The record of one of the denials above (identical bodies before it are older)."""
            hits = [r for r in records if r["seq"] > first and r["status"] == status
                    and r["principal"] == principal and r["answer_sha256"] == sha256_hex(body)]
            self.assertEqual(len(hits), 1, f"records of the {status} of {principal}: {hits}")
            return hits[0]

        for label, resp, status, principal in (
                ("403 view ACL", denied, 403, "outsider"),
                ("403 feature ACL", denied_feature, 403, "ranker"),
                ("401", anon, 401, None)):
            with self.subTest(label):
                rec = find(status, principal, resp.body)
                self.assertEqual(rec["kind"], "read")
                self.assertTrue(rec["route"].startswith("/v1/features"), rec)
                self.assertEqual(rec["served_seqs"], [], rec)
                self.assertEqual(rec["applied_seq"], 0, rec)  # computed nothing
                self.assertRegex(rec["read_id"], r"^\S+$")
        # What a denied read asked for (§7: view, entity ids, feature names of
        # every read, denials included).
        for label, resp, status, principal, features in (
                ("403 view ACL", denied, 403, "outsider", None),
                ("403 feature ACL", denied_feature, 403, "ranker", ["cart_items"]),
                ("401", anon, 401, None, None)):
            with self.subTest(f"{label} names what was asked"):
                rec = find(status, principal, resp.body)
                self.assertEqual(rec["view"], "user_activity", f"{label}: {rec}")
                self.assertEqual(rec["entity_ids"], [ent], f"{label}: {rec}")
                for name in features or []:
                    self.assertIn(name, rec["features"], f"{label}: {rec}")

        # the read log: lines, signatures, chain, checkpoint, proofs
        self.assertEqual([l["seq"] for l in lines], list(range(1, len(lines) + 1)),
                         "read log seqs have gaps")
        r = self.env.qhttp().get("/v1/audit/keys")
        self.assertEqual(r.status, 200, r)
        keys = {k["key_id"]: k["public_key_pem"] for k in r.json()["keys"]}
        own = key_id_of(public_pem_of(self.env.query.key_path))
        self.assertIn(own, keys, "the read log's key is not query-svc's own")
        self.assertNotIn(key_id_of(public_pem_of(self.env.key_path)), keys)
        verifier = Verifier(keys, self.env.tmp.path)
        for l in lines:  # format v2: the checkpoint's signature covers the lines
            self.assertEqual(set(l), {"seq", "body", "leaf_hash"})
        self.assertEqual(verifier.check_lines(lines[-40:]), [])
        status, cp = self.env.qhttp("aud").get_json("/v1/audit/checkpoint")
        self.assertEqual(status, 200, cp)
        self.assertEqual(verify_read_checkpoint(verifier, cp), [])
        self.assertNotEqual(verifier.check_checkpoint(cp), [],
                            "the read checkpoint verifies with the event-log prefix")
        self.assertLessEqual(cp["tree_size"], len(self.audit_lines()))
        self.assertGreaterEqual(cp["tree_size"], len(lines))
        all_lines = self.audit_lines()
        self.assertEqual(merkle_root([bytes.fromhex(l["leaf_hash"])
                                      for l in all_lines[:cp["tree_size"]]]).hex(),
                         cp["root_hash"])
        seq = by_id[ok_answer["read_id"]]["seq"]
        status, proof = self.env.qhttp("aud").get_json(
            f"/v1/audit/proof/inclusion?seq={seq}&tree_size={cp['tree_size']}")
        self.assertEqual(status, 200, proof)
        self.assertTrue(verify_inclusion(seq - 1, cp["tree_size"],
                                         bytes.fromhex(all_lines[seq - 1]["leaf_hash"]),
                                         [bytes.fromhex(h) for h in proof["hashes"]],
                                         bytes.fromhex(cp["root_hash"])))
        # only auditors
        self.assertEqual(self.env.qhttp("ranker").get("/v1/audit/reads").status, 403)
        self.assertEqual(self.env.qhttp().get("/v1/audit/reads").status, 401)


# ===========================================================================
# crash: every answered read has its record
# ===========================================================================

SHORT_VIEW = {
    "name": "short",
    "entity": "user_id",
    "features": {"x": "int64"},
    "windows": [{"name": "x_count_2m", "fn": "count", "of": "x", "size": "2m"}],
    "retention": "10m",
    "acl": {"write": ["clicks-pipeline"], "read": ["role:inference"]},
    "audit_reads": False,
}


class RetentionTest(QueryCase):
    """A view with a short retention: history older than the log's latest
    ingest_ts minus the retention is pruned, reads reaching there are 400
    outside_retention, newer reads stay exact."""

    views = (SHORT_VIEW,)

    def test_short_retention_prunes_and_guards(self):
        t = now_us()
        old = self.write1("short", "s1", t - 30 * MINUTE, {"x": 1})
        mid = self.write1("short", "s1", t - 20 * MINUTE, {"x": 2})
        new = self.write1("short", "s1", t - 3 * MINUTE, {"x": 3})
        late = self.write1("short", "s1", t - 4 * MINUTE, {"x": 4})
        a = self.read("ranker", "short", "s1", min_seq=late, wait_ms=10000)
        self.assertEqual(a["features"]["x"]["value"], 3)
        # Pruned: only the events within the retention are left in the history.
        r = self.env.qhttp("aud").get("/v1/history/short/s1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sorted(l["seq"] for l in parse_ndjson(r.body)), [new, late],
                         f"history after pruning (written {old}, {mid}, {new}, {late})")
        # Older than the retention: 400, never an answer from pruned history.
        for as_of in (t - 25 * MINUTE, t - 15 * MINUTE, t - 11 * MINUTE):
            err = self.assert_error(self.get("ranker", "short", "s1", as_of=time_text(as_of)),
                                    400, f"as_of {time_text(as_of)}")
            self.assertEqual(err["code"], "outside_retention")
            self.assertEqual(err["field"], "as_of")
        # A window reaching before the retained history: 400 as well.
        err = self.assert_error(self.get("ranker", "short", "s1",
                                         as_of=time_text(t - 9 * MINUTE)), 400, "window")
        self.assertEqual(err["code"], "outside_retention")
        self.assertEqual(err["field"], "windows")
        # Newer reads answer exactly.
        a = self.read("ranker", "short", "s1", as_of=time_text(t - 3 * MINUTE - US))
        self.assertEqual(a["features"]["x"]["value"], 4)
        self.assertEqual(a["features"]["x"]["seq"], late)
        self.assertEqual(a["windows"]["x_count_2m"]["value"], 1)
        a = self.read("ranker", "short", "s1", as_of=time_text(t - 7 * MINUTE),
                      features="x", windows="")
        self.assertEqual(a["features"]["x"]["status"], "NOT_FOUND")
        a = self.read("ranker", "short", "s1", as_of=time_text(t))
        self.assertEqual(a["features"]["x"]["value"], 3)
        self.assertEqual(a["windows"]["x_count_2m"]["value"], 0)


# ===========================================================================
# proofs and per-feature ACLs: a proof's line carries its whole event
# ===========================================================================

# The example views of schemas/views: one restricted feature (user_activity,
# audited), two (transactions, audited), none (item_stats, not audited); and
# restricted features on a view whose reads are not audited.
TXN_VIEW = json.loads((harness.REPO_ROOT / "schemas" / "views" / "transactions.json").read_text())
ITEM_VIEW = json.loads((harness.REPO_ROOT / "schemas" / "views" / "item_stats.json").read_text())
TXN_QUIET_VIEW = dict(TXN_VIEW, name="transactions_quiet", audit_reads=False)


class ProofAclTest(QueryCase):
    """
    A proof returns its event's whole signed line, so it is served only to a
    caller who may read every feature of that event (CONTRACT §6); otherwise
    403 proof_forbidden naming the feature, on every route that returns lines.
    """

    views = (UA_VIEW, TXN_VIEW, ITEM_VIEW, TXN_QUIET_VIEW)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            self = cls("run")
            t = now_us() - 10 * MINUTE
            w = lambda *ev: self.write([ev], who=cls.admin)[0]  # noqa: E731
            cls.seqs = {
                # dwell_ms shares its event with the restricted cart_items
                "ua_mixed": w("user_activity", "p-mixed", t,
                              {"dwell_ms": 5.5, "cart_items": 7, "last_click": "m"}),
                "ua_click": w("user_activity", "p-mixed", t + US, {"last_click": "n"}),
                "ua_clean": w("user_activity", "p-clean", t, {"dwell_ms": 1.5, "last_click": "c"}),
                "txn_mixed": w("transactions", "a-mixed", t,
                               {"amount": 10.5, "currency": "EUR", "merchant_id": "m-1"}),
                "txn_emb": w("transactions", "a-mixed", t + US,
                             {"card_present": True, "device_embedding": [0.5] * 16}),
                "txn_clean": w("transactions", "a-clean", t, {"amount": 2.5, "currency": "USD"}),
                "item": w("item_stats", "i-1", t, {"views": 3, "price": 9.5, "category": "x"}),
                "quiet_mixed": w("transactions_quiet", "a-mixed", t,
                                 {"amount": 4.5, "merchant_id": "m-2"}),
                "quiet_clean": w("transactions_quiet", "a-clean", t, {"amount": 1.5}),
            }
            cls.env.wait_caught_up(cls.env.query)
        except BaseException:
            cls.env.close(check=False)
            raise

    def assert_proof_forbidden(self, r, feature, context):
        err = self.assert_error(r, 403, context)
        self.assertEqual(err["code"], "proof_forbidden", f"{context}: {err}")
        self.assertIn(feature, err["message"], f"{context}: the feature is not named: {err}")
        self.assertNotIn(b'"line"', r.body, context)
        self.assertNotIn(b"leaf_hash", r.body, context)

    def assert_proofs_readable(self, answer, who_may, context):
        """Every proof line of an answer carries only features in who_may."""
        rows = answer.get("rows", [answer])
        n = 0
        for row in rows:
            for name, obj in row["features"].items():
                if obj.get("status") == "NOT_FOUND":
                    continue
                self.assertIn("proof", obj, f"{context}: {name} without a proof")
                ev = decode_body(obj["proof"]["line"])
                self.assertLessEqual(set(ev["features"]), who_may, f"{context}: {name} {ev}")
                n += 1
        self.assertGreater(n, 0, f"{context}: no proof at all")

    def batch(self, who, body):
        status, _, answer = self.env.qhttp(who).json("POST", "/v1/features:batch", body)
        return status, answer

    def test_single_get(self):
        ua_all = set(UA_VIEW["features"])
        ua_ranker = ua_all - {"cart_items"}
        txn_all = set(TXN_VIEW["features"])
        txn_ranker = txn_all - {"merchant_id", "device_embedding"}
        cases = [
            # (view, entity, params, restricted feature the proof would leak)
            ("user_activity", "p-mixed", {"features": "dwell_ms"}, "cart_items"),
            ("user_activity", "p-mixed", {}, "cart_items"),
            ("transactions", "a-mixed", {"features": "amount"}, "merchant_id"),
            ("transactions", "a-mixed", {"features": "currency"}, "merchant_id"),
            ("transactions", "a-mixed", {"features": "card_present"}, "device_embedding"),
            ("transactions", "a-mixed", {}, None),  # either restricted feature
            ("transactions_quiet", "a-mixed", {"features": "amount"}, "merchant_id"),
        ]
        for view, ent, params, leaked in cases:
            with self.subTest(view=view, params=params):
                # without a proof the read is allowed, and shows no restricted value
                a = self.read("ranker", view, ent, **params)
                self.assertNotIn("cart_items", a["features"])
                self.assertNotIn("merchant_id", a["features"])
                r = self.get("ranker", view, ent, proof=1, **params)
                if leaked:
                    self.assert_proof_forbidden(r, leaked, f"{view} {params}")
                else:
                    err = self.assert_error(r, 403, f"{view} {params}")
                    self.assertEqual(err["code"], "proof_forbidden")
                    self.assertTrue("merchant_id" in err["message"]
                                    or "device_embedding" in err["message"], err)
                # a caller who may read every feature gets the same proof
                a = self.read("fraud-analyst", view, ent, proof=1, **params)
                self.assert_proofs_readable(a, txn_all | ua_all, f"fraud {view} {params}")
        # events that carry only readable features: the proof is served
        for view, ent, params, may in (
                ("user_activity", "p-clean", {}, ua_ranker),
                ("user_activity", "p-mixed", {"features": "last_click"}, ua_ranker),
                ("transactions", "a-clean", {}, txn_ranker),
                ("transactions_quiet", "a-clean", {}, txn_ranker),
                ("item_stats", "i-1", {}, set(ITEM_VIEW["features"]))):
            with self.subTest(view=view, params=params, allowed=True):
                a = self.read("ranker", view, ent, proof=1, **params)
                self.assert_proofs_readable(a, may, f"{view} {params}")
        # the restricted feature's own value is still 403 forbidden, as before
        err = self.assert_error(self.get("ranker", "user_activity", "p-mixed", proof=1,
                                         features="cart_items"), 403)
        self.assertEqual(err["code"], "forbidden")

    def test_batch(self):
        for view, ids, features, leaked in (
                ("user_activity", ["p-clean", "p-mixed"], ["dwell_ms"], "cart_items"),
                ("user_activity", ["p-mixed"], None, "cart_items"),
                ("transactions", ["a-clean", "a-mixed"], ["amount"], "merchant_id"),
                ("transactions_quiet", ["a-mixed"], ["amount"], "merchant_id")):
            with self.subTest(view=view, ids=ids):
                body = {"view": view, "entity_ids": ids, "proof": True}
                if features is not None:
                    body["features"] = features
                status, answer = self.batch("ranker", body)
                self.assertEqual(status, 403, answer)
                self.assertEqual(answer["error"]["code"], "proof_forbidden", answer)
                self.assertIn(leaked, answer["error"]["message"])
                self.assertNotIn("rows", answer)
                status, answer = self.batch("ranker", dict(body, proof=False))
                self.assertEqual(status, 200, answer)
                status, answer = self.batch("fraud-analyst", body)
                self.assertEqual(status, 200, answer)
                self.assert_proofs_readable(answer, set(UA_VIEW["features"])
                                            | set(TXN_VIEW["features"]), view)
        for view, ids in (("user_activity", ["p-clean", "u-never"]),
                          ("transactions", ["a-clean"]), ("item_stats", ["i-1", "i-none"])):
            with self.subTest(view=view, ids=ids, allowed=True):
                status, answer = self.batch("ranker", {"view": view, "entity_ids": ids,
                                                       "proof": True})
                self.assertEqual(status, 200, answer)
                self.assert_proofs_readable(answer, set(self.view_defs[view]["features"])
                                            - {"cart_items", "merchant_id",
                                               "device_embedding"}, view)

    def test_feast_and_history_return_no_lines_to_readers(self):
        # The Feast route has no proofs: a "proof" member is ignored like any
        # other member Feast's server does not know, and no line is returned.
        q = self.env.qhttp("ranker")
        r = q.request("POST", "/get-online-features",
                      json.dumps({"features": ["user_activity:dwell_ms"],
                                  "entities": {"user_id": ["p-mixed"]}, "proof": True}),
                      headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(b"line", r.body)
        self.assertNotIn(b"cart_items", r.body)
        self.assertEqual(r.json()["results"][1]["values"], [5.5], r.json())
        # History (whole lines) is for auditors and admins only, never readers,
        # whatever their feature rights.
        for who in ("ranker", "fraud-analyst"):
            for view, ent in (("user_activity", "p-mixed"), ("transactions", "a-mixed"),
                              ("transactions_quiet", "a-mixed"), ("item_stats", "i-1")):
                with self.subTest(who=who, view=view):
                    self.assert_error(self.env.qhttp(who).get(f"/v1/history/{view}/{ent}"), 403)

    def test_denials_are_recorded(self):
        """A denied proof is recorded like any 403, on audited and unaudited views alike."""
        r = self.env.qhttp("aud").get("/v1/audit/reads")
        self.assertEqual(r.status, 200, r)
        before = len(parse_ndjson(r.body))
        r1 = self.get("ranker", "user_activity", "p-mixed", proof=1, features="dwell_ms")
        r2 = self.get("ranker", "transactions_quiet", "a-mixed", proof=1, features="amount")
        status, b3 = self.batch("ranker", {"view": "transactions", "entity_ids": ["a-mixed"],
                                           "features": ["amount"], "proof": True})
        self.assertEqual((r1.status, r2.status, status), (403, 403, 403), b3)
        r = self.env.qhttp("aud").get("/v1/audit/reads")
        self.assertEqual(r.status, 200, r)
        records = [decode_body(l) for l in parse_ndjson(r.body)][before:]
        for resp, view in ((r1, "user_activity"), (r2, "transactions_quiet")):
            with self.subTest(view=view):
                hits = [x for x in records if x["answer_sha256"] == sha256_hex(resp.body)
                        and x["principal"] == "ranker" and x["status"] == 403]
                self.assertEqual(len(hits), 1, hits)
                self.assertEqual(hits[0]["view"], view)
                self.assertEqual(hits[0]["served_seqs"], [], "a denied read served nothing")
        hits = [x for x in records if x["route"] == "/v1/features:batch" and x["status"] == 403
                and x["view"] == "transactions"]
        self.assertEqual(len(hits), 1, hits)
        self.assertEqual(hits[0]["served_seqs"], [])


# ===========================================================================
# edge values: subnormal doubles, views without windows, URLs and ids
# ===========================================================================

# A view with no windows at all (its windows array may be empty or absent).
NOWIN_VIEW = {
    "name": "nowin",
    "entity": "user_id",
    "features": {"score": "double"},
    "acl": {"write": ["clicks-pipeline"], "read": ["role:inference"]},
}


class EdgeValuesTest(QueryCase):

    views = (UA_VIEW, STATS_VIEW, NOWIN_VIEW)

    def test_subnormal_doubles_are_served(self):
        """A subnormal double is a value like any other: no read of it is a 500."""
        t = now_us() - MINUTE
        tiny = 1e-320
        seqs = self.write([("stats", "sub-1", t - 2 * US, {"price": tiny, "qty": 1}),
                           ("stats", "sub-1", t - US, {"price": -5e-324}),
                           ("stats", "sub-1", t, {"price": tiny}),
                           ("stats", "plain", t, {"price": 2.5}),
                           ("user_activity", "sub-u", t, {"dwell_ms": tiny}),
                           ("nowin", "sub-n", t, {"score": 2.2250738585072009e-308})])
        a = self.read("ranker", "stats", "sub-1", min_seq=seqs[-1])
        self.assertEqual(a["features"]["price"]["value"], tiny)
        self.assertEqual(a["features"]["price"]["seq"], seqs[2])
        self.check_answer(a, "stats", "sub-1", parse_time_text(a["as_of"]), context="sub-1")
        w = a["windows"]
        self.assertEqual(w["n_price"]["value"], 3)
        self.assertEqual(w["price_min"]["value"], -5e-324)
        self.assertEqual(w["price_max"]["value"], tiny)
        self.assertEqual(w["price_sum"]["value"], tiny + -5e-324 + tiny)
        self.assertIsInstance(w["price_std"]["value"], float)
        a = self.read("ranker", "user_activity", "sub-u", proof=1)
        self.assertEqual(a["features"]["dwell_ms"]["value"], tiny)
        self.assertEqual(a["windows"]["dwell_avg_1h"]["value"], tiny)
        a = self.read("ranker", "nowin", "sub-n")
        self.assertEqual(a["features"]["score"]["value"], 2.2250738585072009e-308)
        # one such id among 1000 fails neither a batch nor a Feast read
        ids = [f"none-{i}" for i in range(997)] + ["sub-1", "plain", "sub-1"]
        q = self.env.qhttp("ranker")
        status, _, body = q.json("POST", "/v1/features:batch", {"view": "stats", "entity_ids": ids})
        self.assertEqual(status, 200, str(body)[:300])
        self.assertEqual(body["rows"][997]["features"]["price"]["value"], tiny)
        self.assertEqual(body["rows"][997]["windows"]["price_min"]["value"], -5e-324)
        self.assertEqual(body["rows"][998]["features"]["price"]["value"], 2.5)
        status, _, body = q.json("POST", "/get-online-features", {
            "features": ["stats:price", "stats:price_sum", "stats:price_min"],
            "entities": {"item_id": ids}})
        self.assertEqual(status, 200, str(body)[:300])
        self.assertEqual(body["results"][1]["values"][997:], [tiny, 2.5, tiny])
        self.assertEqual(body["results"][3]["values"][997], -5e-324)

    def test_overflowing_doubles_are_refused_at_write(self):
        r = self.producer.request(
            "POST", "/v1/events",
            b'{"view":"stats","entity_id":"big","features":{"price":1e400}}',
            headers={"Content-Type": "application/json"})
        self.assert_error(r, 400, "1e400")
        # the largest doubles are accepted; their sum over a window is null, not an error
        t = now_us() - MINUTE
        seq = self.write([("stats", "big", t - US, {"price": 1.7976931348623157e308}),
                          ("stats", "big", t, {"price": 1.7976931348623157e308})])[-1]
        a = self.read("ranker", "stats", "big", min_seq=seq, windows="price_sum,price_max")
        self.assertIsNone(a["windows"]["price_sum"]["value"])
        self.assertEqual(a["windows"]["price_max"]["value"], 1.7976931348623157e308)

    def test_unknown_window_of_a_view_without_windows(self):
        """A 400 (and, in a UBSan build, no report: see tearDown)."""
        self.caught_up()  # the view is applied
        for params in ({"windows": "zz"}, {"windows": "score"}, {"windows": "zz,yy"}):
            with self.subTest(params=params):
                err = self.assert_error(self.get("ranker", "nowin", "u1", **params), 400)
                self.assertEqual(err["code"], "unknown_window")
        a = self.read("ranker", "nowin", "u1")
        self.assertEqual(a["windows"], {})
        q = self.env.qhttp("ranker")
        status, _, body = q.json("POST", "/v1/features:batch",
                                 {"view": "nowin", "entity_ids": ["u1"], "windows": ["zz"]})
        self.assertEqual(status, 400, body)
        status, _, body = q.json("POST", "/get-online-features",
                                 {"features": ["nowin:zz"], "entities": {"user_id": ["u1"]}})
        self.assertEqual(status, 400, body)
        self.assertTrue(self.env.query.running())

    def test_encoded_nul_in_a_url_is_400(self):
        """%00 would cut a path segment short; it is refused, never read as the prefix."""
        ranker = self.env.qhttp("ranker")
        for path in ("/v1/features/user_activity/u%00x", "/v1/features/user_activity%00/u1",
                     "/v1/features/user_activity/u1?features=dwell_ms%00cart_items",
                     "/v1/views/user_activity%00"):
            with self.subTest(path=path):
                err = self.assert_error(ranker.get(path), 400, path)
                self.assertEqual(err["code"], "invalid_url")
        for path in ("/v1/views/user_activity%00", "/v1/views/rt%00x"):
            with self.subTest(path=path, svc="command-svc"):
                err = self.assert_error(self.admin.get(path), 400, path)
                self.assertEqual(err["code"], "invalid_url")
        self.assertEqual(self.admin.get("/v1/views/user_activity").status, 200)

    def test_c1_controls_in_entity_ids(self):
        """Refused at write (§3: no control characters); U+00A0 is fine."""
        for ent in ("a\u0085b", "\u0080", "x\u009f"):
            with self.subTest(ent=repr(ent)):
                status, _, body = self.producer.json("POST", "/v1/events", {
                    "view": "nowin", "entity_id": ent, "features": {"score": 1.0}})
                self.assertEqual(status, 400, body)
                self.assertEqual(body["error"]["code"], "invalid_entity_id")
                self.assertEqual(body["error"]["field"], "entity_id")
        seq = self.write1("nowin", "a\u00a0b", now_us(), {"score": 3.0})
        a = self.read("ranker", "nowin", "a\u00a0b", min_seq=seq)
        self.assertEqual(a["features"]["score"]["value"], 3.0)


class SanitizerCheckTest(unittest.TestCase):
    """The harness fails a test on a sanitizer report in a service's stderr."""

    def test_runtime_error_in_stderr_fails(self):
        tmp = harness.TempDir()
        try:
            svc = harness.Service(QUERY_BINARY, tmp.path, "query-x", [])
            svc.stderr_path.write_text('{"level":"info","msg":"serving"}\n')
            svc.assert_no_sanitizer_reports()
            with svc.stderr_path.open("a") as f:
                f.write("../model/view.c:390:9: runtime error: null pointer passed as "
                        "argument 2, which is declared to never be null\n")
            with self.assertRaises(AssertionError) as raised:
                svc.assert_no_sanitizer_reports()
            self.assertIn("runtime error:", str(raised.exception))
        finally:
            tmp.close()


class AuditUnavailableTest(QueryCase):

    def test_a_read_whose_record_cannot_be_stored_is_503(self):
        """CONTRACT §6: a read that cannot be recorded in the read audit log is not
        answered: 503 audit_unavailable, Retry-After. The store is made to fail by
        a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) on a running query-svc, so
        that the audit log cannot grow; once lifted, reads are answered again."""
        import resource
        env = self.env
        wrapper = env.tmp / "xfsz-ignored.sh"
        wrapper.write_text(f"#!/bin/sh\ntrap '' XFSZ\nexec '{env.query_binary}' \"$@\"\n")
        wrapper.chmod(0o755)
        binary, env.query_binary = env.query_binary, wrapper
        try:
            svc = env.add_query(name="query-fsize")
        finally:
            env.query_binary = binary
        seq = self.write1("user_activity", "u-fsize", now_us() - MINUTE, {"dwell_ms": 3.5})
        self.read("ranker", "user_activity", "u-fsize", svc=svc, min_seq=seq)
        audit_file = env.tmp / "query-fsize-data" / "audit" / "data.mdb"
        self.assertTrue(audit_file.is_file(), audit_file)
        limit = audit_file.stat().st_size
        resource.prlimit(svc.proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        try:
            statuses = []
            for _ in range(2000):  # until the audit log must grow past its file
                r = self.get("ranker", "user_activity", "u-fsize", svc=svc,
                             features="dwell_ms")
                statuses.append(r.status)
                if r.status != 200:
                    break
            self.assertEqual(r.status, 503, f"after {len(statuses)} reads: {r}")
            self.assertEqual(r.json()["error"]["code"], "audit_unavailable", r)
            self.assertEqual(r.headers.get("retry-after"), "1", r)
            self.assertNotIn(b"3.5", r.body)
            self.assertTrue(svc.running())
        finally:
            resource.prlimit(svc.proc.pid, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        # the service kept serving: reads are recorded and answered again
        self.assertTrue(poll(lambda: self.get("ranker", "user_activity", "u-fsize", svc=svc,
                                              features="dwell_ms").status == 200, 10))


class AuditCrashTest(QueryCase):

    def test_kill_9_after_reads(self):
        seq = self.write1("user_activity", "u-a", now_us() - MINUTE,
                          {"dwell_ms": 1.0, "last_click": "p"})
        self.read("ranker", "user_activity", "u-a", min_seq=seq)
        answered = []
        for round_ in range(2):
            answered += self.reads_then_kill(150 * (round_ + 1))
            self.env.query.start()
            self.caught_up()
            self.check_records(answered)

    def reads_then_kill(self, at_least):
        """Reader threads until at_least reads were answered, then kill -9."""
        svc = self.env.query
        answered, lock, stop = [], threading.Lock(), threading.Event()

        def reader(i):
            q = self.env.qhttp("ranker", keep_alive=(i % 2 == 0), timeout=10)
            while not stop.is_set():
                try:
                    r = q.get(f"/v1/features/user_activity/u-a?features=dwell_ms")
                except Exception:
                    return  # the service is gone
                if r.status == 200:
                    with lock:
                        answered.append((r.json()["read_id"], sha256_hex(r.body)))

        threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(3)]
        for t in threads:
            t.start()
        poll(lambda: len(answered) >= at_least, timeout=20)
        svc.kill()
        stop.set()
        for t in threads:
            t.join(15)
        with lock:
            answered_now = list(answered)
        self.assertGreater(len(answered_now), 20, "too few reads answered before the kill")
        return answered_now

    def check_records(self, answered_now):
        lines = parse_ndjson(self.env.qhttp("aud").get("/v1/audit/reads").body)
        records = {decode_body(l)["read_id"]: decode_body(l) for l in lines}
        missing = [rid for rid, _ in answered_now if rid not in records]
        self.assertEqual(missing, [], f"{len(missing)} of {len(answered_now)} answered reads "
                                      f"have no audit record after kill -9")
        for rid, digest in answered_now:
            self.assertEqual(records[rid]["answer_sha256"], digest, rid)
        self.assertEqual([l["seq"] for l in lines], list(range(1, len(lines) + 1)))
        for l in lines:
            self.assertEqual(leaf_hash(base64.b64decode(l["body"])).hex(), l["leaf_hash"])
        status, cp = self.env.qhttp("aud").get_json("/v1/audit/checkpoint")
        self.assertEqual(status, 200, cp)
        self.assertGreaterEqual(cp["tree_size"], len(answered_now))
        self.assertEqual(merkle_root([bytes.fromhex(l["leaf_hash"])
                                      for l in lines[:cp["tree_size"]]]).hex(), cp["root_hash"])
        keys = {k["key_id"]: k["public_key_pem"]
                for k in self.env.qhttp().get("/v1/audit/keys").json()["keys"]}
        verifier = Verifier(keys, self.env.tmp.path)
        self.assertEqual(verify_read_checkpoint(verifier, cp), [])
        self.assertEqual(verifier.check_lines(lines[:10] + lines[-10:]), [])


# ===========================================================================
# restarts, crashes, several instances, NATS outages
# ===========================================================================

def latest_per_entity(oracle, view, feature):
    out = {}
    for e in oracle.events:
        if e["view"] == view and feature in e["features"]:
            cur = out.get(e["entity"])
            if cur is None or (e["ts"], e["seq"]) > (cur["ts"], cur["seq"]):
                out[e["entity"]] = e
    return out


class Writer:
    """A thread posting batches of user_activity events until stopped."""

    def __init__(self, case, tag, batch=20, entities=8, pause=0.01):
        self.case, self.tag, self.batch, self.entities, self.pause = (
            case, tag, batch, entities, pause)
        self.stop = threading.Event()
        self.errors = []
        self.acked = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def run(self):
        rng = random.Random(f"{SEED}-{self.tag}")
        http_ = self.case.env.http("clicks-pipeline", keep_alive=True)
        n = 0
        try:
            while not self.stop.is_set():
                events = []
                base = now_us()
                for _ in range(self.batch):
                    n += 1
                    events.append(("user_activity", f"{self.tag}-{rng.randrange(self.entities)}",
                                   base - rng.randrange(0, 50 * MINUTE),
                                   {"dwell_ms": float(n) + 0.5, "last_click": f"c{n}"}))
                body = {"events": [{"view": v, "entity_id": ent, "event_ts": time_text(ts),
                                    "features": f} for v, ent, ts, f in events]}
                status, _, answer = http_.json("POST", "/v1/events", body)
                if status != 201:
                    self.errors.append((status, answer))
                    return
                for (v, ent, ts, f), r in zip(events, answer["results"]):
                    self.case.oracle.add(v, ent, ts, r["seq"], f)
                self.acked += len(events)
                time.sleep(self.pause)
        except Exception as e:  # reported by finish()
            self.errors.append(repr(e))
        finally:
            http_.close()

    def finish(self):
        self.stop.set()
        self.thread.join(60)
        if self.thread.is_alive():
            raise AssertionError("the writer thread is stuck")
        if self.errors:
            raise AssertionError(f"writer errors: {self.errors[:3]}")


class RecoveryTest(QueryCase):
    """kill -9 under write load, a second consumer, a fresh instance, --rebuild."""

    n_query = 2

    def check_values(self, svc, tag):
        """Every writer entity's latest dwell_ms and last_click, as the oracle has them."""
        for feature in ("dwell_ms", "last_click"):
            expected = latest_per_entity(self.oracle, "user_activity", feature)
            for ent, e in expected.items():
                if not ent.startswith(tag):
                    continue
                a = self.read("ranker", "user_activity", ent, svc=svc, features=feature,
                              windows="")
                obj = a["features"][feature]
                self.assertEqual((obj["value"], obj["seq"]),
                                 (e["features"][feature], e["seq"]), f"{svc.name} {ent}")

    def test_crash_under_load_converges(self):
        qa, qb = self.env.queries
        writer = Writer(self, "load").start()
        try:
            poll(lambda: writer.acked >= 300 or writer.errors, timeout=20)
            qa.kill()
            poll(lambda: writer.acked >= 600 or writer.errors, timeout=20)
            qa.start()
            time.sleep(0.05)
            qa.kill()  # again, while it catches up
            qa.start()
            poll(lambda: writer.acked >= 900 or writer.errors, timeout=30)
            qb.kill()  # the other one too
            qb.start()
            poll(lambda: writer.acked >= 1200 or writer.errors, timeout=30)
        finally:
            writer.finish()
        tree = self.env.tree_size()
        for svc in (qa, qb):
            state = self.env.wait_caught_up(svc, tree, timeout=60)
            self.assertEqual(state["applied_seq"], tree, svc.name)
        da, db = self.env.digest(qa), self.env.digest(qb)
        self.assertEqual(da["applied_seq"], tree)
        self.assertEqual(da, db, "two consumers at the same applied_seq differ")
        self.check_values(qa, "load")

        # a fresh instance with an empty data dir
        qc = self.env.add_query(name="query-fresh")
        self.env.wait_caught_up(qc, tree, timeout=60)
        self.assertEqual(self.env.digest(qc), da, "a fresh instance differs")
        # the crashed one rebuilt from the log; its read audit is kept
        before = self.read("ranker", "user_activity", "load-0", svc=qa, features="dwell_ms")
        qa.stop()
        qa.args.append("--rebuild")
        qa.start()
        self.env.wait_caught_up(qa, tree, timeout=60)
        self.assertEqual(self.env.digest(qa), da, "a --rebuild differs")
        self.check_values(qa, "load")
        r = self.env.qhttp("aud", qa).get("/v1/audit/reads")
        ids = {decode_body(l)["read_id"] for l in parse_ndjson(r.body)}
        self.assertIn(before["read_id"], ids, "--rebuild lost the read audit")

    def test_models_torn_by_a_machine_crash_are_rebuilt(self):
        """Read models left open when the machine went down are dropped and rebuilt."""
        qa, qb = self.env.queries[:2]
        t0 = now_us() - 10 * MINUTE
        self.write([("user_activity", f"boot-{i % 40}", t0 + i * 1000,
                     {"dwell_ms": float(i), "last_click": f"b{i}", "cart_items": i % 5})
                    for i in range(400)])
        tree = self.env.tree_size()
        for svc in (qa, qb):
            self.env.wait_caught_up(svc, tree, timeout=60)
        want = self.env.digest(qb)
        qa.kill()
        models = pathlib.Path(qa.args[qa.args.index("--data-dir") + 1]) / "projection"
        boot = (models / "boot").read_text().split()
        self.assertEqual(boot[1], "open", "a killed query-svc leaves its models marked open")
        # As if the machine had gone down with them open: another boot, torn pages.
        (models / "boot").write_text("an-earlier-boot open\n")
        with open(models / "data.mdb", "r+b") as f:
            f.write(b"\x5a" * (f.seek(0, 2) // 2))
        qa.start()
        self.env.wait_caught_up(qa, tree, timeout=60)
        self.assertEqual(self.env.digest(qa), want, "rebuilt models differ")
        self.check_values(qa, "boot")
        qa.stop()
        self.assertEqual((models / "boot").read_text().split()[1], "closed")
        qa.start()

    def test_one_data_dir_one_service(self):
        """A second query-svc or command-svc on a data dir in use is refused; the first serves on."""
        qa = self.env.queries[0]
        for svc in (qa, self.env.command):
            cmd = [str(svc.binary), "--listen", f"127.0.0.1:{harness.free_port()}"] + svc.args
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0, svc.name)
            self.assertIn("another process uses this --data-dir", r.stderr, svc.name)
            self.assertTrue(svc.running(), svc.name)
        self.assertEqual(self.env.qhttp("ranker", qa).get("/healthz").status, 200)
        # The instance may still be rebuilding models an earlier test tore
        # (tens of thousands of events on a loaded machine): let it finish.
        self.env.wait_caught_up(qa, timeout=180)
        seq = self.write1("user_activity", "one-dir", now_us() - 5 * US, {"dwell_ms": 1.5})
        self.read("ranker", "user_activity", "one-dir", svc=qa, min_seq=seq, features="dwell_ms")

    def test_long_catch_up_in_steps(self):
        """A fresh instance catches up 25,000 events in steps, each step's lines fetched ahead."""
        qa = self.env.queries[0]
        t0 = now_us() - 10 * MINUTE
        for b in range(50):
            self.write([("user_activity", f"long-{(b * 500 + i) % 700}", t0 + (b * 500 + i) * 1000,
                         {"dwell_ms": float(i), "last_click": f"c{b}", "cart_items": i % 7})
                        for i in range(500)])
        tree = self.env.tree_size()
        self.env.wait_caught_up(qa, tree, timeout=120)
        qd = self.env.add_query(name="query-long")
        self.env.wait_caught_up(qd, tree, timeout=120)
        self.assertEqual(self.env.digest(qd), self.env.digest(qa),
                         "a catch-up in steps differs from the live instance")
        self.check_values(qd, "long")


# A view with windows whose reads are not audited: an answer is sent as soon
# as it is computed (an audited one waits for its record's commit).
COST_VIEW = {
    "name": "costly",
    "entity": "item_id",
    "features": {"x": "int64"},
    "windows": [{"name": "x_sum_1h", "fn": "sum", "of": "x", "size": "1h"},
                {"name": "x_count_1h", "fn": "count", "of": "x", "size": "1h"}],
    "acl": {"write": ["clicks-pipeline"], "read": ["role:inference"]},
    "audit_reads": False,
}


class ReadCostTest(QueryCase):
    """The bound on one read's cost (--max-read-cost) and repeated ids computed once."""

    views = (COST_VIEW, UA_VIEW)
    # cost: one unit per entity id and one per stored event a window visits
    query_args = ("--max-read-cost", "60")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        t0 = now_us() - 10 * MINUTE
        events = [{"view": "costly", "entity_id": ent, "event_ts": time_text(t0 + i * US),
                   "features": {"x": i}} for ent in ("c1", "c2", "c3") for i in range(20)]
        status, _, body = cls.producer.json("POST", "/v1/events", {"events": events})
        if status != 201:
            raise AssertionError(f"writing: {status} {body}")
        for ev, r in zip(events, body["results"]):
            cls.oracle.add("costly", ev["entity_id"], parse_time_text(ev["event_ts"]),
                           r["seq"], ev["features"])
        cls.env.wait_caught_up(cls.env.query)

    def batch(self, ids, **extra):
        return self.env.qhttp("ranker").json(
            "POST", "/v1/features:batch", dict({"view": "costly", "entity_ids": ids}, **extra))

    def test_repeated_ids_are_computed_once_in_input_order(self):
        # c1 costs 21 units: four times would be 84, over the bound of 60
        status, _, body = self.batch(["c1", "c1", "c1", "c1"])
        self.assertEqual(status, 200, body)
        rows = body["rows"]
        self.assertEqual([r["entity_id"] for r in rows], ["c1"] * 4)
        self.assertTrue(all(r == rows[0] for r in rows), rows)
        self.check_answer(rows[0], "costly", "c1", parse_time_text(rows[0]["as_of"]))
        self.assertEqual(rows[0]["windows"]["x_count_1h"]["value"], 20)
        # mixed: 2 × 21 = 42; rows in the order asked, repeats repeated
        ids = ["c2", "c1", "c2", "never", "c1", "c2"]
        status, _, body = self.batch(ids)
        self.assertEqual(status, 200, body)
        self.assertEqual([r["entity_id"] for r in body["rows"]], ids)
        by_id = {}
        for ent, row in zip(ids, body["rows"]):
            self.assertEqual(by_id.setdefault(ent, row), row, ent)
            self.check_answer(row, "costly", ent, parse_time_text(row["as_of"]),
                              context=f"row {ent}")
        # Feast's route too
        status, _, body = self.env.qhttp("ranker").json("POST", "/get-online-features", {
            "features": ["costly:x", "costly:x_count_1h"],
            "entities": {"item_id": ["c1", "c3", "c1", "c3", "c1"]}})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["results"][0]["values"], ["c1", "c3", "c1", "c3", "c1"])
        self.assertEqual(body["results"][2]["values"], [20] * 5)
        self.assertEqual(body["results"][1]["values"], [19] * 5)

    def test_a_read_over_the_bound_is_422_and_the_service_serves_on(self):
        q = self.env.qhttp("ranker")
        for what, (status, _, body) in (
                ("batch", self.batch(["c1", "c2", "c3"])),  # 63 units
                ("feast", q.json("POST", "/get-online-features", {
                    "features": ["costly:x_sum_1h"],
                    "entities": {"item_id": ["c1", "c2", "c3"]}}))):
            self.assertEqual(status, 422, (what, body))
            self.assertEqual(set(body), {"error"}, body)
            self.assertEqual(body["error"]["code"], "read_too_expensive", body)
            self.assertIn("60", body["error"]["message"], body)
            self.assertIn("--max-read-cost", body["error"]["message"], body)
        # the same ids without windows cost 3 units
        status, _, body = self.batch(["c1", "c2", "c3"], windows=[])
        self.assertEqual(status, 200, body)
        # a single read of one entity fits; health and other reads go on
        a = self.read("ranker", "costly", "c3")
        self.check_answer(a, "costly", "c3", parse_time_text(a["as_of"]))
        self.assertEqual(self.env.qhttp().get("/healthz").status, 200)
        status, _, body = self.batch(["c1", "c2"])
        self.assertEqual(status, 200, body)
        # a refused read is audited like any other (an audited view)
        status, _, body = self.env.qhttp("ranker").json("POST", "/v1/features:batch", {
            "view": "user_activity", "entity_ids": ["c1"]})
        self.assertEqual(status, 200, body)

    def test_each_row_of_a_training_export_is_bounded_like_a_read(self):
        """A training export's rows are bounded one by one (--max-read-cost): the
        row over it carries the online read's 422 error, the others their values."""
        t0 = now_us() - 10 * MINUTE
        events = [{"view": "costly", "entity_id": "c-hot", "event_ts": time_text(t0 + i * US),
                   "features": {"x": 1}} for i in range(100)]
        status, _, body = self.producer.json("POST", "/v1/events", {"events": events})
        self.assertEqual(status, 201, body)
        self.env.wait_caught_up(self.env.query)
        at = time_text(now_us())
        head = {"view": "costly", "features": ["x"], "windows": ["x_count_1h"],
                "point_in_time": "as_known"}  # as known: every event walked, 101 units
        lines = [json.dumps(head), json.dumps({"entity_id": "c-hot", "ts": at}),
                 json.dumps({"entity_id": "c1", "ts": at})]
        r = self.env.qhttp("ranker").request("POST", "/v1/features:historical",
                                             ("\n".join(lines) + "\n").encode(),
                                             {"Content-Type": "application/x-ndjson"})
        self.assertEqual(r.status, 200, r)
        hot, cold = parse_ndjson(r.body)
        self.assertEqual(hot["error"]["code"], "read_too_expensive", hot)
        self.assertEqual(cold["windows"]["x_count_1h"]["value"], 20, cold)


class SlowReadTest(QueryCase):
    """Health checks and cheap reads do not wait behind expensive reads."""

    views = (COST_VIEW,)
    N_ENTITIES = 1000
    EVENTS_EACH = 12

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        t0 = now_us() - 10 * MINUTE
        for k in range(cls.EVENTS_EACH):
            events = [{"view": "costly", "entity_id": f"s{i}",
                       "event_ts": time_text(t0 + k * US), "features": {"x": k}}
                      for i in range(cls.N_ENTITIES)]
            status, _, body = cls.producer.json("POST", "/v1/events", {"events": events})
            if status != 201:
                raise AssertionError(f"writing: {status} {body}")
        cls.env.wait_caught_up(cls.env.query, timeout=120)

    def raw_request(self, method, path, body=None, token=None):
        """A connected socket that has sent the whole request (Connection: close)."""
        sock = socket.create_connection(("127.0.0.1", self.env.query.port), timeout=120)
        data = body if body is not None else b""
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
                f"Content-Length: {len(data)}"]
        if body is not None:
            head.append("Content-Type: application/json")
        if token:
            head.append(f"Authorization: Bearer {self.env.tokens[token]}")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        return sock

    def test_health_and_cheap_reads_overtake_expensive_batches(self):
        """
        Expensive batch reads are sent (whole) first, then /healthz, /readyz and a
        cheap read: each of those must be answered before the last batch is.
        """
        body = json.dumps({"view": "costly",
                           "entity_ids": [f"s{i}" for i in range(self.N_ENTITIES)]}).encode()
        n_long = 16
        pending = {}
        for i in range(n_long):
            pending[self.raw_request("POST", "/v1/features:batch", body, "ranker")] = f"batch{i}"
        for name, path, token in (("healthz", "/healthz", None), ("readyz", "/readyz", None),
                                  ("cheap", "/v1/features/costly/s1", "ranker")):
            pending[self.raw_request("GET", path, token=token)] = name
        answers, order = {}, []
        with selectors.DefaultSelector() as sel:
            for sock in pending:
                sel.register(sock, selectors.EVENT_READ)
                answers[sock] = b""
            deadline = time.monotonic() + 180
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=1.0):
                    chunk = key.fileobj.recv(1 << 16)
                    if chunk:
                        answers[key.fileobj] += chunk
                        continue
                    sel.unregister(key.fileobj)
                    name = pending.pop(key.fileobj)
                    order.append((name, answers[key.fileobj]))
                    key.fileobj.close()
        self.assertFalse(pending, f"not answered: {sorted(pending.values())}")
        names = [name for name, _ in order]
        for name, answer in order:
            self.assertTrue(answer.startswith(b"HTTP/1.1 200"), (name, answer[:300]))
        last_long = max(names.index(f"batch{i}") for i in range(n_long))
        for name in ("healthz", "readyz", "cheap"):
            self.assertLess(names.index(name), last_long,
                            f"{name} waited behind every expensive batch: {names}")


def evolving_view(version):
    """Version `version` of a view that gains one count window per version (compatible)."""
    return {
        "name": "evolving",
        "entity": "item_id",
        "features": {"x": "int64"},
        "windows": [{"name": f"c{k}", "fn": "count", "of": "x", "size": f"{10 * k}m"}
                    for k in range(1, version + 1)],
        "acl": {"write": ["clicks-pipeline"], "read": ["role:inference"]},
    }


class ViewVersionRestartTest(QueryCase):
    """Restarts and rebuilds after compatible view changes (versions 1, 2 and 5)."""

    n_query = 2  # the first restarts; the second never does
    views = ()

    def register(self, version):
        status, _, body = self.admin.json("POST", "/v1/views", evolving_view(version))
        self.assertEqual(status, 201, body)
        self.assertEqual(body["version"], version, body)
        self.view_defs["evolving"] = evolving_view(version)

    def check_restarted(self, svc, kept, version, context):
        """svc serves version `version` (its newest window too) and equals kept."""
        tree = self.env.tree_size()
        self.env.wait_caught_up(svc, tree, timeout=60)
        self.env.wait_caught_up(kept, tree, timeout=60)
        self.assertEqual(self.env.digest(svc), self.env.digest(kept), context)
        newest = f"c{version}"
        a = self.read("ranker", "evolving", "item-1", svc=svc, windows=newest)
        self.assertEqual(set(a["windows"]), {newest}, context)
        self.check_answer(a, "evolving", "item-1", parse_time_text(a["as_of"]),
                          context=context)
        self.assertGreater(a["windows"][newest]["events"], 0, context)

    def test_restart_and_rebuild_after_view_versions(self):
        qa, qb = self.env.queries
        t0 = now_us() - MINUTE
        version = 0
        for target in (1, 2, 5):
            while version < target:
                version += 1
                self.register(version)
                self.write([("evolving", "item-1", t0 + version * 1000, {"x": version}),
                            ("evolving", "item-1", t0 + version * 1000 + 1, {"x": -version})])
            context = f"after {version} view versions"
            self.env.wait_caught_up(qa)
            qa.restart()
            self.check_restarted(qa, qb, version, f"{context}: restart")
            qa.restart(hard=True)
            self.check_restarted(qa, qb, version, f"{context}: kill -9")
            qa.stop()
            qa.args.append("--rebuild")
            try:
                qa.start()
            finally:
                qa.args.remove("--rebuild")
            self.check_restarted(qa, qb, version, f"{context}: --rebuild")

            # command-svc reloads every version from its log
            self.env.command.restart()
            self.producer.close()  # its kept-alive connection ended with command-svc
            status, body = self.admin.get_json("/v1/views/evolving")
            self.assertEqual((status, body.get("version")), (200, version), body)
            status, _, body = self.admin.json("POST", "/v1/views", evolving_view(version))
            self.assertEqual((status, body.get("version")), (200, version), body)
        # and versions go on from there, on both services
        self.register(version + 1)
        self.write1("evolving", "item-1", t0 + 9000, {"x": 9})
        self.check_restarted(qa, qb, version + 1, "a version after the restarts")


class NatsRestartTest(QueryCase):

    def test_catch_up_after_stop_and_nats_restart(self):
        ua = "user_activity"

        def burst(tag):
            t = now_us()
            return self.write([(ua, f"n-{i % 5}", t - i * US, {"dwell_ms": float(i) + 0.125,
                                                             "last_click": f"{tag}{i}"})
                               for i in range(40)])

        burst("a")
        svc = self.env.query
        self.caught_up()
        svc.stop()
        burst("b")
        self.env.nats.stop()
        burst("c")  # NATS is down: command-svc keeps them in its outbox
        self.env.nats.start()
        burst("d")
        cmd = self.env.http()
        # command-svc's side (§5): the outbox drains once NATS is back. Not
        # query-svc's business, but what query-svc consumes, so checked softly:
        # the catch-up below must not depend on it (gaps are filled from the log).
        poll(lambda: readyz(cmd).get("publish_backlog") == 0, timeout=12)
        with self.subTest("command-svc publishes its outbox after a NATS restart"):
            self.assertEqual(readyz(cmd).get("publish_backlog"), 0,
                             f"command-svc's outbox is stuck: {readyz(cmd)}")
        tree = self.env.tree_size()
        svc.start()
        state = self.env.wait_caught_up(svc, tree, timeout=30)
        self.assertEqual(state["applied_seq"], tree)
        self.assertEqual(state["replica_size"], tree)
        for feature in ("dwell_ms", "last_click"):
            for ent, e in latest_per_entity(self.oracle, ua, feature).items():
                a = self.read("ranker", ua, ent, features=feature, windows="")
                self.assertEqual((a["features"][feature]["value"], a["features"][feature]["seq"]),
                                 (e["features"][feature], e["seq"]), ent)
        poll(lambda: self.env.query_state(svc)[1].get("nats_connected"), timeout=10)
        self.assertTrue(self.env.query_state(svc)[1].get("nats_connected"), "NATS not back")
        # and it keeps consuming
        seqs = burst("e")
        a = self.read("ranker", ua, "n-0", min_seq=seqs[-1], wait_ms=5000, features="dwell_ms")
        self.assertGreaterEqual(a["applied_seq"], seqs[-1])
        # NATS restarted under a running query-svc
        self.env.nats.stop()
        burst("f")
        self.env.nats.start()
        seqs = burst("g")
        a = self.read("ranker", ua, "n-0", min_seq=seqs[-1], wait_ms=10000, features="dwell_ms")
        self.assertGreaterEqual(a["applied_seq"], seqs[-1])
        state = self.env.wait_caught_up(svc, self.env.tree_size(), timeout=30)
        for ent, e in latest_per_entity(self.oracle, ua, "last_click").items():
            a = self.read("ranker", ua, ent, features="last_click", windows="")
            self.assertEqual(a["features"]["last_click"]["seq"], e["seq"], ent)
        poll(lambda: self.env.query_state(svc)[1].get("nats_connected"), timeout=10)
        self.assertTrue(self.env.query_state(svc)[1].get("nats_connected"), "NATS not back")


# ===========================================================================
# a forged stream, a lying command-svc
# ===========================================================================

class TamperTest(QueryCase):

    def wait_delivered(self, nc):
        """Waits until query-svc's consumer got past the stream's end."""
        nc.ping()
        last = nc.stream_info()["state"]["last_seq"]
        consumer = f"CONSUMER.INFO.{harness.STREAM}.{self.env.query.name}"
        self.assertTrue(poll(lambda: nc.js_api(consumer).get("delivered", {})
                             .get("stream_seq", 0) >= last, 10),
                        f"query-svc did not take what was published: {nc.js_api(consumer)}")

    def test_commits_carry_their_checkpoint_on_nats(self):
        """The last event of a commit carries its signed checkpoint in header
        Fledger-Checkpoint (docs/contract.md §5), and query-svc replicates
        such commits without asking command-svc for their checkpoint: behind
        a proxy that spoils every answer of GET /v1/log/checkpoint, a
        query-svc still applies what NATS brings."""
        ua = "user_activity"
        proxy = CheckpointProxy(self.env.command.port)
        svc = None
        try:
            seq = self.write1(ua, "cp-0", now_us() - US, {"dwell_ms": 0.25})
            svc = self.env.add_query(name="query-cp", command_url=proxy.url)
            self.env.wait_caught_up(svc, seq)  # the first checkpoint is fetched
            proxy.latest = lambda genuine: {}  # from now on no fetch gives one
            for i in range(1, 21):
                seqs = self.write([(ua, f"cp-{i}", now_us() - US, {"dwell_ms": i + 0.5}),
                                   (ua, f"cp-{i}", now_us() - US + 1, {"dwell_ms": i + 0.75})])
                a = self.read("ranker", ua, f"cp-{i}", svc=svc, min_seq=seqs[-1],
                              wait_ms=10000, features="dwell_ms")
                self.assertEqual(a["features"]["dwell_ms"]["value"], i + 0.75, a)
            status, state = self.env.query_state(svc)
            self.assertEqual(status, 200, state)
        finally:
            if svc:
                svc.stop()
                self.env.retire(svc)
            proxy.close()
        # Writers side by side: one publish chunk then spans several commits,
        # and each commit's last event carries its own checkpoint.
        first = self.env.tree_size() + 1

        def writer(w):
            who = self.env.http("clicks-pipeline", keep_alive=True)
            for i in range(10):
                self.write([(ua, f"cpw-{w}", now_us() - US, {"dwell_ms": float(i)})], who=who)
            who.close()

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        last = self.env.tree_size()
        self.assertTrue(poll(lambda: len(self.stream_seqs(first)) >= last - first + 1, 10))
        with self.env.nats.client() as nc:
            messages = nc.stream_messages()
        by_seq = {int(m["msg_id"]): m for m in messages if m["msg_id"]}
        ends = 0
        for seq in range(seqs[-1] - 1, last + 1):
            header = by_seq[seq]["headers"].get("Fledger-Checkpoint")
            status, genuine = self.cmd_auditor.get_json(f"/v1/log/checkpoint?tree_size={seq}")
            if status != 200:
                self.assertIsNone(header, f"seq {seq} does not end a commit, yet has a header")
                continue
            ends += 1
            self.assertIsNotNone(header, f"seq {seq} ends a commit, without its checkpoint")
            self.assertEqual(json.loads(header), genuine)
        self.assertGreater(ends, 1)

    def stream_seqs(self, first):
        with self.env.nats.client() as nc:
            return [m for m in nc.stream_messages() if m["msg_id"] and int(m["msg_id"]) >= first]

    def test_a_forged_checkpoint_on_nats_halts_nothing(self):
        """A NATS line whose Fledger-Checkpoint header does not verify is
        dropped like a forged line: nothing halts, nothing is applied before
        command-svc signs it, and the genuine commit is applied."""
        ua = "user_activity"
        seq0 = self.write1(ua, "u-cpforge", now_us() - 10 * US, {"dwell_ms": 1.0})
        self.read("ranker", ua, "u-cpforge", min_seq=seq0)
        n = self.env.tree_size() + 1
        key_id = key_id_of(public_pem_of(self.env.key_path))
        body = json.dumps({"seq": n, "kind": "feature", "view": ua, "entity_id": "u-cpforge",
                           "event_ts": time_text(now_us() - 5 * US),
                           "ingest_ts": time_text(now_us()), "producer": "clicks-pipeline",
                           "features": {"dwell_ms": 666.5}}, separators=(",", ":")).encode()
        line = json.dumps({"seq": n, "body": base64.b64encode(body).decode(),
                           "leaf_hash": leaf_hash(body).hex()}, separators=(",", ":")).encode()
        forged = {"tree_size": n, "root_hash": secrets.token_bytes(32).hex(),
                  "timestamp": time_text(now_us()), "key_id": key_id,
                  "sig": base64.b64encode(secrets.token_bytes(64)).decode()}
        with self.env.nats.client() as nc:
            nc.hpublish(f"fledger.events.{ua}",
                        {"Nats-Msg-Id": str(n),
                         "Fledger-Checkpoint": json.dumps(forged, separators=(",", ":"))}, line)
            self.wait_delivered(nc)
        self.assertTrue(poll(lambda: b"a checkpoint from NATS" in
                             self.env.query.stderr_path.read_bytes(), 10),
                        "no warning about the forged checkpoint")
        r = self.get("ranker", ua, "u-cpforge", min_seq=n, wait_ms=300, features="dwell_ms")
        self.assertEqual(r.status, 504, f"seq {n} applied before it exists: {r}")
        status, state = self.env.query_state(self.env.query)
        self.assertEqual(status, 200, f"a forged NATS checkpoint halted query-svc: {state}")
        got = self.write1(ua, "u-cpforge", now_us() - 4 * US, {"dwell_ms": 2.25})
        self.assertEqual(got, n)
        a = self.read("ranker", ua, "u-cpforge", min_seq=n, wait_ms=10000, features="dwell_ms")
        self.assertEqual((a["features"]["dwell_ms"]["value"], a["features"]["dwell_ms"]["seq"]),
                         (2.25, n), a)

    def test_forged_nats_lines_are_never_served(self):
        ua = "user_activity"
        seq0 = self.write1(ua, "u-tamper", now_us() - 10 * US, {"dwell_ms": 1.0})
        self.read("ranker", ua, "u-tamper", min_seq=seq0)
        n = self.env.tree_size() + 1
        key_id = key_id_of(public_pem_of(self.env.key_path))
        t = now_us() - 5 * US  # in the past: visible to a read at now

        def forged_line(seq, value, ts):
            body = json.dumps({"seq": seq, "kind": "feature", "view": ua, "entity_id": "u-tamper",
                               "event_ts": time_text(ts), "ingest_ts": time_text(now_us()),
                               "producer": "clicks-pipeline", "features": {"dwell_ms": value}},
                              separators=(",", ":")).encode()
            return json.dumps({"seq": seq, "body": base64.b64encode(body).decode(),
                               "leaf_hash": leaf_hash(body).hex(), "key_id": key_id,
                               "sig": base64.b64encode(secrets.token_bytes(64)).decode()},
                              separators=(",", ":")).encode()

        forged_n = forged_line(n, 666.5, t)
        forged_n1 = forged_line(n + 1, 777.5, t + 1000)
        with self.env.nats.client() as nc:
            # with the Msg-Id of seq n: JetStream then drops the genuine one as a duplicate
            nc.hpublish(f"fledger.events.{ua}", {"Nats-Msg-Id": str(n)}, forged_n)
            nc.publish(f"fledger.events.{ua}", forged_n1)  # a plain core publish
            # query-svc takes them first: its consumer got past the stream's end
            self.wait_delivered(nc)
        stream = collect_stream(self.env.nats.port)
        self.assertIn(forged_n, [m[2] for m in stream], "the forged line is not in the stream")
        # no signed checkpoint covers seq n yet: nothing of it may be served
        r = self.get("ranker", ua, "u-tamper", features="dwell_ms", windows="")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["features"]["dwell_ms"]["value"], 1.0, r)
        r = self.get("ranker", ua, "u-tamper", min_seq=n, wait_ms=300, features="dwell_ms")
        self.assertEqual(r.status, 504, f"seq {n} applied before it exists: {r}")
        got = self.write([(ua, "u-tamper", t, {"dwell_ms": 2.25}),
                          (ua, "u-tamper", t + 1000, {"dwell_ms": 3.5})])
        self.assertEqual(got, [n, n + 1], "the forged lines were not for the next seqs")
        got.append(self.write1(ua, "u-tamper", t + 2000, {"last_click": "z"}))
        log = {l["seq"]: l for l in read_log(self.cmd_auditor, from_seq=n)}
        a = self.read("ranker", ua, "u-tamper", min_seq=got[-1], wait_ms=10000, proof=1,
                      features="dwell_ms,last_click")
        dwell = a["features"]["dwell_ms"]
        self.assertEqual((dwell["value"], dwell["seq"]), (3.5, n + 1), "a forged value served")
        self.assertEqual(dwell["proof"]["line"], log[n + 1])
        a = self.read("ranker", ua, "u-tamper", as_of=time_text(t), proof=1, features="dwell_ms")
        dwell = a["features"]["dwell_ms"]
        self.assertEqual((dwell["value"], dwell["seq"]), (2.25, n), "a forged value served")
        self.assertEqual(dwell["proof"]["line"], log[n])
        r = self.env.qhttp("aud").get(f"/v1/history/{ua}/u-tamper")
        self.assertNotIn(b"666.5", base64.b64decode(b"".join(
            json.loads(l)["body"].encode() for l in r.body.split(b"\n") if l.strip())))
        for l in parse_ndjson(r.body):
            self.assertEqual(l, read_log(self.cmd_auditor, from_seq=l["seq"])[0])
        status, state = self.env.query_state(self.env.query)
        self.assertEqual(status, 200, f"forged NATS lines halted query-svc: {state}")
        # a fresh instance agrees
        fresh = self.env.add_query(name="query-fresh")
        tree = self.env.tree_size()
        self.env.wait_caught_up(fresh, tree)
        self.env.wait_caught_up(self.env.query, tree)
        self.assertEqual(self.env.digest(fresh), self.env.digest(self.env.query))

    def test_log_not_matching_its_checkpoint_halts(self):
        ua = "user_activity"
        target = self.write1(ua, "u-halt", now_us() - US, {"dwell_ms": 12.5})
        self.write1(ua, "u-halt", now_us() - US, {"last_click": "after"})
        proxy = LogRewritingProxy(self.env.command.port, target,
                                  b'"dwell_ms":12.5', b'"dwell_ms":99.5')
        closed = free_port()  # nobody listens: NATS is out of the picture
        try:
            svc = self.env.add_query(name="query-halt", nats_url=f"nats://127.0.0.1:{closed}",
                                     command_url=proxy.url)

            def halted():
                status, body = self.env.query_state(svc)
                return status == 503 and "halted" in json.dumps(body)

            poll(halted, timeout=20)
            status, body = self.env.query_state(svc)
            self.assertEqual(status, 503, body)
            self.assertIn("halted", body.get("error", {}).get("message", ""), body)
            self.assertGreater(proxy.rewritten, 0, "query-svc never fetched the forged line")
            for params in ({}, {"min_seq": target, "wait_ms": 300}, {"proof": 1}):
                r = self.get("ranker", ua, "u-halt", svc=svc, **params)
                self.assertNotIn(b"99.5", r.body, f"the forged value was served: {r}")
                if r.status == 200:
                    obj = r.json()["features"]["dwell_ms"]
                    self.assertIn(obj["value"], (None, 12.5), obj)
            r = self.env.qhttp("aud", svc).get(f"/v1/history/{ua}/u-halt")
            for l in parse_ndjson(r.body) if r.status == 200 else []:
                self.assertNotIn(b"99.5", base64.b64decode(l["body"]))
            # still halted once the sync thread has let go of NATS and parked for
            # good (no retry into the forged log)
            self.assertTrue(poll(lambda: (self.env.query_state(svc)[1] or {})
                                 .get("nats_connected") is False, 10),
                            self.env.query_state(svc))
            self.assertEqual(self.env.query_state(svc)[0], 503)
        finally:
            proxy.close()
        # the honest instance serves the genuine value
        a = self.read("ranker", ua, "u-halt", min_seq=target + 1, features="dwell_ms")
        self.assertEqual(a["features"]["dwell_ms"]["value"], 12.5)



def sign_checkpoint(key_path, tree_size, root_hex, workdir):
    """A checkpoint of (tree_size, root) signed with key_path by stock openssl."""
    cp = {"tree_size": tree_size, "root_hash": root_hex, "timestamp": time_text(now_us()),
          "key_id": key_id_of(public_pem_of(key_path))}
    msg = Path(workdir) / "checkpoint.msg"
    msg.write_bytes(checkpoint_message(cp))
    sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", str(key_path), "-rawin",
                          "-in", str(msg)], check=True, capture_output=True).stdout
    cp["sig"] = base64.b64encode(sig).decode()
    return cp


def forged_feature_line(seq, entity, value):
    """A well-formed log line of seq (body and leaf hash agree) that command-svc never wrote."""
    body = json.dumps({"seq": seq, "kind": "feature", "view": "user_activity",
                       "entity_id": entity, "event_ts": time_text(now_us() - US // 2),
                       "ingest_ts": time_text(now_us()), "producer": "clicks-pipeline",
                       "features": {"dwell_ms": value}}, separators=(",", ":")).encode()
    line = json.dumps({"seq": seq, "body": base64.b64encode(body).decode(),
                       "leaf_hash": leaf_hash(body).hex()}, separators=(",", ":")).encode()
    return body, line


class NatsCheckpointKeyTest(QueryCase):
    """Checkpoints on NATS (header Fledger-Checkpoint) are taken only under the log's
    current key: a retired key signs nothing new that comes over NATS."""

    def test_a_retired_key_on_nats_gets_nothing_applied(self):
        env = self.env
        seq = self.write1("user_activity", "u-victim", now_us() - US, {"dwell_ms": 1.0})
        self.read("ranker", "user_activity", "u-victim", min_seq=seq)
        retired = env.tmp / "retired.pem"
        shutil.copy(env.key_path, retired)
        size0 = env.tree_size()
        os.replace(make_signing_key(env.tmp / "next.pem"), env.key_path)
        env.command.proc.send_signal(signal.SIGHUP)  # rotate: the key event, under the old key
        self.assertTrue(poll(lambda: env.tree_size() == size0 + 1, 10))
        seq = self.write1("user_activity", "u-victim", now_us() - US, {"dwell_ms": 5.0})
        self.read("ranker", "user_activity", "u-victim", min_seq=seq)
        # seq n forged, over the genuine tree, signed by the retired key
        lines = read_log(self.cmd_auditor)
        n = len(lines) + 1
        body, line = forged_feature_line(n, "u-victim", 666.5)
        root = merkle_root([bytes.fromhex(l["leaf_hash"]) for l in lines] + [leaf_hash(body)])
        cp = sign_checkpoint(retired, n, root.hex(), env.tmp.path)
        with env.nats.client() as nc:
            nc.hpublish("fledger.events.user_activity",
                        {"Nats-Msg-Id": str(n),
                         "Fledger-Checkpoint": json.dumps(cp, separators=(",", ":"))}, line)
            nc.ping()
        r = self.get("ranker", "user_activity", "u-victim", min_seq=n, wait_ms=2000,
                     features="dwell_ms")
        self.assertEqual(r.status, 504, f"a commit command-svc never made was applied: {r}")
        got = self.write1("user_activity", "u-victim", now_us() - US, {"dwell_ms": 7.5})
        self.assertEqual(got, n)
        a = self.read("ranker", "user_activity", "u-victim", min_seq=n, wait_ms=10000,
                      features="dwell_ms")
        self.assertEqual(a["features"]["dwell_ms"]["value"], 7.5, a)
        status, state = env.query_state(env.query)
        self.assertEqual(status, 200, state)


class NatsCheckpointMismatchTest(QueryCase):
    """A validly signed checkpoint on NATS that command-svc's log does not match (another
    log under the same key, a log's old timeline) is dropped; it never halts."""

    def test_a_signed_checkpoint_of_another_tree_halts_nothing(self):
        env = self.env
        seq = self.write1("user_activity", "u-a", now_us() - US, {"dwell_ms": 1.0})
        self.read("ranker", "user_activity", "u-a", min_seq=seq)
        # command-svc loses NATS: query-svc learns of its commits by polling only
        env.command.stop()
        env.command.args[env.command.args.index("--nats") + 1] = f"nats://127.0.0.1:{free_port()}"
        env.command.start()
        producer = env.http("clicks-pipeline")  # the kept-alive one died with the restart
        for _ in range(5):
            n = self.write([("user_activity", "u-a", now_us() - US, {"dwell_ms": 2.0})],
                           who=producer)[0]
            _, line = forged_feature_line(n, "u-a", 666.5)
            cp = sign_checkpoint(env.key_path, n, secrets.token_bytes(32).hex(), env.tmp.path)
            if env.query_state(env.query)[1].get("replica_size", 0) >= n:
                continue  # a poll took seq n first: try again
            with env.nats.client() as nc:
                nc.hpublish("fledger.events.user_activity",
                            {"Nats-Msg-Id": f"other-{n}",
                             "Fledger-Checkpoint": json.dumps(cp, separators=(",", ":"))}, line)
                nc.ping()
            break
        self.assertTrue(poll(lambda: b"does not match command-svc's log" in
                             env.query.stderr_path.read_bytes(), 10),
                        "the foreign checkpoint was not tried and dropped")
        a = self.read("ranker", "user_activity", "u-a", min_seq=n, wait_ms=10000,
                      features="dwell_ms")
        self.assertEqual((a["features"]["dwell_ms"]["value"], a["features"]["dwell_ms"]["seq"]),
                         (2.0, n), a)
        status, state = env.query_state(env.query)
        self.assertEqual(status, 200, f"a checkpoint from NATS halted query-svc: {state}")


class CheckpointProxy(LogRewritingProxy):
    """
    Passes everything through, except that while self.latest is set, an
    answer to GET /v1/log/checkpoint (the latest checkpoint) is replaced by
    self.latest(genuine checkpoint dict) -> dict.
    """

    def __init__(self, upstream_port):
        super().__init__(upstream_port, None, None, None)
        self.latest = None
        self.served = 0

    def filter(self, path, status, body):
        parts = urllib.parse.urlsplit(path)
        latest = self.latest
        if parts.path == "/v1/log/checkpoint" and not parts.query and status == 200 and latest:
            self.served += 1
            return json.dumps(latest(json.loads(body))).encode()
        return body


class SyncHaltTest(QueryCase):
    """
    Signed evidence of a lying command-svc halts the sync thread: a checkpoint
    with a bad signature, a signed log shorter than the replica (reset), a
    signed root at the replica's size that differs from its own (fork).
    """

    def start_behind(self, proxy, name):
        closed = free_port()  # NATS out of the picture: everything via the proxy
        return self.env.add_query(name=name, nats_url=f"nats://127.0.0.1:{closed}",
                                  command_url=proxy.url)

    def assert_halts(self, svc, proxy, reason):
        def halted():
            status, body = self.env.query_state(svc)
            return status == 503 and "halted" in json.dumps(body)

        poll(halted, timeout=20)
        status, body = self.env.query_state(svc)
        message = (body or {}).get("error", {}).get("message", "")
        self.assertEqual(status, 503, body)
        self.assertIn(reason, message, body)
        self.assertGreater(proxy.served, 0, "the proxy never served its checkpoint")
        # Still halted once the proxy is honest again: no retry into a lying log.
        proxy.latest = None
        served = proxy.served
        self.write1("user_activity", "u-after-halt", now_us() - US, {"dwell_ms": 1.0})
        tree = self.env.tree_size()
        self.env.wait_caught_up(self.env.query, tree)
        status, body = self.env.query_state(svc)
        self.assertEqual(status, 503, f"resumed after a halt: {body}")
        self.assertIn(reason, (body or {}).get("error", {}).get("message", ""), body)
        self.assertEqual(proxy.served, served)

    def caught_up_through(self, proxy, name):
        self.write1("user_activity", f"u-{name}", now_us() - US, {"dwell_ms": 2.0})
        svc = self.start_behind(proxy, name)
        self.env.wait_caught_up(svc, self.env.tree_size())
        return svc

    def test_bad_checkpoint_signature_halts(self):
        proxy = CheckpointProxy(self.env.command.port)

        def bad_sig(cp):
            sig = bytearray(base64.b64decode(cp["sig"]))
            sig[5] ^= 0x10
            return dict(cp, sig=base64.b64encode(bytes(sig)).decode())

        try:
            self.write1("user_activity", "u-badsig", now_us() - US, {"dwell_ms": 3.0})
            proxy.latest = bad_sig
            svc = self.start_behind(proxy, "query-badsig")
            self.assert_halts(svc, proxy, "bad signature")
        finally:
            proxy.close()

    def test_shrunk_log_halts(self):
        proxy = CheckpointProxy(self.env.command.port)
        try:
            self.write1("user_activity", "u-shrunk", now_us() - US, {"dwell_ms": 4.0})
            older = json.loads(self.cmd_auditor.get("/v1/log/checkpoint").body)
            svc = self.caught_up_through(proxy, "query-shrunk")
            self.assertGreater(self.env.tree_size(), older["tree_size"])
            proxy.latest = lambda cp: older  # genuine and signed, but shorter
            self.assert_halts(svc, proxy, "reset or forked")
        finally:
            proxy.close()

    def test_forked_log_halts(self):
        proxy = CheckpointProxy(self.env.command.port)
        key_id = key_id_of(public_pem_of(self.env.key_path))

        def forked(cp):
            # Same size, another root, properly signed by command-svc's key.
            fork = dict(cp, root_hash=hashlib.sha256(b"fork" + cp["root_hash"].encode()).hexdigest())
            self.assertEqual(fork["key_id"], key_id)
            msg = self.env.tmp / "fork-checkpoint-msg"
            msg.write_bytes(checkpoint_message(fork))
            sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", str(self.env.key_path),
                                  "-rawin", "-in", str(msg)], check=True,
                                 capture_output=True).stdout
            fork["sig"] = base64.b64encode(sig).decode()
            return fork

        try:
            svc = self.caught_up_through(proxy, "query-forked")
            genuine = json.loads(self.cmd_auditor.get("/v1/log/checkpoint").body)
            signed_fork = forked(genuine)
            keys = {key_id: public_pem_of(self.env.key_path)}
            self.assertEqual(Verifier(keys, self.env.tmp.path).check_checkpoint(signed_fork), [],
                             "the forged checkpoint is not validly signed")
            proxy.latest = lambda cp: signed_fork
            self.assert_halts(svc, proxy, "the log forked")
        finally:
            proxy.close()


# ===========================================================================
# key trust (CONTRACT §4): trust on first use, --trust-key, impostors,
# a legitimate rotation and a rotation forged under the new key
# ===========================================================================

FORGE_LOG = Path(os.environ.get("FLEDGER_FORGE_LOG")
                 or harness.REPO_ROOT / "build" / "tests" / "forge_log")


def public_key_file(private_key_path, path):
    """Writes the PEM public key of a private key file; returns path."""
    Path(path).write_text(public_pem_of(private_key_path))
    return Path(path)


def pinned_key_ids(data_dir):
    """Key ids in a query-svc data directory's pin file, in order."""
    text = (Path(data_dir) / "trusted-keys").read_text()
    blocks = text.split("-----END PUBLIC KEY-----")
    return [key_id_of(b.strip() + "\n-----END PUBLIC KEY-----\n") for b in blocks if b.strip()]


class KeyTrustCase(QueryCase):

    def start_command(self, name, data_dir, key_path):
        """Another command-svc (an impostor) on its own data dir, without NATS."""
        svc = harness.Service(COMMAND_BINARY, self.env.tmp.path, name, [
            "--data-dir", str(data_dir),
            "--nats", f"nats://127.0.0.1:{free_port()}",
            "--signing-key", str(key_path),
            "--tokens", str(self.env.tokens_path),
        ])
        svc.start()
        self.addCleanup(lambda: svc.stop(check=False) if svc.running() else None)
        self.addCleanup(lambda: svc.assert_no_sanitizer_reports())
        return svc

    def repoint(self, svc, command_url):
        """Restarts query-svc svc against another command-svc, without NATS."""
        svc.stop()
        args = list(svc.args)
        args[args.index("--command-url") + 1] = command_url
        args[args.index("--nats") + 1] = f"nats://127.0.0.1:{free_port()}"
        svc.args = args
        svc.start()

    def wait_halted(self, svc, *words):
        """Waits for /readyz 503 "halted" naming every word; returns the message."""
        last = [None]

        def halted():
            status, body = self.env.query_state(svc)
            last[0] = (status, body)
            message = (body or {}).get("error", {}).get("message", "")
            return status == 503 and "halted" in message and all(w in message for w in words)

        self.assertTrue(poll(halted, timeout=20), f"not halted naming {words}: {last[0]}\n"
                        f"{svc.stderr_tail(20)}")
        return last[0][1]["error"]["message"]

    def seed(self, entity, value):
        """Writes one event and waits until the first query-svc has it."""
        seq = self.write1("user_activity", entity, now_us() - US, {"dwell_ms": value})
        self.read("ranker", "user_activity", entity, min_seq=seq, wait_ms=10000)
        return seq


class KeyTrustTest(KeyTrustCase):

    def test_first_key_is_pinned_with_a_warning_and_an_impostor_is_refused(self):
        env = self.env
        svc = env.add_query(name="query-tofu")
        self.seed("u-tofu", 4.5)
        env.wait_caught_up(svc)
        key_a = key_id_of(public_pem_of(env.key_path))
        data_dir = env.tmp / "query-tofu-data"
        self.assertEqual(pinned_key_ids(data_dir), [key_a])
        warnings = [r for r in svc.stderr_records()
                    if r.get("level") == "warn" and "first use" in r.get("msg", "")]
        self.assertEqual([w.get("key_id") for w in warnings], [key_a], svc.stderr_tail(20))

        # An impostor: a fresh log under a new key, longer than the real one;
        # its /v1/keys lists its own key.
        impostor_key = make_signing_key(env.tmp / "impostor.pem")
        key_b = key_id_of(public_pem_of(impostor_key))
        impostor = self.start_command("impostor", env.tmp / "impostor-data", impostor_key)
        admin = env.http("admin", impostor)
        self.assertEqual(admin.json("POST", "/v1/views", UA_VIEW)[0], 201)
        producer = env.http("clicks-pipeline", impostor)
        events = [{"view": "user_activity", "entity_id": "u-tofu",
                   "event_ts": time_text(now_us() - US), "features": {"dwell_ms": 666.5}}
                  for _ in range(env.tree_size() + 3)]
        self.assertEqual(producer.json("POST", "/v1/events", {"events": events})[0], 201)
        listed = [k["key_id"] for k in env.http(None, impostor).get_json("/v1/keys")[1]["keys"]]
        self.assertEqual(listed, [key_b])

        self.repoint(svc, impostor.url)
        message = self.wait_halted(svc, "untrusted key", key_b)
        self.assertNotIn(key_a, message)
        # it stays up and keeps serving what it had
        a = self.read("ranker", "user_activity", "u-tofu", svc=svc, features="dwell_ms")
        self.assertEqual(a["features"]["dwell_ms"]["value"], 4.5)
        self.assertEqual(pinned_key_ids(data_dir), [key_a], "the impostor's key was pinned")
        # still halted once the sync thread has let go of NATS and parked for good
        self.assertTrue(poll(lambda: (env.query_state(svc)[1] or {})
                             .get("nats_connected") is False, 10), env.query_state(svc))
        self.assertEqual(env.query_state(svc)[0], 503)

        # pointed back at the real command-svc after a restart, the pin holds
        self.repoint(svc, env.command.url)
        env.wait_caught_up(svc)

    def test_an_impostor_shorter_than_the_replica_is_refused_by_key(self):
        env = self.env
        svc = env.add_query(name="query-short")
        self.seed("u-short", 1.5)
        self.seed("u-short", 2.5)
        env.wait_caught_up(svc)
        impostor_key = make_signing_key(env.tmp / "impostor-short.pem")
        key_b = key_id_of(public_pem_of(impostor_key))
        impostor = self.start_command("impostor-short", env.tmp / "impostor-short-data",
                                      impostor_key)
        self.assertEqual(env.http("admin", impostor).json("POST", "/v1/views", UA_VIEW)[0], 201)
        self.repoint(svc, impostor.url)
        self.wait_halted(svc, "untrusted key", key_b, "checkpoint of tree size 1 ")

    def test_trust_key_flag_refuses_the_real_log_under_another_key(self):
        env = self.env
        self.seed("u-flag", 3.5)
        other = make_signing_key(env.tmp / "other.pem")
        other_pub = public_key_file(other, env.tmp / "other.pub.pem")
        svc = env.add_query(name="query-flag", extra_args=["--trust-key", str(other_pub)])
        key_a = key_id_of(public_pem_of(env.key_path))
        self.wait_halted(svc, "untrusted key", key_a)
        self.assertFalse((env.tmp / "query-flag-data" / "trusted-keys").exists())
        r = self.get("ranker", "user_activity", "u-flag", svc=svc, features="dwell_ms")
        self.assertNotIn(b"3.5", r.body, r)

        # The real key, given twice as a flag and once through the list in
        # the environment variable: all are trusted.
        real_pub = public_key_file(env.key_path, env.tmp / "real.pub.pem")
        ok = env.add_query(name="query-flag-ok", extra_args=[
            "--trust-key", str(other_pub), "--trust-key", str(real_pub)])
        env.wait_caught_up(ok)
        self.assertFalse((env.tmp / "query-flag-ok-data" / "trusted-keys").exists())

    def test_bad_trust_key_file_stops_the_start(self):
        env = self.env
        bad = env.tmp / "not-a-key.pem"
        bad.write_text("hello\n")
        svc = env.add_query(name="query-badkey", extra_args=["--trust-key", str(bad)],
                            start=False)
        proc = subprocess.run(svc.command(), capture_output=True, timeout=30)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(b"--trust-key", proc.stderr)
        self.assertIn(b"not-a-key.pem", proc.stderr)
        env.retire(svc)

    def test_a_replica_without_a_pin_file_pins_its_own_first_key(self):
        env = self.env
        svc = env.add_query(name="query-unpinned")
        self.seed("u-unpinned", 6.5)
        env.wait_caught_up(svc)
        pin = env.tmp / "query-unpinned-data" / "trusted-keys"
        key_a = key_id_of(public_pem_of(env.key_path))
        svc.stop()
        # a damaged pin file stops the start, naming it
        pin.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
        proc = subprocess.run(svc.command(), capture_output=True, timeout=30)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(b"pinned keys", proc.stderr)
        self.assertIn(b"trusted-keys", proc.stderr)
        # none at all (a replica from before keys were pinned): its first key
        pin.unlink()
        svc.start()
        seq = self.seed("u-unpinned", 7.5)
        env.wait_caught_up(svc, seq)
        self.assertEqual(pinned_key_ids(pin.parent), [key_a])
        self.assertIn(key_a, [r.get("key_id") for r in svc.stderr_records()
                              if "first key of the replica" in r.get("msg", "")])

    def test_forged_rotation_under_the_new_key_is_refused(self):
        env = self.env
        self.seed("u-forge", 8.5)
        real_pub = public_key_file(env.key_path, env.tmp / "real-forge.pub.pem")
        svc = env.add_query(name="query-forge", extra_args=["--trust-key", str(real_pub)])
        env.wait_caught_up(svc)
        # The forger copies the real log and appends a key event for its own
        # key, signed (line and checkpoint) by that key only.
        new_key = make_signing_key(env.tmp / "forger.pem")
        key_b = key_id_of(public_pem_of(new_key))
        forged_dir = env.tmp / "forged-data"
        proc = subprocess.run([str(FORGE_LOG), str(env.tmp / "command-data"), str(forged_dir),
                               str(new_key)], capture_output=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        key_seq = int(proc.stdout)
        impostor = self.start_command("forger", forged_dir, new_key)
        producer = env.http("clicks-pipeline", impostor)
        self.assertEqual(producer.json("POST", "/v1/events", {"events": [
            {"view": "user_activity", "entity_id": "u-forge", "event_ts": time_text(now_us()),
             "features": {"dwell_ms": 666.5}}]})[0], 201)
        listed = {k["key_id"] for k in env.http(None, impostor).get_json("/v1/keys")[1]["keys"]}
        self.assertEqual(listed, {key_id_of(public_pem_of(env.key_path)), key_b})

        self.repoint(svc, impostor.url)
        message = self.wait_halted(svc, "untrusted key", key_b, f"line {key_seq} ")
        a = self.read("ranker", "user_activity", "u-forge", svc=svc, features="dwell_ms")
        self.assertEqual(a["features"]["dwell_ms"]["value"], 8.5, message)


class RotationTrustTest(KeyTrustCase):

    def test_a_rotation_by_sighup_is_followed_and_the_new_key_pinned(self):
        env = self.env
        key_a = key_id_of(public_pem_of(env.key_path))
        real_pub = public_key_file(env.key_path, env.tmp / "a.pub.pem")
        self.seed("u-rot", 1.5)
        tofu = env.query
        env.wait_caught_up(tofu)
        data_dir = env.tmp / "query-1-data"
        self.assertEqual(pinned_key_ids(data_dir), [key_a])

        size0 = env.tree_size()
        new_key = make_signing_key(env.tmp / "next.pem")
        os.replace(new_key, env.key_path)
        key_b = key_id_of(public_pem_of(env.key_path))
        env.command.proc.send_signal(signal.SIGHUP)
        self.assertTrue(poll(lambda: env.tree_size() == size0 + 1, 10), "no key event")
        # the old key signed the checkpoint covering the key event
        status, cp = self.cmd_auditor.get_json(f"/v1/log/checkpoint?tree_size={size0 + 1}")
        self.assertEqual((status, cp["key_id"]), (200, key_a), cp)
        seq = self.seed("u-rot", 2.5)
        self.assertEqual(self.cmd_auditor.get_json("/v1/log/checkpoint")[1]["key_id"], key_b)
        env.wait_caught_up(tofu, seq)
        self.assertEqual(pinned_key_ids(data_dir), [key_a, key_b])
        self.assertIn(key_b, [r.get("key_id") for r in tofu.stderr_records()
                              if r.get("msg") == "trusting a new command-svc key"])

        # after a restart the pinned keys are the trusted set
        tofu.restart()
        seq = self.seed("u-rot", 3.5)
        env.wait_caught_up(tofu, seq)
        # fresh replicas through the rotation: trusting the old key by flag
        # (given in the environment variable, a list), or on first use
        fresh = env.add_query(name="query-fresh-flag", start=False)
        fresh.env = {"FLEDGER_TRUST_KEY": f"{env.tmp / 'none.pem'}:{real_pub}"}
        (env.tmp / "none.pem").write_text(public_pem_of(make_signing_key(env.tmp / "x.pem")))
        fresh.start()
        env.wait_caught_up(fresh, seq)
        self.assertEqual(pinned_key_ids(env.tmp / "query-fresh-flag-data")[-1], key_b)
        first = env.add_query(name="query-fresh-tofu")
        env.wait_caught_up(first, seq)
        self.assertEqual(pinned_key_ids(env.tmp / "query-fresh-tofu-data"), [key_a, key_b])
        self.assertEqual(env.digest(first), env.digest(tofu))


if __name__ == "__main__":
    unittest.main()
