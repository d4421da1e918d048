"""The load generator's hot path: bench/stream.py keeps a timestamp and the body bytes per read and
loadgen.parse_stream parses after the stream ended. These tests hold the deferred parse to the records a
line-by-line reader makes as each line arrives (same timing points, chunk times, text, tool calls, usage,
errors), however the bytes were split into reads; the HTTP/1.1 framing to every split of a response;
and the whole path, against the real sim and real aiohttp fault servers, to exact records: token counts,
chunk counts, text, TTFT no earlier than the injected one, a non-200, a malformed chunk, a dropped
stream, a Content-Length body, a stream held open after [DONE]. Assertions on correctness, not speed."""

from __future__ import annotations

import asyncio
import json
import queue
import random
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kimi_deploy.bench import loadgen
from kimi_deploy.bench.loadgen import RequestInput, RequestOutput, parse_stream
from kimi_deploy.bench.sim import Sim, SimConfig
from kimi_deploy.bench.stream import StreamProtocol
from kimi_deploy.endpoint import Endpoint, reasoning_of
from kimi_deploy.toolcalls import ToolCallAssembler

from .conftest import assert_clean_error, run_cli_timed


# --- the reference: a line-by-line reader (the same rules, applied as each line arrives), run over a
# list of (time, line) ----------------------------------------------------------------------------------
def _reference(lines: list[tuple[float, bytes]], ended_at: float) -> RequestOutput:
    rec = RequestOutput(index=0)
    content, reasoning, calls = [], [], ToolCallAssembler()  # the tool-call rule: tests/test_toolcalls.py
    done = False
    for now, raw in lines:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            rec.t_end = now
            break
        try:
            obj = json.loads(data)
        except ValueError:
            rec.error = f"malformed SSE data: {data[:80]!r}"
            rec.t_end = now
            break
        if obj.get("usage"):
            rec.usage = obj["usage"]
        for ch in obj.get("choices") or []:
            delta = ch.get("delta") or {}
            got = False
            c, r, tc = delta.get("content"), reasoning_of(delta), delta.get("tool_calls")
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
                rec.chunks.append(now)
            if ch.get("finish_reason"):
                rec.finish_reason = ch["finish_reason"]
    if rec.t_end is None:
        rec.t_end = ended_at
    if not done and rec.error is None:
        rec.error = "stream ended without [DONE] (dropped mid-stream)"
    rec.content, rec.reasoning = "".join(content), "".join(reasoning)
    rec.calls, rec.tool_call_errors = calls.calls(), calls.faults
    rec.tool_text = "".join(c["name"] + c["arguments"] for c in rec.calls)
    return rec


def _body(n_out: int, *, reasoning: int = 0, tool: bool = False, garble_at: int | None = None,
          done: bool = True, crlf: bool = False) -> list[bytes]:
    """The SSE events of one answer as the sim writes them (its own chunk builder), one per list item."""
    sim = Sim(SimConfig())
    call = {"name": "get_weather", "id": "functions.get_weather:0",
            "arguments": json.dumps({"city": "Paris"}).ljust(n_out)} if tool else None
    events = []
    for i in range(n_out):
        if i == garble_at:
            events.append(b"data: {this is not json\n\n")
            continue
        events.append(sim._chunk("sim-x", True, i, reasoning, call, n_out))
    final = sim._delta("sim-x", True, {}, "tool_calls" if tool else "length")
    events.append(f"data: {json.dumps(final)}\n\n".encode())
    events.append(b'data: {"id": "sim-x", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": %d}}\n\n'
                  % n_out)
    events.append(b": a comment line, ignored\n\n")
    if done:
        events.append(b"data: [DONE]\n\n")
    if crlf:
        events = [e.replace(b"\n", b"\r\n") for e in events]
    return events


def _reads(events: list[bytes], cuts: list[int]) -> tuple[list[float], list[bytes], list[tuple[float, bytes]]]:
    """The body cut at byte offsets `cuts` into reads, read i arriving at time i + 1; and the lines as a
    line reader would have seen them: each stamped with the read that completed it."""
    body = b"".join(events)
    bounds = sorted({c for c in cuts if 0 < c < len(body)}) + [len(body)]
    parts, times, start = [], [], 0
    for k, end in enumerate(bounds):
        parts.append(body[start:end])
        times.append(float(k + 1))
        start = end
    lines, buf, offset = [], b"", 0
    for t, part in zip(times, parts):
        buf += part
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            lines.append((t, line))
        offset += len(part)
    if buf:
        lines.append((times[-1], buf))
    return times, parts, lines


