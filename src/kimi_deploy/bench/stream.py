"""The load generator's HTTP/1.1 client for streamed requests: an asyncio Protocol that, for each read
from the socket, keeps one timestamp and the body bytes it carried, and wakes the request's coroutine
twice (response head, end of body) instead of once per chunk.

Why not aiohttp, which the load generator used before: profiled on a 2-core machine (cProfile, one
worker, 128 streams), aiohttp's per-chunk path (protocol -> StreamReader -> waiter future -> task step
-> readany, with a task wake-up per chunk) took the largest share of the worker's Python time; without
it a worker went from 25-37 to 12-15 us per chunk. Every microsecond a chunk costs the client is one the
server it shares the cores with does not get. This module does only what a chat completion stream
needs: one POST with a JSON body over a pooled keep-alive connection (TLS when the URL is https), a
response head, and a chunked (RFC 9112 section 7.1) or Content-Length body, or one that ends when the
server closes. Timeouts stay the caller's: a total one per request, and a stall
watch (no byte for N seconds) run by the pool for every connection in use."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, Callable
from urllib.parse import urlsplit

_IDLE, _HEAD, _CHUNKED, _LENGTH, _UNTIL_CLOSE, _TRAILER = range(6)
_HEAD_LIMIT = 64 * 1024  # a response head larger than this is not an OpenAI-compatible server's
# One response's bytes at most: a stream of 128k tokens is ~40 MB of SSE; past this bound the request
# fails rather than the client's memory (every body is kept until the stream ends).
MAX_RESPONSE_BYTES = 256 * 2**20
_KEEP_IDLE_S = 4.0  # reuse an idle connection only this long: servers close idle ones (uvicorn after 5 s)
# How a read ends when it carries OpenAI's end-of-stream event `data: [DONE]`.
DONE_TAILS = (b"[DONE]\n\n", b"[DONE]\r\n\r\n", b"[DONE]\n", b"[DONE]\r\n")


class Stalled(Exception):
    """No byte from the server for the stall timeout."""


class BadResponse(Exception):
    """The server's bytes are not HTTP/1.x."""


