"""Scoring a local deployment against a reference, in the spirit of Moonshot's K2-Vendor-Verifier
(github.com/MoonshotAI/K2-Vendor-Verifier, README.md and tool_calls_eval.py):

- tool_call_f1: per request, finish_reason "tool_calls" on both sides is a true positive, local only a
  false positive, reference only a false negative (a local error where the reference called a tool is a
  false negative too: failures stay in the denominator); F1 of precision and recall;
- schema_accuracy, per endpoint: answers with finish_reason "tool_calls" whose every call names an
  offered tool (top-level or declared in a system message) and has JSON arguments valid against that
  tool's `parameters` (jsonschema, Draft 2020-12: `$ref`/`$defs`, `anyOf`, enums, bounds), over all
  answers with finish_reason "tool_calls"; a failure names the call, the JSON path and what is wrong;
- response_format_accuracy, per endpoint: answers to rows with a json_object / json_schema
  response_format whose content parses as JSON and is valid against the schema (Kimi-Vendor-Verifier
  tests/k3_features/test_response_format.py parses and checks the keys; here the whole schema), over
  those rows (an answer that called a tool instead is not counted);
- expectations, per endpoint: what each row's `expected` says a correct answer must contain (tool call or
  none, the multiset or sequence of tool names, the number of calls, argument values fixed by the prompt,
  minimum lengths, what tool_choice and response_format imply, the prompt's token count;
  suites/__init__.py), checked on both sides; a row the reference gets right and the local
  deployment gets wrong (or fails) is an expectation regression, the check that fails a deployment whose
  parser or template mangles what the model meant (bound: at most 5 % of the rows);
- leaked_special_tokens_local: local answers with Kimi's markers in content or reasoning, unless the
  reference's answer to the same row carries the same markers (the weights wrote them: a self-hosted
  reference of the same checkpoint; counted apart as shared_with_reference), bound 0;
- findings: leaked special tokens in content or reasoning, schema failures, finish-reason disagreements,
  argument disagreements, empty or truncated answers, missing reasoning in thinking mode, expectations
  missed, errors.
Thresholds: K2VV's tool_call_f1 >= 0.80 (K2-Instruct family) or >= 0.73 (thinking models)."""

from __future__ import annotations

import json
import re
import statistics
from typing import Any

from ..stats import percentile
from ..suites import PROMPT_TOKEN_OVERCOUNT, expectations, named_tool, offered_tools, response_schema, schema_errors
from .run import Outcome

LEAK = re.compile(r"<\|[a-z_]+\|>|</?think>")
DEFAULT_F1 = {"instruct": 0.80, "thinking": 0.73}  # K2VV thresholds (K2-Instruct-0905 / K2-Thinking)
EXPECTATION_REGRESSION_RATE = 0.05  # default bound (`expectation_regression_rate`), like the error rate's
RESPONSE_FORMAT_ACCURACY = 0.90  # default bound (`response_format_accuracy`), schema_accuracy's


def _leaks(text: str | None) -> list[str]:
    return sorted(set(LEAK.findall(text or "")))


def call_problems(row: dict[str, Any], calls: list[dict[str, Any]]) -> list[str]:
    """What is wrong with the tool calls of an answer against the tools the row offers: a tool not offered,
    arguments that are not JSON, or not valid against the tool's schema; each names the call
    (tool_calls[i].function.arguments), the JSON path in the arguments and what is wrong."""
    offered = offered_tools(row)
    out = []
    for i, call in enumerate(calls):
        where = f"tool_calls[{i}] ({call['name']})"
        if call["name"] not in offered:
            out.append(f"{where}: not an offered tool (offered: {', '.join(sorted(offered)) or 'none'})")
            continue
        try:
            args = json.loads(call["arguments"] or "{}")
        except json.JSONDecodeError as exc:
            out.append(f"{where}.function.arguments: invalid JSON ({exc.msg}): {call['arguments'][:80]!r}")
            continue
        out += [f"{where}.function.arguments{e[1:]}" for e in schema_errors(args, offered[call["name"]])]
    return out


def response_problems(row: dict[str, Any], out: Outcome) -> list[str] | None:
    """What is wrong with the content of an answer to a row with a json response_format ([] when it parses
    and is valid against the schema; None when there is nothing to check: no such response_format, or the
    answer called a tool)."""
    schema = response_schema(row)
    if schema is None or out.tool_calls or out.error:
        return None
    try:
        value = json.loads(out.content or "")
    except json.JSONDecodeError as exc:
        return [f"content: not JSON ({exc.msg}; finish_reason {out.finish_reason}): {_short(out.content or '')}"]
    return [f"content{e[1:]}" for e in schema_errors(value, schema)]


