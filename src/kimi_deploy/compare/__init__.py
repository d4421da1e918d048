"""`kimi-deploy compare`: the same suite to a local deployment and a reference endpoint (Moonshot's hosted
API by default, or a recorded reference file), scored K2-Vendor-Verifier style, with a PASS/FAIL verdict.

Besides the local-vs-reference score (score.py), by default: every request is also streamed to the local
endpoint, under load, and the assembled answer held to the non-streamed one (stream.py, consistency.py;
disagreements rerun at concurrency 1 to tell load-dependent failures); prompt tokens are accounted
against the reference and the checkpoint's own template (tokens.py); and the sampling defaults the
deployment applies are pre-flighted against what the hosted model fixes (preflight.py).

The result directory holds one run: a previous one is continued (--resume) or replaced (--overwrite) only
when asked (results.py); what one answer may make it read, store and report is bounded (limits.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rich.console import Console

from ..args import CompareConfig
from ..catalog import get_model
from ..endpoint import Endpoint, require_model, scrubber, served_models, served_root
from ..errors import BadInput
from ..jsonl import read_jsonl
from ..progress import Progress
from ..suites import load
from .consistency import KINDS, compare_modes
from .limits import clip_shown
from .preflight import preflight
from .report import print_summary, write_reports
from .results import ResultDir
from .run import Outcome, Side, Store, collect, request_key
from .score import DEFAULT_F1, EXPECTATION_REGRESSION_RATE, RESPONSE_FORMAT_ACCURACY, score
from .tokens import DEFAULT_DRIFT, accounting, drift_checks, find_tokenizer
from .tokens import findings as token_findings


def thresholds_for(model: str, overrides: dict[str, float]) -> dict[str, float]:
    try:
        thinking = get_model(model).thinking
    except BadInput:
        thinking = "thinking" in model.lower()
    base = {"tool_call_f1": DEFAULT_F1["thinking" if thinking else "instruct"], "schema_accuracy": 0.90,
            "leaked_special_tokens": 0, "error_rate": 0.05,
            # any streamed/non-streamed disagreement on the local endpoint breaks streaming clients
            "stream_disagreements": 0,
            "prompt_token_drift": DEFAULT_DRIFT,  # |median relative prompt-token drift| (tokens.py)
            "sampling_mismatches": 0,  # served sampling defaults that differ from the hosted model's (preflight.py)
            "expectation_regression_rate": EXPECTATION_REGRESSION_RATE,
            # json answers to response_format rows that parse and validate, like schema_accuracy (score.py)
            "response_format_accuracy": RESPONSE_FORMAT_ACCURACY}
    unknown = set(overrides) - set(base)
    if unknown:
        raise BadInput(f"unknown threshold(s) {', '.join(sorted(unknown))}; known: {', '.join(base)}", "--threshold")
    return {**base, **overrides}


def _recorded_side(cfg: CompareConfig, suite: str, rows: list[dict[str, Any]]) -> tuple[Side, Store]:
    path = cfg.reference_file
    assert path is not None
    if not path.is_file():
        raise BadInput("reference file not found", str(path))
    first = next((obj for _, obj in read_jsonl(path)), None) or {}  # not text or not JSON: bad input
    if not isinstance(first, dict) or not {"key", "suite", "model"} <= set(first):
        raise BadInput("not a recording of compare's answers (answers-*.jsonl of an earlier run)", str(path))
    model = cfg.reference_model or first.get("model") or cfg.model
    side = Side(name="reference", model=model, recorded_url=first.get("endpoint"), recorded_kind=first.get("kind"))
    store = Store(path, suite, model, replay=True)
    missing = [r["id"] for r in rows if store.outcome(request_key(suite, r)) is None]
    if missing:
        raise BadInput(f"{len(missing)} request(s) of suite {suite!r} are not in the recording, e.g. {missing[0]}",
                       str(path))
    return side, store


def with_effort(rows: list[dict[str, Any]], effort: str | None) -> list[dict[str, Any]]:
    """The rows with --thinking-effort set on every one that thinks (thinking not false) and names no
    effort itself; the same request both ways (endpoint.Endpoint.thinking_fields)."""
    if effort is None:
        return rows
    return [{**r, "thinking_effort": effort} if r.get("thinking") is not False and not r.get("thinking_effort")
            else r for r in rows]


def reference_model(cfg: CompareConfig, ref_ep: Endpoint) -> str:
    """The model id to ask the reference for: --reference-model, else --model (on the hosted API mapped to
    the catalog's hosted id), checked against the reference's /v1/models before any request. Not served:
    bad input naming --reference-model, the id asked for and how it was chosen, and every id the
    reference serves (hosted ids come and go: GET /v1/models is the live set)."""
    assert cfg.model is not None
    model = ref_ep.model_id(cfg.reference_model or cfg.model)
    served = served_models(ref_ep)
    if not served or model in served:
        return model
    if cfg.reference_model:
        how = "given with --reference-model"
    elif model != cfg.model:
        how = f"the catalog's hosted id for --model {cfg.model!r}"
    else:
        how = f"--model {cfg.model!r}" + (", which the catalog maps to no hosted id" if ref_ep.hosted else "")
    hint = ""
    if ref_ep.hosted and not cfg.reference_model:
        entry = None
        for name in (cfg.catalog_model, cfg.model):
            try:
                entry = get_model(name) if name else None
            except BadInput:
                continue
            if entry is not None:
                break
        if entry is not None and entry.hosted_name is None:
            hint = (f". {entry.id} has no model on Moonshot's API (its hosted id was retired, or there never was "
                    "one; catalog.py says which)")
        hint += ("; give --reference-model with an id it serves, --reference with a self-hosted reference of the "
                 "same checkpoint, or --reference-file with a recording")
    listed = ", ".join(served[:40]) + (f" and {len(served) - 40} more" if len(served) > 40 else "")
    raise BadInput(f"{ref_ep.v1} does not serve {model!r} ({how}); it serves {listed}{hint}", "--reference-model")


def run_compare(cfg: CompareConfig, console: Console, *, resume: bool = False,
                overwrite: bool = False) -> dict[str, Any]:
    """One comparison (its values were checked when `cfg` was built: args.py). A previous run in
    cfg.output is continued with `resume`, replaced with `overwrite`, else bad input (results.py), before
    anything is asked."""
    # bad URLs and keys before any request, and before --output is made (ResultDir)
    local_ep, ref_ep = cfg.local_endpoint, cfg.reference_endpoint
    results = ResultDir(cfg.output, resume=resume, overwrite=overwrite, keep=cfg.reference_file)
    if cfg.model is None:
        cfg = cfg.replace(model=require_model(local_ep, None, "--model"))
    assert cfg.model is not None
    if cfg.catalog_model:
        try:
            get_model(cfg.catalog_model)
        except BadInput as exc:
            raise BadInput(str(exc).removeprefix(f"{exc.field}: "), "--catalog-model") from None
    scrub = scrubber(local_ep, ref_ep)  # both keys: either side may echo either
    thresholds = thresholds_for(cfg.model, cfg.thresholds)
    suite, rows = load(cfg.suite)
    if cfg.limit is not None:
        rows = rows[:cfg.limit]
    rows = with_effort(rows, cfg.thinking_effort)
    require_model(local_ep, cfg.model, "--model")
    local = Side(name="local", model=cfg.model, endpoint=local_ep)
    if ref_ep is None:
        reference, ref_store = _recorded_side(cfg, suite, rows)
    else:
        ref_model = reference_model(cfg, ref_ep)
        for effort in sorted({r["thinking_effort"] for r in rows if r.get("thinking_effort")}):
            ref_ep.check_effort(ref_model, effort)  # one the hosted model cannot take: before any request
        hosted = ref_ep.hosted_facts(ref_model)
        if hosted is not None and not hosted["in_catalog"]:
            console.print(f"[yellow]note[/yellow]: {hosted['note']}")
        reference = Side(name="reference", model=ref_model, endpoint=ref_ep)
        ref_store = Store(cfg.output / "reference.jsonl", suite, ref_model, scrub, endpoint=ref_ep.v1,
                          fresh=results.fresh, on_write=results.claim)
    local_store = Store(cfg.output / "local.jsonl", suite, local.model, scrub, endpoint=local_ep.v1,
                        fresh=results.fresh, on_write=results.claim)
    stream_store = Store(cfg.output / "local-stream.jsonl", suite, local.model, scrub, endpoint=local_ep.v1,
                         fresh=results.fresh, on_write=results.claim)
    root = served_root(local_ep, cfg.model)
    counter, why = find_tokenizer(cfg.tokenizer, root)  # before any request: a bad --tokenizer is bad input
    pre = preflight(local_ep, cfg.model, root, catalog_model=cfg.catalog_model,
                    timeout=min(cfg.request_timeout_s, 300)) if cfg.preflight else {"status": "off", "findings": []}
    live = [(side, store, False) for side, store in ((local, local_store), (reference, ref_store)) if side.endpoint]
    if cfg.stream:
        live.insert(1, (local, stream_store, True))
    common = dict(rate=cfg.rate, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                  request_timeout=cfg.request_timeout_s, stall_timeout=cfg.stall_timeout_s, scrub=scrub)
    labels = ["compare: " + side.name + (" (streamed)" if streamed else "") for side, _, streamed in live]
    with Progress(console, label=labels[0], total=len(rows)) as progress:
        counters = [progress.main, *(progress.add(label, len(rows)) for label in labels[1:])]

        async def ask_all() -> list[dict[str, Outcome]]:
            # streamed and non-streamed requests to the local endpoint share its `concurrency` slots
            sems: dict[str, asyncio.Semaphore] = {}
            tasks = []
            for (side, store, streamed), c in zip(live, counters):
                c.update(sum(store.outcome(request_key(suite, r)) is not None for r in rows))  # not asked again
                sem = sems.setdefault(side.name, asyncio.Semaphore(cfg.concurrency))
                tasks.append(collect(side, suite, rows, store, concurrency=cfg.concurrency, stream=streamed, sem=sem,
                                     on_done=lambda o, c=c: c.advance(failed=1 if o.error else 0), **common))
            return await asyncio.gather(*tasks)
        got = asyncio.run(ask_all())
    lo = got[0]
    st = got[1] if cfg.stream else {}
    ref = got[-1] if ref_ep is not None else \
        {r["id"]: ref_store.outcome(request_key(suite, r)) for r in rows}
    summary = score(suite, rows, lo, ref, thresholds)
    summary = {"suite": summary["suite"], "local": local.facts(), "reference": reference.facts(), **summary}
    if cfg.reference_file is not None:
        summary["reference"]["recording"] = str(cfg.reference_file)
    elif ref_ep is not None and ref_ep.hosted:
        summary["reference"]["hosted"] = ref_ep.hosted_facts(reference.model)
    summary["concurrency"] = cfg.concurrency
    summary["thinking_effort"] = cfg.thinking_effort
    if cfg.stream:
        summary["streaming"] = _streaming(cfg, local, suite, rows, lo, st, common, thresholds, summary, console)
    _token_section(rows, lo, st, ref, counter, why, thresholds, summary)
    _preflight_section(pre, thresholds, summary)
    summary["findings"].sort(key=lambda f: -f["count"])
    summary["verdict"] = "PASS" if all(c["ok"] for c in summary["checks"].values()) else "FAIL"
    summary["field_docs"] = FIELD_DOCS
    summary["timeouts"] = {"request_s": cfg.request_timeout_s, "stall_s": cfg.stall_timeout_s}
    summary = scrub.obj(summary)  # answers and errors may quote a key a server echoed back
    summary = clip_shown(summary)  # after the scrub: a cut never leaves part of a key (limits.py)
    results.write_text("summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    write_reports(cfg.output, summary, write=results.write_text)
    print_summary(console, summary)
    return summary


FIELD_DOCS = {
    "(clipped)": "a string of this file over 4,096 characters (an answer's content or tool-call arguments, an "
                 "error, a prompt) ends in '... [clipped: N characters in all]', and an answer's tool calls past "
                 "8 in an entry saying how many there were; every score was computed from the whole answers. The "
                 "records (local.jsonl, local-stream.jsonl, reference.jsonl) keep 65,536 characters of each "
                 "field, 262,144 of an answer, 64 items of a list, and name what they cut in `clipped`; an "
                 "answer over 64 MiB is not read past that: its row's error says so (compare/limits.py)",
    "reference.hosted": "what the catalog says Moonshot's API does with the reference model id: thinking_only "
                        "(thinking: disabled is not sent), efforts (thinking.effort values), fixed_sampling (the "
                        "temperature is not sent), source; in_catalog false: no special treatment, every field sent",
    "thinking_effort": "--thinking-effort: the effort of every row that thinks and names none itself (null: the "
                       "models' defaults); sent as thinking.effort (hosted) and chat_template_kwargs.thinking_effort",
    "concurrency": "requests in flight per endpoint; the local endpoint's streamed and non-streamed requests share them",
    "streaming": "streamed vs non-streamed answers of the local endpoint: compared (rows both answered), "
                 "disagreements (side by side, each with its kinds and whether it is load_dependent: null when "
                 "the row was not rerun), kinds (count per kind; kind_docs says what each means), load_dependent "
                 "(ids whose failure went away when rerun at concurrency 1), rerun_concurrency, rerun (rows "
                 "rerun, of how many failing, the --rerun-limit)",
    "token_accounting": "prompt_tokens local vs reference, vs the count made here with the checkpoint's chat "
                        "template (template_count says whether and from where), and streamed vs non-streamed "
                        "(median/mean/min/max of the differences in tokens and relative, nonzero = requests that "
                        "differ); completion_tokens streamed minus non-streamed, and streamed usage minus the tokens of "
                        "the streamed text (answers without tool calls; special tokens make it a few above 0); "
                        "per_request: every count",
    "preflight": "sampling pre-flight: status (checked / skipped / unknown / off), catalog_model, hosted_fixed "
                 "(per mode, with source), default_mode, served_defaults and served_defaults_source, observed "
                 "(default mode and how many of the repeated answers differ), other_modes",
    "checks.leaked_special_tokens_local": "local answers with Kimi's markers in content or reasoning that the "
                                          "reference's answer to the same row does not carry (shared_with_reference: "
                                          "those it does; bound: leaked_special_tokens)",
    "response_format_accuracy": "per endpoint: answers to rows with a json_object / json_schema response_format "
                                "whose content parses and is valid against the schema (jsonschema, Draft "
                                "2020-12), of those answered without a tool call; null: no such row",
    "checks.response_format_accuracy_local": "the local share of json answers valid against the row's "
                                             "response_format (bound: response_format_accuracy; only when the "
                                             "suite has such rows)",
    "checks.stream_disagreements_local": "local rows whose streamed answer disagrees with the non-streamed one "
                                         "(bound: stream_disagreements)",
    "checks.load_dependent_failures": "local failures that went away at concurrency 1 (reported, bound: "
                                      "stream_disagreements)",
    "checks.prompt_token_drift_reference / _template": "median relative prompt-token drift, local vs that count "
                                                        "(bound: prompt_token_drift)",
    "checks.prompt_tokens_streamed_vs_non_streamed": "requests whose streamed usage counts another prompt length",
    "checks.sampling_defaults": "served sampling defaults that differ from the hosted model's fixed ones "
                                "(bound: sampling_mismatches)",
}


def _streaming(cfg: CompareConfig, local: Side, suite: str, rows: list[dict[str, Any]], lo: dict[str, Outcome],
               st: dict[str, Outcome], common: dict[str, Any], thresholds: dict[str, float],
               summary: dict[str, Any], console: Console) -> dict[str, Any]:
    """Streamed vs non-streamed on the local endpoint; failing rows rerun at concurrency 1, one at a time
    and both ways, to tell a failure that appears only under load. Adds its checks and findings to
    `summary` and returns the `streaming` section."""
    by_id = {r["id"]: r for r in rows}
    found = compare_modes(rows, lo, st)
    # a refusal (4xx) is no load effect; server errors, timeouts and dropped connections may be
    failed_ns = [rid for rid, o in lo.items() if o is not None and o.error and (o.status is None or o.status >= 500)]
    failing = sorted({d["id"] for d in found} | set(failed_ns))
    again_ids = failing[:cfg.rerun_limit]  # the suite is interleaved by kind: the first ones are a cross-section
    load_dependent: list[str] = []
    for d in found:
        d["load_dependent"] = None  # not rerun (beyond --rerun-limit)
    if again_ids:
        again_rows = [by_id[i] for i in again_ids]

        async def rerun(progress: Progress) -> tuple[dict[str, Outcome], dict[str, Outcome]]:
            ns: dict[str, Outcome] = {}
            ss: dict[str, Outcome] = {}
            for row in again_rows:  # concurrency 1: one request in flight at a time
                ns.update(await collect(local, suite, [row], None, concurrency=1, **common))
                ss.update(await collect(local, suite, [row], None, concurrency=1, stream=True, **common))
                # failed: either way the row failed again
                progress.advance(failed=int(any(o.error for o in (ns.get(row["id"]), ss.get(row["id"])) if o)))
            return ns, ss
        # a row at a time, both ways: its own count (failed: a rerun that failed again)
        with Progress(console, label="compare: rerun at concurrency 1", total=len(again_rows)) as progress:
            ns1, st1 = asyncio.run(rerun(progress))
        still = {d["id"] for d in compare_modes(again_rows, ns1, st1)}
        for d in found:
            if d["id"] not in st1:
                continue
            d["load_dependent"] = d["id"] not in still and not st1[d["id"]].error
            if d["load_dependent"]:
                load_dependent.append(d["id"])
        for rid in failed_ns:
            if rid in ns1 and not ns1[rid].error:
                load_dependent.append(rid)
                summary["findings"].append({"kind": "local_error_only_under_load", "count": 1, "ids": [rid],
                                            "example": {"id": rid, "error_under_load": lo[rid].error,
                                                        "at_concurrency_1": "answered"}})
    kinds: dict[str, int] = {}
    for d in found:
        for k in d["kinds"]:
            kinds[k] = kinds.get(k, 0) + 1
    for k, n in kinds.items():
        ex = next(d for d in found if k in d["kinds"])
        summary["findings"].append({"kind": k, "count": n, "example": {**ex, "meaning": KINDS[k]},
                                    "ids": [d["id"] for d in found if k in d["kinds"]]})
    if load_dependent:
        summary["findings"].append({"kind": "load_dependent_failure", "count": len(load_dependent),
                                    "ids": sorted(set(load_dependent)),
                                    "example": {"ids": sorted(set(load_dependent))[:10],
                                                "concurrency": cfg.concurrency,
                                                "why": "failed at the run's concurrency, answered correctly when "
                                                       "rerun alone (concurrency 1): a failure under load"}})
    bound = thresholds["stream_disagreements"]
    summary["checks"]["stream_disagreements_local"] = {"value": len(found), "max": bound, "ok": len(found) <= bound}
    if load_dependent:
        n = len(set(load_dependent))
        summary["checks"]["load_dependent_failures"] = {"value": n, "max": bound, "ok": n <= bound}
    compared = sum(1 for r in rows if lo.get(r["id"]) and st.get(r["id"]))
    return {"compared": compared, "disagreements": found, "kinds": kinds, "kind_docs": KINDS,
            "load_dependent": sorted(set(load_dependent)), "rerun_concurrency": 1,
            "rerun": {"rows": len(again_ids), "of": len(failing), "limit": cfg.rerun_limit},
            "streamed_errors": sum(1 for o in st.values() if o and o.error)}


def _token_section(rows: list[dict[str, Any]], lo: dict[str, Outcome], st: dict[str, Outcome],
                   ref: dict[str, Outcome | None], counter: Any, why: str, thresholds: dict[str, float],
                   summary: dict[str, Any]) -> None:
    """Token accounting (tokens.py) into `summary`: its section, checks and findings."""
    template: dict[str, int] = {}
    if counter is not None:
        try:
            template = {r["id"]: counter.count(r) for r in rows}
        except Exception as exc:  # noqa: BLE001 -- a template that cannot render these requests: say so
            counter, why = None, f"{why}: the template failed to render: {type(exc).__name__}: {str(exc)[:200]}"
    acc = accounting(rows, lo, st, ref, template, counter)
    acc["template_count"] = {"available": counter is not None, "source": why}
    tchecks = drift_checks(acc, thresholds["prompt_token_drift"])
    summary["token_accounting"] = acc
    summary["checks"].update(tchecks)
    summary["findings"].extend(token_findings(acc, tchecks))


def _preflight_section(pre: dict[str, Any], thresholds: dict[str, float], summary: dict[str, Any]) -> None:
    """The sampling pre-flight (preflight.py) into `summary`: its section, check and findings."""
    summary["preflight"] = {k: v for k, v in pre.items() if k != "findings"}
    if pre["status"] == "checked":
        n_bad = len(pre["findings"])
        summary["checks"]["sampling_defaults"] = {"value": n_bad, "max": thresholds["sampling_mismatches"],
                                                  "ok": n_bad <= thresholds["sampling_mismatches"]}
        summary["findings"].extend(pre["findings"])
