"""`compare`: does this deployment answer like the reference (Moonshot's API, another endpoint, or a
recording)? PASS/FAIL, summary.json and reports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ..errors import BadInput
from ._common import out

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
    from .compare import run_compare

    if concurrency < 1:
        raise BadInput(f"must be >= 1, got {concurrency}", "--concurrency")
    if reference_kind not in ("auto", "moonshot", "self-hosted"):
        raise BadInput(f"must be auto, moonshot or self-hosted, got {reference_kind!r}", "--reference-kind")
    if reference and reference_file:
        raise BadInput("give --reference or --reference-file, not both", "--reference-file")
    overrides: dict[str, float] = {}
    for item in threshold:
        name, _, value = item.partition("=")
        try:
            overrides[name.strip()] = float(value)
        except ValueError:
            raise BadInput(f"{item!r} is not NAME=NUMBER", "--threshold") from None
    local_url = _v1(local)
    if model is None:
        model = _served_model(local_url, os.environ.get(local_key_env) if local_key_env else None)
    summary = run_compare(local_url, model, suite, output, reference, reference_file, reference_model, reference_kind,
                          local_key_env, reference_key_env, concurrency, rate, temperature, max_tokens, limit,
                          overrides, out)
    out.print(f"summary: {output / 'summary.json'}; report: {output / 'report.html'}")
    if summary["verdict"] != "PASS":
        raise typer.Exit(1)


def _v1(url: str) -> str:
    """An OpenAI base URL: the root or the /v1 URL both work on the command line."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _served_model(url: str, key: Optional[str]) -> str:
    import httpx

    try:
        r = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30)
        r.raise_for_status()
        return r.json()["data"][0]["id"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError):
        raise BadInput(f"{url} is unreachable or lists no model; give --model", "--local") from None




def register(app: typer.Typer) -> None:
    app.command()(compare)
