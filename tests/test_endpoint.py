"""endpoint.py's retry policy against a real HTTP server through the real openai client (the path
compare's answers take): Retry-After is honoured, bounded, and a transport error of the client's own HTTP
stack (httpx2 under openai 3) counts as transient. `wait --timeout` and wait_ready's timeout are finite.
The API key that wait, bench and compare read (Endpoint.from_url) is refused before any request when
serve would refuse it (a control character, shorter than secrets.MIN_LEN); `wait` is ready only when
the chat endpoint answers a chat completion, not a proxy's HTML page."""

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
from kimi_deploy.errors import BadInput

from .conftest import assert_clean_error, run_cli, run_cli_timed, serving

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


# --- hosted-model facts: from the catalog only -----------------------------------------------------

HOSTED = Endpoint.from_url("https://api.moonshot.ai/v1", flag="--reference")
LOCAL = Endpoint.from_url("http://h:8000/v1", flag="--local")


def _k3_entry():
    """The K3 entry as the catalog holds it, or as it is written there (id, hosted id, thinking): its
    hosted facts come from catalog.HOSTED_MODELS, keyed by the hosted id, not from fields it must repeat."""
    from kimi_deploy.catalog import MODELS, ModelEntry

    return MODELS.get("kimi-k3") or ModelEntry(id="kimi-k3", repo="moonshotai/Kimi-K3", config={},
                                               context_length=1048576, thinking=True, hosted_name="kimi-k3")


def test_every_hosted_catalog_model_is_sent_what_the_catalog_says() -> None:
    """For every hosted id in the catalog: `thinking: disabled` only where thinking can be switched off,
    the temperature only where sampling is not fixed. kimi-k2.7-code, thinking-only in the catalog, is
    never sent `disabled` (the API refuses it)."""
    from kimi_deploy.catalog import MODELS

    hosted_ids = {m.hosted_name for m in MODELS.values() if m.hosted_name}
    assert {"kimi-k2.5", "kimi-k2.6", "kimi-k2.7-code"} <= hosted_ids
    for hid in hosted_ids:
        own = [m for m in MODELS.values() if m.hosted_name == hid and m.base is None]
        entry = own[0] if own else next(m for m in MODELS.values() if m.hosted_name == hid)
        off = HOSTED.thinking_fields(hid, False)
        assert off == ({} if entry.hosted_thinking_only else {"thinking": {"type": "disabled"}}), hid
        assert HOSTED.sampling_fields(hid, 0.3) == ({} if entry.hosted_sampling else {"temperature": 0.3}), hid
        assert LOCAL.thinking_fields(hid, False) == {"chat_template_kwargs": {"thinking": False}}
        assert LOCAL.sampling_fields(hid, 0.3) == {"temperature": 0.3}
    assert MODELS["kimi-k2.7-code"].hosted_thinking_only and HOSTED.thinking_fields("kimi-k2.7-code", False) == {}
    assert HOSTED.sampling_fields("kimi-k2.7-code", 0.0) == {}  # 1.0 / 0.95 fixed (Kimi-Vendor-Verifier)


def test_a_hosted_id_the_catalog_does_not_know_gets_no_special_treatment() -> None:
    for hid in ("kimi-k2-thinking", "kimi-k2-thinking-turbo", "kimi-k9-preview"):  # retired, or unknown
        assert HOSTED.thinking_fields(hid, False) == {"thinking": {"type": "disabled"}}
        assert HOSTED.sampling_fields(hid, 0.3) == {"temperature": 0.3}
        HOSTED.check_effort(hid, "high")  # sent as asked: the API decides
        facts = HOSTED.hosted_facts(hid)
        assert facts is not None and facts["in_catalog"] is False and "no special treatment" in facts["note"]
    assert LOCAL.hosted_facts("kimi-k3") is None


