"""`kimi-deploy bench export`: a bench result directory (summary.json + requests.jsonl) written in the
format another tool reads:

- `vllm`: the JSON `vllm bench serve --save-result --save-detailed` writes (vLLM 0.32.0,
  vllm/benchmarks/serve.py: `benchmark()` builds the result dict, `main()` adds the setup keys): per-request
  lists in seconds (ttfts, itls, latencies, start_times), aggregates in milliseconds (mean/median/std/pNN of
  ttft, tpot, itl, e2el, percentiles 50, 90 and 99), throughputs per second of `duration`.
- `guidellm`: GuideLLM's report (guidellm 0.8.1, guidellm/benchmark/schemas/report.py
  GenerativeBenchmarksReport, benchmark.py GenerativeBenchmark, metrics.py GenerativeMetrics,
  schemas/base/request_stats.py GenerativeRequestStats, schemas/base/statistics.py DistributionSummary):
  one benchmark whose requests carry their timings, and the distributions GuideLLM derives from them
  under GuideLLM's own definitions (its time_per_output_token_ms includes the first token, unlike ours).
- `csv`: one flat row per request, the columns of requests.jsonl (milliseconds) with `itl` summarised
  as itl_count / itl_mean / itl_max.

vllm and guidellm hold the measured requests (no warm-up); a request cut at the --duration deadline is
left out of vllm's (as summary.json's statistics leave it out; vllm has no such state) and is one of
GuideLLM's `incomplete` requests; the csv keeps every row with its `warmup` and `incomplete` columns.
Timestamps: requests.jsonl holds CLOCK_MONOTONIC seconds (a merged run's are already on the common
wall clock); GuideLLM's are epoch seconds, so they are shifted by summary.json's `run.mono_to_wall` (the
wall clock at monotonic 0, recorded by the run; 0 for a merge). A result without it is anchored at the
moment requests.jsonl was last written (its mtime) = the last request's end, late by the seconds the run
spent counting tokens after the last request."""

from __future__ import annotations

import csv
import json
import math
import platform
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import __version__
from ..errors import BadInput
from .metrics import RequestRecord, read_records

FORMATS = ("vllm", "guidellm", "csv")
# the file written inside the result directory when no --to is given
DEFAULT_NAMES = {"vllm": "export-vllm.json", "guidellm": "export-guidellm.json", "csv": "export-requests.csv"}
# vllm bench serve --metric-percentiles 50,90,99 (its default is 99 alone; serve.py)
VLLM_PERCENTILES = (50, 90, 99)
# GuideLLM's Percentiles fields and the probability of each (schemas/base/statistics.py PERCENTILE_PROBABILITIES)
GUIDELLM_PERCENTILES = {"p001": 0.001, "p01": 0.01, "p05": 0.05, "p10": 0.1, "p25": 0.25, "p50": 0.5,
                        "p75": 0.75, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999}
# GuideLLM merges event times closer than this before computing rates and concurrency (statistics.py,
# rate_distribution_from_timings / concurrency_distribution_from_timings: threshold=1e-4 s)
GUIDELLM_MERGE_S = 1e-4
GUIDELLM_SCHEMA = "0.8.1"


# ---- reading a result directory ----------------------------------------------------------------

def load(result_dir: Path) -> tuple[dict[str, Any], list[RequestRecord]]:
    """summary.json and every row of requests.jsonl; bad input naming the directory or file when it is
    not a bench result."""
    if not result_dir.is_dir():
        raise BadInput("is not a directory (give the --output directory of a `kimi-deploy bench` run)",
                       str(result_dir))
    sp, rp = result_dir / "summary.json", result_dir / "requests.jsonl"
    for p in (sp, rp):
        if not p.is_file():
            raise BadInput(f"no {p.name} (not a bench result directory; a sweep keeps one per load, "
                           "in its subdirectories)", str(result_dir))
    try:
        summary = json.loads(sp.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"not JSON ({exc.__class__.__name__}); not a bench summary.json", str(sp)) from None
    if not isinstance(summary, dict) or not {"config", "requests", "throughput", "latency_ms"} <= set(summary):
        raise BadInput("lacks config/requests/throughput/latency_ms: not a bench summary.json", str(sp))
    rows = read_records(rp)
    return summary, rows


