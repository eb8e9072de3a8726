#!/usr/bin/env python3
"""
`fledger historical` (CONTRACT §6 training data, §11 CLI) against a real
nats-server, command-svc and query-svc.

- CSV and NDJSON rows files, NDJSON and CSV answers, with and without
  --as-known: the file written equals the route's own answer byte for byte;
- a row the service refuses: exit 1, the message names the line of the rows
  file, and --out is not created; a malformed CSV line is refused before
  anything is sent;
- a large export streams: the CLI's peak memory stays far below the size of
  the answer it wrote (the old client held whole answers in memory).

Binaries: $FLEDGER_COMMAND_SVC, $FLEDGER_QUERY_SVC, $FLEDGER_CLI (defaults
under build/).

    python3 tests/integration/test_historical_cli.py -v
"""

import json
import os
import random
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import time_text  # noqa: E402
from test_query_svc import SEED, STATS_VIEW, UA_VIEW, US, QueryCase  # noqa: E402
from test_query_svc import setUpModule as query_setup  # noqa: E402

CLI = Path(os.environ.get("FLEDGER_CLI") or harness.REPO_ROOT / "build" / "cli" / "fledger")
ROUTE = "/v1/features:historical"


def setUpModule():
    query_setup()
    if not CLI.is_file() or not os.access(CLI, os.X_OK):
        raise RuntimeError(f"fledger binary not found at {CLI}: build it or set FLEDGER_CLI")


