"""The `k3-features` suite: the request features Moonshot's Kimi-Vendor-Verifier checks of a K3 vendor
(github.com/MoonshotAI/Kimi-Vendor-Verifier, README.md "K3 Feature Validation", tests/k3_features/ and
tests/tool_call_json_schema/), with cases of our own, seeded (suitegen.py writes them to k3-features.jsonl):

- dynamic_tools: tools declared in a system message with empty content (`messages[i].tools`) as the first
  message, after a finished turn, as the last message, in two system messages, and beside a top-level tool
  (tests/k3_features/test_dynamic_tools.py: the same positions; the dynamic tool is the one to call);
- response_format: json_schema strict and not, json_object and text (test_response_format.py); the answer
  must parse and, for a schema, validate (compare/score.py);
- tool_choice_auto / _none / _required / _named: every mode (test_tool_choice.py checks auto, none and
  required; it notes the hosted K3 ignores a named function, so a hosted reference may miss those rows:
  they are their own kind in `expectations_by_kind`);
- schema_ref, schema_anyof, schema_nested, schema_range: calls whose arguments must satisfy schemas with
  `$ref`/`$defs` (one recursive), `anyOf`, nested objects, enums and numeric bounds (what the verifier's
  walle cases exercise: TestReferences, TestAnyOf, TestNestedDefsDepth, TestRangeConstraints), with the
  values the prompt fixes;
- combined: dynamic and top-level tools, a tool exchange in the history, response_format and a thinking
  effort in one request (the shape of test_tokenization_groundtruth.py's payload).

Streamed usage.prompt_tokens is checked on every row by compare itself (the streamed run against the
non-streamed one and the reference: compare/tokens.py, compare/consistency.py)."""

from __future__ import annotations

import random
from typing import Any

Row = dict[str, Any]


def _tool(name: str, description: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}


WEATHER = _tool("get_weather", "Current weather of a city.", {
    "type": "object", "properties": {"city": {"type": "string"},
                                     "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"]})
STOCK = _tool("get_stock_price", "Latest price of a stock ticker.", {
    "type": "object", "properties": {"ticker": {"type": "string"}}, "required": ["ticker"]})
TIMEZONE = _tool("get_local_time", "The local time in a city.", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
BOOK = _tool("book_table", "Reserve a restaurant table.", {
    "$defs": {"Party": {"type": "object", "properties": {
        "adults": {"type": "integer", "minimum": 1, "maximum": 12},
        "children": {"type": "integer", "minimum": 0, "maximum": 8}}, "required": ["adults"],
        "additionalProperties": False},
        "Seating": {"type": "string", "enum": ["indoor", "terrace", "bar"]}},
    "type": "object", "properties": {"restaurant": {"type": "string"}, "party": {"$ref": "#/$defs/Party"},
                                     "seating": {"$ref": "#/$defs/Seating"}},
    "required": ["restaurant", "party"]})
TASK = _tool("create_task", "Create a task with optional subtasks.", {
    "$defs": {"Task": {"type": "object", "properties": {
        "title": {"type": "string", "minLength": 1},
        "subtasks": {"type": "array", "items": {"$ref": "#/$defs/Task"}, "maxItems": 5}},
        "required": ["title"]}},
    "type": "object", "properties": {"task": {"$ref": "#/$defs/Task"}}, "required": ["task"]})
THERMOSTAT = _tool("set_thermostat", "Set a room's thermostat to a temperature or a mode.", {
    "type": "object", "properties": {
        "room": {"type": "string"},
        "target": {"anyOf": [{"type": "number", "minimum": 5, "maximum": 30},
                             {"type": "string", "enum": ["eco", "off"]}]}},
    "required": ["room", "target"]})
SHIP = _tool("ship_parcel", "Send a parcel.", {
    "type": "object", "properties": {
        "recipient": {"type": "object", "properties": {
            "name": {"type": "string"},
            "address": {"type": "object", "properties": {
                "street": {"type": "string"}, "city": {"type": "string"},
                "country": {"type": "string", "enum": ["DE", "FR", "JP", "US", "BR"]}},
                "required": ["city", "country"]}},
            "required": ["name", "address"]},
        "weight_kg": {"type": "number", "exclusiveMinimum": 0, "maximum": 30},
        "priority": {"type": "string", "enum": ["standard", "express"]}},
    "required": ["recipient", "weight_kg"]})
REVIEW = _tool("rate_product", "Record a product rating.", {
    "type": "object", "properties": {
        "product_id": {"type": "integer", "minimum": 1000, "maximum": 9999},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["quality", "price", "delivery", "support"]},
                 "minItems": 1, "maxItems": 3, "uniqueItems": True}},
    "required": ["product_id", "stars", "tags"]})

CITIES = ["Beijing", "Lisbon", "Nairobi", "Osaka", "Montréal", "Reykjavík", "São Paulo", "Zürich"]
TICKERS = ["MSFT", "NVDA", "TSLA", "AAPL"]
RESTAURANTS = ["Lumen", "Casa Verde", "Sakura-tei", "Le Petit Four"]
ROOMS = ["kitchen", "bedroom", "office", "living room"]
NAMES = ["Ana Souza", "Kenji Watanabe", "Claire Dubois", "Jonas Becker"]
CHAT = ["Hi! Could you introduce yourself in one sentence, without using any tool?",
        "What is a haiku? Answer briefly; no tools are needed.",
        "Say hello in three languages. Do not call any tool."]

