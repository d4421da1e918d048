"""SGLang: spec + plan + node role -> argv and env for every node.

SGLang runs the same command on every node, differing only in --node-rank (engines.md §2.2); node 0
serves the API, the others a dummy /health. --tp-size is the GPU count of one replica across all nodes;
with --enable-dp-attention, --dp-size splits attention inside it. Only full flag names are emitted:
`--tp`/`--dp` are mere argparse abbreviations and `--pp` is ambiguous (engines.md §4). SGLang binds
127.0.0.1 by default, so --host is always passed. P/D: prefill and decode groups with
--disaggregation-mode, fronted by `sglang_router.launch_router --pd-disaggregation`.
"""

from __future__ import annotations

from ..plan import PlanInput, Topology
from ..spec import Spec, plan_input
from .base import Addresses, RenderedNode, env_ref, model_path, network_env, served_name, thinking

LAUNCH = ["python3", "-m", "sglang.launch_server"]

# SGLang's --kv-cache-dtype names (engines.md §2.1).
KV_DTYPE = {"fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2", "bfloat16": "bf16", "bf16": "bf16"}


def _common(spec: Spec, inp: PlanInput, port: int, features: list[str]) -> list[str]:
    s = spec.serving
    argv = [*LAUNCH, "--model-path", model_path(spec), "--served-model-name", served_name(spec),
            "--trust-remote-code", "--host", s.host, "--port", str(port),
            "--context-length", str(inp.max_model_len), "--enable-metrics"]
    if s.tool_call_parser:
        argv += ["--tool-call-parser", s.tool_call_parser]
        features.append("tool parser kimi_k2")
    if thinking(spec):
        argv += ["--reasoning-parser", "kimi_k2"]
        features.append("reasoning parser kimi_k2")
    if s.mem_fraction_static is not None:
        argv += ["--mem-fraction-static", str(s.mem_fraction_static)]
    if s.max_num_seqs:
        argv += ["--max-running-requests", str(s.max_num_seqs)]
    if s.max_num_batched_tokens:
        argv += ["--chunked-prefill-size", str(s.max_num_batched_tokens)]
    if s.kv_cache_dtype in KV_DTYPE:
        argv += ["--kv-cache-dtype", KV_DTYPE[s.kv_cache_dtype]]
    if s.api_key_env:
        # SGLang has only the flag; the command holds a reference that `serve` expands from the env.
        argv += ["--api-key", env_ref(s.api_key_env)]
    return argv


def _parallel(t: Topology, a2a: str | None, eplb: int | None, features: list[str]) -> list[str]:
    argv = ["--tp-size", str(t.tp)]
    if t.pp > 1:
        argv += ["--pp-size", str(t.pp)]
    if t.dp > 1:
        argv += ["--dp-size", str(t.dp)]
        if t.dp_attention:
            argv.append("--enable-dp-attention")
            features.append("dp attention")
    if t.expert_parallel:
        argv += ["--ep-size", str(t.tp)]
    if a2a and a2a.startswith("deepep"):
        argv += ["--moe-a2a-backend", "deepep",
                 "--deepep-mode", "low_latency" if a2a == "deepep_low_latency" else "normal"]
        features.append("moe a2a backend flag")
    if eplb is not None:
        argv += ["--enable-eplb", "--ep-num-redundant-experts", str(eplb)]
        features.append("eplb")
    return argv


def _group_nodes(spec: Spec, inp: PlanInput, head: str, first_rank: int, port: int, group: str,
                 extra: list[str], a2a: str | None, eplb: int | None) -> list[RenderedNode]:
    nodes = inp.nodes
    multi = nodes > 1
    prefix = "" if group == "serve" else f"{group}-"
    out = []
    for r in range(nodes):
        features: list[str] = []
        argv = _common(spec, inp, port, features) + _parallel(inp.topology, a2a, eplb, features)
        if multi:
            argv += ["--dist-init-addr", f"{head}:{spec.network.dist_init_port}", "--nnodes", str(nodes),
                     "--node-rank", str(r), "--dist-timeout", str(spec.network.dist_timeout_s)]
        env = network_env(spec, multi, deepep=bool(a2a and a2a.startswith("deepep")))
        role = "single" if not multi else ("head" if r == 0 else "worker")
        out.append(RenderedNode(first_rank + r, prefix + role, argv + extra, env, group=group,
                                health_only=multi and r > 0, features=features))
    return out


def render(spec: Spec, addrs: Addresses) -> list[RenderedNode]:
    t = spec.topology
    extra = list(spec.serving.extra_args)
    if t.pd is None:
        return _group_nodes(spec, plan_input(spec), addrs.head, 0, spec.serving.port, "serve", extra,
                            t.all2all, t.eplb_redundant_experts)
    pd = t.pd
    nodes: list[RenderedNode] = []
    first = 0
    urls: dict[str, str] = {}
    for group, head in (("prefill", addrs.prefill_head), ("decode", addrs.decode_head)):
        g = getattr(pd, group)
        port = spec.serving.port + (1 if group == "prefill" else 2)
        flags = ["--disaggregation-mode", group, "--disaggregation-transfer-backend", pd.transfer_backend]
        if pd.ib_device:
            flags += ["--disaggregation-ib-device", pd.ib_device]
        rendered = _group_nodes(spec, plan_input(spec, group), head, first, port, group,
                                flags + extra + g.extra_args, g.all2all, g.eplb_redundant_experts)
        for node in rendered:
            node.features.append("PD disaggregation")
        nodes += rendered
        urls[group] = f"http://{head}:{port}"
        first += g.nodes
    router = ["python3", "-m", "sglang_router.launch_router", "--pd-disaggregation",
              "--prefill", urls["prefill"], "--decode", urls["decode"],
              "--host", spec.serving.host, "--port", str(pd.router_port)]
    if spec.serving.api_key_env:
        router += ["--api-key", env_ref(spec.serving.api_key_env)]
    nodes.append(RenderedNode(first, "router", router, {}, group="router"))
    return nodes
