"""bench/sim.py as a stand-in endpoint for compare: its tool calls satisfy the schemas a client offers and
one request gets the same answer streamed and not, so a sim compared against itself (the no-GPU trial)
passes with compare's default options. Every bad flag value (fuzzed too) and a port in use are exit 2
naming the flag, and the sim never starts serving."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings, strategies as st

from kimi_deploy.bench.sim import _argument_piece, _arguments, _instance
from kimi_deploy import suites

from .conftest import NUMBERS, assert_clean_error, invoke_cli, run_cli


def _offered_tools() -> dict[str, dict]:
    _, rows = suites.load("tool-calls")
    return {t["function"]["name"]: t["function"]["parameters"] for r in rows for t in r.get("tools") or []}


def test_the_sims_arguments_satisfy_every_schema_of_the_suite() -> None:
    tools = _offered_tools()
    assert len(tools) >= 8
    for name, schema in tools.items():
        args = json.loads(_arguments(schema, "a0 a1", 40))
        jsonschema.validate(args, schema)  # raises, naming the tool's schema, when it does not
    assert _instance({"type": "object"}, "a0") == {"w": "a0"}  # a schema that names nothing


@settings(max_examples=200, deadline=None)
@given(arguments=st.text(min_size=0, max_size=300), tokens=st.integers(min_value=1, max_value=400))
def test_the_streamed_pieces_join_to_the_arguments(arguments: str, tokens: int) -> None:
    padded = arguments.ljust(tokens)
    pieces = [_argument_piece(padded, k, tokens) for k in range(tokens)]
    assert "".join(pieces) == padded and all(pieces)  # every token carries a piece, none lost or repeated


def test_a_sim_compared_against_itself_passes_with_default_options(sim_factory, tmp_path: Path) -> None:
    """The 2-minute no-GPU trial: `compare` with only --local, --reference and --output (the full
    tool-call suite, streamed and not)."""
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "0")
    proc = run_cli("compare", "--local", url, "--reference", url + "/v1", "--output", str(tmp_path / "c"),
                   timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    s = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert s["verdict"] == "PASS" and s["n"] >= 300
    assert s["checks"]["stream_disagreements_local"]["value"] == 0
    assert s["checks"]["schema_accuracy_local"]["value"] == 1.0


def test_arguments_for_the_schemas_clients_generate() -> None:
    """A pydantic model as a tool (what openai.pydantic_function_tool sends: $defs and $ref, anyOf with
    null, exclusive bounds) and other common shapes."""
    import openai
    from pydantic import BaseModel, Field

    class Place(BaseModel):
        city: str
        country: str | None = None

    class Args(BaseModel):
        loc: Place
        days: int = Field(gt=0, le=14)
        unit: str = Field(pattern="^[a-z]+$", default="c")

    schemas = [openai.pydantic_function_tool(Args)["function"]["parameters"],
               {"type": "object", "properties": {"v": {"const": 3}, "x": {"type": "number", "exclusiveMinimum": 2.5},
                                                 "n": {"type": ["null", "integer"], "minimum": 1.5}},
                "required": ["v", "x", "n", "ghost"]},
               {"anyOf": [{"type": "object", "properties": {"a": {"type": "string", "minLength": 3}},
                           "required": ["a"]}, {"type": "null"}]}]
    for schema in schemas:
        jsonschema.validate(json.loads(_arguments(schema, "a0", 5)), schema)


def test_a_schema_past_the_sims_bounds_is_a_400(sim_factory) -> None:
    import openai

    url = sim_factory("--ttft-ms", "1", "--itl-ms", "0")
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    nested = {"type": "array", "minItems": 3000, "items": {"type": "array", "minItems": 3000, "items": {"type": "string"}}}
    for params in (nested, {"type": "string", "minLength": 10**12}, {"type": "object", "properties": {}, "required": 5}):
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"p": params},
                                                                             "required": ["p"]}}}
        try:
            client.chat.completions.create(model="sim", messages=[{"role": "user", "content": "hi"}], tools=[tool])
        except openai.BadRequestError as exc:
            assert "the sim cannot answer this request" in str(exc)
        else:  # a schema the sim could answer within its bounds
            assert params.get("required") == 5
    assert client.models.list().data[0].id == "sim"  # still serving


# --- bad input: exit 2 naming the flag, and the sim never starts serving --------------------------------

@pytest.mark.parametrize("args, flag", [
    (("--ttft-ms", "nan"), "--ttft-ms"), (("--itl-ms", "inf"), "--itl-ms"), (("--error-rate", "nan"), "--error-rate"),
    (("--slow-start", "inf"), "--slow-start"), (("--port", "0"), "--port"), (("--port", "70000"), "--port"),
])
def test_sim_flags_refused(args: tuple[str, ...], flag: str) -> None:
    code, msg = invoke_cli("sim", *args)
    assert code == 2 and flag in msg, (code, msg)


def test_sim_port_in_use() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert_clean_error(run_cli("sim", "--port", str(port), timeout=30), "--port", "cannot listen")


@settings(max_examples=50, deadline=None)
@given(flag=st.sampled_from(["--ttft-ms", "--itl-ms", "--output-len", "--reasoning-tokens", "--tool-rate",
                             "--error-rate", "--drop-rate", "--malformed-rate", "--slow-start", "--stall-after"]),
       value=NUMBERS)
def test_fuzz_sim_numeric_flags(flag: str, value) -> None:
    """Every value ends in exit 2: naming the flag when bad, else --port (held by this test), so the sim
    never starts serving."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = str(s.getsockname()[1])
        code, msg = invoke_cli("sim", flag, str(value), "--port", port)
    assert code == 2, (flag, value, code, msg)
    assert flag in msg or "--port" in msg, (flag, value, msg)

