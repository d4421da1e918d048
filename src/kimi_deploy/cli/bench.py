"""`bench`, `bench diff` and `sim`: load tests, comparing two runs, and the ground-truth test server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..args import BenchConfig
from ..errors import BadInput, OperationFailed
from ._args import option
from ._common import ApiKeyEnv, AsJson, OnOff, SimDist, err, finite, out

bench_app = typer.Typer(help="Benchmark an endpoint (or `bench diff A B`).", invoke_without_command=True,
                        no_args_is_help=False)

B = BenchConfig


@bench_app.callback()
def bench(
    ctx: typer.Context,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="e.g. http://head:8000/v1")] = None,
    model: Annotated[Optional[str], option(B, "model", "Served model name.")] = None,
    output: Annotated[Optional[Path], option(B, "output", "Result directory.")] = None,
    overwrite: Annotated[Optional[bool], option(B, "overwrite", "Replace the results a previous run left in "
                                                "--output (refused without it).", "--overwrite/--no-overwrite")] = None,
    workload: Annotated[Optional[str], option(B, "workload", "random, jsonl, tool-calls, shared-prefix, multi-turn or trace.")] = None,
    num_requests: Annotated[Optional[int], option(B, "num_requests", "Measured requests (after warm-up); default 100, or every row of a trace.")] = None,
    duration: Annotated[Optional[float], option(B, "duration_s", "Stop after this many seconds; requests still in flight then are cancelled and counted as incomplete.")] = None,
    warmup: Annotated[Optional[int], option(B, "warmup", "Requests sent first and left out of the statistics.")] = None,
    concurrency: Annotated[Optional[int], option(B, "concurrency", "Closed loop: this many users.")] = None,
    rate: Annotated[Optional[float], option(B, "rate", "Open loop: requests per second.")] = None,
    burstiness: Annotated[Optional[float], option(B, "burstiness", "Gamma shape of inter-arrivals (1 = Poisson).")] = None,
    ramp_up: Annotated[Optional[float], option(B, "ramp_up_s", "Seconds to ramp up users or rate.")] = None,
    max_concurrency: Annotated[Optional[int], option(B, "max_concurrency", "Cap for the open loop.")] = None,
    request_timeout: Annotated[Optional[float], option(B, "request_timeout_s", "Seconds one request may take in all; then it failed.")] = None,
    stall_timeout: Annotated[Optional[float], option(B, "stall_timeout_s", "Seconds without a byte from the server before a request failed.")] = None,
    input_len: Annotated[Optional[int], option(B, "input_len", "Random workload: prompt tokens.")] = None,
    output_len: Annotated[Optional[int], option(B, "output_len", "Output tokens (ignore_eos where supported).")] = None,
    dataset: Annotated[Optional[str], option(B, "dataset", "JSONL dataset for the jsonl workload, or the Mooncake-format trace for the trace workload.")] = None,
    time_scale: Annotated[Optional[float], option(B, "time_scale", "Trace workload: send times are the trace's timestamps x this (0.1 replays ten times faster).")] = None,
    prefix_len: Annotated[Optional[int], option(B, "prefix_len", "Shared-prefix workload: shared words.")] = None,
    thinking: Annotated[Optional[OnOff], option(B, "thinking", "Thinking on or off (default: the server's default).")] = None,
    thinking_effort: Annotated[Optional[str], option(B, "thinking_effort", "Thinking effort, low, high or max (thinking.effort on Moonshot's API, chat_template_kwargs.thinking_effort on vLLM/SGLang).")] = None,
    hosted: Annotated[bool, typer.Option("--hosted", help="The endpoint is Moonshot's API (thinking.type).")] = False,
    slo: Annotated[Optional[str], option(B, "slo", "Goodput SLOs, e.g. ttft_ms=500,tpot_ms=50")] = None,
    sweep: Annotated[Optional[str], typer.Option(help="concurrency=1,4,16 | rate=0.5,1,2 | concurrency=auto (saturation search; with --slo the highest load meeting it). Resumes: finished levels in --output are kept.")] = None,
    workers: Annotated[Optional[int], option(B, "workers", "Client processes (0 = one per core).")] = None,
    seed: Annotated[Optional[int], option(B, "seed", "Seed for prompts and arrivals.")] = None,
    shard: Annotated[Optional[str], option(B, "shard", "Run shard I of N (0-based, e.g. 0/4) of one run whose "
                                           "--concurrency, --rate and --num-requests are the whole run's totals; "
                                           "merge the shards with `bench merge`.")] = None,
    start_at: Annotated[Optional[str], option(B, "start_at", "Start at this wall-clock time (seconds since the "
                                              "epoch, or ISO 8601 with a UTC offset), e.g. every shard of a run.")] = None,
    barrier: Annotated[Optional[Path], option(B, "barrier", "A directory every shard of the run can write (a "
                                              "shared volume): the shards start together once all are ready "
                                              "there, and measure their clock offsets against it.")] = None,
    barrier_timeout: Annotated[Optional[float], option(B, "barrier_timeout_s", "Seconds to wait at --barrier for "
                                                       "the other shards.")] = None,
    export: Annotated[Optional[str], typer.Option("--export", help="Also write the result for other tools: vllm, "
                                                   "guidellm and/or csv, comma-separated (see `bench export`).")] = None,
    api_key_env: ApiKeyEnv = None,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    formats = _export_formats(export)
    from ..bench import run_bench
    from ..bench.sweep import first_load
    from ..endpoint import Endpoint

    if sweep and (concurrency is not None or rate is not None):
        raise BadInput("a sweep sets the load itself: drop --concurrency/--rate", "--sweep")
    if sweep and export:
        raise BadInput("a sweep writes one result per level: export a level with `kimi-deploy bench export "
                       "DIR/concurrency-N --format ...`", "--export")
    if sweep and (shard or start_at or barrier):
        raise BadInput("a sweep runs its levels one after another on this machine: shard single runs instead",
                       "--sweep")
    if sweep and workload == "trace":
        raise BadInput("the trace workload replays the trace's own load: drop --sweep", "--sweep")
    ep = None if base_url is None else Endpoint.from_url(base_url, flag="--base-url",
                                                           kind="moonshot" if hosted else "auto", api_key_env=api_key_env)
    load = first_load(sweep) if sweep else {"concurrency": concurrency, "rate": rate}
    cfg = BenchConfig.build(endpoint=ep, model=model, output=output, overwrite=overwrite, workload=workload,
                            num_requests=num_requests,
                            duration_s=duration, warmup=warmup, burstiness=burstiness, ramp_up_s=ramp_up,
                            max_concurrency=max_concurrency, input_len=input_len, output_len=output_len,
                            dataset=dataset, prefix_len=prefix_len,
                            thinking=None if thinking is None else thinking is OnOff.on,
                            thinking_effort=thinking_effort, slo=slo, workers=workers,
                            request_timeout_s=request_timeout, stall_timeout_s=stall_timeout, seed=seed,
                            time_scale=time_scale, shard=shard, start_at=start_at, barrier=barrier,
                            barrier_timeout_s=barrier_timeout, **load)
    output = cfg.output
    _check_exports(output, formats, overwrite=cfg.overwrite)
    if sweep:
        from ..bench.sweep import run_sweep

        result = run_sweep(cfg, sweep, err, num_requests_given=num_requests is not None)
        table = Table(title=f"sweep over {result['mode']}: {result['text']}")
        cols = ["load", "requests", "out tok/s", "req/s", "TPOT mean ms", "per-user tok/s", "TTFT p50 ms"]
        if result["slo"]:
            cols += [f"goodput (>= {result['slo_fraction']:.0%})", "goodput req/s"]
        for col in (*cols, "client", "run"):
            table.add_column(col, justify="right")
        for p in result["points"]:
            good = [] if not result["slo"] else [
                "-" if p["goodput_fraction"] is None else f"{p['goodput_fraction']:.1%}"
                + ("" if p["meets_slo"] else " (miss)"), str(p["goodput_requests_per_s"])]
            table.add_row(f"{p['load']:g}", str(p["num_requests"]), str(p["output_tokens_per_s"]), str(p["requests_per_s"]),
                          str(p["tpot_mean_ms"]), str(p["per_user_tokens_per_s"]), str(p["ttft_p50_ms"]), *good,
                          "valid" if p["valid"] else "[red]INVALID[/red]", "kept" if p["kept"] else "ran")
        out.print(table)
        for p in result["points"]:
            if not p["valid"]:
                out.print(f"[red]INVALID[/red] at {p['load']:g} (left out of the verdict): " + "; ".join(p["invalid_because"]))
        out.print(f"results: {output / 'sweep.json'}, {output / 'sweep.png'}")
        if result["interrupted"]:
            cut = "terminated (SIGTERM)" if result["interrupted"] == "terminated" else "interrupted"
            err.print(f"{cut}: the levels that finished are saved; run the same command again to resume")
            raise typer.Exit(143 if result["interrupted"] == "terminated" else 130)  # the shell's codes
        return
    s = run_bench(cfg, err)
    req = s["requests"]
    _print_summary(s, output)
    _export(output, formats, overwrite=cfg.overwrite)
    if s["config"].get("interrupted"):
        err.print(("terminated (SIGTERM)" if s["config"].get("terminated") else "interrupted")
                  + ": the requests that finished are saved")
        raise typer.Exit(143 if s["config"].get("terminated") else 130)  # the shell's codes, after saving
    if req["completed"] == 0:
        raise OperationFailed("no measured request succeeded: " + _why_nothing(req))


def _print_summary(s: dict, output: Path) -> None:
    """A run's (or a merged run's) numbers on the console: counts, rates, latencies, goodput, why requests
    failed, the prefix cache, and whether the client's self-check holds."""
    req, thr, lat = s["requests"], s["throughput"], s["latency_ms"]
    table = Table(title=f"{req['completed']} ok, {req['failed']} failed; {thr['requests_per_s']} req/s, "
                        f"{thr['output_tokens_per_s']} out tok/s over {thr['window_s']} s")
    for col in ("ms", "mean", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="right")
    for k, v in lat.items():
        table.add_row(k, *(str(v[x]) if v[x] is not None else "-" for x in ("mean", "p50", "p90", "p99", "max")))
    out.print(table)
    good = s["goodput"]
    if good.get("slo"):
        slo = ", ".join(f"{k} <= {v:g}" for k, v in good["slo"].items())
        out.print(f"goodput: {good['good']} of {good['of']} requests met {slo} "
                  f"({good['fraction']:.1%}, {good['requests_per_s']} req/s)" if good["of"] else
                  f"goodput: no measured request ({slo})")
    if req["errors"]:
        top = sorted(req["errors"].items(), key=lambda kv: -kv[1])[:5]
        out.print("failures: " + ", ".join(f"{n} x {e}" for e, n in top), markup=False, highlight=False)
    pc = s.get("prefix_cache")
    if pc:
        ideal = pc.get("ideal_token_hit_rate")
        out.print("prefix cache hit rate: engine " + ("-" if pc.get("engine_token_hit_rate") is None
                                                     else f"{pc['engine_token_hit_rate']:.1%}")
                  + ("" if ideal is None else f", trace's ideal {ideal:.1%}") + f" ({pc['source']})")
    facts = s["config"].get("workload_facts") or {}
    if s["config"].get("workload") == "trace" and facts.get("lengths") != "exact":
        err.print(f"[yellow]prompt lengths are approximate[/yellow]: {facts.get('note', '')}")
    if req.get("incomplete"):
        out.print(f"{req['incomplete']} request(s) still in flight at the --duration deadline were cancelled "
                  "(incomplete: neither completed nor failed)")
    if s.get("clock", {}).get("skew_ms") is not None:
        out.print(f"shards: {s['config'].get('shards')}, clock skew {s['clock']['skew_ms']} ms "
                  f"(+/- {s['clock']['offset_uncertainty_ms']} ms)")
    if s["client"]["valid"]:
        out.print("client self-check: VALID")
    else:
        out.print("[red]INVALID run[/red]: " + "; ".join(s["client"]["invalid_because"]))
    out.print(f"results: {output / 'summary.json'}, {output / 'requests.jsonl'}, {output / 'report.html'}")


