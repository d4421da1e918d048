"""Kubernetes manifests rendered from the deploy/ examples: core objects against the Kubernetes OpenAPI
schemas of a pinned version (kubernetes-validate, strict), the LeaderWorkerSet against the real LWS
v0.10.0 CRD schema (made strict: unknown fields fail) plus the LWS webhook's own rules, probes and
Service selection per topology, secrets by reference only, the k8s/ tree in sync, and bad input; the
benchmark in bench/, out of the deployment's kustomization: N client pods as an Indexed Job whose scripts
run, at once, one sharded run against the sim, merged by pod 0."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kimi_deploy.k8s import lws_name_limit

from .conftest import DEPLOY, ROOT, assert_clean_error, run_cli, spec_with

sys.path.insert(0, str(ROOT / "scripts"))
from importlib import import_module  # noqa: E402

K8S_VERSION = "1.33.0"
EXAMPLES = import_module("render-k8s").k8s_examples()
CRD = ROOT / "schemas" / "leaderworkerset-v0.10.0-crd.yaml"


def _strict(schema: Any) -> Any:
    """The CRD schema with additionalProperties: false wherever it lists properties, so a misspelled
    field fails (the published schema lets unknown fields through)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and \
                not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


# libyaml's safe loader (PyYAML built with it, pyyaml.org/wiki/PyYAMLDocumentation): the CRD is 1.3 MB.
LWS_SCHEMA = _strict(yaml.load(CRD.read_text(), Loader=yaml.CSafeLoader)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _render(spec: Path, out: Path) -> dict[str, Any]:
    proc = run_cli("k8s", str(spec), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return _tree(out)


def _tree(out: Path) -> dict[str, Any]:
    """relative path -> object, the bench/ subdirectory included."""
    return {p.relative_to(out).as_posix(): yaml.load(p.read_text(), Loader=yaml.CSafeLoader) for p in sorted(out.rglob("*.yaml"))}


def validate_lws(obj: dict[str, Any]) -> None:
    jsonschema.validate(obj, LWS_SCHEMA)
    spec = obj["spec"]
    assert len(obj["metadata"]["name"]) <= lws_name_limit(spec.get("replicas", 1))
    assert spec["leaderWorkerTemplate"]["size"] >= 1


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.stem)
def test_manifests_validate(spec: Path, tmp_path: Path) -> None:
    objs = _render(spec, tmp_path)
    kinds = {o.get("kind") for o in objs.values()}
    for name, obj in objs.items():
        if obj["kind"] == "LeaderWorkerSet":
            validate_lws(obj)
        elif obj["kind"] == "PodMonitor":
            assert obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["spec"]["podMetricsEndpoints"]
        elif obj["kind"] == "Kustomization":  # each lists the other files of its own directory
            here = name.rpartition("/")[0]
            assert sorted(obj["resources"]) == sorted(n.rpartition("/")[2] for n in objs if n != name
                                                      and n.rpartition("/")[0] == here)
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    data = yaml.safe_load(spec.read_text())
    pd = (data.get("topology") or {}).get("pd")
    assert ("LeaderWorkerSet" in kinds) == (data["hardware"]["nodes"] > 1)
    assert ("Deployment" in kinds) == (data["hardware"]["nodes"] == 1 or bool(pd))  # P/D: the router


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.stem)
def test_kubectl_kustomize_builds_the_tree(spec: Path) -> None:
    import subprocess

    kubectl = Path(sys.executable).parent / "kubectl"
    proc = subprocess.run([str(kubectl), "kustomize", str(ROOT / "k8s" / spec.stem)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert len(docs) == len(list((ROOT / "k8s" / spec.stem).glob("*.yaml"))) - 1  # every object but the kustomization


def test_a_misspelled_field_fails_the_lws_schema(tmp_path: Path) -> None:
    objs = _render(DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml", tmp_path)
    bad = copy.deepcopy(objs["leaderworkerset.yaml"])
    bad["spec"]["leaderWorkerTemplate"]["sise"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, LWS_SCHEMA)
    bad = copy.deepcopy(objs["leaderworkerset.yaml"])
    bad["spec"]["startupPolicy"] = "Whenever"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, LWS_SCHEMA)


def test_k8s_tree_is_in_sync(tmp_path: Path) -> None:
    for spec in EXAMPLES:
        fresh = tmp_path / spec.stem
        _render(spec, fresh)
        committed = ROOT / "k8s" / spec.stem
        assert sorted(_tree(fresh)) == sorted(_tree(committed)), spec
        for name in _tree(fresh):
            assert (fresh / name).read_text() == (committed / name).read_text(), \
                f"k8s/{spec.stem}/{name} drifted: run .venv/bin/python scripts/render-k8s.py"


def _containers(template: dict[str, Any]) -> dict[str, Any]:
    return template["spec"]["containers"][0]


def test_topology_specific_choices(tmp_path: Path) -> None:
    tp16 = _render(DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml", tmp_path / "a")
    lws = tp16["leaderworkerset.yaml"]["spec"]
    assert lws["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader = _containers(lws["leaderWorkerTemplate"]["leaderTemplate"])
    worker = _containers(lws["leaderWorkerTemplate"]["workerTemplate"])
    assert "startupProbe" in leader and "readinessProbe" in leader
    assert not {"startupProbe", "readinessProbe", "livenessProbe", "ports"} & set(worker)  # vLLM headless: no HTTP
    assert tp16["service.yaml"]["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"
    # startup budget (startup.py): the ~1.03 TB FP8 checkpoint every node reads at the published default
    # loader rate (~130 MB/s), plus 10 min: about 2 h 22 min
    budget = leader["startupProbe"]["failureThreshold"] * leader["startupProbe"]["periodSeconds"]
    assert 8000 <= budget <= 9000
    assert leader["resources"]["limits"] == {"nvidia.com/gpu": "8", "rdma/ib": "1"}
    assert leader["securityContext"] == {"allowPrivilegeEscalation": False, "privileged": False,
                                         "capabilities": {"drop": ["ALL"], "add": ["IPC_LOCK"]}}
    volumes = {v["name"]: v for v in lws["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    init = lws["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["initContainers"][0]
    assert ".kimi-deploy-verified.json" in init["command"] and "verify --check-marker" in init["command"][2]
    assert tp16["pvc-weights.yaml"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "kimi-deploy verify" in tp16["job-download.yaml"]["spec"]["template"]["spec"]["containers"][0]["command"][2]
    hybrid = _render(DEPLOY / "kimi-k2-instruct-h200x16-vllm-dpep-hybrid.yaml", tmp_path / "b")
    assert "leaderworkerset.sigs.k8s.io/worker-index" not in hybrid["service.yaml"]["spec"]["selector"]
    sgl = _render(DEPLOY / "kimi-k2-instruct-h200x16-sglang-tp16.yaml", tmp_path / "c")
    sworker = _containers(sgl["leaderworkerset.yaml"]["spec"]["leaderWorkerTemplate"]["workerTemplate"])
    assert "livenessProbe" in sworker and "readinessProbe" not in sworker  # dummy /health on rank >= 1
    single = _render(DEPLOY / "kimi-k2-thinking-h200x8-vllm-tp8.yaml", tmp_path / "d")
    assert single["deployment.yaml"]["spec"]["strategy"]["type"] == "Recreate"
    assert "kimi-deploy bench" in single["bench/job-bench.yaml"]["spec"]["template"]["spec"]["containers"][0]["command"][2]


def test_prefill_decode(tmp_path: Path) -> None:
    objs = _render(DEPLOY / "kimi-k2-instruct-h200x32-sglang-pd.yaml", tmp_path)
    for group in ("prefill", "decode"):
        lws = objs[f"leaderworkerset-{group}.yaml"]["spec"]["leaderWorkerTemplate"]
        env = {e["name"]: e.get("value") for e in _containers(lws["leaderTemplate"])["env"]}
        assert env["KIMI_PD_GROUP"] == group and lws["size"] == 2
        assert objs[f"service-{group}.yaml"]["spec"]["selector"]["kimi-deploy/group"] == group
    router = objs["deployment-router.yaml"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in router["env"]}
    assert env["KIMI_PD_GROUP"] == "router" and env["KIMI_PREFILL_HEAD_ADDR"] == "kimi-k2-sglang-pd-prefill.kimi.svc"
    assert "nvidia.com/gpu" not in router["resources"]["limits"]
    assert objs["service.yaml"]["spec"]["ports"][0]["port"] == 8000  # the router's port
    # and the router pod's serve resolves its role from that environment
    from kimi_deploy.deployment import resolve
    from kimi_deploy.launch import node_command, resolve_node
    from kimi_deploy.spec import load_spec

    spec = resolve(load_spec(DEPLOY / "kimi-k2-instruct-h200x32-sglang-pd.yaml"))
    node = node_command(spec, resolve_node(spec, None, None, env))
    assert node.role == "router" and "http://kimi-k2-sglang-pd-prefill.kimi.svc:30001" in node.argv


def test_secrets_by_reference_only(tmp_path: Path) -> None:
    """Every container that needs the API key or HF token gets it from a Secret, never as a value."""
    objs = _render(DEPLOY / "kimi-k2-instruct-h200x16-vllm-dpep.yaml", tmp_path)
    refs = 0
    for obj in objs.values():
        for e in _all_env(obj):
            if e["name"] in ("KIMI_API_KEY", "HF_TOKEN"):
                assert "value" not in e and e["valueFrom"]["secretKeyRef"]["key"] == e["name"], e
                refs += 1
    env = _containers(objs["leaderworkerset.yaml"]["spec"]["leaderWorkerTemplate"]["leaderTemplate"])["env"]
    key = next(e for e in env if e["name"] == "KIMI_API_KEY")
    assert key == {"name": "KIMI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "kimi-api-key", "key": "KIMI_API_KEY"}}}
    assert refs >= 4  # leader, worker, download Job (HF_TOKEN), bench Job


def _all_env(obj: Any) -> list[dict[str, Any]]:
    """Every env entry anywhere in an object."""
    if isinstance(obj, dict):
        found = list(obj["env"]) if isinstance(obj.get("env"), list) else []
        return found + [e for k, v in obj.items() if k != "env" for e in _all_env(v)]
    if isinstance(obj, list):
        return [e for v in obj for e in _all_env(v)]
    return []


@pytest.mark.parametrize("k8s, needles", [
    ({"storage_class": None}, ["k8s.storage_class", "ReadWriteMany"]),
    ({"rdma": {"count": 1}}, ["k8s.rdma.resource"]),
    ({"gpus_per_pod": 4}, ["k8s.gpus_per_pod", "differs"]),
    ({"api_key_secret": None}, ["k8s.api_key_secret"]),
])
def test_bad_input(tmp_path: Path, k8s: dict, needles: list[str]) -> None:
    data = yaml.safe_load((DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml").read_text())
    data["k8s"].update(k8s)
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    assert_clean_error(run_cli("k8s", str(p), "-o", str(tmp_path / "out")), *needles)
    assert not (tmp_path / "out").exists()  # nothing half-written


def _pod_specs(obj: Any) -> list[dict[str, Any]]:
    """Every pod spec anywhere in an object (Deployment, Job, LWS leader and worker templates)."""
    if isinstance(obj, dict):
        found = [obj] if "containers" in obj else []
        return found + [p for v in obj.values() for p in _pod_specs(v)]
    if isinstance(obj, list):
        return [p for v in obj for p in _pod_specs(v)]
    return []


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.stem)
def test_every_pod_is_locked_down(spec: Path) -> None:
    """Every pod of the committed trees is locked down: no privilege escalation, every capability dropped
    (IPC_LOCK added back only on GPU engine containers), RuntimeDefault seccomp, no service-account token."""
    pods = [p for f in (ROOT / "k8s" / spec.stem).rglob("*.yaml") for p in _pod_specs(yaml.safe_load(f.read_text()))]
    assert pods
    for pod in pods:
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            gpu_engine = c["name"] == "engine" and any(r in c["resources"]["limits"] for r in ("nvidia.com/gpu", "amd.com/gpu"))
            assert sc["capabilities"].get("add", []) == (["IPC_LOCK"] if gpu_engine else []), c["name"]
    bench = yaml.safe_load((ROOT / "k8s" / spec.stem / "bench" / "job-bench.yaml").read_text())
    assert 0 < bench["spec"]["activeDeadlineSeconds"] <= 6 * 3600


@pytest.mark.parametrize("weights_dir", ["/", "/etc", "/usr/", "/var", "/proc/1", "/home", "/data/../etc", "//root"])
def test_hostpath_weights_refuse_system_directories(tmp_path: Path, weights_dir: str) -> None:
    data = yaml.safe_load((DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml").read_text())
    data["k8s"]["weights_mode"] = "hostpath"
    data["weights"]["dir"] = weights_dir
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    assert_clean_error(run_cli("k8s", str(p), "-o", str(tmp_path / "out")), "weights.dir", "mounted read-write")
    assert not (tmp_path / "out").exists()
    data["weights"]["dir"] = "/data/models/kimi-k2"  # a directory of its own is fine
    p.write_text(yaml.safe_dump(data))
    objs = _render(p, tmp_path / "ok")
    vols = [v for pod in _pod_specs(objs["leaderworkerset.yaml"]) for v in pod["volumes"] if "hostPath" in v]
    assert vols and all(v["hostPath"]["path"] == "/data/models/kimi-k2" for v in vols)


@pytest.mark.parametrize("weights_dir, tree", [
    ("/var/lib/kubelet", "/var/lib/kubelet"), ("/var/lib/kubelet/pods/x/volumes", "/var/lib/kubelet"),
    ("/etc/kubernetes/pki/", "/etc"), ("/etc/ssl", "/etc"), ("/root/.ssh", "/root"),
    ("/root/.ssh/models", "/root"), ("/root/models", "/root"), ("/opt/cni/bin", "/opt/cni"),
    ("/var/spool/cron/crontabs", "/var/spool"), ("/var/log/kimi", "/var/log"), ("/var/lib/cni/net", "/var/lib/cni"),
    ("/var/lib/containers/storage", "/var/lib/containers"), ("/var/lib/rancher/k3s", "/var/lib/rancher"), ("/proc/self/root", "/proc"), ("/sys/fs/cgroup", "/sys"),
    ("/dev/shm/kimi", "/dev"), ("/boot/efi", "/boot"), ("/var/run", "/var/run"), ("/var/run/docker.sock", "/var/run"),
    ("/run/containerd", "/run"), ("//var//lib/./kubelet/", "/var/lib/kubelet"), ("/usr/local/bin", "/usr"),
])
def test_hostpath_weights_refuse_everything_under_system_trees(tmp_path: Path, weights_dir: str, tree: str) -> None:
    """Not just the system directories themselves: any path under them (after dropping '.', doubled and
    trailing slashes) would let the pods write into the host's configuration, credentials or the kubelet's
    state through the read-write hostPath mount."""
    p = spec_with(tmp_path, k8s={"weights_mode": "hostpath"}, weights={"dir": weights_dir})
    proc = run_cli("k8s", str(p), "-o", str(tmp_path / "out"))
    assert_clean_error(proc, "weights.dir", repr(weights_dir), f"is in {tree} ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("weights_dir, needle", [("/data/../var/lib/kubelet", "'..' part"),
                                                 ("/models/../../etc/", "'..' part"),
                                                 ("/home/ml/.ssh/kimi", ".ssh directory"),
                                                 ("/home/ml/.kube", ".kube directory"),
                                                 ("/data/ml/.aws/models", ".aws directory"), ("/", "root")])
def test_hostpath_weights_refuse_dotdot_ssh_and_root(tmp_path: Path, weights_dir: str, needle: str) -> None:
    p = spec_with(tmp_path, k8s={"weights_mode": "hostpath"}, weights={"dir": weights_dir})
    assert_clean_error(run_cli("k8s", str(p), "-o", str(tmp_path / "out")), "weights.dir", needle)


@pytest.mark.parametrize("weights_dir", ["/var/lib/kubelet-cache/kimi", "/etcetera/kimi", "/mnt/nvme0/models/",
                                         "/rootfs/models", "/runs/kimi", "/opt/cnix/models", "/var/logs-old/kimi"])
def test_hostpath_weights_beside_system_trees_render(tmp_path: Path, weights_dir: str) -> None:
    """A name that only begins like a system tree is not inside it."""
    objs = _render(spec_with(tmp_path, k8s={"weights_mode": "hostpath"}, weights={"dir": weights_dir}),
                   tmp_path / "ok")
    vols = [v for pod in _pod_specs(objs["leaderworkerset.yaml"]) for v in pod["volumes"] if "hostPath" in v]
    assert vols and all(v["hostPath"]["path"] == weights_dir for v in vols)


def test_output_path_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("mine")
    for out in (f, f / "sub"):
        assert_clean_error(run_cli("k8s", str(DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml"), "-o", str(out)),
                           str(f))
    assert f.read_text() == "mine"


def test_name_too_long_for_lws(tmp_path: Path) -> None:
    data = yaml.safe_load((DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml").read_text())
    data["name"] = "k" * 55
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    assert_clean_error(run_cli("k8s", str(p), "-o", str(tmp_path / "out")), "name", "at most 51")


def test_spec_data_is_never_a_kubelet_variable_reference(tmp_path: Path) -> None:
    """kubelet expands $(NAME) in a container's command, args and env values: spec data that reads like a
    reference (here the API key's variable, whose Secret every engine and bench pod carries) must reach
    the pod as written, escaped as $$(NAME)."""
    data = yaml.safe_load((DEPLOY / "kimi-k2-instruct-h200x16-vllm-dpep.yaml").read_text())
    data["serving"]["served_model_name"] = "$(KIMI_API_KEY)"
    data.setdefault("network", {})["socket_ifname"] = "$(KIMI_API_KEY)"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    objs = _render(spec, tmp_path / "out")

    def strings(obj: Any) -> list[str]:
        if isinstance(obj, dict):
            return [s for k, v in obj.items() if k not in ("data",) for s in strings(v)]
        if isinstance(obj, list):
            return [s for v in obj for s in strings(v)]
        return [obj] if isinstance(obj, str) else []

    found = [s for o in objs.values() for s in strings(o) if "KIMI_API_KEY)" in s]
    assert found and all("$$(KIMI_API_KEY)" in s for s in found), found
    bench = objs["bench/job-bench.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert "$$(KIMI_API_KEY)" in bench["command"]


# --- the benchmark: its own kustomization in bench/, N client pods as an Indexed Job -------------------

SINGLE = DEPLOY / "kimi-k2-thinking-h200x8-vllm-tp8.yaml"


def _bench_spec(tmp_path: Path, clients: int, **k8s: Any) -> Path:
    """The single-node example with k8s.bench_clients and other k8s keys changed."""
    data = yaml.safe_load(SINGLE.read_text())
    data["k8s"].update({"bench_clients": clients, "storage_class": "shared-rwx", **k8s})
    p = tmp_path / f"bench-{clients}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    import subprocess

    kubectl = Path(sys.executable).parent / "kubectl"
    proc = subprocess.run([str(kubectl), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _runs_bench(obj: dict[str, Any]) -> bool:
    return any("kimi-deploy bench" in " ".join(c.get("command", [])) for pod in _pod_specs(obj) for c in pod["containers"])


def test_sharded_bench_is_an_indexed_job_that_validates(tmp_path: Path) -> None:
    objs = _render(_bench_spec(tmp_path, 4), tmp_path / "out")
    job, pvc = objs["bench/job-bench.yaml"], objs["bench/pvc-bench-results.yaml"]
    for obj in (job, pvc):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == ("Indexed", 4, 4, 0)
    assert 0 < spec["activeDeadlineSeconds"] <= 6 * 3600
    (container,) = spec["template"]["spec"]["containers"]
    run = next(e for e in container["env"] if e["name"] == "KIMI_BENCH_RUN")
    assert run["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/controller-uid']"
    # pods on several nodes share the results: ReadWriteMany, on the spec's class
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["storageClassName"] == "shared-rwx"
    one = _render(_bench_spec(tmp_path, 1), tmp_path / "one")
    assert "completionMode" not in one["bench/job-bench.yaml"]["spec"]
    assert one["bench/pvc-bench-results.yaml"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "--shard" not in one["bench/job-bench.yaml"]["spec"]["template"]["spec"]["containers"][0]["command"][2]


def _run_client_pod(container: dict[str, Any], tmp: Path, env: dict[str, str], fail: str = "") -> tuple[int, list[list[str]]]:
    """One client pod's script, as the container receives it, under bash with the recorder as kimi-deploy
    and the results volume at tmp/results; (exit code, the kimi-deploy calls it made)."""
    from .test_pods import _command, recorded_script

    cmd = _command(container)
    args = [str(tmp / "results") if a == "/results" else a for a in cmd[3:]]
    return recorded_script(cmd, tmp, args, {"KD_FAIL": fail, **env})


def _opt(call: list[str], flag: str) -> str:
    return call[call.index(flag) + 1]


def test_every_client_pod_runs_its_shard_and_pod_0_merges_them_all(tmp_path: Path) -> None:
    clients, users = 4, 12
    objs = _render(_bench_spec(tmp_path, clients, bench_concurrency=users), tmp_path / "out")
    (container,) = objs["bench/job-bench.yaml"]["spec"]["template"]["spec"]["containers"]
    uid = "0b7c4e2a-5d1f-4f6e-9a53-2c8d1e7f6a90"
    run = tmp_path / "results" / uid
    shards = []
    for index in range(clients):
        code, calls = _run_client_pod(container, tmp_path, {"JOB_COMPLETION_INDEX": str(index), "KIMI_BENCH_RUN": uid})
        assert code == 0, calls
        assert [c[0] for c in calls] == ["wait", "bench"] + (["bench"] if index == 0 else [])
        bench = calls[1]
        # the run's totals, the same in every pod; the pod's own slice from its completion index
        assert (_opt(bench, "--concurrency"), _opt(bench, "--num-requests")) == (str(users), str(users * 8))
        assert _opt(bench, "--shard") == f"{index}/{clients}"
        assert _opt(bench, "--output") == str(run / f"shard-{index}")
        assert _opt(bench, "--barrier") == str(run / "barrier") and (run / "barrier").is_dir()
        assert _opt(bench, "--api-key-env") == "KIMI_API_KEY"
        shards.append(_opt(bench, "--output"))
        if index == 0:
            merge = calls[2]
            assert merge[:3] == ["bench", "merge", str(run / "merged")]
            assert merge[3:merge.index("--wait")] == shards[:1] + [str(run / f"shard-{i}") for i in range(1, clients)]
            assert float(_opt(merge, "--wait")) > 0
    assert len(set(shards)) == clients
    # a failed shard on pod 0: nothing is merged, and the pod fails (so the Job fails)
    code, calls = _run_client_pod(container, tmp_path, {"JOB_COMPLETION_INDEX": "0", "KIMI_BENCH_RUN": uid}, fail="bench")
    assert code != 0 and [c[0] for c in calls] == ["wait", "bench"]
    # outside an Indexed Job (no index) or without the Job's uid the pod fails before any call
    for env in ({"KIMI_BENCH_RUN": uid}, {"JOB_COMPLETION_INDEX": "1"}):
        code, calls = _run_client_pod(container, tmp_path, env)
        assert code != 0 and calls == [], env


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.stem)
def test_the_deployment_kustomization_starts_no_benchmark(spec: Path) -> None:
    """`kubectl apply -k OUT` of a committed tree creates no bench Job; `kubectl apply -k OUT/bench` creates
    the bench Job and its results PVC, and nothing else."""
    tree = ROOT / "k8s" / spec.stem
    deployment = _kustomize(tree)
    assert deployment and not any(_runs_bench(o) for o in deployment)
    assert not any(o["metadata"]["name"].endswith("-bench-results") for o in deployment)
    bench = _kustomize(tree / "bench")
    assert sorted(o["kind"] for o in bench) == ["Job", "PersistentVolumeClaim"]
    assert all(_runs_bench(o) for o in bench if o["kind"] == "Job")


def test_sharded_bench_kustomization_builds(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _render(_bench_spec(tmp_path, 8, bench_concurrency=64), out)
    assert not any(_runs_bench(o) for o in _kustomize(out))
    (job,) = [o for o in _kustomize(out / "bench") if o["kind"] == "Job"]
    assert job["spec"]["completions"] == 8 and _runs_bench(job)


@pytest.mark.parametrize("k8s, needles", [
    ({"bench_clients": 0}, ["k8s.bench_clients"]),
    ({"bench_clients": 65}, ["k8s.bench_clients"]),
    ({"bench_clients": 20}, ["k8s.bench_clients", "at least one user", "16"]),  # bench_concurrency 16
    ({"bench_clients": 4, "storage_class": None}, ["k8s.storage_class", "ReadWriteMany"]),
])
def test_bench_clients_bad_input(tmp_path: Path, k8s: dict, needles: list[str]) -> None:
    data = yaml.safe_load(SINGLE.read_text())
    data["k8s"].update({"storage_class": "shared-rwx", **k8s})
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    assert_clean_error(run_cli("k8s", str(p), "-o", str(tmp_path / "out")), *needles)
    assert not (tmp_path / "out").exists()


def test_bench_subdirectory_is_owned_like_the_rest(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SINGLE.read_text())
    ours = "# rendered by kimi-deploy k8s from spec.yaml; do not edit by hand\n"
    # a bench/ that is a symlink (writing through it lands elsewhere) or a file is refused, untouched
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "a"
    out.mkdir()
    (out / "bench").symlink_to(elsewhere)
    assert_clean_error(run_cli("k8s", str(spec), "-o", str(out)), "bench", "symlink")
    assert list(elsewhere.iterdir()) == [] and not (out / "kustomization.yaml").exists()
    (out / "bench").unlink()
    (out / "bench").write_text("mine\n")
    assert_clean_error(run_cli("k8s", str(spec), "-o", str(out)), "bench", "not a directory")
    assert (out / "bench").read_text() == "mine\n"
    # a file of the user's where the bench Job goes is refused; the user's other files in bench/ stay
    out = tmp_path / "b"
    (out / "bench").mkdir(parents=True)
    (out / "bench" / "job-bench.yaml").write_text("mine\n")
    assert_clean_error(run_cli("k8s", str(spec), "-o", str(out)), "bench/job-bench.yaml", "not written by")
    assert (out / "bench" / "job-bench.yaml").read_text() == "mine\n"
    (out / "bench" / "job-bench.yaml").unlink()
    (out / "bench" / "notes.yaml").write_text("mine\n")
    # the bench files an older layout wrote at the top, and ours in bench/ no longer rendered, go
    (out / "job-bench.yaml").write_text(ours)
    (out / "bench" / "job-bench-merge.yaml").write_text(ours)
    (out / "bench" / "other.yaml").write_text(ours.replace("spec.yaml", "other.yaml"))
    assert run_cli("k8s", str(spec), "-o", str(out)).returncode == 0
    assert not (out / "job-bench.yaml").exists() and not (out / "bench" / "job-bench-merge.yaml").exists()
    assert (out / "bench" / "notes.yaml").read_text() == "mine\n" and (out / "bench" / "other.yaml").read_text() == \
        ours.replace("spec.yaml", "other.yaml")
    assert sorted(_tree(out / "bench")) == ["job-bench.yaml", "kustomization.yaml", "notes.yaml", "other.yaml",
                                            "pvc-bench-results.yaml"]


def test_client_pods_run_one_benchmark_against_the_sim(sim_factory, tmp_path: Path) -> None:
    """The N client pods' scripts, run at once with the real kimi-deploy against the sim (the Service URL
    and the results volume swapped for the sim's URL and a directory here), make one run: every shard
    sends its slice, pod 0 merges them into /results/<uid>/merged with the run's totals."""
    import json
    import os
    import subprocess

    from .test_pods import _command

    spec = _bench_spec(tmp_path, 3, bench_concurrency=3)
    served = yaml.safe_load(spec.read_text())["serving"]["served_model_name"]
    url = sim_factory("--model", served, "--ttft-ms", "5", "--itl-ms", "1", "--output-len", "16")
    objs = _render(spec, tmp_path / "out")
    (container,) = objs["bench/job-bench.yaml"]["spec"]["template"]["spec"]["containers"]
    cmd = _command(container)
    results, uid = tmp_path / "results", "5f0e9a3c-1b2d-4c8e-a7f6-3d9b0c2e4a18"
    args = [str(results) if a == "/results" else url if a.startswith("http://") else a for a in cmd[3:]]
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path),
           "KIMI_API_KEY": "sk-stand-in", "KIMI_BENCH_RUN": uid}
    pods = [subprocess.Popen(["bash", "-c", cmd[2], *args], env={**env, "JOB_COMPLETION_INDEX": str(i)}, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    for i, pod in enumerate(pods):
        out, err = pod.communicate(timeout=300)
        assert pod.returncode == 0, (i, out[-2000:], err[-2000:])
    run = results / uid
    for i in range(3):
        assert json.loads((run / f"shard-{i}" / "summary.json").read_text())["config"]["shard"] == [i, 3]
    merged = json.loads((run / "merged" / "summary.json").read_text())
    assert merged["config"]["shards"] == 3 and merged["requests"]["completed"] == 3 * 8
    assert (merged["config"]["concurrency"], merged["config"]["num_requests"], merged["config"]["model"]) == (3, 24, served)
    assert (run / "merged" / "report.html").is_file()


def _kinds_and_names(out: Path) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in _kustomize(out))


def test_a_second_deployment_never_takes_over_a_directory(tmp_path: Path) -> None:
    """Ownership is the deployment's name recorded in each file's header, not the spec file's name: a
    different deployment whose spec is also called spec.yaml is refused (exit 2 naming both) and leaves
    the first one's LeaderWorkerSet and Service in place; --overwrite replaces them."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = spec_with(tmp_path / "a", name="spec.yaml")
    second = spec_with(tmp_path / "b", SINGLE, name="spec.yaml")
    data = yaml.safe_load(second.read_text())
    data["name"] = "other-deploy"
    second.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    _render(first, out)
    before = {p: p.read_text() for p in out.rglob("*.yaml")}
    assert ("LeaderWorkerSet", "kimi-k2-tp16") in _kinds_and_names(out)
    assert_clean_error(run_cli("k8s", str(second), "-o", str(out)), str(out), "'kimi-k2-tp16'", "'other-deploy'",
                       "--overwrite")
    assert {p: p.read_text() for p in out.rglob("*.yaml")} == before
    # The same deployment from a spec file of another name is the same owner: rendered in place.
    renamed = tmp_path / "a" / "renamed.yaml"
    renamed.write_text(first.read_text())
    assert run_cli("k8s", str(renamed), "-o", str(out)).returncode == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.yaml")) == \
        sorted(p.relative_to(out).as_posix() for p in before)
    # --overwrite: the other deployment's manifests replace these, none of kimi-k2-tp16's is left behind
    (out / "notes.yaml").write_text("mine\n")
    assert run_cli("k8s", str(second), "-o", str(out), "--overwrite").returncode == 0
    names = _kinds_and_names(out)
    assert ("Deployment", "other-deploy") in names and not any(n.startswith("kimi-k2-tp16") for _, n in names)
    assert not (out / "leaderworkerset.yaml").exists() and (out / "notes.yaml").read_text() == "mine\n"
    assert all("; deployment other-deploy;" in p.read_text().splitlines()[0]
               for p in out.rglob("*.yaml") if p.name != "notes.yaml")


def test_manifests_with_a_header_that_names_no_deployment_are_owned_by_their_labels(tmp_path: Path) -> None:
    """A header that ends at the spec file's name (without `; deployment NAME`): the objects' instance
    label tells whose they are, so the same spec file name alone does not hand them to another deployment."""
    spec = spec_with(tmp_path)
    out = tmp_path / "out"
    _render(spec, out)
    for p in out.rglob("*.yaml"):
        first, rest = p.read_text().split("\n", 1)
        p.write_text(first.replace("; deployment kimi-k2-tp16", "") + "\n" + rest)
    data = yaml.safe_load(spec.read_text())
    data["name"] = "other-deploy"
    other = tmp_path / "elsewhere" / "spec.yaml"
    other.parent.mkdir()
    other.write_text(yaml.safe_dump(data))
    assert_clean_error(run_cli("k8s", str(other), "-o", str(out)), "'kimi-k2-tp16'", "'other-deploy'")
    assert (out / "leaderworkerset.yaml").is_file()
    # the deployment they name re-renders over them, headers and all
    assert run_cli("k8s", str(spec), "-o", str(out)).returncode == 0
    assert "; deployment kimi-k2-tp16;" in (out / "kustomization.yaml").read_text().splitlines()[0]


@pytest.mark.parametrize("brk", ["\n", "\r", "\x85", "\u2028", "\u2029", "\x0b"])
def test_spec_file_name_with_a_line_break_is_refused(tmp_path: Path, brk: str) -> None:
    """The spec file's name goes into every manifest's first (comment) line: any line break YAML knows
    (U+2028 too, which is no control character) would start a YAML line of its own."""
    spec = tmp_path / f"spec{brk}namespace: kube-system #.yaml"
    spec.write_text(SINGLE.read_text())
    assert_clean_error(run_cli("k8s", str(spec), "-o", str(tmp_path / "out")), "SPEC", "line break")
    assert not (tmp_path / "out").exists()


def _small_files() -> None:
    """preexec_fn: files of this process may grow to 1 KiB (RLIMIT_FSIZE, soft and hard), and SIGXFSZ is
    ignored, so a write past it fails with EFBIG as on a full disk instead of killing the process."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones too) by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_failed_write_leaves_every_previous_manifest_and_no_temporary(tmp_path: Path) -> None:
    """Writes that fail part-way (the file size limit: some manifests fit under it, the larger ones do not)
    are exit 2 naming the directory and the file, without a traceback; every manifest of the previous
    render, of another namespace, so every file would differ, is byte-identical and no temporary is left.
    A temporary left by a killed run (a file, or a symlink pointing elsewhere) is cleared by the next run,
    which renders the new manifests."""
    import subprocess

    from kimi_deploy.k8s import TMP_SUFFIX

    spec = tmp_path / "spec.yaml"
    spec.write_text(SINGLE.read_text())
    out = tmp_path / "out"
    _render(spec, out)
    before = _files(out)
    assert any(len(b) < 1024 for b in before.values()) and any(len(b) > 1024 for b in before.values())
    data = yaml.safe_load(spec.read_text())
    data["k8s"]["namespace"] = "kimi-other"
    spec.write_text(yaml.safe_dump(data))
    proc = subprocess.run([sys.executable, "-m", "kimi_deploy", "k8s", str(spec), "-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, preexec_fn=_small_files)
    assert_clean_error(proc, str(out), "cannot write", "File too large", "unchanged")
    assert _files(out) == before
    # a killed run's temporaries: a file, and a symlink (never written through)
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("mine\n")
    (out / f".deployment.yaml{TMP_SUFFIX}").write_text("apiVersion: v1\n")
    (out / "bench" / f".job-bench.yaml{TMP_SUFFIX}").symlink_to(elsewhere)
    (out / f".gone.yaml{TMP_SUFFIX}").write_bytes(b"")
    _render(spec, out)
    after = _files(out)
    assert sorted(after) == sorted(before) and elsewhere.read_text() == "mine\n"
    assert all(after[f] != before[f] and b"namespace: kimi-other" in after[f] for f in after
               if f.endswith(".yaml") and "kustomization" not in f), sorted(after)
