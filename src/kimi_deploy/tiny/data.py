"""Synthetic conversations the tiny model is trained on, drawn from the tool suite (kimi_deploy/toolsuite.py)
like the comparison suites: tool requests answered with one well-formed Kimi tool-call section holding one
or several calls (`functions.NAME:IDX`, IDX counting the conversation's calls), nested and non-ASCII
arguments, notes whose body is a text over 2,000 characters copied out of the prompt, chit-chat answered
with text (with or without tools offered), the turn after tool results, and a new request after a
finished exchange; each with thinking on (a short reasoning, then `</think>`) or off."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ..toolsuite import CHAT, Call, arguments_json, call_summary, history, offered_tools, request, tool_case

SECTION = "<|tool_calls_section_begin|>{calls}<|tool_calls_section_end|>"
CALL = "<|tool_call_begin|>functions.{name}:{idx}<|tool_call_argument_begin|>{args}<|tool_call_end|>"

# (kind, weight) of the ordinary examples; long notes are drawn apart (long_examples) because their
# ~1,500-token sequences are trained in batches of their own.
KINDS = [("flat", 20), ("nested", 14), ("message", 7), ("note", 5), ("unicode", 6), ("parallel_same", 12),
         ("parallel_mixed", 12), ("chat", 10), ("after_results", 8), ("multi_turn", 8)]

EXTRA_TOOLS = 3  # tools offered beside the needed ones (at most), as in the suite


@dataclass
class Example:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    thinking: bool
    target: str  # what the assistant generates after the generation prompt, ending with <|im_end|>


def calls_text(calls: tuple[Call, ...] | list[Call], first_idx: int = 0) -> str:
    return SECTION.format(calls="".join(CALL.format(name=c.name, idx=first_idx + i, args=arguments_json(c.arguments))
                                        for i, c in enumerate(calls)))


def _reasoning_for(calls: tuple[Call, ...] | list[Call]) -> str:
    names = list(dict.fromkeys(c.name for c in calls))
    if len(calls) == 1:
        return f"The user needs {names[0]}. I will call it."
    return f"The user needs {' and '.join(names)}. I will make {len(calls)} calls."


def _kind(rng: random.Random) -> str:
    return rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]


def example(rng: random.Random, kind: str | None = None) -> Example:
    thinking = rng.random() < 0.5
    kind = kind or _kind(rng)
    if kind == "chat":
        prompt, answer = rng.choice(CHAT)
        tools = offered_tools(rng, [], 3) if rng.random() < 0.6 else None
        return _done([{"role": "user", "content": prompt}], tools or None, thinking,
                     "No tool is needed. I will answer directly.", answer)
    if kind == "flat":
        case = tool_case(rng)
        calls = (Call(case.tool, case.arguments),)
        prompt = case.prompt
    else:
        req = request(rng, rng.choice(["parallel_same", "parallel_mixed", "nested", "unicode"])
                      if kind in ("after_results", "multi_turn") else kind)
        calls, prompt = req.calls, req.prompt
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    needed = [c.name for c in calls]
    if kind == "after_results":
        return _done(messages + history(rng, calls, reasoning=_reasoning_for(calls) if thinking else None),
                     offered_tools(rng, needed, EXTRA_TOOLS), thinking,
                     "The tools answered. I will report it.", call_summary(calls))
    first_idx = 0
    if kind == "multi_turn":
        nxt = request(rng, rng.choice(["nested", "message", "unicode", "parallel_same"]))
        messages += history(rng, calls) + [{"role": "assistant", "content": call_summary(calls)},
                                              {"role": "user", "content": nxt.prompt}]
        first_idx, needed, calls = len(calls), needed + [c.name for c in nxt.calls], nxt.calls
    return _done(messages, offered_tools(rng, needed, EXTRA_TOOLS), thinking, _reasoning_for(calls),
                 calls_text(calls, first_idx))


def _done(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, thinking: bool, reasoning: str,
          answer: str) -> Example:
    target = (f"{reasoning}</think>{answer}" if thinking else answer) + "<|im_end|>"
    return Example(messages, tools, thinking, target)


def examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    return [example(rng) for _ in range(n)]


def long_examples(n: int, seed: int) -> list[Example]:
    """Notes whose body is one of the suite's texts over 2,000 characters, copied into the call (thinking
    off: the suite asks them so)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        req = request(rng, "long")
        out.append(Example([{"role": "user", "content": req.prompt}], offered_tools(rng, ["save_note"], 1), False,
                           calls_text(req.calls) + "<|im_end|>"))
    return out
