"""Every pod in the committed k8s/ trees can start on the image it names.

Each pod is run as Kubernetes would run it, as far as this GPU-less machine allows: the ConfigMap's
files are bind-mounted at /etc/kimi-deploy in a private mount namespace, the container's own command
runs with the container's own environment (Secret references filled with a stand-in key) plus what
the LeaderWorkerSet controller injects (LWS_LEADER_ADDRESS, LWS_WORKER_INDEX, LWS_GROUP_SIZE), and
`kimi-deploy` is the one installed from the built wheel, as docker/Dockerfile installs it into the
engine image. The pod starts in --dry-run (no GPU here), and the engine command it would exec must be
exactly what `render` gives for that rank, which the engines' own parsers accept. Jobs and init
containers run `kimi-deploy` subcommands: each is parsed by the real CLI."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
import typer
import yaml

from kimi_deploy.cli import app
from kimi_deploy.deployment import resolve
from kimi_deploy.engines.render import render
from kimi_deploy.engines.check import check_argv
from kimi_deploy.k8s import STOCK_IMAGES
from kimi_deploy.spec import parse_spec

from .conftest import ROOT

SECRET = "sk-pod-stand-in-key-5d2a"
TREES = sorted(p for p in (ROOT / "k8s").iterdir() if p.is_dir())
MOUNT = Path("/etc/kimi-deploy")


def _objects(tree: Path) -> dict[str, dict[str, Any]]:
    return {p.relative_to(tree).as_posix(): yaml.safe_load(p.read_text()) for p in sorted(tree.rglob("*.yaml"))}


def _pods(objs: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    """(label, pod spec, env the controller injects) for every pod the workloads create."""
    for fname, obj in objs.items():
        if obj["kind"] == "Deployment":
            yield fname, obj["spec"]["template"]["spec"], {}
        elif obj["kind"] == "LeaderWorkerSet":
            lwt = obj["spec"]["leaderWorkerTemplate"]
            size, name, ns = lwt["size"], obj["metadata"]["name"], obj["metadata"]["namespace"]
            leader = f"{name}-0.{name}.{ns}"  # the LWS controller's leader address for group 0
            for index in range(size):
                template = lwt["leaderTemplate"] if index == 0 else lwt["workerTemplate"]
                yield f"{fname}#{index}", template["spec"], {
                    "LWS_LEADER_ADDRESS": leader, "LWS_WORKER_INDEX": str(index), "LWS_GROUP_SIZE": str(size)}


def kubelet_expand(text: str, env: Mapping[str, str]) -> str:
    """What kubelet hands the container for a command word, arg or env value (kubernetes
    third_party/forked/golang/expansion/expand.go): $$ is one $, $(NAME) is NAME's value when the container
    defines it and stays as written otherwise, any other $ is kept."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            end = text.find(")", i + 2) if nxt == "(" else -1
            if nxt == "$":
                out.append("$")
            elif end != -1:
                name = text[i + 2:end]
                out.append(env.get(name, text[i:end + 1]))
                i = end + 1
                continue
            else:
                out.append("$" + nxt)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as kubelet builds it: in order, each value expanded against the ones
    before it."""
    env: dict[str, str] = {}
    for e in container.get("env", []):
        env[e["name"]] = kubelet_expand(e["value"], env) if "value" in e else SECRET  # valueFrom: a Secret's key
    return env


def _command(container: dict[str, Any]) -> list[str]:
    """The container's command as the container receives it."""
    env = _container_env(container)
    return [kubelet_expand(word, env) for word in container["command"]]


@lru_cache(maxsize=None)
def _parsers_accept(argv: tuple[str, ...]) -> str | None:
    return check_argv(list(argv))


# Runs "$@" in a new user + mount namespace (no root needed: `unshare --user --map-root-user`) where the
# ConfigMap directory "$1" is at /etc/kimi-deploy: /etc is replaced by a directory of links to the real
# entries (bind-mounted aside first) plus kimi-deploy, so nothing on the host is touched.
IN_POD = r"""
set -euo pipefail
config=$1; shift
t=$(mktemp -d)
mkdir "$t/real" "$t/etc"
mount --bind /etc "$t/real"
for e in "$t"/real/* "$t"/real/.[!.]*; do
  if [ -e "$e" ] || [ -L "$e" ]; then ln -s "$e" "$t/etc/${e##*/}"; fi
done
rm -f "$t/etc/kimi-deploy"
ln -s "$config" "$t/etc/kimi-deploy"
mount --bind "$t/etc" /etc
exec "$@"
"""
POD_NAMESPACE = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]


