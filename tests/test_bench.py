"""`kimi-deploy bench` against `kimi-deploy sim`, whose latencies are the injected ground truth: measured
TTFT, ITL, TPOT and E2E match within stated tolerances; failures are counted with reasons, never a
crash; an interrupted run keeps its data; `bench diff` tells a real difference from noise. Then an end
to end run on the real vLLM tiny-k2 deployment with a tool-call and a thinking workload.

Against a stalled or slow server (the sim's --stall-after, tests/faultserver.py) every run ends within a
wall-time limit and what did not finish is never counted as completed; a 200 with an HTML page is an
error, not an answer; every bad flag value (fuzzed too) and every corrupt `bench diff` input is exit 2
naming the flag or file, before any request."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import (NUMBERS, ROOT, Server, assert_clean_error, ctrl_c_as_in_a_shell, invoke_cli, run_cli,
                       run_cli_timed)

CONTRACT = {"definitions", "config", "server", "requests", "latency_ms", "throughput", "tokens", "goodput", "client"}


def _bench(url: str, out: Path, *args: str, model: str = "sim") -> dict:
    proc = run_cli("bench", "--base-url", url, "--model", model, "--output", str(out), *args, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "summary.json").read_text())


def test_measurements_match_the_injected_truth(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "200", "--itl-ms", "20")
    s = _bench(url, tmp_path / "r", "--concurrency", "8", "--num-requests", "32", "--warmup", "4",
               "--output-len", "40", "--input-len", "64")
    assert CONTRACT <= set(s) and s["requests"] == {"completed": 32, "failed": 0, "incomplete": 0,
                                              "not_sent": 0, "errors": {}, "tool_call_errors": 0}
    lat = s["latency_ms"]
    # Tolerances: the client measures the sim's scheduled times plus local HTTP and parsing overhead.
    # (stated tolerances: TTFT +25 ms, TPOT and ITL p50 +-1.5 ms, E2E +50 ms on a loaded 2-core machine)
    assert 200 <= lat["ttft"]["mean"] <= 225, lat["ttft"]
    assert 18.5 <= lat["tpot"]["mean"] <= 21.5, lat["tpot"]
    assert 18.5 <= lat["itl"]["p50"] <= 21.5, lat["itl"]
    assert 200 + 39 * 20 <= lat["e2e"]["mean"] <= 200 + 39 * 20 + 50, lat["e2e"]
    assert s["tokens"]["output_server"] == s["tokens"]["output_client"] == 32 * 40
    assert s["config"]["workload_facts"]["input_len_exact"] > 0  # aligned with the server's /tokenize
    # the client's self-check may call a run on a busy machine INVALID; it must then say why
    assert s["client"]["valid"] or s["client"]["invalid_because"], s["client"]
    assert "ttft" in s["definitions"] and (tmp_path / "r" / "report.html").read_text().startswith("<!doctype html>")
    assert (tmp_path / "r" / "latency_cdf.png").stat().st_size > 1000
    rows = [json.loads(x) for x in (tmp_path / "r" / "requests.jsonl").read_text().splitlines()]
    assert len(rows) == 36 and sum(r["warmup"] for r in rows) == 4


def test_open_loop_rate_and_goodput(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "20", "--itl-ms", "5")
    s = _bench(url, tmp_path / "r", "--rate", "20", "--num-requests", "60", "--output-len", "20",
               "--slo", "ttft_ms=100,tpot_ms=10")
    assert 14 <= s["throughput"]["requests_per_s"] <= 26, s["throughput"]
    assert s["goodput"]["fraction"] == 1.0 and s["goodput"]["of"] == 60
    assert s["client"]["valid"] or s["client"]["invalid_because"], s["client"]


def test_failures_are_counted_with_reasons(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "10", "--itl-ms", "2", "--error-rate", "0.2", "--drop-rate", "0.2",
                      "--malformed-rate", "0.1", "--seed", "3")
    s = _bench(url, tmp_path / "r", "--concurrency", "4", "--num-requests", "60", "--output-len", "20",
               "--slo", "ttft_ms=1000")
    errs = s["requests"]["errors"]
    assert s["requests"]["failed"] > 0 and s["requests"]["completed"] + s["requests"]["failed"] == 60
    assert "HTTP 500" in errs and "stream ended without [DONE] (dropped mid-stream)" in errs, errs
    assert "malformed SSE data" in errs, errs
    assert s["goodput"]["good"] == s["requests"]["completed"]  # failures sit in the denominator
    assert s["goodput"]["fraction"] < 1.0


def test_reasoning_and_tool_call_timings(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "50", "--itl-ms", "5", "--reasoning-tokens", "10")
    s = _bench(url, tmp_path / "r", "--workload", "tool-calls", "--thinking", "on", "--concurrency", "4",
               "--num-requests", "16", "--output-len", "30")
    lat = s["latency_ms"]
    assert lat["ttftc"]["n"] == 16 and lat["ttftc"]["mean"] >= lat["ttft"]["mean"] + 10 * 5 - 5
    assert s["tokens"]["reasoning"] == 16 * 10


def test_sweep_finds_saturation_and_multi_turn_carries_history(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "20", "--itl-ms", "5", "--reasoning-tokens", "3")
    proc = run_cli("bench", "--base-url", url, "--model", "sim", "--output", str(tmp_path / "sw"), "--sweep",
                   "concurrency=1,2,4", "--num-requests", "8", "--output-len", "10", timeout=600)
    assert proc.returncode == 0, proc.stderr
    sweep = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    tput = [p["output_tokens_per_s"] for p in sweep["points"]]
    assert [p["load"] for p in sweep["points"]] == [1, 2, 4] and tput[0] < tput[1] < tput[2]
    assert (tmp_path / "sw" / "sweep.png").is_file() and (tmp_path / "sw" / "concurrency-4" / "summary.json").is_file()
    s = _bench(url, tmp_path / "mt", "--workload", "multi-turn", "--thinking", "on", "--concurrency", "2",
               "--num-requests", "4", "--output-len", "12")
    rows = [json.loads(x) for x in (tmp_path / "mt" / "requests.jsonl").read_text().splitlines()]
    assert {r["session"] for r in rows} == {0, 1, 2, 3} and max(r["turn"] for r in rows) >= 1
    assert s["requests"]["failed"] == 0


def test_jsonl_and_shared_prefix_workloads(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "5", "--itl-ms", "2")
    data = tmp_path / "sharegpt.jsonl"
    data.write_text("\n".join(json.dumps({"conversations": [{"from": "human", "value": f"question {i}"},
                                                           {"from": "gpt", "value": "answer"}]}) for i in range(5)))
    s = _bench(url, tmp_path / "j", "--workload", "jsonl", "--dataset", str(data), "--concurrency", "2",
               "--num-requests", "6", "--output-len", "8")
    assert s["requests"]["completed"] == 6 and s["tokens"]["output_server"] == 48
    s = _bench(url, tmp_path / "p", "--workload", "shared-prefix", "--prefix-len", "50", "--input-len", "10",
               "--concurrency", "2", "--num-requests", "6", "--output-len", "8")
    assert s["requests"]["completed"] == 6 and s["tokens"]["prompt"] > 6 * 60
    data.write_text("not json\n")
    assert_clean_error(run_cli("bench", "--base-url", url, "--model", "sim", "--output", str(tmp_path / "x"),
                               "--workload", "jsonl", "--dataset", str(data), "--concurrency", "1"),
                       "sharegpt.jsonl", "line 1")


def test_interrupted_run_keeps_its_data(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "10", "--itl-ms", "50")
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "kimi_deploy", "bench", "--base-url", url, "--model", "sim",
                             "--output", str(out), "--concurrency", "4", "--num-requests", "40", "--output-len", "20"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_as_in_a_shell)
    deadline = time.time() + 60
    while time.time() < deadline:
        lines = (out / "requests.jsonl").read_text().splitlines() if (out / "requests.jsonl").exists() else []
        if len(lines) >= 4:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr  # the shell's code for Ctrl-C, after saving
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["interrupted"] is True
    assert 4 <= s["requests"]["completed"] < 40
    assert len((out / "requests.jsonl").read_text().splitlines()) == s["requests"]["completed"] + s["requests"]["failed"]


def test_bench_diff_tells_real_from_noise(sim_factory, tmp_path: Path) -> None:
    fast, slow = sim_factory("--itl-ms", "10"), sim_factory("--itl-ms", "14")
    args = ("--concurrency", "4", "--num-requests", "24", "--output-len", "20")
    _bench(fast, tmp_path / "a", *args)
    _bench(slow, tmp_path / "b", *args)
    from kimi_deploy.bench.diff import diff

    rows = {r["metric"]: r for r in diff(tmp_path / "a", tmp_path / "b")}
    assert rows["tpot mean (ms)"]["real"] is True and rows["tpot mean (ms)"]["delta"] > 3
    same = {r["metric"]: r for r in diff(tmp_path / "a", tmp_path / "a")}
    assert same["tpot mean (ms)"]["real"] is False
    proc = run_cli("bench", "diff", str(tmp_path / "a"), str(tmp_path / "b"))
    assert proc.returncode == 0 and "tpot mean" in proc.stdout


def test_bad_input(sim_factory, tmp_path: Path) -> None:
    url = sim_factory()
    out = str(tmp_path / "r")
    assert_clean_error(run_cli("bench", "--base-url", "http://127.0.0.1:9", "--model", "sim", "--output", out,
                               "--concurrency", "1"), "--base-url", "does not answer")
    assert_clean_error(run_cli("bench", "--base-url", url, "--model", "gpt-9", "--output", out, "--concurrency", "1"),
                       "--model", "serves sim")
    assert_clean_error(run_cli("bench", "--base-url", url, "--model", "sim", "--output", out), "--concurrency")
    assert_clean_error(run_cli("bench", "--base-url", url, "--model", "sim", "--output", out, "--rate", "1",
                               "--concurrency", "2"), "--rate", "two load modes")
    assert_clean_error(run_cli("bench", "--base-url", url, "--model", "sim", "--output", out, "--concurrency", "1",
                               "--slo", "latency=5"), "--slo", "unknown SLO")
    assert_clean_error(run_cli("bench", "diff", out, out), out, "not a bench result directory")


def test_end_to_end_on_real_vllm(tiny_server: Server, tmp_path: Path) -> None:
    url = f"{tiny_server.url}/v1"
    s = _bench(url, tmp_path / "tools", "--workload", "tool-calls", "--thinking", "off", "--concurrency", "4",
               "--num-requests", "12", "--seed", "1", model="tiny-k2")
    assert s["requests"]["failed"] == 0 and s["latency_ms"]["ttftc"]["n"] > 0
    assert s["server"]["metrics_after"].get("vllm:num_requests_running", 0) == 0
    think = _bench(url, tmp_path / "think", "--workload", "tool-calls", "--thinking", "on", "--concurrency", "4",
                   "--num-requests", "8", model="tiny-k2")
    assert think["tokens"]["reasoning"] > 0
    assert think["latency_ms"]["ttftc"]["mean"] > think["latency_ms"]["ttft"]["mean"]
    rnd = _bench(url, tmp_path / "rand", "--input-len", "64", "--output-len", "16", "--concurrency", "4",
                 "--num-requests", "8", model="tiny-k2")
    facts = rnd["config"]["workload_facts"]
    assert facts["tokenizer"] == "server /tokenize" and facts["input_len_exact"] == 8, facts
    assert rnd["tokens"]["output_server"] == 8 * 16  # ignore_eos held the output length
    mt = _bench(url, tmp_path / "mt", "--workload", "multi-turn", "--thinking", "off", "--concurrency", "2",
                "--num-requests", "4", model="tiny-k2")
    rows = [json.loads(x) for x in (tmp_path / "mt" / "requests.jsonl").read_text().splitlines()]
    assert mt["requests"]["failed"] == 0 and max(r["turn"] for r in rows) >= 2  # tool call, result, follow-up


# --- the endpoint layer and the one percentile, through the real CLI and the sim ----------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=60),
       st.floats(min_value=0, max_value=100))
def test_percentile_is_numpys_linear(values: list[float], q: float) -> None:
    import numpy as np

    from kimi_deploy.stats import percentile

    expected = float(np.percentile(values, q, method="linear"))
    assert math.isclose(percentile(values, q), expected, rel_tol=1e-9, abs_tol=1e-6), (values, q)


def test_summary_of_nothing_and_of_one() -> None:
    from kimi_deploy.stats import summary

    assert summary([]) == {"mean": None, "p50": None, "p90": None, "p99": None, "max": None, "n": 0}
    assert summary([4.0]) == {"mean": 4.0, "p50": 4.0, "p90": 4.0, "p99": 4.0, "max": 4.0, "n": 1}
    assert summary([1, 2, 3, 4])["p50"] == 2.5  # interpolated, not the upper middle value


def test_base_url_forms_and_bad_schemes(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "1")
    for i, form in enumerate((url, url + "/", url + "/v1", url + "/v1/")):
        s = _bench(form, tmp_path / f"r{i}", "--concurrency", "1", "--num-requests", "2", "--output-len", "2")
        assert s["requests"]["completed"] == 2 and s["config"]["base_url"] == url + "/v1", s["config"]
    for bad in ("ftp://127.0.0.1/v1", "127.0.0.1:8000", "http:///v1", url + "/v1?x=1", "http://[::1",
                "http://127.0.0.1:abc/v1", "http://127.0.0.1:99999", "http://user:pw@127.0.0.1:9/v1"):
        assert_clean_error(run_cli("bench", "--base-url", bad, "--model", "sim", "--output", str(tmp_path / "x"),
                                   "--concurrency", "1"), "--base-url")
    assert not (tmp_path / "x").exists()


def test_wait_url_forms_and_bad_input(sim_factory) -> None:
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "1", "--slow-start", "2")
    for form in (url, url + "/v1/"):
        proc = run_cli("wait", form, "--timeout", "60")
        assert proc.returncode == 0 and "model sim answered" in proc.stdout, proc.stderr
    assert_clean_error(run_cli("wait", "ftp://127.0.0.1:9"), "URL", "not an http(s) URL")
    proc = run_cli("wait", "http://user:hunter2pw@127.0.0.1:9")
    assert_clean_error(proc, "URL", "credentials do not belong in the URL")
    assert "hunter2pw" not in proc.stderr + proc.stdout
    env = {k: v for k, v in os.environ.items() if k != "KD_NOT_SET"}
    assert_clean_error(run_cli("wait", url, "--api-key-env", "KD_NOT_SET", env=env), "--api-key-env", "KD_NOT_SET")
    wrong = run_cli("wait", url + "/v1", "--model", "gpt-9", "--timeout", "30")
    assert wrong.returncode == 1 and "not 'gpt-9'" in wrong.stderr and "Traceback" not in wrong.stderr


def test_api_key_is_never_printed_or_written(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "1")
    secret = "sk-kd-test-4f9a2c-never-print-me"
    env = {**os.environ, "KD_TEST_KEY": secret}
    proc = run_cli("--debug", "bench", "--base-url", url, "--model", "sim", "--output", str(tmp_path / "r"),
                   "--concurrency", "1", "--num-requests", "3", "--output-len", "4", "--api-key-env", "KD_TEST_KEY",
                   env=env)
    assert proc.returncode == 0, proc.stderr
    assert secret not in proc.stdout + proc.stderr
    for f in (tmp_path / "r").iterdir():
        assert secret.encode() not in f.read_bytes(), f
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["config"]["api_key_env"] == "KD_TEST_KEY" and s["config"]["hosted"] is False


# --- bounded time: a stalled or slow server, a deadline -----------------------------------------------
# Against the sim (--stall-after: a few chunks, then silence with the connection open) and
# tests/faultserver.py: every run ends within a wall-time limit, and what did not finish is counted as
# failed or incomplete, never as completed.

def _summary(d: Path) -> dict:
    return json.loads((d / "summary.json").read_text())


def test_bench_stall_timeout_ends_a_stalled_stream(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "5", "--itl-ms", "5", "--stall-after", "3")
    out = tmp_path / "r"
    proc = run_cli_timed("bench", "--base-url", url, "--model", "sim", "--output", str(out), "--concurrency", "2",
                         "--num-requests", "2", "--output-len", "20", "--stall-timeout", "1", "--workers", "1", limit=40)
    assert_clean_error(proc, "no measured request succeeded", "stalled", code=1)
    s = _summary(out)
    assert s["requests"]["completed"] == 0 and s["requests"]["failed"] == 2
    assert any(e.startswith("stalled") for e in s["requests"]["errors"]), s["requests"]
    assert s["config"]["stall_timeout_s"] == 1.0


def test_bench_request_timeout(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "5", "--itl-ms", "300")  # keeps sending, slowly: only a total bound ends it
    out = tmp_path / "r"
    proc = run_cli_timed("bench", "--base-url", url, "--model", "sim", "--output", str(out), "--concurrency", "1",
                         "--num-requests", "1", "--output-len", "100", "--request-timeout", "2", "--workers", "1", limit=40)
    assert_clean_error(proc, "no measured request succeeded", "--request-timeout", code=1)
    assert "timeout after 2 s (--request-timeout)" in _summary(out)["requests"]["errors"]


def test_duration_cancels_what_is_in_flight_and_builds_nothing_up_front(sim_factory, tmp_path: Path) -> None:
    stalled = sim_factory("--ttft-ms", "5", "--itl-ms", "5", "--stall-after", "3")
    out = tmp_path / "stalled"
    # 10^8 requests bounded by 3 s: built lazily, and the two stalled requests are cut at the deadline
    proc = run_cli_timed("bench", "--base-url", stalled, "--model", "sim", "--output", str(out), "--concurrency", "2",
                         "--num-requests", "100000000", "--duration", "3", "--workers", "1", "--workload", "tool-calls",
                         limit=45)
    assert_clean_error(proc, "no measured request succeeded", "--duration deadline", code=1)
    req = _summary(out)["requests"]
    assert req["completed"] == 0 and req["failed"] == 0 and req["incomplete"] == 2, req
    assert req["not_sent"] == 100000000 - 2
    rows = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    assert [r["incomplete"] for r in rows] == [True, True] and not any(r["ok"] for r in rows)

    healthy = sim_factory("--ttft-ms", "5", "--itl-ms", "2")
    out = tmp_path / "open"
    proc = run_cli_timed("bench", "--base-url", healthy, "--model", "sim", "--output", str(out), "--rate", "10",
                         "--num-requests", "100000000", "--duration", "2", "--output-len", "4", "--workers", "1", limit=45)
    assert proc.returncode == 0, proc.stderr
    req = _summary(out)["requests"]
    assert 5 <= req["completed"] <= 40 and req["not_sent"] > 100000000 - 100, req


def test_html_instead_of_an_api(fault, tmp_path: Path) -> None:
    srv = fault("html")
    out = tmp_path / "b"
    proc = run_cli_timed("bench", "--base-url", srv.url, "--model", "m", "--output", str(out), "--concurrency", "1",
                         "--num-requests", "2", "--input-len", "8", "--output-len", "4", "--workers", "1", limit=40)
    assert_clean_error(proc, "no measured request succeeded", "text/html", code=1)
    assert _summary(out)["config"]["workload_facts"]["tokenizer"] != "server /tokenize"  # HTML is not a count
    out = tmp_path / "c"
    proc = run_cli_timed("compare", "--local", srv.url, "--reference", srv.url, "--reference-kind", "self-hosted",
                         "--model", "m", "--reference-model", "m", "--suite", "chat", "--limit", "1", "--output", str(out),
                         limit=40)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    err = json.loads((out / "local.jsonl").read_text().splitlines()[0])["response"]["error"]
    assert err and "not an OpenAI chat completion" in err, err



# --- bad input: exit 2 naming the flag or file, before any request ------------------------------------

BENCH = ("bench", "--base-url", "http://127.0.0.1:9", "--model", "m")


@pytest.mark.parametrize("args, flag", [
    (("--rate", "inf"), "--rate"), (("--rate", "nan"), "--rate"), (("--rate", "0"), "--rate"),
    (("--burstiness", "0", "--rate", "1"), "--burstiness"), (("--burstiness", "inf", "--rate", "1"), "--burstiness"),
    (("--burstiness", "nan", "--rate", "1"), "--burstiness"), (("--warmup", "-5"), "--warmup"),
    (("--max-concurrency", "0", "--rate", "1"), "--max-concurrency"), (("--workers", "-1"), "--workers"),
    (("--duration", "-1"), "--duration"), (("--duration", "nan"), "--duration"),
    (("--ramp-up", "inf"), "--ramp-up"), (("--request-timeout", "nan"), "--request-timeout"),
    (("--stall-timeout", "0"), "--stall-timeout"), (("--concurrency", "0"), "--concurrency"),
    (("--sweep", "rate=nan"), "--sweep"),
])
def test_bench_flags_refused(tmp_path: Path, args: tuple[str, ...], flag: str) -> None:
    code, msg = invoke_cli(*BENCH, "--output", str(tmp_path / "r"), *(args if "--rate" in args or "--sweep" in args
                                                                    else ("--concurrency", "1", *args)))
    assert code == 2 and flag in msg, (code, msg)
    assert not (tmp_path / "r" / "summary.json").exists()


def test_output_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert invoke_cli(*BENCH, "--output", str(f), "--concurrency", "1") == (2, f"--output: {f} exists and is not a directory")
    code, msg = invoke_cli("compare", "--local", "http://127.0.0.1:9", "--reference", "http://127.0.0.1:9",
                           "--output", str(f))
    assert code == 2 and "--output" in msg and "not a directory" in msg
    assert f.read_text() == "x"


def test_bench_diff_corrupt_files(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "1")
    good = tmp_path / "good"
    assert run_cli("bench", "--base-url", url, "--model", "sim", "--output", str(good), "--concurrency", "1",
                   "--num-requests", "3", "--output-len", "3", "--workers", "1").returncode == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    cases = [("summary.json", b"{not json", "summary.json"), ("summary.json", b"[1, 2]", "summary.json"),
             ("summary.json", b"\xff\xfe binary", "summary.json"), ("requests.jsonl", b"{oops\n", "requests.jsonl"),
             ("requests.jsonl", b'{"index": 0, "ttft": "fast"}\n', "requests.jsonl"),
             ("requests.jsonl", b"[1]\n", "requests.jsonl")]
    for name, content, needle in cases:
        for n in ("summary.json", "requests.jsonl"):
            (bad / n).write_bytes((good / n).read_bytes())
        (bad / name).write_bytes(content)
        assert_clean_error(run_cli("bench", "diff", str(good), str(bad)), str(bad / needle))


def test_bench_diff_refuses_runs_of_different_configurations(sim_factory, tmp_path: Path) -> None:
    """Another load or output length is another experiment: exit 2 naming --allow-different-config, each
    differing field on stderr with both values; with the flag the table comes, the warning still printed.
    Another seed (or endpoint) is what one compares: no warning."""
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "1")
    base = ("--num-requests", "3", "--workers", "1")
    _bench(url, tmp_path / "a", *base, "--concurrency", "1", "--output-len", "3")
    _bench(url, tmp_path / "b", *base, "--concurrency", "2", "--output-len", "4")
    _bench(url, tmp_path / "seed", *base, "--concurrency", "1", "--output-len", "3", "--seed", "7")
    refused = run_cli("bench", "diff", str(tmp_path / "a"), str(tmp_path / "b"))
    assert_clean_error(refused, "--allow-different-config", "concurrency: A 1, B 2", "output_len: A 3, B 4")
    assert "seed" not in refused.stderr and "base_url" not in refused.stderr, refused.stderr
    anyway = run_cli("bench", "diff", str(tmp_path / "a"), str(tmp_path / "b"), "--allow-different-config")
    assert anyway.returncode == 0, anyway.stderr
    assert "WARNING" in anyway.stderr and "output_len: A 3, B 4" in anyway.stderr and "tpot mean" in anyway.stdout
    same = run_cli("bench", "diff", str(tmp_path / "a"), str(tmp_path / "seed"))
    assert same.returncode == 0 and "WARNING" not in same.stderr, same.stderr


def test_bench_diff_tails_error_rate_goodput_and_progress_through_a_pipe(sim_factory, tmp_path: Path) -> None:
    """p90 and p99 rows with intervals (p99 of 80 requests: too few values above it to call); the error
    rate and the goodput fraction under the same SLO, with intervals that see a 20 % error rate and a
    TTFT over the SLO; progress lines on stderr (a pipe, not a terminal) while the bootstrap runs."""
    fast = sim_factory("--ttft-ms", "10", "--itl-ms", "1")
    slow = sim_factory("--ttft-ms", "80", "--itl-ms", "1", "--error-rate", "0.2", "--seed", "3")
    args = ("--concurrency", "8", "--num-requests", "80", "--output-len", "5", "--slo", "ttft_ms=40")
    _bench(fast, tmp_path / "a", *args)
    b = _bench(slow, tmp_path / "b", *args)
    proc = run_cli("bench", "diff", str(tmp_path / "a"), str(tmp_path / "b"), "--json",
                   env={**os.environ, "KIMI_PROGRESS_INTERVAL_S": "0.001"})
    assert proc.returncode == 0, proc.stderr
    rows = {r["metric"]: r for r in json.loads(proc.stdout)["rows"]}
    for stat in ("mean", "p50", "p90", "p99"):
        r = rows[f"ttft {stat} (ms)"]
        assert r["delta"] > 50 and r["ci95"][0] > 0, r
    assert rows["ttft p90 (ms)"]["real"] is True  # 80 and ~64 answers: 8 and ~6 above the p90
    assert rows["ttft p99 (ms)"]["real"] is None and rows["ttft p99 (ms)"]["n"][0] == 80
    err_rate = rows["error rate"]
    assert err_rate["a"] == 0 and err_rate["b"] == round(b["requests"]["failed"] / 80, 4) > 0
    assert err_rate["real"] is True and err_rate["ci95"][0] > 0
    good = rows["goodput fraction"]
    assert good["a"] == 1.0 and good["b"] == 0.0 and good["real"] is True, good
    assert rows["goodput requests_per_s"]["b"] == 0.0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("bench diff: ")]
    assert lines and lines[0].startswith("bench diff: 0/5 done"), proc.stderr
    assert lines[-1].startswith("bench diff: 5/5 done, 0 failed"), proc.stderr
    during = [ln for ln in lines if not ln.startswith(("bench diff: 0/5", "bench diff: 5/5"))]
    assert during and all("ETA" in ln for ln in during), lines  # printed while it ran
    table = run_cli("bench", "diff", str(tmp_path / "a"), str(tmp_path / "b"))
    assert table.returncode == 0 and "ttft p99" in table.stdout and "too few" in table.stdout


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(["--num-requests", "--duration", "--warmup", "--concurrency", "--rate", "--burstiness",
                             "--ramp-up", "--max-concurrency", "--input-len", "--output-len", "--prefix-len",
                             "--workers", "--seed", "--request-timeout", "--stall-timeout"]),
       value=NUMBERS)
def test_fuzz_bench_numeric_flags(tmp_path: Path, flag: str, value) -> None:
    """Every value ends in exit 2 with a message: naming the fuzzed flag when the value is bad, else
    --output (a file, checked after every flag and before any request, so nothing is sent)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    load = ("--rate", "1") if flag in ("--rate", "--burstiness", "--max-concurrency") else ("--concurrency", "1")
    if flag == "--concurrency":
        load = ()
    code, msg = invoke_cli(*BENCH, "--output", str(blocker), *load, flag, str(value))
    assert code == 2, (flag, value, code, msg)
    assert flag in msg or "--output" in msg, (flag, value, msg)



