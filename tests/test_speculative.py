"""Speculative decoding: EAGLE3 (spec, planner, both engines' real parsers, download), and for Kimi K3
MTP where the checkpoint has MTP layers and DSpark drafts (vLLM and SGLang parsers, draft memory in the plan);
the multimodal settings (language_model_only, mm_encoder_tp_mode), the start-up budget (probe and vLLM's
engine-ready timeout from one number) and the version gates that refuse too-old engines with a source."""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from kimi_deploy import drafts, startup
from kimi_deploy.architecture import Inventory
from kimi_deploy.deployment import resolve
from kimi_deploy.engines.render import render
from kimi_deploy.engines.check import check_nodes
from kimi_deploy.engines.profiles import PROFILES
from kimi_deploy.engines.versions import Feature
from kimi_deploy.k8s import manifests
from kimi_deploy.spec import parse_spec

from .conftest import DEPLOY, ROOT, assert_clean_error, run_cli
from .hubstub import Hub, HubServer

B300 = yaml.safe_load((DEPLOY / "kimi-k2.6-nvfp4-b300x4-vllm-eagle3.yaml").read_text())
K27 = yaml.safe_load((DEPLOY / "kimi-k2.7-code-h200x8-sglang-eagle3.yaml").read_text())
K25_SGLANG = yaml.safe_load((DEPLOY / "kimi-k2.5-h200x8-sglang-tp8.yaml").read_text())
K2_TP16 = yaml.safe_load((DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml").read_text())
VLLM_NEWEST = Path(sys.prefix) / "vllm-newest"  # unpacked by scripts/setup-env.sh (pip install --no-deps --target)



def _changed(base: dict, **changes) -> dict:
    data = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return data


def _file(tmp_path: Path, data: dict) -> str:
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


# --- the spec --------------------------------------------------------------------------------------

@pytest.mark.parametrize("base, changes, needles", [
    (B300, {"speculative__method": "mtp"},
     ["speculative.method", "num_nextn_predict_layers: 0", "use method: eagle3"]),
    (B300, {"speculative__method": "medusa"}, ["speculative.method", "'eagle3', 'dspark' or 'mtp'"]),
    (B300, {"speculative__num_speculative_tokens": 0}, ["speculative.num_speculative_tokens", "greater than or equal to 1"]),
    (B300, {"speculative__num_speculative_tokens": 17}, ["speculative.num_speculative_tokens", "less than or equal to 16"]),
    (B300, {"speculative__draft": None}, ["speculative", "eagle3 needs a draft model"]),
    (B300, {"speculative__draft": "/nonexistent/kimi-draft"}, ["speculative.draft", "draft directory not found"]),
    (B300, {"speculative__draft": "someone/unknown-eagle3"},
     ["speculative.draft", "not a known draft", "lightseekorg/kimi-k2.6-eagle3-mla"]),
    (B300, {"speculative__eagle_topk": 4}, ["speculative.eagle_topk", "SGLang settings"]),
    (K27, {"speculative__num_draft_tokens": 9}, ["speculative", "num_speculative_tokens + 1 = 4"]),
    (K27, {"speculative__eagle_topk": 2, "speculative__num_draft_tokens": 64},
     ["speculative.num_draft_tokens", "more than the tree holds"]),
    (K2_TP16, {"serving__language_model_only": True}, ["serving.language_model_only", "text-only"]),
    (B300, {"topology": {"mode": "tp-pp", "tp": 2, "pp": 2}}, ["speculative", "pipeline parallelism", "vllm#50098"]),
    (B300, {"serving__mm_encoder_tp_mode": "data"}, ["serving.mm_encoder_tp_mode", "set one of"]),
    (B300, {"serving__mm_encoder_tp_mode": "pipeline"}, ["serving.mm_encoder_tp_mode", "'weights' or 'data'"]),
    (B300, {"serving__load_format": "tensorizer"}, ["serving.load_format", "runai_streamer"]),
])
def test_bad_speculative_and_multimodal_settings(tmp_path: Path, base: dict, changes: dict, needles: list[str]) -> None:
    path = _file(tmp_path, _changed(base, **changes))
    assert_clean_error(run_cli("plan", path), *needles)


def test_every_flag_feature_is_gated_by_its_engine() -> None:
    """A feature a profile's flag relies on has a minimum release in that profile's gates."""
    for profile in PROFILES.values():
        for flag in profile.flags.values():
            for feature in (flag.features or {}).values():
                assert isinstance(feature, Feature) and feature in profile.gates, (profile.name, flag.name)


# --- rendered flags and the real parsers -----------------------------------------------------------

def _vllm_namespace(argv: list[str]) -> argparse.Namespace:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    return make_arg_parser(FlexibleArgumentParser()).parse_args(argv[2:])


def test_vllm_speculative_and_multimodal_flags_parse_to_what_the_spec_says() -> None:
    dep = resolve(parse_spec(B300))
    (node,) = render(dep)
    assert check_nodes([node]) == []
    ns = _vllm_namespace(node.argv)
    assert ns.speculative_config == {"method": "eagle3", "model": "/models/kimi-k2.6-nvfp4/draft",
                                     "num_speculative_tokens": 4}
    assert ns.language_model_only is True
    # the draft is staged next to the target (weights.dir/draft); without weights.dir the engine fetches
    # the Hub draft itself at the pinned revision
    data = _changed(B300, weights__dir=None, speculative__draft_revision="abc123")
    (node,) = render(resolve(parse_spec(data)))
    assert check_nodes([node]) == []
    assert _vllm_namespace(node.argv).speculative_config == {
        "method": "eagle3", "model": "lightseekorg/kimi-k2.6-eagle3-mla", "num_speculative_tokens": 4,
        "revision": "abc123"}


def test_sglang_speculative_flags_parse_to_what_the_spec_says() -> None:
    from sglang.srt.server_args import ServerArgs
    data = _changed(K25_SGLANG, speculative={"method": "eagle3", "draft": "AQ-MedAI/Kimi-K25-eagle3",
                                             "num_speculative_tokens": 5, "eagle_topk": 4, "num_draft_tokens": 8},
                    serving__mm_encoder_tp_mode="data", serving__load_format="runai_streamer")
    (node,) = render(resolve(parse_spec(data)))
    assert check_nodes([node]) == []
    parser = argparse.ArgumentParser(allow_abbrev=False)
    ServerArgs.add_cli_args(parser)
    ns = parser.parse_args(node.argv[3:])
    assert (ns.speculative_algorithm, ns.speculative_draft_model_path) == ("EAGLE3", "/models/kimi-k2.5/draft")
    assert (ns.speculative_num_steps, ns.speculative_eagle_topk, ns.speculative_num_draft_tokens) == (5, 4, 8)
    assert ns.mm_enable_dp_encoder is True and ns.load_format == "runai_streamer"
    # language_model_only renders SGLang's own switch, which its parser accepts
    (node,) = render(resolve(parse_spec(_changed(K25_SGLANG, serving__language_model_only=True))))
    assert parser.parse_args(node.argv[3:]).language_model_only is True


def _argvs_of_every_vllm_example() -> list[list[str]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if data["engine"]["name"] != "vllm" or data["hardware"]["gpu"] == "CPU":
            continue
        nodes = render(resolve(parse_spec(data)), {"serve": "10.0.0.1", "prefill": "10.0.0.1", "decode": "10.0.0.3"})
        out += [n.argv for n in nodes if n.argv[:2] == ["vllm", "serve"]]
    return out


@pytest.fixture(scope="module")
def newest_vllm(tmp_path_factory) -> dict:
    """The newest vLLM release's verdicts, from one process (importing it takes seconds): every vLLM
    example's command, the first with a flag that release does not know, and K3 with MTP. The installed
    vLLM is the CPU engine (0.32.0+cpu); the newest release (locked in requirements/vllm-newest.txt) runs
    in a second process with its package first on the path (only one vllm per process). Its CUDA wheel
    builds the device config from VLLM_TARGET_DEVICE on a host without GPUs."""
    unpacked = sorted(VLLM_NEWEST.glob("vllm-*.dist-info"))
    assert (VLLM_NEWEST / "vllm").is_dir() and len(unpacked) == 1, f"scripts/setup-env.sh unpacks vLLM into {VLLM_NEWEST}"
    examples = _argvs_of_every_vllm_example()
    dep = resolve(parse_spec(_changed(K3_TP8, model=str(_k3_checkpoint(tmp_path_factory.mktemp("k3"), 1)),
                                      weights__dir=None, speculative={"method": "mtp"})))
    (mtp,) = render(dep)
    argvs = [*examples, examples[0] + ["--speculative-method-typo", "x"], mtp.argv]
    env = {**os.environ, "PYTHONPATH": f"{VLLM_NEWEST}:{ROOT / 'src'}", "VLLM_TARGET_DEVICE": "cpu",
           "VLLM_LOGGING_LEVEL": "ERROR"}
    proc = subprocess.run([sys.executable, "-m", "kimi_deploy.engines.check"], input=json.dumps(argvs),
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert len(results) == len(argvs)
    return {"version": unpacked[0].name.removeprefix("vllm-").removesuffix(".dist-info"),
            "examples": list(zip(examples, results)), "typo": results[-2], "mtp": results[-1]}


def test_every_vllm_example_passes_the_newest_vllms_parser_too(newest_vllm: dict) -> None:
    argvs = [a for a, _ in newest_vllm["examples"]]
    assert any("--speculative-config" in a for a in argvs) and any("--language-model-only" in a for a in argvs)
    results = [r for _, r in newest_vllm["examples"]]
    assert {r["engine_version"] for r in results} == {newest_vllm["version"]}
    assert [r for r in results if r["error"]] == []
    # and the same process does reject what that release does not know
    assert "--speculative-method-typo" in newest_vllm["typo"]["error"]


# --- the planner -----------------------------------------------------------------------------------

def test_draft_weights_and_kv_are_counted_per_gpu() -> None:
    with_draft = resolve(parse_spec(B300)).primary.plan
    without = resolve(parse_spec(_changed(B300, speculative=None))).primary.plan
    draft = drafts.get_draft("lightseekorg/kimi-k2.6-eagle3-mla").arch
    per_gpu = draft.bytes_per_gpu(tp=4, attention_tp=4)
    assert with_draft.weight_bytes - without.weight_bytes == per_gpu
    assert with_draft.weight_breakdown["draft"] == per_gpu
    # one MLA layer caches the same 576-value latent as a target layer, in the target's fp8 cache
    assert with_draft.kv_bytes_per_token - without.kv_bytes_per_token == (512 + 64) * 1
    assert with_draft.kv_cache_tokens < without.kv_cache_tokens
    assert with_draft.assumptions["draft"]["bytes_per_gpu"] == per_gpu


def test_draft_sizes_match_the_published_parameter_counts() -> None:
    """The Hub shows "2B params" for the 32K-vocabulary MLA draft (huggingface.co/k-l-lambda/
    kimi-k2.7-code-eagle3-mla); the same shape with the full 163,840 lm_head is the lightseekorg export."""
    mla32k = drafts.DraftArch(**{**drafts._MLA.__dict__, "draft_vocab_size": 32000})
    params = (mla32k.total_bytes - 32000 * 8 - 163840) / drafts.BF16  # minus the d2t/t2d buffers
    assert round(params / 1e9) == 2
    assert 2.9e9 < drafts._MLA.total_bytes / drafts.BF16 < 3.1e9


def test_a_local_draft_is_read_from_its_config_and_index(tmp_path: Path) -> None:
    """A draft given as a directory: shapes from its config.json; embeddings counted only when stored.
    tests/data/kimi-k25-eagle3-config.json is sgl-project/SpecForge configs/kimi-k25-eagle3.json, the config
    the AQ-MedAI Kimi drafts were trained from."""
    cfg = json.loads((ROOT / "tests" / "data" / "kimi-k25-eagle3-config.json").read_text())
    d = tmp_path / "draft"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"midlayer.self_attn.q_proj.weight": "model.safetensors", "lm_head.weight": "model.safetensors"}}))
    shared = drafts.DraftArch.from_path(str(d))
    assert (shared.attention, shared.layers, shared.draft_vocab_size, shared.own_embeddings) == ("gqa", 1, 32000, False)
    assert shared == drafts.DraftArch(**{**drafts._GQA.__dict__, "own_embeddings": False})
    data = _changed(K25_SGLANG, speculative={"method": "eagle3", "draft": str(d)})
    dep = resolve(parse_spec(data))
    assert dep.speculative.path == str(d) and dep.speculative.dir is None
    base = resolve(parse_spec(K25_SGLANG)).primary.plan
    assert dep.primary.plan.weight_bytes - base.weight_bytes == shared.bytes_per_gpu(8, 8)
    # GQA draft: 64 KV heads over TP8 = 8 heads x 128 x (K and V) x 2 bytes on each GPU
    assert dep.primary.plan.kv_bytes_per_token - base.kv_bytes_per_token == 2 * 8 * 128 * 2
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"embed_tokens.weight": "model.safetensors"}}))
    own = drafts.DraftArch.from_path(str(d))
    assert own.own_embeddings is True and own.total_bytes - shared.total_bytes == 163840 * 7168 * 2
    # SGLang swaps in the target's embeddings (eagle_worker_v2 set_embed): the stored copy is not counted
    # there, while vLLM keeps a copy unless it proves identical after loading
    assert resolve(parse_spec(data)).primary.plan.weight_bytes - base.weight_bytes == shared.bytes_per_gpu(8, 8)
    assert own.bytes_per_gpu(8, 8, target_embeddings=False) - own.bytes_per_gpu(8, 8, target_embeddings=True) \
        == 163840 * 7168 * 2 // 8
    (d / "config.json").write_text(json.dumps({**cfg, "hidden_size": "wide"}))
    assert_clean_error(run_cli("plan", _file(tmp_path, data)), "config.json", "hidden_size must be a positive integer")


