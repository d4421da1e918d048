"""`kimi-deploy bench diff A B`: two result directories side by side, with bootstrap confidence
intervals on the difference of each metric's mean and median, saying which differences are real
(the 95 % interval excludes zero) and which are noise."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..stats import percentile
from .metrics import RequestRecord

METRICS = ("ttft", "ttfat", "tpot", "e2e")


def _load(d: Path) -> list[RequestRecord]:
    p = d / "requests.jsonl"
    if not p.is_file():
        raise BadInput("no requests.jsonl (not a bench result directory)", str(d))
    rows, n = [], 0
    try:
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if line.strip():
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise BadInput(f"line {n} is not a JSON object (not a bench requests.jsonl)", str(p))
                rows.append(RequestRecord.from_json(obj))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"line {n} is not JSON ({exc.__class__.__name__}); not a bench requests.jsonl", str(p)) from None
    except TypeError as exc:
        raise BadInput(f"line {n} does not have the fields of a bench request ({exc})", str(p)) from None
    for r in rows:
        for key in METRICS:
            value = getattr(r, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise BadInput(f"request {r.index}: {key} is {value!r}, not a number", str(p))
        if not isinstance(r.itl, list) or not all(isinstance(x, (int, float)) for x in r.itl):
            raise BadInput(f"request {r.index}: itl is not a list of numbers", str(p))
    return [r for r in rows if r.ok and not r.warmup and not r.incomplete]


def _throughput(d: Path) -> dict[str, float]:
    """summary.json's throughput numbers, or bad input naming the file."""
    p = d / "summary.json"
    if not p.is_file():
        raise BadInput("no summary.json (not a bench result directory)", str(d))
    try:
        t = json.loads(p.read_text())["throughput"]
        values = {k: t[k] for k in ("requests_per_s", "output_tokens_per_s")}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadInput("is not JSON (not a bench summary.json)", str(p)) from None
    except (KeyError, TypeError):
        raise BadInput("has no throughput.requests_per_s / output_tokens_per_s (not a bench summary.json)",
                       str(p)) from None
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadInput(f"throughput.{k} is {v!r}, not a number", str(p))
    return values


def _median(v: list[float]) -> float:
    return percentile(v, 50)


def bootstrap(a: list[float], b: list[float], stat, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(observed stat(b) - stat(a), 2.5 %, 97.5 %) by resampling each side with replacement."""
    rng = random.Random(seed)
    diffs = []
    for _ in range(n):
        ra = [a[rng.randrange(len(a))] for _ in a]
        rb = [b[rng.randrange(len(b))] for _ in b]
        diffs.append(stat(rb) - stat(ra))
    diffs.sort()
    return stat(b) - stat(a), diffs[int(0.025 * n)], diffs[int(0.975 * n) - 1]


def diff(a_dir: Path, b_dir: Path) -> list[dict[str, Any]]:
    a, b = _load(a_dir), _load(b_dir)
    sa, sb = _throughput(a_dir), _throughput(b_dir)
    out = []
    for key in METRICS + ("itl",):
        if key == "itl":
            va = [x for r in a for x in r.itl][:20000]
            vb = [x for r in b for x in r.itl][:20000]
        else:
            va = [getattr(r, key) for r in a if getattr(r, key) is not None]
            vb = [getattr(r, key) for r in b if getattr(r, key) is not None]
        if len(va) < 2 or len(vb) < 2:
            continue
        for name, stat in (("mean", lambda v: sum(v) / len(v)), ("p50", _median)):
            d, lo, hi = bootstrap(va, vb, stat, n=500 if key == "itl" else 2000)
            base = stat(va)
            out.append({"metric": f"{key} {name} (ms)", "a": round(base, 3), "b": round(stat(vb), 3),
                        "delta": round(d, 3), "delta_pct": round(100 * d / base, 2) if base else None,
                        "ci95": [round(lo, 3), round(hi, 3)], "real": lo > 0 or hi < 0})
    for k in ("requests_per_s", "output_tokens_per_s"):
        out.append({"metric": k, "a": sa[k], "b": sb[k], "delta": round(sb[k] - sa[k], 4),
                    "delta_pct": round(100 * (sb[k] - sa[k]) / sa[k], 2) if sa[k] else None, "ci95": None,
                    "real": None})
    return out
