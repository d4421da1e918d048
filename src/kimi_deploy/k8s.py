"""Kubernetes manifests from a deployment spec: a Deployment (one node) or a LeaderWorkerSet (several),
weights staged on a ReadWriteMany PVC by a download+verify Job (or a node-local hostPath cache), an init
container that waits for the verify marker, probes sized from the plan, a Service selecting exactly the
pods that serve HTTP, a PodDisruptionBudget, a PodMonitor and a benchmark Job. The engine command is not
written into the manifests: every pod runs the launcher entrypoint, which calls `kimi-deploy serve` on
the same spec (shipped in a ConfigMap), so Kubernetes runs exactly what `render` shows. The benchmark
(its results PVC and Job, N client pods with k8s.bench_clients > 1) is a kustomization of its own in
bench/, so applying the deployment never starts one. Stock engine
images do not contain kimi-deploy: `k8s.image` names the image built by docker/Dockerfile (the engine
image plus kimi-deploy), and stock images are refused."""

from __future__ import annotations

import math
import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .deployment import Deployment, Group, resolve
from .engines.profiles import PROFILES
from .engines.render import RenderedNode, render
from .errors import BadInput
from .spec import load_spec, read_spec_text
from .startup import startup_budget
from .weights import VERIFY_MARKER

SPEC_PATH = "/etc/kimi-deploy/spec.yaml"
ENTRYPOINT = "/etc/kimi-deploy/entrypoint.sh"
PROBE_PERIOD_S = 10
# The first line of every file `k8s` writes: files without it are the user's and are never touched.
HEADER = "# rendered by kimi-deploy k8s"
# Official engine images: they do not contain kimi-deploy, so a pod on them cannot run its entrypoint.
STOCK_IMAGES = tuple(image for p in PROFILES.values() for image in p.stock_images)
# hostPath weights may not be the host's root or a system directory: the pods mount it read-write.
SYSTEM_DIRS = ("/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/var", "/proc",
               "/sys", "/dev", "/boot", "/root", "/home", "/run", "/opt", "/srv", "/tmp")
# ... nor anything inside these trees: the host's configuration and credentials (/etc, /etc/kubernetes,
# /root/.ssh), the kubelet's and container runtimes' state (pods' volumes and secrets, images), kernel
# and device interfaces, boot files, runtime sockets (/run, /var/run), and programs and libraries a
# read-write mount could replace. https://kubernetes.io/docs/concepts/storage/volumes/#hostpath
# Also the CNI plugins and state (a writable plugin directory is root on the node), other runtimes' and
# distributions' state (CRI-O/podman storage, k3s/RKE2), cron spools, logs, and root's home.
SENSITIVE_TREES = ("/etc", "/proc", "/sys", "/dev", "/boot", "/run", "/var/run", "/var/lib/kubelet",
                   "/var/lib/containerd", "/var/lib/docker", "/var/lib/etcd", "/var/lib/cni", "/var/lib/containers",
                   "/var/lib/rancher", "/var/spool", "/var/log", "/opt/cni", "/root", "/usr", "/bin", "/sbin",
                   "/lib", "/lib32", "/lib64", "/libx32")
# Directories inside a home that hold credentials or configuration a read-write mount would expose.
CREDENTIAL_DIRS = (".ssh", ".kube", ".docker", ".aws", ".gnupg", ".config")


