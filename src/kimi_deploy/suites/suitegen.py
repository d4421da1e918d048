"""Writing the built-in comparison suites (kimi_deploy/suites/*.jsonl) from the tool suite
(kimi_deploy/toolsuite.py), deterministically for a seed: `benchmarks/suites/generate.py` is the command,
tests regenerate and compare byte for byte.

The tool-calls suite (300+ requests) is in the spirit of Moonshot's K2-Vendor-Verifier
(github.com/MoonshotAI/K2-Vendor-Verifier, README.md: tool-call arguments checked against the tool's
JSON schema, finish_reason `tool_calls` counted against the reference): 48 flat single-call requests, then
nested object/array/enum schemas with required and optional fields, string arguments over 2,000
characters passed verbatim, non-ASCII arguments, several calls in one turn (one tool or several),
conversations that carry tool calls and their results, `tool_choice` auto / required / none / named, and
thinking on and off. Every row states in `expected` what a correct answer must contain where the prompt
fixes it (see suites/__init__.py for the fields, compare/score.py for how they are checked).

`tool-calls-flat` is the first suite's 48 flat single-call rows alone: a quick suite (the first
suite's shape), for smoke runs and tests that need no more. `k3-features` is K3's feature contract
(k3.py: dynamic tools, response_format, every tool_choice, $ref/anyOf/nested/range schemas)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

from . import k3
from ..toolsuite import (CHAT, Request, arguments_json, call_summary, history, offered_tools, request, tool_case,
                         tool_result, tool_subset)

MIN_LONG = 2000  # characters: the "string arguments over 2,000 characters"


def _legacy_tool_calls(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """The first suite's flat single-call rows (kept: the simple cases stay in the suite)."""
    rows = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.6:
            case = tool_case(rng)
            rows.append({"messages": [{"role": "user", "content": case.prompt}], "tools": tool_subset(rng, case.tool),
                         "expected": {"tool_calls": True,
                                      "calls": [{"name": case.tool, "arguments": case.arguments}]}})
        elif kind < 0.8:
            prompt, _ = rng.choice(CHAT)
            rows.append({"messages": [{"role": "user", "content": prompt}], "tools": tool_subset(rng),
                         "expected": {"tool_calls": False}})
        else:  # history with an OpenAI-style id the adapter must rewrite to functions.NAME:IDX
            case = tool_case(rng)
            call_id = f"call_{rng.getrandbits(48):012x}"
            rows.append({"messages": [
                {"role": "user", "content": case.prompt},
                {"role": "assistant", "content": "", "tool_calls": [{"id": call_id, "type": "function", "function": {
                    "name": case.tool, "arguments": arguments_json(case.arguments)}}]},
                {"role": "tool", "tool_call_id": call_id, "content": json.dumps(tool_result(case))}],
                "tools": tool_subset(rng, case.tool), "expected": {"tool_calls": False}})
        rows[-1].update({"id": f"tool-calls-{i:03d}", "suite": "tool-calls", "thinking": False, "max_tokens": 256})
    return rows


def _expect(req: Request, *, ordered: bool) -> dict[str, Any]:
    calls = []
    for c in req.calls:
        e: dict[str, Any] = {"name": c.name, "arguments": c.arguments}
        if req.long:
            e["min_length"] = {req.long: MIN_LONG}
        calls.append(e)
    return {"tool_calls": True, "calls": calls, "ordered": ordered}


def _max_tokens(req: Request | None, thinking: bool) -> int:
    if req is not None and req.long:
        return 1024  # the 2,100-character argument is ~600 tokens for Kimi's tokenizer, more for tiny-k2's
    return (512 if thinking else 256) + (128 * (len(req.calls) - 1) if req else 0)


SINGLE = ["nested", "message", "note", "unicode"]


