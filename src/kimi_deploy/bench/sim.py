"""`kimi-deploy sim`: an OpenAI-compatible server whose latencies are known, the ground truth that
calibrates the benchmark harness and a stand-in endpoint for dry runs.

Every answer token is scheduled at an absolute time from the moment the request arrived: the first at
TTFT, then one per ITL draw (fixed, normal or exponential), so event-loop jitter does not accumulate.
Chat and completions, streaming or not, with usage; tool calls when tools are offered (`--tool-rate`; in
`tools` or a system message's `tools`, the named one under a named tool_choice); JSON content valid
against a json_object / json_schema `response_format` when it makes no call;
reasoning tokens in `reasoning_content` when thinking is on; /tokenize (one token per whitespace-separated
word, the sim's tokenizer), /metrics, /health, /v1/models, /version; injected faults: HTTP 500s
(`--error-rate`), streams dropped mid-way (`--drop-rate`), malformed SSE (`--malformed-rate`), a slow
start (`--slow-start`), and streams that stall after N chunks with the connection held open
(`--stall-after`: the hang a client's stall timeout exists for); a batch limit (`--max-running`: requests
past it wait for a slot, so throughput saturates and TTFT grows at a known concurrency).

What one request can make it do is bounded, as a model's context bounds it in vLLM: prompt and answer
together at most MAX_MODEL_LEN tokens (a `max_tokens` over MAX_MODEL_LEN, or a prompt that fills it, is an
HTTP 400 naming the field and the bound; a smaller `max_tokens` is cut to what the prompt leaves), a
tool-call or JSON answer at most SCHEMA_NODES values of SCHEMA_STRING characters; the
answer is produced token by token as it is due, never built whole beforehand (a non-streamed answer is
built at its end: it is the response body). SIGTERM and Ctrl-C stop it within about a second (aiohttp's
handlers, shutdown_timeout below), streams in flight or not, exit 0."""

from __future__ import annotations

import asyncio
import errno
import json
import math
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web


# The sim's context length, in its tokens (whitespace-separated words): prompt plus answer of one request
# are at most this many, as a model's max_model_len bounds them in vLLM; /tokenize reports it. It bounds
# what one request can make the sim generate (a max_tokens of 10**9 is refused, not built). The checks and
# their messages are vLLM 0.32's: TokenizeParams (max_tokens over max_model_len; a prompt over it) and
# get_max_tokens (max_tokens cut to max_model_len less the prompt).
MAX_MODEL_LEN = 1 << 20
# The clock sends at most this many chunks per wake-up, then lets the loop run (signals, new requests)
# before it sends the rest of what is due; and it holds back a stream whose client reads slower than it is
# sent while more than HIGH_WATER bytes wait in that connection's buffer (retrying after BACKOFF_S), so a
# client that does not read cannot make the sim buffer its whole answer.
TICK_SENDS = 4096
HIGH_WATER = 1 << 16
BACKOFF_S = 0.005
# /tokenize writes its token list this many numbers at a time
TOKENIZE_PIECE = 1 << 16


