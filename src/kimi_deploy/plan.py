"""Memory and parallelism planner: does a Kimi K2 checkpoint fit these GPUs under vLLM's or SGLang's
real sharding, how many KV cache tokens does each engine instance get, and how many requests of
max_model_len fit at once.

The sharding rules (what each GPU holds) are those of the engines' DeepSeek-V2/V3 model code:
- vLLM (vllm/model_executor/models/deepseek_v2.py): the fused q_a/kv_a projection is replicated
  (`disable_tp=True`), q_b/kv_b are ColumnParallel and o_proj RowParallel over TP; embeddings and
  lm_head are vocab-parallel over TP; norms, the router gate and its bias are replicated; shared experts
  and the dense layer are split over TP; routed experts split each expert's intermediate dim over TP, or
  with `--enable-expert-parallel` spread whole experts over EP = TP x DP ranks (first ranks take the
  remainder). Each DP rank is a full replica of everything else. PP splits layers with
  vllm.distributed.utils.get_pp_indices (remainder to the partitions before the last).
- SGLang (python/sglang/srt/models/deepseek_v2.py): TP is the GPU count of one replica; with
  --enable-dp-attention the attention runs at TP/DP and embeddings are replicated; MoE weights are split
  over all TP ranks (EP x expert-TP = TP); lm_head is vocab-parallel over TP.

MLA caches kv_lora_rank + qk_rope_head_dim values per token per layer, the same on every TP rank
(the latent is not split by heads) unless decode context parallel (-dcp) shards it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from .architecture import Architecture, Inventory, WeightFormat, expert_tensors
from .quant_formats import INT4_K2_IGNORE, Quantization
from .catalog import GPU, GiB, get_model
from .drafts import DraftArch
from .engines.profiles import EngineProfile, get_profile, others
from .engines.profiles.base import (FALLBACK, FP8_DS_MLA, FP8_DS_MLA_BYTES_PER_TOKEN_LAYER, KV_DTYPES, STATE_DTYPES,
                                    HybridCapacity, HybridInput, KernelPath, Layout, Overhead, OverheadInput, Settings,
                                    kv_value_bytes)
from .errors import BadInput


@dataclass(frozen=True)
class Topology:
    """How one deployment splits the model. `dp` counts engine instances (vLLM) or attention-DP groups
    (SGLang with dp_attention)."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    expert_parallel: bool = False
    dp_attention: bool = False  # SGLang --enable-dp-attention
    dcp: int = 1  # vLLM --decode-context-parallel-size


@dataclass(frozen=True)
class PlanInput:
    model: str
    arch: Architecture
    engine: str
    gpu: GPU
    gpus_per_node: int
    nodes: int
    topology: Topology
    max_model_len: int
    kv_cache_dtype: str = "auto"
    # None: the engine's default for its release (engines/profiles/).
    gpu_memory_utilization: float | None = None  # vLLM's; SGLang's mem_fraction_static
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    # The vision tower is not built (vLLM/SGLang --language-model-only): its bytes stay off the GPUs.
    language_model_only: bool = False
    # A separate draft (EAGLE3, DSpark): its weights (split like the target's, on the last PP stage, where the
    # lm_head and the hidden states it drafts from are) and its KV cache, allocated alongside the target's.
    draft: DraftArch | None = None
    draft_tokens: int = 0  # tokens the draft proposes per step (its CUDA graphs and sampler grow with them)
    # MTP: the checkpoint's own MTP layers drafting (kind "mtp" components, loaded on the last PP stage like a
    # draft; each an MLA decoder layer caching KV per token)
    mtp_layers: int = 0
    state_dtype: str = "auto"  # a hybrid model's recurrent-state dtype (engines/profiles/base.py STATE_DTYPES)
    prefix_caching: bool | None = None  # None: the engine's default (on)
    engine_version: str | None = None  # the pinned release, whose defaults apply; None: the newest

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def profile(self) -> EngineProfile:
        return get_profile(self.engine)

    @property
    def layout(self) -> Layout:
        t = self.topology
        return Layout(gpu_memory_gib=self.gpu.memory_gib, gpu_arch=self.gpu.arch, tp=t.tp, pp=t.pp, dp=t.dp,
                      dp_attention=t.dp_attention)

    @property
    def settings(self) -> Settings:
        return self.profile.settings(version=self.engine_version, layout=self.layout,
                                     memory_fraction=self.gpu_memory_utilization,
                                     max_num_batched_tokens=self.max_num_batched_tokens, max_num_seqs=self.max_num_seqs)

    @property
    def memory_fraction(self) -> float:
        return self.settings.memory_fraction


