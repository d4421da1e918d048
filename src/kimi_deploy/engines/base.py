"""What every engine renderer shares: the node role, the rendered command of one node, the environment
that multi-node runs need, and placeholders for values only known on the node (addresses, secrets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..spec import Spec

# Addresses known only at start-up. `render` prints these as shell references; `serve` fills them in.
HEAD = "${KIMI_HEAD_ADDR}"
PREFILL_HEAD = "${KIMI_PREFILL_HEAD_ADDR}"
DECODE_HEAD = "${KIMI_DECODE_HEAD_ADDR}"


def env_ref(name: str) -> str:
    """A reference to an environment variable (never its value)."""
    return "${" + name + "}"


@dataclass
class Addresses:
    """Head addresses of the deployment (the whole group, or each P/D side)."""

    head: str = HEAD
    prefill_head: str = PREFILL_HEAD
    decode_head: str = DECODE_HEAD


@dataclass
class RenderedNode:
    rank: int
    role: str  # single | head | worker | server | ray-head | ray-worker | prefill-* | decode-* | router
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    serves_http: bool = True  # False for headless workers (no HTTP at all)
    health_only: bool = False  # SGLang rank >= 1: a dummy /health on the port, no API
    setup: list[list[str]] = field(default_factory=list)  # commands run before argv (ray start)
    group: str = "serve"  # serve | prefill | decode | router
    features: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rank": self.rank, "role": self.role, "argv": self.argv, "env": self.env,
                             "serves_http": self.serves_http, "group": self.group}
        if self.setup:
            d["setup"] = self.setup
        return d


def network_env(spec: Spec, multi_node: bool, deepep: bool) -> dict[str, str]:
    """NCCL / Gloo / NVSHMEM settings from the spec's network section."""
    n = spec.network
    env: dict[str, str] = {}
    if n.socket_ifname:
        # Gloo picks the wrong NIC on InfiniBand hosts and hangs at init (engines.md §1.1).
        env["NCCL_SOCKET_IFNAME"] = n.socket_ifname
        env["GLOO_SOCKET_IFNAME"] = n.socket_ifname
    if n.ib_hca:
        env["NCCL_IB_HCA"] = n.ib_hca
    if deepep:
        # DeepEP's low-latency kernels talk GPU-initiated RDMA through NVSHMEM (NVSHMEM env reference).
        env["NVSHMEM_IB_ENABLE_IBGDA"] = "1"
        if n.ib_hca:
            env["NVSHMEM_HCA_LIST"] = n.ib_hca
    if multi_node:
        env.setdefault("NCCL_DEBUG", "WARN")
    env.update(spec.serving.env)
    return env


def model_path(spec: Spec) -> str:
    """What the engine loads: the staged weights dir, else the Hub id (a download at start-up)."""
    from ..spec import ModelRef, resolve_model

    if spec.weights.dir:
        return spec.weights.dir
    m = spec.model
    if isinstance(m, ModelRef):
        return m.path or m.repo or ""
    entry = resolve_model(m)[2]
    return entry.repo if entry else m


def served_name(spec: Spec) -> str:
    if spec.serving.served_model_name:
        return spec.serving.served_model_name
    entry = spec.model_entry()
    return entry.id if entry else spec.name


def thinking(spec: Spec) -> bool:
    if spec.serving.thinking is not None:
        return spec.serving.thinking
    entry = spec.model_entry()
    return bool(entry and entry.thinking)
