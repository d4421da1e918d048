"""`kimi-deploy compare`: the same suite to a local deployment and a reference endpoint (Moonshot's hosted
API by default, or a recorded reference file), scored K2-Vendor-Verifier style, with a PASS/FAIL verdict."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from ..catalog import get_model
from ..errors import BadInput
from .adapters import Endpoint
from .report import print_summary, write_reports
from .run import Store, collect, preflight, request_key
from .score import DEFAULT_F1, score
from .suites import load

DEFAULT_REFERENCE = "https://api.moonshot.ai/v1"


def thresholds_for(model: str, overrides: dict[str, float]) -> dict[str, float]:
    try:
        thinking = get_model(model).thinking
    except BadInput:
        thinking = "thinking" in model.lower()
    base = {"tool_call_f1": DEFAULT_F1["thinking" if thinking else "instruct"], "schema_accuracy": 0.90,
            "leaked_special_tokens": 0, "error_rate": 0.05}
    unknown = set(overrides) - set(base)
    if unknown:
        raise BadInput(f"unknown threshold(s) {', '.join(sorted(unknown))}; known: {', '.join(base)}", "--threshold")
    return {**base, **overrides}


def run_compare(local_url: str, model: str, suite_name: str, output: Path, reference_url: str | None,
                reference_file: Path | None, reference_model: str | None, reference_kind: str,
                local_key_env: str | None, reference_key_env: str, concurrency: int, rate: float | None,
                temperature: float | None, max_tokens: int | None, limit: int | None,
                threshold_overrides: dict[str, float], console: Console) -> dict[str, Any]:
    suite, rows = load(suite_name)
    if limit is not None:
        rows = rows[:limit]
    local = Endpoint.make("local", local_url, model, os.environ.get(local_key_env) if local_key_env else None,
                          kind="self-hosted")
    output.mkdir(parents=True, exist_ok=True)
    if reference_file is not None:
        if not reference_file.is_file():
            raise BadInput("reference file not found", str(reference_file))
        first = next((json.loads(ln) for ln in reference_file.read_text().splitlines() if ln.strip()), None)
        ref_model = reference_model or (first or {}).get("model") or model
        reference = Endpoint.make("reference", (first or {}).get("endpoint", "recorded"), ref_model, None,
                                  kind="self-hosted")
        reference.model = ref_model
        ref_store = Store(reference_file, suite, ref_model)
        missing = [r["id"] for r in rows if ref_store.outcome(request_key(suite, r)) is None]
        if missing:
            raise BadInput(f"{len(missing)} request(s) of suite {suite!r} are not in the recording, e.g. {missing[0]}",
                           str(reference_file))
    else:
        url = reference_url or DEFAULT_REFERENCE
        key = os.environ.get(reference_key_env)
        hosted_default = reference_url is None or "moonshot" in url
        if hosted_default and not key:
            raise BadInput(f"{reference_key_env} is not set (the hosted reference needs a Moonshot API key)",
                           reference_key_env)
        reference = Endpoint.make("reference", url, reference_model or model, key, kind=reference_kind)
        ref_store = Store(output / "reference.jsonl", suite, reference.model)
    local_store = Store(output / "local.jsonl", suite, local.model)
    endpoints = [local] + ([] if reference_file is not None else [reference])
    asyncio.run(_preflight_all(endpoints))
    with Progress(console=console, transient=True) as progress:
        async def both() -> tuple[dict, dict]:
            tasks = []
            for ep, store in ((local, local_store), (reference, ref_store)):
                if ep is reference and reference_file is not None:
                    continue
                t = progress.add_task(f"{ep.name}", total=len(rows))
                tasks.append(collect(ep, suite, rows, store, concurrency, rate, temperature, max_tokens,
                                     on_done=lambda o, t=t: progress.advance(t)))
            got = await asyncio.gather(*tasks)
            lo = got[0]
            ref = got[1] if len(got) > 1 else {r["id"]: ref_store.outcome(request_key(suite, r)) for r in rows}
            return lo, ref
        lo, ref = asyncio.run(both())
    summary = score(suite, rows, lo, ref, thresholds_for(model, threshold_overrides))
    summary = {"suite": summary["suite"], "local": local.facts(), "reference": reference.facts(), **summary}
    if reference_file is not None:
        summary["reference"]["recording"] = str(reference_file)
    (output / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    write_reports(output, summary)
    print_summary(console, summary)
    return summary


async def _preflight_all(endpoints: list[Endpoint]) -> None:
    for ep in endpoints:
        await preflight(ep)
