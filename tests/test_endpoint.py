"""endpoint.py's retry policy against a real HTTP server through the real openai client (the path
compare's answers take): Retry-After is honoured, bounded, and a transport error of the client's own HTTP
stack (httpx2 under openai 3) counts as transient. `wait --timeout` and wait_ready's timeout are finite."""

from __future__ import annotations

import asyncio
import math
import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from typing import Iterator

import httpx2
import openai
import pytest

from kimi_deploy.endpoint import Endpoint, RetryPolicy, retry_after, status_of

from .conftest import assert_clean_error, run_cli, serving

COMPLETION = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


@pytest.fixture
def limited() -> Iterator[tuple[str, dict]]:
    """A real HTTP server whose /v1/chat/completions answers each (status, Retry-After) queued in
    state["script"], then 200; state["at"] holds the time.monotonic() of every request."""
    from aiohttp import web

    state: dict = {"script": [], "at": []}

    async def chat(request: web.Request) -> web.Response:
        state["at"].append(time.monotonic())
        if state["script"]:
            status, after = state["script"].pop(0)
            headers = {"Retry-After": after} if after is not None else {}
            return web.json_response({"error": {"message": "slow down"}}, status=status, headers=headers)
        return web.json_response(COMPLETION)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    with serving(app) as url:
        yield url, state


def _ask(url: str, policy: RetryPolicy, total_s: float | None = None) -> object:
    ep = Endpoint.from_url(url, flag="--local")

    async def go() -> object:
        client = ep.openai_client(timeout=openai.Timeout(10, connect=5))
        try:
            return await policy.run(lambda: client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]), total_s=total_s)
        finally:
            await client.close()

    return asyncio.run(go())


def test_a_429_is_retried_after_the_time_retry_after_asks(limited) -> None:
    url, state = limited
    # a backoff of 30 s: only the server's Retry-After can make the second try come after ~2 s
    policy = RetryPolicy(attempts=3, base_s=30.0, cap_s=30.0)
    state["script"] = [(429, "2")]
    resp = _ask(url, policy)
    assert resp.choices[0].message.content == "ok"
    gap = state["at"][1] - state["at"][0]
    assert 2.0 <= gap < 3.5, gap
    # 503 with an HTTP-date (RFC 9110 section 10.2.3) two seconds ahead
    state["at"].clear()
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=3), usegmt=True)
    state["script"] = [(503, when)]
    _ask(url, policy)
    assert 1.0 <= state["at"][1] - state["at"][0] < 3.5


def test_without_retry_after_the_backoff_applies(limited) -> None:
    url, state = limited
    state["script"] = [(429, None), (503, "not a number")]
    _ask(url, RetryPolicy(attempts=3, base_s=0.05, cap_s=0.1))
    assert len(state["at"]) == 3 and state["at"][2] - state["at"][0] < 1.0


def test_a_retry_after_past_the_bounds_ends_the_retries(limited) -> None:
    url, state = limited
    state["script"] = [(429, "600")]  # longer than the policy waits for
    with pytest.raises(openai.RateLimitError):
        _ask(url, RetryPolicy(attempts=3, retry_after_max_s=60))
    assert len(state["at"]) == 1
    state["at"].clear()
    state["script"] = [(429, "5")]  # within the policy, beyond the request's total budget
    t0 = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        _ask(url, RetryPolicy(attempts=3), total_s=2.0)
    assert len(state["at"]) == 1 and time.monotonic() - t0 < 2.0


def test_transient_errors_of_the_clients_http_stack() -> None:
    policy = RetryPolicy()
    # openai 3 and huggingface_hub 2 raise httpx2's errors; a stream cut part-way arrives unwrapped
    for exc in (httpx2.RemoteProtocolError("peer closed"), httpx2.ConnectError("refused"),
                httpx2.ReadTimeout("slow"), ConnectionResetError()):
        assert policy.retryable(exc), exc
    assert not policy.retryable(ValueError("not JSON"))
    request = httpx2.Request("GET", "http://h/v1/models")
    for status, retried in ((429, True), (503, True), (401, False), (404, False)):
        response = httpx2.Response(status, request=request, headers={"Retry-After": "7"})
        exc = httpx2.HTTPStatusError("x", request=request, response=response)
        assert status_of(exc) == status and policy.retryable(exc) is retried and retry_after(exc) == 7.0


def test_retry_after_forms() -> None:
    class Answer(Exception):
        def __init__(self, value: str | None) -> None:
            self.headers = {} if value is None else {"retry-after": value}

    now = time.time()
    later = format_datetime(datetime.fromtimestamp(now + 30, timezone.utc), usegmt=True)
    assert retry_after(Answer("2")) == 2.0 and retry_after(Answer(" 0.5 ")) == 0.5
    assert 29 <= retry_after(Answer(later), now=now) <= 31
    past = format_datetime(datetime.fromtimestamp(now - 30, timezone.utc), usegmt=True)
    assert retry_after(Answer(past), now=now) == 0.0  # a date gone by: retry at once
    # delay-seconds is digits (RFC 9110 section 10.2.3): signs, separators and other scripts' digits are not
    for bad in (None, "", "soon", "nan", "inf", "Mon, 99 Foo 2026", "-3", "+5", "1_0", "\u0663", "5, 7"):
        assert retry_after(Answer(bad)) is None, bad
    assert retry_after(ValueError()) is None
    # a wait of 0 or a date gone by (a client clock ahead of the server's) is no hint: backoff, no burst
    policy = RetryPolicy(base_s=1.0, cap_s=1.0, retry_after_max_s=60)
    for hint in ("0", past):
        assert 1.0 <= policy.pause(1, Answer(hint)) <= 1.25
    assert policy.pause(1, Answer("30")) == 30.0 and policy.pause(1, Answer("61")) is None


def test_wait_ends_at_its_timeout_when_the_completion_hangs(tmp_path) -> None:
    """`wait --timeout 5` against a server that is healthy, lists its model and never answers a chat:
    no request outlives the deadline (the openai client's own 60 s included)."""
    from aiohttp import web

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(120)
        return web.json_response(COMPLETION)

    app = web.Application()
    app.router.add_get("/health", lambda r: web.Response(text="ok"))
    app.router.add_get("/v1/models", lambda r: web.json_response({"data": [{"id": "m"}]}))
    app.router.add_post("/v1/chat/completions", hang)
    with serving(app) as url:
        t0 = time.monotonic()
        proc = run_cli("wait", url, "--timeout", "5", timeout=120)
        took = time.monotonic() - t0
    assert proc.returncode == 1 and "not ready after 5 s" in proc.stderr and "completion" in proc.stderr, proc.stderr
    assert took < 15, took


def test_wait_timeout_must_be_finite() -> None:
    for value in ("nan", "inf", "-inf"):
        assert_clean_error(run_cli("wait", "http://127.0.0.1:9", "--timeout", value, timeout=30), "--timeout")
    from kimi_deploy.endpoint import Endpoint, wait_ready
    from kimi_deploy.errors import BadInput

    with pytest.raises(BadInput, match="--timeout"):  # a library caller cannot wait forever either
        wait_ready(Endpoint.from_url("http://127.0.0.1:9", flag="URL"), timeout=math.nan)
