"""Benchmark workloads: chat-completion request bodies. Random prompts of an exact input length (aligned
with the server's own tokenizer through /tokenize when it has one) and a fixed output length
(ignore_eos); JSONL conversations (ShareGPT or OpenAI messages); the tool-call suite; shared-prefix
prompts. Thinking on or off is added by the caller from endpoint.Endpoint.thinking_fields."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx2

from ..endpoint import Endpoint
from ..errors import BadInput
from ..jsonl import read_jsonl
from ..suites import load

_WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
          "quebec romeo sierra tango uniform victor whiskey xray yankee zulu cluster tensor expert kernel "
          "latency memory router shard token vector weight").split()


class Tokenizer:
    """Counts tokens with the server's /tokenize (vLLM, the sim); whitespace words otherwise."""

    def __init__(self, endpoint: Endpoint, model: str) -> None:
        self.url = endpoint.url("/tokenize")
        self.model = model
        self.headers = endpoint.headers()
        self.available: bool | None = None
        # one pooled client: httpx2.post makes a client per call, and each loads the CA bundle (about 80 ms
        # of CPU here), which made a 1024-request run spend a minute of CPU counting tokens
        self._http: httpx2.Client | None = None

    def count(self, text: str | None = None, messages: list[dict[str, Any]] | None = None,
              chat_template_kwargs: dict[str, Any] | None = None) -> int:
        """Tokens of `text` (no special tokens added) or of `messages` through the chat template with the
        generation prompt, as a chat request renders them (`chat_template_kwargs`: the thinking switch)."""
        if self.available is not False:
            body: dict[str, Any] = {"model": self.model}
            body.update({"messages": messages} if messages is not None else {"prompt": text or "",
                                                                             "add_special_tokens": False})
            if messages is not None and chat_template_kwargs:
                body["chat_template_kwargs"] = chat_template_kwargs
            try:
                if self._http is None:
                    self._http = httpx2.Client(timeout=30)
                r = self._http.post(self.url, json=body, headers=self.headers)
                if r.status_code == 200:
                    self.available = True
                    data = r.json()
                    return int(data.get("count", len(data.get("tokens", []))))
            except (httpx2.HTTPError, ValueError, TypeError):
                pass  # unreachable, or 200 with something that is not vLLM's JSON (an HTML page): count words
            self.available = False
        source = text if messages is None else " ".join(str(m.get("content") or "") for m in messages)
        return len((source or "").split())


def _random_prompt(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(max(n, 1)))


def _fit(words: list[str], target: int, start_n: int, tok: Tokenizer) -> tuple[list[dict[str, Any]], int, int]:
    """The prefix of `words` (last word swapped if needed) whose chat-templated prompt is `target` tokens."""
    def measure(ws: list[str]) -> tuple[list[dict[str, Any]], int]:
        messages = [{"role": "user", "content": " ".join(ws)}]
        return messages, tok.count(messages=messages)

    n = max(1, min(start_n, len(words)))
    best: tuple[list[dict[str, Any]], int, int] | None = None
    seen: set[int] = set()
    for step in range(40):  # coarse: scale the word count a few times, then single words
        messages, got = measure(words[:n])
        if best is None or abs(got - target) < abs(best[1] - target):
            best = (messages, got, n)
        if got == target or n in seen:  # exact, or oscillating around the target: go to the fine stage
            break
        seen.add(n)
        gap = target - got
        move = gap * n // max(got, 1) if (abs(gap) > 2 and step < 4) else 0
        n = max(1, min(len(words), n + (move or (1 if gap > 0 else -1))))
    messages, got, n = best
    if got != target and n > 1:  # fine: swap the last word for one that lands exactly
        for w in _WORDS:
            cand, g = measure(words[: n - 1] + [w])
            if g == target:
                return cand, g, n
    return messages, got, n


