"""Request suites: JSONL files of chat-completion requests (one per line) that `compare` scores and
`bench --workload tool-calls` sends. The built-in ones are this package's data files (read with
importlib.resources so an installed wheel has them, written by suitegen.py through
benchmarks/suites/generate.py). This package imports neither bench nor compare: both import it. Every row
is checked when a suite is loaded, so a hand-written suite fails with the line and field at fault instead
of in the middle of a run.

A row: {"id", "messages", "tools"?, "tool_choice"?, "thinking"?, "thinking_effort"?, "max_tokens"?,
"expected"?, "suite"?, "kind"?}. `messages`, `tools` and `tool_choice` are OpenAI chat-completion fields (assistant `tool_calls`
with JSON-string arguments valid against the offered tool's schema, `tool` messages answering an earlier
call id); `thinking` is the request's intent, each endpoint adapter turns it into its own parameter;
`thinking_effort` (low, high or max; thinking not false) the effort it thinks at, sent as the hosted API's
`thinking.effort` or an engine's `chat_template_kwargs.thinking_effort` (endpoint.Endpoint.thinking_fields).
`expected` states what a correct answer must contain:

- "tool_calls": true (at least one call) or false (no call; always so for tool_choice "none");
- "calls": [{"name", "arguments"?, "min_length"?}]: the calls, as a multiset of names (in this order when
  "ordered" is true), each call's arguments containing these values (objects compared key by key, a
  subset; arrays element by element) and string arguments at least "min_length" characters long;
- "reasoning": true: thinking mode must return reasoning;
- "tool": NAME or null: the first suite's shorthand for one call of NAME / no call."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

from ..endpoint import EFFORTS
from ..errors import BadInput
from ..jsonl import read_jsonl
from .suitegen import generate

SUITES = ("tool-calls", "tool-calls-flat", "chat", "thinking")
ROLES = ("system", "user", "assistant", "tool")
EXPECTED_KEYS = {"tool_calls", "calls", "ordered", "reasoning", "tool"}
ROW_KEYS = {"id", "suite", "kind", "messages", "tools", "tool_choice", "thinking", "thinking_effort", "max_tokens",
            "expected"}

__all__ = ["SUITES", "builtin", "expectations", "generate", "load", "validate_row"]


def builtin(name: str) -> Traversable:
    """A built-in suite file inside the installed package."""
    return resources.files(__name__) / f"{name}.jsonl"


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
        try:
            validate_row(row)
        except ValueError as exc:
            raise BadInput(f"line {n} (id {row.get('id')!r}): {exc}", str(path)) from None
        rows.append(row)
    if not rows:
        raise BadInput("suite is empty", str(path))
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise BadInput("request ids must be unique", str(path))
    return path.stem, rows


def _schema_error(value: Any, schema: dict[str, Any]) -> str | None:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        return exc.message
    return None


def _tools(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tools = row.get("tools")
    if tools is None:
        return {}
    if not isinstance(tools, list):
        raise ValueError("tools: must be a list of {type: function, function: {name, parameters}}")
    offered: dict[str, dict[str, Any]] = {}
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError(f"tools[{i}]: must be {{type: function, function: {{name, parameters}}}}")
        params = fn.get("parameters", {"type": "object"})
        try:
            jsonschema.Draft202012Validator.check_schema(params)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"tools[{i}] ({fn['name']}): parameters is not a JSON schema: {exc.message}") from None
        if fn["name"] in offered:
            raise ValueError(f"tools[{i}]: tool {fn['name']!r} is offered twice")
        offered[fn["name"]] = params
    return offered


def _messages(row: dict[str, Any], offered: dict[str, dict[str, Any]]) -> None:
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: must be a non-empty list")
    call_ids: set[str] = set()
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ValueError(f"{where}: role must be one of {', '.join(ROLES)}")
        if m["role"] in ("system", "user") and not isinstance(m.get("content"), (str, list)):
            raise ValueError(f"{where}: a {m['role']} message needs content")
        for j, tc in enumerate(m.get("tool_calls") or [] if m["role"] == "assistant" else []):
            fn = tc.get("function") if isinstance(tc, dict) else None
            if not isinstance(fn, dict) or tc.get("type") != "function" or not isinstance(tc.get("id"), str):
                raise ValueError(f"{where}.tool_calls[{j}]: must be {{id, type: function, function: {{name, arguments}}}}")
            if not isinstance(fn.get("arguments"), str):
                raise ValueError(f"{where}.tool_calls[{j}].function.arguments: must be a JSON string")
            try:
                args = json.loads(fn["arguments"])
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}.tool_calls[{j}].function.arguments: invalid JSON ({exc.msg})") from None
            if offered and fn.get("name") not in offered:
                raise ValueError(f"{where}.tool_calls[{j}]: calls {fn.get('name')!r}, which is not offered in tools")
            if offered and (err := _schema_error(args, offered[fn["name"]])):
                raise ValueError(f"{where}.tool_calls[{j}].function.arguments: not valid for {fn['name']}: {err}")
            call_ids.add(tc["id"])
        if m["role"] == "tool" and m.get("tool_call_id") not in call_ids:
            raise ValueError(f"{where}.tool_call_id: {m.get('tool_call_id')!r} answers no earlier assistant tool call")
    if messages[-1]["role"] not in ("user", "tool"):
        raise ValueError("messages: the last message must be from the user or a tool")


def _tool_choice(row: dict[str, Any], offered: dict[str, dict[str, Any]]) -> str | None:
    """The named tool of a named tool_choice (None otherwise)."""
    choice = row.get("tool_choice")
    if choice is None:
        return None
    if not offered:
        raise ValueError("tool_choice: given without tools")
    if choice in ("auto", "required", "none"):
        return None
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not (isinstance(choice, dict) and choice.get("type") == "function" and name in offered):
        raise ValueError("tool_choice: must be auto, required, none or {type: function, function: {name: an "
                         "offered tool}}")
    return name


def expectations(row: dict[str, Any]) -> dict[str, Any]:
    """The row's expectations in the current form (the shorthand "tool" turned into tool_calls/calls)."""
    exp = dict(row.get("expected") or {})
    if "tool" in exp:
        tool = exp.pop("tool")
        exp.setdefault("tool_calls", tool is not None)
        if tool is not None:
            exp.setdefault("calls", [{"name": tool}])
    return exp


