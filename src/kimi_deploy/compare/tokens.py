"""Token accounting: does the local deployment count a request's prompt as the reference does, and as the
checkpoint's own tokenizer and chat template count it?

A wrong chat template or tokenizer shows up first as a different `usage.prompt_tokens` for the same
request, and billing follows the count; Moonshot's vendor verifier checks it
(github.com/MoonshotAI/Kimi-Vendor-Verifier README.md, the prompt_tokens check of its K3-era suites).
Three counts per request:
- `usage.prompt_tokens` from the local endpoint (non-streamed and streamed: one request, one count);
- `usage.prompt_tokens` from the reference (same tokenizer family, so the same count when the template is
  the same);
- a count made here: the checkpoint's chat template applied with the same messages, tools and template
  switches (transformers `apply_chat_template(..., tokenize=False)`, then the tokenizer without special
  tokens, as vLLM's chat endpoint renders and encodes a conversation: vllm/entrypoints/openai/chat_completion,
  `add_special_tokens` defaults to false there) when the tokenizer is available locally.
Completion tokens: the streamed answer's usage against the non-streamed one's (the same request; under
greedy sampling the same length) — reported, not bounded.

Bounds (summary.json `thresholds`, overridable with --threshold): `prompt_token_drift` (default 0.01)
bounds the systematic relative difference, the median over requests of (local - other) / other, against
the reference and against the template count. 1 %: the same template and tokenizer give 0 (the same
text, the same tokens); a chat template that differs by a default system prompt or a tool-declaration
format moves every request by tens of tokens, several per cent of the suite's prompts."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..errors import BadInput
from .adapters import normalize_tool_ids
from .run import Outcome

DEFAULT_DRIFT = 0.01


def openai_order(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Tools with their keys in the OpenAI schema's field order (type, function: name, description,
    parameters, strict), whatever order the request's JSON had: an engine parses the tools into that schema
    before the template renders them (vLLM: ChatCompletionToolsParam / FunctionDefinition, dumped in field
    order; vllm/entrypoints/openai/protocol.py), so `tools | tojson` sees this order, and a count made here
    from the raw request would differ by the tokens a reordered JSON takes."""
    if not tools:
        return None
    out = []
    for t in tools:
        fn = t.get("function") or {}
        ordered = {k: fn[k] for k in ("name", "description", "parameters", "strict") if k in fn}
        ordered.update({k: v for k, v in fn.items() if k not in ordered})
        out.append({"type": t.get("type", "function"), "function": ordered,
                    **{k: v for k, v in t.items() if k not in ("type", "function")}})
    return out


class TemplateCounter:
    """Counts a request's prompt tokens with the checkpoint's tokenizer and chat template."""

    def __init__(self, source: str, *, local_files_only: bool = False) -> None:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # its model-type notice is noise in a compare run
        self.source = source
        # A local checkpoint the operator serves (vLLM itself runs it with --trust-remote-code: Kimi's
        # tokenizer is tiktoken code shipped in the repository, tokenization_kimi.py).
        self.tok = AutoTokenizer.from_pretrained(source, trust_remote_code=True, local_files_only=local_files_only)

    def count(self, row: dict[str, Any]) -> int:
        kwargs: dict[str, Any] = {}
        if row.get("thinking") is not None:
            kwargs["thinking"] = row["thinking"]  # what chat_template_kwargs carries to the engine
        text = self.tok.apply_chat_template(normalize_tool_ids(row["messages"]), tools=openai_order(row.get("tools")),
                                            add_generation_prompt=True, tokenize=False, **kwargs)
        return len(self.tok(text, add_special_tokens=False)["input_ids"])


    def count_text(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])


def find_tokenizer(explicit: str | None, served_root: str | None) -> tuple[TemplateCounter | None, str]:
    """A TemplateCounter from --tokenizer (bad input when it cannot be loaded), else from the served
    model's root when it is a local directory with a tokenizer or a Hub id already in the local cache
    (vLLM's /v1/models lists what it serves as `root`); (None, why) otherwise."""
    candidates = [c for c in (explicit, served_root) if c]
    if not candidates:
        return None, "no --tokenizer given and the endpoint does not say which checkpoint it serves"
    source = candidates[0]
    cached_only = False
    if not explicit and not (Path(source) / "tokenizer_config.json").is_file():
        if Path(source).exists() or source.count("/") != 1:
            return None, f"the served root {source!r} is not a local checkpoint directory here (give --tokenizer)"
        cached_only = True  # a Hub id: only what is already in the local Hub cache, no download unasked
    try:
        return TemplateCounter(source, local_files_only=cached_only), f"chat template and tokenizer of {source}" + \
            (" (local Hub cache)" if cached_only else "")
    except Exception as exc:  # noqa: BLE001 -- any loader failure means: no count here, say why
        if explicit:
            raise BadInput(f"could not load a tokenizer and chat template from {source!r}: {type(exc).__name__}: "
                           f"{str(exc)[:200]}", "--tokenizer") from None
        return None, (f"could not load a tokenizer from {source!r}" + (" (not in the local Hub cache; give "
                      "--tokenizer to download it)" if cached_only else "") + f": {type(exc).__name__}: {str(exc)[:200]}")


