"""The planner: the JSON contract, fit / no-fit with suggestions, KV cache arithmetic, and the exact
accounting of weights across GPUs (property-tested against the replication rules stated in plan.py)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kimi_deploy.architecture import Inventory
from kimi_deploy.catalog import get_gpu, get_model
from kimi_deploy.errors import BadInput
from kimi_deploy.plan import PlanInput, Topology, plan, pp_layer_ranges

from .conftest import assert_clean_error, cli_json, run_cli

CONTRACT_TYPES = {
    "model": str, "engine": str, "gpus": int, "nodes": int, "total_params": int, "weight_bytes_total": int,
    "kv_bytes_per_token": int, "per_gpu": dict, "kv_cache_tokens": int, "max_concurrency": float,
    "fits": bool, "problems": list, "suggestions": list, "assumptions": dict,
}


def _inp(model: str = "kimi-k2-instruct", gpu: str = "H200", gpn: int = 8, nodes: int = 1,
         engine: str = "vllm", topo: Topology | None = None, max_len: int = 131072, **kw) -> PlanInput:
    m = get_model(model)
    return PlanInput(m.id, m.architecture(), engine, get_gpu(gpu), gpn, nodes,
                     topo or Topology(tp=gpn * nodes), max_len, **kw)


def test_done_when_k2_on_two_h200_nodes_tp16_fits() -> None:
    code, data = cli_json("plan", "--model", "kimi-k2-instruct", "--gpu", "H200", "--gpus-per-node", "8",
                          "--nodes", "2", "--engine", "vllm", "--tp", "16", "--json")
    assert code == 0
    assert set(data) == set(CONTRACT_TYPES)
    for key, typ in CONTRACT_TYPES.items():
        assert isinstance(data[key], typ), key
    assert set(data["per_gpu"]) == {"weight_bytes", "kv_cache_bytes", "overhead_bytes", "memory_bytes"}
    assert data["fits"] is True and data["problems"] == []
    assert data["gpus"] == 16 and data["nodes"] == 2
    assert data["kv_bytes_per_token"] == (512 + 64) * 2 * 61
    per = data["per_gpu"]
    assert per["memory_bytes"] == per["weight_bytes"] + per["kv_cache_bytes"] + per["overhead_bytes"]
    assert data["max_concurrency"] == pytest.approx(data["kv_cache_tokens"] / 131072, abs=1e-3)
    # A TP16 shard of ~959 GiB is ~60 GiB plus the replicated q_a/kv_a/norm/router weights.
    assert 58 * 2**30 < per["weight_bytes"] < 64 * 2**30


def test_done_when_k2_on_one_h100_node_does_not_fit_and_suggests() -> None:
    proc = run_cli("plan", "--model", "kimi-k2-instruct", "--gpu", "H100", "--gpus-per-node", "8",
                   "--engine", "vllm", "--json")
    assert proc.returncode == 3
    import json

    data = json.loads(proc.stdout)
    assert data["fits"] is False and data["problems"]
    assert any("node" in s for s in data["suggestions"]), data["suggestions"]
    # The suggestion is real: the same planner says 3 nodes with PP across them fits.
    assert plan(_inp(gpu="H100", nodes=3, topo=Topology(tp=8, pp=3))).fits


def test_table_output_is_readable() -> None:
    proc = run_cli("plan", "--model", "kimi-k2-thinking", "--gpu", "H200", "--gpus-per-node", "8")
    assert proc.returncode == 0, proc.stderr
    assert "KV cache" in proc.stdout and "fits" in proc.stdout and "routed_experts" in proc.stdout


def test_k2_thinking_tp8_kv_tokens_close_to_recipe_log() -> None:
    # vllm-project/recipes Kimi-K2-Think.md: 8xH200 TP8, default utilization 0.90 at the time:
    # "GPU KV cache size: 715,072 tokens"; with -dcp 8: 5,721,088 tokens.
    p = plan(_inp("kimi-k2-thinking", max_len=262144, gpu_memory_utilization=0.90))
    assert abs(p.kv_cache_tokens / 715072 - 1) < 0.10
    dcp = plan(_inp("kimi-k2-thinking", max_len=262144, gpu_memory_utilization=0.90,
                    topo=Topology(tp=8, dcp=8)))
    assert dcp.kv_cache_tokens == pytest.approx(8 * p.kv_cache_tokens, rel=1e-4)


def test_fp8_kv_cache_halves_bytes_per_token() -> None:
    auto = plan(_inp(nodes=2))
    fp8 = plan(_inp(nodes=2, kv_cache_dtype="fp8"))
    assert fp8.kv_bytes_per_token * 2 == auto.kv_bytes_per_token
    assert fp8.kv_cache_tokens == pytest.approx(2 * auto.kv_cache_tokens, rel=0.001)


def test_pp_split_matches_vllm_get_pp_indices(monkeypatch) -> None:
    monkeypatch.delenv("VLLM_PP_LAYER_PARTITION", raising=False)
    from vllm.distributed.utils import get_pp_indices  # the engine's own function

    for layers in (3, 7, 61, 62):
        for pp in range(1, 9):
            if pp > layers:
                continue
            ours = pp_layer_ranges(layers, pp)
            theirs = [get_pp_indices(layers, r, pp) for r in range(pp)]
            assert [(r.start, r.stop) for r in ours] == theirs


def test_tp32_fp8_needs_expert_parallel() -> None:
    # 2048 / 32 = 64 < the 128-wide FP8 block: vLLM refuses to shard the experts that way.
    p = plan(_inp(nodes=4, topo=Topology(tp=32)))
    assert not p.fits and any("moe_intermediate_size 2048 split 32 ways" in x for x in p.problems)
    ep = plan(_inp(nodes=4, topo=Topology(tp=32, expert_parallel=True)))
    assert not any("moe_intermediate_size" in x for x in ep.problems)
    # The dense layer (18432 / 32 = 576) still breaks the block rule: TP32 needs DP attention instead.
    assert any("dense intermediate_size" in x for x in ep.problems)


def test_sglang_dp_attention_counts_gpus_as_tp() -> None:
    # SGLang: --tp 16 --dp 16 --enable-dp-attention is 16 GPUs (docs.sglang.io/docs/advanced_features/dp_dpa_smg_guide).
    p = plan(_inp(engine="sglang", nodes=2, topo=Topology(tp=16, dp=16, dp_attention=True, expert_parallel=True)))
    assert p.inp.gpus == 16 and len(p.per_gpu_weight_bytes) == 16
    with pytest.raises(BadInput, match="16 GPUs but the hardware has"):
        plan(_inp(engine="vllm", nodes=1, topo=Topology(tp=16, dp=1)))


# --- the exact accounting: summed per-GPU bytes = checkpoint bytes + documented replication ---------

def _expected_excess(inp: PlanInput) -> int:
    """Replication rules, written out independently of plan.per_gpu_weights (see plan.py docstring)."""
    t = inp.topology
    inv = Inventory.of(inp.arch)
    excess = 0
    for kind, _layer, _params, nbytes in inv.components:
        if inp.engine == "vllm":
            whole = t.tp * t.dp  # every GPU of the layer's stage, in every DP replica
            copies = {"attn_replicated": whole, "router": whole, "final_norm": whole, "vision": whole,
                      "routed_experts": 1 if t.expert_parallel else t.dp}.get(kind, t.dp)
        elif t.dp_attention:
            copies = {"attn_replicated": t.tp, "router": t.tp, "final_norm": t.tp, "vision": t.tp,
                      "embed": t.tp, "attn_sharded": t.dp}.get(kind, 1)
        else:
            whole = t.tp * t.dp
            copies = {"attn_replicated": whole, "router": whole, "final_norm": whole,
                      "vision": whole}.get(kind, t.dp)
        excess += nbytes * (copies - 1)
    return excess


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(["kimi-k2-instruct", "kimi-k2-thinking", "kimi-k2.5", "kimi-k2.5-nvfp4",
                           "kimi-k2.5-mxfp4", "kimi-k2.6-fp8-block", "kimi-k3", "kimi-linear-48b-a3b-instruct"]),
    engine=st.sampled_from(["vllm", "sglang"]),
    tp=st.sampled_from([1, 2, 4, 8, 16]),
    pp=st.sampled_from([1, 2, 3, 4]),
    dp=st.sampled_from([1, 2, 4, 8]),
    ep=st.booleans(),
    dp_attention=st.booleans(),
)
def test_summed_weights_equal_total_plus_replication(model, engine, tp, pp, dp, ep, dp_attention) -> None:
    assume(not (engine == "vllm" and dp_attention))
    if engine == "sglang" and dp_attention:
        assume(tp % dp == 0)
        pp = 1
    topo = Topology(tp=tp, pp=pp, dp=dp, expert_parallel=ep, dp_attention=dp_attention)
    world = tp * pp * (1 if dp_attention else dp)
    assume(world <= 256)
    inp = _inp(model, gpn=world, topo=topo)
    try:
        p = plan(inp, suggest=False)
    except BadInput:
        assume(False)
        return
    total = p.weight_bytes_total
    summed = sum(p.per_gpu_weight_bytes)
    assert len(p.per_gpu_weight_bytes) == world
    assert summed >= total
    assert summed - total == _expected_excess(inp)
    assert p.weight_bytes == max(p.per_gpu_weight_bytes)


def test_default_gpu_memory_utilization_is_the_installed_vllms() -> None:
    """Unset gpu_memory_utilization plans with vLLM's own default, read from the installed engine."""
    from vllm.config import CacheConfig

    assert plan(_inp(nodes=2)).assumptions["memory_fraction"] == CacheConfig().gpu_memory_utilization


