"""bench/sim.py as a stand-in endpoint for compare: its tool calls satisfy the schemas a client offers and
one request gets the same answer streamed and not, so a sim compared against itself (the no-GPU trial)
passes with compare's default options. Every bad flag value (fuzzed too), a port in use and a host that
does not resolve or is not this machine's are exit 2 naming the flag, and the sim never starts serving.
What one request can make it build is bounded (max_tokens past the context and schemas that multiply are
a quick HTTP 400), and SIGTERM stops it within seconds, streams open and a request arriving."""

from __future__ import annotations

import errno
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import jsonschema
import pytest
from hypothesis import given, settings, strategies as st

from kimi_deploy.bench.sim import MAX_MODEL_LEN, SCHEMA_NODES, _argument_piece, _arguments, _count_words, _instance
from kimi_deploy import suites

from .conftest import NUMBERS, ROOT, assert_clean_error, free_port, invoke_cli, run_cli


def _offered_tools() -> dict[str, dict]:
    _, rows = suites.load("tool-calls")
    return {t["function"]["name"]: t["function"]["parameters"] for r in rows for t in r.get("tools") or []}


def test_the_sims_arguments_satisfy_every_schema_of_the_suite() -> None:
    tools = _offered_tools()
    assert len(tools) >= 8
    for name, schema in tools.items():
        args = json.loads(_arguments(schema, "a0 a1", 40))
        jsonschema.validate(args, schema)  # raises, naming the tool's schema, when it does not
    assert _instance({"type": "object"}, "a0") == {"w": "a0"}  # a schema that names nothing


@settings(max_examples=200, deadline=None)
@given(arguments=st.text(min_size=0, max_size=300), tokens=st.integers(min_value=1, max_value=400))
def test_the_streamed_pieces_join_to_the_arguments(arguments: str, tokens: int) -> None:
    padded = arguments.ljust(tokens)
    pieces = [_argument_piece(padded, k, tokens) for k in range(tokens)]
    assert "".join(pieces) == padded and all(pieces)  # every token carries a piece, none lost or repeated


def test_a_sim_compared_against_itself_passes_with_default_options(sim_factory, tmp_path: Path) -> None:
    """The 2-minute no-GPU trial: `compare` with only --local, --reference and --output (the full
    tool-call suite, streamed and not)."""
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "0")
    proc = run_cli("compare", "--local", url, "--reference", url + "/v1", "--output", str(tmp_path / "c"),
                   timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    s = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert s["verdict"] == "PASS" and s["n"] >= 300
    assert s["checks"]["stream_disagreements_local"]["value"] == 0
    assert s["checks"]["schema_accuracy_local"]["value"] == 1.0


def test_arguments_for_the_schemas_clients_generate() -> None:
    """A pydantic model as a tool (what openai.pydantic_function_tool sends: $defs and $ref, anyOf with
    null, exclusive bounds) and other common shapes."""
    import openai
    from pydantic import BaseModel, Field

    class Place(BaseModel):
        city: str
        country: str | None = None

    class Args(BaseModel):
        loc: Place
        days: int = Field(gt=0, le=14)
        unit: str = Field(pattern="^[a-z]+$", default="c")

    schemas = [openai.pydantic_function_tool(Args)["function"]["parameters"],
               {"type": "object", "properties": {"v": {"const": 3}, "x": {"type": "number", "exclusiveMinimum": 2.5},
                                                 "n": {"type": ["null", "integer"], "minimum": 1.5}},
                "required": ["v", "x", "n", "ghost"]},
               {"anyOf": [{"type": "object", "properties": {"a": {"type": "string", "minLength": 3}},
                           "required": ["a"]}, {"type": "null"}]}]
    for schema in schemas:
        jsonschema.validate(json.loads(_arguments(schema, "a0", 5)), schema)


def test_a_schema_past_the_sims_bounds_is_a_400(sim_factory) -> None:
    import openai

    url = sim_factory("--ttft-ms", "1", "--itl-ms", "0")
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    nested = {"type": "array", "minItems": 3000, "items": {"type": "array", "minItems": 3000, "items": {"type": "string"}}}
    for params in (nested, {"type": "string", "minLength": 10**12}, {"type": "object", "properties": {}, "required": 5}):
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"p": params},
                                                                             "required": ["p"]}}}
        try:
            client.chat.completions.create(model="sim", messages=[{"role": "user", "content": "hi"}], tools=[tool])
        except openai.BadRequestError as exc:
            assert "the sim cannot answer this request" in str(exc)
        else:  # a schema the sim could answer within its bounds
            assert params.get("required") == 5
    assert client.models.list().data[0].id == "sim"  # still serving