FIELDS = ("t_first", "t_first_answer", "t_first_tool", "t_end", "chunks", "error", "finish_reason", "usage",
          "content", "reasoning", "tool_text", "calls", "tool_call_errors")


@pytest.mark.parametrize("kind", ["content", "reasoning", "tool", "malformed", "no-done", "crlf"])
def test_deferred_parse_makes_the_records_of_the_line_reader(kind: str) -> None:
    events = _body(12, reasoning=4 if kind == "reasoning" else 0, tool=kind == "tool",
                   garble_at=5 if kind == "malformed" else None, done=kind != "no-done", crlf=kind == "crlf")
    body_len = len(b"".join(events))
    rng = random.Random(kind)
    offsets, pos = [], 0
    for e in events:
        pos += len(e)
        offsets.append(pos)
    splits = [offsets,  # one read per event, as a quiet server sends them
              [],  # the whole body in one read
              list(range(1, body_len)),  # one byte per read
              *[rng.sample(range(1, body_len), k) for k in (3, 17, 60) for _ in range(5)]]  # anywhere
    for cuts in splits:
        times, parts, lines = _reads(events, cuts)
        got = RequestOutput(index=0)
        got.t_end = times[-1] + 0.5  # where the reading stopped: the end of the body
        parse_stream(got, times, parts)
        want = _reference(lines, times[-1] + 0.5)
        for f in FIELDS:
            assert getattr(got, f) == getattr(want, f), (kind, f, cuts[:10])
    # and the records say what was sent
    if kind in ("content", "crlf"):
        assert want.content == "".join(f" w{i}" for i in range(12)) and len(want.chunks) == 12 and want.ok
    if kind == "tool":
        assert want.calls and want.calls[0]["name"] == "get_weather" and want.finish_reason == "tool_calls"
    if kind == "reasoning":
        assert want.reasoning.startswith(" r0") and want.t_first < want.t_first_answer
    if kind == "malformed":
        assert want.error.startswith("malformed SSE data") and len(want.chunks) == 5
    if kind == "no-done":
        assert want.error == "stream ended without [DONE] (dropped mid-stream)"


class _Transport:
    """Where StreamProtocol writes the request: a byte sink (the protocol under test is the parser)."""

    def __init__(self) -> None:
        self.sent, self.closing = b"", False

    def write(self, data: bytes) -> None:
        self.sent += data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def _feed(response: bytes, cuts: list[int]) -> StreamProtocol:
    async def go() -> StreamProtocol:
        proto = StreamProtocol(lambda p: None)
        proto.connection_made(_Transport())  # type: ignore[arg-type]
        proto.send(b"POST / HTTP/1.1\r\n\r\n")
        start = 0
        for end in sorted({c for c in cuts if 0 < c < len(response)}) + [len(response)]:
            proto.data_received(response[start:end])
            start = end
        return proto
    return asyncio.run(go())


def test_http_framing_survives_every_split() -> None:
    events = _body(6)
    payload = b"".join(events)
    chunked = b"".join(b"%x;ext=1\r\n%b\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    for head, body in ((b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
                        chunked),
                       (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"
                        % len(payload), payload)):
        response = head + body
        for cut in range(1, len(response)):  # every place one read can end and the next begin
            proto = _feed(response, [cut])
            assert proto.status == 200 and proto.headers["content-type"] == "text/event-stream"
            assert b"".join(proto.parts) == payload, cut
            assert proto.end.done() and proto.end.result() is True and proto.state == 0  # idle: reusable
    # a bad chunk size is a failed exchange, not a crash
    proto = _feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", [])
    assert proto.end.done() and "bad chunk size" in str(proto.end.exception())


