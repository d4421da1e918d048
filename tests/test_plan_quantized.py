"""`plan` for the vendor checkpoints (NVFP4, MXFP4, FP8 block, K2.7-Code) on the new GPUs, through the real
CLI: it fits with numbers, or exits 3 with alternatives the same planner says fit; format x GPU pairs the
engine refuses are refused with the engine's reason; NVL72 trays and NVLink domains are modelled."""

from __future__ import annotations

import json

import pytest

from kimi_deploy.catalog import get_gpu, get_model
from kimi_deploy.plan import PlanInput, Topology, plan

from .conftest import assert_clean_error, run_cli


def _plan_cli(*args: str) -> tuple[int, dict]:
    proc = run_cli("plan", *args, "--json")
    assert proc.returncode in (0, 3), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout)


# (Hub repo id, GPU, GPUs per node, nodes, engine, fits, weight kernel path)
PAIRINGS = [
    ("nvidia/Kimi-K2.5-NVFP4", "GB200", 4, 1, "vllm", True, "native"),  # REC: NVFP4 on 4x GB200
    ("nvidia/Kimi-K2.6-NVFP4", "B300", 4, 1, "vllm", True, "native"),  # REC: verified 4x B300 TP4
    ("nvidia/Kimi-K2.6-NVFP4", "B200", 8, 1, "sglang", True, "native"),
    ("nvidia/Kimi-K2-Thinking-NVFP4", "B200", 8, 1, "vllm", True, "native"),
    ("nvidia/Kimi-K2.7-Code-NVFP4", "GB300", 4, 1, "vllm", True, "native"),
    ("nvidia/Kimi-K2.5-NVFP4", "H200", 8, 1, "vllm", True, "fallback"),  # FP4 Marlin off Blackwell
    ("nvidia/Kimi-K2.5-NVFP4", "H20-3e", 8, 1, "sglang", True, "fallback"),
    ("nvidia/Kimi-K2.5-NVFP4", "MI355X", 8, 1, "vllm", True, "emulated"),
    ("nvidia/Kimi-K2.5-NVFP4", "H100", 8, 1, "vllm", False, "fallback"),  # 71.8 GiB/GPU + overhead > 72.8
    ("RedHatAI/Kimi-K2.6-NVFP4", "B200", 8, 1, "vllm", True, "native"),
    ("amd/Kimi-K2.5-MXFP4", "MI355X", 8, 1, "vllm", True, "native"),  # REC: MI355X TP8
    ("amd/Kimi-K2.5-MXFP4", "MI350X", 8, 1, "sglang", True, "native"),
    ("amd/Kimi-K2.5-MXFP4", "MI300X", 8, 1, "vllm", True, "emulated"),
    ("RedHatAI/Kimi-K2.6-FP8-BLOCK", "H200", 8, 2, "vllm", True, "native"),
    ("RedHatAI/Kimi-K2.6-FP8-BLOCK", "B300", 8, 1, "vllm", True, "native"),
    ("RedHatAI/Kimi-K2.6-FP8-BLOCK", "GB200", 4, 1, "vllm", False, "native"),  # ~960 GiB on 4 trays' GPUs
    ("RedHatAI/Kimi-K2.6-FP8-BLOCK", "A100", 8, 2, "vllm", False, "fallback"),
    ("moonshotai/Kimi-K2.7-Code", "H200", 8, 1, "vllm", True, "weight-only"),  # REC: 8x H200
    ("moonshotai/Kimi-K2.7-Code", "MI350X", 8, 1, "vllm", True, "weight-only"),
]


# Settings a pairing is published with: REC Kimi-K2.5.yaml runs the nvfp4 variant with --kv-cache-dtype fp8.
PUBLISHED_WITH = {("nvidia/Kimi-K2.5-NVFP4", "GB200"): ["--kv-cache-dtype", "fp8"]}