@dataclass
class Plan:
    inp: PlanInput
    total_params: int
    weight_bytes_total: int
    kv_bytes_per_token: int
    per_gpu_weight_bytes: list[int]  # every GPU of the deployment, in (dp, pp, tp) order
    weight_bytes: int  # the largest per-GPU weight footprint
    kv_cache_bytes: int
    overhead_bytes: int
    memory_bytes: int
    kv_cache_tokens: int
    max_concurrency: float
    fits: bool
    problems: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    assumptions: dict[str, Any] = field(default_factory=dict)
    overhead_breakdown: dict[str, int] = field(default_factory=dict)
    weight_breakdown: dict[str, int] = field(default_factory=dict)
    # hybrid (KDA + MLA) models only: the engine's state per sequence on the fullest GPU, and the sequences
    # whose state fits (engines/profiles/*.py hybrid_capacity)
    hybrid: HybridCapacity | None = None

    def to_json(self) -> dict[str, Any]:
        """The stable JSON contract of `kimi-deploy plan --json` (tests/test_plan.py pins its keys and types)."""
        return {
            "model": self.inp.model,
            "engine": self.inp.engine,
            "gpus": self.inp.gpus,
            "nodes": self.inp.nodes,
            "total_params": self.total_params,
            "weight_bytes_total": self.weight_bytes_total,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "per_gpu": {
                "weight_bytes": self.weight_bytes,
                "kv_cache_bytes": self.kv_cache_bytes,
                "overhead_bytes": self.overhead_bytes,
                "memory_bytes": self.memory_bytes,
            },
            "kv_cache_tokens": self.kv_cache_tokens,
            "max_concurrency": round(self.max_concurrency, 3),
            **({"state_bytes_per_sequence": self.hybrid.state_bytes_per_sequence,
                "state_sequences": self.hybrid.state_sequences} if self.hybrid is not None else {}),
            "fits": self.fits,
            "problems": self.problems,
            "suggestions": self.suggestions,
            "assumptions": self.assumptions,
        }


# --- topology checks -------------------------------------------------------------------------------

def attention_tp(inp: PlanInput) -> int:
    """The TP size attention runs at: the whole TP group, or TP/DP with DP attention."""
    t = inp.topology
    return t.tp // t.dp if t.dp_attention else t.tp


def world_size(t: Topology) -> int:
    """GPUs the topology uses: TP x PP x DP, or TP x PP when DP splits attention inside the TP group."""
    return t.tp * t.pp if t.dp_attention else t.tp * t.pp * t.dp


def engine_instances(t: Topology) -> int:
    """Engine instances, each with its own KV cache: one per DP rank, one in all with DP attention."""
    return 1 if t.dp_attention else t.dp


def expert_parallel_world(inp: PlanInput) -> int:
    """Ranks the routed experts are spread over (1 without expert parallelism)."""
    t = inp.topology
    if not t.expert_parallel:
        return 1
    return t.tp * t.dp if inp.profile.topology.expert_parallel_spans_dp else t.tp


def dp_ep_topology(profile: EngineProfile, gpus: int) -> Topology:
    """The engine's DP+EP layout on `gpus` GPUs."""
    tp, dp, dp_attention = profile.topology.dp_ep(gpus)
    return Topology(tp=tp, dp=dp, dp_attention=dp_attention, expert_parallel=True)


def check_topology(inp: PlanInput) -> None:
    """Raise BadInput for a topology the engine cannot express for this model."""
    t, a = inp.topology, inp.arch
    profile = inp.profile  # an unknown engine is bad input here
    rules = profile.topology
    for name, v in (("tp", t.tp), ("pp", t.pp), ("dp", t.dp), ("dcp", t.dcp)):
        if v < 1:
            raise BadInput(f"must be >= 1, got {v}", f"topology.{name}")
    if inp.gpus_per_node < 1 or inp.nodes < 1:
        raise BadInput("gpus_per_node and nodes must be >= 1", "hardware")
    g = inp.gpu
    if g.node_gpus is not None and inp.gpus_per_node > g.node_gpus:
        raise BadInput(
            f"a {g.name} node (compute tray) holds {g.node_gpus} GPUs, got gpus_per_node {inp.gpus_per_node}; "
            f"span trays with nodes (up to {g.nvlink_domain // g.node_gpus} trays share one "
            f"{g.nvlink_domain}-GPU NVLink domain)", "hardware.gpus_per_node")
    if inp.max_model_len < 1:
        raise BadInput(f"must be >= 1, got {inp.max_model_len}", "serving.max_model_len")
    if not 0 < inp.memory_fraction <= 1:
        raise BadInput(f"must be in (0, 1], got {inp.memory_fraction}", "serving.gpu_memory_utilization")
    if t.dp_attention and not rules.dp_attention:
        raise BadInput(rules.dp_attention_hint or f"{profile.display} has no DP attention", "topology.dp_attention")
    if t.dcp > 1 and not rules.decode_context_parallel:
        takers = [p.display for p in others(profile.name) if p.topology.decode_context_parallel]
        raise BadInput(f"{profile.display} has no decode context parallel (dcp)"
                       + (f"; {', '.join(takers)} has" if takers else ""), "topology.dcp")
    ws = world_size(t)
    if ws != inp.gpus:
        formula = "tp*pp" if t.dp_attention else "tp*pp*dp"
        raise BadInput(
            f"{formula} = {ws} GPUs but the hardware has {inp.nodes} node(s) x {inp.gpus_per_node} = "
            f"{inp.gpus} GPUs", "topology")
    if t.expert_parallel and not a.is_moe:
        raise BadInput("expert parallelism needs a MoE model (n_routed_experts = 0)", "topology.expert_parallel")
    if t.dp_attention and t.tp % t.dp:
        raise BadInput(f"with dp_attention, tp ({t.tp}) must be a multiple of dp ({t.dp})", "topology.dp")
    atp = attention_tp(inp)
    if a.num_attention_heads % atp:
        raise BadInput(
            f"attention tensor-parallel size {atp} does not divide num_attention_heads "
            f"{a.num_attention_heads}", "topology.tp")
    if inp.state_dtype not in STATE_DTYPES:
        raise BadInput(f"unknown state_dtype {inp.state_dtype!r}; allowed: {', '.join(STATE_DTYPES)}",
                       "serving.state_dtype")
    if inp.state_dtype != "auto" and not a.hybrid:
        raise BadInput(f"{inp.model} has no KDA (linear-attention) layers, so no recurrent state to store: "
                       "state_dtype is a setting of the hybrid models (Kimi K3, Kimi-Linear)", "serving.state_dtype")
    la = a.linear_attention
    if la is not None and la.num_heads % atp:
        # both engines split the KDA heads and state over attention TP (vllm kimi_k3/nvidia/kda.py asserts
        # num_heads % tp_size == 0; sglang configs/mamba_utils.py divides them by attn_tp_size)
        raise BadInput(f"attention tensor-parallel size {atp} does not divide the {la.num_heads} KDA heads",
                       "topology.tp")
    if t.tp % t.dcp:
        raise BadInput(f"dcp ({t.dcp}) must divide tp ({t.tp})", "topology.dcp")
    if t.pp > a.num_hidden_layers:
        raise BadInput(f"pp ({t.pp}) exceeds the {a.num_hidden_layers} layers", "topology.pp")
    if a.vocab_size % t.tp:
        raise BadInput(f"tp ({t.tp}) does not divide vocab_size {a.vocab_size}", "topology.tp")
    if inp.kv_cache_dtype not in KV_DTYPES:
        raise BadInput(f"unknown kv_cache_dtype {inp.kv_cache_dtype!r}; allowed: {', '.join(KV_DTYPES)}",
                       "serving.kv_cache_dtype")


