"""The shape of an engine profile: everything the planner, the resolver and the manifests need to know
about one serving engine, as data. One module per engine fills it in (vllm.py, sglang.py next to this
one); nothing outside `engines/` branches on an engine's name, it asks the profile.

This floor imports only the catalog's data types and the quantization formats, so the planner, the spec
and the resolver can all read it without an import cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from packaging.version import Version

from ...quant_formats import Quantization
from ..versions import Feature, Gate, parse_version

# Bytes per cached value for each --kv-cache-dtype spelling the spec accepts (the choices of
# vllm/config/cache.py CacheDType and of sglang python/sglang/srt/server_args.py --kv-cache-dtype).
KV_DTYPE_BYTES: Mapping[str, float] = {
    "auto": 2, "bfloat16": 2, "bf16": 2, "float16": 2,
    "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1,
}
# vLLM's fp8_ds_mla layout: 512 fp8 latent + 4 fp32 scales + 64 bf16 rope = 656 bytes per token-layer
# (vllm FlashMLA sparse/fp8 cache format, as in vllm #51041's discussion).
FP8_DS_MLA = "fp8_ds_mla"
FP8_DS_MLA_BYTES_PER_TOKEN_LAYER = 656
KV_DTYPES: tuple[str, ...] = (*KV_DTYPE_BYTES, FP8_DS_MLA)


def kv_value_bytes(kv_dtype: str) -> float:
    """Bytes per cached value (fp8_ds_mla: one, its scales and rope part are counted per token-layer)."""
    return 1.0 if kv_dtype == FP8_DS_MLA else KV_DTYPE_BYTES[kv_dtype]


# --- the serving-flag column ----------------------------------------------------------------------

@dataclass(frozen=True)
class Flag:
    """How one engine takes a serving value: the flag, an optional value map, and values that mean
    "leave the engine's default" (the flag is then omitted)."""

    name: str
    values: Mapping[str, str] | None = None  # spec value -> engine value; a value not in the map is omitted
    omit: tuple[Any, ...] = ()
    switch: bool = False  # a store_true flag: the name alone, when the value is set (and not omitted)
    features: Mapping[Any, Feature] | None = None  # value -> the versioned feature it relies on
    off: str | None = None  # the flag a False value is (a --no-X form, or a --disable-X switch)

    def accepts(self, value: Any) -> bool:
        return self.values is None or value in self.omit or value in self.values

    def argv(self, value: Any) -> list[str]:
        if value is False and self.off and value not in self.omit:
            return [self.off]
        if value is None or value is False or value in self.omit:
            return []
        if self.values is not None:
            if value not in self.values:
                return []
            value = self.values[value]
        return [self.name] if self.switch else [self.name, str(value)]

    def feature(self, value: Any) -> Feature | None:
        if not self.argv(value) or not self.features:
            return None
        return self.features.get(value)


# --- weight kernels -------------------------------------------------------------------------------

NATIVE, FALLBACK, EMULATED, WEIGHT_ONLY, REFUSED = "native", "fallback", "emulated", "weight-only", "refused"


@dataclass(frozen=True)
class KernelPath:
    """How an engine runs a checkpoint's quantized linears on one GPU microarchitecture. Memory is the same
    on every path (fallbacks repack the stored weights in place, emulation dequantizes one layer at a time),
    so the planner's weight bytes stand whatever the path."""

    path: str  # native | fallback | emulated | weight-only | refused
    detail: str  # the kernel, or the engine's reason for refusing, with its source

    @property
    def refused(self) -> bool:
        return self.path == REFUSED


ANY_GPU: tuple[str, ...] = ()  # a kernel rule that applies on every microarchitecture
# Per format, the kernel paths in order: the first rule naming the GPU's microarchitecture (or ANY_GPU)
# applies. A format or GPU no rule covers was not checked against the engine's code. A (format, method)
# key (e.g. MXFP4 from compressed-tensors, K3's, against MXFP4 from AMD Quark) takes precedence over the
# format's own rules: the engines load the two through different code.
KernelTable = Mapping[Any, tuple[tuple[tuple[str, ...], KernelPath], ...]]
UNCHECKED = KernelPath(EMULATED, "not checked for this device")


def kernel_path(table: KernelTable, arch: str, q: Quantization) -> KernelPath:
    """How an engine with this kernel table runs format `q` on microarchitecture `arch`."""
    rules = table.get((q.format, q.method)) or table.get(q.format, ())
    return next((path for archs, path in rules if not archs or arch in archs), UNCHECKED)


# --- defaults, per engine release -----------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Layout:
    """What an engine's defaults depend on: the GPU and the parallel layout of one instance."""

    gpu_memory_gib: float
    gpu_arch: str
    tp: int
    pp: int
    dp: int
    dp_attention: bool


