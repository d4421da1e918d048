"""`kimi-deploy bench export` and the HTML report, on a real run: `kimi-deploy bench` against
`kimi-deploy sim` (injected HTTP 500s, an SLO, and a model name that is an HTML tag), then

- vllm: the export read back by vLLM's own code (vllm/benchmarks/serve.py `calculate_metrics` on
  RequestFuncOutput rows built from the file's per-request lists, and two of vLLM's sweep readers of a saved
  result), whose aggregates must equal the file's; its per-request lists are seconds, its aggregates ms.
- guidellm: the report validated by GuideLLM's own pydantic model (GenerativeBenchmarksReport, from the
  guidellm release requirements/guidellm.txt pins, unpacked by scripts/setup-env.sh, never installed), and every
  distribution recomputed by GuideLLM's own statistics (StatusDistributionSummary) from the requests it
  parsed. What stands in: GuideLLM's package imports runtime dependencies .venv lacks (culsans, datasets,
  pandas, sanic, ...; none used by its schema models), so empty stand-in modules are importable in the
  checking subprocess in their place.
- csv: read back with the csv module and numpy; itl summarised per request.
- the report: the header's numbers equal summary.json's, hostile names are escaped, failure reasons are
  a table, and the engine metrics sampled during a run are plotted (from a constructed summary: the bench
  samples /metrics every 5 s, longer than a tiny run)."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from .conftest import assert_clean_error, run_cli, start_sim

HOSTILE = "sim<script>alert(1)</script>"
# vllm bench serve's --save-result keys with --save-detailed (vllm 0.32.0 vllm/benchmarks/serve.py: main()
# and benchmark()), and the aggregates of --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99
VLLM_KEYS = {"date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts", "request_rate",
             "burstiness", "max_concurrency", "duration", "completed", "failed", "total_input_tokens",
             "total_output_tokens", "request_throughput", "request_goodput", "output_throughput",
             "total_token_throughput", "input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times",
             "generated_texts", "errors", "max_output_tokens_per_s", "max_concurrent_requests", "rtfx"} | {
    f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "median", "std", "p50", "p90", "p99")}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One tiny bench run against the sim: 30 measured requests after 2 warm-up, some HTTP 500s, an SLO."""
    proc, url = start_sim("--model", HOSTILE, "--ttft-ms", "30", "--itl-ms", "5", "--error-rate", "0.15",
                          "--seed", "4")
    try:
        out = tmp_path_factory.mktemp("export") / "run"
        p = run_cli("bench", "--base-url", url, "--model", HOSTILE, "--output", str(out), "--concurrency", "4",
                    "--num-requests", "30", "--warmup", "2", "--output-len", "20", "--input-len", "32",
                    "--slo", "ttft_ms=500,tpot_ms=50", timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        yield out
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _rows(d: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (d / "requests.jsonl").read_text().splitlines() if x.strip()]


def _export(d: Path, fmt: str, *extra: str) -> Path:
    p = run_cli("bench", "export", str(d), "--format", fmt, *extra)
    assert p.returncode == 0, p.stdout + p.stderr
    path = Path(p.stdout.strip().splitlines()[-1])
    assert path.is_file(), p.stdout
    return path


VLLM_CHECK = r"""
import json, sys
from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput
from vllm.benchmarks.serve import calculate_metrics
from vllm.benchmarks.sweep.plot_pareto import _prepare_records
from vllm.benchmarks.sweep.serve_workload import _estimate_workload_value

d = json.load(open(sys.argv[1]))
slo = json.loads(sys.argv[2])
outs = [RequestFuncOutput(success=not e, latency=lat, output_tokens=o, ttft=t, itl=i, prompt_len=p, error=e,
                          start_time=s)
        for e, lat, o, t, i, p, s in zip(d["errors"], d["latencies"], d["output_lens"], d["ttfts"], d["itls"],
                                          d["input_lens"], d["start_times"])]
m, lens = calculate_metrics([None] * len(outs), outs, d["duration"], None, [50.0, 90.0, 99.0], slo)
res = {k: float(getattr(m, k)) for k in ("completed", "failed", "request_throughput", "request_goodput",
                                          "output_throughput", "total_token_throughput", "max_output_tokens_per_s",
                                          "max_concurrent_requests")}
res["total_input_tokens"], res["total_output_tokens"] = m.total_input, m.total_output
for name in ("ttft", "tpot", "itl", "e2el"):
    for s in ("mean", "median", "std"):
        res[f"{s}_{name}_ms"] = float(getattr(m, f"{s}_{name}_ms"))
    for p, v in getattr(m, f"percentiles_{name}_ms"):
        res[f"p{int(p)}_{name}_ms"] = float(v)
readers = {"concurrency_estimate": _estimate_workload_value(d, "max_concurrency"),
           "tokens_per_user": _prepare_records([d], user_count_var="max_concurrency", gpu_count_var=None)[0][0][
               "tokens_per_user"]}
print(json.dumps({"metrics": res, "output_lens": lens, "readers": readers}))
"""


def test_vllm_export_is_what_vllms_own_code_computes(result: Path) -> None:
    path = _export(result, "vllm")
    assert path == result / "export-vllm.json"
    d = json.loads(path.read_text())
    s = json.loads((result / "summary.json").read_text())
    assert VLLM_KEYS <= set(d), VLLM_KEYS - set(d)
    measured = [r for r in _rows(result) if not r["warmup"]]
    assert d["num_prompts"] == len(measured) == 30 and d["completed"] == s["requests"]["completed"]
    assert d["failed"] == s["requests"]["failed"] > 0, "the sim injects HTTP 500s"
    assert d["model_id"] == HOSTILE and d["request_rate"] == "inf" and d["max_concurrency"] == 4
    # units: the per-request lists are seconds, our rows milliseconds
    for r, ttft, lat, itl, err in zip(measured, d["ttfts"], d["latencies"], d["itls"], d["errors"]):
        if r["ok"]:
            assert math.isclose(ttft * 1000, r["ttft"], abs_tol=1e-6) and math.isclose(lat * 1000, r["e2e"], abs_tol=1e-6)
            assert np.allclose(np.array(itl) * 1000, r["itl"]) and err == ""
        else:
            assert err == r["error"] and ttft == 0.0
    assert math.isclose(d["p50_ttft_ms"], s["latency_ms"]["ttft"]["p50"], abs_tol=1e-3)  # same percentile rule
    slo = {"ttft": 500.0, "tpot": 50.0}  # --slo ttft_ms=500,tpot_ms=50 in vllm's --goodput names
    p = subprocess.run([sys.executable, "-c", VLLM_CHECK, str(path), json.dumps(slo)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    theirs = json.loads(p.stdout.strip().splitlines()[-1])
    for k, v in theirs["metrics"].items():
        assert math.isclose(d[k], v, rel_tol=1e-9, abs_tol=1e-9), (k, d[k], v)
    assert theirs["output_lens"] == d["output_lens"]
    assert math.isclose(theirs["readers"]["tokens_per_user"], d["output_throughput"] / 4)
    assert math.isclose(theirs["readers"]["concurrency_estimate"], d["request_throughput"] * d["mean_e2el_ms"] / 1000)


GUIDELLM_CHECK = r'''
import importlib.abc, importlib.machinery, json, os, sys, types

STAND_INS = set(sys.argv[2].split(","))


class _Anything(type):
    def __getattr__(cls, name):
        return _Anything(name, (object,), {})

    def __call__(cls, *a, **k):
        return _Anything("x", (object,), {})

    def __getitem__(cls, k):
        return cls

    def __or__(cls, o):
        return cls


class _Module(types.ModuleType):
    __path__ = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(name, (object,), {})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        return importlib.machinery.ModuleSpec(name, self, is_package=True) if name.split(".")[0] in STAND_INS else None

    def create_module(self, spec):
        return _Module(spec.name)

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Finder())
from guidellm.benchmark.schemas import GenerativeBenchmarksReport
from guidellm.schemas import StatusDistributionSummary as S

doc = json.load(open(sys.argv[1]))
report = GenerativeBenchmarksReport.model_validate(doc)  # raises on any violation of its schema
bench = report.benchmarks[0]
start, end = bench.scheduler_metrics.measure_start_time, bench.scheduler_metrics.measure_end_time
g = dict(successful=bench.requests.successful, incomplete=bench.requests.incomplete, errored=bench.requests.errored)
ftok = {k: [r for r in v if r.first_token_iteration is not None] for k, v in g.items()}
fout = {k: [r for r in v if r.first_output_token_iteration is not None] for k, v in g.items()}
w = dict(start_time=start, end_time=end)
theirs = {
    "requests_per_second": S.rate_distribution_from_timings_function(function=lambda r: r.request_end_time, **w, **g),
    "request_concurrency": S.concurrency_distribution_from_timings_function(
        function=lambda r: (r.request_start_time, r.request_end_time), **w, **g),
    "request_latency": S.from_values_function(function=lambda r: r.request_latency or 0.0, **g),
    "request_streaming_iterations_count": S.from_values_function(
        function=lambda r: r.info.timings.request_iterations or 0.0, **g),
    "prompt_token_count": S.from_values_function(function=lambda r: r.prompt_tokens or 0.0, **g),
    "output_token_count": S.from_values_function(function=lambda r: r.output_tokens or 0.0, **g),
    "total_token_count": S.from_values_function(function=lambda r: r.total_tokens or 0.0, **g),
    "time_to_first_token_ms": S.from_values_function(function=lambda r: r.time_to_first_token_ms or 0.0, **ftok),
    "time_to_first_output_token_ms": S.from_values_function(
        function=lambda r: r.time_to_first_output_token_ms or 0.0, **fout),
    "time_per_output_token_ms": S.from_values_function(
        function=lambda r: (r.time_per_output_token_ms or 0.0, r.output_tokens or 0.0), **g),
    "inter_token_latency_ms": S.from_values_function(
        function=lambda r: (r.inter_token_latency_ms or 0.0, (r.output_tokens or 1.0) - 1.0), **g),
    "prompt_tokens_per_second": S.rate_distribution_from_timings_function(
        function=lambda r: r.prompt_tokens_timing, **w, **g),
    "output_tokens_per_second": S.rate_distribution_from_timings_function(
        function=lambda r: r.output_tokens_timings, **w, **g),
    "tokens_per_second": S.rate_distribution_from_timings_function(function=lambda r: r.total_tokens_timings, **w, **g),
    "output_tokens_per_iteration": S.from_values_function(
        function=lambda r: [t for _, t in r.output_tokens_timings], **g),
    "iter_tokens_per_iteration": S.from_values_function(function=lambda r: [t for _, t in r.iter_tokens_timings], **g),
}
ours = doc["benchmarks"][0]["metrics"]
bad = []


def compare(a, b, path):
    if isinstance(b, dict):
        for k, v in b.items():
            if k not in ("pdf", "mean_ci", "percentile_cis"):
                compare(a.get(k) if isinstance(a, dict) else None, v, path + "." + k)
    elif isinstance(b, (int, float)) and (not isinstance(a, (int, float)) or abs(a - b) > 1e-6 * max(1.0, abs(b))):
        bad.append(f"{path}: ours {a!r}, GuideLLM {b!r}")


for name, dist in theirs.items():
    compare(ours[name], dist.model_dump(mode="json"), name)
dumped = report.model_dump(mode="json")["benchmarks"][0]["requests"]["successful"]
computed = ["time_to_first_token_ms", "inter_token_latency_ms", "time_per_output_token_ms", "request_latency",
            "output_tokens", "prompt_tokens", "output_tokens_per_second"]
for mine, its in zip(doc["benchmarks"][0]["requests"]["successful"], dumped):
    compare(mine, {k: its[k] for k in computed if its[k] is not None}, "request " + its["request_id"])
print(json.dumps({"mismatches": bad, "checked": sorted(theirs), "errored": len(g["errored"]),
                  "ttft_ms": {r.request_id: r.time_to_first_token_ms for r in g["successful"]}}))
sys.stdout.flush()
os._exit(0)  # past torch's exit hooks, which would call the stand-ins
'''
# GuideLLM 0.8.1's runtime dependencies that .venv lacks, by import name (its METADATA Requires-Dist;
# pandas comes with datasets, google with protobuf)
STAND_INS = ("culsans", "datasets", "pandas", "eval_type_backport", "faker", "ftfy", "msgpack", "google", "sanic",
             "tabulate", "more_itertools")


@pytest.fixture(scope="module")
def guidellm_wheel() -> Path:
    """GuideLLM unpacked beside the venv by scripts/setup-env.sh (pip install --no-deps --target, from
    requirements/guidellm.txt); a missing one fails here with the reason, never skips."""
    unpacked = Path(sys.prefix) / "guidellm"
    assert (unpacked / "guidellm" / "benchmark" / "schemas" / "report.py").is_file(), \
        f"{unpacked} has no GuideLLM: run bash scripts/setup-env.sh"
    return unpacked


def test_guidellm_export_is_valid_and_its_numbers_are_guidellms(result: Path, guidellm_wheel: Path,
                                                                 tmp_path: Path) -> None:
    path = _export(result, "guidellm", "--to", str(tmp_path / "benchmarks.json"))
    assert path == tmp_path / "benchmarks.json"
    p = subprocess.run([sys.executable, "-c", GUIDELLM_CHECK, str(path), ",".join(STAND_INS)], capture_output=True,
                       text=True, timeout=300, env={"PYTHONPATH": str(guidellm_wheel), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["mismatches"] == [] and len(out["checked"]) == 16, out["mismatches"][:10]
    s = json.loads((result / "summary.json").read_text())
    assert out["errored"] == s["requests"]["failed"] and len(out["ttft_ms"]) == s["requests"]["completed"]
    # GuideLLM's TTFT, from the exported timings, is the bench's (epoch-second floats: 0.01 ms)
    ours = {str(r["index"]): r["ttft"] for r in _rows(result) if r["ok"] and not r["warmup"]}
    assert ours.keys() == out["ttft_ms"].keys()
    for k, v in out["ttft_ms"].items():
        assert math.isclose(v, ours[k], abs_tol=0.01), (k, v, ours[k])


def test_csv_export_one_row_per_request(result: Path, tmp_path: Path) -> None:
    path = _export(result, "csv", "--to", str(tmp_path / "r.csv"))
    rows = _rows(result)
    with path.open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows) == 32
    assert "itl" not in table[0] and {"index", "ttft", "e2e", "tpot", "itl_count", "itl_mean", "itl_max",
                                      "error", "t_send"} <= set(table[0])
    for r, c in zip(rows, table):
        assert int(c["index"]) == r["index"] and int(c["itl_count"]) == len(r["itl"])
        if r["itl"]:
            assert math.isclose(float(c["itl_max"]), max(r["itl"])) and \
                math.isclose(float(c["itl_mean"]), sum(r["itl"]) / len(r["itl"]), abs_tol=1e-3)
        assert c["error"] == (r["error"] or "") and (c["ttft"] == "" if r["ttft"] is None else
                                                      math.isclose(float(c["ttft"]), r["ttft"]))
    a = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    ok = np.array([str(x) == "True" for x in a["ok"]])
    ttft = np.array([r["ttft"] for r in rows if r["ok"]])
    assert np.allclose(a["ttft"][ok], ttft)


def test_export_refuses_what_is_not_a_result(result: Path, tmp_path: Path) -> None:
    assert_clean_error(run_cli("bench", "export", str(tmp_path), "--format", "vllm"), str(tmp_path), "summary.json")
    assert_clean_error(run_cli("bench", "export", str(result), "--format", "excel"), "--format", "vllm, guidellm, csv")
    _export(result, "csv", "--to", str(tmp_path / "a.csv"))
    assert_clean_error(run_cli("bench", "export", str(result), "--format", "csv", "--to", str(tmp_path / "a.csv")),
                       "--to", "--overwrite")
    _export(result, "csv", "--to", str(tmp_path / "a.csv"), "--overwrite")
    assert_clean_error(run_cli("bench", "export", str(result), "--format", "vllm", "--to",
                               str(result / "summary.json"), "--overwrite"), "--to")
    assert json.loads((result / "summary.json").read_text())["requests"]  # left alone
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text((result / "summary.json").read_text())
    (broken / "requests.jsonl").write_text('{"index": 0, "ttft": "fast"}\n')
    assert_clean_error(run_cli("bench", "export", str(broken), "--format", "vllm"), "requests.jsonl", "ttft")
    (broken / "requests.jsonl").write_text("not json\n")
    assert_clean_error(run_cli("bench", "export", str(broken), "--format", "csv"), "requests.jsonl", "line 1")


# ---- the report --------------------------------------------------------------------------------

class _Page(HTMLParser):
    """The report's header cells (data-key -> text), the tags seen, and where the first h2 starts."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, str] = {}
        self.tags: list[str] = []
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._key = dict(attrs).get("data-key")

    def handle_data(self, data: str) -> None:
        if self._key:
            self.keys[self._key] = data
            self._key = None


def _get(summary: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        summary = summary[part]
    return summary


def test_report_header_is_summary_json_and_escapes_the_model(result: Path) -> None:
    page = (result / "report.html").read_text()
    s = json.loads((result / "summary.json").read_text())
    parsed = _Page()
    parsed.feed(page)
    expected = {"requests.completed", "requests.failed", "throughput.requests_per_s",
                "throughput.output_tokens_per_s", "goodput.requests_per_s", "goodput.fraction",
                "latency_ms.ttft.p50", "latency_ms.ttft.p99", "latency_ms.tpot.p50", "latency_ms.tpot.p99"}
    assert expected <= parsed.keys.keys(), parsed.keys
    for key in expected:
        assert float(parsed.keys[key]) == _get(s, key), (key, parsed.keys[key])
    head = page[:page.index("<h2>")]
    verdict = "VALID" if s["client"]["valid"] else "INVALID"
    assert re.search(rf">{verdict}: ", head) and all(k in head for k in ('data-key="requests.completed"',))
    assert "<script>" not in page and "alert(1)" in page and "sim&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "script" not in parsed.tags
    # the failures as a table, reason and count
    assert s["requests"]["errors"] and all(f"<td>{html_escape(k)}</td><td>{n}</td>" in page
                                           for k, n in s["requests"]["errors"].items())
    assert page.index("<details>") > page.index("data:image/png;base64,") and "&quot;goodput&quot;" in page[page.index("<details>"):]


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def test_report_plots_engine_metrics_and_escapes_server_values(result: Path, tmp_path: Path) -> None:
    from kimi_deploy.bench.report import engine_series, html_report, metrics_plot

    s = json.loads((result / "summary.json").read_text())
    s["server"]["metrics_during"] = [
        {"t": 5.0, "vllm:num_requests_running": 3, "vllm:generation_tokens_total": 100, "<script>x</script>_total": 1,
         "vllm:num_preemptions_total": 0},
        {"t": 10.0, "vllm:num_requests_running": 5, "vllm:generation_tokens_total": 600, "<script>x</script>_total": 2},
        {"t": 15.0, "vllm:num_requests_running": 4, "vllm:generation_tokens_total": 1600, "<script>x</script>_total": 3}]
    s["client"] = {**s["client"], "valid": False, "invalid_because": ["lag <b>high</b>"]}
    (tmp_path / "latency_cdf.png").write_bytes((result / "latency_cdf.png").read_bytes())
    page = html_report(s, [tmp_path / "latency_cdf.png"], tmp_path).read_text()
    assert (tmp_path / "engine_metrics.png").stat().st_size > 1000
    assert 'alt="engine_metrics.png" src="data:image/png;base64,' in page
    assert "<script>" not in page and "<b>high</b>" not in page and "INVALID: lag &lt;b&gt;high&lt;/b&gt;" in page
    assert page.index("INVALID") < page.index("<h2>")
    series = engine_series(s["server"]["metrics_during"])
    # counters (_total) as rates per second between samples, gauges as sampled; one sample: no panel
    assert series["vllm:generation_tokens_total"] == ([7.5, 12.5], [100.0, 200.0], "rate")
    assert series["vllm:num_requests_running"] == ([5.0, 10.0, 15.0], [3.0, 5.0, 4.0], "value")
    assert "vllm:num_preemptions_total" not in series
    # no metric with two samples, no file
    assert metrics_plot([{"t": 5.0, "vllm:num_preemptions_total": 0}], tmp_path / "none") is None
