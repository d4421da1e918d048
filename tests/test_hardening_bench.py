"""Issue 12 for bench, compare, sim and wait, against real fault servers (the project's sim with
--stall-after, and a tiny aiohttp server below that stalls, echoes the Authorization header or answers
200 with HTML): nothing hangs (every run here has a bounded wall time), nothing is reported as done
that was not, no key reaches a file or the terminal, and every bad input is exit 2 naming the flag or
file."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kimi_deploy.cli import app
from kimi_deploy.errors import KimiDeployError

from .conftest import assert_clean_error, run_cli

SECRET = "sk-kd-hardening-7c1e5b-never-write-me"


# --- a tiny fault server ------------------------------------------------------------------------------

class FaultServer:
    """An OpenAI-looking server on a loopback port, in a thread. /v1/models always answers; the chat
    endpoint misbehaves as `mode` says: "stall" (three chunks, then silence with the connection open),
    "echo" (401 whose body quotes the Authorization header), "html" (200 with an HTML page, /tokenize
    too)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "echo":
            auth = request.headers.get("Authorization", "")
            return web.json_response({"error": {"message": f"invalid credentials: {auth}"}}, status=401)
        if self.mode == "html":
            return web.Response(text="<html><body>Sign in</body></html>", content_type="text/html")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            chunk = {"choices": [{"index": 0, "delta": {"content": f" w{i}"}, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await asyncio.sleep(3600)  # the stall: no byte, connection open
        return resp

    async def tokenize(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>login</html>", content_type="text/html")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        a = web.Application()
        a.router.add_get("/v1/models", self.models)
        a.router.add_get("/health", self.models)
        a.router.add_post("/v1/chat/completions", self.chat)
        a.router.add_post("/tokenize", self.tokenize)
        self.runner = web.AppRunner(a, shutdown_timeout=0.5)  # a stalled handler must not delay stop()
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        async def down() -> None:
            await self.runner.cleanup()
        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def fault() -> Iterator:
    servers: list[FaultServer] = []

    def make(mode: str) -> FaultServer:
        servers.append(FaultServer(mode))
        return servers[-1]
    yield make
    for s in servers:
        s.stop()


def _timed(*args: str, env: dict[str, str] | None = None, limit: float = 60):
    t = time.monotonic()
    proc = run_cli(*args, env=env, timeout=limit + 60)
    took = time.monotonic() - t
    assert took < limit, f"took {took:.0f} s: {args}"
    return proc


def _summary(d: Path) -> dict:
    return json.loads((d / "summary.json").read_text())


# --- 1. hangs -------------------------------------------------------------------------------------------

def test_bench_stall_timeout_ends_a_stalled_stream(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "5", "--itl-ms", "5", "--stall-after", "3")
    out = tmp_path / "r"
    proc = _timed("bench", "--base-url", url, "--model", "sim", "--output", str(out), "--concurrency", "2",
                  "--num-requests", "2", "--output-len", "20", "--stall-timeout", "1", "--workers", "1", limit=40)
    assert_clean_error(proc, "no measured request succeeded", "stalled", code=1)
    s = _summary(out)
    assert s["requests"]["completed"] == 0 and s["requests"]["failed"] == 2
    assert any(e.startswith("stalled") for e in s["requests"]["errors"]), s["requests"]
    assert s["config"]["stall_timeout_s"] == 1.0


def test_bench_request_timeout(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "5", "--itl-ms", "300")  # keeps sending, slowly: only a total bound ends it
    out = tmp_path / "r"
    proc = _timed("bench", "--base-url", url, "--model", "sim", "--output", str(out), "--concurrency", "1",
                  "--num-requests", "1", "--output-len", "100", "--request-timeout", "2", "--workers", "1", limit=40)
    assert_clean_error(proc, "no measured request succeeded", "--request-timeout", code=1)
    assert "timeout after 2 s (--request-timeout)" in _summary(out)["requests"]["errors"]


def test_duration_cancels_what_is_in_flight_and_builds_nothing_up_front(sim_factory, tmp_path: Path) -> None:
    stalled = sim_factory("--ttft-ms", "5", "--itl-ms", "5", "--stall-after", "3")
    out = tmp_path / "stalled"
    # 10^8 requests bounded by 3 s: built lazily, and the two stalled requests are cut at the deadline
    proc = _timed("bench", "--base-url", stalled, "--model", "sim", "--output", str(out), "--concurrency", "2",
                  "--num-requests", "100000000", "--duration", "3", "--workers", "1", "--workload", "tool-calls",
                  limit=45)
    assert_clean_error(proc, "no measured request succeeded", "--duration deadline", code=1)
    req = _summary(out)["requests"]
    assert req["completed"] == 0 and req["failed"] == 0 and req["incomplete"] == 2, req
    assert req["not_sent"] == 100000000 - 2
    rows = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    assert [r["incomplete"] for r in rows] == [True, True] and not any(r["ok"] for r in rows)

    healthy = sim_factory("--ttft-ms", "5", "--itl-ms", "2")
    out = tmp_path / "open"
    proc = _timed("bench", "--base-url", healthy, "--model", "sim", "--output", str(out), "--rate", "10",
                  "--num-requests", "100000000", "--duration", "2", "--output-len", "4", "--workers", "1", limit=45)
    assert proc.returncode == 0, proc.stderr
    req = _summary(out)["requests"]
    assert 5 <= req["completed"] <= 40 and req["not_sent"] > 100000000 - 100, req


def test_compare_retries_end_within_the_request_timeout(fault, tmp_path: Path) -> None:
    srv = fault("stall")
    out = tmp_path / "c"
    proc = _timed("compare", "--local", srv.url, "--reference", srv.url, "--reference-kind", "self-hosted",
                  "--model", "m", "--reference-model", "m", "--suite", "chat", "--limit", "2", "--output", str(out),
                  "--stall-timeout", "1", "--request-timeout", "4", limit=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    errors = [json.loads(x)["response"]["error"] for x in (out / "local.jsonl").read_text().splitlines()]
    assert len(errors) == 2 and all(e and ("stalled" in e or "--request-timeout" in e) for e in errors), errors
    assert _summary(out)["verdict"] == "FAIL"


def test_wait_timeout_must_be_finite() -> None:
    for value in ("nan", "inf", "-inf"):
        assert_clean_error(run_cli("wait", "http://127.0.0.1:9", "--timeout", value, timeout=30), "--timeout")
    from kimi_deploy.endpoint import Endpoint, wait_ready
    from kimi_deploy.errors import BadInput

    with pytest.raises(BadInput, match="--timeout"):  # a library caller cannot wait forever either
        wait_ready(Endpoint.from_url("http://127.0.0.1:9", flag="URL"), timeout=math.nan)


# --- 2 and 3. success that is not; secrets --------------------------------------------------------------

def _no_secret(out: Path, proc) -> None:
    assert SECRET not in proc.stdout + proc.stderr
    files = [f for f in out.rglob("*") if f.is_file()]
    assert files
    for f in files:
        assert SECRET.encode() not in f.read_bytes(), f


def test_an_echoed_key_is_written_nowhere(fault, tmp_path: Path) -> None:
    srv = fault("echo")
    env = {**os.environ, "KD_LOCAL_API_KEY": SECRET, "KD_REF_SECRET_KEY": SECRET + "-ref"}
    out = tmp_path / "b"
    proc = _timed("bench", "--base-url", srv.url, "--model", "m", "--output", str(out), "--concurrency", "1",
                  "--num-requests", "2", "--output-len", "4", "--api-key-env", "KD_LOCAL_API_KEY", "--workers", "1",
                  env=env, limit=40)
    assert_clean_error(proc, "no measured request succeeded", "HTTP 401", code=1)
    _no_secret(out, proc)
    assert "***KD_LOCAL_API_KEY***" in (out / "requests.jsonl").read_text()  # says which key, not the key

    out = tmp_path / "c"
    proc = _timed("compare", "--local", srv.url, "--local-key-env", "KD_LOCAL_API_KEY", "--reference", srv.url,
                  "--reference-kind", "self-hosted", "--reference-key-env", "KD_REF_SECRET_KEY", "--model", "m",
                  "--reference-model", "m", "--suite", "chat", "--limit", "2", "--output", str(out), env=env, limit=40)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert {p.name for p in out.iterdir()} >= {"local.jsonl", "reference.jsonl", "summary.json", "report.md",
                                              "report.html"}
    _no_secret(out, proc)
    assert "***KD_REF_SECRET_KEY***" in (out / "reference.jsonl").read_text()


def test_html_instead_of_an_api(fault, tmp_path: Path) -> None:
    srv = fault("html")
    out = tmp_path / "b"
    proc = _timed("bench", "--base-url", srv.url, "--model", "m", "--output", str(out), "--concurrency", "1",
                  "--num-requests", "2", "--input-len", "8", "--output-len", "4", "--workers", "1", limit=40)
    assert_clean_error(proc, "no measured request succeeded", "text/html", code=1)
    assert _summary(out)["config"]["workload_facts"]["tokenizer"] != "server /tokenize"  # HTML is not a count
    out = tmp_path / "c"
    proc = _timed("compare", "--local", srv.url, "--reference", srv.url, "--reference-kind", "self-hosted",
                  "--model", "m", "--reference-model", "m", "--suite", "chat", "--limit", "1", "--output", str(out),
                  limit=40)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    err = json.loads((out / "local.jsonl").read_text().splitlines()[0])["response"]["error"]
    assert err and "not an OpenAI chat completion" in err, err


def test_scrub_replaces_every_credential_value() -> None:
    from kimi_deploy.secrets import Scrubber, scrub

    env = {"MY_API_KEY": "abc123def456", "HF_TOKEN": 'hf_x"quoted"y', "SHORT_TOKEN": "1", "PATH": "/usr/bin/x"}
    s = Scrubber(["OTHER"], env=env)
    text = 'Bearer abc123def456 and {"t": "hf_x\\"quoted\\"y"} 1 /usr/bin/x'
    assert s.text(text) == 'Bearer ***MY_API_KEY*** and {"t": "***HF_TOKEN***"} 1 /usr/bin/x'
    assert s.obj({"e": ["abc123def456"]}) == {"e": ["***MY_API_KEY***"]}
    os.environ["KD_SCRUB_TEST_TOKEN"] = "tok-98765432"
    try:
        assert scrub("x tok-98765432 y") == "x ***KD_SCRUB_TEST_TOKEN*** y"
    finally:
        del os.environ["KD_SCRUB_TEST_TOKEN"]


# --- 4. exit codes ------------------------------------------------------------------------------------

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    """The real app in-process: (exit code, message). Our errors map to their exit codes as main() does;
    anything else (a traceback's worth) fails the test."""
    r = runner.invoke(app, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        assert isinstance(r.exception, KimiDeployError), repr(r.exception)
        return r.exception.exit_code, str(r.exception)
    return r.exit_code, r.output


BENCH = ("bench", "--base-url", "http://127.0.0.1:9", "--model", "m")


@pytest.mark.parametrize("args, flag", [
    (("--rate", "inf"), "--rate"), (("--rate", "nan"), "--rate"), (("--rate", "0"), "--rate"),
    (("--burstiness", "0", "--rate", "1"), "--burstiness"), (("--burstiness", "inf", "--rate", "1"), "--burstiness"),
    (("--burstiness", "nan", "--rate", "1"), "--burstiness"), (("--warmup", "-5"), "--warmup"),
    (("--max-concurrency", "0", "--rate", "1"), "--max-concurrency"), (("--workers", "-1"), "--workers"),
    (("--duration", "-1"), "--duration"), (("--duration", "nan"), "--duration"),
    (("--ramp-up", "inf"), "--ramp-up"), (("--request-timeout", "nan"), "--request-timeout"),
    (("--stall-timeout", "0"), "--stall-timeout"), (("--concurrency", "0"), "--concurrency"),
    (("--sweep", "rate=nan"), "--sweep"),
])
def test_bench_flags_refused(tmp_path: Path, args: tuple[str, ...], flag: str) -> None:
    code, msg = _invoke(*BENCH, "--output", str(tmp_path / "r"), *(args if "--rate" in args or "--sweep" in args
                                                                    else ("--concurrency", "1", *args)))
    assert code == 2 and flag in msg, (code, msg)
    assert not (tmp_path / "r" / "summary.json").exists()


@pytest.mark.parametrize("args, flag", [
    (("--ttft-ms", "nan"), "--ttft-ms"), (("--itl-ms", "inf"), "--itl-ms"), (("--error-rate", "nan"), "--error-rate"),
    (("--slow-start", "inf"), "--slow-start"), (("--port", "0"), "--port"), (("--port", "70000"), "--port"),
])
def test_sim_flags_refused(args: tuple[str, ...], flag: str) -> None:
    code, msg = _invoke("sim", *args)
    assert code == 2 and flag in msg, (code, msg)


def test_compare_flags_refused(tmp_path: Path) -> None:
    base = ("compare", "--local", "http://127.0.0.1:9", "--output", str(tmp_path / "c"))
    for args, flag in ((("--rate", "nan"), "--rate"), (("--temperature", "inf"), "--temperature"),
                       (("--request-timeout", "inf"), "--request-timeout"), (("--stall-timeout", "nan"), "--stall-timeout"),
                       (("--threshold", "tool_call_f1=nan"), "--threshold")):
        code, msg = _invoke(*base, *args)
        assert code == 2 and flag in msg, (args, code, msg)


def test_output_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert _invoke(*BENCH, "--output", str(f), "--concurrency", "1") == (2, f"--output: {f} exists and is not a directory")
    code, msg = _invoke("compare", "--local", "http://127.0.0.1:9", "--output", str(f))
    assert code == 2 and "--output" in msg and "not a directory" in msg
    assert f.read_text() == "x"


def test_sim_port_in_use() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert_clean_error(run_cli("sim", "--port", str(port), timeout=30), "--port", "cannot listen")


def test_bench_diff_corrupt_files(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "1")
    good = tmp_path / "good"
    assert run_cli("bench", "--base-url", url, "--model", "sim", "--output", str(good), "--concurrency", "1",
                   "--num-requests", "3", "--output-len", "3", "--workers", "1").returncode == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    cases = [("summary.json", b"{not json", "summary.json"), ("summary.json", b"[1, 2]", "summary.json"),
             ("summary.json", b"\xff\xfe binary", "summary.json"), ("requests.jsonl", b"{oops\n", "requests.jsonl"),
             ("requests.jsonl", b'{"index": 0, "ttft": "fast"}\n', "requests.jsonl"),
             ("requests.jsonl", b"[1]\n", "requests.jsonl")]
    for name, content, needle in cases:
        for n in ("summary.json", "requests.jsonl"):
            (bad / n).write_bytes((good / n).read_bytes())
        (bad / name).write_bytes(content)
        assert_clean_error(run_cli("bench", "diff", str(good), str(bad)), str(bad / needle))


# --- 5. fuzz over the numeric flags ------------------------------------------------------------------------

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12),
                    st.sampled_from(["", "x", "1e999", "-0", "0x10", " 5"]))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(["--num-requests", "--duration", "--warmup", "--concurrency", "--rate", "--burstiness",
                             "--ramp-up", "--max-concurrency", "--input-len", "--output-len", "--prefix-len",
                             "--workers", "--seed", "--request-timeout", "--stall-timeout"]),
       value=NUMBERS)
def test_fuzz_bench_numeric_flags(tmp_path: Path, flag: str, value) -> None:
    """Every value ends in exit 2 with a message: naming the fuzzed flag when the value is bad, else
    --output (a file, checked after every flag and before any request, so nothing is sent)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    load = ("--rate", "1") if flag in ("--rate", "--burstiness", "--max-concurrency") else ("--concurrency", "1")
    if flag == "--concurrency":
        load = ()
    code, msg = _invoke(*BENCH, "--output", str(blocker), *load, flag, str(value))
    assert code == 2, (flag, value, code, msg)
    assert flag in msg or "--output" in msg, (flag, value, msg)


@settings(max_examples=50, deadline=None)
@given(flag=st.sampled_from(["--ttft-ms", "--itl-ms", "--output-len", "--reasoning-tokens", "--tool-rate",
                             "--error-rate", "--drop-rate", "--malformed-rate", "--slow-start", "--stall-after"]),
       value=NUMBERS)
def test_fuzz_sim_numeric_flags(flag: str, value) -> None:
    """Every value ends in exit 2: naming the flag when bad, else --port (held by this test), so the sim
    never starts serving."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = str(s.getsockname()[1])
        code, msg = _invoke("sim", flag, str(value), "--port", port)
    assert code == 2, (flag, value, code, msg)
    assert flag in msg or "--port" in msg, (flag, value, msg)
