"""A spec resolved once: `resolve(spec) -> Deployment`.

The Deployment is immutable and holds everything the consumers (engine renderers, Kubernetes
manifests, launch/preflight, the CLI) need, so none of them reads the raw spec: the catalog entry and architecture, the served model name
and model path, the parsers, the serving values (spec, else catalog defaults), and for each engine
group (the whole deployment, or each side of prefill/decode) its nodes, first rank, port, head-address
variable, topology, network environment, planner input and plan. Nothing downstream recomputes any of
it. (The shape follows skypilot's sky/task.py: one validated object that every backend reads.)

spec.py parses and validates the YAML; this module decides."""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Mapping

from .architecture import Architecture
from .catalog import GPU, ModelEntry, get_gpu, get_model
from .drafts import Draft, DraftArch, get_draft
from .serving_flags import plan_fields, resolve_values
from .errors import BadInput
from .engines.profiles import PROFILES, EngineProfile, get_profile
from .plan import Plan, PlanInput, Topology, dp_ep_topology, plan
from .spec import (EAGLE3_DEFAULT_TOKENS, MTP_REFUSED, K8s, ModelRef, Network, ParallelFields, Spec, Weights,
                   looks_like_path)

GroupName = Literal["serve", "prefill", "decode"]

# The env var that carries each group's head address at start-up (filled by `serve` from flags, LWS or
# Slurm; printed as a ${...} reference by `render`).
HEAD_VARS: Mapping[str, str] = MappingProxyType(
    {"serve": "KIMI_HEAD_ADDR", "prefill": "KIMI_PREFILL_HEAD_ADDR", "decode": "KIMI_DECODE_HEAD_ADDR"})
# P/D sides listen next to the public port, which the router takes.
PD_PORT_OFFSET: Mapping[str, int] = MappingProxyType({"prefill": 1, "decode": 2})


@dataclass(frozen=True, kw_only=True)
class Group:
    """One engine deployment: all nodes of a non-disaggregated spec, or one P/D side."""

    name: GroupName
    nodes: int
    first_rank: int
    port: int
    head_var: str
    topology: Topology
    all2all: str | None
    eplb_redundant_experts: int | None
    extra_args: tuple[str, ...]
    network_env: Mapping[str, str]
    plan_input: PlanInput
    plan: Plan

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def deepep(self) -> bool:
        return bool(self.all2all and self.all2all.startswith("deepep"))

    @property
    def ranks(self) -> range:
        return range(self.first_rank, self.first_rank + self.nodes)


@dataclass(frozen=True, kw_only=True)
class Router:
    """The prefill/decode router: one process, no GPUs, the last rank."""

    rank: int
    port: int


@dataclass(frozen=True, kw_only=True)
class SpecDecode:
    """Speculative decoding, resolved: the draft the engines load, its shape and staging directory; or, for
    MTP, the checkpoint's own MTP layers (no separate draft)."""

    method: str  # eagle3 | dspark | mtp
    source: str | None  # the Hub repo id or local directory the spec names (None for mtp)
    revision: str | None
    path: str | None  # what the engine loads: the staged directory, the local directory, else the repo id
    dir: str | None  # where `download` stages a Hub draft (weights.dir/draft), None when not staged
    arch: DraftArch | None  # the separate draft's shape (None for mtp)
    entry: Draft | None  # the cited table's row for a published draft
    num_speculative_tokens: int
    eagle_topk: int  # SGLang
    num_draft_tokens: int  # SGLang
    mtp_layers: int = 0  # mtp: the checkpoint's MTP layers the engine loads as the draft


# Where a Hub draft is staged next to the target's weights (a subdirectory: one volume, one PVC).
DRAFT_SUBDIR = "draft"


@dataclass(frozen=True, kw_only=True)
class PDTransport:
    """How a P/D deployment moves the KV cache from prefill to decode."""

    backend: str  # mooncake | nixl (one of the engine profile's pd_transports)
    ib_device: str | None


