"""The tensor inventory against an independent count (transformers' own DeepseekV3 model built on the
meta device) and against the facts of the real checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

from kimi_deploy.architecture import Architecture, Inventory, WeightFormat, iter_components, logical_params
from kimi_deploy.catalog import MODELS, get_model
from kimi_deploy.errors import BadInput

GiB = 1024**3


def _transformers_params(config: dict) -> int:
    text = dict(config.get("text_config") or config)
    for key in ("quantization_config", "architectures", "model_type", "auto_map"):
        text.pop(key, None)
    with torch.device("meta"):  # no memory is allocated for the 1 T parameters
        model = DeepseekV3ForCausalLM(DeepseekV3Config(**text))
    params = sum(p.numel() for p in model.parameters())
    # transformers keeps the router's e_score_correction_bias as a buffer; checkpoints store it.
    bias = sum(b.numel() for n, b in model.named_buffers() if n.endswith("e_score_correction_bias"))
    return params + bias


@pytest.mark.parametrize("model_id", sorted(MODELS))
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
    with pytest.raises(BadInput, match="hidden_size must be a positive integer"):
        Architecture.from_config(cfg)
    with pytest.raises(BadInput, match="no config.json"):
        Architecture.from_path(tmp_path / "missing")
