"""`compare`: does this deployment answer like the reference (Moonshot's API, another endpoint, or a
recording)? PASS/FAIL, summary.json and reports."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import BadInput
from ._common import ReferenceKind, finite, out


def compare(
    local: Annotated[str, typer.Option("--local", help="Local endpoint base URL, e.g. http://head:8000/v1")],
    output: Annotated[Path, typer.Option("--output", help="Directory for records, summary.json and reports.")],
    suite: Annotated[str, typer.Option("--suite", help="tool-calls, chat, thinking, or a .jsonl path.")] = "tool-calls",
    model: Annotated[Optional[str], typer.Option("--model", help="Local served model name (default: the one it serves).")] = None,
    reference: Annotated[Optional[str], typer.Option("--reference", help="Reference base URL (default Moonshot's API).")] = None,
    reference_file: Annotated[Optional[Path], typer.Option("--reference-file", help="Replay a recorded reference.jsonl offline.")] = None,
    reference_model: Annotated[Optional[str], typer.Option("--reference-model", help="Reference model name (default: mapped from --model).")] = None,
    reference_kind: Annotated[ReferenceKind, typer.Option("--reference-kind", help="What the reference is.")] = ReferenceKind.auto,
    reference_key_env: Annotated[str, typer.Option("--reference-key-env", help="Env var with the reference's key.")] = "MOONSHOT_API_KEY",
    local_key_env: Annotated[Optional[str], typer.Option("--local-key-env", help="Env var with the local endpoint's key.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=10_000, help="Requests in flight per endpoint (the local endpoint's streamed and non-streamed requests share them).")] = 32,
    rerun_limit: Annotated[int, typer.Option("--rerun-limit", min=0, max=100_000, help="Rerun at most this many failing rows one at a time, to tell failures that appear only under load.")] = 32,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Also stream every request to the local endpoint and hold the assembled answer to the non-streamed one.")] = True,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Checkpoint directory (or Hub id) whose tokenizer and chat template count prompt tokens here (default: the served root, when it is a local directory).")] = None,
    catalog_model: Annotated[Optional[str], typer.Option("--catalog-model", help="Catalog model whose hosted sampling the pre-flight checks (default: from the served name or root).")] = None,
    preflight: Annotated[bool, typer.Option("--preflight/--no-preflight", help="Check the served sampling defaults against what the hosted model fixes.")] = True,
    rate: Annotated[Optional[float], typer.Option(min=0.001, max=1e6, callback=finite, help="Max requests per second per endpoint.")] = None,
    temperature: Annotated[float, typer.Option(min=0, max=2, callback=finite, help="Sampling temperature (not sent where the hosted API fixes it).")] = 0.0,
    request_timeout: Annotated[float, typer.Option("--request-timeout", min=0.001, callback=finite, help="Seconds one request may take in all, retries included; then it is an error.")] = 1200.0,
    stall_timeout: Annotated[float, typer.Option("--stall-timeout", min=0.001, callback=finite, help="Seconds without a byte before one attempt fails (for a non-streamed answer also the longest answer).")] = 600.0,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", min=1, help="Default max_tokens for rows without one.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N requests of the suite.")] = None,
    threshold: Annotated[Optional[list[str]], typer.Option("--threshold", help="Override a bound, e.g. tool_call_f1=0.85 (repeatable).")] = None,
) -> None:
    """Does this deployment answer like the reference? PASS/FAIL (exit 1 on FAIL), summary.json and reports."""
    from ..compare import CompareConfig, run_compare
    from ..endpoint import MOONSHOT_URL, Endpoint, require_model

    if reference and reference_file:
        raise BadInput("give --reference or --reference-file, not both", "--reference-file")
    from ..outputs import check_output_dir

    check_output_dir(output, "--output")  # before any request: a file in the way is bad input, not a crash
    overrides: dict[str, float] = {}
    for item in threshold or []:
        name, _, value = item.partition("=")
        try:
            overrides[name.strip()] = float(value)
            if not math.isfinite(overrides[name.strip()]):
                raise ValueError(value)
        except ValueError:
            raise BadInput(f"{item!r} is not NAME=NUMBER", "--threshold") from None
    local_ep = Endpoint.from_url(local, flag="--local", kind="self-hosted", api_key_env=local_key_env,
                                 key_flag="--local-key-env")
    ref_ep = None
    if reference_file is None:  # a self-hosted reference may have no key; Moonshot's API needs one
        ref_ep = Endpoint.from_url(reference or MOONSHOT_URL, flag="--reference", kind=reference_kind.value,
                                   api_key_env=reference_key_env, key_flag="--reference-key-env", key_optional=True)
    cfg = CompareConfig(local=local_ep, model=model or require_model(local_ep, None, "--model"), output=output,
                        suite=suite, reference=ref_ep, reference_file=reference_file, reference_model=reference_model,
                        concurrency=concurrency, rerun_limit=rerun_limit, stream=stream, tokenizer=tokenizer, catalog_model=catalog_model,
                        preflight=preflight, rate=rate, temperature=temperature, max_tokens=max_tokens,
                        limit=limit, thresholds=overrides, request_timeout_s=request_timeout,
                        stall_timeout_s=stall_timeout)
    summary = run_compare(cfg, out)
    out.print(f"summary: {output / 'summary.json'}; report: {output / 'report.html'}")
    if summary["verdict"] != "PASS":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(compare)
