"""`compare` v2 end to end on the real vLLM CPU engine serving tiny-k2: every request streamed and
non-streamed at the default concurrency (32), token accounting, sampling pre-flight.

Fault injection: a real aiohttp proxy (tests/faultproxy.py) in front of the one real server corrupts
streamed tool-call deltas the way the parsers' real bugs did (empty deltas only under load, vllm #54701;
arguments over 2,000 characters cut short, sglang #23363; the second of two calls' name sent again, vllm
#24478 / #38579) or miscounts prompt tokens. Each must FAIL with its finding, and `compare --local URL
--suite tool-calls --output DIR` with nothing else but the reference must catch it; the same proxy with
no fault PASSes, and the server itself on the whole suite is tests/test_compare.py's full run. The fault
runs replay that run's recorded reference answers (--reference-file, the way an operator replays a
recording of Moonshot's API against several deployments) so the reference is asked once a session; faults
that touch different fields (the streamed deltas, the usage block) share one run. Every fault run is the
full 316-row suite: tiny-k2 makes several calls a turn and copies 2,000-character notes, so each fault has
the rows it is about.

Fast unit tests at the end: the delta assembly on real openai ChatCompletionChunk objects, the
disagreement rules, the tools' field order for the template count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from kimi_deploy.compare.consistency import disagreements
from kimi_deploy.compare.run import Outcome
from kimi_deploy.compare.stream import Assembly
from kimi_deploy.suites import load
from kimi_deploy.compare.tokens import openai_order
from kimi_deploy.errors import BadInput

from .conftest import (MAX_LOAD_FLIPS, Server, SuiteRun, assert_clean_error, assert_passes_but_for_load_flips,
                       load_flips, run_cli, start_tiny_server)
from .faultproxy import FaultProxy


def _compare(local: str, reference: str | Path, out: Path, *extra: str, suite: str = "tool-calls"):
    """The command as an operator states it (plus `extra`): the reference is a URL, or a recording (a
    Path, copied first so no run can touch the shared one); summary.json when it was written."""
    if isinstance(reference, Path):
        out.parent.mkdir(parents=True, exist_ok=True)
        copy = out.parent / f"{out.name}-reference.jsonl"
        shutil.copyfile(reference, copy)
        ref_args = ["--reference-file", str(copy)]
    else:
        ref_args = ["--reference", reference]
    proc = run_cli("compare", "--local", local, *ref_args, "--suite", suite, "--output", str(out), *extra,
                   timeout=1200)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else None
    return proc, summary


def _answers(out: Path) -> dict[str, dict]:
    """The local deployment's non-streamed answers by row id."""
    return {json.loads(x)["id"]: json.loads(x)["response"] for x in (out / "local.jsonl").read_text().splitlines()}


@pytest.fixture
def proxy(tiny_server: Server) -> Iterator:
    """Start a FaultProxy in front of the shared tiny-k2 server (call with the fault); stopped after."""
    started: list[FaultProxy] = []

    def make(**faults: int) -> FaultProxy:
        p = FaultProxy(tiny_server.url, **faults).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def _kinds(s: dict) -> dict[str, dict]:
    return {f["kind"]: f for f in s["findings"]}


def test_the_fault_proxy_alone_makes_no_finding(tiny_suite_run: SuiteRun, proxy, tmp_path: Path) -> None:
    """The proxy with no fault, under load, on a cross-section (the first 96 rows: CI time)."""
    clean = proxy()
    proc, s = _compare(clean.url, tiny_suite_run.recording, tmp_path / "proxied", "--limit", "96")
    flips = assert_passes_but_for_load_flips(proc, s)  # none but the rows a batch flips (conftest.load_flips)
    assert s["concurrency"] == 32 and s["n"] == 96
    assert s["reference"]["recording"].endswith("proxied-reference.jsonl")
    assert s["streaming"]["compared"] == s["n"]
    assert s["checks"]["stream_disagreements_local"]["value"] == len(flips)
    for other in ("vs_reference", "vs_template"):
        assert s["token_accounting"]["prompt_tokens"][other]["tokens"]["nonzero"] == 0
    assert clean.stats["streamed"] == s["n"] and clean.max_in_flight > 8  # really under load
    assert "## Streamed vs non-streamed (local)" in (tmp_path / "proxied" / "report.md").read_text()


