"""SGLang, declared once: a group of a Deployment -> argv and env for each of its nodes, the P/D
additions, the router, and the minimum version of every feature.

SGLang runs the same command on every node, differing only in --node-rank; node 0 serves the API, the
others a dummy /health (sgl-project/sglang python/sglang/srt/entrypoints/engine.py). --tp-size is the GPU
count of one replica across all nodes; with --enable-dp-attention, --dp-size splits attention inside it.
Only full flag names are emitted: `--tp`/`--dp` are mere argparse abbreviations and `--pp` is ambiguous
(python/sglang/srt/server_args.py). SGLang binds 127.0.0.1 by default, so --host is always passed.
P/D: prefill and decode groups with --disaggregation-mode, fronted by
`sglang_router.launch_router --pd-disaggregation` (docs/advanced_features/pd_disaggregation.md).
"""

from __future__ import annotations

from typing import Mapping

from ..deployment import Deployment, Group
from .. import serving_flags as table
from ..errors import BadInput
from ..redact_log import sglang_logging_config
from .base import Engine, RenderedNode, StartupFile, env_ref, parser_flags, router_node
from .versions import Feature

LAUNCH = ["python3", "-m", "sglang.launch_server"]
ROUTER = ["python3", "-m", "sglang_router.launch_router"]
# Where `serve` puts the files that carry the API key (see _secrets).
CONFIG_VAR = "KIMI_SGLANG_CONFIG"
LOGGING_VAR = "KIMI_SGLANG_LOGGING"



def _common(dep: Deployment, port: int, features: list[Feature]) -> list[str]:
    argv = [*LAUNCH, "--model-path", dep.model_path, "--served-model-name", dep.served_model_name,
            "--trust-remote-code", "--host", dep.host, "--port", str(port)]
    # SGLang serves /metrics to anyone, key or not (the profile's key_guard): with a key, only by opt-in.
    if dep.metrics_served:
        argv.append("--enable-metrics")
    argv += parser_flags(dep, features)
    argv += table.flags(dep.profile, dep.serving)
    features += table.features(dep.profile, dep.serving)
    argv += _speculative(dep, features)
    if dep.api_key_env:
        argv += ["--config", env_ref(CONFIG_VAR)]
        features.append(Feature.CONFIG_FILE)
    return argv


def _speculative(dep: Deployment, features: list[Feature]) -> list[str]:
    """EAGLE3 with a draft (python/sglang/srt/server_args.py: --speculative-algorithm, -draft-model-path,
    -draft-model-revision, -num-steps, -eagle-topk, -num-draft-tokens), or DSPARK: one step, topk 1, a
    block of gamma tokens (--speculative-dspark-block-size) verified as gamma + 1
    (srt/arg_groups/speculative_hook.py _handle_dspark: num_draft_tokens must equal gamma + 1). MTP never
    reaches here for SGLang (engines/profiles/sglang.py hybrid_mtp_refused)."""
    sd = dep.speculative
    if sd is None:
        return []
    assert sd.path is not None
    dspark = sd.method == "dspark"
    features.append(Feature.SPECULATIVE_DSPARK if dspark else Feature.SPECULATIVE_EAGLE3)
    argv = ["--speculative-algorithm", "DSPARK" if dspark else "EAGLE3", "--speculative-draft-model-path", sd.path]
    if sd.revision and sd.dir is None and sd.entry is not None:  # a Hub draft fetched by the engine itself
        argv += ["--speculative-draft-model-revision", sd.revision]
    if dspark:
        return argv + ["--speculative-dspark-block-size", str(sd.num_speculative_tokens),
                       "--speculative-num-draft-tokens", str(sd.num_draft_tokens)]
    return argv + ["--speculative-num-steps", str(sd.num_speculative_tokens),
                   "--speculative-eagle-topk", str(sd.eagle_topk),
                   "--speculative-num-draft-tokens", str(sd.num_draft_tokens)]