def _stats(values: list[float], digits: int = 4) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": round(statistics.median(values), digits),
            "mean": round(statistics.fmean(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "nonzero": sum(1 for v in values if v)}


def accounting(rows: list[dict[str, Any]], local: dict[str, Outcome], stream: dict[str, Outcome],
               ref: dict[str, Outcome], template: dict[str, int],
               counter: TemplateCounter | None = None) -> dict[str, Any]:
    """Per-request counts and drift, and the overall drift against each other count. With `counter`,
    also the streamed answers' completion_tokens against the tokens of the text they streamed (answers
    without tool calls, whose text is all the model wrote but the special tokens around reasoning and at
    the end, so the usage runs a few tokens above the text)."""
    per_request = []
    diffs: dict[str, list[float]] = {"reference": [], "template": [], "stream": []}
    rel: dict[str, list[float]] = {"reference": [], "template": []}
    completion: list[float] = []
    text_gap: list[float] = []
    for row in rows:
        rid = row["id"]
        lo, st, re_ = local.get(rid), stream.get(rid), ref.get(rid)
        lp = lo.prompt_tokens if lo and not lo.error else None
        item: dict[str, Any] = {"id": rid, "local": lp, "local_streamed": st.prompt_tokens if st and not st.error else None,
                                "reference": re_.prompt_tokens if re_ and not re_.error else None,
                                "template": template.get(rid)}
        if lp is not None:
            for other in ("reference", "template"):
                if item[other]:
                    diffs[other].append(lp - item[other])
                    rel[other].append((lp - item[other]) / item[other])
            if item["local_streamed"] is not None:
                diffs["stream"].append(item["local_streamed"] - lp)
        if lo and st and not lo.error and not st.error and lo.completion_tokens and st.completion_tokens is not None:
            completion.append(st.completion_tokens - lo.completion_tokens)
        if counter is not None and st and not st.error and not st.tool_calls and st.completion_tokens is not None \
                and st.finish_reason == "stop":
            text = counter.count_text((st.reasoning or "") + (st.content or ""))
            item["completion_streamed"], item["completion_streamed_text"] = st.completion_tokens, text
            text_gap.append(st.completion_tokens - text)
        per_request.append(item)
    return {
        "prompt_tokens": {
            "vs_reference": {"tokens": _stats(diffs["reference"], 1), "relative": _stats(rel["reference"])},
            "vs_template": {"tokens": _stats(diffs["template"], 1), "relative": _stats(rel["template"])},
            "streamed_vs_non_streamed": {"tokens": _stats(diffs["stream"], 1)},
        },
        "completion_tokens_streamed_vs_non_streamed": _stats(completion, 1),
        "completion_tokens_minus_streamed_text_tokens": _stats(text_gap, 1),
        "per_request": per_request,
    }


def drift_checks(acc: dict[str, Any], bound: float) -> dict[str, dict[str, Any]]:
    """prompt_token_drift_reference / _template: |median relative drift| <= bound (skipped without counts)."""
    checks = {}
    for other in ("reference", "template"):
        r = acc["prompt_tokens"][f"vs_{other}"]["relative"]
        if r["n"]:
            checks[f"prompt_token_drift_{other}"] = {"value": r["median"], "max": bound,
                                                     "ok": abs(r["median"]) <= bound}
    s = acc["prompt_tokens"]["streamed_vs_non_streamed"]["tokens"]
    if s["n"]:  # one request, one prompt: any difference is the server's accounting, not the template
        checks["prompt_tokens_streamed_vs_non_streamed"] = {"value": s["nonzero"], "max": 0, "ok": s["nonzero"] == 0}
    return checks


def findings(acc: dict[str, Any], checks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A finding per failed accounting check, with the requests that show it."""
    out = []
    for other in ("reference", "template"):
        c = checks.get(f"prompt_token_drift_{other}")
        if c and not c["ok"]:
            bad = [r for r in acc["per_request"] if r["local"] is not None and r[other] and r["local"] != r[other]]
            out.append({"kind": f"prompt_token_drift_vs_{other}", "count": len(bad),
                        "example": {**(bad[0] if bad else {}), "median_relative_drift": c["value"],
                                    "median_tokens": acc["prompt_tokens"][f"vs_{other}"]["tokens"].get("median"),
                                    "why": "a systematic prompt-token difference: a different chat template or "
                                           "tokenizer, or a miscount (billing follows it)"},
                        "ids": [r["id"] for r in bad]})
    c = checks.get("prompt_tokens_streamed_vs_non_streamed")
    if c and not c["ok"]:
        bad = [r for r in acc["per_request"] if r["local"] is not None and r["local_streamed"] is not None
               and r["local"] != r["local_streamed"]]
        out.append({"kind": "prompt_tokens_streamed_vs_non_streamed", "count": len(bad),
                    "example": bad[0] if bad else {}, "ids": [r["id"] for r in bad]})
    return out
