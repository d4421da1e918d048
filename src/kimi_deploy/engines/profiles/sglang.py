"""SGLang as data: its serving flags, defaults per release, memory accounting, topology rules, weight
kernels and the release each feature arrived in. The renderer that turns a Deployment into SGLang
commands is engines/sglang.py; it reads this profile.

Kernel rules are read from SGLang 0.5.23's code as installed here (paths relative to the sglang package)."""

from __future__ import annotations

import math
from typing import Mapping

from ...quant_formats import WeightFormat
from ..versions import Feature, Gate
from .base import (ANY_GPU, FALLBACK, NATIVE, REFUSED, WEIGHT_ONLY, Defaults, EngineProfile, Flag, HybridCapacity,
                   HybridInput, KernelPath, KernelTable, KeyGuard, Layout, Metrics, Overhead, OverheadInput,
                   TopologyRules, forward_bytes)

MiB = 1024**2

# --- serving flags (python/sglang/srt/server_args.py; checked against the installed parser by
# tests/test_launch_parsers.py) --------------------------------------------------------------------
# SGLang spells the KV dtypes its own way (--kv-cache-dtype choices).
KV_DTYPE = {"fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2", "bfloat16": "bf16", "bf16": "bf16"}
_STREAMING = {"fastsafetensors": Feature.LOAD_FORMAT_STREAMING, "runai_streamer": Feature.LOAD_FORMAT_STREAMING}
FLAGS: Mapping[str, Flag] = {
    "max_model_len": Flag("--context-length"),
    "max_num_seqs": Flag("--max-running-requests"),
    "max_num_batched_tokens": Flag("--chunked-prefill-size"),
    "mem_fraction_static": Flag("--mem-fraction-static"),
    "kv_cache_dtype": Flag("--kv-cache-dtype", values=KV_DTYPE, omit=("auto",)),
    # "Skip the multimodal encoder entirely" (sgl-project/sglang#28497)
    "language_model_only": Flag("--language-model-only", omit=(False,), switch=True,
                                features={True: Feature.LANGUAGE_MODEL_ONLY}),
    # SGLang's data-parallel encoder is a switch; "weights" (TP-sharded) is its default.
    "mm_encoder_tp_mode": Flag("--mm-enable-dp-encoder", values={"data": "data"}, omit=("weights",), switch=True,
                               features={"data": Feature.MM_ENCODER_TP_MODE}),
    "load_format": Flag("--load-format", omit=("auto",), features=_STREAMING),
    # the KDA temporal state's dtype (srt/arg_groups/fields/exec_.py --mamba-ssm-dtype: float32, bfloat16,
    # float16; unset: float32, srt/configs/mamba_utils.py)
    "state_dtype": Flag("--mamba-ssm-dtype", values={"float32": "float32", "bfloat16": "bfloat16"}, omit=("auto",)),
    # the radix cache is on unless --disable-radix-cache (srt/server_args.py); True is the default, no flag
    "prefix_caching": Flag("--disable-radix-cache", omit=(True,), off="--disable-radix-cache"),
}

# --- defaults and memory accounting (python/sglang/srt/arg_groups/memory_hook.py, 0.5.23) ------------

def _chunked_prefill(layout: Layout) -> int:
    """handle_gpu_memory_settings: 8192 tokens on 60-160 GiB GPUs (H100, H20, H200), 16384 above (B200,
    MI300), 4096 below."""
    return 16384 if layout.gpu_memory_gib >= 160 else 8192 if layout.gpu_memory_gib >= 60 else 4096


def cuda_graph_max_bs(layout: Layout, max_running_requests: int) -> int:
    """The largest decode batch captured (same function): 512 from 160 GiB, 512 at TP >= 4 (else 256) from
    60 GiB; a smaller max_running_requests lowers it."""
    if layout.gpu_memory_gib >= 160:
        bs = 512
    elif layout.gpu_memory_gib >= 60:
        bs = 512 if layout.tp >= 4 else 256
    else:
        bs = 160 if layout.tp >= 4 else 32
    return min(bs, max_running_requests)


