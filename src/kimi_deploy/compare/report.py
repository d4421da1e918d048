"""The comparison's human-facing outputs: a rich table on screen, and report.md / report.html with the
checks, the findings and the worst disagreements side by side."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


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
        return f"error: {side['error']}"
    if side.get("tool_calls"):
        return "; ".join(f"{c['name']}({c['arguments']})" for c in side["tool_calls"])
    return (side.get("content") or "")[:300]


def write_reports(out: Path, s: dict[str, Any], worst: int = 20) -> None:
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
    (out / "report.md").write_text("\n".join(lines) + "\n")
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
    (out / "report.html").write_text(f"""<!doctype html><meta charset=utf-8><title>compare {html.escape(s['suite'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}
table{{border-collapse:collapse;margin-bottom:1.5em}}.ok{{background:#e6ffe6}}.bad{{background:#ffe6e6}}pre{{white-space:pre-wrap;margin:0}}</style>
<h1>{html.escape(s['suite'])}: {s['verdict']}</h1>
<p>local {html.escape(s['local']['url'])} ({html.escape(s['local']['model'])}) vs reference
{html.escape(s['reference']['url'])} ({html.escape(s['reference']['model'])}), {s['n']} requests</p>
<table><tr><th>check</th><th>value</th><th>bound</th></tr>{checks}</table>
<h2>Findings</h2><table><tr><th>kind</th><th>count</th><th>example</th></tr>{findings}</table>
<h2>Worst disagreements</h2><table><tr><th>id</th><th>why</th><th>prompt</th><th>local</th><th>reference</th></tr>{rows}</table>
""")