def test_empty_tool_call_deltas_under_load_fail_as_load_dependent(tiny_suite_run: SuiteRun, proxy,
                                                                  tmp_path: Path) -> None:
    bad = proxy(empty_calls_under_load=4)
    proc, s = _compare(bad.url, tiny_suite_run.recording, tmp_path / "load")
    assert proc.returncode == 1 and s["verdict"] == "FAIL", proc.stdout
    assert bad.stats["emptied"] > 0
    kinds = _kinds(s)
    assert {"stream_missing_tool_calls", "stream_finish_tool_calls_without_calls", "load_dependent_failure"} <= set(kinds)
    found = s["streaming"]["disagreements"]
    # most tool-call answers broke; the first 32 (--rerun-limit's default) were rerun alone, and each was
    # fine then; the rest are marked not rerun
    rerun = [d for d in found if d["load_dependent"] is not None]
    assert len(found) > 100 and s["streaming"]["rerun"] == {"rows": 32, "of": len(found), "limit": 32}
    assert len(rerun) == 32 and all(d["load_dependent"] for d in rerun)
    assert sorted(d["id"] for d in rerun) == s["streaming"]["load_dependent"]
    # the rows that broke are tool-call answers, and the non-streamed answers were right; any other row is
    # one a batch flipped (conftest.load_flips)
    broken = [d for d in found if d["non_streamed"]["tool_calls"] and not d["streamed"]["tool_calls"]]
    assert len(found) - len(broken) <= MAX_LOAD_FLIPS * s["n"], [d for d in found if d not in broken]
    assert s["tool_call_f1"] == 1.0 and not s["checks"]["stream_disagreements_local"]["ok"]
    report = (tmp_path / "load" / "report.md").read_text()
    assert "only under load" in report and f"32 of {len(found)} failing rows rerun alone" in report


def test_cut_arguments_renamed_calls_and_miscounted_prompts_fail_each_with_its_rows(
        tiny_suite_run: SuiteRun, proxy, tmp_path: Path) -> None:
    """Three faults that touch different fields, in one run: streamed arguments cut at 2,000 characters
    (only the long notes break), the name of a turn's second call sent again (only answers with several
    calls break), and 12 prompt tokens too many in every usage block (every row, and no stream). Each
    finding names exactly the rows its fault touched."""
    bad = proxy(drop_args_after=2000, repeat_name_from_index=1, prompt_tokens_extra=12)
    # a few reruns are enough here (the rerun itself is the load test's subject): long notes rerun one at
    # a time are most of this run's time otherwise
    proc, s = _compare(bad.url, tiny_suite_run.recording, tmp_path / "three", "--rerun-limit", "4")
    assert proc.returncode == 1 and s["verdict"] == "FAIL", proc.stdout
    assert bad.stats["truncated"] > 0 and bad.stats["renamed"] > 0
    answers = _answers(tmp_path / "three")
    long_rows = {i for i, r in answers.items() if any(len(c["arguments"]) > 2000 for c in r["tool_calls"])}
    several = {i for i, r in answers.items() if len(r["tool_calls"]) >= 2}
    assert len(long_rows) >= 10 and len(several) >= 20 and not long_rows & several
    found = {d["id"]: d for d in s["streaming"]["disagreements"]}
    flipped = load_flips(s, confirmed=False)  # rows a batch flipped, besides the faults (conftest.load_flips)
    assert {i for i, d in found.items() if d["kinds"] == ["stream_arguments_invalid_json"]} == long_rows
    # a second call whose arguments all came with its name (vLLM sends several tokens a delta under load)
    # has no later delta to repeat the name on: most rows with several calls break, never another row
    renamed = {i for i, d in found.items() if d["kinds"] == ["stream_tool_name_split_or_duplicated"]}
    assert renamed <= several and len(renamed) >= len(several) // 2, (len(renamed), len(several))
    # the usage fault makes no streaming finding: the disagreements are exactly the two stream faults' rows
    assert set(found) - flipped == long_rows | renamed
    assert not any(d["load_dependent"] for i, d in found.items() if i not in flipped)
    kinds = _kinds(s)
    assert {"stream_arguments_invalid_json", "stream_tool_name_split_or_duplicated"} <= set(kinds)
    assert set(kinds.get("load_dependent_failure", {}).get("ids", [])) <= flipped
    call = kinds["stream_tool_name_split_or_duplicated"]["example"]["streamed"]["tool_calls"][1]
    assert call["later_names"] == [call["name"]]
    # the miscount, against the recorded reference and against the template's own count
    pt = s["token_accounting"]["prompt_tokens"]
    assert pt["vs_reference"]["tokens"]["median"] == 12 and pt["vs_template"]["tokens"]["median"] == 12
    assert pt["vs_reference"]["tokens"]["nonzero"] == s["n"]
    for other in ("reference", "template"):
        c = s["checks"][f"prompt_token_drift_{other}"]
        assert not c["ok"] and c["value"] > 0.01 and c["max"] == 0.01
    assert {"prompt_token_drift_vs_reference", "prompt_token_drift_vs_template"} <= set(kinds)
    # the bound is overridable like the others
    bad_count = proxy(prompt_tokens_extra=12)
    proc, s2 = _compare(bad_count.url, tiny_suite_run.recording, tmp_path / "count2", "--threshold",
                        "prompt_token_drift=0.5", "--no-stream", "--limit", "48")
    assert proc.returncode == 0 and s2["verdict"] == "PASS" and "streaming" not in s2, proc.stdout


