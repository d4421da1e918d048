"""Streamed vs non-streamed: the same request to the same endpoint must give the same answer whichever way
it is delivered. The kimi_k2 tool parsers have failed only when streaming, and sometimes only under load:
multi-call misparses (vllm-project/vllm #24478; a family fixed by the rewrite in #38579: #37184, #38441,
#38353, #38274), empty `tool_calls` deltas under concurrent load (vllm #54701) and dropped or hung long
arguments (sgl-project/sglang #23363), while the non-streamed answers were fine. Each kind below names
one way a streaming client would see something else than a non-streaming one; any of them on the local
endpoint breaks streaming clients whatever the reference says.

Answers are compared structurally (tool calls, names, JSON arguments, markers, where reasoning went,
finish reason), not text for text: with greedy sampling the text matches too, but batch composition can
move a floating-point tie, and that is not a parser bug."""

from __future__ import annotations

import json
import re
from typing import Any

from ..suites import offered_tools
from .run import Outcome
from .score import call_problems, response_problems

# Kimi's tool-call section markers (github.com/MoonshotAI/Kimi-K2, docs/tool_call_guidance.md)
MARKERS = re.compile(r"<\|tool_calls?_(?:section_)?(?:begin|end)\|>|<\|tool_call_argument_begin\|>")
THINK = re.compile(r"</?think>")

KINDS = {
    "stream_error": "the streamed request failed where the non-streamed one answered",
    "stream_missing_tool_calls": "non-streamed answer called tools, the streamed one has no (or empty) calls",
    "stream_extra_tool_calls": "the streamed answer called tools, the non-streamed one did not",
    "stream_finish_tool_calls_without_calls": "streamed finish_reason tool_calls with no tool call assembled",
    "stream_tool_call_count_differs": "a different number of tool calls streamed and non-streamed",
    "stream_tool_name_split_or_duplicated": "a streamed call's name differs, is unknown, or was sent again",
    "stream_tool_call_id_or_index": "a streamed call's id changed between its deltas, or a tool-call delta came "
                                    "without an index (OpenAI's streaming contract; kimi_deploy/toolcalls.py)",
    "stream_arguments_invalid_json": "streamed arguments are not valid JSON (the non-streamed ones are)",
    "stream_arguments_differ": "streamed and non-streamed arguments parse to different values",
    "stream_markers_in_content": "tool-call markers in the streamed content",
    "stream_reasoning_in_content": "reasoning arrived in the streamed content instead of its own field",
    "stream_finish_reason_differs": "a different finish_reason streamed and non-streamed",
    "stream_arguments_schema_invalid": "streamed tool-call arguments are not valid against the tool's JSON schema "
                                       "(jsonschema), the non-streamed ones are",
    "stream_response_format_invalid": "the streamed content is not JSON valid against the row's response_format, "
                                      "the non-streamed content is",
    "stream_usage_missing": "stream_options.include_usage was asked and the stream carried no usage.prompt_tokens "
                            "(the non-streamed answer has it; Kimi-Vendor-Verifier tests/prompt_tokens reads the "
                            "count from the stream)",
}


def _json(text: str | None) -> tuple[bool, Any]:
    try:
        return True, json.loads(text or "{}")
    except json.JSONDecodeError:
        return False, None


def _schema_bad(row: dict[str, Any], calls: list[dict[str, Any]]) -> bool:
    """Arguments that parse but are not valid against their tool's schema (other faults have kinds of
    their own)."""
    return any(".function.arguments" in p and "invalid JSON" not in p for p in call_problems(row, calls))


