#!/usr/bin/env python3
"""Helpers for bench/run-query-bench.sh (standard library only).

  load     write entities with 1000-event batch POSTs over a few keep-alive
           connections; prints one JSON line (events, seconds, tree_size)
  paced    write at a fixed event rate (batches on an absolute schedule, so a
           slow answer does not lower the rate); prints one JSON line
  resp     print Redis protocol: one HSET of 5 fields per entity (redis-cli --pipe)
  lag      quantiles of a Prometheus histogram from the delta of two /metrics dumps
  view     print the benchmark's feature view definition
"""
import argparse
import http.client
import json
import random
import sys
import threading
import time
from urllib.parse import urlsplit

FEATURES = "amount,clicks,category,is_mobile,score"
WINDOWS = "amount_sum_1h,clicks_count_24h"


def view_definition(name, audit):
    return {
        "name": name,
        "entity": "entity_id",
        "features": {"amount": "double", "clicks": "int64", "category": "string",
                     "is_mobile": "bool", "score": "double", "embedding": "vector[8]"},
        "max_age": "24h",
        "windows": [
            {"name": "amount_sum_1h", "fn": "sum", "of": "amount", "size": "1h"},
            {"name": "clicks_count_24h", "fn": "count", "of": "clicks", "size": "24h"},
            {"name": "last_3_categories", "fn": "last_n", "of": "category", "size": "24h", "n": 3},
        ],
        "acl": {"write": ["bench-pipeline"], "read": ["role:inference"]},
        "audit_reads": audit,
    }


def full_event(view, i):
    return ('{"view":"%s","entity_id":"e%d","features":{"amount":%d.25,"clicks":%d,'
            '"category":"c%d","is_mobile":%s,"score":0.%04d}}'
            % (view, i, i % 1000, i % 50, i % 97, "true" if i & 1 else "false", i % 10000))


def window_event(view, i, k):
    return ('{"view":"%s","entity_id":"e%d","features":{"amount":%d.5,"clicks":%d,"category":"k%d"}}'
            % (view, i, (i + k) % 1000, k, (i + k) % 13))


