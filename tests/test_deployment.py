"""The spec is resolved once into an immutable Deployment that every consumer reads, and engine
knowledge is data: one table from serving fields to both engines' flags and the planner."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from kimi_deploy import deployment, serving_flags
from kimi_deploy.deployment import resolve
from kimi_deploy.engines.profiles import PROFILES
from kimi_deploy.engines.render import render
from kimi_deploy.errors import BadInput
from kimi_deploy.k8s import manifests
from kimi_deploy.launch import node_command, preflight, resolve_node
from kimi_deploy.spec import Serving, load_spec, parse_spec

from .conftest import DEPLOY, assert_clean_error, run_cli

VLLM_TP16 = DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml"
SGLANG_TP16 = DEPLOY / "kimi-k2-instruct-h200x16-sglang-tp16.yaml"
SGLANG_PD = DEPLOY / "kimi-k2-instruct-h200x32-sglang-pd.yaml"


def _data(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _flag(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_every_serving_field_has_one_home() -> None:
    """A new serving field must be given a row in the table (or a rule of its own): none is lost."""
    table = {row.field for row in serving_flags.SERVING_FLAGS}
    assert not table & serving_flags.HANDLED_ELSEWHERE
    assert set(Serving.model_fields) == table | serving_flags.HANDLED_ELSEWHERE
    for row in serving_flags.SERVING_FLAGS:
        assert any(row.field in p.flags for p in PROFILES.values()), row.field
    for p in PROFILES.values():
        assert set(p.flags) <= table, p.name  # a profile flag for a field the spec does not have is dead


@pytest.mark.parametrize("path, flag", [(VLLM_TP16, "--max-num-seqs"), (SGLANG_TP16, "--max-running-requests")])
def test_one_table_row_carries_a_field_to_the_command_and_the_plan(path: Path, flag: str, monkeypatch) -> None:
    data = _data(path)
    data["serving"]["max_num_seqs"] = 77
    dep = resolve(parse_spec(data))
    assert all(_flag(n.argv, flag) == "77" for n in render(dep) if n.group != "router")
    assert dep.primary.plan_input.max_num_seqs == 77
    # Without its row the field reaches neither the engine nor the planner: the table is the only path.
    rows = tuple(r for r in serving_flags.SERVING_FLAGS if r.field != "max_num_seqs")
    monkeypatch.setattr(serving_flags, "SERVING_FLAGS", rows)
    dep = resolve(parse_spec(data))
    assert all(flag not in n.argv for n in render(dep))
    assert dep.primary.plan_input.max_num_seqs != 77


def test_resolved_once_then_only_read(monkeypatch) -> None:
    """Everything downstream of resolve() reads the Deployment: no planner run, no model lookup again."""
    calls = {"plan": 0, "model": 0}
    real_plan, real_model = deployment.plan, deployment.resolve_model

    def counting_plan(*a, **k):
        calls["plan"] += 1
        return real_plan(*a, **k)

    def counting_model(*a, **k):
        calls["model"] += 1
        return real_model(*a, **k)

    monkeypatch.setattr(deployment, "plan", counting_plan)
    monkeypatch.setattr(deployment, "resolve_model", counting_model)
    dep = resolve(load_spec(SGLANG_PD))
    assert calls == {"plan": 2, "model": 1}  # one plan per P/D side, one catalog lookup
    monkeypatch.setattr(deployment, "plan", None)  # any later call would blow up
    monkeypatch.setattr(deployment, "resolve_model", None)
    manifests(dep, SGLANG_PD.read_text())
    env = {"LWS_LEADER_ADDRESS": "d-0", "LWS_WORKER_INDEX": "1", "LWS_GROUP_SIZE": "2", "KIMI_PD_GROUP": "decode"}
    node = node_command(dep, resolve_node(dep, None, None, env))
    preflight(dep, node, check_args=False)
    assert node.port == dep.group("decode").port == 30002


def test_consumers_read_resolved_fields_not_the_raw_spec() -> None:
    """The Deployment carries no raw spec: what it passes through as given (weights, network, k8s) is named
    as such, and every consumer reads those fields."""
    dep = resolve(load_spec(SGLANG_PD))
    assert not hasattr(dep, "spec")
    assert dep.gpu.name == "H200" and dep.pd_transport is not None and dep.host
    consumers = [p for p in (DEPLOY.parent / "src" / "kimi_deploy").rglob("*.py") if p.name not in ("spec.py", "deployment.py")]
    offenders = [f"{p.name}:{i}" for p in consumers for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\bdep\.spec\b|deployment\.spec\b", line)]
    assert not offenders, offenders


def test_the_deployment_is_immutable() -> None:
    dep = resolve(load_spec(VLLM_TP16))
    with pytest.raises(dataclasses.FrozenInstanceError):
        dep.served_model_name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        dep.serving["max_model_len"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        dep.groups[0].network_env["NCCL_DEBUG"] = "INFO"  # type: ignore[index]


def test_parsers_come_from_the_catalog_entry() -> None:
    data = _data(DEPLOY / "kimi-k2-thinking-h200x8-vllm-tp8.yaml")
    dep = resolve(parse_spec(data))
    assert (dep.tool_parser, dep.reasoning_parser) == (dep.entry.tool_parser, dep.entry.reasoning_parser)
    data["serving"]["tool_call_parser"] = None  # null disables tool calling
    data["serving"]["thinking"] = False
    (node,) = render(resolve(parse_spec(data)))
    assert "--tool-call-parser" not in node.argv and "--reasoning-parser" not in node.argv
    assert "--enable-auto-tool-choice" not in node.argv


def test_a_field_the_engine_lacks_is_refused(tmp_path: Path) -> None:
    data = _data(SGLANG_TP16)
    data["serving"]["gpu_memory_utilization"] = 0.9
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    assert_clean_error(run_cli("render", str(p)), "serving.gpu_memory_utilization", "mem_fraction_static")
    with pytest.raises(BadInput, match="serving.gpu_memory_utilization"):
        resolve(parse_spec(data))


def test_pd_sides_get_their_own_network_env() -> None:
    """The renderer and the pod env read the same per-group network env (DeepEP only where used)."""
    data = _data(SGLANG_PD)
    data["topology"]["pd"]["prefill"]["all2all"] = None
    dep = resolve(parse_spec(data))
    assert "NVSHMEM_IB_ENABLE_IBGDA" not in dep.group("prefill").network_env
    assert dep.group("decode").network_env["NVSHMEM_IB_ENABLE_IBGDA"] == "1"
    objs = manifests(dep, "")
    for side in ("prefill", "decode"):
        pod = objs[f"leaderworkerset-{side}.yaml"]["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        node = next(n for n in render(dep) if n.group == side)
        for name, value in dep.group(side).network_env.items():
            assert env[name] == value == node.env[name]
        assert ("NVSHMEM_IB_ENABLE_IBGDA" in env) == (side == "decode")


def test_bench_job_asks_for_the_served_model(tmp_path: Path) -> None:
    """Without served_model_name the engine serves the catalog id, and so the bench Job asks for it."""
    data = _data(VLLM_TP16)
    del data["serving"]["served_model_name"]
    dep = resolve(parse_spec(data))
    assert dep.served_model_name == "kimi-k2-instruct"
    from .test_pods import run_job_script

    cmd = manifests(dep, "")["bench/job-bench.yaml"]["spec"]["template"]["spec"]["containers"][0]["command"]
    bench = next(c for c in run_job_script(cmd, tmp_path) if c[0] == "bench")  # the script, run under bash
    assert bench[bench.index("--model") + 1] == "kimi-k2-instruct" != data["name"]


def test_k8s_output_never_deletes_or_overwrites_the_users_files(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    out.mkdir()
    (out / "spec.yaml").write_text("my spec\n")
    (out / "notes.yaml").write_text("mine\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(VLLM_TP16.read_text())
    assert run_cli("k8s", str(spec), "-o", str(out)).returncode == 0
    assert (out / "spec.yaml").read_text() == "my spec\n" and (out / "notes.yaml").read_text() == "mine\n"
    # a file we wrote and no longer render goes; ours are replaced
    (out / "leaderworkerset-old.yaml").write_text("# rendered by kimi-deploy k8s from spec.yaml; do not edit by hand\n")
    (out / "deployment-other.yaml").write_text("# rendered by kimi-deploy k8s from other.yaml; do not edit by hand\n")
    assert run_cli("k8s", str(spec), "-o", str(out)).returncode == 0
    assert not (out / "leaderworkerset-old.yaml").exists() and (out / "service.yaml").exists()
    assert (out / "deployment-other.yaml").exists()  # another spec's manifest: not ours to delete
    # a symlink where a manifest would go is never written through
    (out / "pdb-target").mkdir()
    (out / "poddisruptionbudget.yaml").unlink()
    (out / "poddisruptionbudget.yaml").symlink_to(out / "pdb-target" / "x.yaml")
    assert_clean_error(run_cli("k8s", str(spec), "-o", str(out)), "poddisruptionbudget.yaml")
    assert not (out / "pdb-target" / "x.yaml").exists()
    (out / "poddisruptionbudget.yaml").unlink()
    # a user's file under a name we would write: refused, nothing touched
    (out / "service.yaml").write_text("my service\n")
    before = {p.name: p.read_text() for p in out.iterdir() if p.is_file()}
    assert_clean_error(run_cli("k8s", str(spec), "-o", str(out)), "service.yaml", "not written by kimi-deploy")
    assert {p.name: p.read_text() for p in out.iterdir() if p.is_file()} == before
    assert_clean_error(run_cli("k8s", str(spec), "-o", str(out / "spec.yaml")), "not a directory")


def test_stock_engine_image_is_refused(tmp_path: Path) -> None:
    data = _data(VLLM_TP16)
    data["k8s"]["image"] = "vllm/vllm-openai:v0.32.0"
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    assert_clean_error(run_cli("k8s", str(p), "-o", str(tmp_path / "out")), "k8s.image", "docker/Dockerfile")
    del data["k8s"]["image"]
    p.write_text(yaml.safe_dump(data))
    assert_clean_error(run_cli("k8s", str(p), "-o", str(tmp_path / "out")), "k8s.image")
    assert not (tmp_path / "out").exists()


def test_serve_refuses_an_image_without_ray(tmp_path: Path) -> None:
    """The Ray example needs `ray` in the image; preflight says so before anything starts."""
    import shutil

    if shutil.which("ray"):
        pytest.skip("ray is installed here")
    proc = run_cli("serve", str(DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp8pp2-ray.yaml"), "--node-rank", "1",
                   "--head-address", "10.0.0.1", "--no-check-args", env={"PATH": "/usr/bin:/bin", "KIMI_API_KEY": "k" * 24})
    assert_clean_error(proc, "executables", "ray not installed", code=1)


def test_validate_refuses_what_render_refuses(tmp_path: Path) -> None:
    data = _data(DEPLOY / "kimi-k2.5-h200x8-sglang-tp8.yaml")
    data["engine"]["version"] = "0.5.2"  # the API key needs --config (sglang >= 0.5.3)
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    for cmd in ("validate", "render"):
        assert_clean_error(run_cli(cmd, str(p)), "engine.version", "--config YAML file needs sglang >= 0.5.3")


@pytest.mark.parametrize("path, change, needles", [
    (SGLANG_TP16, {"kv_cache_dtype": "fp8_ds_mla"}, ["serving.kv_cache_dtype", "sglang has no 'fp8_ds_mla'", "fp8_e4m3"]),
    (SGLANG_PD, {"port": 65535}, ["serving.port", "up to 65533"]),
])
def test_values_an_engine_cannot_take(tmp_path: Path, path: Path, change: dict, needles: list[str]) -> None:
    data = _data(path)
    data["serving"].update(change)
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    assert_clean_error(run_cli("plan", str(p)), *needles)
