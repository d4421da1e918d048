"""The tensor inventory against an independent count (transformers' own DeepseekV3 and KimiLinear models
built on the meta device) and against the facts of the real checkpoints."""

from __future__ import annotations

import json

import pytest

from kimi_deploy.architecture import (Architecture, Inventory, WeightFormat, expert_tensors, iter_components,
                                     logical_params)
from kimi_deploy.catalog import MODELS, get_model
from kimi_deploy.errors import BadInput

GiB = 1024**3


def _transformers_params(config: dict) -> int:
    # imported here: transformers' models take seconds to import, paid only by the worker that runs these
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
    from transformers.models.kimi_linear import KimiLinearConfig, KimiLinearForCausalLM

    text = dict(config.get("text_config") or config)
    for key in ("quantization_config", "architectures", "model_type", "auto_map"):
        text.pop(key, None)
    with torch.device("meta"):  # no memory is allocated for the 1 T parameters
        if text.get("linear_attn_config"):
            model = KimiLinearForCausalLM(KimiLinearConfig(**text))
        else:
            model = DeepseekV3ForCausalLM(DeepseekV3Config(**text))
    params = sum(p.numel() for p in model.parameters())
    # transformers keeps the router's e_score_correction_bias as a buffer; checkpoints store it.
    bias = sum(b.numel() for n, b in model.named_buffers() if n.endswith("e_score_correction_bias"))
    return params + bias


# transformers' KimiLinear (5.19) is Kimi-Linear's architecture; K3's full-rank KDA gate, gated MLA, latent
# MoE and attention residuals are not in it, so K3 is checked against its published checkpoint size instead
# (tests/test_catalog.py).
_TRANSFORMERS_BUILDS = sorted(m for m in MODELS if not MODELS[m].architecture().latent_moe_dim)


@pytest.mark.xdist_group("transformers-models")  # one worker imports them
@pytest.mark.parametrize("model_id", _TRANSFORMERS_BUILDS)
def test_parameter_count_matches_transformers(model_id: str) -> None:
    entry = MODELS[model_id]
    assert logical_params(entry.architecture()) == _transformers_params(entry.config)


def test_k2_instruct_checkpoint_size_matches_published() -> None:
    inv = Inventory.of(get_model("kimi-k2-instruct").architecture())
    # "FP8 K2 ≈ 959 GiB" (no public source found, see benchmarks/planner_accuracy.py); 1.026 T stored
    # parameters incl. scales (huggingface.co/unsloth/Kimi-K2-Instruct-GGUF card)
    assert abs(inv.total_bytes / GiB - 959) / 959 < 0.005
    assert abs(inv.total_params / 1.026e12 - 1) < 0.005


def test_k25_checkpoint_size_matches_recipe() -> None:
    inv = Inventory.of(get_model("kimi-k2.5").architecture())
    assert abs(inv.total_bytes / 595e9 - 1) < 0.005  # vllm-project/recipes models/moonshotai/Kimi-K2.5.yaml: "~595 GB on disk"


def test_fp8_tensors_are_named_and_shaped_like_the_real_checkpoint() -> None:
    arch = get_model("kimi-k2-instruct").architecture()
    comps = list(iter_components(arch))
    by_name = {t.name: t for c in comps for t in c.tensors}
    qb = by_name["model.layers.5.self_attn.q_b_proj.weight"]
    assert qb.shape == (64 * 192, 1536) and qb.dtype == "F8_E4M3"
    assert by_name["model.layers.5.self_attn.q_b_proj.weight_scale_inv"].shape == (96, 12)
    assert by_name["model.layers.5.mlp.gate.e_score_correction_bias"].dtype == "F32"
    assert by_name["model.layers.5.mlp.gate.weight"].dtype == "BF16"
    assert by_name["model.layers.5.mlp.experts.383.down_proj.weight"].shape == (7168, 2048)
    assert by_name["model.layers.0.mlp.gate_proj.weight"].shape == (18432, 7168)  # dense layer 0
    assert "model.layers.0.mlp.gate.weight" not in by_name
    assert by_name["lm_head.weight"].dtype == "BF16"


