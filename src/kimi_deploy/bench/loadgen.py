"""The load generator: a precomputed arrival schedule executed by several worker processes (each an
asyncio loop with one pool of keep-alive connections, stream.Pool), so the client is never the
bottleneck, and measures itself to prove it (schedule lag, event-loop lag, CPU per worker).

Timing points of every streamed request (all on CLOCK_MONOTONIC, shared by the processes):
t_sched (when the schedule or a free user said "send"), t_send (just before the HTTP request is
written), the first chunk carrying any token (content, reasoning or tool-call delta), the first answer
content, the first tool-call delta, every token-bearing chunk, and the end of the stream. Streamed tool
calls are assembled by kimi_deploy.toolcalls (compare's rule too); a delta that breaks OpenAI's streaming
contract is a tool-call error of the request (`tool_call_errors`), the request itself still measured."""

from __future__ import annotations

import asyncio
import errno
import json
import math
import multiprocessing as mp
import os
import random
import resource
import signal
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

from ..endpoint import Endpoint
from ..toolcalls import ToolCallAssembler
from .stream import Pool, Stalled, StreamProtocol, dumps

try:
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    _loads = json.loads


# The open loop builds requests ahead of their send time: at most this far ahead, at most this many bytes
# of serialised bodies, and never when the next send is closer than BUILD_SLACK_S (a long prompt takes a
# few milliseconds to build). Connections for the sends within WARM_S are opened beforehand (servers close
# idle ones after a few seconds: uvicorn's default keep-alive timeout is 5 s).
AHEAD_S = 1.0
AHEAD_BYTES = 64 * 2**20
BUILD_SLACK_S = 0.01
WARM_S = 0.5


# The error of a request that failed because this client ran out of file descriptors (EMFILE: the
# process's RLIMIT_NOFILE; ENFILE: the system's file table): it never reached the server, so it is the
# client's failure, and summary.json's error key (the text before the first colon) says so.
FD_EXHAUSTED = "too many open files (client)"
_FD_ERRNOS = (errno.EMFILE, errno.ENFILE)


def fd_exhausted(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) is EMFILE or ENFILE: by errno, or by its text where asyncio
    folded several connection attempts into one OSError without one ("Multiple exceptions: ...")."""
    texts = [os.strerror(e) for e in _FD_ERRNOS]
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FD_ERRNOS:
            return True
        if any(t in str(exc) for t in texts):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass(slots=True, kw_only=True)
class RequestInput:
    """One scheduled request (or the first turn of a session)."""

    index: int
    body: dict[str, Any]
    at: float | None = None  # seconds after the start (open loop); None for closed loop
    warmup: bool = False
    # Multi-turn session: user messages to send after each answer. A tool call is answered with a tool
    # result first (from `tool_results`, by function name); the assistant turn, reasoning_content
    # included, is carried forward as Kimi's thinking mode requires.
    followups: list[str] = field(default_factory=list)
    tool_results: dict[str, str] = field(default_factory=dict)
    payload: bytes | None = None  # the body as sent (`encode`), when serialised ahead of its send time


def encode(body: dict[str, Any]) -> bytes:
    """The JSON bytes a request body is sent as: streamed unless it says otherwise, and then with the
    usage in the stream."""
    out = dict(body)
    out["stream"] = stream = body.get("stream", True)
    if stream:
        out.setdefault("stream_options", {"include_usage": True})
    return dumps(out)


@dataclass(slots=True, kw_only=True)
class RequestOutput:
    """What the client measured for one request: CLOCK_MONOTONIC timestamps (None when the moment never
    came), the chunk times, the server's usage and the streamed text. metrics.per_request turns it into
    the RequestRecord written to requests.jsonl."""

    index: int
    warmup: bool = False
    session: int | None = None
    turn: int | None = None
    t_sched: float = 0.0
    t_send: float | None = None
    t_first: float | None = None  # first chunk carrying any token
    t_first_answer: float | None = None  # first answer content
    t_first_tool: float | None = None  # first tool-call delta
    t_end: float | None = None
    chunks: list[float] = field(default_factory=list)  # every token-bearing chunk
    status: int | None = None
    error: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    content: str = ""
    reasoning: str = ""
    tool_text: str = ""  # tool names and argument deltas, for the client-side token count
    calls: list[dict[str, Any]] = field(default_factory=list)  # {id, name, arguments} per tool call
    tool_call_errors: list[str] = field(default_factory=list)  # streamed tool-call faults (toolcalls.py)
    incomplete: bool = False  # still in flight at the --duration deadline: cancelled, neither ok nor failed
    # The stream as read (times of the reads, their body bytes), until settle() parses it: a worker sends
    # it unparsed so that parsing, which comes in bursts when many streams end together, runs in the
    # parent and never holds up a worker's event loop (and with it the timestamps of its other streams).
    raw: tuple[list[float], list[bytes]] | None = None

    def settle(self) -> RequestOutput:
        """Parse the raw stream into the timing points, text and error (once; a no-op after)."""
        if self.raw is not None:
            times, parts = self.raw
            self.raw = None
            parse_stream(self, times, parts)
        return self

    @property
    def ok(self) -> bool:
        self.settle()
        return self.error is None


@dataclass(slots=True)
class WorkerStats:
    """A worker process's self-check, sent once when it finishes."""

    worker: int
    loop_lag: list[float]
    cpu: float  # share of one core over the worker's run
    wall: float
    cpu_s: float = 0.0  # user + system seconds of the worker over its run