class Refused(Exception):
    """A request the sim refuses as an engine would: HTTP 400 with OpenAI's error object naming `param`."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param

    def response(self) -> web.Response:
        # vLLM's ErrorResponse: {"error": {"message", "type", "param", "code"}}
        return web.json_response({"error": {"message": str(self), "type": "BadRequestError", "param": self.param,
                                            "code": 400}}, status=400)


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    model: str = "sim"
    ttft_ms: float = 50.0
    itl_ms: float = 20.0
    dist: str = "fixed"  # fixed | normal | exponential
    jitter: float = 0.1  # relative std-dev for normal
    default_output: int = 128
    reasoning_tokens: int = 0  # per answer when thinking is on
    tool_rate: float = 1.0  # fraction of requests with tools that answer with a tool call
    error_rate: float = 0.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0  # share of streams with one chunk that is not JSON
    slow_start_s: float = 0.0
    stall_after: int | None = None  # send this many chunks, then hold the stream open without a byte
    # at most this many requests generate at once, the others wait for a slot (their TTFT includes the
    # wait), as in an engine's batch limit: throughput saturates at this concurrency; None: no limit
    max_running: int | None = None
    # append one JSON line per chat request, {"t": CLOCK_MONOTONIC when its handler started}: the ground
    # truth for when requests arrived (benchmarks/trace_replay_schedule.py)
    arrivals: str | None = None
    seed: int = 0


class Sim:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.started = time.monotonic()
        self.running = 0
        self.total = 0
        self.generated = 0
        self.errors = 0
        self.clock = _Clock()
        self.model_json = json.dumps(cfg.model)
        self.slots = asyncio.Semaphore(cfg.max_running) if cfg.max_running else None
        self.arrivals = open(cfg.arrivals, "a", buffering=1) if cfg.arrivals else None  # noqa: SIM115 (process-long)

    def draw(self, mean_ms: float, rng: random.Random | None = None) -> float:
        c, rng = self.cfg, rng or self.rng
        if c.dist == "normal":
            return max(rng.gauss(mean_ms, mean_ms * c.jitter), 0.0) / 1000
        if c.dist == "exponential":
            return rng.expovariate(1.0 / mean_ms) / 1000 if mean_ms > 0 else 0.0
        return mean_ms / 1000

    def gaps(self) -> Callable[[], float]:
        """One request's gaps between tokens, drawn as its tokens become due: a function returning the next
        gap in seconds. A random distribution draws from the request's own generator, seeded from the sim's
        when the request starts, so a request's latencies depend on the seed and the order requests started
        in, not on how its draws interleave with other streams'."""
        if self.cfg.dist == "fixed":
            gap = self.cfg.itl_ms / 1000
            return lambda: gap
        rng, mean = random.Random(self.rng.getrandbits(64)), self.cfg.itl_ms
        return lambda: self.draw(mean, rng)

    # --- plumbing -------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/health", self.health)
        app.router.add_get("/version", lambda r: web.json_response({"version": "sim-1"}))
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        return app

    def ready(self) -> bool:
        return time.monotonic() - self.started >= self.cfg.slow_start_s

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.ready() else 503)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.cfg.model, "object": "model"}]})

    async def metrics(self, request: web.Request) -> web.Response:
        text = (f"sim:num_requests_running {self.running}\nsim:requests_total {self.total}\n"
                f"sim:generation_tokens_total {self.generated}\nsim:errors_total {self.errors}\n")
        return web.Response(text=text, content_type="text/plain")

    async def tokenize(self, request: web.Request) -> web.StreamResponse:
        """One token per word, numbered from 0; unbounded as vLLM's /tokenize is (the body is, 64 MiB), so a
        long list is written a piece at a time, never held whole (the same bytes json_response writes)."""
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return web.json_response({"error": {"message": "invalid JSON"}}, status=400)
        if not isinstance(body, dict):
            return Refused("the request body must be a JSON object", None).response()
        text = body.get("prompt")
        if text is None:
            messages = body.get("messages")
            text = " ".join(str(m.get("content") or "") for m in (messages if isinstance(messages, list) else [])
                            if isinstance(m, dict))
        n = _count_words(str(text))
        if n <= TOKENIZE_PIECE:
            return web.json_response({"tokens": list(range(n)), "count": n, "max_model_len": MAX_MODEL_LEN})
        resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
        await resp.prepare(request)
        await resp.write(b'{"tokens": [')
        for k in range(0, n, TOKENIZE_PIECE):
            numbers = ", ".join(map(str, range(k, min(k + TOKENIZE_PIECE, n))))
            await resp.write(((", " if k else "") + numbers).encode())
        await resp.write(f'], "count": {n}, "max_model_len": {MAX_MODEL_LEN}}}'.encode())
        await resp.write_eof()
        return resp

    # --- generation ------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    def _plan(self, body: dict[str, Any], chat: bool) -> tuple[int, int, dict[str, Any] | None, int, str | None]:
        """(answer tokens, reasoning tokens, the tool call or None, prompt tokens, the JSON text a
        json_object / json_schema response_format asks for, or None). Refused as vLLM refuses them: a
        max_tokens that is not an integer of at least 1 or is over MAX_MODEL_LEN, a prompt that leaves no
        room for an answer; a max_tokens (or --output-len) past what the prompt leaves is cut to it."""
        asked = _max_tokens(body)
        if asked is not None and asked[1] > MAX_MODEL_LEN:
            raise Refused(f"{asked[0]}={asked[1]} cannot be greater than max_model_len={MAX_MODEL_LEN}. "
                          "Please request fewer output tokens.", asked[0])
        n_in = _count_words(json.dumps(body.get("messages" if chat else "prompt")))
        if n_in >= MAX_MODEL_LEN:  # vLLM: over the context is refused, and the whole of it leaves 0 tokens
            raise Refused(f"This model's maximum context length is {MAX_MODEL_LEN} tokens. However, your prompt "
                          f"contains {n_in} input tokens, which exceeds this limit even without any output "
                          "tokens. Please reduce the length of the input prompt.", "input_tokens")
        n_out = min(self.cfg.default_output if asked is None else asked[1], MAX_MODEL_LEN - n_in)
        kw = body.get("chat_template_kwargs") or {}
        thinking = kw.get("thinking", kw.get("enable_thinking", False)) or (body.get("thinking") or {}).get("type") == "enabled"
        reasoning = min(self.cfg.reasoning_tokens, max(n_out - 1, 0)) if (chat and thinking) else 0
        call, text = None, None
        # the tools offered: the request's, then those a system message declares (K3's dynamic tools)
        tools = list(body.get("tools") or []) + [t for m in (body.get("messages") or []) if chat and isinstance(m, dict)
                                                 for t in (m.get("tools") or [])]
        choice = body.get("tool_choice")
        words = _words(reasoning, n_out)
        # a call needs one answer token after the reasoning (its name and arguments ride on it)
        if chat and tools and choice != "none" and n_out > reasoning and self.rng.random() < self.cfg.tool_rate:
            named = choice["function"]["name"] if isinstance(choice, dict) else None
            fn = next(t["function"] for t in tools if named in (None, t["function"]["name"]))  # StopIteration: 400
            call = {"name": fn["name"], "id": f"functions.{fn['name']}:0",
                    "arguments": _arguments(fn.get("parameters"), words, n_out - reasoning)}  # ValueError: 400
        rf = body.get("response_format") or {}
        if chat and call is None and rf.get("type") in ("json_object", "json_schema") and n_out > reasoning:
            schema = (rf.get("json_schema") or {}).get("schema") if rf["type"] == "json_schema" else None
            text = _arguments(schema or {"type": "object"}, words, n_out - reasoning)
        return n_out, reasoning, call, n_in, text

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        t0 = time.monotonic()
        if self.arrivals is not None and chat:
            self.arrivals.write(f'{{"t": {t0!r}}}\n')
            # the other requests of a burst record their arrival before this one's body is parsed: what is
            # recorded is when the server saw each request, not the server's own work on the ones before
            await asyncio.sleep(0)
        if not self.ready():
            return web.json_response({"error": {"message": "starting"}}, status=503)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # nested past what json parses
            return web.json_response({"error": {"message": "invalid JSON"}}, status=400)
        if not isinstance(body, dict):
            return Refused("the request body must be a JSON object", None).response()
        if body.get("model") != self.cfg.model:
            return web.json_response({"error": {"message": f"model {body.get('model')!r} not found"}}, status=404)
        self.total += 1
        if self.rng.random() < self.cfg.error_rate:
            self.errors += 1
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        try:
            n_out, n_reason, call, n_in, text = self._plan(body, chat)
        except Refused as exc:
            return exc.response()
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, StopIteration, OverflowError) as exc:
            # a request the sim cannot answer (a tool without a name, a schema past its bounds): say so
            return web.json_response({"error": {"message": f"the sim cannot answer this request: "
                                                           f"{type(exc).__name__}: {exc}"[:300]}}, status=400)
        drop_at = self.rng.randrange(1, max(n_out, 2)) if self.rng.random() < self.cfg.drop_rate else None
        garble_at = self.rng.randrange(0, max(n_out, 1)) if self.rng.random() < self.cfg.malformed_rate else None
        slots = self.slots
        if slots is not None:
            await slots.acquire()  # released when the answer ends (finally below)
        # absolute due time of the first token: ttft from the moment it got a slot; each next one is due a
        # gap after the one before (cumulative draws, taken as the tokens are sent)
        first = (t0 if slots is None else time.monotonic()) + self.draw(self.cfg.ttft_ms)
        gaps = self.gaps()
        rid = f"sim-{uuid.uuid4().hex[:12]}"
        usage = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out,
                 "completion_tokens_details": {"reasoning_tokens": n_reason}}
        self.running += 1
        try:
            if not body.get("stream"):
                await asyncio.sleep(max(await self._last_due(first, gaps, n_out) - time.monotonic(), 0))
                self.generated += n_out
                return web.json_response(self._full(rid, chat, n_out, n_reason, call, usage, text))
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            transport = request.transport
            if transport is None:  # the client went away before the answer started
                return resp
            stream = _Stream(self, transport, rid, chat, n_reason, call, n_out, first, gaps, drop_at, garble_at,
                             text)
            self.clock.add(stream)
            if not await stream.finished:  # dropped (connection closed) or the client went away
                return resp
            finish = "tool_calls" if call else "length"
            final = self._delta(rid, chat, {}, finish)
            tail = [f"data: {json.dumps(final)}\n\n".encode()]
            if (body.get("stream_options") or {}).get("include_usage"):
                tail.append(f"data: {json.dumps({'id': rid, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n".encode())
            tail.append(b"data: [DONE]\n\n")
            for part in tail:
                await resp.write(part)
            await resp.write_eof()
            return resp
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        finally:
            self.running -= 1
            if slots is not None:
                slots.release()

    async def _last_due(self, first: float, gaps: Callable[[], float], n_out: int) -> float:
        """When the last of n_out tokens is due (a non-streamed answer is sent then): first plus n_out - 1
        gaps; a fixed gap multiplied, random ones drawn a batch at a time with the loop let run between."""
        if self.cfg.dist == "fixed":
            return first + max(n_out - 1, 0) * self.cfg.itl_ms / 1000
        t = first
        for k in range(1, n_out):
            t += gaps()
            if k % TICK_SENDS == 0:
                await asyncio.sleep(0)
        return t

    def _delta(self, rid: str, chat: bool, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        if chat:
            return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": self.cfg.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": self.cfg.model,
                "choices": [{"index": 0, "text": delta.get("content", ""), "finish_reason": finish}]}

    def _chunk(self, rid: str, chat: bool, i: int, n_reason: int, call: dict[str, Any] | None, n_out: int,
               text: str | None = None) -> bytes:
        if chat and call is None and text is None and 0 < i and n_reason <= i:
            # the common chunk, formatted directly: the same bytes json.dumps writes for it (the test
            # test_sim_fast_chunk_is_the_json_chunk holds them equal), at a fraction of the cost
            return (f'data: {{"id": "{rid}", "object": "chat.completion.chunk", "created": {int(time.time())}, '
                    f'"model": {self.model_json}, "choices": [{{"index": 0, "delta": {{"content": " w{i}"}}, '
                    f'"finish_reason": null}}]}}\n\n').encode()
        return self._chunk_json(rid, chat, i, n_reason, call, n_out, text)

    def _chunk_json(self, rid: str, chat: bool, i: int, n_reason: int, call: dict[str, Any] | None,
                    n_out: int, text: str | None = None) -> bytes:
        if i < n_reason:
            delta: dict[str, Any] = {"reasoning_content": f" r{i}"}
        elif call is not None:
            piece = _argument_piece(call["arguments"], i - n_reason, n_out - n_reason)
            if i == n_reason:
                delta = {"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                         "function": {"name": call["name"], "arguments": piece}}]}
            else:
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        elif text is not None:  # the JSON a response_format asks for, in contiguous pieces
            delta = {"content": _argument_piece(text, i - n_reason, n_out - n_reason)}
        else:
            delta = {"content": f" w{i}"}
        if i == 0 and chat:
            delta["role"] = "assistant"
        return f"data: {json.dumps(self._delta(rid, chat, delta, None))}\n\n".encode()

    def frame(self, payload: bytes) -> bytes:
        """One HTTP/1.1 chunk (RFC 9112 section 7.1) around `payload`: the clock writes to the transport
        directly, past aiohttp's writer, so it frames the chunks itself."""
        return b"%x\r\n%b\r\n" % (len(payload), payload)

    def _full(self, rid: str, chat: bool, n_out: int, n_reason: int, call: dict[str, Any] | None,
              usage: dict[str, Any], json_text: str | None = None) -> dict[str, Any]:
        text = json_text if json_text is not None else "".join(f" w{i}" for i in range(n_reason, n_out))
        if not chat:
            return {"id": rid, "object": "text_completion", "model": self.cfg.model,
                    "choices": [{"index": 0, "text": text, "finish_reason": "length"}], "usage": usage}
        msg: dict[str, Any] = {"role": "assistant", "content": None if call else text}
        if n_reason:
            msg["reasoning_content"] = "".join(f" r{i}" for i in range(n_reason))
        if call:
            msg["tool_calls"] = [{"id": call["id"], "type": "function",
                                  "function": {"name": call["name"], "arguments": call["arguments"]}}]
        return {"id": rid, "object": "chat.completion", "model": self.cfg.model, "usage": usage,
                "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if call else "length"}]}


# Bounds on what a schema can make the sim build (a request must not be able to freeze or exhaust it):
# nesting, items of one array, characters of one string, and values in all (arrays of 16 items nested 15
# deep are 16**15 values within the first two bounds alone). A tool-call or JSON answer is therefore at
# most SCHEMA_NODES strings of SCHEMA_STRING characters; the free text in it is the answer's words, at most
# SCHEMA_STRING characters of them.
SCHEMA_DEPTH = 16
SCHEMA_ITEMS = 16
SCHEMA_STRING = 4096
SCHEMA_NODES = 1024


def _words(start: int, end: int) -> str:
    """The free text of a call's arguments or a JSON answer: "a{start} ... a{end-1}", at most SCHEMA_STRING
    characters of it (whole words)."""
    out, size = [], -1
    for i in range(start, end):
        word = f"a{i}"
        size += len(word) + 1
        if size > SCHEMA_STRING:
            break
        out.append(word)
    return " ".join(out)


def _max_tokens(body: dict[str, Any]) -> tuple[str, int] | None:
    """(the field, its value) of max_completion_tokens, else max_tokens (vLLM's order); None when the
    request sets neither. Refused, naming the field: a value that is not an integer of at least 1 (vLLM's
    check; an integral float or a decimal string is taken as its integer, as pydantic's lax mode does)."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        n = None
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        elif isinstance(value, float) and value.is_integer():
            n = int(value)
        elif isinstance(value, str) and len(value) <= 20:
            try:
                n = int(value)
            except ValueError:
                pass
        if n is None or n < 1:
            raise Refused(f"{key} must be an integer of at least 1, got {str(value)[:40]!r}", key)
        return key, n
    return None


def _count_words(text: str, piece: int = 1 << 20) -> int:
    """len(text.split()) (the sim's tokens), counted a slice at a time, so a large prompt never becomes one
    list of all its words: a word cut by a slice boundary is counted once."""
    n, joined = 0, False
    for k in range(0, len(text), piece):
        part = text[k:k + piece]
        n += len(part.split()) - (joined and not part[0].isspace())
        joined = not part[-1].isspace()
    return n


def _instance(schema: Any, text: str, root: Any = None, depth: int = 0, budget: list[int] | None = None) -> Any:
    """The smallest value a JSON schema accepts, free text being `text`: `const` or the first enum value,
    the first branch of anyOf / oneOf / allOf, a local `$ref`, the required properties of an object,
    minItems items of an array, the lowest number the bounds allow. An object schema that names no
    property gets {"w": text}. Enough for the tools' parameter schemas a client offers, so the sim's
    calls pass the same schema checks a real model's must; deeper or larger than the bounds above is
    ValueError (pattern and format are not followed). `budget`: the values still allowed, [SCHEMA_NODES]
    for a whole instance, shared by its recursion."""
    root = schema if root is None else root
    budget = [SCHEMA_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"schema makes more than {SCHEMA_NODES} values")
    if depth > SCHEMA_DEPTH:
        raise ValueError(f"schema nested deeper than {SCHEMA_DEPTH}")
    if not isinstance(schema, dict):
        return {"w": text}
    if isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#"):
        target: Any = root
        for part in schema["$ref"].lstrip("#").strip("/").split("/") if schema["$ref"] != "#" else []:
            target = target.get(part) if isinstance(target, dict) else None
        return _instance(target, text, root, depth + 1, budget)
    if "const" in schema:
        return _literal(schema["const"])
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return _literal(schema["enum"][0])
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _instance(schema[key][0], text, root, depth + 1, budget)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null" if "null" in kind else None)
    props = schema.get("properties")
    if kind == "object" or (kind is None and isinstance(props, dict)):
        if not isinstance(props, dict) or not props:
            return {"w": text}
        required = [k for k in schema.get("required") or [] if isinstance(k, str)] \
            if isinstance(schema.get("required"), list) else []
        # a required name no property describes is free text, where the schema lets other properties in
        out = {}
        for k in required:
            if len(k) > SCHEMA_STRING:
                raise ValueError(f"a property name longer than the sim builds ({SCHEMA_STRING} characters)")
            if k in props:
                out[k] = _instance(props[k], text, root, depth + 1, budget)
            elif schema.get("additionalProperties") is not False:
                budget[0] -= 1
                if budget[0] < 0:
                    raise ValueError(f"schema makes more than {SCHEMA_NODES} values")
                out[k] = text
        return out
    if kind == "array":
        n = schema.get("minItems") if isinstance(schema.get("minItems"), int) else 0
        if n > SCHEMA_ITEMS:
            raise ValueError(f"minItems {n} is more than the sim builds ({SCHEMA_ITEMS})")
        return [_instance(schema.get("items"), text, root, depth + 1, budget) for _ in range(max(n, 0))]
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        low = low if isinstance(low, (int, float)) and not isinstance(low, bool) else None
        ex = schema.get("exclusiveMinimum")
        if isinstance(ex, (int, float)) and not isinstance(ex, bool):
            low = max(low if low is not None else ex, ex + (1 if kind == "integer" else 0.5))
        value = low if low is not None else 0
        return math.ceil(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    if "pattern" in schema or "format" in schema:  # not followed: the schema's own example, if it gives one
        value = _literal(schema["default"]) if isinstance(schema.get("default"), str) else text
    else:
        value = text
    if isinstance(schema.get("minLength"), int):
        if schema["minLength"] > SCHEMA_STRING:
            raise ValueError(f"minLength {schema['minLength']} is more than the sim builds ({SCHEMA_STRING})")
        value = value.ljust(schema["minLength"], "a")
    if isinstance(schema.get("maxLength"), int):
        value = value[:max(schema["maxLength"], 0)]
    return value


def _literal(value: Any) -> Any:
    """A value the schema gives (const, enum, default), refused (ValueError) past SCHEMA_STRING characters
    of JSON: repeated by an array's items, a large one would multiply the request's size."""
    if len(json.dumps(value)) > SCHEMA_STRING:
        raise ValueError(f"a const, enum or default value longer than the sim builds ({SCHEMA_STRING} characters)")
    return value


def _arguments(schema: Any, words: str, tokens: int) -> str:
    """A tool call's arguments: JSON that `schema` accepts, padded with trailing blanks (still the same
    JSON) to at least one character per answer token, so that every streamed token carries a piece."""
    return json.dumps(_instance(schema, words)).ljust(tokens)


def _argument_piece(arguments: str, k: int, tokens: int) -> str:
    """The k-th of `tokens` contiguous pieces of the arguments: joined in order they are the arguments,
    so one request's call is the same streamed and not (a sim compared against itself agrees)."""
    n = len(arguments)
    return arguments[k * n // tokens:(k + 1) * n // tokens]


class _Stream:
    """One streamed answer the clock is sending: token i is due at `at`; the next one a gaps() later."""

    __slots__ = ("sim", "transport", "rid", "chat", "n_reason", "call", "n_out", "at", "gaps", "drop_at", "garble_at",
                 "i", "finished", "text")

    def __init__(self, sim: Sim, transport: asyncio.Transport, rid: str, chat: bool, n_reason: int,
                 call: dict[str, Any] | None, n_out: int, first: float, gaps: Callable[[], float],
                 drop_at: int | None,
                 garble_at: int | None, text: str | None = None) -> None:
        self.sim, self.transport, self.rid, self.chat, self.text = sim, transport, rid, chat, text
        self.n_reason, self.call, self.n_out, self.at, self.gaps = n_reason, call, n_out, first, gaps
        self.drop_at, self.garble_at, self.i = drop_at, garble_at, 0
        self.finished: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def send(self) -> bool:
        """Write token i; False when the stream has no more tokens for the clock (done, dropped, stalled)."""
        i, sim = self.i, self.sim
        if self.transport.is_closing():  # the client went away
            self._end(False)
            return False
        if sim.cfg.stall_after is not None and i == sim.cfg.stall_after:
            return False  # silent, connection open, until the client gives up (the future never resolves)
        if i == self.drop_at:
            self.transport.close()  # the stream stops mid-way, no [DONE]
            self._end(False)
            return False
        if i == self.garble_at:
            self.transport.write(sim.frame(b"data: {this is not json\n\n"))
        else:
            self.transport.write(sim.frame(sim._chunk(self.rid, self.chat, i, self.n_reason, self.call, self.n_out,
                                                      self.text)))
            sim.generated += 1
        self.i = i + 1
        if self.i >= self.n_out:
            self._end(True)
            return False
        self.at += self.gaps()
        return True

    def _end(self, complete: bool) -> None:
        if not self.finished.done():
            self.finished.set_result(complete)


class _Clock:
    """Sends every stream's tokens from one timer: a heap of (due time, stream), drained each time the
    loop wakes, instead of a sleeping task per stream, so that a token costs a heap operation and a
    write rather than a task switch (the sim must stay cheaper than the clients it calibrates; at 1024
    streams x 50 tokens/s it sends 51,200 chunks a second). At most TICK_SENDS chunks a wake-up, and a
    stream whose client does not read is held back (HIGH_WATER)."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, _Stream]] = []
        self.seq = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = float("inf")

    def add(self, stream: _Stream) -> None:
        if stream.n_out == 0:
            stream._end(True)
            return
        self._push(stream.at, stream)

    def _push(self, at: float, stream: _Stream) -> None:
        import heapq

        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, stream))
        if at < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = at
            self.timer = asyncio.get_running_loop().call_at(at, self._tick)

    def _tick(self) -> None:
        import heapq

        self.timer, self.timer_at = None, float("inf")
        heap, now, sends = self.heap, time.monotonic(), 0
        while heap and heap[0][0] <= now and sends < TICK_SENDS:
            _, _, stream = heapq.heappop(heap)
            self.seq += 1
            transport = stream.transport
            if not transport.is_closing() and transport.get_write_buffer_size() > HIGH_WATER:
                heapq.heappush(heap, (now + BACKOFF_S, self.seq, stream))  # sent when the client has read
                continue
            sends += 1
            if stream.send():
                heapq.heappush(heap, (stream.at, self.seq, stream))
        if heap:
            self.timer_at = heap[0][0]
            self.timer = asyncio.get_running_loop().call_at(self.timer_at, self._tick)


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when installed (libuv: about half asyncio's cost per write and timer), else asyncio's."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


def _bind_error(host: str, port: int, exc: OSError) -> Exception:
    """Bad input naming the flag at fault for an address that cannot be bound: --host when it is not an
    address of this machine (EADDRNOTAVAIL) or of a family it has no support for (EAFNOSUPPORT), else
    --port (in use, EADDRINUSE; privileged, EACCES)."""
    from ..errors import BadInput

    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return BadInput(f"cannot listen on {host}:{port}: {reason} (not an address of this machine)", "--host")
    return BadInput(f"cannot listen on {host}:{port}: {reason}", "--port")


def serve(cfg: SimConfig, host: str = "127.0.0.1", port: int = 8800) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM: aiohttp stops, exit 0); bad input naming --host or --port
    when the address cannot be bound (_bind_error), checked before aiohttp starts so its own error never
    surfaces as an internal one."""
    import socket

    from ..errors import BadInput

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise BadInput(f"cannot resolve {host!r}: {exc}", "--host") from None
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # aiohttp sets it too
            try:
                probe.bind(addr)
            except OSError as exc:
                raise _bind_error(host, port, exc) from None
    try:
        # a short shutdown_timeout: a stream held open by --stall-after must not delay the exit by aiohttp's
        # default 60 s of grace
        # backlog: aiohttp's default of 128 pending connections made a client that opens 512 at once wait
        # for the kernel's 1 s SYN retransmission (TcpExtListenOverflows counts them); Linux caps the value
        # at net.core.somaxconn (listen(2))
        web.run_app(Sim(cfg).app(), host=host, port=port, print=None, access_log=None, shutdown_timeout=1.0,
                    loop=_new_loop(), backlog=4096)
    except OSError as exc:  # lost the race for the port after the probe
        raise _bind_error(host, port, exc) from None
