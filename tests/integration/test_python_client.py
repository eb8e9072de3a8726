#!/usr/bin/env python3
"""
The Python client (clients/python/fledger_client.py) against a real
nats-server, command-svc and query-svc: write() and push() to command-svc,
get_online_features() through Feast's route, get_historical_features() with
a list of rows and, under Debian's /usr/bin/python3 with python3-pandas,
with a pandas DataFrame (naive and tz-aware timestamps, an extra label
column, both point-in-time semantics). Every value is checked against the
services' own routes (/v1/features:batch, /v1/features:historical).

    python3 tests/integration/test_python_client.py -v
"""

import json
import os
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))

import harness  # noqa: E402
from harness import time_text  # noqa: E402
from test_query_svc import STATS_VIEW, UA_VIEW, US, QueryCase, setUpModule  # noqa: E402

import fledger_client  # noqa: E402
from fledger_client import Client, FledgerError  # noqa: E402

__all__ = ["setUpModule"]
PANDAS_PYTHON = os.environ.get("FLEDGER_PANDAS_PYTHON", "/usr/bin/python3")
ROUTE = "/v1/features:historical"

PANDAS_SCRIPT = r"""
import json, sys
import pandas as pd
from fledger_client import Client
args = json.loads(sys.argv[1])
fs = Client(args["query_url"], args["token"], command_url=args["command_url"],
            command_token=args["command_token"])
times = pd.to_datetime(args["times"], utc=True)
entity_df = pd.DataFrame({"user_id": args["users"], "event_timestamp": times,
                          "label": list(range(len(args["users"])))})
naive = entity_df.copy()
naive["event_timestamp"] = naive["event_timestamp"].dt.tz_localize(None)
out = {}
for name, df in (("aware", entity_df), ("naive", naive)):
    for pit in ("event_time", "as_known"):
        got = fs.get_historical_features(df, args["features"], point_in_time=pit)
        assert isinstance(got, pd.DataFrame), type(got)
        assert list(got.columns[:3]) == ["user_id", "event_timestamp", "label"], got.columns
        assert list(got["label"]) == list(range(len(args["users"])))
        out[f"{name}-{pit}"] = {c: [None if pd.isna(v) else v for v in got[c].tolist()]
                                for c in got.columns[3:]}
online = fs.get_online_features(args["features"], pd.DataFrame({"user_id": args["users"][:2]}))
out["online_df"] = online.to_df().columns.tolist()
pushed = fs.push("stats", pd.DataFrame({"item_id": ["pd-1", "pd-2"], "qty": [5, 6],
                                        "event_timestamp": pd.to_datetime(args["times"][:2])}))
out["pushed"] = len(pushed["results"])
print(json.dumps(out))
"""


