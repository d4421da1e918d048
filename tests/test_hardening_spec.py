"""Issue 12 on the spec side: a printed command runs nothing hidden in spec data (class 5), the spec
refuses secrets under any name (class 4), every bad spec file or value is exit 2 naming it (class 6),
and fuzzing the loader and the Slurm host-list parser ends in a result or BadInput, never another
exception. Real files, real bash, real executables on PATH; nothing of the code under test is mocked."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimi_deploy.cli.launch import shell_word
from kimi_deploy.errors import BadInput
from kimi_deploy.launch import expand_slurm_nodelist
from kimi_deploy.spec import Spec, load_spec, parse_spec

from .conftest import DEPLOY, assert_clean_error, run_cli

TP16 = DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml"
RAY = DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp8pp2-ray.yaml"
SECRET = "sk-test-do-not-leak-1234"

# Prints each argument NUL-terminated into $ARGV_OUT/<name>, and the API key the engine would read.
FAKE = """#!/bin/sh
out="$ARGV_OUT/$(basename "$0")"
for a in "$@"; do printf '%s\\0' "$a"; done > "$out"
printf '%s' "${VLLM_API_KEY-}" > "$out.key"
"""


def _spec(tmp_path: Path, base: Path = TP16, name: str = "spec.yaml", **sections: dict[str, Any]) -> Path:
    data = yaml.safe_load(base.read_text())
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def _run_rendered(tmp_path: Path, spec: Path, rank: int) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Render one node's script and run it with bash, `vllm` and `ray` being FAKE on PATH."""
    proc = run_cli("render", str(spec), "--node-rank", str(rank), check=True)
    fakebin, argv_out, work = tmp_path / "bin", tmp_path / "argv", tmp_path / "work"
    for d in (fakebin, argv_out, work):
        d.mkdir(exist_ok=True)
    for name in ("vllm", "ray"):
        (fakebin / name).write_text(FAKE)
        (fakebin / name).chmod(stat.S_IRWXU)
    env = {"PATH": f"{fakebin}{os.pathsep}{os.environ['PATH']}", "HOME": str(work), "ARGV_OUT": str(argv_out),
           "KIMI_HEAD_ADDR": "10.0.0.7", "KIMI_API_KEY": SECRET}
    done = subprocess.run(["bash", "-eu"], input=proc.stdout, capture_output=True, text=True, env=env, cwd=work,
                          timeout=60)
    return argv_out, done


def _argv(argv_out: Path, name: str) -> list[str]:
    return (argv_out / name).read_bytes().decode().split("\0")[:-1]


def test_rendered_script_runs_nothing_hidden_in_spec_values(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    name = f"m$HOME$(touch {pwned}1)`touch {pwned}2`'\"; touch {pwned}3 #"
    env_value = f"a$(touch {pwned}4) b\\n'"
    extra = ["--chat-template", f"x$(touch {pwned}5)'`touch {pwned}6`\"", f"--override-generation-config=$(touch {pwned}7)"]
    wdir = f"/models/k2 $(touch {pwned}8)"
    spec = _spec(tmp_path, serving={"served_model_name": name, "env": {"FOO": env_value}, "extra_args": extra},
                 weights={"dir": wdir})
    argv_out, done = _run_rendered(tmp_path, spec, 1)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("pwned*")), "a spec value ran as code"
    argv = _argv(argv_out, "vllm")
    assert argv[:2] == ["serve", wdir]
    assert argv[argv.index("--served-model-name") + 1] == name
    assert argv[argv.index("--chat-template") + 1] == extra[1] and extra[2] in argv
    # The tool's own references are expanded: the head address and the API key variable.
    assert argv[argv.index("--master-addr") + 1] == "10.0.0.7"
    assert (argv_out / "vllm.key").read_text() == SECRET