def _secrets(dep: Deployment) -> tuple[list[StartupFile], dict[str, str]]:
    """SGLang reads its API key only from --api-key, which would put it in /proc/*/cmdline: it goes into
    the --config YAML instead (keys are flag names with dashes; python/sglang/srt/utils/
    server_args_config_parser.py; the file must end in .yaml). SGLang also logs all its arguments at
    start-up, key included (sgl-project/sglang#37457), so its logging config masks the key."""
    if not dep.api_key_env:
        return [], {}
    # SGLang turns the file into argv internally (`--api-key VALUE`), so a key starting with "-" would be
    # read as an option and the server would not start: refused up front.
    files = [StartupFile(CONFIG_VAR, {"api-key": env_ref(dep.api_key_env)}, ".yaml", no_leading_dash=True),
             StartupFile(LOGGING_VAR, sglang_logging_config([dep.api_key_env]), ".json")]
    return files, {"SGLANG_LOGGING_CONFIG_PATH": env_ref(LOGGING_VAR)}


def _parallel(g: Group, features: list[Feature]) -> list[str]:
    t = g.topology
    argv = ["--tp-size", str(t.tp)]
    if t.pp > 1:
        argv += ["--pp-size", str(t.pp)]
    if t.dp > 1:
        argv += ["--dp-size", str(t.dp)]
        if t.dp_attention:
            argv.append("--enable-dp-attention")
            features.append(Feature.DP_ATTENTION)
    if t.expert_parallel:
        argv += ["--ep-size", str(t.tp)]
    if g.deepep:
        argv += ["--moe-a2a-backend", "deepep",
                 "--deepep-mode", "low_latency" if g.all2all == "deepep_low_latency" else "normal"]
        features.append(Feature.ALL2ALL_BACKEND_FLAG)
    if g.eplb_redundant_experts is not None:
        argv += ["--enable-eplb", "--ep-num-redundant-experts", str(g.eplb_redundant_experts)]
        features.append(Feature.EPLB)
    return argv


def _dspark_with_dp_attention(dep: Deployment, g: Group) -> list[str]:
    """SGLang's DSpark under DP attention needs the DP LM head and a MoE all-to-all of none, megamoe or mori
    ("DSpark with dp attention requires --enable-dp-lm-head", srt/arg_groups/speculative_hook.py
    _handle_dspark, 0.5.23)."""
    sd = dep.speculative
    if sd is None or sd.method != "dspark" or not g.topology.dp_attention:
        return []
    if g.deepep:
        raise BadInput("SGLang runs DSpark under DP attention only with the built-in MoE all-to-all (none), megamoe "
                       "or mori, not DeepEP (sglang srt/arg_groups/speculative_hook.py _handle_dspark)",
                       "topology.all2all")
    return ["--enable-dp-lm-head"]


def group_nodes(dep: Deployment, g: Group, head: str, pd_flags: list[str]) -> list[RenderedNode]:
    multi = g.multi_node
    net = dep.network
    prefix = "" if g.name == "serve" else f"{g.name}-"
    out = []
    for r in range(g.nodes):
        features: list[Feature] = []
        argv = _common(dep, g.port, features) + _parallel(g, features) + _dspark_with_dp_attention(dep, g)
        if multi:
            argv += ["--dist-init-addr", f"{head}:{net.dist_init_port}", "--nnodes", str(g.nodes),
                     "--node-rank", str(r), "--dist-timeout", str(net.dist_timeout_s)]
        role = "single" if not multi else ("head" if r == 0 else "worker")
        files, env = _secrets(dep)
        out.append(RenderedNode(g.first_rank + r, prefix + role, argv + pd_flags + list(g.extra_args),
                                {**g.network_env, **env}, group=g.name, health_only=multi and r > 0,
                                port=g.port, features=features, startup_files=files))
    return out


def _pd_flags(dep: Deployment, g: Group) -> list[str]:
    pd = dep.pd_transport
    assert pd is not None
    flags = ["--disaggregation-mode", g.name, "--disaggregation-transfer-backend", pd.backend]
    if pd.ib_device:
        flags += ["--disaggregation-ib-device", pd.ib_device]
    return flags


def _router(dep: Deployment, urls: Mapping[str, str]) -> RenderedNode:
    # sglang-router checks clients' keys itself and sends its key to the engines.
    assert dep.router is not None
    return router_node(dep, "sglang", ROUTER, [
        "--pd-disaggregation", "--prefill", urls["prefill"], "--decode", urls["decode"],
        "--host", dep.host, "--port", str(dep.router.port)])


ENGINE = Engine(name="sglang", group_nodes=group_nodes,
                pd_flags=_pd_flags, pd_feature=Feature.PD_DISAGGREGATION, router=_router)