# SGLang's own estimates, in MiB (reserve_for_graph_mb): 2 per decode batch slot; with DP attention
# 3 more per slot and DP rank (4.5 above 300 slots); 1.5 GiB for the MLA prefill graphs.
DECODE_GRAPH_MIB_PER_BS = 2
DP_ATTENTION_GRAPH_MIB = 3
DP_ATTENTION_GRAPH_MIB_LARGE = 4.5
MLA_PREFILL_GRAPHS_MIB = 1536
# DP attention's decode graphs as measured: "CUDA graph capture consumes ~20 GB per rank" at
# --cuda-graph-max-bs 128 with DP32 (sgl-project/sglang#24453): about 4.6 MiB per batch slot and DP rank.
DP_ATTENTION_GRAPH_MIB_MEASURED = 4.6


def _reserved_mib(layout: Layout, chunked: int, max_bs: int) -> float:
    """What SGLang keeps outside mem_fraction_static when it picks the fraction itself
    (handle_gpu_memory_settings): 512 MiB, 1.5 MiB per prefill-chunk token, 1 GiB per 8 GPUs of TP x PP,
    the CUDA-graph reserve, at least 10 GiB on GPUs above 60 GiB."""
    reserved = 512 + 1.5 * max(chunked, 2048) + layout.tp * layout.pp / 8 * 1024
    reserved += max_bs * DECODE_GRAPH_MIB_PER_BS + MLA_PREFILL_GRAPHS_MIB
    if layout.dp_attention:
        reserved += max_bs * layout.dp * (DP_ATTENTION_GRAPH_MIB_LARGE if max_bs > 300 else DP_ATTENTION_GRAPH_MIB)
    if layout.gpu_memory_gib > 60:
        reserved = max(reserved, 10 * 1024)
    return reserved


def _memory_fraction(layout: Layout, chunked: int, running: int) -> float:
    """mem_fraction_static = round((GPU MiB - reserved) / GPU MiB, 3)."""
    gpu_mib = layout.gpu_memory_gib * 1024
    return round((gpu_mib - _reserved_mib(layout, chunked, cuda_graph_max_bs(layout, running))) / gpu_mib, 3)


DEFAULTS = (
    # max_running_requests has no fixed default (SGLang derives it from the KV pool); 1024 stands for
    # "unset" here: it only caps the CUDA-graph batch, which never exceeds 512.
    Defaults(since="0", memory_fraction=_memory_fraction, max_num_batched_tokens=_chunked_prefill, max_num_seqs=1024,
             source="python/sglang/srt/arg_groups/memory_hook.py handle_gpu_memory_settings (0.5.23)"),
)


