"""Small real checkpoints for the weights tests, made on the spot (no trained model needed): a tiny-k2
shaped config, real safetensors shards (https://github.com/huggingface/safetensors#format) of F32
vectors and an index."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

INDEX = "model.safetensors.index.json"


def write_shard(path: Path, tensors: dict[str, int], seed: int) -> None:
    """A real safetensors file of F32 vectors (name -> length) with deterministic contents."""
    header, offset = {}, 0
    for name, n in tensors.items():
        header[name] = {"dtype": "F32", "shape": [n], "data_offsets": [offset, offset + 4 * n]}
        offset += 4 * n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    body = hashlib.shake_256(f"{path.name}{seed}".encode()).digest(offset)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + body)


def make_checkpoint(d: Path, *, shards: int = 3, floats: int = 1000) -> Path:
    """A checkpoint shaped like tiny-k2 in d: its config, `shards` shards of three tensors of about
    `floats` floats each, and an index."""
    from kimi_deploy.tiny.model import ARCH

    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"architectures": ["DeepseekV3ForCausalLM"], "model_type": "kimi_k2",
                                               **ARCH, "vocab_size": 512}))
    weight_map = {}
    for i in range(1, shards + 1):
        shard = f"model-{i:05d}-of-{shards:05d}.safetensors"
        tensors = {f"model.layers.{i}.w{j}": floats + 37 * j for j in range(3)}
        write_shard(d / shard, tensors, i)
        weight_map.update({t: shard for t in tensors})
    (d / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return d
