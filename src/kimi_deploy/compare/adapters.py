"""Request adapters: one suite row -> the keyword arguments of `client.chat.completions.create` for one
endpoint. Everything that depends on the kind of endpoint (model ids, thinking fields, fixed sampling on
the hosted API, where reasoning comes back) lives in kimi_deploy.endpoint; what is left here is the
conversation itself:

- tool-call ids in the history are rewritten to Kimi's `functions.NAME:IDX` (the hosted API does it itself;
  K2-Vendor-Verifier advises it for self-hosted engines, whose chat template copies ids verbatim:
  github.com/MoonshotAI/K2-Vendor-Verifier README.md);
- tools declared in a system message (`messages[].tools`, K3's dynamic tools), tool_choice and
  response_format are sent as the row wrote them, to every endpoint (the openai client passes a
  message's extra keys through; tests/test_compare.py checks what reaches the server).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ..endpoint import Endpoint

_KIMI_ID = re.compile(r"^functions\.[^:]+:\d+$")


def normalize_tool_ids(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite assistant tool-call ids (and the tool messages that answer them) to functions.NAME:IDX,
    numbering calls across the conversation as Kimi does."""
    out = copy.deepcopy(messages)
    mapping: dict[str, str] = {}
    counter = 0
    for m in out:
        if m.get("role") == "assistant":
            for tc in m.get("tool_calls") or []:
                old = tc.get("id", "")
                new = old if _KIMI_ID.match(old or "") else f"functions.{tc['function']['name']}:{counter}"
                mapping[old] = new
                tc["id"] = new
                counter += 1
        elif m.get("role") == "tool" and m.get("tool_call_id") in mapping:
            m["tool_call_id"] = mapping[m["tool_call_id"]]
    return out


def request_kwargs(endpoint: Endpoint, model: str, row: dict[str, Any], temperature: float | None,
                   max_tokens: int | None) -> dict[str, Any]:
    """Keyword arguments for `client.chat.completions.create` (model is the id this endpoint knows)."""
    kwargs: dict[str, Any] = {"model": model, "messages": normalize_tool_ids(row["messages"])}
    if row.get("tools"):
        kwargs["tools"] = row["tools"]
    if row.get("tool_choice"):  # tools may be offered in a system message only (K3's dynamic tools)
        kwargs["tool_choice"] = row["tool_choice"]
    if row.get("response_format"):
        kwargs["response_format"] = row["response_format"]
    mt = row.get("max_tokens", max_tokens)
    if mt:
        kwargs["max_tokens"] = mt
    kwargs.update(endpoint.sampling_fields(model, temperature))
    extra = endpoint.thinking_fields(model, row.get("thinking"), row.get("thinking_effort"))
    if extra:
        kwargs["extra_body"] = extra
    return kwargs
