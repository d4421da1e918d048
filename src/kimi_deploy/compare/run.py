"""Send a suite to one endpoint through `openai.AsyncOpenAI`, with bounded concurrency, an optional rate
limit and the retries of endpoint.ANSWERS (backoff on 429, 5xx and dropped connections); every response is appended
to a JSONL record (keyed by a hash of the request) as it arrives, so a run is resumable and a recorded
reference can be replayed offline against any number of local deployments. What one answer may make the
client read, and what of it is recorded, is bounded (limits.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import openai

from ..endpoint import ANSWERS, Endpoint, RetryPolicy, reasoning_of
from ..errors import BadInput
from .adapters import request_kwargs
from .limits import MAX_FIELD_CHARS, AnswerTooLarge, bounded_http_client, clip_response, too_large
from .stream import Assembly, stream_answer


def request_key(suite: str, row: dict[str, Any]) -> str:
    """Endpoint-independent identity of a suite request (so one reference serves many locals). The thinking
    effort and the response_format count when a row has them (keys of rows without are what they always were)."""
    canon = {k: row.get(k) for k in ("id", "messages", "tools", "tool_choice", "thinking", "max_tokens")}
    for extra in ("thinking_effort", "response_format"):  # absent: the key rows without it always had
        if row.get(extra) is not None:
            canon[extra] = row[extra]
    blob = json.dumps({"suite": suite, **canon}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass(frozen=True, kw_only=True)
class Side:
    """One side of the comparison: a live endpoint, or a recording of one (endpoint None)."""

    name: str  # "local" or "reference"
    model: str  # the model id this endpoint knows
    endpoint: Endpoint | None = None
    recorded_url: str | None = None
    recorded_kind: str | None = None

    def facts(self) -> dict[str, Any]:
        if self.endpoint is not None:
            return {"url": self.endpoint.v1, "model": self.model, "kind": self.endpoint.kind}
        return {"url": self.recorded_url or "recorded", "model": self.model,
                "kind": self.recorded_kind or "self-hosted"}


@dataclass
class Outcome:
    id: str
    finish_reason: str | None = None
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {id, name, arguments (raw string)}
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    error: str | None = None
    status: int | None = None
    probe_content: str | None = None  # what the model wrote when re-asked with tool_choice=none
    seconds: float = 0.0
    prompt_tokens: int | None = None  # usage.prompt_tokens as the server counted it
    streamed: bool = False  # assembled from stream deltas (stream.py) rather than one response
    stream_notes: list[str] = field(default_factory=list)  # protocol oddities seen while assembling


class Store:
    """The JSONL record of one endpoint's answers to one suite."""

    def __init__(self, path: Path, suite: str, model: str, scrub: Callable[[str], str] = lambda t: t,
                 endpoint: str | None = None, *, fresh: bool = False, replay: bool = False,
                 on_write: Callable[[], None] = lambda: None) -> None:
        """`endpoint`: the URL the answers must come from; a record from another one is refused (its
        answers would be scored as this endpoint's). `fresh`: what the file holds is not read (it is being
        replaced: --overwrite). `replay`: a recording played back (--reference-file): a clipped answer is
        that row's error, where a resumed run asks it again. `on_write` is called before every write."""
        self.path, self.suite, self.model, self.scrub = path, suite, model, scrub
        self.replay, self.on_write = replay, on_write
        self.records: dict[str, dict[str, Any]] = {}
        self._newline_first = False
        if fresh or not path.is_file():
            return
        # An interrupted run can leave a half line at the end: start the next record on a line of its own.
        self._newline_first = path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BadInput("not UTF-8 text: not a recording of compare's answers", str(path)) from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted run; it is simply asked again
            if not isinstance(rec, dict) or "key" not in rec or not isinstance(rec.get("response"), dict):
                continue  # not one of our records: asked again
            if rec.get("suite") != suite or rec.get("model") != model:
                raise BadInput(f"line {n} was recorded for suite {rec.get('suite')!r} / model "
                               f"{rec.get('model')!r}, not {suite!r} / {model!r}", str(path))
            if endpoint is not None and rec.get("endpoint") != endpoint:
                raise BadInput(f"line {n} was recorded from {rec.get('endpoint')}, not {endpoint}: resuming "
                               "would score another endpoint's answers; give another --output", str(path))
            self.records[rec["key"]] = rec

    def outcome(self, key: str) -> Outcome | None:
        """The recorded answer; None when there is none, or (not replaying) when it was clipped: a cut
        answer is not scored, it is asked again."""
        rec = self.records.get(key)
        if rec is None:
            return None
        if rec.get("clipped"):
            if not self.replay:
                return None
            cut = ", ".join(f"{k} ({v:,})" for k, v in list(rec["clipped"].items())[:4])
            return Outcome(rec["response"].get("id") or rec.get("id") or "?",
                           error=f"the recorded answer was clipped when it was recorded ({cut}; compare records "
                                 f"at most {MAX_FIELD_CHARS:,} characters of a field): it cannot be scored from "
                                 "the recording")
        return Outcome(**rec["response"])

    def append(self, key: str, side: Side, outcome: Outcome) -> None:
        facts = side.facts()
        response, clipped = clip_response(asdict(outcome), self.scrub)
        rec = {"key": key, "id": outcome.id, "suite": self.suite, "model": self.model, "endpoint": facts["url"],
               "kind": facts["kind"], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "response": response,
               **({"clipped": clipped} if clipped else {})}
        self.records[key] = rec
        self.on_write()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:  # one line per answer, flushed at once: nothing recorded is lost
            if self._newline_first:
                fh.write("\n")
                self._newline_first = False
            fh.write(self.scrub(json.dumps(rec, ensure_ascii=False)) + "\n")