def hostpath_problem(path: str) -> str | None:
    """Why `path` cannot be the read-write hostPath weights cache, or None. It is compared after
    dropping empty and '.' parts (trailing and doubled slashes); a '..' part is refused outright, as
    the kubelet mounts the path as written and what it resolves to on the node is not known here."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "has a '..' part (not a plain path)"
    normal = "/" + "/".join(parts)
    if normal in SYSTEM_DIRS:
        return "is the host's root or a system directory" if normal != "/" else "is the host's root directory"
    tree = next((t for t in SENSITIVE_TREES if normal == t or normal.startswith(t + "/")), None)
    if tree is not None:
        return f"is in {tree} (a system directory of the host, refused with everything under it)"
    cred = next((p for p in parts if p in CREDENTIAL_DIRS), None)
    if cred is not None:
        return f"is inside a {cred} directory (credentials or configuration)"
    return None
# The bench Job's own bound beyond the wait for the endpoint: `bench` runs
# bench_concurrency * 8 requests, minutes at most; an endpoint that stalls must not hold the Job forever.
BENCH_WAIT_S, BENCH_RUN_S = 14400, 3600
# The client pods' kustomization, a subdirectory of the output: `kubectl apply -k OUT/bench`.
BENCH_DIR = "bench"
# How long the client pods of a sharded bench wait at the barrier for one another. They are created
# together and pass the endpoint wait together; what spreads them is each pulling k.image (the engine
# image, tens of GB) onto its own node.
BENCH_BARRIER_S = 1800
# The pod labels the Job controller sets: the Job's uid, the same in every pod of one Job and new for each
# Job (https://kubernetes.io/docs/reference/labels-annotations-taints/#batchkubernetesiocontroller-uid,
# Kubernetes >= 1.27), readable as env through the downward API's metadata.labels['<KEY>']
# (https://kubernetes.io/docs/concepts/workloads/pods/downward-api/#downwardapi-fieldRef).
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
# How long a pod's init container waits for the download Job's verify marker before failing (the pod
# then restarts and the wait shows up as a crash loop instead of a silent hang): a 1 TB checkpoint
# over a slow link takes hours.
WEIGHTS_WAIT_S = 24 * 3600


def literal(value: str) -> str:
    """A value kubelet passes on as written. It expands $(NAME) in a container's command, args and env
    values, which would put a Secret's value (the API key's variable) where spec data was meant, and
    reads $$ as one $; so every $ is doubled (kubernetes third_party/forked/golang/expansion/expand.go;
    https://kubernetes.io/docs/tasks/inject-data-application/define-interdependent-environment-variables/)."""
    return value.replace("$", "$$")


def shell(script: str, *args: str) -> list[str]:
    """A container command running a fixed bash script; every value from the spec is a positional
    argument ("$1", "$2", ...), never part of the script, so nothing in a spec can run as code, and each
    reaches the script as written (`literal`)."""
    return ["bash", "-c", script, "kimi-deploy", *(literal(a) for a in args)]

# Pod hardening (https://kubernetes.io/docs/concepts/security/pod-security-standards/,
# "restricted"): no privilege escalation, every capability dropped, the runtime's default seccomp profile
# (set on the pod), no service-account token (nothing here talks to the API server). The engine keeps
# IPC_LOCK: NCCL/DeepEP register pinned memory with the RDMA NIC, which needs mlock beyond the default
# limit. runAsNonRoot is not set: every pod runs k8s.image, built FROM the official vLLM or SGLang image,
# and both run as root (neither vllm-project/vllm docker/Dockerfile nor sgl-project/sglang
# docker/Dockerfile has a USER line), so a non-root pod could not read the image's /root caches or write
# where the engines expect; docker/Dockerfile adds no user either.
POD_SECURITY: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}


def container_security(add: list[str] | None = None) -> dict[str, Any]:
    caps: dict[str, Any] = {"drop": ["ALL"]}
    if add:
        caps["add"] = list(add)
    return {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": caps}


def harden(pod: dict[str, Any]) -> dict[str, Any]:
    """Pod-level hardening and a locked-down securityContext on every (init) container that has none."""
    pod["automountServiceAccountToken"] = False
    pod["securityContext"] = {**POD_SECURITY, **pod.get("securityContext", {})}
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        c.setdefault("securityContext", container_security())
    return pod


def entrypoint_text() -> str:
    """The container entrypoint, shipped inside the package (a wheel install has no launchers/ dir)."""
    return resources.files("kimi_deploy").joinpath("launchers", "entrypoint.sh").read_text()


def lws_name_limit(replicas: int) -> int:
    """LWS webhook: the name must leave room for the group and worker indexes in pod names
    (name length <= 51 - replicas/10)."""
    return 51 - replicas // 10


# The device plugins' resource names: NVIDIA/k8s-device-plugin (nvidia.com/gpu), ROCm/k8s-device-plugin
# (amd.com/gpu).
GPU_RESOURCES = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}


def gpu_resource(dep: Deployment) -> str:
    return GPU_RESOURCES[dep.gpu.vendor]


def _draft_dirs(dep: Deployment) -> list[str]:
    """The staged draft's directory (inside weights.dir), when there is one."""
    sd = dep.speculative
    return [sd.dir] if sd is not None and sd.dir else []