@dataclass(frozen=True, kw_only=True)
class Deployment:
    name: str
    engine: str
    profile: EngineProfile
    engine_version: str | None
    gpu: GPU
    gpus_per_node: int
    nodes: int  # engine nodes of the whole deployment (the router's pod is not one)
    host: str  # every node's bind address
    lb: str  # vLLM multi-node DP: internal | hybrid load balancing
    multinode_backend: str  # native | ray
    pd_transport: PDTransport | None
    model: str  # catalog id, or the local checkpoint path
    entry: ModelEntry | None
    arch: Architecture
    model_path: str  # what the engine loads
    served_model_name: str
    thinking: bool
    tool_parser: str | None
    reasoning_parser: str | None
    serving: Mapping[str, Any]  # serving_flags.py values: spec, else defaults
    api_key_env: str | None
    groups: tuple[Group, ...]
    router: Router | None
    speculative: SpecDecode | None = None
    metrics_without_key: bool = False  # serving.metrics_without_key
    # Spec sections no resolved field covers, read as given: where the weights live, the node network, the
    # Kubernetes settings.
    weights: Weights
    network: Network
    k8s: K8s

    @property
    def on_cpu(self) -> bool:
        """A local CPU demo (vLLM's CPU backend), not a GPU deployment."""
        return self.gpu.vendor == "cpu"

    @property
    def metrics_served(self) -> bool:
        """Whether the engines serve Prometheus metrics: with an API key, only where the engine keeps them
        behind it or the operator opted in (serving.metrics_without_key)."""
        return not self.api_key_env or self.metrics_without_key or self.profile.key_guard.metrics_behind_key

    @property
    def metrics_need_key(self) -> bool:
        """Whether a scrape of the metrics must send the API key."""
        return bool(self.api_key_env) and not self.metrics_without_key

    @property
    def pd(self) -> bool:
        return self.router is not None

    @property
    def total_ranks(self) -> int:
        """Engine nodes plus the router."""
        return sum(g.nodes for g in self.groups) + (1 if self.router else 0)

    @property
    def http_port(self) -> int:
        """Where clients connect: the router for P/D, else the serving port."""
        return self.router.port if self.router else self.groups[0].port

    @property
    def primary(self) -> Group:
        """The group whose plan describes serving capacity: decode for P/D (it holds the long-lived
        KV cache), else the only group."""
        return self.group("decode") if self.pd else self.groups[0]

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise BadInput(f"no group {name!r}; this deployment has {', '.join(g.name for g in self.groups)}", "--group")

    def group_of_rank(self, rank: int) -> Group | None:
        return next((g for g in self.groups if rank in g.ranks), None)


# --- resolution -------------------------------------------------------------------------------------

def resolve_model(spec_model: str | ModelRef) -> tuple[str, Architecture, ModelEntry | None]:
    """(display name, architecture, catalog entry or None for a local checkpoint)."""
    if isinstance(spec_model, ModelRef):
        if spec_model.path:
            return spec_model.path, Architecture.from_path(os.path.expanduser(spec_model.path)), None
        entry = get_model(spec_model.repo or "")
        return entry.id, entry.architecture(), entry
    if looks_like_path(spec_model):
        return spec_model, Architecture.from_path(os.path.expanduser(spec_model)), None
    entry = get_model(spec_model)
    return entry.id, entry.architecture(), entry


def context_length(entry: ModelEntry | None, arch: Architecture) -> int:
    """The default max_model_len: the catalog's context length, else config.json's."""
    return entry.context_length if entry else arch.max_position_embeddings


def check_max_model_len(value: int | None, entry: ModelEntry | None, arch: Architecture, field: str) -> None:
    """A max_model_len beyond the model's context length is bad input: the engines refuse it at start-up
    (vLLM unless VLLM_ALLOW_LONG_MAX_MODEL_LEN is set, vllm/config/model.py), and a plan for it would
    promise context the model was never trained for."""
    limit = context_length(entry, arch)
    if value is not None and value > limit:
        source = "the catalog's context_length" if entry else "config.json max_position_embeddings"
        raise BadInput(f"{value:,} is beyond the model's context length {limit:,} ({source})", field)


