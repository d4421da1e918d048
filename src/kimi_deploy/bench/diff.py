"""`kimi-deploy bench diff A B`: two result directories side by side, with bootstrap confidence
intervals on the difference of each metric's mean, p50, p90 and p99, of the error rate and of the goodput
fraction, saying which differences are real (the 95 % interval excludes zero) and which are noise; and
which configuration fields differ between the runs (`config_differences`), which the CLI refuses unless
told otherwise: a different load or workload is another experiment, not a regression."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import BadInput
from ..stats import percentile
from .metrics import RequestRecord, read_records

METRICS = ("ttft", "ttfat", "tpot", "e2e")


def _load(d: Path) -> list[RequestRecord]:
    """The measured requests of a result (completed or failed; not warm-up, not cut at the deadline)."""
    return [r for r in read_records(d / "requests.jsonl") if not r.warmup and not r.incomplete]


# Fields of summary.json's `config` whose difference is what one compares (where the endpoint is and what
# it serves, where the results went, the client's seed, its processes and how many client machines share
# the load and start together) or that are not configuration (the facts a run found, whether it was cut
# short); every other field, those added later included, must match for two runs to be comparable.
# `slo` decides only the goodput rows, which need the same SLOs on both sides.
EXPECTED = frozenset({"base_url", "hosted", "api_key_env", "model", "output", "overwrite", "seed", "workers",
                      "shard", "start_at", "barrier", "barrier_timeout_s",
                      "shards", "slo", "workload_facts", "interrupted", "terminated"})
STATS = ("mean", "p50", "p90", "p99")
# A percentile's bootstrap interval is said to tell real from noise only when each side has at least this
# many values above it: the bootstrap of an extreme order statistic is not consistent (Bickel & Freedman
# 1981, "Some asymptotic theory for the bootstrap", Ann. Statist. 9(6), the sample maximum); 5 is our bound.
MIN_TAIL = 5
RESAMPLES = 2000
RESAMPLES_ITL = 500  # up to 20,000 ITL values a side
MAX_CELLS = 4_000_000  # resampled values held at once per side (32 MB of float64)


def _summary(d: Path) -> dict[str, Any]:
    """summary.json with its throughput, request counts, goodput and config checked, or bad input naming
    the file."""
    p = d / "summary.json"
    if not p.is_file():
        raise BadInput("no summary.json (not a bench result directory)", str(d))
    try:
        s = json.loads(p.read_text())
        t = s["throughput"]
        values = {k: t[k] for k in ("requests_per_s", "output_tokens_per_s")}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadInput("is not JSON (not a bench summary.json)", str(p)) from None
    except (KeyError, TypeError):
        raise BadInput("has no throughput.requests_per_s / output_tokens_per_s (not a bench summary.json)",
                       str(p)) from None
    for k, v in values.items():
        if not _number(v):
            raise BadInput(f"throughput.{k} is {v!r}, not a number", str(p))
    req, good, config = s.get("requests"), s.get("goodput"), s.get("config")
    if not isinstance(config, dict):
        raise BadInput("has no config object (not a bench summary.json)", str(p))
    if not isinstance(req, dict) or not all(isinstance(req.get(k), int) and not isinstance(req.get(k), bool)
                                            and req[k] >= 0 for k in ("completed", "failed")):
        raise BadInput("has no requests.completed / failed counts (not a bench summary.json)", str(p))
    if good is not None and (not isinstance(good, dict) or not isinstance(good.get("slo") or {}, dict)
                             or not all(v is None or _number(v) for k, v in good.items() if k != "slo")):
        raise BadInput("goodput is not the object bench writes (slo, good, of, fraction, requests_per_s)", str(p))
    return s


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def config_differences(a_dir: Path, b_dir: Path) -> list[tuple[str, Any, Any]]:
    """(field, A's value, B's value) for every configuration field that differs between the two runs and
    makes their numbers incomparable (every recorded field but EXPECTED). A field one run does not record
    (written before the field existed) is taken as null, the value of an unset option, and shown as
    MISSING when the other run's value is not null."""
    ca, cb = _summary(a_dir)["config"], _summary(b_dir)["config"]
    return [(k, ca.get(k, MISSING), cb.get(k, MISSING)) for k in sorted((set(ca) | set(cb)) - EXPECTED)
            if ca.get(k) != cb.get(k)]


MISSING = "(not recorded)"