class HistoricalCliTest(QueryCase):
    views = [UA_VIEW, STATS_VIEW]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            self = cls("run")
            rng = random.Random(SEED + 7)
            cls.start = (int(time.time() * US) // US) * US
            events = []
            for _ in range(600):
                ts = cls.start - rng.randrange(0, 30 * 60 * US)  # random order
                events.append(("stats", f"it{rng.randrange(20)}", ts,
                               {"qty": rng.randrange(-50, 50),
                                "price": rng.randrange(1, 10**6) / 64,
                                "tag": f"t{rng.randrange(9)}"}))
            for b in range(4):  # later batches carry late arrivals for as_known
                self.write(events[b * 150:(b + 1) * 150])
                time.sleep(0.3)
            size = cls.env.tree_size()
            harness.poll(lambda: harness.readyz(cls.env.qhttp())["applied_seq"] >= size, 30)
            cls.tmp = cls.env.tmp.path
            cls.token_file = cls.tmp / "ranker.token"
            cls.token_file.write_text(cls.env.tokens["ranker"] + "\n")
            cls.rows = [(rng.choice([f"it{rng.randrange(20)}", "never-written"]),
                         time_text(cls.start - rng.randrange(-2 * US, 35 * 60 * US)))
                        for _ in range(150)]
        except BaseException:
            cls.env.close(check=False)
            raise

    # -- helpers --
    def cli(self, *args):
        """Runs fledger historical; (returncode, stderr text, peak RSS in KiB).

        The peak is the CLI's VmHWM, sampled every few milliseconds until it
        exits (a child's ru_maxrss would include this Python process's)."""
        cmd = [str(CLI), "--query-url", self.env.query.url, "--token-file",
               str(self.token_file), "historical"] + [str(a) for a in args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEDGER_")}
        err_path = self.tmp / "cli.stderr"
        peak = 0
        with open(err_path, "wb") as err_file:
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file, env=env)
            status = Path(f"/proc/{p.pid}/status")
            while p.poll() is None:
                try:
                    # only once the exec is done (before, it is a copy of this process)
                    if Path(os.readlink(f"/proc/{p.pid}/exe")).resolve() != CLI.resolve():
                        continue
                    for line in status.read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]))
                except (OSError, ValueError):
                    pass
                finally:
                    time.sleep(0.005)
        return p.returncode, err_path.read_text(), peak

    def write_rows(self, name, rows, kind):
        path = self.tmp / name
        if kind == "csv":
            path.write_text("entity_id,ts\n" + "".join(f"{e},{t}\n" for e, t in rows))
        else:
            path.write_text("".join(json.dumps({"entity_id": e, "ts": t}) + "\n"
                                    for e, t in rows))
        return path

    def route(self, head, rows, accept=None):
        body = "\n".join([json.dumps(head)] + [json.dumps({"entity_id": e, "ts": t})
                                              for e, t in rows]) + "\n"
        headers = {"Content-Type": "application/x-ndjson"}
        if accept:
            headers["Accept"] = accept
        r = self.env.qhttp("ranker", timeout=300).request("POST", ROUTE, body, headers)
        self.assertEqual(r.status, 200, r)
        return r.body

    # -- tests --
    def test_answers_equal_the_route_byte_for_byte(self):
        csv_rows = self.write_rows("rows.csv", self.rows, "csv")
        nd_rows = self.write_rows("rows.ndjson", self.rows, "ndjson")
        features, windows = ["qty", "tag"], ["qty_sum", "tag_last"]
        for as_known in (False, True):
            head = {"view": "stats", "features": features, "windows": windows,
                    "point_in_time": "as_known" if as_known else "event_time"}
            for fmt, accept in (("ndjson", None), ("csv", "text/csv")):
                expected = self.route(head, self.rows, accept)
                self.assertEqual(len(expected.splitlines()),
                                 len(self.rows) + (fmt == "csv"))
                for rows_file in (csv_rows, nd_rows):
                    out = self.tmp / f"out-{as_known}-{rows_file.suffix[1:]}.{fmt}"
                    args = ["--view", "stats", "--features", ",".join(features),
                            "--windows", ",".join(windows), "--rows", rows_file,
                            "--format", fmt, "--out", out]
                    if as_known:
                        args.append("--as-known")
                    rc, err, _ = self.cli(*args)
                    ctx = f"{rows_file.name} {fmt} as_known={as_known}: {err}"
                    self.assertEqual(rc, 0, ctx)
                    self.assertEqual(out.read_bytes(), expected, ctx)
                    self.assertIn(f"{len(self.rows)} rows", err, ctx)
                    self.assertFalse(Path(str(out) + ".part").exists(), ctx)
        # as_known must differ somewhere, or the flag is not reaching the route
        a = (self.tmp / "out-False-csv.ndjson").read_bytes()
        b = (self.tmp / "out-True-csv.ndjson").read_bytes()
        self.assertNotEqual(a, b, "the data set must exercise late arrivals")

    def test_defaults_read_every_feature_and_window(self):
        rows_file = self.write_rows("all.csv", self.rows[:5], "csv")
        out = self.tmp / "all.ndjson"
        rc, err, _ = self.cli("--view", "stats", "--rows", rows_file, "--out", out)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.read_bytes(), self.route({"view": "stats"}, self.rows[:5]))

    def test_bad_row_names_its_line(self):
        rows = list(self.rows[:6])
        rows[2] = ("it1", "yesterday")  # CSV line 4, NDJSON line 3
        for kind, file_line in (("csv", 4), ("ndjson", 3)):
            rows_file = self.write_rows(f"bad.{kind}", rows, kind)
            out = self.tmp / f"bad-{kind}.out"
            rc, err, _ = self.cli("--view", "stats", "--rows", rows_file, "--out", out)
            self.assertEqual(rc, 1, err)
            self.assertIn("HTTP 400 invalid_row", err)
            self.assertIn(f"line {file_line} of {rows_file}", err)
            self.assertFalse(out.exists(), err)
            self.assertFalse(Path(str(out) + ".part").exists(), err)
        # a malformed CSV line is refused before anything is sent
        path = self.tmp / "fields.csv"
        path.write_text("entity_id,ts\nit1,2026-01-01T00:00:00Z\nit2\n")
        rc, err, _ = self.cli("--view", "stats", "--rows", path, "--out", self.tmp / "f.out")
        self.assertEqual(rc, 1, err)
        self.assertIn(f"{path} line 3: not as many fields as the header", err)
        path.write_text("id,when\nit1,2026-01-01T00:00:00Z\n")
        rc, err, _ = self.cli("--view", "stats", "--rows", path, "--out", self.tmp / "f.out")
        self.assertEqual(rc, 1, err)
        self.assertIn("header entity_id,ts", err)
        # an unknown feature: the head (line 1) is named as such
        rc, err, _ = self.cli("--view", "stats", "--features", "nope", "--rows",
                              self.write_rows("ok.csv", rows[:1], "csv"), "--out",
                              self.tmp / "f.out")
        self.assertEqual(rc, 1, err)
        self.assertIn("HTTP 400", err)
        self.assertFalse((self.tmp / "f.out").exists())
        # usage errors
        rc, err, _ = self.cli("--view", "stats", "--rows", path)
        self.assertEqual(rc, 2, err)
        rc, err, _ = self.cli("--view", "stats", "--rows", path, "--out", "x", "--format", "xml")
        self.assertEqual(rc, 2, err)

    def test_large_export_streams(self):
        """The CLI's peak RSS stays far below the answer it wrote."""
        n = 200_000
        rng = random.Random(SEED + 8)
        rows = [(f"it{rng.randrange(20)}", time_text(self.start - rng.randrange(0, 30 * 60 * US)))
                for _ in range(n)]
        rows_file = self.write_rows("large.csv", rows, "csv")
        out = self.tmp / "large.ndjson"
        rc, err, peak_kib = self.cli("--view", "stats", "--features", "qty,price,tag",
                                     "--windows", "qty_sum", "--rows", rows_file, "--out", out)
        self.assertEqual(rc, 0, err)
        size = out.stat().st_size
        lines = out.read_bytes().count(b"\n")
        self.assertEqual(lines, n)
        print(f"\n[large export] {n} rows, answer {size >> 20} MiB, request "
              f"{rows_file.stat().st_size >> 20} MiB, CLI peak RSS {peak_kib >> 10} MiB",
              file=sys.stderr)
        self.assertGreater(size, 60 << 20)
        if harness.built_with_asan(CLI):
            print("[ASan build: the CLI's RSS not bounded here]", file=sys.stderr)
        else:
            self.assertLess(peak_kib * 1024, size / 4, "the answer was held in memory")
        out.unlink()


if __name__ == "__main__":
    unittest.main()