def overhead(o: OverheadInput) -> Overhead:
    """The KV pool is what is free after the weights load less pre-load free memory x (1 -
    mem_fraction_static) (mem_cache/kv_cache_configurator.py _profile_available_bytes): activations and
    CUDA graphs live in that (1 - fraction), and SGLang does not measure the graphs of an MLA model."""
    s, lay = o.settings, o.layout
    # With DP attention each rank prefills its share of the chunk (arg_groups/parallel_hook.py passes
    # chunked_prefill_size // attn_dp_size).
    act, moe = forward_bytes(o, s.max_num_batched_tokens // (lay.dp if lay.dp_attention else 1))
    max_bs = cuda_graph_max_bs(lay, s.max_num_seqs)
    outside = {"activations": act, "moe_workspace": moe,
               "decode_cuda_graphs": int(max_bs * DECODE_GRAPH_MIB_PER_BS * MiB),
               "prefill_cuda_graphs": MLA_PREFILL_GRAPHS_MIB * MiB}
    sources = {"activations": "prefill chunk x hidden x 12 bf16 buffers",
               "moe_workspace": "prefill chunk x top-k x expert shard (fused MoE intermediates)",
               "decode_cuda_graphs": f"max_bs {max_bs} x {DECODE_GRAPH_MIB_PER_BS} MiB (memory_hook.py)",
               "prefill_cuda_graphs": "MLA prefill graphs 1.5 GiB (memory_hook.py)"}
    if lay.dp_attention:
        outside["dp_attention_cuda_graphs"] = int(max_bs * lay.dp * DP_ATTENTION_GRAPH_MIB_MEASURED * MiB)
        sources["dp_attention_cuda_graphs"] = (
            f"max_bs {max_bs} x dp {lay.dp} x {DP_ATTENTION_GRAPH_MIB_MEASURED} MiB: sgl-project/sglang#24453, "
            "~20 GB per rank at max_bs 128, DP32 (SGLang itself reserves 3 MiB)")
    if o.on_cpu:
        return Overhead(inside_budget={}, sources=sources)
    allowance = int(o.gpu_memory_bytes * (1 - s.memory_fraction))
    return Overhead(inside_budget={}, outside_budget=outside, outside_allowance=allowance, sources=sources)


TOPOLOGY = TopologyRules(
    # --enable-dp-attention (SGLang's DP-attention guide, docs.sglang.io/docs/advanced_features/dp_dpa_smg_guide)
    dp_attention=True,
    decode_context_parallel=False,
    expert_parallel_spans_dp=False,  # --ep-size is the TP size
    dp_ep=lambda n: (n, n, True),
    # The draft always uses the target's embeddings and lm_head (python/sglang/srt/speculative/
    # eagle_worker_v2.py init_lm_head).
    draft_uses_target_embeddings=True,
    kv_block_tokens=None,  # token-granular pool (page size 1 by default)
    speculative_tree=True,  # --speculative-eagle-topk / --speculative-num-draft-tokens
    # EAGLE3 composes with PP; DSpark needs pp_size 1 except on a P/D prefill side ("DSpark pipeline
    # parallelism requires PD prefill; decode and non-disaggregated serving require pp_size == 1",
    # srt/arg_groups/speculative_hook.py _handle_dspark, 0.5.23).
    speculative_with_pp={"dspark": "SGLang runs DSpark with pipeline parallelism only on the prefill side of a "
                                   "P/D deployment (sglang srt/arg_groups/speculative_hook.py _handle_dspark)"},
    speculative_pp_on_prefill=("dspark",),
    # 0.5.23 has no MTP/NextN draft for Kimi: srt/configs/model_config.py rewrites no Kimi architecture to a
    # NextN/MTP class and srt/models has no Kimi MTP model; its K3 path is DSPARK (srt/arg_groups/kimi_k3_hook.py).
    hybrid_mtp_refused="SGLang 0.5.23 has no MTP draft for Kimi K3 / Kimi-Linear (no Kimi NextN/MTP model in "
                       "sglang/srt/models; srt/configs/model_config.py maps none); its K3 path is DSpark: use "
                       "method: dspark with a draft",
    # --disaggregation-transfer-backend mooncake (default) or nixl
    pd_transports=("mooncake", "nixl"),
)


KERNELS: KernelTable = {
    WeightFormat.BF16: ((ANY_GPU, KernelPath(NATIVE, "BF16")),),
    WeightFormat.NVFP4: (
        (("blackwell",), KernelPath(NATIVE, "FP4 tensor cores: FlashInfer TRT-LLM / CUTLASS NVFP4 MoE (SM100/SM103) "
                                    "(sglang modelopt_quant.py / compressed_tensors_w4a4_nvfp4_moe.py)")),
        (("ampere", "ada", "hopper"), KernelPath(FALLBACK, "FP4 Marlin MoE, weight-only, auto-selected on SM80-SM90 "
                                                 "(sglang modelopt_quant.py ModelOptNvFp4FusedMoEMethod: "
                                                 "use_marlin_fallback = (8, 0) <= capability < (10, 0); "
                                                 "compressed_tensors.py: 'serving this checkpoint weight-only via FP4 "
                                                 "Marlin instead')")),
        (ANY_GPU, KernelPath(REFUSED, "SGLang: 'Current platform does not support NVFP4 quantization with the "
                             "selected MoE backend. Please use Blackwell and above, or use moe_runner_backend=marlin "
                             "on SM80+.' (sglang python/sglang/srt/layers/quantization/modelopt_quant.py; FP4 Marlin "
                             "is CUDA-only)")),
    ),
    WeightFormat.MXFP4: (
        (("cdna4",), KernelPath(NATIVE, "AITER FlyDSL MXFP4 MoE on gfx95x (sglang quark/schemes/"
                                "quark_w4a4_mxfp4_moe.py)")),
        (("cdna3",), KernelPath(FALLBACK, "AITER MXFP4 MoE without the gfx95x FP4 instructions; not verified: the "
                                "checkpoint card lists MI350/MI355 only (huggingface.co/amd/Kimi-K2.5-MXFP4)")),
        (ANY_GPU, KernelPath(REFUSED, "SGLang runs Quark MXFP4 MoE only through AMD's aiter, which it imports on ROCm "
                             "only ('needs aiter's dynamic_mxfp4_quant, which is AMD ROCm only', sglang "
                             "python/sglang/srt/layers/quantization/quark/schemes/quark_w4a4_mxfp4_moe.py)")),
    ),
    # K3's compressed-tensors mxfp4-pack-quantized experts: srt/arg_groups/model_overrides/kimi_k3.py picks
    # moe_runner_backend flashinfer_mxfp4 on SM100/103/107 ("beats marlin"); elsewhere the Marlin runner.
    (WeightFormat.MXFP4, "compressed-tensors"): (
        (("blackwell",), KernelPath(NATIVE, "FlashInfer MXFP4 MoE runner (sglang srt/arg_groups/model_overrides/"
                                    "kimi_k3.py: moe_runner_backend=flashinfer_mxfp4 on SM100/103/107)")),
        (("ampere", "ada", "hopper"), KernelPath(WEIGHT_ONLY, "Marlin MXFP4 MoE, weight-only (the runner sglang "
                                                 "model_overrides/kimi_k3.py compares flashinfer_mxfp4 with); not "
                                                 "verified for K3")),
    ),
    WeightFormat.FP8_BLOCK: (
        (("ampere",), KernelPath(FALLBACK, "no FP8 tensor cores before SM89: FP8 Marlin, weight-only (sglang "
                                 "fp8_utils.py can_auto_enable_marlin_fp8: 80 <= sm < 89, and compressed_tensors.py "
                                 "CompressedTensorsW8A16Fp8 below the W8A8 scheme's SM89)")),
        (("ada", "hopper", "blackwell", "cdna3", "cdna4"), KernelPath(NATIVE, "FP8 tensor cores, block-scaled GEMM")),
    ),
    WeightFormat.INT4_EXPERTS: ((ANY_GPU, KernelPath(WEIGHT_ONLY, "INT4 W4A16 by design: Marlin WNA16 on CUDA, "
                                                     "Triton/FlyDSL WNA16 on ROCm")),),
}


# --- hybrid models (KDA + MLA): a state pool beside the KV pool ------------------------------------------
# SGLang 0.5.23 srt/mem_cache/kv_cache_configurator.py: of what the fraction leaves after the weights, the
# state pool takes r / (1 + r) with r = --mamba-full-memory-ratio (unset: 0.9), in slots of every KDA
# layer's conv + temporal state (srt/configs/mamba_utils.py KimiLinearStateShape, split over attention TP),
# K = floor((budget - slot) / slot) slots, (K + 1) slots allocated; with drafting the verify step's
# intermediate states are solved for jointly. The full-attention KV pool gets the rest. Running requests
# are capped at K / ratio: 3 slots per request with the radix cache, +2 for the extra_buffer strategy that
# Kimi-Linear and K3 get with overlap scheduling (MAMBA_CACHE_SIZE_MAX_RUNNING_REQUESTS_RATIO;
# srt/arg_groups/overrides.py resolving --mamba-radix-cache-strategy auto).
MAMBA_FULL_MEMORY_RATIO = 0.9
STATE_SLOTS_PER_REQUEST = 5
_HYBRID_SOURCES = {
    "pool": "sglang/srt/mem_cache/kv_cache_configurator.py (0.5.23): mamba_full_memory_ratio 0.9",
    "state": "sglang/srt/configs/mamba_utils.py KimiLinearStateShape (0.5.23)",
    "ratio": "MAMBA_CACHE_SIZE_MAX_RUNNING_REQUESTS_RATIO 3, +2 for extra_buffer (srt/arg_groups/overrides.py)",
}


def hybrid_capacity(h: HybridInput) -> HybridCapacity:
    # every pipeline rank sizes its slots for the stage with the most KDA layers (kv_cache_configurator.py
    # _handle_max_mamba_cache: max_stage_mamba_layers)
    kda = h.max_stage_kda_layers if h.max_stage_kda_layers is not None else h.kda_layers
    slot = kda * (h.conv_state_bytes() + h.recurrent_state_bytes())
    rest = max(h.free_bytes, 0)
    r = MAMBA_FULL_MEMORY_RATIO
    budget = rest * r / (1 + r)
    # without the radix cache a running request holds one slot (kv_cache_configurator.py)
    ratio = STATE_SLOTS_PER_REQUEST if h.prefix_caching else 1
    drafted = h.speculative_tokens + 1 if h.speculative_tokens else 0
    if not slot:
        k, intermediate = 0, 0
    elif drafted:
        k = max(0, math.floor((budget - slot * (1 + drafted)) / (slot * (1 + drafted / ratio))))
        intermediate = slot * (k // ratio + 1) * drafted
    else:
        k, intermediate = max(0, math.floor((budget - slot) / slot)), 0
    state_mem = (k + 1) * slot + intermediate if slot else 0
    per_token = h.kv_bytes_per_token_layer * h.mla_layers
    # a stage without MLA layers caches no tokens: only its state bounds it
    kv_tokens = max(rest - state_mem, 0) // per_token if per_token else None
    running = k // ratio
    bounds = ([kv_tokens * h.dcp / h.max_model_len] if kv_tokens is not None else []) + ([running] if slot else [])
    concurrency = min(bounds) if bounds else 0.0
    return HybridCapacity(
        kv_tokens=None if kv_tokens is None else int(kv_tokens), max_concurrency=concurrency,
        state_bytes_per_sequence=slot,
        state_slots_per_sequence=ratio, state_sequences=running,
        detail={"state_slots": k, "state_pool_bytes": int(state_mem), "max_running_requests": running},
        sources=_HYBRID_SOURCES)


# --- version gates: PR numbers in sgl-project/sglang; "≈" = release inferred from the merge date ---
GATES: Mapping[Feature, Gate] = {
    Feature.TOOL_PARSER_KIMI_K2: Gate("0.4.9", "sglang #7940 2025-07-11 (≈0.4.9)"),
    Feature.REASONING_PARSER_KIMI_K2: Gate("0.5.5", "sglang #12702 2025-11-06 (≈0.5.5); MoonshotAI/K2-Vendor-Verifier: >= 0.5.5.post2 for K2-Thinking"),
    Feature.DP_ATTENTION: Gate("0.4.0", "sglang #1970 2024-11"),
    Feature.ALL2ALL_BACKEND_FLAG: Gate("0.5.0", "sglang #8658 2025-08-01 (≈0.5.0): --moe-a2a-backend replaced --enable-deepep-moe"),
    Feature.PD_DISAGGREGATION: Gate("0.4.5", "sglang #4654 2025-03-21 (≈0.4.5)"),
    Feature.EPLB: Gate("0.4.7", "sglang #6469 2025-05-21 (≈0.4.7)"),
    Feature.CONFIG_FILE: Gate("0.5.3", "sglang #10534 2025-09-17 (≈0.5.3): --config FILE.yaml"),
    # EAGLE3 drafts for Kimi: "pip install sglang==0.5.6" (huggingface.co/AQ-MedAI/Kimi-K2-Instruct-eagle3);
    # a draft's own minimum (drafts.py: the MLA drafts need 0.5.14) is checked too.
    Feature.SPECULATIVE_EAGLE3: Gate("0.5.6", "huggingface.co/AQ-MedAI/Kimi-K2-Instruct-eagle3: sglang==0.5.6"),
    # sglang #28497 (opened 2026-06-17) added --language-model-only; 0.5.23 has it (checked against the
    # installed parser) and the first release with it is not confirmed, so the gate is the checked one.
    Feature.LANGUAGE_MODEL_ONLY: Gate("0.5.23", "sglang #28497 (opened 2026-06-17); verified in 0.5.23's parser"),
    Feature.MM_ENCODER_TP_MODE: Gate("0.5.6", "sglang #13126 2025-11-12 (≈0.5.6): --mm-enable-dp-encoder"),
    # Both loaders are --load-format choices in 0.5.23 (checked); their first release is not confirmed.
    Feature.LOAD_FORMAT_STREAMING: Gate("0.5.23", "verified in 0.5.23's --load-format choices"),
    # 0.5.23 registers both (srt/function_call/parser_names.py, srt/parser/reasoning_parser_names.py); the
    # first release with them is not confirmed, so the gate is the release checked.
    Feature.TOOL_PARSER_KIMI_K3: Gate("0.5.23", "verified in 0.5.23: srt/function_call/parser_names.py kimi_k3"),
    Feature.REASONING_PARSER_KIMI_K3: Gate("0.5.23", "verified in 0.5.23: srt/parser/reasoning_parser_names.py"),
    # --speculative-algorithm DSPARK and --speculative-dspark-block-size (srt/arg_groups/fields/spec.py); the
    # first release with them is not confirmed, so the gate is the release checked.
    Feature.SPECULATIVE_DSPARK: Gate("0.5.23", "verified in 0.5.23: srt/arg_groups/fields/spec.py DSPARK"),
}

PROFILE = EngineProfile(
    name="sglang", display="SGLang", flags=FLAGS, defaults=DEFAULTS,
    memory_fraction_field="mem_fraction_static", overhead=overhead, topology=TOPOLOGY, kernel_table=KERNELS,
    gates=GATES, model_min_version=lambda entry: entry.min_sglang if entry is not None else None,
    draft_min_version=lambda d: d.min_sglang, hybrid_capacity=hybrid_capacity,
    draft_refusal=lambda d: d.sglang_refused,
    # SGLang's /health runs a 1-token generation, HEALTH_CHECK_TIMEOUT 20 s (python/sglang/srt/entrypoints/http_server.py).
    readiness_probe_timeout_s=25,
    distributions=("sglang",),
    stock_images=("lmsysorg/sglang", "rocm/sgl-dev", "rocm/sglang"),
    # sglang 0.5.23 python/sglang/srt/observability/metrics_collector.py: cached/prompt token counters as
    # requests finish (TokenizerMetricsCollector); the hit-rate gauge covers recent batches only
    # (SchedulerMetricsCollector).
    metrics=Metrics(keep=("sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage",
                          "sglang:cache_hit_rate", "sglang:gen_throughput", "sglang:cached_tokens",
                          "sglang:prompt_tokens"),
                    prefix_cache_hits="sglang:cached_tokens", prefix_cache_queries="sglang:prompt_tokens",
                    prefix_cache_gauge="sglang:cache_hit_rate"),
    router_module="sglang_router.launch_router",  # sgl-project/sglang sgl-model-gateway/bindings/python
    # SGLang checks the key on every HTTP route itself but always lets through paths starting with /health,
    # /ready and /metrics, and OPTIONS (python/sglang/srt/utils/auth.py decide_request_auth, 0.5.23): /health,
    # /health_generate (a 1-token generation, no text returned) and /ready answer without the key, /metrics too
    # once --enable-metrics is on. It loads no middleware of ours (no such option in srt/server_args.py), and
    # its check passes every non-HTTP scope, so the WebSocket /v1/realtime (streaming speech recognition,
    # refused for a model without it: srt/entrypoints/openai/realtime/handler.py) is outside it.
    key_guard=KeyGuard(middleware=None, open_paths=("/health", "/health_generate", "/ready"),
                       metrics_path="/metrics", metrics_behind_key=False,
                       source="sglang 0.5.23 python/sglang/srt/utils/auth.py decide_request_auth"),
)
