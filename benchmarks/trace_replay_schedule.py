"""Trace replay on schedule: how late requests reach the server against the trace's time-scaled schedule,
run after run. `kimi-deploy bench --workload trace` replays a slice of a Mooncake-format trace against
`kimi-deploy sim` (streaming each row's output_length tokens), and the sim writes when each chat request
arrived (`--arrivals`, CLOCK_MONOTONIC, which both processes share on one machine). Requests with equal
timestamps are interchangeable, so the i-th arrival is compared with the i-th scheduled time; the
schedule's origin is the bench's own (t_sched of the first row, from requests.jsonl: t_send minus its
schedule lag). Target: arrival p99 within 50 ms of the schedule in every run on a quiet 2-core machine.
The sim shares the machine: its own event loop (streaming every answer) delays when it sees a request,
so the arrival lateness is an upper bound of the client's; the client's own part is its schedule lag.

Run: .venv/bin/python benchmarks/trace_replay_schedule.py --trace TRACE.jsonl [--rows 1000:1400]
     [--time-scale 0.1] [--runs 5] [--burst K] [--bench-src OTHER_CHECKOUT/src]
The default slice is rows 1000-1399 of Mooncake's synthetic_trace.jsonl (github.com/kvcache-ai/Mooncake,
FAST25-release/traces/, Apache-2.0): 108 s of trace, 10.8 s at --time-scale 0.1, ~110 streams at once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kimi_deploy.stats import percentile

TARGET_P99_MS = 50.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, timeout: float = 30.0) -> None:
    import httpx2

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx2.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the sim at {url} did not come up in {timeout:g} s")


def one_run(trace: Path, rows: list[dict], scale: float, work: Path, k: int, bench_src: Path | None) -> dict[str, float]:
    port = _port()
    arrivals = work / f"arrivals-{k}.jsonl"
    sim = subprocess.Popen([sys.executable, "-m", "kimi_deploy", "sim", "--port", str(port), "--ttft-ms", "50",
                            "--itl-ms", "20", "--arrivals", str(arrivals)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_up(url)
        out = work / f"run-{k}"
        proc = subprocess.run([sys.executable, "-m", "kimi_deploy", "bench", "--base-url", url + "/v1", "--model",
                               "sim", "--workload", "trace", "--dataset", str(trace), "--time-scale", str(scale),
                               "--output", str(out)], capture_output=True, text=True, timeout=900,
                              env={**os.environ, "PYTHONPATH": str(bench_src)} if bench_src else None)
        if proc.returncode != 0:
            raise SystemExit(f"bench failed ({proc.returncode}): {proc.stderr[-2000:]}")
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(timeout=30)
    reqs = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    first = next(r for r in reqs if r["index"] == 0)
    t0 = first["t_send"] - first["schedule_lag"] / 1000  # the bench's schedule origin (row 0 is at 0)
    base = rows[0]["timestamp"]
    sched = sorted(t0 + (r["timestamp"] - base) * scale / 1000 for r in rows)
    got = sorted(json.loads(x)["t"] for x in arrivals.read_text().splitlines() if x.strip())
    if len(got) != len(sched):
        raise SystemExit(f"run {k}: the sim saw {len(got)} chat requests, the slice has {len(sched)}")
    late = [(a - s) * 1000 for a, s in zip(got, sched)]
    summary = json.loads((out / "summary.json").read_text())
    return {"p50": percentile(late, 50), "p99": percentile(late, 99), "max": max(late), "min": min(late),
            "client_lag_p99": summary["client"]["schedule_lag_ms_p99"],
            "worker_cpu_max": summary["client"]["worker_cpu_max"], "valid": summary["client"]["valid"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", type=Path, required=True)
    ap.add_argument("--rows", default="1000:1400", help="A:B, the slice of rows to replay")
    ap.add_argument("--time-scale", type=float, default=0.1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--burst", type=int, default=1, help="give every K consecutive rows the first one's timestamp "
                                                         "(bursts of K requests due at once: the stress case)")
    ap.add_argument("--bench-src", type=Path, help="another checkout's src/ to run the bench client from (e.g. an "
                                                   "earlier commit in a git worktree), against the same sim")
    args = ap.parse_args()
    a, _, b = args.rows.partition(":")
    rows = [json.loads(x) for x in args.trace.read_text().splitlines() if x.strip()][int(a):int(b)]
    for i, r in enumerate(rows):
        r["timestamp"] = rows[i - i % args.burst]["timestamp"]
    print(f"{len(rows)} rows ({args.trace.name} {args.rows}, bursts of {args.burst}), "
          f"{(rows[-1]['timestamp'] - rows[0]['timestamp']) / 1000:.0f} s "
          f"of trace at --time-scale {args.time_scale}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trace = work / "slice.jsonl"
        trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{'run':>3} {'arrival late p50':>17} {'p99':>8} {'max':>8} {'min':>10} {'client lag p99':>15} "
              f"{'worker cpu':>10} {'self-check':>10}")
        for k in range(args.runs):
            r = one_run(trace, rows, args.time_scale, work, k, args.bench_src)
            results.append(r)
            print(f"{k:>3} {r['p50']:>14.1f} ms {r['p99']:>5.1f} ms {r['max']:>5.1f} ms {r['min']:>7.1f} ms "
                  f"{r['client_lag_p99']:>12.1f} ms {r['worker_cpu_max']:>10.0%} "
                  f"{'VALID' if r['valid'] else 'INVALID':>10}")
    within = sum(r["p99"] <= TARGET_P99_MS for r in results)
    print(f"arrival p99 within {TARGET_P99_MS:g} ms of the schedule in {within} of {len(results)} runs")
    return 0 if within == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
