"""`kimi-deploy compare`: the same suite to a local deployment and a reference endpoint (Moonshot's hosted
API by default, or a recorded reference file), scored K2-Vendor-Verifier style, with a PASS/FAIL verdict."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from ..catalog import get_model
from ..endpoint import Endpoint, require_model, scrubber
from ..errors import BadInput
from .report import print_summary, write_reports
from .run import Side, Store, collect, request_key
from .score import DEFAULT_F1, EXPECTATION_REGRESSION_RATE, score
from .suites import load


@dataclass(frozen=True, kw_only=True)
class CompareConfig:
    """One comparison: the local endpoint and its served model, and either a live reference endpoint or a
    recording of one (`reference_file`)."""

    local: Endpoint
    model: str
    output: Path
    suite: str = "tool-calls"
    reference: Endpoint | None = None
    reference_file: Path | None = None
    reference_model: str | None = None  # default: the local model, mapped to the hosted id if hosted
    concurrency: int = 8
    rate: float | None = None
    temperature: float | None = 0.0
    max_tokens: int | None = None
    limit: int | None = None
    thresholds: dict[str, float] = field(default_factory=dict)  # overrides of the default bounds
    request_timeout_s: float = 1200.0  # one request in all, retries and backoff included
    stall_timeout_s: float = 600.0  # one attempt: no byte for this long (answers are not streamed)

    def __post_init__(self) -> None:
        if (self.reference is None) == (self.reference_file is None):
            raise BadInput("give a reference endpoint or a reference file, exactly one", "--reference-file")


def thresholds_for(model: str, overrides: dict[str, float]) -> dict[str, float]:
    try:
        thinking = get_model(model).thinking
    except BadInput:
        thinking = "thinking" in model.lower()
    base = {"tool_call_f1": DEFAULT_F1["thinking" if thinking else "instruct"], "schema_accuracy": 0.90,
            "leaked_special_tokens": 0, "error_rate": 0.05,
            "expectation_regression_rate": EXPECTATION_REGRESSION_RATE}
    unknown = set(overrides) - set(base)
    if unknown:
        raise BadInput(f"unknown threshold(s) {', '.join(sorted(unknown))}; known: {', '.join(base)}", "--threshold")
    return {**base, **overrides}


def _recorded_side(cfg: CompareConfig, suite: str, rows: list[dict[str, Any]]) -> tuple[Side, Store]:
    path = cfg.reference_file
    assert path is not None
    if not path.is_file():
        raise BadInput("reference file not found", str(path))
    first = next((json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()), None) or {}
    model = cfg.reference_model or first.get("model") or cfg.model
    side = Side(name="reference", model=model, recorded_url=first.get("endpoint"), recorded_kind=first.get("kind"))
    store = Store(path, suite, model)
    missing = [r["id"] for r in rows if store.outcome(request_key(suite, r)) is None]
    if missing:
        raise BadInput(f"{len(missing)} request(s) of suite {suite!r} are not in the recording, e.g. {missing[0]}",
                       str(path))
    return side, store


def run_compare(cfg: CompareConfig, console: Console) -> dict[str, Any]:
    import math

    from ..bench import check_output_dir

    for name, value in (("--request-timeout", cfg.request_timeout_s), ("--stall-timeout", cfg.stall_timeout_s),
                        ("--rate", cfg.rate), ("--temperature", cfg.temperature)):
        if value is not None and (not math.isfinite(value) or value < 0 or (value == 0 and name != "--temperature")):
            raise BadInput(f"must be a finite number{'' if name == '--temperature' else ' > 0'}, got {value}", name)
    if any(not math.isfinite(v) for v in cfg.thresholds.values()):
        raise BadInput("bounds must be finite numbers", "--threshold")
    check_output_dir(cfg.output, "--output")
    scrub = scrubber(cfg.local, cfg.reference)  # both keys: either side may echo either
    thresholds = thresholds_for(cfg.model, cfg.thresholds)
    suite, rows = load(cfg.suite)
    if cfg.limit is not None:
        rows = rows[:cfg.limit]
    require_model(cfg.local, cfg.model, "--model")
    local = Side(name="local", model=cfg.model, endpoint=cfg.local)
    if cfg.reference is None:
        reference, ref_store = _recorded_side(cfg, suite, rows)
    else:
        ref_model = cfg.reference.model_id(cfg.reference_model or cfg.model)
        require_model(cfg.reference, ref_model, "--reference-model")
        reference = Side(name="reference", model=ref_model, endpoint=cfg.reference)
        ref_store = Store(cfg.output / "reference.jsonl", suite, ref_model, scrub)
    local_store = Store(cfg.output / "local.jsonl", suite, local.model, scrub)
    live = [(side, store) for side, store in ((local, local_store), (reference, ref_store)) if side.endpoint]
    with Progress(console=console, transient=True) as progress:
        async def ask_all() -> list[dict[str, Any]]:
            tasks = []
            for side, store in live:
                t = progress.add_task(side.name, total=len(rows))
                tasks.append(collect(side, suite, rows, store, concurrency=cfg.concurrency, rate=cfg.rate,
                                     temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                                     request_timeout=cfg.request_timeout_s, stall_timeout=cfg.stall_timeout_s,
                                     scrub=scrub,
                                     on_done=lambda o, t=t: progress.advance(t)))
            return await asyncio.gather(*tasks)
        got = asyncio.run(ask_all())
    lo = got[0]
    ref = got[1] if len(got) > 1 else {r["id"]: ref_store.outcome(request_key(suite, r)) for r in rows}
    summary = score(suite, rows, lo, ref, thresholds)
    summary = {"suite": summary["suite"], "local": local.facts(), "reference": reference.facts(), **summary}
    if cfg.reference_file is not None:
        summary["reference"]["recording"] = str(cfg.reference_file)
    summary["timeouts"] = {"request_s": cfg.request_timeout_s, "stall_s": cfg.stall_timeout_s}
    summary = scrub.obj(summary)  # answers and errors may quote a key a server echoed back
    (cfg.output / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    write_reports(cfg.output, summary)
    print_summary(console, summary)
    return summary