def _topology(spec: Spec, profile: EngineProfile, arch: Architecture, fields: ParallelFields, nodes: int,
              mode: str) -> Topology:
    """Fill in the topology from its mode; explicit numbers always win."""
    gpn = spec.hardware.gpus_per_node
    gpus = gpn * nodes
    if mode == "auto":
        mode = "tp" if arch.num_attention_heads % gpus == 0 else "tp-pp"
    if mode == "tp":
        base = Topology(tp=gpus)
    elif mode == "tp-ep":
        base = Topology(tp=gpus, expert_parallel=True)
    elif mode == "tp-pp":
        base = Topology(tp=gpn, pp=nodes)
    else:  # dp-ep
        base = dp_ep_topology(profile, gpus)
    pick = lambda given, default: default if given is None else given  # noqa: E731
    return Topology(tp=pick(fields.tp, base.tp), pp=pick(fields.pp, base.pp), dp=pick(fields.dp, base.dp),
                    expert_parallel=pick(fields.expert_parallel, base.expert_parallel),
                    dp_attention=pick(fields.dp_attention, base.dp_attention), dcp=spec.topology.dcp)


def _network_env(spec: Spec, multi_node: bool, deepep: bool) -> dict[str, str]:
    """NCCL / Gloo / NVSHMEM settings for one group, then the spec's own serving.env."""
    n = spec.network
    env: dict[str, str] = {}
    if n.socket_ifname:
        # Gloo picks the wrong NIC on InfiniBand hosts and hangs at init
        # (vllm-project/vllm docs/serving/data_parallel_deployment.md).
        env["NCCL_SOCKET_IFNAME"] = n.socket_ifname
        env["GLOO_SOCKET_IFNAME"] = n.socket_ifname
    if n.ib_hca:
        env["NCCL_IB_HCA"] = n.ib_hca
    if deepep:
        # DeepEP's low-latency kernels use GPU-initiated RDMA through NVSHMEM
        # (https://docs.nvidia.com/nvshmem/api/gen/env.html: NVSHMEM_IB_ENABLE_IBGDA, NVSHMEM_HCA_LIST).
        env["NVSHMEM_IB_ENABLE_IBGDA"] = "1"
        if n.ib_hca:
            env["NVSHMEM_HCA_LIST"] = n.ib_hca
    if multi_node:
        env.setdefault("NCCL_DEBUG", "WARN")
    env.update(spec.serving.env)
    return env


def _model_path(spec: Spec, entry: ModelEntry | None, name: str) -> str:
    """What the engine loads: the staged weights dir, else the Hub repo (a download at start-up)."""
    if spec.weights.dir:
        return spec.weights.dir
    if isinstance(spec.model, ModelRef):
        return spec.model.path or spec.model.repo or ""
    return entry.repo if entry else name


def _parsers(spec: Spec, entry: ModelEntry | None) -> tuple[bool, str | None, str | None]:
    """(thinking, tool parser, reasoning parser): the catalog entry's, unless the spec says otherwise."""
    s = spec.serving
    if s.thinking is False and entry is not None and entry.thinking_only:
        # Without the reasoning parser the thinking text lands in `content` (REC Kimi-K2.7-Code.yaml:
        # "thinking mode only -- keep this enabled").
        raise BadInput(f"{entry.repo} runs in thinking mode only; leave thinking unset or true",
                       "serving.thinking")
    thinking = s.thinking if s.thinking is not None else bool(entry and entry.thinking)
    if s.tool_call_parser != "auto":
        tool = s.tool_call_parser
    else:
        # A local checkpoint has no entry; this toolkit serves the Kimi K2 family, whose format is kimi_k2.
        tool = entry.tool_parser if entry else "kimi_k2"
    reasoning = None
    if thinking:
        reasoning = (entry.reasoning_parser if entry else None) or "kimi_k2"
    return thinking, tool, reasoning


