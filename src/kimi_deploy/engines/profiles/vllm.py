"""vLLM as data: its serving flags, defaults per release, memory accounting, topology rules, weight
kernels and the release each feature arrived in. The renderer that turns a Deployment into vLLM commands
is engines/vllm.py; it reads this profile.

Kernel rules are read from vLLM 0.32.0's code as installed here (paths relative to the vllm package)."""

from __future__ import annotations

from typing import Any, Mapping

from ...quant_formats import Quantization, WeightFormat
from ..versions import Feature, Gate
from .base import (EMULATED, FALLBACK, NATIVE, WEIGHT_ONLY, Defaults, EngineProfile, Flag, KernelPath,
                   Overhead, OverheadInput, TopologyRules)

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
}


# --- defaults -------------------------------------------------------------------------------------

def _batched_tokens(gpu_gib: float) -> int:
    """API-server default (vllm/engine/arg_utils.py get_batch_defaults, 0.32): 16384 from 160 GiB of device
    memory, 8192 below (the planner's GPUs all have >= 70 GiB; A100's own row is the same 8192)."""
    return 16384 if gpu_gib >= 160 else 8192


DEFAULTS = (
    Defaults(since="0", memory_fraction=0.90, max_num_batched_tokens=8192, max_num_seqs=1024,
             source="vllm/config/cache.py gpu_memory_utilization 0.9; arg_utils.py get_batch_defaults "
                    "(OpenAI server, >= 70 GiB GPUs: 8192 batched tokens, 1024 sequences)"),
    Defaults(since="0.32.0", memory_fraction=0.92, max_num_batched_tokens=_batched_tokens, max_num_seqs=1024,
             source="vllm-project/vllm#38284 (gpu_memory_utilization 0.92); get_batch_defaults 16384 "
                    "batched tokens from 160 GiB"),
)


# --- memory accounting ----------------------------------------------------------------------------
# vLLM's KV budget is gpu_memory_utilization x total memory minus what its profiling run measured:
# weights, the activation peak of a max_num_batched_tokens forward, the sampler's dummy run and memory
# outside PyTorch (vllm/v1/worker/gpu_worker.py determine_available_memory; vllm/utils/mem_utils.py).

# Activation peak per token of max_num_batched_tokens: about a dozen hidden-size bf16 buffers live at once
# (residual, normed input, attention in/out, MLP in/out, all-reduce staging).
ACT_HIDDEN_BUFFERS = 12
# The sampler's dummy run: max_num_seqs rows of full-vocab fp32 logits plus the same again for
# probabilities (vLLM gathers logits to the full vocabulary on every rank before sampling).
SAMPLER_FP32_COPIES = 2
# Memory outside PyTorch's allocator on more than one GPU: NCCL and custom all-reduce buffers, cuBLAS
# workspaces. Calibrated on the public DeepSeek-V3-architecture logs on 8xH200 (the K2-Thinking TP8
# recipe log); 0.5 GiB on one GPU (single-GPU vLLM logs show non_torch 0.1-0.7 GiB).
NON_TORCH_MULTI_GPU = 4.5 * GiB
NON_TORCH_SINGLE_GPU = 0.5 * GiB


def overhead(o: OverheadInput) -> Overhead:
    s = o.settings
    tokens = s.max_num_batched_tokens
    moe_inter = o.moe_intermediate_size // (1 if o.expert_parallel else o.tp)
    act = tokens * o.hidden_size * 2 * ACT_HIDDEN_BUFFERS
    moe = tokens * o.num_experts_per_tok * (2 * moe_inter + o.hidden_size) * 2 if o.moe_intermediate_size else 0
    sampler = s.max_num_seqs * o.vocab_size * 4 * SAMPLER_FP32_COPIES
    non_torch = 0 if o.on_cpu else (NON_TORCH_MULTI_GPU if o.gpus > 1 else NON_TORCH_SINGLE_GPU)
    return Overhead(inside_budget={"activations": act, "moe_workspace": moe, "sampler": sampler,
                                   "non_torch": int(non_torch)})


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
    # (vllm-project/vllm#50098)" (vllm-project/recipes models/moonshotai/Kimi-K2.7-Code.yaml).
    speculative_with_pp="vLLM cannot combine an EAGLE3 draft with pipeline parallelism (vllm-project/vllm#50098)",
    pd_transports=("nixl",),  # NixlConnector (vllm docs/features/nixl_connector_usage.md)
)


