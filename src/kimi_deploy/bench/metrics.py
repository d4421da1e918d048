"""Metrics, each defined by where it starts and stops (the definitions travel inside summary.json), and
the summary of a run: latency distributions, throughput over a stated window, server vs client token
counts, goodput under SLOs with failures in the denominator, and the client's own validity checks."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..jsonl import read_jsonl
from ..stats import summary
from .loadgen import FD_EXHAUSTED, RequestOutput, WorkerStats

DEFINITIONS = {
    "ttft": "t_send -> first streamed chunk carrying any token (answer content, reasoning or tool-call delta); "
            "role-only chunks do not count",
    "ttfat": "t_send -> first chunk with non-empty answer content (excludes reasoning and tool calls)",
    "ttftc": "t_send -> first chunk with a tool-call delta",
    "itl": "gap between consecutive token-bearing chunks of one request (per chunk, all requests pooled)",
    "tpot": "per request (e2e - ttft) / (output_tokens - 1), output_tokens from server usage "
            "(client count when the server sent none)",
    "e2e": "t_send -> end of the stream ([DONE] or last byte)",
    "schedule_lag": "t_send - t_sched: how late the client sent relative to its arrival schedule (open loop) or "
                    "to the moment a user became free (closed loop)",
    "loop_lag": "overshoot of a 50 ms asyncio sleep in each worker: time the event loop was too busy to run",
    "window": "throughput window: first measured t_send -> last measured completion (warm-up excluded)",
    "goodput": "requests meeting every SLO / all measured requests (failures count as misses) per second of window",
    "incomplete": "requests still in flight at the --duration deadline: cancelled there, counted neither as "
                  "completed nor as failed, left out of every statistic",
    "prefix_cache_engine": "the engine's prefix-cache hit rate over the run, in prompt tokens, from its /metrics "
                           "scraped before and after (vLLM: prefix_cache_hits / prefix_cache_queries; SGLang: "
                           "cached_tokens / prompt_tokens), warm-up included",
    "prefix_cache_ideal": "trace workload: the share of prompt tokens (or 512-token blocks) whose whole chain of "
                          "hash ids up to that block was in an earlier request of the replayed rows, i.e. the hit "
                          "rate of an unbounded prefix cache; warm-up rows included",
    "cpu_us_per_chunk": "CPU time (user + system) of the client's worker processes / token-bearing chunks received "
                        "(measured requests; parsing runs in the parent process and is not included)",
    "tool_call_errors": "requests whose streamed tool-call deltas broke OpenAI's streaming contract (a name sent "
                        "again, an id that changed, a delta without an index; kimi_deploy/toolcalls.py): counted "
                        "here and listed in the request's record, its latencies still measured",
    "output_tokens_client": "tokens of the streamed text (answer + reasoning + tool-call arguments) counted by the "
                            "server's /tokenize when it has one, else by whitespace",
}

# Above these the client itself may have distorted the numbers: the run is marked invalid.
MAX_SCHEDULE_LAG_P99_MS = 50.0
MAX_LOOP_LAG_P99_MS = 20.0
MAX_WORKER_CPU = 0.90


@dataclass(slots=True, kw_only=True)
class RequestRecord:
    """The metrics of one request in milliseconds: one line of requests.jsonl (field names are the file's
    format), and what the summary, the plots and `bench diff` read."""

    index: int
    warmup: bool = False
    ok: bool = True
    incomplete: bool = False  # cut at the --duration deadline: neither completed nor failed
    session: int | None = None
    turn: int | None = None
    error: str | None = None
    ttft: float | None = None
    ttfat: float | None = None
    ttftc: float | None = None
    e2e: float | None = None
    schedule_lag: float | None = None
    itl: list[float] = field(default_factory=list)
    output_tokens_server: int | None = None
    output_tokens_client: int | None = None
    reasoning_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    t_send: float | None = None
    t_end: float | None = None
    tpot: float | None = None
    # streamed tool-call deltas that broke OpenAI's contract (kimi_deploy/toolcalls.py): a name sent again,
    # an id that changed, a delta without an index; the latencies still count, the calls are suspect
    tool_call_errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> RequestRecord:
        return cls(**{f.name: row[f.name] for f in fields(cls) if f.name in row})


# The timings of a record that must be numbers when present (milliseconds, or seconds for t_send/t_end).
NUMERIC_FIELDS = ("ttft", "ttfat", "ttftc", "e2e", "tpot", "schedule_lag", "t_send", "t_end")


def read_records(path: Path) -> list[RequestRecord]:
    """Every row of a requests.jsonl (bench diff, bench export, bench merge read it), checked: bad input
    naming the file for a file that is missing or not JSON Lines, a line that is not a request record, or a
    timing that is not a number."""
    if not path.is_file():
        raise BadInput("no requests.jsonl (not a bench result directory)", str(path.parent))
    rows = []
    for n, obj in read_jsonl(path):
        if not isinstance(obj, dict) or "index" not in obj:
            raise BadInput(f"line {n} is not a request record (a JSON object with an index)", str(path))
        try:
            r = RequestRecord.from_json(obj)
        except TypeError as exc:
            raise BadInput(f"line {n} does not have the fields of a bench request ({exc})", str(path)) from None
        for key in NUMERIC_FIELDS:
            v = getattr(r, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise BadInput(f"line {n}: {key} is {v!r}, not a number", str(path))
        if not isinstance(r.itl, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                  for x in r.itl):
            raise BadInput(f"line {n}: itl is not a list of numbers", str(path))
        rows.append(r)
    return rows


def per_request(out: RequestOutput, output_tokens_client: int | None = None) -> RequestRecord:
    """Millisecond metrics of one measured request."""
    def ms(a: float | None, b: float | None) -> float | None:
        return round((b - a) * 1000, 3) if a is not None and b is not None else None

    out.settle()
    chunks = out.chunks
    usage = out.usage or {}
    out_server = usage.get("completion_tokens")
    details = usage.get("completion_tokens_details") or {}
    out_tokens = out_server if out_server is not None else output_tokens_client
    m = RequestRecord(
        index=out.index, warmup=out.warmup, ok=out.ok, incomplete=out.incomplete, session=out.session, turn=out.turn, error=out.error,
        ttft=ms(out.t_send, out.t_first), ttfat=ms(out.t_send, out.t_first_answer),
        ttftc=ms(out.t_send, out.t_first_tool), e2e=ms(out.t_send, out.t_end),
        schedule_lag=ms(out.t_sched, out.t_send),
        itl=[round((b - a) * 1000, 3) for a, b in zip(chunks, chunks[1:])],
        output_tokens_server=out_server, output_tokens_client=output_tokens_client,
        reasoning_tokens=details.get("reasoning_tokens"), prompt_tokens=usage.get("prompt_tokens"),
        finish_reason=out.finish_reason, t_send=out.t_send, t_end=out.t_end,
        tool_call_errors=list(out.tool_call_errors),
    )
    if m.ok and m.ttft is not None and m.e2e is not None and out_tokens and out_tokens > 1:
        m.tpot = round((m.e2e - m.ttft) / (out_tokens - 1), 3)
    return m


def _meets(m: RequestRecord, slo: dict[str, float]) -> bool:
    if not m.ok:
        return False
    for name, bound in slo.items():
        key = name.removesuffix("_ms")
        value = max(m.itl) if key == "itl" and m.itl else getattr(m, key)
        if value is None or value > bound:
            return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientLoad:
    """The client's own load over a run, what its self-check reads: the event-loop lag p99 of its workers,
    the busiest worker's share of a core, their CPU seconds and how many there were."""

    loop_lag_p99_ms: float
    cpu_max: float
    cpu_s: float
    workers: int

    @classmethod
    def of(cls, workers: list[WorkerStats]) -> ClientLoad:
        loop = [x * 1000 for w in workers for x in w.loop_lag]
        return cls(loop_lag_p99_ms=summary(loop)["p99"] or 0.0, cpu_max=max((w.cpu for w in workers), default=0.0),
                   cpu_s=sum(w.cpu_s for w in workers), workers=len(workers))

    @classmethod
    def from_summary(cls, client: dict[str, Any]) -> ClientLoad:
        """From a summary.json's `client` block."""
        return cls(loop_lag_p99_ms=client["loop_lag_ms_p99"], cpu_max=client["worker_cpu_max"],
                   cpu_s=client["cpu_s"], workers=client["workers"])

    @classmethod
    def combined(cls, loads: list[ClientLoad]) -> ClientLoad:
        """Several clients' (the shards of a run): the worst lag p99 and busiest worker of any shard (the
        raw lag samples stay with each shard, so the p99 of their union is bounded from above, not
        computed), CPU seconds and workers summed."""
        return cls(loop_lag_p99_ms=max((x.loop_lag_p99_ms for x in loads), default=0.0),
                   cpu_max=max((x.cpu_max for x in loads), default=0.0), cpu_s=sum(x.cpu_s for x in loads),
                   workers=sum(x.workers for x in loads))