def disagreements(row: dict[str, Any], ns: Outcome, st: Outcome) -> list[str]:
    """The kinds (KINDS) of disagreement between a non-streamed answer `ns` and a streamed answer `st` to
    the same request, in the order a reader should see them; [] when they agree."""
    if ns.error:
        return []  # nothing to hold the stream to (the error itself is scored elsewhere)
    if st.error:
        return ["stream_error"]
    kinds: list[str] = []
    offered = set(offered_tools(row))
    if st.finish_reason == "tool_calls" and not st.tool_calls:
        kinds.append("stream_finish_tool_calls_without_calls")
    if ns.tool_calls and not st.tool_calls:
        kinds.append("stream_missing_tool_calls")
    elif st.tool_calls and not ns.tool_calls:
        kinds.append("stream_extra_tool_calls")
    elif ns.tool_calls and st.tool_calls:
        if len(ns.tool_calls) != len(st.tool_calls):
            kinds.append("stream_tool_call_count_differs")
        # a name the non-streamed answer also used is the model's choice (an unoffered tool is a schema
        # finding), not a streaming fault
        ns_names = {c["name"] for c in ns.tool_calls}
        names_bad = any(s.get("later_names") or not s["name"]
                        or (offered and s["name"] not in offered and s["name"] not in ns_names)
                        for s in st.tool_calls)
        names_bad |= [c["name"] for c in ns.tool_calls] != [c["name"] for c in st.tool_calls] and \
            len(ns.tool_calls) == len(st.tool_calls)
        if names_bad:
            kinds.append("stream_tool_name_split_or_duplicated")
        parsed = [_json(c["arguments"]) for c in st.tool_calls]
        if any(not ok for ok, _ in parsed) and all(_json(c["arguments"])[0] for c in ns.tool_calls):
            kinds.append("stream_arguments_invalid_json")
        elif len(ns.tool_calls) == len(st.tool_calls) and \
                [v for _, v in parsed] != [_json(c["arguments"])[1] for c in ns.tool_calls]:
            kinds.append("stream_arguments_differ")
    if any(s.get("later_ids") or s.get("unindexed") for s in st.tool_calls):
        kinds.append("stream_tool_call_id_or_index")
    if MARKERS.search(st.content or "") and not MARKERS.search(ns.content or ""):
        kinds.append("stream_markers_in_content")
    if (THINK.search(st.content or "") and not THINK.search(ns.content or "")) or \
            (ns.reasoning and not st.reasoning and ns.reasoning.strip()[:40] in (st.content or "")):
        kinds.append("stream_reasoning_in_content")
    # held to the schemas on their own, not only to the other answer: the check a streaming client's
    # validator makes (the verifier validates streamed arguments: tests/tool_call_json_schema)
    if st.tool_calls and "stream_arguments_invalid_json" not in kinds and _schema_bad(row, st.tool_calls) \
            and not _schema_bad(row, ns.tool_calls):
        kinds.append("stream_arguments_schema_invalid")
    if response_problems(row, st) and response_problems(row, ns) == []:
        kinds.append("stream_response_format_invalid")
    if ns.prompt_tokens is not None and st.prompt_tokens is None:
        kinds.append("stream_usage_missing")
    if not kinds and st.finish_reason != ns.finish_reason:
        kinds.append("stream_finish_reason_differs")
    return kinds


def side_by_side(row: dict[str, Any], ns: Outcome, st: Outcome, kinds: list[str]) -> dict[str, Any]:
    """One disagreement as the report shows it."""
    def view(o: Outcome) -> dict[str, Any]:
        return {"finish_reason": o.finish_reason, "content": (o.content or "")[:300] or None,
                "reasoning": (o.reasoning or "")[:200] or None, "tool_calls": o.tool_calls, "error": o.error,
                **({"stream_notes": o.stream_notes} if o.stream_notes else {})}
    return {"id": row["id"], "kinds": kinds, "non_streamed": view(ns), "streamed": view(st)}


def compare_modes(rows: list[dict[str, Any]], ns: dict[str, Outcome],
                  st: dict[str, Outcome]) -> list[dict[str, Any]]:
    """Every row whose streamed answer disagrees with its non-streamed one, side by side."""
    out = []
    for row in rows:
        a, b = ns.get(row["id"]), st.get(row["id"])
        if a is None or b is None:
            continue
        if kinds := disagreements(row, a, b):
            out.append(side_by_side(row, a, b, kinds))
    return out
