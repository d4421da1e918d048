"""Streamed answers, assembled from their deltas the way OpenAI-compatible clients assemble them.

Rules (OpenAI's chat-completions streaming format, platform.openai.com/docs/api-reference/chat-streaming):
- content and reasoning deltas are concatenated in order;
- tool-call deltas are merged by kimi_deploy.toolcalls (the one assembler bench uses too): by `index`, id
  and name from a call's first delta, arguments appended; a name sent again, an id that changes or a delta
  without an index is a fault, recorded in `stream_notes` and on the call (consistency.py makes it a
  disagreement);
- the last chunk's `finish_reason` is the answer's; with `stream_options: {"include_usage": true}` the
  server sends a final chunk with no choices and the usage (vLLM and Moonshot's API both honour it;
  K2-Vendor-Verifier's tool_calls_eval.py forces it for the same reason).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..endpoint import reasoning_of
from ..toolcalls import MAX_FAULTS, ToolCallAssembler


@dataclass
class Assembly:
    """One streamed answer being put together from its chunks."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tools: ToolCallAssembler = field(default_factory=ToolCallAssembler)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    own_notes: list[str] = field(default_factory=list)  # protocol oddities outside the tool calls
    chunks: int = 0

    def note(self, text: str) -> None:
        if text not in self.own_notes and len(self.own_notes) < MAX_FAULTS:
            self.own_notes.append(text)

    @property
    def notes(self) -> list[str]:
        """Every protocol oddity seen: the tool-call faults, then the others."""
        return self.tools.faults + self.own_notes

    def feed(self, chunk: Any) -> None:
        """Merge one ChatCompletionChunk (openai object)."""
        self.chunks += 1
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.prompt_tokens = usage.prompt_tokens
            self.completion_tokens = usage.completion_tokens
            details = getattr(usage, "completion_tokens_details", None)
            self.reasoning_tokens = getattr(details, "reasoning_tokens", None) if details else None
        for choice in chunk.choices or []:
            if choice.index not in (0, None):
                continue  # one answer per request (n=1)
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    self.content.append(delta.content)
                if (r := reasoning_of(delta)):
                    self.reasoning.append(r)
                if delta.tool_calls is not None and not delta.tool_calls and choice.finish_reason is None:
                    self.note("a delta carried an empty tool_calls list")
                if delta.tool_calls:
                    self.tools.feed(tc.model_dump() for tc in delta.tool_calls)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def tool_calls(self) -> list[dict[str, Any]]:
        return self.tools.calls()


async def stream_answer(client: Any, kwargs: dict[str, Any]) -> tuple[Assembly, float]:
    """Send one request with stream=True (usage included) and assemble it; (assembly, seconds)."""
    t0 = time.monotonic()
    acc = Assembly()
    stream = await client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    try:
        async for chunk in stream:
            acc.feed(chunk)
    finally:
        await stream.close()
    return acc, time.monotonic() - t0