def summarize(measured: list[RequestRecord], workers: list[WorkerStats] | ClientLoad,
              slo: dict[str, float]) -> dict[str, Any]:
    load = workers if isinstance(workers, ClientLoad) else ClientLoad.of(workers)
    incomplete = sum(1 for m in measured if m.incomplete)
    measured = [m for m in measured if not m.incomplete]
    ok = [m for m in measured if m.ok]
    window = 0.0
    if measured:
        start = min(m.t_send for m in measured if m.t_send is not None)
        end = max(m.t_end for m in measured if m.t_end is not None)
        window = max(end - start, 1e-9)
    out_server = sum(m.output_tokens_server or 0 for m in ok)
    out_client = sum(m.output_tokens_client or 0 for m in ok)
    prompt = sum(m.prompt_tokens or 0 for m in ok)
    out_tokens = out_server if any(m.output_tokens_server is not None for m in ok) else out_client
    good = sum(1 for m in measured if _meets(m, slo)) if slo else None
    lag = [m.schedule_lag for m in measured if m.schedule_lag is not None]
    lag_p99 = summary(lag)["p99"] or 0.0
    loop_p99 = load.loop_lag_p99_ms
    cpu_max = load.cpu_max
    # the workers' CPU per token-bearing chunk received (warm-up chunks are not counted: an upper bound)
    chunks = sum(len(m.itl) + 1 for m in measured if m.ttft is not None)
    cpu_per_chunk = load.cpu_s / chunks * 1e6 if chunks and load.workers else None
    reasons = []
    # Lag with the workers mostly idle means other processes held the cores (the client was starved,
    # not busy: a server sharing the machine, say); either way a timestamp may be late by the lag.
    cause = (f"; the client's workers used at most {cpu_max:.0%} of a core, so other processes on this "
             f"machine held the cores (a server sharing them?)" if cpu_max < 0.5 else
             f"; a client worker used {cpu_max:.0%} of a core")
    if lag_p99 > MAX_SCHEDULE_LAG_P99_MS:
        reasons.append(f"schedule lag p99 {lag_p99:.1f} ms > {MAX_SCHEDULE_LAG_P99_MS} ms: requests were sent "
                       f"late{cause}")
    if loop_p99 > MAX_LOOP_LAG_P99_MS:
        reasons.append(f"event-loop lag p99 {loop_p99:.1f} ms > {MAX_LOOP_LAG_P99_MS} ms: a chunk's timestamp "
                       f"may be late by that much{cause}")
    if cpu_max > MAX_WORKER_CPU:
        reasons.append(f"a client worker used {cpu_max:.0%} of a core (> {MAX_WORKER_CPU:.0%})")
    errors: dict[str, int] = {}
    for m in measured:
        if not m.ok:
            key = (m.error or "error").split(":")[0]
            errors[key] = errors.get(key, 0) + 1
    if errors.get(FD_EXHAUSTED):
        # these requests never reached the server: its numbers would be the client's doing
        reasons.append(f"{errors[FD_EXHAUSTED]} request(s) failed with {FD_EXHAUSTED}: this client ran out of file "
                       "descriptors (EMFILE/ENFILE), so they never reached the server; raise the limit (`ulimit -n`), "
                       "add --workers (the limit is per process) or lower the load")
    disagreement = None
    if out_server and out_client:
        disagreement = round((out_client - out_server) / out_server, 4)
    return {
        "requests": {"completed": len(ok), "failed": len(measured) - len(ok), "incomplete": incomplete,
                     "errors": errors, "tool_call_errors": sum(1 for m in measured if m.tool_call_errors)},
        "latency_ms": {k: summary([getattr(m, k) for m in ok if getattr(m, k) is not None]) for k in ("ttft", "ttfat", "ttftc", "tpot", "e2e")}
        | {"itl": summary([x for m in ok for x in m.itl])},
        "throughput": {"window_s": round(window, 3), "requests_per_s": round(len(ok) / window, 4) if window else 0.0,
                       "output_tokens_per_s": round(out_tokens / window, 2) if window else 0.0,
                       "total_tokens_per_s": round((out_tokens + prompt) / window, 2) if window else 0.0},
        "tokens": {"output_server": out_server, "output_client": out_client, "prompt": prompt,
                   "reasoning": sum(m.reasoning_tokens or 0 for m in ok),
                   "client_vs_server": disagreement},
        "goodput": {"slo": slo, "good": good, "of": len(measured),
                    "fraction": round(good / len(measured), 4) if slo and measured else None,
                    "requests_per_s": round(good / window, 4) if slo and window else None},
        "client": {"schedule_lag_ms_p99": round(lag_p99, 3), "loop_lag_ms_p99": round(loop_p99, 3),
                   "worker_cpu_max": round(cpu_max, 3), "workers": load.workers, "cpu_s": round(load.cpu_s, 3),
                   "cpu_us_per_chunk": round(cpu_per_chunk, 2) if cpu_per_chunk is not None else None, "valid": not reasons,
                   "invalid_because": reasons},
    }