def _measured(rows: list[RequestRecord]) -> list[RequestRecord]:
    """The requests summary.json's statistics cover: not warm-up, not cut at the deadline, sent."""
    return [r for r in rows if not r.warmup and not r.incomplete and r.t_send is not None]


def _out_tokens(r: RequestRecord) -> int:
    """Output tokens as the summary counts them: the server's usage, else the client's count."""
    return (r.output_tokens_server if r.output_tokens_server is not None else r.output_tokens_client) or 0


# ---- vllm ----------------------------------------------------------------------------------------

def _vllm_stats(result: dict[str, Any], name: str, seconds: list[float]) -> None:
    """mean/median/std/pNN_<name>_ms as vllm's calculate_metrics: numpy over the list in seconds x 1000,
    0 for an empty list (its `values or 0`), std the population one (np.std)."""
    v = np.asarray(seconds or [0.0], dtype=float)
    result[f"mean_{name}_ms"] = float(np.mean(v)) * 1000
    result[f"median_{name}_ms"] = float(np.median(v)) * 1000
    result[f"std_{name}_ms"] = float(np.std(v)) * 1000
    for p in VLLM_PERCENTILES:
        result[f"p{p}_{name}_ms"] = float(np.percentile(v, p)) * 1000


def to_vllm(summary: dict[str, Any], rows: list[RequestRecord], mtime: float) -> dict[str, Any]:
    cfg = summary.get("config", {})
    thr = summary["throughput"]
    measured = _measured(rows)
    ok = [r for r in measured if r.ok]
    out_lens = [_out_tokens(r) if r.ok else 0 for r in measured]  # vllm: 0 for a failed request
    total_in = sum(r.prompt_tokens or 0 for r in ok)
    total_out = sum(out_lens)
    duration = float(thr.get("window_s") or 0.0)
    goodput = summary.get("goodput") or {}
    # closed loop (N users) is vllm's --request-rate inf --max-concurrency N; open loop is --request-rate R
    rate = cfg.get("rate")
    max_conc = cfg.get("max_concurrency") if rate is not None else cfg.get("concurrency")
    result: dict[str, Any] = {
        # setup keys, as vllm's main() writes them (date is its "%Y%m%d-%H%M%S" of the local time)
        "date": datetime.fromtimestamp(mtime).strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": "openai-chat",  # vllm's backend for /v1/chat/completions, the API bench uses
        "backend": "openai-chat",
        "label": "kimi-deploy bench",
        "model_id": cfg.get("model"),
        "tokenizer_id": cfg.get("model"),
        "num_prompts": len(measured),
        "request_rate": rate if rate is not None else "inf",
        "burstiness": cfg.get("burstiness", 1.0),
        "max_concurrency": max_conc,
        # benchmark() result keys
        "duration": duration,
        "completed": len(ok),
        "failed": len(measured) - len(ok),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / duration if duration else 0.0,
        "request_goodput": (goodput.get("good") or 0) / duration if goodput.get("slo") and duration else None,
        "output_throughput": total_out / duration if duration else 0.0,
        "total_token_throughput": (total_in + total_out) / duration if duration else 0.0,
        # --save-detailed lists, one entry per request, seconds; vllm's defaults (0.0, [], "") for a failure
        "input_lens": [r.prompt_tokens or 0 for r in measured],
        "output_lens": out_lens,
        "ttfts": [(r.ttft or 0.0) / 1000 if r.ok else 0.0 for r in measured],
        "itls": [[x / 1000 for x in r.itl] if r.ok else [] for r in measured],
        "latencies": [(r.e2e or 0.0) / 1000 if r.ok else 0.0 for r in measured],
        "start_times": [r.t_send for r in measured],  # vllm: time.perf_counter(); here CLOCK_MONOTONIC
        "generated_texts": ["" for _ in measured],  # bench keeps no text (requests.jsonl counts it only)
        "errors": ["" if r.ok else (r.error or "error") for r in measured],
        "rtfx": 0.0,
    }
    result.update(_vllm_peak(ok))
    ttfts = [r.ttft / 1000 for r in ok if r.ttft is not None]
    # vllm's TPOT list has the requests with more than one output token only
    tpots = [((r.e2e or 0) - (r.ttft or 0)) / 1000 / (_out_tokens(r) - 1) for r in ok
             if r.ttft is not None and r.e2e is not None and _out_tokens(r) > 1]
    _vllm_stats(result, "ttft", ttfts)
    _vllm_stats(result, "tpot", tpots)
    _vllm_stats(result, "itl", [x / 1000 for r in ok for x in r.itl])
    _vllm_stats(result, "e2el", [r.e2e / 1000 for r in ok if r.e2e is not None])
    return result