def test_language_model_only_drops_exactly_the_vision_tower() -> None:
    full = resolve(parse_spec(K25_SGLANG)).primary.plan
    text = resolve(parse_spec(_changed(K25_SGLANG, serving__language_model_only=True))).primary.plan
    vision = sum(r[3] for r in Inventory.of(resolve(parse_spec(K25_SGLANG)).arch).components if r[0] == "vision")
    assert vision > 0
    assert full.weight_bytes - text.weight_bytes == vision
    assert "vision" in full.weight_breakdown and "vision" not in text.weight_breakdown
    assert text.kv_cache_tokens > full.kv_cache_tokens


# --- the start-up budget ---------------------------------------------------------------------------

def test_startup_budget_from_the_published_load_rate_sets_probe_and_engine_timeout() -> None:
    dep = resolve(parse_spec(B300))
    budget = startup.startup_budget(dep)
    expected = (dep.primary.plan.weight_bytes_total + dep.speculative.arch.total_bytes) \
        / startup.LOAD_BYTES_PER_S["auto"] + startup.STARTUP_EXTRA_S
    assert budget == int(expected) and budget > 3600  # ~600 GB at the measured ~130 MB/s
    (node,) = render(dep)
    assert node.env["VLLM_ENGINE_READY_TIMEOUT_S"] == str(budget)
    objs = manifests(dep, yaml.safe_dump(B300))
    probe = objs["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= budget
    # a streaming loader reads ~14x faster, but a pod never gets less than 30 minutes
    fast = resolve(parse_spec(_changed(B300, serving__load_format="runai_streamer")))
    assert startup.startup_budget(fast) == startup.STARTUP_FLOOR_S == 1800
    (node,) = render(fast)
    assert "--load-format" in node.argv and node.env["VLLM_ENGINE_READY_TIMEOUT_S"] == "1800"
    # the spec's override reaches both
    fixed = resolve(parse_spec(_changed(B300, k8s__startup_budget_s=7777)))
    (node,) = render(fixed)
    assert node.env["VLLM_ENGINE_READY_TIMEOUT_S"] == "7777"
    probe = manifests(fixed, "x")["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] == 7780
    # serving.env wins over the derived value (an operator's explicit choice)
    (node,) = render(resolve(parse_spec(_changed(B300, serving__env={"VLLM_ENGINE_READY_TIMEOUT_S": "99"}))))
    assert node.env["VLLM_ENGINE_READY_TIMEOUT_S"] == "99"


def test_the_engine_ready_timeout_variable_is_the_installed_vllms() -> None:
    import vllm.envs
    assert "VLLM_ENGINE_READY_TIMEOUT_S" in vllm.envs.environment_variables


# --- version gates ---------------------------------------------------------------------------------

@pytest.mark.parametrize("base, changes, needles", [
    (B300, {"engine__version": "0.17.0"}, ["engine.version", "EAGLE3 speculative decoding needs vllm >= 0.18.0",
                                           "lightseekorg/kimi-k2.5-eagle3-mla"]),
    (B300, {"engine__version": "0.24.0"}, ["engine.version", "the draft lightseekorg/kimi-k2.6-eagle3-mla needs vllm >= 0.25.0",
                                           "vllm-project/recipes Kimi-K2.6.yaml"]),
    (B300, {"engine__version": "0.15.0", "speculative": None},
     ["engine.version", "--language-model-only needs vllm >= 0.16.0", "vllm #34120"]),
    (K27, {"engine__version": "0.5.13"}, ["engine.version", "needs sglang >= 0.5.14", "kimi-k2.7-coder-eagle3.1-mla"]),
    (K25_SGLANG, {"engine__version": "0.5.22", "serving__language_model_only": True},
     ["engine.version", "--language-model-only needs sglang >= 0.5.23", "sglang #28497"]),
    (K25_SGLANG, {"engine__version": "0.5.5", "serving__mm_encoder_tp_mode": "data"},
     ["engine.version", "multimodal encoder TP mode needs sglang >= 0.5.6", "sglang #13126"]),
])
def test_too_old_engines_are_refused_with_the_source(tmp_path: Path, base: dict, changes: dict, needles: list[str]) -> None:
    assert_clean_error(run_cli("render", _file(tmp_path, _changed(base, **changes))), *needles)


def test_every_gate_names_a_source() -> None:
    for gates in (p.gates for p in PROFILES.values()):
        for feature, gate in gates.items():
            assert gate.source and gate.minimum[0].isdigit(), feature
    for d in drafts.DRAFTS.values():
        assert d.source and (d.min_vllm or d.min_sglang)


# --- download and verify the draft -----------------------------------------------------------------

def _tiny_checkpoint(d: Path, config: dict, seed: int) -> None:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(seed)
    save_file({"midlayer.mlp.down_proj.weight": torch.rand(64, 32, generator=g),
               "lm_head.weight": torch.rand(16, 32, generator=g)}, str(d / "model.safetensors"))


def test_download_fetches_the_draft_next_to_the_target_and_verify_proves_it(tmp_path: Path) -> None:
    """The real huggingface_hub client against the Hub stand-in (tests/hubstub.py; the Hub is not
    reachable here) serving the target and the draft from one endpoint."""
    target_src, draft_src = tmp_path / "hub-target", tmp_path / "hub-draft"
    _tiny_checkpoint(target_src, {"model_type": "kimi_k25"}, 1)
    _tiny_checkpoint(draft_src, json.loads((ROOT / "tests" / "data" / "kimi-k25-eagle3-config.json").read_text()), 2)
    draft_repo = "AQ-MedAI/Kimi-K25-eagle3"
    hub = Hub(target_src, repo="moonshotai/Kimi-K2.5", more={draft_repo: Hub(draft_src, repo=draft_repo)})
    weights = tmp_path / "models" / "kimi-k2.5"
    data = _changed(K25_SGLANG, weights__dir=str(weights),
                    speculative={"method": "eagle3", "draft": draft_repo, "num_speculative_tokens": 3})
    spec = _file(tmp_path, data)
    with HubServer(hub) as server:
        env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
        env.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
        proc = run_cli("download", spec, env=env)
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith(f"GET /{draft_repo}/resolve/") for line in hub.log)
    draft_dir = weights / "draft"
    assert (draft_dir / "model.safetensors").read_bytes() == (draft_src / "model.safetensors").read_bytes()
    assert (weights / "model.safetensors").read_bytes() == (target_src / "model.safetensors").read_bytes()
    run_cli("verify", str(draft_dir), check=True)
    assert run_cli("verify", str(draft_dir), "--check-marker").returncode == 0
    # the weight Job verifies the draft before the target (whose marker the pods wait for)
    dep = resolve(parse_spec(_changed(data, weights__dir="/models/kimi-k2.5")))
    job = manifests(dep, "x")["job-download.yaml"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert job[4:7] == ["/etc/kimi-deploy/spec.yaml", "/models/kimi-k2.5", "/models/kimi-k2.5/draft"]
    wait = manifests(dep, "x")["deployment.yaml"]["spec"]["template"]["spec"]["initContainers"][0]["command"]
    assert wait[-1] == "/models/kimi-k2.5/draft"


def test_serve_preflight_checks_the_staged_draft(tmp_path: Path) -> None:
    """`serve` refuses to start while the staged draft is missing or unverified, like the target."""
    from kimi_deploy.launch import preflight
    from kimi_deploy.weights import verify

    weights = tmp_path / "kimi-k2.5"
    _tiny_checkpoint(weights, {"model_type": "kimi_k25"}, 1)
    data = _changed(K25_SGLANG, weights__dir=str(weights),
                    speculative={"method": "eagle3", "draft": "AQ-MedAI/Kimi-K25-eagle3"})
    dep = resolve(parse_spec(data))
    (node,) = render(dep)

    def checks() -> dict[str, bool]:
        return {c.name: c.ok for c in preflight(dep, node, check_args=False).checks}

    assert checks()["draft weights"] is False  # nothing at weights.dir/draft yet
    _tiny_checkpoint(weights / "draft", json.loads((ROOT / "tests" / "data" / "kimi-k25-eagle3-config.json").read_text()), 2)
    got = checks()
    assert got["draft weights"] is True and got["draft verified"] is False  # present, never verified
    assert verify(weights / "draft", show_progress=False).ok
    assert checks()["draft verified"] is True
    (weights / "draft" / "model.safetensors").write_bytes(b"\0" * 16)  # changed after verification
    assert checks()["draft verified"] is False


@pytest.mark.e2e
def test_serve_execs_the_engine_with_the_start_up_budget(tiny_dir: Path, tmp_path: Path) -> None:
    """The budget reaches the real engine process: `serve` on tiny-k2 (CPU) execs vLLM in place with
    VLLM_ENGINE_READY_TIMEOUT_S in its environment. (Tried and not usable as a test: with the variable at
    1 s the CPU build of vLLM 0.32 still came up, after about 3 minutes, so its timing out cannot be
    shown here. The variable's name is checked against the installed vllm/envs.py above.)"""
    import time

    from .conftest import TINY_SPEC, free_port

    data = yaml.safe_load(TINY_SPEC.read_text())
    data["serving"]["port"] = free_port()
    data.setdefault("k8s", {})["startup_budget_s"] = 4321
    spec = tmp_path / "tiny-budget.yaml"
    spec.write_text(yaml.safe_dump(data))
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "kimi_deploy", "serve", str(spec)], cwd=ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    environ, cmdline = b"", b""
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:  # `serve` execs the engine in place: the same pid, the engine's own environment
                cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
                # exec'd (now vllm's own argv): its environment, once the kernel shows it (read during the
                # exec itself, /proc/PID/environ can be empty)
                if b"kimi_deploy" not in cmdline and b"serve" in cmdline:
                    environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
                    if environ:
                        break
            except OSError:
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=60)
    assert b"serve" in cmdline and b"kimi_deploy" not in cmdline, (cmdline, log.read_text()[-2000:])
    assert b"VLLM_ENGINE_READY_TIMEOUT_S=4321\0" in environ


