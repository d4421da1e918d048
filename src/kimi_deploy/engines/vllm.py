"""vLLM, declared once: a group of a Deployment -> argv and env for each of its nodes, the P/D additions,
the router, and the minimum version of every feature.

Launch patterns are vLLM's own docs (vllm-project/vllm docs/serving/data_parallel_deployment.md,
expert_parallel_deployment.md, parallelism_scaling.md):
- one node: `vllm serve M -tp N [--enable-expert-parallel]`;
- TP/PP across nodes, native: the same command on every node with --nnodes/--node-rank/--master-addr,
  workers add --headless; or on Ray: `ray start` everywhere, then one `vllm serve` on the head with
  --distributed-executor-backend ray;
- wide EP with DP: every node gets -dp/-dpl/-dpa/-dpp; internal LB: workers add --headless and -dpr;
  hybrid LB: every node serves HTTP with --data-parallel-hybrid-lb and its own -dpr;
- P/D: prefill and decode instances with a NixlConnector --kv-transfer-config, behind vllm-router.
Flags are always the full names, and only ones the installed parser accepts (tests/test_launch_parsers.py).
"""

from __future__ import annotations

import json
from typing import Mapping

from .. import engine_auth
from ..deployment import Deployment, Group
from ..errors import BadInput
from .. import serving_flags as table
from ..startup import startup_budget
from .base import Engine, RenderedNode, env_ref, parser_flags, router_node
from .versions import Feature

VLLM_SERVE = ["vllm", "serve"]
ROUTER = ["vllm-router"]

# vLLM's API server waits this long for the engine cores to report ready, 600 s by default, then gives up
# (vllm/envs.py VLLM_ENGINE_READY_TIMEOUT_S, read in vllm/v1/engine/core_client.py): shorter than a
# 600 GB load (vllm-project/vllm-ascend#7098). It is set from the same start-up budget as the probe.
ENGINE_READY_TIMEOUT_ENV = "VLLM_ENGINE_READY_TIMEOUT_S"


def _common(dep: Deployment, port: int, features: list[Feature]) -> list[str]:
    argv = [*VLLM_SERVE, dep.model_path, "--served-model-name", dep.served_model_name, "--trust-remote-code",
            "--host", dep.host, "--port", str(port)]
    # Auto tool choice goes with a tool parser and needs one (vllm validate_parsed_serve_args).
    argv += parser_flags(dep, features, tool_prefix=("--enable-auto-tool-choice",))
    features += table.features(dep.profile, dep.serving)
    return argv + table.flags(dep.profile, dep.serving) + _speculative(dep, features) + _key_guard(dep, features)


def _key_guard(dep: Deployment, features: list[Feature]) -> list[str]:
    """With an API key, --middleware loads kimi-deploy's guard: vLLM's own check covers only /v1, /v2,
    /inference and /cohere (the profile's key_guard)."""
    guard = dep.profile.key_guard.middleware
    if not dep.api_key_env or guard is None:
        return []
    features.append(Feature.KEY_GUARD)
    return ["--middleware", guard]


def _guard_env(dep: Deployment) -> dict[str, str]:
    """The guard's settings, from the environment (vLLM builds it with the app alone): the variable holding the
    key (VLLM_API_KEY, which vLLM's own check reads too) and the paths answered without it (liveness/readiness,
    /metrics when the operator opts in)."""
    guard = dep.profile.key_guard
    open_paths = [*guard.open_paths, *([guard.metrics_path] if dep.metrics_without_key else [])]
    return {engine_auth.KEY_VAR: "VLLM_API_KEY", engine_auth.OPEN_PATHS_VAR: engine_auth.open_paths_value(open_paths)}


# The vLLM recipe's DSpark sampling for K3: "draft_sample_method":"probabilistic",
# "rejection_sample_method":"block" (vllm-project/recipes models/moonshotai/Kimi-K3.yaml @8959cf6).
DSPARK_SAMPLING = {"draft_sample_method": "probabilistic", "rejection_sample_method": "block"}
_METHOD_FEATURES = {"eagle3": Feature.SPECULATIVE_EAGLE3, "dspark": Feature.SPECULATIVE_DSPARK,
                    "mtp": Feature.SPECULATIVE_MTP}


def _speculative(dep: Deployment, features: list[Feature]) -> list[str]:
    """--speculative-config JSON (vllm/config/speculative.py SpeculativeConfig: method, model,
    num_speculative_tokens, revision; DSpark's draft_sample_method / rejection_sample_method). MTP names no
    model: the draft is the target checkpoint's own MTP layers (a kimi_k3 config becomes KimiK3MTPModel)."""
    sd = dep.speculative
    if sd is None:
        return []
    features.append(_METHOD_FEATURES[sd.method])
    config: dict[str, object] = {"method": sd.method}
    if sd.path is not None:
        config["model"] = sd.path
    config["num_speculative_tokens"] = sd.num_speculative_tokens
    if sd.method == "dspark":
        config.update(DSPARK_SAMPLING)
    if sd.revision and sd.dir is None and sd.entry is not None:  # a Hub draft fetched by the engine itself
        config["revision"] = sd.revision
    return ["--speculative-config", json.dumps(config, separators=(",", ":"))]