def _export_formats(given: str | None) -> list[str]:
    """`--export vllm,csv`: the formats, checked before anything runs."""
    formats = [f.strip() for f in (given or "").split(",") if f.strip()]
    if not formats:
        return []
    from ..bench.export import FORMATS  # numpy with it: only for a run that exports

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise BadInput(f"unknown format {bad[0]!r}; allowed: {', '.join(FORMATS)}", "--export")
    return formats


def _check_exports(result: Path, formats: list[str], *, overwrite: bool) -> None:
    """An export file a run would write at its end already there: refused before the run, not after it."""
    from ..bench.export import DEFAULT_NAMES

    for fmt in formats:
        if (result / DEFAULT_NAMES[fmt]).exists() and not overwrite:
            raise BadInput(f"{result / DEFAULT_NAMES[fmt]} exists (a previous export); give another --output, or "
                           "--overwrite to replace it", "--export")


def _export(result: Path, formats: list[str], *, overwrite: bool) -> None:
    from ..bench.export import export

    for fmt in formats:
        out.print(f"{fmt} export: {export(result, fmt, None, overwrite=overwrite)}")


def _why_nothing(req: dict) -> str:
    """The reason a run produced nothing, from summary.json's request counts (errors are scrubbed)."""
    if req["errors"]:
        top = sorted(req["errors"].items(), key=lambda kv: -kv[1])[:3]
        return f"{req['failed']} failed (" + ", ".join(f"{n} x {e}" for e, n in top) + ")" + \
            (f", {req['incomplete']} incomplete at the --duration deadline" if req.get("incomplete") else "")
    if req.get("incomplete"):
        return f"all {req['incomplete']} were still in flight at the --duration deadline (raise --duration)"
    return "none was sent before the --duration deadline"

