"""Checkpoint weight formats of the Kimi K2 family: reading a config's `quantization_config` (or a ModelOpt
`hf_quant_config.json`) into a Quantization, deciding from the checkpoint's own ignore/exclude list which
linears are stored quantized, and the exact tensors (name suffix, shape, safetensors dtype) one quantized
nn.Linear is stored as.

Storage of each format, per [out_features, in_features] weight:
- fp8 (DeepSeek-V3 native, K2 config.json `quant_method: fp8`): `weight` F8_E4M3 [o, i] and
  `weight_scale_inv` F32 [ceil(o/128), ceil(i/128)].
- compressed-tensors FP8 block (RedHatAI *-FP8-BLOCK, `format: float-quantized`, strategy block): `weight`
  F8_E4M3 [o, i] and `weight_scale` [ceil(o/128), ceil(i/128)] in the weight's own dtype (BF16):
  compressed-tensors 0.17.0 quantization/lifecycle/initialize.py sets scale_dtype = the observed dtype.
- compressed-tensors INT4 (`pack-quantized`, K2-Thinking/K2.5/K2.6/K2.7-Code): `weight_packed` I32
  [o, i/8], `weight_scale` BF16 [o, i/group], `weight_shape` I64 [2].
- NVFP4 (FP4 E2M1 values, two per byte; one FP8 E4M3 scale per 16 values; FP32 global scales):
  ModelOpt stores `weight` U8 [o, i/2], `weight_scale` F8_E4M3 [o, i/16], `weight_scale_2` F32 [] and,
  for W4A4, `input_scale` F32 [] (docs.nvidia.com/nemo/automodel .../quantization/nvfp4: "two e2m1
  values per uint8 byte ... one float8_e4m3fn scale per 16 contiguous columns (weight_scale) and one
  float32 scale per tensor (weight_scale_2)"; vllm/model_executor/layers/quantization/modelopt.py).
  compressed-tensors `nvfp4-pack-quantized` names them `weight_packed`, `weight_scale`,
  `weight_global_scale` [1] and `input_global_scale` [1] (ISTA-DASLab/Kimi-K2.5-P48-NVFP4 card
  "Per-linear keys"; compressed-tensors quant_scheme.py NVFP4: group 16, FP8 E4M3 scales).
- MXFP4 (AMD Quark OCP MX): `weight` U8 [o, i/2] (E2M1, two per byte) and `weight_scale` U8 [o, i/32]
  (one E8M0 exponent per 32 values) (vllm quark/quark_moe.py QuarkOCP_MX_MoEMethod: uint8 weights packed
  2 per byte, uint8 scales, OCP_MX_BLOCK_SIZE 32; sglang quark_w4a4_mxfp4_moe.py OCP_MX_BLOCK_SIZE = 32).
  compressed-tensors `mxfp4-pack-quantized` (Kimi K3's QAT weights) stores the same bytes as
  `weight_packed` U8 [o, i/2] and `weight_scale` U8 [o, i/32], no global scale (vllm compressed_tensors/
  schemes/compressed_tensors_w4a4_mxfp4.py create_weights; `_is_mxfp4`: 4-bit float, group 32, symmetric).
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import BadInput

# Bytes per element of the safetensors dtypes we emit.
DTYPE_BYTES = {"BF16": 2, "F32": 4, "F8_E4M3": 1, "I32": 4, "I64": 8, "U8": 1}


class WeightFormat(str, Enum):
    """How the checkpoint stores its quantized linear weights."""

    BF16 = "bf16"
    FP8_BLOCK = "fp8-block"  # 128x128 blocks (K2 config.json; RedHatAI FP8-BLOCK)
    INT4_EXPERTS = "int4-experts"  # compressed-tensors W4A16 group 32 (K2.5 config.json)
    NVFP4 = "nvfp4"  # E2M1 + E4M3 per 16 + FP32 global (ModelOpt / compressed-tensors)
    MXFP4 = "mxfp4"  # E2M1 + E8M0 per 32 (AMD Quark OCP MX; compressed-tensors mxfp4-pack-quantized)


# Scope of a format when nothing else says so: DeepSeek-V3 FP8 quantizes every linear of the decoder
# layers (K2 config.json has no ignore list; lm_head stays BF16); the K2.5 INT4 ignore list keeps all but
# the routed experts BF16 (K2.5 config.json quantization_config.ignore [3p copy]).
INT4_K2_IGNORE = ("lm_head", "re:.*self_attn.*", "re:.*shared_experts.*",
                  "re:.*mlp\\.(gate|up|gate_up|down)_proj.*")


@dataclass(frozen=True)
class Quantization:
    """The storage format, its block / group size, the config dialect it came from (which fixes the tensor
    names) and the module patterns the checkpoint leaves unquantized."""

    format: WeightFormat = WeightFormat.BF16
    block: int = 128  # FP8 weight_block_size (K2 config.json quantization_config)
    group: int = 32  # INT4 / MXFP4 group 32, NVFP4 16
    method: str = "fp8"  # quant_method: fp8 | compressed-tensors | modelopt | quark
    # Not part of equality: exports spell the same split differently (wildcards, regexes, full names), and
    # `verify` compares a downloaded config.json with the catalog by ==; the inventory tests pin the split.
    ignore: tuple[str, ...] = field(default=(), compare=False)
    input_scales: bool = False  # W4A4 NVFP4 stores a static activation global scale per linear

    # --- which linears are quantized ---------------------------------------------------------------
    def quantizes(self, module: str) -> bool:
        """Whether the linear `module` (full name without `.weight`) is stored in this format."""
        if self.format is WeightFormat.BF16:
            return False
        return not any(_matches(module, p) for p in self.ignore)

    def format_of(self, module: str) -> WeightFormat:
        return self.format if self.quantizes(module) else WeightFormat.BF16

    # --- storage -----------------------------------------------------------------------------------
    def linear(self, module: str, out_f: int, in_f: int) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape, dtype) of every tensor one nn.Linear without bias is stored as."""
        fmt = self.format_of(module)
        if fmt is WeightFormat.FP8_BLOCK:
            b = self.block
            scale_shape = (math.ceil(out_f / b), math.ceil(in_f / b))
            if self.method == "compressed-tensors":
                return [(f"{module}.weight", (out_f, in_f), "F8_E4M3"),
                        (f"{module}.weight_scale", scale_shape, "BF16")]
            return [(f"{module}.weight", (out_f, in_f), "F8_E4M3"),
                    (f"{module}.weight_scale_inv", scale_shape, "F32")]
        if fmt is WeightFormat.INT4_EXPERTS:
            return [(f"{module}.weight_packed", (out_f, in_f // 8), "I32"),
                    (f"{module}.weight_scale", (out_f, in_f // self.group), "BF16"),
                    (f"{module}.weight_shape", (2,), "I64")]
        if fmt is WeightFormat.NVFP4:
            if self.method == "compressed-tensors":
                out = [(f"{module}.weight_packed", (out_f, in_f // 2), "U8"),
                       (f"{module}.weight_scale", (out_f, in_f // self.group), "F8_E4M3"),
                       (f"{module}.weight_global_scale", (1,), "F32")]
                return out + ([(f"{module}.input_global_scale", (1,), "F32")] if self.input_scales else [])
            out = [(f"{module}.weight", (out_f, in_f // 2), "U8"),
                   (f"{module}.weight_scale", (out_f, in_f // self.group), "F8_E4M3"),
                   (f"{module}.weight_scale_2", (), "F32")]
            return out + ([(f"{module}.input_scale", (), "F32")] if self.input_scales else [])
        if fmt is WeightFormat.MXFP4:
            packed = "weight_packed" if self.method == "compressed-tensors" else "weight"
            return [(f"{module}.{packed}", (out_f, in_f // 2), "U8"),
                    (f"{module}.weight_scale", (out_f, in_f // self.group), "U8")]
        return [(f"{module}.weight", (out_f, in_f), "BF16")]

    # --- parsing -----------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, qc: dict[str, Any] | None, field: str = "quantization_config") -> "Quantization":
        """Read a HF `quantization_config` block (or a ModelOpt hf_quant_config.json)."""
        if not qc:
            return cls(WeightFormat.BF16)
        if not isinstance(qc, dict):
            raise BadInput(f"must be an object, got a {type(qc).__name__}", field)
        method = qc.get("quant_method")
        if method is None and isinstance(qc.get("quantization"), dict):
            method = "modelopt"  # hf_quant_config.json has no quant_method, only {"producer", "quantization"}
        parser = _PARSERS.get(str(method))
        if parser is None:
            raise BadInput(f"unknown quant_method {method!r}; supported: {', '.join(_PARSERS)}",
                           f"{field}.quant_method")
        return parser(qc, field)


def _matches(module: str, pattern: str) -> bool:
    """compressed-tensors / vLLM semantics: `re:` patterns are re.match'ed against the full name
    (vllm compressed_tensors/utils.py should_ignore_layer); the rest are exact names, dotted suffixes
    (`lm_head` matches `language_model.lm_head`) or ModelOpt / Quark shell wildcards (`*self_attn*`,
    vllm modelopt.py is_layer_excluded uses fnmatch)."""
    if pattern.startswith("re:"):
        try:
            return re.match(pattern[3:], module) is not None
        except re.error:
            raise BadInput(f"ignore pattern {pattern!r} is not a valid regular expression",
                           "quantization_config.ignore") from None
    return module == pattern or module.endswith("." + pattern) or fnmatch.fnmatchcase(module, pattern)


def _patterns(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise BadInput("must be a list of module names / patterns", field)
    return tuple(value)


def _positive_int(value: Any, default: int, field: str) -> int:
    v = default if value is None else value
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise BadInput(f"must be a positive integer, got {v!r}", field)
    return v


def _fp8(qc: dict[str, Any], field: str) -> Quantization:
    block = qc.get("weight_block_size") or [128, 128]
    if not isinstance(block, list) or len(block) != 2 or block[0] != block[1]:
        raise BadInput("only square FP8 weight blocks are supported", f"{field}.weight_block_size")
    return Quantization(WeightFormat.FP8_BLOCK, block=_positive_int(block[0], 128, f"{field}.weight_block_size"),
                        method="fp8", ignore=_patterns(qc.get("modules_to_not_convert"),
                                                       f"{field}.modules_to_not_convert"))


def _compressed_tensors(qc: dict[str, Any], field: str) -> Quantization:
    groups = qc.get("config_groups") or {}
    if not isinstance(groups, dict) or not groups:
        raise BadInput("compressed-tensors config without config_groups", f"{field}.config_groups")
    if len(groups) > 1:
        raise BadInput("more than one compressed-tensors config group (mixed schemes) is not modelled",
                       f"{field}.config_groups")
    group = next(iter(groups.values()))
    if not isinstance(group, dict) or not isinstance(group.get("weights") or {}, dict):
        raise BadInput("a config group must be an object with a weights object", f"{field}.config_groups")
    weights = group.get("weights") or {}
    bits, kind = weights.get("num_bits"), weights.get("type", "int")
    fmt_name = group.get("format") or qc.get("format")
    ignore = _patterns(qc.get("ignore"), f"{field}.ignore")
    gfield = f"{field}.config_groups.weights"
    if bits == 4 and kind == "int":
        return Quantization(WeightFormat.INT4_EXPERTS, group=_positive_int(weights.get("group_size"), 32, gfield),
                            method="compressed-tensors", ignore=ignore)
    if bits == 4 and kind == "float":
        gs = _positive_int(weights.get("group_size"), 16, gfield)
        if gs == 32:  # MXFP4: E8M0 scale per 32 (vllm compressed_tensors.py _is_mxfp4)
            return Quantization(WeightFormat.MXFP4, group=32, method="compressed-tensors", ignore=ignore)
        if gs != 16:
            raise BadInput(f"FP4 with group_size {gs}: only NVFP4 (group 16) and MXFP4 (group 32) are "
                           "supported", gfield)
        return Quantization(WeightFormat.NVFP4, group=16, method="compressed-tensors", ignore=ignore,
                            input_scales=bool(group.get("input_activations")))
    if bits == 8 and kind == "float" and weights.get("strategy") == "block":
        block = weights.get("block_structure") or [128, 128]
        if not isinstance(block, list) or len(block) != 2 or block[0] != block[1]:
            raise BadInput("only square FP8 weight blocks are supported", f"{gfield}.block_structure")
        return Quantization(WeightFormat.FP8_BLOCK, block=_positive_int(block[0], 128, gfield),
                            method="compressed-tensors", ignore=ignore)
    raise BadInput(
        f"compressed-tensors scheme num_bits={bits!r} type={kind!r} strategy={weights.get('strategy')!r} "
        f"(format {fmt_name!r}) is not modelled; supported: INT4 pack-quantized, NVFP4 (4-bit float, "
        "group 16), MXFP4 (4-bit float, group 32), FP8 block", gfield)


def _modelopt(qc: dict[str, Any], field: str) -> Quantization:
    # Two dialects, as vllm modelopt.py ModelOptQuantConfigBase.from_config reads them: hf_quant_config.json
    # {"quantization": {"quant_algo", "group_size", "exclude_modules"}} and config.json
    # {"quant_method": "modelopt", "quant_algo", "group_size", "ignore"}.
    inner = qc.get("quantization") if isinstance(qc.get("quantization"), dict) else qc
    algo = str(inner.get("quant_algo") or "").upper()
    ignore = _patterns(inner.get("exclude_modules", inner.get("ignore")), f"{field}.ignore")
    if algo in ("NVFP4", "W4A16_NVFP4"):
        gs = _positive_int(inner.get("group_size"), 16, f"{field}.group_size")
        if gs != 16:
            raise BadInput(f"NVFP4 needs group_size 16, got {gs}", f"{field}.group_size")
        # W4A16_NVFP4 is weight-only: no input_scale (vllm modelopt.py: "W4A16_NVFP4 -> W4A16").
        return Quantization(WeightFormat.NVFP4, group=16, method="modelopt", ignore=ignore,
                            input_scales=algo == "NVFP4")
    raise BadInput(f"ModelOpt quant_algo {algo or None!r} is not modelled; supported: NVFP4, W4A16_NVFP4",
                   f"{field}.quant_algo")


def _quark(qc: dict[str, Any], field: str) -> Quantization:
    if qc.get("layer_quant_config") or qc.get("layer_type_quant_config"):
        raise BadInput("per-layer Quark schemes (layer_quant_config) are not modelled; only one global scheme",
                       f"{field}.layer_quant_config")
    g = qc.get("global_quant_config") or {}
    weight = g.get("weight") if isinstance(g, dict) else None
    if isinstance(weight, list):  # multi-stage weight specs (e.g. Quark NVFP4): first stage is the values
        weight = weight[0] if weight else None
    if not isinstance(weight, dict):
        raise BadInput("Quark config without global_quant_config.weight", f"{field}.global_quant_config")
    dtype, gs = weight.get("dtype"), weight.get("group_size")
    scale = weight.get("scale_format")
    # OCP MX FP4: fp4 values, per_group of 32, E8M0 scales (vllm quark/utils.py ocp_mx_weight_dtype_and_rows)
    if dtype == "fp4" and weight.get("qscheme") == "per_group" and gs == 32 and scale in (None, "e8m0"):
        return Quantization(WeightFormat.MXFP4, group=32, method="quark",
                            ignore=_patterns(qc.get("exclude"), f"{field}.exclude"))
    raise BadInput(f"Quark weight scheme dtype={dtype!r} group_size={gs!r} scale_format={scale!r} is not "
                   "modelled; supported: OCP MXFP4 (fp4, per_group 32, e8m0)", f"{field}.global_quant_config")


_PARSERS = {"fp8": _fp8, "compressed-tensors": _compressed_tensors, "modelopt": _modelopt, "quark": _quark}
