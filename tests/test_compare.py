"""`kimi-deploy compare` end to end on real vLLM tiny-k2 endpoints (never the hosted API): identical
deployments pass with tool-call F1 = 1.0; a deployment without the tool parser fails with the finding
that explains why; a recorded reference replays offline; resumable records; bad input; and the hosted
adapter's request shapes checked against Moonshot's published API behaviour (platform.kimi.ai/docs/api/
models-overview parameter table; github.com/MoonshotAI/Kimi-K2.5 README.md on thinking on/off)."""

from __future__ import annotations

import json
from pathlib import Path

from kimi_deploy.compare.adapters import normalize_tool_ids, request_kwargs
from kimi_deploy.compare.suites import builtin, generate
from kimi_deploy.endpoint import Endpoint

from .conftest import Server, assert_clean_error, run_cli

CONTRACT = {"suite", "local", "reference", "n", "tool_call_f1", "schema_accuracy", "findings", "thresholds", "verdict"}


def _compare(local: Server, out: Path, *args: str):
    return run_cli("compare", "--local", local.url, "--output", str(out), *args, timeout=600)


def test_identical_deployments_pass(tiny_server: Server, tiny_server_b: Server, tmp_path: Path) -> None:
    out = tmp_path / "same"
    proc = _compare(tiny_server, out, "--reference", f"{tiny_server_b.url}/v1", "--suite", "tool-calls")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert CONTRACT <= set(summary)
    assert summary["verdict"] == "PASS" and summary["tool_call_f1"] == 1.0
    assert summary["n"] == 48 and summary["schema_accuracy"] == {"local": 1.0, "reference": 1.0}
    assert summary["confusion"]["tp"] > 10 and summary["argument_agreement"] == 1.0
    assert summary["reference"]["kind"] == "self-hosted" and summary["thresholds"]["tool_call_f1"] == 0.80
    assert (out / "report.md").read_text().startswith("# kimi-deploy compare: tool-calls — PASS")
    assert "<table>" in (out / "report.html").read_text()
    for name in ("local.jsonl", "reference.jsonl"):
        lines = (out / name).read_text().splitlines()
        assert len(lines) == 48 and len({json.loads(x)["key"] for x in lines}) == 48

    # replay: the recording stands in for the reference, no reference endpoint involved
    replay = _compare(tiny_server, tmp_path / "replay", "--reference-file", str(out / "reference.jsonl"))
    assert replay.returncode == 0, replay.stderr
    again = json.loads((tmp_path / "replay" / "summary.json").read_text())
    assert again["tool_call_f1"] == 1.0 and again["reference"]["recording"].endswith("reference.jsonl")


def test_thinking_suite_reasoning_is_separated(tiny_server: Server, tiny_server_b: Server, tmp_path: Path) -> None:
    proc = _compare(tiny_server, tmp_path / "t", "--reference", f"{tiny_server_b.url}/v1", "--suite", "thinking")
    assert proc.returncode == 0, proc.stdout
    s = json.loads((tmp_path / "t" / "summary.json").read_text())
    kinds = {f["kind"] for f in s["findings"]}
    assert not {"missing_reasoning_local", "leaked_special_tokens_local"} & kinds
    assert s["finish_reasons"]["local"].get("tool_calls", 0) > 0  # tool calls after reasoning


def test_no_tool_parser_fails_with_the_reason(tiny_server_noparser: Server, tiny_server: Server,
                                              tmp_path: Path) -> None:
    out = tmp_path / "noparser"
    proc = _compare(tiny_server_noparser, out, "--reference", f"{tiny_server.url}/v1", "--suite", "tool-calls")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["verdict"] == "FAIL" and s["tool_call_f1"] < 0.8
    kinds = {f["kind"]: f for f in s["findings"]}
    assert "tools_refused_markers_in_content" in kinds
    assert "<|tool_call_begin|>" in kinds["tools_refused_markers_in_content"]["example"]["probe_content"]
    assert "tool-call-parser" in kinds["local_error"]["example"]["error"]
    assert "FAIL" in proc.stdout and "tools_refused_markers_in_content" in (out / "report.md").read_text()


def test_runs_resume_without_asking_twice(tiny_server: Server, tiny_server_b: Server, tmp_path: Path) -> None:
    out = tmp_path / "resume"
    ref = ("--reference", f"{tiny_server_b.url}/v1", "--suite", "chat")
    assert _compare(tiny_server, out, *ref, "--limit", "5").returncode == 0
    assert len((out / "local.jsonl").read_text().splitlines()) == 5
    (out / "local.jsonl").write_text((out / "local.jsonl").read_text() + '{"key": "cut-off')  # an interrupted line
    assert _compare(tiny_server, out, *ref).returncode == 0
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
    k2 = hosted.model_id("kimi-k2-instruct-0905")
    assert k2 == "kimi-k2-0905-preview" and request_kwargs(hosted, k2, row, 0.6, None)["temperature"] == 0.6
    cn = Endpoint.from_url("https://api.moonshot.cn/", flag="--reference")
    assert "extra_body" not in request_kwargs(cn, "kimi-k2-thinking", row, None, None)  # cannot be turned off
    local = Endpoint.from_url("http://h:8000/v1", flag="--local", kind="self-hosted")
    assert local.model_id("kimi-k2-instruct-0905") == "kimi-k2-instruct-0905"
    assert request_kwargs(local, "kimi-k2.5", row, 0.6, None)["extra_body"] == {"chat_template_kwargs": {"thinking": False}}
    assert normalize_tool_ids([{"role": "assistant", "tool_calls": [
        {"id": "functions.a:3", "function": {"name": "a"}}]}])[0]["tool_calls"][0]["id"] == "functions.a:3"


def test_suites_are_in_sync_with_the_generator(tmp_path: Path) -> None:
    for p in generate(tmp_path):
        assert p.read_text() == builtin(p.stem).read_text(), f"regenerate {p.name}"
