"""Model and GPU facts, each with its source. Short names in the comments: K2R = github.com/MoonshotAI/Kimi-K2,
K25R = github.com/MoonshotAI/Kimi-K2.5, REC = github.com/vllm-project/recipes models/moonshotai/*.yaml,
[3p] = a third-party copy of a Hugging Face Hub file (less authoritative than the Hub itself)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .architecture import Architecture
from .errors import BadInput

# Kimi-K2-Instruct config.json, verbatim values (huggingface.co/moonshotai/Kimi-K2-Instruct config.json [3p];
# the K2R README architecture table agrees).
_K2_TEXT: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "kimi_k2",
    "hidden_size": 7168,
    "num_hidden_layers": 61,
    "num_attention_heads": 64,
    "num_key_value_heads": 64,
    "q_lora_rank": 1536,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "n_routed_experts": 384,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "moe_intermediate_size": 2048,
    "intermediate_size": 18432,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "n_group": 1,
    "topk_group": 1,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.827,
    "vocab_size": 163840,
    "bos_token_id": 163584,
    "eos_token_id": 163585,
    "tie_word_embeddings": False,
    "num_nextn_predict_layers": 0,
    "rms_norm_eps": 1e-06,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rope_theta": 50000.0,
    "rope_scaling": {"type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096,
                     "beta_fast": 1.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0},
}
# K2 FP8 block quantization (K2 config.json quantization_config).
_FP8 = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
# K2-Thinking / K2.5 native INT4 (K2.5 config.json quantization_config [3p]).
_INT4 = {
    "quant_method": "compressed-tensors",
    "format": "pack-quantized",
    "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 32, "symmetric": True,
                                               "strategy": "group", "type": "int"},
                                   "targets": ["Linear"]}},
    "ignore": ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*", "re:.*mlp\\.(gate|up|gate_up|down)_proj.*"],
}


def _k2(**changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(_K2_TEXT)
    cfg.update(changes)
    return cfg


def _yarn(factor: float, beta_fast: float = 1.0) -> dict[str, Any]:
    return {"type": "yarn", "factor": factor, "original_max_position_embeddings": 4096,
            "beta_fast": beta_fast, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}


def _k25() -> dict[str, Any]:
    """Kimi-K2.5's multimodal wrapper: the K2 text backbone (256K yarn, beta_fast 32, eps 1e-5) in
    text_config, INT4 experts, MoonViT (huggingface.co/moonshotai/Kimi-K2.5 config.json [3p])."""
    return {
        "architectures": ["KimiK25ForConditionalGeneration"], "model_type": "kimi_k25",
        "text_config": _k2(rope_scaling=_yarn(64.0, beta_fast=32.0), max_position_embeddings=262144,
                           rms_norm_eps=1e-05),
        "quantization_config": _INT4,
        "vision_config": {"num_hidden_layers": 27, "hidden_size": 1152, "patch_size": 14},
    }


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint of the family."""

    id: str
    repo: str
    config: dict[str, Any]
    context_length: int
    thinking: bool  # thinking-capable: gets --reasoning-parser kimi_k2
    hosted_name: str | None  # the model id on Moonshot's API (platform.moonshot.ai), None when not hosted
    # Parsers registered for the whole K2 family (vllm vllm/tool_parsers/__init__.py #20789;
    # sglang python/sglang/srt/function_call/function_call_parser.py #7940).
    tool_parser: str = "kimi_k2"
    min_vllm: str = "0.12.0"  # REC min_vllm_version
    aliases: tuple[str, ...] = field(default_factory=tuple)
    # Sampling the hosted model fixes, per mode ("thinking" / "instant"); None when the API lets clients choose.
    hosted_sampling: dict[str, dict[str, float]] | None = None
    sampling_source: str | None = None

    @property
    def reasoning_parser(self) -> str | None:
        return "kimi_k2" if self.thinking else None

    def architecture(self) -> Architecture:
        return Architecture.from_config(self.config, source=f"catalog:{self.id}")


# kimi-k2.5 / kimi-k2.6 on Moonshot's API: temperature 1.0 thinking / 0.6 instant, top_p 0.95, n 1,
# presence and frequency penalty 0, all "cannot be modified" (platform.kimi.ai/docs/api/models-overview,
# parameter table); the same recommended settings in github.com/MoonshotAI/Kimi-K2.5 README.md.
_K25_SAMPLING = {"thinking": {"temperature": 1.0, "top_p": 0.95, "presence_penalty": 0.0, "frequency_penalty": 0.0},
                 "instant": {"temperature": 0.6, "top_p": 0.95, "presence_penalty": 0.0, "frequency_penalty": 0.0}}
_K25_SAMPLING_SOURCE = "platform.kimi.ai/docs/api/models-overview (parameter table); github.com/MoonshotAI/Kimi-K2.5 README.md"