@bench_app.command("diff")
def bench_diff(a: Annotated[Path, typer.Argument(help="Result directory A.")],
               b: Annotated[Path, typer.Argument(help="Result directory B.")],
               allow_different_config: Annotated[bool, typer.Option(
                   "--allow-different-config",
                   help="Compare runs whose load or workload differ (refused without it: the numbers of another "
                        "experiment are no regression).")] = False,
               as_json: AsJson = False) -> None:
    """Two result directories side by side, with bootstrap 95 % intervals on each difference (mean, p50, p90,
    p99, error rate, goodput); runs of different configurations are refused."""
    import json

    from ..bench.diff import MIN_TAIL, config_differences, diff, goodput_note, metric_count
    from ..progress import Progress

    differ = config_differences(a, b)
    if differ:
        err.print(f"[bold red]WARNING: the runs' configurations differ[/bold red] in {len(differ)} field(s); "
                  "their numbers measure different experiments:")
        for name, va, vb in differ:
            err.print(f"  {name}: A {va!r}, B {vb!r}", markup=False, highlight=False)
        if not allow_different_config:
            raise BadInput(f"A and B differ in {', '.join(n for n, _, _ in differ)} (listed above): rerun one with "
                           "the other's settings, or give --allow-different-config to compare them anyway",
                           "--allow-different-config")
    with Progress(err, label="bench diff", total=metric_count()) as progress:
        rows = diff(a, b, on_metric=progress.advance)
    note = goodput_note(a, b)
    if as_json:
        print(json.dumps({"a": str(a), "b": str(b), "config_differences": [
            {"field": n, "a": va, "b": vb} for n, va, vb in differ], "rows": rows, "note": note}, indent=2))
        return
    table = Table(title=f"B = {b} vs A = {a}")
    for col in ("metric", "A", "B", "delta", "delta %", "95% CI", "real?"):
        table.add_column(col)
    for r in rows:
        if r["real"] is None:
            real = "too few" if r["ci95"] else "-"
        else:
            real = "[bold]yes[/bold]" if r["real"] else "noise"
        table.add_row(r["metric"], str(r["a"]), str(r["b"]), str(r["delta"]), str(r["delta_pct"]),
                      str(r["ci95"]) if r["ci95"] else "-", real)
    out.print(table)
    if any(r["real"] is None and r["ci95"] for r in rows):
        out.print(f"too few: fewer than {MIN_TAIL} values above that percentile on a side, so its interval "
                  "cannot tell real from noise")
    if note:
        out.print(note)


