"""A real OpenAI-looking HTTP server (aiohttp, on a loopback port, in a thread) whose chat endpoint
misbehaves on purpose, for the tests that bench and compare end in bounded time with an honest result
and write no key: it stalls mid-stream, echoes the Authorization header in a 401, or answers 200 with
an HTML page. The `fault` fixture in tests/conftest.py starts them and stops them after the test."""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web


class FaultServer:
    """An OpenAI-looking server on a loopback port, in a thread. /v1/models always answers; the chat
    endpoint misbehaves as `mode` says: "stall" (three chunks, then silence with the connection open),
    "echo" (401 whose body quotes the Authorization header), "html" (200 with an HTML page, /tokenize
    too)."""

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