@dataclass(frozen=True, kw_only=True)
class Defaults:
    """What the engine uses for a setting the spec leaves unset, from release `since` on. A callable
    computes it as the engine does: batched tokens and sequences from the layout, the memory fraction from
    the layout and the two settings as resolved."""

    since: str  # the first release these apply to ("0" for the oldest known)
    max_num_batched_tokens: int | Callable[[Layout], int]
    max_num_seqs: int | Callable[[Layout], int]
    memory_fraction: float | Callable[[Layout, int, int], float]  # (layout, batched tokens, seqs)
    source: str


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The engine settings one plan is computed for: the spec's values, the engine's defaults for the rest."""

    memory_fraction: float
    max_num_batched_tokens: int
    max_num_seqs: int
    defaults_from: str  # which Defaults row filled the unset ones


def since(version: str | None, release: str) -> bool:
    """Whether the pinned release (None: the newest) has what arrived in `release`."""
    return version is None or parse_version(version) >= Version(release)


def pick_defaults(rows: tuple[Defaults, ...], version: str | None) -> Defaults:
    """The row for a pinned release (the newest whose `since` it has reached); unpinned, the newest row
    (the newest engine release is what an unpinned image pulls)."""
    ordered = sorted(rows, key=lambda d: Version(d.since))
    if version is None:
        return ordered[-1]
    have = parse_version(version)
    eligible = [d for d in ordered if Version(d.since) <= have]
    return eligible[-1] if eligible else ordered[0]


# --- the overhead model ---------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class OverheadInput:
    """What the engine's memory use besides weights and KV cache depends on (one GPU of one instance)."""

    settings: Settings
    engine_version: str | None  # the pinned release; None: the newest
    layout: Layout
    gpu_memory_bytes: int
    on_cpu: bool
    gpus: int  # GPUs the deployment's collectives span
    expert_parallel: bool
    hidden_size: int
    vocab_size: int
    num_experts_per_tok: int
    moe_intermediate_size: int  # 0 for a dense model
    speculative_tokens: int  # tokens a draft proposes per sequence and step (0 without speculative decoding)


@dataclass(frozen=True, kw_only=True)
class Overhead:
    """Per-GPU bytes by term. `inside_budget` terms come out of the engine's memory fraction;
    `outside_budget` terms must fit in what the fraction leaves, and `outside_allowance` is that room."""

    inside_budget: Mapping[str, int]
    outside_budget: Mapping[str, int] = field(default_factory=dict)
    outside_allowance: int = 0
    sources: Mapping[str, str] = field(default_factory=dict)


# Activation peak per token of a forward pass: about a dozen hidden-size bf16 buffers live at once
# (residual, normed input, attention in/out, MLP in/out, all-reduce staging). Calibrated with vLLM's
# K2-Thinking TP8 recipe log (vllm-project/recipes Kimi-K2-Think.md); the same forward runs in SGLang.
ACT_HIDDEN_BUFFERS = 12


def forward_bytes(o: OverheadInput, tokens: int) -> tuple[int, int]:
    """(activations, MoE workspace) on one GPU for a forward over `tokens` tokens: the hidden-size buffers,
    and the fused MoE's gate/up output and down input for each token's routed experts (whole experts
    with expert parallelism, a TP shard of each without)."""
    moe_inter = o.moe_intermediate_size // (1 if o.expert_parallel else o.layout.tp)
    act = tokens * o.hidden_size * 2 * ACT_HIDDEN_BUFFERS
    moe = tokens * o.num_experts_per_tok * (2 * moe_inter + o.hidden_size) * 2 if o.moe_intermediate_size else 0
    return act, moe


# --- topology -------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class TopologyRules:
    """How the engine lays a model over GPUs, as far as the planner and the resolver need it."""

    # SGLang --enable-dp-attention: DP splits attention inside one TP group (world = TP x PP, one engine
    # instance, attention at TP/DP, embeddings replicated). Without it, DP ranks are whole replicas.
    dp_attention: bool
    dp_attention_hint: str = ""  # what to use instead, for an engine without it
    decode_context_parallel: bool = False
    # vLLM spreads experts over EP = TP x DP ranks; SGLang's --ep-size is the TP size.
    expert_parallel_spans_dp: bool
    # The DP+EP layout on n GPUs: (tp, dp, dp_attention).
    dp_ep: Callable[[int], tuple[int, int, bool]]
    draft_uses_target_embeddings: bool
    kv_block_tokens: int | None  # the KV allocation granularity the token count is rounded down to
    speculative_tree: bool  # drafts a tree (eagle_topk, num_draft_tokens) or only a chain
    # speculative method -> why it cannot run with pipeline parallelism (a method not named composes with PP)
    speculative_with_pp: Mapping[str, str]
    # methods that do run with PP on the prefill side of a P/D deployment (only there)
    speculative_pp_on_prefill: tuple[str, ...] = ()
    # None: the engine drafts with a hybrid (K3) checkpoint's own MTP layers; else why not
    hybrid_mtp_refused: str | None = None
    pd_transports: tuple[str, ...]


