"""The `serving:` fields that become engine flags and planner inputs.

A row names one spec field, the PlanInput field it feeds and what it means; each engine profile
(engines/profiles/) holds its own flag for the field, or none (the engine has no such setting). Adding a
serving field is a Serving field in spec.py, a row here and a flag in each profile that has one; the value
then reaches both engines' commands (and so every launcher and manifest) and the plan.
tests/test_deployment.py fails when a Serving field is neither in this table nor in HANDLED_ELSEWHERE."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .engines.profiles import PROFILES, EngineProfile
from .engines.versions import Feature
from .errors import BadInput


@dataclass(frozen=True)
class Row:
    field: str  # the Serving field
    plan: str | None = None  # the PlanInput field it feeds
    doc: str = field(default="", compare=False)


SERVING_FLAGS: tuple[Row, ...] = (
    Row("max_model_len", plan="max_model_len",
        doc="context length; default: the catalog's, else config.json's max_position_embeddings"),
    Row("max_num_seqs", plan="max_num_seqs", doc="concurrent sequences per engine instance (vLLM: per DP rank)"),
    Row("max_num_batched_tokens", plan="max_num_batched_tokens", doc="tokens per scheduler step / prefill chunk"),
    Row("gpu_memory_utilization", plan="gpu_memory_utilization", doc="vLLM's share of each GPU's memory"),
    Row("mem_fraction_static", plan="gpu_memory_utilization",
        doc="SGLang's share of each GPU's memory for weights and KV pool"),
    Row("kv_cache_dtype", plan="kv_cache_dtype", doc="KV cache element type"),
    Row("language_model_only", plan="language_model_only",
        doc="skip the vision tower: text only, its memory goes to the KV cache"),
    Row("mm_encoder_tp_mode", doc="vision encoder split: weights (TP-sharded) or data (replicated, images split)"),
    Row("load_format", doc="checkpoint loader; sets the start-up budget's load rate (startup.py)"),
    Row("state_dtype", plan="state_dtype",
        doc="hybrid models (K3, Kimi-Linear): the KDA recurrent state's dtype; bfloat16 halves it"),
    Row("prefix_caching", plan="prefix_caching",
        doc="prefix caching on or off; for hybrid models, the state slots each running sequence holds"),
)

# Serving fields that are not a plain flag: each has its own rule in the engine modules.
HANDLED_ELSEWHERE = frozenset({
    "host", "port",  # every node's bind address; P/D sides take port+1 / port+2 (deployment.py)
    "served_model_name",  # resolved once in deployment.py
    "api_key_env",  # a secret: each engine's own delivery (never a command-line value)
    "metrics_without_key",  # what the key guard leaves open (Deployment.metrics_served, each renderer, k8s.py)
    "tool_call_parser", "thinking",  # parsers from the catalog entry (deployment.py)
    "env", "extra_args",  # passed through as given
})


def resolve_values(serving: Any, profile: EngineProfile, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """{field: value} of every table field this engine takes, with `defaults` filling unset ones.
    A field set in the spec that the engine has no flag for is bad input (it would be silently lost)."""
    values: dict[str, Any] = {}
    for row in SERVING_FLAGS:
        value = getattr(serving, row.field)
        flag = profile.flags.get(row.field)
        if flag is None:
            if value is not None:
                other = next((r.field for r in SERVING_FLAGS if row.plan and r.plan == row.plan and r.field in profile.flags),
                             None)
                takers = [p.display for p in PROFILES.values() if row.field in p.flags]
                hint = (f"; {profile.name} takes serving.{other}" if other
                        else f"; it is a setting of {', '.join(takers)}" if takers else "")
                raise BadInput(f"{profile.name} has no such setting{hint}", f"serving.{row.field}")
            continue
        if value is not None and not flag.accepts(value):
            allowed = ", ".join([*flag.omit, *(flag.values or {})])
            raise BadInput(f"{profile.name} has no {value!r}; allowed: {allowed}", f"serving.{row.field}")
        if value is None:
            value = defaults.get(row.field)
        if value is not None:
            values[row.field] = value
    return values


def flags(profile: EngineProfile, values: Mapping[str, Any]) -> list[str]:
    """The engine's flags for the values, in table order."""
    argv: list[str] = []
    for row in SERVING_FLAGS:
        flag = profile.flags.get(row.field)
        if flag is not None and row.field in values:
            argv += flag.argv(values[row.field])
    return argv


def features(profile: EngineProfile, values: Mapping[str, Any]) -> list[Feature]:
    """The versioned features the engine's flags for these values rely on."""
    out = []
    for row in SERVING_FLAGS:
        flag = profile.flags.get(row.field)
        if flag is not None and row.field in values:
            f = flag.feature(values[row.field])
            if f is not None:
                out.append(f)
    return out


def plan_fields(profile: EngineProfile, values: Mapping[str, Any]) -> dict[str, Any]:
    """The PlanInput keyword arguments the values feed."""
    return {row.plan: values[row.field] for row in SERVING_FLAGS
            if row.plan and row.field in profile.flags and row.field in values}
