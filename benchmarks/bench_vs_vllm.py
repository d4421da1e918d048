"""kimi-deploy bench against its peers, one after the other in one run on this machine, each against a
fresh `kimi-deploy sim` streaming 128 tokens per request at a fixed 20 ms ITL after a 20 ms TTFT, so
every user ideally receives exactly 50 tokens/s (ideal output throughput = concurrency x 50).

The peers: `vllm bench serve` (the project's venv), AIPerf 0.13.0 and GuideLLM 0.8.1 (each installed
by this script into its own venv under ~/.cache/kimi-deploy/peers/<tool>-<version>, never into the
project's; a peer that does not install or run is reported with the reason, and the run carries on).

For every tool and concurrency level it reports what the tool itself says (output tokens/s as a share
of the ideal, mean TTFT and its error against the injected 20 ms) and what it cost: the client's CPU
time per streamed chunk, measured from outside for every tool alike (user + system time of the tool's
whole process tree, read from /proc, over the middle 90 % of the tokens the sim streamed, divided by
those tokens), and the sim's own CPU per chunk (on a small machine the sim competes for the same
cores). kimi-deploy's self-check (VALID / INVALID, and why) is shown as it printed it.

Run (from the repository root; vllm bench needs the tiny-k2 tokenizer, `kimi-deploy tiny-model runs/tiny-k2`):
  .venv/bin/python benchmarks/bench_vs_vllm.py [--levels 128,512,1024] [--rounds 2]
      [--tools kimi-deploy,vllm,aiperf,guidellm] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx2

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ITL_MS, TTFT_MS, TOKENS, INPUT = 20.0, 20.0, 128, 32
PEERS = Path.home() / ".cache" / "kimi-deploy" / "peers"
# The peers' versions (the issue names them): AIPerf https://pypi.org/project/aiperf/0.13.0/,
# GuideLLM https://pypi.org/project/guidellm/0.8.1/
AIPERF, GUIDELLM = ("aiperf", "0.13.0"), ("guidellm", "0.8.1")
TICK = os.sysconf("SC_CLK_TCK")


def env_ours() -> dict[str, str]:
    """kimi-deploy from this checkout (not whatever is installed in the venv)."""
    return dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- CPU of a process tree, from /proc --------------------------------------------------------------
def _stat(pid: int) -> tuple[float, list[int]] | None:
    """(user + system + reaped children's user + system seconds, child pids) of one live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = sum(int(x) for x in fields[11:15]) / TICK  # utime, stime, cutime, cstime
        kids: list[int] = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(k) for k in (task / "children").read_text().split()]
        return cpu, kids
    except (OSError, IndexError, ValueError):
        return None


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and every descendant, live or reaped (a reaped process is counted in its
    parent's cutime/cstime, a live one in its own stat)."""
    total, todo = 0.0, [root]
    while todo:
        got = _stat(todo.pop())
        if got:
            total += got[0]
            todo += got[1]
    return total


class Sampler(threading.Thread):
    """Every 100 ms: the tool's tree CPU, the sim's CPU and the tokens the sim has streamed."""

    def __init__(self, sim_pid: int, port: int) -> None:
        super().__init__(daemon=True)
        self.sim_pid, self.port = sim_pid, port
        self.tool_pid: int | None = None
        self.rows: list[tuple[float, float, float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx2.Client(timeout=5) as http:
            while not self.stop.wait(0.1):
                try:
                    text = http.get(f"http://127.0.0.1:{self.port}/metrics").text
                    tokens = int(next(line.split()[1] for line in text.splitlines()
                                      if line.startswith("sim:generation_tokens_total")))
                except (httpx2.HTTPError, StopIteration, ValueError):
                    continue
                tool = tree_cpu(self.tool_pid) if self.tool_pid else 0.0
                self.rows.append((time.monotonic(), tool, tree_cpu(self.sim_pid), tokens))

    def per_chunk(self) -> tuple[float | None, float | None]:
        """(client, sim) CPU microseconds per streamed token over the middle 90 % of the tokens."""
        rows = [r for r in self.rows if self.tool_pid]
        if len(rows) < 3 or rows[-1][3] - rows[0][3] < 100:
            return None, None
        base, total = rows[0][3], rows[-1][3] - rows[0][3]
        lo = next(r for r in rows if r[3] - base >= 0.05 * total)
        hi = next(r for r in reversed(rows) if r[3] - base <= 0.95 * total)
        if hi[3] <= lo[3]:
            return None, None
        n = hi[3] - lo[3]
        return (hi[1] - lo[1]) / n * 1e6, (hi[2] - lo[2]) / n * 1e6


def start_sim(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "kimi_deploy", "sim", "--port", str(port), "--ttft-ms", str(TTFT_MS),
                             "--itl-ms", str(ITL_MS), "--output-len", str(TOKENS)], env=env_ours(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx2.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("sim did not start")


def run_tool(cmd: list[str], sampler: Sampler, env: dict[str, str] | None = None, timeout: float = 1800) -> None:
    """Run one tool to the end with its process tree sampled; its output is kept for the error message."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        sampler.tool_pid = proc.pid
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise RuntimeError(f"timed out after {timeout:g} s") from None
        if rc != 0:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"exit {rc}: " + " | ".join(tail))


# --- the tools ---------------------------------------------------------------------------------------
def ours(port: int, c: int, n: int, out: Path, sampler: Sampler) -> dict[str, Any]:
    run_tool([sys.executable, "-m", "kimi_deploy", "bench", "--base-url", f"http://127.0.0.1:{port}/v1",
              "--model", "sim", "--output", str(out), "--concurrency", str(c), "--num-requests", str(n),
              "--input-len", str(INPUT), "--output-len", str(TOKENS)], sampler, env=env_ours())
    s = json.loads((out / "summary.json").read_text())
    client = s["client"]
    return {"tok_s": s["throughput"]["output_tokens_per_s"], "ttft": s["latency_ms"]["ttft"]["mean"],
            "valid": client["valid"], "why": client["invalid_because"],
            "self_us_per_chunk": client.get("cpu_us_per_chunk")}


def vllm(port: int, c: int, n: int, out: Path, sampler: Sampler) -> dict[str, Any]:
    exe = BIN / "vllm"
    if not exe.exists():
        raise RuntimeError(f"{exe} not found (scripts/setup-env.sh installs vLLM)")
    run_tool([str(exe), "bench", "serve", "--backend", "openai-chat", "--base-url", f"http://127.0.0.1:{port}",
              "--endpoint", "/v1/chat/completions", "--model", "sim", "--tokenizer", str(tokenizer()),
              "--dataset-name", "random", "--random-input-len", str(INPUT), "--random-output-len", str(TOKENS),
              "--num-prompts", str(n), "--max-concurrency", str(c), "--request-rate", "inf", "--ignore-eos",
              "--save-result", "--result-dir", str(out), "--result-filename", "vllm.json", "--disable-tqdm"],
             sampler, env=dict(os.environ, VLLM_LOGGING_LEVEL="ERROR"))
    r = json.loads((out / "vllm.json").read_text())
    return {"tok_s": r["output_throughput"], "ttft": r["mean_ttft_ms"]}


def aiperf(port: int, c: int, n: int, out: Path, sampler: Sampler) -> dict[str, Any]:
    # Flags from `aiperf profile --help` (0.13.0); the sim's usage counts the tokens
    # (--use-server-token-count): the tiny-k2 tokenizer splits the sim's words differently.
    exe = peer(*AIPERF) / "bin" / "aiperf"
    run_tool([str(exe), "profile", "--model", "sim", "--url", f"http://127.0.0.1:{port}", "--endpoint-type", "chat",
              "--streaming", "--concurrency", str(c), "--request-count", str(n),
              "--prompt-input-tokens-mean", str(INPUT), "--prompt-output-tokens-mean", str(TOKENS),
              "--extra-inputs", "ignore_eos:true", "--use-server-token-count", "--tokenizer", str(tokenizer()),
              "--output-artifact-dir", str(out), "--ui", "none", "--no-server-metrics", "--no-gpu-telemetry"], sampler)
    r = json.loads((out / "profile_export_aiperf.json").read_text())
    return {"tok_s": r["output_token_throughput"]["avg"], "ttft": r["time_to_first_token"]["avg"]}


def guidellm(port: int, c: int, n: int, out: Path, sampler: Sampler) -> dict[str, Any]:
    # Flags from `guidellm run --help` (0.8.1: kind=...,key=value arguments; the fields are those of its
    # schemas: backend openai_http target/model/request_format, profile concurrent streams, constraint
    # max_requests count, data synthetic_text prompt_tokens/output_tokens, tokenizer model, output json path)
    exe = peer(*GUIDELLM) / "bin" / "guidellm"
    path = out / "guidellm.json"
    run_tool([str(exe), "run", "--backend", f"kind=openai_http,target=http://127.0.0.1:{port},model=sim,"
              "request_format=/v1/chat/completions", "--profile", f"kind=concurrent,streams={c}",
              "--constraint", f"kind=max_requests,count={n}",
              "--data", f"kind=synthetic_text,prompt_tokens={INPUT},output_tokens={TOKENS}",
              "--tokenizer", f"kind=huggingface_auto,model={tokenizer()}", "--output", f"kind=json,path={path}",
              "--disable-console-interactive"], sampler)
    m = json.loads(path.read_text())["benchmarks"][0]["metrics"]
    return {"tok_s": m["output_tokens_per_second"]["successful"]["mean"],
            "ttft": m["time_to_first_token_ms"]["successful"]["mean"]}


TOOLS: dict[str, Callable[..., dict[str, Any]]] = {"kimi-deploy": ours, "vllm": vllm, "aiperf": aiperf,
                                                   "guidellm": guidellm}
NAMES = {"kimi-deploy": "kimi-deploy bench", "vllm": "vllm bench serve", "aiperf": f"AIPerf {AIPERF[1]}",
         "guidellm": f"GuideLLM {GUIDELLM[1]}"}


def tokenizer() -> Path:
    path = ROOT / "runs" / "tiny-k2"
    if not path.is_dir():
        raise RuntimeError(f"{path} is missing: make it with `kimi-deploy tiny-model runs/tiny-k2`")
    return path


_peer_errors: dict[str, str] = {}


def peer(tool: str, version: str) -> Path:
    """The peer's own venv, created with `python -m venv` + pip on first use; RuntimeError with pip's
    last lines when it does not install."""
    if tool in _peer_errors:
        raise RuntimeError(_peer_errors[tool])
    home = PEERS / f"{tool}-{version}"
    if not (home / "bin" / tool).exists():
        print(f"installing {tool}=={version} into {home} ...", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True, capture_output=True)
            subprocess.run([str(home / "bin" / "pip"), "install", "-q", f"{tool}=={version}"], check=True,
                           capture_output=True, timeout=3600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            tail = (getattr(exc, "stderr", b"") or b"").decode(errors="replace").strip().splitlines()[-3:]
            _peer_errors[tool] = f"{tool}=={version} did not install: " + " | ".join(tail)
            raise RuntimeError(_peer_errors[tool]) from None
    return home


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="128,512,1024")
    ap.add_argument("--rounds", type=int, default=2, help="requests per user")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--json", type=Path, help="write the rows here too")
    args = ap.parse_args()
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        ap.error(f"unknown tool(s) {', '.join(unknown)}; known: {', '.join(TOOLS)}")
    print(f"sim: {TOKENS} tokens, TTFT {TTFT_MS:g} ms, ITL {ITL_MS:g} ms; ideal = concurrency x {1000 / ITL_MS:.0f} tok/s; "
          f"{args.rounds} requests per user; {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    head = (f"{'tool':<18} | {'conc':>5} | {'out tok/s':>9} | {'% of ideal':>10} | {'mean TTFT':>9} | {'TTFT err':>8} | "
            f"{'client CPU/chunk':>16} | {'sim CPU/chunk':>13} | self-check")
    print(head + "\n" + "-" * len(head), flush=True)
    rows = []
    for c in (int(x) for x in args.levels.split(",")):
        ideal = c * 1000 / (ITL_MS * (TOKENS - 1) + TTFT_MS) * TOKENS
        for tool in tools:
            port = free_port()
            sim = start_sim(port)
            sampler = Sampler(sim.pid, port)
            sampler.start()
            row: dict[str, Any] = {"tool": NAMES[tool], "concurrency": c, "ideal_tok_s": ideal}
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    row.update(TOOLS[tool](port, c, c * args.rounds, Path(tmp), sampler))
            except Exception as exc:  # a peer that does not install or run: say why, carry on
                row["error"] = str(exc)[:400]
            finally:
                sampler.stop.set()
                sampler.join()
                sim.terminate()
                sim.wait(timeout=30)
            client_us, sim_us = sampler.per_chunk()
            row.update(client_us_per_chunk=client_us, sim_us_per_chunk=sim_us)
            rows.append(row)
            if "error" in row:
                print(f"{row['tool']:<18} | {c:>5} | not run: {row['error']}", flush=True)
                continue
            row["pct_of_ideal"] = 100 * row["tok_s"] / ideal
            row["ttft_err"] = row["ttft"] - TTFT_MS
            check = "" if "valid" not in row else ("VALID" if row["valid"] else "INVALID: " + "; ".join(row["why"]))
            us = lambda v: f"{v:.1f} us" if v is not None else "-"  # noqa: E731
            print(f"{row['tool']:<18} | {c:>5} | {row['tok_s']:>9.0f} | {row['pct_of_ideal']:>9.1f}% | "
                  f"{row['ttft']:>7.1f}ms | {row['ttft_err']:>6.1f}ms | {us(client_us):>16} | {us(sim_us):>13} | {check}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