# --- Kimi K3: MTP where the checkpoint has MTP layers, DSpark drafts ---------------------------------

K3_DSPARK = yaml.safe_load((DEPLOY / "kimi-k3-b300x8-vllm-dspark.yaml").read_text())
K3_TP8 = yaml.safe_load((DEPLOY / "kimi-k3-b300x8-vllm-tp8.yaml").read_text())
# RedHatAI/Kimi-K3-speculator.dspark config.json, as quoted (drafts.py names the source)
REDHAT_DSPARK_CONFIG = {
    "architectures": ["DSparkDraftModel"], "aux_hidden_state_layer_ids": [24, 48, 72, 88, 92], "block_size": 8,
    "confidence_head_with_markov": True, "draft_vocab_size": 163840, "dtype": "bfloat16",
    "enable_confidence_head": True, "markov_head_type": "vanilla", "markov_rank": 256, "mask_token_id": 163837,
    "speculators_config": {"algorithm": "dspark"}, "speculators_model_type": "dspark",
    "transformer_layer_config": {
        "head_dim": 64, "hidden_size": 7168, "intermediate_size": 14336,
        "layer_types": ["sliding_attention"] * 5, "model_type": "qwen3", "num_attention_heads": 96,
        "num_hidden_layers": 5, "num_key_value_heads": 16, "sliding_window": 2048, "use_sliding_window": True,
        "vocab_size": 163840}}