def random_bodies(n: int, input_len: int, output_len: int, seed: int, tok: Tokenizer) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Unique random prompts whose chat-templated length is input_len tokens by the server's own count
    (the achieved lengths are reported), each asking for exactly output_len tokens."""
    bodies, achieved = [], []
    est = input_len
    for i in range(n):
        rng = random.Random(seed * 1_000_003 + i)
        words = [rng.choice(_WORDS) for _ in range(input_len * 2 + 16)]
        messages, got, used = _fit(words, input_len, est, tok)
        est = used
        achieved.append(got)
        bodies.append({"messages": messages, "max_tokens": output_len, "min_tokens": output_len, "ignore_eos": True})
    exact = sum(1 for a in achieved if a == input_len)
    return bodies, {"input_len_target": input_len, "input_len_exact": exact, "input_len_min": min(achieved),
                    "input_len_max": max(achieved), "unique_prompts": n,
                    "tokenizer": "server /tokenize" if tok.available else "whitespace"}


def jsonl_bodies(path: Path, n: int, output_len: int | None, seed: int) -> list[dict[str, Any]]:
    if not path.is_file():
        raise BadInput("dataset file not found", str(path))
    rows = []
    for ln, obj in read_jsonl(path):
        if not isinstance(obj, dict):
            raise BadInput(f"line {ln}: each line must be a JSON object", str(path))
        if "messages" in obj:
            messages = obj["messages"]
        elif "conversations" in obj:  # ShareGPT: the first human turn
            first = next((c for c in obj["conversations"] if c.get("from") in ("human", "user")), None)
            if first is None:
                continue
            messages = [{"role": "user", "content": first.get("value", "")}]
        elif "prompt" in obj:
            messages = [{"role": "user", "content": obj["prompt"]}]
        else:
            raise BadInput(f"line {ln}: needs messages, conversations or prompt", str(path))
        body: dict[str, Any] = {"messages": messages}
        for key in ("tools", "tool_choice", "max_tokens"):
            if key in obj:
                body[key] = obj[key]
        if output_len:
            body["max_tokens"] = output_len
        rows.append(body)
    if not rows:
        raise BadInput("no usable rows", str(path))
    rng = random.Random(seed)
    return [rows[i % len(rows)] if n <= len(rows) else rng.choice(rows) for i in range(n)]


def tool_call_bodies(n: int, output_len: int | None) -> list[dict[str, Any]]:
    _, rows = load("tool-calls")
    out = []
    for i in range(n):
        r = rows[i % len(rows)]
        body = {"messages": r["messages"], "tools": r.get("tools"), "max_tokens": output_len or r.get("max_tokens", 256)}
        out.append({k: v for k, v in body.items() if v is not None})
    return out


def shared_prefix_bodies(n: int, prefix_len: int, input_len: int, output_len: int, groups: int,
                         seed: int) -> list[dict[str, Any]]:
    """`groups` system prompts of prefix_len words shared by the requests of each group, plus a unique
    user question: the workload prefix caching is for."""
    rng = random.Random(seed)
    prefixes = [_random_prompt(random.Random(seed + g), prefix_len) for g in range(groups)]
    return [{"messages": [{"role": "system", "content": prefixes[i % groups]},
                          {"role": "user", "content": _random_prompt(rng, input_len)}],
             "max_tokens": output_len, "min_tokens": output_len, "ignore_eos": True} for i in range(n)]


def multi_turn_sessions(n: int, output_len: int | None, seed: int) -> list[tuple[dict[str, Any], list[str], dict[str, str]]]:
    """Agentic sessions: a tool request (answered with a tool result when the model calls the tool),
    then a follow-up question; (first body, follow-up user messages, tool results by name)."""
    from ..toolsuite import CHAT, tool_case, tool_result, tool_subset

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        case = tool_case(rng)
        body = {"messages": [{"role": "user", "content": case.prompt}], "tools": tool_subset(rng, case.tool),
                "max_tokens": output_len or 256}
        results = {name: json.dumps(tool_result(case)) for name in ("get_weather", "get_stock_price",
                                                                    "convert_currency", "get_time")}
        out.append((body, [rng.choice(CHAT)[0]], results))
    return out