@dataclass(frozen=True, kw_only=True)
class LoadConfig:
    endpoint: Endpoint
    concurrency: int | None = None  # closed loop: this many users
    rate: float | None = None  # open loop: requests per second
    burstiness: float = 1.0  # gamma shape; 1.0 = Poisson
    ramp_up_s: float = 0.0
    duration_s: float | None = None
    max_concurrency: int | None = None  # cap for open loop (the run's, split over shards and workers)
    workers: int = 0  # 0 = one per CPU core
    request_timeout_s: float = 3600.0  # one request, first byte to [DONE]
    stall_timeout_s: float = 300.0  # no byte from the server for this long: the request failed
    seed: int = 0
    # This process's slice of a sharded run (index, count): the requests whose index is index mod count,
    # and its share of the users; the schedule is the whole run's.
    shard: tuple[int, int] = (0, 1)
    start_at: float | None = None  # wall-clock start (seconds since the epoch); None: half a second from now


@dataclass(frozen=True, kw_only=True)
class JobSource:
    """The run's requests, made one at a time when they are due, so that a run bounded by --duration
    costs nothing up front however large --num-requests is."""

    total: int
    make: Callable[[int], RequestInput]  # index -> the request (its `at` is set by the worker)
    # Absolute send times (seconds after the start, one per request, non-decreasing) when the workload
    # brings its own schedule (a replayed trace): an open loop on these instead of drawn arrivals.
    at: Sequence[float] | None = None

    def __len__(self) -> int:
        return self.total


@dataclass(frozen=True, kw_only=True)
class _Send:
    """What every request of one worker shares: where, how, how long, and the scrubber for error text."""

    url: str
    headers: dict[str, str]
    request_timeout_s: float
    stall_timeout_s: float
    deadline: float | None
    scrub: Callable[[str], str]


def arrivals(rate: float, burstiness: float, ramp_up_s: float, seed: int) -> Iterator[float]:
    """Arrival times for an open loop, lazily: gamma inter-arrivals with mean 1/rate (shape = burstiness;
    1 is Poisson), stretched at the start by a linear rate ramp."""
    rng = random.Random(seed)
    shape = burstiness
    t = 0.0
    while True:
        gap = rng.gammavariate(shape, 1.0 / (rate * shape))
        if ramp_up_s and t < ramp_up_s:
            gap /= max((t + gap / 2) / ramp_up_s, 0.05)  # lower rate early in the ramp
        t += gap
        yield t


def schedule(n: int, rate: float, burstiness: float, ramp_up_s: float, seed: int) -> list[float]:
    """The first `n` arrival times (see `arrivals`)."""
    it = arrivals(rate, burstiness, ramp_up_s, seed)
    return [next(it) for _ in range(n)]


