"""The deployment spec: one YAML file that every other output (plan, engine commands, launchers,
manifests, benchmark and comparison runs) is derived from. This module only parses and validates it
(pydantic; every error names the field and what is allowed, and becomes exit code 2 in the CLI);
deployment.py resolves it into the one object everything else reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from .catalog import MODELS, get_gpu, get_model, gpu_names
from .errors import BadInput
from .engines.profiles import ENGINE_NAMES, get_profile
from .engines.profiles.base import KV_DTYPES, STATE_DTYPES
from .secrets import NAME_RULE, credential_problem, is_secret_name, is_secret_option


# --- secrets and shell references in spec values ------------------------------------------------------

# What a credential is (names, values, options) is decided in secrets.py; the spec refuses them all.
_WHERE_SECRETS_GO = ("name the variable in serving.api_key_env (the key then comes from the environment or "
                     "the Kubernetes Secret in k8s.api_key_secret; k8s.hf_token_secret for HF_TOKEN)")


def _check_extra_args(v: list[str]) -> list[str]:
    for i, arg in enumerate(v):
        if is_secret_option(arg):
            raise ValueError(f"{arg.split('=', 1)[0]} (item {i}): an API key on the command line is readable by "
                             f"every user of the node (ps, /proc) and ends up in manifests; {_WHERE_SECRETS_GO}")
        problem = credential_problem(arg)
        if problem:
            raise ValueError(f"item {i} {problem}; secrets do not belong in the spec: {_WHERE_SECRETS_GO}")
    return v


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _refuse_references(data: Any, path: str = "") -> None:
    """No `${` anywhere in the spec's data, and no NUL byte: `render` and `serve` expand ${NAME} only for
    the tool's own variables (head addresses, the API key variable, startup files), and a reference written
    into a spec value could otherwise pull a secret such as ${HF_TOKEN} into an engine's argv (kubelet's
    $(NAME) is kept literal by k8s.py, which writes it as $$(NAME)); a NUL byte cannot be an argument at all."""
    if isinstance(data, str):
        if "${" in data:
            raise BadInput(f"{data[:200]!r} contains '${{': spec values are used literally and may not refer to "
                           "environment variables (the head address and API key come from the environment "
                           "by themselves; see serving.api_key_env)", path or "(top level)")
        if "\x00" in data:
            raise BadInput("contains a NUL byte, which no command-line argument or file name can hold",
                           path or "(top level)")
    elif isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            _refuse_references(key, where)
            _refuse_references(value, where)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _refuse_references(value, f"{path}[{i}]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRef(_Strict):
    """A Hub repo (with an optional pinned revision) or a local checkpoint directory."""

    repo: str | None = None  # a catalog model's Hub repo id, e.g. moonshotai/Kimi-K2-Thinking
    path: str | None = None  # a local checkpoint directory (its config.json is read for the plan)
    revision: str | None = None  # pinned Hub revision (commit, tag or branch) that `kimi-deploy download` fetches

    @model_validator(mode="after")
    def _one_source(self) -> "ModelRef":
        if bool(self.repo) == bool(self.path):
            raise ValueError("give exactly one of repo or path")
        return self


class Weights(_Strict):
    dir: str | None = None  # where the checkpoint lives on every node (shared or node-local)
    # Where `kimi-deploy download` fetches the checkpoint from: hf, the Hugging Face Hub (HF_TOKEN for gated repos);
    # mirror, the directory in weights.mirror; s3, the s3:// URL in weights.mirror (needs kimi-deploy[s3]).
    source: Literal["hf", "mirror", "s3"] = "hf"
    mirror: str | None = None  # a local/NFS directory or an s3:// URL for non-hf sources


class Hardware(_Strict):
    # The GPU model, a catalog name matched case-insensitively (A100, H100, H200, B200, GB200, MI355X, ...), or
    # CPU for a local demo on vLLM's CPU backend.
    gpu: str
    gpus_per_node: int = Field(gt=0)  # GPUs used on each node, at most what one node (a GB200/GB300 tray: 4) holds
    # Nodes that run the engine, each with gpus_per_node GPUs; above 1 a multi-node launch (head and workers).
    # With P/D, prefill.nodes + decode.nodes; the router runs outside them.
    nodes: int = Field(default=1, gt=0)

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        try:
            return get_gpu(v).name
        except BadInput:
            raise ValueError(f"unknown GPU {v!r}; known: {', '.join(gpu_names())}") from None


class EngineSpec(_Strict):
    name: Literal[ENGINE_NAMES]  # one per engine profile (engines/profiles/)
    version: str | None = None  # the engine version installed on the nodes, when pinned
    # Not a setting: the pods' image is k8s.image. Kept only so a spec that sets it is told so.
    image: str | None = None

    @field_validator("image")
    @classmethod
    def _image_is_k8s_image(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError("not a setting: the image Kubernetes pods run is k8s.image (built from "
                             "docker/Dockerfile); bare-metal launchers use the engine installed on the node")
        return v


TopologyMode = Literal["auto", "tp", "tp-pp", "dp-ep", "tp-ep", "pd"]

# vLLM --all2all-backend choices (vllm-project/vllm vllm/config/parallel.py, All2AllBackend); SGLang takes
# deepep via --moe-a2a-backend.
ALL2ALL_BACKENDS = ("allgather_reducescatter", "deepep_high_throughput", "deepep_low_latency", "deepep_v2",
                    "mori_high_throughput", "mori_low_latency", "nixl_ep", "flashinfer_nvlink_one_sided",
                    "flashinfer_nvlink_two_sided")



def _one_of(what: str, v: Any, allowed: Iterable[str]) -> Any:
    """`v` unchanged when unset or one of `allowed`; else the error naming the value and what is allowed."""
    if v is not None and v not in allowed:
        raise ValueError(f"unknown {what} {v!r}; allowed: {', '.join(allowed)}")
    return v

class ParallelFields(_Strict):
    # Tensor-parallel size (vLLM --tensor-parallel-size, SGLang --tp-size). Unset: what the mode gives
    # (topology.mode; a P/D side is dp-ep when it sets expert_parallel and dp > 1, else tp).
    tp: int | None = Field(default=None, gt=0)
    # Pipeline-parallel size (vLLM --pipeline-parallel-size, SGLang --pp-size; passed when > 1). Unset: what the
    # mode gives.
    pp: int | None = Field(default=None, gt=0)
    # Data-parallel size (vLLM --data-parallel-size, equal to nodes x gpus_per_node / (tp x pp); SGLang
    # --dp-size; passed when > 1). Unset: what the mode gives.
    dp: int | None = Field(default=None, gt=0)
    # Expert parallelism for the MoE layers (vLLM --enable-expert-parallel, SGLang --ep-size equal to tp).
    # Unset: what the mode gives (on for tp-ep and dp-ep).
    expert_parallel: bool | None = None
    dp_attention: bool | None = None  # SGLang --enable-dp-attention
    all2all: str | None = None  # vLLM --all2all-backend; for SGLang any deepep_* means --moe-a2a-backend deepep
    # Expert-parallel load balancing with this many redundant experts (vLLM --enable-eplb --eplb-config
    # num_redundant_experts, SGLang --enable-eplb --ep-num-redundant-experts). Unset: no EPLB.
    eplb_redundant_experts: int | None = Field(default=None, ge=0)

    @field_validator("all2all")
    @classmethod
    def _a2a(cls, v: str | None) -> str | None:
        return _one_of("all2all backend", v, ALL2ALL_BACKENDS)


class PDGroup(ParallelFields):
    """One side of prefill/decode disaggregation: its own nodes and parallelism."""

    nodes: int = Field(gt=0)  # this side's nodes; prefill.nodes + decode.nodes = hardware.nodes
    # Engine arguments appended to this side's commands as given, after serving.extra_args; credentials are refused.
    extra_args: list[str] = Field(default_factory=list)

    @field_validator("extra_args")
    @classmethod
    def _no_secret_args(cls, v: list[str]) -> list[str]:
        return _check_extra_args(v)


class PDSpec(_Strict):
    prefill: PDGroup  # the prefill side: its nodes, parallelism and extra_args
    decode: PDGroup  # the decode side: its nodes, parallelism and extra_args
    # SGLang: --disaggregation-transfer-backend mooncake (default) or nixl (sgl-project/sglang
    # python/sglang/srt/server_args.py); vLLM: NixlConnector (vllm-project/vllm docs/features/nixl_connector_usage.md)
    transfer_backend: Literal["mooncake", "nixl"] = "mooncake"
    ib_device: str | None = None  # SGLang --disaggregation-ib-device, e.g. mlx5_0
    # The router's HTTP port (its --port), where clients connect; the prefill and decode engines listen on
    # serving.port + 1 and + 2.
    router_port: int = Field(default=8000, gt=0, lt=65536)


class TopologySpec(ParallelFields):
    # auto: tp when the attention heads divide evenly over all GPUs, else tp-pp; tp: one TP group over every
    # GPU; tp-pp: TP within a node, PP across nodes; tp-ep: tp plus expert parallelism; dp-ep: the engine's
    # DP + EP layout (vLLM tp 1, dp = GPUs; SGLang tp = dp = GPUs with DP attention); pd: prefill/decode
    # disaggregation (with a pd: section). tp, pp, dp, expert_parallel and dp_attention set here win.
    mode: TopologyMode = "auto"
    dcp: int = Field(default=1, gt=0)  # vLLM --decode-context-parallel-size
    multinode_backend: Literal["native", "ray"] = "native"  # vLLM multi-node TP/PP launcher
    lb: Literal["internal", "hybrid"] = "internal"  # vLLM multi-node DP: one API server, or one per node
    pd: PDSpec | None = None  # the prefill and decode sides and the router; given exactly when mode is pd

    @model_validator(mode="after")
    def _pd_consistent(self) -> "TopologySpec":
        if (self.mode == "pd") != (self.pd is not None):
            raise ValueError("mode: pd and a pd: section go together")
        return self


class Serving(_Strict):
    host: str = "0.0.0.0"  # reachable from other pods; SGLang's own --host default is 127.0.0.1 (sglang server_args.py)
    # The engine's HTTP port (--port). With P/D the prefill and decode engines take port + 1 and + 2, and clients
    # connect to topology.pd.router_port.
    port: int = Field(default=8000, gt=0, lt=65536)
    # The model name clients send and /v1/models lists (--served-model-name); unset: the catalog id, else the
    # spec's name.
    served_model_name: str | None = None
    # Context length in tokens (vLLM --max-model-len, SGLang --context-length); unset: the catalog's context
    # length, else config.json max_position_embeddings, which it may not exceed.
    max_model_len: int | None = Field(default=None, gt=0)
    # Concurrent sequences per engine (vLLM --max-num-seqs, per DP rank; SGLang --max-running-requests); unset:
    # the engine release's default.
    max_num_seqs: int | None = Field(default=None, gt=0)
    # Tokens per scheduler step / prefill chunk (vLLM --max-num-batched-tokens, SGLang --chunked-prefill-size);
    # unset: the engine release's default.
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    # KV cache element type (--kv-cache-dtype): auto (the engine's default; no flag), bfloat16/bf16, float16,
    # fp8/fp8_e4m3/fp8_e5m2, fp8_ds_mla; SGLang takes auto and the bf16 and fp8 ones.
    kv_cache_dtype: str = "auto"
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)  # vLLM
    mem_fraction_static: float | None = Field(default=None, gt=0, le=1)  # SGLang
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME.pattern)
    # The API key is read from this env var at start-up; it is never written into a spec or command.
    # With api_key_env set, every route but the health checks needs the key, /metrics included: true lets
    # Prometheus scrape /metrics without it (SGLang serves its metrics to anyone, so with a key it turns them
    # on only when this is true).
    metrics_without_key: StrictBool = False
    # auto: the catalog entry's parser (kimi_k2 for the whole family); a name forces one; null disables.
    tool_call_parser: str | None = "auto"
    thinking: bool | None = None  # reasoning parser; default from the catalog (local checkpoints: off)
    env: dict[str, str] = Field(default_factory=dict)  # plain settings only, never secrets
    # Engine arguments appended to every engine command as given; credentials are refused.
    extra_args: list[str] = Field(default_factory=list)
    # K2.5+ are multimodal (MoonViT). language_model_only skips the vision tower (its memory goes to the KV
    # cache; image requests are refused); mm_encoder_tp_mode "data" runs the encoder data-parallel
    # (MoonshotAI/Kimi-K2.5 docs/deploy_guidance.md uses --mm-encoder-tp-mode data on vLLM).
    language_model_only: bool | None = None
    mm_encoder_tp_mode: Literal["weights", "data"] | None = None
    # How the engine reads the checkpoint: auto/safetensors, or a streaming loader (vLLM and SGLang
    # --load-format choices: fastsafetensors, runai_streamer). It sets the start-up budget's load rate.
    load_format: Literal["auto", "safetensors", "fastsafetensors", "runai_streamer"] | None = None
    # Hybrid models (Kimi K3, Kimi-Linear): the KDA recurrent state's dtype; auto is float32 in both engines,
    # bfloat16 halves the state per sequence (vLLM --mamba-ssm-cache-dtype, SGLang --mamba-ssm-dtype).
    state_dtype: str | None = None
    # Prefix caching (vLLM --enable-prefix-caching / --no-enable-prefix-caching, SGLang --disable-radix-cache);
    # unset: the engine's default (on). For hybrid models it sets the state slots a running sequence holds.
    prefix_caching: StrictBool | None = None

    @field_validator("env")
    @classmethod
    def _no_secrets(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not an environment variable name (letters, digits, _; not "
                                 "starting with a digit)")
            if is_secret_name(key):
                raise ValueError(f"{key}: a name that {NAME_RULE} is taken for a credential's, and secrets "
                                 f"do not belong in the spec; {_WHERE_SECRETS_GO}, or pass it through the "
                                 "environment / a Kubernetes Secret")
            problem = credential_problem(value, key)
            if problem:
                raise ValueError(f"{key}: the value {problem}; secrets do not belong in the spec: "
                                 f"{_WHERE_SECRETS_GO}, or pass it through the environment / a Kubernetes Secret")
        return v

    @field_validator("extra_args")
    @classmethod
    def _no_secret_args(cls, v: list[str]) -> list[str]:
        return _check_extra_args(v)

    @field_validator("state_dtype")
    @classmethod
    def _state_dtype(cls, v: str | None) -> str | None:
        return _one_of("state_dtype", v, STATE_DTYPES)

    @field_validator("kv_cache_dtype")
    @classmethod
    def _kv_dtype(cls, v: str) -> str:
        return _one_of("kv_cache_dtype", v, KV_DTYPES)


# num_speculative_tokens: the published Kimi drafts accept about 3 tokens per step (accept_length 2.3-3.5
# with 3 drafted, huggingface.co/lightseekorg/kimi-k2.5-eagle3-mla and AQ-MedAI/Kimi-K2-Instruct-eagle3
# cards), so more than 16 drafted tokens only burns compute; the engines take any positive number.
MAX_SPECULATIVE_TOKENS = 16
# Why MTP is refused for the K2 family: every K2-family config.json has num_nextn_predict_layers 0, i.e. no
# MTP layers to draft with (huggingface.co/moonshotai/Kimi-K2-Instruct config.json; K2.5/K2.6 text_config the
# same). Whether a checkpoint has MTP layers is known once its config is read: deployment.resolve_speculative
# decides, with this text for a checkpoint of the K2 family.
MTP_REFUSED = ("mtp needs the checkpoint's own multi-token-prediction layers and the Kimi K2 family has none "
               "(config.json num_nextn_predict_layers: 0); use method: eagle3 with a draft such as "
               "lightseekorg/kimi-k2.6-eagle3-mla or AQ-MedAI/Kimi-K2-Instruct-eagle3")
# The default num_speculative_tokens of an EAGLE3 draft (the drafts' cards run 3); a DSpark draft drafts the
# block it was trained for, MTP its checkpoint's MTP layers (deployment.resolve_speculative).
EAGLE3_DEFAULT_TOKENS = 3


class Speculative(_Strict):
    """Speculative decoding: a separate draft model (EAGLE3, DSpark), or the checkpoint's own MTP layers."""

    # eagle3 and dspark need `draft`; mtp drafts with the checkpoint's MTP layers (config.json
    # num_nextn_predict_layers > 0, e.g. a Kimi K3 checkpoint that has them) and takes no draft.
    method: Literal["eagle3", "dspark", "mtp"]
    draft: str | None = None  # a Hub repo id or a local directory with the draft's config.json
    draft_revision: str | None = None  # pinned Hub revision of the draft
    # unset: 3 for eagle3, the draft's trained block_size for dspark, the MTP layers for mtp
    num_speculative_tokens: int | None = Field(default=None, ge=1, le=MAX_SPECULATIVE_TOKENS)
    # SGLang's EAGLE tree: --speculative-eagle-topk (default 1: a chain) and --speculative-num-draft-tokens
    # (default num_speculative_tokens + 1, the chain plus the verified token), as the drafts' cards run it
    # (steps 3, topk 1, draft tokens 4). vLLM drafts a chain only, so setting them for vLLM is an error.
    eagle_topk: int | None = Field(default=None, ge=1, le=16)
    num_draft_tokens: int | None = Field(default=None, ge=2, le=256)

    @model_validator(mode="after")
    def _draft(self) -> "Speculative":
        if self.method == "mtp":  # whether the checkpoint has MTP layers: deployment.resolve_speculative
            pass
        elif not self.draft:
            example = ("RedHatAI/Kimi-K3-speculator.dspark" if self.method == "dspark"
                       else "lightseekorg/kimi-k2.6-eagle3-mla")
            raise ValueError(f"draft: {self.method} needs a draft model (a Hub repo id such as {example}, or a "
                             "local directory)")
        if self.method == "dspark" and self.eagle_topk not in (None, 1):
            raise ValueError("eagle_topk: DSpark drafts one block in parallel (a chain, topk 1); leave it unset")
        if self.num_draft_tokens is not None and self.num_speculative_tokens is not None \
                and self.eagle_topk in (None, 1) and self.num_draft_tokens != self.num_speculative_tokens + 1:
            raise ValueError(f"num_draft_tokens: with eagle_topk 1 (a chain) SGLang drafts exactly "
                             f"num_speculative_tokens + 1 = {self.num_speculative_tokens + 1} tokens")
        return self


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
    count: int = Field(default=1, gt=0)  # how many of `resource` each GPU pod requests (requests and limits)