def test_a_second_run_into_the_same_output_is_refused_unless_overwrite(sim_factory, tmp_path: Path) -> None:
    """A previous run's results are never replaced silently: the second run is exit 2 naming --output and
    the files stay byte-identical; with --overwrite it runs and replaces them."""
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "0")
    out = tmp_path / "b"
    args = ["bench", "--base-url", url, "--model", "sim", "--output", str(out), "--num-requests", "4",
            "--concurrency", "2", "--workers", "1"]
    first = run_cli(*args, timeout=300)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert_clean_error(run_cli(*args, timeout=300), "--output", "previous run", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    again = run_cli(*args, "--overwrite", timeout=300)
    assert again.returncode == 0, again.stderr
    assert (out / "summary.json").read_bytes() != before["summary.json"]


# --- one run per result directory, and the client's own file descriptors --------------------------------

def _bench_proc(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kimi_deploy", "bench", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def _wait_for(done, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Poll until done() (the event a test waits for), failing when `proc` ended first or after `timeout`."""
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            raise AssertionError(f"ended (exit {proc.returncode}) before {what}: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.05)


def test_a_second_run_into_an_output_a_run_is_writing_is_refused(sim_factory, tmp_path: Path) -> None:
    """Two runs into one --output at once: the first holds the directory's lock from its check to its end
    (here it waits at a --barrier for a second shard, so it is certainly still running); the second is exit
    2 naming the directory and the other run, writing nothing; once the barrier's other shard comes, the
    first finishes with its own results intact and takes its lock file with it."""
    from kimi_deploy.bench import LOCK_NAME

    url = sim_factory("--ttft-ms", "5", "--itl-ms", "1")
    out, barrier = tmp_path / "r", tmp_path / "barrier"
    common = ("--base-url", url, "--model", "sim", "--concurrency", "2", "--num-requests", "4", "--output-len", "4",
              "--workers", "1")
    first = _bench_proc(*common, "--output", str(out), "--shard", "0/2", "--barrier", str(barrier))
    try:
        _wait_for(lambda: (barrier / "ready-0-of-2.json").exists(), first, "its barrier ready file")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
        second = run_cli("bench", *common, "--output", str(out))
        assert_clean_error(second, "--output", str(out), "another kimi-deploy bench is writing")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
        shard1 = run_cli("bench", *common, "--output", str(tmp_path / "r1"), "--shard", "1/2", "--barrier",
                         str(barrier), timeout=300)
        assert shard1.returncode == 0, shard1.stderr
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    assert first.returncode == 0, stderr
    s = _summary(out)
    assert s["shard"]["index"] == 0 and s["requests"]["completed"] == 2 and s["requests"]["failed"] == 0
    assert len((out / "requests.jsonl").read_text().splitlines()) == 2
    assert not (out / LOCK_NAME).exists()


def test_a_lock_file_left_by_a_killed_run_locks_nothing(sim_factory, tmp_path: Path) -> None:
    """SIGKILL leaves the lock file behind, but the kernel dropped its lock with the process: the next run
    into the directory runs."""
    from kimi_deploy.bench import LOCK_NAME

    url = sim_factory("--ttft-ms", "5", "--itl-ms", "1")
    out, barrier = tmp_path / "r", tmp_path / "barrier"
    common = ("--base-url", url, "--model", "sim", "--concurrency", "2", "--num-requests", "4", "--output-len", "4",
              "--workers", "1", "--output", str(out))
    killed = _bench_proc(*common, "--shard", "0/2", "--barrier", str(barrier))
    try:
        _wait_for(lambda: (barrier / "ready-0-of-2.json").exists(), killed, "its barrier ready file")
    finally:
        killed.kill()
        killed.communicate(timeout=30)
    assert (out / LOCK_NAME).exists() and not (out / "requests.jsonl").exists()
    proc = run_cli("bench", *common)
    assert proc.returncode == 0, proc.stderr
    assert _summary(out)["requests"]["completed"] == 4 and not (out / LOCK_NAME).exists()


def _open_files(soft: int, hard: int):
    """preexec_fn: this process may open `soft` files, at most `hard` (RLIMIT_NOFILE, as `ulimit -n`)."""
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return limit


def test_too_few_file_descriptors_for_the_load_is_refused_before_the_run(sim_factory, tmp_path: Path) -> None:
    """300 users in one client process under a hard limit of 128 open files: exit 2 naming --concurrency,
    the numbers and `ulimit -n`, before any request. Under a soft limit of 64 with room below the hard
    one, the limit is raised and all 150 users' requests succeed."""
    url = sim_factory("--ttft-ms", "5", "--itl-ms", "1")
    out = tmp_path / "r"
    args = ("--base-url", url, "--model", "sim", "--output", str(out), "--output-len", "4", "--workers", "1")
    proc = _bench_proc(*args, "--concurrency", "300", "--num-requests", "300", preexec_fn=_open_files(128, 128))
    stdout, stderr = proc.communicate(timeout=120)
    assert_clean_error(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), "--concurrency",
                       "300 concurrent requests", "RLIMIT_NOFILE", "may open only 128", "ulimit -n")
    assert not (out / "requests.jsonl").exists() and not (out / "summary.json").exists()
    proc = _bench_proc(*args, "--concurrency", "150", "--num-requests", "150", "--overwrite",
                       preexec_fn=_open_files(64, 4096))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    s = _summary(out)
    assert s["requests"]["completed"] == 150 and s["requests"]["errors"] == {}, s["requests"]
    files = s["run"]["open_files"]
    assert files["hard_limit"] == 4096 and 150 < files["needed"] <= files["soft_limit"] <= 4096, files


def test_running_out_of_file_descriptors_is_the_clients_fault(sim_factory, tmp_path: Path) -> None:
    """An open loop without --max-concurrency (its need is not known before the run) under a hard limit of
    128 open files: 300 requests arrive within a third of a second and each holds its connection for 2 s,
    so the client runs out of descriptors part-way. Those requests fail as "too many open files (client)",
    and the self-check calls the run INVALID saying so, on the console and in summary.json."""
    url = sim_factory("--ttft-ms", "2000", "--itl-ms", "1")
    out = tmp_path / "r"
    proc = _bench_proc("--base-url", url, "--model", "sim", "--output", str(out), "--rate", "1000",
                       "--num-requests", "300", "--output-len", "4", "--workers", "1",
                       preexec_fn=_open_files(128, 128))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    s = _summary(out)
    req, client = s["requests"], s["client"]
    assert set(req["errors"]) == {"too many open files (client)"}, req
    assert req["completed"] > 0 and req["failed"] == req["errors"]["too many open files (client)"] > 100, req
    assert not client["valid"] and any("too many open files (client)" in r for r in client["invalid_because"])
    assert "INVALID run" in stdout and "x too many open files (client)" in stdout, stdout