def parse_stream(rec: RequestOutput, times: list[float], parts: list[bytes]) -> None:
    """Fill `rec` from a stream's reads (`parts[i]` arrived at `times[i]`), after the stream ended (in the
    parent process: RequestOutput.settle): every SSE `data:` line is stamped with the arrival of the read
    that completed it, as if it had been parsed the moment it came. Ends at [DONE]; a line that is not JSON ends the request as failed at its time;
    a stream that ended (or broke, or timed out) before [DONE] is failed as the reading left it."""
    # 1. the data lines and when each was complete
    at: list[float] = []
    datas: list[bytes] = []
    pending = b""
    for now, piece in zip(times, parts):
        if not pending and piece.startswith(b"data:") and piece.endswith(b"\n\n") and piece.count(b"\n") == 2:
            at.append(now)  # the usual read: one event, one line (a fast path with the same result)
            datas.append(piece[5:].strip())
            continue
        lines = (pending + piece if pending else piece).split(b"\n")
        pending = lines.pop()  # a line still waiting for its newline
        for raw in lines:
            line = raw.strip()
            if line.startswith(b"data:"):
                at.append(now)
                datas.append(line[5:].strip())
    line = pending.strip()
    # the body ended: a last line without a newline still counts, unless the reading was cut (a timeout,
    # a stall, the size bound: rec.error says which), which leaves a line cut short, not a malformed one
    if line.startswith(b"data:") and rec.error is None:
        at.append(times[-1])
        datas.append(line[5:].strip())
    # 2. up to [DONE]: each event's JSON; the first that is not JSON fails the request at its time
    done = b"[DONE]" in datas
    end = datas.index(b"[DONE]") if done else len(datas)
    objs = []
    for k in range(end):
        try:
            objs.append(_loads(datas[k]))
        except ValueError:
            # the request failed here, whatever happened to the connection after it
            rec.error, rec.incomplete, rec.t_end = f"malformed SSE data: {datas[k][:80]!r}", False, at[k]
            done = False
            break
    # 3. the timing points, text and tool calls
    content: list[str] = []
    reasoning: list[str] = []
    calls = ToolCallAssembler()
    chunks = rec.chunks
    for now, obj in zip(at, objs):
        if not isinstance(obj, dict):
            continue
        if obj.get("usage"):
            rec.usage = obj["usage"]
        for ch in obj.get("choices") or ():
            delta = ch.get("delta") or {}
            got = False
            c = delta.get("content")
            r = delta.get("reasoning_content") or delta.get("reasoning")  # endpoint.reasoning_of, inlined
            tc = delta.get("tool_calls")
            if c:
                content.append(c)
                got = True
                if rec.t_first_answer is None:
                    rec.t_first_answer = now
            if r:
                reasoning.append(r)
                got = True
            if tc:
                calls.feed(tc)
                got = True
                if rec.t_first_tool is None:
                    rec.t_first_tool = now
            if got:
                if rec.t_first is None:
                    rec.t_first = now
                chunks.append(now)
            if ch.get("finish_reason"):
                rec.finish_reason = ch["finish_reason"]
    if done:
        # complete when [DONE] arrived, also when waiting for the body's end broke afterwards (a server
        # that holds the connection open)
        rec.error, rec.incomplete, rec.t_end = None, False, at[end]
    elif rec.error is None:
        rec.error = "stream ended without [DONE] (dropped mid-stream)"
    rec.calls, rec.tool_call_errors = calls.calls(), calls.faults
    rec.content, rec.reasoning = "".join(content), "".join(reasoning)
    rec.tool_text = "".join(c["name"] + c["arguments"] for c in rec.calls)