def _split_dims(arch: Architecture, inp: PlanInput, expert_ways: int) -> list[tuple[str, int, int, str, str]]:
    """(what, size, ways, module, axis) of every dimension the engine splits: `module` is a linear whose
    storage format decides which kernel constraint applies, `axis` whether the split cuts its output
    ("out", ColumnParallel) or input ("in", RowParallel) features."""
    atp = attention_tp(inp)
    tp = inp.topology.tp
    moe0 = next((i for i in range(arch.num_hidden_layers) if arch.is_moe_layer(i)), 0)
    dense0 = next((i for i in range(arch.num_hidden_layers) if not arch.is_moe_layer(i)), None)
    lp = f"{arch.tensor_prefix}model.layers.{moe0}"
    heads_qk = arch.num_attention_heads * (arch.qk_nope_head_dim + arch.qk_rope_head_dim)
    q_mod = f"{lp}.self_attn.q_b_proj" if arch.q_lora_rank else f"{lp}.self_attn.q_proj"
    dims = [("q_b_proj output", heads_qk, atp, q_mod, "out"),
            ("kv_b_proj output", arch.num_attention_heads * (arch.qk_nope_head_dim + arch.v_head_dim), atp,
             f"{lp}.self_attn.kv_b_proj", "out"),
            ("o_proj input", arch.num_attention_heads * arch.v_head_dim, atp, f"{lp}.self_attn.o_proj", "in")]
    if dense0 is not None:
        dims.append(("dense intermediate_size", arch.intermediate_size, tp,
                     f"{arch.tensor_prefix}model.layers.{dense0}.mlp.down_proj", "in"))
    if arch.is_moe and arch.n_shared_experts:
        dims.append(("shared expert intermediate", arch.moe_intermediate_size * arch.n_shared_experts, tp,
                     f"{lp}.mlp.shared_experts.down_proj", "in"))
    if arch.is_moe:
        dims.append(("moe_intermediate_size", arch.moe_intermediate_size, expert_ways,
                     f"{lp}.mlp.experts.0.down_proj", "in"))
    return dims


_GROUP_LABEL = {WeightFormat.INT4_EXPERTS: "INT4", WeightFormat.NVFP4: "NVFP4", WeightFormat.MXFP4: "MXFP4"}
# FP4 Marlin (the NVFP4 fallback off Blackwell) also needs each expert shard's intermediate size to be a
# multiple of 64 (sglang compressed_tensors_w4a16_nvfp4_moe.py: "NVFP4 Marlin MoE requires
# intermediate_size_per_partition % 64 == 0").
NVFP4_MARLIN_ALIGN = 64


