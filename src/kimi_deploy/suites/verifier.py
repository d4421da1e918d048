"""Reading a checkout of Moonshot's Kimi-Vendor-Verifier (github.com/MoonshotAI/Kimi-Vendor-Verifier) as a
compare suite: its data files become rows, nothing in it is run.

What it holds, and what of it is read (paths in the verifier's repository):
- `testdata/walle_validator_cases/validator_cases/<Suite>/valid.jsonl`: one JSON schema per line
  (FORMAT.txt there). Its tests/tool_call_json_schema/ sends each as a tool's `parameters`, forces a call
  and validates the arguments with jsonschema, streamed and not. Read: one row per schema, the schema
  wrapped as the single required property `value` of the tool's parameters (so a schema of any type is an
  object's property, as the verifier does), tool_choice required; compare then checks the arguments
  against it on every side and streamed (schema_accuracy, the streaming checks). Skipped, as the verifier
  skips them (tests/tool_call_json_schema/validator.py, classify_case): schemas with a non-finite number,
  a string type with minLength over 1,000, property keys a decoder mangles (blank-padded, empty, literal
  escape sequences), and schemas jsonschema cannot apply. `default` is left in (the verifier strips it:
  a decoder-stability workaround, not part of the contract).
- `testdata/prompt_token_cases/cases.jsonl`: {"id", "description", "request", "expected_prompt_tokens"}
  (its README.md). Read: the request's messages, tools, tool_choice, response_format and max_tokens; its
  reasoning_effort as the row's thinking_effort (thinking on), `thinking: {type: disabled}` as thinking
  off; the sampling fields (temperature, top_p, n, seed, stop, stream, stream_options) are compare's own
  and dropped; expected prompt_tokens N, met by N to N + 3 (the verifier's tolerance). These files are Git
  LFS objects in the repository (.gitattributes): a checkout without `git lfs pull` holds pointers, which
  are bad input saying so. vision_cases.jsonl (fixture:// images the verifier's Python resizes) and
  cases.partial.jsonl are not read.
- `tests/k3_features/*.py` (dynamic tools, response_format, tool_choice, thinking effort): Python test
  code only, with its requests written inline; not executed and not parsed. The `k3-features` built-in
  suite (k3.py) checks the same contract with cases of its own.

`claims(path)` says whether a file is one of these layouts; `read(path)` turns a checkout, one of its
data directories or one data file into (suite name, rows), or raises BadInput naming the path and what
is read."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema

from ..errors import BadInput

WALLE = Path("testdata/walle_validator_cases/validator_cases")
PROMPTS = Path("testdata/prompt_token_cases/cases.jsonl")
TOOL = "submit_value"  # the one tool of a schema row (a name of our own)
LFS = "version https://git-lfs.github.com/spec/"  # the first line of a Git LFS pointer file
MAX_MIN_LENGTH = 1000  # the verifier skips string schemas asking more (validator.py, classify_case)
SAMPLING = {"temperature", "top_p", "n", "seed", "stop", "stream", "stream_options", "presence_penalty",
            "frequency_penalty"}
PASSED = {"messages", "tools", "tool_choice", "response_format"}
WHAT = ("a Kimi-Vendor-Verifier checkout, its testdata/walle_validator_cases/validator_cases (or one of its "
        "<Suite>/valid.jsonl), or its testdata/prompt_token_cases/cases.jsonl")
PROMPT = ("Call the submit_value tool once. Its `value` argument must be a small value that its JSON schema "
          "accepts: every required property, the constraints (enum, const, ranges, lengths, item counts) "
          "respected. Do not describe the schema; make the call.")


def claims(path: Path) -> bool:
    """True when a file is one of the verifier's layouts (not a compare suite of rows)."""
    if path.suffix == ".py":
        return True
    if path.name in ("valid.jsonl", "invalid.jsonl") and path.parent.parent.name == "validator_cases":
        return True
    return path.parent.name == "prompt_token_cases" and path.suffix == ".jsonl"


