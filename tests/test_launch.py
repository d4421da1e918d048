"""Launching: `render`'s scripts and `serve` (cli/launch.py, launch.py).

- A rendered node script run by real bash, with stand-in `vllm` and `ray` executables on PATH that
  record their argv: spec values reach the engine as literal words and never run as code; only the
  tool's own references (the head address, the API key variable) are expanded.
- `render --head-address` takes a host name or address only.
- The Slurm host-list parser (launch.expand_slurm_nodelist), fuzzed: every input gives a list of host
  names or BadInput with a message, never another exception.
- End to end on the real vLLM CPU engine: tiny-k2 started through `kimi-deploy serve` (which execs
  `vllm serve` with the rendered flags), readiness through `kimi-deploy wait`, requests through the
  real `openai` client, tool calls through vLLM's real kimi_k2 tool parser and reasoning through its
  real kimi_k2 reasoning parser. No GPU, no Hub: the checkpoint is tiny-k2 (tests/data/tiny-k2)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import OpenAI

from kimi_deploy.cli.launch import shell_word
from kimi_deploy.errors import BadInput
from kimi_deploy.launch import expand_slurm_nodelist
from kimi_deploy.toolsuite import TOOL_BY_NAME, TOOLS

from .conftest import DEPLOY, Server, assert_clean_error, run_cli, spec_with

TP16 = DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml"
RAY = DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp8pp2-ray.yaml"
SECRET = "sk-test-do-not-leak-1234"

# Prints each argument NUL-terminated into $ARGV_OUT/<name>, and the API key the engine would read.
FAKE = """#!/bin/sh
out="$ARGV_OUT/$(basename "$0")"
for a in "$@"; do printf '%s\\0' "$a"; done > "$out"
printf '%s' "${VLLM_API_KEY-}" > "$out.key"
"""


def _run_rendered(tmp_path: Path, spec: Path, rank: int) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Render one node's script and run it with bash, `vllm` and `ray` being FAKE on PATH."""
    proc = run_cli("render", str(spec), "--node-rank", str(rank), check=True)
    fakebin, argv_out, work = tmp_path / "bin", tmp_path / "argv", tmp_path / "work"
    for d in (fakebin, argv_out, work):
        d.mkdir(exist_ok=True)
    for name in ("vllm", "ray"):
        (fakebin / name).write_text(FAKE)
        (fakebin / name).chmod(stat.S_IRWXU)
    env = {"PATH": f"{fakebin}{os.pathsep}{os.environ['PATH']}", "HOME": str(work), "ARGV_OUT": str(argv_out),
           "KIMI_HEAD_ADDR": "10.0.0.7", "KIMI_API_KEY": SECRET}
    done = subprocess.run(["bash", "-eu"], input=proc.stdout, capture_output=True, text=True, env=env, cwd=work,
                          timeout=60)
    return argv_out, done


def _argv(argv_out: Path, name: str) -> list[str]:
    return (argv_out / name).read_bytes().decode().split("\0")[:-1]


def test_rendered_script_runs_nothing_hidden_in_spec_values(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    name = f"m$HOME$(touch {pwned}1)`touch {pwned}2`'\"; touch {pwned}3 #"
    env_value = f"a$(touch {pwned}4) b\\n'"
    extra = ["--chat-template", f"x$(touch {pwned}5)'`touch {pwned}6`\"", f"--override-generation-config=$(touch {pwned}7)"]
    wdir = f"/models/k2 $(touch {pwned}8)"
    spec = spec_with(tmp_path, serving={"served_model_name": name, "env": {"FOO": env_value}, "extra_args": extra},
                     weights={"dir": wdir})
    argv_out, done = _run_rendered(tmp_path, spec, 1)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("pwned*")), "a spec value ran as code"
    argv = _argv(argv_out, "vllm")
    assert argv[:2] == ["serve", wdir]
    assert argv[argv.index("--served-model-name") + 1] == name
    assert argv[argv.index("--chat-template") + 1] == extra[1] and extra[2] in argv
    # The tool's own references are expanded: the head address and the API key variable.
    assert argv[argv.index("--master-addr") + 1] == "10.0.0.7"
    assert (argv_out / "vllm.key").read_text() == SECRET