def _run(url: str, bodies: list[dict[str, Any]], *, stall: float = 30.0, users: int = 2) -> list[RequestOutput]:
    """The load generator's worker, in this process, against `url`: its records in index order."""
    ep = Endpoint.from_url(url, flag="--base-url")
    jobs = loadgen.JobSource(total=len(bodies), make=lambda i: RequestInput(index=i, body=dict(bodies[i])))
    cfg = loadgen.LoadConfig(endpoint=ep, concurrency=users, workers=1, stall_timeout_s=stall, request_timeout_s=60)
    q: queue.SimpleQueue = queue.SimpleQueue()
    asyncio.run(loadgen._worker_main(0, 1, jobs, cfg, users, time.monotonic(), None, q))
    recs = []
    while not q.empty():
        item = q.get()
        if isinstance(item, RequestOutput):
            recs.append(item.settle())  # what the parent does with every record
    return sorted(recs, key=lambda r: r.index)


def _chat(n: int, **extra: Any) -> dict[str, Any]:
    return {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": n, **extra}


def test_records_against_the_sim_are_exact(sim_factory) -> None:
    url = sim_factory("--ttft-ms", "40", "--itl-ms", "5")
    recs = _run(url, [_chat(n) for n in (1, 7, 30, 30, 64)])
    for rec, n in zip(recs, (1, 7, 30, 30, 64)):
        assert rec.ok and rec.status == 200, rec.error
        assert len(rec.chunks) == n and rec.usage["completion_tokens"] == n
        assert rec.content == "".join(f" w{i}" for i in range(n)) and rec.finish_reason == "length"
        assert rec.t_first - rec.t_send >= 0.040  # the sim sends nothing before its TTFT
        assert rec.t_first == rec.chunks[0] == rec.t_first_answer
        assert all(b >= a for a, b in zip(rec.chunks, rec.chunks[1:])) and rec.t_end >= rec.chunks[-1]
    # thinking and tool calls through the same path
    url = sim_factory("--ttft-ms", "5", "--itl-ms", "2", "--reasoning-tokens", "3")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    think, call = _run(url, [_chat(10, chat_template_kwargs={"thinking": True}), _chat(10, tools=tools)])
    assert think.ok and think.reasoning == " r0 r1 r2" and think.t_first < think.t_first_answer
    assert call.ok and call.calls[0]["name"] == "get_weather" and call.finish_reason == "tool_calls"
    assert json.loads(call.calls[0]["arguments"]) == {"w": " ".join(f"a{i}" for i in range(10))}


def test_faults_become_the_same_errors(sim_factory) -> None:
    cases = {("--error-rate", "1"): "HTTP 500: ", ("--malformed-rate", "1"): "malformed SSE data: b'{this is not json'",
             ("--drop-rate", "1"): "stream ended without [DONE] (dropped mid-stream)"}
    for args, error in cases.items():
        url = sim_factory("--ttft-ms", "5", "--itl-ms", "2", *args)
        recs = _run(url, [_chat(20)] * 4)
        assert len(recs) == 4 and all(r.error and r.error.startswith(error) for r in recs), [r.error for r in recs]
    url = sim_factory("--ttft-ms", "5", "--itl-ms", "2", "--stall-after", "3")
    rec, = _run(url, [_chat(20)], stall=0.5, users=1)
    assert rec.error.startswith("stalled") and len(rec.chunks) == 3  # what came before the stall is kept


@pytest.fixture
def odd_server():
    """A real aiohttp server with the answers the sim does not give: an SSE body with Content-Length, and a
    chunked stream that sends [DONE] and then holds the connection open."""
    events = b"".join(_body(5))

    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=events, content_type="text/event-stream")

    async def held(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(events)
        await asyncio.sleep(3600)  # [DONE] was sent; the body never ends
        return resp

    import threading

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/sized/v1/chat/completions", sized)
    app.router.add_post("/held/v1/chat/completions", held)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)


def test_sized_and_held_open_streams(odd_server: str) -> None:
    for path in ("/sized", "/held"):
        recs = _run(odd_server + path + "/v1", [_chat(5)] * 3, stall=30)
        for rec in recs:
            assert rec.ok, (path, rec.error)  # held: complete at [DONE], not after the 30 s stall timeout
            assert rec.content == " w0 w1 w2 w3 w4" and len(rec.chunks) == 5 and rec.usage["completion_tokens"] == 5


