"""`kimi-deploy bench merge OUT DIR...`: the shards of one sharded run (`bench --shard I/N`) as one
result, computed from every raw record: the union of the shards' requests.jsonl (exact percentiles of
all requests, one throughput window over the union on a common clock), the clients' self-checks
combined, the server's counters from the earliest scrape before to the latest after. Shards of
different runs, a missing or repeated shard, and a clock skew larger than the client's own schedule-lag
bound are refused or flagged, never merged silently."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInput, OperationFailed
from ..outputs import check_output_dir
from .metrics import MAX_SCHEDULE_LAG_P99_MS, ClientLoad, RequestRecord, read_records, summarize
from .shard import LOCAL_FIELDS

POLL_S = 1.0


def _wait_for(dirs: list[Path], wait_s: float | None, log: Callable[[str], None]) -> None:
    """Every directory's summary.json, waited for at most wait_s (a shard still running writes it last)."""
    deadline = time.monotonic() + (wait_s or 0.0)
    said = 0.0
    while True:
        missing = [d for d in dirs if not (d / "summary.json").is_file()]
        if not missing:
            return
        if wait_s is None:
            raise BadInput("no summary.json (not a finished bench result)", str(missing[0]))
        now = time.monotonic()
        if now >= deadline:
            raise OperationFailed(f"{len(missing)} of {len(dirs)} shards had no summary.json after {wait_s:g} s "
                                  f"(--wait): {', '.join(map(str, missing[:10]))}")
        if now - said >= 30:
            log(f"merge: waiting for {len(missing)} of {len(dirs)} shards ({deadline - now:.0f} s left)")
            said = now
        time.sleep(POLL_S)


def _summary(d: Path) -> dict[str, Any]:
    p = d / "summary.json"
    try:
        s = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadInput("is not JSON (not a bench summary.json)", str(p)) from None
    if not isinstance(s, dict) or not isinstance(s.get("config"), dict):
        raise BadInput("has no config (not a bench summary.json)", str(p))
    part = s.get("shard")
    if not isinstance(part, dict) or not {"index", "count", "run"} <= part.keys():
        raise BadInput("is not a shard's result (run with --shard I/N); nothing to merge", str(p))
    shape = {"shard.index": part.get("index"), "shard.count": part.get("count"),
             "run.mono_to_wall": s["run"].get("mono_to_wall") if isinstance(s.get("run"), dict) else None,
             "requests.completed": (s.get("requests") or {}).get("completed"),
             "requests.failed": (s.get("requests") or {}).get("failed")}
    for key, value in shape.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInput(f"{key} is {value!r}, not a number (not a bench summary.json)", str(p))
    for key in ("client", "server"):
        if not isinstance(s.get(key), dict):
            raise BadInput(f"has no {key} block (not a bench summary.json)", str(p))
    try:
        ClientLoad.from_summary(s["client"])
    except (KeyError, TypeError):
        raise BadInput("client block lacks the self-check's numbers (not a bench summary.json)", str(p)) from None
    if not isinstance(s["client"].get("invalid_because"), list):
        raise BadInput("client.invalid_because is not a list (not a bench summary.json)", str(p))
    return s


def _shared_config(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in LOCAL_FIELDS and k not in ("interrupted", "terminated")}