def check(dep: Deployment) -> list[str]:
    """Errors that make a deployment impossible to run on Kubernetes (raised as bad input)."""
    k, weights_dir = dep.k8s, dep.weights.dir
    errors = []
    if dep.on_cpu:
        errors.append("hardware.gpu: CPU specs are local demos; Kubernetes manifests are for GPU nodes")
    if weights_dir and not weights_dir.startswith("/"):
        errors.append(f"weights.dir: {weights_dir!r} must be an absolute path inside the pods")
    if dep.nodes > 1 and k.weights_mode == "pvc" and not (weights_dir and k.storage_class):
        errors.append("k8s.storage_class: a multi-node deployment needs shared ReadWriteMany storage for the "
                      "weights (set k8s.storage_class and weights.dir) or k8s.weights_mode: hostpath")
    if k.weights_mode == "hostpath" and not weights_dir:
        errors.append("weights.dir: the hostPath cache needs a directory on the nodes")
    problem = hostpath_problem(weights_dir) if k.weights_mode == "hostpath" and weights_dir else None
    if problem and weights_dir.startswith("/"):
        errors.append(f"weights.dir: {weights_dir!r} {problem}; the hostPath cache is mounted read-write "
                      "into the pods, so give a directory of its own outside the host's system directories, "
                      "e.g. /data/models/kimi-k2")
    longest = dep.name + ("-prefill" if dep.pd else "")
    if dep.nodes > 1 and len(longest) > lws_name_limit(1):
        errors.append(f"name: {longest!r} is {len(longest)} characters; a LeaderWorkerSet name may have at "
                      f"most {lws_name_limit(1)}")
    if k.rdma is not None and not k.rdma.resource:
        errors.append("k8s.rdma.resource: RDMA needs the device plugin's resource name (e.g. rdma/ib)")
    if k.gpus_per_pod is not None and k.gpus_per_pod != dep.gpus_per_node:
        errors.append(f"k8s.gpus_per_pod: {k.gpus_per_pod} differs from hardware.gpus_per_node "
                      f"{dep.gpus_per_node}: one pod per node must own all its GPUs")
    if k.bench_clients > 1 and not k.storage_class:
        errors.append(f"k8s.storage_class: k8s.bench_clients {k.bench_clients} runs client pods on several nodes, "
                      "which share the results volume: name a storage class that offers ReadWriteMany, or set "
                      "k8s.bench_clients: 1")
    if k.bench_clients > k.bench_concurrency:
        errors.append(f"k8s.bench_clients: {k.bench_clients} client pods need at least one user each, and "
                      f"k8s.bench_concurrency (the users of the whole run) is {k.bench_concurrency}")
    if dep.api_key_env and not k.api_key_secret:
        errors.append("k8s.api_key_secret: serving.api_key_env is set, so name the Secret that holds the key")
    if not k.image:
        errors.append("k8s.image: name the image built from docker/Dockerfile (the engine image plus kimi-deploy), "
                      "e.g. registry.example.com/kimi-deploy:0.1.0-vllm0.32.0")
    elif k.image.split("@")[0].rsplit(":", 1)[0].removeprefix("docker.io/") in STOCK_IMAGES:
        errors.append(f"k8s.image: {k.image} is a stock engine image without kimi-deploy, so its pods cannot "
                      "start; build docker/Dockerfile FROM it and name the result")
    return errors


def _api_key_env(dep: Deployment) -> list[dict[str, Any]]:
    """The API key variable, from the Secret the spec names (check() requires one with api_key_env)."""
    k = dep.k8s
    if not (dep.api_key_env and k.api_key_secret):
        return []
    return [{"name": dep.api_key_env, "valueFrom": {"secretKeyRef": {"name": k.api_key_secret, "key": dep.api_key_env}}}]


def _hf_token_env(dep: Deployment) -> list[dict[str, Any]]:
    """HF_TOKEN for gated repos, from its Secret when the spec names one (optional: public repos need none)."""
    k = dep.k8s
    if not k.hf_token_secret:
        return []
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": k.hf_token_secret, "key": "HF_TOKEN",
                                                                 "optional": True}}}]


