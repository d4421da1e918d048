"""tiny-k2 as a checkpoint: Kimi K2's structure and tensor names, shards and index like the real one,
the tokenizer's Kimi tokens and chat template, determinism for a seed; a DEST that is (or lies under) a
file is exit 2 before any work."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

from kimi_deploy.architecture import Architecture, Inventory, iter_components
from kimi_deploy.tiny.tokenizer import MARKERS, SPECIAL
from kimi_deploy.toolsuite import TOOLS
from kimi_deploy.weights import VERIFY_MARKER

from .conftest import TINY_PREBUILT, assert_clean_error, cli_json, run_cli


def test_config_has_kimi_k2_structure(tiny_dir: Path) -> None:
    cfg = json.loads((tiny_dir / "config.json").read_text())
    assert cfg["model_type"] == "kimi_k2" and cfg["architectures"] == ["DeepseekV3ForCausalLM"]
    assert (cfg["kv_lora_rank"], cfg["qk_rope_head_dim"]) == (512, 64)  # vLLM CPU MLA: 576
    assert cfg["q_lora_rank"] and cfg["first_k_dense_replace"] == 1 and cfg["n_shared_experts"] == 1
    assert (cfg["topk_method"], cfg["scoring_func"]) == ("noaux_tc", "sigmoid")


def test_tensors_match_the_kimi_inventory(tiny_dir: Path) -> None:
    index = json.loads((tiny_dir / "model.safetensors.index.json").read_text())
    arch = Architecture.from_path(tiny_dir)
    expected = {t.name: t for c in iter_components(arch) for t in c.tensors}
    assert set(index["weight_map"]) == set(expected)
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and shards[0] == "model-00001-of-00003.safetensors"
    seen = 0
    for shard in shards:
        with safe_open(str(tiny_dir / shard), framework="pt") as f:
            for name in f.keys():
                assert index["weight_map"][name] == shard
                t = f.get_tensor(name)
                exp = expected[name]
                assert tuple(t.shape) == exp.shape, name
                assert {"torch.bfloat16": "BF16", "torch.float32": "F32"}[str(t.dtype)] == exp.dtype, name
                seen += t.numel() * t.element_size()
    assert seen == index["metadata"]["total_size"] == Inventory.of(arch).total_bytes
    for layer in range(1, arch.num_hidden_layers):  # every MoE layer carries the router bias
        assert f"model.layers.{layer}.mlp.gate.e_score_correction_bias" in index["weight_map"]


def test_the_planner_plans_the_tiny_checkpoint(tiny_dir: Path) -> None:
    code, data = cli_json("plan", "--model", str(tiny_dir), "--gpu", "CPU", "--gpus-per-node", "1",
                          "--max-model-len", "2048", "--gpu-memory-utilization", "0.2", "--json")
    assert code == 0 and data["fits"]
    assert data["kv_bytes_per_token"] == (512 + 64) * 2 * 3


def test_tokenizer_has_kimi_tokens(tiny_dir: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(tiny_dir))
    for t in SPECIAL + MARKERS:
        ids = tok(t, add_special_tokens=False).input_ids
        assert len(ids) == 1, t
    # markers are not special: they survive skip_special_tokens, as in Kimi's tokenizer
    text = "<|tool_calls_section_begin|>x<|im_end|>"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids, skip_special_tokens=True) == \
        "<|tool_calls_section_begin|>x"


def test_chat_template_renders_kimi_format(tiny_dir: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(tiny_dir))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": "", "reasoning_content": "Need a tool.", "tool_calls": [
            {"id": "functions.get_weather:0", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": '{"temperature": 20}'},
    ]
    text = tok.apply_chat_template(messages, tools=TOOLS[:1], add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_system|>tool_declare<|im_middle|>[{")
    assert "<|im_system|>system<|im_middle|>Be brief.<|im_end|>" in text
    assert "<|im_user|>user<|im_middle|>Weather in Rome?<|im_end|>" in text
    assert ("<|im_assistant|>assistant<|im_middle|><think>Need a tool.</think><|tool_calls_section_begin|>"
            "<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\": \"Rome\"}"
            "<|tool_call_end|><|tool_calls_section_end|><|im_end|>") in text
    assert '<|im_system|>tool<|im_middle|>## Return of functions.get_weather:0\n{"temperature": 20}<|im_end|>' in text
    assert text.endswith("<|im_assistant|>assistant<|im_middle|><think>")  # thinking on by default
    off = tok.apply_chat_template(messages[:2], add_generation_prompt=True, tokenize=False, thinking=False)
    assert off.endswith("<|im_assistant|>assistant<|im_middle|><think></think>")


def _digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.glob("*.safetensors")) + [d / "tokenizer.json", d / "config.json"]:
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.e2e  # trains (three short runs: the tokenizer and the encoded data are most of it)
def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    from kimi_deploy.tiny.model import train

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train(a, seed=3, steps=2, log=lambda m: None)
    train(b, seed=3, steps=2, log=lambda m: None)
    train(c, seed=4, steps=2, log=lambda m: None)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    # the training facts are strict JSON: two steps run no long-note batch, so its loss is null, not NaN
    facts = json.loads((a / "tiny-k2.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in tiny-k2.json"))
    assert facts["final_long_loss"] is None and facts["final_loss"] > 0 and facts["version"] == "2"


def test_tiny_model_refuses_to_clobber(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    assert_clean_error(run_cli("tiny-model", str(tmp_path)), "not a tiny-k2 checkpoint", "--force")
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert_clean_error(run_cli("tiny-model", str(tmp_path / "x"), "--steps", "0"), "--steps")


# --- the prebuilt checkpoint the tests use -----------------------------------------------------------

def test_the_prebuilt_checkpoint_matches_todays_training_inputs() -> None:
    """tests/data/tiny-k2 stands in for 40 minutes of training only while the code, data and libraries
    that would train it are the ones it was trained with: after a change there, remake it with
    `bash scripts/ship-tiny-k2.sh` (and commit it)."""
    from kimi_deploy.tiny.model import DEFAULT_STEPS, prebuilt_problem

    assert prebuilt_problem(TINY_PREBUILT, 0, DEFAULT_STEPS) is None


def test_a_prebuilt_checkpoint_that_is_not_what_it_says_is_refused(tmp_path: Path) -> None:
    """A changed file or a manifest for other inputs: exit 2 naming the directory, nothing cached."""
    cache = tmp_path / "cache"
    env = {**os.environ, "KIMI_DEPLOY_CACHE": str(cache)}
    tampered = tmp_path / "tampered"
    shutil.copytree(TINY_PREBUILT, tampered)
    shard = next(iter(sorted(tampered.glob("*.safetensors"))))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    proc = run_cli("tiny-model", str(tmp_path / "a"), "--prebuilt", str(tampered), env=env)
    assert_clean_error(proc, str(tampered), shard.name, "not the file its manifest describes")
    other = tmp_path / "other"
    shutil.copytree(TINY_PREBUILT, other)
    manifest = json.loads((other / "prebuilt.json").read_text())
    manifest["key"] = "0" * 16
    manifest["inputs"]["libraries"]["torch"] = "0.0.1"
    (other / "prebuilt.json").write_text(json.dumps(manifest))
    proc = run_cli("tiny-model", str(tmp_path / "b"), "--prebuilt", str(other), env=env)
    assert_clean_error(proc, str(other), "made from other training inputs", "libraries")
    assert not cache.exists() or not any(cache.rglob("*.safetensors"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_prebuilt_checkpoint_is_adopted_and_verified(tmp_path: Path) -> None:
    env = {**os.environ, "KIMI_DEPLOY_CACHE": str(tmp_path / "cache")}
    proc = run_cli("tiny-model", str(tmp_path / "k2"), "--prebuilt", str(TINY_PREBUILT), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "taken from the prebuilt checkpoint" in proc.stderr and "training tiny-k2" not in proc.stderr
    manifest = json.loads((TINY_PREBUILT / "prebuilt.json").read_text())
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((tmp_path / "k2" / name).read_bytes()).hexdigest() == digest
    assert (tmp_path / "k2" / VERIFY_MARKER).is_file()  # verified as it was copied: `serve` takes it


def test_tiny_model_dest_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("mine")
    for dest in (f, f / "sub"):
        assert_clean_error(run_cli("tiny-model", str(dest), "--steps", "1"), "DEST", "not a directory")
    assert f.read_text() == "mine"
