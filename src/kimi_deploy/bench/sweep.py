"""Sweeps: the same workload at several concurrency levels or rates, each a full run in its own
directory (`concurrency-4`, `rate-0.5`), summarised in sweep.json and sweep.png.

`auto` searches: without an SLO it doubles the load until throughput stops growing (saturation); with
`--slo` it doubles until a load fails the SLO, then bisects between the last load that met it and the
first that did not. A point the client could not measure (summary.json's client.valid false: INVALID)
says nothing about the server: it is flagged, left out of every verdict, and stops a search.

A sweep resumes: a level whose directory holds a finished run of the same configuration (summary.json's
config, the load apart) is kept; an interrupted one is run again; a run of another configuration, or a
sweep.json of another sweep, is refused unless --overwrite (which runs every level again).

The decisions (`level_state`, `next_load`, `verdict`) are pure functions of the points and files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console

from ..errors import BadInput
from ..outputs import check_output_dir
from .report import sweep_plot

GROWTH = 0.10  # less than this much more throughput for the next (doubled) load: saturated
# A load meets the SLO when at least this share of its requests does (goodput fraction; failures count as
# misses). 0.95 is 1 request in 20: a per-level run of the default 100 requests measures it with 5 misses
# to spare, where a p99-style target (0.99) would hinge on a single request.
SLO_FRACTION = 0.95
PRECISION = 0.10  # the SLO bisection stops when the last passing and first failing loads are this close
MAX_BISECT = 8  # and after this many bisection steps at most
MAX_LOAD = 1024  # the auto search's highest load
# summary.json config fields that are not part of a level's configuration (the load is compared apart)
NOT_CONFIG = ("output", "overwrite", "workload_facts", "interrupted", "terminated", "workers")
LOAD_FIELDS = ("concurrency", "rate")


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
    if mode == "concurrency" and any(v != int(v) for v in vals):
        raise BadInput("concurrency levels are whole numbers of users", "--sweep")
    return mode, vals


def _load(mode: str, value: float) -> float | int:
    return int(value) if mode == "concurrency" else float(value)


def level_name(mode: str, load: float) -> str:
    """The directory of one level: concurrency-4, rate-0.5."""
    return f"{mode}-{int(load)}" if mode == "concurrency" else f"{mode}-{load:g}"


def first_load(spec: str) -> dict[str, float | int]:
    """The load of the sweep's first point as BenchConfig fields: a sweep's config carries one (every run
    needs a load mode), and each point replaces it."""
    mode, values = parse(spec)
    return {mode: _load(mode, 1.0 if values is None else values[0])}


def requests_at(mode: str, load: float, num_requests: int, given: bool) -> int:
    """Measured requests at one level: exactly --num-requests when given; else the default, raised at a
    concurrency level to two per user (every user busy for a couple of rounds)."""
    if given or mode != "concurrency":
        return num_requests
    return max(num_requests, int(load) * 2)


# --- decisions on disk -------------------------------------------------------------------------------

def _config(facts: dict[str, Any]) -> dict[str, Any]:
    """A run's configuration as summary.json holds it (through JSON: tuples are lists), the load's
    neighbours in NOT_CONFIG left out."""
    return {k: v for k, v in json.loads(json.dumps(facts)).items() if k not in NOT_CONFIG}


def level_state(level_dir: Path, expected: dict[str, Any]) -> tuple[str, str]:
    """What a level's directory holds, against `expected` (the level's BenchConfig.facts()):
    ("new", ""), ("finished", ""), ("interrupted", why) or ("different", which fields differ)."""
    summary_path = level_dir / "summary.json"
    if not summary_path.is_file():
        if (level_dir / "requests.jsonl").exists():
            return "interrupted", "requests.jsonl without summary.json"
        return "new", ""
    try:
        config = json.loads(summary_path.read_text())["config"]
        if not isinstance(config, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        return "different", "summary.json is not a bench summary"
    want, have = _config(expected), _config(config)
    diff = sorted(k for k in want.keys() | have.keys() if want.get(k, "<absent>") != have.get(k, "<absent>"))
    if diff:
        return "different", ", ".join(f"{k} {have.get(k, '<absent>')!r} (this sweep: {want.get(k, '<absent>')!r})"
                                      for k in diff[:4]) + (" ..." if len(diff) > 4 else "")
    if config.get("interrupted"):
        return "interrupted", "the run was interrupted"
    return "finished", ""


def sweep_identity(mode: str, spec: str, cfg: Any, given: bool) -> dict[str, Any]:
    """What makes two sweeps the same sweep (sweep.json's "sweep"): the mode and the configuration
    apart from the load; the list of levels may differ (a resumed sweep may add levels)."""
    config = {k: v for k, v in _config(cfg.facts()).items() if k not in LOAD_FIELDS}
    return {"spec": spec, "mode": mode, "num_requests_given": given, "config": config}


def check_sweep_dir(out: Path, identity: dict[str, Any], overwrite: bool) -> Any:
    """The sweep directory, locked for the whole sweep (bench.OutputLock: a second sweep or run into it is
    refused) and returned as the lock: bad input naming --output when another run holds it, it holds a
    single run, or a sweep.json of another sweep, unless --overwrite."""
    from . import OutputLock

    check_output_dir(out, "--output")
    lock = OutputLock.acquire(out, "--output")
    try:
        _check_sweep_files(out, identity, overwrite)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_sweep_files(out: Path, identity: dict[str, Any], overwrite: bool) -> None:
    if overwrite:
        return
    single = [n for n in ("summary.json", "requests.jsonl") if (out / n).exists()]
    if single:
        raise BadInput(f"{out} holds a single run ({', '.join(single)}), not a sweep; give another --output, or "
                       "--overwrite to sweep into it", "--output")
    path = out / "sweep.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text()).get("sweep") or {}
    except (OSError, ValueError, AttributeError):
        old = {"mode": None}
    differs = [k for k in ("mode", "num_requests_given", "config") if old.get(k) != identity[k]]
    if differs:
        raise BadInput(f"{out} holds another sweep (its sweep.json differs in {', '.join(differs)}); give "
                       "another --output, or --overwrite to run every level again", "--output")


# --- points and verdicts -----------------------------------------------------------------------------

def point(load: float, summary: dict[str, Any], *, num_requests: int, kept: bool, fraction: float) -> dict[str, Any]:
    """One row of sweep.json from a level's summary.json."""
    tpot = summary["latency_ms"]["tpot"]["mean"]
    good = summary.get("goodput") or {}
    frac = good.get("fraction")
    return {"load": load, "dir": None, "num_requests": num_requests, "kept": kept,
            "output_tokens_per_s": summary["throughput"]["output_tokens_per_s"],
            "requests_per_s": summary["throughput"]["requests_per_s"], "tpot_mean_ms": tpot,
            "ttft_p50_ms": summary["latency_ms"]["ttft"]["p50"],
            "per_user_tokens_per_s": round(1000 / tpot, 2) if tpot else 0.0,
            "goodput_fraction": frac, "goodput_requests_per_s": good.get("requests_per_s"),
            "meets_slo": None if frac is None else frac >= fraction,
            "valid": bool(summary["client"]["valid"]), "invalid_because": summary["client"].get("invalid_because", []),
            "completed": summary["requests"]["completed"], "failed": summary["requests"]["failed"]}


def saturation(points: list[dict[str, Any]]) -> float | None:
    """The lowest valid load whose double (the lowest valid load at least twice it) added less than
    GROWTH throughput; None when throughput kept growing, or no load was doubled. Loads closer than a
    doubling (a bisection's) are not compared: their difference in throughput is mostly noise."""
    valid = sorted((p for p in points if p["valid"]), key=lambda p: p["load"])
    for a in valid:
        b = next((p for p in valid if p["load"] >= 2 * a["load"]), None)
        if b is not None and \
                (b["output_tokens_per_s"] - a["output_tokens_per_s"]) / max(a["output_tokens_per_s"], 1e-9) < GROWTH:
            return a["load"]
    return None


def slo_bounds(points: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(highest valid load meeting the SLO below the lowest valid load failing it, that lowest failing load)."""
    valid = [p for p in points if p["valid"] and p["meets_slo"] is not None]
    fails = [p["load"] for p in valid if not p["meets_slo"]]
    hi = min(fails) if fails else None
    passes = [p["load"] for p in valid if p["meets_slo"] and (hi is None or p["load"] < hi)]
    return (max(passes) if passes else None), hi


def _close(mode: str, lo: float, hi: float) -> bool:
    return hi - lo <= (max(1.0, lo * PRECISION) if mode == "concurrency" else lo * PRECISION)


def next_load(points: list[dict[str, Any]], *, mode: str, slo: bool, max_load: float = MAX_LOAD) -> float | None:
    """The auto search's next load after `points` (in the order they ran); None when it is done. It
    stops at an INVALID point (the client is the limit there, the server unknown)."""
    if not points:
        return _load(mode, 1.0)
    last = points[-1]
    if not last["valid"]:
        return None
    if slo:
        lo, hi = slo_bounds(points)
        if hi is not None:
            steps = len(points) - next(i for i, p in enumerate(points) if p["load"] == hi) - 1
            if lo is None or _close(mode, lo, hi) or steps >= MAX_BISECT:
                return None
            mid = (lo + hi) / 2
            return _load(mode, math.floor(mid) if mode == "concurrency" else round(mid, 3))
    elif saturation(points) is not None:
        return None
    nxt = last["load"] * 2
    return _load(mode, nxt) if nxt <= max_load else None


def verdict(points: list[dict[str, Any]], *, mode: str, slo: dict[str, float], max_load: float,
            fraction: float = SLO_FRACTION) -> dict[str, Any]:
    """What the sweep found, in sweep.json's fields and one sentence (`text`) that never says None."""
    unit = "users" if mode == "concurrency" else "req/s"

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:g}"

    invalid = sorted(p["load"] for p in points if not p["valid"])
    client_at = invalid[0] if invalid else None
    top = max((p["load"] for p in points), default=max_load)
    sat = saturation(points)
    if sat is not None:
        sat_text = f"saturated at {fmt(sat)} {unit}"
    elif client_at is not None:
        sat_text = (f"saturation not determined: client-limited at {fmt(client_at)} {unit} (INVALID; add --workers "
                    "or client machines)")
    else:
        sat_text = f"not saturated within {fmt(top)} {unit}"
    out: dict[str, Any] = {"saturated_at": sat, "client_limited_at": client_at,
                           "rule": f"saturated: doubling the load added less than {GROWTH:.0%} throughput "
                                   "(valid points only)"}
    if not slo:
        return {**out, "text": sat_text}
    lo, hi = slo_bounds(points)
    bound = ",".join(f"{k}={v:g}" for k, v in slo.items())
    # an INVALID point between the last load that met the SLO and the first that failed it: the limit
    # lies at or above it, where the client could not measure
    blocked = client_at is not None and (lo is None or client_at > lo) and (hi is None or client_at < hi)
    if blocked:
        slo_text = (f"SLO {bound} met up to {fmt(lo)} {unit}; not determined above: "
                    f"client-limited at {fmt(client_at)} {unit}")
    elif hi is None:
        slo_text = f"SLO {bound} met at every load, up to {fmt(top)} {unit}"
    elif lo is None:
        slo_text = f"SLO {bound} not met even at {fmt(hi)} {unit}"
    else:
        slo_text = f"SLO {bound} met up to {fmt(lo)} {unit} (fails at {fmt(hi)})"
    return {**out, "slo_met_up_to": lo, "slo_fails_at": hi, "slo_fraction": fraction,
            "slo_rule": f"a load meets the SLO when at least {fraction:.0%} of its requests do (goodput fraction)",
            "text": f"{slo_text}; {sat_text}"}


# --- the sweep ---------------------------------------------------------------------------------------

def run_sweep(cfg: Any, spec: str, console: Console, *, num_requests_given: bool = True,
              max_load: float = MAX_LOAD, slo_fraction: float = SLO_FRACTION) -> dict[str, Any]:
    """Run the sweep `spec` (parse's syntax) with `cfg` (a BenchConfig whose load each level replaces);
    `num_requests_given`: cfg.num_requests is the operator's, used at every level exactly."""
    mode, values = parse(spec)
    identity = sweep_identity(mode, spec, cfg, num_requests_given)
    lock = check_sweep_dir(cfg.output, identity, cfg.overwrite)
    try:
        return _sweep(cfg, mode, values, identity, console, num_requests_given=num_requests_given,
                      max_load=max_load, slo_fraction=slo_fraction)
    finally:
        lock.release()


def _sweep(cfg: Any, mode: str, values: list | None, identity: dict[str, Any], console: Console, *,
           num_requests_given: bool, max_load: float, slo_fraction: float) -> dict[str, Any]:
    """run_sweep's levels, with the sweep directory locked."""
    from . import run_bench

    auto = values is None

    def level_cfg(load: float) -> Any:
        n = requests_at(mode, load, cfg.num_requests, num_requests_given)
        return cfg.replace(output=cfg.output / level_name(mode, load), num_requests=n,
                           concurrency=load if mode == "concurrency" else None, rate=load if mode == "rate" else None)

    def state(load: float) -> tuple[str, str]:
        sub = level_cfg(load)
        st, why = ("new", "") if cfg.overwrite else level_state(sub.output, sub.facts())
        if st == "different":
            raise BadInput(f"{sub.output} holds a run of another configuration ({why}); give another --output, "
                           "or --overwrite to run every level again", "--output")
        return st, why

    if not auto:  # refused before any level runs
        for v in values:
            state(_load(mode, v))
    points: list[dict[str, Any]] = []
    interrupted = False
    queue = [] if auto else [_load(mode, v) for v in values]
    load = next_load([], mode=mode, slo=bool(cfg.slo), max_load=max_load) if auto else queue.pop(0)
    while load is not None:
        sub = level_cfg(load)
        st, why = state(load)
        name = level_name(mode, load)
        if mode == "concurrency" and num_requests_given and sub.num_requests < 2 * load:
            console.print(f"[yellow]sweep: {name}: --num-requests {sub.num_requests} is fewer than two per user: "
                          "some users send one request or none[/yellow]")
        if st == "finished":
            console.print(f"sweep: {name}: kept (a finished run of this configuration is there)")
            s = json.loads((sub.output / "summary.json").read_text())
        else:
            if st == "interrupted":
                console.print(f"sweep: {name}: running again ({why})")
                sub = sub.replace(overwrite=True)
            else:
                console.print(f"sweep: {name}: {sub.num_requests} requests")
            s = run_bench(sub, console)
        p = point(load, s, num_requests=sub.num_requests, kept=st == "finished", fraction=slo_fraction)
        p["dir"] = name
        points.append(p)
        if not p["valid"]:
            console.print(f"[red]sweep: {name} INVALID[/red] (the client, not the server, was the limit): "
                          + "; ".join(p["invalid_because"]))
        if s["config"].get("interrupted"):
            interrupted = "terminated" if s["config"].get("terminated") else True
            break
        if auto:
            load = next_load(points, mode=mode, slo=bool(cfg.slo), max_load=max_load)
            if load is not None and any(q["load"] == load for q in points):
                load = None  # a bisection that comes back to a measured load has nothing left to halve
        else:
            load = queue.pop(0) if queue else None
    result = {"mode": mode, "sweep": identity, "slo": dict(cfg.slo), "interrupted": interrupted,
              "points": sorted(points, key=lambda p: p["load"]),
              **verdict(points, mode=mode, slo=dict(cfg.slo), max_load=max_load if auto else _load(mode, max(values)),
                        fraction=slo_fraction)}
    (cfg.output / "sweep.json").write_text(json.dumps(result, indent=2))
    sweep_plot(result["points"], cfg.output, title=result["text"], slo_fraction=slo_fraction if cfg.slo else None,
               xlabel="concurrency (users)" if mode == "concurrency" else "rate (requests/s)")
    return result
