"""The tool-call suite's tools and prompts: OpenAI-format tool definitions, the phrasings users ask
with, and the argument values they use. One source for three consumers: the tiny model's synthetic
training data, the built-in benchmark/compare suites (kimi_deploy/suites/), and the tests.

Everything is deterministic for a given seed (random.Random), so the same suite is produced on every
machine."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

CITIES = ["Paris", "Tokyo", "London", "Berlin", "Madrid", "Rome", "Sydney", "Toronto", "Beijing", "Seoul",
          "Cairo", "Lima"]
TICKERS = ["AAPL", "MSFT", "NVDA", "GOOG", "AMZN", "TSLA", "META", "IBM"]
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "CNY"]
AMOUNTS = [10, 25, 50, 100, 250, 1000]
TIMEZONES = ["UTC", "Asia/Tokyo", "Europe/Paris", "America/New_York"]
UNITS = ["celsius", "fahrenheit"]


def _fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required,
                       "additionalProperties": False}}}


TOOLS: list[dict[str, Any]] = [
    _fn("get_weather", "Current weather for a city.",
        {"city": {"type": "string", "description": "City name"},
         "unit": {"type": "string", "enum": UNITS}}, ["city"]),
    _fn("get_stock_price", "Latest price of a stock.",
        {"ticker": {"type": "string", "description": "Ticker symbol"}}, ["ticker"]),
    _fn("convert_currency", "Convert an amount between currencies.",
        {"amount": {"type": "number"}, "from_currency": {"type": "string", "enum": CURRENCIES},
         "to_currency": {"type": "string", "enum": CURRENCIES}}, ["amount", "from_currency", "to_currency"]),
    _fn("get_time", "Current time in a time zone.",
        {"timezone": {"type": "string", "description": "IANA time zone"}}, ["timezone"]),
]
TOOL_BY_NAME = {t["function"]["name"]: t for t in TOOLS}

# Phrasings per tool: (template, argument builder). Templates use the argument names.
PHRASES: dict[str, list[str]] = {
    "get_weather": ["What's the weather in {city}?", "How is the weather in {city} today?",
                    "Is it raining in {city}?", "Weather for {city} in {unit}, please.",
                    "Tell me the temperature in {city}."],
    "get_stock_price": ["What is the price of {ticker}?", "How much is {ticker} stock now?",
                        "Give me the latest {ticker} quote."],
    "convert_currency": ["Convert {amount} {from_currency} to {to_currency}.",
                         "How much is {amount} {from_currency} in {to_currency}?"],
    "get_time": ["What time is it in {timezone}?", "Current time in {timezone}, please."],
}

# Prompts that need no tool, with the answer the tiny model learns (also asked with tools present).
CHAT: list[tuple[str, str]] = [
    ("Hello!", "Hello! How can I help you today?"),
    ("Who are you?", "I am a tiny test model with the Kimi K2 architecture."),
    ("Tell me a joke.", "Why did the GPU cross the road? To reach the other node."),
    ("What is 2 + 2?", "2 + 2 = 4."),
    ("Write a haiku about the sea.", "Waves fold into foam, salt wind carries gull voices, the tide keeps its time."),
    ("Thank you!", "You are welcome."),
    ("What can you do?", "I can chat and call tools such as weather, stocks, currency and time."),
    ("Say something short.", "Something short."),
]


@dataclass(frozen=True)
class ToolCase:
    """One user request that should be answered with exactly one tool call."""

    tool: str
    prompt: str
    arguments: dict[str, Any]


def _arguments(tool: str, rng: random.Random) -> dict[str, Any]:
    if tool == "get_weather":
        return {"city": rng.choice(CITIES), "unit": rng.choice(UNITS)}
    if tool == "get_stock_price":
        return {"ticker": rng.choice(TICKERS)}
    if tool == "convert_currency":
        a, b = rng.sample(CURRENCIES, 2)
        return {"amount": rng.choice(AMOUNTS), "from_currency": a, "to_currency": b}
    return {"timezone": rng.choice(TIMEZONES)}


def tool_case(rng: random.Random, tool: str | None = None) -> ToolCase:
    tool = tool or rng.choice(list(PHRASES))
    args = _arguments(tool, rng)
    template = rng.choice(PHRASES[tool])
    prompt = template.format(**args)
    if tool == "get_weather" and "{unit}" not in template:
        args = {"city": args["city"]}  # the unit is only passed when the user names it
    return ToolCase(tool, prompt, args)


def tool_subset(rng: random.Random, must_include: str | None = None) -> list[dict[str, Any]]:
    """1-4 tools in random order, always including the one the prompt needs."""
    names = list(TOOL_BY_NAME)
    k = rng.randint(1, len(names))
    chosen = rng.sample(names, k)
    if must_include and must_include not in chosen:
        chosen[rng.randrange(len(chosen))] = must_include
    return [TOOL_BY_NAME[n] for n in chosen]


def arguments_json(args: dict[str, Any]) -> str:
    """Arguments as the model writes them: compact JSON with a space after separators, keys in order."""
    return json.dumps(args, ensure_ascii=False)


def tool_result(case: ToolCase) -> dict[str, Any]:
    """A plausible tool return value for multi-turn conversations."""
    if case.tool == "get_weather":
        return {"city": case.arguments["city"], "temperature": 21, "condition": "sunny"}
    if case.tool == "get_stock_price":
        return {"ticker": case.arguments["ticker"], "price": 123.45}
    if case.tool == "convert_currency":
        return {"amount": case.arguments["amount"] * 1.1, "currency": case.arguments["to_currency"]}
    return {"timezone": case.arguments["timezone"], "time": "12:00"}


def final_answer(case: ToolCase) -> str:
    """What the assistant says after the tool returned (names the subject, no numbers to copy)."""
    subject = next(iter(case.arguments.values()))
    return f"Here is the result for {subject}."