class PythonClientTest(QueryCase):
    views = [UA_VIEW, STATS_VIEW]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.now = (int(time.time() * US) // US) * US
        cls.fs = Client(cls.env.query.url, cls.env.tokens["ranker"],
                        command_url=cls.env.command.url,
                        command_token=cls.env.tokens["clicks-pipeline"])

    def wait_applied(self):
        # /readyz is 503 while query-svc catches up: wait for 200 at the size
        self.env.wait_caught_up(self.env.query, timeout=60)

    def route(self, head, rows):
        body = "\n".join([json.dumps(head)] + [json.dumps({"entity_id": e, "ts": t})
                                              for e, t in rows]) + "\n"
        r = self.env.qhttp("ranker", timeout=120).request(
            "POST", ROUTE, body, {"Content-Type": "application/x-ndjson"})
        self.assertEqual(r.status, 200, r)
        return harness.parse_ndjson(r.body)

    def write_story(self, user):
        """Three clicks of user, 3, 2 and 1 minutes ago, the middle one late."""
        seqs = []
        for minutes, dwell, key in ((3, 100.5, "a"), (1, 300.25, "c"), (2, 200.0, "b")):
            r = self.fs.write("user_activity", user, {"dwell_ms": dwell, "last_click": key},
                              event_ts=time_text(self.now - minutes * 60 * US),
                              idempotency_key=f"{user}-{key}")
            self.assertFalse(r["duplicate"])
            self.assertGreaterEqual(r["tree_size"], r["seq"])
            seqs.append(r["seq"])
        return seqs

    def test_write_and_online_read(self):
        seqs = self.write_story("py1")
        again = self.fs.write("user_activity", "py1", {"dwell_ms": 100.5, "last_click": "a"},
                              event_ts=time_text(self.now - 3 * 60 * US),
                              idempotency_key="py1-a")
        self.assertTrue(again["duplicate"])
        self.assertEqual(again["seq"], seqs[0])
        self.wait_applied()
        got = self.fs.get_online_features(
            features=["user_activity:dwell_ms", "user_activity:clicks_5m"],
            entity_rows=[{"user_id": "py1"}, {"user_id": "nobody"}])
        self.assertEqual(got, {"user_id": ["py1", "nobody"], "dwell_ms": [300.25, None],
                               "clicks_5m": [3, 0]})
        self.assertEqual(got.to_dict(), dict(got))
        self.assertEqual(got.statuses["dwell_ms"], ["PRESENT", "NOT_FOUND"])
        full = self.fs.get_online_features(["user_activity:dwell_ms"], [{"user_id": "py1"}],
                                           full_feature_names=True)
        self.assertEqual(list(full), ["user_id", "user_activity__dwell_ms"])

    def test_push_rows(self):
        r = self.fs.push("stats", [
            {"item_id": "push-1", "qty": 3, "event_timestamp": time_text(self.now - US)},
            {"item_id": "push-2", "qty": 4, "event_timestamp": time_text(self.now - US)}])
        self.assertEqual(len(r["results"]), 2)
        self.wait_applied()
        got = self.fs.get_online_features(["stats:qty"], [{"item_id": "push-1"},
                                                          {"item_id": "push-2"}])
        self.assertEqual(got, {"item_id": ["push-1", "push-2"], "qty": [3, 4]})

    def test_historical_rows_match_the_route(self):
        self.write_story("py2")
        self.wait_applied()
        times = [time_text(self.now - m * 60 * US + 1) for m in (4, 3, 2, 1, 0)]
        rows = [{"user_id": "py2", "event_timestamp": t, "label": i}
                for i, t in enumerate(times)] + [{"user_id": "nobody",
                                                   "event_timestamp": times[-1], "label": 9}]
        feats = ["user_activity:dwell_ms", "user_activity:last_click",
                 "user_activity:clicks_5m"]
        got = self.fs.get_historical_features(rows, feats)
        if not isinstance(got, list):  # pandas in this interpreter
            got = got.to_dict(orient="records")
        self.assertEqual([g["label"] for g in got], [0, 1, 2, 3, 4, 9])
        self.assertEqual([g["dwell_ms"] for g in got], [None, 100.5, 200.0, 300.25, 300.25,
                                                          None])
        self.assertEqual([g["clicks_5m"] for g in got], [0, 1, 2, 3, 3, 0])
        answer = self.route({"view": "user_activity", "features": ["dwell_ms", "last_click"],
                             "windows": ["clicks_5m"]},
                            [(r["user_id"], r["event_timestamp"]) for r in rows])
        for g, a in zip(got, answer):
            self.assertEqual(g["last_click"], a["features"]["last_click"]["value"])
        # errors: a malformed reference, a feature the caller may not read, a bad token
        with self.assertRaises(ValueError):
            self.fs.get_historical_features(rows, ["dwell_ms"])
        with self.assertRaises(FledgerError) as e:
            self.fs.get_historical_features(rows, ["user_activity:cart_items"])
        self.assertEqual(e.exception.status, 403)
        with self.assertRaises(FledgerError) as e:
            Client(self.env.query.url, "wrong-token").get_online_features(
                ["user_activity:dwell_ms"], [{"user_id": "py2"}])
        self.assertEqual((e.exception.status, e.exception.code), (401, "unknown_token"))
        with self.assertRaises(FledgerError) as e:
            self.fs.get_historical_features([{"user_id": "py2", "event_timestamp": "soon"}],
                                            feats)
        self.assertEqual((e.exception.status, e.exception.code), (400, "invalid_row"))

    def test_pandas_dataframes(self):
        """Under an interpreter with pandas (Debian's python3-pandas)."""
        probe = subprocess.run([PANDAS_PYTHON, "-c", "import pandas"], capture_output=True)
        self.assertEqual(probe.returncode, 0,
                         f"{PANDAS_PYTHON} cannot import pandas (install python3-pandas, "
                         "scripts/install-deps.sh): " + probe.stderr.decode()[-300:])
        self.write_story("py3")
        time.sleep(0.05)
        known_at = int(time.time() * US)  # after the story's ingest, before the late event's
        time.sleep(0.05)
        late = self.fs.write("user_activity", "py3", {"dwell_ms": 50.0, "last_click": "z"},
                             event_ts=time_text(self.now - 4 * 60 * US))
        self.wait_applied()
        times = [time_text(self.now - 60 * US + 1), time_text(known_at), time_text(known_at)]
        features = ["user_activity:dwell_ms", "user_activity:clicks_5m",
                    "user_activity:dwell_avg_1h"]
        args = {"query_url": self.env.query.url, "token": self.env.tokens["ranker"],
                "command_url": self.env.command.url,
                "command_token": self.env.tokens["clicks-pipeline"],
                "users": ["py3", "py3", "nobody"], "times": times, "features": features}
        env = dict(os.environ, PYTHONPATH=str(Path(fledger_client.__file__).parent))
        r = subprocess.run([PANDAS_PYTHON, "-c", PANDAS_SCRIPT, json.dumps(args)],
                           capture_output=True, env=env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode()[-2000:])
        out = json.loads(r.stdout)
        rows = list(zip(args["users"], times))
        for pit in ("event_time", "as_known"):
            answer = self.route({"view": "user_activity", "features": ["dwell_ms"],
                                 "windows": ["clicks_5m", "dwell_avg_1h"],
                                 "point_in_time": pit}, rows)
            expected = {"dwell_ms": [a["features"]["dwell_ms"]["value"] for a in answer],
                        "clicks_5m": [a["windows"]["clicks_5m"]["value"] for a in answer],
                        "dwell_avg_1h": [a["windows"]["dwell_avg_1h"]["value"]
                                         for a in answer]}
            for tz in ("aware", "naive"):
                self.assertEqual(out[f"{tz}-{pit}"], expected, f"{tz} {pit}")
        # the late event (ingested after known_at, 4 minutes back) counts for event_time only
        self.assertGreater(late["seq"], 0)
        self.assertEqual(out["aware-event_time"]["clicks_5m"], [4, 4, 0])
        self.assertEqual(out["aware-as_known"]["clicks_5m"], [0, 3, 0])
        self.assertEqual(out["online_df"], ["user_id", "dwell_ms", "clicks_5m", "dwell_avg_1h"])
        self.assertEqual(out["pushed"], 2)


if __name__ == "__main__":
    unittest.main()