# --- bad input: exit 2 naming the flag, and the sim never starts serving --------------------------------

@pytest.mark.parametrize("args, flag", [
    (("--ttft-ms", "nan"), "--ttft-ms"), (("--itl-ms", "inf"), "--itl-ms"), (("--error-rate", "nan"), "--error-rate"),
    (("--slow-start", "inf"), "--slow-start"), (("--port", "0"), "--port"), (("--port", "70000"), "--port"),
])
def test_sim_flags_refused(args: tuple[str, ...], flag: str) -> None:
    code, msg = invoke_cli("sim", *args)
    assert code == 2 and flag in msg, (code, msg)


def test_sim_port_in_use() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert_clean_error(run_cli("sim", "--port", str(port), timeout=30), "--port", "cannot listen")


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
        code, msg = invoke_cli("sim", flag, str(value), "--port", port)
    assert code == 2, (flag, value, code, msg)
    assert flag in msg or "--port" in msg, (flag, value, msg)


def test_sim_host_that_does_not_resolve() -> None:
    """.invalid never resolves (RFC 6761)."""
    proc = run_cli("sim", "--host", "no-such-host.invalid", "--port", str(free_port()), timeout=60)
    assert_clean_error(proc, "--host", "cannot resolve")


def test_sim_host_that_is_not_this_machines() -> None:
    """192.0.2.1 (TEST-NET-1, RFC 5737) resolves but is no address of this machine: bind fails with
    EADDRNOTAVAIL, the host's fault, not the port's."""
    with socket.socket() as s:
        try:
            s.bind(("192.0.2.1", 0))
        except OSError as exc:
            assert exc.errno == errno.EADDRNOTAVAIL, exc
        else:
            pytest.skip("this machine binds non-local addresses (net.ipv4.ip_nonlocal_bind)")
    proc = run_cli("sim", "--host", "192.0.2.1", "--port", str(free_port()), timeout=60)
    assert_clean_error(proc, "--host", "192.0.2.1", "not an address of this machine")
    assert "--port" not in proc.stderr, proc.stderr


# --- what one request can make the sim do ---------------------------------------------------------------

def _post(url: str, path: str, body: object, timeout: float = 10) -> httpx2.Response:
    """One request with a bound on its time: a sim that builds for minutes fails the test, not hangs it.
    The body is Python's JSON (Infinity allowed, as Python's json module writes it)."""
    return httpx2.post(url + path, content=json.dumps(body), headers={"Content-Type": "application/json"},
                       timeout=timeout)


