"""Every route of a served engine behind the API key: an ASGI middleware the engine loads into its own
HTTP server (vLLM: `--middleware kimi_deploy.engine_auth.RequireKey`, rendered by engines/vllm.py).

vLLM's own `--api-key` check guards only paths starting with /v1, /v2, /inference and /cohere
(vllm/entrypoints/serve/middleware/authenticate.py GUARDED_PREFIX, vLLM 0.32.0 and 0.33.0), so /invocations,
/tokenize, /detokenize, /pooling, /score, /classify, /rerank, /metrics, /version, /docs and the rest answer
anyone. This one answers 401 to every HTTP request and refuses every WebSocket handshake that does not carry
`Authorization: Bearer <key>`, except on the exact paths named open (liveness/readiness, and /metrics when the
operator opts in) and CORS preflights (OPTIONS with Origin and Access-Control-Request-Method, which Starlette's
CORSMiddleware answers itself without reaching a route).

vLLM constructs a middleware class with the app alone (`app.add_middleware(cls)`, vllm/entrypoints/serve/
middleware/register.py), so the settings come from the environment, set by the rendered command:
  KIMI_ENGINE_GUARD_VAR   the name of the variable holding the key (vLLM: VLLM_API_KEY, which vLLM reads too);
                          the key itself is never on a command line;
  KIMI_ENGINE_OPEN_PATHS  comma-separated exact paths answered without the key (unset: none).
A missing or empty key is a RuntimeError when the server builds its middleware stack: vLLM 0.32.0 builds it
while it builds the app (model_hosting_container_standards load_middlewares, called from vllm/entrypoints/
serve/sagemaker/api_router.py sagemaker_standards_bootstrap), so the server does not start; it never serves
unguarded.

Only the standard library: the engine's process imports this module, and nothing else of kimi-deploy."""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any, Awaitable, Callable, Mapping

KEY_VAR = "KIMI_ENGINE_GUARD_VAR"
OPEN_PATHS_VAR = "KIMI_ENGINE_OPEN_PATHS"

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_UNAUTHORIZED = b'{"error":"Unauthorized"}'
# WebSocket close code for a policy violation (RFC 6455 section 7.4.1); sent before accept, ASGI servers
# answer the handshake with HTTP 403.
_WS_POLICY_VIOLATION = 1008


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def open_paths_value(paths: list[str] | tuple[str, ...]) -> str:
    """What KIMI_ENGINE_OPEN_PATHS holds for these paths (the renderer's side of the contract)."""
    for p in paths:
        if not p.startswith("/") or "," in p:
            raise ValueError(f"{p!r} is not an absolute path without commas")
    return ",".join(paths)


class RequireKey:
    """Pure ASGI middleware: the key on every request except the open paths. Settings are read once, when
    the server builds its middleware stack."""

    def __init__(self, app: ASGIApp, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        var = env.get(KEY_VAR, "")
        key = env.get(var, "") if var else ""
        if not key:
            raise RuntimeError(f"kimi_deploy.engine_auth: {KEY_VAR} must name a set, non-empty variable holding "
                               f"the API key ({KEY_VAR}={var!r}); refusing to serve without it")
        self.app = app
        self._key_digest = _digest(key.encode("utf-8"))
        self.open_paths = frozenset(p for p in env.get(OPEN_PATHS_VAR, "").split(",") if p)

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether the first Authorization header is `Bearer <key>` (compared in constant time, on digests so
        that the key's length does not show either)."""
        value = next((v for k, v in headers if k.lower() == b"authorization"), None)
        if value is None:
            return False
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(_digest(token), self._key_digest)

    def _path(self, scope: Scope) -> str:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        return path[len(root):] if root and path.startswith(root) else path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):  # lifespan: no request
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers") or [])
        if self._path(scope) in self.open_paths or self.authorized(headers) or _cors_preflight(scope, headers):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION})
            return
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(_UNAUTHORIZED)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": _UNAUTHORIZED})


def _cors_preflight(scope: Scope, headers: list[tuple[bytes, bytes]]) -> bool:
    """A CORS preflight as Starlette's CORSMiddleware recognises one (OPTIONS with Origin and
    Access-Control-Request-Method; starlette/middleware/cors.py): it answers with the CORS headers and never
    reaches a route. Browsers send it without credentials."""
    if scope.get("type") != "http" or scope.get("method") != "OPTIONS":
        return False
    names = {k.lower() for k, _ in headers}
    return b"origin" in names and b"access-control-request-method" in names
