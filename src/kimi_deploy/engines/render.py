"""The renderers' driver: a Deployment becomes one command (argv + env) per node, for vLLM or SGLang.

The skeleton is written once here: each group's nodes from its engine, the P/D additions on both
sides, the profile's pinned environment on every engine node, the router last, then the version gates over
every feature the commands use."""

from __future__ import annotations

from typing import Mapping

from ..deployment import Deployment
from ..errors import BadInput
from . import sglang, vllm
from .base import Engine, RenderedNode, StartupFile, env_ref, head_refs
from .versions import check_features

ENGINES: Mapping[str, Engine] = {"vllm": vllm.ENGINE, "sglang": sglang.ENGINE}


def render(dep: Deployment, heads: Mapping[str, str] | None = None) -> list[RenderedNode]:
    """Every node's command. `heads` maps a group name to its head address; a group not named gets a
    ${...} reference that `serve` fills in on the node. Refuses features the pinned engine lacks."""
    engine = ENGINES[dep.engine]
    heads = {**head_refs(dep), **(heads or {})}
    nodes: list[RenderedNode] = []
    for g in dep.groups:
        group_nodes = engine.group_nodes(dep, g, heads[g.name], engine.pd_flags(dep, g) if dep.pd else [])
        if dep.pd:
            for node in group_nodes:
                node.features.append(engine.pd_feature)
        nodes += group_nodes
    for node in nodes:  # after the spec's serving.env: a pinned setting always wins
        node.env.update(dep.profile.pinned_env)
    if dep.router:
        nodes.append(engine.router(dep, {g.name: f"http://{heads[g.name]}:{g.port}" for g in dep.groups}))
    check_features(engine=dep.engine, pinned=dep.engine_version, used=[f for n in nodes for f in n.features],
                   gates=dep.profile.gates, model_min=dep.profile.model_min_version(dep.entry), model=dep.model,
                   requires=_draft_requirement(dep))
    return nodes


def _draft_requirement(dep: Deployment) -> list[tuple[str, str, str]]:
    """A published draft's own minimum engine release (drafts.py), or a refusal when that engine cannot
    load it at all."""
    sd = dep.speculative
    if sd is None or sd.entry is None:
        return []
    minimum = dep.profile.draft_min_version(sd.entry)
    if minimum is None:
        raise BadInput(f"{dep.engine} cannot load the draft {sd.entry.repo} ({sd.entry.source})", "speculative.draft")
    return [(f"the draft {sd.entry.repo}", minimum, sd.entry.source)]


__all__ = ["ENGINES", "RenderedNode", "StartupFile", "env_ref", "head_refs", "render"]