def _check_same_run(summaries: list[tuple[Path, dict[str, Any]]]) -> int:
    """The shard count; bad input naming the directory for a shard of another run, or a missing or
    repeated shard."""
    (d0, s0), count = summaries[0], summaries[0][1]["shard"]["count"]
    for d, s in summaries[1:]:
        if s["shard"]["run"] != s0["shard"]["run"] or s["shard"]["count"] != count:
            a, b = _shared_config(s0["config"]), _shared_config(s["config"])
            fields = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k != "workload_facts")
            why = ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in fields[:8]) or \
                f"shard count {count} vs {s['shard']['count']}"
            raise BadInput(f"a shard of another run than {d0} ({why})", str(d))
        facts0, facts = s0["config"].get("workload_facts") or {}, s["config"].get("workload_facts") or {}
        for key in ("dataset_sha256", "rows", "first_timestamp_ms"):
            if facts0.get(key) != facts.get(key):
                raise BadInput(f"a shard of another run than {d0}: its workload's {key} is {facts.get(key)!r}, "
                               f"not {facts0.get(key)!r} (the dataset changed between the shards?)", str(d))
        start0, start = s0["shard"].get("start") or {}, s["shard"].get("start") or {}
        if abs((start0.get("common_at") or 0.0) - (start.get("common_at") or 0.0)) > 1e-3:
            raise BadInput(f"started at another time than {d0}: not the same run (each run needs its own "
                           "--barrier directory or --start-at)", str(d))
    seen: dict[int, Path] = {}
    for d, s in summaries:
        i = s["shard"]["index"]
        if i in seen:
            raise BadInput(f"shard {i} again (also {seen[i]})", str(d))
        seen[i] = d
    missing = sorted(set(range(count)) - seen.keys())
    if missing:
        raise BadInput(f"the run has {count} shards; missing: {', '.join(map(str, missing[:20]))}", "DIR")
    return count


