"""`kimi-deploy bench`: run a workload against an OpenAI-compatible endpoint with the load generator,
write requests.jsonl as requests finish, scrape the engine's Prometheus metrics before, during and after,
and write summary.json (with metric definitions), plots and an HTML report. Ctrl-C keeps what finished.
A run holds an exclusive lock on its --output directory from its checks to its end (OutputLock; `bench
merge` holds it on OUT and a sweep on its directory), and makes sure before it starts that this process may
open the connections its load needs (RLIMIT_NOFILE)."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import queue as queue_mod
import resource
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..args import DEFAULT_REQUESTS, WORKLOAD_NAMES, BenchConfig
from ..endpoint import Endpoint, served_models
from ..engines.profiles import PROFILES
from ..errors import BadInput
from ..outputs import check_output_dir
from ..progress import Progress
from ..stats import percentile
from ..weights import sha256_file
from . import loadgen, shard
from .loadgen import RequestInput, RequestOutput, WorkerStats
from .metrics import DEFINITIONS, RequestRecord, per_request, summarize
from .report import cdf_plot, html_report
from .workloads import (Tokenizer, jsonl_bodies, multi_turn_sessions, random_bodies, shared_prefix_bodies,
                        tool_call_bodies)

# Every engine profile's kept metrics, and the sim's (bench/sim.py).
KEEP_METRICS = (*(m for p in PROFILES.values() for m in p.metrics.keep),
                "sim:num_requests_running", "sim:requests_total", "sim:generation_tokens_total")
# Whether the engine has a prefix cache at all, from the label its info gauge carries (profile
# metrics.prefix_caching_info): kept by scrape() as a number under this key (1 on, 0 off).
PREFIX_CACHING = "prefix_caching_enabled"
_INFO = {p.metrics.prefix_caching_info[0]: p.metrics.prefix_caching_info[1]
         for p in PROFILES.values() if p.metrics.prefix_caching_info}


def scrape(ep: Endpoint) -> dict[str, float]:
    """The engine's Prometheus metrics we keep, summed over label sets; {} when there is no /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        r = httpx2.get(ep.url("/metrics"), headers=ep.headers(), timeout=10)
        if r.status_code != 200:
            return {}
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(r.text):
            for s in fam.samples:
                label = _INFO.get(s.name)
                if label is not None and label in s.labels:
                    out[PREFIX_CACHING] = 1.0 if s.labels[label] == "True" else 0.0
                    continue
                name = s.name.removesuffix("_total")
                if name in KEEP_METRICS or s.name in KEEP_METRICS:
                    out[s.name] = out.get(s.name, 0.0) + float(s.value)
        return out
    except (httpx2.HTTPError, ValueError):
        return {}


def engine_prefix_cache(before: dict[str, float], after: dict[str, float]) -> dict[str, Any] | None:
    """The engine's own prefix-cache hit rate over the run, from its scraped metrics (the counters each
    engine profile names, in tokens); failing those, an engine's hit-rate gauge, which covers recent
    batches only; None when the server exports none."""
    def delta(name: str) -> float | None:
        for key in (name + "_total", name):
            if key in after:
                return after[key] - before.get(key, 0.0)
        return None

    for p in PROFILES.values():
        hits, queries = p.metrics.prefix_cache_hits, p.metrics.prefix_cache_queries
        h, q = delta(hits), delta(queries)
        if h is not None and q is not None:
            source = f"{p.name}: delta {hits} / delta {queries} over the run"
            if after.get(PREFIX_CACHING) == 0.0:
                source += "; the engine has prefix caching off (its cache config says so)"
            elif q == 0:
                source += "; no token was queried"
            return {"engine_token_hit_rate": round(h / q, 4) if q > 0 else None, "hit_tokens": h,
                    "queried_tokens": q, "prefix_caching": None if PREFIX_CACHING not in after
                    else after[PREFIX_CACHING] == 1.0, "source": source}
    for p in PROFILES.values():
        gauge = p.metrics.prefix_cache_gauge
        if gauge and gauge in after:
            return {"engine_token_hit_rate": round(after[gauge], 4),
                    "source": f"{gauge} gauge at the end (recent batches, not the whole run)"}
    return None


