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
from typing import Any, Literal

from .architecture import Architecture, Inventory, WeightFormat, expert_tensors
from .quant_formats import INT4_K2_IGNORE, Quantization
from .quant_support import FALLBACK, KernelPath, weight_kernel
from .catalog import GPU, GiB, get_model
from .drafts import DraftArch
from .errors import BadInput

Engine = Literal["vllm", "sglang"]
ENGINES: tuple[str, ...] = ("vllm", "sglang")

# Bytes per cached value for each --kv-cache-dtype (the choices of vllm/config/cache.py CacheDType and of
# sglang python/sglang/srt/server_args.py).
KV_DTYPE_BYTES: dict[str, float] = {
    "auto": 2, "bfloat16": 2, "bf16": 2, "float16": 2,
    "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1,
}
# vLLM's fp8_ds_mla layout: 512 fp8 latent + 4 fp32 scales + 64 bf16 rope = 656 bytes per token-layer
# (vllm FlashMLA sparse/fp8 cache format, as in vllm #51041's discussion).
FP8_DS_MLA_BYTES_PER_TOKEN_LAYER = 656

# vLLM allocates MLA KV in blocks of 64 tokens on FlashMLA: the K2-Thinking TP8 log reports 715,072
# tokens for 46.80 GiB, i.e. floor(46.80 GiB / 70,272 B / 64) * 64 (vllm-project/recipes Kimi-K2-Think.md).
VLLM_MLA_BLOCK_TOKENS = 64

# --- runtime overhead model (documented, calibrated; benchmarks/planner_accuracy.py checks it) ---------
# Activation peak of vLLM's profiling run, per token of max_num_batched_tokens: about a dozen hidden-size
# bf16 buffers live at once (residual, normed input, attention in/out, MLP in/out, all-reduce staging).
ACT_HIDDEN_BUFFERS = 12
# Sampler profiling: max_num_seqs rows of full-vocab fp32 logits plus the same again for probabilities
# (vLLM gathers logits to the full vocabulary on every rank before sampling).
SAMPLER_FP32_COPIES = 2
# Memory outside PyTorch's allocator: CUDA graphs, NCCL and custom all-reduce buffers, cuBLAS workspaces.
# Calibrated against the two public DeepSeek-V3-architecture logs on 8xH200 (non_torch 7.16 GiB on
# vLLM V0 for DeepSeek-R1; about 4.9 GiB implied by the K2-Thinking TP8 recipe log); 0.5 GiB on one GPU
# (single-GPU vLLM logs show non_torch 0.1-0.7 GiB).
NON_TORCH_MULTI_GPU = 4.5 * GiB
NON_TORCH_SINGLE_GPU = 0.5 * GiB

# Defaults when the spec does not set them.
VLLM_DEFAULT_GPU_UTIL = 0.92  # vLLM default since vllm-project/vllm#38284 (vllm/config/cache.py)
SGLANG_DEFAULT_MEM_FRACTION = 0.85  # K2 deploy_guidance PD example uses 0.85 (K2R docs/deploy_guidance.md)
# API-server defaults on 70-160 GiB GPUs other than A100 (vllm/engine/arg_utils.py get_batch_defaults;
# vLLM 0.32 uses 16384 batched tokens from 160 GiB, e.g. B200).
VLLM_DEFAULT_BATCHED_TOKENS = 8192
VLLM_DEFAULT_MAX_SEQS = 1024


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
    gpu_memory_utilization: float | None = None  # vLLM; SGLang's mem_fraction_static
    max_num_batched_tokens: int = VLLM_DEFAULT_BATCHED_TOKENS
    max_num_seqs: int = VLLM_DEFAULT_MAX_SEQS
    # The vision tower is not built (vLLM/SGLang --language-model-only): its bytes stay off the GPUs.
    language_model_only: bool = False
    # An EAGLE3 draft: its weights (split like the target's, on the last PP stage, where the lm_head and
    # the hidden states it drafts from are) and its KV cache, allocated per token alongside the target's.
    draft: DraftArch | None = None

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def memory_fraction(self) -> float:
        if self.gpu_memory_utilization is not None:
            return self.gpu_memory_utilization
        return VLLM_DEFAULT_GPU_UTIL if self.engine == "vllm" else SGLANG_DEFAULT_MEM_FRACTION


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
            "fits": self.fits,
            "problems": self.problems,
            "suggestions": self.suggestions,
            "assumptions": self.assumptions,
        }