def resolve_speculative(spec: Spec, profile: EngineProfile, arch: Architecture | None = None,
                        name: str = "the model", model_entry: ModelEntry | None = None) -> SpecDecode | None:
    """The draft: a published one from the cited table (drafts.py), or a local directory read from its
    own config.json. An unknown Hub repo is refused: its size cannot be planned without its config. `mtp`
    is decided here, where the checkpoint's config is known: it needs MTP layers (num_nextn_predict_layers
    > 0) and an engine that drafts with them."""
    sp = spec.speculative
    if sp is None:
        return None
    if sp.method == "mtp":
        return _resolve_mtp(spec, profile, arch, name)
    assert sp.draft  # spec.Speculative requires it
    field = "speculative.draft"
    if looks_like_path(sp.draft):
        darch, entry, staged, path = DraftArch.from_path(sp.draft), None, None, os.path.expanduser(sp.draft)
    else:
        entry = get_draft(sp.draft)
        if entry is None:
            from .drafts import draft_repos
            raise BadInput(f"{sp.draft!r} is not a known draft and not a local directory; known: "
                           f"{', '.join(draft_repos())}; or download it and give its directory (its config.json "
                           "is read for the memory plan)", field)
        darch = entry.arch
        staged = os.path.join(spec.weights.dir, DRAFT_SUBDIR) if spec.weights.dir else None
        path = staged or entry.repo
        # A published draft reads its target's hidden states at fixed layers and was trained on its outputs:
        # a catalog model it was not made for (nor a re-quantization of one) is refused. A local checkpoint
        # (no catalog entry) is taken at its word.
        if model_entry is not None and not {model_entry.id, model_entry.base} & set(entry.targets):
            raise BadInput(f"{entry.repo} drafts for {', '.join(entry.targets)}, not {model_entry.id}; give a draft "
                           f"trained for {model_entry.id} (or a local draft directory)", field)
        if profile.draft_min_version(entry) is None:
            raise BadInput(f"{profile.display} cannot load the draft {entry.repo}: "
                           f"{profile.draft_refusal(entry) or entry.source}", field)
    if darch.method != sp.method:
        raise BadInput(f"{sp.draft} is a {darch.method} draft, not a {sp.method} one; set method: {darch.method} "
                       f"or give a {sp.method} draft", field)
    if not profile.topology.speculative_tree and (sp.eagle_topk not in (None, 1) or sp.num_draft_tokens is not None):
        trees = " or ".join(p.display for p in PROFILES.values() if p.topology.speculative_tree)
        raise BadInput(f"{profile.display} drafts a chain of num_speculative_tokens (no tree): eagle_topk and "
                       f"num_draft_tokens are {trees} settings; leave them unset",
                       "speculative.eagle_topk" if sp.eagle_topk else "speculative.num_draft_tokens")
    # A DSpark draft drafts the block it was trained for unless told otherwise (vllm/config/speculative.py:
    # num_speculative_tokens defaults to the draft's block_size; SGLang infers gamma from it likewise).
    default = darch.block_size if darch.method == "dspark" and darch.block_size else EAGLE3_DEFAULT_TOKENS
    n = sp.num_speculative_tokens or default
    topk = sp.eagle_topk or 1
    tokens = sp.num_draft_tokens or n + 1
    if topk == 1 and tokens != n + 1:
        raise BadInput(f"with eagle_topk 1 (a chain) SGLang drafts exactly num_speculative_tokens + 1 = {n + 1} "
                       "tokens", "speculative.num_draft_tokens")
    if topk > 1 and tokens > topk * n + 1:
        raise BadInput(f"{tokens} is more than the tree holds (eagle_topk x num_speculative_tokens + 1 = "
                       f"{topk * n + 1})", "speculative.num_draft_tokens")
    return SpecDecode(method=sp.method, source=sp.draft, revision=sp.draft_revision, path=path, dir=staged,
                      arch=darch, entry=entry, num_speculative_tokens=n, eagle_topk=topk, num_draft_tokens=tokens)


