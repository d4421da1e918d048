"""Model and GPU facts, each with its source. Short names in the comments: K2R = github.com/MoonshotAI/Kimi-K2,
K25R = github.com/MoonshotAI/Kimi-K2.5, REC = github.com/vllm-project/recipes models/moonshotai/*.yaml,
[3p] = a third-party copy of a Hugging Face Hub file (less authoritative than the Hub itself)."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field, replace
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


# --- vendor re-quantizations (the checkpoints Blackwell and MI355X deployments run) -------------------
# NVIDIA ModelOpt NVFP4 (nvidia/Kimi-K2-Thinking-NVFP4, -K2.5-, -K2.6-, -K2.7-Code-NVFP4): only the routed
# experts are NVFP4 (weights and activations, W4A4); "attention (MLA), shared experts, the layer-0 dense MLP,
# lm_head, and the vision tower / mm_projector remain BF16 -- the same precision split as
# nvidia/Kimi-K2.6-NVFP4" (huggingface.co/decart-ai/Kimi-K2.7-Code-NVFP4 card, describing NVIDIA's split);
# the nvidia cards: "Only the weights and activations of the linear operators within the MoE transformer
# blocks are quantized". The verbatim hf_quant_config.json exclude list was not reachable from here: the
# list below is written from that stated split (dense-MLP patterns as amd/Kimi-K2.6-NVFP4's card spells
# them), and the inventory tests pin exactly that split. Routers stay BF16 (not nn.Linear in the model).
_NVFP4_MODELOPT = {
    "quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16,
    "kv_cache_scheme": {"type": "float", "num_bits": 8},
    "ignore": ["lm_head", "*self_attn*", "*shared_experts*", "*mlp.gate_proj", "*mlp.up_proj",
               "*mlp.down_proj", "*vision_tower*", "*mm_projector*"],
}
# RedHatAI/Kimi-K2.6-NVFP4 (vllm-project/recipes Kimi-K2.6.yaml variant redhat_nvfp4): compressed-tensors
# nvfp4-pack-quantized made with LLM Compressor; its ignore list is the Kimi-K2.6 NVFP4 example's
# (docs.vllm.ai/projects/llm-compressor/en/0.11.0/key-models/kimi-k26/nvfp4-example): attention, router,
# lm_head, embeddings and vision stay BF16, so the dense layer and shared experts are NVFP4 too.
_NVFP4_CT = {
    "quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
    "config_groups": {"group_0": {
        "format": "nvfp4-pack-quantized", "targets": ["Linear"],
        "weights": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16},
        "input_activations": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16,
                              "dynamic": "local"}}},
    "ignore": ["re:.*mlp.gate$", "re:.*lm_head", "re:.*self_attn.*", "re:.*embed_tokens$",
               "re:.*mm_projector.*", "re:.*vision.*"],
}
# RedHatAI/Kimi-K2.6-FP8-BLOCK (REC Kimi-K2.6.yaml variant fp8): compressed-tensors FP8_BLOCK 128x128,
# ignore list of the LLM Compressor Kimi-K2.6 FP8 block example
# (docs.vllm.ai/projects/llm-compressor/en/0.11.0/key-models/kimi-k26/fp8-block-example): router, lm_head,
# q_a / kv_a projections, embeddings and vision stay BF16; q_b, kv_b, o, dense, shared and routed experts FP8.
_FP8_BLOCK_CT = {
    "quant_method": "compressed-tensors", "format": "float-quantized",
    "config_groups": {"group_0": {
        "format": "float-quantized", "targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [128, 128]},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "group", "group_size": 128,
                              "dynamic": True}}},
    "ignore": ["re:.*mlp.gate$", "re:.*lm_head", "re:.*kv_a_proj_with_mqa$", "re:.*q_a_proj$",
               "re:.*vision_tower.*", "re:.*embed_tokens$", "re:.*mm_projector.*", "re:.*vision.*"],
}
# amd/Kimi-K2.5-MXFP4: AMD Quark OCP MXFP4 (fp4 values, per-group 32, e8m0 scales), weights and dynamic
# activations; "Quantized layers: layers.0.mlp, experts and shared_experts", quantized with
# exclude_layers="*self_attn* *mlp.gate *lm_head *mm_projector* *vision_tower*" (huggingface.co/amd/
# Kimi-K2.5-MXFP4 model card; REC Kimi-K2.5.yaml variant mxfp4: "~557 GB on disk", MI355X).
_MXFP4_QUARK = {
    "quant_method": "quark",
    "global_quant_config": {
        "weight": {"dtype": "fp4", "qscheme": "per_group", "group_size": 32, "scale_format": "e8m0",
                   "is_dynamic": False},
        "input_tensors": {"dtype": "fp4", "qscheme": "per_group", "group_size": 32, "scale_format": "e8m0",
                          "is_dynamic": True}},
    "exclude": ["*self_attn*", "*mlp.gate", "*lm_head", "*mm_projector*", "*vision_tower*"],
}


def _k25(quantization: dict[str, Any] | None = None) -> dict[str, Any]:
    """Kimi-K2.5's multimodal wrapper: the K2 text backbone (256K yarn, beta_fast 32, eps 1e-5) in
    text_config, INT4 experts, MoonViT (huggingface.co/moonshotai/Kimi-K2.5 config.json [3p]). K2.6 and
    K2.7-Code share it ("same architecture as Kimi-K2.5", REC Kimi-K2.6.yaml and Kimi-K2.7-Code.yaml)."""
    return {
        "architectures": ["KimiK25ForConditionalGeneration"], "model_type": "kimi_k25",
        "text_config": _k2(rope_scaling=_yarn(64.0, beta_fast=32.0), max_position_embeddings=262144,
                           rms_norm_eps=1e-05),
        "quantization_config": copy.deepcopy(quantization or _INT4),
        "vision_config": {"num_hidden_layers": 27, "hidden_size": 1152, "patch_size": 14},
    }


# --- the hybrid KDA + MLA models -------------------------------------------------------------------------
# Kimi K3's text_config at huggingface.co/moonshotai/Kimi-K3 revision f831ab66814297da540d832a5235f8e904f29d06
# [3p: a port's test copy of the published config.json "trimmed to the fields the loader reads"; the same
# values quoted with that revision's URL in other ports' tests and in inference-sim issue #1635]. 93 layers:
# KDA on the 69 in kda_layers, gated NoPE MLA on the other 24 (1-based 4, 8, ..., 92 and 93); 896 routed
# experts (top-16) at a 3584 latent, 2 shared; the routed experts are MXFP4 (compressed-tensors
# mxfp4-pack-quantized, group 32), the rest BF16. rope fields are left out: the MLA is NoPE-only
# (vllm models/kimi_k3/nvidia/model.py asserts mla_use_nope).
_K3_KDA_LAYERS = [i for i in range(1, 92) if i % 4]
_K3_TEXT: dict[str, Any] = {
    "model_type": "kimi_linear",
    "activation_situ_beta": 4.0, "activation_situ_linear_beta": 25.0, "hidden_act": "situ",
    "attn_res_block_size": 12,
    "bos_token_id": 163584, "eos_token_id": 163586,
    "first_k_dense_replace": 1,
    "hidden_size": 7168,
    "intermediate_size": 33792,
    "kv_lora_rank": 512,
    "latent_moe_use_norm": True,
    "linear_attn_config": {
        "full_attn_layers": [*range(4, 93, 4), 93], "gate_lower_bound": -5.0, "head_dim": 128,
        "kda_layers": _K3_KDA_LAYERS, "num_heads": 96, "short_conv_kernel_size": 4, "use_full_rank_gate": True},
    "max_position_embeddings": 1048576,
    "mla_use_nope": True, "mla_use_output_gate": True,
    "moe_intermediate_size": 3072, "moe_layer_freq": 1, "moe_renormalize": True,
    "moe_router_activation_func": "sigmoid",
    "num_attention_heads": 96, "num_key_value_heads": 96, "num_expert_group": 1, "topk_group": 1,
    "num_experts": 896, "num_experts_per_token": 16, "num_hidden_layers": 93,
    "num_nextn_predict_layers": 0, "num_shared_experts": 2,
    "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "rms_norm_eps": 1e-05, "routed_expert_hidden_size": 3584, "routed_scaling_factor": 1.0,
    "tie_word_embeddings": False, "topk_method": "noaux_tc", "use_grouped_topk": True,
    "vocab_size": 163840,
}
# K3's QAT MXFP4: only the routed experts (experts.N.w1/w2/w3); the ignore list as vllm-project/tpu-inference
# tests/models/jax/utils/k3_tiny_generator.py writes it ("mirrors the real Kimi-K3 text_config.
# quantization_config ... only experts.N.w{1,2,3} are quantized") [3p]. The router gate and the latent
# down/up projections are not in it, but are stored BF16 (the same generator; the index's 1,560.86 GB total
# matches only that split, tests/test_catalog.py).
_K3_MXFP4 = {
    "quant_method": "compressed-tensors", "format": "mxfp4-pack-quantized",
    "config_groups": {"group_0": {
        "format": "mxfp4-pack-quantized", "targets": ["Linear"],
        "weights": {"num_bits": 4, "type": "float", "strategy": "group", "group_size": 32, "symmetric": True,
                    "dynamic": False, "scale_dtype": "torch.uint8"}}},
    "ignore": ["re:.*self_attn.*", "re:.*shared_experts.*", "re:.*mlp\\.(gate|up|gate_up|down)_proj.*",
               "re:.*lm_head.*", "re:.*vision_tower.*", "re:.*mm_projector.*",
               "re:.*block_sparse_moe\\.gate$", "re:.*routed_expert_(down|up)_proj$"],
}
# RedHatAI/Kimi-K3-NVFP4 (REC Kimi-K3.yaml variant nvfp4; recipes PR #744: "MoE layers quantized to NVFP4,
# attention and embeddings at full precision", "real 1645.9 GB safetensors checkpoint"). Its ignore list is
# not published where we could read it; of the splits that wording allows, only "the routed experts NVFP4,
# everything else BF16" (K3's own MXFP4 split) comes to 1645.9 GB (tests/test_catalog.py): the shared
# experts, dense MLP and latent projections stored NVFP4 would make it 25 GB smaller.
_K3_NVFP4_CT = {**_NVFP4_CT, "ignore": _K3_MXFP4["ignore"]}
# RedHatAI/Kimi-K3-FP8-BLOCK (recipes PR #688: "MLP and expert layers are quantized to FP8, while attention
# layers remain in BF16 (fused weight shapes prevented quantization there). The resulting checkpoint is
# ~2.82 TB"): FP8 block 128 on every MLP and expert linear, BF16 attention, router, embeddings, lm_head, vision.
_K3_FP8_BLOCK_CT = {**_FP8_BLOCK_CT, "ignore": ["re:.*block_sparse_moe\\.gate$", "re:.*lm_head", "re:.*self_attn.*",
                                                "re:.*embed_tokens$", "re:.*mm_projector.*", "re:.*vision.*"]}


# SGLang 0.5.23 serves both hybrids (srt/models/kimi_k3.py, srt/models/kimi_linear.py); the first release
# that did is not confirmed, so the release checked is the minimum.
_K3_MIN_SGLANG = "0.5.23"


def _k3(quantization: dict[str, Any] | None = None) -> dict[str, Any]:
    """Kimi K3's multimodal wrapper (vllm transformers_utils/configs/kimi_k3.py KimiK3Config): the kimi_linear
    text model, its quantization inside text_config, MoonViT with vt_hidden_size 1152 and patch 14 (the
    published config's vision_config as quoted [3p]; depth and MLP width are vLLM's KimiK3VisionConfig
    defaults, 27 layers, and K2.5's 4304, an assumption)."""
    text = copy.deepcopy(_K3_TEXT)
    text["quantization_config"] = copy.deepcopy(quantization or _K3_MXFP4)
    return {"architectures": ["KimiK3ForConditionalGeneration"], "model_type": "kimi_k3",
            "bos_token_id": 163584, "eos_token_id": 163586, "media_placeholder_token_id": 163605,
            "pad_token_id": 163839, "tie_word_embeddings": False, "text_config": text,
            "vision_config": {"patch_size": 14, "vt_hidden_size": 1152, "vt_num_hidden_layers": 27,
                              "vt_intermediate_size": 4304}}


# moonshotai/Kimi-Linear-48B-A3B-Instruct config.json, revision e1df551a447157d4658b573f9a695d57658590e9
# [3p: the Firworks NVFP4 derivative's copy of the base config, whose excerpt ends before v_head_dim,
# vocab_size and rms_norm_eps: v_head_dim 128 (as qk_nope) and vocab 163840 (the Kimi tokenizer) are
# assumptions that the 98,245,528,576-byte index total checks, tests/test_catalog.py]. 27 layers: KDA on 20,
# NoPE MLA on 7 (1-based 4, 8, ..., 24, 27); 256 experts, top-8, 1 shared; all BF16.
_KIMI_LINEAR: dict[str, Any] = {
    "architectures": ["KimiLinearForCausalLM"], "model_type": "kimi_linear",
    "bos_token_id": 163584, "eos_token_id": 163586, "pad_token_id": 163839,
    "first_k_dense_replace": 1, "head_dim": 72, "hidden_act": "silu", "hidden_size": 2304,
    "intermediate_size": 9216, "kv_lora_rank": 512,
    "linear_attn_config": {"full_attn_layers": [4, 8, 12, 16, 20, 24, 27], "head_dim": 128,
                           "kda_layers": [i for i in range(1, 27) if i % 4], "num_heads": 32,
                           "short_conv_kernel_size": 4},
    "mla_use_nope": True, "max_position_embeddings": 1048576,
    "moe_intermediate_size": 1024, "moe_layer_freq": 1, "moe_renormalize": True,
    "moe_router_activation_func": "sigmoid",
    "num_attention_heads": 32, "num_expert_group": 1, "num_experts": 256, "num_experts_per_token": 8,
    "num_hidden_layers": 27, "num_key_value_heads": 32, "num_nextn_predict_layers": 0, "num_shared_experts": 1,
    "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "tie_word_embeddings": False, "vocab_size": 163840,
}


def _k2_thinking(quantization: dict[str, Any] | None = None) -> dict[str, Any]:
    # Inferred, not field-verified: K2 text config + 256K yarn + K2.5's INT4 block (K25R README: K2.5
    # "adopts the same native int4 quantization method as Kimi-K2-Thinking"; REC: 262,144 context)
    return _k2(quantization_config=copy.deepcopy(quantization or _INT4), rope_scaling=_yarn(64.0),
               max_position_embeddings=262144)


# --- Moonshot's hosted API, per hosted model id --------------------------------------------------------
# What the API does with a model id, whichever checkpoint a deployment serves it from: an entry whose
# hosted_name is one of these ids takes these facts (ModelEntry.hosted_thinking_only, hosted_efforts, and
# hosted_sampling where the entry sets none). K3 sampling: "temperature 1.0, top_p 0.95" for every K3 run
# (github.com/MoonshotAI/Kimi-Vendor-Verifier README.md, "Recommended Benchmark Parameters", K3 table);
# "Sampling parameters are fixed by the provider (temperature 1.0, top_p 0.95)" (docs.oxen.ai, kimi-k3);
# a temperature other than 1 is a 400 on Moonshot's API, which "fixes top_p, n and both penalties too"
# (dev.to/aihubmix, Kimi K3.1 Pro migration guide, citing Moonshot's parameter reference). K2.7 Code: the
# same 1.0 / 0.95, thinking and "Keep all" only (Kimi-Vendor-Verifier README.md, K2.7 table).
_THINKING_ONLY_SAMPLING = {"thinking": {"temperature": 1.0, "top_p": 0.95, "presence_penalty": 0.0,
                                        "frequency_penalty": 0.0}}


@dataclass(frozen=True)
class HostedModel:
    """One model id on Moonshot's API: what a request to it may and may not say."""

    # thinking cannot be switched off: `thinking: {"type": "disabled"}` is refused
    thinking_only: bool = False
    # the values of `thinking.effort` it takes (none: the field is not part of its API)
    efforts: tuple[str, ...] = ()
    default_effort: str | None = None  # what it thinks at when a request names no effort
    sampling: dict[str, dict[str, float]] | None = None  # per mode, the sampling it fixes
    source: str = ""


HOSTED_MODELS: dict[str, HostedModel] = {
    # "Only "enabled"; always thinks. Passing "disabled" errors"; keep: omitted or "all", always on
    # (platform.kimi.ai/docs/guide/use-kimi-k2-thinking-model, thinking-field table).
    "kimi-k2.7-code": HostedModel(
        thinking_only=True, sampling=_THINKING_ONLY_SAMPLING,
        source="platform.kimi.ai/docs/guide/use-kimi-k2-thinking-model (thinking table); "
               "github.com/MoonshotAI/Kimi-Vendor-Verifier README.md (K2.7: temperature 1.0, top_p 0.95)"),
    # "kimi-k3 and kimi-k2.7-code always run with thinking enabled", effort low / high / max
    # (java.agentscope.io/v2/en/integration/model/kimi); thinking.effort "low"/"high"/"max", default "max"
    # (Kimi-Vendor-Verifier tests/k3_features/test_thinking_effort.py); disabled thinking is a 400 on
    # Moonshot's API (dev.to/aihubmix K3.1 Pro migration guide, citing Moonshot's Kimi Code docs).
    "kimi-k3": HostedModel(
        thinking_only=True, efforts=("low", "high", "max"), default_effort="max",
        sampling=_THINKING_ONLY_SAMPLING,
        source="github.com/MoonshotAI/Kimi-Vendor-Verifier README.md (K3 table) and "
               "tests/k3_features/test_thinking_effort.py; java.agentscope.io/v2/en/integration/model/kimi; "
               "docs.oxen.ai/inference-api/reference/models/kimi-k3"),
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
    tool_parser: str | None = "kimi_k2"  # None: no tool-call format documented for the checkpoint
    min_vllm: str = "0.12.0"  # REC min_vllm_version
    min_sglang: str | None = None  # None: every release this project renders for serves it
    aliases: tuple[str, ...] = field(default_factory=tuple)
    # Thinking cannot be switched off (Kimi-K2.7-Code: "thinking mode only with preserve_thinking forced
    # on", REC Kimi-K2.7-Code.yaml).
    thinking_only: bool = False
    base: str | None = None  # the catalog id this checkpoint re-quantizes (None for Moonshot's own)
    source: str = ""  # where its quantization facts come from
    # Sampling the hosted model fixes, per mode ("thinking" / "instant"); None when the API lets clients choose.
    hosted_sampling: dict[str, dict[str, float]] | None = None
    sampling_source: str | None = None

    def __post_init__(self) -> None:
        hosted = HOSTED_MODELS.get(self.hosted_name or "")
        if self.hosted_sampling is None and hosted is not None and hosted.sampling:
            object.__setattr__(self, "hosted_sampling", hosted.sampling)
            object.__setattr__(self, "sampling_source", hosted.source)

    @property
    def hosted_model(self) -> HostedModel | None:
        """What Moonshot's API does with this entry's hosted id; None when not hosted or the id is not in
        HOSTED_MODELS (then only the entry's own fields say anything)."""
        return HOSTED_MODELS.get(self.hosted_name) if self.hosted_name else None

    @property
    def hosted_thinking_only(self) -> bool:
        """The hosted model cannot switch thinking off (the API refuses `thinking: disabled`)."""
        hosted = self.hosted_model
        return self.thinking_only or (hosted is not None and hosted.thinking_only)

    @property
    def hosted_efforts(self) -> tuple[str, ...]:
        """The thinking efforts the hosted model takes (`thinking.effort`); () when it takes none."""
        hosted = self.hosted_model
        return hosted.efforts if hosted is not None else ()

    @property
    def reasoning_parser(self) -> str | None:
        """Each family's reasoning parser is named like its tool parser (kimi_k2, kimi_k3: vllm
        vllm/reasoning/__init__.py; sglang srt/parser/reasoning_parser.py)."""
        return self.tool_parser if self.thinking else None

    def architecture(self) -> Architecture:
        return Architecture.from_config(self.config, source=f"catalog:{self.id}")


# kimi-k2.5 / kimi-k2.6 on Moonshot's API: temperature 1.0 thinking / 0.6 instant, top_p 0.95, n 1,
# presence and frequency penalty 0, all "cannot be modified" (platform.kimi.ai/docs/api/models-overview,
# parameter table); the same recommended settings in github.com/MoonshotAI/Kimi-K2.5 README.md.
_K25_SAMPLING = {"thinking": {"temperature": 1.0, "top_p": 0.95, "presence_penalty": 0.0, "frequency_penalty": 0.0},
                 "instant": {"temperature": 0.6, "top_p": 0.95, "presence_penalty": 0.0, "frequency_penalty": 0.0}}
_K25_SAMPLING_SOURCE = "platform.kimi.ai/docs/api/models-overview (parameter table); github.com/MoonshotAI/Kimi-K2.5 README.md"

# _RETIRED_K2: "The older kimi-k2-0711-preview, kimi-k2-0905-preview, kimi-k2-turbo-preview,
# kimi-k2-thinking, kimi-k2-thinking-turbo, and kimi-latest ids were discontinued in 2026 — use kimi-k2.6
# instead" (promptfoo.dev/docs/providers/moonshot, which also says to ask GET /v1/models for the live set).
# kimi-k2.6 is another checkpoint, no successor of the same weights: these entries have no hosted model, and
# `compare` asks for --reference-model (a live id), --reference (a self-hosted one) or --reference-file.
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
            hosted_name=None, aliases=("kimi-k2",),  # kimi-k2-0711-preview retired: _RETIRED_K2
        ),
        ModelEntry(
            id="kimi-k2-instruct-0905", repo="moonshotai/Kimi-K2-Instruct-0905",
            # rope factor 64 -> 4096*64 = 262,144 (ParagEkbote/hf-model-inspector report)
            config=_k2(quantization_config=_FP8, rope_scaling=_yarn(64.0), max_position_embeddings=262144),
            context_length=262144, thinking=False,
            hosted_name=None,  # kimi-k2-0905-preview retired: _RETIRED_K2
        ),
        ModelEntry(
            id="kimi-k2-thinking", repo="moonshotai/Kimi-K2-Thinking",
            config=_k2_thinking(),
            context_length=262144, thinking=True,
            hosted_name=None,  # kimi-k2-thinking retired: _RETIRED_K2
        ),
        ModelEntry(
            id="kimi-k2.5", repo="moonshotai/Kimi-K2.5",
            config=_k25(),
            context_length=262144, thinking=True,
            hosted_name="kimi-k2.5", min_vllm="0.19.1",  # REC Kimi-K2.5.yaml min_vllm_version (2026-07-29)
            hosted_sampling=_K25_SAMPLING, sampling_source=_K25_SAMPLING_SOURCE,
        ),
        ModelEntry(
            id="kimi-k2.6", repo="moonshotai/Kimi-K2.6",
            # REC Kimi-K2.6.yaml: "same architecture as K2.5", INT4, 262,144 context
            config=_k25(),
            context_length=262144, thinking=True, hosted_name="kimi-k2.6", min_vllm="0.25.0",  # REC Kimi-K2.6.yaml min_vllm_version
            hosted_sampling=_K25_SAMPLING, sampling_source=_K25_SAMPLING_SOURCE,
        ),
        ModelEntry(
            id="kimi-k2.7-code", repo="moonshotai/Kimi-K2.7-Code",
            # REC Kimi-K2.7-Code.yaml: built on K2.6, same architecture as K2.5/K2.6, native INT4 (~595 GB),
            # 262,144 context, min vLLM 0.19.1, thinking only. Hosted id: promptfoo.dev/docs/providers/
            # moonshot lists kimi-k2.7-code among the live Moonshot API models.
            config=_k25(),
            context_length=262144, thinking=True, thinking_only=True, hosted_name="kimi-k2.7-code",
            min_vllm="0.19.1",
        ),
        # Vendor re-quantizations. Same backbone and context as the base; hosted_name is the base's, so
        # `compare` checks a quantized deployment against Moonshot's own model.
        ModelEntry(
            id="kimi-k2-thinking-nvfp4", repo="nvidia/Kimi-K2-Thinking-NVFP4",
            config=_k2_thinking(_NVFP4_MODELOPT),
            context_length=262144, thinking=True, hosted_name=None,  # its base's id is retired
            base="kimi-k2-thinking", source="REC Kimi-K2-Thinking.yaml variant nvfp4 (Blackwell); NVIDIA split",
        ),
        ModelEntry(
            id="kimi-k2.5-nvfp4", repo="nvidia/Kimi-K2.5-NVFP4",
            config=_k25(_NVFP4_MODELOPT),
            context_length=262144, thinking=True, hosted_name="kimi-k2.5", min_vllm="0.19.1",
            base="kimi-k2.5", source="REC Kimi-K2.5.yaml variant nvfp4 (4x GB200); NVIDIA split",
        ),
        ModelEntry(
            id="kimi-k2.6-nvfp4", repo="nvidia/Kimi-K2.6-NVFP4",
            config=_k25(_NVFP4_MODELOPT),
            context_length=262144, thinking=True, hosted_name="kimi-k2.6", min_vllm="0.25.0",
            base="kimi-k2.6", source="REC Kimi-K2.6.yaml variant nvfp4 (verified 4x B300 TP4); NVIDIA split",
        ),
        ModelEntry(
            # Published: huggingface.co/nvidia/Kimi-K2.7-Code-NVFP4 (ModelOpt, kimi_k25). Not in REC yet.
            id="kimi-k2.7-code-nvfp4", repo="nvidia/Kimi-K2.7-Code-NVFP4",
            config=_k25(_NVFP4_MODELOPT),
            context_length=262144, thinking=True, thinking_only=True, hosted_name="kimi-k2.7-code",
            min_vllm="0.19.1", base="kimi-k2.7-code", source="huggingface.co/nvidia/Kimi-K2.7-Code-NVFP4; NVIDIA split",
        ),
        ModelEntry(
            id="kimi-k2.6-nvfp4-redhat", repo="RedHatAI/Kimi-K2.6-NVFP4",
            config=_k25(_NVFP4_CT),
            context_length=262144, thinking=True, hosted_name="kimi-k2.6", min_vllm="0.25.0",
            base="kimi-k2.6", source="REC Kimi-K2.6.yaml variant redhat_nvfp4; LLM Compressor K2.6 NVFP4 example",
        ),
        ModelEntry(
            id="kimi-k2.6-fp8-block", repo="RedHatAI/Kimi-K2.6-FP8-BLOCK",
            config=_k25(_FP8_BLOCK_CT),
            context_length=262144, thinking=True, hosted_name="kimi-k2.6", min_vllm="0.25.0",
            base="kimi-k2.6", source="REC Kimi-K2.6.yaml variant fp8; LLM Compressor K2.6 FP8 block example",
        ),
        ModelEntry(
            id="kimi-k2.5-mxfp4", repo="amd/Kimi-K2.5-MXFP4",
            config=_k25(_MXFP4_QUARK),
            context_length=262144, thinking=True, hosted_name="kimi-k2.5", min_vllm="0.19.1",
            base="kimi-k2.5", source="REC Kimi-K2.5.yaml variant mxfp4; huggingface.co/amd/Kimi-K2.5-MXFP4 card",
        ),
        # The hybrid models. K3: REC Kimi-K3.yaml (min_vllm_version 0.27.1, context_length 1048576, parsers
        # kimi_k3); hosted as kimi-k3 (github.com/MoonshotAI/Kimi-Vendor-Verifier README.md, K3 table).
        ModelEntry(
            id="kimi-k3", repo="moonshotai/Kimi-K3", config=_k3(),
            context_length=1048576, thinking=True, hosted_name="kimi-k3", tool_parser="kimi_k3",
            min_vllm="0.27.1", min_sglang=_K3_MIN_SGLANG,
        ),
        ModelEntry(
            id="kimi-k3-nvfp4", repo="RedHatAI/Kimi-K3-NVFP4", config=_k3(_K3_NVFP4_CT),
            context_length=1048576, thinking=True, hosted_name="kimi-k3", tool_parser="kimi_k3",
            # recipes PR #744: needs "CT support for Kimi-K3 (PR vllm-project/vllm#50500) merged 2026-07-31";
            # the first release with it is not confirmed, so the K3 minimum stands
            min_vllm="0.27.1", min_sglang=_K3_MIN_SGLANG, base="kimi-k3",
            source="REC Kimi-K3.yaml variant nvfp4; recipes PR #744",
        ),
        ModelEntry(
            id="kimi-k3-fp8-block", repo="RedHatAI/Kimi-K3-FP8-BLOCK", config=_k3(_K3_FP8_BLOCK_CT),
            context_length=1048576, thinking=True, hosted_name="kimi-k3", tool_parser="kimi_k3",
            min_vllm="0.27.1", min_sglang=_K3_MIN_SGLANG, base="kimi-k3",
            source="recipes PR #688 (FP8 MLP and experts, BF16 attention)",
        ),
        # REC Kimi-Linear-48B-A3B-Instruct.yaml: min_vllm_version 0.11.2, context_length 1048576; its commands
        # name no tool-call parser (recipes.vllm.ai/moonshotai/Kimi-Linear-48B-A3B-Instruct), so none is set.
        ModelEntry(
            id="kimi-linear-48b-a3b-instruct", repo="moonshotai/Kimi-Linear-48B-A3B-Instruct", config=_KIMI_LINEAR,
            context_length=1048576, thinking=False, hosted_name=None, min_vllm="0.11.2", tool_parser=None,
            min_sglang=_K3_MIN_SGLANG, aliases=("kimi-linear",),
        ),
    ]
}