# --- topology checks -------------------------------------------------------------------------------

def attention_tp(inp: PlanInput) -> int:
    t = inp.topology
    if inp.engine == "sglang" and t.dp_attention:
        return t.tp // t.dp
    return t.tp


def world_size(engine: str, t: Topology) -> int:
    """GPUs the topology uses. vLLM: TP x PP x DP. SGLang: TP x PP, times DP only without DP attention
    (SGLang's DP-attention guide, docs.sglang.io/docs/advanced_features/dp_dpa_smg_guide)."""
    if engine == "sglang" and t.dp_attention:
        return t.tp * t.pp
    return t.tp * t.pp * t.dp


def check_topology(inp: PlanInput) -> None:
    """Raise BadInput for a topology the engine cannot express for this model."""
    t, a = inp.topology, inp.arch
    if inp.engine not in ENGINES:
        raise BadInput(f"unknown engine {inp.engine!r}; known: {', '.join(ENGINES)}", "engine.name")
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
    ws = world_size(inp.engine, t)
    if ws != inp.gpus:
        formula = "tp*pp" if inp.engine == "sglang" and t.dp_attention else "tp*pp*dp"
        raise BadInput(
            f"{formula} = {ws} GPUs but the hardware has {inp.nodes} node(s) x {inp.gpus_per_node} = "
            f"{inp.gpus} GPUs", "topology")
    if t.expert_parallel and not a.is_moe:
        raise BadInput("expert parallelism needs a MoE model (n_routed_experts = 0)", "topology.expert_parallel")
    if inp.engine == "sglang" and t.dp_attention and t.tp % t.dp:
        raise BadInput(f"with dp_attention, tp ({t.tp}) must be a multiple of dp ({t.dp})", "topology.dp")
    if inp.engine == "sglang" and t.dcp > 1:
        raise BadInput("decode context parallel (dcp) is a vLLM feature", "topology.dcp")
    if inp.engine == "vllm" and t.dp_attention:
        raise BadInput("dp_attention is SGLang's flag; vLLM gets the same effect with dp + expert_parallel",
                       "topology.dp_attention")
    atp = attention_tp(inp)
    if a.num_attention_heads % atp:
        raise BadInput(
            f"attention tensor-parallel size {atp} does not divide num_attention_heads "
            f"{a.num_attention_heads}", "topology.tp")
    if t.tp % t.dcp:
        raise BadInput(f"dcp ({t.dcp}) must divide tp ({t.tp})", "topology.dcp")
    if t.pp > a.num_hidden_layers:
        raise BadInput(f"pp ({t.pp}) exceeds the {a.num_hidden_layers} layers", "topology.pp")
    if a.vocab_size % t.tp:
        raise BadInput(f"tp ({t.tp}) does not divide vocab_size {a.vocab_size}", "topology.tp")
    if inp.kv_cache_dtype not in KV_DTYPE_BYTES and inp.kv_cache_dtype != "fp8_ds_mla":
        raise BadInput(f"unknown kv_cache_dtype {inp.kv_cache_dtype!r}; allowed: "
                       f"{', '.join([*KV_DTYPE_BYTES, 'fp8_ds_mla'])}", "serving.kv_cache_dtype")


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
    kernel = kernel or weight_kernel(inp.engine, inp.gpu.arch, q)
    if kernel.refused:
        out.append(f"{q.format.value} weights cannot run on {inp.gpu.name} ({inp.gpu.arch}) with {inp.engine}: "
                   f"{kernel.detail}")
    expert_ways = 1 if (t.expert_parallel and inp.engine == "vllm") else t.tp
    if inp.engine == "sglang" and t.expert_parallel:
        expert_ways = 1  # SGLang with --ep-size = tp keeps experts whole
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
    sglang = inp.engine == "sglang"
    ep_world = (t.tp if sglang else t.tp * t.dp) if t.expert_parallel else 0
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
    sglang = inp.engine == "sglang"
    ep_world = t.tp * t.dp if (t.expert_parallel and not sglang) else (t.tp if (sglang and t.expert_parallel) else 1)
    expert_unit = sum(t.nbytes for t in expert_tensors(arch)) if arch.is_moe else 0
    n_dp = 1 if (sglang and t.dp_attention) else t.dp
    result: list[int] = []
    worst: dict[str, int] = {}
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
                    if kind in ("embed", "vision") and not first:
                        continue
                    if kind in ("lm_head", "final_norm") and not last:
                        continue
                    if kind in ("attn_replicated", "router", "final_norm", "vision"):
                        b = nbytes
                    elif kind == "embed":
                        b = nbytes if (sglang and t.dp_attention) else nbytes // t.tp
                    elif kind == "attn_sharded":
                        b = nbytes // atp
                    elif kind == "routed_experts" and ep_world > 1:
                        n = arch.n_routed_experts
                        if sglang:
                            rank = tp_rank
                        else:
                            rank = dp_rank * t.tp + tp_rank
                        local = n // ep_world + (1 if rank < n % ep_world else 0)
                        b = local * expert_unit
                    else:  # lm_head, dense_mlp, shared_experts, routed experts without EP
                        b = nbytes // t.tp
                    by_kind[kind] = by_kind.get(kind, 0) + b
                if inp.draft is not None and last:
                    by_kind["draft"] = draft_bytes_per_gpu(inp)
                total = sum(by_kind.values())
                result.append(total)
                if total >= sum(worst.values()):
                    worst = by_kind
    return result, worst