def _schema_ok(row: dict[str, Any], out: Outcome) -> tuple[bool, str]:
    if not out.tool_calls:
        return False, "finish_reason tool_calls without tool calls"
    problems = call_problems(row, out.tool_calls)
    return not problems, "; ".join(problems[:3])


def _short(value: Any, n: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} chars)"


def _matches(want: Any, got: Any) -> bool:
    """`got` holds `want`: objects key by key (extra keys allowed), arrays element by element, numbers by
    value (1 == 1.0; a bool is not a number), everything else equal."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _matches(v, got[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_matches, want, got))
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and got == want
    return type(got) is type(want) and got == want


def _call_problems(want: dict[str, Any], name: str, args: Any) -> list[str]:
    if not isinstance(args, dict):
        return [f"{name}: arguments are not a JSON object"]
    out = []
    for key, value in (want.get("arguments") or {}).items():
        if key not in args:
            out.append(f"{name}.{key}: missing (expected {_short(value)})")
        elif not _matches(value, args[key]):
            out.append(f"{name}.{key}: expected {_short(value)}, got {_short(args[key])}")
    for key, n in (want.get("min_length") or {}).items():
        got = args.get(key)
        if not isinstance(got, str) or len(got) < n:
            out.append(f"{name}.{key}: expected a string of at least {n} characters, got "
                       f"{len(got) if isinstance(got, str) else type(got).__name__}")
    return out


def check_expectations(row: dict[str, Any], out: Outcome) -> list[str] | None:
    """What the answer misses of the row's expectations ([] when it meets them all); None when the row
    states none."""
    exp = expectations(row)
    if not exp:
        return None
    problems: list[str] = []
    calls = out.tool_calls or []
    names = [c["name"] for c in calls]
    if exp.get("tool_calls") is False and (calls or out.finish_reason == "tool_calls"):
        problems.append(f"expected no tool call, got {names or 'finish_reason tool_calls'}")
    if exp.get("tool_calls") is True and not calls:
        problems.append(f"expected a tool call, got none (finish_reason {out.finish_reason})")
    if exp.get("reasoning") and row.get("thinking") and not out.reasoning:
        problems.append("expected reasoning (thinking on), got none")
    if (named := named_tool(row)) and any(n != named for n in names):
        problems.append(f"tool_choice names {named!r}, got calls of {sorted(set(names) - {named})}")
    if exp.get("json"):
        problems += response_problems(row, out) or []
    want_pt = exp.get("prompt_tokens")
    if want_pt is not None and not (out.prompt_tokens is not None
                                    and want_pt <= out.prompt_tokens <= want_pt + PROMPT_TOKEN_OVERCOUNT):
        problems.append(f"usage.prompt_tokens: expected {want_pt} to {want_pt + PROMPT_TOKEN_OVERCOUNT}, got "
                        f"{out.prompt_tokens}")
    want = exp.get("calls") or []
    if want and calls:
        want_names = [w["name"] for w in want]
        if len(calls) != len(want):
            problems.append(f"expected {len(want)} call(s), got {len(calls)}")
        if exp.get("ordered") and names != want_names:
            problems.append(f"expected the calls {want_names} in this order, got {names}")
        elif sorted(names) != sorted(want_names):
            problems.append(f"expected the calls {sorted(want_names)}, got {sorted(names)}")
        parsed = []
        for c in calls:
            try:
                parsed.append((c["name"], json.loads(c["arguments"] or "{}")))
            except json.JSONDecodeError:
                parsed.append((c["name"], None))
        if exp.get("ordered"):
            pairs = [(w, p) for w, p in zip(want, parsed) if w["name"] == p[0]]
        else:  # each expected call against the unused call of its name that meets it, else the first unused
            pairs, used = [], set()
            for w in want:
                free = [i for i, (n, _) in enumerate(parsed) if n == w["name"] and i not in used]
                if free:
                    i = next((i for i in free if not _call_problems(w, *parsed[i])), free[0])
                    used.add(i)
                    pairs.append((w, parsed[i]))
        for w, (name, args) in pairs:
            problems += _call_problems(w, name, args)
    return problems


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)
    return {"mean": round(statistics.fmean(v), 1), "p50": round(percentile(v, 50, presorted=True), 1),
            "p90": round(percentile(v, 90, presorted=True), 1), "max": v[-1]}


class Findings:
    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def add(self, kind: str, example: dict[str, Any]) -> None:
        f = self.items.setdefault(kind, {"kind": kind, "count": 0, "example": example, "ids": []})
        f["count"] += 1
        f["ids"].append(example.get("id"))

    def to_list(self) -> list[dict[str, Any]]:
        return sorted(self.items.values(), key=lambda f: -f["count"])


def score(suite: str, rows: list[dict[str, Any]], local: dict[str, Outcome], ref: dict[str, Outcome],
          thresholds: dict[str, float]) -> dict[str, Any]:
    findings = Findings()
    tp = fp = fn = 0
    schema = {"local": [0, 0], "reference": [0, 0]}  # [ok, tool-call answers]
    formats = {"local": [0, 0], "reference": [0, 0]}  # [valid, answers to json response_format rows]
    args_same = args_total = 0
    errors = {"local": 0, "reference": 0}
    finish = {"local": {}, "reference": {}}
    lengths: dict[str, list[int]] = {"local": [], "reference": []}
    disagreements: list[dict[str, Any]] = []
    met = {"local": [0, 0], "reference": [0, 0]}  # [rows meeting their expectations, rows with expectations]
    by_kind: dict[str, dict[str, int]] = {}
    regressions = local_only_leaks = shared_leaks = 0
    by_id = {r["id"]: r for r in rows}
    for rid, row in by_id.items():
        lo, re_ = local.get(rid), ref.get(rid)
        if lo is None or re_ is None:
            continue
        verdicts: dict[str, bool | None] = {}
        leaked_by_side: dict[str, set[str]] = {}
        for side, out in (("local", lo), ("reference", re_)):
            problems = None if out.error else check_expectations(row, out)
            has = bool(expectations(row))
            verdicts[side] = (not problems) if problems is not None else (False if has else None)
            if has:
                met[side][1] += 1
                met[side][0] += bool(verdicts[side])
                k = by_kind.setdefault(row.get("kind") or "-", {"n": 0, "local": 0, "reference": 0})
                k["n"] += side == "local"
                k[side] += bool(verdicts[side])
            if problems:
                findings.add(f"expectation_failed_{side}", {"id": rid, "kind": row.get("kind"), "problems": problems[:4]})
            key = out.finish_reason or ("error" if out.error else "none")
            finish[side][key] = finish[side].get(key, 0) + 1
            if out.completion_tokens is not None:
                lengths[side].append(out.completion_tokens)
            if out.error:
                errors[side] += 1
                findings.add(f"{side}_error", {"id": rid, "error": out.error})
                if out.probe_content and _leaks(out.probe_content):
                    findings.add("tools_refused_markers_in_content",
                                 {"id": rid, "side": side, "probe_content": out.probe_content[:300],
                                  "note": "server refused tools (no tool-call parser); re-asked with "
                                          "tool_choice=none, the model's tool-call markers came back as text"})
                continue
            for where, text in (("content", out.content), ("reasoning", out.reasoning)):
                if leaked := _leaks(text):
                    leaked_by_side.setdefault(side, set()).update(leaked)
                    findings.add(f"leaked_special_tokens_{side}", {"id": rid, "in": where, "tokens": leaked,
                                                                   "text": (text or "")[:300]})
            if (rf := response_problems(row, out)) is not None:
                formats[side][1] += 1
                formats[side][0] += not rf
                if rf:
                    findings.add(f"response_format_invalid_{side}", {"id": rid, "problems": rf[:4]})
            if out.finish_reason == "tool_calls":
                ok, why = _schema_ok(row, out)
                schema[side][1] += 1
                schema[side][0] += ok
                if not ok:
                    findings.add(f"schema_invalid_{side}", {"id": rid, "why": why})
            elif out.finish_reason == "length":
                findings.add(f"truncated_{side}", {"id": rid, "completion_tokens": out.completion_tokens})
            elif out.finish_reason == "stop" and not (out.content or "").strip() and not out.tool_calls:
                findings.add(f"empty_answer_{side}", {"id": rid})
            if row.get("thinking") and not out.reasoning and (row.get("expected") or {}).get("reasoning"):
                findings.add(f"missing_reasoning_{side}", {"id": rid, "content": (out.content or "")[:200]})
        # A leak counts against the deployment unless the reference answered the same row with the same
        # markers in its text: then the weights put them there (a self-hosted reference of the same
        # checkpoint), not the local parser or template. The hosted API never does, so against it every
        # local leak counts.
        if leaked_by_side.get("local"):
            if re_.error or not leaked_by_side["local"] <= leaked_by_side.get("reference", set()):
                local_only_leaks += 1
            else:
                shared_leaks += 1
        if verdicts["reference"] and not verdicts["local"]:
            regressions += 1
            findings.add("expectation_regression", {"id": rid, "kind": row.get("kind"),
                                                    "local": lo.error or lo.tool_calls or lo.content})
            disagreements.append(_pair(row, lo, re_, "the reference met the row's expectations, local did not"))
        if re_.error:
            continue  # the reference could not answer: nothing to compare against
        ref_calls = re_.finish_reason == "tool_calls"
        loc_calls = (not lo.error) and lo.finish_reason == "tool_calls"
        if ref_calls and loc_calls:
            tp += 1
            args_total += 1
            same = _same_calls(lo.tool_calls, re_.tool_calls)
            args_same += same
            if not same:
                findings.add("argument_disagreement", {"id": rid, "local": lo.tool_calls, "reference": re_.tool_calls})
                disagreements.append(_pair(row, lo, re_, "same tool call, different arguments"))
        elif loc_calls:
            fp += 1
            findings.add("tool_call_only_local", {"id": rid, "local": lo.tool_calls, "reference": re_.content})
            disagreements.append(_pair(row, lo, re_, "local called a tool, reference did not"))
        elif ref_calls:
            fn += 1
            findings.add("tool_call_only_reference", {"id": rid, "local": lo.error or lo.content,
                                                      "reference": re_.tool_calls})
            disagreements.append(_pair(row, lo, re_, "reference called a tool, local did not"))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = sum(1 for rid in by_id if rid in local and rid in ref)
    acc = {side: (ok / total if total else None) for side, (ok, total) in schema.items()}
    fmt = {side: (ok / total if total else None) for side, (ok, total) in formats.items()}
    fmt_min = thresholds.get("response_format_accuracy", RESPONSE_FORMAT_ACCURACY)
    leaks = local_only_leaks + sum(f["count"] for f in findings.to_list()
                                   if f["kind"] == "tools_refused_markers_in_content")
    checks = {
        "tool_call_f1": {"value": round(f1, 4), "min": thresholds["tool_call_f1"], "ok": f1 >= thresholds["tool_call_f1"]},
        "schema_accuracy_local": {"value": acc["local"], "min": thresholds["schema_accuracy"],
                                  "ok": acc["local"] is None or acc["local"] >= thresholds["schema_accuracy"]},
        "leaked_special_tokens_local": {"value": leaks, "max": thresholds["leaked_special_tokens"],
                                        "ok": leaks <= thresholds["leaked_special_tokens"],
                                        "shared_with_reference": shared_leaks},
        "expectation_regressions": {"value": round(regressions / n, 4) if n else 0.0,
                                    "max": thresholds.get("expectation_regression_rate", EXPECTATION_REGRESSION_RATE),
                                    "ok": (regressions / n if n else 0.0) <= thresholds.get(
                                        "expectation_regression_rate", EXPECTATION_REGRESSION_RATE)},
        "local_error_rate": {"value": round(errors["local"] / n, 4) if n else 0.0, "max": thresholds["error_rate"],
                             "ok": (errors["local"] / n if n else 0.0) <= thresholds["error_rate"]},
    }
    if formats["local"][1]:  # only where the suite asks for json answers
        checks["response_format_accuracy_local"] = {"value": round(fmt["local"] or 0.0, 4), "min": fmt_min,
                                                    "ok": (fmt["local"] or 0.0) >= fmt_min}
    return {
        "suite": suite, "n": n,
        "tool_call_f1": round(f1, 4), "precision": round(precision, 4), "recall": round(recall, 4),
        "confusion": {"tp": tp, "fp": fp, "fn": fn},
        "schema_accuracy": {k: (round(v, 4) if v is not None else None) for k, v in acc.items()},
        "response_format_accuracy": {k: (round(v, 4) if v is not None else None) for k, v in fmt.items()},
        "argument_agreement": round(args_same / args_total, 4) if args_total else None,
        "expectations_met": {side: (round(ok / total, 4) if total else None) for side, (ok, total) in met.items()},
        "expectations_by_kind": dict(sorted(by_kind.items())),
        "finish_reasons": finish, "completion_tokens": {k: _stats(v) for k, v in lengths.items()},
        "errors": errors, "findings": findings.to_list(), "checks": checks, "thresholds": thresholds,
        "verdict": "PASS" if all(c["ok"] for c in checks.values()) else "FAIL",
        "disagreements": disagreements,
    }


def _same_calls(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def norm(calls: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        out = []
        for c in calls:
            try:
                out.append((c["name"], json.loads(c["arguments"] or "{}")))
            except json.JSONDecodeError:
                out.append((c["name"], c["arguments"]))
        return out
    return norm(a) == norm(b)


def _pair(row: dict[str, Any], lo: Outcome, re_: Outcome, why: str) -> dict[str, Any]:
    user = next((m.get("content") for m in reversed(row["messages"]) if m.get("role") == "user"), "")
    return {"id": row["id"], "why": why, "prompt": user,
            "local": {"finish_reason": lo.finish_reason, "content": lo.content, "tool_calls": lo.tool_calls,
                      "error": lo.error},
            "reference": {"finish_reason": re_.finish_reason, "content": re_.content, "tool_calls": re_.tool_calls}}