def _parallel(g: Group, features: list[Feature]) -> list[str]:
    t = g.topology
    argv = ["--tensor-parallel-size", str(t.tp)]
    if t.pp > 1:
        argv += ["--pipeline-parallel-size", str(t.pp)]
    if t.expert_parallel:
        argv.append("--enable-expert-parallel")
        features.append(Feature.EXPERT_PARALLEL)
    if g.all2all:
        argv += ["--all2all-backend", g.all2all]
        features.append(Feature.ALL2ALL_BACKEND_FLAG)
    if g.eplb_redundant_experts is not None:
        argv += ["--enable-eplb", "--eplb-config", json.dumps({"num_redundant_experts": g.eplb_redundant_experts})]
        features.append(Feature.EPLB)
    if t.dcp > 1:
        argv += ["--decode-context-parallel-size", str(t.dcp)]
        features.append(Feature.DECODE_CONTEXT_PARALLEL)
    return argv


def _env(dep: Deployment, g: Group) -> dict[str, str]:
    env = dict(g.network_env)
    env.setdefault(ENGINE_READY_TIMEOUT_ENV, str(startup_budget(dep)))
    if dep.api_key_env:
        # vLLM falls back to VLLM_API_KEY when --api-key is absent (vllm/entrypoints/openai/cli_args.py,
        # `api_key` help): the key stays in the environment, never on a command line.
        env["VLLM_API_KEY"] = env_ref(dep.api_key_env)
        if dep.profile.key_guard.middleware:
            env.update(_guard_env(dep))
    return env


def group_nodes(dep: Deployment, g: Group, head: str, pd_flags: list[str]) -> list[RenderedNode]:
    """The nodes of one vLLM deployment (the whole spec, or one P/D side)."""
    t, nodes, gpn = g.topology, g.nodes, dep.gpus_per_node
    n = dep.network
    multi = g.multi_node
    prefix = "" if g.name == "serve" else f"{g.name}-"
    extra = pd_flags + list(g.extra_args)
    out: list[RenderedNode] = []
    timeout = ["--distributed-timeout-seconds", str(n.dist_timeout_s)] if multi else []

    def node(r: int, role: str, argv: list[str], features: list[Feature], **kw) -> RenderedNode:
        kw.setdefault("env", _env(dep, g))
        serves = kw.get("serves_http", True)
        return RenderedNode(g.first_rank + r, prefix + role, argv, group=g.name, features=features,
                            port=g.port if serves else None, **kw)

    for r in range(nodes):
        features: list[Feature] = [Feature.DISTRIBUTED_TIMEOUT_FLAG] if multi else []
        base = _common(dep, g.port, features) + _parallel(g, features) + timeout
        if t.dp > 1:
            per_node = gpn // (t.tp * t.pp)
            if per_node < 1 or gpn % (t.tp * t.pp) or per_node * nodes != t.dp:
                raise BadInput(
                    f"vLLM data parallel needs dp ({t.dp}) = nodes ({nodes}) x GPUs per node ({gpn}) / (tp x pp) "
                    f"({t.tp}x{t.pp}): each node runs whole DP ranks", "topology.dp")
            argv = base + ["--data-parallel-size", str(t.dp), "--data-parallel-size-local", str(per_node)]
            if not multi:
                out.append(node(r, "single", argv + extra, features))
                continue
            features.append(Feature.MULTINODE_DATA_PARALLEL)
            argv += ["--data-parallel-address", head, "--data-parallel-rpc-port", str(n.dp_rpc_port)]
            if dep.lb == "hybrid":
                features.append(Feature.DATA_PARALLEL_HYBRID_LB)
                argv += ["--data-parallel-hybrid-lb", "--data-parallel-start-rank", str(r * per_node)]
                out.append(node(r, "head" if r == 0 else "server", argv + extra, features))
                continue
            if r > 0:
                # Without --headless, -dpr would silently switch this node to hybrid LB (vllm #21238).
                argv += ["--headless", "--data-parallel-start-rank", str(r * per_node)]
            out.append(node(r, "head" if r == 0 else "worker", argv + extra, features, serves_http=r == 0))
        elif multi and dep.multinode_backend == "ray":
            if r == 0:
                setup = [["ray", "start", "--head", f"--node-ip-address={head}", f"--port={n.ray_port}"]]
                argv = base + ["--distributed-executor-backend", "ray"] + extra
                out.append(node(r, "ray-head", argv, features, setup=setup,
                                env={**_env(dep, g), "VLLM_HOST_IP": head}))
            else:
                argv = ["ray", "start", "--block", f"--address={head}:{n.ray_port}"]
                out.append(node(r, "ray-worker", argv, [], serves_http=False))
        elif multi:
            features.append(Feature.NATIVE_MULTINODE)
            argv = base + ["--nnodes", str(nodes), "--node-rank", str(r), "--master-addr", head,
                           "--master-port", str(n.master_port)]
            if r > 0:
                argv.append("--headless")
            out.append(node(r, "head" if r == 0 else "worker", argv + extra, features, serves_http=r == 0))
        else:
            out.append(node(r, "single", base + extra, features))
    return out


def _pd_flags(dep: Deployment, g: Group) -> list[str]:
    # Both sides move KV through NIXL (vllm docs/features/nixl_connector_usage.md).
    return ["--kv-transfer-config", json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"})]


def _router(dep: Deployment, urls: Mapping[str, str]) -> RenderedNode:
    # vllm-router checks clients' keys only as kimi_deploy.routers sets it up (the profile's router_auth).
    assert dep.router is not None
    return router_node(dep, "vllm", ROUTER, [
        "--vllm-pd-disaggregation", "--host", dep.host, "--port", str(dep.router.port),
        "--kv-connector", "nixl", "--prefill", urls["prefill"], "--decode", urls["decode"]])


ENGINE = Engine(name="vllm", group_nodes=group_nodes,
                pd_flags=_pd_flags, pd_feature=Feature.NIXL_PD, router=_router)
