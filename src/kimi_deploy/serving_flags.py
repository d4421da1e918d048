"""The one table from `serving:` fields to engine flags and planner inputs.

A row says, for one spec field: the vLLM flag, the SGLang flag (with a value map where the engines
spell values differently) and the PlanInput field it feeds. Adding a serving field to the spec and a
row here is all it takes for the value to reach both engines' commands (and so every launcher and
manifest, which run those commands) and the plan; tests/test_deployment.py fails when a Serving field
is neither in this table nor in HANDLED_ELSEWHERE.

Flag names are the engines' own: vLLM vllm/engine/arg_utils.py, SGLang python/sglang/srt/server_args.py
(both checked against the installed parsers by tests/test_launch_parsers.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import BadInput


@dataclass(frozen=True)
class Flag:
    """How one engine takes a value: the flag, an optional value map, and values that mean "leave the
    engine's default" (the flag is then omitted)."""

    name: str
    values: Mapping[str, str] | None = None  # spec value -> engine value; a value not in the map is omitted
    omit: tuple[Any, ...] = ()
    switch: bool = False  # a store_true flag: the name alone, when the value is set (and not omitted)
    # value -> the name of the engines.versions.Feature it relies on (a name, not the enum: this table is
    # imported by deployment.py, which the engines package imports; tests check every name exists)
    features: Mapping[Any, str] | None = None

    def accepts(self, value: Any) -> bool:
        return self.values is None or value in self.omit or value in self.values

    def argv(self, value: Any) -> list[str]:
        if value is None or value is False or value in self.omit:
            return []
        if self.values is not None:
            if value not in self.values:
                return []
            value = self.values[value]
        return [self.name] if self.switch else [self.name, str(value)]

    def feature(self, value: Any) -> str | None:
        if not self.argv(value) or not self.features:
            return None
        return self.features.get(value)


@dataclass(frozen=True)
class Row:
    field: str  # the Serving field
    vllm: Flag | None = None  # None: this engine has no such setting (setting the field is an error)
    sglang: Flag | None = None
    plan: str | None = None  # the PlanInput field it feeds
    doc: str = field(default="", compare=False)

    def flag(self, engine: str) -> Flag | None:
        return self.vllm if engine == "vllm" else self.sglang


# SGLang spells the KV dtypes its own way (python/sglang/srt/server_args.py --kv-cache-dtype choices).
SGLANG_KV_DTYPE = {"fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2", "bfloat16": "bf16", "bf16": "bf16"}

