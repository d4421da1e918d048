"""The one streamed tool-call assembler (kimi_deploy/toolcalls.py) on real chunk sequences: vLLM's
(id, type and name in a call's first delta, arguments split over later ones; parallel calls at index 0
and 1, interleaved), a name sent again (the kimi_k2 parser's bug, vllm #24478), an id that changes, a
delta without an index. Then the same faults through both users: bench's parse of the raw SSE bytes
(a tool-call error in the request's record and the summary's count) and compare's assembly of the
openai SDK's chunk objects (a stream note and a disagreement)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kimi_deploy.bench.loadgen import RequestOutput, parse_stream
from kimi_deploy.bench.metrics import per_request, summarize
from kimi_deploy.compare.consistency import disagreements
from kimi_deploy.compare.run import Outcome
from kimi_deploy.compare.stream import Assembly
from kimi_deploy.toolcalls import ToolCallAssembler


def _first(index: int, call_id: str, name: str, arguments: str = "") -> dict[str, Any]:
    """A call's first delta as vLLM's streaming tool parsers send it (vllm/entrypoints/openai/
    tool_parsers/kimi_k2_tool_parser.py: DeltaToolCall(index, type="function", id, function={name}))."""
    fn: dict[str, Any] = {"name": name}
    if arguments:
        fn["arguments"] = arguments
    return {"index": index, "id": call_id, "type": "function", "function": fn}


def _args(index: int, text: str) -> dict[str, Any]:
    return {"index": index, "function": {"arguments": text}}


def _assemble(*chunks: list[dict[str, Any]]) -> ToolCallAssembler:
    acc = ToolCallAssembler()
    for deltas in chunks:
        acc.feed(deltas)
    return acc


def test_vllm_style_one_call_with_arguments_split_across_deltas() -> None:
    acc = _assemble([_first(0, "functions.get_weather:0", "get_weather")], [_args(0, '{"city": ')],
                    [_args(0, '"Paris", "unit"')], [_args(0, ': "celsius"}')])
    assert acc.calls() == [{"id": "functions.get_weather:0", "name": "get_weather",
                            "arguments": '{"city": "Paris", "unit": "celsius"}'}]
    assert acc.faults == [] and acc


def test_parallel_calls_at_index_0_and_1_interleaved() -> None:
    acc = _assemble([_first(0, "functions.get_weather:0", "get_weather", '{"city"')],
                    [_first(1, "functions.get_time:1", "get_time")],
                    [_args(0, ': "Oslo"}'), _args(1, '{"tz": "UTC"}')])
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in acc.calls()] == [
        ("functions.get_weather:0", "get_weather", {"city": "Oslo"}),
        ("functions.get_time:1", "get_time", {"tz": "UTC"})]
    assert acc.faults == []


def test_a_name_sent_again_is_a_fault_not_a_concatenation() -> None:
    acc = _assemble([_first(0, "functions.a:0", "a", "{}")], [_first(1, "functions.b:1", "b")],
                    [{"index": 1, "function": {"name": "b", "arguments": "{}"}}])
    calls = acc.calls()
    assert [c["name"] for c in calls] == ["a", "b"] and calls[1]["later_names"] == ["b"]
    assert calls[1]["arguments"] == "{}" and "later_names" not in calls[0]
    assert acc.faults == ["call 1: name sent again ('b' then 'b'); a client that concatenates sees 'bb'"]
    other = _assemble([_first(0, "functions.a:0", "a")], [{"index": 0, "function": {"name": "z"}}])
    assert other.calls()[0]["name"] == "a" and other.calls()[0]["later_names"] == ["z"]
    assert "name sent again ('a' then 'z')" in other.faults[0]


def test_a_changed_id_is_a_fault_and_the_same_id_again_is_not() -> None:
    acc = _assemble([_first(0, "call_1", "f")], [{"index": 0, "id": "call_1", "function": {"arguments": "{}"}}])
    assert acc.faults == [] and acc.calls()[0]["id"] == "call_1"
    acc = _assemble([_first(0, "call_1", "f")], [{"index": 0, "id": "call_2", "function": {"arguments": "{}"}}])
    assert acc.calls()[0]["id"] == "call_1" and acc.calls()[0]["later_ids"] == ["call_2"]
    assert acc.faults == ["call 0: id sent again and changed ('call_1' then 'call_2')"]


def test_a_delta_without_an_index_is_a_fault_and_merged_as_a_guessing_client_would() -> None:
    # an id starts a new call, no id continues the last one; the fault is named once
    acc = _assemble([{"id": "c0", "type": "function", "function": {"name": "a", "arguments": '{"x"'}}],
                    [{"function": {"arguments": ": 1}"}}],
                    [{"id": "c1", "type": "function", "function": {"name": "b", "arguments": "{}"}}])
    assert [(c["id"], c["name"], c["arguments"], c["unindexed"]) for c in acc.calls()] == [
        ("c0", "a", '{"x": 1}', 2), ("c1", "b", "{}", 1)]
    assert acc.faults == ["a tool-call delta without an index"]


def test_no_delta_no_call() -> None:
    acc = _assemble([])
    assert acc.calls() == [] and not acc and acc.faults == []


# --- the same rule through bench (raw SSE bytes) and compare (the openai SDK's chunk objects) ----------

REPEATED_NAME = [
    [_first(0, "functions.a:0", "a", "{}")],
    [_first(1, "functions.b:1", "b")],
    [{"index": 1, "function": {"name": "b", "arguments": "{}"}}],
]


def _sse(tool_deltas: list[list[dict[str, Any]]]) -> bytes:
    events = [{"choices": [{"index": 0, "delta": {"tool_calls": d}, "finish_reason": None}]} for d in tool_deltas]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def test_bench_records_a_fault_as_a_tool_call_error_of_the_request() -> None:
    rec = RequestOutput(index=0, t_send=0.0)
    parse_stream(rec, [1.0], [_sse(REPEATED_NAME)])
    assert rec.ok and [c["name"] for c in rec.calls] == ["a", "b"] and rec.tool_text == "a{}b{}"
    row = per_request(rec)
    assert row.ok and row.tool_call_errors == [
        "call 1: name sent again ('b' then 'b'); a client that concatenates sees 'bb'"]
    assert row.to_json()["tool_call_errors"] == row.tool_call_errors
    clean = RequestOutput(index=1, t_send=0.0)
    parse_stream(clean, [1.0], [_sse(REPEATED_NAME[:2])])
    s = summarize([row, per_request(clean)], [], {})
    assert s["requests"]["tool_call_errors"] == 1 and s["requests"]["completed"] == 2


def _sdk_chunk(tool_deltas: list[dict[str, Any]] | None, finish: str | None = None) -> Any:
    """A chunk as the openai SDK hands it over (constructed, not validated: a missing index stays None)."""
    from openai._models import construct_type
    from openai.types.chat import ChatCompletionChunk

    delta = {} if tool_deltas is None else {"tool_calls": tool_deltas}
    return construct_type(type_=ChatCompletionChunk, value={
        "id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_compare_reports_the_faults_as_disagreements() -> None:
    row = {"id": "r", "tools": [{"type": "function", "function": {"name": n}} for n in ("a", "b")]}
    ns = Outcome("r", "tool_calls", None, None, [{"id": "functions.a:0", "name": "a", "arguments": "{}"},
                                                 {"id": "functions.b:1", "name": "b", "arguments": "{}"}])

    def streamed(*deltas: list[dict[str, Any]]) -> tuple[Assembly, list[str]]:
        acc = Assembly()
        for d in deltas:
            acc.feed(_sdk_chunk(d))
        acc.feed(_sdk_chunk(None, finish="tool_calls"))
        st = Outcome("r", acc.finish_reason, None, None, acc.tool_calls(), streamed=True, stream_notes=acc.notes)
        return acc, disagreements(row, ns, st)

    acc, kinds = streamed(*REPEATED_NAME)
    assert kinds == ["stream_tool_name_split_or_duplicated"] and "sees 'bb'" in acc.notes[0]
    acc, kinds = streamed([_first(0, "functions.a:0", "a", "{}")], [_first(1, "functions.b:1", "b", "{}")],
                          [{"index": 1, "id": "functions.c:2", "function": {"arguments": ""}}])
    assert kinds == ["stream_tool_call_id_or_index"] and "id sent again and changed" in acc.notes[0]
    acc, kinds = streamed([{"id": "functions.a:0", "type": "function", "function": {"name": "a", "arguments": "{}"}}],
                          [_first(1, "functions.b:1", "b", "{}")])
    assert kinds == ["stream_tool_call_id_or_index"] and acc.notes == ["a tool-call delta without an index"]
    acc, kinds = streamed([_first(0, "functions.a:0", "a", "{}")], [_first(1, "functions.b:1", "b", "{}")])
    assert kinds == [] and acc.notes == []


# --- Kimi K3's tool-call format through the engines' own kimi_k3 parsers --------------------------------
# K3 writes its answer as channels of three-token markers (<|open|>NAME<|sep|> ... <|close|>NAME<|sep|>): the
# reasoning closes the think channel, the reply sits in a response channel, then a tools channel holds one
# call element per call and one typed argument element per argument (vLLM vllm/tool_parsers/
# kimi_k3_tool_parser.py and vllm/reasoning/kimi_k3_reasoning_parser.py; SGLang srt/function_call/
# kimik3_detector.py and kimik3_format.py, 0.5.23). KDA does not run on the CPU engine (docs/guides/k3.md),
# so the parsers are driven in process on K3-format text, as the servers drive them, and what compare's
# assembler makes of vLLM's streamed deltas is checked against both engines' own answers.
K3_MARKERS = ["<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>"]
K3_GENERATION_PREFIX = '<|open|>message role="assistant"<|sep|><|open|>think<|sep|>'
K3_OUTPUT = (
    "The user asks for a quote; one call.<|close|>think<|sep|>"
    "<|open|>response<|sep|>Looking it up.<|close|>response<|sep|>"
    "<|open|>tools<|sep|>"
    '<|open|>call tool="get_quote" index="1"<|sep|>'
    '<|open|>argument key="symbol" type="string"<|sep|>AT&T "T" <b><|close|>argument<|sep|>'
    '<|open|>argument key="limit" type="number"<|sep|>5<|close|>argument<|sep|>'
    '<|open|>argument key="filters" type="object"<|sep|>{"exchange": "NYSE", "days": [1, 2]}<|close|>argument<|sep|>'
    "<|close|>call<|sep|>"
    '<|open|>call tool="get_quote" index="2"<|sep|>'
    '<|open|>argument key="symbol" type="string"<|sep|>株式会社<|close|>argument<|sep|>'
    "<|close|>call<|sep|>"
    "<|close|>tools<|sep|><|close|>message<|sep|>"
)
K3_CALLS = [("get_quote", {"symbol": 'AT&T "T" <b>', "limit": 5, "filters": {"exchange": "NYSE", "days": [1, 2]}}),
            ("get_quote", {"symbol": "株式会社"})]
K3_TOOLS = [{"type": "function", "function": {"name": "get_quote", "description": "A stock quote", "parameters": {
    "type": "object", "properties": {"symbol": {"type": "string"}, "limit": {"type": "integer"},
                                     "filters": {"type": "object"}}, "required": ["symbol"]}}}]


@pytest.fixture(scope="module")
def k3_tokenizer() -> Any:
    """The tiny-k2 BPE (tests/data/tiny-k2) with K3's marker tokens added as special tokens: vLLM's K3
    parsers find the markers by their token ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(Path(__file__).parent / "data" / "tiny-k2"))
    tok.add_special_tokens({"additional_special_tokens": K3_MARKERS})
    return tok


