"""The one percentile definition of the project (bench metrics, the live table, sweeps, `bench diff`,
compare's length statistics): linear interpolation between the closest ranks, Hyndman & Fan's type 7,
the default of numpy.percentile (method="linear") and of vLLM's benchmark (numpy), so our p99 means what
theirs means."""

from __future__ import annotations

import math
from typing import Iterable, Sequence


def percentile(values: Sequence[float], q: float, *, presorted: bool = False) -> float:
    """The q-th percentile (0 <= q <= 100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within [0, 100], got {q}")
    v = values if presorted else sorted(values)
    k = (len(v) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return float(v[lo])
    a, b, t = v[lo], v[hi], k - lo
    # numpy's _lerp form (stable near both ends), so the results agree to rounding
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)


def summary(values: Iterable[float], digits: int = 3) -> dict[str, float | None]:
    """mean, p50, p90, p99, max and n; None for every statistic of an empty list."""
    v = sorted(values)
    if not v:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None, "n": 0}
    return {"mean": round(math.fsum(v) / len(v), digits),
            **{f"p{q}": round(percentile(v, q, presorted=True), digits) for q in (50, 90, 99)},
            "max": round(v[-1], digits), "n": len(v)}
