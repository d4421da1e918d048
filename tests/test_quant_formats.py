"""The NVFP4, MXFP4 and FP8-block inventories against bytes computed by hand from the config, the quantization
configs of each dialect parsed from dicts built like the published ones, and the checkpoint sizes the
vendors publish."""

from __future__ import annotations

import copy
import json
import math

import pytest

from kimi_deploy.architecture import Architecture, Inventory, iter_components, logical_params
from kimi_deploy.catalog import MODELS, get_model
from kimi_deploy.errors import BadInput
from kimi_deploy.quant_formats import Quantization, WeightFormat

H, I_MOE, I_DENSE, E = 7168, 2048, 18432, 384  # K2 config.json hidden, moe/dense intermediate, experts


def _names(model_id: str) -> dict:
    return {t.name: t for c in iter_components(get_model(model_id).architecture()) for t in c.tensors}


def _routed_bytes(model_id: str) -> int:
    inv = Inventory.of(get_model(model_id).architecture())
    return next(b for kind, layer, _, b in inv.components if kind == "routed_experts")


def test_nvfp4_expert_matrix_bytes_by_hand() -> None:
    # One [7168, 2048] down_proj: FP4 values two per byte, an FP8 E4M3 scale per 16 values, and the FP32
    # weight_scale_2 and input_scale (W4A4) scalars. gate/up are [2048, 7168]: the same counts.
    per_matrix = H * I_MOE // 2 + H * I_MOE // 16 + 4 + 4
    assert _routed_bytes("kimi-k2.5-nvfp4") == E * 3 * per_matrix
    n = _names("kimi-k2.5-nvfp4")
    p = "language_model.model.layers.1.mlp.experts.0.down_proj"
    assert (n[f"{p}.weight"].shape, n[f"{p}.weight"].dtype) == ((H, I_MOE // 2), "U8")
    assert (n[f"{p}.weight_scale"].shape, n[f"{p}.weight_scale"].dtype) == ((H, I_MOE // 16), "F8_E4M3")
    assert (n[f"{p}.weight_scale_2"].shape, n[f"{p}.weight_scale_2"].dtype) == ((), "F32")
    assert n[f"{p}.input_scale"].dtype == "F32"


def test_nvfp4_keeps_nvidias_bf16_split() -> None:
    # Attention, shared experts, the layer-0 dense MLP, lm_head and the vision tower stay BF16.
    n = _names("kimi-k2.5-nvfp4")
    lp = "language_model.model.layers"
    for name in (f"{lp}.1.self_attn.q_a_proj.weight", f"{lp}.1.self_attn.kv_b_proj.weight",
                 f"{lp}.1.self_attn.o_proj.weight", f"{lp}.1.mlp.shared_experts.down_proj.weight",
                 f"{lp}.0.mlp.gate_proj.weight", f"{lp}.60.mlp.gate.weight", "language_model.lm_head.weight",
                 "vision_tower+mm_projector"):
        assert n[name].dtype == "BF16", name
    assert f"{lp}.0.mlp.gate_proj.weight_scale" not in n
    assert n[f"{lp}.60.mlp.experts.383.gate_proj.weight"].dtype == "U8"


def test_nvfp4_compressed_tensors_names_and_split() -> None:
    # RedHatAI NVFP4 (LLM Compressor): weight_packed / weight_scale / weight_global_scale / input_global_scale;
    # its ignore list leaves the dense layer and the shared experts quantized.
    per_matrix = H * I_MOE // 2 + H * I_MOE // 16 + 4 + 4
    assert _routed_bytes("kimi-k2.6-nvfp4-redhat") == E * 3 * per_matrix
    n = _names("kimi-k2.6-nvfp4-redhat")
    lp = "language_model.model.layers"
    assert n[f"{lp}.1.mlp.experts.7.up_proj.weight_packed"].shape == (I_MOE, H // 2)
    assert n[f"{lp}.1.mlp.experts.7.up_proj.weight_global_scale"].shape == (1,)
    assert n[f"{lp}.1.mlp.shared_experts.up_proj.weight_packed"].dtype == "U8"
    assert n[f"{lp}.0.mlp.down_proj.weight_scale"].shape == (H, I_DENSE // 16)
    assert n[f"{lp}.1.self_attn.q_b_proj.weight"].dtype == "BF16"


def test_mxfp4_expert_and_dense_bytes_by_hand() -> None:
    # E2M1 two per byte plus one E8M0 byte per 32 values; dynamic activations, so no input scale.
    per_matrix = H * I_MOE // 2 + H * I_MOE // 32
    assert _routed_bytes("kimi-k2.5-mxfp4") == E * 3 * per_matrix
    n = _names("kimi-k2.5-mxfp4")
    lp = "language_model.model.layers"
    assert (n[f"{lp}.0.mlp.down_proj.weight"].shape, n[f"{lp}.0.mlp.down_proj.weight"].dtype) == (
        (H, I_DENSE // 2), "U8")
    assert n[f"{lp}.0.mlp.down_proj.weight_scale"].shape == (H, I_DENSE // 32)
    assert n[f"{lp}.5.mlp.shared_experts.gate_proj.weight_scale"].dtype == "U8"
    assert n[f"{lp}.5.self_attn.kv_a_proj_with_mqa.weight"].dtype == "BF16"
    assert n[f"{lp}.5.mlp.gate.weight"].dtype == "BF16"  # `*mlp.gate` in Quark's exclude list


def test_fp8_block_compressed_tensors_by_hand() -> None:
    # FP8 values one per byte plus a BF16 scale per 128x128 block; q_a / kv_a stay BF16 (ignore list).
    blocks = math.ceil(H / 128) * math.ceil(I_MOE / 128)
    assert _routed_bytes("kimi-k2.6-fp8-block") == E * 3 * (H * I_MOE + 2 * blocks)
    n = _names("kimi-k2.6-fp8-block")
    lp = "language_model.model.layers.3.self_attn"
    assert n[f"{lp}.q_a_proj.weight"].dtype == "BF16" and n[f"{lp}.kv_a_proj_with_mqa.weight"].dtype == "BF16"
    assert n[f"{lp}.q_b_proj.weight"].dtype == "F8_E4M3"
    assert (n[f"{lp}.q_b_proj.weight_scale"].shape, n[f"{lp}.q_b_proj.weight_scale"].dtype) == ((96, 12), "BF16")
    assert f"{lp}.q_b_proj.weight_scale_inv" not in n  # that name is DeepSeek's native fp8 dialect


@pytest.mark.parametrize("model_id, published, unit, source", [
    # vllm-project/recipes models/moonshotai/Kimi-K2.5.yaml variant mxfp4: "~557 GB on disk"
    ("kimi-k2.5-mxfp4", 557, 1e9, "REC"),
    # wafer-ai/Kimi-K2.6-NVFP4 card: "~590 GB (550 GiB)", with attention / lm_head / vision BF16 and the
    # shared experts and dense layer NVFP4 -- the split of the RedHatAI entry's ignore list
    ("kimi-k2.6-nvfp4-redhat", 550, 2**30, "wafer-ai card"),
])
def test_checkpoint_sizes_match_published(model_id: str, published: float, unit: float, source: str) -> None:
    total = Inventory.of(get_model(model_id).architecture()).total_bytes
    assert abs(total / unit / published - 1) < 0.005, (total / unit, published, source)


def test_nvidia_split_matches_a_pruned_derivative() -> None:
    # 0xSero/Kimi-K2.6-519B-NVFP4 keeps 192 of nvidia/Kimi-K2.6-NVFP4's 384 experts per layer: "On-disk size
    # 310 GB", "Logical params 519.5B" (its model card). Only NVIDIA's split (shared experts and dense BF16)
    # lands there; the all-MLP split of the RedHatAI checkpoint would be 305 GB.
    cfg = copy.deepcopy(get_model("kimi-k2.6-nvfp4").config)
    cfg["text_config"]["n_routed_experts"] = 192
    arch = Architecture.from_config(cfg)
    assert abs(Inventory.of(arch).total_bytes / 310e9 - 1) < 0.005
    assert abs(logical_params(arch) / 519.5e9 - 1) < 0.005
    other = copy.deepcopy(get_model("kimi-k2.6-nvfp4-redhat").config)
    other["text_config"]["n_routed_experts"] = 192
    assert abs(Inventory.of(Architecture.from_config(other)).total_bytes / 310e9 - 1) > 0.01


# --- parsing the published dialects ---------------------------------------------------------------

def test_modelopt_hf_quant_config_next_to_config_json(tmp_path) -> None:
    # A ModelOpt export: config.json without quantization_config plus hf_quant_config.json (the file vLLM's
    # ModelOptNvFp4Config.get_config_filenames reads).
    cfg = copy.deepcopy(get_model("kimi-k2-thinking").config)
    cfg.pop("quantization_config")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "hf_quant_config.json").write_text(json.dumps({
        "producer": {"name": "modelopt", "version": "0.37.0"},
        "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8", "group_size": 16,
                         "exclude_modules": ["lm_head", "*self_attn*", "*shared_experts*", "*mlp.gate_proj",
                                             "*mlp.up_proj", "*mlp.down_proj"]}}))
    arch = Architecture.from_path(tmp_path)
    assert arch.quantization.format is WeightFormat.NVFP4 and arch.quantization.input_scales
    assert Inventory.of(arch).total_bytes == Inventory.of(get_model("kimi-k2-thinking-nvfp4").architecture()).total_bytes


def test_modelopt_weight_only_nvfp4_has_no_input_scale() -> None:
    q = Quantization.from_config({"quant_method": "modelopt", "quant_algo": "W4A16_NVFP4", "group_size": 16})
    names = [n for n, _, _ in q.linear("model.layers.1.mlp.experts.0.up_proj", I_MOE, H)]
    assert names[-1].endswith("weight_scale_2") and not any(n.endswith("input_scale") for n in names)


def test_compressed_tensors_mxfp4_is_stored_packed_with_e8m0_scales() -> None:
    # vllm compressed_tensors/schemes/compressed_tensors_w4a4_mxfp4.py: weight_packed U8 [o, i/2],
    # weight_scale U8 [o, i/32], no global scale
    q = Quantization.from_config({"quant_method": "compressed-tensors", "format": "mxfp4-pack-quantized",
                                  "config_groups": {"g": {"weights": {"num_bits": 4, "type": "float",
                                                                      "strategy": "group", "group_size": 32}}},
                                  "ignore": ["lm_head"]})
    assert q.format is WeightFormat.MXFP4 and q.group == 32
    assert q.linear("model.layers.1.mlp.experts.0.w1", 512, 1024) == [
        ("model.layers.1.mlp.experts.0.w1.weight_packed", (512, 512), "U8"),
        ("model.layers.1.mlp.experts.0.w1.weight_scale", (512, 32), "U8")]
    assert q.linear("lm_head", 8, 64) == [("lm_head.weight", (8, 64), "BF16")]


@pytest.mark.parametrize("qc, needles", [
    ({"quant_method": "modelopt", "quant_algo": "FP8"}, ["quant_algo", "NVFP4"]),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 32}, ["group_size", "16"]),
    ({"quant_method": "quark", "global_quant_config": {"weight": {"dtype": "fp4", "qscheme": "per_group",
                                                                   "group_size": 32}},
      "layer_quant_config": {"*self_attn*": {}}}, ["layer_quant_config"]),
    ({"quant_method": "quark", "global_quant_config": {"weight": {"dtype": "int8", "qscheme": "per_channel"}}},
     ["global_quant_config", "MXFP4"]),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4, "type": "float",
                                                                                "group_size": 64}}}},
     ["group_size 64", "NVFP4", "MXFP4"]),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8, "type": "int",
                                                                                "strategy": "channel"}}}},
     ["not modelled", "FP8 block"]),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4, "type": "int"}}},
      "ignore": ["re:(unclosed"]}, ["not a valid regular expression"]),
    ({"quant_method": "gguf"}, ["unknown quant_method", "modelopt", "quark"]),
])
def test_unsupported_quantization_configs_name_the_field(qc: dict, needles: list[str]) -> None:
    cfg = dict(get_model("kimi-k2-instruct").config, quantization_config=qc)
    with pytest.raises(BadInput) as err:
        Inventory.of(Architecture.from_config(cfg))
    text = str(err.value)
    assert "quantization_config" in text
    for needle in needles:
        assert needle in text, text