def read(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """(suite name, rows) from a checkout, a data directory of it or a data file; BadInput otherwise."""
    from . import check_rows

    if path.is_file():
        if path.suffix == ".py":
            raise BadInput("Python test code: compare reads the verifier's data files and runs none of its code "
                           f"(give {WHAT}; its tests/k3_features contract is the built-in suite k3-features)",
                           str(path))
        if path.parent.name == "prompt_token_cases":
            return check_rows(path, "kvv-prompt-tokens", _prompt_rows(path))
        return check_rows(path, "kvv-tool-schemas", _schema_rows([path]))
    if (path / "validator_cases").is_dir():
        path = path / "validator_cases"
    walle = path / WALLE if (path / WALLE).is_dir() else path if _suite_dirs(path) else None
    prompts = path / PROMPTS if (path / PROMPTS).is_file() else \
        path / "cases.jsonl" if path.name == "prompt_token_cases" and (path / "cases.jsonl").is_file() else None
    if walle is None and prompts is None:
        py = sorted(p.name for p in path.glob("*.py"))
        what = f"Python test code only ({', '.join(py[:6])}): compare runs none of it; " if py else ""
        raise BadInput(f"not a layout compare reads: {what}give {WHAT}", str(path))
    rows: list[tuple[int | str, Any]] = []
    if walle is not None:
        rows += _schema_rows([d / "valid.jsonl" for d in _suite_dirs(walle)])
    if prompts is not None:
        rows += _prompt_rows(prompts)
    name = "kimi-vendor-verifier" if walle is not None and prompts is not None else \
        "kvv-tool-schemas" if walle is not None else "kvv-prompt-tokens"
    return check_rows(path, name, rows)


def _suite_dirs(path: Path) -> list[Path]:
    return sorted(d for d in path.iterdir() if d.is_dir() and (d / "valid.jsonl").is_file()) if path.is_dir() else []


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadInput("not UTF-8 text", str(path)) from None
    if text.startswith(LFS):
        raise BadInput("a Git LFS pointer, not the data: run `git lfs pull` in the verifier's checkout (its "
                       ".gitattributes stores testdata/prompt_token_cases/*.jsonl in LFS)", str(path))
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _json(path: Path, n: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadInput(f"line {n}: not JSON ({exc.msg})", str(path)) from None


# --- tool-call schema cases ------------------------------------------------------------------------

def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(map(_finite, value))
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    return True


def _odd_keys(schema: dict[str, Any]) -> bool:
    return any(k != k.strip() or not k or any(e in k for e in ("\\n", "\\t", "\\r", "\\b", "\\f"))
               for k in (schema.get("properties") or {}))


def _moved(obj: Any) -> Any:
    """The schema's local references, once it sits at /properties/value of the wrapper with its $defs moved
    to the wrapper's root: `#/$defs/...` unchanged, `#` and every other `#/...` under /properties/value."""
    if isinstance(obj, list):
        return [_moved(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: _moved(v) for k, v in obj.items()}
    ref = obj.get("$ref")
    if isinstance(ref, str) and ref.startswith("#") and not ref.startswith("#/$defs/"):
        out["$ref"] = "#/properties/value" + ref[1:]
    return out


def wrap(schema: Any) -> dict[str, Any]:
    """Tool parameters whose one required property `value` takes what `schema` accepts."""
    body = _moved(schema)
    params: dict[str, Any] = {"type": "object", "required": ["value"], "additionalProperties": False}
    if isinstance(body, dict):
        params["properties"] = {"value": {k: v for k, v in body.items() if k not in ("$defs", "$id")}}
        if "$defs" in body:
            params["$defs"] = body["$defs"]
        if "$id" in body:
            params["$id"] = body["$id"]
    else:  # true / false are schemas too
        params["properties"] = {"value": body}
    return params


def _skip(schema: Any) -> str | None:
    """Why the verifier would not send this schema (None: it would)."""
    if not _finite(schema):
        return "a non-finite number"
    if isinstance(schema, dict):
        if schema.get("type") == "string" and isinstance(schema.get("minLength"), int) \
                and schema["minLength"] > MAX_MIN_LENGTH:
            return f"minLength over {MAX_MIN_LENGTH}"
        if _odd_keys(schema):
            return "property keys a decoder mangles"
    params = wrap(schema)
    try:
        jsonschema.Draft202012Validator.check_schema(params)
        jsonschema.Draft202012Validator(params).is_valid({"value": None})  # resolves what it meets
    except Exception:  # noqa: BLE001 -- not a schema jsonschema can apply: not a case
        return "not a schema jsonschema can apply"
    return None


def _schema_rows(files: list[Path]) -> list[tuple[int | str, Any]]:
    rows: list[tuple[int | str, Any]] = []
    for f in files:
        suite = f.parent.name
        for n, line in _lines(f):
            schema = _json(f, n, line)
            if _skip(schema) is not None:
                continue
            rows.append((f"{n} of {suite}/{f.name}", {
                "id": f"kvv-{suite}-{n}", "suite": "kvv-tool-schemas", "kind": f"kvv_schema_{suite}",
                "messages": [{"role": "user", "content": PROMPT}],
                "tools": [{"type": "function", "function": {
                    "name": TOOL, "description": "Submit a value valid against this JSON schema.",
                    "parameters": wrap(schema)}}],
                "tool_choice": "required", "max_tokens": 1024,
                "expected": {"tool_calls": True, "calls": [{"name": TOOL}]}}))
    return rows


# --- prompt-token cases ----------------------------------------------------------------------------

def _prompt_rows(path: Path) -> list[tuple[int | str, Any]]:
    rows: list[tuple[int | str, Any]] = []
    for n, line in _lines(path):
        case = _json(path, n, line)
        if not isinstance(case, dict) or not isinstance(case.get("request"), dict) or "id" not in case:
            raise BadInput(f"line {n}: a prompt-token case is {{id, request, expected_prompt_tokens}}", str(path))
        req = case["request"]
        if "fixture://" in json.dumps(req):
            raise BadInput(f"line {n} (id {case['id']!r}): fixture:// images are made by the verifier's Python "
                           "test (a resized PNG); compare does not build them", str(path))
        unknown = set(req) - PASSED - SAMPLING - {"max_tokens", "max_completion_tokens", "reasoning_effort",
                                                  "thinking"}
        if unknown:
            raise BadInput(f"line {n} (id {case['id']!r}): request.{sorted(unknown)[0]} is not read; read: "
                           f"{', '.join(sorted(PASSED))}, max_tokens, reasoning_effort, thinking (sampling "
                           "fields are dropped)", str(path))
        row: dict[str, Any] = {"id": f"kvv-prompt-{case['id']}", "suite": "kvv-prompt-tokens",
                               "kind": "kvv_prompt_tokens", **{k: req[k] for k in PASSED if k in req}}
        mt = req.get("max_tokens", req.get("max_completion_tokens"))
        if mt is not None:
            row["max_tokens"] = mt
        thinking = req.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "disabled":
            row["thinking"] = False
        effort = req.get("reasoning_effort") or (thinking.get("effort") if isinstance(thinking, dict) else None)
        if effort is not None and row.get("thinking") is not False:
            row["thinking"], row["thinking_effort"] = True, effort
        if "expected_prompt_tokens" in case:
            row["expected"] = {"prompt_tokens": case["expected_prompt_tokens"]}
        rows.append((f"{n} of {path.name}", row))
    return rows