def _outcome(row_id: str, resp: Any, seconds: float) -> Outcome:
    choice = resp.choices[0]
    msg = choice.message
    calls = [{"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
             for tc in (msg.tool_calls or [])]
    usage = resp.usage
    details = getattr(usage, "completion_tokens_details", None) if usage else None
    return Outcome(row_id, choice.finish_reason, msg.content, reasoning_of(msg), calls,
                   usage.completion_tokens if usage else None,
                   getattr(details, "reasoning_tokens", None) if details else None, seconds=round(seconds, 3),
                   prompt_tokens=usage.prompt_tokens if usage else None)


def _streamed_outcome(row_id: str, acc: Assembly, seconds: float) -> Outcome:
    return Outcome(row_id, acc.finish_reason, "".join(acc.content) if acc.content else None,
                   "".join(acc.reasoning) or None, acc.tool_calls(), acc.completion_tokens, acc.reasoning_tokens,
                   seconds=round(seconds, 3), prompt_tokens=acc.prompt_tokens, streamed=True,
                   stream_notes=acc.notes)


async def ask(client: Any, row_id: str, kwargs: dict[str, Any], *, stream: bool) -> Outcome:
    """One attempt at one request, non-streamed or streamed (assembled from its deltas)."""
    try:
        if stream:
            acc, seconds = await stream_answer(client, kwargs)
            return _streamed_outcome(row_id, acc, seconds)
        t0 = time.monotonic()
        resp = await client.chat.completions.create(**kwargs)
        return _outcome(row_id, resp, time.monotonic() - t0)
    except AnswerTooLarge:
        raise
    except Exception as exc:
        big = too_large(exc)  # the SDK may wrap what the body's bound raised into a connection error
        if big is not None:
            raise big from None
        raise


async def collect(side: Side, suite: str, rows: list[dict[str, Any]], store: Store | None, *, concurrency: int = 8,
                  rate: float | None = None, temperature: float | None = 0.0, max_tokens: int | None = None,
                  retry: RetryPolicy = ANSWERS, request_timeout: float = 1200, stall_timeout: float = 600,
                  scrub: Callable[[str], str] = lambda t: t, stream: bool = False,
                  sem: asyncio.Semaphore | None = None,
                  on_done: Callable[[Outcome], None] = lambda o: None) -> dict[str, Outcome]:
    """Answers for every row (recorded ones are reused; with no `store` nothing is reused or recorded),
    keyed by row id. One request, its retries and
    their backoff included, ends within `request_timeout` seconds; one attempt fails when no byte comes
    for `stall_timeout` seconds (the HTTP read timeout: for a non-streamed answer it also bounds the wait
    for the whole answer; for a streamed one, the gap between chunks). With `stream` every answer is
    streamed and assembled from its deltas (stream.py). `sem`, when given, is shared with other
    collections on the same endpoint (streamed and non-streamed together make its load). Error text goes
    through `scrub` before it is recorded."""
    import httpx2  # openai 3's HTTP stack: a stream cut part-way surfaces as its error, unwrapped

    results: dict[str, Outcome] = {}
    todo = []
    for row in rows:
        key = request_key(suite, row)
        prior = store.outcome(key) if store is not None else None
        if prior is not None:
            results[row["id"]] = prior
        else:
            todo.append((key, row))
    if not todo:
        return results
    endpoint = side.endpoint
    assert endpoint is not None, "a recording has no endpoint to ask"
    client = endpoint.openai_client(timeout=openai.Timeout(stall_timeout, connect=min(stall_timeout, 30.0)))
    client = client.with_options(http_client=bounded_http_client())  # limits.py: one answer's bytes
    sem = sem or asyncio.Semaphore(concurrency)
    gap = 1.0 / rate if rate else 0.0
    next_start = [time.monotonic()]
    start_lock = asyncio.Lock()

    async def one(key: str, row: dict[str, Any]) -> None:
        async with sem:
            if gap:
                async with start_lock:
                    wait = next_start[0] - time.monotonic()
                    next_start[0] = max(next_start[0], time.monotonic()) + gap
                if wait > 0:
                    await asyncio.sleep(wait)
            kwargs = request_kwargs(endpoint, side.model, row, temperature, max_tokens)
            t0 = time.monotonic()
            try:
                outcome = await retry.run(lambda: ask(client, row["id"], kwargs, stream=stream),
                                          total_s=request_timeout)
                outcome.seconds = round(time.monotonic() - t0, 3)
            except AnswerTooLarge as exc:
                outcome = Outcome(row["id"], error=str(exc), status=exc.http_status, seconds=round(time.monotonic() - t0, 3))
            except asyncio.TimeoutError:
                outcome = Outcome(row["id"], error=f"timeout: no answer within {request_timeout:g} s, retries "
                                  "included (--request-timeout)", seconds=round(time.monotonic() - t0, 3))
            except openai.APIStatusError as exc:
                outcome = Outcome(row["id"], error=f"HTTP {exc.status_code}: {_message(exc)}", status=exc.status_code,
                                  seconds=round(time.monotonic() - t0, 3))
                if exc.status_code == 400 and "tool" in _message(exc).lower() and kwargs.get("tools"):
                    # The server refuses tools (no tool parser). Ask once more with tool_choice=none to see
                    # what the model itself emits: the diagnosis, not a scored answer.
                    try:
                        probe = await asyncio.wait_for(
                            client.chat.completions.create(**{**kwargs, "tool_choice": "none"}), request_timeout)
                        outcome.probe_content = probe.choices[0].message.content
                    except (openai.OpenAIError, asyncio.TimeoutError, AttributeError, IndexError, TypeError):
                        pass
            except openai.APITimeoutError:
                outcome = Outcome(row["id"], error=f"stalled: no byte from the server for {stall_timeout:g} s "
                                  "(--stall-timeout)", seconds=round(time.monotonic() - t0, 3))
            except openai.APIConnectionError as exc:
                outcome = Outcome(row["id"], error=f"{type(exc).__name__}: {exc}", seconds=round(time.monotonic() - t0, 3))
            except (openai.APIResponseValidationError, ValueError, TypeError, AttributeError, IndexError,
                    KeyError) as exc:
                # 200 with a body that is not a chat completion (an HTML page from a proxy, say)
                outcome = Outcome(row["id"], error=f"not an OpenAI chat completion: {type(exc).__name__}: {exc}"[:300],
                                  status=200, seconds=round(time.monotonic() - t0, 3))
            except (openai.APIError, httpx2.HTTPError) as exc:
                # a stream cut or ended by an error event part-way (the status was 200)
                outcome = Outcome(row["id"], error=f"{type(exc).__name__}: {exc}"[:300],
                                  seconds=round(time.monotonic() - t0, 3))
            if outcome.error:
                outcome.error = scrub(outcome.error)  # a server may echo the Authorization header
            outcome.streamed = stream
            if store is not None:
                store.append(key, side, outcome)
            results[row["id"]] = outcome
            on_done(outcome)

    try:
        await asyncio.gather(*(one(k, r) for k, r in todo))
    finally:
        await client.close()
    return results


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    msg = body.get("message") or (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) \
        else body.get("message")
    return str(msg or exc.message)[:300]