def test_the_k3_entry_gets_the_hosted_k3_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kimi K3 on Moonshot's API always thinks, takes thinking.effort low / high / max (default max) and
    fixes temperature 1.0 / top_p 0.95 (Kimi-Vendor-Verifier README.md and k3_features tests), whether or
    not the catalog entry says so itself."""
    from kimi_deploy import catalog

    entry = _k3_entry()
    monkeypatch.setitem(catalog.MODELS, "kimi-k3", entry)
    assert entry.hosted_thinking_only and entry.hosted_efforts == ("low", "high", "max")
    assert entry.hosted_sampling == {"thinking": {"temperature": 1.0, "top_p": 0.95, "presence_penalty": 0.0,
                                                  "frequency_penalty": 0.0}}
    assert "Kimi-Vendor-Verifier" in (entry.sampling_source or "")
    assert HOSTED.model_id("kimi-k3") == "kimi-k3" and HOSTED.model_id("moonshotai/Kimi-K3") == "kimi-k3"
    assert HOSTED.thinking_fields("kimi-k3", False) == {} and HOSTED.sampling_fields("kimi-k3", 0.6) == {}
    facts = HOSTED.hosted_facts("kimi-k3")
    assert facts["catalog_model"] == "kimi-k3" and facts["thinking_only"] and facts["default_effort"] == "max"
    # a self-hosted K3 can switch thinking off: its engine's template takes thinking false
    assert LOCAL.thinking_fields("kimi-k3", False) == {"chat_template_kwargs": {"thinking": False}}


def test_retired_hosted_ids_are_not_mapped() -> None:
    """kimi-k2-0711-preview, kimi-k2-0905-preview and kimi-k2-thinking were discontinued
    (promptfoo.dev/docs/providers/moonshot): no entry maps to them, and K2-Instruct, -0905 and -Thinking
    (and its NVFP4) have no hosted model."""
    from kimi_deploy.catalog import MODELS

    retired = {"kimi-k2-0711-preview", "kimi-k2-0905-preview", "kimi-k2-thinking", "kimi-k2-thinking-turbo"}
    assert not retired & {m.hosted_name for m in MODELS.values()}
    for cid in ("kimi-k2-instruct", "kimi-k2-instruct-0905", "kimi-k2-thinking", "kimi-k2-thinking-nvfp4"):
        assert MODELS[cid].hosted_name is None and HOSTED.model_id(cid) == cid
    assert HOSTED.model_id("nvidia/Kimi-K2.6-NVFP4") == "kimi-k2.6"  # a live id still maps


# --- thinking effort: bench sends what compare sends -------------------------------------------------

@pytest.mark.parametrize("hosted", [False, True], ids=["engine", "moonshot"])
def test_bench_sends_the_thinking_effort_each_endpoint_takes(tmp_path, hosted: bool) -> None:
    """`bench --thinking-effort max` through real HTTP (the sim, recording each body): an engine is sent
    chat_template_kwargs {thinking, preserve_thinking, thinking_effort}, Moonshot's API (`--hosted`)
    thinking {type: enabled, keep: all, effort}, as compare sends them (the endpoint layer's one
    thinking_fields)."""
    import os

    from .faultserver import RecordingSim

    rec = RecordingSim("kimi-k3")
    env = {**os.environ, "KD_KEY": "sk-kd-bench-3e9a71"}
    with serving(rec.app()) as url:
        proc = run_cli("bench", "--base-url", url + "/v1", "--model", "kimi-k3", "--output", str(tmp_path / "b"),
                       "--concurrency", "2", "--num-requests", "3", "--input-len", "8", "--output-len", "4",
                       "--workers", "1", "--thinking-effort", "max", *(["--hosted"] if hosted else []),
                       "--api-key-env", "KD_KEY", env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert len(rec.bodies) == 3
    for body in rec.bodies:
        if hosted:
            assert body["thinking"] == {"type": "enabled", "keep": "all", "effort": "max"}
            assert "chat_template_kwargs" not in body
        else:
            assert body["chat_template_kwargs"] == {"thinking": True, "preserve_thinking": True,
                                                    "thinking_effort": "max"}
            assert "thinking" not in body
    summary = __import__("json").loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["config"]["thinking_effort"] == "max"


def test_bench_thinking_effort_bad_input(tmp_path) -> None:
    from .conftest import invoke_cli

    base = ("bench", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--output", str(tmp_path / "b"),
            "--concurrency", "1")
    code, msg = invoke_cli(*base, "--thinking-effort", "xhigh")
    assert code == 2 and "--thinking-effort" in msg and "'low', 'high' or 'max'" in msg, msg
    code, msg = invoke_cli(*base, "--thinking", "off", "--thinking-effort", "low")
    assert code == 2 and "--thinking-effort" in msg and "--thinking off" in msg, msg
    with pytest.raises(BadInput, match="--thinking-effort.*kimi-k2.6.*no thinking effort"):
        HOSTED.check_effort("kimi-k2.6", "low")
    with pytest.raises(BadInput, match="--thinking-effort.*one of low, high, max"):
        LOCAL.check_effort("m", "medium")
    LOCAL.check_effort("any-served-name", "low")  # an engine's template decides (vLLM's K3 renderer: 400)


@pytest.mark.parametrize("base", [5e-324, 1.0, 1e300])
def test_backoff_stays_under_its_cap_at_any_attempt(base: float) -> None:
    """The thousandth retry's backoff is the cap, not a float overflow (2.0 ** 1100)."""
    policy = RetryPolicy(attempts=2000, base_s=base, cap_s=30.0, jitter=0.0)
    delays = [policy.delay(n) for n in (1, 2, 64, 65, 1025, 1100, 10**6)]
    assert all(0 < d <= 30.0 for d in delays), delays
    assert delays[-1] == min(base * 2.0 ** 64, 30.0)