@pytest.mark.parametrize("args, needles", [
    (["--model", "kimi-k9"], ["unknown model 'kimi-k9'", "kimi-k2-instruct"]),
    (["--model", "kimi-k2-instruct", "--gpu", "H900"], ["unknown GPU 'H900'", "H200"]),
    (["--engine", "trtllm"], ["--engine", "'trtllm' is not one of", "'vllm', 'sglang'"]),
    (["--tp", "4"], ["tp*pp*dp = 4 GPUs", "8 GPUs"]),
    (["--tp", "6", "--gpus-per-node", "6"], ["does not divide num_attention_heads"]),
    (["--tp", "0"], ["'--tp'", "greater than or equal to 1"]),
    (["--max-model-len", "-5"], ["'--max-model-len'", "greater than or equal to 1"]),
    (["--kv-cache-dtype", "int3"], ["unknown kv_cache_dtype 'int3'", "fp8"]),
    (["--gpu-memory-utilization", "1.5"], ["'--gpu-memory-utilization'", "less than or equal to 1"]),
    (["--gpu-memory-utilization", "0"], ["gpu_memory_utilization", "(0, 1]"]),
])
def test_bad_what_if_flags(args: list[str], needles: list[str]) -> None:
    base = {"--model": "kimi-k2-instruct", "--gpu": "H200", "--gpus-per-node": "8"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    flat = [x for kv in base.items() for x in kv]
    assert_clean_error(run_cli("plan", *flat), *needles)


def test_ep_on_a_dense_model_is_refused(tmp_path) -> None:
    import json

    cfg = dict(get_model("kimi-k2-instruct").config)
    cfg["first_k_dense_replace"] = cfg["num_hidden_layers"]  # every layer dense
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    proc = run_cli("plan", "--model", str(tmp_path), "--gpu", "H200", "--gpus-per-node", "8", "--ep")
    assert_clean_error(proc, "topology.expert_parallel", "MoE")


def test_debug_shows_the_traceback() -> None:
    proc = run_cli("--debug", "plan", "--model", "kimi-k9", "--gpu", "H200", "--gpus-per-node", "8")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_debug_traceback_holds_no_secret() -> None:
    """A token that reaches an error message (here given as a model name by mistake) is scrubbed from the
    --debug traceback too, as from the one-line error."""
    token = "hf_" + "q" * 34
    proc = run_cli("--debug", "plan", "--model", token, "--gpu", "H200", "--gpus-per-node", "8",
                   env={**os.environ, "HF_TOKEN": token})
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "***HF_TOKEN***" in proc.stderr, proc.stderr
    assert token not in proc.stdout + proc.stderr


# --- hybrid models (KDA + MLA) ----------------------------------------------------------------------------

def test_hybrid_plan_json_has_the_state_beside_the_kv_figures() -> None:
    code, data = cli_json("plan", "--model", "kimi-k3", "--gpu", "B300", "--gpus-per-node", "8",
                          "--kv-cache-dtype", "fp8", "--json")
    assert code == 0, data
    assert set(data) == set(CONTRACT_TYPES) | {"state_bytes_per_sequence", "state_sequences"}
    # KV is cached by the 24 MLA layers only (fp8: 576 B per token per layer), not by the 69 KDA layers
    assert data["kv_bytes_per_token"] == 576 * 24
    # K3 at TP8, vLLM: 69 KDA layers of conv (3 x 12288/8 x 2 B) + recurrent (12 x 128 x 128 x 4 B) state,
    # each padded to one MLA page of the 1536-token block (1536 x 576 B); 3 KDA groups of 24 layers
    assert data["state_bytes_per_sequence"] == 3 * 24 * 1536 * 576
    assert data["state_sequences"] > 0 and data["fits"] is True
    assert data["assumptions"]["hybrid"]["block_tokens"] == 1536
    k2 = cli_json("plan", "--model", "kimi-k2.6", "--gpu", "B300", "--gpus-per-node", "8", "--json")[1]
    assert "state_bytes_per_sequence" not in k2


@pytest.mark.parametrize("gpu, nodes, fits", [
    # vllm-project/recipes issue #934: two GB200 NVL4 trays (8 x 192 GB = 1536 GB) were recommended for the
    # MXFP4 K3 whose recipe says vram_minimum_gb 1680; PR #964 raised GB200 TP to 16 GPUs and kept GB300 at 8
    ("GB200", 2, False), ("GB200", 4, True), ("GB300", 2, True),
])
def test_k3_on_gb200_trays_catches_recipes_issue_934(gpu: str, nodes: int, fits: bool) -> None:
    proc = run_cli("plan", "--model", "moonshotai/Kimi-K3", "--gpu", gpu, "--gpus-per-node", "4",
                   "--nodes", str(nodes), "--kv-cache-dtype", "fp8", "--max-model-len", "131072")
    assert proc.returncode == (0 if fits else 3), proc.stdout + proc.stderr
    assert ("does not fit" in proc.stdout) is not fits
    assert "recurrent state (69 KDA layers, 24 MLA layers" in proc.stdout


def test_bfloat16_state_halves_the_recurrent_state() -> None:
    auto = plan(_inp("kimi-k3", gpu="B300", max_len=1048576))
    half = plan(_inp("kimi-k3", gpu="B300", max_len=1048576, state_dtype="bfloat16"))
    # K3 at TP8: conv, K-1 = 3 rows of the q, k and v channels (3 x 12288 / 8) in BF16; recurrent 12 x 128 x 128
    assert half.hybrid.detail["state_page_bytes"] == 3 * 3 * 12288 // 8 * 2 + 12 * 128 * 128 * 2
    assert auto.hybrid.detail["state_page_bytes"] == 3 * 3 * 12288 // 8 * 2 + 12 * 128 * 128 * 4
    assert half.max_concurrency > auto.max_concurrency
    # SGLang takes it for Kimi-Linear too; vLLM's Kimi-Linear layer keeps float32 whatever the flag says, and
    # its start-up check then fails: refused, naming the field
    sglang = plan(_inp("kimi-linear-48b-a3b-instruct", gpn=1, engine="sglang", state_dtype="bfloat16"))
    assert sglang.hybrid.state_bytes_per_sequence == 20 * (3 * 3 * 4096 * 2 + 32 * 128 * 128 * 2)
    with pytest.raises(BadInput, match="float32 whatever") as err:
        plan(_inp("kimi-linear-48b-a3b-instruct", gpn=1, state_dtype="bfloat16"))
    assert err.value.field == "serving.state_dtype"
    for model, value, needle in [("kimi-linear-48b-a3b-instruct", "float16", "allowed: auto, float32, bfloat16"),
                                 ("kimi-k2.6", "bfloat16", "no KDA")]:
        with pytest.raises(BadInput, match=needle):
            plan(_inp(model, gpn=8 if model == "kimi-k2.6" else 1, state_dtype=value))


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_pipeline_stages_plan_the_whole_models_allocator(engine: str) -> None:
    """From review: vLLM sizes its block and groups for the whole model, each request paying for every group;
    SGLang sizes every rank's state slots for the stage with the most KDA layers; a stage with no MLA layer
    caches no tokens and must not read as "fits no request"."""
    one = plan(_inp("kimi-linear-48b-a3b-instruct", gpn=1, engine=engine))
    pp8 = plan(_inp("kimi-linear-48b-a3b-instruct", gpn=8, engine=engine, topo=Topology(tp=1, pp=8)))
    assert pp8.fits and pp8.max_concurrency > one.max_concurrency and pp8.hybrid.state_sequences > 0
    if engine == "vllm":
        # 27 layers in 8 stages: stage 0 holds KDA layers 0-2 only; the groups stay the model's 1 + 3 of 7
        assert pp8.assumptions["hybrid"]["kv_cache_groups"] == 4 == one.assumptions["hybrid"]["kv_cache_groups"]
        assert pp8.assumptions["hybrid"]["block_tokens"] == one.assumptions["hybrid"]["block_tokens"]
        assert pp8.assumptions["hybrid"]["blocks_per_request"] == one.assumptions["hybrid"]["blocks_per_request"]
    else:
        # the busiest stage holds 3 KDA layers: every rank's slot is 3 layers' state
        assert pp8.hybrid.state_bytes_per_sequence == 3 * (3 * 3 * 4096 * 2 + 32 * 128 * 128 * 4)


def test_a_hybrid_fp8_block_checkpoint_suggests_the_smaller_ones_of_the_same_model() -> None:
    p = plan(_inp("kimi-k3-fp8-block", gpu="B300", max_len=1048576))
    assert not p.fits
    assert any("moonshotai/Kimi-K3 (mxfp4)" in s for s in p.suggestions), p.suggestions
    assert not any("Kimi-K2" in s for s in p.suggestions), p.suggestions


def test_kda_heads_bound_the_tensor_parallel_size() -> None:
    # Kimi-Linear: 32 KDA heads and 32 MLA heads; K3: 96 of each, so TP 64 splits neither
    with pytest.raises(BadInput, match="does not divide"):
        plan(_inp("kimi-k3", gpu="B300", gpn=8, nodes=8, topo=Topology(tp=64, expert_parallel=True)))