def _token_deltas(tok: Any, text: str) -> list[tuple[str, list[int]]]:
    """(text, ids) per generated token, decoded incrementally as a server streams them (a token that ends
    inside a UTF-8 character is held back until the character is whole)."""
    ids = tok.encode(text, add_special_tokens=False)
    out: list[tuple[str, list[int]]] = []
    shown, held = "", []
    for i, t in enumerate(ids):
        held.append(t)
        now = tok.decode(ids[: i + 1], skip_special_tokens=False)
        if now.endswith("\ufffd"):
            continue
        out.append((now[len(shown):], held))
        shown, held = now, []
    assert shown == text
    return out


def _as_calls(pairs: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    return [(name, json.loads(args)) for name, args in pairs]


def test_k3_calls_streamed_by_vllm_reassemble_as_both_engines_parse_them(k3_tokenizer: Any) -> None:
    from sglang.srt.entrypoints.openai.protocol import Tool
    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.parser.reasoning_parser import ReasoningParser
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.parser.parser_manager import ParserManager

    tok = k3_tokenizer
    request = ChatCompletionRequest(model="kimi-k3", messages=[{"role": "user", "content": "Quote T"}],
                                    tools=K3_TOOLS, chat_template_kwargs={"thinking": True})
    # the parser the vLLM server builds for --tool-call-parser kimi_k3 --reasoning-parser kimi_k3
    parser_cls = ParserManager.get_parser(tool_parser_name="kimi_k3", reasoning_parser_name="kimi_k3",
                                          enable_auto_tools=True)
    whole = parser_cls(tok, K3_TOOLS, chat_template_kwargs={"thinking": True})
    reasoning, content, calls = whole.parse(K3_OUTPUT, request, enable_auto_tools=True,
                                            model_output_token_ids=tok.encode(K3_OUTPUT, add_special_tokens=False))
    assert reasoning == "The user asks for a quote; one call." and content == "Looking it up."
    assert _as_calls([(c.name, c.arguments) for c in calls]) == K3_CALLS

    streamed = parser_cls(tok, K3_TOOLS, chat_template_kwargs={"thinking": True})
    prompt = tok.encode(K3_GENERATION_PREFIX, add_special_tokens=False)
    deltas = _token_deltas(tok, K3_OUTPUT)
    assembler, texts = ToolCallAssembler(), {"reasoning": "", "content": ""}
    for i, (text, ids) in enumerate(deltas):
        d = streamed.parse_delta(text, ids, request, prompt_token_ids=prompt, finished=i == len(deltas) - 1)
        if d is None:
            continue
        texts["reasoning"] += d.reasoning or ""
        texts["content"] += d.content or ""
        # what goes over the wire: the delta's tool_calls as JSON, as compare reads them
        assembler.feed([tc.model_dump(exclude_none=True) for tc in d.tool_calls or []])
    assert assembler.faults == []
    assert _as_calls([(c["name"], c["arguments"]) for c in assembler.calls()]) == K3_CALLS
    assert all(c["id"] for c in assembler.calls())  # K3 writes no call ids: the server makes them
    assert texts == {"reasoning": reasoning, "content": content}

    # SGLang, whole and in 5-character chunks (its detectors work on text; markers split across chunks)
    tools = [Tool(**t) for t in K3_TOOLS]
    for chunk in (len(K3_OUTPUT), 5):
        rp = ReasoningParser(model_type="kimi_k3", stream_reasoning=True, tool_call_parser_active=True)
        fp = FunctionCallParser(tools=tools, tool_call_parser="kimi_k3")
        got_reasoning, got_content, got = "", "", {}
        for start in range(0, len(K3_OUTPUT), chunk):
            r, normal = rp.parse_stream_chunk(K3_OUTPUT[start:start + chunk])
            got_reasoning += r or ""
            if normal:
                text, items = fp.parse_stream_chunk(normal)
                got_content += text or ""
                for item in items:
                    slot = got.setdefault(item.tool_index, ["", ""])
                    slot[0] += item.name or ""
                    slot[1] += item.parameters or ""
        text, _ = fp.parse_stream_end()
        got_content += text or ""
        assert got_reasoning.strip() == reasoning and got_content.strip() == content, chunk
        assert _as_calls([tuple(got[i]) for i in sorted(got)]) == K3_CALLS, chunk