def _resolve_mtp(spec: Spec, profile: EngineProfile, arch: Architecture | None, name: str) -> SpecDecode:
    """MTP drafts with the checkpoint's own MTP layers: refused where config.json has none (the whole K2
    family, and the published moonshotai/Kimi-K3, whose text_config has num_nextn_predict_layers 0) or where
    the engine has no MTP model for the architecture."""
    sp = spec.speculative
    assert sp is not None
    field = "speculative.method"
    if arch is None or not arch.hybrid:  # the K2 family (DeepSeek-V3 configs): no MTP layers
        raise BadInput(MTP_REFUSED, field)
    if not arch.mtp_layers:
        # huggingface.co/moonshotai/Kimi-K3 config.json (rev f831ab66) text_config: num_nextn_predict_layers 0
        raise BadInput(f"mtp needs the checkpoint's own multi-token-prediction layers and {name} has none "
                       "(config.json num_nextn_predict_layers: 0, as in the published moonshotai/Kimi-K3); use "
                       "method: dspark with a draft such as RedHatAI/Kimi-K3-speculator.dspark", field)
    if profile.topology.hybrid_mtp_refused:
        raise BadInput(profile.topology.hybrid_mtp_refused, field)
    if sp.draft or sp.draft_revision:
        raise BadInput("mtp drafts with the checkpoint's own MTP layers: leave draft and draft_revision unset "
                       "(or use method: eagle3 / dspark with a draft model)", "speculative.draft")
    if sp.eagle_topk not in (None, 1):
        raise BadInput("mtp drafts a chain: leave eagle_topk unset", "speculative.eagle_topk")
    if sp.num_draft_tokens is not None and profile.topology.speculative_tree is False:
        raise BadInput(f"{profile.display} drafts a chain of num_speculative_tokens: leave num_draft_tokens unset",
                       "speculative.num_draft_tokens")
    layers = arch.mtp_layers
    n = sp.num_speculative_tokens or layers
    # vLLM reuses the MTP layers for more tokens only in whole rounds (vllm/config/speculative.py: "must be
    # divisible by n_predict").
    if n > layers and n % layers:
        raise BadInput(f"{n} drafted tokens with {layers} MTP layers: more tokens than layers must be a multiple "
                       f"of {layers} (the engine reuses the layers in whole rounds)", "speculative.num_speculative_tokens")
    return SpecDecode(method="mtp", source=None, revision=None, path=None, dir=None, arch=None, entry=None,
                      num_speculative_tokens=n, eagle_topk=1, num_draft_tokens=n + 1, mtp_layers=layers)


def _check_multimodal(spec: Spec, arch: Architecture, name: str) -> None:
    """The multimodal settings need a vision tower to act on."""
    s = spec.serving
    for field in ("language_model_only", "mm_encoder_tp_mode"):
        if getattr(s, field) not in (None, False) and arch.vision is None:
            raise BadInput(f"{name} is text-only (no vision_config in its config.json): there is no vision "
                           "encoder to skip or split", f"serving.{field}")
    # "Mutually exclusive with encoder_parallel" (vllm-project/recipes models/moonshotai/Kimi-K2.6.yaml text_only).
    if s.language_model_only and s.mm_encoder_tp_mode is not None:
        raise BadInput("language_model_only drops the vision encoder, so there is no encoder to split: set one of "
                       "language_model_only and mm_encoder_tp_mode", "serving.mm_encoder_tp_mode")


def _check_pinned_env(spec: Spec, profile: EngineProfile) -> None:
    """serving.env may not set a variable the engine's profile pins (pinned_env) to another value: the
    rendered command would override it, and a setting that is never applied is a surprise."""
    for name, value in profile.pinned_env.items():
        given = spec.serving.env.get(name)
        if given is not None and given != value:
            raise BadInput(f"{profile.display} nodes always run with {name}={value}: kimi-deploy pins it (another "
                           "value turns on routes no deployment should serve, e.g. vLLM's dev-mode control "
                           "routes); remove it", f"serving.env.{name}")