@pytest.fixture(scope="module")
def k25_defaults_server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """tiny-k2 with a generation_config.json carrying K2.5's thinking-mode sampling (temperature 1.0,
    top_p 0.95): what a correctly configured K2.5 deployment serves by default."""
    tmp = tmp_path_factory.mktemp("k25gen")
    model = tmp / "tiny-k2-k25gen"
    shutil.copytree(tiny_dir, model)
    gen = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**gen, "temperature": 1.0, "top_p": 0.95}))
    # a small KV cache: a second server on a machine that runs others (the share is of all RAM on CPU)
    server = start_tiny_server(tmp, "tiny-k2-k25gen", model_dir=model, gpu_memory_utilization=0.08)
    yield server
    server.stop()


def test_sampling_preflight(tiny_server: Server, k25_defaults_server: Server, tmp_path: Path) -> None:
    # vLLM's own top_p 1.0 (the checkpoint sets none) against K2.5's fixed 0.95: a finding with the fix
    proc, s = _compare(tiny_server.url, f"{tiny_server.url}/v1", tmp_path / "k25", "--catalog-model", "kimi-k2.5",
                       "--limit", "6", suite="tool-calls-flat")
    assert proc.returncode == 1 and s["verdict"] == "FAIL", proc.stdout
    pre = s["preflight"]
    assert pre["status"] == "checked" and pre["default_mode"] == "thinking"  # observed: the spec thinks by default
    assert pre["observed"]["of"] == 4 and pre["served_defaults"]["top_p"] == 1.0
    mism = [f["example"] for f in s["findings"] if f["kind"] == "sampling_default_mismatch"]
    assert [m["param"] for m in mism] == ["top_p"] and mism[0]["hosted"] == 0.95
    assert "--override-generation-config" in mism[0]["fix"] and s["checks"]["sampling_defaults"]["value"] == 1
    assert "temperature" in pre["other_modes"]["instant"]  # instant mode needs its 0.6 sent per request
    # the checkpoint's generation config carries K2.5's thinking-mode values: no finding
    proc, s = _compare(k25_defaults_server.url, f"{k25_defaults_server.url}/v1", tmp_path / "k25ok",
                       "--catalog-model", "kimi-k2.5", "--limit", "6",
                       suite="tool-calls-flat")
    assert proc.returncode == 0 and s["preflight"]["status"] == "checked", proc.stdout
    assert s["checks"]["sampling_defaults"] == {"value": 0, "max": 0, "ok": True}
    assert s["preflight"]["served_defaults"]["top_p"] == 0.95
    assert_clean_error(run_cli("compare", "--local", tiny_server.url, "--reference", f"{tiny_server.url}/v1",
                               "--catalog-model", "kimi-k9", "--output", str(tmp_path / "bad")),
                       "--catalog-model", "unknown model")
    assert_clean_error(run_cli("compare", "--local", tiny_server.url, "--reference", f"{tiny_server.url}/v1",
                               "--rerun-limit", "-1", "--output", str(tmp_path / "bad")), "--rerun-limit",
                       "greater than or equal to 0")
    assert_clean_error(run_cli("compare", "--local", tiny_server.url, "--reference", f"{tiny_server.url}/v1",
                               "--tokenizer", str(tmp_path / "no-such-checkpoint"), "--output", str(tmp_path / "bad")),
                       "--tokenizer", "could not load")