class Client:
    """One keep-alive HTTP/1.1 connection posting JSON."""

    def __init__(self, url, token):
        u = urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.headers = {"Content-Type": "application/json", "Authorization": "Bearer " + token}
        self.conn = None

    def post(self, path, body):
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                self.conn.request("POST", path, body=body.encode(), headers=self.headers)
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, data
            except (ConnectionError, http.client.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError


def batches(views, start, count, extra, size):
    """Yields 1000-event bodies: every entity once with all features, then
    `extra` passes of window events, the views interleaved batch by batch."""
    for k in range(extra + 1):
        for lo in range(start, start + count, size):
            hi = min(lo + size, start + count)
            for v in views:
                if k == 0:
                    yield '{"events":[' + ",".join(full_event(v, i) for i in range(lo, hi)) + "]}", hi - lo
                else:
                    yield '{"events":[' + ",".join(window_event(v, i, k) for i in range(lo, hi)) + "]}", hi - lo


def cmd_load(a):
    gen = batches(a.views.split(","), a.start, a.entities, a.extra, a.batch)
    lock = threading.Lock()
    state = {"events": 0, "tree_size": 0, "error": None}

    def worker():
        c = Client(a.url, a.token)
        while True:
            with lock:
                if state["error"]:
                    return
                try:
                    body, n = next(gen)
                except StopIteration:
                    return
            status, data = c.post("/v1/events", body)
            with lock:
                if status not in (200, 201):
                    state["error"] = "HTTP %d: %s" % (status, data[:300].decode(errors="replace"))
                    return
                state["events"] += n
                state["tree_size"] = max(state["tree_size"], json.loads(data)["tree_size"])

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(a.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    if state["error"]:
        sys.exit("load: " + state["error"])
    print(json.dumps({"events": state["events"], "seconds": round(secs, 3),
                      "events_per_s": round(state["events"] / secs), "tree_size": state["tree_size"]}))


def cmd_paced(a):
    """Batches of a.batch events every a.batch/a.rate seconds on an absolute
    schedule, spread over a.conns connections so one slow answer does not
    hold the next batch back."""
    interval = a.batch / a.rate
    n_batches = int(a.seconds * a.rate / a.batch)
    lock = threading.Lock()
    lat, state = [], {"next": 0, "late": 0, "events": 0, "tree_size": 0, "error": None}
    t0 = time.monotonic() + 0.05
    rnd = random.Random(1)

    def worker():
        c = Client(a.url, a.token)
        while True:
            with lock:
                if state["error"] or state["next"] >= n_batches:
                    return
                b = state["next"]
                state["next"] += 1
                ids = [rnd.randrange(a.entities) for _ in range(a.batch)]
            due = t0 + b * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > interval:
                with lock:
                    state["late"] += 1
            body = '{"events":[' + ",".join(window_event(a.view, i, b % 7 + 1) for i in ids) + "]}"
            s = time.monotonic()
            status, data = c.post("/v1/events", body)
            e = time.monotonic()
            with lock:
                if status not in (200, 201):
                    state["error"] = "HTTP %d: %s" % (status, data[:300].decode(errors="replace"))
                    return
                lat.append(e - s)
                state["events"] += a.batch
                state["tree_size"] = max(state["tree_size"], json.loads(data)["tree_size"])

    threads = [threading.Thread(target=worker) for _ in range(a.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    if state["error"]:
        sys.exit("paced: " + state["error"])
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else 0
    print(json.dumps({"events": state["events"], "seconds": round(secs, 3),
                      "events_per_s": round(state["events"] / secs), "late_batches": state["late"],
                      "ack_p50_ms": round(q(0.50), 2), "ack_p99_ms": round(q(0.99), 2),
                      "tree_size": state["tree_size"]}))


def cmd_resp(a):
    out = sys.stdout.buffer
    parts = []
    for i in range(a.entities):
        args = [b"HSET", b"ent:%012d" % i, b"amount", b"%d.25" % (i % 1000), b"clicks", b"%d" % (i % 50),
                b"category", b"c%d" % (i % 97), b"is_mobile", b"1" if i & 1 else b"0",
                b"score", b"0.%04d" % (i % 10000)]
        parts.append(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in args))
        if len(parts) == 10000:
            out.write(b"".join(parts))
            parts = []
    out.write(b"".join(parts))


def cmd_readable(a):
    """Write -> readable: POST one event (a fresh entity each time) to
    command-svc, then GET it from query-svc with min_seq = the write's seq,
    a.rate probes a second for a.seconds, one after another on two
    keep-alive connections. The time is from the POST's start to the GET's
    answer (this client's own cost included)."""
    w = Client(a.url, a.token)
    u = urlsplit(a.query_url)
    rconn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    rheaders = {"Authorization": "Bearer " + a.read_token}
    total, ack, wait, errors = [], [], [], 0
    t_end = time.monotonic() + a.seconds
    i = 0
    while time.monotonic() < t_end:
        i += 1
        ent = "readable-%d" % i
        body = ('{"view":"%s","entity_id":"%s","features":{"amount":%d.5,"clicks":%d}}'
                % (a.view, ent, i % 1000, i % 50))
        t0 = time.monotonic()
        status, data = w.post("/v1/events", body)
        t1 = time.monotonic()
        if status not in (200, 201):
            if errors == 0:
                print("first error: HTTP %d %s" % (status, data[:300].decode(errors="replace")),
                      file=sys.stderr)
            errors += 1
            continue
        seq = json.loads(data)["results"][0]["seq"]
        rconn.request("GET", "/v1/features/%s/%s?features=amount&min_seq=%d&wait_ms=1000"
                      % (a.view, ent, seq), headers=rheaders)
        r = rconn.getresponse()
        answer = r.read()
        t2 = time.monotonic()
        got = json.loads(answer) if r.status == 200 else {}
        if r.status != 200 or got.get("features", {}).get("amount", {}).get("seq") != seq:
            if errors == 0:
                print("first error: HTTP %d %s" % (r.status, answer[:300].decode(errors="replace")),
                      file=sys.stderr)
            errors += 1
            continue
        total.append(t2 - t0)
        ack.append(t1 - t0)
        wait.append(t2 - t1)
        pause = 1.0 / a.rate - (time.monotonic() - t0)
        if pause > 0:
            time.sleep(pause)
    out = {"probes": len(total), "errors": errors}
    for name, xs in (("total", total), ("ack", ack), ("read", wait)):
        xs.sort()
        for p in (0.5, 0.99):
            out["%s_p%d_ms" % (name, p * 100)] = round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 2) if xs else None
    print(json.dumps(out))


def histogram(path, name):
    buckets, count = {}, 0.0
    for line in open(path):
        if line.startswith(name + "_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count"):
            count = float(line.rsplit(" ", 1)[1])
    return buckets, count


def cmd_lag(a):
    b0, c0 = histogram(a.before, a.name)
    b1, c1 = histogram(a.after, a.name)
    bounds = sorted(b1)
    cum = [b1[b] - b0.get(b, 0.0) for b in bounds]
    total = c1 - c0
    res = {"count": int(total)}
    for p in (0.5, 0.99):
        if total <= 0:
            res["p%d" % (p * 100)] = None
            continue
        rank, prev_b, prev_c = p * total, 0.0, 0.0
        for b, c in zip(bounds, cum):
            if c >= rank:
                # linear interpolation inside the bucket, as histogram_quantile() does
                est = prev_b if b == float("inf") else prev_b + (b - prev_b) * (rank - prev_c) / max(c - prev_c, 1e-9)
                res["p%d" % (p * 100)] = {"estimate_ms": round(est * 1000, 2), "bucket_ms": [prev_b * 1000, b * 1000]}
                break
            prev_b, prev_c = b, c
    res["buckets"] = {("+Inf" if b == float("inf") else "%g" % (b * 1000)): int(c) for b, c in zip(bounds, cum)}
    print(json.dumps(res))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("load")
    s.add_argument("--url", required=True)
    s.add_argument("--token", required=True)
    s.add_argument("--views", required=True)
    s.add_argument("--entities", type=int, required=True)
    s.add_argument("--start", type=int, default=0)
    s.add_argument("--extra", type=int, default=0, help="window events per entity after the first")
    s.add_argument("--batch", type=int, default=1000)
    s.add_argument("--conns", type=int, default=4)
    s = sub.add_parser("paced")
    s.add_argument("--url", required=True)
    s.add_argument("--token", required=True)
    s.add_argument("--view", required=True)
    s.add_argument("--entities", type=int, required=True)
    s.add_argument("--rate", type=float, default=5000)
    s.add_argument("--batch", type=int, default=50)
    s.add_argument("--seconds", type=float, default=15)
    s.add_argument("--conns", type=int, default=4)
    s = sub.add_parser("readable")
    s.add_argument("--url", required=True)
    s.add_argument("--token", required=True)
    s.add_argument("--query-url", required=True)
    s.add_argument("--read-token", required=True)
    s.add_argument("--view", required=True)
    s.add_argument("--rate", type=float, default=200)
    s.add_argument("--seconds", type=float, default=10)
    s = sub.add_parser("resp")
    s.add_argument("--entities", type=int, required=True)
    s = sub.add_parser("lag")
    s.add_argument("--before", required=True)
    s.add_argument("--after", required=True)
    s.add_argument("--name", default="fledger_projection_lag_seconds")
    s = sub.add_parser("view")
    s.add_argument("--name", required=True)
    s.add_argument("--audit", choices=["true", "false"], required=True)
    a = p.parse_args()
    if a.cmd == "view":
        print(json.dumps(view_definition(a.name, a.audit == "true")))
    else:
        {"load": cmd_load, "paced": cmd_paced, "resp": cmd_resp, "lag": cmd_lag,
         "readable": cmd_readable}[a.cmd](a)


if __name__ == "__main__":
    main()