def _pod_monitor(dep: Deployment, metadata: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The PodMonitor of the engines' metrics. With an API key (and no serving.metrics_without_key) the
    metrics need it too: Prometheus sends it from the same Secret as a bearer token (prometheus-operator
    PodMetricsEndpoint.authorization: type Bearer, credentials a key of a Secret in the PodMonitor's
    namespace; Documentation/api-reference/api.md)."""
    endpoint: dict[str, Any] = {"port": "http", "path": dep.profile.key_guard.metrics_path}
    if dep.metrics_need_key and dep.k8s.api_key_secret:
        assert dep.api_key_env is not None
        endpoint["authorization"] = {"type": "Bearer",
                                     "credentials": {"name": dep.k8s.api_key_secret, "key": dep.api_key_env}}
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": metadata,
            "spec": {"selector": {"matchLabels": labels}, "podMetricsEndpoints": [endpoint]}}


def _labels(dep: Deployment, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "kimi-deploy", "app.kubernetes.io/instance": dep.name,
            "app.kubernetes.io/component": component}


def _probe(path: str | None, port: int, period: int, failures: int, timeout: int) -> dict[str, Any]:
    """An HTTP GET of `path`, or with None a TCP connect (a server whose every route needs the API key, which
    a probe cannot send without writing it into the manifest)."""
    check = {"httpGet": {"path": path, "port": port}} if path else {"tcpSocket": {"port": port}}
    return {**check, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": timeout}


def _pod_spec(dep: Deployment, node: RenderedNode, budget: int, pd_group: str | None,
              extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """The pod of one rendered node: env (the same network env the node's command gets), probes on the
    node's own port, volumes, weights staging."""
    k, weights_dir = dep.k8s, dep.weights.dir
    serves_http, health_only, port, group = node.serves_http, node.health_only, node.port, pd_group
    env = [{"name": "KIMI_SPEC", "value": SPEC_PATH}]
    if group:
        env.append({"name": "KIMI_PD_GROUP", "value": group})  # launch.resolve_node: which P/D side this is
    env += [{"name": n, "value": literal(v)} for n, v in (extra_env or {}).items()]
    if node.group != "router":
        env += [{"name": n, "value": literal(v)} for n, v in dep.group(node.group).network_env.items()]
    env += _api_key_env(dep) + _hf_token_env(dep)
    gpus = group != "router"
    resources = ({gpu_resource(dep): str(dep.gpus_per_node)} if gpus else {"cpu": "2", "memory": "2Gi"})
    if gpus and k.rdma and k.rdma.resource:
        resources[k.rdma.resource] = str(k.rdma.count)
    container: dict[str, Any] = {
        "name": "engine", "image": k.image, "command": ["bash", ENTRYPOINT],
        "env": env, "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": container_security(["IPC_LOCK"] if gpus else None),
        "volumeMounts": [{"name": "spec", "mountPath": "/etc/kimi-deploy", "readOnly": True},
                         {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if weights_dir and gpus:
        container["volumeMounts"].append({"name": "weights", "mountPath": weights_dir})
    if port is not None:
        container["ports"] = [{"name": "http", "containerPort": port}]
        # Until the weights are loaded the engine refuses connections or answers 503: the startup probe
        # waits out the whole load; each call may take the engine's own /health time.
        timeout = dep.profile.readiness_probe_timeout_s
        starting = math.ceil((budget if gpus else 600) / PROBE_PERIOD_S)
        auth = dep.profile.router_auth
        keyed_router = node.group == "router" and dep.api_key_env and auth is not None and auth.health_needs_key
        path = None if keyed_router else "/health"
        container["startupProbe"] = _probe(path, port, PROBE_PERIOD_S, starting, timeout)
        container["livenessProbe"] = _probe(path, port, 30, 6, timeout)
        if serves_http and not health_only:
            container["readinessProbe"] = _probe(path, port, PROBE_PERIOD_S, 3, timeout)
    volumes: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {"name": f"{dep.name}-spec", "defaultMode": 0o555}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": k.shm_size}},
    ]
    init: list[dict[str, Any]] = []
    if weights_dir and gpus:
        if k.weights_mode == "pvc":
            volumes.append({"name": "weights", "persistentVolumeClaim": {"claimName": f"{dep.name}-weights"}})
            # Wait (bounded) for the download Job's marker, then re-check it against the files: a marker
            # left from another checkpoint or a shard changed since fails here, naming the shard.
            # The Job verifies the draft before the target, so the target's marker implies both.
            init.append({"name": "wait-for-weights", "image": k.image, "command": shell(
                'deadline=$((SECONDS + $2)); until [ -f "$1/$3" ]; do '
                'if [ "$SECONDS" -ge "$deadline" ]; then echo "no verify marker in $1 after $2 s" >&2; exit 1; fi; '
                'echo "waiting for $1/$3"; sleep 15; done; kimi-deploy verify --check-marker "$1" || exit 1; '
                'for d in "${@:4}"; do kimi-deploy verify --check-marker "$d" || exit 1; done',
                weights_dir, str(WEIGHTS_WAIT_S), VERIFY_MARKER, *_draft_dirs(dep)),
                         "volumeMounts": [{"name": "weights", "mountPath": weights_dir}]})
        else:
            volumes.append({"name": "weights", "hostPath": {"path": weights_dir, "type": "DirectoryOrCreate"}})
            init.append({"name": "stage-weights", "image": k.image, "command": shell(
                         'kimi-deploy download "$1" || exit 1; for d in "${@:3}"; do kimi-deploy verify "$d" || exit 1; '
                         'done; kimi-deploy verify "$2"', SPEC_PATH, weights_dir, *_draft_dirs(dep)),
                         "env": [e for e in env if e["name"] in ("HF_TOKEN",)],
                         "volumeMounts": container["volumeMounts"][:1] + [{"name": "weights",
                                                                            "mountPath": weights_dir}]})
    pod: dict[str, Any] = {"containers": [container], "volumes": volumes, "terminationGracePeriodSeconds": 60}
    if init:
        pod["initContainers"] = init
    harden(pod)
    if k.node_selector:
        pod["nodeSelector"] = dict(k.node_selector)
    if k.tolerations:
        pod["tolerations"] = list(k.tolerations)
    if k.affinity:
        pod["affinity"] = dict(k.affinity)
    return pod


def manifests(dep: Deployment, spec_text: str) -> dict[str, dict[str, Any]]:
    """relative path -> object: the deployment's files, and the benchmark's under bench/ (its own kustomization)."""
    weights_dir = dep.weights.dir
    errors = check(dep)
    if errors:
        raise BadInput("cannot render Kubernetes manifests:\n  " + "\n  ".join(errors))
    k, ns, name = dep.k8s, dep.k8s.namespace, dep.name
    nodes = render(dep)
    budget = startup_budget(dep)
    meta = lambda n, comp: {"name": n, "namespace": ns, "labels": _labels(dep, comp)}  # noqa: E731
    out: dict[str, dict[str, Any]] = {}
    out["configmap-spec.yaml"] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{name}-spec", "config"),
                                  "data": {"spec.yaml": spec_text, "entrypoint.sh": entrypoint_text()}}
    engine_labels = _labels(dep, "engine")
    if not dep.pd:
        group = dep.groups[0]
        hybrid = all(n.serves_http for n in nodes)
        selector = _engine_objects(dep, out, group, nodes, name, engine_labels, budget, meta, hybrid)
    else:
        for group in dep.groups:
            group_nodes = [n for n in nodes if n.group == group.name]
            labels = {**engine_labels, "kimi-deploy/group": group.name}
            gsel = _engine_objects(dep, out, group, group_nodes, f"{name}-{group.name}", labels, budget, meta, False)
            out[f"service-{group.name}.yaml"] = {
                "apiVersion": "v1", "kind": "Service", "metadata": meta(f"{name}-{group.name}", "engine"),
                "spec": {"selector": gsel, "ports": [{"name": "http", "port": group.port, "targetPort": group.port}]}}
        router_labels = _labels(dep, "router")
        # The router reaches each side through its Service (the group's head variable, filled in here).
        router_env = {g.head_var: f"{name}-{g.name}.{ns}.svc" for g in dep.groups}
        router_node = next(n for n in nodes if n.group == "router")
        router_pod = _pod_spec(dep, router_node, budget, "router", router_env)
        out["deployment-router.yaml"] = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(f"{name}-router", "router"),
                                         "spec": {"replicas": 1, "selector": {"matchLabels": router_labels},
                                                  "template": {"metadata": {"labels": router_labels}, "spec": router_pod}}}
        selector = router_labels
    service_port = dep.http_port
    out["service.yaml"] = {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, "engine"),
                           "spec": {"selector": selector, "ports": [{"name": "http", "port": service_port,
                                                                     "targetPort": service_port}]}}
    if k.pdb:
        # Evicting any rank restarts the whole group (a long weight load): drains must be deliberate.
        out["poddisruptionbudget.yaml"] = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                           "metadata": meta(name, "engine"),
                                           "spec": {"maxUnavailable": 0, "selector": {"matchLabels": engine_labels}}}
    if dep.metrics_served:
        out["podmonitor.yaml"] = _pod_monitor(dep, meta(name, "monitoring"), engine_labels if dep.pd else selector)
    if weights_dir and k.weights_mode == "pvc":
        size = k.weights_pvc_size or f"{math.ceil(dep.primary.plan.weight_bytes_total * 1.1 / 2**30)}Gi"
        pvc: dict[str, Any] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                               "metadata": meta(f"{name}-weights", "weights"),
                               "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}}}
        if k.storage_class:
            pvc["spec"]["storageClassName"] = k.storage_class
        out["pvc-weights.yaml"] = pvc
        env = _hf_token_env(dep)
        verify_model = ["--model", dep.entry.id] if dep.entry else []
        out["job-download.yaml"] = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(f"{name}-download", "weights"),
                                    "spec": {"backoffLimit": 6, "template": {"metadata": {"labels": _labels(dep, "weights")}, "spec": harden({
                                        "restartPolicy": "OnFailure",
                                        "containers": [{"name": "download", "image": k.image, "env": env,
                                                        # download fetches the draft too; it is verified first
                                                        # (the target's marker is what the pods wait for).
                                                        "command": shell('kimi-deploy download "$1" || exit 1; if [ -n "$3" ]; then '
                                                                         'kimi-deploy verify "$3" || exit 1; fi; exec kimi-deploy verify '
                                                                         '"$2" "${@:4}"', SPEC_PATH, weights_dir,
                                                                         (_draft_dirs(dep) or [""])[0], *verify_model),
                                                        "volumeMounts": [{"name": "spec", "mountPath": "/etc/kimi-deploy", "readOnly": True},
                                                                         {"name": "weights", "mountPath": weights_dir}]}],
                                        "volumes": [{"name": "spec", "configMap": {"name": f"{name}-spec"}},
                                                    {"name": "weights", "persistentVolumeClaim": {"claimName": f"{name}-weights"}}]})}}}
    out["kustomization.yaml"] = _kustomization(sorted(out))
    url = f"http://{name}.{ns}.svc:{service_port}"
    bench = _bench_objects(dep, url, meta)
    bench["kustomization.yaml"] = _kustomization(sorted(bench))
    out.update({f"{BENCH_DIR}/{f}": obj for f, obj in bench.items()})
    return out


