"""Draft models for speculative decoding (EAGLE3 for the Kimi K2 family, DSpark for Kimi K3): the few
numbers of a draft's config.json the planner needs (layers, hidden size, vocabularies, attention shape,
sliding window, whether it stores its own embeddings), for the published drafts as a small cited table
(the Hub is not reachable from every machine that plans), and read from config.json for a draft given as
a local directory.

An EAGLE3 draft is a one-layer decoder fed the target's hidden states: EAGLE3 concatenates three of the
target's layers (`fc`: 3 x hidden -> hidden) and the first layer's attention takes [embeds, hidden] (2 x
hidden wide), vllm-project/vllm vllm/model_executor/models/llama_eagle3.py and deepseek_eagle3.py. Its
lm_head covers `draft_vocab_size` tokens (a `d2t` int64 map scatters them back into the target vocabulary).

A DSpark draft (vLLM 0.32 vllm/model_executor/models/qwen3_dspark.py on qwen3_dflash.py; SGLang 0.5.23
srt/models/dspark.py) is a few Qwen3-style GQA layers drafting a whole block of tokens in parallel: `fc`
(ReplicatedLinear) projects the concatenated hidden states of `aux_hidden_state_layer_ids` target layers to
hidden, each layer's q/k/v take hidden (not 2 x hidden), and a Markov head (an embedding vocab x rank,
replicated, and a vocab-parallel rank -> draft vocabulary head) plus a small confidence head sit beside
the lm_head. Sliding-window layers keep at most the window of KV per sequence."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInput

BF16 = 2  # every published Kimi draft is stored bfloat16 (config.json torch_dtype / dtype)

# The speculative methods a draft model serves (spec.py Speculative.method); "mtp" has no separate draft.
EAGLE3, DSPARK = "eagle3", "dspark"


@dataclass(frozen=True)
class DraftArch:
    """The draft's shape. `attention` is "mla" (DeepSeek-V3 MLA, Eagle3DeepseekV2ForCausalLM) or "gqa"
    (Llama attention, LlamaForCausalLMEagle3; Qwen3 attention in a DSpark draft). `method` is the
    speculative method it drafts for (EAGLE3 or DSPARK)."""

    attention: str
    layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    draft_vocab_size: int
    own_embeddings: bool  # the checkpoint stores embed_tokens (else the engine shares the target's)
    num_attention_heads: int
    num_key_value_heads: int = 0  # gqa
    head_dim: int = 0  # gqa
    q_lora_rank: int = 0  # mla
    kv_lora_rank: int = 0  # mla
    qk_nope_head_dim: int = 0  # mla
    qk_rope_head_dim: int = 0  # mla
    v_head_dim: int = 0  # mla
    method: str = EAGLE3
    aux_layers: int = 3  # target layers whose hidden states `fc` concatenates (EAGLE3: 3)
    sliding_window: int = 0  # tokens of KV a sliding-window layer keeps per sequence (0: every token)
    markov_rank: int = 0  # DSpark's Markov head rank (0: none)
    confidence_head: bool = False  # DSpark's acceptance-confidence head (hidden [+ rank] -> 1)
    block_size: int = 0  # DSpark: the block of tokens it was trained to draft (its num_speculative_tokens)

    # --- weights -----------------------------------------------------------------------------------
    def components(self) -> dict[str, int]:
        """Bytes by how the engines shard them: "replicated" (norms, fc, MLA's q_a/kv_a, DSpark's Markov
        embedding and confidence head), "attn" (split over attention TP), "mlp" (split over TP), "vocab"
        (embed_tokens, lm_head and DSpark's Markov output head, vocab-parallel)."""
        if self.method == DSPARK:
            return self._dspark_components()
        h = self.hidden_size
        rep = 3 * h * h + 3 * h  # fc (3h -> h, ReplicatedLinear) + input/hidden/final norms
        if self.attention == "mla":
            heads = self.num_attention_heads
            rep += 2 * h * self.q_lora_rank + self.q_lora_rank  # q_a_proj (2h wide input) + its norm
            rep += 2 * h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank  # kv_a + norm
            attn = (self.q_lora_rank * heads * (self.qk_nope_head_dim + self.qk_rope_head_dim)
                    + self.kv_lora_rank * heads * (self.qk_nope_head_dim + self.v_head_dim)
                    + heads * self.v_head_dim * h)
        else:
            q = self.num_attention_heads * self.head_dim
            kv = self.num_key_value_heads * self.head_dim
            attn = 2 * h * (q + 2 * kv) + q * h  # q/k/v from [embeds, hidden], o_proj
        mlp = 3 * h * self.intermediate_size
        vocab = self.draft_vocab_size * h + (self.vocab_size * h if self.own_embeddings else 0)
        out = {"replicated": rep * BF16, "attn": attn * BF16 * self.layers, "mlp": mlp * BF16 * self.layers,
               "vocab": vocab * BF16}
        if self.draft_vocab_size < self.vocab_size:
            out["replicated"] += self.draft_vocab_size * 8 + self.vocab_size  # d2t int64, t2d bool
        return out

    def _dspark_components(self) -> dict[str, int]:
        """A Qwen3-style DSpark draft (vllm qwen3_dflash.py DFlashQwen3Model + qwen3_dspark.py heads):
        fc (aux_layers x hidden -> hidden, ReplicatedLinear), hidden_norm, final norm and the mask embedding
        (replicated); per layer QKVParallelLinear from hidden, o_proj, q_norm/k_norm and two RMSNorms
        (attention TP) and a Qwen3MLP (TP); the Markov head's markov_w1 (nn.Embedding vocab x rank,
        replicated) and markov_w2 (ParallelLMHead rank -> draft vocabulary); the confidence head
        (ReplicatedLinear hidden [+ rank] -> 1)."""
        h, r = self.hidden_size, self.markov_rank
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        rep = self.aux_layers * h * h + 3 * h + self.vocab_size * r
        if self.confidence_head:
            rep += h + r + 1
        attn = h * (q + 2 * kv) + q * h + 2 * self.head_dim + 2 * h
        mlp = 3 * h * self.intermediate_size
        vocab = self.draft_vocab_size * (h + r) + (self.vocab_size * h if self.own_embeddings else 0)
        out = {"replicated": rep * BF16, "attn": attn * BF16 * self.layers, "mlp": mlp * BF16 * self.layers,
               "vocab": vocab * BF16}
        if self.draft_vocab_size < self.vocab_size:
            out["replicated"] += self.draft_vocab_size * 8 + self.vocab_size  # d2t int64, t2d bool
        return out

    @property
    def total_bytes(self) -> int:
        return sum(self.components().values())

    def bytes_per_gpu(self, tp: int, attention_tp: int, target_embeddings: bool = False) -> int:
        """What one GPU holds: both engines build the draft with the target's tensor-parallel group
        (vLLM: VocabParallelEmbedding / ParallelLMHead and a ReplicatedLinear fc in
        vllm/model_executor/models/llama_eagle3.py and deepseek_eagle3.py). `target_embeddings`: the engine
        always swaps in the target's embed_tokens and frees the draft's (SGLang EAGLE3: set_embed in
        python/sglang/srt/speculative/eagle_worker_v2.py init_lm_head). vLLM shares them only when the
        draft stores none or an identical copy (vllm/v1/spec_decode/llm_base_proposer.py
        _maybe_share_embeddings), which cannot be known before loading: stored ones are counted."""
        c = self.components()
        vocab = c["vocab"] - (self.vocab_size * self.hidden_size * BF16
                              if target_embeddings and self.own_embeddings else 0)
        return c["replicated"] + c["attn"] // attention_tp + c["mlp"] // tp + vocab // tp

    # --- KV cache ----------------------------------------------------------------------------------
    def kv_bytes_per_token(self, kv_bytes: float, attention_tp: int, max_model_len: int | None = None) -> int:
        """KV one GPU caches per token for the draft's layers: MLA's latent (the same on every rank),
        or GQA K and V for this rank's share of the KV heads (replicated when TP exceeds them).

        Sliding-window layers keep at most `sliding_window` tokens per sequence (vLLM SlidingWindowSpec,
        SGLang's SWA pool), so against a request of `max_model_len` tokens their per-token size is scaled by
        min(window, max_model_len) / max_model_len: exact for a request of max_model_len, which is what the
        planner's KV tokens and concurrency are counted for (shorter requests pay a larger share)."""
        if self.attention == "mla":
            per_layer = (self.kv_lora_rank + self.qk_rope_head_dim) * kv_bytes
        else:
            heads = max(1, self.num_key_value_heads // attention_tp)
            per_layer = 2 * heads * self.head_dim * kv_bytes
        full = per_layer * self.layers
        if self.sliding_window and max_model_len and self.sliding_window < max_model_len:
            return math.ceil(full * self.sliding_window / max_model_len)
        return int(full)

    def kv_bytes_per_sequence(self, kv_bytes: float, attention_tp: int, max_model_len: int) -> int:
        """KV one GPU holds for one sequence of max_model_len tokens (the window, for sliding layers)."""
        if self.attention == "mla":
            per_layer = (self.kv_lora_rank + self.qk_rope_head_dim) * kv_bytes
        else:
            per_layer = 2 * max(1, self.num_key_value_heads // attention_tp) * self.head_dim * kv_bytes
        tokens = min(self.sliding_window, max_model_len) if self.sliding_window else max_model_len
        return int(per_layer * self.layers * tokens)

    # --- reading a config.json -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict[str, Any], source: str) -> "DraftArch":
        archs = config.get("architectures") or []
        if config.get("speculators_model_type") == DSPARK or any("DSpark" in str(a) for a in archs):
            return cls._dspark_from_config(config, source)
        mla = "kv_lora_rank" in config or any("Deepseek" in a for a in archs)

        def need(key: str) -> int:
            v = config.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise BadInput(f"{key} must be a positive integer in an EAGLE3 draft config, got {v!r}", source)
            return v

        common = dict(layers=need("num_hidden_layers"), hidden_size=need("hidden_size"),
                      intermediate_size=need("intermediate_size"), vocab_size=need("vocab_size"),
                      num_attention_heads=need("num_attention_heads"))
        draft_vocab = config.get("draft_vocab_size") or common["vocab_size"]
        # A local directory tells whether embed_tokens is stored: its index (or single file) is read.
        own = _stores_embeddings(Path(source).parent) if source.endswith("config.json") else True
        if mla:
            return cls(attention="mla", draft_vocab_size=int(draft_vocab), own_embeddings=own,
                       q_lora_rank=need("q_lora_rank"), kv_lora_rank=need("kv_lora_rank"),
                       qk_nope_head_dim=need("qk_nope_head_dim"), qk_rope_head_dim=need("qk_rope_head_dim"),
                       v_head_dim=need("v_head_dim"), **common)
        heads = common["num_attention_heads"]
        head_dim = config.get("head_dim") or common["hidden_size"] // heads
        return cls(attention="gqa", draft_vocab_size=int(draft_vocab), own_embeddings=own,
                   num_key_value_heads=int(config.get("num_key_value_heads") or heads), head_dim=int(head_dim),
                   **common)

    @classmethod
    def _dspark_from_config(cls, config: dict[str, Any], source: str) -> "DraftArch":
        """A Qwen3-style DSpark draft: the speculators format (RedHatAI/Kimi-K3-speculator.dspark: the layer
        shape under `transformer_layer_config`, `aux_hidden_state_layer_ids` at the top; vllm
        transformers_utils/configs/speculators/algos.py update_dspark), or a flat config (Qwen3DSparkModel,
        SGLang's DSparkDraftModel: the target layers in `dflash_config.target_layer_ids`,
        `dspark_target_layer_ids` or `target_layer_ids`)."""
        layer = config.get("transformer_layer_config") or config
        if not isinstance(layer, dict):
            raise BadInput(f"transformer_layer_config must be an object, got {layer!r}", source)
        if "kv_lora_rank" in layer:
            raise BadInput("an MLA DSpark draft (K3DSparkModel, e.g. Inferact/Kimi-K3-DSpark) is not modelled by "
                           "the planner; use a Qwen3-style DSpark draft such as RedHatAI/Kimi-K3-speculator.dspark",
                           source)

        def need(key: str, where: dict[str, Any] = layer) -> int:
            v = where.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise BadInput(f"{key} must be a positive integer in a DSpark draft config, got {v!r}", source)
            return v

        dflash = config.get("dflash_config") if isinstance(config.get("dflash_config"), dict) else {}
        aux = (config.get("aux_hidden_state_layer_ids") or dflash.get("target_layer_ids")
               or config.get("dspark_target_layer_ids") or config.get("target_layer_ids"))
        if not isinstance(aux, list) or not aux:
            raise BadInput("a DSpark draft config names the target layers it reads (aux_hidden_state_layer_ids, "
                           "dflash_config.target_layer_ids or target_layer_ids); none found", source)
        heads, hidden = need("num_attention_heads"), need("hidden_size")
        # Every layer sliding: the window bounds the KV per sequence; a mix (or none) is planned as full.
        types = layer.get("layer_types")
        sliding = (all(t == "sliding_attention" for t in types) if isinstance(types, list) and types
                   else bool(layer.get("use_sliding_window")))
        window = layer.get("sliding_window") if sliding else 0
        markov = config.get("markov_rank", 0) if config.get("markov_head_type", "vanilla") else 0
        block = config.get("block_size") or config.get("dspark_block_size") or 0
        vocab = need("vocab_size")
        own = _stores_embeddings(Path(source).parent) if source.endswith("config.json") else True
        return cls(attention="gqa", method=DSPARK, layers=need("num_hidden_layers"), hidden_size=hidden,
                   intermediate_size=need("intermediate_size"), vocab_size=vocab,
                   draft_vocab_size=int(config.get("draft_vocab_size") or vocab), own_embeddings=own,
                   num_attention_heads=heads, num_key_value_heads=int(layer.get("num_key_value_heads") or heads),
                   head_dim=int(layer.get("head_dim") or hidden // heads), aux_layers=len(aux),
                   sliding_window=int(window or 0), markov_rank=int(markov or 0),
                   confidence_head=bool(config.get("enable_confidence_head")), block_size=int(block))

    @classmethod
    def from_path(cls, path: str) -> "DraftArch":
        p = Path(os.path.expanduser(path))
        cfg = p / "config.json"
        if not p.is_dir():
            raise BadInput("draft directory not found (give a Hub repo id or a local directory with config.json)",
                           "speculative.draft")
        if not cfg.is_file():
            raise BadInput(f"no config.json in the draft directory {path}", "speculative.draft")
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadInput(f"not a JSON config ({exc})", str(cfg)) from None
        if not isinstance(data, dict):
            raise BadInput("must be a JSON object", str(cfg))
        return cls.from_config(data, str(cfg))


def _stores_embeddings(directory: Path) -> bool:
    """Whether a local draft checkpoint holds embed_tokens (index, else the single file's header)."""
    index = directory / "model.safetensors.index.json"
    try:
        if index.is_file():
            names = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        elif (directory / "model.safetensors").is_file():
            from .weights import read_safetensors_header
            names, _ = read_safetensors_header(directory / "model.safetensors")
        else:
            return True  # nothing to read yet (not downloaded): count them, the safe side
    except (OSError, ValueError, BadInput):
        return True
    return any("embed_tokens" in n for n in names)


@dataclass(frozen=True)
class Draft:
    """A published draft: its shape, the targets it was trained for and the engine releases that run it."""

    repo: str
    arch: DraftArch
    targets: tuple[str, ...]  # catalog ids
    min_vllm: str | None  # None: vLLM cannot load it (or nobody says it can)
    min_sglang: str | None
    source: str
    vllm_refused: str = ""  # why vLLM cannot load it, when min_vllm is None
    sglang_refused: str = ""  # why SGLang cannot load it, when min_sglang is None


# The two shapes every published Kimi draft has. MLA: Eagle3DeepseekV2ForCausalLM, 1 layer, the K2 MLA
# dims, intermediate 18432, vocab 163840, tie_word_embeddings false (config.json of k-l-lambda/Kimi-K2.5-
# Eagle3 on the Hub, an export of the lightseekorg K2.5 MLA draft); embed_tokens stored in full
# ([163840, 7168], k-l-lambda/kimi-k2.7-code-eagle3-mla README, which keeps "embed_tokens full" and
# derives from the lightseek K2.6 export).
_MLA = DraftArch(attention="mla", layers=1, hidden_size=7168, intermediate_size=18432, vocab_size=163840,
                 draft_vocab_size=163840, own_embeddings=True, num_attention_heads=64, q_lora_rank=1536,
                 kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
# GQA (SpecForge): LlamaForCausalLMEagle3, 1 layer, hidden 7168, 64 heads, 64 KV heads, head_dim 128,
# intermediate 18432, vocab 163840, draft_vocab_size 32000 (sgl-project/SpecForge configs/kimi-k2-eagle3.json
# and configs/kimi-k25-eagle3.json, the configs the AQ-MedAI drafts were trained from). Whether the published
# checkpoints store embed_tokens is not stated: counted (the safe side for memory).
_GQA = DraftArch(attention="gqa", layers=1, hidden_size=7168, intermediate_size=18432, vocab_size=163840,
                 draft_vocab_size=32000, own_embeddings=True, num_attention_heads=64, num_key_value_heads=64,
                 head_dim=128)

# DSpark for K3 (speculators format, DSparkDraftModel -> vLLM's Qwen3DSparkModel): config.json of
# RedHatAI/Kimi-K3-speculator.dspark as quoted in a TensorRT-LLM test's SPECULATORS_CONFIG (the Hub is not
# reachable here): 5 qwen3 layers, all sliding_attention with sliding_window 2048, hidden 7168, 96 heads,
# 16 KV heads, head_dim 64, intermediate 14336, vocab and draft_vocab_size 163840, 5
# aux_hidden_state_layer_ids [24, 48, 72, 88, 92], markov_rank 256 (vanilla), enable_confidence_head,
# block_size 8, bfloat16. Whether it stores embed_tokens is not stated: counted (the safe side).
_DSPARK_K3 = DraftArch(attention="gqa", method=DSPARK, layers=5, hidden_size=7168, intermediate_size=14336,
                       vocab_size=163840, draft_vocab_size=163840, own_embeddings=True, num_attention_heads=96,
                       num_key_value_heads=16, head_dim=64, aux_layers=5, sliding_window=2048, markov_rank=256,
                       confidence_head=True, block_size=8)
_K3_FAMILY = ("kimi-k3", "kimi-k3-nvfp4", "kimi-k3-fp8-block")

_K25_FAMILY = ("kimi-k2.5", "kimi-k2.6", "kimi-k2.7-code", "kimi-k2.6-nvfp4", "kimi-k2.5-nvfp4")

DRAFTS: dict[str, Draft] = {d.repo.lower(): d for d in [
    # Card: "vLLM >= 0.18.0"; "MLA Eagle3 draft model is not yet supported in SGLang" at release
    # (huggingface.co/lightseekorg/kimi-k2.5-eagle3-mla); SGLang runs the MLA EAGLE3 drafts by 0.5.14
    # (huggingface.co/lightseekorg/kimi-k2.7-coder-eagle3.1-mla: "The run used SGLang 0.5.14").
    Draft("lightseekorg/kimi-k2.5-eagle3-mla", _MLA, _K25_FAMILY, "0.18.0", "0.5.14",
          "huggingface.co/lightseekorg/kimi-k2.5-eagle3-mla model card"),
    # "The optimized B300 EAGLE3 and native CPU KV offload path requires vLLM >= 0.25.0"
    # (vllm-project/recipes models/moonshotai/Kimi-K2.6.yaml, which runs this draft).
    Draft("lightseekorg/kimi-k2.6-eagle3-mla", _MLA, _K25_FAMILY, "0.25.0", "0.5.14",
          "vllm-project/recipes Kimi-K2.6.yaml: K2.6 EAGLE3 path needs vLLM >= 0.25.0"),
    # EAGLE3.1 adds fc_norm / norm_output: "Requires vLLM with PR #42764 and PR #43482 for fc_norm support"
    # (huggingface.co/lightseekorg/kimi-k2.6-eagle3.1-mla). #43482 came after #42476 (merged 2026-05-18);
    # vLLM 0.22.0 was uploaded to PyPI 2026-05-29 and 0.23.0 on 2026-06-15: 0.23.0 (≈) is the safe minimum.
    Draft("lightseekorg/kimi-k2.6-eagle3.1-mla", _MLA, _K25_FAMILY, "0.23.0", "0.5.14",
          "huggingface.co/lightseekorg/kimi-k2.6-eagle3.1-mla: vLLM PRs #42764 and #43482 (≈0.23.0)"),
    Draft("lightseekorg/kimi-k2.7-coder-eagle3.1-mla", _MLA, ("kimi-k2.7-code",), "0.23.0", "0.5.14",
          "huggingface.co/lightseekorg/kimi-k2.7-coder-eagle3.1-mla: SGLang 0.5.14 run; EAGLE3.1 needs vLLM "
          "#42764/#43482 (≈0.23.0)"),
    # AQ-MedAI SpecForge drafts: "pip install sglang==0.5.6" (huggingface.co/AQ-MedAI/Kimi-K2-Instruct-eagle3);
    # vLLM's EAGLE3 for a Kimi target as for the MLA drafts (0.18.0).
    Draft("AQ-MedAI/Kimi-K2-Instruct-eagle3", _GQA, ("kimi-k2-instruct", "kimi-k2-instruct-0905"), "0.18.0", "0.5.6",
          "huggingface.co/AQ-MedAI/Kimi-K2-Instruct-eagle3 model card"),
    Draft("AQ-MedAI/Kimi-K25-eagle3", _GQA, _K25_FAMILY, "0.18.0", "0.5.6",
          "huggingface.co/AQ-MedAI/Kimi-K25-eagle3 model card (SGLang launch flags)"),
    Draft("AQ-MedAI/Kimi-K2.7-Code-eagle3", _GQA, ("kimi-k2.7-code",), "0.18.0", "0.5.6",
          "huggingface.co/AQ-MedAI/Kimi-K2.7-Code-eagle3 model card (SGLang launch flags)"),
    # vllm-project/recipes models/moonshotai/Kimi-K3.yaml (@2c22f3f, min_vllm_version 0.27.1; @8959cf6) runs it
    # with num_speculative_tokens 8, method dspark. SGLang 0.5.23 reads no speculators-format config (nothing
    # under sglang/srt reads transformer_layer_config; its DSPARK path parses a flat draft config,
    # srt/speculative/dspark_components/dspark_config.py): a flat DSpark draft directory works there instead.
    Draft("RedHatAI/Kimi-K3-speculator.dspark", _DSPARK_K3, _K3_FAMILY, "0.27.1", None,
          "vllm-project/recipes Kimi-K3.yaml: min_vllm_version 0.27.1, dspark with this draft",
          sglang_refused="SGLang 0.5.23 does not read the speculators-format config (transformer_layer_config); "
                         "give a DSpark draft directory with a flat config.json instead"),
]}


def get_draft(repo: str) -> Draft | None:
    return DRAFTS.get(repo.strip().lower())


def draft_repos() -> list[str]:
    return sorted(d.repo for d in DRAFTS.values())
