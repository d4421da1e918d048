"""Shared test helpers: run the real `kimi-deploy` CLI in a subprocess, as an operator would."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .cli_forkserver import ForkServer

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


_CLI = ForkServer(ROOT)
atexit.register(_CLI.close)


def run_cli(*args: str, check: bool = False, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m kimi_deploy ARGS` in a process of its own and capture its output (forked from
    tests/cli_forkserver.py, which has the library imported; env None: this process's environment)."""
    proc = _CLI.run(list(args), env=dict(os.environ) if env is None else env, cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def ctrl_c_as_in_a_shell() -> None:
    """Popen's preexec_fn for a child that a test interrupts with SIGINT: SIGINT at its default, as in an
    operator's shell. A test runner started in the background by a non-interactive shell ignores SIGINT,
    and its children would inherit that and never see the interrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_json(*args: str) -> tuple[int, Any]:
    proc = run_cli(*args)
    return proc.returncode, json.loads(proc.stdout)


def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> None:
    """An operator-facing error: the expected exit code, no traceback, and the message names the field."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    text = proc.stderr + proc.stdout
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"


@pytest.fixture
def deploy_examples() -> list[Path]:
    return sorted(DEPLOY.glob("*.yaml"))


def example_params() -> list:
    """Every deploy/ example as a test parameter; the ones that read the tiny-k2 checkpoint (its
    config.json under ./runs/tiny-k2) are marked e2e, and their tests ask for the `tiny_dir` fixture."""
    return [pytest.param(p, id=p.name, marks=[pytest.mark.e2e] if needs_tiny(p) else [])
            for p in sorted(DEPLOY.glob("*.yaml"))]


def needs_tiny(spec: Path) -> bool:
    return "runs/tiny-k2" in spec.read_text()


# --- the tiny-k2 deployment on real vLLM -----------------------------------------------------------

import signal
import socket
from dataclasses import dataclass
from typing import Iterator

import yaml

TINY_DIR = ROOT / "runs" / "tiny-k2"
TINY_SPEC = DEPLOY / "tiny-k2-cpu.yaml"
# tiny-k2 as trained from the current training inputs, kept as test data (scripts/ship-tiny-k2.sh makes it;
# tests/test_tiny.py fails when it no longer matches the code and libraries that would train it)
TINY_PREBUILT = ROOT / "tests" / "data" / "tiny-k2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """tiny-k2 built by the real CLI from the prebuilt test data (seconds; training it is about 42 minutes
    on 2 cores), then copied from the per-machine cache."""
    run_cli("tiny-model", str(TINY_DIR), "--prebuilt", str(TINY_PREBUILT), check=True, timeout=600)
    return TINY_DIR


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, spec: Path, log: Path) -> None:
        self.proc, self.url, self.spec, self.log = proc, url, spec, log

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


def start_tiny_server(tmp: Path, name: str, model_dir: Path | None = None, env: dict[str, str] | None = None,
                      **serving: object) -> Server:
    """Start tiny-k2 through `kimi-deploy serve` (which execs vLLM) and wait with `kimi-deploy wait`;
    `model_dir` serves another copy of the checkpoint (e.g. with its own generation_config.json); `env` is the
    environment of `serve` and `wait` (with serving api_key_env, the key's variable must be in it)."""
    data = yaml.safe_load(TINY_SPEC.read_text())
    port = free_port()
    data["name"] = name
    if model_dir is not None:
        data["model"] = {"path": str(model_dir)}
        data["weights"]["dir"] = str(model_dir)
    data["serving"].update({"port": port, **serving})
    spec = tmp / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(data))
    log = tmp / f"{name}.log"
    proc = subprocess.Popen([sys.executable, "-m", "kimi_deploy", "serve", str(spec)], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}", spec, log)
    key = ["--api-key-env", str(serving["api_key_env"])] if serving.get("api_key_env") else []
    waited = run_cli("wait", server.url, "--timeout", "600", *key, env=env, timeout=660)
    if waited.returncode != 0:
        server.stop()
        raise AssertionError(f"server did not come up: {waited.stderr}\n{log.read_text()[-4000:]}")
    return server


@pytest.fixture(scope="session")
def tiny_server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_tiny_server(tmp_path_factory.mktemp("tiny"), "tiny-k2")
    yield server
    server.stop()
    assert server.proc.poll() is not None


# The vLLM CPU engine is not batch-invariant: what else is in a batch changes the order of its kernels'
# floating-point sums, and tiny-k2, which has learned the format rather than the world, has near-ties such a
# change flips (a word of a long note, one value). compare reports such a row as a streamed/non-streamed
# disagreement that went away when the row was rerun alone (load_dependent), and FAILs, as it would on a GPU
# deployment. vLLM's batch-invariant mode (VLLM_BATCH_INVARIANT) is for GPUs only. The bound on how many rows
# a run of tiny-k2 against itself may flip so:
MAX_LOAD_FLIPS = 0.03  # of the rows compared


def load_flips(summary: dict, *, confirmed: bool = True) -> set[str]:
    """The rows of a compare run whose streamed and non-streamed answers differed in value only under load.
    With `confirmed`, every disagreement must be one compare reran alone and found gone (so there is no
    other kind); without, the rows whose only difference is the arguments' values (a run with faults, whose
    reruns are capped). Either way at most MAX_LOAD_FLIPS of the rows."""
    found = summary.get("streaming", {}).get("disagreements", [])  # none without --stream both ways
    if confirmed:
        assert all(d["load_dependent"] for d in found), [d for d in found if not d["load_dependent"]]
        flips = {d["id"] for d in found}
    else:
        flips = {d["id"] for d in found if d["kinds"] == ["stream_arguments_differ"]}
    assert len(flips) <= MAX_LOAD_FLIPS * summary["n"], sorted(flips)
    return flips


def assert_passes_but_for_load_flips(proc: subprocess.CompletedProcess[str], summary: dict) -> set[str]:
    """tiny-k2 against itself (or its recording): PASS, or FAIL by load flips alone (load_flips): then the
    only failing checks are the streamed/non-streamed ones. Returns the flipped rows."""
    flips = load_flips(summary)
    failing = {k for k, c in summary["checks"].items() if not c["ok"]}
    if flips:
        assert failing <= {"stream_disagreements_local", "load_dependent_failures"}, failing
        assert proc.returncode == 1 and summary["verdict"] == "FAIL", proc.stdout + proc.stderr
    else:
        assert not failing and proc.returncode == 0 and summary["verdict"] == "PASS", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return flips


@dataclass(frozen=True)
class SuiteRun:
    """One `compare` run: the process, its summary.json and its output directory."""

    proc: subprocess.CompletedProcess
    summary: dict
    out: Path

    @property
    def recording(self) -> Path:
        """The reference's recorded answers (what --reference-file replays)."""
        return self.out / "reference.jsonl"


@pytest.fixture(scope="session")
def tiny_suite_run(tiny_server: Server, tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    """The full 316-row tool-call suite, tiny-k2 against itself, with nothing but the suite named (every
    row streamed and not, at the default concurrency): run once a session. Its reference answers are the
    recording the fault runs replay (--reference-file) instead of asking the server for them again."""
    out = tmp_path_factory.mktemp("suite") / "full"
    proc = run_cli("compare", "--local", tiny_server.url, "--reference", f"{tiny_server.url}/v1", "--suite",
                   "tool-calls", "--output", str(out), timeout=1200)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    return SuiteRun(proc, summary, out)


@pytest.fixture(scope="session")
def tiny_server_noparser(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same deployment started without --tool-call-parser (and so without auto tool choice)."""
    server = start_tiny_server(tmp_path_factory.mktemp("tiny-np"), "tiny-k2-noparser", tool_call_parser=None)
    yield server
    server.stop()


# --- the built wheel --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def wheel_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of this working tree (a stale build/ directory cannot leak into it)."""
    import shutil

    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src-tree"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(dist), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = dist.glob("kimi_deploy-*.whl")
    return wheel


@pytest.fixture(scope="session")
def built_wheel(wheel_file: Path) -> Iterator[Path]:
    """The wheel installed (without dependencies: the venv has them) into its own directory; yields that
    directory, to be put first on PYTHONPATH (console scripts in its bin/)."""
    site = wheel_file.parent.parent / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                           str(wheel_file)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield site


# --- markers ----------------------------------------------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: starts a real vLLM server or trains tiny-k2 (minutes); "
                                       "`pytest -m 'not e2e'` runs the rest")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks (its loadgroup mode)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs tiny-k2 (its training or a vLLM server serving it) is end to end. Then each test
    gets its pytest-xdist group (`-n 2 --dist loadgroup`, as scripts/test.sh runs the suite)."""
    for item in items:
        if "tiny_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
    for item, group in xdist_groups(items).items():
        item.add_marker(pytest.mark.xdist_group(group))


def xdist_groups(items: list[pytest.Item]) -> dict[pytest.Item, str]:
    """The tests that must run in one worker process, by group name. Every test that needs tiny-k2 (the
    `tiny_dir` fixture, directly or through a server) is in one group: they share ./runs/tiny-k2 (which
    `tiny-model` replaces) and the session's vLLM servers, each of which would otherwise start once per
    worker. Other tests, end-to-end ones included (a short training run), that share a module- or
    session-scoped fixture of this suite are grouped by it, so it is built once; tests with an explicit
    xdist_group mark keep it."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    shared: dict[pytest.Item, list[str]] = {}
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        if "tiny_dir" in getattr(item, "fixturenames", ()):
            shared[item] = ["e2e"]
            continue
        info = getattr(item, "_fixtureinfo", None)
        keys = [f"{defs[-1].func.__module__}.{name}"
                for name, defs in (info.name2fixturedefs.items() if info else ())
                if defs and defs[-1].scope in ("module", "session")
                and defs[-1].func.__module__.startswith(__package__ + ".")]
        if keys:
            shared[item] = keys
            for key in keys[1:]:
                parent[root(key)] = root(keys[0])
    return {item: root(keys[0]) for item, keys in shared.items()}


# --- a small real HTTP server -----------------------------------------------------------------------

@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an aiohttp web.Application on a free loopback port from a thread: yields its base URL; the
    server is stopped on exit."""
    import asyncio
    import threading

    from aiohttp import web

    loop = asyncio.new_event_loop()
    # handlers still running at the exit (a test's hanging endpoint) get a second, not aiohttp's 60 s
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", free_port())
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        try:  # a handler that is still running (a test's hanging endpoint) is dropped with the loop
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        except TimeoutError:
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


# --- the sim server ---------------------------------------------------------------------------------

def start_sim(*args: str) -> tuple[subprocess.Popen, str]:
    """`kimi-deploy sim` on a free loopback port; (process, base URL) once it answers /health."""
    import time

    import httpx2

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kimi_deploy", "sim", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx2.get(url + "/health", timeout=1).status_code in (200, 503):
                break
        except httpx2.HTTPError:
            time.sleep(0.1)
    return proc, url


@pytest.fixture
def sim_factory() -> Iterator:
    """Start as many sims as a test needs (each call: sim arguments -> base URL); all stopped after."""
    procs = []

    def make(*args: str) -> str:
        proc, url = start_sim(*args)
        procs.append(proc)
        return url

    yield make
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


@pytest.fixture
def fault() -> Iterator:
    """Start as many tests/faultserver.py servers as a test needs (each call: a mode -> the server); all
    stopped after."""
    from .faultserver import FaultServer

    servers: list[FaultServer] = []

    def make(mode: str) -> FaultServer:
        servers.append(FaultServer(mode))
        return servers[-1]
    yield make
    for s in servers:
        s.stop()


def run_cli_timed(*args: str, env: dict[str, str] | None = None, limit: float = 60):
    """run_cli, failing the test when the command took `limit` seconds or more: a run that must end in
    bounded time (a stalled server, a deadline) is checked for it."""
    import time

    t = time.monotonic()
    proc = run_cli(*args, env=env, timeout=limit + 60)
    took = time.monotonic() - t
    assert took < limit, f"took {took:.0f} s: {args}"
    return proc


# --- the CLI in-process, for checks of its flags --------------------------------------------------------

def invoke_cli(*args: str) -> tuple[int, str]:
    """The real app in-process: (exit code, message). Our errors map to their exit codes as main() does;
    anything else (a traceback's worth) fails the test."""
    from typer.testing import CliRunner

    from kimi_deploy.cli import app
    from kimi_deploy.errors import KimiDeployError

    r = CliRunner().invoke(app, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        assert isinstance(r.exception, KimiDeployError), repr(r.exception)
        return r.exception.exit_code, str(r.exception)
    return r.exit_code, r.output


from hypothesis import strategies as st

# What an operator may type for a numeric flag: any float (NaN and infinities too), large integers, and
# strings that are not numbers or are numbers only to some parsers.
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12),
                    st.sampled_from(["", "x", "1e999", "-0", "0x10", " 5"]))


# --- spec files ------------------------------------------------------------------------------------

def spec_with(tmp_path: Path, base: Path = DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml",
              name: str = "spec.yaml", **sections: dict[str, Any]) -> Path:
    """A copy of the spec `base` with each section's keys updated from `sections`, written to tmp_path."""
    data = yaml.safe_load(base.read_text())
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p
