"""vLLM: spec + plan + node role -> argv and env for every node.

Launch patterns follow vLLM's own docs as summarised in shared/reference/engines.md §1.2:
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

from ..errors import BadInput
from ..plan import PlanInput, Topology
from ..spec import PDGroup, Spec, plan_input
from .base import Addresses, RenderedNode, env_ref, model_path, network_env, served_name, thinking

VLLM_SERVE = ["vllm", "serve"]


def _common(spec: Spec, inp: PlanInput, port: int, features: list[str]) -> list[str]:
    s = spec.serving
    argv = [*VLLM_SERVE, model_path(spec), "--served-model-name", served_name(spec), "--trust-remote-code",
            "--host", s.host, "--port", str(port), "--max-model-len", str(inp.max_model_len)]
    if s.tool_call_parser:
        # --enable-auto-tool-choice requires a parser (validate_parsed_serve_args).
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", s.tool_call_parser]
        features.append("tool parser kimi_k2")
    if thinking(spec):
        argv += ["--reasoning-parser", "kimi_k2"]
        features.append("reasoning parser kimi_k2")
    if s.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
    if s.max_num_seqs:
        argv += ["--max-num-seqs", str(s.max_num_seqs)]
    if s.max_num_batched_tokens:
        argv += ["--max-num-batched-tokens", str(s.max_num_batched_tokens)]
    if s.kv_cache_dtype != "auto":
        argv += ["--kv-cache-dtype", s.kv_cache_dtype]
    return argv


def _parallel(t: Topology, a2a: str | None, eplb: int | None, features: list[str]) -> list[str]:
    argv = ["--tensor-parallel-size", str(t.tp)]
    if t.pp > 1:
        argv += ["--pipeline-parallel-size", str(t.pp)]
    if t.expert_parallel:
        argv.append("--enable-expert-parallel")
        features.append("expert parallel")
    if a2a:
        argv += ["--all2all-backend", a2a]
        features.append("all2all backend flag")
    if eplb is not None:
        argv += ["--enable-eplb", "--eplb-config", json.dumps({"num_redundant_experts": eplb})]
        features.append("eplb config")
    if t.dcp > 1:
        argv += ["--decode-context-parallel-size", str(t.dcp)]
        features.append("decode context parallel")
    return argv


def _env(spec: Spec, multi_node: bool, a2a: str | None) -> dict[str, str]:
    env = network_env(spec, multi_node, deepep=bool(a2a and a2a.startswith("deepep")))
    if spec.serving.api_key_env:
        # vLLM falls back to VLLM_API_KEY when --api-key is absent (engines.md §1.3): the key stays in the
        # environment and never reaches a printed command line.
        env["VLLM_API_KEY"] = env_ref(spec.serving.api_key_env)
    return env


def _group_nodes(spec: Spec, inp: PlanInput, head: str, first_rank: int, port: int, group: str,
                 extra: list[str], a2a: str | None, eplb: int | None) -> list[RenderedNode]:
    """The nodes of one vLLM deployment (the whole spec, or one P/D side)."""
    t, nodes, gpn = inp.topology, inp.nodes, inp.gpus_per_node
    n = spec.network
    multi = nodes > 1
    prefix = "" if group == "serve" else f"{group}-"
    out: list[RenderedNode] = []
    timeout = ["--distributed-timeout-seconds", str(n.dist_timeout_s)] if multi else []
    for r in range(nodes):
        features: list[str] = ["distributed timeout flag"] if multi else []
        base = _common(spec, inp, port, features) + _parallel(t, a2a, eplb, features) + timeout
        env = _env(spec, multi, a2a)
        rank = first_rank + r
        if t.dp > 1:
            per_node = gpn // (t.tp * t.pp)
            if per_node < 1 or gpn % (t.tp * t.pp) or per_node * nodes != t.dp:
                raise BadInput(
                    f"vLLM data parallel needs dp ({t.dp}) = nodes ({nodes}) x GPUs per node ({gpn}) / (tp x pp) "
                    f"({t.tp}x{t.pp}): each node runs whole DP ranks", "topology.dp")
            argv = base + ["--data-parallel-size", str(t.dp), "--data-parallel-size-local", str(per_node)]
            if multi:
                features.append("multi-node data parallel")
                argv += ["--data-parallel-address", head, "--data-parallel-rpc-port", str(n.dp_rpc_port)]
                if spec.topology.lb == "hybrid":
                    features.append("data parallel hybrid LB")
                    argv += ["--data-parallel-hybrid-lb", "--data-parallel-start-rank", str(r * per_node)]
                    role = "head" if r == 0 else "server"
                    out.append(RenderedNode(rank, prefix + role, argv + extra, env, group=group, features=features))
                    continue
                if r > 0:
                    # Without --headless, -dpr would silently switch this node to hybrid LB (engines.md §4).
                    argv += ["--headless", "--data-parallel-start-rank", str(r * per_node)]
            role = ("head" if r == 0 else "worker") if multi else "single"
            out.append(RenderedNode(rank, prefix + role, argv + extra, env, serves_http=r == 0, group=group,
                                    features=features))
        elif multi and spec.topology.multinode_backend == "ray":
            if r == 0:
                setup = [["ray", "start", "--head", f"--node-ip-address={head}", f"--port={n.ray_port}"]]
                argv = base + ["--distributed-executor-backend", "ray"] + extra
                env = {**env, "VLLM_HOST_IP": head}
                out.append(RenderedNode(rank, prefix + "ray-head", argv, env, setup=setup, group=group,
                                        features=features))
            else:
                argv = ["ray", "start", "--block", f"--address={head}:{n.ray_port}"]
                out.append(RenderedNode(rank, prefix + "ray-worker", argv, env, serves_http=False, group=group))
        elif multi:
            features.append("native multi-node (--nnodes)")
            argv = base + ["--nnodes", str(nodes), "--node-rank", str(r), "--master-addr", head,
                           "--master-port", str(n.master_port)]
            if r > 0:
                argv.append("--headless")
            out.append(RenderedNode(rank, prefix + ("head" if r == 0 else "worker"), argv + extra, env,
                                    serves_http=r == 0, group=group, features=features))
        else:
            out.append(RenderedNode(rank, prefix + "single", base + extra, env, group=group, features=features))
    return out


def render(spec: Spec, addrs: Addresses) -> list[RenderedNode]:
    extra = list(spec.serving.extra_args)
    t = spec.topology
    if t.pd is None:
        inp = plan_input(spec)
        return _group_nodes(spec, inp, addrs.head, 0, spec.serving.port, "serve", extra, t.all2all,
                            t.eplb_redundant_experts)
    # P/D disaggregation: both sides transfer KV through NIXL; vllm-router fronts them.
    kv = json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"})
    nodes: list[RenderedNode] = []
    first = 0
    urls: dict[str, list[str]] = {"prefill": [], "decode": []}
    for group, head in (("prefill", addrs.prefill_head), ("decode", addrs.decode_head)):
        g: PDGroup = getattr(t.pd, group)
        inp = plan_input(spec, group)
        port = spec.serving.port + (1 if group == "prefill" else 2)
        rendered = _group_nodes(spec, inp, head, first, port, group,
                                extra + ["--kv-transfer-config", kv] + g.extra_args, g.all2all,
                                g.eplb_redundant_experts)
        for node in rendered:
            node.features.append("NixlConnector P/D")
        nodes += rendered
        urls[group] = [f"http://{head}:{port}"]
        first += g.nodes
    router = ["vllm-router", "--vllm-pd-disaggregation", "--host", spec.serving.host,
              "--port", str(t.pd.router_port), "--kv-connector", "nixl",
              "--prefill", *urls["prefill"], "--decode", *urls["decode"]]
    env: dict[str, str] = {}
    if spec.serving.api_key_env:
        router += ["--api-key", env_ref(spec.serving.api_key_env)]
    nodes.append(RenderedNode(first, "router", router, env, group="router"))
    return nodes