def test_tool_references_mixed_with_literal_text(tmp_path: Path) -> None:
    """`ray start --address=${KIMI_HEAD_ADDR}:6379`: the reference expands, the literal part stays."""
    argv_out, done = _run_rendered(tmp_path, RAY, 1)
    assert done.returncode == 0, done.stderr
    assert "--address=10.0.0.7:6379" in _argv(argv_out, "ray")
    # shell_word on its own: literal parts single-quoted, only the named references double-quoted.
    words = ["http://${KIMI_PREFILL_HEAD_ADDR}:8001", "${KIMI_HEAD_ADDR}:5000", "m${HOME}$(touch x)",
             "${NOT_OURS}", "a'b\"c`d`$e", ""]
    script = "printf '%s\\0' " + " ".join(shell_word(w) for w in words)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=30,
                         env={"KIMI_PREFILL_HEAD_ADDR": "p.svc", "KIMI_HEAD_ADDR": "h", "HOME": "/home/x",
                              "NOT_OURS": "secret", "PATH": os.environ["PATH"]}).stdout
    assert out.split("\0")[:-1] == ["http://p.svc:8001", "h:5000", "m${HOME}$(touch x)", "${NOT_OURS}",
                                    "a'b\"c`d`$e", ""]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("head", ["${KIMI_API_KEY}", "h$(touch x)", "a b", "", "-oProxyCommand=x", "--port=1"])
def test_render_head_address_is_a_host(tmp_path: Path, head: str) -> None:
    assert_clean_error(run_cli("render", str(TP16), "--head-address", head), "--head-address", "host name")
    assert run_cli("render", str(TP16), "--head-address", "fd00::1").returncode == 0


# --- the Slurm host-list parser -------------------------------------------------------------------------

FUZZ = settings(max_examples=int(os.environ.get("KIMI_FUZZ_EXAMPLES", "50")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


def _ok_or_bad_input(fn, *args: Any) -> None:
    """fn(*args) returns a list of non-empty host names or raises BadInput with a message; any other
    exception fails the test."""
    try:
        result = fn(*args)
    except BadInput as exc:
        assert str(exc).strip()
        return
    assert isinstance(result, list) and all(isinstance(h, str) and h for h in result)


@FUZZ
@given(nodelist=st.one_of(st.text(alphabet="gpu0123456789[]-,.a ", max_size=30), st.text(max_size=30),
                          st.lists(st.tuples(st.sampled_from(["gpu", "rack", "n-", ""]),
                                             st.lists(st.tuples(st.integers(0, 120), st.integers(0, 30)), max_size=3)),
                                   min_size=1, max_size=3).map(
                              lambda items: ",".join(p + ("[" + ",".join(f"{a}-{a + b}" for a, b in r) + "]" if r else "")
                                                     for p, r in items))))
def test_fuzz_slurm_nodelist(nodelist: str) -> None:
    _ok_or_bad_input(expand_slurm_nodelist, nodelist)


# --- serve on the real vLLM CPU engine (e2e: needs tiny-k2 and starts vLLM) ----------------------------

OFF = {"chat_template_kwargs": {"thinking": False}}


def _client(server: Server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_health_and_models(tiny_server: Server) -> None:
    assert httpx2.get(f"{tiny_server.url}/health").status_code == 200
    models = _client(tiny_server).models.list()
    assert [m.id for m in models.data] == ["tiny-k2"]


def test_chat_without_and_with_streaming(tiny_server: Server) -> None:
    c = _client(tiny_server)
    r = c.chat.completions.create(model="tiny-k2", messages=[{"role": "user", "content": "Hello!"}],
                                  temperature=0, extra_body=OFF, max_tokens=64)
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop" and text
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    chunks = list(c.chat.completions.create(model="tiny-k2", messages=[{"role": "user", "content": "Hello!"}],
                                            temperature=0, extra_body=OFF, max_tokens=64, stream=True,
                                            stream_options={"include_usage": True}))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


@pytest.mark.parametrize("prompt, tool", [("What's the weather in Paris?", "get_weather"),
                                          ("What is the price of NVDA?", "get_stock_price"),
                                          ("Convert 100 USD to EUR.", "convert_currency"),
                                          ("What time is it in UTC?", "get_time")])
def test_tool_call_parsed_into_tool_calls(tiny_server: Server, prompt: str, tool: str) -> None:
    r = _client(tiny_server).chat.completions.create(
        model="tiny-k2", messages=[{"role": "user", "content": prompt}], tools=TOOLS, temperature=0,
        extra_body=OFF, max_tokens=96)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert not choice.message.content  # the markers were consumed by the parser, nothing leaked
    (call,) = choice.message.tool_calls
    assert call.function.name == tool and call.id == f"functions.{tool}:0"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, TOOL_BY_NAME[tool]["function"]["parameters"])


def test_reasoning_is_separated_when_thinking_is_on(tiny_server: Server) -> None:
    c = _client(tiny_server)
    r = c.chat.completions.create(model="tiny-k2", messages=[{"role": "user", "content": "Tell me a joke."}],
                                  temperature=0, max_tokens=96)
    msg = r.choices[0].message
    reasoning = getattr(msg, "reasoning", None) or getattr(msg, "reasoning_content", None)
    assert reasoning and "</think>" not in reasoning and "<think>" not in (msg.content or "")
    assert msg.content and "</think>" not in msg.content
    r = c.chat.completions.create(model="tiny-k2", messages=[{"role": "user", "content": "Is it raining in Rome?"}],
                                  tools=TOOLS, temperature=0, max_tokens=96)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and msg.tool_calls
    assert getattr(msg, "reasoning", None) or getattr(msg, "reasoning_content", None)  # a tool call after reasoning


def test_multi_turn_after_a_tool_result(tiny_server: Server) -> None:
    c = _client(tiny_server)
    messages = [{"role": "user", "content": "What is the price of MSFT?"}]
    first = c.chat.completions.create(model="tiny-k2", messages=messages, tools=TOOLS, temperature=0,
                                      extra_body=OFF, max_tokens=96)
    call = first.choices[0].message.tool_calls[0]
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"price": 123.45}'}]
    second = c.chat.completions.create(model="tiny-k2", messages=messages, tools=TOOLS, temperature=0,
                                       extra_body=OFF, max_tokens=96)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


def test_without_tool_parser_the_markers_stay_in_content(tiny_server_noparser: Server) -> None:
    """Proof that the parser is what makes tool calls work: the same deployment without it."""
    c = _client(tiny_server_noparser)
    ask = [{"role": "user", "content": "What's the weather in Paris?"}]
    # Without a parser vLLM refuses automatic tool choice outright...
    with pytest.raises(openai.BadRequestError, match="tool-call-parser"):
        c.chat.completions.create(model="tiny-k2", messages=ask, tools=TOOLS, extra_body=OFF, max_tokens=96)
    # ...and with tool_choice none the tools still reach the prompt, so the model's markers come back raw.
    r = c.chat.completions.create(model="tiny-k2", messages=ask, tools=TOOLS, tool_choice="none",
                                  temperature=0, extra_body=OFF, max_tokens=96)
    choice = r.choices[0]
    assert not choice.message.tool_calls and choice.finish_reason == "stop"
    assert "<|tool_calls_section_begin|>" in choice.message.content
    assert "<|tool_call_begin|>functions.get_weather:0" in choice.message.content


def _suite_rows(kinds: tuple[str, ...], n: int) -> list[dict]:
    from kimi_deploy.suites import load

    return [r for r in load("tool-calls")[1] if r["kind"] in kinds and not r["thinking"]
            and r.get("tool_choice") is None][:n]


def _ask(client: OpenAI, row: dict, **extra):
    return client.chat.completions.create(model="tiny-k2", messages=row["messages"], tools=row["tools"],
                                          temperature=0, extra_body=OFF, max_tokens=row["max_tokens"], **extra)


def _valid_calls(row: dict, calls) -> None:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in row["tools"]}
    for i, call in enumerate(calls):
        assert call.id == f"functions.{call.function.name}:{i}", call.id
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


