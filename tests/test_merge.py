"""Sharded runs merged (`bench --shard I/N` and `bench merge`, bench/shard.py and bench/merge.py) against
`kimi-deploy sim`, whose latencies are the ground truth: N shard processes on this machine, started
together at a barrier directory, send exactly the one run's schedule between them (every request once,
each at its time in the single-process schedule), and the merge computes every statistic from the union
of their records, equal to what one process measures within the harness's stated tolerances. Shards of
different runs, missing or repeated shards, a clock skew and an occupied barrier are refused or flagged;
SIGTERM saves what finished."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kimi_deploy.bench.loadgen import schedule
from kimi_deploy.bench.metrics import RequestRecord
from kimi_deploy.stats import summary

from .conftest import ROOT, assert_clean_error, run_cli, run_cli_timed


def _shards(url: str, base: Path, count: int, *args: str, barrier: Path | None = None) -> list[Path]:
    """Run `count` shards of one run in parallel (one worker each), started at one barrier; their dirs."""
    barrier = barrier or base / "barrier"
    procs, dirs = [], []
    for i in range(count):
        d = base / f"shard-{i}"
        dirs.append(d)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kimi_deploy", "bench", "--base-url", url, "--model", "sim", "--output", str(d),
             "--shard", f"{i}/{count}", "--barrier", str(barrier), "--barrier-timeout", "120", "--workers", "1",
             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stdout + stderr
    return dirs


def _rows(d: Path) -> list[dict]:
    return [json.loads(x) for x in (d / "requests.jsonl").read_text().splitlines() if x.strip()]


def test_shards_merged_are_the_one_run(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "60", "--itl-ms", "10")
    load = ("--rate", "40", "--num-requests", "90", "--output-len", "12", "--input-len", "32", "--seed", "7")
    single = tmp_path / "single"
    proc = run_cli("bench", "--base-url", url, "--model", "sim", "--output", str(single), "--workers", "1", *load,
                   timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dirs = _shards(url, tmp_path, 3, *load)
    merged = tmp_path / "merged"
    proc = run_cli("bench", "merge", str(merged), *map(str, dirs), "--export", "vllm,guidellm")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = json.loads((merged / "summary.json").read_text())
    # the merged result exported as vllm bench serve and GuideLLM write theirs: the union's counts, and
    # GuideLLM's epoch times on the run's own start (the merge's clock is the wall clock)
    assert json.loads((merged / "export-vllm.json").read_text())["completed"] == 90
    gl = json.loads((merged / "export-guidellm.json").read_text())["benchmarks"][0]["requests"]["successful"]
    assert len(gl) == 90 and abs(min(q["request_start_time"] for q in gl) - m["shards"][0]["start"]["common_at"]) < 1
    one = json.loads((single / "summary.json").read_text())

    # each shard sent exactly its slice; together, every request of the run once
    for i, d in enumerate(dirs):
        assert sorted(r["index"] for r in _rows(d)) == list(range(i, 90, 3))
    rows = _rows(merged)
    assert sorted(r["index"] for r in rows) == list(range(90)) == sorted(r["index"] for r in _rows(single))
    assert m["requests"]["completed"] == one["requests"]["completed"] == 90
    assert m["tokens"]["output_server"] == one["tokens"]["output_server"] == 90 * 12

    # on the one schedule: request i went out at the single run's arrival time i (t_sched = start + at_i;
    # t_send - schedule_lag is t_sched, on the common clock)
    at = schedule(90, 40.0, 1.0, 0.0, 7)
    start = m["shards"][0]["start"]["common_at"]
    off = [abs(r["t_send"] - r["schedule_lag"] / 1000 - start - at[r["index"]]) for r in rows]
    assert max(off) < 0.005, max(off)

    # exact: every statistic is that of the union of the shards' raw records
    union = [RequestRecord.from_json(r) for d in dirs for r in _rows(d)]
    ok = [r for r in union if r.ok and not r.warmup]
    for key in ("ttft", "tpot", "e2e"):
        assert m["latency_ms"][key] == summary(getattr(r, key) for r in ok), key
    assert m["latency_ms"]["itl"] == summary(x for r in ok for x in r.itl)
    # the same answer as one process, within the harness's stated TTFT tolerance (+25 ms over the sim's)
    for s in (m, one):
        assert 60 <= s["latency_ms"]["ttft"]["p50"] <= 85, s["latency_ms"]["ttft"]
    # the window is the union's: 90 arrivals at 40/s take about 2.2 s, whichever shard sent the last
    assert abs(m["throughput"]["window_s"] - one["throughput"]["window_s"]) < 0.3, (m["throughput"], one["throughput"])
    assert m["clock"]["skew_ms"] is not None and m["clock"]["skew_ms"] < 50
    assert m["config"]["shards"] == 3 and len(m["shards"]) == 3
    assert m["client"]["valid"] or m["client"]["invalid_because"]
    assert (merged / "report.html").is_file() and (merged / "latency_cdf.png").is_file()
    # merging again into the same directory is refused; --overwrite replaces
    assert_clean_error(run_cli("bench", "merge", str(merged), *map(str, dirs)), "previous result")
    assert run_cli("bench", "merge", str(merged), *map(str, dirs), "--overwrite").returncode == 0
    # a merge into a directory another merge or run is writing (it holds the lock): refused, nothing written
    from kimi_deploy.bench import LOCK_NAME, OutputLock

    busy = tmp_path / "busy"
    busy.mkdir()
    lock = OutputLock.acquire(busy, "OUT")
    try:
        proc = run_cli("bench", "merge", str(busy), *map(str, dirs))
        assert_clean_error(proc, "OUT", str(busy), "another kimi-deploy bench is writing", "give another OUT")
        assert sorted(p.name for p in busy.iterdir()) == [LOCK_NAME]
    finally:
        lock.release()
    assert run_cli("bench", "merge", str(busy), *map(str, dirs)).returncode == 0
    assert not (busy / LOCK_NAME).exists() and (busy / "summary.json").is_file()


def test_closed_loop_users_are_split_and_refusals(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "20", "--itl-ms", "5")
    load = ("--concurrency", "5", "--num-requests", "20", "--output-len", "8")
    dirs = _shards(url, tmp_path / "a", 2, *load)
    s = [json.loads((d / "summary.json").read_text()) for d in dirs]
    assert [x["requests"]["completed"] for x in s] == [10, 10]
    assert [x["config"]["shard"] for x in s] == [[0, 2], [1, 2]]
    merged = tmp_path / "m"
    assert run_cli("bench", "merge", str(merged), *map(str, dirs)).returncode == 0
    assert json.loads((merged / "summary.json").read_text())["requests"]["completed"] == 20

    # a shard of another run (another --output-len): refused, naming the field that differs
    other = _shards(url, tmp_path / "b", 2, "--concurrency", "5", "--num-requests", "20", "--output-len", "9")
    assert_clean_error(run_cli("bench", "merge", str(tmp_path / "x"), str(dirs[0]), str(other[1])),
                       "another run", "output_len")
    # a missing shard, a repeated one, a directory that is no shard, OUT among the shards
    assert_clean_error(run_cli("bench", "merge", str(tmp_path / "x"), str(dirs[0])), "missing: 1")
    assert_clean_error(run_cli("bench", "merge", str(tmp_path / "x"), str(dirs[0]), str(dirs[0])), "shard 0 again")
    single = tmp_path / "single"
    assert run_cli("bench", "--base-url", url, "--model", "sim", "--output", str(single), *load).returncode == 0
    assert_clean_error(run_cli("bench", "merge", str(tmp_path / "x"), str(single)), "not a shard")
    assert_clean_error(run_cli("bench", "merge", str(dirs[0]), *map(str, dirs)), "OUT is one of the shards")
    assert not (tmp_path / "x").exists()  # nothing made for a merge that was refused

    # corrupt or altered shard summaries: bad input naming the file, never an internal error
    bad = tmp_path / "bad"
    for change, needle in ((lambda x: x["shard"].update(count="2"), "shard.count"),
                           (lambda x: x.pop("requests"), "requests.completed"),
                           (lambda x: x["client"].pop("cpu_s"), "client block"),
                           (lambda x: x["config"]["workload_facts"].update(dataset_sha256="0" * 64), "dataset_sha256")):
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(dirs[1], bad)
        x = json.loads((bad / "summary.json").read_text())
        change(x)
        (bad / "summary.json").write_text(json.dumps(x))
        assert_clean_error(run_cli("bench", "merge", str(tmp_path / "y"), str(dirs[0]), str(bad)), needle)
    # a shard cut short (SIGTERM) is merged, but the merged run says it holds part of the load
    x = json.loads((dirs[1] / "summary.json").read_text())
    x["config"].update(interrupted=True, terminated=True)
    (bad / "summary.json").write_text(json.dumps(x))
    assert run_cli("bench", "merge", str(tmp_path / "part"), str(dirs[0]), str(bad)).returncode == 0
    part = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert not part["client"]["valid"] and any("shard 1 was terminated" in r for r in part["client"]["invalid_because"])

    # a clock skew beyond the schedule-lag bound makes the merged run INVALID, saying why
    p = dirs[1] / "summary.json"
    s1 = json.loads(p.read_text())
    s1["shard"]["start"]["offset_s"] += 0.2
    p.write_text(json.dumps(s1))
    assert run_cli("bench", "merge", str(tmp_path / "skewed"), *map(str, dirs)).returncode == 0
    skewed = json.loads((tmp_path / "skewed" / "summary.json").read_text())
    assert not skewed["client"]["valid"] and any("clock skew" in r for r in skewed["client"]["invalid_because"])


def test_barrier_and_wait_are_bounded(sim_factory, tmp_path: Path) -> None:
    url = sim_factory()
    common = ("bench", "--base-url", url, "--model", "sim", "--concurrency", "2", "--num-requests", "4")
    # one of two shards: the barrier gives up at its timeout, exit 1, saying which shard is missing
    proc = run_cli_timed(*common, "--output", str(tmp_path / "s0"), "--shard", "0/2", "--barrier",
                         str(tmp_path / "bar"), "--barrier-timeout", "2", limit=30)
    assert_clean_error(proc, "1 of 2 shards", "missing: 1", code=1)
    # the shard that gave up took its ready file back: a later shard of the run cannot start without it
    assert not list((tmp_path / "bar").glob("ready-*"))
    # a ready file that is not one (a directory): bad input at once, not a wait for the timeout
    (tmp_path / "bar2" / "ready-1-of-2.json").mkdir(parents=True)
    proc = run_cli_timed(*common, "--output", str(tmp_path / "s0b"), "--shard", "0/2", "--barrier",
                         str(tmp_path / "bar2"), limit=30)
    assert_clean_error(proc, "--barrier", "not a ready file")
    # SIGTERM while waiting at the barrier: the ready file is taken back too
    waiting = subprocess.Popen([sys.executable, "-m", "kimi_deploy", *common, "--output", str(tmp_path / "s0c"),
                                "--shard", "0/2", "--barrier", str(tmp_path / "bar3")], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "bar3").glob("ready-0-of-2.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    waiting.send_signal(signal.SIGTERM)
    waiting.communicate(timeout=30)
    assert waiting.returncode != 0 and not list((tmp_path / "bar3").glob("ready-*"))
    # merge --wait gives up too
    proc = run_cli_timed("bench", "merge", str(tmp_path / "m"), str(tmp_path / "s0"), str(tmp_path / "s9"),
                         "--wait", "2", limit=30)
    assert_clean_error(proc, "--wait", code=1)
    # --start-at in the past or far ahead
    assert_clean_error(run_cli(*common, "--output", str(tmp_path / "p"), "--start-at", "2001-01-01T00:00:00Z"),
                       "--start-at", "ago")
    assert_clean_error(run_cli(*common, "--output", str(tmp_path / "p"), "--start-at", "2026-01-01T00:00:00"),
                       "--start-at", "UTC offset")


@pytest.mark.parametrize("args, needle", [
    (("--shard", "2/2"), "--shard"), (("--shard", "1"), "--shard"), (("--shard", "a/b"), "--shard"),
    (("--shard", "0/5000"), "--shard"), (("--shard", "0/8", "--concurrency", "4"), "--shard"),
    (("--barrier", "/tmp/b"), "--barrier"), (("--shard", "0/2", "--barrier", "/tmp/b", "--start-at", "1e10"), "--barrier"),
    (("--start-at", "tomorrow"), "--start-at"), (("--export", "vllm,json"), "--export"),
    (("--shard", "0/2"), "start together"), (("--shard", "0/2", "--barrier", "/etc/passwd"), "not a directory"), (("--shard", "0/4", "--barrier", "/tmp/b", "--max-concurrency", "2",
                                            "--rate", "5"), "--shard"),
])
def test_shard_flags_refused(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    load = () if "--concurrency" in args or "--rate" in args else ("--concurrency", "4")
    proc = run_cli("bench", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--output", str(tmp_path / "o"),
                   *load, *args)
    assert_clean_error(proc, needle)


def test_max_concurrency_is_the_runs_over_shards_and_workers(sim_factory, tmp_path: Path) -> None:
    """--max-concurrency caps the whole run: 2 shards of 2 workers each, at a rate that would keep ~8 in
    flight, never hold more than 2 requests at once (counted on the merged run's common clock)."""
    url = sim_factory("--ttft-ms", "300", "--itl-ms", "5")
    args = ("--rate", "40", "--num-requests", "24", "--max-concurrency", "2", "--output-len", "4")
    procs, dirs = [], []
    for i in range(2):
        dirs.append(tmp_path / f"s{i}")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kimi_deploy", "bench", "--base-url", url, "--model", "sim", "--output",
             str(dirs[-1]), "--shard", f"{i}/2", "--barrier", str(tmp_path / "bar"), "--workers", "2", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out + err
    assert run_cli("bench", "merge", str(tmp_path / "m"), *map(str, dirs)).returncode == 0
    rows = [r for r in _rows(tmp_path / "m") if r["ok"]]
    assert len(rows) == 24
    events = sorted([(r["t_send"], 1) for r in rows] + [(r["t_end"], -1) for r in rows], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak <= 2, peak


def test_sigterm_saves_what_finished(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "10", "--itl-ms", "50")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "kimi_deploy", "bench", "--base-url", url, "--model", "sim",
                             "--output", str(out), "--concurrency", "2", "--num-requests", "200", "--output-len", "20",
                             "--workers", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # some requests finished (each takes ~1 s)
        p = out / "requests.jsonl"
        if p.is_file() and len(p.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert workers, "bench started no worker process"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stdout + stderr
    assert "Traceback" not in stderr, stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["interrupted"] and s["config"]["terminated"] and s["requests"]["completed"] >= 2
    time.sleep(0.5)
    assert not [w for w in workers if _alive(w)], "a worker outlived the run"


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_progress_lines_without_a_terminal(sim_factory, tmp_path: Path) -> None:
    """Under a pipe (tee, CI, kubectl logs) a shard's bench prints plain progress lines while it runs: lines
    with some but not all requests done can only have been printed during the run."""
    url = sim_factory("--ttft-ms", "10", "--itl-ms", "20")
    proc = run_cli("bench", "--base-url", url, "--model", "sim", "--output", str(tmp_path / "r"), "--concurrency",
                   "2", "--num-requests", "30", "--output-len", "25", "--shard", "1/2", "--start-at",
                   str(time.time() + 3), env={**os.environ, "KIMI_PROGRESS_INTERVAL_S": "0.3"}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("bench shard 1/2: ")]
    assert lines[0].startswith("bench shard 1/2: 0/15 done") and lines[-1].startswith("bench shard 1/2: 15/15 done")
    assert any(0 < int(x.split(": ")[1].split("/")[0]) < 15 for x in lines), lines