def test_tool_references_mixed_with_literal_text(tmp_path: Path) -> None:
    """`ray start --address=${KIMI_HEAD_ADDR}:6379`: the reference expands, the literal part stays."""
    argv_out, done = _run_rendered(tmp_path, RAY, 1)
    assert done.returncode == 0, done.stderr
    assert "--address=10.0.0.7:6379" in _argv(argv_out, "ray")
    # shell_word on its own: literal parts single-quoted, only the named references double-quoted.
    words = ["http://${KIMI_PREFILL_HEAD_ADDR}:8001", "${KIMI_HEAD_ADDR}:5000", "m${HOME}$(touch x)",
             "${NOT_OURS}", "a'b\"c`d`$e", ""]
    script = "printf '%s\\0' " + " ".join(shell_word(w) for w in words)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=30,
                         env={"KIMI_PREFILL_HEAD_ADDR": "p.svc", "KIMI_HEAD_ADDR": "h", "HOME": "/home/x",
                              "NOT_OURS": "secret", "PATH": os.environ["PATH"]}).stdout
    assert out.split("\0")[:-1] == ["http://p.svc:8001", "h:5000", "m${HOME}$(touch x)", "${NOT_OURS}",
                                    "a'b\"c`d`$e", ""]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("section, values, field", [
    ("serving", {"served_model_name": "m${HOME}$(touch pwned)"}, "serving.served_model_name"),
    ("serving", {"served_model_name": "${HF_TOKEN}"}, "serving.served_model_name"),
    ("serving", {"env": {"FOO": "${HF_TOKEN}"}}, "serving.env.FOO"),
    ("serving", {"extra_args": ["--chat-template", "${HOME}/t.jinja"]}, "serving.extra_args[1]"),
    ("weights", {"dir": "/models/${USER}"}, "weights.dir"),
])
def test_references_in_spec_values_are_refused(tmp_path: Path, section: str, values: dict, field: str) -> None:
    """`serve` expands ${NAME}: a reference in spec data would pull e.g. HF_TOKEN into the engine's argv."""
    spec = _spec(tmp_path, **{section: values})
    for cmd in (["validate"], ["render"], ["serve", "--dry-run"]):
        proc = run_cli(*cmd[:1], str(spec), *cmd[1:], env={**os.environ, "HF_TOKEN": "hf_" + "x" * 30})
        assert_clean_error(proc, field, "may not refer to environment variables")
        assert "hf_xxxx" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("env, field", [
    ({"AUTHORIZATION": "Bearer sk-abcdefghijklmnopqrstuvwx"}, "serving.env"),
    ({"HF_AUTH": "hf_abcdefghijklmnopqrstuvwxyz0123"}, "serving.env"),
    ({"MY_SETTING": "sk-proj-abcdefghijklmnop1234"}, "serving.env"),
    ({"AWS_ID": "AKIAIOSFODNN7EXAMPLE"}, "serving.env"),
    ({"UPSTREAM_AUTH": "q8Zr2LmX9vT4nB7kP1sW6yE3"}, "serving.env"),  # random-looking under an AUTH name
    ({"HEADER": "bearer abcdefgh12345678"}, "serving.env"),
    ({"HF_TOKEN": "anything"}, "serving.env"),
    ({"bad name": "1"}, "serving.env"),
])
def test_credential_shaped_env_values_are_refused(tmp_path: Path, env: dict, field: str) -> None:
    proc = run_cli("validate", str(_spec(tmp_path, serving={"env": env})))
    assert_clean_error(proc, field)
    assert "api_key_env" in proc.stderr or "not an environment variable name" in proc.stderr
    value = next(iter(env.values()))
    if len(value) > 10:
        assert value not in proc.stdout + proc.stderr  # the refused secret is not echoed back


@pytest.mark.parametrize("where, args", [
    ("serving", ["--api-key", "abc"]),
    ("serving", ["--api-key=abc"]),
    ("serving", ["--admin-api-key", "abc"]),
    ("serving", ["--api_key", "abc"]),
    ("serving", ["--hf-token", "hf_abcdefghijklmnopqrstuvwxyz0123"]),
    ("serving", ["--override-generation-config", '{"k": "sk-abcdefghijklmnopqrstuvwx"}']),
    ("prefill", ["--api-key", "abc"]),
])
def test_api_keys_in_extra_args_are_refused(tmp_path: Path, where: str, args: list[str]) -> None:
    if where == "serving":
        spec, field = _spec(tmp_path, serving={"extra_args": args}), "serving.extra_args"
    else:
        data = yaml.safe_load((DEPLOY / "kimi-k2-thinking-h200x16-vllm-pd.yaml").read_text())
        data["topology"]["pd"]["prefill"]["extra_args"] = args
        spec = tmp_path / "pd.yaml"
        spec.write_text(yaml.safe_dump(data))
        field = "topology.pd.prefill.extra_args"
    proc = run_cli("validate", str(spec))
    assert_clean_error(proc, field, "api_key_env")


def test_ordinary_settings_pass(tmp_path: Path) -> None:
    """The secret checks leave real settings alone."""
    env = {"NCCL_IB_HCA": "mlx5_0,mlx5_1", "VLLM_USE_DEEP_GEMM": "1", "HF_HUB_ENABLE_HF_TRANSFER": "1",
           "NCCL_AUTH_MODE": "none", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "PRICE": "$5"}
    spec = _spec(tmp_path, serving={"env": env, "extra_args": ["--chat-template", "/t/$x.jinja",
                                                               "--disable-log-requests"]})
    assert run_cli("validate", str(spec)).returncode == 0