async def _one(pool: Pool, send: _Send, job: RequestInput, t_sched: float) -> RequestOutput:
    """Send one streamed request and time it. Never retried (endpoint.NO_RETRY): a retry would hide the
    failure and its latency. Every failure becomes an error string on the output, never an exception.
    Bounded by the request timeout (total), the stall timeout (no byte for that long; the stall
    watch of the pool) and the run's --duration deadline, whichever comes first; a request cut by the
    deadline is `incomplete`, not failed."""
    rec = RequestOutput(index=job.index, warmup=job.warmup, t_sched=t_sched)
    stream = job.body.get("stream", True)
    payload = job.payload if job.payload is not None else encode(job.body)
    # The hot path (stream.StreamProtocol) keeps, per read from the socket, a timestamp and the bytes:
    # parsing (SSE lines, JSON) waits until the stream has ended, so it never delays the timestamps of
    # the other streams.
    times: list[float] = []
    parts: list[bytes] = []
    streamed = False
    proto: StreamProtocol | None = None

    async def exchange() -> None:
        nonlocal proto, streamed, times, parts
        proto = await pool.acquire()
        proto.send(request)
        times, parts = proto.times, proto.parts
        await proto.head
        rec.status = proto.status
        if proto.status != 200:
            await proto.end
            rec.error = f"HTTP {proto.status}: {b''.join(proto.parts).decode(errors='replace')[:200]}"
            return
        ctype = proto.headers.get("content-type", "")
        if stream and not ctype.startswith("text/event-stream"):
            # e.g. a proxy's HTML login page answered with 200: not a chat endpoint at all
            rec.error = f"answered 200 with Content-Type {ctype or 'none'!r}, not an event stream " \
                        f"(not an OpenAI-compatible chat endpoint?)"
            return
        streamed = True
        await proto.end  # the body's end, or [DONE]

    rec.t_send = time.monotonic()
    limit, by_deadline = send.request_timeout_s, False
    if send.deadline is not None and send.deadline - rec.t_send < limit:
        limit, by_deadline = max(send.deadline - rec.t_send, 0.001), True
    try:
        request = pool.request(payload, send.headers)
        await asyncio.wait_for(exchange(), limit)
        rec.t_end = time.monotonic()
    except Stalled:
        rec.error = f"stalled: no byte from the server for {send.stall_timeout_s:g} s (--stall-timeout)"
    except asyncio.TimeoutError:
        if by_deadline:
            rec.error, rec.incomplete = "incomplete: still in flight at the --duration deadline", True
        else:
            rec.error = f"timeout after {send.request_timeout_s:g} s (--request-timeout)"
    except Exception as exc:  # connection refused/reset, not HTTP: a failed request, never a crash
        rec.error = f"{type(exc).__name__}: {exc}"[:300]
        if fd_exhausted(exc):
            rec.error = f"{FD_EXHAUSTED}: {rec.error}"[:300]
    finally:
        if proto is not None:
            pool.release(proto)
    if rec.t_end is None:
        rec.t_end = time.monotonic()
    if streamed:
        rec.raw = (times, parts)  # parsed by settle(), in the parent (or here for a multi-turn session)
    if rec.error:
        rec.error = send.scrub(rec.error)  # a server may echo the Authorization header in its error body
    return rec