def _kustomization(resources: list[str]) -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources}


def _bench_objects(dep: Deployment, url: str, meta) -> dict[str, dict[str, Any]]:
    """The results PVC and the bench Job (filename -> object, for bench/). The bench asks for the name the
    engine serves (served_model_name, else the catalog id). One client pod runs the whole run; with
    k8s.bench_clients N > 1 the Job is Indexed and pod i runs shard i/N of the same run."""
    k, name, clients = dep.k8s, dep.name, dep.k8s.bench_clients
    key_args = ["--api-key-env", dep.api_key_env] if dep.api_key_env else []
    labels = _labels(dep, "bench")
    # Pods on several nodes all mount the results volume: only ReadWriteMany allows that
    # (https://kubernetes.io/docs/concepts/storage/persistent-volumes/#access-modes); check() requires
    # the storage class that offers it.
    pvc: dict[str, Any] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": meta(f"{name}-bench-results", "bench"),
                           "spec": {"accessModes": ["ReadWriteOnce" if clients == 1 else "ReadWriteMany"],
                                    "resources": {"requests": {"storage": "2Gi"}}}}
    if clients > 1:
        pvc["spec"]["storageClassName"] = k.storage_class
    mounts = [{"name": "results", "mountPath": "/results"}]
    volumes = [{"name": "results", "persistentVolumeClaim": {"claimName": f"{name}-bench-results"}}]
    job_spec: dict[str, Any] = {"backoffLimit": 0}
    pod: dict[str, Any] = {"restartPolicy": "Never"}
    if clients == 1:
        job_spec["activeDeadlineSeconds"] = BENCH_WAIT_S + BENCH_RUN_S
        container = {"name": "bench", "image": k.image, "env": _api_key_env(dep), "command": shell(
            # exec: bench is the container's process, so the Job's deadline (SIGTERM) reaches it and it saves
            # what finished (bash, as PID 1, would not pass the signal on)
            'kimi-deploy wait "$1" --timeout "$2" "${@:6}" || exit 1; exec kimi-deploy bench --base-url "$1/v1" '
            '--model "$3" --output "/results/$(date +%Y%m%dT%H%M%S)" --concurrency "$4" '
            '--num-requests "$5" "${@:6}"', url, str(BENCH_WAIT_S), dep.served_model_name,
            str(k.bench_concurrency), str(k.bench_concurrency * 8), *key_args), "volumeMounts": mounts}
    else:
        # An Indexed Job: pod i gets JOB_COMPLETION_INDEX=i from the Job controller
        # (https://kubernetes.io/docs/concepts/workloads/controllers/job/#completion-mode); all N run at
        # once (the barrier needs them together). backoffLimit 0: a failed shard fails the Job, which stops
        # the other pods; a retried shard would find the barrier passed and its results directory taken.
        job_spec.update({"completionMode": "Indexed", "completions": clients, "parallelism": clients,
                         "activeDeadlineSeconds": BENCH_WAIT_S + BENCH_BARRIER_S + BENCH_RUN_S})
        # Every pod of one Job writes under /results/<the Job's uid>: shard-<i>, the barrier, and merged.
        # Pod 0 merges after its own shard, waiting for the others' summaries: it knows the run's directory
        # from its own env, where a separate merge Job (another uid) could learn it only from the API
        # server, which the pods cannot reach (no service-account token). When pod 0 or any shard fails
        # the Job fails and nothing is merged (a partial merge would report a slice as the run's totals);
        # the shard directories stay on the volume for `kimi-deploy bench merge`.
        env = [{"name": "KIMI_BENCH_RUN", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_UID_LABEL}']"}}}]
        container = {"name": "bench", "image": k.image, "env": env + _api_key_env(dep), "command": shell(
            'i=${JOB_COMPLETION_INDEX:?set by the Job controller in an Indexed Job}; '
            'run="$6/${KIMI_BENCH_RUN:?the Job uid label, through the downward API}"; '
            'mkdir -p "$run/barrier" || exit 1; '
            'kimi-deploy wait "$1" --timeout "$2" "${@:10}" || exit 1; '
            'b=(kimi-deploy bench --base-url "$1/v1" --model "$3" --output "$run/shard-$i" --concurrency "$4" '
            '--num-requests "$5" --shard "$i/$7" --barrier "$run/barrier" --barrier-timeout "$8" "${@:10}"); '
            # pods other than 0 exec bench, so a SIGTERM (deadline, drain) reaches it and it saves what
            # finished; pod 0 runs it as a child to merge afterwards (a SIGTERM there ends the Job anyway)
            '[ "$i" = 0 ] || exec "${b[@]}"; '
            '"${b[@]}" || exit 1; '
            'shards=(); s=0; while [ "$s" -lt "$7" ]; do shards+=("$run/shard-$s"); s=$((s + 1)); done; '
            'echo "merging $7 shards into $run/merged"; '
            'exec kimi-deploy bench merge "$run/merged" "${shards[@]}" --wait "$9"',
            url, str(BENCH_WAIT_S), dep.served_model_name, str(k.bench_concurrency), str(k.bench_concurrency * 8),
            "/results", str(clients), str(BENCH_BARRIER_S), str(BENCH_RUN_S), *key_args), "volumeMounts": mounts}
        # Client load is CPU: spread the pods over nodes where the scheduler can.
        pod["topologySpreadConstraints"] = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                             "whenUnsatisfiable": "ScheduleAnyway",
                                             "labelSelector": {"matchLabels": dict(labels)}}]
    pod.update({"containers": [container], "volumes": volumes})
    job_spec["template"] = {"metadata": {"labels": labels}, "spec": harden(pod)}
    return {"pvc-bench-results.yaml": pvc,
            "job-bench.yaml": {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(f"{name}-bench", "bench"),
                               "spec": job_spec}}


