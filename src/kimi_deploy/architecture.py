"""The DeepSeek-V3-style architecture of the Kimi K2 family, read from a config.json, and the exact
inventory of tensors a checkpoint of it stores (names, shapes, dtypes), grouped into the components the
planner shards.

Tensor names and storage formats follow the real checkpoints (config.json `quantization_config` and
model.safetensors.index.json of huggingface.co/moonshotai/Kimi-K2-Instruct and moonshotai/Kimi-K2.5):
- FP8 checkpoints (K2-Base/Instruct/0905): every linear inside attention and the MLPs is e4m3 with a
  float32 `weight_scale_inv` per 128x128 block; embeddings, lm_head, norms and the router stay BF16, the
  router's `e_score_correction_bias` is float32.
- INT4 checkpoints (K2-Thinking, K2.5): compressed-tensors pack-quantized, only the routed experts are
  quantized (`weight_packed` int32 holding 8 nibbles, `weight_scale` bf16 per group of 32, `weight_shape`
  int64[2]); everything else is BF16.
- Vendor re-quantizations (see quant_formats.py for the storage of each): NVFP4 (NVIDIA ModelOpt, and
  compressed-tensors `nvfp4-pack-quantized`), MXFP4 (AMD Quark OCP MX) and compressed-tensors FP8 block.
  Which linears they quantize is read from the checkpoint's own ignore / exclude list, not assumed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import BadInput
from .quant_formats import DTYPE_BYTES, Quantization, WeightFormat

# The formats and their storage (Quantization, WeightFormat, DTYPE_BYTES) live in quant_formats.py.

@dataclass(frozen=True)
class VisionTower:
    """A ViT encoder plus projector (K2.5's MoonViT). Dims from the K2.5 config.json vision_config."""

    layers: int = 27
    hidden: int = 1152
    intermediate: int = 4304  # assumption: SigLIP-so400m MLP width, which MoonViT is initialised from
    patch: int = 14
    merge: int = 2  # patchmerger joins 2x2 patches before the projector
    text_hidden: int = 7168

    def params(self) -> int:
        """Parameters of encoder + projector (biases included; layernorms have weight and bias)."""
        h, i = self.hidden, self.intermediate
        per_layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
        patch_embed = 3 * self.patch * self.patch * h + h
        merged = h * self.merge * self.merge
        projector = 2 * merged + (merged * merged + merged) + (merged * self.text_hidden + self.text_hidden)
        return self.layers * per_layer + patch_embed + 2 * h + projector


@dataclass(frozen=True)
class Architecture:
    """The numbers of a DeepSeek-V3-style MoE text backbone, as named in config.json."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    n_routed_experts: int
    n_shared_experts: int
    num_experts_per_tok: int
    moe_intermediate_size: int
    intermediate_size: int
    first_k_dense_replace: int
    vocab_size: int
    max_position_embeddings: int
    moe_layer_freq: int = 1
    tie_word_embeddings: bool = False
    quantization: Quantization = field(default_factory=Quantization)
    vision: VisionTower | None = None
    # K2.5 nests the text model as `language_model.*` (moonshotai/Kimi-K2.5 model.safetensors.index.json).
    tensor_prefix: str = ""

    REQUIRED = (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
        "qk_rope_head_dim", "v_head_dim", "intermediate_size", "vocab_size",
    )
    # MoE fields: absent or 0 describes a dense model of the same attention architecture.
    MOE_FIELDS = ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size")

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str = "config.json",
                    hf_quant_config: dict[str, Any] | None = None) -> "Architecture":
        """Build from a HF config dict (top-level DeepseekV3 or a multimodal wrapper with text_config);
        `hf_quant_config` is a ModelOpt hf_quant_config.json, used when config.json has no
        quantization_config (vllm modelopt.py get_config_filenames: ["hf_quant_config.json"])."""
        text = config.get("text_config") or config
        missing = [k for k in cls.REQUIRED if k not in text]
        if missing:
            raise BadInput(
                f"not a DeepSeek-V3/Kimi-K2 architecture config: missing {', '.join(missing)}", source
            )
        for key in cls.REQUIRED:
            if not isinstance(text[key], int) or isinstance(text[key], bool) or text[key] <= 0:
                raise BadInput(f"{key} must be a positive integer, got {text[key]!r}", source)
        for key in cls.MOE_FIELDS:
            v = text.get(key) or 0
            if not isinstance(v, int) or v < 0:
                raise BadInput(f"{key} must be a non-negative integer, got {v!r}", source)
        qc = config.get("quantization_config") or text.get("quantization_config") or hf_quant_config
        vision = None
        if "vision_config" in config:
            vc = config["vision_config"]
            vision = VisionTower(
                layers=int(vc.get("num_hidden_layers", vc.get("depth", 27))),
                hidden=int(vc.get("hidden_size", 1152)),
                intermediate=int(vc.get("intermediate_size", 4304)),
                patch=int(vc.get("patch_size", 14)),
                text_hidden=int(text["hidden_size"]),
            )
        return cls(
            hidden_size=text["hidden_size"],
            num_hidden_layers=text["num_hidden_layers"],
            num_attention_heads=text["num_attention_heads"],
            q_lora_rank=text.get("q_lora_rank"),
            kv_lora_rank=text["kv_lora_rank"],
            qk_nope_head_dim=text["qk_nope_head_dim"],
            qk_rope_head_dim=text["qk_rope_head_dim"],
            v_head_dim=text["v_head_dim"],
            n_routed_experts=int(text.get("n_routed_experts") or 0),
            n_shared_experts=int(text.get("n_shared_experts") or 0),
            num_experts_per_tok=int(text.get("num_experts_per_tok") or 0),
            moe_intermediate_size=int(text.get("moe_intermediate_size") or 0),
            intermediate_size=text["intermediate_size"],
            first_k_dense_replace=int(text.get("first_k_dense_replace", 0)),
            moe_layer_freq=int(text.get("moe_layer_freq", 1)),
            vocab_size=text["vocab_size"],
            max_position_embeddings=int(text.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
            quantization=Quantization.from_config(qc),
            vision=vision,
            tensor_prefix="language_model." if "text_config" in config else "",
        )

    @classmethod
    def from_path(cls, path: str | Path) -> "Architecture":
        """Read a checkpoint directory or a config.json file."""
        p = Path(path)
        cfg = p / "config.json" if p.is_dir() else p
        if not cfg.is_file():
            raise BadInput("no config.json found (give a checkpoint directory or a config.json)", str(path))
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise BadInput("not UTF-8 text (a config.json is JSON)", str(cfg)) from None
        except json.JSONDecodeError as exc:
            raise BadInput(f"invalid JSON at line {exc.lineno}: {exc.msg}", str(cfg)) from None
        if not isinstance(data, dict):
            raise BadInput(f"must be a JSON object, got a {type(data).__name__}", str(cfg))
        return cls.from_config(data, source=str(cfg), hf_quant_config=_read_hf_quant_config(cfg.parent))

    # --- derived sizes -------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0 and self.moe_layers > 0

    def is_moe_layer(self, layer: int) -> bool:
        """DeepSeek-V3 rule: layers from first_k_dense_replace on, every moe_layer_freq, are MoE."""
        return (self.n_routed_experts > 0 and layer >= self.first_k_dense_replace
                and layer % self.moe_layer_freq == 0)

    @property
    def moe_layers(self) -> int:
        return sum(1 for i in range(self.num_hidden_layers) if self.is_moe_layer(i))

    @property
    def kv_latent_dim(self) -> int:
        """What MLA caches per token per layer: the compressed latent plus the shared rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


def _read_hf_quant_config(directory: Path) -> dict[str, Any] | None:
    """A ModelOpt checkpoint's hf_quant_config.json next to config.json, if there is one."""
    f = directory / "hf_quant_config.json"
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"not valid JSON: {exc}", str(f)) from None
    if not isinstance(data, dict):
        raise BadInput(f"must be a JSON object, got a {type(data).__name__}", str(f))
    return data