def _vllm_peak(ok: list[RequestRecord]) -> dict[str, Any]:
    """max_output_tokens_per_s and max_concurrent_requests as vllm's calculate_metrics counts them: one
    bucket per whole second since the first start; a token at start + ttft and after each itl, a request
    active in every bucket from its start's to its end's."""
    if not ok:
        return {"max_output_tokens_per_s": 0.0, "max_concurrent_requests": 0}
    t0 = min(r.t_send for r in ok)
    end = max(r.t_send + (r.e2e or 0) / 1000 for r in ok)
    n = int(np.ceil(end - t0)) + 1
    tokens, active = np.zeros(n), np.zeros(n)
    for r in ok:
        times = r.t_send - t0 + ((r.ttft or 0) + np.concatenate(([0.0], np.cumsum(r.itl)))) / 1000
        b = times.astype(int)
        np.add.at(tokens, b[(b >= 0) & (b < n)], 1)
        active[int(r.t_send - t0):int(r.t_send - t0 + (r.e2e or 0) / 1000) + 1] += 1
    return {"max_output_tokens_per_s": float(tokens.max()), "max_concurrent_requests": int(active.max())}


# ---- csv -----------------------------------------------------------------------------------------

CSV_COLUMNS = ("index", "warmup", "ok", "incomplete", "session", "turn", "error", "ttft", "ttfat", "ttftc", "e2e",
               "tpot", "schedule_lag", "itl_count", "itl_mean", "itl_max", "output_tokens_server",
               "output_tokens_client", "reasoning_tokens", "prompt_tokens", "finish_reason", "t_send", "t_end",
               "tool_call_errors")


def write_csv(rows: list[RequestRecord], dest: Path) -> None:
    """One row per request; empty cells for None; tool_call_errors as their count."""
    with dest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            d = r.to_json()
            itl = r.itl
            d.update(itl_count=len(itl), itl_mean=round(math.fsum(itl) / len(itl), 3) if itl else None,
                     itl_max=max(itl) if itl else None, tool_call_errors=len(r.tool_call_errors))
            w.writerow({k: "" if d.get(k) is None else d[k] for k in CSV_COLUMNS})


# ---- guidellm ------------------------------------------------------------------------------------

