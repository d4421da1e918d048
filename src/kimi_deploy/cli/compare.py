"""`compare`: does this deployment answer like the reference (Moonshot's API, another endpoint, or a
recording)? PASS/FAIL, summary.json and reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..args import CompareConfig
from ._args import option
from ._common import ReferenceKind, out


C = CompareConfig


def compare(
    local: Annotated[str, option(C, "local", "Local endpoint base URL, e.g. http://head:8000/v1")],
    output: Annotated[Path, option(C, "output", "Directory for records, summary.json and reports; one holding a previous compare run is refused without --resume or --overwrite.")],
    suite: Annotated[Optional[str], option(C, "suite", "tool-calls, tool-calls-flat, chat, thinking, k3-features, a .jsonl path, or a Kimi-Vendor-Verifier checkout (its data files).")] = None,
    model: Annotated[Optional[str], option(C, "model", "Local served model name (default: the one it serves).")] = None,
    reference: Annotated[Optional[str], option(C, "reference", "Reference base URL (default Moonshot's API).")] = None,
    reference_file: Annotated[Optional[Path], option(C, "reference_file", "Replay a recorded reference.jsonl offline.")] = None,
    reference_model: Annotated[Optional[str], option(C, "reference_model", "Reference model name (default: mapped from --model).")] = None,
    reference_kind: Annotated[Optional[ReferenceKind], option(C, "reference_kind", "What the reference is.")] = None,
    reference_key_env: Annotated[Optional[str], option(C, "reference_key_env", "Env var with the reference's key.")] = None,
    local_key_env: Annotated[Optional[str], option(C, "local_key_env", "Env var with the local endpoint's key.")] = None,
    concurrency: Annotated[Optional[int], option(C, "concurrency", "Requests in flight per endpoint (the local endpoint's streamed and non-streamed requests share them).")] = None,
    rerun_limit: Annotated[Optional[int], option(C, "rerun_limit", "Rerun at most this many failing rows one at a time, to tell failures that appear only under load.")] = None,
    stream: Annotated[Optional[bool], option(C, "stream", "Also stream every request to the local endpoint and hold the assembled answer to the non-streamed one.", "--stream/--no-stream")] = None,
    tokenizer: Annotated[Optional[str], option(C, "tokenizer", "Checkpoint directory (or Hub id) whose tokenizer and chat template count prompt tokens here (default: the served root, when it is a local directory).")] = None,
    catalog_model: Annotated[Optional[str], option(C, "catalog_model", "Catalog model whose hosted sampling the pre-flight checks (default: from the served name or root).")] = None,
    preflight: Annotated[Optional[bool], option(C, "preflight", "Check the served sampling defaults against what the hosted model fixes.", "--preflight/--no-preflight")] = None,
    rate: Annotated[Optional[float], option(C, "rate", "Max requests per second per endpoint.")] = None,
    temperature: Annotated[Optional[float], option(C, "temperature", "Sampling temperature (not sent where the hosted API fixes it).")] = None,
    thinking_effort: Annotated[Optional[str], option(C, "thinking_effort", "Thinking effort (low, high or max) of every request that thinks: sent as thinking.effort to Moonshot's API, as the chat template's thinking_effort to vLLM/SGLang.")] = None,
    request_timeout: Annotated[Optional[float], option(C, "request_timeout_s", "Seconds one request may take in all, retries included; then it is an error.")] = None,
    stall_timeout: Annotated[Optional[float], option(C, "stall_timeout_s", "Seconds without a byte before one attempt fails (for a non-streamed answer also the longest answer).")] = None,
    max_tokens: Annotated[Optional[int], option(C, "max_tokens", "Default max_tokens for rows without one.")] = None,
    limit: Annotated[Optional[int], option(C, "limit", "Only the first N requests of the suite.")] = None,
    threshold: Annotated[Optional[list[str]], option(C, "thresholds", "Override a bound, e.g. tool_call_f1=0.85 (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run a previous compare left in --output: its recorded answers are reused, only the missing ones asked (answers from other endpoints, another suite or model are refused).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run a previous compare left in --output: nothing of it is reused, and its files are removed once this run writes its first answer (other files stay).")] = False,
) -> None:
    """Does this deployment answer like the reference? PASS/FAIL (exit 1 on FAIL), summary.json and reports."""
    from ..compare import run_compare

    cfg = CompareConfig.build(local=local, local_key_env=local_key_env, output=output, suite=suite, model=model,
                              reference=reference, reference_file=reference_file, reference_model=reference_model,
                              reference_kind=None if reference_kind is None else reference_kind.value,
                              reference_key_env=reference_key_env,
                              concurrency=concurrency, rerun_limit=rerun_limit, stream=stream, tokenizer=tokenizer,
                              catalog_model=catalog_model, preflight=preflight, rate=rate, temperature=temperature,
                              thinking_effort=thinking_effort,
                              max_tokens=max_tokens, limit=limit, thresholds=threshold,
                              request_timeout_s=request_timeout, stall_timeout_s=stall_timeout)
    summary = run_compare(cfg, out, resume=resume, overwrite=overwrite)
    out.print(f"summary: {output / 'summary.json'}; report: {output / 'report.html'}")
    if summary["verdict"] != "PASS":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(compare)
