"""The engine profiles: every engine's knowledge as data (see base.py for the shape). Look one up with
`get_profile(name)`; `PROFILES` lists them in a stable order."""

from __future__ import annotations

from typing import Mapping

from ...errors import BadInput
from . import sglang, vllm
from .base import EngineProfile

PROFILES: Mapping[str, EngineProfile] = {p.name: p for p in (vllm.PROFILE, sglang.PROFILE)}
ENGINE_NAMES: tuple[str, ...] = tuple(PROFILES)


def get_profile(name: str) -> EngineProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise BadInput(f"unknown engine {name!r}; known: {', '.join(ENGINE_NAMES)}", "engine.name") from None


def others(name: str) -> list[EngineProfile]:
    """Every engine but this one (the alternatives a plan may offer)."""
    return [p for p in PROFILES.values() if p.name != name]


__all__ = ["ENGINE_NAMES", "PROFILES", "EngineProfile", "get_profile", "others"]
