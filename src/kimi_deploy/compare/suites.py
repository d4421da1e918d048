"""Comparison suites: JSONL files of chat-completion requests (one per line), the built-in ones shipped
inside the package (kimi_deploy/suites/, read with importlib.resources so an installed wheel has them).
Each line: {"id", "suite", "messages", "tools"?, "tool_choice"?, "thinking"?, "max_tokens"?, "expected"?}.
`thinking` is the request's intent; each endpoint adapter turns it into its own parameter. Extend a
suite by appending lines; `generate()` writes the built-in ones from the tool suite deterministically
(benchmarks/suites/generate.py)."""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

from ..errors import BadInput
from ..jsonl import read_jsonl
from ..toolsuite import CHAT, arguments_json, tool_case, tool_result, tool_subset

SUITES = ("tool-calls", "chat", "thinking")


def builtin(name: str) -> Traversable:
    """A built-in suite file inside the installed package."""
    return resources.files("kimi_deploy") / "suites" / f"{name}.jsonl"


def load(name_or_path: str) -> tuple[str, list[dict[str, Any]]]:
    """(suite name, requests) from a built-in suite name or a JSONL path."""
    path = Path(name_or_path)
    if not path.suffix:
        if name_or_path not in SUITES or not builtin(name_or_path).is_file():
            raise BadInput(f"unknown suite {name_or_path!r}; built in: {', '.join(SUITES)} (or a .jsonl path)",
                           "--suite")
        with resources.as_file(builtin(name_or_path)) as p:
            return _read(p)
    if not path.is_file():
        raise BadInput("suite file not found", str(path))
    return _read(path)


def _read(path: Path) -> tuple[str, list[dict[str, Any]]]:
    rows = []
    for n, row in read_jsonl(path):
        if not isinstance(row, dict) or "messages" not in row or "id" not in row:
            raise BadInput(f"line {n}: each line needs an id and messages", str(path))
        rows.append(row)
    if not rows:
        raise BadInput("suite is empty", str(path))
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise BadInput("request ids must be unique", str(path))
    return path.stem, rows


def _tool_calls(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.6:
            case = tool_case(rng)
            rows.append({"messages": [{"role": "user", "content": case.prompt}], "tools": tool_subset(rng, case.tool),
                         "expected": {"tool": case.tool}})
        elif kind < 0.8:
            prompt, _ = rng.choice(CHAT)
            rows.append({"messages": [{"role": "user", "content": prompt}], "tools": tool_subset(rng),
                         "expected": {"tool": None}})
        else:  # history with an OpenAI-style id the adapter must rewrite to functions.NAME:IDX
            case = tool_case(rng)
            call_id = f"call_{rng.getrandbits(48):012x}"
            rows.append({"messages": [
                {"role": "user", "content": case.prompt},
                {"role": "assistant", "content": "", "tool_calls": [{"id": call_id, "type": "function", "function": {
                    "name": case.tool, "arguments": arguments_json(case.arguments)}}]},
                {"role": "tool", "tool_call_id": call_id, "content": json.dumps(tool_result(case))}],
                "tools": tool_subset(rng, case.tool), "expected": {"tool": None}})
        rows[-1].update({"id": f"tool-calls-{i:03d}", "suite": "tool-calls", "thinking": False, "max_tokens": 256})
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
                         "expected": {"tool": case.tool, "reasoning": True}})
        else:
            prompt, _ = rng.choice(CHAT)
            rows.append({"messages": [{"role": "user", "content": prompt}], "expected": {"reasoning": True}})
        rows[-1].update({"id": f"thinking-{i:03d}", "suite": "thinking", "thinking": True, "max_tokens": 512})
    return rows


def generate(out_dir: Path, seed: int = 7) -> list[Path]:
    rng = random.Random(seed)
    suites = {"tool-calls": _tool_calls(rng, 48), "chat": _chat(rng), "thinking": _thinking(rng, 16)}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in suites.items():
        p = out_dir / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
        paths.append(p)
    return paths
