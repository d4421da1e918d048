"""Streamed tool calls put together from their deltas, by one rule for `bench` and `compare`: OpenAI's
chat-completions streaming contract (platform.openai.com/docs/api-reference/chat-streaming,
`choices[].delta.tool_calls[]`), which vLLM and SGLang follow:

- every tool-call delta carries the `index` of the call it belongs to; deltas of several calls may
  interleave (parallel calls at index 0, 1, ...);
- the first delta of an index carries the call's `id`, `type` ("function", the only type) and
  `function.name` (an id or name first seen on a later delta of that index is taken as the first);
- later deltas of that index carry only `function.arguments` fragments, appended in order.

A delta that breaks the contract is a fault, reported (`faults`, and on the call it touched) and never
silently merged:
- a name on a later delta of an index (`later_names`), whether the same or another: the openai Python
  SDK's stream helper concatenates every string field of a delta (openai-python,
  src/openai/lib/streaming/_deltas.py, accumulate_delta), so its users see the name doubled or spliced,
  while clients that keep the first name see another call than the server meant (the kimi_k2 parser's
  streamed names: vllm-project/vllm #24478, fixed as a family by #38579). The first name is kept;
- an id on a later delta that differs from the first (`later_ids`): the tool result would answer
  another call. The first id is kept; the same id sent again names the same call and is no fault;
- a delta without an index (`unindexed`): merged as a client that guesses would, a delta with an id
  starting a new call and one without continuing the last.

This module imports nothing of the project: deltas are plain dicts (parsed SSE JSON, or an openai
object's `model_dump()`)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

MAX_FAULTS = 20  # distinct fault texts kept per answer: a broken parser repeats one fault on every delta


class ToolCallAssembler:
    """The tool calls of one streamed answer (choice), fed delta by delta."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}
        self.faults: list[str] = []

    def _fault(self, text: str) -> None:
        if text not in self.faults and len(self.faults) < MAX_FAULTS:
            self.faults.append(text)

    def feed(self, deltas: Iterable[Mapping[str, Any]]) -> None:
        """Merge the `tool_calls` list of one chunk's delta."""
        for delta in deltas:
            self._merge(delta)

    def _merge(self, delta: Mapping[str, Any]) -> None:
        fn = delta.get("function") or {}
        name, args, call_id = fn.get("name"), fn.get("arguments"), delta.get("id")
        idx = delta.get("index")
        unindexed = not isinstance(idx, int) or isinstance(idx, bool)
        if unindexed:
            self._fault("a tool-call delta without an index")
            idx = max(max(self._calls, default=-1) + (0 if call_id is None else 1), 0)
        slot = self._calls.get(idx)
        if slot is None:
            slot = self._calls[idx] = {"id": call_id, "name": name or "", "arguments": ""}
        else:
            if call_id and slot["id"] and call_id != slot["id"]:
                self._fault(f"call {idx}: id sent again and changed ({slot['id']!r} then {call_id!r})")
                slot.setdefault("later_ids", []).append(call_id)
            elif call_id and not slot["id"]:
                slot["id"] = call_id
            if name:
                if slot["name"]:
                    self._fault(f"call {idx}: name sent again ({slot['name']!r} then {name!r}); a client that "
                                f"concatenates sees {slot['name'] + name!r}")
                    slot.setdefault("later_names", []).append(name)
                else:
                    slot["name"] = name
        if unindexed:
            slot["unindexed"] = slot.get("unindexed", 0) + 1
        if args:
            slot["arguments"] += args

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[dict[str, Any]]:
        """The calls in index order: {id (None when never sent), name ("" when never sent), arguments (the
        raw string)}, plus `later_names`, `later_ids` and `unindexed` on a call a fault touched."""
        out = []
        for idx in sorted(self._calls):
            c = self._calls[idx]
            out.append({"id": c["id"], "name": c["name"], "arguments": c["arguments"],
                        **{k: c[k] for k in ("later_names", "later_ids", "unindexed") if k in c}})
        return out
