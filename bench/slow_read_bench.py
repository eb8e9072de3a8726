#!/usr/bin/env python3
"""
Expensive reads against cheap ones: one stack (tests/integration/harness.py),
1000 entities x EVENTS events in a 1h window, then for each query-svc
configuration (--http-threads, --read-workers):
  - cheap reads alone: wrk -t1 -c50, GET of one entity (1 feature, 2 windows)
  - under load: two clients send 1000-id batch reads back to back while
    /healthz is probed (a new connection every 20 ms) and wrk -t1 -c4 reads
    cheap entities; quantiles of each.
Prints a markdown table. Needs wrk. Figures vary between runs and machines:
compare the rows of one run.

    python3 bench/slow_read_bench.py [build-dir] [seconds]
"""
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import harness  # noqa: E402

if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
    print(__doc__.strip())
    sys.exit(0)
BUILD = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build"
SECS = int(sys.argv[2]) if len(sys.argv) > 2 else 6
EVENTS = 40
VIEW = {"name": "costly", "entity": "item_id", "features": {"x": "int64"},
        "windows": [{"name": "x_sum_1h", "fn": "sum", "of": "x", "size": "1h"},
                    {"name": "x_count_1h", "fn": "count", "of": "x", "size": "1h"}],
        "acl": {"write": ["clicks-pipeline"], "read": ["role:inference"]},
        "audit_reads": False}
CONFIGS = [(1, 0), (2, 0), (4, 0), (1, 2)]
LUA = """
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
request = function()
  return wrk.format("GET", "/v1/features/costly/c" .. math.random(0, 9999))
end
"""


def wrk_ms(text, what):
    m = re.search(rf"^\s*{what}\s+([\d.]+)(us|ms|s)\b", text, re.M)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def run_wrk(port, conns, secs, token, lua):
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", "-s", lua,
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                         env=dict(os.environ, TOKEN=token)).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rps, wrk_ms(out, "50%"), wrk_ms(out, "99%")


def q(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def main():
    env = harness.QueryEnv(BUILD / "command-svc" / "command-svc",
                           BUILD / "query-svc" / "query-svc", n_query=0)
    lua = Path(env.tmp.path) / "cheap.lua"
    lua.write_text(LUA)
    try:
        admin, producer = env.http("admin"), env.http("clicks-pipeline", keep_alive=True)
        assert admin.json("POST", "/v1/views", VIEW)[0] == 201
        t0 = int(time.time() * 1e6) - 30 * 60 * 1000000
        for k in range(EVENTS):
            events = [{"view": "costly", "entity_id": f"s{i}",
                       "event_ts": harness.time_text(t0 + k * 1000000), "features": {"x": k}}
                      for i in range(1000)]
            assert producer.json("POST", "/v1/events", {"events": events})[0] == 201
        for j in range(0, 10000, 1000):
            events = [{"view": "costly", "entity_id": f"c{i}", "features": {"x": i}}
                      for i in range(j, j + 1000)]
            assert producer.json("POST", "/v1/events", {"events": events})[0] == 201
        token = env.tokens["ranker"]
        batch = json.dumps({"view": "costly",
                            "entity_ids": [f"s{i}" for i in range(1000)]}).encode()
        rows = []
        for threads, workers in CONFIGS:
            svc = env.add_query(extra_args=["--http-threads", str(threads),
                                            "--read-workers", str(workers),
                                            "--log-level", "warn"])
            env.wait_caught_up(svc, timeout=300)
            run_wrk(svc.port, 50, 2, token, lua)  # warm-up
            alone = run_wrk(svc.port, 50, SECS, token, lua)
            stop, batches, health = threading.Event(), [], []

            def load():
                h = svc.http(token, keep_alive=True, timeout=120)
                while not stop.is_set():
                    t = time.monotonic()
                    r = h.request("POST", "/v1/features:batch", batch,
                                  {"Content-Type": "application/json"})
                    assert r.status == 200, r
                    batches.append(time.monotonic() - t)

            def probe():
                while not stop.is_set():
                    t = time.monotonic()
                    assert svc.http(timeout=120).get("/healthz").status == 200
                    health.append(time.monotonic() - t)
                    time.sleep(0.02)

            workers_ = [threading.Thread(target=load) for _ in range(2)] + \
                [threading.Thread(target=probe)]
            for w in workers_:
                w.start()
            time.sleep(0.5)
            loaded = run_wrk(svc.port, 4, SECS, token, lua)
            stop.set()
            for w in workers_:
                w.join()
            rows.append((threads, workers, alone, loaded, health, batches))
            svc.stop()
            env.retire(svc)
        print(f"machine: {os.cpu_count()} cores; {SECS}s per load; batch = 1000 ids x "
              f"{EVENTS} window events\n")
        print("| --http-threads | --read-workers | cheap alone: req/s, p50, p99 ms | "
              "under batch load: cheap req/s, p50, p99 ms | /healthz p50 / p99 / max ms | "
              "batch p50 ms |")
        print("|---|---|---|---|---|---|")
        for threads, workers, alone, loaded, health, batches in rows:
            hs = [x * 1e3 for x in health]
            print(f"| {threads} | {workers} | {alone[0]:.0f}, {alone[1]:.2f}, {alone[2]:.2f} | "
                  f"{loaded[0]:.0f}, {loaded[1]:.2f}, {loaded[2]:.2f} | "
                  f"{q(hs, .5):.1f} / {q(hs, .99):.1f} / {max(hs):.1f} | "
                  f"{statistics.median(batches) * 1e3:.0f} |")
    finally:
        env.close(check=False)


if __name__ == "__main__":
    main()