def _k3_checkpoint(tmp_path: Path, mtp_layers: int) -> Path:
    """A local K3-shaped checkpoint: the catalog's K3 config.json with num_nextn_predict_layers set."""
    from kimi_deploy.catalog import get_model
    cfg = copy.deepcopy(get_model("kimi-k3").config)
    cfg["text_config"]["num_nextn_predict_layers"] = mtp_layers
    d = tmp_path / f"k3-mtp{mtp_layers}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.mark.parametrize("base, needles", [
    # the K2 family: no MTP layers in any of its configs
    (B300, ["speculative.method", "num_nextn_predict_layers: 0", "Kimi K2 family", "use method: eagle3"]),
    # the published K3: its text_config has num_nextn_predict_layers 0 as well; DSpark is the way
    (K3_DSPARK, ["speculative.method", "num_nextn_predict_layers: 0", "moonshotai/Kimi-K3", "method: dspark",
                 "RedHatAI/Kimi-K3-speculator.dspark"]),
])
def test_mtp_is_refused_where_the_checkpoint_has_no_mtp_layers(tmp_path: Path, base: dict, needles: list[str]) -> None:
    data = _changed(base, speculative={"method": "mtp"})
    assert_clean_error(run_cli("plan", _file(tmp_path, data)), *needles)