def _dist(values: Sequence[float] | Sequence[tuple[float, float]], count: int | None = None) -> dict[str, Any]:
    """GuideLLM's DistributionSummary of (value, weight) pairs (plain values weigh 1): the statistics of
    the weighted discrete distribution, percentiles the smallest value whose cumulative probability
    reaches p, mode the most probable value, count the summed weight unless given; all 0 when empty."""
    pairs = np.array([(v, 1.0) if not isinstance(v, tuple) else v for v in values], dtype=float).reshape(-1, 2)
    if count is None:
        count = round(float(pairs[:, 1].sum())) if len(pairs) else 0
    vals, inv = np.unique(pairs[:, 0], return_inverse=True)
    w = np.zeros_like(vals)
    np.add.at(w, inv, pairs[:, 1])
    keep = w > 0
    vals, w = vals[keep], w[keep]
    if len(vals) and w.sum() <= 1e-6:
        w = np.ones_like(vals)
    if not len(vals):
        zero = dict.fromkeys(("mean", "median", "mode", "variance", "std_dev", "min", "max", "total_sum"), 0.0)
        return {**zero, "count": count, "percentiles": dict.fromkeys(GUIDELLM_PERCENTILES, 0.0)}
    prob = w / w.sum()
    cdf = np.cumsum(prob)
    pct = {k: float(vals[min(int(np.searchsorted(cdf, p, side="left")), len(vals) - 1)])
           for k, p in GUIDELLM_PERCENTILES.items()}
    mean = float(np.sum(vals * prob))
    var = float(np.sum((vals - mean) ** 2 * prob))
    return {"mean": mean, "median": pct["p50"], "mode": float(vals[np.argmax(prob)]), "variance": var,
            "std_dev": math.sqrt(var), "min": float(vals[0]), "max": float(vals[-1]), "count": count,
            "total_sum": mean * count, "percentiles": pct}