def _pod_namespace_problem() -> str | None:
    """Why the pod tests cannot mount the ConfigMap here (None: they can)."""
    if not shutil.which("unshare"):
        return "unshare (util-linux) is not installed"
    proc = subprocess.run([*POD_NAMESPACE, "bash", "-c", IN_POD, "pod", "/tmp", "test", "-d", str(MOUNT)],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return f"cannot make a user + mount namespace (unshare -rm): {proc.stderr.strip()[-300:]}"
    return None


def test_there_are_trees() -> None:
    assert len(TREES) >= 10


def _templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "LeaderWorkerSet":
        return [obj["spec"]["leaderWorkerTemplate"][k] for k in ("leaderTemplate", "workerTemplate")]
    if obj["kind"] in ("Deployment", "Job"):
        return [obj["spec"]["template"]]
    return []


@pytest.mark.parametrize("tree", TREES, ids=lambda p: p.name)
def test_every_image_carries_kimi_deploy(tree: Path) -> None:
    objs = _objects(tree)
    spec = parse_spec(yaml.safe_load(objs["configmap-spec.yaml"]["data"]["spec.yaml"]))
    images = {c["image"] for obj in objs.values() for t in _templates(obj)
              for c in [*t["spec"].get("initContainers", []), *t["spec"]["containers"]]}
    assert images == {spec.k8s.image}
    assert not any(spec.k8s.image.startswith(stock) for stock in STOCK_IMAGES)


# A stand-in for kimi-deploy inside the Job scripts: records its argv (one JSON line per call), so the
# script runs for real under bash and every kimi-deploy call it makes is then parsed by the real CLI; it
# fails (exit 1) the subcommand KD_FAIL names.
RECORDER = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["KD_RECORD"], "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(1 if sys.argv[1:2] == [os.environ.get("KD_FAIL")] else 0)
"""


def _shell_containers(objs: dict[str, dict[str, Any]]) -> Iterator[tuple[str, list[str]]]:
    """(name, command) of every Job container and init container that runs a bash script."""
    for obj in objs.values():
        for t in _templates(obj):
            containers = t["spec"].get("initContainers", []) + (t["spec"]["containers"] if obj["kind"] == "Job" else [])
            for c in containers:
                if c["command"][:2] == ["bash", "-c"]:
                    yield c["name"], _command(c)


def recorded_script(command: list[str], tmp: Path, args: list[str],
                    env: dict[str, str] | None = None) -> tuple[int, list[list[str]]]:
    """Run a container's bash script (`command`, with `args` for its positional arguments) with the
    recorder as kimi-deploy and `env` added; (exit code, the kimi-deploy calls it made)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "kimi-deploy").write_text(RECORDER)
    (bin_dir / "kimi-deploy").chmod(0o755)
    record = tmp / "calls.jsonl"
    record.unlink(missing_ok=True)
    proc = subprocess.run(["bash", "-c", command[2], *args], capture_output=True, text=True, timeout=60, cwd=tmp,
                          env={"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "KD_RECORD": str(record), **(env or {})})
    calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return proc.returncode, calls


def run_job_script(command: list[str], tmp: Path, weights: Path | None = None) -> list[list[str]]:
    """Run a container's bash script with the recorder as kimi-deploy; the kimi-deploy calls it made.
    The weights directory argument, a path on the cluster's volume, is swapped for `weights`."""
    args = command[3:]
    if weights is not None:
        args = [str(weights) if a.startswith("/models") else a for a in args]
    code, calls = recorded_script(command, tmp, args)
    assert code == 0, command
    return calls


@pytest.mark.parametrize("tree", TREES, ids=lambda p: p.name)
def test_job_scripts_run_and_their_commands_parse_with_the_real_cli(tree: Path, tmp_path: Path) -> None:
    command = typer.main.get_command(app)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / ".kimi-deploy-verified.json").write_text("{}")  # the init container waits for it
    calls = []
    for name, cmd in _shell_containers(_objects(tree)):
        made = run_job_script(cmd, tmp_path, weights)
        assert made, name
        calls += made
    for args in calls:
        # click parses and type-checks every option without running the command
        sub = command.commands[args[0]]  # type: ignore[attr-defined]
        ctx = sub.make_context(args[0], args[1:])
        assert ctx.params, args
    assert {a[0] for a in calls} >= {"verify", "wait", "bench"}  # at least weights and the bench Job


@pytest.mark.parametrize("hostile", ["m'\"; touch pwned; $(touch pwned2) `touch pwned3`",
                                     "$(KIMI_API_KEY) $$(KIMI_API_KEY) $$ $"], ids=["shell", "kubelet"])
def test_spec_values_stay_data_in_job_scripts(tmp_path: Path, hostile: str) -> None:
    """A hostile served name reaches the bench call as one literal argument, through kubelet's $(NAME)
    expansion (the bench Job carries the API key's variable) and bash; nothing runs."""
    from kimi_deploy.deployment import resolve
    from kimi_deploy.k8s import manifests

    data = yaml.safe_load((ROOT / "deploy" / "kimi-k2-thinking-h200x8-vllm-tp8.yaml").read_text())
    data["serving"]["served_model_name"] = hostile
    objs = manifests(resolve(parse_spec(data)), "")
    cmd = _command(objs["bench/job-bench.yaml"]["spec"]["template"]["spec"]["containers"][0])
    calls = run_job_script(cmd, tmp_path)
    bench = next(c for c in calls if c[0] == "bench")
    assert bench[bench.index("--model") + 1] == hostile
    assert not any((tmp_path / f).exists() for f in ("pwned", "pwned2", "pwned3"))


@pytest.mark.parametrize("tree", TREES, ids=lambda p: p.name)
def test_every_engine_pod_starts_the_rendered_command(tree: Path, built_wheel: Path, tmp_path: Path) -> None:
    problem = _pod_namespace_problem()
    assert problem is None, f"the pod tests mount the ConfigMap at /etc/kimi-deploy in a namespace: {problem}"
    objs = _objects(tree)
    config = tmp_path / "configmap"
    config.mkdir()
    for name, text in objs["configmap-spec.yaml"]["data"].items():
        (config / name).write_text(text)
    dep = resolve(parse_spec(yaml.safe_load((config / "spec.yaml").read_text())))
    bin_dir = built_wheel / "bin"
    assert (bin_dir / "kimi-deploy").is_file()
    ranks: list[int] = []
    for label, pod, injected in _pods(objs):
        (container,) = pod["containers"]
        env = {"PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
               "PYTHONPATH": str(built_wheel), "HOME": str(tmp_path), **_container_env(container), **injected}
        # The pod's own command, in a mount namespace where the ConfigMap is at /etc/kimi-deploy.
        command = [*_command(container), "--dry-run", "--skip-preflight", "--no-check-args"]
        proc = subprocess.run([*POD_NAMESPACE, "bash", "-c", IN_POD, "pod", str(config), *command], env=env,
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, (label, proc.stdout[-2000:], proc.stderr[-2000:])
        assert SECRET not in proc.stdout + proc.stderr, label
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("command: ")]
        assert len(lines) == 1, (label, proc.stdout)
        argv = shlex.split(lines[0].strip().removeprefix("command: "))
        rank = int(proc.stdout.split("node ", 1)[1].split(" ", 1)[0])
        # What `render` gives for that rank, with the heads this pod knows.
        heads = {g.name: injected["LWS_LEADER_ADDRESS"] for g in dep.groups
                 if injected and g.name == env.get("KIMI_PD_GROUP", "serve")}
        heads.update({g.name: env[g.head_var] for g in dep.groups if g.head_var in env})
        expected = next(n for n in render(dep, heads) if n.rank == rank)
        assert argv == expected.argv, label
        assert _parsers_accept(tuple(expected.argv)) is None, (label, expected.argv)
        ranks.append(rank)
    assert sorted(ranks) == list(range(dep.total_ranks))  # every rank exactly once, router included