def _engine_objects(dep: Deployment, out: dict[str, dict[str, Any]], group: Group, nodes: list[RenderedNode],
                    name: str, labels: dict[str, str], budget: int, meta, hybrid: bool) -> dict[str, str]:
    """The Deployment (one node, not P/D) or LeaderWorkerSet for one group; returns the selector of the
    pods that serve its HTTP API."""
    head = nodes[0]
    pd_group = group.name if dep.pd else None
    suffix = f"-{group.name}" if dep.pd else ""
    if len(nodes) == 1 and not dep.pd:
        template = {"metadata": {"labels": labels}, "spec": _pod_spec(dep, head, budget, None)}
        out["deployment.yaml"] = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name, "engine"),
                                  "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                                           "selector": {"matchLabels": labels}, "template": template}}
        return dict(labels)
    worker = nodes[1] if len(nodes) > 1 else head
    leader_template = {"metadata": {"labels": {**labels, "kimi-deploy/role": head.role}},
                       "spec": _pod_spec(dep, head, budget, pd_group)}
    lws: dict[str, Any] = {
        "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "metadata": meta(name, "engine"),
        "spec": {
            "replicas": 1,
            # Workers start with the leader; with Ray or vLLM's native multi-node the leader cannot become
            # Ready before the workers join, so LeaderReady would deadlock.
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": len(nodes),
                # One dead rank breaks NCCL for the whole group: restart the group together.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": leader_template,
                # An LWS of size 1 still needs a worker template; it is never instantiated.
                "workerTemplate": leader_template if len(nodes) == 1 else {
                    "metadata": {"labels": {**labels, "kimi-deploy/role": worker.role}},
                    "spec": _pod_spec(dep, worker, budget, pd_group)},
            },
        },
    }
    if dep.k8s.exclusive_topology:
        lws["metadata"]["annotations"] = {"leaderworkerset.sigs.k8s.io/exclusive-topology": dep.k8s.exclusive_topology}
    out[f"leaderworkerset{suffix}.yaml"] = lws
    # The API answers on the leader only (internal LB, native multi-node, SGLang TP), or on every pod
    # with vLLM's hybrid LB.
    return dict(labels) if hybrid else {**labels, "leaderworkerset.sigs.k8s.io/worker-index": "0"}