def fingerprint(ep: Endpoint) -> dict[str, Any]:
    """What the server says about itself: its model list (required: bad input naming the endpoint's
    option when it does not answer) and /version when it has one."""
    info: dict[str, Any] = {"url": ep.v1, "models": {"data": [{"id": m} for m in served_models(ep)]}}
    try:
        r = httpx2.get(ep.url("/version"), headers=ep.headers(), timeout=10)
        if r.status_code == 200:
            info["version"] = r.json()
    except (httpx2.HTTPError, ValueError):
        pass
    return info


def build_jobs(cfg: BenchConfig, tok: Tokenizer) -> tuple[loadgen.JobSource, dict[str, Any]]:
    """The run's requests as a lazy source (a pool of at most 4096 bodies, reused in turn; arrival times
    are drawn by the workers as they go), and facts about the workload."""
    cfg.endpoint.check_effort(cfg.model, cfg.thinking_effort)  # one the hosted model cannot take: bad input
    extra = cfg.endpoint.thinking_fields(cfg.model, cfg.thinking, cfg.thinking_effort)
    if cfg.workload == "trace":
        from . import trace

        if not cfg.dataset:
            raise BadInput("the trace workload needs --dataset FILE (a Mooncake-format trace)", "--dataset")
        source, facts = trace.jobs(Path(cfg.dataset), limit=cfg.warmup + cfg.num_requests if cfg.num_requests else None,
                          warmup=cfg.warmup, model=cfg.model, extra=extra, time_scale=cfg.time_scale,
                          seed=cfg.seed, tok=tok, duration_s=cfg.duration_s)
        return source, {**facts, "dataset_sha256": sha256_file(Path(cfg.dataset))}  # merge checks it
    total = cfg.warmup + (cfg.num_requests or DEFAULT_REQUESTS)
    facts: dict[str, Any] = {}
    pool = total
    if cfg.rate is not None and cfg.duration_s is not None:
        # an open loop bounded in time sends about rate x duration requests: fitting more prompts (each a
        # few /tokenize calls) would only delay the start
        pool = min(pool, int(cfg.rate * cfg.duration_s * 1.5) + 16)
    if cfg.workload == "random":
        # unique prompts (a repeated prompt would measure the prefix cache, not the model), up to 1024
        bodies, facts = random_bodies(min(pool, 1024), cfg.input_len, cfg.output_len, cfg.seed, tok)
    elif cfg.workload == "jsonl":
        if not cfg.dataset:
            raise BadInput("the jsonl workload needs --dataset FILE", "--dataset")
        bodies = jsonl_bodies(Path(cfg.dataset), min(pool, 4096), cfg.output_len, cfg.seed)
        facts["dataset_sha256"] = sha256_file(Path(cfg.dataset))  # merge checks it
    elif cfg.workload == "tool-calls":
        bodies = tool_call_bodies(min(pool, 4096), cfg.output_len)
    elif cfg.workload == "multi-turn":
        sessions = multi_turn_sessions(min(pool, 4096), cfg.output_len, cfg.seed)
        bodies = [b for b, _, _ in sessions]
    elif cfg.workload == "shared-prefix":
        bodies = shared_prefix_bodies(min(pool, 4096), cfg.prefix_len, cfg.input_len, cfg.output_len,
                                      cfg.prefix_groups, cfg.seed)
    else:
        raise BadInput(f"unknown workload {cfg.workload!r}; known: {', '.join(WORKLOAD_NAMES)}", "--workload")
    if not bodies:
        raise BadInput("the workload has no request", "--dataset" if cfg.workload == "jsonl" else "--workload")
    multi = cfg.workload == "multi-turn"

    def make(i: int) -> RequestInput:
        job = RequestInput(index=i, body={"model": cfg.model, **bodies[i % len(bodies)], **extra},
                           warmup=i < cfg.warmup)
        if multi:
            _, followups, tool_results = sessions[i % len(sessions)]
            job.followups, job.tool_results = list(followups), dict(tool_results)
        return job
    return loadgen.JobSource(total=total, make=make), facts