def _server(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The server as all shards saw it: each counter from the earliest scrape before (its smallest value)
    to the latest after (its largest); the samples during the run from the shard that took them (shard 0)."""
    first = min(summaries, key=lambda s: s["shard"]["index"])["server"]
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    for s in summaries:
        for k, v in (s["server"].get("metrics_before") or {}).items():
            before[k] = min(before.get(k, v), v)
        for k, v in (s["server"].get("metrics_after") or {}).items():
            after[k] = max(after.get(k, v), v)
    return {**first, "metrics_before": before, "metrics_after": after,
            "metrics_during": first.get("metrics_during") or []}


def merge(out: Path, dirs: list[Path], *, overwrite: bool = False, wait_s: float | None = None,
          log: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Merge the shard result directories `dirs` into `out`; returns the merged summary."""
    from . import OutputLock

    if not dirs:
        raise BadInput("give the shards' result directories", "DIR")
    for d in dirs:
        if d.resolve() == out.resolve():
            raise BadInput("OUT is one of the shards' directories: merge into a directory of its own", str(out))
        if d.exists() and not d.is_dir():
            raise BadInput("is not a directory", str(d))
    _refuse_previous(out, overwrite)  # before waiting for the shards: a wrong OUT fails at once
    _wait_for(dirs, wait_s, log)
    summaries = [(d, _summary(d)) for d in dirs]
    count = _check_same_run(summaries)
    check_output_dir(out, "OUT")  # made only once the shards are known to be one run
    # held to the end, as a run holds its --output: a second merge or run into OUT is refused, and OUT is
    # checked again under it
    lock = OutputLock.acquire(out, "OUT")
    try:
        _refuse_previous(out, overwrite)
        return _write_merged(out, sorted(summaries, key=lambda ds: ds[1]["shard"]["index"]), count)
    finally:
        lock.release()


def _refuse_previous(out: Path, overwrite: bool) -> None:
    from . import RESULT_FILES

    previous = [n for n in RESULT_FILES if (out / n).exists()]
    if previous and not overwrite:
        raise BadInput(f"holds a previous result ({', '.join(previous)}); give another OUT, or --overwrite",
                       str(out))


def _write_merged(out: Path, summaries: list[tuple[Path, dict[str, Any]]], count: int) -> dict[str, Any]:
    """The merged requests.jsonl, summary and report in `out`, from the shards' (dir, summary) in shard
    order; returns the summary."""
    from . import run_facts, write_results

    # every shard's monotonic timestamps on the common clock: its wall clock, plus its measured offset
    rows: list[tuple[int, RequestRecord]] = []
    offsets, uncertainties, shards = [], [], []
    owner: dict[int, int] = {}
    for d, s in summaries:
        part = s["shard"]
        start = part.get("start") or {}
        offset = start.get("offset_s")
        if offset is not None:
            offsets.append(offset)
            uncertainties.append(start.get("uncertainty_s") or 0.0)
        shift = s["run"]["mono_to_wall"] + (offset or 0.0)
        for r in read_records(d / "requests.jsonl"):
            if r.index in owner:
                raise BadInput(f"request {r.index} is also in shard {owner[r.index]}'s results: the shards "
                               "overlap (the same --shard twice?)", str(d))
            owner[r.index] = part["index"]
            if r.t_send is not None:
                r.t_send += shift
            if r.t_end is not None:
                r.t_end += shift
            rows.append((part["index"], r))
        shards.append({"index": part["index"], "dir": str(d), "host": (s.get("run") or {}).get("host"),
                       "start": start or None, "completed": s["requests"]["completed"],
                       "failed": s["requests"]["failed"], "client_valid": s["client"]["valid"]})
    rows.sort(key=lambda ir: ir[1].index)
    measured = [r for _, r in rows if not r.warmup]
    config0 = summaries[0][1]["config"]
    load = ClientLoad.combined([ClientLoad.from_summary(s["client"]) for _, s in summaries])
    merged = summarize(measured, load, config0.get("slo") or {})
    merged["requests"]["not_sent"] = sum(s["requests"].get("not_sent", 0) for _, s in summaries)

    skew = max(offsets) - min(offsets) if len(offsets) == count and offsets else None
    slack = max(uncertainties, default=0.0)
    clock = {"skew_ms": None if skew is None else round(skew * 1000, 3),
             "offset_uncertainty_ms": round(slack * 1000, 3),
             "source": (summaries[0][1]["shard"].get("start") or {}).get("source"),
             "rule": f"skew = the spread of the shards' measured clock offsets; above {MAX_SCHEDULE_LAG_P99_MS:g} ms "
                     "(the client's schedule-lag bound) the shards' schedules were not one schedule"}
    client = merged["client"]
    for _, s in summaries:  # a shard's own reasons stand (its lag, its CPU), named by shard
        for why in s["client"]["invalid_because"]:
            client["invalid_because"].append(f"shard {s['shard']['index']}: {why}")
    if skew is None:
        clock["note"] = "offsets not measured (--start-at): the shards' wall clocks are trusted to agree"
    elif skew * 1000 - slack * 1000 > MAX_SCHEDULE_LAG_P99_MS:
        client["invalid_because"].append(
            f"clock skew between shards {skew * 1000:.1f} ms > {MAX_SCHEDULE_LAG_P99_MS:g} ms: one shard's requests "
            "went out that much off the others' schedule")
    for _, s in summaries:  # a shard cut short (Ctrl-C, SIGTERM): the merge is not the run's whole load
        if s["config"].get("interrupted"):
            client["invalid_because"].append(
                f"shard {s['shard']['index']} was {'terminated' if s['config'].get('terminated') else 'interrupted'}"
                f" ({s['requests'].get('not_sent', 0)} of its requests not sent): the merge holds part of the run")
    client["invalid_because"] = list(dict.fromkeys(client["invalid_because"]))
    client["valid"] = not client["invalid_because"]

    config = {**_shared_config(config0), "shard": None, "shards": count, "output": str(out),
              "interrupted": any(s["config"].get("interrupted") for _, s in summaries)}
    if any(s["config"].get("terminated") for _, s in summaries):
        config["terminated"] = True
    summary = {"definitions": {**summaries[0][1].get("definitions", {}),
                               "merged": "t_send and t_end of requests.jsonl are on the common clock (seconds since "
                                         "the epoch); every statistic is computed from the union of the shards' "
                                         "records"},
               # who merged, where and when; each shard's own run facts stay in its summary.json
               "run": {**run_facts(time.time()), "mono_to_wall": 0.0,  # t_send, t_end: wall clock
                       "shards_started_utc": (summaries[0][1].get("run") or {}).get("started_utc")},
               "config": config, "server": _server([s for _, s in summaries]), **merged,
               "clock": clock, "shards": shards}
    with (out / "requests.jsonl").open("w") as fh:
        for index, r in rows:
            fh.write(json.dumps({**r.to_json(), "shard": index}) + "\n")
    write_results(summary, measured, out)
    return summary