# The first line of a file `k8s` writes records the spec file and the deployment (the spec's `name`, a
# DNS label: spec.Spec.name) it was rendered for; the deployment decides whose a file is.
_FROM, _FOR, _END = HEADER + " from ", "; deployment ", "; do not edit by hand"
_DEPLOYMENT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Where a header without the deployment's name (one ending at "; do not edit by hand") leaves it: the
# object's own instance label (labels() above), in its metadata near the top of the file.
_INSTANCE = re.compile(r"^ +app\.kubernetes\.io/instance: ([a-z0-9][-a-z0-9]*)$")


@dataclass(frozen=True, kw_only=True)
class Written:
    """Who a manifest says rendered it: the spec file's name and the deployment's (None when neither its
    header nor its labels name one)."""

    spec: str
    deployment: str | None


def _header(spec_file: str, deployment: str) -> str:
    return f"{_FROM}{spec_file}{_FOR}{deployment}{_END}\n"


def written_by(path: Path) -> Written | None:
    """What a manifest's first line says rendered it, or None for anything else (the user's files, and a
    symlink: writing through one would put a file outside the directory)."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
            if not first.startswith(_FROM):
                return None
            rest = first[len(_FROM):].rstrip("\n").removesuffix(_END)
            spec, sep, name = rest.rpartition(_FOR)
            if sep and _DEPLOYMENT_NAME.fullmatch(name):
                return Written(spec=spec, deployment=name)
            for _, line in zip(range(200), fh):
                m = _INSTANCE.match(line.rstrip("\n"))
                if m:
                    return Written(spec=rest.split(";", 1)[0], deployment=m.group(1))
    except OSError:
        return None
    return Written(spec=rest.split(";", 1)[0], deployment=None)


def _discard(temporaries) -> None:
    """Remove the staged temporaries of a write that did not finish (each at most once, errors ignored:
    the next write removes what is left)."""
    for tmp in temporaries:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def write(spec_path: Path, out_dir: Path, *, overwrite: bool = False) -> list[Path]:
    """Write one file per object, the bench's into the bench/ subdirectory. A file this command wrote is
    this deployment's when it names the same deployment (the spec's `name`; one that names none, by the
    spec file's name): this deployment's files no longer rendered are removed. A directory that holds
    another deployment's manifests is refused (its LeaderWorkerSets and Services would be replaced or
    deleted) unless `overwrite`, which takes them over. Any other file (the user's spec, notes, overlays)
    is left alone, and one that would be overwritten is refused, as is a bench/ that is a symlink (files
    written through it would land outside the directory) or not a directory."""
    spec = load_spec(spec_path)
    dep = resolve(spec)
    objs = manifests(dep, read_spec_text(spec_path))
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput("exists and is not a directory", str(out_dir))
    dirs = [out_dir, *(out_dir / d for d in sorted({f.rpartition("/")[0] for f in objs} - {""}))]
    for d in dirs[1:]:
        if d.is_symlink() or (d.exists() and not d.is_dir()):
            raise BadInput(f"{d.name} there is a symlink or not a directory; kimi-deploy k8s writes the "
                           f"benchmark's manifests into a directory {d.name}/ of its own; choose another directory",
                           str(out_dir))
    spec_file = spec_path.name
    # A line break would end the header's comment and start YAML of the file name's choosing: control
    # characters, and the breaks YAML and Python know beyond them (NEL, U+2028, U+2029; YAML 1.1 section 5.4).
    if spec_file.splitlines() != [spec_file] or any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in spec_file):
        raise BadInput("the spec file's name has a control character or line break (e.g. a newline or U+2028), "
                       "which the manifests' header line cannot hold; rename the file", "SPEC")
    found = {f.relative_to(out_dir).as_posix(): w for d in dirs if d.is_dir() for f in sorted(d.glob("*.yaml"))
             if (w := written_by(f)) is not None}
    others = {rel: w.deployment for rel, w in found.items() if w.deployment not in (None, dep.name)}
    if others and not overwrite:
        rel, other = next(iter(others.items()))
        raise BadInput(f"it holds the manifests of deployment {other!r} (e.g. {rel}), and {spec_file} renders "
                       f"deployment {dep.name!r}: writing here would replace or delete the objects of "
                       f"{other!r}; choose another directory, or give --overwrite to replace them", str(out_dir))

    def ours(rel: str) -> bool:
        w = found.get(rel)
        if w is None:
            return False
        if w.deployment is None:
            return w.spec == spec_file
        return w.deployment == dep.name or overwrite

    clobbered = [f for f in objs if ((out_dir / f).exists() or (out_dir / f).is_symlink()) and not ours(f)]
    if clobbered:
        raise BadInput(f"{', '.join(clobbered)} already exist there and were not written by kimi-deploy k8s for "
                       f"deployment {dep.name!r}; choose another directory", str(out_dir))
    # Every manifest is first written whole to a temporary beside it (TMP_SUFFIX: not *.yaml, so neither
    # kustomize, `kubectl apply -f DIR` nor the ownership check above reads one), then all are renamed over
    # their targets, then this deployment's files no longer rendered are removed: a failed write (a full
    # disk, a file size limit) leaves every previous manifest as it was and no temporary behind.
    texts = {fname: _header(spec_file, dep.name) + yaml.safe_dump(obj, sort_keys=False, width=120)
             for fname, obj in objs.items()}
    staged: dict[str, Path] = {}
    current = "the directory"
    try:
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            for tmp in d.glob(".*" + TMP_SUFFIX):  # left by a write that was killed part-way
                tmp.unlink()
        for fname, text in texts.items():
            current = fname
            target = out_dir / fname
            tmp = target.with_name(f".{target.name}{TMP_SUFFIX}")
            staged[fname] = tmp
            _write_new(tmp, text.encode(), mode=_mode_of(target))
    except OSError as exc:
        _discard(staged.values())
        raise BadInput(f"cannot write {current}: {exc.strerror or exc}; the manifests there are unchanged",
                       str(out_dir)) from None
    paths = []
    try:
        for fname, tmp in staged.items():
            os.replace(tmp, out_dir / fname)
            paths.append(out_dir / fname)
        for rel in found:
            if rel not in objs and ours(rel):
                (out_dir / rel).unlink()
    except OSError as exc:
        _discard(staged.values())
        done = ", ".join(p.relative_to(out_dir).as_posix() for p in paths) or "none"
        raise BadInput(f"cannot replace the manifests there: {exc.strerror or exc} (replaced so far: {done}); "
                       "run the command again", str(out_dir)) from None
    return paths


# The suffix of the temporary a manifest is written to before it is renamed over its target.
TMP_SUFFIX = ".kimi-deploy-tmp"


def _mode_of(path: Path) -> int | None:
    """The permission bits of the manifest `path` replaces, which its replacement keeps; None when there is
    none (a new file gets 0o666 less the umask, as open(2) gives)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def _write_new(path: Path, data: bytes, *, mode: int | None) -> None:
    """Create `path` (never through a symlink, never over a file) holding `data`, flushed to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
