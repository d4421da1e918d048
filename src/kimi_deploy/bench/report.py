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


def cdf_plot(per_request: list[RequestRecord], out: Path, *, slo: dict[str, float] | None = None) -> Path:
    """latency_cdf.png: the CDFs of TTFT, ITL and E2E of the successful requests, p50/p90/p99 marked, and
    the --slo bound of a panel's metric (ttft_ms, itl_ms, e2e_ms) drawn as a red line."""
    from ..stats import percentile

    plt = _fig()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key in zip(axes, ("ttft", "itl", "e2e")):
        if key == "itl":
            vals = sorted(x for m in per_request if m.ok for x in m.itl)
        else:
            vals = sorted(getattr(m, key) for m in per_request if m.ok and getattr(m, key) is not None)
        if vals:
            ax.plot(vals, [(i + 1) / len(vals) for i in range(len(vals))])
            for q, style in ((50, ":"), (90, "--"), (99, "-.")):
                x = percentile(vals, q, presorted=True)
                ax.axvline(x, color="gray", linestyle=style, linewidth=1, label=f"p{q} {x:.1f} ms")
        bound = (slo or {}).get(f"{key}_ms")
        if bound is not None:  # itl_ms bounds a request's largest gap; drawn over the pooled gaps
            ax.axvline(bound, color="red", linewidth=1.5, label=f"SLO {key}_ms {bound:g}")
        if vals or bound is not None:
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xlabel(f"{key} (ms)")
        ax.set_ylabel("fraction of " + ("chunks" if key == "itl" else "requests"))
        ax.grid(alpha=0.3)
    return _save(plt, fig, out / "latency_cdf.png")


def _is_counter(name: str) -> bool:
    """A Prometheus counter among the scraped metrics: its sample name ends in _total (the suffix
    prometheus_client and vLLM/SGLang give every counter; summed histograms are not kept by scrape())."""
    return name.endswith("_total")


def engine_series(during: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float], str]]:
    """What metrics_plot draws: per metric with at least two samples in summary.json server.metrics_during
    ({"t": seconds since the start, name: value}), (times, values, "rate" | "value"): a counter as its rate
    per second between consecutive samples (at their midpoint; NaN over a reset), a gauge as sampled."""
    import numpy as np

    out: dict[str, tuple[list[float], list[float], str]] = {}
    for name in sorted({k for snap in during for k in snap if k != "t"}):
        pts = sorted((float(s["t"]), float(s[name])) for s in during
                     if isinstance(s.get(name), (int, float)) and isinstance(s.get("t"), (int, float)))
        if len(pts) < 2:
            continue
        t, v = np.array(pts).T
        if _is_counter(name):
            dt = np.diff(t)
            rate = np.where(dt > 0, np.diff(v) / np.where(dt > 0, dt, 1), np.nan)
            rate[rate < 0] = np.nan  # a counter reset (engine restart) has no rate
            out[name] = (((t[1:] + t[:-1]) / 2).tolist(), rate.tolist(), "rate")
        else:
            out[name] = (t.tolist(), v.tolist(), "value")
    return out


def metrics_plot(during: list[dict[str, Any]], out: Path) -> Path | None:
    """engine_metrics.png: one small panel per engine_series metric; None when no metric has two samples."""
    series = engine_series(during)
    if not series:
        return None
    plt = _fig()
    cols = min(3, len(series))
    rows = -(-len(series) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 2.8 * rows), squeeze=False)
    for ax, (name, (t, v, kind)) in zip(axes.flat, series.items()):
        ax.plot(t, v, marker=".")
        ax.set_title(f"{name} (rate)" if kind == "rate" else name, fontsize=8)
        if kind == "rate":
            ax.set_ylabel("per second")
        ax.set_xlabel("s since start")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series):]:
        ax.set_visible(False)
    return _save(plt, fig, out / "engine_metrics.png")


