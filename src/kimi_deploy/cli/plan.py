"""`validate` and `plan`: does a spec make sense, does the model fit, how much KV cache."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..catalog import GiB, get_gpu
from ..catalog import get_model
from ..deployment import check_max_model_len, context_length, resolve, resolve_model
from ..engines.render import render
from ..errors import BadInput
from ..plan import Plan, PlanInput, Topology, pd_interconnect, plan
from ..spec import load_spec
from ._common import EXIT_DOES_NOT_FIT, AsJson, EngineName, PDGroupName, SpecArg, out

Size = Annotated[Optional[int], typer.Option(min=1)]


def validate(spec: SpecArg) -> None:
    """Check a spec: schema, model, GPU, a topology the engine can express, and commands it can render
    (version gates included)."""
    dep = resolve(load_spec(spec))  # topology errors surface here as BadInput
    render(dep)  # what only the engine's renderer knows (vLLM's whole-DP-ranks rule, version gates)
    t = dep.primary.topology
    out.print(f"[green]ok[/green] {spec}: {dep.model} on {dep.nodes}x{dep.gpus_per_node} "
              f"{dep.gpu.name} with {dep.engine} (tp={t.tp} pp={t.pp} dp={t.dp}"
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
    if flags["state_dtype"]:
        changes["state_dtype"] = flags["state_dtype"]
    return replace(inp, **changes)


def plan_cmd(
    spec: Annotated[Optional[Path], typer.Argument(help="Deployment spec; or give --model/--gpu/... instead.")] = None,
    model: Annotated[Optional[str], typer.Option(
        help="Catalog id, Hub repo id (e.g. nvidia/Kimi-K2.5-NVFP4) or local checkpoint dir / config.json.")] = None,
    gpu: Annotated[Optional[str], typer.Option(help="GPU type, e.g. H200.")] = None,
    gpus_per_node: Annotated[Optional[int], typer.Option("--gpus-per-node", min=1)] = None,
    nodes: Size = None,
    engine: Annotated[Optional[EngineName], typer.Option(help="Engine (default vllm without a spec).")] = None,
    tp: Annotated[Optional[int], typer.Option(min=1, help="Tensor parallel size (SGLang: GPUs per replica).")] = None,
    pp: Annotated[Optional[int], typer.Option(min=1, help="Pipeline parallel size.")] = None,
    dp: Annotated[Optional[int], typer.Option(min=1, help="Data parallel size.")] = None,
    ep: Annotated[Optional[bool], typer.Option("--ep/--no-ep", help="Expert parallelism.")] = None,
    dp_attention: Annotated[Optional[bool], typer.Option("--dp-attention/--no-dp-attention",
                                                         help="SGLang DP attention.")] = None,
    dcp: Annotated[Optional[int], typer.Option(min=1, help="vLLM decode context parallel size.")] = None,
    max_model_len: Annotated[Optional[int], typer.Option("--max-model-len", min=1)] = None,
    kv_cache_dtype: Annotated[Optional[str], typer.Option("--kv-cache-dtype")] = None,
    state_dtype: Annotated[Optional[str], typer.Option(
        "--state-dtype", help="Hybrid models: the KDA recurrent state's dtype (auto, float32, bfloat16).")] = None,
    gpu_memory_utilization: Annotated[Optional[float], typer.Option(
        "--gpu-memory-utilization", min=0, max=1,  # 0 itself: the planner says (0, 1]
        help="vLLM utilization; SGLang mem_fraction_static.")] = None,
    group: Annotated[Optional[PDGroupName], typer.Option(
        "--group", help="P/D specs: plan the prefill or decode side (default decode).")] = None,
    as_json: AsJson = False,
) -> None:
    """Does the model fit, how much KV cache, how many concurrent requests. Exit 3 when it does not fit."""
    flags = dict(tp=tp, pp=pp, dp=dp, ep=ep, dp_attention=dp_attention, dcp=dcp, max_model_len=max_model_len,
                 kv_cache_dtype=kv_cache_dtype, gpu_memory_utilization=gpu_memory_utilization,
                 state_dtype=state_dtype)
    if spec is not None:
        dep = resolve(load_spec(spec))
        if group and not dep.pd:
            raise BadInput("only a prefill/decode (mode: pd) spec has groups", "--group")
        inp = (dep.group(group.value) if group else dep.primary).plan_input
        changes: dict[str, Any] = {}
        if model:
            name, arch, _ = resolve_model(model)
            changes.update(model=name, arch=arch)
        if gpu:
            changes["gpu"] = get_gpu(gpu)
        if engine:
            changes["engine"] = engine.value
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
            model=name, arch=arch, engine=(engine or EngineName.vllm).value, gpu=get_gpu(gpu or ""),
            gpus_per_node=gpus_per_node or 1, nodes=n, topology=Topology(tp=total),
            max_model_len=context_length(entry, arch),
        )
        if tp is None and (dp or pp):
            flags["tp"] = max(total // ((dp or 1) * (pp or 1)), 1)
    inp = _override(inp, **flags)
    # the limit of the model actually planned (--model may swap it under a spec)
    check_max_model_len(inp.max_model_len, _entry_of(inp.model), inp.arch,
                        "--max-model-len" if flags["max_model_len"] else "serving.max_model_len")
    result = plan(inp)
    if spec is not None and dep.pd and "interconnect" in result.assumptions:
        result.assumptions["interconnect"].update(pd_interconnect(
            inp.gpu, inp.gpus_per_node, dep.group("prefill").nodes, dep.group("decode").nodes))
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        _print_plan(result)
    if not result.fits:
        raise typer.Exit(EXIT_DOES_NOT_FIT)


def _entry_of(model: str):
    """The catalog entry of a planned model name, None for a local checkpoint path."""
    try:
        return get_model(model)
    except BadInput:
        return None


def _gib(b: int) -> str:
    return f"{b / GiB:,.2f} GiB"


def _print_plan(p: Plan) -> None:
    i, t = p.inp, p.inp.topology
    out.print(f"[bold]{i.model}[/bold] on {i.nodes} x {i.gpus_per_node} {i.gpu.name} with {i.engine}: "
              f"tp={t.tp} pp={t.pp} dp={t.dp}{' ep' if t.expert_parallel else ''}"
              f"{' dp-attention' if t.dp_attention else ''}{f' dcp={t.dcp}' if t.dcp > 1 else ''}")
    out.print(f"checkpoint: {p.total_params / 1e9:,.1f} B stored elements, {p.weight_bytes_total / 1e9:,.1f} GB "
              f"({_gib(p.weight_bytes_total)}), {i.arch.quantization.format.value}")
    kernel, link = p.assumptions.get("weight_kernel"), p.assumptions.get("interconnect")
    if kernel and kernel["path"] != "native":
        out.print(f"weight kernel on {i.gpu.name} ({i.gpu.arch}): {kernel['path']}: {kernel['detail']}")
    if link and (i.nodes > 1 or i.gpu.rack_scale):
        out.print(f"NVLink domain: {link['nvlink_domain_gpus']} GPUs ({link['gpus_per_node']} per node), "
                  f"the deployment spans {link['nvlink_domains_spanned']}; TP "
                  f"{'on NVLink' if link['tp_within_nvlink'] else 'crosses the node network'}"
                  + (f", EP {'on NVLink' if link['ep_within_nvlink'] else 'crosses domains'}"
                     if "ep_within_nvlink" in link else "")
                  + (f", P/D KV transfer over {link['pd_kv_transfer']}" if "pd_kv_transfer" in link else ""))
    table = Table(title="per GPU (the fullest one)", show_header=True)
    table.add_column("component")
    table.add_column("memory", justify="right")
    for kind, b in sorted(p.weight_breakdown.items(), key=lambda kv: -kv[1]):
        table.add_row(f"weights: {kind}", _gib(b))
    for kind, b in p.overhead_breakdown.items():
        table.add_row(f"overhead: {kind}", _gib(b))
    table.add_row("KV cache and recurrent state" if p.hybrid else "KV cache", _gib(p.kv_cache_bytes))
    table.add_row("[bold]total[/bold]", f"[bold]{_gib(p.memory_bytes)}[/bold]")
    table.add_row("GPU memory", f"{i.gpu.memory_gib} GiB x {i.memory_fraction}")
    out.print(table)
    if p.hybrid is not None and not p.kv_bytes_per_token:
        out.print(f"KV cache: none (every layer is KDA); max concurrency: {p.max_concurrency:.2f}")
    else:
        out.print(f"KV cache: {p.kv_bytes_per_token:,} bytes/token ({i.kv_cache_dtype}); "
                  f"{p.kv_cache_tokens:,} tokens per engine instance; "
                  f"max concurrency at {i.max_model_len:,} tokens: {p.max_concurrency:.2f}")
    if p.hybrid is not None:
        la = i.arch.linear_attention
        out.print(f"recurrent state ({len(la.layers) if la else 0} KDA layers, {i.arch.mla_layers} MLA layers cache "
                  f"tokens): {p.hybrid.state_bytes_per_sequence / 2**20:,.1f} MiB per sequence per GPU "
                  f"({i.state_dtype}), {p.hybrid.state_slots_per_sequence} slots per running sequence; "
                  f"state for {p.hybrid.state_sequences:,} sequences fits"
                  + (f"; attention block {p.hybrid.block_tokens:,} tokens" if p.hybrid.block_tokens else ""))
    for warning in p.assumptions.get("warnings", []):
        out.print(f"[yellow]warning:[/yellow] {warning}")
    if p.fits:
        out.print("[green]fits[/green]")
    else:
        out.print("[red]does not fit[/red]")
        for prob in p.problems:
            out.print(f"  problem: {prob}")
        for s in p.suggestions:
            out.print(f"  try: {s}")


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command("plan")(plan_cmd)
