"""Which weight kernel each engine runs a checkpoint format with on each GPU microarchitecture: natively,
through a fallback kernel (weights dequantized inside the GEMM, activations in BF16), emulated, or not at
all. The planner reports the path and turns a refusal into a plan problem with the engine's own reason.

Read from the engines' code (vLLM 0.32.0 and SGLang 0.5.23 as installed here; paths relative to their
packages). Memory is the same on every path: fallbacks repack the stored weights in place and emulation
dequantizes one layer at a time (vllm fused_moe/experts/nvfp4_emulation_moe.py: "Weights are dequantized on
the fly during each forward"), so the planner's weight bytes stand.
"""

from __future__ import annotations

from dataclasses import dataclass

from .quant_formats import Quantization, WeightFormat

NATIVE, FALLBACK, EMULATED, WEIGHT_ONLY, REFUSED = "native", "fallback", "emulated", "weight-only", "refused"

_NVIDIA = ("ampere", "ada", "hopper", "blackwell")
_AMD = ("cdna3", "cdna4")


@dataclass(frozen=True)
class KernelPath:
    path: str  # native | fallback | emulated | weight-only | refused
    detail: str  # the kernel, or the engine's reason for refusing, with its source

    @property
    def refused(self) -> bool:
        return self.path == REFUSED


def _nvfp4(engine: str, arch: str, q: Quantization) -> KernelPath:
    if arch == "blackwell":
        return KernelPath(NATIVE, "FP4 tensor cores: FlashInfer TRT-LLM / CUTLASS NVFP4 MoE (SM100/SM103)"
                          + (" (vllm fused_moe/oracle/nvfp4.py)" if engine == "vllm"
                             else " (sglang modelopt_quant.py / compressed_tensors_w4a4_nvfp4_moe.py)"))
    if engine == "vllm":
        if arch in ("ampere", "ada", "hopper"):
            return KernelPath(FALLBACK, "FP4 Marlin MoE, weight-only W4A16: activation quantization is dropped "
                              "(vllm fused_moe/oracle/nvfp4.py backend order ends MARLIN, EMULATION; "
                              "marlin_moe.py: CUDA SM75+)")
        if arch in _AMD:
            return KernelPath(EMULATED, "no NVFP4 MoE kernel on ROCm: the EMULATION backend dequantizes the "
                              "experts to BF16 each forward (vllm fused_moe/experts/nvfp4_emulation_moe.py; "
                              "modelopt_fp4 is in vllm/platforms/rocm.py supported_quantization)")
        return KernelPath(EMULATED, "not checked for this device; vLLM's NVFP4 oracle falls back to EMULATION")
    # SGLang
    if arch in ("ampere", "ada", "hopper"):
        return KernelPath(FALLBACK, "FP4 Marlin MoE, weight-only, auto-selected on SM80-SM90 (sglang "
                          "modelopt_quant.py ModelOptNvFp4FusedMoEMethod: use_marlin_fallback = (8, 0) <= "
                          "capability < (10, 0); compressed_tensors.py: 'serving this checkpoint weight-only "
                          "via FP4 Marlin instead')")
    return KernelPath(REFUSED, "SGLang: 'Current platform does not support NVFP4 quantization with the selected "
                      "MoE backend. Please use Blackwell and above, or use moe_runner_backend=marlin on SM80+.' "
                      "(sglang python/sglang/srt/layers/quantization/modelopt_quant.py; FP4 Marlin is CUDA-only)")


def _mxfp4(engine: str, arch: str) -> KernelPath:
    if engine == "vllm":
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
    if arch == "cdna4":
        return KernelPath(NATIVE, "AITER FlyDSL MXFP4 MoE on gfx95x (sglang quark/schemes/"
                          "quark_w4a4_mxfp4_moe.py)")
    if arch == "cdna3":
        return KernelPath(FALLBACK, "AITER MXFP4 MoE without the gfx95x FP4 instructions; not verified: the "
                          "checkpoint card lists MI350/MI355 only (huggingface.co/amd/Kimi-K2.5-MXFP4)")
    return KernelPath(REFUSED, "SGLang runs Quark MXFP4 MoE only through AMD's aiter, which it imports on ROCm "
                      "only ('needs aiter's dynamic_mxfp4_quant, which is AMD ROCm only', sglang "
                      "python/sglang/srt/layers/quantization/quark/schemes/quark_w4a4_mxfp4_moe.py)")


def _fp8(engine: str, arch: str) -> KernelPath:
    if arch == "ampere":
        return KernelPath(FALLBACK, "no FP8 tensor cores before SM89: FP8 Marlin, weight-only (vllm MarlinFP8; "
                          "sglang fp8_utils.py can_auto_enable_marlin_fp8: 80 <= sm < 89, and "
                          "compressed_tensors.py CompressedTensorsW8A16Fp8 below the W8A8 scheme's SM89)")
    if arch in _NVIDIA or arch in _AMD:
        return KernelPath(NATIVE, "FP8 tensor cores, block-scaled GEMM")
    return KernelPath(EMULATED, "not checked for this device")


def weight_kernel(engine: str, arch: str, q: Quantization) -> KernelPath:
    """How `engine` runs the quantized linears of a checkpoint in format `q` on `arch`."""
    if q.format is WeightFormat.BF16:
        return KernelPath(NATIVE, "BF16")
    if q.format is WeightFormat.NVFP4:
        return _nvfp4(engine, arch, q)
    if q.format is WeightFormat.MXFP4:
        return _mxfp4(engine, arch)
    if q.format is WeightFormat.FP8_BLOCK:
        return _fp8(engine, arch)
    return KernelPath(WEIGHT_ONLY, "INT4 W4A16 by design: Marlin WNA16 on CUDA, Triton/FlyDSL WNA16 on ROCm "
                      "(vllm compressed_tensors_moe_wna16*.py)")