def validate_row(row: dict[str, Any]) -> None:
    """Raise ValueError naming the field when a row is not a valid request with sound expectations."""
    if not isinstance(row.get("id"), str) or not row["id"]:
        raise ValueError("id: must be a non-empty string")
    unknown = set(row) - ROW_KEYS
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(ROW_KEYS))}")
    offered = _tools(row)
    _messages(row, offered)
    named = _tool_choice(row, offered)
    if "thinking" in row and row["thinking"] is not None and not isinstance(row["thinking"], bool):
        raise ValueError("thinking: must be true, false or null")
    effort = row.get("thinking_effort")
    if effort is not None and effort not in EFFORTS:
        raise ValueError(f"thinking_effort: must be one of {', '.join(EFFORTS)}, got {effort!r}")
    if effort is not None and row.get("thinking") is False:
        raise ValueError("thinking_effort: given with thinking false")
    mt = row.get("max_tokens")
    if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or mt < 1):
        raise ValueError(f"max_tokens: must be a positive integer, got {mt!r}")
    raw = row.get("expected")
    if raw is None:
        return
    if not isinstance(raw, dict) or set(raw) - EXPECTED_KEYS:
        raise ValueError(f"expected: must be an object with keys among {', '.join(sorted(EXPECTED_KEYS))}")
    exp = expectations(row)
    calls = exp.get("calls") or []
    if not isinstance(calls, list):
        raise ValueError("expected.calls: must be a list")
    if calls and exp.get("tool_calls") is False:
        raise ValueError("expected: calls listed but tool_calls is false")
    if row.get("tool_choice") == "none" and exp.get("tool_calls"):
        raise ValueError("expected.tool_calls: must be false with tool_choice none")
    if named and exp.get("tool_calls") is False:
        raise ValueError("expected.tool_calls: must be true with a named tool_choice")
    for i, c in enumerate(calls):
        where = f"expected.calls[{i}]"
        if not isinstance(c, dict) or c.get("name") not in offered:
            raise ValueError(f"{where}.name: must name an offered tool")
        if named and c["name"] != named:
            raise ValueError(f"{where}.name: tool_choice names {named!r}")
        props = offered[c["name"]].get("properties", {})
        for key, value in (c.get("arguments") or {}).items():
            if key not in props:
                raise ValueError(f"{where}.arguments.{key}: not a parameter of {c['name']}")
            if err := _schema_error(value, props[key]):
                raise ValueError(f"{where}.arguments.{key}: {err}")
        for key, n in (c.get("min_length") or {}).items():
            if not isinstance(n, int) or n < 1 or key not in props:
                raise ValueError(f"{where}.min_length.{key}: must be a positive integer for a parameter")