class K8s(_Strict):
    # The namespace of every rendered object.
    namespace: str = Field(default="default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    image: str | None = None  # the engine image with kimi-deploy installed in it (docker/Dockerfile)
    weights_mode: Literal["pvc", "hostpath"] = "pvc"  # shared ReadWriteMany volume, or a node-local cache
    # StorageClass of the weights PVC (ReadWriteMany) and, with bench_clients > 1, of the bench results PVC;
    # unset: the cluster's default. Multi-node deployments with weights_mode pvc need one.
    storage_class: str | None = None
    weights_pvc_size: str | None = None  # default: checkpoint size + 10 %
    shm_size: str = "32Gi"  # /dev/shm for NCCL and the engines' multiprocess queues
    rdma: RDMA | None = None  # RDMA devices each GPU pod requests from a device plugin; unset: none
    # A check only: must equal hardware.gpus_per_node (one pod per node owns all its GPUs); unset: not checked.
    gpus_per_pod: int | None = Field(default=None, gt=0)
    api_key_secret: str | None = None  # Secret holding the API key under the key named by serving.api_key_env
    hf_token_secret: str | None = None  # Secret with key HF_TOKEN for gated repos
    node_selector: dict[str, str] = Field(default_factory=dict)  # nodeSelector of the engine and router pods
    # Kubernetes tolerations of the engine and router pods.
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None  # a Kubernetes affinity object for the engine and router pods
    exclusive_topology: str | None = None  # one LWS group per topology domain (LWS annotation)
    startup_budget_s: int | None = Field(default=None, gt=0)  # override the plan-derived startup budget
    pdb: bool = True  # a PodDisruptionBudget, maxUnavailable 0, for the engine pods (an eviction restarts a group)
    # Concurrent users of the bench Job (bench --concurrency); the run sends 8 times as many requests.
    bench_concurrency: int = Field(default=16, gt=0)
    # Client pods of the bench Job; above 1 an Indexed Job whose pods each run their shard of one run
    # (totals: bench_concurrency users, bench_concurrency * 8 requests, at least one user per pod) and
    # share ReadWriteMany results storage (needs k8s.storage_class). The bound keeps a typo from
    # scheduling hundreds of pods.
    bench_clients: int = Field(default=1, ge=1, le=64)


class Spec(_Strict):
    # The deployment's name, a lower-case DNS label: it names the Kubernetes objects, and it is the served model
    # name of a local checkpoint when serving.served_model_name is unset.
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    # A catalog id or alias (e.g. kimi-k2-thinking), a catalog model's Hub repo id, a local checkpoint path, or a
    # mapping with repo or path and an optional revision.
    model: str | ModelRef
    # A pinned Hub revision (commit, tag or branch) of the model that `kimi-deploy download` fetches; it wins over
    # model.revision. The engines load weights.dir; without one they get the repo id and load its default branch.
    revision: str | None = None
    weights: Weights = Field(default_factory=Weights)  # where the checkpoint is fetched from and staged on the nodes
    hardware: Hardware  # the GPU model, GPUs per node and nodes
    engine: EngineSpec  # the serving engine (vllm or sglang) and its version
    topology: TopologySpec = Field(default_factory=TopologySpec)  # how the model is split over the GPUs
    serving: Serving = Field(default_factory=Serving)  # the engine's HTTP, batch, cache, parser and key settings
    speculative: Speculative | None = None  # speculative decoding; unset: off
    network: Network = Field(default_factory=Network)  # NCCL/Gloo interfaces and multi-node rendezvous ports
    k8s: K8s = Field(default_factory=K8s)  # the manifests of `kimi-deploy k8s` (namespace, image, storage, bench)

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
        transports = get_profile(self.engine.name).topology.pd_transports
        if pd is not None and pd.transfer_backend not in transports:
            raise ValueError(f"topology.pd.transfer_backend: {get_profile(self.engine.name).display} "
                             f"disaggregation uses {' or '.join(transports)}")
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


# A spec is a few KB (the deploy/ examples); these bound what reading one may cost.
MAX_SPEC_BYTES = 2**20
# YAML nodes of a spec with every alias expanded (a deploy/ example has a few hundred). Anchors and
# aliases share one node, so nine levels of nine aliases each compose to ~100 nodes but expand to 9**9
# values for whatever walks the data ("billion laughs").
MAX_SPEC_NODES = 100_000


def _check_expansion(root: yaml.Node) -> None:
    """BadInput (no field: the caller names the file) when the node graph, every alias expanded, has more
    than MAX_SPEC_NODES nodes or an alias inside the node it refers to (a recursive structure). Each
    distinct node is visited once: the cost is that of the composed document, not of its expansion."""
    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    size: dict[int, int] = {}  # id(node) -> nodes in its expansion
    open_: set[int] = set()  # the nodes being expanded: the ancestors of the one visited
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, closing = stack.pop()
        if closing:
            open_.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children(node))
            if size[id(node)] > MAX_SPEC_NODES:
                raise BadInput(f"YAML anchors (&) and aliases (*) expand to more than {MAX_SPEC_NODES:,} values "
                               f"(near line {node.start_mark.line + 1}); aliases expanding beyond that bound are "
                               "not allowed in a spec")
            continue
        if id(node) in size:
            continue
        open_.add(id(node))
        stack.append((node, True))
        for child in children(node):
            if id(child) in open_:
                raise BadInput(f"the YAML anchor (&) at line {child.start_mark.line + 1} is referred to by an "
                               "alias (*) inside itself: recursive aliases are not allowed in a spec")
            if id(child) not in size:
                stack.append((child, False))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently, so a
    second `engine:` block would quietly replace the first), and aliases that expand beyond
    MAX_SPEC_NODES or into themselves (_check_expansion, before anything is constructed)."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given at line {seen[key]})", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
            except TypeError:
                continue  # an unhashable key: the base constructor reports it
        return super().construct_mapping(node, deep=deep)


