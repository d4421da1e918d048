"""`bench`, `bench diff` and `sim`: load tests, comparing two runs, and the ground-truth test server."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import BadInput
from ._common import err, out
from .compare import _v1

bench_app = typer.Typer(help="Benchmark an endpoint (or `bench diff A B`).", invoke_without_command=True,
                        no_args_is_help=False)


@bench_app.callback()
def bench(
    ctx: typer.Context,
    base_url: Optional[str] = typer.Option(None, "--base-url", help="e.g. http://head:8000/v1"),
    model: Optional[str] = typer.Option(None, "--model", help="Served model name."),
    output: Optional[Path] = typer.Option(None, "--output", help="Result directory."),
    workload: str = typer.Option("random", help="random, jsonl, tool-calls, shared-prefix or multi-turn."),
    num_requests: int = typer.Option(100, "--num-requests", help="Measured requests (after warm-up)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds."),
    warmup: int = typer.Option(0, help="Requests sent first and left out of the statistics."),
    concurrency: Optional[int] = typer.Option(None, help="Closed loop: this many users."),
    rate: Optional[float] = typer.Option(None, help="Open loop: requests per second."),
    burstiness: float = typer.Option(1.0, help="Gamma shape of inter-arrivals (1 = Poisson)."),
    ramp_up: float = typer.Option(0.0, "--ramp-up", help="Seconds to ramp up users or rate."),
    max_concurrency: Optional[int] = typer.Option(None, "--max-concurrency", help="Cap for the open loop."),
    input_len: int = typer.Option(256, "--input-len", help="Random workload: prompt tokens."),
    output_len: int = typer.Option(128, "--output-len", help="Output tokens (ignore_eos where supported)."),
    dataset: Optional[str] = typer.Option(None, help="JSONL dataset for the jsonl workload."),
    prefix_len: int = typer.Option(512, "--prefix-len", help="Shared-prefix workload: shared words."),
    thinking: Optional[str] = typer.Option(None, help="on or off (default: the server's default)."),
    hosted: bool = typer.Option(False, "--hosted", help="The endpoint is Moonshot's API (thinking.type)."),
    slo: Optional[str] = typer.Option(None, help="Goodput SLOs, e.g. ttft_ms=500,tpot_ms=50"),
    sweep: Optional[str] = typer.Option(None, help="concurrency=1,4,16 | rate=0.5,1,2 | concurrency=auto (saturation search)."),
    workers: int = typer.Option(0, help="Client processes (0 = one per core)."),
    seed: int = typer.Option(0),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Env var with the API key."),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from .bench import BenchConfig, run_bench
    from .bench.metrics import parse_slo

    missing = [n for n, v in (("--base-url", base_url), ("--model", model), ("--output", output)) if v is None]
    if missing:
        raise BadInput(f"missing {', '.join(missing)}", missing[0])
    if thinking not in (None, "on", "off"):
        raise BadInput(f"must be on or off, got {thinking!r}", "--thinking")
    if sweep and (concurrency is not None or rate is not None):
        raise BadInput("a sweep sets the load itself: drop --concurrency/--rate", "--sweep")
    url = _v1(base_url)
    cfg = BenchConfig(url, model, output, workload, num_requests, duration, warmup, concurrency, rate, burstiness,
                      ramp_up, max_concurrency, input_len, output_len, dataset, prefix_len, 4,
                      None if thinking is None else thinking == "on", hosted, parse_slo(slo), workers, seed,
                      api_key_env)
    if sweep:
        from .bench.sweep import run_sweep

        result = run_sweep(cfg, sweep, err)
        table = Table(title=f"sweep over {result['mode']}; saturated at {result['saturated_at']}")
        for col in ("load", "out tok/s", "req/s", "TPOT mean ms", "per-user tok/s", "TTFT p50 ms", "valid"):
            table.add_column(col, justify="right")
        for p in result["points"]:
            table.add_row(str(p["load"]), str(p["output_tokens_per_s"]), str(p["requests_per_s"]), str(p["tpot_mean_ms"]),
                          str(p["per_user_tokens_per_s"]), str(p["ttft_p50_ms"]), str(p["valid"]))
        out.print(table)
        out.print(f"results: {output / 'sweep.json'}, {output / 'sweep.png'}")
        return
    s = run_bench(cfg, err)
    lat = s["latency_ms"]
    table = Table(title=f"{s['requests']['completed']} ok, {s['requests']['failed']} failed; "
                        f"{s['throughput']['output_tokens_per_s']} out tok/s over {s['throughput']['window_s']} s")
    for col in ("ms", "mean", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="right")
    for k, v in lat.items():
        table.add_row(k, *(str(v[x]) if v[x] is not None else "-" for x in ("mean", "p50", "p90", "p99", "max")))
    out.print(table)
    if not s["client"]["valid"]:
        out.print("[red]INVALID run[/red]: " + "; ".join(s["client"]["invalid_because"]))
    out.print(f"results: {output / 'summary.json'}, {output / 'requests.jsonl'}, {output / 'report.html'}")


@bench_app.command("diff")
def bench_diff(a: Path = typer.Argument(...), b: Path = typer.Argument(...)) -> None:
    """Two result directories side by side, with bootstrap 95 % intervals on each difference."""
    from .bench.diff import diff

    table = Table(title=f"B = {b} vs A = {a}")
    for col in ("metric", "A", "B", "delta", "delta %", "95% CI", "real?"):
        table.add_column(col)
    for r in diff(a, b):
        real = "-" if r["real"] is None else ("[bold]yes[/bold]" if r["real"] else "noise")
        table.add_row(r["metric"], str(r["a"]), str(r["b"]), str(r["delta"]), str(r["delta_pct"]),
                      str(r["ci95"]) if r["ci95"] else "-", real)
    out.print(table)


def sim(
    port: int = typer.Option(8800, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    model: str = typer.Option("sim", help="Model name it serves."),
    ttft_ms: float = typer.Option(50.0, "--ttft-ms"),
    itl_ms: float = typer.Option(20.0, "--itl-ms"),
    dist: str = typer.Option("fixed", help="fixed, normal or exponential."),
    output_len: int = typer.Option(128, "--output-len", help="Tokens per answer when max_tokens is absent."),
    reasoning_tokens: int = typer.Option(0, "--reasoning-tokens", help="Reasoning tokens when thinking is on."),
    tool_rate: float = typer.Option(1.0, "--tool-rate", help="Share of tool-offering requests answered with a call."),
    error_rate: float = typer.Option(0.0, "--error-rate", help="Share answered with HTTP 500."),
    drop_rate: float = typer.Option(0.0, "--drop-rate", help="Share of streams cut mid-way."),
    malformed_rate: float = typer.Option(0.0, "--malformed-rate", help="Share of streams with a non-JSON chunk."),
    slow_start: float = typer.Option(0.0, "--slow-start", help="Seconds of 503 before it is ready."),
    seed: int = typer.Option(0),
) -> None:
    """An OpenAI-compatible server with known latencies and injected faults (the harness's ground truth)."""
    from .bench.sim import SimConfig, serve as run_sim

    if dist not in ("fixed", "normal", "exponential"):
        raise BadInput(f"must be fixed, normal or exponential, got {dist!r}", "--dist")
    for name, v in (("--ttft-ms", ttft_ms), ("--itl-ms", itl_ms)):
        if v < 0:
            raise BadInput(f"must be >= 0, got {v}", name)
    for name, v in (("--error-rate", error_rate), ("--drop-rate", drop_rate), ("--tool-rate", tool_rate),
                    ("--malformed-rate", malformed_rate)):
        if not 0 <= v <= 1:
            raise BadInput(f"must be within [0, 1], got {v}", name)
    err.print(f"sim serving {model!r} on http://{host}:{port} (ttft {ttft_ms} ms, itl {itl_ms} ms, {dist})")
    run_sim(SimConfig(model, ttft_ms, itl_ms, dist, 0.1, output_len, reasoning_tokens, tool_rate, error_rate,
                      drop_rate, malformed_rate, slow_start, seed), host, port)



def register(app: typer.Typer) -> None:
    app.command()(sim)
