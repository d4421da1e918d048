"""Send a suite to one endpoint through `openai.AsyncOpenAI`, with bounded concurrency, an optional rate
limit and bounded retries with backoff on 429, 5xx and dropped connections; every response is appended
to a JSONL record (keyed by a hash of the request) as it arrives, so a run is resumable and a recorded
reference can be replayed offline against any number of local deployments."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import openai

from ..errors import BadInput
from .adapters import Endpoint, reasoning_of


def request_key(suite: str, row: dict[str, Any]) -> str:
    """Endpoint-independent identity of a suite request (so one reference serves many locals)."""
    canon = {k: row.get(k) for k in ("id", "messages", "tools", "tool_choice", "thinking", "max_tokens")}
    blob = json.dumps({"suite": suite, **canon}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


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


class Store:
    """The JSONL record of one endpoint's answers to one suite."""

    def __init__(self, path: Path, suite: str, model: str) -> None:
        self.path, self.suite, self.model = path, suite, model
        self.records: dict[str, dict[str, Any]] = {}
        # An interrupted run can leave a half line at the end: start the next record on a line of its own.
        self._newline_first = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        if path.is_file():
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interrupted run; it is simply asked again
                if rec.get("suite") != suite or rec.get("model") != model:
                    raise BadInput(f"line {n} was recorded for suite {rec.get('suite')!r} / model "
                                   f"{rec.get('model')!r}, not {suite!r} / {model!r}", str(path))
                self.records[rec["key"]] = rec

    def outcome(self, key: str) -> Outcome | None:
        rec = self.records.get(key)
        return Outcome(**rec["response"]) if rec else None

    def append(self, key: str, endpoint: Endpoint, outcome: Outcome) -> None:
        rec = {"key": key, "id": outcome.id, "suite": self.suite, "model": self.model, "endpoint": endpoint.base_url,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "response": asdict(outcome)}
        self.records[key] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:  # one line per answer, flushed at once: nothing recorded is lost
            if self._newline_first:
                fh.write("\n")
                self._newline_first = False
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _outcome(row_id: str, resp: Any, seconds: float) -> Outcome:
    choice = resp.choices[0]
    msg = choice.message
    calls = [{"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
             for tc in (msg.tool_calls or [])]
    usage = resp.usage
    details = getattr(usage, "completion_tokens_details", None) if usage else None
    return Outcome(row_id, choice.finish_reason, msg.content, reasoning_of(msg), calls,
                   usage.completion_tokens if usage else None,
                   getattr(details, "reasoning_tokens", None) if details else None, seconds=round(seconds, 3))


RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError, openai.APITimeoutError)


async def preflight(endpoint: Endpoint, timeout: float = 30) -> None:
    """Bad keys, wrong model names and unreachable endpoints are bad input, found before any request."""
    client = openai.AsyncOpenAI(base_url=f"{endpoint.base_url}", api_key=endpoint.api_key or "none",
                                max_retries=1, timeout=timeout)
    try:
        models = [m.id async for m in client.models.list()]
    except openai.AuthenticationError:
        raise BadInput(f"{endpoint.base_url} rejected the API key (401)", f"--{endpoint.name}") from None
    except (openai.APIConnectionError, openai.APITimeoutError):
        raise BadInput(f"{endpoint.base_url} is unreachable", f"--{endpoint.name}") from None
    except openai.APIStatusError as exc:
        raise BadInput(f"{endpoint.base_url}/models answered {exc.status_code}", f"--{endpoint.name}") from None
    finally:
        await client.close()
    if models and endpoint.model not in models:
        raise BadInput(f"{endpoint.base_url} serves {', '.join(models[:8])}, not {endpoint.model!r}",
                       f"--{endpoint.name}-model" if endpoint.name == "reference" else "--model")


async def collect(endpoint: Endpoint, suite: str, rows: list[dict[str, Any]], store: Store, concurrency: int = 8,
                  rate: float | None = None, temperature: float | None = 0.0, max_tokens: int | None = None,
                  retries: int = 5, timeout: float = 600, on_done: Callable[[Outcome], None] = lambda o: None
                  ) -> dict[str, Outcome]:
    """Answers for every row (recorded ones are reused), keyed by row id."""
    results: dict[str, Outcome] = {}
    todo = []
    for row in rows:
        key = request_key(suite, row)
        prior = store.outcome(key)
        if prior is not None:
            results[row["id"]] = prior
        else:
            todo.append((key, row))
    if not todo:
        return results
    client = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "none", max_retries=0,
                                timeout=timeout)
    sem = asyncio.Semaphore(concurrency)
    gap = 1.0 / rate if rate else 0.0
    next_start = [time.monotonic()]
    start_lock = asyncio.Lock()

    async def ask(kwargs: dict[str, Any]) -> Any:
        delay = 2.0
        for attempt in range(retries + 1):
            try:
                return await client.chat.completions.create(**kwargs)
            except RETRYABLE:
                if attempt == retries:
                    raise
                await asyncio.sleep(min(delay, 60) * (1 + random.random() * 0.25))
                delay *= 2

    async def one(key: str, row: dict[str, Any]) -> None:
        async with sem:
            if gap:
                async with start_lock:
                    wait = next_start[0] - time.monotonic()
                    next_start[0] = max(next_start[0], time.monotonic()) + gap
                if wait > 0:
                    await asyncio.sleep(wait)
            kwargs = endpoint.request(row, temperature, max_tokens)
            t0 = time.monotonic()
            try:
                outcome = _outcome(row["id"], await ask(kwargs), time.monotonic() - t0)
            except openai.APIStatusError as exc:
                outcome = Outcome(row["id"], error=f"HTTP {exc.status_code}: {_message(exc)}", status=exc.status_code,
                                  seconds=round(time.monotonic() - t0, 3))
                if exc.status_code == 400 and "tool" in _message(exc).lower() and kwargs.get("tools"):
                    # The server refuses tools (no tool parser). Ask once more with tool_choice=none to see
                    # what the model itself emits: the diagnosis, not a scored answer.
                    try:
                        probe = await client.chat.completions.create(**{**kwargs, "tool_choice": "none"})
                        outcome.probe_content = probe.choices[0].message.content
                    except openai.OpenAIError:
                        pass
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:
                outcome = Outcome(row["id"], error=f"{type(exc).__name__}: {exc}", seconds=round(time.monotonic() - t0, 3))
            store.append(key, endpoint, outcome)
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
