"""`kimi-deploy compare` end to end on real vLLM tiny-k2 endpoints (never the hosted API): a deployment
compared against itself passes with tool-call F1 = 1.0; a deployment without the tool parser fails with the finding
that explains why; a recorded reference replays offline; resumable records (--resume), replaced ones
(--overwrite), and a previous run refused without either; answers too large to read, store or report;
bad input (non-finite numbers are exit 2 naming the flag); retries against a stalled server end within
--request-timeout; and the hosted
adapter's request shapes checked against Moonshot's published API behaviour (platform.kimi.ai/docs/api/
models-overview parameter table; github.com/MoonshotAI/Kimi-K2.5 README.md on thinking on/off)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

import httpx2
import pytest

from kimi_deploy.compare.adapters import normalize_tool_ids, request_kwargs
from kimi_deploy.suites import builtin, generate, load
from kimi_deploy.endpoint import Endpoint, RetryPolicy, served_models
from kimi_deploy.errors import BadInput

from .conftest import (MAX_LOAD_FLIPS, Server, SuiteRun, assert_clean_error, assert_passes_but_for_load_flips,
                       invoke_cli, run_cli, run_cli_timed, serving, start_sim)

CONTRACT = {"suite", "local", "reference", "n", "tool_call_f1", "schema_accuracy", "findings", "thresholds", "verdict"}


def _compare(local: Server, out: Path, *args: str):
    return run_cli("compare", "--local", local.url, "--output", str(out), *args, timeout=600)


def test_identical_deployments_pass(tiny_server: Server, tmp_path: Path) -> None:
    """One deployment as its own reference (what two identical deployments are to compare)."""
    out = tmp_path / "same"
    proc = _compare(tiny_server, out, "--reference", f"{tiny_server.url}/v1", "--suite", "tool-calls-flat")
    summary = json.loads((out / "summary.json").read_text())
    assert CONTRACT <= set(summary)
    # identical but for the rows a batch flips (conftest.load_flips), between the two sides as well
    assert_passes_but_for_load_flips(proc, summary)
    near = MAX_LOAD_FLIPS
    assert summary["tool_call_f1"] >= 1 - near
    n = len(load("tool-calls-flat")[1])
    assert summary["n"] == n == 48
    assert abs(summary["schema_accuracy"]["local"] - summary["schema_accuracy"]["reference"]) <= near
    assert min(summary["schema_accuracy"].values()) >= 0.9
    # the rows' expectations are checked on both sides; identical deployments miss the same ones
    assert summary["checks"]["expectation_regressions"]["value"] <= near
    assert abs(summary["expectations_met"]["local"] - summary["expectations_met"]["reference"]) <= near
    assert min(summary["expectations_met"].values()) > 0
    assert summary["confusion"]["tp"] > 10 and summary["argument_agreement"] >= 1 - near
    assert summary["reference"]["kind"] == "self-hosted" and summary["thresholds"]["tool_call_f1"] == 0.80
    assert (out / "report.md").read_text().startswith(f"# kimi-deploy compare: tool-calls-flat — {summary['verdict']}")
    assert "<table>" in (out / "report.html").read_text()
    for name in ("local.jsonl", "reference.jsonl"):
        lines = (out / name).read_text().splitlines()
        assert len(lines) == n and len({json.loads(x)["key"] for x in lines}) == n

    # replay: the recording stands in for the reference, no reference endpoint involved
    replay = _compare(tiny_server, tmp_path / "replay", "--reference-file", str(out / "reference.jsonl"),
                      "--suite", "tool-calls-flat")
    again = json.loads((tmp_path / "replay" / "summary.json").read_text())
    assert_passes_but_for_load_flips(replay, again)
    assert again["tool_call_f1"] >= 1 - near and again["reference"]["recording"].endswith("reference.jsonl")


def test_the_full_tool_call_suite_end_to_end(tiny_suite_run: SuiteRun) -> None:
    """All 316 rows (nested schemas, long and non-ASCII arguments, several calls, tool results, every
    tool_choice) through real vLLM, every row streamed and non-streamed at the default concurrency (32),
    with nothing but the suite named: a healthy deployment against itself PASSes, agrees on every answer
    both ways (but the few a batch flips: conftest.load_flips), counts prompt tokens as its template does,
    and no row is an expectation regression.
    tiny-k2 answers the harder rows through the real parser: several calls in one turn, notes over 2,000
    characters."""
    proc, s, out = tiny_suite_run.proc, tiny_suite_run.summary, tiny_suite_run.out
    # local and reference are the one server, answering in different batches: the rows a batch flips
    # (conftest.load_flips) may differ between them as between streamed and not, nothing else
    flips = assert_passes_but_for_load_flips(proc, s)
    near = MAX_LOAD_FLIPS
    assert s["n"] == len(load("tool-calls")[1]) >= 300
    assert s["errors"] == {"local": 0, "reference": 0}
    assert s["tool_call_f1"] >= 1 - near and s["argument_agreement"] >= 1 - near
    assert abs(s["schema_accuracy"]["local"] - s["schema_accuracy"]["reference"]) <= near
    assert min(s["schema_accuracy"].values()) >= 0.9
    assert s["checks"]["expectation_regressions"]["value"] <= near
    # tiny-k2 has learned the format and the schemas, not always the values: about a third of the rows are
    # right in every value the prompt fixes, the same third on both sides
    assert abs(s["expectations_met"]["local"] - s["expectations_met"]["reference"]) <= near
    assert min(s["expectations_met"].values()) > 0.25
    assert set(s["expectations_by_kind"]) >= {"long", "parallel_same", "choice_named", "choice_none", "multi_turn"}
    assert s["expectations_by_kind"]["choice_none"]["local"] == 20  # tool_choice none: no call came back
    local = {json.loads(x)["id"]: json.loads(x)["response"] for x in (out / "local.jsonl").read_text().splitlines()}
    assert sum(len(r["tool_calls"]) >= 2 for r in local.values()) >= 20
    assert sum(any(len(c["arguments"]) > 2000 for c in r["tool_calls"]) for r in local.values()) >= 10
    # streamed and not, under load
    assert s["concurrency"] == 32
    assert s["streaming"]["compared"] == s["n"]
    assert s["checks"]["stream_disagreements_local"]["value"] == len(flips)
    assert len((out / "local-stream.jsonl").read_text().splitlines()) == s["n"]
    acc = s["token_accounting"]
    assert acc["template_count"]["available"], acc["template_count"]
    for other in ("vs_reference", "vs_template"):  # the same template and tokenizer: the same count
        assert acc["prompt_tokens"][other]["tokens"]["nonzero"] == 0, acc["prompt_tokens"]
        assert acc["prompt_tokens"][other]["tokens"]["n"] == s["n"]
    assert s["checks"]["prompt_token_drift_template"]["ok"] and s["preflight"]["status"] == "skipped"
    assert set(s["thresholds"]) >= {"stream_disagreements", "prompt_token_drift", "sampling_mismatches"}
    assert {"streaming", "token_accounting", "preflight"} <= set(s["field_docs"])


def test_thinking_suite_reasoning_is_separated(tiny_server: Server, tmp_path: Path) -> None:
    proc = _compare(tiny_server, tmp_path / "t", "--reference", f"{tiny_server.url}/v1", "--suite", "thinking")
    s = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert_passes_but_for_load_flips(proc, s)
    kinds = {f["kind"] for f in s["findings"]}
    assert not {"missing_reasoning_local", "leaked_special_tokens_local"} & kinds
    assert s["finish_reasons"]["local"].get("tool_calls", 0) > 0  # tool calls after reasoning


def test_no_tool_parser_fails_with_the_reason(tiny_server_noparser: Server, tiny_server: Server,
                                              tmp_path: Path) -> None:
    out = tmp_path / "noparser"
    proc = _compare(tiny_server_noparser, out, "--reference", f"{tiny_server.url}/v1", "--suite", "tool-calls-flat")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["verdict"] == "FAIL" and s["tool_call_f1"] < 0.8
    kinds = {f["kind"]: f for f in s["findings"]}
    assert "tools_refused_markers_in_content" in kinds
    assert "<|tool_call_begin|>" in kinds["tools_refused_markers_in_content"]["example"]["probe_content"]
    assert "tool-call-parser" in kinds["local_error"]["example"]["error"]
    assert "FAIL" in proc.stdout and "tools_refused_markers_in_content" in (out / "report.md").read_text()


def test_runs_resume_without_asking_twice(tiny_server: Server, tmp_path: Path) -> None:
    out = tmp_path / "resume"
    ref = ("--reference", f"{tiny_server.url}/v1", "--suite", "chat")
    assert _compare(tiny_server, out, *ref, "--limit", "5").returncode == 0
    assert len((out / "local.jsonl").read_text().splitlines()) == 5
    (out / "local.jsonl").write_text((out / "local.jsonl").read_text() + '{"key": "cut-off')  # an interrupted line
    assert _compare(tiny_server, out, *ref, "--resume").returncode == 0
    keys = [json.loads(x)["key"] for x in (out / "local.jsonl").read_text().splitlines() if x.endswith("}")]
    assert (out / "local.jsonl").read_text().count("cut-off") == 1  # the broken line is kept, not built upon
    assert len(keys) == len(set(keys)) == 17


def test_bad_input(tiny_server: Server, tmp_path: Path) -> None:
    env_no_key = {k: v for k, v in __import__("os").environ.items() if k != "MOONSHOT_API_KEY"}
    out = tmp_path / "bad"
    assert_clean_error(run_cli("compare", "--local", tiny_server.url, "--output", str(out), env=env_no_key),
                       "MOONSHOT_API_KEY", "not set")
    assert_clean_error(_compare(tiny_server, out, "--reference", f"{tiny_server.url}/v1", "--model", "kimi-k9"),
                       "--model", "not 'kimi-k9'")
    assert_clean_error(run_cli("compare", "--local", "http://127.0.0.1:9", "--model", "x", "--reference",
                               "http://127.0.0.1:9/v1", "--output", str(out)), "unreachable")
    assert_clean_error(_compare(tiny_server, out, "--reference", f"{tiny_server.url}/v1", "--suite", "nope"),
                       "--suite", "unknown suite")
    # a recording of another suite is refused and left intact
    rec = tmp_path / "rec"
    assert _compare(tiny_server, rec, "--reference", f"{tiny_server.url}/v1", "--suite", "chat",
                    "--limit", "2").returncode == 0
    before = (rec / "reference.jsonl").read_text()
    assert_clean_error(_compare(tiny_server, tmp_path / "other", "--reference-file", str(rec / "reference.jsonl"),
                                "--suite", "tool-calls"), "recorded for suite 'chat'")
    assert (rec / "reference.jsonl").read_text() == before
    assert_clean_error(_compare(tiny_server, out, "--reference", f"{tiny_server.url}/v1", "--threshold", "f2=1"),
                       "--threshold", "unknown threshold")


def test_hosted_adapter_request_shapes() -> None:
    row = {"id": "x", "thinking": False, "max_tokens": 64, "tools": [{"type": "function", "function": {"name": "f"}}],
           "messages": [{"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "", "tool_calls": [
                            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                        {"role": "tool", "tool_call_id": "call_1", "content": "{}"}]}
    hosted = Endpoint.from_url("https://api.moonshot.ai/v1", flag="--reference")
    req = request_kwargs(hosted, hosted.model_id("kimi-k2.5"), row, temperature=0.6, max_tokens=None)
    assert hosted.hosted and req["model"] == "kimi-k2.5"
    assert "temperature" not in req  # K2.5 sampling "cannot be modified" on the hosted API
    assert req["extra_body"] == {"thinking": {"type": "disabled"}}
    assert req["messages"][1]["tool_calls"][0]["id"] == "functions.get_weather:0"
    assert req["messages"][2]["tool_call_id"] == "functions.get_weather:0"
    # K2-Instruct-0905's hosted id was retired: the name is not mapped, and an id the catalog does not
    # know as hosted gets no special treatment (the temperature and the thinking switch are sent)
    k2 = hosted.model_id("kimi-k2-instruct-0905")
    assert k2 == "kimi-k2-instruct-0905" and request_kwargs(hosted, k2, row, 0.6, None)["temperature"] == 0.6
    cn = Endpoint.from_url("https://api.moonshot.cn/", flag="--reference")
    assert "extra_body" not in request_kwargs(cn, "kimi-k2.7-code", row, None, None)  # cannot be turned off
    local = Endpoint.from_url("http://h:8000/v1", flag="--local", kind="self-hosted")
    assert local.model_id("kimi-k2-instruct-0905") == "kimi-k2-instruct-0905"
    assert request_kwargs(local, "kimi-k2.5", row, 0.6, None)["extra_body"] == {"chat_template_kwargs": {"thinking": False}}
    assert normalize_tool_ids([{"role": "assistant", "tool_calls": [
        {"id": "functions.a:3", "function": {"name": "a"}}]}])[0]["tool_calls"][0]["id"] == "functions.a:3"


def test_suites_are_in_sync_with_the_generator(tmp_path: Path) -> None:
    for p in generate(tmp_path):
        assert p.read_text() == builtin(p.stem).read_text(), f"regenerate {p.name}"


# --- the endpoint layer: URLs through the real CLI, thinking fields, headers, retries ----------------

@pytest.fixture
def two_sims() -> Iterator[tuple[str, str]]:
    """Two `kimi-deploy sim` servers, a stand-in local and reference."""
    (pa, a), (pb, b) = start_sim("--ttft-ms", "1", "--itl-ms", "1"), start_sim("--ttft-ms", "1", "--itl-ms", "1")
    yield a, b
    for p in (pa, pb):
        p.terminate()
        p.wait(timeout=10)


def test_local_and_reference_url_forms(two_sims, tmp_path: Path) -> None:
    a, b = two_sims
    for i, (local, ref) in enumerate(((a, b + "/v1"), (a + "/v1/", b + "/"))):
        out = tmp_path / f"c{i}"
        proc = run_cli("compare", "--local", local, "--reference", ref, "--suite", "chat", "--limit", "2",
                       "--output", str(out))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        s = json.loads((out / "summary.json").read_text())
        assert s["local"]["url"] == a + "/v1" and s["reference"]["url"] == b + "/v1"
        assert s["local"]["model"] == "sim" and s["reference"]["kind"] == "self-hosted" and s["n"] == 2
    for flag, bad in (("--local", "ftp://127.0.0.1:1"), ("--reference", "ws://127.0.0.1:1/v1"), ("--local", "h:80")):
        args = {"--local": a, "--reference": b, flag: bad}
        assert_clean_error(run_cli("compare", "--local", args["--local"], "--reference", args["--reference"],
                                   "--output", str(tmp_path / "bad")), flag, "not an http(s) URL")
    env = {k: v for k, v in os.environ.items() if k != "MOONSHOT_API_KEY"}
    assert_clean_error(run_cli("compare", "--local", a, "--reference", "https://api.moonshot.cn/v1/", "--output",
                               str(tmp_path / "bad"), env=env), "--reference-key-env", "MOONSHOT_API_KEY", "not set")


def test_thinking_fields_per_kind_and_model() -> None:
    hosted = Endpoint.from_url("https://api.moonshot.ai", flag="--reference")
    assert hosted.kind == "moonshot" and hosted.v1 == "https://api.moonshot.ai/v1"
    for model in ("kimi-k2.7-code", "kimi-k3"):  # always thinking (catalog): `disabled` is refused, not sent
        assert hosted.thinking_fields(model, False) == {} and hosted.thinking_fields(model, True) == {}
    assert hosted.thinking_fields("kimi-k2.5", False) == {"thinking": {"type": "disabled"}}
    assert hosted.thinking_fields("kimi-k2.5", True) == {} and hosted.thinking_fields("kimi-k2.5", None) == {}
    gateway = Endpoint.from_url("http://gw:8080/moonshot/v1", flag="--reference", kind="moonshot")
    assert gateway.hosted and gateway.root == "http://gw:8080/moonshot"
    local = Endpoint.from_url("http://h:8000/v1/", flag="--local")
    assert local.kind == "self-hosted" and local.root == "http://h:8000"
    assert local.thinking_fields("kimi-k2-thinking", False) == {"chat_template_kwargs": {"thinking": False}}
    assert local.thinking_fields("kimi-k2.5", True) == {"chat_template_kwargs": {"thinking": True}}
    assert local.thinking_fields("kimi-k2.5", None) == {}
    assert hosted.sampling_fields("kimi-k2.6", 0.3) == {} and local.sampling_fields("kimi-k2.6", 0.3) == {"temperature": 0.3}


def test_the_key_never_shows_in_repr_str_or_facts() -> None:
    secret = "sk-kd-unit-93bd1e"
    ep = Endpoint.from_url("http://h:8000", flag="--local", api_key_env="KD_KEY", env={"KD_KEY": secret})
    h = ep.headers("application/json")
    assert h["Authorization"] == f"Bearer {secret}" and h["Content-Type"] == "application/json"
    for text in (repr(ep), str(ep), f"{ep}", repr(h), str(h), f"{h}", json.dumps(ep.facts()), repr(ep.api_key)):
        assert secret not in text, text
    assert "KD_KEY" in json.dumps(ep.facts())
    assert "Authorization" not in Endpoint.from_url("http://h:8000", flag="--local").headers()
    with pytest.raises(BadInput, match="--api-key-env.*KD_KEY is not set"):
        Endpoint.from_url("http://h:8000", flag="--local", api_key_env="KD_KEY", env={})
    # a self-hosted reference may go without a key; Moonshot's API may not
    assert Endpoint.from_url("http://h", flag="--reference", api_key_env="K", key_optional=True, env={}).api_key is None
    with pytest.raises(BadInput, match="--reference-key-env"):
        Endpoint.from_url("https://api.moonshot.ai/v1", flag="--reference", api_key_env="K", key_optional=True,
                          key_flag="--reference-key-env", env={})


@pytest.fixture
def flaky_models() -> Iterator[tuple[str, dict]]:
    """A real HTTP server whose /v1/models answers with the statuses queued in state["script"] (then
    200), recording the Authorization header of every request."""
    from aiohttp import web

    state: dict = {"script": [], "auth": []}

    async def models(request: web.Request) -> web.Response:
        state["auth"].append(request.headers.get("Authorization"))
        status = state["script"].pop(0) if state["script"] else 200
        return web.json_response({"data": [{"id": "m"}]} if status == 200 else {"error": "x"}, status=status)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    with serving(app) as url:
        yield url, state


def test_retry_policy_on_a_real_server(flaky_models) -> None:
    url, state = flaky_models
    ep = Endpoint.from_url(url, flag="--local", api_key_env="K", env={"K": "sk-kd-retry-41c7"})
    fast = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.02)
    state["script"] = [503, 429]
    assert served_models(ep, retry=fast) == ["m"] and len(state["auth"]) == 3  # two retried, the third answered
    assert set(state["auth"]) == {"Bearer sk-kd-retry-41c7"}  # the one header builder's credential reached the server
    state["auth"].clear()
    state["script"] = [401, 200]
    with pytest.raises(BadInput, match="--local.*401.*check the API key in K"):
        served_models(ep, retry=fast)
    assert len(state["auth"]) == 1  # a rejected key is not retried
    state["script"] = [500, 502, 504]
    with pytest.raises(BadInput, match="--local.*504"):
        served_models(ep, retry=fast)
    assert not fast.retryable(ValueError()) and fast.retryable(httpx2.ConnectError("refused"))
    assert 0.01 <= fast.delay(1) <= 0.0125 and fast.delay(5) <= 0.025  # backoff with jitter, capped


# --- bounded time and bad flags -----------------------------------------------------------------------
# Against tests/faultserver.py's stalling server: retries end within --request-timeout, each request's
# error is recorded and the verdict is FAIL. Non-finite numbers are exit 2 naming the flag.

def _summary(d: Path) -> dict:
    return json.loads((d / "summary.json").read_text())


def test_compare_retries_end_within_the_request_timeout(fault, tmp_path: Path) -> None:
    srv = fault("stall")
    out = tmp_path / "c"
    proc = run_cli_timed("compare", "--local", srv.url, "--reference", srv.url, "--reference-kind", "self-hosted",
                         "--model", "m", "--reference-model", "m", "--suite", "chat", "--limit", "2", "--output", str(out),
                         "--stall-timeout", "1", "--request-timeout", "4", limit=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    errors = [json.loads(x)["response"]["error"] for x in (out / "local.jsonl").read_text().splitlines()]
    assert len(errors) == 2 and all(e and ("stalled" in e or "--request-timeout" in e) for e in errors), errors
    assert _summary(out)["verdict"] == "FAIL"


def test_compare_flags_refused(tmp_path: Path) -> None:
    base = ("compare", "--local", "http://127.0.0.1:9", "--output", str(tmp_path / "c"))
    for args, flag in ((("--rate", "nan"), "--rate"), (("--temperature", "inf"), "--temperature"),
                       (("--request-timeout", "inf"), "--request-timeout"), (("--stall-timeout", "nan"), "--stall-timeout"),
                       (("--threshold", "tool_call_f1=nan"), "--threshold")):
        code, msg = invoke_cli(*base, *args)
        assert code == 2 and flag in msg, (args, code, msg)



# --- answers too large: bounded reads, clipped records and reports -------------------------------------

class HugeToolCalls:
    """An OpenAI-looking server (aiohttp, real HTTP) whose every answer is one tool call with the arguments
    {"body": "x" * chars + tail}: non-streamed one JSON body, streamed in deltas of 1 MiB of arguments. With
    `endless`, the arguments never end: the non-streamed body announces a Content-Length of 1 TiB, the
    stream goes on until the client hangs up. `asked` counts chat requests, streamed and not."""

    PIECE = 2**20

    def __init__(self, chars: int, tail: str = "", endless: bool = False) -> None:
        self.args = json.dumps({"body": "x" * chars + tail}) if not endless else ""
        self.endless = endless
        self.asked = {"stream": 0, "plain": 0}

    def app(self):  # type: ignore[no-untyped-def]
        from aiohttp import web

        async def models(request: web.Request) -> web.Response:
            return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

        async def chat(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            stream = bool(body.get("stream"))
            self.asked["stream" if stream else "plain"] += 1
            call = {"id": "functions.get_weather:0", "type": "function", "function": {"name": "get_weather"}}
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream" if stream else "application/json"})
            if self.endless and not stream:
                resp.content_length = 2**40
            await resp.prepare(request)
            if stream:
                async def event(delta: dict, finish: str | None = None, usage: dict | None = None) -> None:
                    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "usage": usage,
                             "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
                    await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
                await event({"role": "assistant", "tool_calls": [{"index": 0, **call, "function": {
                    "name": "get_weather", "arguments": ""}}]})
                if self.endless:
                    while True:
                        await event({"tool_calls": [{"index": 0, "function": {"arguments": "x" * self.PIECE}}]})
                for i in range(0, len(self.args), self.PIECE):
                    await event({"tool_calls": [{"index": 0, "function": {"arguments": self.args[i:i + self.PIECE]}}]})
                await event({}, "tool_calls")
                await event({}, usage={"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14})
                await resp.write(b"data: [DONE]\n\n")
                return resp
            if self.endless:
                while True:
                    await resp.write(b" " * self.PIECE)
            message = {"role": "assistant", "content": None,
                       "tool_calls": [{**call, "function": {"name": "get_weather", "arguments": "ARGS"}}]}
            text = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                               "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                               "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}})
            head, tail = text.split('"ARGS"')
            escaped = json.dumps(self.args)
            await resp.write(head.encode())
            for i in range(0, len(escaped), self.PIECE):
                await resp.write(escaped[i:i + self.PIECE].encode())
            await resp.write(tail.encode())
            return resp

        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/chat/completions", chat)
        return app


def _ran(proc: subprocess.CompletedProcess[str], *codes: int) -> None:
    """A run that ended with a verdict (PASS or FAIL, or one of `codes`), not an error."""
    assert proc.returncode in (codes or (0, 1)), proc.stdout[-3000:] + proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert "verdict:" in proc.stdout, proc.stdout[-3000:]


def _size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def test_huge_tool_arguments_are_scored_whole_and_stored_clipped(tmp_path: Path) -> None:
    """6 MB tool arguments, streamed and not, that differ between local and reference only in their last
    character: scored whole (the arguments disagree, streamed and non-streamed agree), while the output
    directory stays small: the records keep 64 Ki characters of them and say how long they were,
    summary.json and the reports 4 Ki saying so. A resumed run asks the clipped rows again; a replayed
    recording gives a clipped reference answer an error saying why instead of scoring it."""
    from kimi_deploy.compare.limits import MAX_FIELD_CHARS

    chars = 6_000_000
    local, ref = HugeToolCalls(chars, "a"), HugeToolCalls(chars, "b")
    out = tmp_path / "c"
    with serving(local.app()) as lurl, serving(ref.app()) as rurl:
        base = ("compare", "--local", lurl, "--no-preflight", "--suite", "chat", "--limit", "1", "--output", str(out))
        proc = run_cli_timed(*base, "--reference", rurl, limit=90)
        _ran(proc)
        assert _size(out) < 1_000_000, {p.name: p.stat().st_size for p in out.iterdir()}
        full = len(local.args)
        for name in ("local.jsonl", "local-stream.jsonl", "reference.jsonl"):
            (rec,) = _records(out / name)
            assert rec["clipped"] == {"tool_calls[0].arguments": full}, (name, rec.get("clipped"))
            assert len(rec["response"]["tool_calls"][0]["arguments"]) == MAX_FIELD_CHARS
            assert rec["response"]["error"] is None and rec["response"]["finish_reason"] == "tool_calls"
        s = json.loads((out / "summary.json").read_text())
        assert s["errors"] == {"local": 0, "reference": 0}
        assert s["argument_agreement"] == 0.0  # "...a" against "...b": the whole arguments were compared
        assert s["streaming"]["compared"] == 1 and s["streaming"]["disagreements"] == []
        shown = next(f for f in s["findings"] if f["kind"] == "argument_disagreement")["example"]["local"][0]
        assert shown["arguments"].endswith(f"... [clipped: {full:,} characters in all]")
        assert f"[clipped: {full:,} characters in all]" in (out / "report.md").read_text()

        # resumed: a clipped record is not the whole answer, so its row is asked again
        asked = dict(local.asked)
        _ran(run_cli_timed(*base, "--reference", rurl, "--resume", limit=90))
        assert local.asked == {"stream": asked["stream"] + 1, "plain": asked["plain"] + 1}

        # replayed: the cut reference answer is that row's error, with the reason
        replay = tmp_path / "r"
        proc = run_cli_timed("compare", "--local", lurl, "--no-preflight", "--suite", "chat", "--limit", "1",
                             "--no-stream", "--reference-file", str(out / "reference.jsonl"), "--output",
                             str(replay), limit=90)
    _ran(proc)
    s = json.loads((replay / "summary.json").read_text())
    err = next(f for f in s["findings"] if f["kind"] == "reference_error")["example"]["error"]
    assert "clipped when it was recorded" in err and f"tool_calls[0].arguments ({full:,})" in err


def test_a_record_is_scrubbed_before_it_is_cut() -> None:
    """A key that an answer quotes right at the cut is masked whole, never left as its first characters;
    every cut is named with the whole length, and the answer's budget is shared in field order."""
    from kimi_deploy.compare.limits import MAX_ANSWER_CHARS, MAX_FIELD_CHARS, MAX_ITEMS, clip_response

    secret = "sk-kd-clip-5e2b9a7731"
    content = "x" * (MAX_FIELD_CHARS - 5) + secret + "y" * 10
    calls = [{"id": f"c{i}", "name": "f", "arguments": "z" * MAX_FIELD_CHARS} for i in range(MAX_ITEMS + 6)]
    answer = {"id": "r", "error": None, "content": content, "reasoning": "r" * 10, "tool_calls": calls}
    out, clipped = clip_response(answer, lambda t: t.replace(secret, "***KD_KEY***"))
    assert "sk-kd" not in out["content"] and out["content"].endswith("***KD")
    assert len(out["content"]) == MAX_FIELD_CHARS and out["reasoning"] == "r" * 10
    assert clipped["content"] == len(content) - len(secret) + len("***KD_KEY***")
    assert clipped["tool_calls"] == MAX_ITEMS + 6 and len(out["tool_calls"]) == MAX_ITEMS
    # the id, the content, the reasoning and two whole calls fill the budget; the third is cut, the rest empty
    room = MAX_ANSWER_CHARS - 1 - MAX_FIELD_CHARS - 10 - 2 * (MAX_FIELD_CHARS + 3)
    assert [len(c["arguments"]) for c in out["tool_calls"][:4]] == [MAX_FIELD_CHARS] * 2 + [room - 3, 0]
    assert clipped["tool_calls[2].arguments"] == clipped["tool_calls[3].arguments"] == MAX_FIELD_CHARS
    assert list(out) == list(answer) and out["id"] == "r"