# --- fast: the assembly and the rules, on real openai objects ----------------------------------------

def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None):
    from openai.types.chat import ChatCompletionChunk

    return ChatCompletionChunk.model_validate({
        "id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "usage": usage,
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_assembly_merges_interleaved_calls_by_index() -> None:
    acc = Assembly()
    for c in [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"tool_calls": [{"index": 0, "id": "functions.a:0", "type": "function",
                                "function": {"name": "a", "arguments": '{"x"'}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "functions.b:1", "type": "function",
                                "function": {"name": "b", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}},
                               {"index": 1, "function": {"arguments": "{}"}}]}),
        _chunk({"tool_calls": [{"index": 1, "function": {"name": "b"}}]}),  # the name again
        _chunk({}, finish="tool_calls"),
        _chunk(None, usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}),
    ]:
        acc.feed(c)
    calls = acc.tool_calls()
    assert [(c["id"], c["name"], c["arguments"]) for c in calls] == [
        ("functions.a:0", "a", '{"x": 1}'), ("functions.b:1", "b", "{}")]
    assert calls[1]["later_names"] == ["b"] and "a client that concatenates sees 'bb'" in acc.notes[0]
    assert (acc.finish_reason, acc.prompt_tokens, acc.completion_tokens) == ("tool_calls", 7, 3)


def test_disagreement_rules() -> None:
    row = {"id": "r", "tools": [{"type": "function", "function": {"name": "f"}}]}
    call = {"id": "functions.f:0", "name": "f", "arguments": '{"a": 1}'}
    ns = Outcome("r", "tool_calls", None, None, [call])
    assert disagreements(row, ns, Outcome("r", "tool_calls", None, None, [dict(call)])) == []
    assert disagreements(row, ns, Outcome("r", "tool_calls", None, None, [])) == [
        "stream_finish_tool_calls_without_calls", "stream_missing_tool_calls"]
    assert disagreements(row, ns, Outcome("r", "tool_calls", None, None, [{**call, "arguments": '{"a": '}])) == [
        "stream_arguments_invalid_json"]
    assert disagreements(row, ns, Outcome("r", "tool_calls", None, None, [{**call, "name": "ff"}])) == [
        "stream_tool_name_split_or_duplicated"]
    # both ways the model called a tool that was not offered: a schema finding, not a streaming fault
    other = {**call, "name": "g"}
    assert disagreements(row, Outcome("r", "tool_calls", None, None, [other]),
                         Outcome("r", "tool_calls", None, None, [dict(other)])) == []
    assert disagreements(row, ns, Outcome("r", "stop", "<|tool_calls_section_begin|>x", None, [])) == [
        "stream_missing_tool_calls", "stream_markers_in_content"]
    think = Outcome("r", "stop", "hi", "I should greet", [])
    assert disagreements(row, think, Outcome("r", "stop", "I should greet the user. hi", None, [])) == [
        "stream_reasoning_in_content"]
    assert disagreements(row, ns, Outcome("r", None, error="HTTP 500")) == ["stream_error"]


def test_tools_are_counted_in_the_openai_field_order() -> None:
    _, rows = load("tool-calls")
    tools = next(r["tools"] for r in rows if r.get("tools"))
    assert list(tools[0]) == ["function", "type"]  # the suite file sorts keys
    ordered = openai_order(tools)
    assert list(ordered[0]) == ["type", "function"]
    assert list(ordered[0]["function"])[:2] == ["name", "description"]
    assert openai_order(None) is None


def test_no_tokenizer_says_why(tmp_path: Path) -> None:
    from kimi_deploy.compare.tokens import find_tokenizer

    assert find_tokenizer(None, None)[0] is None and "--tokenizer" in find_tokenizer(None, None)[1]
    counter, why = find_tokenizer(None, str(tmp_path))  # a directory without a tokenizer
    assert counter is None and "not a local checkpoint directory" in why
    with pytest.raises(BadInput, match="--tokenizer.*could not load"):  # given explicitly: bad input
        find_tokenizer(str(tmp_path / "nope"), None)
