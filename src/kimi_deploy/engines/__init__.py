"""Engine renderers: a spec becomes one command (argv + env) per node, for vLLM or SGLang."""

from __future__ import annotations

from ..spec import Spec
from . import sglang, vllm
from .base import Addresses, RenderedNode
from .versions import check_features


def render(spec: Spec, addrs: Addresses | None = None) -> list[RenderedNode]:
    """Every node's command, after refusing features the pinned engine version lacks."""
    addrs = addrs or Addresses()
    module = vllm if spec.engine.name == "vllm" else sglang
    nodes = module.render(spec, addrs)
    entry = spec.model_entry()
    model_min = entry.min_vllm if (entry and spec.engine.name == "vllm") else None
    used = sorted({f for n in nodes for f in n.features})
    check_features(spec.engine.name, spec.engine.version, used, model_min, entry.id if entry else "")
    return nodes


__all__ = ["Addresses", "RenderedNode", "render"]
