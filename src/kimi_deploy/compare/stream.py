"""Streamed answers, assembled from their deltas the way OpenAI-compatible clients assemble them.

Rules (OpenAI's chat-completions streaming format, platform.openai.com/docs/api-reference/chat-streaming):
- content and reasoning deltas are concatenated in order;
- tool-call deltas are merged by their `index`; `function.arguments` fragments are concatenated; the `id`
  and `function.name` of a call come from the first delta of that index that carries them. A later delta
  that carries a name again is recorded in `stream_notes`: the openai Python SDK's own stream helper
  concatenates every string field of a delta (openai-python, src/openai/lib/streaming/_deltas.py,
  accumulate_delta), so such a name reaches that client duplicated or split, while clients that keep the
  first name see a truncated one. Either way the server misbehaved (the kimi_k2 parser's streamed names
  and multi-call misparses: vllm-project/vllm #24478, fixed as a family by #38579);
- the last chunk's `finish_reason` is the answer's; with `stream_options: {"include_usage": true}` the
  server sends a final chunk with no choices and the usage (vLLM and Moonshot's API both honour it;
  K2-Vendor-Verifier's tool_calls_eval.py forces it for the same reason).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..endpoint import reasoning_of


@dataclass
class Assembly:
    """One streamed answer being put together from its chunks."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    notes: list[str] = field(default_factory=list)
    chunks: int = 0

    def note(self, text: str) -> None:
        if text not in self.notes and len(self.notes) < 20:
            self.notes.append(text)

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
                for tc in delta.tool_calls or []:
                    self._merge_call(tc)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def _merge_call(self, tc: Any) -> None:
        idx = tc.index
        if idx is None:
            self.note("a tool-call delta without an index")
            idx = max(self.calls, default=-1) + (0 if tc.id is None else 1)
            idx = max(idx, 0)
        fn = tc.function
        name = fn.name if fn is not None else None
        args = fn.arguments if fn is not None else None
        slot = self.calls.get(idx)
        if slot is None:
            slot = self.calls[idx] = {"id": tc.id, "name": name, "arguments": ""}
        else:
            if tc.id and slot["id"] and tc.id != slot["id"]:
                self.note(f"call {idx}: id sent again and changed ({slot['id']!r} then {tc.id!r})")
            elif tc.id and not slot["id"]:
                slot["id"] = tc.id
            if name:
                if slot["name"]:
                    self.note(f"call {idx}: name sent again ({slot['name']!r} then {name!r}); a client that "
                              f"concatenates sees {slot['name'] + name!r}")
                    slot.setdefault("later_names", []).append(name)
                else:
                    slot["name"] = name
        if args:
            slot["arguments"] += args

    def tool_calls(self) -> list[dict[str, Any]]:
        out = []
        for idx in sorted(self.calls):
            c = self.calls[idx]
            call = {"id": c["id"], "name": c["name"] or "", "arguments": c["arguments"]}
            if c.get("later_names"):
                call["later_names"] = c["later_names"]
            out.append(call)
        return out


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