# --- KV cache and overhead -------------------------------------------------------------------------

def kv_bytes_per_token_layer(arch: Architecture, kv_dtype: str) -> int:
    if kv_dtype == "fp8_ds_mla":
        return FP8_DS_MLA_BYTES_PER_TOKEN_LAYER
    return int(arch.kv_latent_dim * KV_DTYPE_BYTES[kv_dtype])


def draft_bytes_per_gpu(inp: PlanInput) -> int:
    """The draft's weights on one GPU of the last stage (SGLang always uses the target's embeddings)."""
    assert inp.draft is not None
    return inp.draft.bytes_per_gpu(inp.topology.tp, attention_tp(inp), target_embeddings=inp.engine == "sglang")


def draft_kv_bytes_per_token(inp: PlanInput) -> int:
    """The draft's KV per token on one GPU, in the target's cache dtype (vLLM allocates the draft's
    layers from the same KV cache config as the target's, vllm/v1/spec_decode/eagle.py)."""
    if inp.draft is None:
        return 0
    per_value = 1.0 if inp.kv_cache_dtype == "fp8_ds_mla" else KV_DTYPE_BYTES[inp.kv_cache_dtype]
    return inp.draft.kv_bytes_per_token(per_value, attention_tp(inp))


def overhead(inp: PlanInput) -> dict[str, int]:
    """Per-GPU memory the engine needs besides weights and KV cache (see the constants above)."""
    arch = inp.arch
    if inp.engine == "sglang":
        # SGLang's mem_fraction_static already leaves (1 - fraction) for activations and CUDA graphs:
        # the KV pool is fraction * memory - weights (sglang python/sglang/srt/mem_cache/kv_cache_configurator.py
        # _profile_available_bytes), so nothing more is subtracted.
        return {"reserved_outside_fraction": int(inp.gpu.memory_bytes * (1 - inp.memory_fraction))}
    tokens = inp.max_num_batched_tokens
    moe_inter = arch.moe_intermediate_size // (1 if inp.topology.expert_parallel else inp.topology.tp)
    act = tokens * arch.hidden_size * 2 * ACT_HIDDEN_BUFFERS
    moe = tokens * arch.num_experts_per_tok * (2 * moe_inter + arch.hidden_size) * 2 if arch.is_moe else 0
    sampler = inp.max_num_seqs * arch.vocab_size * 4 * SAMPLER_FP32_COPIES
    multi = inp.gpus > 1
    non_torch = NON_TORCH_MULTI_GPU if multi else NON_TORCH_SINGLE_GPU
    if inp.gpu.vendor == "cpu":
        non_torch = 0
    return {"activations": act, "moe_workspace": moe, "sampler": sampler, "non_torch": int(non_torch)}


