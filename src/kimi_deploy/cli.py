"""The `kimi-deploy` command line (typer + rich). Each command is a thin layer over a module; errors
are one clear line on stderr with the exit codes of design.md (2 bad input, 3 does not fit), and a
traceback only with --debug."""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .catalog import GiB, get_gpu
from .engines import Addresses, RenderedNode, render
from .errors import BadInput, KimiDeployError, OperationFailed
from .plan import ENGINES, Plan, PlanInput, Topology, plan
from .spec import load_spec, plan_input, resolve_model

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Plan, launch, benchmark and verify self-hosted Kimi K2 deployments on vLLM and SGLang.",
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}

EXIT_DOES_NOT_FIT = 3


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    _state["debug"] = debug


@app.command()
def validate(spec: Path = typer.Argument(..., help="Deployment spec (YAML).")) -> None:
    """Check a spec: schema, model, GPU and a topology the engine can express."""
    s = load_spec(spec)
    p = plan(plan_input(s), suggest=False)  # topology errors surface here as BadInput
    t = p.inp.topology
    out.print(f"[green]ok[/green] {spec}: {p.inp.model} on {s.hardware.nodes}x{s.hardware.gpus_per_node} "
              f"{s.hardware.gpu} with {s.engine.name} (tp={t.tp} pp={t.pp} dp={t.dp}"
              f"{' ep' if t.expert_parallel else ''})")


def _override(inp: PlanInput, **flags: Any) -> PlanInput:
    t = inp.topology
    topo = Topology(
        tp=flags["tp"] or t.tp, pp=flags["pp"] or t.pp, dp=flags["dp"] or t.dp,
        expert_parallel=t.expert_parallel if flags["ep"] is None else flags["ep"],
        dp_attention=t.dp_attention if flags["dp_attention"] is None else flags["dp_attention"],
        dcp=flags["dcp"] or t.dcp,
    )
    changes: dict[str, Any] = {"topology": topo}
    if flags["max_model_len"]:
        changes["max_model_len"] = flags["max_model_len"]
    if flags["kv_cache_dtype"]:
        changes["kv_cache_dtype"] = flags["kv_cache_dtype"]
    if flags["gpu_memory_utilization"] is not None:
        changes["gpu_memory_utilization"] = flags["gpu_memory_utilization"]
    return replace(inp, **changes)


