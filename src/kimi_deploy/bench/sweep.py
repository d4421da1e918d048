"""Sweeps: the same workload at several concurrency levels or rates, each a full run in its own
directory, summarised as throughput against per-user speed, with a saturation search (`auto`: double
the load until throughput stops growing by 10 % while latency keeps rising)."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console

from ..errors import BadInput
from .report import sweep_plot

GROWTH = 0.10  # less than this much more throughput for double the load: saturated


def parse(spec: str) -> tuple[str, list[float] | None]:
    mode, _, values = spec.partition("=")
    if mode not in ("concurrency", "rate"):
        raise BadInput(f"sweep over concurrency or rate, got {mode!r} (e.g. concurrency=1,4,16 or rate=auto)",
                       "--sweep")
    if values == "auto":
        return mode, None
    try:
        vals = [float(v) for v in values.split(",") if v]
    except ValueError:
        raise BadInput(f"{values!r} is not a comma-separated list of numbers or auto", "--sweep") from None
    if not vals or any(not math.isfinite(v) or v <= 0 for v in vals):
        raise BadInput("sweep values must be finite positive numbers", "--sweep")
    return mode, vals


def _load(mode: str, value: float) -> float | int:
    return int(value) if mode == "concurrency" else value


def first_load(spec: str) -> dict[str, float | int]:
    """The load of the sweep's first point as BenchConfig fields: a sweep's config carries one (every run
    needs a load mode), and each point replaces it."""
    mode, values = parse(spec)
    return {mode: _load(mode, 1.0 if values is None else values[0])}


def run_sweep(cfg: Any, spec: str, console: Console, max_load: float = 1024) -> dict[str, Any]:
    from . import DEFAULT_REQUESTS, run_bench

    mode, values = parse(spec)
    auto = values is None
    queue = [1.0] if auto else list(values)
    points: list[dict[str, Any]] = []
    saturated_at = None
    while queue:
        v = queue.pop(0)
        load = _load(mode, v)
        # enough requests that every user is busy for a couple of rounds at this load
        n = cfg.num_requests or DEFAULT_REQUESTS
        n = max(n, int(load) * 2) if mode == "concurrency" else n
        sub = cfg.replace(output=cfg.output / f"{mode}-{load}", concurrency=load if mode == "concurrency" else None,
                          rate=v if mode == "rate" else None, num_requests=n)
        console.print(f"sweep: {mode} {load}")
        s = run_bench(sub, console)
        tpot = s["latency_ms"]["tpot"]["mean"]
        points.append({"load": load, "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
                       "requests_per_s": s["throughput"]["requests_per_s"], "tpot_mean_ms": tpot,
                       "ttft_p50_ms": s["latency_ms"]["ttft"]["p50"],
                       "per_user_tokens_per_s": round(1000 / tpot, 2) if tpot else 0.0,
                       "goodput_fraction": s["goodput"]["fraction"], "valid": s["client"]["valid"],
                       "failed": s["requests"]["failed"]})
        if len(points) >= 2 and saturated_at is None:
            a, b = points[-2], points[-1]
            grew = (b["output_tokens_per_s"] - a["output_tokens_per_s"]) / max(a["output_tokens_per_s"], 1e-9)
            if grew < GROWTH:
                saturated_at = a["load"]
        if auto and saturated_at is None and v * 2 <= max_load:
            queue.append(v * 2)
    result = {"mode": mode, "points": points, "saturated_at": saturated_at,
              "rule": f"the last load before doubling it added less than {GROWTH:.0%} throughput"}
    cfg.output.mkdir(parents=True, exist_ok=True)
    (cfg.output / "sweep.json").write_text(json.dumps(result, indent=2))
    sweep_plot(points, cfg.output)
    return result