SUMMARY = {"type": "object", "properties": {
    "city": {"type": "string"}, "temperature_c": {"type": "number", "minimum": -90, "maximum": 60},
    "condition": {"type": "string", "enum": ["sunny", "cloudy", "rain", "snow"]}, "summary": {"type": "string"}},
    "required": ["city", "temperature_c", "condition", "summary"], "additionalProperties": False}
CAPITAL = {"$defs": {"Country": {"type": "object", "properties": {
    "name": {"type": "string"}, "capital": {"type": "string"}}, "required": ["name", "capital"],
    "additionalProperties": False}},
    "type": "object", "properties": {"countries": {"type": "array", "items": {"$ref": "#/$defs/Country"},
                                                   "minItems": 2, "maxItems": 2}},
    "required": ["countries"], "additionalProperties": False}


def _call(tool: dict[str, Any], **arguments: Any) -> dict[str, Any]:
    return {"name": tool["function"]["name"], "arguments": arguments}


def _weather(rng: random.Random) -> tuple[str, dict[str, Any]]:
    city = rng.choice(CITIES)
    return f"What is the weather in {city} right now? Please look it up.", _call(WEATHER, city=city)


def _dynamic(rng: random.Random) -> list[Row]:
    rows = []
    for i in range(8):
        prompt, call = _weather(rng)
        sys_tools = {"role": "system", "content": "", "tools": [WEATHER]}
        user = {"role": "user", "content": prompt}
        tools: list[dict[str, Any]] | None = None
        if i % 4 == 0:  # the first message
            messages = [sys_tools, user]
        elif i % 4 == 1:  # after a finished turn, in a later system message
            messages = [{"role": "system", "content": "You are a concise assistant."},
                        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                        sys_tools, user]
        elif i % 4 == 2:  # the last message; and in another run two system messages of tools
            messages = [user, sys_tools] if i < 4 else \
                [{"role": "system", "content": "", "tools": [TIMEZONE]}, sys_tools, user]
        else:  # beside a top-level tool of another purpose
            messages, tools = [sys_tools, user], [STOCK]
        row: Row = {"kind": "dynamic_tools", "messages": messages, "tool_choice": "required" if i % 2 else "auto",
                    "thinking": i >= 6, "max_tokens": 512 if i >= 6 else 256,
                    "expected": {"tool_calls": True, "calls": [call]}}
        if tools:
            row["tools"] = tools
        rows.append(row)
    return rows


def _response_format(rng: random.Random) -> list[Row]:
    rows = []
    for i in range(8):
        city = rng.choice(CITIES)
        if i % 4 == 0:
            rf: dict[str, Any] = {"type": "json_schema", "json_schema": {"name": "weather_summary", "strict": True,
                                                                         "schema": SUMMARY}}
            prompt = f"Describe a typical spring day in {city} as JSON following the schema."
        elif i % 4 == 1:
            rf = {"type": "json_schema", "json_schema": {"name": "capitals", "strict": True, "schema": CAPITAL}}
            prompt = "Name two countries and their capitals, as JSON following the schema."
        elif i % 4 == 2:
            rf = {"type": "json_object"}
            prompt = f"Return a JSON object with a key named city whose value is {city}."
        else:
            rf = {"type": "json_schema", "json_schema": {"name": "city_only", "strict": False, "schema": {
                "type": "object", "properties": {"city": {"type": "string"}}}}}
            prompt = f"Answer as JSON: which city is {city}'s nearest neighbour of similar size?"
        rows.append({"kind": "response_format", "messages": [{"role": "user", "content": prompt}],
                     "response_format": rf, "thinking": i >= 6, "max_tokens": 512 if i >= 6 else 256})
    rows.append({"kind": "response_format", "messages": [{"role": "user", "content": "Describe Lisbon in one sentence."}],
                 "response_format": {"type": "text"}, "thinking": False, "max_tokens": 128})
    return rows