class StreamProtocol(asyncio.Protocol):
    """One connection. `times[i]` is when the read that carried `parts[i]` (body bytes, chunk framing
    removed) arrived."""

    def __init__(self, on_idle: Callable[[StreamProtocol], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_idle = on_idle
        self.state = _IDLE
        self.buf = b""  # the head so far, a partial chunk-size line, or trailers
        self.need = 0  # bytes left of the current chunk (+2 for its CRLF) or of a Content-Length body
        self.times: list[float] = []
        self.parts: list[bytes] = []
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = True
        self.closed = False
        self.released = False
        self.last = 0.0  # monotonic time of the last byte (or of the request): the stall watch reads it
        self.idle_since = 0.0
        self.received = 0  # bytes of the current response
        self.head: asyncio.Future[None] | None = None
        self.end: asyncio.Future[bool] | None = None  # True: the body ended as HTTP says; False: cut off

    # --- the caller's side -------------------------------------------------------------------------
    def send(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.head, self.end = loop.create_future(), loop.create_future()
        self.times, self.parts = [], []
        self.state, self.buf, self.released, self.received = _HEAD, b"", False, 0
        self.status, self.headers, self.keep_alive = 0, {}, True
        self.last = time.monotonic()
        assert self.transport is not None
        self.transport.write(request)

    def fail(self, exc: BaseException) -> None:
        """End the exchange with `exc` (a stall, a timeout) and drop the connection."""
        for fut in (self.head, self.end):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: the caller may be waiting on the other future
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()

    # --- the event loop's side ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.state == _HEAD and self.head is not None and not self.head.done():
            self.head.set_exception(ConnectionResetError("the server closed the connection before answering"))
            self.head.exception()
        if self.end is not None and not self.end.done():
            self.end.set_result(self.state == _UNTIL_CLOSE)  # only a body without framing ends this way

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.last = now
        self.received += len(data)
        if self.received > MAX_RESPONSE_BYTES and self.state != _IDLE:
            self._bad(f"the response passed {MAX_RESPONSE_BYTES // 2**20} MiB (a stream that never ends?)")
            return
        self._feed(data, now)

    def _feed(self, data: bytes, now: float) -> None:
        """Bytes of one read, by the exchange's state (also the body bytes that came with the head)."""
        state = self.state
        if state == _CHUNKED:
            self._chunked(data, now)
        elif state == _HEAD:
            self._head(data, now)
        elif state == _LENGTH:
            take = data[: self.need]
            self.need -= len(take)
            self.times.append(now)
            self.parts.append(take)
            if not self.need:
                self._complete()
        elif state == _UNTIL_CLOSE:
            self.times.append(now)
            self.parts.append(data)
        elif state == _TRAILER:
            self._trailer(data)
        else:  # bytes nobody asked for: the connection cannot be trusted with another request
            self.keep_alive = False
            if self.transport is not None:
                self.transport.close()

    def _head(self, data: bytes, now: float) -> None:
        buf = self.buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _HEAD_LIMIT:
                self._bad("response head too large")
            self.buf = buf
            return
        lines = buf[:end].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            self._bad(f"not an HTTP/1.x response: {lines[0][:80]!r}")
            return
        self.status = int(code)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.headers = headers
        conn = headers.get("connection", "").lower()
        self.keep_alive = "close" not in conn and (version != "HTTP/1.0" or "keep-alive" in conn)
        self.buf = b""
        rest_b = buf[end + 4:]
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.state, self.need = _CHUNKED, 0
        elif "content-length" in headers:
            try:
                self.need = int(headers["content-length"])
            except ValueError:
                self._bad(f"bad Content-Length {headers['content-length']!r}")
                return
            self.state = _LENGTH
        elif self.status in (204, 304) or 100 <= self.status < 200:
            self.need, self.state = 0, _LENGTH
        else:
            self.state, self.keep_alive = _UNTIL_CLOSE, False
        assert self.head is not None
        if not self.head.done():
            self.head.set_result(None)
        if self.state == _LENGTH and not self.need:
            self._complete()
        elif rest_b:
            self._feed(rest_b, now)

    def _chunked(self, data: bytes, now: float) -> None:
        pos, n = 0, len(data)
        got: list[bytes] = []
        while pos < n:
            need = self.need
            if need:  # inside a chunk: its data, then its CRLF
                take = min(need, n - pos)
                if need > 2:  # the CRLF (the last two bytes of `need`) is not body
                    got.append(data[pos: pos + min(take, need - 2)])
                self.need = need - take
                pos += take
                continue
            eol = data.find(b"\n", pos)
            if eol < 0:
                self.buf += data[pos:]
                break
            line = self.buf + data[pos:eol] if self.buf else data[pos:eol]
            self.buf = b""
            pos = eol + 1
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._bad(f"bad chunk size line {line[:40]!r}")
                return
            if size == 0:  # the last chunk; trailers (usually none) end with an empty line
                self.state = _TRAILER
                if got:
                    self.times.append(now)
                    self.parts.append(got[0] if len(got) == 1 else b"".join(got))
                self._trailer(data[pos:])
                return
            self.need = size + 2
        if got:
            piece = got[0] if len(got) == 1 else b"".join(got)
            self.times.append(now)
            self.parts.append(piece)
            if piece.endswith(DONE_TAILS) and self.end is not None and not self.end.done():
                self.end.set_result(True)  # [DONE]: the answer is complete; the body's end may come later

    def _trailer(self, data: bytes) -> None:
        buf = self.buf + data
        if buf.startswith(b"\r\n") or b"\r\n\r\n" in buf:
            self.buf = b""
            self._complete()
        else:
            self.buf = buf

    def _complete(self) -> None:
        self.state = _IDLE
        self.idle_since = time.monotonic()
        if self.end is not None and not self.end.done():
            self.end.set_result(True)
        if self.released:
            self.on_idle(self)

    def _bad(self, why: str) -> None:
        self.fail(BadResponse(why))


class Pool:
    """The keep-alive connections of one worker to one server, and the stall watch over those in use."""

    def __init__(self, url: str, stall_timeout_s: float) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self.tls = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or (443 if self.tls else 80)
        default = 443 if self.tls else 80
        self.authority = u.netloc.rpartition("@")[2] if u.port not in (None, default) else u.hostname
        if ":" in self.authority and not self.authority.startswith("[") and u.port in (None, default):
            self.authority = f"[{self.authority}]"  # an IPv6 literal
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if self.tls else None
        self.idle: list[StreamProtocol] = []
        self.busy: set[StreamProtocol] = set()
        self.draining: set[StreamProtocol] = set()  # released at [DONE], the body's end still to come
        self.stall_timeout_s = stall_timeout_s
        self.watch: asyncio.Task | None = None
        self.opening: set[asyncio.Task] = set()  # connections being opened ahead of need (warm)

    def request(self, body: bytes, headers: dict[str, str]) -> bytes:
        """The bytes of one POST of a JSON body. Header values with CR or LF are refused (they would
        split the request)."""
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.authority}", "User-Agent: kimi-deploy-bench",
                 "Accept: text/event-stream", "Content-Type: application/json", f"Content-Length: {len(body)}"]
        for name, value in headers.items():
            if name.lower() in ("host", "content-length", "content-type", "transfer-encoding", "connection"):
                continue
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} has a line break")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def acquire(self) -> StreamProtocol:
        now = time.monotonic()
        while self.idle:
            proto = self.idle.pop()
            if not proto.closed and proto.keep_alive and now - proto.idle_since < _KEEP_IDLE_S:
                self.busy.add(proto)
                return proto
            if proto.transport is not None:
                proto.transport.close()
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: StreamProtocol(self._idle), self.host, self.port,
                                                ssl=self.ssl, server_hostname=self.host if self.tls else None)
        self.busy.add(proto)
        if self.watch is None:
            self.watch = asyncio.create_task(self._watch())
        return proto

    def warm(self, count: int) -> None:
        """Open connections in the background until `count` are idle or opening, so that requests about to
        be sent find one: their send is not held up by connection set-up."""
        now = time.monotonic()
        fresh = sum(1 for p in self.idle if not p.closed and now - p.idle_since < _KEEP_IDLE_S / 2)
        for _ in range(count - fresh - len(self.opening)):
            task = asyncio.create_task(self._open())
            self.opening.add(task)
            task.add_done_callback(self.opening.discard)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_connection(lambda: StreamProtocol(self._idle), self.host, self.port,
                                                    ssl=self.ssl, server_hostname=self.host if self.tls else None)
        except OSError:
            return  # the request that needs a connection meets the error itself
        proto.idle_since = time.monotonic()
        self.idle.append(proto)

    def release(self, proto: StreamProtocol) -> None:
        """Done with `proto`: back to the pool once its body has ended (now, or when the rest arrives:
        a reader may stop at [DONE] before the last chunk is in), else closed."""
        self.busy.discard(proto)
        proto.released = True
        if proto.closed or not proto.keep_alive or proto.state not in (_IDLE, _CHUNKED, _TRAILER):
            proto.keep_alive = False
            if proto.transport is not None:
                proto.transport.close()
        elif proto.state == _IDLE:
            self._idle(proto)
        else:
            self.draining.add(proto)

    def _idle(self, proto: StreamProtocol) -> None:
        self.draining.discard(proto)
        if proto.keep_alive and not proto.closed:
            self.idle.append(proto)

    async def _watch(self) -> None:
        """Fail every connection in use that has had no byte for the stall timeout (checked 4 times per
        timeout, at most once a second: a stall is noticed within 1.25 x the timeout)."""
        period = min(self.stall_timeout_s / 4, 1.0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for proto in list(self.busy):
                if proto.state != _IDLE and now - proto.last > self.stall_timeout_s:
                    proto.fail(Stalled())

    def close(self) -> None:
        if self.watch is not None:
            self.watch.cancel()
        for task in list(self.opening):
            task.cancel()
        for proto in [*self.idle, *self.busy, *self.draining]:
            if proto.transport is not None:
                proto.transport.close()
        self.idle.clear()
        self.busy.clear()
        self.draining.clear()


def dumps(obj: Any) -> bytes:
    try:
        import orjson

        return orjson.dumps(obj)
    except ImportError:  # pragma: no cover
        import json

        return json.dumps(obj).encode()