@app.command("plan")
def plan_cmd(
    spec: Optional[Path] = typer.Argument(None, help="Deployment spec; or give --model/--gpu/... instead."),
    model: Optional[str] = typer.Option(None, help="Catalog id or local checkpoint dir / config.json."),
    gpu: Optional[str] = typer.Option(None, help="GPU type, e.g. H200."),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node"),
    nodes: Optional[int] = typer.Option(None),
    engine: Optional[str] = typer.Option(None, help="vllm or sglang."),
    tp: Optional[int] = typer.Option(None, help="Tensor parallel size (SGLang: GPUs per replica)."),
    pp: Optional[int] = typer.Option(None, help="Pipeline parallel size."),
    dp: Optional[int] = typer.Option(None, help="Data parallel size."),
    ep: Optional[bool] = typer.Option(None, "--ep/--no-ep", help="Expert parallelism."),
    dp_attention: Optional[bool] = typer.Option(None, "--dp-attention/--no-dp-attention", help="SGLang DP attention."),
    dcp: Optional[int] = typer.Option(None, help="vLLM decode context parallel size."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len"),
    kv_cache_dtype: Optional[str] = typer.Option(None, "--kv-cache-dtype"),
    gpu_memory_utilization: Optional[float] = typer.Option(
        None, "--gpu-memory-utilization", help="vLLM utilization; SGLang mem_fraction_static."),
    group: Optional[str] = typer.Option(None, "--group", help="P/D specs: plan the prefill or decode side (default decode)."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON contract."),
) -> None:
    """Does the model fit, how much KV cache, how many concurrent requests. Exit 3 when it does not fit."""
    flags = dict(tp=tp, pp=pp, dp=dp, ep=ep, dp_attention=dp_attention, dcp=dcp, max_model_len=max_model_len,
                 kv_cache_dtype=kv_cache_dtype, gpu_memory_utilization=gpu_memory_utilization)
    for name in ("tp", "pp", "dp", "dcp", "max_model_len", "gpus_per_node", "nodes"):
        v = {**flags, "gpus_per_node": gpus_per_node, "nodes": nodes}[name]
        if v is not None and v < 1:
            raise BadInput(f"must be >= 1, got {v}", f"--{name.replace('_', '-')}")
    if group is not None and group not in ("prefill", "decode"):
        raise BadInput(f"must be prefill or decode, got {group!r}", "--group")
    if spec is not None:
        loaded = load_spec(spec)
        if group and loaded.topology.pd is None:
            raise BadInput("only a prefill/decode (mode: pd) spec has groups", "--group")
        inp = plan_input(loaded, group)
        if model or gpu or engine or gpus_per_node or nodes:
            changes: dict[str, Any] = {}
            if model:
                name, arch, _ = resolve_model(model)
                changes.update(model=name, arch=arch)
            if gpu:
                changes["gpu"] = get_gpu(gpu)
            if engine:
                changes["engine"] = _engine(engine)
            if gpus_per_node:
                changes["gpus_per_node"] = gpus_per_node
            if nodes:
                changes["nodes"] = nodes
            inp = replace(inp, **changes)
    else:
        missing = [f for f, v in (("--model", model), ("--gpu", gpu), ("--gpus-per-node", gpus_per_node))
                   if v is None]
        if missing:
            raise BadInput(f"give a SPEC file, or at least {', '.join(missing)}", "plan")
        name, arch, entry = resolve_model(model or "")
        n = nodes or 1
        total = (gpus_per_node or 1) * n
        inp = PlanInput(
            model=name, arch=arch, engine=_engine(engine or "vllm"), gpu=get_gpu(gpu or ""),
            gpus_per_node=gpus_per_node or 1, nodes=n, topology=Topology(tp=total),
            max_model_len=entry.context_length if entry else arch.max_position_embeddings,
        )
        if tp is None and (dp or pp):
            flags["tp"] = max(total // ((dp or 1) * (pp or 1)), 1)
    inp = _override(inp, **flags)
    result = plan(inp)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        _print_plan(result)
    if not result.fits:
        raise typer.Exit(EXIT_DOES_NOT_FIT)


def _engine(name: str) -> str:
    if name not in ENGINES:
        raise BadInput(f"unknown engine {name!r}; known: {', '.join(ENGINES)}", "--engine")
    return name


def _gib(b: int) -> str:
    return f"{b / GiB:,.2f} GiB"


def _print_plan(p: Plan) -> None:
    i, t = p.inp, p.inp.topology
    out.print(f"[bold]{i.model}[/bold] on {i.nodes} x {i.gpus_per_node} {i.gpu.name} with {i.engine}: "
              f"tp={t.tp} pp={t.pp} dp={t.dp}{' ep' if t.expert_parallel else ''}"
              f"{' dp-attention' if t.dp_attention else ''}{f' dcp={t.dcp}' if t.dcp > 1 else ''}")
    out.print(f"checkpoint: {p.total_params / 1e9:,.1f} B stored elements, {p.weight_bytes_total / 1e9:,.1f} GB "
              f"({_gib(p.weight_bytes_total)}), {i.arch.quantization.format.value}")
    table = Table(title="per GPU (the fullest one)", show_header=True)
    table.add_column("component")
    table.add_column("memory", justify="right")
    for kind, b in sorted(p.weight_breakdown.items(), key=lambda kv: -kv[1]):
        table.add_row(f"weights: {kind}", _gib(b))
    for kind, b in p.overhead_breakdown.items():
        table.add_row(f"overhead: {kind}", _gib(b))
    table.add_row("KV cache", _gib(p.kv_cache_bytes))
    table.add_row("[bold]total[/bold]", f"[bold]{_gib(p.memory_bytes)}[/bold]")
    table.add_row("GPU memory", f"{i.gpu.memory_gib} GiB x {i.memory_fraction}")
    out.print(table)
    out.print(f"KV cache: {p.kv_bytes_per_token:,} bytes/token ({i.kv_cache_dtype}); "
              f"{p.kv_cache_tokens:,} tokens per engine instance; "
              f"max concurrency at {i.max_model_len:,} tokens: {p.max_concurrency:.2f}")
    if p.fits:
        out.print("[green]fits[/green]")
    else:
        out.print("[red]does not fit[/red]")
        for prob in p.problems:
            out.print(f"  problem: {prob}")
        for s in p.suggestions:
            out.print(f"  try: {s}")


# --- render / serve / wait -------------------------------------------------------------------------

def _shell_word(tok: str) -> str:
    """Quote for a shell, leaving ${VAR} references to be expanded on the node."""
    if "${" in tok and not any(c in tok for c in '"`\\!'):
        return f'"{tok}"'
    return shlex.quote(tok)


def _shell(node: RenderedNode) -> str:
    lines = [f"# node {node.rank}: {node.role}"
             + (" (serves HTTP)" if node.serves_http and not node.health_only else
                " (health endpoint only)" if node.health_only else " (no HTTP)")]
    lines += [f"export {k}={_shell_word(v)}" for k, v in node.env.items()]
    lines += [" ".join(_shell_word(t) for t in cmd) for cmd in node.setup]
    words = [_shell_word(t) for t in node.argv]
    out_lines, cur = [], words[0]
    for w in words[1:]:
        if w.startswith("--"):
            out_lines.append(cur)
            cur = "  " + w
        else:
            cur += " " + w
    out_lines.append(cur)
    lines.append(" \\\n".join(out_lines))
    return "\n".join(lines)


@app.command("render")
def render_cmd(
    spec: Path = typer.Argument(..., help="Deployment spec (YAML)."),
    node_rank: Optional[int] = typer.Option(None, "--node-rank", help="Only this node's command."),
    head_address: Optional[str] = typer.Option(None, "--head-address",
                                               help="Head node address (default: a ${KIMI_HEAD_ADDR} reference)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"nodes": [{rank, role, argv, env}]}.'),
    check: bool = typer.Option(False, "--check", help="Also check every command with the installed engine's parser."),
) -> None:
    """The engine command for every node (copy-paste-ready shell, or JSON)."""
    s = load_spec(spec)
    addrs = Addresses(head=head_address) if head_address else Addresses()
    nodes = render(s, addrs)
    if node_rank is not None:
        if not 0 <= node_rank < len(nodes):
            raise BadInput(f"node rank {node_rank} is outside 0..{len(nodes) - 1} for this spec", "--node-rank")
        nodes = [n for n in nodes if n.rank == node_rank]
    if check:
        from .engines.check import check_nodes

        bad = check_nodes(nodes)
        if bad:
            rank, role, msg = bad[0]
            raise BadInput(f"node {rank} ({role}): the engine's parser rejects the command: {msg}", "serving.extra_args")
    if as_json:
        sys.stdout.write(json.dumps({"nodes": [n.to_json() for n in nodes]}, indent=2) + "\n")
    else:
        sys.stdout.write("\n\n".join(_shell(n) for n in nodes) + "\n")


@app.command()
def serve(
    spec: Path = typer.Argument(..., help="Deployment spec (YAML)."),
    node_rank: Optional[int] = typer.Option(None, "--node-rank", help="This node's rank (else LWS / Slurm env)."),
    head_address: Optional[str] = typer.Option(None, "--head-address", help="The head node's address."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve role and run preflight; start nothing."),
    skip_preflight: bool = typer.Option(False, "--skip-preflight", help="Start even if preflight fails."),
) -> None:
    """This node: resolve its role, preflight, then exec the engine."""
    from .launch import exec_node, materialize, node_command, preflight, redact, resolve_node

    s = load_spec(spec)
    env = dict(os.environ)
    ctx = resolve_node(s, node_rank, head_address, env)
    node = node_command(s, ctx)
    materialize(node, env)  # fails early (exit 2) when a referenced env var such as the API key is missing
    out.print(f"node {ctx.rank} of {s.name}: role [bold]{node.role}[/bold] (from {ctx.source}), head {ctx.addrs.head}")
    pf = preflight(s, node)
    for c in pf.checks:
        mark = "[green]ok[/green]" if c.ok else ("[red]FAIL[/red]" if c.fatal else "[yellow]warn[/yellow]")
        out.print(f"  {mark} {c.name}: {escape(redact(c.detail, env, s))}")
    shown = " ".join(_shell_word(t) for t in node.argv)  # references, never the secret values
    out.print(f"  command: {escape(redact(shown, env, s))}", soft_wrap=True)
    if pf.failed and not skip_preflight:
        if any(c.name == "engine installed" for c in pf.failed):
            raise BadInput(f"{s.engine.name} is not installed in this environment (install it, or run inside "
                           "the engine's image)", "engine.name")
        arg_fail = [c for c in pf.failed if c.name == "arguments"]
        if arg_fail:
            raise BadInput(f"the engine's parser rejects the command: {arg_fail[0].detail}", "serving.extra_args")
        raise OperationFailed("preflight failed: " + "; ".join(f"{c.name}: {c.detail}" for c in pf.failed))
    if dry_run:
        out.print("dry run: not starting the engine")
        return
    exec_node(node, env)


@app.command("wait")
def wait_cmd(
    url: str = typer.Argument(..., help="Base URL, e.g. http://head:8000"),
    timeout: float = typer.Option(1800, "--timeout", help="Seconds before giving up (exit 1)."),
    model: Optional[str] = typer.Option(None, "--model", help="Expect this served model name."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Env var holding the API key."),
) -> None:
    """Wait until the endpoint really answers: /health, then /v1/models, then one tiny completion."""
    from rich.status import Status

    from .endpoint import Endpoint, wait_ready

    if timeout <= 0:
        raise BadInput("must be > 0", "--timeout")
    ep = Endpoint.from_url(url, flag="URL", api_key_env=api_key_env)
    with Status("waiting", console=err) as status:
        result = wait_ready(ep, timeout=timeout, model=model,
                            on_phase=lambda phase, t: status.update(f"waiting for {ep.root}: {phase} ({t:.0f} s)"))
    out.print(f"[green]ready[/green] {ep.root}: model {result.model} answered after {result.seconds:.1f} s")


# --- weights ----------------------------------------------------------------------------------------

@app.command()
def download(
    spec: Optional[Path] = typer.Argument(None, help="Deployment spec (model, revision, weights.*)."),
    model: Optional[str] = typer.Option(None, help="Catalog id or Hub repo id."),
    revision: Optional[str] = typer.Option(None, help="Pinned revision (commit, tag or branch)."),
    dest: Optional[Path] = typer.Option(None, "--dir", help="Target directory."),
    source: Optional[str] = typer.Option(None, help="hf (default), mirror or s3."),
    mirror: Optional[str] = typer.Option(None, help="Mirror directory or s3://bucket/prefix."),
    workers: int = typer.Option(8, help="Parallel file downloads."),
    retries: int = typer.Option(5, help="Retries per file on 429, 5xx and dropped connections."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Exit instead of waiting when another download holds the directory."),
) -> None:
    """Fetch exactly the files serving needs, resumably, into a directory shared safely between nodes."""
    from .catalog import get_model
    from .weights import REPORT, download as fetch, list_hub, list_mirror, list_s3

    if spec is not None:
        s = load_spec(spec)
        entry = s.model_entry()
        model = model or (entry.repo if entry else None)
        revision = revision or s.revision or (s.model.revision if not isinstance(s.model, str) else None)
        dest = dest or (Path(s.weights.dir) if s.weights.dir else None)
        source = source or s.weights.source
        mirror = mirror or s.weights.mirror
    source = source or "hf"
    if source not in ("hf", "mirror", "s3"):
        raise BadInput(f"must be hf, mirror or s3, got {source!r}", "--source")
    if dest is None:
        raise BadInput("give --dir (or weights.dir in the spec)", "--dir")
    if source == "hf":
        if not model:
            raise BadInput("give --model (a catalog id or Hub repo id)", "--model")
        repo = get_model(model).repo if "/" not in model else model
        listing = list_hub(repo, revision, os.environ.get("HF_TOKEN"))
    elif not mirror:
        raise BadInput(f"source {source} needs --mirror (a directory or s3:// URL)", "--mirror")
    else:
        listing = list_mirror(mirror) if source == "mirror" else list_s3(mirror)
    err.print(f"{listing.location}" + (f"@{listing.revision}" if listing.revision else "")
              + f": {len(listing.files)} files, {listing.total_bytes / 1e9:,.2f} GB -> {dest}")
    report = fetch(listing, dest, workers=workers, retries=retries, wait_for_lock=not no_wait,
                   token=os.environ.get("HF_TOKEN"), log=lambda m: err.print(escape(m)),
                   show_progress=err.is_terminal)
    out.print(f"[green]done[/green]: {report.downloaded} downloaded, {report.skipped} already complete, "
              f"{report.bytes / 1e9:,.2f} GB in {report.seconds:.1f} s ({report.throughput_mb_s:,.1f} MB/s), "
              f"{report.retries} retries; report in {dest / REPORT}")


@app.command()
def verify(
    dest: Path = typer.Argument(..., help="Checkpoint directory."),
    model: Optional[str] = typer.Option(None, help="Catalog id whose architecture config.json must match."),
    full_hash: bool = typer.Option(False, "--hash", help="Also sha256 every shard against the source's hashes."),
    workers: Optional[int] = typer.Option(None, help="Hashing threads (default: CPU count)."),
) -> None:
    """Prove a checkpoint is complete and intact; write the marker serve and Kubernetes trust."""
    from .launch import VERIFY_MARKER
    from .weights import verify as check

    if workers is not None and workers < 1:
        raise BadInput(f"must be >= 1, got {workers}", "--workers")
    result = check(dest, model=model, full_hash=full_hash, workers=workers, show_progress=err.is_terminal)
    for note in result.notes:
        err.print(f"note: {note}")
    if not result.ok:
        raise BadInput("verification failed:\n  " + "\n  ".join(result.problems), str(dest))
    out.print(f"[green]verified[/green] {dest}: {result.files} shards, {result.bytes / 1e9:,.3f} GB"
              f"{', sha256 checked' if result.hashed else ''} in {result.seconds:.1f} s; marker {dest / VERIFY_MARKER}")


@app.command()
def compare(
    local: str = typer.Option(..., "--local", help="Local endpoint base URL, e.g. http://head:8000/v1"),
    suite: str = typer.Option("tool-calls", "--suite", help="tool-calls, chat, thinking, or a .jsonl path."),
    output: Path = typer.Option(..., "--output", help="Directory for records, summary.json and reports."),
    model: Optional[str] = typer.Option(None, "--model", help="Local served model name (default: the one it serves)."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Reference base URL (default Moonshot's API)."),
    reference_file: Optional[Path] = typer.Option(None, "--reference-file", help="Replay a recorded reference.jsonl offline."),
    reference_model: Optional[str] = typer.Option(None, "--reference-model", help="Reference model name (default: mapped from --model)."),
    reference_kind: str = typer.Option("auto", "--reference-kind", help="auto, moonshot or self-hosted."),
    reference_key_env: str = typer.Option("MOONSHOT_API_KEY", "--reference-key-env", help="Env var with the reference's key."),
    local_key_env: Optional[str] = typer.Option(None, "--local-key-env", help="Env var with the local endpoint's key."),
    concurrency: int = typer.Option(8, help="Requests in flight per endpoint."),
    rate: Optional[float] = typer.Option(None, help="Max requests per second per endpoint."),
    temperature: float = typer.Option(0.0, help="Sampling temperature (not sent where the hosted API fixes it)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Default max_tokens for rows without one."),
    limit: Optional[int] = typer.Option(None, help="Only the first N requests of the suite."),
    threshold: list[str] = typer.Option([], "--threshold", help="Override a bound, e.g. tool_call_f1=0.85 (repeatable)."),
) -> None:
    """Does this deployment answer like the reference? PASS/FAIL (exit 1 on FAIL), summary.json and reports."""
    from .compare import CompareConfig, run_compare
    from .endpoint import MOONSHOT_URL, Endpoint, require_model

    if concurrency < 1:
        raise BadInput(f"must be >= 1, got {concurrency}", "--concurrency")
    if reference and reference_file:
        raise BadInput("give --reference or --reference-file, not both", "--reference-file")
    overrides: dict[str, float] = {}
    for item in threshold:
        name, _, value = item.partition("=")
        try:
            overrides[name.strip()] = float(value)
        except ValueError:
            raise BadInput(f"{item!r} is not NAME=NUMBER", "--threshold") from None
    local_ep = Endpoint.from_url(local, flag="--local", kind="self-hosted", api_key_env=local_key_env,
                                 key_flag="--local-key-env")
    ref_ep = None
    if reference_file is None:  # a self-hosted reference may have no key; Moonshot's API needs one
        ref_ep = Endpoint.from_url(reference or MOONSHOT_URL, flag="--reference", kind=reference_kind,
                                   api_key_env=reference_key_env, key_flag="--reference-key-env", key_optional=True)
    cfg = CompareConfig(local=local_ep, model=model or require_model(local_ep, None, "--model"), output=output,
                        suite=suite, reference=ref_ep, reference_file=reference_file, reference_model=reference_model,
                        concurrency=concurrency, rate=rate, temperature=temperature, max_tokens=max_tokens,
                        limit=limit, thresholds=overrides)
    summary = run_compare(cfg, out)
    out.print(f"summary: {output / 'summary.json'}; report: {output / 'report.html'}")
    if summary["verdict"] != "PASS":
        raise typer.Exit(1)


# --- bench and sim ------------------------------------------------------------------------------------

bench_app = typer.Typer(help="Benchmark an endpoint (or `bench diff A B`).", invoke_without_command=True,
                        no_args_is_help=False)
app.add_typer(bench_app, name="bench")


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
    from .endpoint import Endpoint

    missing = [n for n, v in (("--base-url", base_url), ("--model", model), ("--output", output)) if v is None]
    if missing:
        raise BadInput(f"missing {', '.join(missing)}", missing[0])
    if thinking not in (None, "on", "off"):
        raise BadInput(f"must be on or off, got {thinking!r}", "--thinking")
    if sweep and (concurrency is not None or rate is not None):
        raise BadInput("a sweep sets the load itself: drop --concurrency/--rate", "--sweep")
    ep = Endpoint.from_url(base_url or "", flag="--base-url", kind="moonshot" if hosted else "auto",
                           api_key_env=api_key_env)
    cfg = BenchConfig(endpoint=ep, model=model, output=output, workload=workload, num_requests=num_requests,
                      duration_s=duration, warmup=warmup, concurrency=concurrency, rate=rate, burstiness=burstiness,
                      ramp_up_s=ramp_up, max_concurrency=max_concurrency, input_len=input_len, output_len=output_len,
                      dataset=dataset, prefix_len=prefix_len, thinking=None if thinking is None else thinking == "on",
                      slo=parse_slo(slo), workers=workers, seed=seed)
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


@app.command()
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
    run_sim(SimConfig(model=model, ttft_ms=ttft_ms, itl_ms=itl_ms, dist=dist, default_output=output_len,
                      reasoning_tokens=reasoning_tokens, tool_rate=tool_rate, error_rate=error_rate,
                      drop_rate=drop_rate, malformed_rate=malformed_rate, slow_start_s=slow_start, seed=seed),
            host, port)


@app.command("k8s")
def k8s_cmd(
    spec: Path = typer.Argument(..., help="Deployment spec (YAML)."),
    out_dir: Path = typer.Option(..., "-o", "--output", help="Directory for one file per object + kustomization.yaml."),
) -> None:
    """Kubernetes manifests (Deployment or LeaderWorkerSet, weights PVC + download Job, probes, Service,
    PDB, PodMonitor, bench Job) rendered from the spec."""
    from .k8s import write

    paths = write(spec, out_dir)
    out.print(f"wrote {len(paths)} files to {out_dir}: " + ", ".join(p.name for p in paths))


@app.command("tiny-model")
def tiny_model(
    dest: Path = typer.Argument(..., help="Directory to write the checkpoint into."),
    seed: int = typer.Option(0, help="Training seed (same seed, same checkpoint)."),
    steps: int = typer.Option(300, help="Training steps."),
    force: bool = typer.Option(False, "--force", help="Overwrite a directory that is not a tiny-k2 checkpoint."),
) -> None:
    """A tiny Kimi-K2-architecture checkpoint for CPU, trained briefly to call the suite's tools."""
    from .tiny import build

    path = build(dest, seed=seed, steps=steps, force=force, log=lambda m: err.print(m))
    out.print(f"tiny-k2 ready in {path}")


def main() -> None:
    """Console-script entry: run the app, turning our errors into one line and an exit code."""
    debug = "--debug" in sys.argv[1:]
    try:
        code = app(standalone_mode=False)
    except KimiDeployError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:
        # Usage errors (bad option values, unknown commands) come from the click that typer bundles:
        # they know how to print themselves and carry exit code 2.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        err.print(f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))} (run with --debug for details)")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
