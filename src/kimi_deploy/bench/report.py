"""Benchmark outputs for people: PNG latency CDFs (and throughput vs per-user speed for sweeps) and one
self-contained HTML report with the definitions, the numbers and the plots embedded."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .metrics import RequestRecord


def _fig():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cdf_plot(per_request: list[RequestRecord], out: Path) -> Path:
    plt = _fig()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key in zip(axes, ("ttft", "itl", "e2e")):
        if key == "itl":
            vals = sorted(x for m in per_request if m.ok for x in m.itl)
        else:
            vals = sorted(getattr(m, key) for m in per_request if m.ok and getattr(m, key) is not None)
        if vals:
            ax.plot(vals, [(i + 1) / len(vals) for i in range(len(vals))])
        ax.set_xlabel(f"{key} (ms)")
        ax.set_ylabel("fraction of " + ("chunks" if key == "itl" else "requests"))
        ax.grid(alpha=0.3)
    return _save(plt, fig, out / "latency_cdf.png")


def sweep_plot(points: list[dict[str, Any]], out: Path) -> Path:
    plt = _fig()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["per_user_tokens_per_s"] for p in points]
    ys = [p["output_tokens_per_s"] for p in points]
    ax.plot(xs, ys, marker="o")
    for p in points:
        ax.annotate(str(p["load"]), (p["per_user_tokens_per_s"], p["output_tokens_per_s"]), fontsize=8)
    ax.set_xlabel("per-user output tokens/s (1000 / mean TPOT)")
    ax.set_ylabel("output tokens/s")
    ax.grid(alpha=0.3)
    return _save(plt, fig, out / "sweep.png")


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def html_report(summary: dict[str, Any], pngs: list[Path], out: Path) -> Path:
    imgs = "".join(f'<img alt="{p.name}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
                   for p in pngs if p.is_file())
    rows = "".join(f"<tr><td>{k}</td>" + "".join(f"<td>{v.get(s) if v.get(s) is not None else ''}</td>"
                                                  for s in ("mean", "p50", "p90", "p99", "max")) + "</tr>"
                   for k, v in summary["latency_ms"].items())
    defs = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                   for k, v in summary["definitions"].items())
    valid = summary["client"]["valid"]
    cache = summary.get("prefix_cache")
    cache_html = ""
    if cache:  # the engine's measured rate beside the trace's ideal (an unbounded cache) when there is one
        def pct(v: Any) -> str:
            return "-" if v is None else f"{v:.1%}"
        cache_html = ("<h2>Prefix cache</h2><table><tr><th>engine hit rate (tokens)</th><th>trace's ideal (tokens)"
                      "</th><th>trace's ideal (blocks)</th><th>engine's source</th></tr>"
                      f"<tr><td>{pct(cache.get('engine_token_hit_rate'))}</td><td>{pct(cache.get('ideal_token_hit_rate'))}"
                      f"</td><td>{pct(cache.get('ideal_block_hit_rate'))}</td><td>{html.escape(str(cache.get('source')))}"
                      "</td></tr></table>")
    page = f"""<!doctype html><meta charset=utf-8><title>kimi-deploy bench</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:4px 8px}}table{{border-collapse:collapse;margin:1em 0}}
img{{max-width:100%}}.bad{{color:#b00}}</style>
<h1>kimi-deploy bench</h1>
<p class="{'' if valid else 'bad'}">client self-check: {'valid' if valid else 'INVALID: ' + html.escape('; '.join(summary['client']['invalid_because']))}</p>
<pre>{html.escape(json.dumps({k: summary[k] for k in ('requests', 'throughput', 'tokens', 'goodput', 'client')}, indent=1))}</pre>
<h2>Latency (ms)</h2><table><tr><th>metric</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>{rows}</table>
{cache_html}
{imgs}
<h2>Definitions</h2><table>{defs}</table>
<h2>Configuration</h2><pre>{html.escape(json.dumps(summary['config'], indent=1))}</pre>
<h2>Server</h2><pre>{html.escape(json.dumps(summary['server'], indent=1)[:20000])}</pre>"""
    path = out / "report.html"
    path.write_text(page)
    return path