def test_mtp_on_a_k3_checkpoint_with_mtp_layers(tmp_path: Path) -> None:
    """A local K3-shaped checkpoint whose config has MTP layers: vLLM drafts with them (method mtp, no
    model: vllm/config/speculative.py turns the kimi_k3 config into KimiK3MTPModel), the planner loads the
    kind-"mtp" components on the last stage and caches their KV; SGLang 0.5.23 has no K3 MTP model."""
    ckpt = _k3_checkpoint(tmp_path, 1)
    base = _changed(K3_TP8, model=str(ckpt), weights__dir=None, serving__served_model_name="k3-mtp")
    dep = resolve(parse_spec(_changed(base, speculative={"method": "mtp"})))
    assert (dep.speculative.method, dep.speculative.mtp_layers, dep.speculative.num_speculative_tokens) == ("mtp", 1, 1)
    (node,) = render(dep)
    assert check_nodes([node]) == []
    assert _vllm_namespace(node.argv).speculative_config == {"method": "mtp", "num_speculative_tokens": 1}
    # the MTP layer: an MLA MoE decoder layer plus its own norms and eh_proj, over TP8 (router and the
    # replicated MLA projections on every GPU), and one more MLA layer of fp8 KV per token
    without = resolve(parse_spec(base)).primary.plan
    with_mtp = dep.primary.plan
    mtp_total = sum(r[3] for r in Inventory.of(dep.arch).components if r[0] == "mtp")
    draft = with_mtp.weight_breakdown["draft"]
    assert with_mtp.weight_bytes - without.weight_bytes == draft
    assert mtp_total / 8 < draft < mtp_total
    assert with_mtp.kv_bytes_per_token - without.kv_bytes_per_token == (512 + 64) * 1
    assert with_mtp.assumptions["draft"]["method"] == "mtp"
    # drafted tokens reach the hybrid state: prefix caching keeps 2 state pages, plus one per drafted token
    assert with_mtp.hybrid.state_slots_per_sequence == without.hybrid.state_slots_per_sequence + 1
    # the MTP layer has the target MLA layers' KV spec: vLLM groups 25 MLA layers, not 24 (group size is the
    # smaller layer count, 69 KDA being over 1.5 x 25)
    assert (without.assumptions["hybrid"]["group_size"], with_mtp.assumptions["hybrid"]["group_size"]) == (24, 25)
    # with PP the MTP layer sits on the last stage only
    pp = resolve(parse_spec(_changed(base, speculative={"method": "mtp"}, topology={"mode": "tp-pp", "tp": 4, "pp": 2})))
    per_gpu, pp_without = pp.primary.plan.per_gpu_weight_bytes, resolve(parse_spec(
        _changed(base, topology={"mode": "tp-pp", "tp": 4, "pp": 2}))).primary.plan.per_gpu_weight_bytes
    assert per_gpu[:4] == pp_without[:4] and all(a > b for a, b in zip(per_gpu[4:], pp_without[4:]))
    # more drafted tokens than MTP layers only in whole rounds
    two = _changed(base, model=str(_k3_checkpoint(tmp_path, 2)), speculative={"method": "mtp", "num_speculative_tokens": 3})
    assert_clean_error(run_cli("plan", _file(tmp_path, two)), "speculative.num_speculative_tokens", "multiple of 2")
    # a draft makes no sense for mtp
    assert_clean_error(run_cli("plan", _file(tmp_path, _changed(base, speculative={
        "method": "mtp", "draft": "RedHatAI/Kimi-K3-speculator.dspark"}))), "speculative.draft", "leave draft")
    # SGLang: refused with its reason
    sg = _changed(base, engine={"name": "sglang"}, speculative={"method": "mtp"})
    assert_clean_error(run_cli("plan", _file(tmp_path, sg)), "speculative.method", "SGLang 0.5.23 has no MTP draft",
                       "method: dspark")


