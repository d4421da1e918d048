"""Endpoint adapters: the real differences between a self-hosted vLLM/SGLang endpoint and Moonshot's
hosted API, applied to the same suite request before it goes through the one `openai.AsyncOpenAI` code
path (facts: kimi-k2-facts.md §4):

- model names: self-hosted served names map to the hosted ids (catalog `hosted_name`);
- thinking: self-hosted takes `chat_template_kwargs.thinking`; the hosted API takes
  `thinking: {"type": "disabled"}` to turn it off on K2.5+ (kimi-k2-thinking is always on);
- sampling: on hosted kimi-k2.5 / kimi-k2.6 temperature, top_p, n and penalties "cannot be modified",
  so they are not sent there;
- reasoning comes back as `reasoning_content` (hosted, SGLang) or `reasoning` (vLLM);
- tool-call ids in the history are rewritten to Kimi's `functions.NAME:IDX` (the hosted API does it itself;
  K2-Vendor-Verifier advises it for self-hosted engines, whose template copies ids verbatim).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from ..catalog import MODELS

HOSTED_HOSTS = ("api.moonshot.ai", "api.moonshot.cn")
# Hosted models whose sampling parameters are fixed (platform parameter table, kimi-k2-facts.md §4).
FIXED_SAMPLING = ("kimi-k2.5", "kimi-k2.6")
ALWAYS_THINKING = ("kimi-k2-thinking", "kimi-k2-thinking-turbo")
_KIMI_ID = re.compile(r"^functions\.[^:]+:\d+$")


def hosted_model_for(name: str) -> str:
    """A self-hosted served name (catalog id / alias / repo) -> the hosted API's model id."""
    key = name.lower()
    for m in MODELS.values():
        if key in (m.id, m.repo.lower(), *m.aliases) and m.hosted_name:
            return m.hosted_name
    return name


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


@dataclass
class Endpoint:
    """One side of the comparison."""

    name: str  # "local" or "reference"
    base_url: str
    model: str
    hosted: bool
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def make(cls, name: str, base_url: str, model: str, api_key: str | None, kind: str = "auto") -> "Endpoint":
        host = urlparse(base_url).hostname or ""
        hosted = kind == "moonshot" or (kind == "auto" and host in HOSTED_HOSTS)
        return cls(name, base_url.rstrip("/"), hosted_model_for(model) if hosted else model, hosted, api_key)

    def facts(self) -> dict[str, Any]:
        return {"url": self.base_url, "model": self.model, "kind": "moonshot" if self.hosted else "self-hosted"}

    def request(self, row: dict[str, Any], temperature: float | None, max_tokens: int | None) -> dict[str, Any]:
        """Keyword arguments for `client.chat.completions.create`."""
        kwargs: dict[str, Any] = {"model": self.model, "messages": normalize_tool_ids(row["messages"])}
        if row.get("tools"):
            kwargs["tools"] = row["tools"]
            if row.get("tool_choice"):
                kwargs["tool_choice"] = row["tool_choice"]
        mt = row.get("max_tokens", max_tokens)
        if mt:
            kwargs["max_tokens"] = mt
        extra: dict[str, Any] = {}
        thinking = row.get("thinking")
        if self.hosted:
            if temperature is not None and self.model not in FIXED_SAMPLING:
                kwargs["temperature"] = temperature
            if thinking is False and self.model not in ALWAYS_THINKING:
                extra["thinking"] = {"type": "disabled"}
        else:
            if temperature is not None:
                kwargs["temperature"] = temperature
            if thinking is not None:
                extra["chat_template_kwargs"] = {"thinking": bool(thinking)}
        if extra:
            kwargs["extra_body"] = extra
        return kwargs


def reasoning_of(message: Any) -> str | None:
    """The reasoning text, whichever field the server used."""
    for attr in ("reasoning_content", "reasoning"):
        value = getattr(message, attr, None)
        if value is None and isinstance(message, dict):
            value = message.get(attr)
        if value:
            return value
    extra = getattr(message, "model_extra", None) or {}
    return extra.get("reasoning_content") or extra.get("reasoning")