async def run_job(pool: Pool, send: _Send, job: RequestInput, t_sched: float, out: Any) -> bool:
    """One request, or every turn of a session; each answer is put on the queue as it finishes. True when
    the --duration deadline cut the last one (its timer may fire a hair before the clock reads the
    deadline: the caller must not send again)."""
    body = job.body
    messages = list(body.get("messages", []))
    followups = list(job.followups)
    turn = 0
    while True:
        sub = replace(job, body={**body, "messages": messages}, followups=[], tool_results={},
                      payload=job.payload if turn == 0 else None)
        rec = await _one(pool, send, sub, t_sched)
        is_session = bool(job.followups or job.tool_results)
        if is_session:
            rec.settle()  # the next turn carries this answer
            rec.session, rec.turn = job.index, turn
            rec.index = job.index * 1000 + turn
        out.put(rec)
        if not is_session or not rec.ok or turn >= 8 or (send.deadline and time.monotonic() >= send.deadline):  # a session that keeps calling tools ends at 8 turns
            return rec.incomplete
        calls = rec.calls
        assistant: dict[str, Any] = {"role": "assistant", "content": rec.content}
        if rec.reasoning:
            assistant["reasoning_content"] = rec.reasoning
        if calls:
            assistant["tool_calls"] = [{"id": c["id"] or f"functions.{c['name']}:{turn}", "type": "function",
                                        "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
        messages = messages + [assistant]
        if calls:
            messages += [{"role": "tool", "tool_call_id": tc["id"], "content": job.tool_results.get(
                tc["function"]["name"], "{}")} for tc in assistant["tool_calls"]]
        elif followups:
            messages.append({"role": "user", "content": followups.pop(0)})
        else:
            return False
        turn += 1
        t_sched = time.monotonic()


async def _monitor(lags: list[float], stop: asyncio.Event, period: float = 0.05) -> None:
    while not stop.is_set():
        t = time.monotonic()
        await asyncio.sleep(period)
        lags.append(max(time.monotonic() - t - period, 0.0))


async def _worker_main(wid: int, n: int, jobs: JobSource, cfg: LoadConfig, users: int, t0: float,
                       deadline: float | None, out: Any) -> None:
    """Worker `wid` of `n` sends its share of this shard's requests (see `mine` below)."""
    send = _Send(url=cfg.endpoint.url("/v1/chat/completions"), headers=cfg.endpoint.headers(),
                 request_timeout_s=cfg.request_timeout_s, stall_timeout_s=cfg.stall_timeout_s, deadline=deadline,
                 scrub=cfg.endpoint.scrubber())
    lags: list[float] = []
    stop = asyncio.Event()
    mon = asyncio.create_task(_monitor(lags, stop))
    pool = Pool(send.url, cfg.stall_timeout_s)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    shard, shards = cfg.shard
    stride = shards * n  # request i is this worker's when i = shard + shards * (wid + n * k)
    first = shard + shards * wid
    mine = iter(range(first, jobs.total, stride))
    try:
        if cfg.rate is not None or jobs.at is not None:
            # --max-concurrency is the run's: this worker holds its share (`users`, split like users are)
            sem = asyncio.Semaphore(users) if cfg.max_concurrency else None
            in_flight: set[asyncio.Task] = set()

            async def fire(job: RequestInput, due: float) -> None:
                if sem:
                    async with sem:
                        if deadline and time.monotonic() >= deadline:
                            return  # still queued behind the cap at the deadline: never sent
                        await run_job(pool, send, job, due, out)
                else:
                    await run_job(pool, send, job, due, out)

            times = iter(jobs.at) if jobs.at is not None else arrivals(cfg.rate or 1.0, cfg.burstiness,
                                                                         cfg.ramp_up_s, cfg.seed)
            # This worker's (index, send time), in order; each request is built and serialised ahead of its
            # time (ready, at most AHEAD_S and AHEAD_BYTES ahead) while nothing is due, and the connections
            # the next WARM_S will need are opened beforehand, so that at its time a request is only written
            # (a burst of equal timestamps goes out back to back).
            schedule = ((i, at) for i, at in zip(range(jobs.total), times) if i % stride == first)
            ready: deque[tuple[float, RequestInput]] = deque()
            ready_bytes = 0
            upcoming = next(schedule, None)
            while upcoming is not None or ready:
                now = time.monotonic()
                while upcoming is not None and upcoming[1] + t0 - now < AHEAD_S and ready_bytes < AHEAD_BYTES \
                        and (not ready or ready[0][0] - now > BUILD_SLACK_S):
                    i, at = upcoming
                    if deadline and t0 + at >= deadline:
                        upcoming = None
                        break
                    job = jobs.make(i)
                    job.at, job.payload = at, encode(job.body)
                    ready.append((t0 + at, job))
                    ready_bytes += len(job.payload)
                    upcoming = next(schedule, None)
                    now = time.monotonic()
                if not ready:
                    if upcoming is not None:  # nothing to build yet: sleep until the next one is near
                        await asyncio.sleep(max(upcoming[1] + t0 - now - AHEAD_S, 0.0))
                    continue
                due = ready[0][0]
                if due > now:
                    pool.warm(sum(1 for d, _ in ready if d - now < WARM_S))
                    # wake when the next request enters the build window, if that is before the slack
                    # before this one's send; else at its send
                    build_at = math.inf if upcoming is None or ready_bytes >= AHEAD_BYTES else \
                        upcoming[1] + t0 - AHEAD_S
                    await asyncio.sleep((build_at if now < build_at < due - BUILD_SLACK_S else due) - now)
                    continue
                while ready and ready[0][0] <= now:  # everything due goes out together
                    due, job = ready.popleft()
                    ready_bytes -= len(job.payload or b"")
                    task = asyncio.create_task(fire(job, due))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                await asyncio.sleep(0)  # let them write before anything else is built
            if in_flight:
                await asyncio.gather(*in_flight)
        else:
            ramp = cfg.ramp_up_s

            async def user(u: int) -> None:
                t_ready = t0 + (ramp * u / max(users, 1) if ramp else 0.0)
                wait = t_ready - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                for i in mine:  # shared by this worker's users: each index is sent once
                    if deadline and time.monotonic() >= deadline:
                        return
                    if await run_job(pool, send, jobs.make(i), t_ready, out):
                        return  # cut by the deadline
                    t_ready = time.monotonic()
            await asyncio.gather(*(user(u) for u in range(users)))
    finally:
        pool.close()
    stop.set()
    await mon
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - wall0
    cpu_s = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    out.put(WorkerStats(wid, lags, cpu_s / wall if wall else 0.0, wall, cpu_s))


def _worker(wid: int, n: int, jobs: JobSource, cfg: LoadConfig, users: int, t0: float, deadline: float | None,
            out: Any) -> None:
    # Ctrl-C reaches the whole process group; the parent saves what finished and terminates the workers,
    # so a worker ignores it rather than dying with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handler (save, then stop) is not a worker's
    try:
        import uvloop  # optional: a faster event loop when installed

        uvloop.install()
    except ImportError:
        pass
    import gc

    gc.freeze()  # objects made so far are never collected: fewer pauses on the hot path
    asyncio.run(_worker_main(wid, n, jobs, cfg, users, t0, deadline, out))


def share(total: int, shard: tuple[int, int]) -> int:
    """How many of `total` items (requests, users) shard (index, count) takes: those whose number is index
    mod count."""
    index, count = shard
    return total // count + (1 if index < total % count else 0)


def split(total: int, cfg: LoadConfig) -> tuple[int, int | None]:
    """How start() splits this shard's `total` requests: (worker processes, this shard's users), the users
    None for an open loop without --max-concurrency (closed loop: its users; capped open loop: its share
    of the cap)."""
    users_here = share(cfg.concurrency, cfg.shard) if cfg.concurrency is not None else \
        share(cfg.max_concurrency, cfg.shard) if cfg.max_concurrency is not None else None
    n = cfg.workers or os.cpu_count() or 1
    if users_here is not None:
        n = min(n, users_here)
    return max(1, min(n, share(total, cfg.shard))), users_here


def peak_connections(total: int, cfg: LoadConfig) -> int | None:
    """The most requests one worker process has in flight at once, each on a connection of its own: its
    users, at most its requests; None for an open loop without --max-concurrency (as many as arrive while
    others are in flight: the rate times the latency, unknown before the run)."""
    n, users_here = split(total, cfg)
    if users_here is None:
        return None
    return min(-(-users_here // n), -(-share(total, cfg.shard) // n))


def start(jobs: JobSource, cfg: LoadConfig) -> tuple[list[mp.Process], Any, float]:
    """Split this shard's jobs (and users) over worker processes and start them. Returns (processes,
    queue, t0), t0 on CLOCK_MONOTONIC."""
    n, users_here = split(jobs.total, cfg)
    import aiohttp  # noqa: F401  (imported once here and inherited by the forked workers: imported in each
    # worker after the fork, it made the first sends of a trace replay ~200 ms late on a loaded 2-core machine)

    ctx = mp.get_context("fork")
    out = ctx.Queue()
    # every worker is up before the first send (half a second); a given start is on the wall clock
    t0 = time.monotonic() + (0.5 if cfg.start_at is None else cfg.start_at - time.time())
    deadline = t0 + cfg.duration_s if cfg.duration_s else None
    procs = []
    for w in range(n):
        users = 0 if users_here is None else share(users_here, (w, n))
        p = ctx.Process(target=_worker, args=(w, n, jobs, cfg, users, t0, deadline, out), daemon=True)
        p.start()
        procs.append(p)
    return procs, out, t0