def test_mtp_config_passes_the_newest_vllms_parser(newest_vllm: dict) -> None:
    result = newest_vllm["mtp"]
    assert result["error"] is None and not result["engine_version"].startswith("0.32")


def test_dspark_for_vllm_parses_to_the_recipes_config_and_is_refused_with_pp(tmp_path: Path) -> None:
    dep = resolve(parse_spec(K3_DSPARK))
    (node,) = render(dep)
    assert check_nodes([node]) == []
    assert _vllm_namespace(node.argv).speculative_config == {
        "method": "dspark", "model": "/models/kimi-k3/draft", "num_speculative_tokens": 8,
        "draft_sample_method": "probabilistic", "rejection_sample_method": "block"}
    # unset, the draft's trained block (8) is drafted
    unset = resolve(parse_spec(_changed(K3_DSPARK, speculative__num_speculative_tokens=None)))
    assert unset.speculative.num_speculative_tokens == 8
    pp = _changed(K3_DSPARK, topology={"mode": "tp-pp", "tp": 4, "pp": 2})
    assert_clean_error(run_cli("plan", _file(tmp_path, pp)), "speculative", "DSpark", "pipeline parallelism",
                       "vllm#50098")
    # an EAGLE3 draft is not a DSpark one, and the other way round
    wrong = _changed(K3_DSPARK, speculative__draft="lightseekorg/kimi-k2.6-eagle3-mla", speculative__method="eagle3")
    assert_clean_error(run_cli("plan", _file(tmp_path, wrong)), "speculative.draft",
                       "lightseekorg/kimi-k2.6-eagle3-mla drafts for kimi-k2.5", "not kimi-k3")
    assert_clean_error(run_cli("plan", _file(tmp_path, _changed(B300, speculative__method="dspark"))),
                       "speculative.draft", "is a eagle3 draft, not a dspark one")
    # the K3 draft on a K2 model: trained for another target
    k2 = _changed(B300, speculative={"method": "dspark", "draft": "RedHatAI/Kimi-K3-speculator.dspark"})
    assert_clean_error(run_cli("plan", _file(tmp_path, k2)), "speculative.draft", "drafts for kimi-k3",
                       "not kimi-k2.6-nvfp4")
    # too old an engine for DSpark
    old = _changed(K3_DSPARK, engine__version="0.27.0")
    assert_clean_error(run_cli("render", _file(tmp_path, old)), "engine.version",
                       "the draft RedHatAI/Kimi-K3-speculator.dspark needs vllm >= 0.27.1")