def bootstrap(a: Sequence[float], b: Sequence[float], stats: Sequence[str] = STATS, n: int = RESAMPLES,
              seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """stat -> (observed stat(b) - stat(a), 2.5 %, 97.5 % of the resampled differences), each side resampled
    with replacement `n` times (numpy, seeded: the same inputs give the same intervals). stats: "mean" or
    "pQ" (kimi_deploy.stats.percentile's linear method, numpy's default)."""
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    qs = [float(s[1:]) for s in stats if s != "mean"]
    rng = np.random.default_rng(seed)
    per_chunk = max(1, MAX_CELLS // max(len(va), len(vb)))
    diffs: dict[str, list[np.ndarray]] = {s: [] for s in stats}
    for start in range(0, n, per_chunk):
        k = min(per_chunk, n - start)
        ra = va[rng.integers(0, len(va), size=(k, len(va)))]
        rb = vb[rng.integers(0, len(vb), size=(k, len(vb)))]
        pa = np.percentile(ra, qs, axis=1, method="linear") if qs else None
        pb = np.percentile(rb, qs, axis=1, method="linear") if qs else None
        i = 0
        for s in stats:
            if s == "mean":
                diffs[s].append(rb.mean(axis=1) - ra.mean(axis=1))
            else:
                diffs[s].append(pb[i] - pa[i])  # type: ignore[index]
                i += 1
    out = {}
    for s in stats:
        lo, hi = np.percentile(np.concatenate(diffs[s]), [2.5, 97.5], method="linear")
        out[s] = (_stat(s, vb) - _stat(s, va), float(lo), float(hi))
    return out


def _stat(name: str, v: np.ndarray) -> float:
    return float(np.mean(v)) if name == "mean" else percentile(v.tolist(), float(name[1:]))


def _rate_row(metric: str, hits_a: int, of_a: int, hits_b: int, of_b: int, seed: int) -> dict[str, Any] | None:
    """A share (hits / of) of each run, with the bootstrap interval of its difference."""
    if not of_a or not of_b:
        return None
    ia = np.repeat([1.0, 0.0], [hits_a, of_a - hits_a])
    ib = np.repeat([1.0, 0.0], [hits_b, of_b - hits_b])
    d, lo, hi = bootstrap(ia, ib, ("mean",), seed=seed)["mean"]
    a, b = hits_a / of_a, hits_b / of_b
    return {"metric": metric, "a": round(a, 4), "b": round(b, 4), "delta": round(d, 4),
            "delta_pct": round(100 * d / a, 2) if a else None, "ci95": [round(lo, 4), round(hi, 4)],
            "real": lo > 0 or hi < 0, "n": [of_a, of_b]}


def _plain_row(metric: str, a: float, b: float) -> dict[str, Any]:
    return {"metric": metric, "a": a, "b": b, "delta": round(b - a, 4),
            "delta_pct": round(100 * (b - a) / a, 2) if a else None, "ci95": None, "real": None}


def metric_count() -> int:
    """How many latency metrics `diff` bootstraps (for a progress count)."""
    return len(METRICS) + 1


def diff(a_dir: Path, b_dir: Path, *, on_metric: Callable[[], None] = lambda: None) -> list[dict[str, Any]]:
    """The rows of `bench diff`: per latency metric its mean, p50, p90 and p99 (ms) with the bootstrap 95 %
    interval of B - A and whether it excludes zero (`real`; None when a side has fewer than MIN_TAIL values
    above the percentile); the error rate (failed / measured) and, when both runs had the same SLOs, the
    goodput fraction, both with intervals; throughput and goodput per second without. `on_metric` is called
    after each latency metric (metric_count() calls)."""
    a, b = _load(a_dir), _load(b_dir)
    sa, sb = _summary(a_dir), _summary(b_dir)
    out: list[dict[str, Any]] = []
    ok_a, ok_b = [r for r in a if r.ok], [r for r in b if r.ok]
    for i, key in enumerate(METRICS + ("itl",)):
        if key == "itl":
            va = [x for r in ok_a for x in r.itl][:20000]
            vb = [x for r in ok_b for x in r.itl][:20000]
        else:
            va = [getattr(r, key) for r in ok_a if getattr(r, key) is not None]
            vb = [getattr(r, key) for r in ok_b if getattr(r, key) is not None]
        if len(va) >= 2 and len(vb) >= 2:
            got = bootstrap(va, vb, n=RESAMPLES_ITL if key == "itl" else RESAMPLES, seed=i)
            for name in STATS:
                d, lo, hi = got[name]
                base, other = _stat(name, np.asarray(va)), _stat(name, np.asarray(vb))
                enough = name == "mean" or min(len(va), len(vb)) * (1 - float(name[1:]) / 100) >= MIN_TAIL
                out.append({"metric": f"{key} {name} (ms)", "a": round(base, 3), "b": round(other, 3),
                            "delta": round(d, 3), "delta_pct": round(100 * d / base, 2) if base else None,
                            "ci95": [round(lo, 3), round(hi, 3)], "real": (lo > 0 or hi < 0) if enough else None,
                            "n": [len(va), len(vb)]})
        on_metric()
    ra, rb = sa["requests"], sb["requests"]
    row = _rate_row("error rate", ra["failed"], ra["completed"] + ra["failed"],
                    rb["failed"], rb["completed"] + rb["failed"], seed=100)
    if row:
        out.append(row)
    for k in ("requests_per_s", "output_tokens_per_s"):
        out.append(_plain_row(k, sa["throughput"][k], sb["throughput"][k]))
    ga, gb = sa.get("goodput") or {}, sb.get("goodput") or {}
    if ga.get("slo") and ga.get("slo") == gb.get("slo") and all(
            isinstance(g.get(k), int) for g in (ga, gb) for k in ("good", "of")):
        row = _rate_row("goodput fraction", ga["good"], ga["of"], gb["good"], gb["of"], seed=101)
        if row:
            out.append(row)
        if _number(ga.get("requests_per_s")) and _number(gb.get("requests_per_s")):
            out.append(_plain_row("goodput requests_per_s", ga["requests_per_s"], gb["requests_per_s"]))
    return out


def goodput_note(a_dir: Path, b_dir: Path) -> str | None:
    """Why there are no goodput rows, when one or both runs had SLOs; None otherwise."""
    ga, gb = _summary(a_dir).get("goodput") or {}, _summary(b_dir).get("goodput") or {}
    if not ga.get("slo") and not gb.get("slo"):
        return None
    if ga.get("slo") == gb.get("slo"):
        return None
    return f"no goodput rows: the runs had different SLOs (A {ga.get('slo') or 'none'}, B {gb.get('slo') or 'none'})"