def resolve(spec: Spec) -> Deployment:
    """Resolve a parsed spec into the Deployment every consumer reads. Raises BadInput for a topology
    the engine cannot express (the planner's rules)."""
    name, arch, entry = resolve_model(spec.model)
    engine = spec.engine.name
    profile = get_profile(engine)
    _check_pinned_env(spec, profile)
    check_max_model_len(spec.serving.max_model_len, entry, arch, "serving.max_model_len")
    defaults = {"max_model_len": context_length(entry, arch)}
    serving = resolve_values(spec.serving, profile, defaults)
    _check_multimodal(spec, arch, name)
    spec_decode = resolve_speculative(spec, profile, arch, name, entry)
    gpu = get_gpu(spec.hardware.gpu)
    t = spec.topology

    def group(gname: GroupName, fields: ParallelFields, nodes: int, first_rank: int, port: int, mode: str,
              extra: tuple[str, ...]) -> Group:
        topo = _topology(spec, profile, arch, fields, nodes, mode)
        inp = PlanInput(model=name, arch=arch, engine=engine, gpu=gpu, gpus_per_node=spec.hardware.gpus_per_node,
                        nodes=nodes, topology=topo, draft=spec_decode.arch if spec_decode else None,
                        mtp_layers=spec_decode.mtp_layers if spec_decode else 0,
                        draft_tokens=spec_decode.num_speculative_tokens if spec_decode else 0,
                        engine_version=spec.engine.version, **plan_fields(profile, serving))
        deepep = bool(fields.all2all and fields.all2all.startswith("deepep"))
        return Group(name=gname, nodes=nodes, first_rank=first_rank, port=port, head_var=HEAD_VARS[gname],
                     topology=topo, all2all=fields.all2all, eplb_redundant_experts=fields.eplb_redundant_experts,
                     extra_args=extra, network_env=MappingProxyType(_network_env(spec, nodes > 1, deepep)),
                     plan_input=inp, plan=plan(inp, suggest=False))  # plan() checks the topology first

    extra = tuple(spec.serving.extra_args)
    groups: list[Group] = []
    router = None
    if t.pd is None:
        groups.append(group("serve", t, spec.hardware.nodes, 0, spec.serving.port, t.mode, extra))
    else:
        first = 0
        for side in ("prefill", "decode"):
            g = getattr(t.pd, side)
            # A P/D side is DP+EP when it asks for expert parallelism over several DP ranks, else TP.
            mode = "dp-ep" if g.expert_parallel and (g.dp or 1) > 1 else "tp"
            groups.append(group(side, g, g.nodes, first, spec.serving.port + PD_PORT_OFFSET[side], mode,
                                extra + tuple(g.extra_args)))
            first += g.nodes
        router = Router(rank=first, port=t.pd.router_port)
    no_pp = profile.topology.speculative_with_pp.get(spec_decode.method) if spec_decode else None
    on_prefill = spec_decode is not None and spec_decode.method in profile.topology.speculative_pp_on_prefill
    if no_pp and any(g.topology.pp > 1 and not (on_prefill and g.name == "prefill") for g in groups):
        raise BadInput(f"{no_pp}; use tp, dp or tp-ep without pp", "speculative")
    for g in groups:
        if g.port > 65535:
            raise BadInput(f"{spec.serving.port} leaves no room for the {g.name} side's port "
                           f"(serving.port + {PD_PORT_OFFSET[g.name]}); allowed: up to 65533", "serving.port")
    thinking, tool, reasoning = _parsers(spec, entry)
    return Deployment(
        name=spec.name, engine=engine, profile=profile, engine_version=spec.engine.version, gpu=gpu,
        gpus_per_node=spec.hardware.gpus_per_node, nodes=spec.hardware.nodes, host=spec.serving.host,
        lb=t.lb, multinode_backend=t.multinode_backend,
        pd_transport=PDTransport(backend=t.pd.transfer_backend, ib_device=t.pd.ib_device) if t.pd else None,
        weights=spec.weights, network=spec.network, k8s=spec.k8s, model=name, entry=entry,
        arch=arch, model_path=_model_path(spec, entry, name),
        served_model_name=spec.serving.served_model_name or (entry.id if entry else spec.name),
        thinking=thinking, tool_parser=tool, reasoning_parser=reasoning, serving=MappingProxyType(serving),
        api_key_env=spec.serving.api_key_env, groups=tuple(groups), router=router, speculative=spec_decode,
        metrics_without_key=spec.serving.metrics_without_key,
    )