def test_dspark_draft_weights_and_windowed_kv_in_the_plan(tmp_path: Path) -> None:
    """The published draft's shape, counted by hand from its config.json: fc over 5 target layers, 5 Qwen3
    layers (q 96 x 64, k/v 16 x 64 from hidden, o, SwiGLU 14336), lm_head and embed_tokens 163840 x 7168,
    the Markov head's two 163840 x 256 matrices; and a local copy of that config reads back the same."""
    arch = drafts.get_draft("RedHatAI/Kimi-K3-speculator.dspark").arch
    h, layer = 7168, 7168 * (96 * 64 + 2 * 16 * 64) + 96 * 64 * 7168 + 3 * 7168 * 14336
    by_hand = 5 * h * h + 5 * layer + 2 * 163840 * h + 2 * 163840 * 256
    assert abs(arch.total_bytes / drafts.BF16 - by_hand) / by_hand < 1e-4
    d = tmp_path / "dspark"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(REDHAT_DSPARK_CONFIG))
    assert drafts.DraftArch.from_path(str(d)) == arch
    with_draft = resolve(parse_spec(K3_DSPARK)).primary.plan
    without = resolve(parse_spec(_changed(K3_DSPARK, speculative=None))).primary.plan
    assert with_draft.weight_breakdown["draft"] == arch.bytes_per_gpu(8, 8) == with_draft.weight_bytes - without.weight_bytes
    # 5 sliding layers x (2 of 16 KV heads on each of 8 GPUs) x 64 x K and V x 1 byte (fp8), for at most
    # 2,048 tokens of a 1,048,576-token sequence: 2.5 bytes per token, rounded up
    per_seq = 5 * 2 * 64 * 2 * 1 * 2048
    assert with_draft.assumptions["draft"]["kv_bytes_per_sequence_per_gpu"] == per_seq
    assert with_draft.kv_bytes_per_token - without.kv_bytes_per_token == 3
    # 8 drafted tokens: vLLM keeps 2 + 8 state pages per KDA layer and running sequence
    assert with_draft.hybrid.state_slots_per_sequence == 2 + 8
    assert with_draft.kv_cache_tokens < without.kv_cache_tokens
    # a config that names no target layers is refused with the field
    (d / "config.json").write_text(json.dumps({**REDHAT_DSPARK_CONFIG, "aux_hidden_state_layer_ids": None}))
    data = _changed(K3_DSPARK, speculative__draft=str(d))
    assert_clean_error(run_cli("plan", _file(tmp_path, data)), "config.json", "aux_hidden_state_layer_ids")