# A re-quantization is served under its base's hosted name, so it inherits the sampling that model fixes
# (the compare pre-flight reads it from whichever entry the local deployment resolves to).
MODELS.update({m.id: replace(m, hosted_sampling=MODELS[m.base].hosted_sampling,
                             sampling_source=MODELS[m.base].sampling_source)
               for m in list(MODELS.values()) if m.base and m.hosted_sampling is None})


def model_ids() -> list[str]:
    return sorted(MODELS)


def get_model(name: str) -> ModelEntry:
    """Look a model up by catalog id, alias or Hub repo id (case-insensitive)."""
    key = name.strip().lower()
    for m in MODELS.values():
        if key in (m.id, m.repo.lower(), *m.aliases):
            return m
    raise BadInput(f"unknown model {name!r}; known: {', '.join(model_ids())}, their Hub repo ids "
                   "(e.g. nvidia/Kimi-K2.5-NVFP4), or a local checkpoint dir",
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
    # Microarchitecture, which decides the weight kernels an engine picks (engines/profiles/): ampere, ada,
    # hopper, blackwell (SM100/SM103), cdna3 (gfx942), cdna4 (gfx950), cpu.
    arch: str = "hopper"
    # GPUs a node physically holds when that is fixed (a GB200/GB300 compute tray: 4); None for HGX/OAM
    # boards, which come in several sizes.
    node_gpus: int | None = None

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GiB)

    @property
    def rack_scale(self) -> bool:
        """An NVLink domain larger than a node (NVL72): TP/EP/P-D traffic between trays stays on NVLink."""
        return self.node_gpus is not None and self.nvlink_domain > self.node_gpus


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
        GPU("H20-3e", 139.81, 141, True, 8, "nvidia",
            "141 GB HBM3e like H200 (ai-dynamo/aiconfigurator systems/h20_3e.yaml mem_capacity '141GiB'); usable "
            "taken as H200's logged 139.81 GiB (assumption: same memory, no H20-3e startup log found)"),
        GPU("B200", 178.35, 180, True, 8, "nvidia",
            "nvidia-smi 183359MiB (179.06 GiB) less ~0.7 GiB the driver reserves, as on H100/H200",
            arch="blackwell"),
        GPU("B300", 267.89, 288, True, 8, "nvidia",
            "nvidia-smi 'NVIDIA B300 SXM6 AC ... 275040MiB' (268.59 GiB; also ai-dynamo/aiconfigurator "
            "b300_sxm.yaml mem_capacity 288400343040 '# 275040MiB') less ~0.7 GiB as for B200",
            arch="blackwell"),
        # NVL72 racks: 18 compute trays x 4 GPUs, all 72 in one NVLink domain (NVIDIA GB200 NVL72 / GB300
        # NVL72 specifications; REC Kimi-K2.5.yaml pd_cluster: "1 GB200 node = 4 GPUs").
        GPU("GB200", 184.33, 186, True, 72, "nvidia",
            "nvidia-smi 'NVIDIA GB200 ... 189471MiB' (185.03 GiB) less ~0.7 GiB as for B200; 186 GB = "
            "13.4 TB HBM3e / 72 GPUs (NVIDIA GB200 NVL72 specifications)",
            arch="blackwell", node_gpus=4),
        GPU("GB300", 267.89, 288, True, 72, "nvidia",
            "assumption: the B300's 275040MiB (same 288 GB HBM3e Blackwell Ultra GPU, NVIDIA GB300 NVL72 "
            "specifications); no GB300 nvidia-smi or engine log found",
            arch="blackwell", node_gpus=4),
        GPU("A100", 79.15, 80, False, 8, "nvidia",
            "vLLM startup logs: 'total_gpu_memory (79.15GiB)' on A100 80GB; FP8 runs weight-only (Marlin)",
            arch="ampere"),
        GPU("L40S", 44.39, 48, True, 1, "nvidia", "vLLM startup logs on 48 GB Ada cards: 'total_gpu_memory (44.39GiB)'; PCIe, no NVLink",
            arch="ada"),
        GPU("MI300X", 191.45, 192, True, 8, "amd", "vLLM ROCm log: 'total_gpu_memory (191.45GiB)'", arch="cdna3"),
        GPU("MI325X", 255.45, 256, True, 8, "amd", "256 GiB HBM3E; same ~0.55 GiB reserve as MI300X (assumption)",
            arch="cdna3"),
        GPU("MI350X", 287.45, 288, True, 8, "amd",
            "288 GB HBM3E (AMD Instinct MI350X specifications), same memory as MI355X; same ~0.55 GiB reserve as "
            "MI300X (assumption, no MI350X startup log found)", arch="cdna4"),
        GPU("MI355X", 287.45, 288, True, 8, "amd", "288 GiB HBM3E; same ~0.55 GiB reserve as MI300X (assumption)",
            arch="cdna4"),
    ]
}
def _host_memory_gib() -> float:
    """This host's RAM (what a CPU deployment planned here has); 0 where the OS does not say."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 2)
    except (ValueError, OSError, AttributeError):
        return 0.0


# A CPU "GPU" for the tiny model: vLLM on CPU treats --gpu-memory-utilization as a fraction of the NUMA
# node's RAM (vllm docs/getting_started/installation/cpu.md, VLLM_CPU_KVCACHE_SPACE and
# --gpu-memory-utilization); its memory is the planning host's RAM, so a plan fits only what the host has.
_HOST_GIB = _host_memory_gib()
GPUS["CPU"] = GPU("CPU", _HOST_GIB, round(_HOST_GIB), False, 1, "cpu",
                  "vllm CPU backend: memory = the host's RAM (vllm docs/getting_started/installation/cpu.md)",
                  arch="cpu")

_GPU_ALIASES = {"H100-80GB": "H100", "H100-SXM": "H100", "H200-141GB": "H200", "A100-80GB": "A100",
                "H20-96GB": "H20", "H20-141GB": "H20-3e", "B300-SXM6": "B300", "GB200-NVL72": "GB200",
                "GB300-NVL72": "GB300"}


def gpu_names() -> list[str]:
    return sorted(GPUS)


def get_gpu(name: str) -> GPU:
    """Look a GPU up by name or alias, case-insensitively (H20-3e, h20-3E and H20-141GB are one GPU)."""
    key = name.strip().upper()
    key = _GPU_ALIASES.get(key, key).upper()
    by_upper = {g.upper(): g for g in GPUS}
    if key not in by_upper:
        raise BadInput(f"unknown GPU {name!r}; known: {', '.join(gpu_names())}", "hardware.gpu")
    return GPUS[by_upper[key]]