def _open_stream(url: str, body: dict, timeout: float = 10) -> http.client.HTTPConnection:
    """A streamed chat request whose first chunk has arrived; the connection is left open."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    conn.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True}),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    assert resp.readline().startswith(b"data: {"), "no first chunk"  # (blocks at most `timeout` s)
    return conn


@pytest.fixture
def sim_proc(tmp_path: Path):
    """`python -m kimi_deploy sim` on a free port, as an operator runs it: (process, base URL, stderr
    file); killed (SIGKILL) after the test if it still runs, so a sim that ignores SIGTERM fails its test
    and is not left behind."""
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> tuple[subprocess.Popen, str, Path]:
        port = free_port()
        log = tmp_path / f"sim-{port}.err"
        with log.open("w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "kimi_deploy", "sim", "--port", str(port), *args],
                                    stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx2.get(url + "/health", timeout=1).status_code == 200:
                    return proc, url, log
            except httpx2.HTTPError:
                pass
            assert time.monotonic() < deadline, "the sim did not answer /health in 60 s"
            time.sleep(0.1)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


HI = [{"role": "user", "content": "hi"}]


def test_max_tokens_past_the_context_is_a_400_naming_it(sim_proc) -> None:
    """As vLLM 0.32: a max_tokens (or max_completion_tokens) over the context (MAX_MODEL_LEN) is HTTP 400
    with OpenAI's error object naming the field and the bound, at once and without the sim building the
    answer (10**9 tokens grew it to gigabytes); one within it but past what the prompt leaves is cut to
    that; a prompt that fills the context is refused. The largest answer allowed starts streaming at once."""
    proc, url, _ = sim_proc("--ttft-ms", "1", "--itl-ms", "0")
    for path, prompt in (("/v1/chat/completions", {"messages": HI}), ("/v1/completions", {"prompt": "a b c"})):
        for key in ("max_tokens", "max_completion_tokens"):
            for value in (10**9, 10**30, MAX_MODEL_LEN + 1):
                t = time.monotonic()
                r = _post(url, path, {"model": "sim", **prompt, key: value, "stream": True})
                assert r.status_code == 400, (path, key, value, r.status_code, r.text[:300])
                error = r.json()["error"]
                assert error["param"] == key and error["code"] == 400 and error["type"] == "BadRequestError", error
                assert error["message"].startswith(f"{key}={value} cannot be greater than "
                                                   f"max_model_len={MAX_MODEL_LEN}"), error
                assert time.monotonic() - t < 5
            for value in (0, -3, 2.5, "many", True, [5]):  # not an integer of at least 1
                r = _post(url, path, {"model": "sim", **prompt, key: value})
                assert r.status_code == 400 and r.json()["error"]["param"] == key, (key, value, r.text[:300])
    # max_completion_tokens before max_tokens, as vLLM
    both = _post(url, "/v1/chat/completions", {"model": "sim", "messages": HI, "max_tokens": 10**9,
                                                "max_completion_tokens": 3})
    assert both.status_code == 200 and both.json()["usage"]["completion_tokens"] == 3, both.text[:300]
    # within the bound but past what the prompt leaves: cut to it
    prompt = "w " * (MAX_MODEL_LEN - 10)
    cut = _post(url, "/v1/completions", {"model": "sim", "prompt": prompt, "max_tokens": MAX_MODEL_LEN}, timeout=30)
    assert cut.status_code == 200, cut.text[:300]
    usage = cut.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] == MAX_MODEL_LEN and usage["completion_tokens"] < 20
    # a prompt that fills the context: refused naming it
    full = _post(url, "/v1/completions", {"model": "sim", "prompt": "w " * MAX_MODEL_LEN, "max_tokens": 1}, timeout=30)
    assert full.status_code == 400 and full.json()["error"]["param"] == "input_tokens", full.text[:300]
    assert f"maximum context length is {MAX_MODEL_LEN} tokens" in full.json()["error"]["message"]
    # the largest answer: its first token comes at once, nothing of it built beforehand
    t = time.monotonic()
    conn = _open_stream(url, {"model": "sim", "messages": HI, "max_tokens": MAX_MODEL_LEN})
    assert time.monotonic() - t < 2
    conn.close()
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    assert rss_kb < 400_000, f"the sim holds {rss_kb} kB"
    assert _post(url, "/v1/chat/completions", {"model": "sim", "messages": HI, "max_tokens": 3}).status_code == 200


def test_without_max_tokens_the_answer_is_the_default_length(sim_proc) -> None:
    _, url, _ = sim_proc("--ttft-ms", "1", "--itl-ms", "0", "--output-len", "7")
    r = _post(url, "/v1/chat/completions", {"model": "sim", "messages": HI})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 7, r.text


def test_schemas_that_multiply_are_a_quick_400(sim_proc) -> None:
    """Schemas within the depth and item bounds that would still make the sim build without end: arrays of
    16 nested 15 deep (16**15 values), many required names, a large const repeated, a long name."""
    _, url, _ = sim_proc("--ttft-ms", "1", "--itl-ms", "0")
    nested: dict = {"type": "string"}
    for _ in range(15):
        nested = {"type": "array", "minItems": 16, "items": nested}
    big = "x" * 100_000
    cases = [nested,
             {"type": "object", "properties": {"a": {"type": "string"}}, "required": [f"k{i}" for i in range(5000)]},
             {"type": "array", "minItems": 16, "items": {"const": big}},
             {"type": "array", "minItems": 16, "items": {"enum": [big]}},
             {"type": "object", "properties": {big: {"type": "string"}}, "required": [big]},
             {"type": "integer", "minimum": float("inf")}]
    for params in cases:
        tool = {"type": "function", "function": {"name": "f", "parameters": params}}
        t = time.monotonic()
        r = _post(url, "/v1/chat/completions", {"model": "sim", "messages": HI, "tools": [tool]})
        assert r.status_code == 400 and "the sim cannot answer this request" in r.text, r.text[:300]
        assert time.monotonic() - t < 5
    assert _post(url, "/v1/chat/completions", {"model": "sim", "messages": HI, "max_tokens": 2}).status_code == 200
    # within the bounds: the largest answer is at most SCHEMA_NODES values
    with pytest.raises(ValueError, match=f"more than {SCHEMA_NODES} values"):
        _instance(nested, "a0")


def test_a_large_answer_carries_a_bounded_free_text(sim_proc) -> None:
    """A tool call's free text is the answer's words, at most SCHEMA_STRING characters of them, and padded
    so every streamed token still carries a piece."""
    _, url, _ = sim_proc("--ttft-ms", "1", "--itl-ms", "0")
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    r = _post(url, "/v1/chat/completions", {"model": "sim", "messages": HI, "tools": [tool], "max_tokens": 20_000})
    assert r.status_code == 200, r.text[:300]
    args = r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert len(args) == 20_000 and json.loads(args)["w"].startswith("a0 a1 a2") and len(json.loads(args)["w"]) <= 4096


def test_tokenize_a_long_text(sim_proc) -> None:
    """/tokenize numbers every word, as vLLM's, however many (the list is written in pieces)."""
    _, url, _ = sim_proc("--ttft-ms", "1", "--itl-ms", "0")
    for n in (3, 200_001):
        r = _post(url, "/tokenize", {"model": "sim", "prompt": "w " * n}, timeout=60)
        assert r.status_code == 200, r.text[:300]
        assert r.json() == {"tokens": list(range(n)), "count": n, "max_model_len": MAX_MODEL_LEN}
    r = _post(url, "/tokenize", {"model": "sim", "messages": [{"role": "user", "content": "a b"}, "junk"]})
    assert r.json()["count"] == 2
    assert _post(url, "/tokenize", ["not", "an", "object"]).status_code == 400