@bench_app.command("merge")
def bench_merge(
        dest: Annotated[Path, typer.Argument(metavar="OUT", help="Directory for the merged result.")],
        dirs: Annotated[list[Path], typer.Argument(metavar="DIR...", help="The shards' result directories.")],
        wait: Annotated[Optional[float], typer.Option("--wait", min=0, max=86_400, callback=finite,
                                                      help="Wait up to this many seconds for every shard's "
                                                           "summary.json (shards still running).")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a previous result in OUT.")] = False,
        export: Annotated[Optional[str], typer.Option("--export", help="Also write the merged result as vllm, "
                                                       "guidellm and/or csv, comma-separated.")] = None,
) -> None:
    """Merge the shards of one run (`bench --shard I/N`) into one result, computed from every request."""
    from ..bench.merge import merge

    formats = _export_formats(export)
    _check_exports(dest, formats, overwrite=overwrite)
    s = merge(dest, dirs, overwrite=overwrite, wait_s=wait, log=err.print)
    _print_summary(s, dest)
    _export(dest, formats, overwrite=overwrite)


@bench_app.command("export")
def bench_export(
        result: Annotated[Path, typer.Argument(metavar="DIR", help="A `kimi-deploy bench` result directory.")],
        fmt: Annotated[str, typer.Option("--format", help="vllm (vllm bench serve --save-result JSON), guidellm "
                                                          "(GuideLLM's benchmarks report JSON) or csv (one row per "
                                                          "request).")],
        to: Annotated[Optional[Path], typer.Option("--to", help="File to write (default: DIR/export-vllm.json, "
                                                                "DIR/export-guidellm.json or DIR/export-requests.csv).")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing export file.")] = False,
) -> None:
    """Write a result in a format another tool reads, and print the file's path."""
    from ..bench.export import export

    print(export(result, fmt, to, overwrite=overwrite))


def sim(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8800,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    model: Annotated[str, typer.Option(help="Model name it serves.")] = "sim",
    ttft_ms: Annotated[float, typer.Option("--ttft-ms", min=0, max=86_400_000, callback=finite, help="Time to first token.")] = 50.0,
    itl_ms: Annotated[float, typer.Option("--itl-ms", min=0, max=86_400_000, callback=finite, help="Gap between tokens.")] = 20.0,
    dist: Annotated[SimDist, typer.Option(help="Latency distribution.")] = SimDist.fixed,
    # max: bench.sim.MAX_MODEL_LEN, the sim's context (not imported here: the sim module loads aiohttp)
    output_len: Annotated[int, typer.Option("--output-len", min=1, max=1_048_576, help="Tokens per answer when max_tokens is absent (at most the sim's context, 1,048,576 tokens, less the prompt).")] = 128,
    reasoning_tokens: Annotated[int, typer.Option("--reasoning-tokens", min=0, help="Reasoning tokens when thinking is on.")] = 0,
    tool_rate: Annotated[float, typer.Option("--tool-rate", min=0, max=1, callback=finite, help="Share of tool-offering requests answered with a call.")] = 1.0,
    error_rate: Annotated[float, typer.Option("--error-rate", min=0, max=1, callback=finite, help="Share answered with HTTP 500.")] = 0.0,
    drop_rate: Annotated[float, typer.Option("--drop-rate", min=0, max=1, callback=finite, help="Share of streams cut mid-way.")] = 0.0,
    malformed_rate: Annotated[float, typer.Option("--malformed-rate", min=0, max=1, callback=finite, help="Share of streams with a non-JSON chunk.")] = 0.0,
    slow_start: Annotated[float, typer.Option("--slow-start", min=0, max=86_400, callback=finite, help="Seconds of 503 before it is ready.")] = 0.0,
    stall_after: Annotated[Optional[int], typer.Option("--stall-after", min=0, help="Fault: stop sending after this many chunks and hold the stream open.")] = None,
    max_running: Annotated[Optional[int], typer.Option("--max-running", min=1, max=1_000_000, help="At most this many requests generate at once; the others wait for a slot (TTFT includes the wait).")] = None,
    arrivals: Annotated[Optional[Path], typer.Option("--arrivals", help="Append a JSON line per chat request with "
                                                      "when it arrived (CLOCK_MONOTONIC), for schedule checks.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for latencies and faults.")] = 0,
) -> None:
    """An OpenAI-compatible server with known latencies and injected faults (the harness's ground truth)."""
    from ..bench.sim import SimConfig, serve as run_sim

    if arrivals is not None:
        try:
            arrivals.open("a").close()
        except OSError as exc:
            raise BadInput(f"cannot append to {arrivals}: {exc.strerror or exc}", "--arrivals") from None

    err.print(f"sim serving {model!r} on http://{host}:{port} (ttft {ttft_ms} ms, itl {itl_ms} ms, {dist.value})")
    run_sim(SimConfig(model=model, ttft_ms=ttft_ms, itl_ms=itl_ms, dist=dist.value, default_output=output_len,
                      reasoning_tokens=reasoning_tokens, tool_rate=tool_rate, error_rate=error_rate,
                      drop_rate=drop_rate, malformed_rate=malformed_rate, slow_start_s=slow_start,
                      stall_after=stall_after, max_running=max_running, seed=seed,
                      arrivals=None if arrivals is None else str(arrivals)),
            host, port)


def register(app: typer.Typer) -> None:
    app.command()(sim)