def test_an_answer_past_the_read_bound_fails_its_row(tmp_path: Path) -> None:
    """A server whose tool arguments never end, streamed (counted as the bytes come) and not (a
    Content-Length of 1 TiB): each is read up to the bound and no further, not retried, and is that row's
    error saying why; the run ends in bounded time with a FAIL and a small output directory."""
    endless, ref = HugeToolCalls(0, endless=True), HugeToolCalls(100)
    out = tmp_path / "c"
    with serving(endless.app()) as lurl, serving(ref.app()) as rurl:
        proc = run_cli_timed("compare", "--local", lurl, "--reference", rurl, "--no-preflight", "--suite", "chat",
                             "--limit", "1", "--output", str(out), limit=90)
    _ran(proc, 1)
    assert endless.asked == {"stream": 1, "plain": 1}  # not retried
    (plain,), (streamed,) = _records(out / "local.jsonl"), _records(out / "local-stream.jsonl")
    assert "answer too large" in plain["response"]["error"] and "announced 1,099,511,627,776 bytes" in \
        plain["response"]["error"]
    assert "answer too large: the server sent more than 67,108,864 bytes" in streamed["response"]["error"]
    assert "compare reads at most 64 MiB of one answer" in streamed["response"]["error"]
    s = json.loads((out / "summary.json").read_text())
    assert s["verdict"] == "FAIL" and s["errors"]["local"] == 1 and not s["checks"]["local_error_rate"]["ok"]
    assert _size(out) < 200_000