# --- the planner -----------------------------------------------------------------------------------

def plan(inp: PlanInput, suggest: bool = True) -> Plan:
    """Plan one deployment. Raises BadInput for impossible topologies; a topology that is valid but does
    not fit returns fits=False with problems and (when `suggest`) alternatives."""
    check_topology(inp)
    arch, t = inp.arch, inp.topology
    inv = Inventory.of(arch)
    kernel = weight_kernel(inp.engine, inp.gpu.arch, arch.quantization)
    problems = quantization_problems(inp, kernel)
    per_gpu, worst_kinds = per_gpu_weights(inp, inv)
    weight_max = max(per_gpu)
    ovh = overhead(inp)
    ovh_bytes = sum(ovh.values())
    mem = inp.gpu.memory_bytes
    budget = int(mem * inp.memory_fraction) if inp.engine == "vllm" else mem
    per_layer_tok = kv_bytes_per_token_layer(arch, inp.kv_cache_dtype)
    stages = pp_layer_ranges(arch.num_hidden_layers, t.pp)
    # KV bytes on the tightest GPU; every GPU of a stage holds the latent for its layers.
    n_dp = 1 if (inp.engine == "sglang" and t.dp_attention) else t.dp
    stage_tokens = []
    kv_free_min = None
    draft_kv = draft_kv_bytes_per_token(inp)
    for s, layers in enumerate(stages):
        stage_gpus = [per_gpu[(d * t.pp + s) * t.tp + r] for d in range(n_dp) for r in range(t.tp)]
        kv_free = budget - max(stage_gpus) - ovh_bytes
        kv_free_min = kv_free if kv_free_min is None else min(kv_free_min, kv_free)
        per_token = per_layer_tok * len(layers) + (draft_kv if s == t.pp - 1 else 0)
        tok = max(kv_free, 0) // per_token if per_token else 0
        stage_tokens.append(tok)
    tokens = min(stage_tokens) * t.dcp
    if inp.engine == "vllm" and inp.gpu.vendor != "cpu":
        tokens = tokens // VLLM_MLA_BLOCK_TOKENS * VLLM_MLA_BLOCK_TOKENS
    kv_bytes = max(kv_free_min or 0, 0)
    if weight_max + ovh_bytes > budget and inp.engine == "vllm":
        problems.append(
            f"weights need {weight_max / GiB:.1f} GiB per GPU plus {ovh_bytes / GiB:.1f} GiB runtime overhead, "
            f"but only {budget / GiB:.1f} GiB of the {inp.gpu.name}'s {inp.gpu.memory_gib} GiB is usable at "
            f"gpu_memory_utilization {inp.memory_fraction}")
    elif weight_max + ovh_bytes > budget:  # SGLang: the overhead is what lies outside mem_fraction_static
        problems.append(
            f"weights need {weight_max / GiB:.1f} GiB per GPU, but only {(budget - ovh_bytes) / GiB:.1f} GiB of the "
            f"{inp.gpu.name}'s {inp.gpu.memory_gib} GiB holds weights and KV cache at mem_fraction_static "
            f"{inp.memory_fraction}")
    elif tokens < inp.max_model_len:
        problems.append(
            f"KV cache holds {tokens:,} tokens per engine instance, fewer than one request of "
            f"max_model_len {inp.max_model_len:,} (the engine refuses to start)")
    fits = not problems
    kv_total_per_token = per_layer_tok * arch.num_hidden_layers + draft_kv
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
        max_concurrency=tokens / inp.max_model_len,
        fits=fits,
        problems=problems,
        assumptions={**_assumptions(inp, ovh), "weight_kernel": {"path": kernel.path, "detail": kernel.detail},
                     "interconnect": interconnect(inp)},
        overhead_breakdown=ovh,
        weight_breakdown=worst_kinds,
    )
    if not fits and suggest:
        result.suggestions = suggestions(inp)
    return result