@pytest.mark.parametrize("repo, gpu, gpn, nodes, engine, fits, path", PAIRINGS)
def test_new_models_on_new_gpus(repo, gpu, gpn, nodes, engine, fits, path) -> None:
    code, data = _plan_cli("--model", repo, "--gpu", gpu, "--gpus-per-node", str(gpn), "--nodes", str(nodes),
                           "--engine", engine, *PUBLISHED_WITH.get((repo, gpu), []))
    assert data["model"] == get_model(repo).id
    assert data["assumptions"]["weight_kernel"]["path"] == path
    assert data["assumptions"]["weight_format"] == get_model(repo).architecture().quantization.format.value
    if fits:
        assert code == 0 and data["fits"] and data["kv_cache_tokens"] >= 262144 / 64 and not data["problems"]
        per = data["per_gpu"]
        assert 0 < per["weight_bytes"] < per["memory_bytes"] <= get_gpu(gpu).memory_bytes
    else:
        assert code == 3 and not data["fits"] and data["problems"] and data["suggestions"]


def test_a_suggestion_for_fp8_block_on_gb200_is_real() -> None:
    code, data = _plan_cli("--model", "RedHatAI/Kimi-K2.6-FP8-BLOCK", "--gpu", "GB200", "--gpus-per-node", "4")
    assert code == 3
    more = [s for s in data["suggestions"] if s.startswith("more nodes, TP across nodes")]
    assert more, data["suggestions"]
    nodes = int(more[0].split(": ")[1].split(" node")[0])
    entry = get_model("kimi-k2.6-fp8-block")
    again = plan(PlanInput(entry.id, entry.architecture(), "vllm", get_gpu("GB200"), 4, nodes,
                           Topology(tp=4 * nodes), entry.context_length))
    assert again.fits and again.assumptions["interconnect"]["tp_within_nvlink"]  # trays share NVLink


@pytest.mark.parametrize("repo, gpu, engine, reason", [
    ("nvidia/Kimi-K2.6-NVFP4", "MI355X", "sglang", "Please use Blackwell and above"),
    ("nvidia/Kimi-K2.5-NVFP4", "MI300X", "sglang", "moe_runner_backend=marlin"),
    ("amd/Kimi-K2.5-MXFP4", "B200", "sglang", "AMD ROCm only"),
    ("amd/Kimi-K2.5-MXFP4", "H200", "sglang", "aiter"),
    ("amd/Kimi-K2.5-MXFP4", "H100", "sglang", "aiter"),  # too few GPUs too: the alternatives add nodes
])
def test_formats_the_engine_refuses_on_a_gpu(repo: str, gpu: str, engine: str, reason: str) -> None:
    code, data = _plan_cli("--model", repo, "--gpu", gpu, "--gpus-per-node", "8", "--engine", engine)
    assert code == 3 and data["assumptions"]["weight_kernel"]["path"] == "refused"
    assert any("cannot run on" in p and reason in p for p in data["problems"]), data["problems"]
    # The alternatives: the other engine, or the checkpoint it re-quantizes, on the same GPUs.
    base = get_model(get_model(repo).base).repo
    assert any(s.startswith("vllm (it runs") for s in data["suggestions"]), data["suggestions"]
    assert all("weights cannot run" not in s for s in data["suggestions"])
    assert any(base in s for s in data["suggestions"]), data["suggestions"]


def test_table_output_names_the_refusal() -> None:
    proc = run_cli("plan", "--model", "amd/Kimi-K2.5-MXFP4", "--gpu", "B200", "--gpus-per-node", "8",
                   "--engine", "sglang")
    assert proc.returncode == 3 and "cannot run on B200" in proc.stdout and "try: vllm" in proc.stdout


def test_gb200_tray_holds_four_gpus() -> None:
    assert_clean_error(run_cli("plan", "--model", "nvidia/Kimi-K2.5-NVFP4", "--gpu", "GB200",
                               "--gpus-per-node", "8"),
                       "hardware.gpus_per_node", "holds 4 GPUs", "72-GPU NVLink domain")