def test_count_words_is_split() -> None:
    for text in ("", " ", "a", " a b  c ", "ab cd\tef\u3000gh", "x" * 10, "a\x1cb c"):
        for piece in (1, 2, 3, 5, 1 << 20):
            assert _count_words(text, piece) == len(text.split()), (text, piece)


# --- SIGTERM ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [(), ("--stall-after", "2")], ids=["streaming", "stalled"])
def test_sigterm_stops_the_sim_with_streams_open(sim_proc, args: tuple[str, ...]) -> None:
    """`kill` (SIGTERM) while long streams are open (sending, or stalled with the connection held) and a
    request is arriving that asks for 10**9 tokens: exit 0 within a few seconds, no traceback."""
    proc, url, log = sim_proc("--ttft-ms", "1", "--itl-ms", "20", *args)
    streams = [_open_stream(url, {"model": "sim", "messages": HI, "max_tokens": 500_000}) for _ in range(3)]
    u = urlsplit(url)
    late = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    late.request("POST", "/v1/chat/completions", json.dumps({"model": "sim", "messages": HI, "max_tokens": 10**9}),
                 {"Content-Type": "application/json"})
    time.sleep(0.3)  # the sim has that request in hand when the signal comes
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the sim still runs 10 s after SIGTERM: {log.read_text()[-2000:]}")
    took = time.monotonic() - t
    for conn in (*streams, late):
        conn.close()
    err = log.read_text()
    assert code == 0, (code, err[-2000:])
    assert took < 5, f"took {took:.1f} s"
    assert "Traceback" not in err, err[-3000:]


def test_output_len_flag_is_bounded_by_the_sims_context() -> None:
    """--output-len admits every default answer the sim can give (MAX_MODEL_LEN) and no more: the largest
    passes the flag checks and fails only at --port (held by this test), one more names --output-len."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = str(s.getsockname()[1])
        at = invoke_cli("sim", "--output-len", str(MAX_MODEL_LEN), "--port", port)
        over = invoke_cli("sim", "--output-len", str(MAX_MODEL_LEN + 1), "--port", port)
    assert at[0] == 2 and "--port" in at[1] and "--output-len" not in at[1], at
    assert over[0] == 2 and "--output-len" in over[1], over