def _rich_tool_calls(rng: random.Random, start: int) -> list[dict[str, Any]]:
    """The 268 richer rows; (kind, count) below is the mix."""
    rows: list[dict[str, Any]] = []

    def add(kind: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]], expected: dict[str, Any],
            thinking: bool, max_tokens: int, tool_choice: Any = None) -> None:
        row: dict[str, Any] = {"id": f"tool-calls-{start + len(rows):03d}", "suite": "tool-calls", "kind": kind,
                               "messages": messages, "tools": tools, "thinking": thinking,
                               "max_tokens": max_tokens, "expected": expected}
        if tool_choice is not None:
            row["tool_choice"] = tool_choice
        rows.append(row)

    def think() -> bool:
        return rng.random() < 0.3

    for kind, n in (("nested", 40), ("message", 16), ("note", 12), ("unicode", 16), ("parallel_same", 24),
                    ("parallel_mixed", 24)):
        for _ in range(n):
            req, t = request(rng, kind), think()
            add(kind, [{"role": "user", "content": req.prompt}], offered_tools(rng, [c.name for c in req.calls], 3),
                _expect(req, ordered=kind == "parallel_mixed"), t, _max_tokens(req, t))
    for i in range(24):  # long verbatim arguments: 16 auto, 4 required, 4 named
        req = request(rng, "long")
        choice = None if i < 16 else "required" if i < 20 else {"type": "function", "function": {"name": "save_note"}}
        add("long", [{"role": "user", "content": req.prompt}], offered_tools(rng, ["save_note"], 1),
            _expect(req, ordered=False), False, _max_tokens(req, False), choice)
    for _ in range(20):  # the turn after the tools returned: an answer, no new call
        req, t = request(rng, rng.choice(["parallel_same", "parallel_mixed", "nested", "message"])), think()
        messages = [{"role": "user", "content": req.prompt}, *history(rng, req.calls)]
        add("after_results", messages, offered_tools(rng, [c.name for c in req.calls], 2), {"tool_calls": False},
            t, _max_tokens(None, t))
    for _ in range(20):  # a finished exchange with tool results, then a new request
        first = request(rng, rng.choice(["parallel_same", "unicode", "nested"]))
        req, t = request(rng, rng.choice(SINGLE + ["parallel_same"])), think()
        messages = [{"role": "user", "content": first.prompt}, *history(rng, first.calls),
                    {"role": "assistant", "content": call_summary(first.calls)},
                    {"role": "user", "content": req.prompt}]
        add("multi_turn", messages, offered_tools(rng, [c.name for c in first.calls + req.calls], 2),
            _expect(req, ordered=False), t, _max_tokens(req, t))
    for _ in range(20):  # tool_choice none: the tools are offered, the request needs one, no call may come
        req, t = request(rng, rng.choice(SINGLE + ["parallel_same"])), think()
        add("choice_none", [{"role": "user", "content": req.prompt}],
            offered_tools(rng, [c.name for c in req.calls], 2), {"tool_calls": False}, t, _max_tokens(None, t), "none")
    for _ in range(20):  # tool_choice required
        req, t = request(rng, rng.choice(SINGLE + ["parallel_same", "parallel_mixed"])), think()
        add("choice_required", [{"role": "user", "content": req.prompt}],
            offered_tools(rng, [c.name for c in req.calls], 2), _expect(req, ordered=False), t,
            _max_tokens(req, t), "required")
    for _ in range(20):  # tool_choice naming the tool the request needs
        req, t = request(rng, rng.choice(SINGLE)), think()
        name = req.calls[0].name
        add("choice_named", [{"role": "user", "content": req.prompt}], offered_tools(rng, [name], 3),
            _expect(req, ordered=False), t, _max_tokens(req, t), {"type": "function", "function": {"name": name}})
    for _ in range(12):  # chit-chat with tools offered: no call
        prompt, _ = rng.choice(CHAT)
        t = think()
        add("chat", [{"role": "user", "content": prompt}], offered_tools(rng, [], 4), {"tool_calls": False}, t,
            _max_tokens(None, t))
    return rows


def _chat(rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for i, (prompt, _) in enumerate(CHAT):
        rows.append({"id": f"chat-{i:03d}", "messages": [{"role": "user", "content": prompt}], "max_tokens": 256})
        rows.append({"id": f"chat-sys-{i:03d}", "messages": [{"role": "system", "content": "Answer briefly."},
                                                             {"role": "user", "content": prompt}], "max_tokens": 256})
    rows.append({"id": "chat-truncated", "messages": [{"role": "user", "content": CHAT[4][0]}], "max_tokens": 4})
    for r in rows:
        r.update({"suite": "chat", "thinking": False})
    return rows


def _thinking(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        if i % 2:
            case = tool_case(rng)
            rows.append({"messages": [{"role": "user", "content": case.prompt}], "tools": tool_subset(rng, case.tool),
                         "expected": {"tool_calls": True, "calls": [{"name": case.tool}], "reasoning": True}})
        else:
            prompt, _ = rng.choice(CHAT)
            rows.append({"messages": [{"role": "user", "content": prompt}], "expected": {"reasoning": True}})
        rows[-1].update({"id": f"thinking-{i:03d}", "suite": "thinking", "thinking": True, "max_tokens": 512})
    return rows


def suites(seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """The built-in suites' rows (the legacy rows draw from the same random stream as before, so the chat
    and thinking suites are unchanged; the richer rows use their own)."""
    rng = random.Random(seed)
    legacy = _legacy_tool_calls(rng, 48)
    chat, thinking = _chat(rng), _thinking(rng, 16)
    for r in legacy:
        r["kind"] = "flat"
    flat = copy.deepcopy(legacy)
    for r in flat:
        r["suite"] = "tool-calls-flat"
    return {"tool-calls": _interleave(legacy + _rich_tool_calls(random.Random(seed * 1000 + 14), len(legacy))),
            "tool-calls-flat": flat, "chat": chat, "thinking": thinking, "k3-features": k3.rows(seed)}


def _interleave(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows taken from each kind in turn, numbered in that order: the first N rows (`compare --limit N`)
    are a cross-section of the suite, not N rows of one kind."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(r)
    out: list[dict[str, Any]] = []
    queues = list(by_kind.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    for i, r in enumerate(out):
        r["id"] = f"tool-calls-{i:03d}"
    return out


def generate(out_dir: Path, seed: int = 7) -> list[Path]:
    """Write the suites into out_dir (one JSONL file each); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in suites(seed).items():
        p = out_dir / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
        paths.append(p)
    return paths

