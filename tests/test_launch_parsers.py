"""Every command kimi-deploy renders is accepted by the engines' own argument parsers: vLLM's
make_arg_parser + validate_parsed_serve_args (+ its tool/reasoning parser registries), SGLang's
ServerArgs.add_cli_args (abbreviations off), and the routers' parse_router_args — for every deploy/
example and for every topology x engine combination."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from kimi_deploy.deployment import resolve
from kimi_deploy.engines.render import render
from kimi_deploy.engines.check import check_argv, check_nodes
from kimi_deploy.errors import BadInput
from kimi_deploy.spec import load_spec, parse_spec

from .conftest import DEPLOY, assert_clean_error, example_params, needs_tiny, run_cli

HEADS = {"serve": "10.0.0.1", "prefill": "10.0.0.1", "decode": "10.0.0.3"}


def _engine_argvs(nodes):
    return [n.argv for n in nodes if n.group != "router" and n.argv[:2] != ["ray", "start"]]


def _assert_kimi_invariants(spec, nodes) -> None:
    dep = resolve(spec)
    thinking = dep.thinking  # the catalog's answer, or serving.thinking for a local checkpoint
    entry = dep.entry
    if entry is not None and spec.serving.thinking is None:
        assert thinking == entry.thinking
    # the family's parsers: kimi_k2 for K2 and local checkpoints, kimi_k3 for K3, none for Kimi-Linear
    tool = entry.tool_parser if entry is not None else "kimi_k2"
    for argv in _engine_argvs(nodes):
        assert "--trust-remote-code" in argv
        if tool is None:
            assert "--tool-call-parser" not in argv and "--enable-auto-tool-choice" not in argv
        else:
            assert argv[argv.index("--tool-call-parser") + 1] == tool
        assert ("--reasoning-parser" in argv) == thinking
        if thinking:
            assert argv[argv.index("--reasoning-parser") + 1] == tool
        assert argv[argv.index("--host") + 1] == spec.serving.host
        if spec.hardware.nodes > 1:
            assert spec.serving.host == "0.0.0.0"
        if spec.engine.name == "vllm" and tool is not None:
            assert "--enable-auto-tool-choice" in argv
        else:  # SGLang: never the prefix abbreviations (`--tp`, `--dp` are argparse prefixes of --tp-size / --dp-size)
            assert not {"--tp", "--dp", "--pp", "--cuda-graph-max-bs"} & set(argv)
    for n in nodes:  # the API key is an env reference or read by name, never a value (tests/test_secrets.py)
        text = json.dumps(n.to_json())
        if spec.serving.api_key_env:
            assert ("${" + spec.serving.api_key_env + "}" in text or spec.serving.api_key_env in n.needs_env
                    or n.argv[:2] == ["ray", "start"])


@pytest.mark.parametrize("path", example_params())
def test_every_example_passes_the_real_parsers(path: Path, request: pytest.FixtureRequest) -> None:
    if needs_tiny(path):
        request.getfixturevalue("tiny_dir")  # that spec reads the tiny-k2 checkpoint's config.json
    spec = load_spec(path)
    nodes = render(resolve(spec), HEADS)
    assert check_nodes(nodes) == []
    _assert_kimi_invariants(spec, nodes)


BASE = {
    "name": "matrix", "model": "kimi-k2-instruct", "weights": {"dir": "/models/k2"},
    "hardware": {"gpu": "H200", "gpus_per_node": 8, "nodes": 2},
    "engine": {"name": "vllm"}, "serving": {"max_model_len": 65536, "api_key_env": "KIMI_API_KEY"},
}

# (engine, nodes, topology, expected roles)
MATRIX = [
    ("vllm", 1, {"mode": "tp", "tp": 8}, ["single"]),
    ("vllm", 1, {"mode": "tp-ep", "tp": 8, "all2all": "deepep_low_latency"}, ["single"]),
    ("vllm", 1, {"mode": "tp", "tp": 8, "dcp": 8}, ["single"]),
    ("vllm", 1, {"tp": 4, "pp": 2}, ["single"]),
    ("vllm", 1, {"mode": "dp-ep", "tp": 1, "dp": 8}, ["single"]),
    ("vllm", 2, {"mode": "tp", "tp": 16}, ["head", "worker"]),
    ("vllm", 2, {"mode": "tp-pp", "tp": 8, "pp": 2}, ["head", "worker"]),
    ("vllm", 2, {"mode": "tp", "tp": 16, "multinode_backend": "ray"}, ["ray-head", "ray-worker"]),
    ("vllm", 2, {"mode": "dp-ep", "tp": 1, "dp": 16, "all2all": "deepep_low_latency",
                 "eplb_redundant_experts": 32}, ["head", "worker"]),
    ("vllm", 2, {"mode": "dp-ep", "tp": 2, "dp": 8}, ["head", "worker"]),
    ("vllm", 2, {"mode": "dp-ep", "tp": 1, "dp": 16, "lb": "hybrid"}, ["head", "server"]),
    ("vllm", 2, {"mode": "pd", "pd": {"transfer_backend": "nixl", "prefill": {"nodes": 1, "tp": 8},
                                      "decode": {"nodes": 1, "tp": 1, "dp": 8, "expert_parallel": True}}},
     ["prefill-single", "decode-single", "router"]),
    ("sglang", 1, {"mode": "tp", "tp": 8}, ["single"]),
    ("sglang", 1, {"mode": "tp-ep", "tp": 8}, ["single"]),
    ("sglang", 1, {"mode": "dp-ep", "tp": 8, "dp": 8, "all2all": "deepep_low_latency"}, ["single"]),
    ("sglang", 2, {"mode": "tp", "tp": 16}, ["head", "worker"]),
    ("sglang", 2, {"mode": "tp-pp", "tp": 8, "pp": 2}, ["head", "worker"]),
    ("sglang", 2, {"mode": "dp-ep", "tp": 16, "dp": 16, "all2all": "deepep_high_throughput",
                   "eplb_redundant_experts": 32}, ["head", "worker"]),
    ("sglang", 2, {"mode": "pd", "pd": {"ib_device": "mlx5_0", "prefill": {"nodes": 1, "tp": 8},
                                        "decode": {"nodes": 1, "tp": 8, "dp": 8, "dp_attention": True}}},
     ["prefill-single", "decode-single", "router"]),
]


@pytest.mark.parametrize("engine, nodes, topology, roles", MATRIX,
                         ids=[f"{e}-{n}n-{t.get('mode', 'auto')}-{i}" for i, (e, n, t, _) in enumerate(MATRIX)])
def test_topology_matrix_passes_the_real_parsers(engine, nodes, topology, roles) -> None:
    data = copy.deepcopy(BASE)
    data["engine"]["name"] = engine
    data["hardware"]["nodes"] = nodes
    data["topology"] = topology
    spec = parse_spec(data)
    rendered = render(resolve(spec), HEADS)
    assert [n.role for n in rendered] == roles
    assert check_nodes(rendered) == []
    _assert_kimi_invariants(spec, rendered)


def test_vllm_multinode_shapes() -> None:
    data = copy.deepcopy(BASE)
    data["topology"] = {"mode": "dp-ep", "tp": 1, "dp": 16}
    head, worker = render(resolve(parse_spec(data)), HEADS)
    # internal LB: one API server on the head; the worker is headless and starts at DP rank 8
    assert "--headless" not in head.argv and head.serves_http
    assert worker.argv[worker.argv.index("--data-parallel-start-rank") + 1] == "8"
    assert "--headless" in worker.argv and not worker.serves_http
    assert head.argv[head.argv.index("--data-parallel-address") + 1] == "10.0.0.1"
    data["topology"] = {"mode": "tp", "tp": 16}
    head, worker = render(resolve(parse_spec(data)), HEADS)
    assert head.argv[head.argv.index("--node-rank") + 1] == "0"
    assert worker.argv[worker.argv.index("--node-rank") + 1] == "1" and "--headless" in worker.argv


def test_sglang_same_command_on_every_node() -> None:
    data = copy.deepcopy(BASE)
    data["engine"]["name"] = "sglang"
    head, worker = render(resolve(parse_spec(data)), HEADS)
    strip = lambda a: [x for i, x in enumerate(a) if not (i > 0 and a[i - 1] == "--node-rank")]  # noqa: E731
    assert strip(head.argv) == strip(worker.argv)
    assert worker.health_only and head.argv[head.argv.index("--dist-init-addr") + 1] == "10.0.0.1:5000"


def test_the_checker_catches_what_it_should() -> None:
    assert "unrecognized arguments: --disable-log-requests" in check_argv(
        ["vllm", "serve", "m", "--disable-log-requests"])  # removed in vllm #35723 (2026-03-02)
    assert "kimi_k9" in check_argv(["vllm", "serve", "m", "--enable-auto-tool-choice", "--tool-call-parser", "kimi_k9"])
    assert "unrecognized arguments: --tp 8" in check_argv(
        ["python3", "-m", "sglang.launch_server", "--model-path", "m", "--tp", "8"])
    assert "invalid choice" in check_argv(
        ["python3", "-m", "sglang.launch_server", "--model-path", "m", "--reasoning-parser", "kimi_k9"])
    assert "--bogus" in check_argv(["vllm-router", "--bogus"])


def _spec_file(tmp_path: Path, **changes) -> str:
    data = yaml.safe_load((DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml").read_text())
    for key, value in changes.items():
        section, _, leaf = key.partition("__")
        if leaf:
            data.setdefault(section, {})[leaf] = value
        else:
            data[section] = value
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_unknown_extra_arg_is_bad_input(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, serving__extra_args=["--disable-log-requests"])
    proc = run_cli("render", path, "--check")
    assert_clean_error(proc, "serving.extra_args", "--disable-log-requests")
    # progress on stderr, a pipe here: a first and a last line (kimi_deploy.progress)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("render --check: ")]
    assert lines[0].startswith("render --check: 0/2 done") and lines[-1].startswith("render --check: 2/2 done, 2 failed"), \
        proc.stderr


def test_too_old_engine_is_refused(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, engine={"name": "vllm", "version": "0.11.0"})
    assert_clean_error(run_cli("render", path), "engine.version", "native multi-node (--nnodes) needs vllm >= 0.12.0")
    path = _spec_file(tmp_path, engine={"name": "vllm", "version": "zero"})
    assert_clean_error(run_cli("render", path), "engine.version", "not a version")


def test_topology_vllm_cannot_express(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["topology"] = {"tp": 3, "dp": 5, "expert_parallel": True}
    data["hardware"] = {"gpu": "H200", "gpus_per_node": 15, "nodes": 1}
    with pytest.raises(BadInput, match="does not divide num_attention_heads"):
        render(resolve(parse_spec(data)), HEADS)
    data["hardware"] = {"gpu": "H200", "gpus_per_node": 6, "nodes": 2}
    data["topology"] = {"tp": 4, "pp": 1, "dp": 3, "expert_parallel": True}
    with pytest.raises(BadInput, match="each node runs whole DP ranks"):
        render(resolve(parse_spec(data)), HEADS)


def test_render_cli_shell_and_json(tmp_path: Path) -> None:
    path = str(DEPLOY / "kimi-k2-instruct-h200x16-vllm-dpep.yaml")
    proc = run_cli("render", path, "--node-rank", "1", "--head-address", "10.9.9.9", check=True)
    assert "--headless" in proc.stdout and "10.9.9.9" in proc.stdout
    assert 'export VLLM_API_KEY="${KIMI_API_KEY}"' in proc.stdout
    import json

    nodes = json.loads(run_cli("render", path, "--json", check=True).stdout)["nodes"]
    assert [set(n) >= {"rank", "role", "argv", "env"} for n in nodes] == [True, True]
    assert_clean_error(run_cli("render", path, "--node-rank", "5"), "--node-rank", "outside 0..1")


@pytest.mark.parametrize("engine, model, gpus, flags", [
    # vLLM takes a bfloat16 state for K3's KDA layers only (Kimi-Linear's layer keeps float32: tests/test_plan.py)
    ("vllm", "kimi-k3", 8, ["--mamba-ssm-cache-dtype", "bfloat16", "--no-enable-prefix-caching"]),
    ("sglang", "kimi-linear-48b-a3b-instruct", 1, ["--mamba-ssm-dtype", "bfloat16", "--disable-radix-cache"]),
])
def test_hybrid_state_settings_pass_the_real_parsers(engine: str, model: str, gpus: int, flags: list[str]) -> None:
    data = copy.deepcopy(BASE)
    data.update(model=model, hardware={"gpu": "B300", "gpus_per_node": gpus, "nodes": 1})
    data["engine"]["name"] = engine
    data["topology"] = {"mode": "tp", "tp": gpus}
    data["serving"].update(state_dtype="bfloat16", prefix_caching=False)
    spec = parse_spec(data)
    dep = resolve(spec)
    (node,) = render(dep, HEADS)
    for flag in flags:
        assert flag in node.argv, (flag, node.argv)
    assert check_nodes([node]) == []
    _assert_kimi_invariants(spec, [node])
    # the plan follows the flags: one state slot per running sequence without prefix caching
    assert dep.primary.plan.hybrid.state_slots_per_sequence == 1
    # a model without KDA layers has no state to store
    data["model"] = "kimi-k2.6"
    data["hardware"] = {"gpu": "H200", "gpus_per_node": 8, "nodes": 1}
    data["topology"] = {"mode": "tp", "tp": 8}
    with pytest.raises(BadInput) as err:
        resolve(parse_spec(data))
    assert err.value.field == "serving.state_dtype" and "hybrid" in str(err.value)