# --- tensor inventory -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]


def _linear(name: str, out_f: int, in_f: int, q: Quantization) -> list[Tensor]:
    """The tensors one nn.Linear (no bias) is stored as: quantized unless the checkpoint ignores it."""
    return [Tensor(n, shape, dtype) for n, shape, dtype in q.linear(name, out_f, in_f)]


@dataclass
class Component:
    """The unit the planner shards. `layer` is None outside the decoder stack. `attn_replicated` holds
    q_a/kv_a and the norms (whole on every rank), `attn_sharded` q_b/kv_b/o (split over attention TP)."""

    kind: str
    layer: int | None
    tensors: list[Tensor]

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def _mlp(prefix: str, hidden: int, inter: int, q: Quantization) -> list[Tensor]:
    return (
        _linear(f"{prefix}.gate_proj", inter, hidden, q)
        + _linear(f"{prefix}.up_proj", inter, hidden, q)
        + _linear(f"{prefix}.down_proj", hidden, inter, q)
    )


def iter_components(arch: Architecture, experts: bool = True) -> Iterator[Component]:
    """Every component of the checkpoint in file order. With experts=False the routed-expert
    components are yielded without tensors (useful for a quick byte count via expert_component_bytes)."""
    q = arch.quantization
    h = arch.hidden_size
    root = f"{arch.tensor_prefix}model"
    yield Component("embed", None, [Tensor(f"{root}.embed_tokens.weight", (arch.vocab_size, h), "BF16")])
    heads = arch.num_attention_heads
    qk_head = arch.qk_nope_head_dim + arch.qk_rope_head_dim
    for i in range(arch.num_hidden_layers):
        lp = f"{root}.layers.{i}"
        rep = [Tensor(f"{lp}.input_layernorm.weight", (h,), "BF16"),
               Tensor(f"{lp}.post_attention_layernorm.weight", (h,), "BF16")]
        shard: list[Tensor] = []
        a = f"{lp}.self_attn"
        if arch.q_lora_rank:
            rep += _linear(f"{a}.q_a_proj", arch.q_lora_rank, h, q)
            rep.append(Tensor(f"{a}.q_a_layernorm.weight", (arch.q_lora_rank,), "BF16"))
            shard += _linear(f"{a}.q_b_proj", heads * qk_head, arch.q_lora_rank, q)
        else:
            shard += _linear(f"{a}.q_proj", heads * qk_head, h, q)
        rep += _linear(f"{a}.kv_a_proj_with_mqa", arch.kv_latent_dim, h, q)
        rep.append(Tensor(f"{a}.kv_a_layernorm.weight", (arch.kv_lora_rank,), "BF16"))
        shard += _linear(f"{a}.kv_b_proj", heads * (arch.qk_nope_head_dim + arch.v_head_dim), arch.kv_lora_rank, q)
        shard += _linear(f"{a}.o_proj", h, heads * arch.v_head_dim, q)
        yield Component("attn_replicated", i, rep)
        yield Component("attn_sharded", i, shard)
        m = f"{lp}.mlp"
        if not arch.is_moe_layer(i):
            yield Component("dense_mlp", i, _mlp(m, h, arch.intermediate_size, q))
            continue
        yield Component("router", i, [
            Tensor(f"{m}.gate.weight", (arch.n_routed_experts, h), "BF16"),
            Tensor(f"{m}.gate.e_score_correction_bias", (arch.n_routed_experts,), "F32"),
        ])
        if arch.n_shared_experts:
            yield Component("shared_experts", i, _mlp(
                f"{m}.shared_experts", h, arch.moe_intermediate_size * arch.n_shared_experts, q))
        routed: list[Tensor] = []
        if experts:
            for e in range(arch.n_routed_experts):
                routed += _mlp(f"{m}.experts.{e}", h, arch.moe_intermediate_size, q)
        yield Component("routed_experts", i, routed)
    yield Component("final_norm", None, [Tensor(f"{root}.norm.weight", (h,), "BF16")])
    if not arch.tie_word_embeddings:
        lm = f"{arch.tensor_prefix}lm_head.weight"
        yield Component("lm_head", None, [Tensor(lm, (arch.vocab_size, h), "BF16")])
    if arch.vision is not None:
        # Stored BF16; counted as one opaque block (we do not model MoonViT's tensor names).
        n = arch.vision.params()
        yield Component("vision", None, [Tensor("vision_tower+mm_projector", (n,), "BF16")])