def test_sim_fast_chunk_is_the_json_chunk(monkeypatch) -> None:
    sim = Sim(SimConfig(model='odd "model" name'))
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.5)  # one `created` for both builders
    for i in range(6):
        assert sim._chunk("sim-abc", True, i, 0, None, 6) == sim._chunk_json("sim-abc", True, i, 0, None, 6)


def test_self_check_says_whether_the_client_was_busy_or_starved() -> None:
    from kimi_deploy.bench.loadgen import WorkerStats
    from kimi_deploy.bench.metrics import RequestRecord, summarize

    rows = [RequestRecord(index=i, ttft=30.0, e2e=100.0, itl=[10.0] * 7, schedule_lag=0.1, t_send=float(i),
                          t_end=float(i) + 0.1, output_tokens_server=8) for i in range(10)]
    lag = [0.030] * 100  # 30 ms of event-loop lag at every probe: timestamps may be that late
    starved = summarize(rows, [WorkerStats(0, lag, cpu=0.2, wall=10.0, cpu_s=2.0)], {})["client"]
    busy = summarize(rows, [WorkerStats(0, lag, cpu=0.95, wall=10.0, cpu_s=9.5)], {})["client"]
    calm = summarize(rows, [WorkerStats(0, [0.001] * 100, cpu=0.2, wall=10.0, cpu_s=2.0)], {})["client"]
    assert not starved["valid"] and "other processes on this machine held the cores" in starved["invalid_because"][0]
    assert not busy["valid"] and any("used 95% of a core" in r for r in busy["invalid_because"])
    assert calm["valid"] and calm["invalid_because"] == []
    # CPU per chunk: the workers' CPU seconds over the measured token-bearing chunks (8 per request)
    assert calm["cpu_us_per_chunk"] == round(2.0 / 80 * 1e6, 2)


def test_https_through_the_same_path(tmp_path, monkeypatch) -> None:
    """The hosted API is https: the same protocol over asyncio's TLS transport, against a real aiohttp
    server with a certificate made here by the openssl CLI and trusted through SSL_CERT_FILE (which
    OpenSSL's default verify paths read: docs.python.org/3/library/ssl.html#ssl.SSLContext.set_default_verify_paths)."""
    import shutil
    import ssl
    import subprocess
    import threading

    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI makes the test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    events = b"".join(_body(4))

    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for e in events.split(b"\n\n")[:-1]:
            await resp.write(e + b"\n\n")
        await resp.write_eof()
        return resp

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "localhost", 0, ssl_context=ctx)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        recs = _run(f"https://localhost:{port}/v1", [_chat(4)] * 3)
        assert all(r.ok and r.content == " w0 w1 w2 w3" and len(r.chunks) == 4 for r in recs), [r.error for r in recs]
        monkeypatch.delenv("SSL_CERT_FILE")  # and a certificate nobody vouches for is a failed request
        bad, = _run(f"https://localhost:{port}/v1", [_chat(4)], users=1)
        assert not bad.ok and "CERTIFICATE_VERIFY_FAILED" in bad.error
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


def test_a_stream_that_never_ends_fails_at_the_size_bound(fault, tmp_path: Path) -> None:
    """A server that streams forever (1 MiB events, no [DONE]) fails the request at MAX_RESPONSE_BYTES,
    within the time limit and without keeping the endless body, instead of growing the client's memory
    until --request-timeout (or for ever)."""
    from kimi_deploy.bench.stream import MAX_RESPONSE_BYTES

    srv = fault("forever")
    out = tmp_path / "b"
    proc = run_cli_timed("bench", "--base-url", srv.url, "--model", "m", "--output", str(out), "--concurrency", "1",
                         "--num-requests", "1", "--input-len", "8", "--workers", "1", "--request-timeout", "600",
                         limit=60)
    assert_clean_error(proc, "no measured request succeeded", "BadResponse", code=1)
    row = json.loads((out / "requests.jsonl").read_text().splitlines()[0])
    assert f"passed {MAX_RESPONSE_BYTES // 2**20} MiB" in row["error"], row["error"]
