"""Engine renderers: a spec becomes one command (argv + env) per node, for vLLM or SGLang."""

from __future__ import annotations

from ..plan import check_topology
from ..spec import Spec, plan_input
from . import sglang, vllm
from .base import Addresses, RenderedNode
from .versions import check_features


def render(spec: Spec, addrs: Addresses | None = None) -> list[RenderedNode]:
    """Every node's command, after refusing features the pinned engine version lacks."""
    addrs = addrs or Addresses()
    for group in (("prefill", "decode") if spec.topology.pd else (None,)):
        check_topology(plan_input(spec, group))  # the same topology rules as the planner
    module = vllm if spec.engine.name == "vllm" else sglang
    nodes = module.render(spec, addrs)
    entry = spec.model_entry()
    model_min = entry.min_vllm if (entry and spec.engine.name == "vllm") else None
    used = sorted({f for n in nodes for f in n.features})
    check_features(spec.engine.name, spec.engine.version, used, model_min, entry.id if entry else "")
    return nodes


__all__ = ["Addresses", "RenderedNode", "render"]
