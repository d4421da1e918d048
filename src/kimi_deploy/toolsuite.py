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


# --- the richer tool-call suite (benchmarks/suites/generate.py): nested schemas, several calls a turn, ---
# --- long and non-ASCII arguments, tool results in the history ---------------------------------------

CABINS = ["economy", "premium", "business", "first"]
CHANNELS = ["email", "sms", "chat"]
PRIORITIES = ["low", "normal", "high"]
LANGUAGES = ["en", "fr", "de", "ja", "zh"]
AIRPORTS = ["CDG", "HND", "LHR", "BER", "MAD", "FCO", "SYD", "YYZ", "PEK", "ICN", "GRU", "ZRH"]
DATES = ["2026-03-14", "2026-04-02", "2026-05-21", "2026-06-30", "2026-07-09", "2026-09-18"]
TIMES = ["09:00", "10:30", "14:00", "16:45"]
PEOPLE = [("Ana Souza", "ana@example.com"), ("Kenji Sato", "kenji@example.jp"), ("Léa Martin", "lea@example.fr"),
          ("Jonas Müller", "jonas@example.de"), ("Wei Chen", "wei@example.cn"), ("Sam Okoro", "sam@example.org")]
TITLES = ["Design review", "Budget sync", "Launch retro", "Hiring panel", "Roadmap planning", "Incident review"]
ROOMS = ["A1", "B2", "C3", "Orion", "Vega"]
TAGS = ["work", "travel", "ideas", "urgent", "personal"]
# Non-ASCII values: Latin accents, CJK, Cyrillic, emoji (copied verbatim into arguments).
UNICODE_CITIES = ["São Paulo", "Zürich", "Kraków", "Reykjavík", "東京", "北京", "Москва", "Malmö"]
UNICODE_TEXTS = ["Réunion déplacée à 15 h, désolé !", "会議は明日の午後3時に変更です。", "明天上午十点开会，请准时。",
                 "Bitte bis Freitag prüfen – danke!", "Встреча переносится на пятницу.", "Ship it 🚀 then celebrate 🎉"]