def _live_table(done: int, failed: int, total: int | None, recent: list[RequestRecord], t0: float) -> Table:
    t = Table(title=f"bench: {done}{'' if total is None else f'/{total}'} done, {failed} failed, "
                    f"{time.monotonic() - t0:.0f} s")
    t.add_column("metric")
    t.add_column("last 50 p50 (ms)", justify="right")
    for key in ("ttft", "tpot", "e2e"):
        vals = [getattr(m, key) for m in recent[-50:] if m.ok and getattr(m, key) is not None]
        t.add_row(key, f"{percentile(vals, 50):.1f}" if vals else "-")
    return t


class _Terminated:
    """SIGTERM (a Job's deadline, a node drain, `kill`) taken like Ctrl-C while the run is in flight: the
    requests that finished are saved and summary.json written (config.terminated), the workers stopped."""

    def __init__(self) -> None:
        self.fired = False
        self.deferred = False
        self._old: Any = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, _signum: int, _frame: Any) -> None:
        self.fired = True
        if not self.deferred:
            raise KeyboardInterrupt

    def defer(self) -> None:
        """From here on a SIGTERM is only noted: the summary of what finished is being written."""
        self.deferred = True

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
            self._old = None


def run_facts(started: float) -> dict[str, Any]:
    """Who ran what, where and when, for summary.json (secrets are scrubbed with the rest of it)."""
    from .. import __version__

    return {"tool": f"kimi-deploy {__version__}", "started_utc": _utc(started),
            "command": " ".join(shlex.quote(a) for a in sys.argv), "host": platform.node(),
            "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# What a run writes into --output (summary.json last): their presence means a previous run.
RESULT_FILES = ("summary.json", "requests.jsonl", "sweep.json")
# The lock file a run holds (flock, exclusive) in its --output directory; removed when the run ends.
LOCK_NAME = ".bench.lock"


class OutputLock:
    """An exclusive flock(2) on LOCK_NAME in a result directory, held by one run from its check of the
    directory to its end: a second run into the same directory is refused instead of both passing the
    check and writing over each other. The kernel drops the lock when the process dies (SIGKILL too), so a
    lock file left behind by a killed run locks nothing. Release unlinks the file while still holding the
    lock; `acquire` therefore checks, once locked, that the path still names the file it locked (a run that
    opened the file just before it was unlinked would otherwise hold a lock on a file nobody else sees)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, directory: Path, flag: str) -> OutputLock:
        path = directory / LOCK_NAME
        for _ in range(100):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise BadInput(f"cannot create the lock file {path}: {exc.strerror or exc}", flag) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise BadInput(f"another kimi-deploy bench is writing to {directory} (it holds {path.name}); wait "
                               f"for it to finish, or give another {flag}", flag) from None
            except OSError as exc:
                os.close(fd)
                raise BadInput(f"cannot lock {path} ({exc.strerror or exc}): the filesystem must support "
                               "flock(2); give another --output", flag) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                return cls(path, fd)
            os.close(fd)  # released and unlinked by its holder between our open and our lock: again
        raise BadInput(f"cannot lock {path}: other runs keep taking and releasing it", flag)

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)  # while locked: no other run holds this file
        except OSError:
            pass  # left behind, it locks nothing (see the class docstring)
        os.close(self.fd)
        self.fd = -1


# Descriptors a worker process needs besides its connections: the event loop's, the result queue's, a
# name lookup's, and connections still draining their last bytes while their user opens the next one.
DESCRIPTOR_MARGIN = 64


def _open_descriptors() -> int:
    """How many descriptors this process has open (what a worker inherits at fork); 0 when unknown."""
    for d in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(d))
        except OSError:
            continue
    return 0


def check_descriptors(lcfg: loadgen.LoadConfig, total: int) -> dict[str, Any]:
    """Whether each client process may open the connections the load needs (RLIMIT_NOFILE is per process;
    every worker inherits this one's limit and open descriptors). The soft limit is raised towards the
    hard limit when the need (the most connections one worker holds, loadgen.peak_connections, plus what
    is open now and DESCRIPTOR_MARGIN) is above it; an open loop without --max-concurrency, whose need is
    not known before the run, gets the hard limit. Bad input naming the load's flag, with the numbers and
    `ulimit -n`, when the hard limit is still too low. Returns the limit and the need for summary.json."""
    inf = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    peak = loadgen.peak_connections(total, lcfg)
    held = _open_descriptors()
    need = None if peak is None else held + peak + DESCRIPTOR_MARGIN
    want = need if need is not None else (hard if hard != inf else None)
    if want is not None and soft != inf and want > soft:
        target = want if hard == inf else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass  # the limit stays; checked below
    facts = {"soft_limit": None if soft == inf else soft, "hard_limit": None if hard == inf else hard,
             "needed": need}
    if need is None or soft == inf or need <= soft:
        return facts
    flag = "--concurrency" if lcfg.concurrency is not None else "--max-concurrency"
    load = lcfg.concurrency if lcfg.concurrency is not None else lcfg.max_concurrency
    _, users = loadgen.split(total, lcfg)
    users = min(users or peak, loadgen.share(total, lcfg.shard))
    room = soft - held - DESCRIPTOR_MARGIN
    more = "" if room <= 0 else f", spread the users over more processes (--workers {-(-users // room)})"
    raise BadInput(f"{load} concurrent requests need up to {need} open files in one client process ({peak} "
                   f"connections, {held} open now, {DESCRIPTOR_MARGIN} to spare), but this process may open only "
                   f"{soft} (RLIMIT_NOFILE; hard limit {'unlimited' if hard == inf else hard}): raise the limit in "
                   f"the shell that runs bench (`ulimit -n {need}`; above the hard limit through "
                   f"/etc/security/limits.conf or the container's ulimits){more}, or lower {flag}", flag)


def load_config(cfg: BenchConfig, part: tuple[int, int], start_at: float | None) -> loadgen.LoadConfig:
    """The load generator's configuration of a run (its shard `part`, its wall-clock start or None)."""
    return loadgen.LoadConfig(endpoint=cfg.endpoint, concurrency=cfg.concurrency, rate=cfg.rate,
                              burstiness=cfg.burstiness, ramp_up_s=cfg.ramp_up_s, duration_s=cfg.duration_s,
                              max_concurrency=cfg.max_concurrency, workers=cfg.workers,
                              request_timeout_s=cfg.request_timeout_s, stall_timeout_s=cfg.stall_timeout_s,
                              seed=cfg.seed, shard=part, start_at=start_at)


def check_files(cfg: BenchConfig) -> OutputLock:
    """What the configuration names on disk, before the endpoint is asked anything: a malformed trace
    (named with its line), and the result directory (bad input naming the flag). Returns the lock on the
    result directory, taken before it is checked for a previous run: the caller releases it at the end."""
    if cfg.workload == "trace":
        from . import trace

        if not cfg.dataset:
            raise BadInput("the trace workload needs --dataset FILE (a Mooncake-format trace)", "--dataset")
        trace.read_trace(Path(cfg.dataset), cfg.warmup + cfg.num_requests if cfg.num_requests else None,
                         time_scale=cfg.time_scale, duration_s=cfg.duration_s)
    if cfg.start_at is not None:
        shard.given(cfg.start_at)  # passed or too far ahead: bad input before anything is asked
    if cfg.barrier is not None and cfg.barrier.exists() and not cfg.barrier.is_dir():
        raise BadInput(f"{cfg.barrier} exists and is not a directory", "--barrier")
    check_output_dir(cfg.output, "--output")
    lock = OutputLock.acquire(cfg.output, "--output")
    try:
        previous = [n for n in RESULT_FILES if (cfg.output / n).exists()]
        if previous and not cfg.overwrite:
            raise BadInput(f"{cfg.output} holds a previous run ({', '.join(previous)}); give another --output, or "
                           "--overwrite to replace it", "--output")
    except BaseException:
        lock.release()
        raise
    return lock


def run_bench(cfg: BenchConfig, console: Console) -> dict[str, Any]:
    """One run. summary.json says how it ended: `config.interrupted` (Ctrl-C; what finished is kept),
    `requests.incomplete` (cut at the --duration deadline, counted neither as completed nor as failed)."""
    started = time.time()
    lock = check_files(cfg)
    try:
        ep = cfg.endpoint
        scrub = ep.scrubber()
        server = fingerprint(ep)
        served = [m["id"] for m in server["models"]["data"]]
        if served and cfg.model not in served:
            raise BadInput(f"{ep.v1} serves {', '.join(served)}, not {cfg.model!r}", "--model")
        tok = Tokenizer(ep, cfg.model)
        jobs, workload_facts = build_jobs(cfg, tok)
        files = check_descriptors(load_config(cfg, cfg.shard or (0, 1), None), len(jobs))
        terminated = _Terminated()  # from the barrier on: SIGTERM is taken like Ctrl-C
        try:
            return _run(cfg, console, started, server, tok, jobs, workload_facts, scrub, terminated, files)
        finally:
            terminated.restore()
    finally:
        lock.release()


def _run(cfg: BenchConfig, console: Console, started: float, server: dict[str, Any], tok: Tokenizer,
         jobs: loadgen.JobSource, workload_facts: dict[str, Any], scrub: Any, terminated: _Terminated,
         files: dict[str, Any]) -> dict[str, Any]:
    """The run after its requests are ready: wait for the other shards, send, collect, summarise."""
    ep = cfg.endpoint
    facts = cfg.facts()
    part = cfg.shard or (0, 1)
    identity = shard.run_identity(facts)
    server["metrics_before"] = scrape(ep)
    during: list[dict[str, Any]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(5.0):
            snap = scrape(ep)
            if snap:
                during.append({"t": round(time.monotonic() - t0, 1), **snap})

    # the shards of one run start together; prompts are built and the server asked before the wait
    start = None
    if cfg.barrier is not None:
        start = shard.barrier(cfg.barrier, shard=part, identity=identity, timeout_s=cfg.barrier_timeout_s,
                              log=console.print)
    elif cfg.start_at is not None:
        start = shard.given(cfg.start_at)
    if start is not None and start.at > time.time() + 5:
        console.print(f"starting at {_utc(start.at)} "
                      f"(in {start.at - time.time():.0f} s)")
    lcfg = load_config(cfg, part, None if start is None else start.at)
    outputs: dict[int, RequestOutput] = {}
    workers: list[WorkerStats] = []
    mono_to_wall = time.time() - time.monotonic()  # this machine's wall clock at monotonic 0
    procs, q, t0 = loadgen.start(jobs, lcfg)
    t_start = time.monotonic()
    mine = loadgen.share(len(jobs), part)  # this shard's requests
    if part[0] == 0:  # one shard samples the engine's metrics during the run; all scrape before and after
        threading.Thread(target=poll, daemon=True).start()
    interrupted = False
    measured_rows: list[RequestRecord] = []
    # a live table on a terminal; elsewhere (tee, CI, kubectl logs) plain progress lines at an interval
    total = None if cfg.workload == "multi-turn" else mine  # a session's turns are counted as they come
    label = "bench" + (f" shard {part[0]}/{part[1]}" if cfg.shard else "")
    failed = 0
    with (cfg.output / "requests.jsonl").open("w") as fh, \
            (Live(_live_table(0, 0, total, [], t_start), console=console, refresh_per_second=2)
             if console.is_terminal else Progress(console, label=label, total=total)) as live:
        try:
            while len(workers) < len(procs):
                try:
                    item = q.get(timeout=0.5)
                except queue_mod.Empty:
                    if not any(p.is_alive() for p in procs):
                        break
                    continue
                if isinstance(item, WorkerStats):
                    workers.append(item)
                    continue
                outputs[item.index] = item
                m = per_request(item)
                measured_rows.append(m)
                chars = {"content": len(item.content), "reasoning": len(item.reasoning), "tool": len(item.tool_text)}
                fh.write(scrub(json.dumps({**m.to_json(), "text_chars": chars})) + "\n")
                fh.flush()  # an interrupted run keeps every finished request
                failed += not m.ok
                if isinstance(live, Live):
                    live.update(_live_table(len(outputs), failed, total, measured_rows, t_start))
                else:
                    live.update(len(outputs), failed)
        except KeyboardInterrupt:
            interrupted = True
            for p in procs:
                p.terminate()
        finally:
            stop.set()
            for p in procs:
                p.join(timeout=10)
            for p in procs:  # a worker that did not stop in time is killed, never left connected
                if p.is_alive():
                    p.kill()
                    p.join(timeout=5)
            terminated.defer()
    # Client-side token counts, after the run so tokenization never competes with the measurement.
    rows = [per_request(o, tok.count(text=o.reasoning + o.content + o.tool_text) if o.ok else None)
            for o in sorted(outputs.values(), key=lambda o: o.index)]
    with (cfg.output / "requests.jsonl").open("w") as fh:
        for m in rows:
            fh.write(scrub(json.dumps(m.to_json())) + "\n")
    measured = [m for m in rows if not m.warmup]
    server["metrics_during"] = during
    server["metrics_after"] = scrape(ep)
    summary = {
        "definitions": DEFINITIONS,
        "run": {**run_facts(started), "mono_to_wall": mono_to_wall, "open_files": files},
        "config": {**facts, "workload_facts": workload_facts, "interrupted": interrupted,
                   **({"terminated": True} if terminated.fired else {})},
        "server": server,
        **summarize(measured, workers, cfg.slo),
    }
    sent = {m.session if m.session is not None else m.index for m in measured}
    # the deadline or Ctrl-C came first
    summary["requests"]["not_sent"] = max(mine - loadgen.share(cfg.warmup, part) - len(sent), 0)
    if cfg.shard is not None or start is not None:
        summary["shard"] = {"index": part[0], "count": part[1], "run": identity, "t0_monotonic": t0,
                            "start": None if start is None else start.to_json()}
    summary = scrub.obj(summary)
    write_results(summary, measured, cfg.output)
    return summary


def write_results(summary: dict[str, Any], measured: list[RequestRecord], out: Path) -> None:
    """The prefix-cache block (from the server's metrics and the workload's ideal), then summary.json, the
    latency CDFs and report.html: the end of a run, and of a merge."""
    server, facts = summary["server"], summary["config"].get("workload_facts") or {}
    engine = engine_prefix_cache(server["metrics_before"], server["metrics_after"])
    if engine is not None or "ideal_token_hit_rate" in facts:
        summary["prefix_cache"] = {
            **{k: facts[k] for k in ("ideal_token_hit_rate", "ideal_block_hit_rate") if k in facts},
            **(engine or {"engine_token_hit_rate": None, "source": "the server exports no prefix-cache metric"})}
    # whole or absent: `bench merge --wait` and `sweep` take its presence for a finished run
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "summary.json")
    html_report(summary, [cdf_plot(measured, out)], out)