def _assumptions(inp: PlanInput, ovh: dict[str, int]) -> dict[str, Any]:
    t = inp.topology
    return {
        "gpu_memory_bytes": inp.gpu.memory_bytes,
        "gpu_memory_source": inp.gpu.source,
        "memory_fraction": inp.memory_fraction,
        "memory_fraction_flag": "--gpu-memory-utilization" if inp.engine == "vllm" else "--mem-fraction-static",
        "weight_format": inp.arch.quantization.format.value,
        "kv_cache_dtype": inp.kv_cache_dtype,
        "max_model_len": inp.max_model_len,
        "max_num_batched_tokens": inp.max_num_batched_tokens,
        "max_num_seqs": inp.max_num_seqs,
        "topology": {"tp": t.tp, "pp": t.pp, "dp": t.dp, "expert_parallel": t.expert_parallel,
                     "dp_attention": t.dp_attention, "dcp": t.dcp},
        "kv_replicated_on_tp_ranks": t.dcp == 1,
        "engine_instances": 1 if (inp.engine == "sglang" and t.dp_attention) else t.dp,
        "overhead_bytes": ovh,
        "per_gpu_weight_bytes_is": "the largest GPU (PP stages and uneven expert splits differ)",
        "nodes_planned": inp.nodes,
        "language_model_only": inp.language_model_only,
        "draft": None if inp.draft is None else {
            "attention": inp.draft.attention, "layers": inp.draft.layers,
            "total_bytes": inp.draft.total_bytes,
            "bytes_per_gpu": draft_bytes_per_gpu(inp),
            "kv_bytes_per_token_per_gpu": draft_kv_bytes_per_token(inp),
        },
    }


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
    other = "vllm" if inp.engine == "sglang" else "sglang"
    path = weight_kernel(other, inp.gpu.arch, inp.arch.quantization).path
    candidates: list[tuple[str, dict[str, Any]]] = [
        (f"{other} (it runs {inp.arch.quantization.format.value} on {inp.gpu.arch}: {path})", {"engine": other})]
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


def suggestions(inp: PlanInput) -> list[str]:
    """Concrete alternatives that fit, each re-planned with the same rules."""
    out: list[str] = []
    gpn = inp.gpus_per_node
    for nodes in range(inp.nodes + 1, inp.nodes + 4):
        n = gpn * nodes
        for label, topo in (
            ("more nodes, TP across nodes", Topology(tp=n)),
            ("more nodes, TP per node + PP across nodes", Topology(tp=gpn, pp=nodes)),
            ("more nodes, DP+EP", Topology(tp=1, dp=n, expert_parallel=True) if inp.engine == "vllm"
             else Topology(tp=n, dp=n, dp_attention=True, expert_parallel=True)),
        ):
            s = _try(inp, label, nodes=nodes, topology=topo)
            if s:
                out.append(s)
        if out:
            break
    if inp.arch.quantization.format is WeightFormat.FP8_BLOCK:
        int4 = replace(inp.arch, quantization=Quantization(WeightFormat.INT4_EXPERTS, group=32,
                                                           method="compressed-tensors", ignore=INT4_K2_IGNORE))
        s = _try(inp, "an INT4 (W4A16 experts) checkpoint, e.g. RedHatAI/Kimi-K2-Instruct-quantized.w4a16 (vllm-project/recipes)",
                 arch=int4)
        if s:
            out.append(s)
    if weight_kernel(inp.engine, inp.gpu.arch, inp.arch.quantization).refused:
        out.extend(_kernel_alternatives(inp))
    if inp.kv_cache_dtype in ("auto", "bfloat16", "bf16", "float16"):
        s = _try(inp, "fp8 KV cache (--kv-cache-dtype fp8)", kv_cache_dtype="fp8")
        if s:
            out.append(s)
    if inp.engine == "vllm" and not inp.topology.expert_parallel and inp.topology.pp == 1:
        s = _try(inp, "DP+EP on the same GPUs",
                 topology=Topology(tp=1, dp=inp.gpus, expert_parallel=True))
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