SERVING_FLAGS: tuple[Row, ...] = (
    Row("max_model_len", vllm=Flag("--max-model-len"), sglang=Flag("--context-length"), plan="max_model_len",
        doc="context length; default: the catalog's, else config.json's max_position_embeddings"),
    Row("max_num_seqs", vllm=Flag("--max-num-seqs"), sglang=Flag("--max-running-requests"), plan="max_num_seqs",
        doc="concurrent sequences per engine instance (vLLM: per DP rank)"),
    Row("max_num_batched_tokens", vllm=Flag("--max-num-batched-tokens"), sglang=Flag("--chunked-prefill-size"),
        plan="max_num_batched_tokens", doc="tokens per scheduler step / prefill chunk"),
    Row("gpu_memory_utilization", vllm=Flag("--gpu-memory-utilization"), plan="gpu_memory_utilization",
        doc="vLLM's share of each GPU's memory"),
    Row("mem_fraction_static", sglang=Flag("--mem-fraction-static"), plan="gpu_memory_utilization",
        doc="SGLang's share of each GPU's memory for weights and KV pool"),
    Row("kv_cache_dtype", vllm=Flag("--kv-cache-dtype", omit=("auto",)),
        sglang=Flag("--kv-cache-dtype", values=SGLANG_KV_DTYPE, omit=("auto",)), plan="kv_cache_dtype",
        doc="KV cache element type"),
    # vLLM --language-model-only (vllm/config/multimodal.py); SGLang --language-model-only ("Skip the
    # multimodal encoder entirely", python/sglang/srt/server_args.py, sgl-project/sglang#28497).
    Row("language_model_only",
        vllm=Flag("--language-model-only", omit=(False,), switch=True, features={True: "LANGUAGE_MODEL_ONLY"}),
        sglang=Flag("--language-model-only", omit=(False,), switch=True, features={True: "LANGUAGE_MODEL_ONLY"}),
        plan="language_model_only", doc="skip the vision tower: text only, its memory goes to the KV cache"),
    # vLLM --mm-encoder-tp-mode {weights,data}; SGLang's data-parallel encoder is --mm-enable-dp-encoder.
    Row("mm_encoder_tp_mode",
        vllm=Flag("--mm-encoder-tp-mode", features={"data": "MM_ENCODER_TP_MODE",
                                                    "weights": "MM_ENCODER_TP_MODE"}),
        sglang=Flag("--mm-enable-dp-encoder", values={"data": "data"}, omit=("weights",), switch=True,
                    features={"data": "MM_ENCODER_TP_MODE"}),
        doc="vision encoder split: weights (TP-sharded) or data (replicated, images split)"),
    Row("load_format",
        vllm=Flag("--load-format", omit=("auto",), features={"fastsafetensors": "LOAD_FORMAT_STREAMING",
                                                             "runai_streamer": "LOAD_FORMAT_STREAMING"}),
        sglang=Flag("--load-format", omit=("auto",), features={"fastsafetensors": "LOAD_FORMAT_STREAMING",
                                                               "runai_streamer": "LOAD_FORMAT_STREAMING"}),
        doc="checkpoint loader; sets the start-up budget's load rate (startup.py)"),
)

# Serving fields that are not a plain flag: each has its own rule in the engine modules.
HANDLED_ELSEWHERE = frozenset({
    "host", "port",  # every node's bind address; P/D sides take port+1 / port+2 (deployment.py)
    "served_model_name",  # resolved once in deployment.py
    "api_key_env",  # a secret: each engine's own delivery (never a command-line value)
    "tool_call_parser", "thinking",  # parsers from the catalog entry (deployment.py)
    "env", "extra_args",  # passed through as given
})


def resolve_values(serving: Any, engine: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """{field: value} of every table field this engine takes, with `defaults` filling unset ones.
    A field set in the spec that the engine has no flag for is bad input (it would be silently lost)."""
    values: dict[str, Any] = {}
    for row in SERVING_FLAGS:
        value = getattr(serving, row.field)
        if row.flag(engine) is None:
            if value is not None:
                other = next((r.field for r in SERVING_FLAGS if r.plan == row.plan and r.flag(engine)), None)
                hint = f"; {engine} takes serving.{other}" if other else ""
                raise BadInput(f"{engine} has no such setting{hint}", f"serving.{row.field}")
            continue
        flag = row.flag(engine)
        if value is not None and flag is not None and not flag.accepts(value):
            allowed = ", ".join([*flag.omit, *(flag.values or {})])
            raise BadInput(f"{engine} has no {value!r}; allowed: {allowed}", f"serving.{row.field}")
        if value is None:
            value = defaults.get(row.field)
        if value is not None:
            values[row.field] = value
    return values


def flags(engine: str, values: Mapping[str, Any]) -> list[str]:
    """The table's flags for this engine, in table order."""
    argv: list[str] = []
    for row in SERVING_FLAGS:
        flag = row.flag(engine)
        if flag is not None and row.field in values:
            argv += flag.argv(values[row.field])
    return argv


def features(engine: str, values: Mapping[str, Any]) -> list[str]:
    """The names of the versioned features (engines.versions.Feature) this engine's flags rely on."""
    out = []
    for row in SERVING_FLAGS:
        flag = row.flag(engine)
        if flag is not None and row.field in values:
            f = flag.feature(values[row.field])
            if f is not None:
                out.append(f)
    return out


def plan_fields(engine: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The PlanInput keyword arguments the table's values feed."""
    return {row.plan: values[row.field] for row in SERVING_FLAGS
            if row.plan and row.flag(engine) is not None and row.field in values}
