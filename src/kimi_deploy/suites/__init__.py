"""Request suites: JSONL files of chat-completion requests (one per line) that `compare` scores and
`bench --workload tool-calls` sends. The built-in ones are this package's data files (read with
importlib.resources so an installed wheel has them, written by suitegen.py through
benchmarks/suites/generate.py). This package imports neither bench nor compare: both import it. Every row
is checked when a suite is loaded, so a hand-written suite fails with the line and field at fault instead
of in the middle of a run.

A row: {"id", "messages", "tools"?, "tool_choice"?, "response_format"?, "thinking"?, "thinking_effort"?,
"max_tokens"?, "expected"?, "suite"?, "kind"?}. `messages`, `tools`, `tool_choice` and `response_format` are
OpenAI chat-completion fields (assistant `tool_calls` with JSON-string arguments valid against the offered
tool's schema, `tool` messages answering an earlier call id). Tools may also be declared inside a system
message with empty content (`messages[i].tools`, K3's dynamic tools: Kimi-Vendor-Verifier
tests/k3_features/test_dynamic_tools.py, where the API refuses them in any other role or beside content);
they are offered like the top-level ones and no name may be offered twice. `response_format` is
{type: text | json_object | json_schema, json_schema?: {name, schema, strict?}} (the verifier's
tests/k3_features/test_response_format.py: name and schema required, strict a boolean); a json answer is
checked against it (compare/score.py). `thinking` is the request's intent, each endpoint adapter turns it
into its own parameter;
`thinking_effort` (low, high or max; thinking not false) the effort it thinks at, sent as the hosted API's
`thinking.effort` or an engine's `chat_template_kwargs.thinking_effort` (endpoint.Endpoint.thinking_fields).
`expected` states what a correct answer must contain:

- "tool_calls": true (at least one call) or false (no call; always so for tool_choice "none");
- "calls": [{"name", "arguments"?, "min_length"?}]: the calls, as a multiset of names (in this order when
  "ordered" is true), each call's arguments containing these values (objects compared key by key, a
  subset; arrays element by element) and string arguments at least "min_length" characters long;
- "reasoning": true: thinking mode must return reasoning;
- "tool": NAME or null: the first suite's shorthand for one call of NAME / no call;
- "prompt_tokens": N: usage.prompt_tokens must be N to N + 3 (the verifier's prompt-token cases and their
  tolerance: tests/prompt_tokens/test_prompt_tokens.py, MAX_PROMPT_TOKEN_OVERCOUNT).

tool_choice implies expectations of its own (expectations()): none, no call; required, a call; a named
function, a call of that function only.

A directory (or a file of another layout) is read by verifier.py: a checkout of Moonshot's
Kimi-Vendor-Verifier, whose data files become rows; anything else is bad input saying what is read."""

from __future__ import annotations

import functools
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
from . import verifier
from .suitegen import generate

SUITES = ("tool-calls", "tool-calls-flat", "chat", "thinking", "k3-features")
ROLES = ("system", "user", "assistant", "tool")
EXPECTED_KEYS = {"tool_calls", "calls", "ordered", "reasoning", "tool", "prompt_tokens"}
ROW_KEYS = {"id", "suite", "kind", "messages", "tools", "tool_choice", "response_format", "thinking",
            "thinking_effort", "max_tokens", "expected"}
RESPONSE_FORMATS = ("text", "json_object", "json_schema")  # platform.kimi.com/docs/api/chat, response_format
PROMPT_TOKEN_OVERCOUNT = 3  # Kimi-Vendor-Verifier tests/prompt_tokens/test_prompt_tokens.py

__all__ = ["SUITES", "builtin", "expectations", "generate", "load", "offered_tools", "response_schema",
           "validate_row"]


def builtin(name: str) -> Traversable:
    """A built-in suite file inside the installed package."""
    return resources.files(__name__) / f"{name}.jsonl"


