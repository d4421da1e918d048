"""routers.py: the P/D router started with its key from the environment lets no client through without that
key. The real vllm-router and sglang-router processes, as `serve` starts them (the rendered router node), in
front of two stand-in engines (tiny HTTP servers: no engine runs on these machines) that answer 200 only to
`Authorization: Bearer <key>`, as the guarded engines do (kimi_deploy.engine_auth)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx2
import pytest
import yaml

from kimi_deploy.deployment import resolve
from kimi_deploy.engines.render import render
from kimi_deploy.k8s import manifests
from kimi_deploy.launch import materialize
from kimi_deploy.spec import load_spec, parse_spec

from .conftest import DEPLOY, free_port
from .faultserver import StandInEngines

KEY = "sk-router-guard-test-0a9e7d"
VLLM_PD = DEPLOY / "kimi-k2-thinking-h200x16-vllm-pd.yaml"
SGLANG_PD = DEPLOY / "kimi-k2-instruct-h200x32-sglang-pd.yaml"
CHAT = {"model": "kimi", "messages": [{"role": "user", "content": "hi"}]}
# The tests that start a real router run in one pytest-xdist worker, one router at a time, each with its own
# Prometheus exporter port (both routers bind --prometheus-port, 29000 by default; router_args.py of
# sglang-router and vllm-router).
pytestmark = pytest.mark.xdist_group("routers")


@pytest.fixture(params=[VLLM_PD, SGLANG_PD], ids=["vllm-router", "sglang-router"])
def router(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[StandInEngines, str]]:
    engines = StandInEngines(KEY)  # the P/D sides listen on serving.port + 1 / + 2
    data = yaml.safe_load(request.param.read_text())
    port = free_port()
    data["serving"]["port"], data["topology"]["pd"]["router_port"] = engines.base, port
    dep = resolve(parse_spec(data))
    node = next(n for n in render(dep, {"prefill": "127.0.0.1", "decode": "127.0.0.1"}) if n.group == "router")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    _, argv, child_env = materialize(node, {**env, "KIMI_API_KEY": KEY})
    with (tmp_path / "router.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, *argv[1:], "--prometheus-port", str(free_port())], env=child_env,
                                stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                httpx2.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx2.HTTPError:
                time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "router.log").read_text()[-3000:]
        assert KEY not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        yield engines, f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        engines.close()


# GETs a router sends its workers by itself, whoever asks it: health checks and worker discovery
ROUTER_OWN_READS = {("GET", p) for p in ("/health", "/server_info", "/model_info", "/get_server_info",
                                         "/get_model_info")}


def test_no_client_gets_through_without_the_key(router: tuple[StandInEngines, str]) -> None:
    engines, url = router
    for headers in ({}, {"Authorization": "Bearer wrong-key-4711"}, {"Authorization": KEY}):
        engines.seen.clear()
        r = httpx2.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers, timeout=30)
        assert r.status_code == 401, (headers, r.status_code, r.text[:200])
        # nothing reached an engine with the key on the client's behalf; the router's own reads of its
        # workers (sglang-router fetches /server_info and /model_info when a worker registers, at its own
        # pace) are not the client's request
        assert not [s for s in engines.seen if s[2] == f"Bearer {KEY}" and (s[0], s[1]) not in ROUTER_OWN_READS
                    ], engines.seen
    engines.seen.clear()
    r = httpx2.post(f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {KEY}"},
                    timeout=30)
    assert r.status_code == 200, r.text[:300]
    calls = [s for s in engines.seen if s[1] != "/health" and not s[1].endswith("/v1/models")]
    assert calls and all(auth == f"Bearer {KEY}" for _, _, auth in calls), calls


def test_router_control_routes_need_the_key(router: tuple[StandInEngines, str]) -> None:
    """Flushing the engines' caches and reading their loads (the router would do it with its own key). Both
    routers answer some of their own metadata without a key: sglang-router 0.3.2 its /v1/models and
    /get_server_info (a summary of its own, no engine's), /health and /readiness."""
    for method, path in (("POST", "/flush_cache"), ("GET", "/get_loads")):
        r = httpx2.request(method, f"{router[1]}{path}", timeout=30)
        assert r.status_code == 401, (method, path, r.status_code)


def test_router_pod_probes_check_the_port_when_health_needs_the_key() -> None:
    """vllm-router with client keys answers nothing, /health included, without the key: its pod's probes
    connect to the port instead (a probe would need the key in the manifest)."""
    for path in (VLLM_PD, SGLANG_PD):
        dep = resolve(load_spec(path))
        pod = manifests(dep, path.read_text())["deployment-router.yaml"]["spec"]["template"]["spec"]
        probe = pod["containers"][0]["livenessProbe"]
        auth = dep.profile.router_auth
        assert ("tcpSocket" in probe) == bool(auth and auth.health_needs_key), (path.name, probe)
