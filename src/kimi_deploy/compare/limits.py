"""How much of one answer compare reads, stores and reports.

Read: at most MAX_ANSWER_BYTES of one HTTP response body (streamed or not, an error page too), counted as
the bytes arrive from the socket, before the openai client parses them. A body past it (or one whose
Content-Length says so) ends that request with AnswerTooLarge, which is not retried: the row's answer is
an error saying so, the run goes on. Without the bound, one answer's size is the server's choice and
every byte of it is held in memory (a non-streamed body until it is parsed, a streamed answer's text
until it ends). The client asks for uncompressed answers (Accept-Encoding: identity); the count is of
the bytes on the wire, so a server that compresses anyway is bounded by its compressed size.

Stored and reported: scoring reads every answer whole; the records (local.jsonl, local-stream.jsonl,
reference.jsonl) keep each string of an answer up to MAX_FIELD_CHARS characters, an answer's strings
together up to MAX_ANSWER_CHARS (fields in order: id, error, finish_reason, content, reasoning, the tool calls,
the rest) and lists (tool calls, stream notes) up to MAX_ITEMS items; what was cut is named in the
record's `clipped` ({path in the answer: its full length, in characters or items}). summary.json and the
reports show each string up to SHOWN_CHARS characters and each answer's tool calls up to SHOWN_CALLS,
saying in place how long the whole was. A clipped record is not the whole answer: a resumed run asks that
row again, and a replayed recording (--reference-file) gives that row an error saying so instead of
scoring a cut answer."""

from __future__ import annotations

from typing import Any, Callable

import httpx2

MAX_ANSWER_BYTES = 64 * 2**20
# The suites' answers are a few KB (max_tokens <= 1024); a 128K-token answer streamed token by token is
# about 40 MB of SSE (bench/stream.py), non-streamed well under 1 MB.
MAX_FIELD_CHARS = 65_536  # the suite's longest tool arguments are ~2,100 characters
MAX_ANSWER_CHARS = 262_144
MAX_ITEMS = 64
SHOWN_CHARS = 4_096
SHOWN_CALLS = 8


class AnswerTooLarge(Exception):
    """One response body passed MAX_ANSWER_BYTES (not retried: it would be as large again)."""

    def __init__(self, seen: int, declared: bool = False, http_status: int | None = None) -> None:
        self.seen, self.http_status = seen, http_status  # not `status`: RetryPolicy would read it
        how = f"announced {seen:,} bytes (Content-Length)" if declared else f"sent more than {seen:,} bytes"
        super().__init__(f"answer too large: the server {how} for one answer; compare reads at most "
                         f"{MAX_ANSWER_BYTES // 2**20} MiB of one answer")


class _BoundedBody(httpx2.AsyncByteStream):
    """A response's byte stream that raises AnswerTooLarge once more than `limit` bytes came through."""

    def __init__(self, inner: Any, limit: int, status: int) -> None:
        self._inner, self._limit, self._status = inner, limit, status

    @property
    def elapsed(self) -> Any:  # httpx2.Response.elapsed reads it from its stream
        return getattr(self._inner, "elapsed", None)

    async def __aiter__(self) -> Any:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise AnswerTooLarge(self._limit, http_status=self._status)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def bounded_http_client(limit: int = MAX_ANSWER_BYTES) -> Any:
    """An httpx2 client for the openai SDK (its defaults: openai.DefaultAsyncHttpxClient, environment
    proxies included) whose every response body is read through _BoundedBody; a response hook installs
    it, before httpx2 reads a non-streamed body or the SDK iterates a stream."""
    import openai

    async def bound(response: Any) -> None:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise AnswerTooLarge(int(declared), declared=True, http_status=response.status_code)
        response.stream = _BoundedBody(response.stream, limit, response.status_code)

    # identity: the bytes counted are the answer's own, not a compressed form of it
    return openai.DefaultAsyncHttpxClient(event_hooks={"response": [bound]}, headers={"Accept-Encoding": "identity"})


def too_large(exc: BaseException) -> AnswerTooLarge | None:
    """The AnswerTooLarge behind `exc` (the SDK may wrap what the transport raised), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, AnswerTooLarge):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


_FIRST = ("id", "error", "finish_reason", "content", "reasoning", "tool_calls")


def clip_response(response: dict[str, Any], scrub: Callable[[str], str] = lambda t: t
                  ) -> tuple[dict[str, Any], dict[str, int]]:
    """An answer (Outcome as a dict) as the records keep it, and what was cut ({path: full length}).
    Each string goes through `scrub` before it is cut, so a key is never left half-masked."""
    budget = [MAX_ANSWER_CHARS]
    clipped: dict[str, int] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, str):
            value = scrub(value)
            keep = min(len(value), MAX_FIELD_CHARS, budget[0])
            budget[0] -= keep
            if keep < len(value):
                clipped[path] = len(value)
            return value[:keep]
        if isinstance(value, list):
            if len(value) > MAX_ITEMS:
                clipped[path] = len(value)
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value[:MAX_ITEMS])]
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else k) for k, v in value.items()}
        return value

    order = [k for k in _FIRST if k in response] + [k for k in response if k not in _FIRST]
    out = {k: walk(response[k], k) for k in order}
    return {k: out[k] for k in response}, clipped


# Lists in summary.json that come from a server, by key (tool calls are found by their shape).
_SERVER_LISTS = ("later_names", "later_ids", "stream_notes", "problems")


def _is_calls(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(c, dict) and "arguments" in c for c in value)


def clip_shown(value: Any, key: str = "") -> Any:
    """`value` (summary.json) with every string cut at SHOWN_CHARS and every answer's tool calls (and the
    lists a server fills) at SHOWN_CALLS items, each cut saying how long the whole was."""
    if isinstance(value, str):
        if len(value) <= SHOWN_CHARS:
            return value
        return f"{value[:SHOWN_CHARS]}... [clipped: {len(value):,} characters in all]"
    if isinstance(value, dict):
        return {clip_shown(k): clip_shown(v, k) for k, v in value.items()}
    if isinstance(value, list):
        calls = _is_calls(value)
        if (calls or key in _SERVER_LISTS) and len(value) > SHOWN_CALLS:
            more = f"[clipped: {len(value):,} items in all, the first {SHOWN_CALLS} shown]"
            head = [clip_shown(v) for v in value[:SHOWN_CALLS]]
            return head + [{"id": None, "name": "", "arguments": "", "clipped": more} if calls else more]
        return [clip_shown(v) for v in value]
    return value
