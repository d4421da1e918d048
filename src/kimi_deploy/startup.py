"""The start-up budget: how long a serving pod may take from start to a healthy /health, derived once
from the plan and used everywhere a start-up wait is bounded (the Kubernetes startup probe in k8s.py,
vLLM's own engine-ready timeout in engines/vllm.py).

The budget is the bytes every node reads (the whole checkpoint, plus the draft) over the read rate of the
load format, plus a fixed allowance for compilation and CUDA-graph capture, never below 30 minutes and
never above 4 hours. Each node reads the whole checkpoint: with tensor parallelism every rank takes a
slice of every tensor, so every shard is read on every node.

Published load times for checkpoints of this size (the rates below):
- Kimi-K2.7, 554 GiB, TP16 on 2 x 8 x H100 from Lustre: the default safetensors loader took 4,575 s
  (~130 MB/s per node), runai_streamer with concurrency 16 and striping took 318 s (~1.87 GB/s)
  (ai-dynamo/dynamo docs/kubernetes/fast-model-loading.md).
The old rate (0.5 GB/s per node for the node's share) gave a 16-GPU INT4 layout 25 minutes; the measured
default rate gives the same checkpoint about 80.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from .deployment import Deployment

# Bytes per second one node reads, by --load-format. fastsafetensors (GPU direct reads) has no
# published figure for a checkpoint of this size, so it is planned at the default loader's rate.
LOAD_BYTES_PER_S: Mapping[str, float] = {
    "auto": 554 * 2**30 / 4575,  # dynamo fast-model-loading.md: default loader, Lustre
    "safetensors": 554 * 2**30 / 4575,
    "fastsafetensors": 554 * 2**30 / 4575,  # no published number: the default's (the safe side)
    "runai_streamer": 554 * 2**30 / 318,  # dynamo fast-model-loading.md: runai_streamer, concurrency 16
}
# Past the load: DeepGEMM/torch.compile warm-up and CUDA-graph capture (minutes on a big MoE).
STARTUP_EXTRA_S = 600
# Never less than 30 minutes by default (a 600 s engine timeout kills 600 GB loads,
# vllm-project/vllm-ascend#7098), never more than 4 hours (a stuck pod must eventually restart).
STARTUP_FLOOR_S, STARTUP_CAP_S = 1800, 4 * 3600


def load_rate(dep: "Deployment") -> float:
    return LOAD_BYTES_PER_S[dep.serving.get("load_format", "auto")]


def bytes_per_node(dep: "Deployment") -> int:
    """The checkpoint every node reads, plus the draft."""
    total = dep.primary.plan.weight_bytes_total
    if dep.speculative is not None and dep.speculative.arch is not None:  # MTP layers are in the checkpoint
        total += dep.speculative.arch.total_bytes
    return total


def startup_budget(dep: "Deployment") -> int:
    """Seconds a serving node may take to become healthy (k8s.startup_budget_s overrides it)."""
    if dep.k8s.startup_budget_s:
        return dep.k8s.startup_budget_s
    seconds = bytes_per_node(dep) / load_rate(dep) + STARTUP_EXTRA_S
    return int(min(max(seconds, STARTUP_FLOOR_S), STARTUP_CAP_S))
