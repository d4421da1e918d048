"""kimi-deploy bench vs `vllm bench serve`, side by side in one run on this machine, against
`kimi-deploy sim` streaming 128 tokens per request at a fixed 20 ms ITL (and a 20 ms TTFT, so every
user ideally receives exactly 50 tokens/s). For each concurrency level it reports achieved output
tokens/s as a fraction of the ideal (concurrency x 50) and the mean TTFT error against the injected
20 ms. Targets: >= 95 % of ideal and a TTFT error at most half of vllm bench serve's, at every level.

Run: .venv/bin/python benchmarks/bench_vs_vllm.py [--levels 128,512,1024] [--rounds 2] [--sim-procs 1]
(needs runs/tiny-k2 for vllm bench's tokenizer: `.venv/bin/kimi-deploy tiny-model runs/tiny-k2`).
Both harnesses share the machine with the sim; on 2 cores the sim itself saturates first at high levels,
which shows as both tools falling short together.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ITL_MS, TTFT_MS, TOKENS = 20.0, 20.0, 128


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sim(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([str(BIN / "kimi-deploy"), "sim", "--port", str(port), "--ttft-ms", str(TTFT_MS),
                             "--itl-ms", str(ITL_MS), "--output-len", str(TOKENS)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("sim did not start")


def ours(port: int, c: int, n: int, out: Path) -> dict:
    subprocess.run([str(BIN / "kimi-deploy"), "bench", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "sim",
                    "--output", str(out), "--concurrency", str(c), "--num-requests", str(n), "--input-len", "32",
                    "--output-len", str(TOKENS)], check=True, capture_output=True)
    s = json.loads((out / "summary.json").read_text())
    return {"tok_s": s["throughput"]["output_tokens_per_s"], "ttft": s["latency_ms"]["ttft"]["mean"],
            "valid": s["client"]["valid"]}


def theirs(port: int, c: int, n: int, out: Path) -> dict:
    tokenizer = ROOT / "runs" / "tiny-k2"
    cmd = [str(BIN / "vllm"), "bench", "serve", "--backend", "openai-chat", "--base-url", f"http://127.0.0.1:{port}",
           "--endpoint", "/v1/chat/completions", "--model", "sim", "--tokenizer", str(tokenizer),
           "--dataset-name", "random", "--random-input-len", "32", "--random-output-len", str(TOKENS),
           "--num-prompts", str(n), "--max-concurrency", str(c), "--request-rate", "inf", "--ignore-eos",
           "--save-result", "--result-dir", str(out), "--result-filename", "vllm.json", "--disable-tqdm"]
    env = dict(os.environ, VLLM_LOGGING_LEVEL="ERROR")
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    r = json.loads((out / "vllm.json").read_text())
    return {"tok_s": r["output_throughput"], "ttft": r["mean_ttft_ms"], "valid": None}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="128,512,1024")
    ap.add_argument("--rounds", type=int, default=2, help="requests per user")
    args = ap.parse_args()
    print(f"sim: {TOKENS} tokens, TTFT {TTFT_MS} ms, ITL {ITL_MS} ms; ideal = concurrency x {1000 / ITL_MS:.0f} tok/s;"
          f" {os.cpu_count()} cores")
    print(f"{'conc':>5} | {'tool':<18} | {'out tok/s':>10} | {'% of ideal':>10} | {'mean TTFT':>9} | {'TTFT err':>8}")
    rows = []
    for c in (int(x) for x in args.levels.split(",")):
        ideal = c * 1000 / ITL_MS
        for name, fn in (("vllm bench serve", theirs), ("kimi-deploy bench", ours)):
            port = free_port()
            sim = start_sim(port)
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    r = fn(port, c, c * args.rounds, Path(tmp))
            finally:
                sim.terminate()
                sim.wait(timeout=30)
            err = r["ttft"] - TTFT_MS
            rows.append({"concurrency": c, "tool": name, **r, "ideal": ideal, "ttft_err": err})
            note = "" if r["valid"] in (None, True) else " (self-check: INVALID)"
            print(f"{c:>5} | {name:<18} | {r['tok_s']:>10.0f} | {100 * r['tok_s'] / ideal:>9.1f}% | "
                  f"{r['ttft']:>7.1f}ms | {err:>6.1f}ms{note}", flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