# --- weight kernels -------------------------------------------------------------------------------

def kernels(arch: str, q: Quantization) -> KernelPath:
    f = q.format
    if f is WeightFormat.BF16:
        return KernelPath(NATIVE, "BF16")
    if f is WeightFormat.NVFP4:
        if arch == "blackwell":
            return KernelPath(NATIVE, "FP4 tensor cores: FlashInfer TRT-LLM / CUTLASS NVFP4 MoE (SM100/SM103) "
                              "(vllm fused_moe/oracle/nvfp4.py)")
        if arch in ("ampere", "ada", "hopper"):
            return KernelPath(FALLBACK, "FP4 Marlin MoE, weight-only W4A16: activation quantization is dropped "
                              "(vllm fused_moe/oracle/nvfp4.py backend order ends MARLIN, EMULATION; "
                              "marlin_moe.py: CUDA SM75+)")
        if arch in ("cdna3", "cdna4"):
            return KernelPath(EMULATED, "no NVFP4 MoE kernel on ROCm: the EMULATION backend dequantizes the "
                              "experts to BF16 each forward (vllm fused_moe/experts/nvfp4_emulation_moe.py; "
                              "modelopt_fp4 is in vllm/platforms/rocm.py supported_quantization)")
        return KernelPath(EMULATED, "not checked for this device; vLLM's NVFP4 oracle falls back to EMULATION")
    if f is WeightFormat.MXFP4:
        if arch == "cdna4":
            return KernelPath(NATIVE, "gfx950 FP4 instructions: AITER MXFP4 x MXFP4 MoE (vllm platforms/rocm.py "
                              "supports_mx: gfx95; fused_moe/oracle/mxfp4.py AITER_MXFP4_MXFP4)")
        if arch == "blackwell":
            return KernelPath(NATIVE, "CUTLASS MXFP4 x MXFP4 MoE where ops.mxfp4_experts_quant_supported "
                              "(vllm fused_moe/experts/cutlass_moe.py CutlassExpertsMxfp4; oracle/mxfp4.py)")
        return KernelPath(EMULATED, "no native MXFP4 on this device: Quark OCP MX falls back to 'Simulated "
                          "weight dequantization and activation QDQ ... computed in high precision' (vllm "
                          "quark/schemes/quark_ocp_mx.py; quark_moe.py: 'If no native backend available, use "
                          "emulation')")
    if f is WeightFormat.FP8_BLOCK:
        if arch == "ampere":
            return KernelPath(FALLBACK, "no FP8 tensor cores before SM89: FP8 Marlin, weight-only (vllm MarlinFP8)")
        if arch in ("ada", "hopper", "blackwell", "cdna3", "cdna4"):
            return KernelPath(NATIVE, "FP8 tensor cores, block-scaled GEMM")
        return KernelPath(EMULATED, "not checked for this device")
    return KernelPath(WEIGHT_ONLY, "INT4 W4A16 by design: Marlin WNA16 on CUDA, Triton WNA16 on ROCm "
                      "(vllm compressed_tensors_moe_wna16*.py)")


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
}


def _model_min(entry: Any) -> str | None:
    return entry.min_vllm if entry is not None else None


PROFILE = EngineProfile(
    name="vllm", display="vLLM", flags=FLAGS, defaults=DEFAULTS, fraction_covers="all",
    memory_fraction_field="gpu_memory_utilization", overhead=overhead, topology=TOPOLOGY, kernels=kernels,
    gates=GATES, model_min_version=_model_min, draft_min_version=lambda d: d.min_vllm,
    # vLLM's /health answers at once, or refuses connections until the weights are loaded.
    readiness_probe_timeout_s=5,
)