def sweep_plot(points: list[dict[str, Any]], out: Path, *, title: str = "", xlabel: str = "load",
               slo_fraction: float | None = None) -> Path:
    """sweep.png: output tokens/s and per-user tokens/s against the load, and with an SLO (`slo_fraction`,
    the share of requests a load must keep within it) the goodput fraction against the load. Every y axis
    starts at 0, so that run-to-run noise does not look like a trend; INVALID points (the client was the
    limit) are red crosses off the line. A panel of throughput against per-user speed is left out: both are
    read off the two panels at the same load."""
    import textwrap

    plt = _fig()
    panels = [("output_tokens_per_s", "output tokens/s (all users)"),
              ("per_user_tokens_per_s", "per-user output tokens/s (1000 / mean TPOT)")]
    if slo_fraction is not None:
        panels.append(("goodput_fraction", "goodput: share of requests within the SLO"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4))
    pts = sorted(points, key=lambda p: p["load"])
    loads = [p["load"] for p in pts]
    for ax, (key, label) in zip(axes, panels):
        ok = [p for p in pts if p["valid"] and p.get(key) is not None]
        bad = [p for p in pts if not p["valid"] and p.get(key) is not None]
        ax.plot([p["load"] for p in ok], [p[key] for p in ok], marker="o")
        if bad:
            ax.plot([p["load"] for p in bad], [p[key] for p in bad], "x", color="red", markersize=9,
                    label="INVALID (client-limited)")
            ax.legend(fontsize=8)
        if key == "goodput_fraction":
            ax.axhline(slo_fraction, color="gray", linestyle="--", linewidth=1)
            ax.set_ylim(0, 1.05)
            for p in ok + bad:  # goodput in requests/s beside each point
                if p.get("goodput_requests_per_s") is not None:
                    ax.annotate(f"{p['goodput_requests_per_s']:.3g} req/s", (p["load"], p[key]), fontsize=7,
                                textcoords="offset points", xytext=(3, -10))
        else:
            ax.set_ylim(bottom=0, top=max((p[key] for p in ok + bad), default=1) * 1.1 or 1)
        if loads and min(loads) > 0 and max(loads) / min(loads) >= 4:  # doublings evenly spaced
            ax.set_xscale("log", base=2)
        if 0 < len(loads) <= 12:  # each load a tick, written as the load
            ax.set_xticks(loads, [f"{x:g}" for x in loads], fontsize=8)
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=9)
    return _save(plt, fig, out / "sweep.png")


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _num(v: Any) -> str:
    """A number as summary.json holds it (so the page and the file agree), '-' for none."""
    return "-" if v is None else html.escape(str(v))


def _measured_records(out: Path) -> list[RequestRecord] | None:
    """The measured rows of out/requests.jsonl (warm-up and deadline-cut ones left out), None without it."""
    from .metrics import RequestRecord

    p = out / "requests.jsonl"
    if not p.is_file():
        return None
    try:
        rows = [RequestRecord.from_json(json.loads(x)) for x in p.read_text().splitlines() if x.strip()]
    except (ValueError, TypeError):
        return None
    return [r for r in rows if not r.warmup and not r.incomplete]


def _header(summary: dict[str, Any]) -> str:
    """The numbers an operator reads first, each cell tagged with its summary.json path (data-key)."""
    req, thr, lat = summary["requests"], summary["throughput"], summary["latency_ms"]
    client, good = summary["client"], summary.get("goodput") or {}
    cfg = summary.get("config") or {}

    def cell(label: str, key: str, value: Any, unit: str = "") -> str:
        return (f'<div class=kpi><div class=l>{html.escape(label)}</div><div class=v data-key="{key}">{_num(value)}'
                f"</div><div class=u>{html.escape(unit)}</div></div>")

    cells = [cell("completed", "requests.completed", req.get("completed")),
             cell("failed", "requests.failed", req.get("failed")),
             cell("requests/s", "throughput.requests_per_s", thr.get("requests_per_s")),
             cell("output tokens/s", "throughput.output_tokens_per_s", thr.get("output_tokens_per_s")),
             cell("TTFT p50", "latency_ms.ttft.p50", (lat.get("ttft") or {}).get("p50"), "ms"),
             cell("TTFT p99", "latency_ms.ttft.p99", (lat.get("ttft") or {}).get("p99"), "ms"),
             cell("TPOT p50", "latency_ms.tpot.p50", (lat.get("tpot") or {}).get("p50"), "ms"),
             cell("TPOT p99", "latency_ms.tpot.p99", (lat.get("tpot") or {}).get("p99"), "ms")]
    if good.get("slo"):
        slo = ", ".join(f"{k} <= {v:g}" for k, v in good["slo"].items())
        cells.insert(4, cell("goodput", "goodput.requests_per_s", good.get("requests_per_s"),
                             f"req/s within {slo}"))
        cells.insert(5, cell("goodput share", "goodput.fraction", good.get("fraction"),
                             f"{good.get('good')} of {good.get('of')}"))
    valid = client.get("valid")
    verdict = ('<p class="verdict ok">VALID: the client kept its schedule (its self-check passed)</p>' if valid else
               '<p class="verdict bad">INVALID: ' + "; ".join(html.escape(str(r)) for r in client.get("invalid_because") or [])
               + "</p>")
    extra = []
    if req.get("incomplete"):
        extra.append(f"{_num(req['incomplete'])} incomplete (in flight at the --duration deadline)")
    if req.get("not_sent"):
        extra.append(f"{_num(req['not_sent'])} not sent")
    if cfg.get("interrupted"):
        extra.append("interrupted (Ctrl-C): what finished is kept")
    what = (f"<p class=what>model <b>{html.escape(str(cfg.get('model')))}</b> at {html.escape(str(cfg.get('base_url')))}, "
            f"workload {html.escape(str(cfg.get('workload')))}, "
            + (f"rate {_num(cfg.get('rate'))}/s" if cfg.get("rate") is not None else f"concurrency {_num(cfg.get('concurrency'))}")
            + f", window {_num(thr.get('window_s'))} s" + ("; " + "; ".join(extra) if extra else "") + "</p>")
    return verdict + what + "<div class=kpis>" + "".join(cells) + "</div>"


