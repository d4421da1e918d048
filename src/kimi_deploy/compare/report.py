"""The comparison's human-facing outputs: a rich table on screen, and report.md / report.html with the
checks, the findings, the worst disagreements side by side, the streamed-vs-non-streamed disagreements
side by side (load-dependent ones marked), the token accounting and the sampling pre-flight. Each answer
shown is at most limits.SHOWN_CHARS characters (the summary they are made from is clipped too)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from .limits import SHOWN_CALLS, SHOWN_CHARS


def print_summary(console: Console, s: dict[str, Any]) -> None:
    t = Table(title=f"compare {s['suite']}: {s['local']['url']} vs {s['reference']['url']} ({s['n']} requests)")
    for col in ("check", "value", "bound", "ok"):
        t.add_column(col)
    for name, c in s["checks"].items():
        bound = f">= {c['min']}" if "min" in c else f"<= {c['max']}"
        t.add_row(name, str(c["value"]), bound, "[green]yes[/green]" if c["ok"] else "[red]NO[/red]")
    console.print(t)
    if s["findings"]:
        f = Table(title="findings")
        f.add_column("kind")
        f.add_column("count", justify="right")
        f.add_column("example")
        for item in s["findings"][:12]:
            f.add_row(item["kind"], str(item["count"]), json.dumps(item["example"], ensure_ascii=False)[:120])
        console.print(f)
    colour = "green" if s["verdict"] == "PASS" else "red"
    console.print(f"verdict: [bold {colour}]{s['verdict']}[/bold {colour}]")


def _answer(side: dict[str, Any]) -> str:
    if side.get("error"):
        text = f"error: {side['error']}"
    elif side.get("tool_calls"):
        text = "; ".join(c["clipped"] if c.get("clipped") else f"{c['name']}({c['arguments']})"
                         for c in side["tool_calls"])
    else:
        return (side.get("content") or "")[:300]
    # each part is clipped already (limits.clip_shown): this bounds the cell, never cuts a part's own note
    cap = SHOWN_CHARS * (SHOWN_CALLS + 2)
    return text if len(text) <= cap else f"{text[:cap]}... [clipped: {len(text):,} characters in all]"


def write_reports(out: Path, s: dict[str, Any], worst: int = 20,
                  write: Callable[[str, str], None] | None = None) -> None:
    """report.md and report.html in `out`, each through `write(name, text)` (default: written in place)."""
    write = write or (lambda name, text: (out / name).write_text(text))
    lines = [f"# kimi-deploy compare: {s['suite']} — {s['verdict']}", "",
             f"local: `{s['local']['url']}` model `{s['local']['model']}`  ",
             f"reference: `{s['reference']['url']}` model `{s['reference']['model']}` ({s['reference']['kind']})  ",
             f"requests compared: {s['n']}", "", "| check | value | bound | ok |", "|---|---|---|---|"]
    for name, c in s["checks"].items():
        bound = f">= {c['min']}" if "min" in c else f"<= {c['max']}"
        lines.append(f"| {name} | {c['value']} | {bound} | {'yes' if c['ok'] else 'NO'} |")
    lines += ["", f"precision {s['precision']}, recall {s['recall']}, confusion {s['confusion']}, "
                  f"argument agreement {s['argument_agreement']}, schema accuracy {s['schema_accuracy']}", "",
              "## Findings", "", "| kind | count | example |", "|---|---|---|"]
    for f in s["findings"]:
        lines.append(f"| {f['kind']} | {f['count']} | `{json.dumps(f['example'], ensure_ascii=False)[:200]}` |")
    lines += ["", "## Worst disagreements", "", "| id | why | prompt | local | reference |", "|---|---|---|---|---|"]
    for d in s["disagreements"][:worst]:
        cells = [d["id"], d["why"], d["prompt"] or "", _answer(d["local"]), _answer(d["reference"])]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    lines += _extra_md(s, worst)
    write("report.md", "\n".join(lines) + "\n")
    rows = "".join(
        f"<tr><td>{html.escape(d['id'])}</td><td>{html.escape(d['why'])}</td><td>{html.escape(d['prompt'] or '')}</td>"
        f"<td><pre>{html.escape(_answer(d['local']))}</pre></td><td><pre>{html.escape(_answer(d['reference']))}</pre></td></tr>"
        for d in s["disagreements"][:worst])
    checks = "".join(
        f"<tr class={'ok' if c['ok'] else 'bad'}><td>{html.escape(n)}</td><td>{c['value']}</td>"
        f"<td>{'&ge; ' + str(c['min']) if 'min' in c else '&le; ' + str(c['max'])}</td></tr>" for n, c in s["checks"].items())
    findings = "".join(f"<tr><td>{html.escape(f['kind'])}</td><td>{f['count']}</td><td><pre>"
                       f"{html.escape(json.dumps(f['example'], ensure_ascii=False, indent=1)[:600])}</pre></td></tr>"
                       for f in s["findings"])
    write("report.html", f"""<!doctype html><meta charset=utf-8><title>compare {html.escape(s['suite'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}
table{{border-collapse:collapse;margin-bottom:1.5em}}.ok{{background:#e6ffe6}}.bad{{background:#ffe6e6}}pre{{white-space:pre-wrap;margin:0}}</style>
<h1>{html.escape(s['suite'])}: {s['verdict']}</h1>
<p>local {html.escape(s['local']['url'])} ({html.escape(s['local']['model'])}) vs reference
{html.escape(s['reference']['url'])} ({html.escape(s['reference']['model'])}), {s['n']} requests</p>
<table><tr><th>check</th><th>value</th><th>bound</th></tr>{checks}</table>
<h2>Findings</h2><table><tr><th>kind</th><th>count</th><th>example</th></tr>{findings}</table>
<h2>Worst disagreements</h2><table><tr><th>id</th><th>why</th><th>prompt</th><th>local</th><th>reference</th></tr>{rows}</table>
{_extra_html(s, worst)}""")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _stream_rows(s: dict[str, Any], worst: int) -> list[tuple[str, str, str, str, str]]:
    """(id, kinds, under load?, non-streamed, streamed) for the streamed-vs-non-streamed table."""
    out = []
    for d in (s.get("streaming") or {}).get("disagreements", [])[:worst]:
        notes = d["streamed"].get("stream_notes")
        st = _answer(d["streamed"]) or f"(nothing: no content, no tool call; finish_reason {d['streamed']['finish_reason']})"
        st += f" [notes: {'; '.join(notes)}]" if notes else ""
        load = {True: "only under load", False: "also at concurrency 1"}.get(d.get("load_dependent"),
                                                                           "not rerun (--rerun-limit)")
        out.append((d["id"], ", ".join(d["kinds"]), load, _answer(d["non_streamed"]), st))
    return out


def _token_lines(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    acc = s.get("token_accounting") or {}
    pt = acc.get("prompt_tokens") or {}
    rows = []
    for name, key in (("local vs reference", "vs_reference"), ("local vs template count", "vs_template"),
                      ("streamed vs non-streamed", "streamed_vs_non_streamed")):
        part = pt.get(key) or {}
        tok = part.get("tokens") or {}
        rel = part.get("relative") or {}
        if not tok.get("n"):
            continue
        rows.append((name, f"median {tok['median']}, mean {tok['mean']}, min {tok['min']}, max {tok['max']} "
                           f"({tok['nonzero']} of {tok['n']} differ)",
                     f"median {rel['median']}" if rel.get("n") else ""))
    return rows


def _rerun_note(sm: dict[str, Any]) -> str:
    r = sm.get("rerun") or {}
    return f" ({r['rows']} of {r['of']} failing rows rerun alone, --rerun-limit {r['limit']})" \
        if r.get("of", 0) > r.get("rows", 0) else ""


def _extra_md(s: dict[str, Any], worst: int) -> list[str]:
    lines: list[str] = []
    sm = s.get("streaming")
    if sm is not None:
        lines += ["", "## Streamed vs non-streamed (local)", "",
                  f"{sm['compared']} requests compared at concurrency {s.get('concurrency')}; "
                  f"{len(sm['disagreements'])} disagree; load-dependent (fine at concurrency 1): "
                  f"{', '.join(sm['load_dependent']) or 'none'}{_rerun_note(sm)}", ""]
        if sm["disagreements"]:
            lines += ["| id | kinds | when | non-streamed | streamed |", "|---|---|---|---|---|"]
            lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in _stream_rows(s, worst)]
    acc = s.get("token_accounting")
    if acc is not None:
        lines += ["", "## Token accounting (prompt_tokens)", "",
                  f"template count: {acc['template_count']['source']}", ""]
        tl = _token_lines(s)
        if tl:
            lines += ["| counts | drift in tokens | relative |", "|---|---|---|"]
            lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in tl]
        ct = acc.get("completion_tokens_streamed_vs_non_streamed") or {}
        if ct.get("n"):
            lines += ["", f"completion_tokens, streamed minus non-streamed: median {ct['median']}, "
                          f"{ct['nonzero']} of {ct['n']} differ"]
        tg = acc.get("completion_tokens_minus_streamed_text_tokens") or {}
        if tg.get("n"):
            lines += [f"completion_tokens minus the tokens of the streamed text (answers without tool calls): "
                      f"median {tg['median']}, min {tg['min']}, max {tg['max']} over {tg['n']}"]
    pre = s.get("preflight")
    if pre is not None:
        lines += ["", "## Sampling pre-flight", "", f"status: {pre['status']}" +
                  (f" ({pre['why']})" if pre.get("why") else "")]
        if pre.get("hosted_fixed"):
            lines += [f"catalog model `{pre['catalog_model']}`; default mode {pre.get('default_mode')}; hosted fixes "
                      f"`{json.dumps(pre['hosted_fixed'])}` ({pre.get('source')}); served defaults "
                      f"`{json.dumps(pre.get('served_defaults'))}` from {pre.get('served_defaults_source')}"]
    return lines


def _extra_html(s: dict[str, Any], worst: int) -> str:
    parts = []
    sm = s.get("streaming")
    if sm is not None:
        rows = "".join("<tr>" + "".join(f"<td><pre>{html.escape(c)}</pre></td>" for c in r) + "</tr>"
                       for r in _stream_rows(s, worst))
        parts.append(f"<h2>Streamed vs non-streamed (local)</h2><p>{sm['compared']} requests compared at concurrency "
                     f"{s.get('concurrency')}; {len(sm['disagreements'])} disagree; load-dependent: "
                     f"{html.escape(', '.join(sm['load_dependent']) or 'none')}{html.escape(_rerun_note(sm))}</p>"
                     f"<table><tr><th>id</th><th>kinds</th><th>when</th><th>non-streamed</th><th>streamed</th></tr>"
                     f"{rows}</table>")
    acc = s.get("token_accounting")
    if acc is not None:
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in _token_lines(s))
        parts.append(f"<h2>Token accounting (prompt_tokens)</h2><p>template count: "
                     f"{html.escape(acc['template_count']['source'])}</p><table><tr><th>counts</th>"
                     f"<th>drift in tokens</th><th>relative</th></tr>{rows}</table>")
    pre = s.get("preflight")
    if pre is not None:
        parts.append(f"<h2>Sampling pre-flight</h2><pre>{html.escape(json.dumps(pre, indent=1, ensure_ascii=False))}</pre>")
    return "\n".join(parts)
