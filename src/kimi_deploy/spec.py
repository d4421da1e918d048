"""The deployment spec: one YAML file that every other output (plan, engine commands, launchers,
manifests, benchmark and comparison runs) is derived from. This module only parses and validates it
(pydantic; every error names the field and what is allowed, and becomes exit code 2 in the CLI);
deployment.py resolves it into the one object everything else reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .catalog import MODELS, get_gpu, get_model, gpu_names
from .errors import BadInput
from .plan import KV_DTYPE_BYTES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRef(_Strict):
    """A Hub repo (with an optional pinned revision) or a local checkpoint directory."""

    repo: str | None = None
    path: str | None = None
    revision: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "ModelRef":
        if bool(self.repo) == bool(self.path):
            raise ValueError("give exactly one of repo or path")
        return self


class Weights(_Strict):
    dir: str | None = None  # where the checkpoint lives on every node (shared or node-local)
    source: Literal["hf", "mirror", "s3"] = "hf"
    mirror: str | None = None  # a local/NFS directory or an s3:// URL for non-hf sources


class Hardware(_Strict):
    gpu: str
    gpus_per_node: int = Field(gt=0)
    nodes: int = Field(default=1, gt=0)

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        try:
            return get_gpu(v).name
        except BadInput:
            raise ValueError(f"unknown GPU {v!r}; known: {', '.join(gpu_names())}") from None


class EngineSpec(_Strict):
    name: Literal["vllm", "sglang"]
    version: str | None = None  # the engine version installed on the nodes, when pinned
    image: str | None = None


TopologyMode = Literal["auto", "tp", "tp-pp", "dp-ep", "tp-ep", "pd"]

# vLLM --all2all-backend choices (vllm-project/vllm vllm/config/parallel.py, All2AllBackend); SGLang takes
# deepep via --moe-a2a-backend.
ALL2ALL_BACKENDS = ("allgather_reducescatter", "deepep_high_throughput", "deepep_low_latency", "deepep_v2",
                    "mori_high_throughput", "mori_low_latency", "nixl_ep", "flashinfer_nvlink_one_sided",
                    "flashinfer_nvlink_two_sided")


class ParallelFields(_Strict):
    tp: int | None = Field(default=None, gt=0)
    pp: int | None = Field(default=None, gt=0)
    dp: int | None = Field(default=None, gt=0)
    expert_parallel: bool | None = None
    dp_attention: bool | None = None  # SGLang --enable-dp-attention
    all2all: str | None = None  # vLLM --all2all-backend; for SGLang any deepep_* means --moe-a2a-backend deepep
    eplb_redundant_experts: int | None = Field(default=None, ge=0)

    @field_validator("all2all")
    @classmethod
    def _a2a(cls, v: str | None) -> str | None:
        if v is not None and v not in ALL2ALL_BACKENDS:
            raise ValueError(f"unknown all2all backend {v!r}; allowed: {', '.join(ALL2ALL_BACKENDS)}")
        return v


class PDGroup(ParallelFields):
    """One side of prefill/decode disaggregation: its own nodes and parallelism."""

    nodes: int = Field(gt=0)
    extra_args: list[str] = Field(default_factory=list)


class PDSpec(_Strict):
    prefill: PDGroup
    decode: PDGroup
    # SGLang: --disaggregation-transfer-backend mooncake (default) or nixl (sgl-project/sglang
    # python/sglang/srt/server_args.py); vLLM: NixlConnector (vllm-project/vllm docs/features/nixl_connector_usage.md)
    transfer_backend: Literal["mooncake", "nixl"] = "mooncake"
    ib_device: str | None = None  # SGLang --disaggregation-ib-device, e.g. mlx5_0
    router_port: int = Field(default=8000, gt=0, lt=65536)


class TopologySpec(ParallelFields):
    mode: TopologyMode = "auto"
    dcp: int = Field(default=1, gt=0)  # vLLM --decode-context-parallel-size
    multinode_backend: Literal["native", "ray"] = "native"  # vLLM multi-node TP/PP launcher
    lb: Literal["internal", "hybrid"] = "internal"  # vLLM multi-node DP: one API server, or one per node
    pd: PDSpec | None = None

    @model_validator(mode="after")
    def _pd_consistent(self) -> "TopologySpec":
        if (self.mode == "pd") != (self.pd is not None):
            raise ValueError("mode: pd and a pd: section go together")
        return self


class Serving(_Strict):
    host: str = "0.0.0.0"  # reachable from other pods; SGLang's own --host default is 127.0.0.1 (sglang server_args.py)
    port: int = Field(default=8000, gt=0, lt=65536)
    served_model_name: str | None = None
    max_model_len: int | None = Field(default=None, gt=0)
    max_num_seqs: int | None = Field(default=None, gt=0)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    kv_cache_dtype: str = "auto"
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)  # vLLM
    mem_fraction_static: float | None = Field(default=None, gt=0, le=1)  # SGLang
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # The API key is read from this env var at start-up; it is never written into a spec or command.
    # auto: the catalog entry's parser (kimi_k2 for the whole family); a name forces one; null disables.
    tool_call_parser: str | None = "auto"
    thinking: bool | None = None  # reasoning parser; default from the catalog (local checkpoints: off)
    env: dict[str, str] = Field(default_factory=dict)  # plain settings only, never secrets
    extra_args: list[str] = Field(default_factory=list)

    @field_validator("env")
    @classmethod
    def _no_secrets(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if any(word in key.upper() for word in ("KEY", "TOKEN", "SECRET", "PASSWORD")):
                raise ValueError(f"{key}: secrets do not belong in the spec; name the variable in api_key_env "
                                 "or pass it through the environment / a Kubernetes Secret")
        return v

    @field_validator("kv_cache_dtype")
    @classmethod
    def _kv_dtype(cls, v: str) -> str:
        allowed = [*KV_DTYPE_BYTES, "fp8_ds_mla"]
        if v not in allowed:
            raise ValueError(f"unknown kv_cache_dtype {v!r}; allowed: {', '.join(allowed)}")
        return v


class Network(_Strict):
    socket_ifname: str | None = None  # NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME
    ib_hca: str | None = None  # NCCL_IB_HCA (and NVSHMEM_HCA_LIST for DeepEP)
    master_port: int = Field(default=29501, gt=0, lt=65536)  # vLLM --master-port default (vllm/engine/arg_utils.py)
    dist_init_port: int = Field(default=5000, gt=0, lt=65536)  # SGLang --dist-init-addr port (MoonshotAI/Kimi-K2 docs/deploy_guidance.md)
    dp_rpc_port: int = Field(default=13345, gt=0, lt=65536)  # vLLM -dpp (vllm docs/serving/data_parallel_deployment.md)
    ray_port: int = Field(default=6379, gt=0, lt=65536)  # ray start --port (vllm examples/online_serving/run_cluster.sh)
    # 1 TB loads over shared storage outlast torch.distributed's 600 s default NCCL init timeout
    # (https://docs.pytorch.org/docs/stable/distributed.html#torch.distributed.init_process_group).
    dist_timeout_s: int = Field(default=1800, gt=0)


class RDMA(_Strict):
    resource: str | None = None  # the device plugin's resource name, e.g. rdma/ib or nvidia.com/hostdev
    count: int = Field(default=1, gt=0)


class K8s(_Strict):
    namespace: str = Field(default="default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    image: str | None = None  # the engine image with kimi-deploy installed in it (docker/Dockerfile)
    weights_mode: Literal["pvc", "hostpath"] = "pvc"  # shared ReadWriteMany volume, or a node-local cache
    storage_class: str | None = None
    weights_pvc_size: str | None = None  # default: checkpoint size + 10 %
    shm_size: str = "32Gi"  # /dev/shm for NCCL and the engines' multiprocess queues
    rdma: RDMA | None = None
    gpus_per_pod: int | None = Field(default=None, gt=0)
    api_key_secret: str | None = None  # Secret holding the API key under the key named by serving.api_key_env
    hf_token_secret: str | None = None  # Secret with key HF_TOKEN for gated repos
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    exclusive_topology: str | None = None  # one LWS group per topology domain (LWS annotation)
    startup_budget_s: int | None = Field(default=None, gt=0)  # override the plan-derived startup budget
    pdb: bool = True
    bench_concurrency: int = Field(default=16, gt=0)


class Spec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    model: str | ModelRef
    revision: str | None = None
    weights: Weights = Field(default_factory=Weights)
    hardware: Hardware
    engine: EngineSpec
    topology: TopologySpec = Field(default_factory=TopologySpec)
    serving: Serving = Field(default_factory=Serving)
    network: Network = Field(default_factory=Network)
    k8s: K8s = Field(default_factory=K8s)

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str | ModelRef) -> str | ModelRef:
        if isinstance(v, str) and not looks_like_path(v):
            try:
                return get_model(v).id
            except BadInput:
                raise ValueError(f"unknown model {v!r}; known: {', '.join(sorted(MODELS))}, "
                                 "or {path: /local/checkpoint}") from None
        return v

    @property
    def gpus(self) -> int:
        return self.hardware.gpus_per_node * self.hardware.nodes

    @model_validator(mode="after")
    def _reachable(self) -> "Spec":
        if self.hardware.nodes > 1 and self.serving.host in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"serving.host: {self.serving.host} is unreachable from the other nodes of a "
                             f"{self.hardware.nodes}-node deployment; use 0.0.0.0")
        return self

    @model_validator(mode="after")
    def _pd_nodes(self) -> "Spec":
        pd = self.topology.pd
        if pd is not None and pd.prefill.nodes + pd.decode.nodes != self.hardware.nodes:
            raise ValueError(f"topology.pd: prefill.nodes + decode.nodes = {pd.prefill.nodes + pd.decode.nodes}, "
                             f"but hardware.nodes = {self.hardware.nodes}")
        if pd is not None and pd.transfer_backend == "mooncake" and self.engine.name == "vllm":
            raise ValueError("topology.pd.transfer_backend: vLLM disaggregation uses nixl (NixlConnector)")
        return self


def looks_like_path(v: str) -> bool:
    """A local checkpoint rather than a catalog id or Hub repo: an explicit path, or one that exists."""
    return v.startswith(("/", "./", "../", "~")) or Path(v).expanduser().is_dir()


# --- loading ---------------------------------------------------------------------------------------

def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-after", "str", "ModelRef")))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not part of the spec; check spelling)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{loc or '(top level)'}: {msg}")
    # A union field (`model`: a name or a mapping) reports one error per branch; when one branch says
    # more than "wrong type", keep that one.
    unique = list(dict.fromkeys(lines))
    specific = [ln for ln in unique if "Input should be a valid" not in ln]
    if specific and len(specific) < len(unique):
        fields = {ln.split(":")[0] for ln in specific}
        unique = [ln for ln in unique if ln in specific or ln.split(":")[0] not in fields]
    return f"{source}: invalid spec\n  " + "\n  ".join(unique)


def parse_spec(data: Any, source: str = "spec") -> Spec:
    if not isinstance(data, dict):
        raise BadInput("a spec must be a YAML mapping (key: value) at the top level", source)
    try:
        return Spec.model_validate(data)
    except ValidationError as err:
        raise BadInput(_format_validation_error(err, source)) from None


def load_spec(path: str | Path) -> Spec:
    p = Path(path)
    if not p.is_file():
        raise BadInput("spec file not found", str(path))
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise BadInput(f"YAML syntax error{where}: {problem}", str(path)) from None
    return parse_spec(data, source=str(path))
