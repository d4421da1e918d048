"""Engine features as a typed enum, and the check that refuses a spec pinning an engine too old for a
feature its rendered commands use. Each engine module declares its own minimum versions (a `Gate`
per feature it can emit); a renderer can only name a feature that exists here, so a typo is an
import-time error, not a surprise the day someone pins `engine.version`.

"≈" in a source marks a release inferred from a pull request's merge date rather than read from
release notes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping

from packaging.version import InvalidVersion, Version

from ..errors import BadInput


class Feature(str, Enum):
    """Something a rendered command relies on that not every engine release has."""

    TOOL_PARSER_KIMI_K2 = "tool parser kimi_k2"
    REASONING_PARSER_KIMI_K2 = "reasoning parser kimi_k2"
    TOOL_PARSER_KIMI_K3 = "tool parser kimi_k3"
    REASONING_PARSER_KIMI_K3 = "reasoning parser kimi_k3"
    SPECULATIVE_MTP = "MTP speculative decoding"
    EXPERT_PARALLEL = "expert parallel"
    MULTINODE_DATA_PARALLEL = "multi-node data parallel"
    DATA_PARALLEL_HYBRID_LB = "data parallel hybrid LB"
    EPLB = "eplb"
    DECODE_CONTEXT_PARALLEL = "decode context parallel"
    ALL2ALL_BACKEND_FLAG = "all2all backend flag"
    NATIVE_MULTINODE = "native multi-node (--nnodes)"
    DISTRIBUTED_TIMEOUT_FLAG = "distributed timeout flag"
    DP_ATTENTION = "dp attention"
    PD_DISAGGREGATION = "PD disaggregation"
    NIXL_PD = "NixlConnector P/D"
    CONFIG_FILE = "--config YAML file"
    SPECULATIVE_EAGLE3 = "EAGLE3 speculative decoding"
    SPECULATIVE_DSPARK = "DSpark speculative decoding"
    LANGUAGE_MODEL_ONLY = "--language-model-only"
    MM_ENCODER_TP_MODE = "multimodal encoder TP mode"
    LOAD_FORMAT_STREAMING = "streaming load format (fastsafetensors / runai_streamer)"
    KEY_GUARD = "every route behind the API key (--middleware kimi_deploy.engine_auth.RequireKey)"


# The parsers a rendered command can name, as (flag kind, parser name) -> the feature that gates it.
PARSER_FEATURES: dict[tuple[str, str], Feature] = {
    ("tool", "kimi_k2"): Feature.TOOL_PARSER_KIMI_K2,
    ("reasoning", "kimi_k2"): Feature.REASONING_PARSER_KIMI_K2,
    ("tool", "kimi_k3"): Feature.TOOL_PARSER_KIMI_K3,
    ("reasoning", "kimi_k3"): Feature.REASONING_PARSER_KIMI_K3,
}


@dataclass(frozen=True)
class Gate:
    minimum: str
    source: str


def parse_version(text: str, field: str = "engine.version") -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise BadInput(f"{text!r} is not a version like 0.12.0", field) from None


def check_features(*, engine: str, pinned: str | None, used: Iterable[Feature], gates: Mapping[Feature, Gate],
                   model_min: str | None = None, model: str = "",
                   requires: Iterable[tuple[str, str, str]] = ()) -> None:
    """Refuse when the pinned engine version predates the model, a feature the commands use, or another
    requirement (`requires`: (what, minimum, source), e.g. a draft model's)."""
    if not pinned:
        return
    have = parse_version(pinned)
    too_old = []
    if model_min and have < Version(model_min):
        too_old.append(f"{model} needs {engine} >= {model_min}")
    for what, minimum, source in requires:
        if have < Version(minimum):
            too_old.append(f"{what} needs {engine} >= {minimum} ({source})")
    for feature in sorted(set(used), key=lambda f: f.value):
        gate = gates[feature]  # a KeyError here is a bug: the engine emitted a feature it has no gate for
        if have < Version(gate.minimum):
            too_old.append(f"{feature.value} needs {engine} >= {gate.minimum} ({gate.source})")
    if too_old:
        raise BadInput(f"{engine} {pinned} is too old: " + "; ".join(too_old), "engine.version")