# --- hybrid models: KV blocks and recurrent-state slots ---------------------------------------------------

# The recurrent (SSM) state's element type: a serving field both engines take (vLLM --mamba-ssm-cache-dtype,
# SGLang --mamba-ssm-dtype); "auto" is each engine's default, float32 for KDA in both.
STATE_DTYPES = ("auto", "float32", "bfloat16")
STATE_DTYPE_BYTES = {"auto": 4, "float32": 4, "bfloat16": 2}


@dataclass(frozen=True, kw_only=True)
class HybridInput:
    """One pipeline stage of a hybrid (KDA + MLA) model on one GPU, and the memory left for its cache."""

    free_bytes: int  # what the memory fraction leaves for KV cache and state on the tightest GPU
    mla_layers: int  # full-attention layers on the stage (each caches kv_bytes_per_token_layer per token)
    kda_layers: int  # KDA layers on the stage (each keeps a state per sequence)
    kv_bytes_per_token_layer: int
    kda_heads: int
    kda_head_dim: int
    conv_kernel: int
    attention_tp: int  # the ranks the KDA heads are split over
    speculative_tokens: int  # drafted tokens per step (0 without a draft)
    max_model_len: int
    state_dtype: str  # one of STATE_DTYPES
    prefix_caching: bool = True  # both engines cache prefixes of hybrid models unless told not to
    # Under pipeline parallelism: the stage's layers as positions among the whole model's MLA / KDA layers
    # (None: 0..count-1), the whole model's counts (None: the stage's), and the most KDA layers any stage holds
    # (None: this stage's). The engines size some things for the whole model, not the stage.
    mla_positions: tuple[int, ...] | None = None
    kda_positions: tuple[int, ...] | None = None
    model_mla_layers: int | None = None
    model_kda_layers: int | None = None
    max_stage_kda_layers: int | None = None
    full_rank_gate: bool = True  # K3's KDA (False: Kimi-Linear's low-rank gate, another layer class)
    conv_bytes: int = 2  # the conv state is kept in the model dtype (BF16) by both engines
    dcp: int = 1

    def positions(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The stage's (MLA, KDA) layers as positions among the model's layers of their kind."""
        return (self.mla_positions if self.mla_positions is not None else tuple(range(self.mla_layers)),
                self.kda_positions if self.kda_positions is not None else tuple(range(self.kda_layers)))

    def conv_state_bytes(self, extra_rows: int = 0) -> int:
        """One KDA layer's short-convolution state for one sequence: K-1 (+ extra) rows of the q, k and v
        channels, split over attention TP."""
        channels = 3 * self.kda_heads * self.kda_head_dim // self.attention_tp
        return (self.conv_kernel - 1 + extra_rows) * channels * self.conv_bytes

    def recurrent_state_bytes(self) -> int:
        """One KDA layer's recurrent state for one sequence: [heads/TP, head_dim, head_dim]."""
        return (self.kda_heads // self.attention_tp) * self.kda_head_dim ** 2 * STATE_DTYPE_BYTES[self.state_dtype]


@dataclass(frozen=True, kw_only=True)
class HybridCapacity:
    """What the engine makes of the memory: the KV tokens it reports, the sequences it runs at once, the
    state one sequence holds on this GPU and the sequences whose state fits."""

    kv_tokens: int | None  # None: the stage caches no tokens (no MLA layer on it)
    max_concurrency: float
    state_bytes_per_sequence: int  # every KDA layer's state, one slot, on this GPU
    state_slots_per_sequence: int  # slots a running sequence holds (prefix caching, drafts)
    state_sequences: int  # sequences whose state fits in the memory
    block_tokens: int | None = None  # vLLM's attention block after page-size unification
    detail: Mapping[str, Any] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)


# --- what the engine exports about itself -------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Metrics:
    """The engine's Prometheus metrics bench keeps (names without a `_total` suffix), and the counters of
    its own prefix-cache hit rate."""

    keep: tuple[str, ...]
    prefix_cache_hits: str  # counter, tokens
    prefix_cache_queries: str  # counter, tokens
    prefix_cache_gauge: str | None = None  # a hit-rate gauge to fall back on (recent batches only)
    # (info gauge, label): whether the engine has prefix caching on at all
    prefix_caching_info: tuple[str, str] | None = None


# --- what answers without the API key ------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class KeyGuard:
    """How the engine's HTTP server keeps its routes behind the API key when a deployment sets one: with
    kimi-deploy's guard (kimi_deploy/engine_auth.py) where the engine loads ASGI middleware, else the
    engine's own check, whose gaps are stated here."""

    middleware: str | None  # import path of the guard the engine loads; None: the engine's own check only
    open_paths: tuple[str, ...]  # answered without the key: liveness/readiness (the probes' path among them)
    metrics_path: str
    # False: once metrics are on, the engine serves them to anyone (so with a key they are on only by opt-in,
    # serving.metrics_without_key)
    metrics_behind_key: bool
    source: str


@dataclass(frozen=True, kw_only=True)
class RouterAuth:
    """What the P/D router needs besides its api_key to check clients' keys and to pass the key on to the
    engines; kimi_deploy.routers sets it inside the router's process (never on argv)."""

    key_env: str | None  # the router sends this variable's value to the engines as its bearer token
    validation_field: str | None  # parsed-argument field: URLs a client's bearer token is checked against (200 = valid)
    validation_path: str  # the path on each decode engine those URLs name (the engines answer 200 only with the key)
    urls_field: str  # parsed-argument field holding the decode engines' URLs
    health_needs_key: bool  # the router asks for the key on its health routes too (so probes check the port)
    source: str


# --- the profile ----------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class EngineProfile:
    """One engine, as data. Adding an engine is one more of these (and its renderer in engines/)."""

    name: str
    display: str
    flags: Mapping[str, Flag]  # Serving field -> this engine's flag; a field not here: no such setting
    defaults: tuple[Defaults, ...]
    # The Serving field that sets the engine's memory fraction (its flag is in `flags`); what the fraction
    # holds besides weights and KV cache is the overhead model's `inside_budget`.
    memory_fraction_field: str
    overhead: Callable[[OverheadInput], Overhead]
    topology: TopologyRules
    kernel_table: KernelTable
    gates: Mapping[Feature, Gate]
    model_min_version: Callable[[Any], str | None]  # catalog entry -> minimum release, if any
    draft_min_version: Callable[[Any], str | None]  # draft entry -> minimum release, None = cannot load
    readiness_probe_timeout_s: int  # how long one /health call may take while the engine is busy
    router_module: str | None  # the P/D router's Python module (parse_router_args, launch_router)
    distributions: tuple[str, ...]  # the Python distributions the engine installs as (for its version)
    stock_images: tuple[str, ...]  # the project's official images, which do not contain kimi-deploy
    metrics: Metrics
    # How memory becomes KV blocks and state slots for a hybrid (KDA + MLA) model.
    hybrid_capacity: Callable[[HybridInput], HybridCapacity]
    key_guard: KeyGuard
    router_auth: RouterAuth | None = None  # None: the router checks clients' keys with its api_key alone
    # Variables every engine node gets with exactly this value, whatever the environment or serving.env
    # holds (a spec setting another value is refused): settings that must never be on in a deployment.
    pinned_env: Mapping[str, str] = field(default_factory=dict)
    # draft entry -> why this engine cannot load it (when draft_min_version is None)
    draft_refusal: Callable[[Any], str] = lambda draft: ""

    def settings(self, *, version: str | None, layout: Layout, memory_fraction: float | None,
                 max_num_batched_tokens: int | None, max_num_seqs: int | None) -> Settings:
        """The spec's values, with this engine's defaults (for the pinned release) for the unset ones."""
        d = pick_defaults(self.defaults, version)
        if max_num_batched_tokens is None:
            v = d.max_num_batched_tokens
            max_num_batched_tokens = v(layout) if callable(v) else v
        if max_num_seqs is None:
            v = d.max_num_seqs
            max_num_seqs = v(layout) if callable(v) else v
        if memory_fraction is None:
            f = d.memory_fraction
            memory_fraction = f(layout, max_num_batched_tokens, max_num_seqs) if callable(f) else f
        return Settings(memory_fraction=memory_fraction, max_num_batched_tokens=max_num_batched_tokens,
                        max_num_seqs=max_num_seqs, defaults_from=f"{self.name} >= {d.since}: {d.source}")

    def kernels(self, arch: str, q: Quantization) -> KernelPath:
        """How this engine runs the checkpoint's quantized linears on a GPU of microarchitecture `arch`."""
        return kernel_path(self.kernel_table, arch, q)

    def fraction_flag(self) -> str:
        """The flag that sets the memory fraction."""
        return self.flags[self.memory_fraction_field].name