@pytest.mark.parametrize("model_id", [m for m in MODELS if MODELS[m].base])
def test_requantized_entries_keep_the_base_architecture(model_id: str) -> None:
    """Same backbone and context as the checkpoint they re-quantize; only the storage differs."""
    entry, base = MODELS[model_id], MODELS[MODELS[model_id].base]
    a, b = entry.architecture(), base.architecture()
    assert (a.hidden_size, a.num_hidden_layers, a.n_routed_experts, a.vision is None) == (
        b.hidden_size, b.num_hidden_layers, b.n_routed_experts, b.vision is None)
    assert logical_params(a) == logical_params(b)
    assert entry.context_length == base.context_length and entry.thinking_only == base.thinking_only


def test_same_split_spelled_differently_is_the_same_checkpoint() -> None:
    # `verify` compares a downloaded config.json with the catalog by ==: an export that spells NVIDIA's split
    # with regexes instead of wildcards is the same checkpoint, byte for byte.
    cfg = copy.deepcopy(get_model("kimi-k2.6-nvfp4").config)
    cfg["quantization_config"]["ignore"] = ["re:.*lm_head", "re:.*self_attn.*", "re:.*shared_experts.*",
                                            "re:.*layers\\.0\\.mlp\\..*", "re:.*vision_tower.*",
                                            "re:.*mm_projector.*"]
    arch = Architecture.from_config(cfg)
    assert arch == get_model("kimi-k2.6-nvfp4").architecture()
    assert Inventory.of(arch) == Inventory.of(get_model("kimi-k2.6-nvfp4").architecture())
    # A different format (or dialect) is not.
    assert arch != get_model("kimi-k2.6-nvfp4-redhat").architecture()
    assert arch != get_model("kimi-k2.6").architecture()