MODELS: dict[str, ModelEntry] = {
    m.id: m
    for m in [
        ModelEntry(
            id="kimi-k2-base", repo="moonshotai/Kimi-K2-Base",
            config=_k2(quantization_config=_FP8), context_length=131072, thinking=False, hosted_name=None,
        ),
        ModelEntry(
            id="kimi-k2-instruct", repo="moonshotai/Kimi-K2-Instruct",
            config=_k2(quantization_config=_FP8), context_length=131072, thinking=False,
            hosted_name="kimi-k2-0711-preview", aliases=("kimi-k2",),
        ),
        ModelEntry(
            id="kimi-k2-instruct-0905", repo="moonshotai/Kimi-K2-Instruct-0905",
            # rope factor 64 -> 4096*64 = 262,144 (ParagEkbote/hf-model-inspector report)
            config=_k2(quantization_config=_FP8, rope_scaling=_yarn(64.0), max_position_embeddings=262144),
            context_length=262144, thinking=False,
            hosted_name="kimi-k2-0905-preview",
        ),
        ModelEntry(
            id="kimi-k2-thinking", repo="moonshotai/Kimi-K2-Thinking",
            # Inferred, not field-verified: K2 text config + 256K yarn + K2.5's INT4 block (K25R README: K2.5
            # "adopts the same native int4 quantization method as Kimi-K2-Thinking"; REC: 262,144 context)
            config=_k2(quantization_config=_INT4, rope_scaling=_yarn(64.0), max_position_embeddings=262144),
            context_length=262144, thinking=True,
            hosted_name="kimi-k2-thinking",
        ),
        ModelEntry(
            id="kimi-k2.5", repo="moonshotai/Kimi-K2.5",
            config=_k25(),
            context_length=262144, thinking=True,
            hosted_name="kimi-k2.5", min_vllm="0.15.0",  # REC Kimi-K2.5: vLLM >= 0.15.0
            hosted_sampling=_K25_SAMPLING, sampling_source=_K25_SAMPLING_SOURCE,
        ),
        ModelEntry(
            id="kimi-k2.6", repo="moonshotai/Kimi-K2.6",
            # REC Kimi-K2.6.yaml: "same architecture as K2.5", INT4, 262,144 context
            config=_k25(),
            context_length=262144, thinking=True, hosted_name="kimi-k2.6", min_vllm="0.19.1",
            hosted_sampling=_K25_SAMPLING, sampling_source=_K25_SAMPLING_SOURCE,
        ),
    ]
}


def model_ids() -> list[str]:
    return sorted(MODELS)


def get_model(name: str) -> ModelEntry:
    """Look a model up by catalog id, alias or Hub repo id (case-insensitive)."""
    key = name.strip().lower()
    for m in MODELS.values():
        if key in (m.id, m.repo.lower(), *m.aliases):
            return m
    raise BadInput(f"unknown model {name!r}; known: {', '.join(model_ids())} (or a local checkpoint dir)",
                   "model")


# --- GPUs -----------------------------------------------------------------------------------------

GiB = 1024**3


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float  # total as the driver/torch reports it (what vLLM multiplies by utilization)
    marketing_gb: int
    fp8: bool  # native FP8 tensor cores
    nvlink_domain: int  # GPUs in one NVLink / Infinity Fabric domain (per node unless NVL rack)
    vendor: str
    source: str

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GiB)


GPUS: dict[str, GPU] = {
    g.name: g
    for g in [
        GPU("H100", 79.11, 80, True, 8, "nvidia",
            "vLLM startup logs: 'total_gpu_memory (79.11GiB)' on H100 80GB SXM"),
        GPU("H800", 79.11, 80, True, 8, "nvidia",
            "same 80 GB HBM3 as H100 SXM (export variant with slower NVLink); REC verified 16xH800"),
        GPU("H200", 139.81, 141, True, 8, "nvidia",
            "vLLM startup log on 8xH200 (DeepSeek-R1): 'total_gpu_memory (139.81GiB)'; nvidia-smi 143771MiB"),
        GPU("H20", 95.00, 96, True, 8, "nvidia", "vLLM startup log: 'total_gpu_memory (95.00GiB)'; vllm #51041 'H20 (95 GiB)'"),
        GPU("B200", 178.35, 180, True, 8, "nvidia",
            "nvidia-smi 183359MiB (179.06 GiB) less ~0.7 GiB the driver reserves, as on H100/H200"),
        GPU("A100", 79.15, 80, False, 8, "nvidia",
            "vLLM startup logs: 'total_gpu_memory (79.15GiB)' on A100 80GB; FP8 runs weight-only (Marlin)"),
        GPU("L40S", 44.39, 48, True, 1, "nvidia", "vLLM startup logs on 48 GB Ada cards: 'total_gpu_memory (44.39GiB)'; PCIe, no NVLink"),
        GPU("MI300X", 191.45, 192, True, 8, "amd", "vLLM ROCm log: 'total_gpu_memory (191.45GiB)'"),
        GPU("MI325X", 255.45, 256, True, 8, "amd", "256 GiB HBM3E; same ~0.55 GiB reserve as MI300X (assumption)"),
        GPU("MI355X", 287.45, 288, True, 8, "amd", "288 GiB HBM3E; same ~0.55 GiB reserve as MI300X (assumption)"),
    ]
}
# A CPU "GPU" for the tiny model: vLLM on CPU treats --gpu-memory-utilization as a fraction of the NUMA
# node's RAM (vllm docs/getting_started/installation/cpu.md, VLLM_CPU_KVCACHE_SPACE and
# --gpu-memory-utilization). 24 GiB is this project's development machine.
GPUS["CPU"] = GPU("CPU", 24.0, 24, False, 1, "cpu", "vllm CPU backend: memory = the NUMA node's RAM (vllm docs/getting_started/installation/cpu.md)")

_GPU_ALIASES = {"H100-80GB": "H100", "H100-SXM": "H100", "H200-141GB": "H200", "A100-80GB": "A100",
                "H20-96GB": "H20"}


def gpu_names() -> list[str]:
    return sorted(GPUS)


def get_gpu(name: str) -> GPU:
    key = name.strip().upper()
    key = _GPU_ALIASES.get(key, key)
    if key not in GPUS:
        raise BadInput(f"unknown GPU {name!r}; known: {', '.join(gpu_names())}", "hardware.gpu")
    return GPUS[key]
