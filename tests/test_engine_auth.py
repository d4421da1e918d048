"""Every route behind the API key (engine_auth.py, and how each engine gets it).

- The guard itself, in process: a pure ASGI app called with crafted scopes (hypothesis over paths and
  Authorization values), and behind Starlette with CORS, a root path and a WebSocket route.
- What `render` and `k8s` emit: vLLM loads the guard with --middleware whenever a key is set; no engine node
  ever runs with vLLM's dev mode on; /metrics is behind the key unless serving.metrics_without_key; SGLang,
  whose /metrics is open to anyone, turns metrics on with a key only by that opt-in.
- SGLang's own check (sglang 0.5.23 srt/utils/auth.py add_api_key_middleware) over SGLang's own route table
  (read from srt/entrypoints/http_server.py and the routers it includes): what it leaves open is what the
  profile says, and nothing more.
- e2e: tiny-k2 on the real vLLM CPU engine with a key, every route the running app registers probed with no
  key, a wrong key and the right key. The routes are vLLM's: the app built in process from the same argv and
  the tasks the server logged, checked against the live server's own /openapi.json.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

import httpx2
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kimi_deploy import engine_auth
from kimi_deploy.deployment import resolve
from kimi_deploy.engines.profiles import PROFILES
from kimi_deploy.engines.render import render
from kimi_deploy.k8s import manifests
from kimi_deploy.launch import materialize
from kimi_deploy.spec import load_spec

from .conftest import DEPLOY, assert_clean_error, example_params, needs_tiny, run_cli, spec_with, start_tiny_server

KEY = "kd-guard-test-key-5f0c9a1e"
VLLM_SPEC = DEPLOY / "kimi-k2-thinking-h200x8-vllm-tp8.yaml"
SGLANG_SPEC = DEPLOY / "kimi-k2.5-h200x8-sglang-tp8.yaml"


# --- the guard, in process ------------------------------------------------------------------------------

def _guard(open_paths: str = "/health", **extra: str) -> engine_auth.RequireKey:
    async def downstream(scope, receive, send) -> None:
        calls.append(scope)
    calls: list[Any] = []
    guard = engine_auth.RequireKey(downstream, {engine_auth.KEY_VAR: "K", "K": KEY,
                                                engine_auth.OPEN_PATHS_VAR: open_paths, **extra})
    guard.calls = calls  # type: ignore[attr-defined]
    return guard


def _call(guard: engine_auth.RequireKey, scope: dict[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    """(reached the app, messages the guard sent)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message) -> None:
        sent.append(dict(message))

    before = len(guard.calls)  # type: ignore[attr-defined]
    asyncio.run(guard(scope, receive, send))
    return len(guard.calls) > before, sent  # type: ignore[attr-defined]