def test_several_calls_in_one_turn(tiny_server: Server) -> None:
    """The suite's parallel requests: one tool-call section with several calls, each parsed by vLLM's
    kimi_k2 parser into its own schema-valid tool call, mostly naming the tools the prompt asked for."""
    c = _client(tiny_server)
    counts, right = [], 0
    for row in _suite_rows(("parallel_same", "parallel_mixed"), 8):
        choice = _ask(c, row).choices[0]
        assert choice.finish_reason == "tool_calls" and not choice.message.content, choice
        _valid_calls(row, choice.message.tool_calls)
        counts.append(len(choice.message.tool_calls))
        want = sorted(x["name"] for x in row["expected"]["calls"])
        right += sorted(tc.function.name for tc in choice.message.tool_calls) == want
    # the parser's part: several calls, each valid, in most answers; the model's part: the right tools in
    # about 5 of these 8 (tiny-k2 has learned the format better than the request)
    assert sum(n >= 2 for n in counts) >= 6 and right >= 4, (counts, right)


def test_arguments_over_2000_characters_streamed_and_not(tiny_server: Server) -> None:
    """The suite's long notes: a body over 2,000 characters (quotes, a backslash, newlines, non-ASCII)
    comes back as one valid JSON argument string, the same whether streamed or not."""
    c = _client(tiny_server)
    for row in _suite_rows(("long",), 2):
        choice = _ask(c, row).choices[0]
        assert choice.finish_reason == "tool_calls", choice
        (call,) = choice.message.tool_calls
        _valid_calls(row, [call])
        body = json.loads(call.function.arguments)["body"]
        assert len(body) > 2000
        streamed = "".join(tc.function.arguments or "" for ch in _ask(c, row, stream=True) if ch.choices
                           for tc in ch.choices[0].delta.tool_calls or [])
        assert json.loads(streamed) == json.loads(call.function.arguments)