def html_report(summary: dict[str, Any], pngs: list[Path], out: Path) -> Path:
    """report.html, self-contained (plots as data: URIs): first the verdict and the key numbers, then the
    failure reasons, the latency table, the plots (latency CDFs with percentiles and the SLO bounds, the
    engine's metrics over the run), the definitions, and the raw JSON folded away. Every value from the
    server or the configuration is HTML-escaped. The CDF is redrawn from out/requests.jsonl when an SLO
    was given, to draw its bounds."""
    slo = (summary.get("goodput") or {}).get("slo") or {}
    pngs = list(pngs)
    if slo and any(p.name == "latency_cdf.png" for p in pngs):
        records = _measured_records(out)
        if records is not None:
            cdf_plot(records, out, slo=slo)
    during = (summary.get("server") or {}).get("metrics_during") or []
    engine = metrics_plot(during, out) if during else None
    if engine is not None and engine not in pngs:
        pngs.append(engine)
    imgs = "".join(f'<img alt="{html.escape(p.name)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
                   for p in pngs if p.is_file())
    if during and engine is None:
        imgs += "<p>The engine's metrics have fewer than two samples each (one every 5 s): no plot over time.</p>"
    rows = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{_num(v.get(s))}</td>"
                                                              for s in ("mean", "p50", "p90", "p99", "max", "n")) + "</tr>"
                   for k, v in summary["latency_ms"].items())
    defs = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in summary["definitions"].items())
    errors = summary["requests"].get("errors") or {}
    errors_html = ("<h2>Failures</h2><table><tr><th>reason</th><th>requests</th></tr>"
                   + "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_num(n)}</td></tr>"
                             for k, n in sorted(errors.items(), key=lambda kv: -kv[1]))
                   + "</table>") if errors else ""
    cache = summary.get("prefix_cache")
    cache_html = ""
    if cache:  # the engine's measured rate beside the trace's ideal (an unbounded cache) when there is one
        def pct(v: Any) -> str:
            return "-" if not isinstance(v, (int, float)) else f"{v:.1%}"
        cache_html = ("<h2>Prefix cache</h2><table><tr><th>engine hit rate (tokens)</th><th>trace's ideal (tokens)"
                      "</th><th>trace's ideal (blocks)</th><th>engine's source</th></tr>"
                      f"<tr><td>{pct(cache.get('engine_token_hit_rate'))}</td><td>{pct(cache.get('ideal_token_hit_rate'))}"
                      f"</td><td>{pct(cache.get('ideal_block_hit_rate'))}</td><td>{html.escape(str(cache.get('source')))}"
                      "</td></tr></table>")
    raw = {k: v for k, v in summary.items() if k != "definitions"}
    page = f"""<!doctype html><meta charset=utf-8><title>kimi-deploy bench: {html.escape(str((summary.get('config') or {}).get('model')))}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:4px 8px}}table{{border-collapse:collapse;margin:1em 0}}
img{{max-width:100%}}.verdict{{font-size:1.3em;font-weight:bold;padding:.4em .6em}}.ok{{color:#060;background:#e8f5e8}}
.bad{{color:#b00;background:#fde8e8}}.kpis{{display:flex;flex-wrap:wrap;gap:.6em}}.kpi{{border:1px solid #ccc;padding:.4em .8em;min-width:7em}}
.kpi .l,.kpi .u{{font-size:.8em;color:#555}}.kpi .v{{font-size:1.5em;font-weight:bold}}</style>
<h1>kimi-deploy bench</h1>
{_header(summary)}
{errors_html}
<h2>Latency (ms)</h2><table><tr><th>metric</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>n</th></tr>{rows}</table>
{cache_html}
<h2>Plots</h2>
{imgs}
<h2>Definitions</h2><table>{defs}</table>
<details><summary>Raw summary.json (configuration, server, every number)</summary>
<pre>{html.escape(json.dumps(raw, indent=1)[:200000])}</pre></details>"""
    path = out / "report.html"
    path.write_text(page)
    return path
