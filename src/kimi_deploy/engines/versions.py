"""The minimum engine version of every feature the launchers emit, and the check that refuses a spec
pinning an engine too old for what it asks. Versions come from engines.md's merge dates; "≈" marks a
release inferred from a merge date rather than read from release notes."""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from ..errors import BadInput

VLLM_FEATURES: dict[str, tuple[str, str]] = {
    # feature: (minimum version, source)
    "tool parser kimi_k2": ("0.10.0", "#20789 2025-07-11; K2R deploy guide: vLLM >= v0.10.0rc1"),
    "reasoning parser kimi_k2": ("0.11.1", "#28128 2025-11-05 (≈0.11.1); K2VV: >= 0.11.1rc6 for K2-Thinking"),
    "expert parallel": ("0.8.0", "#14305 2025-03-06 (≈0.8.0)"),
    "multi-node data parallel": ("0.9.0", "#15977 2025-05-13 (≈0.9.0)"),
    "data parallel hybrid LB": ("0.10.1", "#21238 2025-07-23 (≈0.10.1)"),
    "eplb config": ("0.10.2", "#20562 2025-08-20 (≈0.10.2)"),
    "decode context parallel": ("0.11.0", "#23734 2025-09-06 (≈0.11.0)"),
    "all2all backend flag": ("0.11.1", "#26732 2025-10-13 (≈0.11.1)"),
    "native multi-node (--nnodes)": ("0.12.0", "#23691 2025-11-16 (≈v0.12.0)"),
    "distributed timeout flag": ("0.17.0", "#36047 2026-03-05 (≈0.17.0)"),
    "NixlConnector P/D": ("0.9.0", "V1 KV connector API #15960 2025-04 (≈0.9.0)"),
}

SGLANG_FEATURES: dict[str, tuple[str, str]] = {
    "tool parser kimi_k2": ("0.4.9", "#7940 2025-07-11 (≈0.4.9)"),
    "reasoning parser kimi_k2": ("0.5.5", "#12702 2025-11-06 (≈0.5.5); K2VV: >= 0.5.5.post2 for K2-Thinking"),
    "dp attention": ("0.4.0", "#1970 2024-11"),
    "moe a2a backend flag": ("0.5.0", "#8658 2025-08-01 (≈0.5.0) replaced --enable-deepep-moe"),
    "PD disaggregation": ("0.4.5", "#4654 2025-03-21 (≈0.4.5)"),
    "eplb": ("0.4.7", "#6469 2025-05-21 (≈0.4.7)"),
}


def parse_version(text: str, field: str = "engine.version") -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise BadInput(f"{text!r} is not a version like 0.12.0", field) from None


def check_features(engine: str, pinned: str | None, used: list[str], model_min: str | None = None,
                   model: str = "") -> None:
    """Refuse when the pinned engine version predates a feature the rendered commands use."""
    if not pinned:
        return
    have = parse_version(pinned)
    table = VLLM_FEATURES if engine == "vllm" else SGLANG_FEATURES
    too_old = []
    if model_min and have < Version(model_min):
        too_old.append(f"{model} needs {engine} >= {model_min}")
    for feature in used:
        minimum, source = table[feature]
        if have < Version(minimum):
            too_old.append(f"{feature} needs {engine} >= {minimum} ({source})")
    if too_old:
        raise BadInput(f"{engine} {pinned} is too old: " + "; ".join(too_old), "engine.version")