def test_nvl72_keeps_tp_and_ep_on_nvlink_across_trays() -> None:
    # 4 trays x 4 GB200, TP16: one NVLink domain. The same TP16 over 2 x 8 H200 crosses nodes.
    _, gb = _plan_cli("--model", "kimi-k2.5-nvfp4", "--gpu", "GB200", "--gpus-per-node", "4", "--nodes", "4")
    assert gb["assumptions"]["interconnect"] == {"nvlink_domain_gpus": 72, "gpus_per_node": 4,
                                                 "nvlink_domains_spanned": 1, "tp_within_nvlink": True}
    _, h = _plan_cli("--model", "kimi-k2.5", "--gpu", "H200", "--gpus-per-node", "8", "--nodes", "2")
    assert h["assumptions"]["interconnect"]["tp_within_nvlink"] is False
    assert h["assumptions"]["interconnect"]["nvlink_domains_spanned"] == 2
    # DP+EP over the whole rack (18 trays = 72 GPUs) stays in the domain; a 19th tray leaves it.
    entry = get_model("kimi-k2.5-nvfp4")
    for trays, inside in ((18, True), (19, False)):
        p = plan(PlanInput(entry.id, entry.architecture(), "vllm", get_gpu("GB200"), 4, trays,
                           Topology(tp=1, dp=4 * trays, expert_parallel=True), 131072))
        assert p.assumptions["interconnect"]["ep_within_nvlink"] is inside
        assert p.assumptions["interconnect"]["nvlink_domains_spanned"] == (1 if inside else 2)


def test_spec_model_accepts_a_hub_repo_id(tmp_path) -> None:
    spec = tmp_path / "k25-gb200.yaml"
    spec.write_text(
        "name: k25-nvfp4\n"
        "model: nvidia/Kimi-K2.5-NVFP4\n"
        "hardware: {gpu: gb200, gpus_per_node: 4, nodes: 1}\n"
        "engine: {name: vllm}\n"
        "topology: {mode: tp, tp: 4}\n"
        "serving: {max_model_len: 131072, kv_cache_dtype: fp8}\n")
    code, data = _plan_cli(str(spec))
    assert code == 0 and data["model"] == "kimi-k2.5-nvfp4" and data["fits"]
    assert data["kv_bytes_per_token"] == (512 + 64) * 1 * 61  # fp8 KV, as REC runs the NVFP4 variant


def test_gpu_names_are_case_insensitive() -> None:
    assert get_gpu("h20-3E") is get_gpu("H20-3e") is get_gpu("H20-141GB")
    assert get_gpu("gb300-nvl72").node_gpus == 4 and get_gpu("GB300").nvlink_domain == 72


@pytest.mark.parametrize("gpu, gpn, prefill, decode, transfer", [
    ("GB200", 4, "{nodes: 1, tp: 4}", "{nodes: 4, tp: 16}", "nvlink"),  # 20 GPUs of one NVL72 rack
    ("H200", 8, "{nodes: 1, tp: 8}", "{nodes: 1, tp: 8}", "network"),  # two HGX nodes: KV over RDMA
])
def test_pd_kv_transfer_stays_on_nvlink_inside_a_rack(tmp_path, gpu, gpn, prefill, decode, transfer) -> None:
    nodes = 1 + int(decode.split("nodes: ")[1].split(",")[0])
    spec = tmp_path / "pd.yaml"
    spec.write_text(
        "name: k25-pd\n"
        "model: nvidia/Kimi-K2.5-NVFP4\n"
        f"hardware: {{gpu: {gpu}, gpus_per_node: {gpn}, nodes: {nodes}}}\n"
        "engine: {name: vllm}\n"
        "topology:\n  mode: pd\n  pd:\n    transfer_backend: nixl\n    router_port: 8000\n"
        f"    prefill: {prefill}\n    decode: {decode}\n"
        "serving: {port: 8000, max_model_len: 131072}\n")
    code, data = _plan_cli(str(spec))
    assert code == 0, data["problems"]
    link = data["assumptions"]["interconnect"]
    assert link["pd_kv_transfer"] == transfer and link["pd_gpus"] == gpn * nodes
    # The decode side alone: TP16 over 4 GB200 trays is on NVLink, like TP8 inside one H200 node.
    assert link["tp_within_nvlink"] is True and link["nvlink_domains_spanned"] == 1


def test_k27_code_refuses_thinking_off(tmp_path) -> None:
    spec = tmp_path / "k27.yaml"
    spec.write_text(
        "name: k27\nmodel: moonshotai/Kimi-K2.7-Code\nhardware: {gpu: H200, gpus_per_node: 8, nodes: 1}\n"
        "engine: {name: vllm}\ntopology: {mode: tp, tp: 8}\nserving: {thinking: false}\n")
    assert_clean_error(run_cli("plan", str(spec)), "serving.thinking", "thinking mode only")
    spec.write_text(spec.read_text().replace("serving: {thinking: false}\n", ""))
    code, data = _plan_cli(str(spec))
    assert code == 0 and data["model"] == "kimi-k2.7-code"