def load(name_or_path: str) -> tuple[str, list[dict[str, Any]]]:
    """(suite name, requests) from a built-in suite name or a JSONL path."""
    path = Path(name_or_path)
    if path.is_dir() or (path.is_file() and verifier.claims(path)):
        return verifier.read(path)
    if not path.suffix:
        if name_or_path not in SUITES or not builtin(name_or_path).is_file():
            raise BadInput(f"unknown suite {name_or_path!r}; built in: {', '.join(SUITES)} (or a .jsonl path)",
                           "--suite")
        with resources.as_file(builtin(name_or_path)) as p:
            return _read(p)
    if not path.is_file():
        raise BadInput("suite file not found", str(path))
    return _read(path)


def check_rows(path: Path, name: str, rows: list[tuple[int | str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(name, rows) once every (line, row) is valid and the ids unique; bad input naming the file, line
    and field otherwise."""
    out = []
    for n, row in rows:
        if not isinstance(row, dict) or "messages" not in row or "id" not in row:
            raise BadInput(f"line {n}: each line needs an id and messages", str(path))
        try:
            validate_row(row)
        except ValueError as exc:
            raise BadInput(f"line {n} (id {row.get('id')!r}): {exc}", str(path)) from None
        out.append(row)
    if not out:
        raise BadInput("suite is empty", str(path))
    ids = [r["id"] for r in out]
    if len(set(ids)) != len(ids):
        raise BadInput("request ids must be unique", str(path))
    return name, out


def _read(path: Path) -> tuple[str, list[dict[str, Any]]]:
    return check_rows(path, path.stem, list(read_jsonl(path)))


def schema_errors(value: Any, schema: Any, root: Any = None) -> list[str]:
    """What is wrong with `value` against `schema` (Draft 2020-12; `$ref`s resolved against `root`, the
    whole schema `schema` is part of, so a property's `#/$defs/...` resolves), each as "PATH: message"
    with PATH a JSON path into the value; [] when valid. A reference that cannot be resolved is one
    error saying so."""
    validator = jsonschema.Draft202012Validator(schema if root is None else root)
    if root is not None:
        validator = validator.evolve(schema=schema)
    try:
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    except Exception as exc:  # noqa: BLE001 -- referencing's Unresolvable and the like: the schema is at fault
        return [f"$: the schema cannot be applied ({type(exc).__name__}: {str(exc)[:120]})"]
    return [f"{e.json_path}: {e.message}" for e in errors[:4]]


def _schema_error(value: Any, schema: dict[str, Any], root: Any = None) -> str | None:
    errors = schema_errors(value, schema, root)
    return errors[0].removeprefix("$: ") if errors else None


def _tool_list(tools: Any, where: str, offered: dict[str, dict[str, Any]]) -> None:
    """Add the tools of one list (the row's or a message's) to `offered`, checking each."""
    if not isinstance(tools, list):
        raise ValueError(f"{where}: must be a list of {{type: function, function: {{name, parameters}}}}")
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError(f"{where}[{i}]: must be {{type: function, function: {{name, parameters}}}}")
        params = fn.get("parameters", {"type": "object"})
        problem = _meta_schema_error(json.dumps(params, sort_keys=True))
        if problem:
            raise ValueError(f"{where}[{i}] ({fn['name']}): parameters is not a JSON schema: {problem}")
        if fn["name"] in offered:
            raise ValueError(f"{where}[{i}]: tool {fn['name']!r} is offered twice (names are unique across the "
                             "row's tools and its messages' tools)")
        offered[fn["name"]] = params


@functools.lru_cache(maxsize=1024)
def _meta_schema_error(params: str) -> str | None:
    """Why a tool's parameters (as canonical JSON) are not a Draft 2020-12 schema, None when they are.
    Cached: a suite offers the same few tools in every row."""
    try:
        jsonschema.Draft202012Validator.check_schema(json.loads(params))
    except jsonschema.SchemaError as exc:
        return exc.message
    return None


def _tools(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every tool the row offers, top-level and declared in its messages: {name: parameters}."""
    offered: dict[str, dict[str, Any]] = {}
    if row.get("tools") is not None:
        _tool_list(row["tools"], "tools", offered)
    for i, m in enumerate(row.get("messages") or []):
        if isinstance(m, dict) and m.get("tools") is not None:
            if m.get("role") != "system" or (m.get("content") or "") != "":
                raise ValueError(f"messages[{i}].tools: only a system message with empty content may declare "
                                 f"tools (K3's dynamic tools; this one is a {m.get('role')!r} message"
                                 + (" with content" if m.get("role") == "system" else "") + ")")
            _tool_list(m["tools"], f"messages[{i}].tools", offered)
    return offered


def offered_tools(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{name: parameters} of every tool a (valid) row offers: its `tools` and its messages' `tools`."""
    out: dict[str, dict[str, Any]] = {}
    for tools in [row.get("tools") or []] + [m.get("tools") or [] for m in row.get("messages") or [] if isinstance(m, dict)]:
        for t in tools:
            out[t["function"]["name"]] = t["function"].get("parameters", {"type": "object"})
    return out


def response_schema(row: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a row's answer content must satisfy: json_schema's schema, {type: object} for
    json_object, None for text or no response_format."""
    rf = row.get("response_format")
    if not isinstance(rf, dict) or rf.get("type") == "text":
        return None
    if rf.get("type") == "json_object":
        return {"type": "object"}
    return rf["json_schema"]["schema"]


def _response_format(row: dict[str, Any]) -> None:
    rf = row.get("response_format")
    if rf is None:
        return
    if not isinstance(rf, dict) or rf.get("type") not in RESPONSE_FORMATS:
        raise ValueError(f"response_format.type: must be one of {', '.join(RESPONSE_FORMATS)}")
    if rf["type"] != "json_schema":
        return
    js = rf.get("json_schema")
    if not isinstance(js, dict):
        raise ValueError("response_format.json_schema: required with type json_schema, an object {name, schema, "
                         "strict?}")
    if not isinstance(js.get("name"), str) or not js["name"]:
        raise ValueError("response_format.json_schema.name: must be a non-empty string")
    if not isinstance(js.get("schema"), dict):
        raise ValueError("response_format.json_schema.schema: must be a JSON schema object")
    if "strict" in js and not isinstance(js["strict"], bool):
        raise ValueError("response_format.json_schema.strict: must be true or false")
    try:
        jsonschema.Draft202012Validator.check_schema(js["schema"])
    except jsonschema.SchemaError as exc:
        raise ValueError(f"response_format.json_schema.schema: not a JSON schema: {exc.message}") from None


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
    last = messages[-1]["role"]
    prompt_only = set(row.get("expected") or {}) == {"prompt_tokens"}
    if last not in ("user", "tool", "system") and not prompt_only:
        # a system message last declares dynamic tools (test_dynamic_tool_as_last_message in the verifier);
        # an assistant message last (a prefill) only in a row about the prompt's token count
        raise ValueError("messages: the last message must be from the user, a tool or the system (an assistant "
                         "message last only in a row whose expected is prompt_tokens alone)")


def named_tool(row: dict[str, Any]) -> str | None:
    """The function a named tool_choice names (None for auto, none, required or no tool_choice)."""
    choice = row.get("tool_choice")
    return (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None


def _tool_choice(row: dict[str, Any], offered: dict[str, dict[str, Any]]) -> str | None:
    """The named tool of a named tool_choice (None otherwise)."""
    choice = row.get("tool_choice")
    if choice is None:
        return None
    if not offered:
        raise ValueError("tool_choice: given without tools (in tools or in a system message's tools)")
    if choice in ("auto", "required", "none"):
        return None
    name = named_tool(row)
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
    choice = row.get("tool_choice")
    if choice == "none":  # the tool_choice contract (OpenAI's chat API; the verifier's test_tool_choice.py)
        exp.setdefault("tool_calls", False)
    elif choice == "required" or isinstance(choice, dict):
        exp.setdefault("tool_calls", True)
    if response_schema(row) is not None:
        exp["json"] = True  # derived, never written: the content must be JSON valid against response_format
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
    _response_format(row)
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
    pt = exp.get("prompt_tokens")
    if pt is not None and (not isinstance(pt, int) or isinstance(pt, bool) or pt < 1):
        raise ValueError(f"expected.prompt_tokens: must be a positive integer, got {pt!r}")
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
            if err := _schema_error(value, props[key], offered[c["name"]]):
                raise ValueError(f"{where}.arguments.{key}: {err}")
        for key, n in (c.get("min_length") or {}).items():
            if not isinstance(n, int) or n < 1 or key not in props:
                raise ValueError(f"{where}.min_length.{key}: must be a positive integer for a parameter")
