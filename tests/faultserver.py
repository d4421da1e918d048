"""A real OpenAI-looking HTTP server (aiohttp, on a loopback port, in a thread) whose chat endpoint
misbehaves on purpose, for the tests that bench and compare end in bounded time with an honest result
and write no key: it stalls mid-stream, echoes the Authorization header in a 401, or answers 200 with
an HTML page. The `fault` fixture in tests/conftest.py starts them and stops them after the test.
`StandInEngines`: the two engines of a prefill/decode pair, for the router tests (tests/test_routers.py,
tests/test_secrets.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiohttp import web


class FaultServer:
    """An OpenAI-looking server on a loopback port, in a thread. /v1/models always answers; the chat
    endpoint misbehaves as `mode` says: "stall" (three chunks, then silence with the connection open),
    "echo" (401 whose body quotes the Authorization header), "html" (200 with an HTML page, /tokenize
    too), "forever" (a stream of 1 MiB events that never ends)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "echo":
            auth = request.headers.get("Authorization", "")
            return web.json_response({"error": {"message": f"invalid credentials: {auth}"}}, status=401)
        if self.mode == "html":
            return web.Response(text="<html><body>Sign in</body></html>", content_type="text/html")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if self.mode == "forever":  # 1 MiB events as fast as the socket takes them, never [DONE]
            event = f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': 'x' * 2**20}}]})}\n\n"
            while True:
                await resp.write(event.encode())
        for i in range(3):
            chunk = {"choices": [{"index": 0, "delta": {"content": f" w{i}"}, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await asyncio.sleep(3600)  # the stall: no byte, connection open
        return resp

    async def tokenize(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>login</html>", content_type="text/html")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        a = web.Application()
        a.router.add_get("/v1/models", self.models)
        a.router.add_get("/health", self.models)
        a.router.add_post("/v1/chat/completions", self.chat)
        a.router.add_post("/tokenize", self.tokenize)
        self.runner = web.AppRunner(a, shutdown_timeout=0.5)  # a stalled handler must not delay stop()
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        async def down() -> None:
            await self.runner.cleanup()
        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class RecordingSim:
    """The real `kimi-deploy sim` app (bench/sim.py), in process, that records every chat request it is
    sent (`bodies`: the JSON body; `auth`: its Authorization header) and answers GET /v1/models with
    `listed` when given (a hosted API lists many ids; the sim answers chat for `model` only). Serve it with
    tests/conftest.py's `serving(rec.app())`."""

    def __init__(self, model: str = "sim", listed: tuple[str, ...] = (), strip: tuple[str, ...] = ()) -> None:
        """`strip`: parts of each chat request the sim answers without, as a gateway or engine that drops
        them would (the request is recorded as sent): "defs" (every `$defs` in the tools' parameters and
        the response_format schema), "message_tools" (tools declared in messages), "response_format"."""
        from kimi_deploy.bench.sim import Sim, SimConfig

        self.sim = Sim(SimConfig(model=model, ttft_ms=1, itl_ms=0, default_output=8))
        self.listed = listed
        if strip:
            plan = self.sim._plan
            self.sim._plan = lambda body, chat: plan(_stripped(body, strip), chat)  # type: ignore[method-assign]
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
            if request.method == "GET" and request.path == "/v1/models" and self.listed:
                return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.listed]})
            if request.method == "POST" and request.path == "/v1/chat/completions":
                self.bodies.append(await request.json())  # aiohttp keeps the body: the sim reads it again
                self.auth.append(request.headers.get("Authorization"))
            return await handler(request)

        app = self.sim.app()
        app.middlewares.append(record)
        return app


def _stripped(body: dict, strip: tuple[str, ...]) -> dict:
    """A copy of a chat request body without the parts `strip` names (RecordingSim)."""
    import copy

    def no_defs(obj):  # type: ignore[no-untyped-def]
        if isinstance(obj, dict):
            return {k: no_defs(v) for k, v in obj.items() if k != "$defs"}
        return [no_defs(v) for v in obj] if isinstance(obj, list) else obj

    body = copy.deepcopy(body)
    if "message_tools" in strip:
        for m in body.get("messages") or []:
            m.pop("tools", None)
    if "response_format" in strip:
        body.pop("response_format", None)
    if "defs" in strip:
        body["tools"] = no_defs(body.get("tools"))
        body["response_format"] = no_defs(body.get("response_format"))
        for m in body.get("messages") or []:
            if "tools" in m:
                m["tools"] = no_defs(m["tools"])
    return body


class StandInEngines:
    """A P/D pair's two engines on loopback ports base + 1 and base + 2 (where a spec with serving.port base
    puts its prefill and decode sides): every request answered with 200 JSON, or with `key` set 200 only with
    `Bearer <key>` (and on /health) and 401 without. `seen` records (method, path, Authorization)."""

    def __init__(self, key: str | None = None) -> None:
        self.seen: list[tuple[str, str, str]] = []
        engines = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                auth = self.headers.get("Authorization") or ""
                engines.seen.append((self.command, self.path, auth))
                ok = key is None or auth == f"Bearer {key}" or self.path == "/health"
                body = json.dumps({"object": "list", "data": [{"id": "kimi"}], "choices": [],
                                   "status": "ok"}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        while True:  # retry until both neighbouring ports are free
            self.base = _free_port()
            try:
                first = ThreadingHTTPServer(("127.0.0.1", self.base + 1), Handler)
            except OSError:
                continue
            try:
                self.servers = [first, ThreadingHTTPServer(("127.0.0.1", self.base + 2), Handler)]
                break
            except OSError:
                first.server_close()
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