def _choices(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    offered = [WEATHER, STOCK, TIMEZONE]
    for i in range(4):
        prompt, call = _weather(rng)
        chat = CHAT[i % len(CHAT)]
        rows.append({"kind": "tool_choice_auto", "messages": [{"role": "user", "content": prompt if i < 2 else chat}],
                     "tools": offered, "tool_choice": "auto", "thinking": False, "max_tokens": 256,
                     "expected": {"tool_calls": True, "calls": [call]} if i < 2 else {"tool_calls": False}})
        prompt, call = _weather(rng)
        rows.append({"kind": "tool_choice_none", "messages": [{"role": "user", "content": prompt}], "tools": offered,
                     "tool_choice": "none", "thinking": i == 3, "max_tokens": 512 if i == 3 else 256})
        ticker = rng.choice(TICKERS)
        rows.append({"kind": "tool_choice_required", "messages": [{"role": "user", "content":
                     f"Briefly: how is {ticker} trading today?"}], "tools": offered, "tool_choice": "required",
                     "thinking": False, "max_tokens": 256,
                     "expected": {"tool_calls": True, "calls": [_call(STOCK, ticker=ticker)]}})
        city = rng.choice(CITIES)
        rows.append({"kind": "tool_choice_named", "messages": [{"role": "user", "content":
                     f"I am flying to {city} tomorrow. What time is it there now?"}], "tools": offered,
                     "tool_choice": {"type": "function", "function": {"name": "get_local_time"}},
                     "thinking": False, "max_tokens": 256,
                     "expected": {"tool_calls": True, "calls": [_call(TIMEZONE, city=city)]}})
    return rows


def _schemas(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for i in range(6):
        think, choice = i == 5, ("auto", "required")[i % 2]

        def add(kind: str, tool: dict[str, Any], prompt: str, call: dict[str, Any]) -> None:
            rows.append({"kind": kind, "messages": [{"role": "user", "content": prompt}], "tools": [tool, WEATHER],
                         "tool_choice": choice, "thinking": think, "max_tokens": 768 if think else 384,
                         "expected": {"tool_calls": True, "calls": [call]}})

        name, adults, kids = rng.choice(RESTAURANTS), rng.randint(1, 6), rng.randint(0, 3)
        seat = rng.choice(["indoor", "terrace", "bar"])
        if i % 2:
            add("schema_ref", BOOK, f"Book a table at {name} for {adults} adults, {seat} seating.",
                _call(BOOK, restaurant=name, party={"adults": adults}, seating=seat))
        else:
            add("schema_ref", BOOK, f"Reserve {name} for {adults} adults and {kids} children.",
                _call(BOOK, restaurant=name, party={"adults": adults, "children": kids}))
        if i % 3 == 0:
            add("schema_ref", TASK, "Create a task 'Move house' with the subtasks 'Pack books' and 'Book a van'.",
                _call(TASK, task={"title": "Move house", "subtasks": [{"title": "Pack books"}, {"title": "Book a van"}]}))
        room = rng.choice(ROOMS)
        if i % 2:
            target: Any = rng.choice(["eco", "off"])
            add("schema_anyof", THERMOSTAT, f"Put the {room} thermostat in {target} mode.",
                _call(THERMOSTAT, room=room, target=target))
        else:
            target = rng.choice([18, 19.5, 21, 22.5])
            add("schema_anyof", THERMOSTAT, f"Set the {room} thermostat to {target} degrees.",
                _call(THERMOSTAT, room=room, target=target))
        who, city = rng.choice(NAMES), rng.choice(CITIES)
        country, weight = rng.choice(["DE", "FR", "JP", "US", "BR"]), rng.choice([0.5, 2, 7.25, 12])
        add("schema_nested", SHIP, f"Ship a {weight} kg parcel by express to {who} in {city} (country code "
            f"{country}).", _call(SHIP, recipient={"name": who, "address": {"city": city, "country": country}},
                                  weight_kg=weight, priority="express"))
        pid, stars = rng.randint(1000, 9999), rng.randint(1, 5)
        tags = rng.sample(["quality", "price", "delivery", "support"], 2)
        add("schema_range", REVIEW, f"Rate product {pid} with {stars} stars, tagged {tags[0]} and {tags[1]}.",
            _call(REVIEW, product_id=pid, stars=stars, tags=tags))
    return rows


def _combined(rng: random.Random) -> list[Row]:
    rows = []
    for effort in ("low", "high"):
        city = rng.choice(CITIES)
        args = '{"city": "%s"}' % city
        rows.append({"kind": "combined", "messages": [
            {"role": "system", "content": "You are Kimi, a helpful assistant."},
            {"role": "system", "content": "", "tools": [WEATHER]},
            {"role": "user", "content": f"How is the weather in {city} today?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_k3w1", "type": "function", "function": {"name": "get_weather", "arguments": args}}]},
            {"role": "tool", "tool_call_id": "call_k3w1",
             "content": '{"temperature_c": 21, "condition": "sunny"}'},
            {"role": "user", "content": "Summarise today's weather there as JSON following the schema."}],
            "tools": [STOCK], "tool_choice": "auto",
            "response_format": {"type": "json_schema", "json_schema": {"name": "weather_summary", "schema": SUMMARY}},
            "thinking": True, "thinking_effort": effort, "max_tokens": 768, "expected": {"tool_calls": False}})
    return rows


def rows(seed: int = 7) -> list[Row]:
    """The suite's rows, interleaved by kind (the first N are a cross-section), ids k3-features-NNN."""
    rng = random.Random(seed * 1000 + 3)
    all_rows = _dynamic(rng) + _response_format(rng) + _choices(rng) + _schemas(rng) + _combined(rng)
    by_kind: dict[str, list[Row]] = {}
    for r in all_rows:
        by_kind.setdefault(r["kind"], []).append(r)
    out: list[Row] = []
    queues = list(by_kind.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return [{"id": f"k3-features-{i:03d}", "suite": "k3-features", **r} for i, r in enumerate(out)]