def parse_spec(data: Any, source: str = "spec") -> Spec:
    if not isinstance(data, dict):
        raise BadInput("a spec must be a YAML mapping (key: value) at the top level", source)
    try:
        _refuse_references(data)
    except BadInput as exc:
        raise BadInput(f"{source}: invalid spec\n  {exc}") from None
    try:
        return Spec.model_validate(data)
    except ValidationError as err:
        raise BadInput(_format_validation_error(err, source)) from None


def read_spec_text(path: str | Path) -> str:
    """The text of the spec file at path, read at most once and within MAX_SPEC_BYTES; bad input naming the
    file when it is missing, not a regular file, too large, not UTF-8 or binary."""
    p = Path(path)
    if not p.exists():
        raise BadInput("spec file not found", str(path))
    if not p.is_file():  # a directory, FIFO or device (reading /dev/zero or a FIFO would never end)
        raise BadInput("not a regular file (a directory, FIFO or device); a spec is a YAML file", str(path))
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"cannot read the spec: {exc.strerror or exc}", str(path)) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise BadInput(f"larger than {MAX_SPEC_BYTES // 2**20} MiB, the bound for a spec (a deployment spec is a "
                       "few KB of YAML): not a spec file", str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"not a UTF-8 text file (undecodable byte at offset {exc.start}); a spec is YAML text",
                       str(path)) from None
    if "\x00" in text:
        raise BadInput("a binary file (it contains NUL bytes); a spec is YAML text", str(path))
    return text


def load_spec(path: str | Path) -> Spec:
    text = read_spec_text(path)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise BadInput(f"YAML syntax error{where}: {problem}", str(path)) from None
    except RecursionError:
        raise BadInput("YAML nested too deeply", str(path)) from None
    except BadInput as exc:  # from the loader, which cannot know the file
        raise BadInput(str(exc), str(path)) from None
    return parse_spec(data, source=str(path))