def test_dspark_for_sglang_parses_with_a_flat_draft_and_refuses_the_speculators_format(tmp_path: Path) -> None:
    from sglang.srt.server_args import ServerArgs
    sg = _changed(K3_DSPARK, engine={"name": "sglang"}, serving__env=None, serving__extra_args=None,
                  serving__load_format=None)
    assert_clean_error(run_cli("plan", _file(tmp_path, sg)), "speculative.draft",
                       "SGLang cannot load the draft RedHatAI/Kimi-K3-speculator.dspark", "transformer_layer_config")
    # a flat DSpark draft (SGLang's DSparkDraftModel reads the layer shape at the top level)
    flat = {**REDHAT_DSPARK_CONFIG["transformer_layer_config"], "architectures": ["DSparkDraftModel"],
         "dflash_config": {"target_layer_ids": [23, 47, 71, 87, 91]}, "block_size": 7, "markov_rank": 256,
         "draft_vocab_size": 163840}
    d = tmp_path / "flat-dspark"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(flat))
    dep = resolve(parse_spec(_changed(sg, speculative={"method": "dspark", "draft": str(d)})))
    assert dep.speculative.num_speculative_tokens == 7 and dep.speculative.arch.aux_layers == 5
    (node,) = render(dep)
    assert check_nodes([node]) == []
    parser = argparse.ArgumentParser(allow_abbrev=False)
    ServerArgs.add_cli_args(parser)
    ns = parser.parse_args(node.argv[3:])
    assert (ns.speculative_algorithm, ns.speculative_draft_model_path) == ("DSPARK", str(d))
    # gamma 7, verified as gamma + 1 (speculative_hook.py _handle_dspark requires exactly that)
    assert (ns.speculative_dspark_block_size, ns.speculative_num_draft_tokens) == (7, 8)
    # under DP attention SGLang's DSpark needs the DP LM head, and refuses DeepEP
    dpa = _changed(sg, speculative={"method": "dspark", "draft": str(d)},
                   topology={"mode": "dp-ep", "tp": 8, "dp": 8, "dp_attention": True, "expert_parallel": True})
    (node,) = render(resolve(parse_spec(dpa)))
    assert check_nodes([node]) == [] and parser.parse_args(node.argv[3:]).enable_dp_lm_head is True
    deepep = _changed(dpa, topology__all2all="deepep_low_latency")
    assert_clean_error(run_cli("render", _file(tmp_path, deepep)), "topology.all2all", "DSpark", "DeepEP")
    # SGLang runs DSpark with PP only on a P/D prefill side
    pp = _changed(sg, speculative={"method": "dspark", "draft": str(d)}, topology={"mode": "tp-pp", "tp": 4, "pp": 2})
    assert_clean_error(run_cli("plan", _file(tmp_path, pp)), "speculative", "prefill side of a P/D deployment")
    # and a tree is not a DSpark setting
    tree = _changed(sg, speculative={"method": "dspark", "draft": str(d), "eagle_topk": 2})
    assert_clean_error(run_cli("plan", _file(tmp_path, tree)), "speculative", "eagle_topk")