def quantization_problems(inp: PlanInput, kernel: KernelPath | None = None) -> list[str]:
    """Block/group sizes the engine's quantized kernels need every shard to respect, for the linears the
    checkpoint actually quantizes; and a format the engine cannot run on this GPU at all."""
    arch, t = inp.arch, inp.topology
    q = arch.quantization
    out: list[str] = []
    kernel = kernel or inp.profile.kernels(inp.gpu.arch, q)
    if kernel.refused:
        out.append(f"{q.format.value} weights cannot run on {inp.gpu.name} ({inp.gpu.arch}) with {inp.engine}: "
                   f"{kernel.detail}")
    expert_ways = 1 if t.expert_parallel else t.tp  # expert parallelism keeps each expert whole
    for what, size, ways, module, axis in _split_dims(arch, inp, expert_ways):
        if not q.quantizes(module):
            continue
        if q.format is WeightFormat.FP8_BLOCK:
            # vLLM Fp8LinearMethod: "output_size ... is not divisible by weight quantization block_n"
            if size % ways or (size // ways) % q.block:
                out.append(f"FP8 block quantization: {what} {size} split {ways} ways is not a multiple of the "
                           f"{q.block}-wide block; use expert parallelism or a smaller TP")
        elif axis == "in":  # group formats: groups run along the input features
            align = q.group
            if (q.format is WeightFormat.NVFP4 and kernel.path == FALLBACK
                    and what == "moe_intermediate_size"):
                align = max(align, NVFP4_MARLIN_ALIGN)
            if size % ways or (size // ways) % align:
                fix = "enable expert parallelism" if what == "moe_intermediate_size" else "use a smaller TP"
                out.append(f"{_GROUP_LABEL[q.format]} group quantization: {what} {size} split {ways} ways is not "
                           f"a multiple of {align} (the group size {q.group}"
                           f"{', FP4 Marlin alignment' if align != q.group else ''}); {fix}")
    return out


def interconnect(inp: PlanInput) -> dict[str, Any]:
    """Which traffic stays on NVLink. On HGX/OAM boards the NVLink (Infinity Fabric) domain is the node; on
    an NVL72 rack it is 72 GPUs across 18 four-GPU trays, so TP, EP all-to-all and P/D KV transfer between
    trays stay on NVLink (REC Kimi-K2.5.yaml pd_cluster on GB200 sets NCCL_MNNVL_ENABLE=1)."""
    g, t = inp.gpu, inp.topology
    domain = g.nvlink_domain if g.rack_scale else min(g.nvlink_domain, inp.gpus_per_node)
    ep_world = expert_parallel_world(inp)
    info: dict[str, Any] = {
        "nvlink_domain_gpus": domain,
        "gpus_per_node": inp.gpus_per_node,
        "nvlink_domains_spanned": math.ceil(inp.gpus / max(domain, 1)),
        "tp_within_nvlink": t.tp <= domain,
    }
    if t.expert_parallel:
        info["ep_within_nvlink"] = ep_world <= domain
    return info


def pd_interconnect(gpu: GPU, gpus_per_node: int, prefill_nodes: int, decode_nodes: int) -> dict[str, Any]:
    """Whether the prefill -> decode KV transfer of a P/D deployment stays inside one NVLink domain: on an
    NVL72 rack when both sides fit in its 72 GPUs (MNNVL; REC Kimi-K2.5.yaml pd_cluster on GB200), never
    between HGX nodes (the KV goes over the RDMA network there)."""
    total = gpus_per_node * (prefill_nodes + decode_nodes)
    within = gpu.rack_scale and total <= gpu.nvlink_domain
    return {"pd_gpus": total, "pd_kv_transfer": "nvlink" if within else "network"}


# --- per-GPU weights -------------------------------------------------------------------------------

def pp_layer_ranges(num_layers: int, pp: int) -> list[range]:
    """vLLM's get_pp_indices (vllm/distributed/utils.py): even split, remainder one each to the
    partitions before the last, counting backwards."""
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    out, start = [], 0
    for n in parts:
        out.append(range(start, start + n))
        start += n
    return out


def per_gpu_weights(inp: PlanInput, inv: Inventory) -> tuple[list[int], dict[str, int]]:
    """Weight bytes on every GPU, ordered (dp rank, pp stage, tp rank); and the largest GPU's bytes by
    component kind."""
    arch, t = inp.arch, inp.topology
    stages = pp_layer_ranges(arch.num_hidden_layers, t.pp)
    stage_of = {layer: s for s, r in enumerate(stages) for layer in r}
    atp = attention_tp(inp)
    ep_world = expert_parallel_world(inp)
    ep_spans_dp = inp.profile.topology.expert_parallel_spans_dp
    expert_unit = sum(t.nbytes for t in expert_tensors(arch)) if arch.is_moe else 0
    n_dp = engine_instances(t)
    result: list[int] = []
    worst: dict[str, int] = {}
    def share(kind: str, nbytes: int, dp_rank: int, tp_rank: int) -> int:
        """One GPU's bytes of a component, by the engines' sharding of its kind."""
        if kind in ("attn_replicated", "router", "final_norm", "vision"):
            return nbytes
        if kind == "embed":
            return nbytes if t.dp_attention else nbytes // t.tp
        if kind == "attn_sharded":
            return nbytes // atp
        if kind == "routed_experts" and ep_world > 1:
            n = arch.n_routed_experts
            rank = dp_rank * t.tp + tp_rank if ep_spans_dp else tp_rank
            return (n // ep_world + (1 if rank < n % ep_world else 0)) * expert_unit
        return nbytes // t.tp  # lm_head, dense_mlp, shared_experts, routed experts without EP

    mtp = _mtp_layer_parts(arch, inv) if inp.mtp_layers else None
    for dp_rank in range(n_dp):
        for stage in range(t.pp):
            first, last = stage == 0, stage == t.pp - 1
            for tp_rank in range(t.tp):
                by_kind: dict[str, int] = {}
                for kind, layer, _, nbytes in inv.components:
                    if layer is not None and stage_of[layer] != stage:
                        continue
                    if kind == "vision" and inp.language_model_only:
                        continue
                    if kind == "mtp":  # stored, but loaded only by an MTP draft (counted below)
                        continue
                    if kind in ("embed", "vision") and not first:
                        continue
                    if kind in ("lm_head", "final_norm") and not last:
                        continue
                    by_kind[kind] = by_kind.get(kind, 0) + share(kind, nbytes, dp_rank, tp_rank)
                if inp.draft is not None and last:
                    by_kind["draft"] = draft_bytes_per_gpu(inp)
                if mtp is not None and last:
                    own, parts = mtp
                    one = own + sum(share(kind, nbytes, dp_rank, tp_rank) for kind, nbytes in parts)
                    by_kind["draft"] = by_kind.get("draft", 0) + one * min(inp.mtp_layers, arch.mtp_layers)
                total = sum(by_kind.values())
                result.append(total)
                if total >= sum(worst.values()):
                    worst = by_kind
    return result, worst


def _mtp_layer_parts(arch: Architecture, inv: Inventory) -> tuple[int, list[tuple[str, int]]]:
    """One MTP layer, for sharding: its own tensors (enorm, hnorm, eh_proj, shared_head.norm: replicated,
    vllm models/kimi_k3/nvidia/mtp.py ReplicatedLinear eh_proj), and its decoder layer as the components of
    the stack's last layer of the same kind (KDA or MLA, MoE or dense by the same rules), which the engine
    shards alike. The embeddings and lm_head are the target's (architecture.py iter_components)."""
    first_mtp = arch.num_hidden_layers
    same = [i for i in range(arch.num_hidden_layers) if arch.is_kda_layer(i) == arch.is_kda_layer(first_mtp)
            and arch.is_moe_layer(i) == arch.is_moe_layer(first_mtp)]
    ref = same[-1] if same else arch.num_hidden_layers - 1
    parts = [(kind, nbytes) for kind, layer, _, nbytes in inv.components if layer == ref]
    mtp_rows = [nbytes for kind, _, _, nbytes in inv.components if kind == "mtp"]
    own = (mtp_rows[0] if mtp_rows else 0) - sum(b for _, b in parts)
    return max(own, 0), parts


# --- KV cache and overhead -------------------------------------------------------------------------

def kv_bytes_per_token_layer(arch: Architecture, kv_dtype: str) -> int:
    if kv_dtype == FP8_DS_MLA:
        return FP8_DS_MLA_BYTES_PER_TOKEN_LAYER
    return int(arch.kv_latent_dim * kv_value_bytes(kv_dtype))


def hybrid_capacity(inp: PlanInput, layers: range, free_bytes: int, draft_kv: int, last: bool = False) -> HybridCapacity:
    """What the engine makes of one pipeline stage's free memory for a hybrid model. The last stage's MTP
    layers are MLA layers like the target's (the same KV spec, so they join the MLA layers the engine
    groups); a separate draft's own KV is charged as extra bytes per token of the stage's MLA layers (its
    layers' own grouping in the engine's allocator is not modelled)."""
    arch = inp.arch
    la = arch.linear_attention
    assert la is not None
    mtp = min(inp.mtp_layers, arch.mtp_layers)
    # the model's layers of each kind in order, MTP layers after the stack (they sit on the last stage)
    mla_all = [i for i in range(arch.num_hidden_layers) if not arch.is_kda_layer(i)]
    mla_all += range(arch.num_hidden_layers, arch.num_hidden_layers + mtp)
    kda_all = list(la.layers)
    stage = set(layers) | (set(range(arch.num_hidden_layers, arch.num_hidden_layers + mtp)) if last else set())
    mla_pos = tuple(p for p, i in enumerate(mla_all) if i in stage)
    kda_pos = tuple(p for p, i in enumerate(kda_all) if i in stage)
    per_layer = kv_bytes_per_token_layer(arch, inp.kv_cache_dtype)
    if last:
        draft_kv -= mtp * per_layer  # what is left is a separate draft's
    if draft_kv > 0 and mla_pos:
        per_layer += math.ceil(draft_kv / len(mla_pos))
    busiest = max(sum(1 for i in r if arch.is_kda_layer(i)) for r in pp_layer_ranges(arch.num_hidden_layers,
                                                                                      inp.topology.pp))
    return inp.profile.hybrid_capacity(HybridInput(
        free_bytes=free_bytes, mla_layers=len(mla_pos), kda_layers=len(kda_pos), kv_bytes_per_token_layer=per_layer,
        kda_heads=la.num_heads, kda_head_dim=la.head_dim, conv_kernel=la.conv_kernel,
        attention_tp=attention_tp(inp), speculative_tokens=speculative_tokens(inp),
        max_model_len=inp.max_model_len, state_dtype=inp.state_dtype, dcp=inp.topology.dcp,
        prefix_caching=inp.prefix_caching is not False, mla_positions=mla_pos, kda_positions=kda_pos,
        model_mla_layers=len(mla_all), model_kda_layers=len(kda_all), max_stage_kda_layers=busiest,
        full_rank_gate=la.full_rank_gate))


def speculative_tokens(inp: PlanInput) -> int:
    """Tokens drafted per sequence and step (0 without speculative decoding)."""
    return inp.draft_tokens if inp.draft is not None or inp.mtp_layers else 0


def draft_bytes_per_gpu(inp: PlanInput) -> int:
    """The draft's weights on one GPU of the last stage."""
    assert inp.draft is not None
    return inp.draft.bytes_per_gpu(inp.topology.tp, attention_tp(inp),
                                   target_embeddings=inp.profile.topology.draft_uses_target_embeddings)


def draft_kv_bytes_per_token(inp: PlanInput) -> int:
    """The draft's KV per token on one GPU, in the target's cache dtype (vLLM allocates the draft's
    layers from the same KV cache config as the target's, vllm/v1/spec_decode/eagle.py). A sliding-window
    draft (DSpark) is charged its window over max_model_len (drafts.py DraftArch.kv_bytes_per_token); MTP
    layers are MLA layers of the checkpoint, each caching what a target MLA layer caches."""
    mtp = kv_bytes_per_token_layer(inp.arch, inp.kv_cache_dtype) * min(inp.mtp_layers, inp.arch.mtp_layers)
    if inp.draft is None:
        return mtp
    return mtp + inp.draft.kv_bytes_per_token(kv_value_bytes(inp.kv_cache_dtype), attention_tp(inp),
                                              inp.max_model_len)


def overhead(inp: PlanInput) -> Overhead:
    """Per-GPU memory the engine needs besides weights and KV cache, by its profile's model."""
    return inp.profile.overhead(overhead_input(inp))


def overhead_input(inp: PlanInput) -> OverheadInput:
    """What the overhead model reads of a plan's input."""
    a, t = inp.arch, inp.topology
    return OverheadInput(
        settings=inp.settings, engine_version=inp.engine_version, layout=inp.layout,
        gpu_memory_bytes=inp.gpu.memory_bytes, on_cpu=inp.gpu.vendor == "cpu", gpus=inp.gpus,
        expert_parallel=t.expert_parallel, hidden_size=a.hidden_size, vocab_size=a.vocab_size,
        num_experts_per_tok=a.num_experts_per_tok if a.is_moe else 0,
        moe_intermediate_size=a.moe_intermediate_size if a.is_moe else 0,
        speculative_tokens=speculative_tokens(inp))


# --- the planner -----------------------------------------------------------------------------------

def plan(inp: PlanInput, suggest: bool = True) -> Plan:
    """Plan one deployment. Raises BadInput for impossible topologies; a topology that is valid but does
    not fit returns fits=False with problems and (when `suggest`) alternatives."""
    check_topology(inp)
    arch, t = inp.arch, inp.topology
    inv = Inventory.of(arch)
    profile, settings = inp.profile, inp.settings
    kernel = profile.kernels(inp.gpu.arch, arch.quantization)
    problems = quantization_problems(inp, kernel)
    per_gpu, worst_kinds = per_gpu_weights(inp, inv)
    weight_max = max(per_gpu)
    ovh = overhead(inp)
    inside, outside = sum(ovh.inside_budget.values()), sum(ovh.outside_budget.values())
    mem = inp.gpu.memory_bytes
    # The engine's memory fraction holds the weights, the KV cache and the `inside_budget` terms.
    budget = int(mem * settings.memory_fraction)
    per_layer_tok = kv_bytes_per_token_layer(arch, inp.kv_cache_dtype)
    stages = pp_layer_ranges(arch.num_hidden_layers, t.pp)
    # KV bytes on the tightest GPU; every GPU of a stage holds the latent for its layers.
    n_dp = engine_instances(t)
    stage_tokens = []
    kv_free_min = None
    draft_kv = draft_kv_bytes_per_token(inp)
    capacities: list[HybridCapacity] = []
    for s, layers in enumerate(stages):
        stage_gpus = [per_gpu[(d * t.pp + s) * t.tp + r] for d in range(n_dp) for r in range(t.tp)]
        kv_free = budget - max(stage_gpus) - inside
        kv_free_min = kv_free if kv_free_min is None else min(kv_free_min, kv_free)
        if arch.hybrid:
            last = s == t.pp - 1
            capacities.append(hybrid_capacity(inp, layers, kv_free, draft_kv if last else 0, last=last))
            continue
        per_token = per_layer_tok * len(layers) + (draft_kv if s == t.pp - 1 else 0)
        tok = max(kv_free, 0) // per_token if per_token else 0
        stage_tokens.append(tok)
    hybrid = None
    if capacities:
        # the tightest stage decides; the fullest GPU's state is what one sequence costs
        hybrid = min(capacities, key=lambda c: c.max_concurrency)
        cached = [c.kv_tokens for c in capacities if c.kv_tokens is not None]
        hybrid = replace(hybrid, state_bytes_per_sequence=max(c.state_bytes_per_sequence for c in capacities),
                         state_sequences=min(c.state_sequences for c in capacities),
                         kv_tokens=min(cached) if cached else 0)
        tokens, concurrency = hybrid.kv_tokens or 0, hybrid.max_concurrency
    else:
        tokens = min(stage_tokens) * t.dcp
        block = profile.topology.kv_block_tokens
        if block and inp.gpu.vendor != "cpu":
            tokens = tokens // block * block
        concurrency = tokens / inp.max_model_len
    kv_bytes = max(kv_free_min or 0, 0)
    fraction = f"{profile.memory_fraction_field} {settings.memory_fraction}"
    if weight_max + inside > budget:
        runtime = f" plus {inside / GiB:.1f} GiB runtime overhead" if inside else ""
        problems.append(
            f"weights need {weight_max / GiB:.1f} GiB per GPU{runtime}, but only {budget / GiB:.1f} GiB of the "
            f"{inp.gpu.name}'s {inp.gpu.memory_gib} GiB is usable at {fraction}")
    elif hybrid is not None and concurrency < 1:
        problems.append(
            f"KV cache and recurrent state hold {concurrency:.2f} requests of max_model_len {inp.max_model_len:,} "
            f"per engine instance ({hybrid.state_bytes_per_sequence / GiB:.2f} GiB of state per sequence per GPU): "
            "fewer than one (the engine refuses to start)")
    elif tokens < inp.max_model_len:
        problems.append(
            f"KV cache holds {tokens:,} tokens per engine instance, fewer than one request of "
            f"max_model_len {inp.max_model_len:,} (the engine refuses to start)")
    # What must fit beside the fraction is estimated, not measured by the engine before it commits: a
    # shortfall is a warning (the engine may still start, or fail capturing CUDA graphs), not a verdict.
    warnings = []
    if outside > ovh.outside_allowance:
        terms = ", ".join(f"{k} {v / GiB:.1f} GiB" for k, v in ovh.outside_budget.items())
        most = max(0.0, 1 - outside / mem)
        warnings.append(
            f"{profile.display} needs about {outside / GiB:.1f} GiB per GPU outside its memory fraction ({terms}), "
            f"more than the {ovh.outside_allowance / GiB:.1f} GiB that {fraction} leaves: it may refuse to start or "
            f"run out of memory capturing CUDA graphs; {profile.memory_fraction_field} at most "
            f"{math.floor(most * 100) / 100:.2f} leaves room")
    ovh_bytes = inside + max(outside, ovh.outside_allowance)
    breakdown = {**ovh.inside_budget, **ovh.outside_budget}
    if ovh_bytes > sum(breakdown.values()):
        breakdown["unused_outside_fraction"] = ovh_bytes - sum(breakdown.values())
    fits = not problems
    kv_total_per_token = per_layer_tok * arch.mla_layers + draft_kv  # KDA layers cache no tokens
    result = Plan(
        inp=inp,
        total_params=inv.total_params,
        weight_bytes_total=inv.total_bytes,
        kv_bytes_per_token=kv_total_per_token,
        per_gpu_weight_bytes=per_gpu,
        weight_bytes=weight_max,
        kv_cache_bytes=kv_bytes,
        overhead_bytes=ovh_bytes,
        memory_bytes=weight_max + kv_bytes + ovh_bytes,
        kv_cache_tokens=int(tokens),
        max_concurrency=concurrency,
        fits=fits,
        problems=problems,
        assumptions={**_assumptions(inp, ovh, breakdown), "warnings": warnings, "weight_kernel": {"path": kernel.path, "detail": kernel.detail},
                     "interconnect": interconnect(inp)},
        overhead_breakdown=breakdown,
        weight_breakdown=worst_kinds,
        hybrid=hybrid,
    )
    if hybrid is not None:
        result.assumptions["hybrid"] = {
            "state_dtype": inp.state_dtype, "state_slots_per_sequence": hybrid.state_slots_per_sequence,
            "block_tokens": hybrid.block_tokens, **hybrid.detail, "sources": dict(hybrid.sources)}
    if not fits and suggest:
        result.suggestions = suggestions(inp)
    return result


def _assumptions(inp: PlanInput, ovh: Overhead, breakdown: dict[str, int]) -> dict[str, Any]:
    t, settings = inp.topology, inp.settings
    return {
        "gpu_memory_bytes": inp.gpu.memory_bytes,
        "gpu_memory_source": inp.gpu.source,
        "memory_fraction": settings.memory_fraction,
        "memory_fraction_flag": inp.profile.fraction_flag(),
        "engine_version": inp.engine_version,
        "engine_defaults": settings.defaults_from,
        "weight_format": inp.arch.quantization.format.value,
        "kv_cache_dtype": inp.kv_cache_dtype,
        "max_model_len": inp.max_model_len,
        "max_num_batched_tokens": settings.max_num_batched_tokens,
        "max_num_seqs": settings.max_num_seqs,
        "topology": {"tp": t.tp, "pp": t.pp, "dp": t.dp, "expert_parallel": t.expert_parallel,
                     "dp_attention": t.dp_attention, "dcp": t.dcp},
        "kv_replicated_on_tp_ranks": t.dcp == 1,
        "engine_instances": engine_instances(t),
        "overhead_bytes": breakdown,
        "overhead_outside_fraction": {"needed": sum(ovh.outside_budget.values()),
                                      "available": ovh.outside_allowance} if ovh.outside_allowance else None,
        "overhead_sources": dict(ovh.sources),
        "per_gpu_weight_bytes_is": "the largest GPU (PP stages and uneven expert splits differ)",
        "nodes_planned": inp.nodes,
        "language_model_only": inp.language_model_only,
        "draft": _draft_assumptions(inp),
    }


def _draft_assumptions(inp: PlanInput) -> dict[str, Any] | None:
    if inp.draft is None and not inp.mtp_layers:
        return None
    out: dict[str, Any] = {"kv_bytes_per_token_per_gpu": draft_kv_bytes_per_token(inp),
                           "speculative_tokens": speculative_tokens(inp)}
    if inp.mtp_layers:
        out.update(method="mtp", layers=min(inp.mtp_layers, inp.arch.mtp_layers), attention="mla",
                   source="the checkpoint's MTP layers (kind mtp), on the last PP stage")
    if inp.draft is not None:
        d = inp.draft
        out.update(method=d.method, attention=d.attention, layers=d.layers, total_bytes=d.total_bytes,
                   bytes_per_gpu=draft_bytes_per_gpu(inp), sliding_window=d.sliding_window or None)
        if d.sliding_window:
            out["kv_bytes_per_sequence_per_gpu"] = d.kv_bytes_per_sequence(
                kv_value_bytes(inp.kv_cache_dtype), attention_tp(inp), inp.max_model_len)
    return out


def _try(inp: PlanInput, label: str, **changes: Any) -> str | None:
    try:
        alt = replace(inp, **changes)
        p = plan(alt, suggest=False)
    except BadInput:
        return None
    if not p.fits:
        return None
    t = alt.topology
    topo = f"tp={t.tp} pp={t.pp} dp={t.dp}" + (" ep" if t.expert_parallel else "")
    return (f"{label}: {alt.nodes} node(s) x {alt.gpus_per_node} {alt.gpu.name}, {topo}, "
            f"max_model_len {alt.max_model_len:,}, kv_cache_dtype {alt.kv_cache_dtype} -> "
            f"{p.kv_cache_tokens:,} KV tokens, {p.max_concurrency:.1f} concurrent requests")


def _kernel_alternatives(inp: PlanInput) -> list[str]:
    """When the engine cannot run the format on this GPU: the other engine, or the checkpoint this one
    re-quantizes (catalog `base`), on the same GPUs or, when those are too few, on more nodes."""
    fmt = inp.arch.quantization.format.value
    candidates: list[tuple[str, dict[str, Any]]] = [
        (f"{p.name} (it runs {fmt} on {inp.gpu.arch}: {p.kernels(inp.gpu.arch, inp.arch.quantization).path})",
         {"engine": p.name, "engine_version": None})
        for p in others(inp.engine)]
    try:
        base_id = get_model(inp.model).base
    except BadInput:
        base_id = None
    if base_id:
        base = get_model(base_id)
        candidates.append((f"the base checkpoint {base.repo} ({base.architecture().quantization.format.value})",
                           {"model": base.id, "arch": base.architecture()}))
    out: list[str] = []
    gpn = inp.gpus_per_node
    for label, changes in candidates:
        s = _try(inp, label, topology=Topology(tp=inp.gpus), **changes)
        for nodes in range(inp.nodes + 1, inp.nodes + 4):
            if s:
                break
            s = (_try(inp, label, nodes=nodes, topology=Topology(tp=gpn, pp=nodes), **changes)
                 or _try(inp, label, nodes=nodes, topology=Topology(tp=gpn * nodes), **changes))
        if s:
            out.append(s)
    return out


def _smaller_siblings(inp: PlanInput) -> list[Any]:
    """Catalog checkpoints of the same model (the same base) whose weights are smaller than this one's."""
    from .catalog import MODELS

    entry = next((m for m in MODELS.values() if m.id == inp.model), None)
    if entry is None:
        return []
    family = entry.base or entry.id
    size = Inventory.of(inp.arch).total_bytes
    return [m for m in MODELS.values() if m.id != entry.id and (m.base or m.id) == family
            and Inventory.of(m.architecture()).total_bytes < size]


def suggestions(inp: PlanInput) -> list[str]:
    """Concrete alternatives that fit, each re-planned with the same rules."""
    out: list[str] = []
    gpn = inp.gpus_per_node
    for nodes in range(inp.nodes + 1, inp.nodes + 4):
        n = gpn * nodes
        for label, topo in (
            ("more nodes, TP across nodes", Topology(tp=n)),
            ("more nodes, TP per node + PP across nodes", Topology(tp=gpn, pp=nodes)),
            ("more nodes, DP+EP", dp_ep_topology(inp.profile, n)),
        ):
            s = _try(inp, label, nodes=nodes, topology=topo)
            if s:
                out.append(s)
        if out:
            break
    if inp.arch.hybrid:
        # the same model's smaller published checkpoints (K3 FP8-BLOCK -> its MXFP4 and NVFP4 ones)
        out.extend(s for s in (_try(inp, f"the smaller checkpoint {m.repo} ({m.architecture().quantization.format.value})",
                                    model=m.id, arch=m.architecture()) for m in _smaller_siblings(inp)) if s)
    elif inp.arch.quantization.format is WeightFormat.FP8_BLOCK:
        int4 = replace(inp.arch, quantization=Quantization(WeightFormat.INT4_EXPERTS, group=32,
                                                           method="compressed-tensors", ignore=INT4_K2_IGNORE))
        s = _try(inp, "an INT4 (W4A16 experts) checkpoint, e.g. RedHatAI/Kimi-K2-Instruct-quantized.w4a16 (vllm-project/recipes)",
                 arch=int4)
        if s:
            out.append(s)
    if inp.profile.kernels(inp.gpu.arch, inp.arch.quantization).refused:
        out.extend(_kernel_alternatives(inp))
    if inp.kv_cache_dtype in ("auto", "bfloat16", "bf16", "float16"):
        s = _try(inp, "fp8 KV cache (--kv-cache-dtype fp8)", kv_cache_dtype="fp8")
        if s:
            out.append(s)
    if not inp.topology.expert_parallel and inp.topology.pp == 1:
        s = _try(inp, "DP+EP on the same GPUs", topology=dp_ep_topology(inp.profile, inp.gpus))
        if s:
            out.append(s)
    # Shorter context: the longest max_model_len that still fits, in 4K steps.
    p = plan(replace(inp, max_model_len=4096), suggest=False) if inp.max_model_len > 4096 else None
    if p is not None and p.fits:
        longest = min(inp.max_model_len, p.kv_cache_tokens) // 4096 * 4096
        if longest >= 4096:
            s = _try(inp, "shorter context", max_model_len=longest)
            if s:
                out.append(s)
    if not out:
        out.append("no single change fits: combine more nodes with an INT4 checkpoint and an fp8 KV cache")
    return out
