"""SGLang as data: its serving flags, defaults per release, memory accounting, topology rules, weight
kernels and the release each feature arrived in. The renderer that turns a Deployment into SGLang
commands is engines/sglang.py; it reads this profile.

Kernel rules are read from SGLang 0.5.23's code as installed here (paths relative to the sglang package)."""

from __future__ import annotations

from typing import Mapping

from ...quant_formats import Quantization, WeightFormat
from ..versions import Feature, Gate
from .base import (FALLBACK, NATIVE, REFUSED, WEIGHT_ONLY, EMULATED, Defaults, EngineProfile, Flag, KernelPath,
                   Overhead, OverheadInput, TopologyRules)

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
}

DEFAULTS = (
    Defaults(since="0", memory_fraction=0.85, max_num_batched_tokens=8192, max_num_seqs=1024,
             source="mem_fraction_static 0.85 as in MoonshotAI/Kimi-K2 docs/deploy_guidance.md's SGLang "
                    "examples; chunked prefill 8192 and 1024 running requests as vLLM's"),
)


def overhead(o: OverheadInput) -> Overhead:
    # SGLang's KV pool is mem_fraction_static x memory - weights (python/sglang/srt/mem_cache/
    # kv_cache_configurator.py _profile_available_bytes): the runtime lives in what the fraction leaves.
    allowance = int(o.gpu_memory_bytes * (1 - o.settings.memory_fraction))
    return Overhead(inside_budget={}, outside_budget={}, outside_allowance=allowance)


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
    speculative_with_pp=None,
    # --disaggregation-transfer-backend mooncake (default) or nixl
    pd_transports=("mooncake", "nixl"),
)


def kernels(arch: str, q: Quantization) -> KernelPath:
    f = q.format
    if f is WeightFormat.BF16:
        return KernelPath(NATIVE, "BF16")
    if f is WeightFormat.NVFP4:
        if arch == "blackwell":
            return KernelPath(NATIVE, "FP4 tensor cores: FlashInfer TRT-LLM / CUTLASS NVFP4 MoE (SM100/SM103) "
                              "(sglang modelopt_quant.py / compressed_tensors_w4a4_nvfp4_moe.py)")
        if arch in ("ampere", "ada", "hopper"):
            return KernelPath(FALLBACK, "FP4 Marlin MoE, weight-only, auto-selected on SM80-SM90 (sglang "
                              "modelopt_quant.py ModelOptNvFp4FusedMoEMethod: use_marlin_fallback = (8, 0) <= "
                              "capability < (10, 0); compressed_tensors.py: 'serving this checkpoint weight-only "
                              "via FP4 Marlin instead')")
        return KernelPath(REFUSED, "SGLang: 'Current platform does not support NVFP4 quantization with the selected "
                          "MoE backend. Please use Blackwell and above, or use moe_runner_backend=marlin on SM80+.' "
                          "(sglang python/sglang/srt/layers/quantization/modelopt_quant.py; FP4 Marlin is CUDA-only)")
    if f is WeightFormat.MXFP4:
        if arch == "cdna4":
            return KernelPath(NATIVE, "AITER FlyDSL MXFP4 MoE on gfx95x (sglang quark/schemes/"
                              "quark_w4a4_mxfp4_moe.py)")
        if arch == "cdna3":
            return KernelPath(FALLBACK, "AITER MXFP4 MoE without the gfx95x FP4 instructions; not verified: the "
                              "checkpoint card lists MI350/MI355 only (huggingface.co/amd/Kimi-K2.5-MXFP4)")
        return KernelPath(REFUSED, "SGLang runs Quark MXFP4 MoE only through AMD's aiter, which it imports on ROCm "
                          "only ('needs aiter's dynamic_mxfp4_quant, which is AMD ROCm only', sglang "
                          "python/sglang/srt/layers/quantization/quark/schemes/quark_w4a4_mxfp4_moe.py)")
    if f is WeightFormat.FP8_BLOCK:
        if arch == "ampere":
            return KernelPath(FALLBACK, "no FP8 tensor cores before SM89: FP8 Marlin, weight-only (sglang "
                              "fp8_utils.py can_auto_enable_marlin_fp8: 80 <= sm < 89, and compressed_tensors.py "
                              "CompressedTensorsW8A16Fp8 below the W8A8 scheme's SM89)")
        if arch in ("ada", "hopper", "blackwell", "cdna3", "cdna4"):
            return KernelPath(NATIVE, "FP8 tensor cores, block-scaled GEMM")
        return KernelPath(EMULATED, "not checked for this device")
    return KernelPath(WEIGHT_ONLY, "INT4 W4A16 by design: Marlin WNA16 on CUDA, Triton/FlyDSL WNA16 on ROCm")


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
}

PROFILE = EngineProfile(
    name="sglang", display="SGLang", flags=FLAGS, defaults=DEFAULTS, fraction_covers="static",
    memory_fraction_field="mem_fraction_static", overhead=overhead, topology=TOPOLOGY, kernels=kernels,
    gates=GATES, model_min_version=lambda entry: None, draft_min_version=lambda d: d.min_sglang,
    # SGLang's /health runs a 1-token generation, HEALTH_CHECK_TIMEOUT 20 s (python/sglang/srt/entrypoints/http_server.py).
    readiness_probe_timeout_s=25,
)
