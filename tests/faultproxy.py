"""A real HTTP proxy (aiohttp) in front of a real vLLM server that misbehaves the way the engines' tool-call
parsers and usage accounting have misbehaved in the field, so `compare` can be shown to catch each one:

- `empty_calls_under_load=N`: while more than N chat requests are in flight, a streamed answer's
  tool-call deltas arrive as empty `tool_calls` lists (finish_reason still "tool_calls"), as in
  vllm-project/vllm #54701 (empty tool_calls deltas under concurrent load; non-streamed answers fine);
- `drop_args_after=L`: once a streamed call's arguments pass L characters, the rest of them is
  dropped, as SGLang's parser dropped long arguments (sgl-project/sglang #23363);
- `repeat_name_from_index=I`: calls with index >= I get their name sent again in a later delta, as the
  kimi_k2 parser's streamed multi-call misparses did (vllm #24478, fixed by #38579);
- `prompt_tokens_extra=K`: every usage (non-streamed and streamed) counts K more prompt tokens.

Everything else passes through unchanged (/v1/models, /health, ...). Runs on its own event loop in a
thread; `stats` counts what was injected, so a test can tell the fault actually fired."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web


class FaultProxy:
    def __init__(self, upstream: str, *, empty_calls_under_load: int | None = None,
                 drop_args_after: int | None = None, repeat_name_from_index: int | None = None,
                 prompt_tokens_extra: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.empty_calls_under_load = empty_calls_under_load
        self.drop_args_after = drop_args_after
        self.repeat_name_from_index = repeat_name_from_index
        self.prompt_tokens_extra = prompt_tokens_extra
        self.in_flight = 0
        self.max_in_flight = 0
        self.stats = {"requests": 0, "streamed": 0, "emptied": 0, "truncated": 0, "renamed": 0, "recounted": 0}
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=600, sock_read=300))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_route("*", "/{tail:.*}", self._passthrough)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        async def _stop() -> None:
            await self._runner.cleanup()
            await self._session.close()
        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # --- handlers -------------------------------------------------------------------------------------
    async def _passthrough(self, request: web.Request) -> web.Response:
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         data=await request.read(), headers=_fwd(request.headers)) as r:
            return web.Response(body=await r.read(), status=r.status, content_type=r.content_type)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.stats["requests"] += 1
        loaded = self.empty_calls_under_load is not None and self.in_flight > self.empty_calls_under_load
        try:
            async with self._session.post(self.upstream + "/v1/chat/completions", json=body,
                                          headers=_fwd(request.headers)) as r:
                if not body.get("stream") or r.status != 200:
                    data = await r.read()
                    if r.status == 200 and self.prompt_tokens_extra:
                        doc = json.loads(data)
                        self._recount(doc)
                        data = json.dumps(doc).encode()
                    return web.Response(body=data, status=r.status, content_type=r.content_type)
                self.stats["streamed"] += 1
                out = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
                await out.prepare(request)
                state: dict[int, dict[str, Any]] = {}
                async for raw in r.content:
                    line = raw.decode()
                    if line.startswith("data: ") and not line.startswith("data: [DONE]"):
                        chunk = json.loads(line[6:])
                        self._corrupt(chunk, state, loaded)
                        line = "data: " + json.dumps(chunk) + "\n"
                    await out.write(line.encode())
                await out.write_eof()
                return out
        finally:
            self.in_flight -= 1

    # --- the faults -----------------------------------------------------------------------------------
    def _recount(self, doc: dict[str, Any]) -> None:
        if self.prompt_tokens_extra and doc.get("usage"):
            doc["usage"]["prompt_tokens"] += self.prompt_tokens_extra
            doc["usage"]["total_tokens"] += self.prompt_tokens_extra
            self.stats["recounted"] += 1

    def _corrupt(self, chunk: dict[str, Any], state: dict[int, dict[str, Any]], loaded: bool) -> None:
        self._recount(chunk)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            calls = delta.get("tool_calls")
            if not calls:
                continue
            if loaded:
                delta["tool_calls"] = []
                self.stats["emptied"] += 1
                continue
            for tc in calls:
                idx = tc.get("index", 0)
                st = state.setdefault(idx, {"args": 0, "renamed": False, "name": None})
                fn = tc.get("function") or {}
                if fn.get("name"):
                    st["name"] = fn["name"]
                elif (self.repeat_name_from_index is not None and idx >= self.repeat_name_from_index
                      and st["name"] and not st["renamed"]):
                    fn["name"] = st["name"]  # the name again, on a later delta of the same call
                    tc["function"] = fn
                    st["renamed"] = True
                    self.stats["renamed"] += 1
                if self.drop_args_after is not None and fn.get("arguments"):
                    # past the threshold the rest is lost, also within one fragment (under load vLLM sends
                    # several tokens per delta, sometimes a whole call's arguments at once)
                    text = fn["arguments"]
                    if st["args"] + len(text) > self.drop_args_after:
                        fn["arguments"] = text[:max(0, self.drop_args_after - st["args"])]
                        if not st.get("truncated"):
                            st["truncated"] = True
                            self.stats["truncated"] += 1
                    st["args"] = min(st["args"] + len(text), self.drop_args_after)


def _fwd(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() in ("authorization", "content-type", "accept")}