def _scope(path: str, auth: bytes | None = None, kind: str = "http", method: str = "GET",
           headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    h = list(headers or []) + ([(b"authorization", auth)] if auth is not None else [])
    return {"type": kind, "path": path, "method": method, "headers": h, "root_path": ""}


@settings(max_examples=300, deadline=None)
@given(path=st.text(min_size=0, max_size=40).map(lambda s: "/" + s),
       auth=st.one_of(st.none(), st.binary(max_size=60)))
def test_only_the_open_paths_or_the_key_reach_the_app(path: str, auth: bytes | None) -> None:
    guard = _guard("/health")
    reached, sent = _call(guard, _scope(path, auth))
    right = auth is not None and auth.partition(b" ")[0].lower() == b"bearer" and auth.partition(b" ")[2] == KEY.encode()
    assert reached == (path == "/health" or right)
    if not reached:
        assert sent[0]["status"] == 401 and json.loads(sent[1]["body"]) == {"error": "Unauthorized"}


@pytest.mark.parametrize("auth, ok", [
    (b"Bearer " + KEY.encode(), True), (b"bearer " + KEY.encode(), True), (b"BEARER " + KEY.encode(), True),
    (b"Bearer " + KEY.encode() + b"x", False), (b"Bearer " + KEY[:-1].encode(), False), (b"Bearer", False),
    (b"Bearer  " + KEY.encode(), False), (b"Basic " + KEY.encode(), False), (KEY.encode(), False), (b"", False),
])
def test_the_key_is_a_bearer_token_exactly(auth: bytes, ok: bool) -> None:
    reached, _ = _call(_guard(), _scope("/v1/models", auth))
    assert reached == ok


def test_open_paths_are_exact_and_metrics_only_by_opt_in() -> None:
    closed = _guard("/health")
    for path in ("/health/", "/healthz", "/health_generate", "//health", "/metrics", "/metrics/", "/metricsx",
                 "/invocations", "/tokenize", "/", ""):
        assert not _call(closed, _scope(path))[0], path
    opened = _guard("/health,/metrics")
    assert _call(opened, _scope("/metrics"))[0] and not _call(opened, _scope("/metrics/x"))[0]
    assert not _call(_guard(""), _scope("/health"))[0]  # nothing named open: nothing is


def test_root_path_is_stripped_as_the_router_does() -> None:
    guard = _guard("/health")
    assert _call(guard, {**_scope("/api/health"), "root_path": "/api"})[0]
    assert not _call(guard, {**_scope("/api/v1/models"), "root_path": "/api"})[0]


def test_websocket_needs_the_key_too() -> None:
    guard = _guard()
    reached, sent = _call(guard, _scope("/v1/realtime", kind="websocket"))
    assert not reached and sent == [{"type": "websocket.close", "code": 1008}]
    assert _call(guard, _scope("/v1/realtime", b"Bearer " + KEY.encode(), kind="websocket"))[0]


def test_only_a_cors_preflight_passes_without_the_key() -> None:
    guard = _guard()
    preflight = [(b"origin", b"https://example.com"), (b"access-control-request-method", b"POST")]
    assert _call(guard, _scope("/v1/chat/completions", method="OPTIONS", headers=preflight))[0]
    assert not _call(guard, _scope("/v1/chat/completions", method="OPTIONS"))[0]
    assert not _call(guard, _scope("/v1/chat/completions", method="POST", headers=preflight))[0]


def test_lifespan_passes_through() -> None:
    assert _call(_guard(), {"type": "lifespan"})[0]


@pytest.mark.parametrize("env", [{}, {engine_auth.KEY_VAR: "K"}, {engine_auth.KEY_VAR: "K", "K": ""},
                                 {engine_auth.KEY_VAR: "", "": KEY}])
def test_no_key_no_server(env: dict[str, str]) -> None:
    async def app(scope, receive, send) -> None:
        pass
    with pytest.raises(RuntimeError, match=engine_auth.KEY_VAR):
        engine_auth.RequireKey(app, env)


def test_behind_starlette_with_cors_as_vllm_stacks_it() -> None:
    """The guard outermost (vLLM adds --middleware classes last: vllm/entrypoints/serve/middleware/register.py),
    CORSMiddleware inside it: a preflight is answered by CORS, everything else needs the key."""
    from starlette.applications import Starlette
    from starlette.middleware.cors import CORSMiddleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    app = Starlette(routes=[Route("/health", lambda r: PlainTextResponse("ok")),
                            Route("/invocations", lambda r: PlainTextResponse("done"), methods=["POST"])])
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(engine_auth.RequireKey, environ={engine_auth.KEY_VAR: "K", "K": KEY,
                                                        engine_auth.OPEN_PATHS_VAR: "/health"})
    client = TestClient(app)
    assert client.get("/health").status_code == 200
    r = client.post("/invocations")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.post("/invocations", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/invocations", headers={"Authorization": f"Bearer {KEY}"}).text == "done"
    pre = client.options("/invocations", headers={"Origin": "https://x.example",
                                                  "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 200 and pre.text == "OK"  # CORSMiddleware's own answer, no route reached


def test_vllm_does_not_build_its_app_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM builds the middleware stack while it builds the app (model_hosting_container_standards
    load_middlewares, from vllm/entrypoints/serve/sagemaker/api_router.py): a guard without its key stops the
    start instead of serving unguarded."""
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(
        ["tiny", "--middleware", "kimi_deploy.engine_auth.RequireKey"])
    monkeypatch.setenv(engine_auth.KEY_VAR, "KIMI_GUARD_UNSET_KEY")
    monkeypatch.delenv("KIMI_GUARD_UNSET_KEY", raising=False)
    with pytest.raises(RuntimeError, match=engine_auth.KEY_VAR):
        build_app(args, ("generate",))
    monkeypatch.setenv("KIMI_GUARD_UNSET_KEY", KEY)
    assert build_app(args, ("generate",)).middleware_stack is not None


# --- what render and k8s emit ---------------------------------------------------------------------------

def _engine_nodes(dep) -> Iterator:
    for node in render(dep):
        if node.group != "router" and node.argv[:2] != ["ray", "start"]:
            yield node


@pytest.mark.parametrize("path", example_params())
def test_every_example_guards_every_route_and_never_runs_dev_mode(path: Path, request: pytest.FixtureRequest) -> None:
    if needs_tiny(path):
        request.getfixturevalue("tiny_dir")
    dep = resolve(load_spec(path))
    guard = dep.profile.key_guard.middleware
    for node in render(dep):
        if node.group == "router":
            continue
        for name, value in dep.profile.pinned_env.items():
            assert node.env.get(name) == value, (path.name, node.role, name)
    for node in _engine_nodes(dep):
        has = guard in node.argv and node.argv[node.argv.index(guard) - 1] == "--middleware" if guard else False
        assert has == bool(dep.api_key_env and guard), (path.name, node.role)
        if has:
            _, _, env = materialize(node, {dep.api_key_env: KEY, "KIMI_HEAD_ADDR": "h", "KIMI_PREFILL_HEAD_ADDR": "p",
                                           "KIMI_DECODE_HEAD_ADDR": "d"})
            assert env[env[engine_auth.KEY_VAR]] == KEY  # the guard finds the key, and never on argv
            assert env[engine_auth.OPEN_PATHS_VAR].split(",") == list(dep.profile.key_guard.open_paths)


def test_the_guard_the_profiles_name_is_importable() -> None:
    for profile in PROFILES.values():
        if profile.key_guard.middleware:
            module, name = profile.key_guard.middleware.rsplit(".", 1)
            assert isinstance(getattr(importlib.import_module(module), name), type)


@pytest.mark.parametrize("path", [VLLM_SPEC, SGLANG_SPEC])
def test_the_pods_probe_only_open_paths(path: Path) -> None:
    """Kubernetes probes send no key: every probe of every pod is on a path the engine answers without one."""
    dep = resolve(load_spec(path))
    probed = {c[probe]["httpGet"]["path"] for m in manifests(dep, path.read_text()).values()
              for c in _containers(m) for probe in ("startupProbe", "livenessProbe", "readinessProbe") if probe in c}
    assert probed and probed <= set(dep.profile.key_guard.open_paths), probed


def _containers(obj: Any) -> Iterator[dict[str, Any]]:
    if isinstance(obj, dict):
        if "image" in obj and "name" in obj:
            yield obj
        for v in obj.values():
            yield from _containers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _containers(v)


def test_dev_mode_in_the_spec_is_refused(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, VLLM_SPEC, serving={"env": {"VLLM_SERVER_DEV_MODE": "1"}})
    assert_clean_error(run_cli("validate", str(spec)), "serving.env.VLLM_SERVER_DEV_MODE")
    same = spec_with(tmp_path, VLLM_SPEC, name="same.yaml", serving={"env": {"VLLM_SERVER_DEV_MODE": "0"}})
    assert run_cli("validate", str(same)).returncode == 0


def test_metrics_opt_in(tmp_path: Path) -> None:
    vllm_dep = resolve(load_spec(spec_with(tmp_path, VLLM_SPEC, serving={"metrics_without_key": True})))
    node = next(_engine_nodes(vllm_dep))
    assert node.env[engine_auth.OPEN_PATHS_VAR].split(",") == ["/health", "/metrics"]
    sg_key = resolve(load_spec(SGLANG_SPEC))
    assert sg_key.api_key_env and "--enable-metrics" not in next(_engine_nodes(sg_key)).argv
    sg_opt = resolve(load_spec(spec_with(tmp_path, SGLANG_SPEC, name="sg.yaml", serving={"metrics_without_key": True})))
    assert "--enable-metrics" in next(_engine_nodes(sg_opt)).argv
    sg_nokey = resolve(load_spec(spec_with(tmp_path, SGLANG_SPEC, name="sg2.yaml", serving={"api_key_env": None},
                                           k8s={"api_key_secret": None})))
    assert "--enable-metrics" in next(_engine_nodes(sg_nokey)).argv


def test_pod_monitor_sends_the_key_from_the_secret(tmp_path: Path) -> None:
    dep = resolve(load_spec(VLLM_SPEC))
    endpoint = manifests(dep, VLLM_SPEC.read_text())["podmonitor.yaml"]["spec"]["podMetricsEndpoints"][0]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": dep.k8s.api_key_secret,
                                                                           "key": dep.api_key_env}}
    opted = spec_with(tmp_path, VLLM_SPEC, serving={"metrics_without_key": True})
    endpoint = manifests(resolve(load_spec(opted)), opted.read_text())["podmonitor.yaml"]["spec"]["podMetricsEndpoints"][0]
    assert "authorization" not in endpoint
    # SGLang with a key and no opt-in serves no metrics: no PodMonitor scraping a 404
    assert "podmonitor.yaml" not in manifests(resolve(load_spec(SGLANG_SPEC)), SGLANG_SPEC.read_text())


# --- SGLang's own check over SGLang's own routes -----------------------------------------------------------

def _sglang_routes() -> list[tuple[str, tuple[str, ...], str]]:
    """(path, methods or ("WS",), auth level) of every route sglang's http_server.py declares, and the
    routers it includes, read from the installed source, never imported (an env-configurable path: its
    default)."""
    src = Path(importlib.util.find_spec("sglang.srt.entrypoints.http_server").origin)  # type: ignore[union-attr]
    tree = ast.parse(src.read_text())
    modules = {a.asname or a.name: n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
               for a in n.names if a.name == "router"}
    included = [c.args[0].id for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                and c.func.attr == "include_router" and isinstance(c.args[0], ast.Name)]
    trees = [("app", tree)]
    for name in included:
        spec = importlib.util.find_spec(modules[name])
        trees.append(("router", ast.parse(Path(spec.origin).read_text())))  # type: ignore[union-attr, arg-type]
    routes = []
    for owner, t in trees:
        for fn in ast.walk(t):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            level = "normal"
            found = []
            for d in fn.decorator_list:
                if not isinstance(d, ast.Call) or not isinstance(d.func, ast.Attribute):
                    continue
                if isinstance(d.func.value, ast.Name) and d.func.value.id == owner and d.args:
                    path = d.args[0]
                    if isinstance(path, ast.Call) and len(path.args) == 2:  # os.environ.get(NAME, default)
                        path = path.args[1]
                    if not isinstance(path, ast.Constant):
                        continue  # a route named by a variable (SGLANG_OLLAMA_ROOT_ROUTE), unset by default
                    kind = d.func.attr
                    if kind == "api_route":
                        kw = {k.arg: k.value for k in d.keywords}
                        methods = tuple(ast.literal_eval(kw["methods"])) if "methods" in kw else ("GET",)
                    elif kind == "websocket":
                        methods = ("WS",)
                    else:
                        methods = (kind.upper(),)
                    found.append((path.value, methods))
                elif isinstance(d.func, ast.Name) and d.func.id == "auth_level":
                    level = d.args[0].attr.lower()
            routes += [(p, m, level) for p, m in found]
    return routes


def test_sglang_leaves_open_what_its_profile_says() -> None:
    from fastapi import FastAPI
    from sglang.srt.utils.auth import AuthLevel, add_api_key_middleware, decide_request_auth
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient

    routes = _sglang_routes()
    assert len(routes) > 50 and ("/invocations", ("POST",), "normal") in routes
    app = FastAPI()
    for path, methods, level in routes:
        if methods == ("WS",):
            async def ws(websocket) -> None:
                await websocket.accept()
                await websocket.close()
            app.router.routes.append(WebSocketRoute(path, ws))
            continue

        async def endpoint() -> dict[str, bool]:
            return {"reached": True}
        endpoint._auth_level = AuthLevel(level)  # type: ignore[attr-defined]
        app.add_api_route(path, endpoint, methods=list(methods))
    add_api_key_middleware(app, api_key=KEY, admin_api_key=None)
    client = TestClient(app)
    open_paths = set()
    for path, methods, _ in routes:
        if methods == ("WS",):
            continue
        url = re.sub(r"\{[^}]+\}", "x", path)
        for method in methods:
            none = client.request(method, url)
            wrong = client.request(method, url, headers={"Authorization": "Bearer nope"})
            right = client.request(method, url, headers={"Authorization": f"Bearer {KEY}"})
            assert right.status_code == 200, (method, path, right.status_code)
            if none.status_code == 200:
                assert wrong.status_code == 200
                open_paths.add(path)
            else:
                assert none.status_code == wrong.status_code == 401, (method, path)
    guard = PROFILES["sglang"].key_guard
    assert open_paths == set(guard.open_paths)
    metrics_open = decide_request_auth(method="GET", path=guard.metrics_path, authorization_header=None,
                                       api_key=KEY, admin_api_key=None, auth_level=AuthLevel.NORMAL).allowed
    assert metrics_open == (not guard.metrics_behind_key)
    # The gap the profile states: WebSocket routes pass SGLang's check (only "http" scopes are checked).
    websockets = [p for p, m, _ in routes if m == ("WS",)]
    assert websockets == ["/v1/realtime"]
    with client.websocket_connect("/v1/realtime"):
        pass  # accepted without any key


# --- e2e: the real vLLM engine with a key -------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed_server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """tiny-k2 served with serving.api_key_env, started from an environment that has vLLM's dev mode on: the
    rendered command must turn it off."""
    env = {**os.environ, "KIMI_GUARD_KEY": KEY, "VLLM_SERVER_DEV_MODE": "1"}
    server = start_tiny_server(tmp_path_factory.mktemp("keyed"), "tiny-k2-keyed", env=env,
                              api_key_env="KIMI_GUARD_KEY")
    yield server
    server.stop()


def _vllm_app(server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """vLLM's FastAPI app built in process the way the running server built its own: vLLM's parser over the
    node's rendered argv, and the supported tasks the server logged ("Supported tasks: [...]",
    vllm/entrypoints/launchers/api_server/entry.py)."""
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    logged = re.search(r"Supported tasks: (\[[^\]]*\])", server.log.read_text())
    assert logged, "the server did not log its supported tasks"
    dep = resolve(load_spec(server.spec))
    node = next(_engine_nodes(dep))
    _, argv, env = materialize(node, {**os.environ, "KIMI_GUARD_KEY": KEY})
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv[2:])  # after `vllm serve`
    for name in node.env:  # the node's environment as the server ran with it (the guard's settings, dev mode)
        monkeypatch.setenv(name, env[name])
    return build_app(args, tuple(ast.literal_eval(logged.group(1))))


def _probes(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every route the app registers, path parameters filled with "x"; mounted apps
    (/metrics) as GET."""
    from starlette.routing import Mount, WebSocketRoute
    from fastapi.routing import APIWebSocketRoute

    out = []
    for route in app.routes:
        path = re.sub(r"\{[^}]+\}", "x", getattr(route, "path", ""))
        if isinstance(route, (WebSocketRoute, APIWebSocketRoute)):
            out.append(("WS", path))
        elif isinstance(route, Mount):
            out.append(("GET", path))
        else:
            out += [(m, path) for m in sorted(route.methods)]
    return out


def test_every_registered_route_needs_the_key_on_real_vllm(keyed_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = keyed_server.url
    right = {"Authorization": f"Bearer {KEY}"}
    live = httpx2.get(f"{url}/openapi.json", headers=right, timeout=30)
    assert live.status_code == 200
    app = _vllm_app(keyed_server, monkeypatch)
    # The app built here is the running one: the same schema, route for route.
    assert sorted(app.openapi()["paths"]) == sorted(live.json()["paths"])
    probes = _probes(app)
    assert ("POST", "/invocations") in probes and ("GET", "/metrics") in probes and ("GET", "/docs") in probes
    dep = resolve(load_spec(keyed_server.spec))
    open_paths = set(dep.profile.key_guard.open_paths)
    answered_without_key = set()
    with httpx2.Client(base_url=url, timeout=60) as http:
        for method, path in probes:
            if method == "WS":
                _websocket_needs_the_key(url, path)
                continue
            body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            none = http.request(method, path, **body)
            wrong = http.request(method, path, headers={"Authorization": "Bearer wrong-key-123456"}, **body)
            good = http.request(method, path, headers=right, **body)
            # with the key the route's own handler answers (a 4xx for the empty body, or the engine's own
            # refusal such as 403 for scale-out routes that are off): never 401
            assert good.status_code != 401, (method, path, good.status_code, good.text[:200])
            if path in open_paths:
                answered_without_key.add(path)
                assert none.status_code == wrong.status_code == good.status_code, (method, path)
            else:
                assert none.status_code == 401 and wrong.status_code == 401, (method, path, none.status_code,
                                                                              wrong.status_code)
    assert answered_without_key == open_paths
    assert http_get(url, "/health").status_code == 200
    assert http_get(url, "/metrics", right).status_code == 200 and "vllm:" in http_get(url, "/metrics", right).text


def http_get(url: str, path: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.get(f"{url}{path}", headers=headers or {}, timeout=30)


def _websocket_needs_the_key(url: str, path: str) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    ws_url = url.replace("http://", "ws://") + path
    for headers in ({}, {"Authorization": "Bearer wrong-key-123456"}):
        with pytest.raises(InvalidStatus):
            connect(ws_url, additional_headers=headers, open_timeout=30).close()


def test_dev_mode_routes_are_absent_on_real_vllm(keyed_server: Any) -> None:
    """The server was started from an environment with VLLM_SERVER_DEV_MODE=1; the rendered command pins it
    to 0, so none of the dev routers' paths (vLLM's own registration functions) is served."""
    from fastapi import FastAPI
    from vllm.entrypoints.rl.factories import register_rl_api_routers
    from vllm.entrypoints.serve import register_vllm_dev_api_routers

    dev = FastAPI()
    register_vllm_dev_api_routers(dev)
    register_rl_api_routers(dev)
    dev_paths = {r.path for r in dev.routes if getattr(r, "path", "").startswith("/")} - {
        r.path for r in FastAPI().routes}
    assert dev_paths
    live = httpx2.get(f"{keyed_server.url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert not dev_paths & set(live.json()["paths"]), dev_paths & set(live.json()["paths"])
    served = yaml.safe_load(Path(keyed_server.spec).read_text())
    assert "VLLM_SERVER_DEV_MODE" not in served["serving"].get("env", {})