@pytest.mark.parametrize("flag", ["--suite", "--reference-file"])
@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b'{"key": "k", "suite": "chat"\n', b"[1, 2]\n"],
                         ids=["binary", "cut-json", "not-a-record"])
def test_a_bad_suite_or_recording_file_is_bad_input(sim_factory, tmp_path: Path, flag: str, content: bytes) -> None:
    """A binary file, a line that is not JSON or JSON that is not a recording, given as --suite or
    --reference-file: exit 2 naming the file, no traceback, no report written."""
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "0")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    args = ["--local", url, "--output", str(tmp_path / "c"), flag, str(bad)]
    args += ["--reference", url] if flag == "--suite" else []
    proc = run_cli("compare", *args, timeout=120)
    assert_clean_error(proc, str(bad))
    assert not (tmp_path / "c" / "summary.json").exists()


def _hashes(d: Path) -> dict[str, str]:
    """Every file under `d` by relative path: the sha256 of its bytes."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_previous_run_is_refused_unless_resumed_or_overwritten(tmp_path: Path) -> None:
    """An --output holding a previous compare run: without --resume or --overwrite, exit 2 naming the
    directory and both flags before anything is asked, every file byte for byte as it was; both flags at
    once are refused the same way. --resume asks only the rows it lacks, and still refuses another
    endpoint's answers; --overwrite starts over (another endpoint, nothing reused) and removes the
    previous run's files once it writes, never other files, and not at all when it stops before writing."""
    from .faultserver import RecordingSim

    a, b = RecordingSim("sim"), RecordingSim("sim")
    out = tmp_path / "c"
    with serving(a.app()) as aurl, serving(b.app()) as burl:
        base = ("compare", "--reference", aurl, "--no-preflight", "--suite", "chat", "--output", str(out))
        first = run_cli(*base, "--local", aurl, "--limit", "3", timeout=300)
        assert first.returncode == 0, first.stdout[-2000:] + first.stderr
        assert len(a.bodies) == 9  # local streamed and not, reference: 3 rows each
        (out / "notes.txt").write_text("the operator's own file")
        before = _hashes(out)
        assert set(before) == {"local.jsonl", "local-stream.jsonl", "reference.jsonl", "summary.json", "report.md",
                               "report.html", "notes.txt"}

        for extra in ((), ("--limit", "5"), ("--resume", "--overwrite")):
            proc = run_cli(*base, "--local", aurl, *extra, timeout=120)
            if "--resume" in extra:
                assert_clean_error(proc, "--resume", "--overwrite", "not both")
            else:
                assert_clean_error(proc, str(out), "holds a previous compare run", "--resume", "--overwrite")
            assert _hashes(out) == before and len(a.bodies) == 9  # nothing written, nothing asked
        # both flags into a directory that does not exist yet: refused before it is made
        fresh = tmp_path / "not-made"
        proc = run_cli(*base[:-1], str(fresh), "--local", aurl, "--resume", "--overwrite", timeout=120)
        assert_clean_error(proc, "not both")
        assert not fresh.exists()

        # --resume: the 3 recorded rows are reused, the 2 more --limit asks for are asked (3 ways each)
        prior = (out / "local.jsonl").read_bytes()
        proc = run_cli(*base, "--local", aurl, "--limit", "5", "--resume", timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
        assert len(a.bodies) == 9 + 6
        assert (out / "local.jsonl").read_bytes().startswith(prior) and len(_records(out / "local.jsonl")) == 5
        assert json.loads((out / "summary.json").read_text())["n"] == 5

        # --resume against another local endpoint: its answers would be scored as this one's
        before = _hashes(out)
        proc = run_cli(*base, "--local", burl, "--limit", "5", "--resume", timeout=120)
        assert_clean_error(proc, "local.jsonl", "recorded from", aurl, "another --output")
        assert _hashes(out) == before and b.bodies == []

        # --overwrite that stops before it writes (a model the endpoint does not serve): nothing removed
        proc = run_cli(*base, "--local", burl, "--model", "nope", "--overwrite", timeout=120)
        assert_clean_error(proc, "--model", "'nope'")
        assert _hashes(out) == before

        # --overwrite: from scratch against another endpoint, without streaming; the previous run's
        # local-stream.jsonl goes with the rest of it, the operator's file stays
        asked = len(a.bodies)
        proc = run_cli(*base, "--local", burl, "--limit", "2", "--no-stream", "--overwrite", timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert len(b.bodies) == 2 and len(a.bodies) == asked + 2  # the reference asked again: nothing reused
    assert sorted(p.name for p in out.iterdir()) == ["local.jsonl", "notes.txt", "reference.jsonl", "report.html",
                                                   "report.md", "summary.json"]
    assert (out / "notes.txt").read_text() == "the operator's own file"
    assert {r["endpoint"] for r in _records(out / "local.jsonl")} == {burl + "/v1"}
    assert len(_records(out / "local.jsonl")) == len(_records(out / "reference.jsonl")) == 2
    assert json.loads((out / "summary.json").read_text())["local"]["url"] == burl + "/v1"


def test_an_output_path_that_cannot_hold_a_run_is_bad_input(tmp_path: Path) -> None:
    """A result file's name taken by a directory is bad input naming it, before any request."""
    out = tmp_path / "c"
    (out / "summary.json").mkdir(parents=True)
    for extra in ((), ("--overwrite",), ("--resume",)):
        code, msg = invoke_cli("compare", "--local", "http://127.0.0.1:9", "--reference", "http://127.0.0.1:9",
                               "--output", str(out), *extra)
        assert code == 2 and "summary.json is not a file" in msg and "--output" in msg, (extra, msg)
    assert (out / "summary.json").is_dir()


def test_progress_lines_through_a_pipe_for_every_phase(sim_factory, tmp_path: Path) -> None:
    """With its output a pipe (not a terminal), compare prints progress lines: each endpoint's count with
    its failures (every stream of this sim carries a non-JSON chunk), then the one-at-a-time reruns under
    their own label, lines while they run (with an ETA) and a last line each. A resumed run counts the
    answers it already has."""
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "0", "--malformed-rate", "1")
    env = {**os.environ, "KIMI_PROGRESS_INTERVAL_S": "0.001"}
    args = ("compare", "--local", url, "--reference", url, "--output", str(tmp_path / "c"), "--limit", "4",
            "--rerun-limit", "3")
    proc = run_cli(*args, env=env, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr  # FAIL: every stream disagrees
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("compare: ")]
    for label in ("local", "local (streamed)", "reference"):
        assert f"compare: {label}: 0/4 done, 0 failed" in "\n".join(lines), lines
    last = {ln.split(": ")[1]: ln for ln in lines}  # each label's last line
    assert last["local"].startswith("compare: local: 4/4 done, 0 failed"), lines
    assert last["local (streamed)"].startswith("compare: local (streamed): 4/4 done, 4 failed"), lines
    assert last["reference"].startswith("compare: reference: 4/4 done, 0 failed"), lines
    assert last["rerun at concurrency 1"].startswith("compare: rerun at concurrency 1: 3/3 done, 3 failed"), lines
    assert any(ln.startswith(("compare: rerun at concurrency 1: 1/3", "compare: rerun at concurrency 1: 2/3"))
               and "ETA" in ln for ln in lines), lines
    again = run_cli(*args, "--resume", env=env, timeout=300)
    lines = [ln for ln in (again.stdout + again.stderr).splitlines() if ln.startswith("compare: local: ")]
    assert lines[-1].startswith("compare: local: 4/4 done, 0 failed"), lines  # recorded: not asked again


# --- the reference's /v1/models before any request ----------------------------------------------------

def test_a_hosted_id_the_reference_does_not_serve_is_bad_input(tmp_path: Path) -> None:
    """The pre-flight asks the reference's /v1/models: an id it does not serve is exit 2 naming
    --reference-model, the id and every id it serves; a catalog model whose hosted id was retired says
    so and how to compare it anyway. Nothing is asked or written."""
    from .conftest import serving
    from .faultserver import RecordingSim

    live = ("kimi-k2.6", "kimi-k2.7-code", "kimi-k3", "moonshot-v1-8k")
    local, ref = RecordingSim("kimi-k2-instruct-0905"), RecordingSim("kimi-k2.6", listed=live)
    env = {**os.environ, "KD_REF_KEY": "sk-kd-ref-5f1c2a"}
    with serving(local.app()) as lurl, serving(ref.app()) as rurl:
        base = ("compare", "--local", lurl, "--reference", rurl, "--reference-kind", "moonshot",
                "--reference-key-env", "KD_REF_KEY", "--suite", "chat", "--limit", "1")
        proc = run_cli(*base, "--output", str(tmp_path / "a"), env=env, timeout=120)
        assert_clean_error(proc, "--reference-model", "'kimi-k2-instruct-0905'", ", ".join(live),
                           "kimi-k2-instruct-0905 has no model on Moonshot's API", "--reference-file")
        proc = run_cli(*base, "--reference-model", "kimi-k2-0905-preview", "--output", str(tmp_path / "b"),
                       env=env, timeout=120)
        assert_clean_error(proc, "--reference-model", "'kimi-k2-0905-preview' (given with --reference-model)",
                           ", ".join(live))
        # a self-hosted reference: the same check, without the hosted advice
        proc = run_cli("compare", "--local", lurl, "--reference", lurl, "--reference-model", "other",
                       "--suite", "chat", "--output", str(tmp_path / "c"), timeout=120)
        assert_clean_error(proc, "--reference-model", "'other'", "it serves kimi-k2-instruct-0905")
        assert "Moonshot" not in proc.stderr
    assert local.bodies == ref.bodies == []  # refused before any request
    assert not any((tmp_path / d / "summary.json").exists() for d in "abc")


# --- thinking effort: the same request both ways ----------------------------------------------------

K3_ON_THE_API = {"type": "enabled", "keep": "all", "effort": "high"}  # Kimi-Vendor-Verifier README.md
K3_ON_AN_ENGINE = {"thinking": True, "preserve_thinking": True, "thinking_effort": "high"}


def test_thinking_effort_reaches_both_endpoints_as_each_takes_it(tmp_path: Path) -> None:
    """`--thinking-effort high`, end to end through real HTTP: the local engine is sent
    chat_template_kwargs {thinking, preserve_thinking, thinking_effort} (streamed and not), Moonshot's API
    thinking {type: enabled, keep: all, effort}, without the temperature K3 fixes; rows that ask thinking
    off stay off (an engine is told so, K3's API, which always thinks, is sent nothing)."""
    from .conftest import serving
    from .faultserver import RecordingSim

    local, ref = RecordingSim("kimi-k3"), RecordingSim("kimi-k3", listed=("kimi-k2.6", "kimi-k3"))
    env = {**os.environ, "KD_REF_KEY": "sk-kd-ref-77ad0e"}
    with serving(local.app()) as lurl, serving(ref.app()) as rurl:
        base = ("compare", "--local", lurl, "--reference", rurl, "--reference-kind", "moonshot",
                "--reference-key-env", "KD_REF_KEY", "--no-preflight", "--thinking-effort", "high")
        proc = run_cli(*base, "--suite", "thinking", "--limit", "2", "--output", str(tmp_path / "t"), env=env,
                       timeout=300)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        assert len(local.bodies) == 4 and len(ref.bodies) == 2  # local: streamed and not
        assert {b.get("stream", False) for b in local.bodies} == {True, False}
        for body in local.bodies:
            assert body["chat_template_kwargs"] == K3_ON_AN_ENGINE and "thinking" not in body
            assert body["temperature"] == 0.0
        for body, auth in zip(ref.bodies, ref.auth):
            assert body["thinking"] == K3_ON_THE_API and "chat_template_kwargs" not in body
            assert "temperature" not in body and auth == "Bearer sk-kd-ref-77ad0e"
        s = json.loads((tmp_path / "t" / "summary.json").read_text())
        assert s["thinking_effort"] == "high" and s["reference"]["hosted"]["efforts"] == ["low", "high", "max"]
        assert s["reference"]["hosted"]["thinking_only"] is True
        recorded = [json.loads(x) for x in (tmp_path / "t" / "reference.jsonl").read_text().splitlines()]
        assert len(recorded) == 2

        local.bodies.clear(), ref.bodies.clear()
        proc = run_cli(*base, "--suite", "chat", "--limit", "1", "--no-stream", "--output", str(tmp_path / "c"),
                       env=env, timeout=300)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
        assert local.bodies[0]["chat_template_kwargs"] == {"thinking": False}
        assert "thinking" not in ref.bodies[0] and "chat_template_kwargs" not in ref.bodies[0]

        # a recording made at one effort is not replayed as another's answers
        proc = run_cli("compare", "--local", lurl, "--no-preflight", "--suite", "thinking", "--limit", "2",
                       "--thinking-effort", "low", "--reference-file", str(tmp_path / "t" / "reference.jsonl"),
                       "--output", str(tmp_path / "r"), timeout=300)
        assert_clean_error(proc, "reference.jsonl", "not in the recording")


def test_thinking_effort_bad_values_are_bad_input(tmp_path: Path) -> None:
    """A value that is no effort, or one the hosted model cannot take (the catalog: K2.6 takes none), is
    exit 2 naming --thinking-effort before any request."""
    from .conftest import serving
    from .faultserver import RecordingSim

    code, msg = invoke_cli("compare", "--local", "http://127.0.0.1:9", "--output", str(tmp_path / "x"),
                           "--thinking-effort", "medium")
    assert code == 2 and "--thinking-effort" in msg and "'low', 'high' or 'max'" in msg, msg
    local, ref = RecordingSim("kimi-k2.6"), RecordingSim("kimi-k2.6", listed=("kimi-k2.6", "kimi-k3"))
    env = {**os.environ, "KD_REF_KEY": "sk-kd-ref-77ad0e"}
    with serving(local.app()) as lurl, serving(ref.app()) as rurl:
        proc = run_cli("compare", "--local", lurl, "--reference", rurl, "--reference-kind", "moonshot",
                       "--reference-key-env", "KD_REF_KEY", "--no-preflight", "--suite", "thinking",
                       "--thinking-effort", "max", "--output", str(tmp_path / "k26"), env=env, timeout=120)
    assert_clean_error(proc, "--thinking-effort", "kimi-k2.6", "takes no thinking effort", "kimi-k3")
    assert ref.bodies == [] and local.bodies == []


def test_a_rows_thinking_effort_is_checked_and_keys_its_answers() -> None:
    from kimi_deploy.compare import with_effort
    from kimi_deploy.compare.run import request_key
    from kimi_deploy.suites import validate_row

    row = {"id": "r", "messages": [{"role": "user", "content": "hi"}], "thinking": True}
    validate_row({**row, "thinking_effort": "low"})
    for bad, why in (({"thinking_effort": "medium"}, "one of low, high, max"),
                     ({"thinking": False, "thinking_effort": "max"}, "with thinking false")):
        with pytest.raises(ValueError, match=f"thinking_effort: .*{why}"):
            validate_row({**row, **bad})
    off = {**row, "id": "o", "thinking": False}
    rows = with_effort([row, off, {**row, "id": "own", "thinking_effort": "low"}], "max")
    assert [r.get("thinking_effort") for r in rows] == ["max", None, "low"]
    # answers at one effort are not another's; a row without one keeps the key it always had
    assert request_key("s", rows[0]) != request_key("s", {**rows[0], "thinking_effort": "low"})
    assert request_key("s", row) == request_key("s", {**row, "thinking_effort": None})


# --- K3's feature contract (Kimi-Vendor-Verifier tests/k3_features, tests/tool_call_json_schema) ---------

def _k3_compare(lurl: str, rurl: str, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = run_cli("compare", "--local", lurl, "--reference", rurl, "--no-preflight", "--suite", "k3-features",
                   "--output", str(out), *extra, timeout=300)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    return proc, json.loads((out / "summary.json").read_text())


def test_k3_features_reach_both_endpoints_as_written_and_pass_against_themselves(tmp_path: Path) -> None:
    """Through the real openai client and real HTTP: tools declared in a system message, response_format and
    every tool_choice mode arrive at both servers as the suite wrote them (streamed and not); the sim's
    answers are valid against the $ref / anyOf / nested / range schemas and the response_format schemas
    on both sides, streamed too, so the sim against itself PASSes with every json answer checked."""
    from .faultserver import RecordingSim

    rows = {r["id"]: r for r in load("k3-features")[1]}
    local, ref = RecordingSim("sim"), RecordingSim("sim")
    with serving(local.app()) as lurl, serving(ref.app()) as rurl:
        proc, s = _k3_compare(lurl, rurl, tmp_path / "k3")
    assert proc.returncode == 0 and s["verdict"] == "PASS", proc.stdout
    assert len(local.bodies) == 2 * len(rows) and len(ref.bodies) == len(rows)
    sent = {}
    for body in ref.bodies:  # the row a body answers: its last user message and its tool_choice
        sent.setdefault(json.dumps(body["messages"][-1], sort_keys=True), []).append(body)
    dynamic = [b for b in local.bodies if any("tools" in m for m in b["messages"])]
    assert len(dynamic) == 2 * sum(r["kind"] in ("dynamic_tools", "combined") for r in rows.values())
    for body in dynamic:
        declared = [m for m in body["messages"] if "tools" in m]
        assert all(m["role"] == "system" and m["content"] == "" and m["tools"][0]["type"] == "function"
                   for m in declared)
    assert {json.dumps(b.get("tool_choice"), sort_keys=True) for b in ref.bodies} >= {
        '"auto"', '"none"', '"required"', '{"function": {"name": "get_local_time"}, "type": "function"}'}
    formats = [b["response_format"] for b in ref.bodies if "response_format" in b]
    assert {f["type"] for f in formats} == {"text", "json_object", "json_schema"}
    assert any("$defs" in f.get("json_schema", {}).get("schema", {}) for f in formats)
    assert s["response_format_accuracy"] == {"local": 1.0, "reference": 1.0}
    assert s["checks"]["response_format_accuracy_local"]["ok"] and s["schema_accuracy"]["local"] == 1.0
    assert s["streaming"]["compared"] == len(rows) and not s["streaming"]["disagreements"]
    assert s["expectations_by_kind"]["tool_choice_none"] == {"n": 4, "local": 4, "reference": 4}


def test_a_server_that_drops_defs_or_message_tools_fails_naming_row_and_field(tmp_path: Path) -> None:
    """A local server that answers without the tools' `$defs` (a gateway that strips them) writes
    arguments the $ref schemas refuse and JSON the response_format schema refuses; one that drops the
    tools declared in messages never calls them: each FAILs, with findings that name the row, the field
    (tool_calls[i].function.arguments / content, and the JSON path) and what was wrong."""
    from .faultserver import RecordingSim

    ref = RecordingSim("sim")
    with serving(ref.app()) as rurl:
        local = RecordingSim("sim", strip=("defs",))
        with serving(local.app()) as lurl:
            proc, s = _k3_compare(lurl, rurl, tmp_path / "defs")
        assert proc.returncode == 1 and s["verdict"] == "FAIL"
        assert not s["checks"]["schema_accuracy_local"]["ok"] and s["schema_accuracy"]["reference"] == 1.0
        bad = next(f for f in s["findings"] if f["kind"] == "schema_invalid_local")
        rows = {r["id"]: r for r in load("k3-features")[1]}
        assert {rows[i]["kind"] for i in bad["ids"]} == {"schema_ref"}
        assert "tool_calls[0] (book_table).function.arguments" in bad["example"]["why"] \
            or "tool_calls[0] (create_task).function.arguments" in bad["example"]["why"]
        assert "required property" in bad["example"]["why"] or "Additional properties" in bad["example"]["why"]
        fmt = next(f for f in s["findings"] if f["kind"] == "response_format_invalid_local")
        assert all("$defs" in json.dumps(rows[i]["response_format"]) for i in fmt["ids"])
        assert fmt["example"]["problems"][0].startswith("content.countries[0]: ")
        assert s["response_format_accuracy"]["reference"] == 1.0 and s["response_format_accuracy"]["local"] < 1

        local = RecordingSim("sim", strip=("message_tools",))
        with serving(local.app()) as lurl:
            proc, s = _k3_compare(lurl, rurl, tmp_path / "dyn")
    # the sim never writes the values a prompt fixes, so no row is an expectation regression here (the
    # reference misses them too); what shows is every row whose only tools were in its messages
    only_dynamic = {i for i, r in rows.items() if r["kind"] == "dynamic_tools" and "tools" not in r}
    missed = next(f for f in s["findings"] if f["kind"] == "tool_call_only_reference")
    assert set(missed["ids"]) == only_dynamic and s["confusion"]["fn"] == len(only_dynamic)
    failed = next(f for f in s["findings"] if f["kind"] == "expectation_failed_local")
    assert "expected a tool call, got none" in json.dumps(failed)