# --- the API key the clients send: refused before any request ---------------------------------------

@pytest.fixture
def openai_like() -> Iterator[tuple[str, list]]:
    """A real OpenAI-looking server (/health, /v1/models listing "m", chat completions) that records
    (path, Authorization header) of every request it is sent."""
    from aiohttp import web

    seen: list[tuple[str, str | None]] = []

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        seen.append((request.path, request.headers.get("Authorization")))
        return await handler(request)

    app = web.Application(middlewares=[record])
    app.router.add_get("/health", lambda r: web.Response(text="ok"))
    app.router.add_get("/v1/models", lambda r: web.json_response({"object": "list", "data": [{"id": "m"}]}))
    app.router.add_post("/v1/chat/completions", lambda r: web.json_response(COMPLETION))
    with serving(app) as url:
        yield url, seen


def _client_argv(command: str, url: str, out: str) -> tuple[list[str], str]:
    """The argv of one client command reading its key from KD_KEY, and the flag that names KD_KEY."""
    if command == "wait":
        return ["wait", url, "--api-key-env", "KD_KEY", "--timeout", "20"], "--api-key-env"
    if command == "bench":
        return ["bench", "--base-url", url + "/v1", "--model", "m", "--output", out, "--concurrency", "1",
                "--num-requests", "1", "--output-len", "2", "--workers", "1", "--api-key-env", "KD_KEY"], "--api-key-env"
    common = ["compare", "--local", url, "--reference", url + "/v1", "--reference-kind", "self-hosted", "--model", "m",
              "--reference-model", "m", "--suite", "chat", "--limit", "1", "--no-preflight", "--output", out]
    if command == "compare-local":
        return [*common, "--local-key-env", "KD_KEY"], "--local-key-env"
    return [*common, "--reference-key-env", "KD_KEY"], "--reference-key-env"


BAD_KEYS = {
    # a header injection: CR/LF cannot travel in an HTTP header (RFC 9110 section 5.5)
    "crlf": ("sk-kd-crlf-4b7e19\r\nX-Injected: 1", ["control character"]),
    "tab": ("sk-kd-tab\t-4b7e19", ["control character"]),
    # the HTTP clients encode header values as ASCII (an internal error or "not an OpenAI model list")
    "non-ascii": ("sk-kd-\u00e9t\u00e9-4b7e19", ["outside ASCII"]),
    # the scrubber never masks a value this short (secrets.MIN_LEN)
    "short": ("Zq7", ["has 3 characters", "at least 8"]),
}


@pytest.mark.parametrize("which", list(BAD_KEYS))
@pytest.mark.parametrize("command", ["wait", "bench", "compare-local", "compare-reference"])
def test_a_key_serve_would_refuse_is_refused_before_any_request(openai_like, tmp_path, command: str,
                                                                 which: str) -> None:
    """wait, bench and compare exit 2 at once naming the variable and the flag, as serve refuses the same key
    (launch.check_api_key): nothing reaches the server, nothing is written, the value is never printed."""
    import os

    from kimi_deploy import secrets

    url, seen = openai_like
    key, needles = BAD_KEYS[which]
    assert secrets.MIN_LEN == 8  # the message names the minimum
    out = tmp_path / "out"
    argv, flag = _client_argv(command, url, str(out))
    env = {**{k: v for k, v in os.environ.items() if k != "MOONSHOT_API_KEY"}, "KD_KEY": key}
    proc = run_cli_timed(*argv, env=env, limit=30)
    assert_clean_error(proc, flag, "KD_KEY", *needles)
    text = proc.stdout + proc.stderr
    for part in (key, key.split("\r")[0], key.split("\t")[0], key.split("\u00e9")[0], "X-Injected"):
        assert part not in text, part
    assert seen == []
    assert not out.exists(), list(out.iterdir())


