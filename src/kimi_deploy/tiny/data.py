"""Synthetic conversations the tiny model is trained on: tool requests answered with one well-formed
Kimi tool-call section, chit-chat answered with text (with or without tools offered), follow-ups after
a tool result, each with thinking on (a short reasoning, then `</think>`) or off."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from ..toolsuite import CHAT, ToolCase, arguments_json, final_answer, tool_case, tool_result, tool_subset

CALL = ("<|tool_calls_section_begin|><|tool_call_begin|>functions.{name}:{idx}<|tool_call_argument_begin|>"
        "{args}<|tool_call_end|><|tool_calls_section_end|>")


@dataclass
class Example:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    thinking: bool
    target: str  # what the assistant generates after the generation prompt, ending with <|im_end|>


def _call_text(case: ToolCase, idx: int) -> str:
    return CALL.format(name=case.tool, idx=idx, args=arguments_json(case.arguments))


def _reasoning_for_tool(case: ToolCase) -> str:
    return f"The user needs {case.tool}. I will call it."


def example(rng: random.Random) -> Example:
    thinking = rng.random() < 0.5
    kind = rng.random()
    if kind < 0.55:  # a tool request
        case = tool_case(rng)
        tools = tool_subset(rng, case.tool)
        answer = _call_text(case, 0)
        reasoning = _reasoning_for_tool(case)
        messages = [{"role": "user", "content": case.prompt}]
    elif kind < 0.8:  # chit-chat, tools offered or not
        prompt, answer = rng.choice(CHAT)
        tools = tool_subset(rng) if rng.random() < 0.6 else None
        reasoning = "No tool is needed. I will answer directly."
        messages = [{"role": "user", "content": prompt}]
    else:  # the turn after a tool returned
        case = tool_case(rng)
        tools = tool_subset(rng, case.tool)
        call_id = f"functions.{case.tool}:0"
        messages = [
            {"role": "user", "content": case.prompt},
            {"role": "assistant", "content": "", "tool_calls": [{
                "id": call_id, "type": "function",
                "function": {"name": case.tool, "arguments": arguments_json(case.arguments)}}]},
            {"role": "tool", "tool_call_id": call_id, "content": json.dumps(tool_result(case))},
        ]
        if thinking:
            messages[1]["reasoning_content"] = _reasoning_for_tool(case)
        answer = final_answer(case)
        reasoning = "The tool answered. I will report it."
    target = (f"{reasoning}</think>{answer}" if thinking else answer) + "<|im_end|>"
    return Example(messages, tools, thinking, target)


def examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    return [example(rng) for _ in range(n)]