def _obj(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


RICH_TOOLS: list[dict[str, Any]] = [
    _fn("create_event", "Create a calendar event.", {
        "title": {"type": "string"},
        "start": {"type": "string", "description": "YYYY-MM-DDTHH:MM"},
        "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 480},
        "attendees": {"type": "array", "minItems": 1, "items": _obj(
            {"name": {"type": "string"}, "email": {"type": "string"},
             "role": {"type": "string", "enum": ["required", "optional"]}}, ["name", "email"])},
        "location": _obj({"city": {"type": "string"}, "room": {"type": "string"}}, ["city"]),
        "priority": {"type": "string", "enum": PRIORITIES}}, ["title", "start", "attendees"]),
    _fn("search_flights", "Search flights.", {
        "origin": {"type": "string", "description": "IATA code"},
        "destination": {"type": "string", "description": "IATA code"},
        "date": {"type": "string", "description": "YYYY-MM-DD"},
        "passengers": _obj({"adults": {"type": "integer", "minimum": 1},
                            "children": {"type": "integer", "minimum": 0}}, ["adults"]),
        "cabin": {"type": "string", "enum": CABINS}}, ["origin", "destination", "date", "passengers"]),
    _fn("send_message", "Send a message.", {
        "recipient": {"type": "string"},
        "channel": {"type": "string", "enum": CHANNELS},
        "text": {"type": "string"}}, ["recipient", "channel", "text"]),
    _fn("save_note", "Save a note.", {
        "title": {"type": "string"},
        "body": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string", "enum": TAGS}},
        "language": {"type": "string", "enum": LANGUAGES}}, ["title", "body"]),
]
ALL_TOOLS = TOOLS + RICH_TOOLS
ALL_TOOL_BY_NAME = {t["function"]["name"]: t for t in ALL_TOOLS}


def _long_text(lines: list[str], min_chars: int) -> str:
    """A fixed text over min_chars characters: numbered lines cycling through `lines` in order (a text a
    real model copies verbatim and tiny-k2 can learn: each line follows from the one before it)."""
    out: list[str] = []
    while sum(len(x) + 1 for x in out) <= min_chars:
        out.append(f"{len(out) + 1:02d}. {lines[len(out) % len(lines)]}")
    return "\n".join(out)


_LOG_LINES = ['deploy "api" to eu-west finished in 41 s', "cache warmed: 12,480 keys, hit rate 97.2%",
              'config key "max_num_seqs" set to 64 (was 32)', "health check /v1/models returned 200 in 8 ms",
              r"path C:\runs\kimi\out.json written (3.1 MB)", "router weights rebalanced across 8 experts",
              "p90 TTFT 412 ms, p90 ITL 31 ms at concurrency 32", 'tool parser "kimi_k2" loaded, reasoning on']
_INTL_LINES = ["Le déploiement à Zürich est terminé, tout fonctionne.", "東京リージョンの検証は完了しました。",
               "北京节点的延迟稳定在二十毫秒以内。", "Die Prüfung in Kraków läuft noch – Geduld bitte.",
               "Проверка в Москве прошла успешно.", "Reykjavík: ✅ 42 requêtes/s, aucun échec."]
# The long verbatim arguments (over 2,000 characters): a release log with quotes and a backslash (JSON
# escaping) and a multilingual status report (non-ASCII).
LONG_TEXTS: list[tuple[str, str]] = [
    ("Release log", _long_text(_LOG_LINES, 2100)),
    ("Status report", _long_text(_INTL_LINES, 2100)),
]


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Request:
    """A user request and the calls that answer it (in order). `exact` lists the argument paths whose
    value is fixed by the prompt (what a correct answer must contain); `long` marks a long argument."""

    kind: str
    prompt: str
    calls: tuple[Call, ...]
    long: str | None = None  # the argument key holding a text over 2,000 characters


def _event(rng: random.Random) -> tuple[str, dict[str, Any]]:
    title, day, time = rng.choice(TITLES), rng.choice(DATES), rng.choice(TIMES)
    people = rng.sample(PEOPLE, rng.randint(1, 3))
    args: dict[str, Any] = {"title": title, "start": f"{day}T{time}",
                            "attendees": [{"name": n, "email": e} for n, e in people]}
    who = " and ".join(f"{n} ({e})" for n, e in people)
    prompt = f"Schedule '{title}' on {day} at {time} with {who}"
    if rng.random() < 0.5:
        args["duration_minutes"] = rng.choice([15, 30, 45, 60, 90])
        prompt += f" for {args['duration_minutes']} minutes"
    if rng.random() < 0.4:
        city, room = rng.choice(CITIES + UNICODE_CITIES), rng.choice(ROOMS)
        args["location"] = {"city": city, "room": room}
        prompt += f" in {city}, room {room}"
    if rng.random() < 0.3:
        args["priority"] = rng.choice(PRIORITIES)
        prompt += f", {args['priority']} priority"
    return prompt + ".", args


def _flights(rng: random.Random) -> tuple[str, dict[str, Any]]:
    a, b = rng.sample(AIRPORTS, 2)
    day, adults = rng.choice(DATES), rng.randint(1, 4)
    args: dict[str, Any] = {"origin": a, "destination": b, "date": day, "passengers": {"adults": adults}}
    who = f"{adults} adult{'s' if adults > 1 else ''}"
    if rng.random() < 0.4:
        args["passengers"]["children"] = rng.randint(1, 3)
        who += f" and {args['passengers']['children']} child{'ren' if args['passengers']['children'] > 1 else ''}"
    cabin = ""
    if rng.random() < 0.5:
        args["cabin"] = rng.choice(CABINS)
        cabin = f"{args['cabin']} "
    return f"Find {cabin}flights from {a} to {b} on {day} for {who}.", args


def _message(rng: random.Random, text: str | None = None) -> tuple[str, dict[str, Any]]:
    name, _ = rng.choice(PEOPLE)
    channel = rng.choice(CHANNELS)
    text = text or rng.choice(UNICODE_TEXTS)
    return f"Send {name} a{'n' if channel == 'email' else ''} {channel} saying: {text}", \
        {"recipient": name, "channel": channel, "text": text}


def _note(rng: random.Random, long: bool) -> tuple[str, dict[str, Any]]:
    if long:
        title, body = rng.choice(LONG_TEXTS)
    else:
        title, body = rng.choice(TITLES), rng.choice(UNICODE_TEXTS)
    args: dict[str, Any] = {"title": title, "body": body}
    prompt = f"Save a note titled '{title}'"
    if rng.random() < 0.4:
        args["tags"] = rng.sample(TAGS, rng.randint(1, 2))
        prompt += f", tagged {' and '.join(args['tags'])}"
    return prompt + f", with exactly this text as its body:\n{body}", args


def _simple(rng: random.Random, tool: str, unicode_city: bool = False) -> tuple[str, dict[str, Any]]:
    case = tool_case(rng, tool)
    if unicode_city and tool == "get_weather":
        city = rng.choice(UNICODE_CITIES)
        return case.prompt.replace(case.arguments["city"], city), {**case.arguments, "city": city}
    return case.prompt, dict(case.arguments)


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def request(rng: random.Random, kind: str) -> Request:
    """One request of a kind: nested (event / flights), message (non-ASCII text), note, long (a note over
    2,000 characters), unicode (a weather call for a non-ASCII city), parallel_same (2-3 calls of one
    tool), parallel_mixed (2-3 calls of different tools)."""
    if kind == "nested":
        prompt, args = (_event if rng.random() < 0.5 else _flights)(rng)
        name = "create_event" if "attendees" in args else "search_flights"
        return Request(kind, prompt, (Call(name, args),))
    if kind == "message":
        prompt, args = _message(rng)
        return Request(kind, prompt, (Call("send_message", args),))
    if kind in ("note", "long"):
        prompt, args = _note(rng, kind == "long")
        return Request(kind, prompt, (Call("save_note", args),), long="body" if kind == "long" else None)
    if kind == "unicode":
        prompt, args = _simple(rng, "get_weather", unicode_city=True)
        return Request(kind, prompt, (Call("get_weather", args),))
    if kind == "parallel_same":
        tool = rng.choice(["get_weather", "get_stock_price", "get_time"])
        key = {"get_weather": "city", "get_stock_price": "ticker", "get_time": "timezone"}[tool]
        pool = {"get_weather": CITIES + UNICODE_CITIES, "get_stock_price": TICKERS, "get_time": TIMEZONES}[tool]
        values = rng.sample(pool, rng.randint(2, 3))
        what = {"get_weather": "the weather in", "get_stock_price": "the prices of", "get_time": "the time in"}[tool]
        verb = "are" if tool == "get_stock_price" else "is"
        listed = ", ".join(values[:-1]) + f" and {values[-1]}"
        prompt = rng.choice([f"What {verb} {what} {listed}?", f"Check {what} {listed}, please."])
        return Request(kind, prompt, tuple(Call(tool, {key: v}) for v in values))
    if kind == "parallel_mixed":
        tools = rng.sample(list(PHRASES) + ["send_message"], rng.randint(2, 3))
        tools.sort(key=lambda t: t == "send_message")  # a message's text ends the prompt, verbatim
        parts, calls = [], []
        for t in tools:
            p, a = _message(rng) if t == "send_message" else _simple(rng, t)
            parts.append(p if t == "send_message" else p.rstrip(".?!,"))
            calls.append(Call(t, a))
        prompt = parts[0] + "; also " + "; and ".join(_lower_first(p) for p in parts[1:])
        prompt += "" if tools[-1] == "send_message" else "."
        return Request(kind, prompt, tuple(calls))
    raise ValueError(kind)


def offered_tools(rng: random.Random, needed: list[str], extra: int) -> list[dict[str, Any]]:
    """The needed tools plus up to `extra` others, in random order."""
    others = [n for n in ALL_TOOL_BY_NAME if n not in needed]
    names = list(dict.fromkeys(needed)) + rng.sample(others, rng.randint(0, extra))
    rng.shuffle(names)
    return [ALL_TOOL_BY_NAME[n] for n in names]


def result_for(call: Call) -> dict[str, Any]:
    """A plausible tool return value (for conversations that carry tool results)."""
    a = call.arguments
    if call.name in PHRASES:
        return tool_result(ToolCase(call.name, "", a))
    if call.name == "create_event":
        return {"event_id": "evt_1042", "title": a["title"], "status": "created"}
    if call.name == "search_flights":
        return {"flights": [{"flight": "KD 101", "departure": f"{a['date']}T08:15", "price_eur": 420}]}
    if call.name == "send_message":
        return {"delivered": True, "channel": a["channel"]}
    return {"saved": True, "characters": len(a.get("body", ""))}


def history(rng: random.Random, calls: tuple[Call, ...] | list[Call], first_idx: int = 0,
            reasoning: str | None = None) -> list[dict[str, Any]]:
    """The assistant's turn that made `calls` and the tools' results, as a client sends them back: ids
    OpenAI-style (`call_...`, half the time) or Kimi-style (`functions.NAME:IDX`, IDX from first_idx; the
    adapter rewrites the former), and the turn's reasoning when given."""
    openai_ids = rng.random() < 0.5
    ids = [f"call_{rng.getrandbits(48):012x}" if openai_ids else f"functions.{c.name}:{first_idx + i}"
           for i, c in enumerate(calls)]
    msg: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [
        {"id": cid, "type": "function", "function": {"name": c.name, "arguments": arguments_json(c.arguments)}}
        for cid, c in zip(ids, calls)]}
    if reasoning:
        msg["reasoning_content"] = reasoning
    return [msg] + [{"role": "tool", "tool_call_id": cid, "content": json.dumps(result_for(c), ensure_ascii=False)}
                    for cid, c in zip(ids, calls)]


def call_summary(calls: tuple[Call, ...] | list[Call]) -> str:
    """What the assistant says once the tools have returned (names each subject, no numbers to copy)."""
    subjects = [str(next(iter(c.arguments.values()))) for c in calls]
    return "Here are the results for " + ", ".join(s if len(s) < 40 else s[:37] + "..." for s in subjects) + "."