def test_a_key_of_the_minimum_length_is_sent(openai_like) -> None:
    """The boundary: a key of exactly secrets.MIN_LEN characters is accepted and sent as the bearer token; an
    empty variable is refused like an unset one, except for a self-hosted reference, which may go keyless."""
    import os

    from kimi_deploy import secrets

    url, seen = openai_like
    key = "k7" * (secrets.MIN_LEN // 2)
    assert len(key) == secrets.MIN_LEN
    proc = run_cli_timed("wait", url, "--api-key-env", "KD_KEY", "--timeout", "20", env={**os.environ, "KD_KEY": key},
                         limit=30)
    assert proc.returncode == 0 and "model m answered" in proc.stdout, proc.stderr
    assert ("/v1/chat/completions", f"Bearer {key}") in seen
    seen.clear()
    proc = run_cli_timed("wait", url, "--api-key-env", "KD_KEY", "--timeout", "20", env={**os.environ, "KD_KEY": ""},
                         limit=30)
    assert_clean_error(proc, "--api-key-env", "KD_KEY is empty")
    assert seen == []
    ref = Endpoint.from_url(url, flag="--reference", kind="self-hosted", api_key_env="K", key_optional=True,
                            key_flag="--reference-key-env", env={"K": ""})
    assert ref.api_key is None and "Authorization" not in ref.headers()


# --- wait: ready only when a chat completion answers -----------------------------------------------

def test_wait_is_not_ready_while_the_chat_endpoint_answers_html(fault) -> None:
    """A proxy's login page (200 text/html) on /v1/chat/completions, /health and /v1/models answering as an
    engine's: `wait` keeps waiting and at its timeout says what answered."""
    srv = fault("html")
    proc = run_cli_timed("wait", srv.url, "--timeout", "3", limit=20)
    assert_clean_error(proc, "not ready after 3 s", "stuck at completion",
                       "HTTP 200 text/html, not a chat completion", code=1)
    assert "ready" not in proc.stdout


@pytest.mark.parametrize("answer", ["json", "models-html"])
def test_wait_is_not_ready_on_other_answers_that_are_not_openai(answer: str) -> None:
    """A 200 JSON body without `choices` (a gateway's status page) is no chat completion either; a 200 HTML
    page on /v1/models is no model list (waited on, not an internal error)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/health", lambda r: web.Response(text="ok"))
    if answer == "models-html":
        app.router.add_get("/v1/models", lambda r: web.Response(text="<html>login</html>", content_type="text/html"))
    else:
        app.router.add_get("/v1/models", lambda r: web.json_response({"object": "list", "data": [{"id": "m"}]}))
    app.router.add_post("/v1/chat/completions", lambda r: web.json_response({"object": "list", "status": "ok",
                                                                            "choices": []}))
    with serving(app) as url:
        proc = run_cli_timed("wait", url, "--timeout", "3", limit=20)
    expected = ("stuck at models", "/v1/models answered HTTP 200 text/html, not a model list") \
        if answer == "models-html" else \
        ("stuck at completion", "/v1/chat/completions answered HTTP 200 application/json, not a chat completion")
    assert_clean_error(proc, "not ready after 3 s", *expected, code=1)


def test_wait_never_prints_a_key_the_server_echoes(fault) -> None:
    """A chat endpoint that quotes the Authorization header in its 401: the timeout message names the
    variable, not its value, whatever the variable is called (this name is no credential name)."""
    import os

    from kimi_deploy import secrets

    key = "wait-echo-9d3f7a2b"
    assert not secrets.is_secret("KD_WAIT_CRED", key)  # only the endpoint's own scrubber knows it
    srv = fault("echo")
    proc = run_cli_timed("wait", srv.url, "--api-key-env", "KD_WAIT_CRED", "--timeout", "3",
                         env={**os.environ, "KD_WAIT_CRED": key}, limit=20)
    assert_clean_error(proc, "not ready after 3 s", "***KD_WAIT_CRED***", code=1)
    assert key not in proc.stdout + proc.stderr
