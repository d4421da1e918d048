"""Sweeps (kimi_deploy.bench.sweep): resuming, refusing another sweep's directory, the request count kept
exactly, the SLO-bounded and saturation searches against a sim with a known batch limit, and INVALID
points left out of every verdict."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kimi_deploy.args import BenchConfig
from kimi_deploy.bench import sweep as sw
from kimi_deploy.endpoint import Endpoint

from .conftest import run_cli


def _sweep(url: str, out: Path, spec: str, *args: str):
    # a wide table: rich fits it to COLUMNS (80 when the output is a pipe)
    return run_cli("bench", "--base-url", url, "--model", "sim", "--output", str(out), "--sweep", spec,
                   "--output-len", "5", "--workers", "1", *args, env={**os.environ, "COLUMNS": "250"}, timeout=600)


def _points(out: Path) -> dict:
    return {p["load"]: p for p in json.loads((out / "sweep.json").read_text())["points"]}


def _pt(load: float, tput: float, *, valid: bool = True, meets: bool | None = None) -> dict:
    """A sweep point with what the decisions read."""
    return {"load": load, "output_tokens_per_s": tput, "valid": valid, "meets_slo": meets,
            "invalid_because": [] if valid else ["schedule lag p99 80 ms > 50 ms"]}


def test_resume_keeps_finished_levels_refuses_others_and_overwrite_reruns(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "5", "--itl-ms", "2")
    out = tmp_path / "sw"
    first = _sweep(url, out, "concurrency=1,2", "--num-requests", "4")
    assert first.returncode == 0, first.stderr
    mtimes = {d: (out / d / "summary.json").stat().st_mtime_ns for d in ("concurrency-1", "concurrency-2")}
    # the same sweep with one more level: the two finished levels are kept, the new one runs
    again = _sweep(url, out, "concurrency=1,2,4", "--num-requests", "4")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("kept") == 2 and "concurrency-4: 4 requests" in again.stderr
    assert {d: (out / d / "summary.json").stat().st_mtime_ns for d in mtimes} == mtimes
    pts = _points(out)
    assert [pts[c]["kept"] for c in (1, 2, 4)] == [True, True, False]
    # --num-requests kept exactly, with a warning where it is fewer than two per user
    assert all(pts[c]["num_requests"] == 4 for c in (1, 2, 4))
    level4 = json.loads((out / "concurrency-4" / "summary.json").read_text())
    assert level4["config"]["num_requests"] == 4 and level4["requests"]["completed"] == 4
    assert "fewer than two per user" in again.stderr and "concurrency-4" in again.stderr
    # another configuration into the same directory: refused, naming --output, nothing run
    other = _sweep(url, out, "concurrency=1,2", "--num-requests", "4", "--output-len", "6")
    assert other.returncode == 2 and "--output" in other.stderr and "--overwrite" in other.stderr, other.stderr
    assert {d: (out / d / "summary.json").stat().st_mtime_ns for d in mtimes} == mtimes
    # a level with another configuration (its summary.json says so) is refused too
    s = json.loads((out / "concurrency-2" / "summary.json").read_text())
    (out / "concurrency-2" / "summary.json").write_text(json.dumps({**s, "config": {**s["config"], "seed": 7}}))
    refused = _sweep(url, out, "concurrency=1,2", "--num-requests", "4")
    assert refused.returncode == 2 and "concurrency-2" in refused.stderr and "seed" in refused.stderr, refused.stderr
    # an interrupted level runs again, alone
    (out / "concurrency-2" / "summary.json").write_text(json.dumps({**s, "config": {**s["config"], "interrupted": True}}))
    resumed = _sweep(url, out, "concurrency=1,2", "--num-requests", "4")
    assert resumed.returncode == 0, resumed.stderr
    assert "concurrency-2: running again (the run was interrupted)" in resumed.stderr
    assert (out / "concurrency-1" / "summary.json").stat().st_mtime_ns == mtimes["concurrency-1"]
    assert (out / "concurrency-2" / "summary.json").stat().st_mtime_ns != mtimes["concurrency-2"]
    # --overwrite runs every level again, the other configuration included
    over = _sweep(url, out, "concurrency=1,2", "--num-requests", "4", "--output-len", "6", "--overwrite")
    assert over.returncode == 0, over.stderr
    assert "kept" not in over.stderr
    assert (out / "concurrency-1" / "summary.json").stat().st_mtime_ns != mtimes["concurrency-1"]
    assert json.loads((out / "concurrency-1" / "summary.json").read_text())["config"]["output_len"] == 6


def test_sweep_dir_of_another_sweep_or_a_single_run_is_refused(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "5", "--itl-ms", "2")
    out = tmp_path / "sw"
    assert _sweep(url, out, "concurrency=1", "--num-requests", "2").returncode == 0
    rate = _sweep(url, out, "rate=20", "--num-requests", "2")
    assert rate.returncode == 2 and "another sweep" in rate.stderr and "--output" in rate.stderr, rate.stderr
    assert not (out / "rate-20").exists()
    single = tmp_path / "one"
    one = run_cli("bench", "--base-url", url, "--model", "sim", "--output", str(single), "--concurrency", "1",
                  "--num-requests", "2", "--output-len", "5", "--workers", "1", timeout=300)
    assert one.returncode == 0, one.stderr
    refused = _sweep(url, single, "concurrency=1", "--num-requests", "2")
    assert refused.returncode == 2 and "single run" in refused.stderr, refused.stderr


def test_a_sweep_directory_another_run_holds_is_refused(sim_factory, tmp_path: Path) -> None:
    """The sweep holds the sweep directory's lock (bench.OutputLock) for its whole run: while another
    process holds it (here this test, through the real flock), a sweep into it is exit 2 and writes nothing;
    once it is free the sweep runs, and takes the lock file back at its end."""
    from kimi_deploy.bench import LOCK_NAME, OutputLock

    url = sim_factory("--ttft-ms", "5", "--itl-ms", "2")
    out = tmp_path / "sw"
    out.mkdir()
    held = OutputLock.acquire(out, "--output")
    try:
        refused = _sweep(url, out, "concurrency=1,2", "--num-requests", "2")
        assert refused.returncode == 2 and "--output" in refused.stderr and "another" in refused.stderr, refused.stderr
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        held.release()
    ran = _sweep(url, out, "concurrency=1,2", "--num-requests", "2")
    assert ran.returncode == 0, ran.stderr
    assert (out / "sweep.json").is_file() and not (out / LOCK_NAME).exists()


def test_slo_search_and_saturation_find_the_sims_batch_limit(sim_factory, tmp_path: Path) -> None:
    # 2 slots, each answer 10 + 4 x 20 = 90 ms: a 3rd user waits for a slot, so about one request in three has
    # a TTFT of a whole answer on top of its 10 ms, past the 50 ms SLO: 2 users meet it, 3 do not
    # (0.67 < 0.95); and the throughput of 4 users is that of 2
    url = sim_factory("--ttft-ms", "10", "--itl-ms", "20", "--max-running", "2")
    out = tmp_path / "slo"
    proc = _sweep(url, out, "concurrency=auto", "--num-requests", "20", "--slo", "ttft_ms=50")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "sweep.json").read_text())
    assert result["slo_met_up_to"] == 2 and result["slo_fails_at"] == 3, result["text"]
    assert [p["load"] for p in result["points"]] == [1, 2, 3, 4]  # 1, 2, 4 doubling, then 3 between 2 and 4
    pts = _points(out)
    assert pts[2]["meets_slo"] and not pts[3]["meets_slo"] and pts[3]["goodput_fraction"] < sw.SLO_FRACTION
    assert pts[2]["goodput_requests_per_s"] > 0 and "None" not in result["text"]
    assert "goodput" in proc.stdout and "met up to 2 users (fails at 3)" in proc.stdout
    # without an SLO: doubling until throughput stops growing, which it does past the 2 slots
    plain = _sweep(url, tmp_path / "sat", "concurrency=auto", "--num-requests", "20")
    assert plain.returncode == 0, plain.stderr
    sat = json.loads((tmp_path / "sat" / "sweep.json").read_text())
    assert sat["saturated_at"] == 2 and [p["load"] for p in sat["points"]] == [1, 2, 4], sat["text"]
    assert (tmp_path / "sat" / "sweep.png").is_file()


def test_search_steps_and_invalid_points() -> None:
    # doubling, then bisecting between the last passing and the first failing load (whole users)
    pts = [_pt(1, 10, meets=True), _pt(2, 20, meets=True), _pt(4, 40, meets=True), _pt(8, 50, meets=False)]
    assert sw.next_load(pts[:3], mode="concurrency", slo=True) == 8
    assert sw.next_load(pts, mode="concurrency", slo=True) == 6
    pts += [_pt(6, 45, meets=False)]
    assert sw.next_load(pts, mode="concurrency", slo=True) == 5
    pts += [_pt(5, 44, meets=True)]
    assert sw.next_load(pts, mode="concurrency", slo=True) is None
    v = sw.verdict(pts, mode="concurrency", slo={"ttft_ms": 500}, max_load=1024)
    assert (v["slo_met_up_to"], v["slo_fails_at"]) == (5, 6) and "met up to 5" in v["text"]
    # rates bisect to within PRECISION
    r = [_pt(1.0, 10, meets=True), _pt(2.0, 20, meets=False)]
    assert sw.next_load(r, mode="rate", slo=True) == 1.5
    assert sw.next_load([_pt(1.0, 10, meets=True), _pt(1.05, 20, meets=False)], mode="rate", slo=True) is None
    # an INVALID point stops the search and is left out: the client is the limit, not the server
    bad = [_pt(1, 10, meets=True), _pt(2, 20, meets=True), _pt(4, 21, valid=False, meets=False)]
    assert sw.next_load(bad, mode="concurrency", slo=True) is None
    assert sw.next_load(bad, mode="concurrency", slo=False) is None
    v = sw.verdict(bad, mode="concurrency", slo={"ttft_ms": 500}, max_load=1024)
    assert v["slo_fails_at"] is None and v["client_limited_at"] == 4 and v["saturated_at"] is None
    assert "client-limited at 4" in v["text"] and "None" not in v["text"]
    # saturation is read off valid points only: 2 -> 4 (INVALID) is no plateau; 2 -> 8 is
    pts = [_pt(1, 10), _pt(2, 20), _pt(4, 20.5, valid=False), _pt(8, 21)]
    assert sw.saturation(pts) == 2
    assert sw.saturation([_pt(1, 10), _pt(2, 20), _pt(4, 40)]) is None
    v = sw.verdict([_pt(1, 10), _pt(2, 20)], mode="concurrency", slo={}, max_load=1024)
    assert v["text"] == "not saturated within 2 users"
    assert sw.next_load([_pt(512, 10), _pt(1024, 20)], mode="concurrency", slo=False, max_load=1024) is None
    # loads closer than a doubling (a bisection's) are not compared for saturation
    assert sw.saturation([_pt(32, 121), _pt(36, 135), _pt(38, 137), _pt(64, 200)]) is None
    # an INVALID point between the last pass and the first fail: the limit is not determined
    v = sw.verdict([_pt(1, 10, meets=True), _pt(2, 20, valid=False), _pt(4, 30, meets=False)], mode="concurrency",
                   slo={"ttft_ms": 500}, max_load=1024)
    assert "met up to 1 users; not determined above: client-limited at 2" in v["text"]
    # an SLO missed at the lowest load
    v = sw.verdict([_pt(1, 10, meets=False)], mode="rate", slo={"ttft_ms": 5}, max_load=1024)
    assert v["slo_met_up_to"] is None and "not met even at 1" in v["text"]


def test_sweep_plot_marks_invalid_points(tmp_path: Path) -> None:
    from kimi_deploy.bench.report import sweep_plot

    pts = [{**_pt(1, 10, meets=True), "per_user_tokens_per_s": 50.0, "goodput_fraction": 1.0,
            "goodput_requests_per_s": 2.0},
           {**_pt(2, 19, valid=False, meets=False), "per_user_tokens_per_s": 48.0, "goodput_fraction": 0.5,
            "goodput_requests_per_s": 1.0}]
    png = sweep_plot(pts, tmp_path, title="SLO met up to 1 users", slo_fraction=0.95)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_request_count_per_level_and_level_states(tmp_path: Path) -> None:
    assert sw.requests_at("concurrency", 64, 64, given=True) == 64  # given: exactly, at every level
    assert sw.requests_at("concurrency", 64, 100, given=False) == 128  # the default scales with the users
    assert sw.requests_at("concurrency", 8, 100, given=False) == 100
    assert sw.requests_at("rate", 64, 100, given=False) == 100
    cfg = BenchConfig.build(endpoint=Endpoint.from_url("http://127.0.0.1:9", flag="--base-url"), model="m",
                            output=tmp_path / "concurrency-2", concurrency=2, num_requests=8)
    level = cfg.output
    assert sw.level_state(level, cfg.facts()) == ("new", "")
    level.mkdir()
    (level / "requests.jsonl").write_text("")
    assert sw.level_state(level, cfg.facts())[0] == "interrupted"
    config = {**cfg.facts(), "workload_facts": {}, "interrupted": False}
    (level / "summary.json").write_text(json.dumps({"config": config}))
    assert sw.level_state(level, cfg.facts()) == ("finished", "")
    # --overwrite and the output path are not the configuration; the request count is
    assert sw.level_state(level, cfg.replace(overwrite=True).facts())[0] == "finished"
    st, why = sw.level_state(level, cfg.replace(num_requests=9).facts())
    assert st == "different" and "num_requests" in why
    (level / "summary.json").write_text("not json")
    assert sw.level_state(level, cfg.facts())[0] == "different"
