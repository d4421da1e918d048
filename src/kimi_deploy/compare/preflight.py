"""Sampling-parameter pre-flight: does the local deployment, asked without sampling fields, sample as the
hosted model does?

Moonshot's hosted kimi-k2.5 / kimi-k2.6 fix temperature, top_p, n and the penalties ("cannot be
modified", platform.kimi.ai/docs/api/models-overview) and Moonshot's vendor verifier pre-flights them
before anything else (github.com/MoonshotAI/Kimi-Vendor-Verifier, verify_params.py). A self-hosted
deployment whose generation defaults differ answers clients that send no sampling fields differently for
reasons that have nothing to do with the weights.

What the local deployment applies by default, as served:
- the mode it answers in when a request says nothing about thinking (observed: one request without
  thinking or sampling fields; reasoning in the answer means thinking mode);
- its generation defaults: vLLM applies the checkpoint's generation_config.json (`--generation-config
  auto`, the default) merged with `--override-generation-config`, and its own neutral defaults
  (temperature 1.0, top_p 1.0, penalties 0) for what neither sets (vllm/config/model.py,
  ModelConfig.get_diff_sampling_param; vllm/sampling_params.py). vLLM does not serve these over HTTP, so
  they are read from the checkpoint directory its /v1/models `root` names when that directory is
  readable here (and said to be unknown otherwise);
- whether repeated answers to one prompt vary (observed, reported: a greedy default gives identical
  answers; a sampling one usually does not).
Each fixed parameter of the default mode that differs from the served default is a finding with the
fix: the engine flag, or the request fields for the other mode (one served default holds one value,
the hosted model has one per mode)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from ..catalog import MODELS, ModelEntry, get_model
from ..endpoint import Endpoint, reasoning_of
from ..errors import BadInput

# vLLM's neutral defaults for what the generation config does not set (vllm/sampling_params.py,
# SamplingParams: temperature 1.0, top_p 1.0, presence/frequency penalty 0.0)
VLLM_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
PROBE = [{"role": "user", "content": "Tell me a joke."}]
REPEATS = 4


def catalog_entry(explicit: str | None, served: str, root: str | None) -> ModelEntry | None:
    """The catalog model the deployment serves: --catalog-model, else the served name, else the served
    root (a Hub repo id, or a directory named like the repository)."""
    if explicit:
        return get_model(explicit)
    for name in (served, root, Path(root).name if root else None):
        if not name:
            continue
        try:
            return get_model(name)
        except BadInput:
            pass
        for m in MODELS.values():
            if name.lower() == m.repo.split("/")[-1].lower():
                return m
    return None


def served_defaults(root: str | None) -> tuple[dict[str, float] | None, str]:
    """(sampling defaults as vLLM applies them, where they came from), or (None, why) when unreadable."""
    if not root or not Path(root).is_dir():
        return None, (f"served root {root!r} is not readable here: the engine's generation defaults are unknown"
                      if root else "the endpoint does not name the checkpoint it serves")
    path = Path(root) / "generation_config.json"
    config: dict[str, Any] = {}
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return None, f"{path}: unreadable ({exc})"
    values = {k: float(config[k]) if isinstance(config.get(k), (int, float)) else v for k, v in VLLM_DEFAULTS.items()}
    set_here = sorted(k for k in VLLM_DEFAULTS if isinstance(config.get(k), (int, float)))
    where = f"{path} ({', '.join(set_here) or 'no sampling field'}; vLLM defaults for the rest)" if path.is_file() \
        else f"no generation_config.json in {root}: vLLM defaults"
    return values, where + "; an engine started with --generation-config vllm or --override-generation-config differs"


async def _observe(ep: Endpoint, model: str, timeout: float) -> dict[str, Any]:
    """One request without thinking or sampling fields, asked REPEATS times: the default mode, and
    whether answers vary."""
    from .limits import bounded_http_client

    client = ep.openai_client(timeout=timeout).with_options(http_client=bounded_http_client())
    try:
        answers = await asyncio.gather(*(asyncio.wait_for(
            client.chat.completions.create(model=model, messages=PROBE, max_tokens=48), timeout)
            for _ in range(REPEATS)))
    finally:
        await client.close()
    texts = [(reasoning_of(a.choices[0].message) or "") + "\x00" + (a.choices[0].message.content or "") for a in answers]
    return {"default_mode": "thinking" if any(reasoning_of(a.choices[0].message) for a in answers) else "instant",
            "distinct_answers": len(set(texts)), "of": REPEATS}


def preflight(ep: Endpoint, model: str, root: str | None, *, catalog_model: str | None = None,
              timeout: float = 120) -> dict[str, Any]:
    """The pre-flight result: status (checked / skipped / unknown), what was compared, and findings."""
    entry = catalog_entry(catalog_model, model, root)
    if entry is None:
        return {"status": "skipped", "why": f"{model!r} is no catalog model (give --catalog-model to check it "
                                            "against one)", "findings": []}
    fixed = entry.hosted_sampling
    if not fixed:
        return {"status": "skipped", "catalog_model": entry.id, "findings": [],
                "why": f"the hosted {entry.hosted_name or entry.id} does not fix sampling parameters"}
    result: dict[str, Any] = {"catalog_model": entry.id, "hosted_fixed": fixed, "source": entry.sampling_source}
    try:
        seen = asyncio.run(_observe(ep, model, timeout))
    except Exception as exc:  # noqa: BLE001 -- the pre-flight reports, the comparison goes on
        seen = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    result["observed"] = seen
    mode = seen.get("default_mode") or ("thinking" if entry.thinking else "instant")
    served, where = served_defaults(root)
    result.update({"default_mode": mode, "served_defaults": served, "served_defaults_source": where})
    if served is None:
        return {**result, "status": "unknown", "findings": []}
    findings = []
    want = fixed.get(mode, {})
    for param, value in want.items():
        if served.get(param) is not None and abs(served[param] - value) > 1e-9:
            override = json.dumps(want)
            findings.append({"kind": "sampling_default_mismatch", "count": 1, "ids": [],
                             "example": {"mode": mode, "param": param, "served": served[param], "hosted": value,
                                         "served_from": where,
                                         "fix": f"serve with --override-generation-config '{override}' (vLLM), "
                                                f"or send {param}={value} in every {mode}-mode request"}})
    other = {m: v for m, v in fixed.items() if m != mode}
    if other:
        result["other_modes"] = {m: f"requests in {m} mode must send {json.dumps(v)}: one served default "
                                    f"holds one value" for m, v in other.items()}
    return {**result, "status": "checked", "findings": findings}