@pytest.mark.parametrize("content, needles", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["not a UTF-8 text file"]),
    (b"name: x\x00\x01\x02", ["binary file"]),
    ("name: caf\xe9\n".encode("latin-1"), ["not a UTF-8 text file"]),
    (TP16.read_bytes() + b"\nengine: {name: sglang}\n", ["duplicate key 'engine'", "line 7"]),
    (b"name: a\nserving:\n  port: 1\n  port: 2\n", ["duplicate key 'port'", "line 3", "line 4"]),
    (b"[" * 5000, ["spec.yaml"]),
])
def test_unreadable_spec_files(tmp_path: Path, content: bytes, needles: list[str]) -> None:
    p = tmp_path / "spec.yaml"
    p.write_bytes(content)
    for cmd in ("validate", "plan", "render"):
        assert_clean_error(run_cli(cmd, str(p)), "spec.yaml", *needles)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = TP16.read_text().replace("network: {socket_ifname: eth0}",
                                    "x-net: &net {socket_ifname: eth0}\nnetwork: {<<: *net, master_port: 29502}")
    data = yaml.safe_load(text)
    data.pop("x-net")
    assert parse_spec(data).network.master_port == 29502


def test_max_model_len_beyond_the_context_length(tmp_path: Path) -> None:
    spec = _spec(tmp_path, serving={"max_model_len": 400000})
    for cmd in ("validate", "plan", "render", "k8s"):
        args = ["-o", str(tmp_path / "out")] if cmd == "k8s" else []
        assert_clean_error(run_cli(cmd, str(spec), *args), "serving.max_model_len", "131,072")
    assert run_cli("validate", str(_spec(tmp_path, serving={"max_model_len": 131072}))).returncode == 0


def test_tiny_model_dest_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("mine")
    for dest in (f, f / "sub"):
        assert_clean_error(run_cli("tiny-model", str(dest), "--steps", "1"), "DEST", "not a directory")
    assert f.read_text() == "mine"


# --- fuzzing ------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=int(os.environ.get("KIMI_FUZZ_EXAMPLES", "50")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=30))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                       max_leaves=20)
_good = yaml.safe_load(TP16.read_text())


def _mutated_spec() -> st.SearchStrategy[dict[str, Any]]:
    """The example spec with some fields replaced, removed or added at random (nested too)."""
    def mutate(args: tuple[list[tuple[str, str, Any]], list[str]]) -> dict[str, Any]:
        changes, drops = args
        data = yaml.safe_load(TP16.read_text())
        for section, key, value in changes:
            if isinstance(data.get(section), dict) and key:
                data[section][key] = value
            else:
                data[section] = value
        for key in drops:
            data.pop(key, None)
        return data
    sections = st.sampled_from([*_good, "bogus"])
    keys = st.sampled_from(["", "port", "env", "extra_args", "dir", "gpus_per_node", "nodes", "name", "tp",
                            "max_model_len", "served_model_name", "weights_mode", "pd", "mode", "api_key_env"])
    return st.tuples(st.lists(st.tuples(sections, keys, _values), max_size=3),
                     st.lists(sections, max_size=2)).map(mutate)


def _ok_or_bad_input(fn, *args: Any) -> None:
    try:
        result = fn(*args)
    except BadInput as exc:
        assert str(exc).strip()
        return
    if fn is expand_slurm_nodelist:
        assert isinstance(result, list) and all(isinstance(h, str) and h for h in result)
    else:
        assert isinstance(result, Spec)


@FUZZ
@given(data=st.one_of(_values, _mutated_spec()))
def test_fuzz_parse_spec(data: Any) -> None:
    _ok_or_bad_input(parse_spec, data)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                     _mutated_spec().map(lambda d: yaml.safe_dump(d).encode()),
                     st.tuples(st.sampled_from(TP16.read_text().splitlines()), st.integers(0, 20)).map(
                         lambda t: (TP16.read_text() + "\n" + t[0] * min(t[1], 2)).encode())))
def test_fuzz_load_spec(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    p = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    p.write_bytes(raw)
    _ok_or_bad_input(load_spec, p)


@FUZZ
@given(nodelist=st.one_of(st.text(alphabet="gpu0123456789[]-,.a ", max_size=30), st.text(max_size=30),
                          st.lists(st.tuples(st.sampled_from(["gpu", "rack", "n-", ""]),
                                             st.lists(st.tuples(st.integers(0, 120), st.integers(0, 30)), max_size=3)),
                                   min_size=1, max_size=3).map(
                              lambda items: ",".join(p + ("[" + ",".join(f"{a}-{a + b}" for a, b in r) + "]" if r else "")
                                                     for p, r in items))))
def test_fuzz_slurm_nodelist(nodelist: str) -> None:
    _ok_or_bad_input(expand_slurm_nodelist, nodelist)


@pytest.mark.parametrize("head", ["${KIMI_API_KEY}", "h$(touch x)", "a b", ""])
def test_render_head_address_is_a_host(tmp_path: Path, head: str) -> None:
    assert_clean_error(run_cli("render", str(TP16), "--head-address", head), "--head-address", "host name")
    assert run_cli("render", str(TP16), "--head-address", "fd00::1").returncode == 0