def test_int4_quantizes_only_routed_experts() -> None:
    arch = get_model("kimi-k2.5").architecture()
    assert arch.quantization.format is WeightFormat.INT4_EXPERTS
    comps = list(iter_components(arch))
    names = {t.name: t for c in comps for t in c.tensors}
    p = "language_model.model.layers.1.mlp"
    assert names[f"{p}.experts.0.gate_proj.weight_packed"].shape == (2048, 7168 // 8)
    assert names[f"{p}.experts.0.gate_proj.weight_packed"].dtype == "I32"
    assert names[f"{p}.experts.0.gate_proj.weight_scale"].shape == (2048, 7168 // 32)
    assert names[f"{p}.experts.0.down_proj.weight_shape"].dtype == "I64"
    assert names[f"{p}.shared_experts.down_proj.weight"].dtype == "BF16"
    assert names["language_model.model.layers.1.self_attn.o_proj.weight"].dtype == "BF16"


def test_local_config_dir_plans_like_the_catalog(tmp_path) -> None:
    entry = get_model("kimi-k2-instruct")
    (tmp_path / "config.json").write_text(json.dumps(entry.config))
    assert Architecture.from_path(tmp_path) == entry.architecture()


def test_bad_configs_name_the_file_and_field(tmp_path) -> None:
    (tmp_path / "config.json").write_text('{"hidden_size": 16}')
    with pytest.raises(BadInput, match="missing num_hidden_layers"):
        Architecture.from_path(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BadInput, match="invalid JSON"):
        Architecture.from_path(tmp_path)
    cfg = dict(get_model("kimi-k2-instruct").config, hidden_size=-1)
    with pytest.raises(BadInput, match="hidden_size must be an integer from 1"):
        Architecture.from_config(cfg)
    with pytest.raises(BadInput, match="no config.json"):
        Architecture.from_path(tmp_path / "missing")


K2 = get_model("kimi-k2-instruct").config
LINEAR = get_model("kimi-linear").config


@pytest.mark.parametrize("config, needle", [
    # values a hostile or broken config.json holds: each one a clean error naming the key, never a crash or a
    # plan of nonsense (found by review: ZeroDivisionError, ValueError, TypeError, minutes of planning)
    ({**K2, "moe_layer_freq": 0}, "moe_layer_freq must be an integer from 1"),
    ({**K2, "moe_layer_freq": "x"}, "moe_layer_freq"),
    ({**K2, "max_position_embeddings": "lots"}, "max_position_embeddings"),
    ({**K2, "q_lora_rank": "1536"}, "q_lora_rank"),
    ({**K2, "q_lora_rank": 1536.5}, "q_lora_rank"),
    ({**K2, "q_lora_rank": True}, "q_lora_rank"),
    ({**K2, "tie_word_embeddings": "false"}, "tie_word_embeddings must be true or false"),
    ({**K2, "num_experts_per_tok": 400}, "num_experts_per_tok must be an integer from 1 to 384"),
    ({**K2, "num_experts_per_tok": 0}, "num_experts_per_tok"),
    ({**K2, "moe_intermediate_size": 0}, "moe_intermediate_size"),
    ({**K2, "num_hidden_layers": 10_000_000}, "num_hidden_layers must be an integer from 1 to 4,096"),
    ({"text_config": 5}, "text_config must be an object"),
    ({"text_config": [1, 2]}, "text_config must be an object"),
    ({**LINEAR, "intermediate_size": "big"}, "intermediate_size"),
    ({**LINEAR, "linear_attn_config": {**LINEAR["linear_attn_config"], "use_full_rank_gate": "no"}},
     "linear_attn_config.use_full_rank_gate must be true or false"),
    ({**LINEAR, "linear_attn_config": [1]}, "linear_attn_config must be an object"),
    ({**get_model("kimi-k3").config, "vision_config": {"vt_hidden_size": "big"}}, "vision_config.vt_hidden_size"),
    ({**get_model("kimi-k3").config, "vision_config": {"vt_hidden_size": -3}}, "vision_config.vt_hidden_size"),
])
def test_hostile_configs_are_refused_naming_the_key(config: dict, needle: str, tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(BadInput) as err:
        Architecture.from_path(tmp_path)
    assert needle in str(err.value) and str(path) in str(err.value), str(err.value)


# --- the hybrid models -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model_id, published, source", [
    # model.safetensors.index.json total_size at moonshotai/Kimi-K3 f831ab66 (96 shards) [3p copies]
    ("kimi-k3", 1_560_860_324_864, "Kimi-K3 index total_size"),
    # recipes PR #744: "real 1645.9 GB safetensors checkpoint"
    ("kimi-k3-nvfp4", 1645.9e9, "RedHatAI/Kimi-K3-NVFP4"),
    # recipes PR #688: "The resulting checkpoint is ~2.82 TB"
    ("kimi-k3-fp8-block", 2.82e12, "RedHatAI/Kimi-K3-FP8-BLOCK"),
    # model.safetensors.index.json total_size at moonshotai/Kimi-Linear-48B-A3B-Instruct e1df551a [3p]
    ("kimi-linear-48b-a3b-instruct", 98_245_528_576, "Kimi-Linear index total_size"),
])
def test_hybrid_checkpoint_sizes_match_published(model_id: str, published: float, source: str) -> None:
    total = Inventory.of(get_model(model_id).architecture()).total_bytes
    assert abs(total / published - 1) < 0.005, f"{model_id}: {total:,} vs {source} {published:,.0f}"


def test_k3_layers_tensors_and_parameters() -> None:
    arch = get_model("kimi-k3").architecture()
    assert arch.hybrid and arch.mla_layers == 24 and len(arch.linear_attention.layers) == 69
    # 1-based kda_layers: layers 4, 8, ..., 92 and 93 (0-based 3, ..., 91, 92) are MLA
    assert [i for i in range(93) if not arch.is_kda_layer(i)] == [*range(3, 92, 4), 92]
    by_name = {t.name: t for c in iter_components(arch, experts=False) for t in c.tensors}
    lp = "language_model.layers"
    assert by_name[f"{lp}.0.self_attn.g_proj.weight"].shape == (96 * 128, 7168)  # KDA full-rank gate
    assert by_name[f"{lp}.0.self_attn.q_conv1d.weight"].shape == (96 * 128, 1, 4)
    assert by_name[f"{lp}.3.self_attn.g_proj.weight"].shape == (96 * 128, 7168)  # MLA output gate
    assert by_name[f"{lp}.3.self_attn.kv_a_proj_with_mqa.weight"].shape == (576, 7168)
    assert by_name[f"{lp}.0.mlp.gate_proj.weight"].shape == (33792, 7168)  # the dense layer
    assert by_name[f"{lp}.5.block_sparse_moe.routed_expert_down_proj.weight"].dtype == "BF16"
    assert by_name[f"{lp}.5.block_sparse_moe.shared_experts.up_proj.weight"].shape == (6144, 7168)
    experts = {t.name: t for t in expert_tensors(arch, 5)}
    w1 = experts[f"{lp}.5.block_sparse_moe.experts.0.w1.weight_packed"]
    assert (w1.shape, w1.dtype) == ((3072, 1792), "U8")  # MXFP4 at the 3584 latent
    assert experts[f"{lp}.5.block_sparse_moe.experts.0.w2.weight_scale"].shape == (3584, 96)
    # "2.8T" total (REC Kimi-K3.yaml parameter_count); 104-105 B active (16 of 896 experts + the rest)
    assert abs(logical_params(arch) / 2.8e12 - 1) < 0.01


def test_kimi_linear_config_errors_name_the_field(tmp_path) -> None:
    from kimi_deploy.catalog import _KIMI_LINEAR
    for change, needle in [({"linear_attn_config": {**_KIMI_LINEAR["linear_attn_config"], "kda_layers": [0, 1]}},
                            "kda_layers"),
                           ({"linear_attn_config": {**_KIMI_LINEAR["linear_attn_config"], "num_heads": "32"}},
                            "linear_attn_config.num_heads"),
                           ({"num_experts": -1}, "num_experts"),
                           ({"kv_lora_rank": None}, "kv_lora_rank")]:
        path = tmp_path / "config.json"
        path.write_text(json.dumps({**_KIMI_LINEAR, **change}))
        with pytest.raises(BadInput) as err:
            Architecture.from_path(tmp_path)
        assert needle in str(err.value) and str(path) in str(err.value)
