"""The engine profiles (engines/profiles/): the defaults each engine picks for its release and GPU, the
overhead model that follows the engine's settings, and the rule that nothing outside engines/ branches on
an engine's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kimi_deploy.catalog import get_gpu, get_model
from kimi_deploy.engines.profiles import PROFILES, get_profile
from kimi_deploy.engines.profiles.base import HybridInput, Layout
from kimi_deploy.engines.profiles.vllm import cudagraph_sizes
from kimi_deploy.errors import BadInput
from kimi_deploy.plan import PlanInput, Topology, overhead, overhead_input, plan

SRC = Path(__file__).resolve().parents[1] / "src" / "kimi_deploy"
K26 = get_model("kimi-k2.6").architecture()


def _inp(**kw) -> PlanInput:
    base = dict(model="kimi-k2.6", arch=K26, engine="vllm", gpu=get_gpu("H200"), gpus_per_node=8, nodes=1,
                topology=Topology(tp=8, expert_parallel=True), max_model_len=131072)
    return PlanInput(**{**base, **kw})


def test_no_engine_name_branch_outside_the_engines_package() -> None:
    """Engine knowledge is asked of a profile: no `== "vllm"` / `"sglang" if` outside engines/."""
    names = "|".join(PROFILES)
    branch = re.compile(rf"""(==|!=|\bin\b|\bif\b)\s*\(?["']({names})["']|["']({names})["']\s*(==|!=|if\b)""")
    offenders = [f"{p.relative_to(SRC)}:{i}: {line.strip()}"
                 for p in SRC.rglob("*.py") if "engines" not in p.relative_to(SRC).parts
                 for i, line in enumerate(p.read_text().splitlines(), 1) if branch.search(line)]
    assert not offenders, offenders


def test_vllm_defaults_follow_the_release_and_the_gpu() -> None:
    vllm = get_profile("vllm")
    h200 = Layout(gpu_memory_gib=139.81, gpu_arch="hopper", tp=8, pp=1, dp=1, dp_attention=False)
    b200 = Layout(gpu_memory_gib=178.35, gpu_arch="blackwell", tp=8, pp=1, dp=1, dp_attention=False)
    unset = dict(memory_fraction=None, max_num_batched_tokens=None, max_num_seqs=None)
    assert vllm.settings(version=None, layout=h200, **unset).memory_fraction == 0.92
    assert vllm.settings(version="0.11.1", layout=h200, **unset).memory_fraction == 0.90
    assert vllm.settings(version=None, layout=h200, **unset).max_num_batched_tokens == 8192
    assert vllm.settings(version=None, layout=b200, **unset).max_num_batched_tokens == 16384
    # A value the spec sets wins over every default.
    assert vllm.settings(version=None, layout=h200, memory_fraction=0.5, max_num_batched_tokens=None,
                         max_num_seqs=3).max_num_seqs == 3
    with pytest.raises(BadInput, match="engine.version"):
        vllm.settings(version="zero", layout=h200, **unset)


def test_sglang_picks_its_memory_fraction_as_sglang_does() -> None:
    """memory_hook.py: reserved = 512 + 1.5 x chunk + tp*pp/8 GiB + graph reserve, at least 10 GiB."""
    sglang = get_profile("sglang")
    h200 = Layout(gpu_memory_gib=139.81, gpu_arch="hopper", tp=8, pp=1, dp=1, dp_attention=False)
    s = sglang.settings(version=None, layout=h200, memory_fraction=None, max_num_batched_tokens=None, max_num_seqs=None)
    reserved = 512 + 1.5 * 8192 + 1024 + 512 * 2 + 1536
    assert s.max_num_batched_tokens == 8192
    assert s.memory_fraction == round((139.81 * 1024 - reserved) / (139.81 * 1024), 3)
    dpa = Layout(gpu_memory_gib=139.81, gpu_arch="hopper", tp=8, pp=1, dp=8, dp_attention=True)
    assert sglang.settings(version=None, layout=dpa, memory_fraction=None, max_num_batched_tokens=None,
                           max_num_seqs=None).memory_fraction < s.memory_fraction  # DP attention reserves more


def test_cudagraph_sizes_follow_max_num_seqs_the_gpu_and_the_release() -> None:
    default = overhead(_inp())
    assert "cuda_graphs" in default.inside_budget
    one_seq = _inp(max_num_seqs=1)
    assert cudagraph_sizes(overhead_input(one_seq)) == [1, 2]
    assert len(cudagraph_sizes(overhead_input(_inp()))) == 51  # 1, 2, 4, 8..248, 256..512
    assert len(cudagraph_sizes(overhead_input(_inp(gpu=get_gpu("B200"))))) == 83
    assert overhead(one_seq).inside_budget["cuda_graphs"] < default.inside_budget["cuda_graphs"] / 10
    assert overhead(one_seq).inside_budget["sampler"] < default.inside_budget["sampler"] / 500
    # Before vLLM 0.21 the graphs were not counted in the KV budget.
    assert "cuda_graphs" not in overhead(_inp(engine_version="0.20.0")).inside_budget


def test_a_low_utilization_one_sequence_layout_that_starts_fits() -> None:
    """K2.6 on 8xH200, TP8+EP, gpu_memory_utilization 0.6, max_num_seqs 1, text only, vLLM 0.20: such a
    layout starts on the engine, which uses ~2.9 GiB besides weights and KV, so the plan must fit it
    (a fixed 7.2 GiB reservation would say "does not fit")."""
    p = plan(_inp(gpu_memory_utilization=0.6, max_num_seqs=1, language_model_only=True, engine_version="0.20.0"))
    assert p.fits, p.problems
    inside = sum(overhead(p.inp).inside_budget.values()) / 2**30
    assert 2.6 < inside < 3.2, inside
    assert p.assumptions["max_num_seqs"] == 1 and p.assumptions["engine_version"] == "0.20.0"


def test_sglang_dp_attention_graphs_beyond_the_fraction_are_a_warning_with_a_fraction_that_leaves_room() -> None:
    inp = _inp(engine="sglang", gpus_per_node=8, nodes=2, gpu_memory_utilization=0.8,
               topology=Topology(tp=16, dp=16, dp_attention=True, expert_parallel=True),
               arch=get_model("kimi-k2-instruct").architecture(), model="kimi-k2-instruct")
    p = plan(inp)
    assert p.overhead_breakdown["dp_attention_cuda_graphs"] > 30 * 2**30
    (warning,) = p.assumptions["warnings"]
    assert "mem_fraction_static at most" in warning
    most = float(warning.rsplit("at most ", 1)[1].split()[0])
    assert not plan(inp.__class__(**{**inp.__dict__, "gpu_memory_utilization": most})).assumptions["warnings"]


# --- hybrid models: how each engine turns memory into KV blocks and state slots ---------------------------

def _k3_stage(**kw) -> HybridInput:
    """All of K3 on one stage: 24 MLA layers, 69 KDA layers of 96 heads x 128, conv kernel 4."""
    values = dict(free_bytes=100 * 2**30, mla_layers=24, kda_layers=69, kv_bytes_per_token_layer=1152,
                  kda_heads=96, kda_head_dim=128, conv_kernel=4, attention_tp=8, speculative_tokens=0,
                  max_model_len=131072, state_dtype="auto")
    return HybridInput(**{**values, **kw})


def test_vllm_hybrid_block_reproduces_the_published_k3_startup_log() -> None:
    # vllm-project/vllm#51986, K3 TP16 with fp8 KV and 7 drafted tokens: "Setting attention block size to
    # 768 tokens to ensure that attention page size is >= mamba page size", "Padding mamba page size by 0.70%"
    c = get_profile("vllm").hybrid_capacity(_k3_stage(attention_tp=16, kv_bytes_per_token_layer=576,
                                                      speculative_tokens=7))
    assert c.block_tokens == 768
    assert round(c.detail["padding"] * 100, 2) == 0.70
    assert c.state_slots_per_sequence == 2 + 7


def test_vllm_hybrid_pool_arithmetic() -> None:
    # Worked by hand from vLLM 0.32's rules (engines/profiles/vllm.py), K3 at TP8, BF16 KV, no draft:
    # state page = 3 x (3 x 12288 / 8) x 2 + (96 / 8) x 128 x 128 x 4 = 27,648 + 786,432 = 814,080 B;
    # block = 128 x ceil(814,080 / (128 x 1152)) = 768 tokens; page = 768 x 1152 = 884,736 B;
    # 69 KDA >= 1.5 x 24 MLA, so groups of 24: 1 MLA + 3 KDA groups, 24 pages a block = 21,233,664 B;
    # 100 GiB / 21,233,664 = 5056 blocks; a 131,072-token request: ceil(131072 / 768) = 171 + 3 x 2 = 177
    c = get_profile("vllm").hybrid_capacity(_k3_stage())
    assert c.detail["state_page_bytes"] == 814_080 and c.block_tokens == 768
    assert c.detail["blocks"] == 5056 and c.detail["blocks_per_request"] == 177
    assert c.max_concurrency == pytest.approx(5056 / 177)
    assert c.kv_tokens == int(5056 / 177 * 131072)  # vLLM prints int(concurrency x max_model_len)
    assert c.state_sequences == 5056 // 6 and c.state_bytes_per_sequence == 3 * 24 * 884_736


def test_sglang_hybrid_state_pool_arithmetic() -> None:
    # Worked by hand from SGLang 0.5.23's rules (engines/profiles/sglang.py), same K3 stage at attention
    # TP8: a slot is 69 x 814,080 = 56,171,520 B; the state budget 100 GiB x 0.9 / 1.9; K = floor(budget /
    # slot - 1) = 904 slots, 905 allocated; the KV pool gets the rest at 24 x 1152 B a token; 904 // 5
    # requests run at once
    c = get_profile("sglang").hybrid_capacity(_k3_stage())
    assert c.state_bytes_per_sequence == 56_171_520
    assert c.detail["state_slots"] == 904
    assert c.kv_tokens == (100 * 2**30 - 905 * 56_171_520) // (24 * 1152)
    assert c.state_sequences == 180 and c.max_concurrency == pytest.approx(min(c.kv_tokens / 131072, 180))