def _merge(times: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted event times with equal ones summed, then every time within GUIDELLM_MERGE_S of a group's
    first time folded into that group (GuideLLM's merge of near-simultaneous events)."""
    t, inv = np.unique(times, return_inverse=True)
    w = np.zeros_like(t)
    np.add.at(w, inv, weights)
    if len(t) <= 1:
        return t, w
    out_t, out_w = [t[0]], [w[0]]
    for ti, wi in zip(t[1:], w[1:]):
        if ti - out_t[-1] <= GUIDELLM_MERGE_S:
            out_w[-1] += wi
        else:
            out_t.append(ti)
            out_w.append(wi)
    return np.array(out_t), np.array(out_w)


def _rate(events: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    """GuideLLM's rate distribution of (time, weight) events in [start, end]: each event's weight over its
    local duration (half-way to the previous event to half-way to the next), weighted by that duration."""
    ev = np.array(events, dtype=float).reshape(-1, 2)
    ev = ev[(ev[:, 0] >= start) & (ev[:, 0] <= end)]
    ev = np.vstack(([[start, 0.0]], ev, [[end, 0.0]]))
    t, w = _merge(ev[:, 0], ev[:, 1])
    if len(t) <= 1:
        return _dist([], count=len(t))
    mid = (t[1:] + t[:-1]) / 2
    dur = np.empty_like(t)
    dur[0] = mid[0] - t[0]
    dur[1:-1] = mid[1:] - mid[:-1]
    dur[-1] = max(t[-1] - mid[-1], 1e-6)
    return _dist(list(zip((w / dur).tolist(), dur.tolist())), count=round(float(w.sum())))


def _concurrency(intervals: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    """GuideLLM's concurrency distribution: requests in flight, weighted by how long each level held."""
    iv = [(a, b) for a, b in intervals if b >= start and a <= end]
    if not iv:
        return _dist([], count=0)
    changes = np.array([(a, 1.0) for a, _ in iv] + [(b, -1.0) for _, b in iv])
    t, w = _merge(changes[:, 0], changes[:, 1])
    i = int(np.searchsorted(t, start, side="left"))
    t, w = np.concatenate(([start], t[i:])), np.concatenate(([w[:i].sum()], w[i:]))
    j = int(np.searchsorted(t, end, side="right"))
    t, w = np.concatenate((t[:j], [end])), np.concatenate((w[:j], [0.0]))
    level = np.clip(np.cumsum(w), 0, None)
    if len(level) <= 1:
        return _dist([float(level[0])])
    dur = np.clip(np.diff(t), 0, None)
    if not np.any(dur > 0):
        return _dist([], count=len(iv))
    return _dist(list(zip(level[:-1].tolist(), dur.tolist())), count=len(iv))


def _status(fn: Callable[[dict[str, Any]], Any], groups: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """GuideLLM's StatusDistributionSummary: one distribution per status and one of all (a function may
    give a value, a (value, weight) pair or a list of them; None counts as 0 where GuideLLM says `or 0`)."""
    def vals(reqs: list[dict[str, Any]]) -> list[Any]:
        out: list[Any] = []
        for q in reqs:
            v = fn(q)
            out.extend(v if isinstance(v, list) else [v])
        return out
    parts = {k: vals(v) for k, v in groups.items()}
    return {**{k: _dist(v) for k, v in parts.items()}, "total": _dist([x for v in parts.values() for x in v])}


def _status_timed(fn: Callable[[list[dict[str, Any]]], dict[str, Any]], groups: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {**{k: fn(v) for k, v in groups.items()}, "total": fn([q for v in groups.values() for q in v])}


def _guidellm_request(r: RequestRecord, offset: float) -> dict[str, Any]:
    """One GenerativeRequestStats with its timings (epoch seconds) and the values GuideLLM computes from
    them (its computed fields, serialised as its own JSON output has them)."""
    start = r.t_send + offset
    end = (r.t_end + offset) if r.t_end is not None else None
    first = start + r.ttft / 1000 if r.ttft is not None else None
    first_out = start + r.ttfat / 1000 if r.ttfat is not None else None
    last = first + math.fsum(r.itl) / 1000 if first is not None else None
    iters = len(r.itl) + 1 if first is not None else 0
    out_tok = (r.output_tokens_server if r.output_tokens_server is not None else r.output_tokens_client) \
        if r.ok else None
    status = "completed" if r.ok else ("cancelled" if r.incomplete else "errored")
    timings = {"targeted_start": start - r.schedule_lag / 1000 if r.schedule_lag is not None else None,
               "resolve_start": start, "request_start": start, "first_request_iteration": first,
               "first_token_iteration": first, "first_output_token_iteration": first_out,
               "last_token_iteration": last, "last_request_iteration": last, "request_iterations": iters,
               "token_iterations": iters, "request_end": end, "resolve_end": end, "finalized": end}
    q: dict[str, Any] = {
        "type_": "generative_request_stats", "request_id": str(r.index), "response_id": None,
        "request_args": None, "output": None, "reasoning_output": None, "tool_calls": None,
        "info": {"request_id": str(r.index), "conversation_id": None if r.session is None else str(r.session),
                 "turn_index": r.turn or 0, "status": status, "timings": timings,
                 "error": None if r.ok else (r.error or "error")},
        "input_metrics": {"text_tokens": r.prompt_tokens},
        "output_metrics": {"text_tokens": out_tok},
        "response_metrics": None,
    }
    # GuideLLM's computed fields (schemas/base/request_stats.py), from the timings above
    out_tokens = out_tok if out_tok is not None else (iters or None)
    latency = end - start if end is not None else None
    total = None if r.prompt_tokens is None and out_tokens is None else (r.prompt_tokens or 0) + (out_tokens or 0)
    q.update(
        request_start_time=start, request_end_time=end, request_latency=latency,
        prompt_tokens=r.prompt_tokens, output_tokens=out_tokens, total_tokens=total,
        time_to_first_token_ms=None if first is None else 1000 * (first - start),
        time_per_output_token_ms=None if not out_tokens else 1000 * ((last or end) - start) / out_tokens,
        inter_token_latency_ms=None if first is None or not out_tokens or out_tokens <= 1
        else 1000 * (last - first) / (out_tokens - 1),
        tokens_per_second=None if not latency or total is None else total / latency,
        output_tokens_per_second=None if not latency or out_tokens is None else out_tokens / latency,
        time_to_first_output_token_ms=None if first_out is None else 1000 * (first_out - start),
        iter_tokens_per_iteration=None if not out_tokens or out_tokens <= 1 or iters <= 1
        else (out_tokens - 1.0) / (iters - 1.0),
        output_tokens_per_iteration=None if out_tokens is None or iters < 1 else out_tokens / iters,
    )
    return q


def _output_timings(q: dict[str, Any]) -> list[tuple[float, float]]:
    """GuideLLM's output_tokens_timings: the first token at the first iteration, the rest spread evenly
    over the later iterations (it has no per-iteration token counts); all at the end without iterations."""
    t = q["info"]["timings"]
    first, last, iters = t["first_token_iteration"], t["last_token_iteration"], t["token_iterations"]
    if first is None or last is None or iters <= 1:
        return [(last if last is not None else q["request_end_time"], q["output_tokens"] or 0.0)]
    per = q["iter_tokens_per_iteration"]
    rest = [] if per is None else [(x, per) for x in np.linspace(first, last, num=iters)[1:].tolist()]
    return [(first, 1.0 * bool(q["output_tokens"]))] + rest


def _prompt_timing(q: dict[str, Any]) -> tuple[float, float]:
    t = q["info"]["timings"]["first_token_iteration"]
    return (t if t is not None else q["request_end_time"], q["prompt_tokens"] or 0.0)


def to_guidellm(summary: dict[str, Any], rows: list[RequestRecord], mtime: float) -> dict[str, Any]:
    cfg = summary.get("config", {})
    measured = [r for r in rows if not r.warmup and r.t_send is not None and (r.t_end is not None or r.incomplete)]
    ends = [r.t_end for r in rows if r.t_end is not None]
    offset = (summary.get("run") or {}).get("mono_to_wall")
    if not isinstance(offset, (int, float)) or isinstance(offset, bool):
        offset = mtime - max(ends) if ends else mtime
    reqs = [_guidellm_request(r, offset) for r in measured if r.t_end is not None]
    groups = {"successful": [q for q in reqs if q["info"]["status"] == "completed"],
              "incomplete": [q for q in reqs if q["info"]["status"] == "cancelled"],
              "errored": [q for q in reqs if q["info"]["status"] == "errored"]}
    start = min((q["request_start_time"] for q in reqs), default=mtime)
    end = max((q["request_end_time"] for q in reqs), default=mtime)

    def rate(fn: Callable[[dict[str, Any]], list[tuple[float, float]]]) -> dict[str, Any]:
        return _status_timed(lambda qs: _rate([e for q in qs for e in fn(q)], start, end), groups)

    def num(key: str) -> Callable[[dict[str, Any]], float]:
        return lambda q: q[key] or 0.0

    def total_timings(q: dict[str, Any]) -> list[tuple[float, float]]:
        return [_prompt_timing(q), *_output_timings(q)]

    def iter_tokens(q: dict[str, Any]) -> list[float]:
        return [w for _, w in _output_timings(q)[1:]] if q["info"]["timings"]["token_iterations"] > 1 else []

    metrics = {
        "request_totals": {**{k: len(v) for k, v in groups.items()}, "total": len(reqs)},
        "requests_per_second": rate(lambda q: [(q["request_end_time"], 1.0)]),
        "request_concurrency": _status_timed(
            lambda qs: _concurrency([(q["request_start_time"], q["request_end_time"]) for q in qs], start, end),
            groups),
        "request_latency": _status(num("request_latency"), groups),
        "request_dispatch_delay": None, "request_scheduled_latency": None, "turn_predecessor_delay": None,
        "turn_scheduling_delay": None, "root_dispatch_delay": None,
        "request_streaming_iterations_count": _status(lambda q: q["info"]["timings"]["request_iterations"] or 0.0, groups),
        "prompt_token_count": _status(num("prompt_tokens"), groups),
        "output_token_count": _status(num("output_tokens"), groups),
        "total_token_count": _status(num("total_tokens"), groups),
        "time_to_first_token_ms": _status(num("time_to_first_token_ms"),
                                          {k: [q for q in v if q["info"]["timings"]["first_token_iteration"] is not None]
                                           for k, v in groups.items()}),
        "time_to_first_output_token_ms": _status(
            num("time_to_first_output_token_ms"),
            {k: [q for q in v if q["info"]["timings"]["first_output_token_iteration"] is not None] for k, v in groups.items()}),
        # bench does not time each send and receive of a round trip
        "time_to_last_round_trip_ms": _status(lambda q: 0.0, groups),
        "avg_round_trip_time_ms": _status(lambda q: 0.0, groups),
        # token-weighted, as GuideLLM weighs them
        "time_per_output_token_ms": _status(lambda q: (q["time_per_output_token_ms"] or 0.0, q["output_tokens"] or 0.0), groups),
        # GuideLLM windows it from the first token, a request without one counting as an instant at its end
        "inter_token_latency_ms": _status(
            lambda q: (q["inter_token_latency_ms"] or 0.0, (q["output_tokens"] or 1.0) - 1.0), groups),
        "prompt_tokens_per_second": rate(lambda q: [_prompt_timing(q)]),
        "output_tokens_per_second": rate(_output_timings),
        "tokens_per_second": rate(total_timings),
        "output_tokens_per_iteration": _status(lambda q: [w for _, w in _output_timings(q)], groups),
        "iter_tokens_per_iteration": _status(iter_tokens, groups),
        # per-modality breakdowns: bench measures text in tokens only, and no image, video or audio
        "text": {"tokens": None, "words": None, "characters": None},
        "image": {"tokens": None, "images": None, "pixels": None, "bytes": None},
        "video": {"tokens": None, "frames": None, "seconds": None, "bytes": None},
        "audio": {"tokens": None, "samples": None, "seconds": None, "bytes": None},
        "tool_call": {"tokens": None, "mixed_tokens": None, "count": None},
        "turns": None, "slo_attainment": None, "slo_determined_requests": 0, "request_goodput": None,
    }
    rate_cfg = cfg.get("rate")
    if cfg.get("workload") == "trace":
        strategy: dict[str, Any] = {"type_": "trace", "time_scale": cfg.get("time_scale") or 1.0}
    elif rate_cfg is not None:  # bench's open loop draws gamma inter-arrivals, Poisson at burstiness 1
        strategy = {"type_": "poisson", "rate": rate_cfg, "max_concurrency": cfg.get("max_concurrency"),
                    "random_seed": cfg.get("seed") if isinstance(cfg.get("seed"), int) else 42}
    else:
        strategy = {"type_": "concurrent", "streams": cfg.get("concurrency") or 1}
    ok_lat = [q["request_latency"] for q in groups["successful"]]
    lags = [r.schedule_lag / 1000 for r in measured if r.schedule_lag is not None]
    mean = (lambda v: math.fsum(v) / len(v) if v else 0.0)
    benchmark = {
        "type_": "generative_benchmark",
        "config": {"run_id": f"kimi-deploy-{int(mtime)}", "run_index": 0, "strategy": strategy,
                   "constraints": {}, "profile": {"source": "kimi-deploy bench"},
                   "requests": {"workload": cfg.get("workload"), "input_len": cfg.get("input_len"),
                                "output_len": cfg.get("output_len"), "dataset": cfg.get("dataset")},
                   "backend": {"type": "openai_http", "target": cfg.get("base_url"), "model": cfg.get("model")},
                   "environment": {"client": f"kimi-deploy {__version__}",
                                   "valid": (summary.get("client") or {}).get("valid")}},
        "scheduler_state": {"start_time": start, "end_time": end, "start_requests_time": start,
                            "end_requests_time": end, "created_requests": len(reqs), "processed_requests": len(reqs),
                            "successful_requests": len(groups["successful"]),
                            "errored_requests": len(groups["errored"]),
                            "cancelled_requests": len(groups["incomplete"])},
        "scheduler_metrics": {"start_time": start, "request_start_time": start, "measure_start_time": start,
                              "measure_end_time": end, "request_end_time": end, "end_time": end,
                              "requests_made": metrics["request_totals"], "queued_time_avg": 0.0,
                              "resolve_start_delay_avg": 0.0, "resolve_targeted_start_delay_avg": mean(lags),
                              "request_start_delay_avg": 0.0, "request_targeted_start_delay_avg": mean(lags),
                              "request_time_avg": mean(ok_lat), "resolve_end_delay_avg": 0.0,
                              "resolve_time_avg": mean(ok_lat), "finalized_delay_avg": 0.0,
                              "processed_delay_avg": 0.0},
        "metrics": metrics,
        "requests": {**groups, "total": None},
        "warnings": [],
        # GuideLLM's computed fields of a benchmark (benchmark.py)
        "start_time": start, "end_time": end, "duration": end - start, "warmup_duration": 0.0,
        "cooldown_duration": 0.0,
    }
    return {"metadata": {"version": 2, "guidellm_version": f"kimi-deploy {__version__} (GuideLLM {GUIDELLM_SCHEMA} schema)",
                         "python_version": platform.python_version(), "platform": platform.platform()},
            "config": {"metadata": {"labels": {"source": "kimi-deploy bench", "workload": str(cfg.get("workload"))}},
                       "spec": _guidellm_spec(cfg)},
            "benchmarks": [benchmark], "conclusions": []}


def _guidellm_spec(cfg: dict[str, Any]) -> dict[str, Any]:
    """GuideLLM's BenchmarkArgs nearest to the run (schemas/benchmark/entrypoints.py): the endpoint, the
    load profile and the data; workloads GuideLLM has no source for (tool calls, multi-turn, shared
    prefix) are given as synthetic text of their lengths, their name in the report's labels."""
    if cfg.get("workload") == "trace":
        profile: dict[str, Any] = {"kind": "replay", "time_scale": cfg.get("time_scale") or 1.0}
        data: dict[str, Any] = {"kind": "mooncake", "source": str(cfg.get("dataset"))}
    else:
        profile = ({"kind": "poisson", "rate": [cfg["rate"]], "max_concurrency": cfg.get("max_concurrency")}
                   if cfg.get("rate") is not None else {"kind": "concurrent", "streams": [cfg.get("concurrency") or 1]})
        data = ({"kind": "json_file", "path": str(cfg.get("dataset"))} if cfg.get("workload") == "jsonl" else
                {"kind": "synthetic_text", "prompt_tokens": cfg.get("input_len") or 1,
                 "output_tokens": cfg.get("output_len")})
    # GuideLLM's target is the server's URL, the /v1 routes added by request_format
    return {"backend": {"kind": "openai_http", "target": str(cfg.get("base_url")).removesuffix("/v1"),
                        "model": cfg.get("model"),
                        "request_format": "/v1/chat/completions"},
            "profile": profile, "data": [data]}


# ---- the entry point -----------------------------------------------------------------------------

def export(result_dir: Path, fmt: str, dest: Path | None = None, *, overwrite: bool = False) -> Path:
    """Write the result in `fmt` (vllm, guidellm or csv) to `dest` (default: DEFAULT_NAMES[fmt] inside
    the directory) and return its path. Bad input naming the directory/file when it is not a bench
    result, --format for an unknown format, --to when the file exists and `overwrite` is not given."""
    if fmt not in FORMATS:
        raise BadInput(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}", "--format")
    summary, rows = load(result_dir)
    dest = dest if dest is not None else result_dir / DEFAULT_NAMES[fmt]
    if dest.exists() and not overwrite:
        raise BadInput(f"{dest} exists; give another --to, or --overwrite to replace it", "--to")
    if dest.exists() and any(dest.resolve() == (result_dir / n).resolve() for n in ("summary.json", "requests.jsonl")):
        raise BadInput(f"{dest} is the result itself; give another file", "--to")
    if dest.exists() and dest.is_dir():
        raise BadInput(f"{dest} is a directory, not a file", "--to")
    if not dest.parent.is_dir():
        raise BadInput(f"{dest.parent} is not a directory", "--to")
    mtime = (result_dir / "requests.jsonl").stat().st_mtime
    try:
        if fmt == "csv":
            write_csv(rows, dest)
        else:
            doc = {"vllm": to_vllm, "guidellm": to_guidellm}[fmt](summary, rows, mtime)
            dest.write_text(json.dumps(doc), encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot write {dest}: {exc.strerror or exc}", "--to") from None
    return dest