def expert_tensors(arch: Architecture, layer: int | None = None) -> list[Tensor]:
    """The tensors of one routed expert of `layer` (default: the first MoE layer), named as expert 0. Every
    expert of a layer is stored alike; an ignore list naming single experts is not modelled."""
    if layer is None:
        layer = next((i for i in range(arch.num_hidden_layers) if arch.is_moe_layer(i)), 0)
    prefix = f"{arch.tensor_prefix}model.layers.{layer}.mlp.experts.0"
    return _mlp(prefix, arch.hidden_size, arch.moe_intermediate_size, arch.quantization)


@dataclass(frozen=True)
class Inventory:
    """Component bytes and parameter counts, computed without materialising every expert tensor."""

    components: tuple[tuple[str, int | None, int, int], ...]  # (kind, layer, params, bytes)

    @classmethod
    def of(cls, arch: Architecture) -> "Inventory":
        rows = []
        for c in iter_components(arch, experts=False):
            if c.kind == "routed_experts":
                one = expert_tensors(arch, c.layer)
                rows.append((c.kind, c.layer, sum(t.numel for t in one) * arch.n_routed_experts,
                             sum(t.nbytes for t in one) * arch.n_routed_experts))
            else:
                rows.append((c.kind, c.layer, c.params, c.nbytes))
        return cls(tuple(rows))

    @property
    def total_params(self) -> int:
        return sum(r[2] for r in self.components)

    @property
    def total_bytes(self) -> int:
        return sum(r[3] for r in self.components)


def logical_params(arch: Architecture) -> int:
    """Parameters of the unquantized text model (what transformers' DeepseekV3ForCausalLM holds,
    counting the e_score_correction_bias buffer), independent of storage format."""
    plain = Architecture(**{**arch.__dict__, "quantization": Quantization(WeightFormat.BF16), "vision": None})
    return Inventory.of(plain).total_params
