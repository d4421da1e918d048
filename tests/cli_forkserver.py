"""The process run_cli (tests/conftest.py) starts its commands from: it imports kimi-deploy's library once,
then forks one child per command. Each command still runs in a process of its own, with its own
arguments, environment, working directory, standard streams and exit code, and ends as `python -m
kimi_deploy` ends (SystemExit, atexit, flushed streams); what it skips is the interpreter start and the
imports every command repeats.

The server imports the library and its HTTP clients, and records which environment variables those
imports read (os.environ's reads; the interpreter's start reads PYTHON*, the locale and TZ; OpenSSL's
default contexts, made at import by aiohttp, read SSL_CERT_FILE and SSL_CERT_DIR). A command whose
environment differs from the server's in one of them is exec'd cold (`python -m kimi_deploy` in the
child), so no command sees a setting frozen at the server's start. The CLI package itself is imported in
each child (its rich Consoles read COLUMNS, NO_COLOR and TERM when made), and so is whatever a command
imports lazily (huggingface_hub, matplotlib, torch); `serve` refuses to start when one of those got in.

Protocol, one line each way: a JSON request {"argv", "env", "cwd", "stdout", "stderr"} (the last two are
files the child's streams go to) on stdin; "pid N" once the child is forked, "exit N" once it ended
(as subprocess reports it: -N when signal N ended it)."""

from __future__ import annotations

import gc
import importlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# What the commands import outside the CLI package (python -X importtime -m kimi_deploy ...)
PRELOAD = ("kimi_deploy.args", "kimi_deploy.catalog", "kimi_deploy.deployment", "kimi_deploy.endpoint",
           "kimi_deploy.engines.profiles", "kimi_deploy.engines.render", "kimi_deploy.errors",
           "kimi_deploy.launch", "kimi_deploy.plan", "kimi_deploy.secrets", "kimi_deploy.spec",
           "kimi_deploy.tiny.model", "kimi_deploy.bench", "kimi_deploy.bench.loadgen", "kimi_deploy.bench.sweep",
           "kimi_deploy.compare", "typer", "rich.console", "rich.table", "rich.markup")
# never imported here: the CLI (see above), and what reads its settings outside os.environ or only some
# commands need
NOT_PRELOADED = ("kimi_deploy.cli", "huggingface_hub", "matplotlib", "numpy", "torch", "transformers", "vllm",
                 "sglang", "typer.rich_utils")
READ_AT_START = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")
EVERY_VARIABLE = "*"  # read: an import went through the whole environment


def serve() -> None:
    read = _preload()
    loaded = sorted(m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in NOT_PRELOADED))
    if loaded:
        raise SystemExit(f"cli_forkserver: the preload imported {loaded[:3]}; the children must import them")
    frozen = {name: os.environ.get(name) for name in (os.environ if EVERY_VARIABLE in read else read)}
    if EVERY_VARIABLE in read:
        frozen[EVERY_VARIABLE] = None
    # The imported objects go to the collector's permanent generation: a child's collections then skip
    # them instead of touching (and so copying) every page the server holds
    # (docs.python.org/3/library/gc.html#gc.freeze).
    gc.freeze()
    for line in sys.stdin:
        request = json.loads(line)
        cold = starts_cold(frozen, request["env"])
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_command(request, cold)  # ends this process through SystemExit, as the interpreter would
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


def starts_cold(frozen: dict[str, str | None], env: dict[str, str]) -> bool:
    """Must a command with environment `env` start a fresh interpreter: does `env` differ from the server's
    in a variable read at its start or by its imports (`frozen`: name -> the server's value), or add a
    PYTHON* one?"""
    if EVERY_VARIABLE in frozen:
        return env != {k: v for k, v in frozen.items() if k != EVERY_VARIABLE}
    return any(env.get(name) != value for name, value in frozen.items()) or \
        any(name.startswith("PYTHON") and name not in frozen for name in env)


def _preload() -> set[str]:
    """Import PRELOAD; the names of the environment variables read meanwhile and at the start."""
    read = {*READ_AT_START, *(k for k in os.environ if k.startswith("PYTHON"))}
    getitem, iterate = os._Environ.__getitem__, os._Environ.__iter__

    def recording(self, key):  # Mapping.get and `in` come through __getitem__ too
        read.add(key)
        return getitem(self, key)

    def whole(self):  # copies, items() and keys()
        read.add(EVERY_VARIABLE)
        return iterate(self)

    os._Environ.__getitem__, os._Environ.__iter__ = recording, whole
    try:
        for name in PRELOAD:
            importlib.import_module(name)
    finally:
        os._Environ.__getitem__, os._Environ.__iter__ = getitem, iterate
    return read


def _run_command(request: dict, cold: bool) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    os.chdir(request["cwd"])
    if cold:
        os.execve(sys.executable, [sys.executable, "-m", "kimi_deploy", *request["argv"]], request["env"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["-m", *request["argv"]]  # run_module puts the module's path first, as -m does
    runpy.run_module("kimi_deploy", run_name="__main__", alter_sys=True)
    raise SystemExit(0)


class ForkServer:
    """The client: one server per test process, started on first use; one command at a time."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""

    def run(self, argv: list[str], *, env: dict[str, str], cwd: Path,
            timeout: float) -> subprocess.CompletedProcess[str]:
        """`python -m kimi_deploy ARGV` as subprocess.run(capture_output=True, text=True) reports it."""
        args = [sys.executable, "-m", "kimi_deploy", *argv]
        with self._lock, tempfile.TemporaryDirectory(prefix="kimi-cli-") as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            self._send({"argv": argv, "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)})
            pid = int(self._reply("pid", 60))
            try:
                code = int(self._reply("exit", timeout))
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._reply("exit", 60)
                raise subprocess.TimeoutExpired(args, timeout, out.read_text(), err.read_text()) from None
            return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.wait(30)
            self._proc = None

    def _send(self, request: dict) -> None:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-m", "tests.cli_forkserver"], cwd=self._root,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self._buf = b""
        self._proc.stdin.write(json.dumps(request).encode() + b"\n")
        self._proc.stdin.flush()

    def _reply(self, word: str, timeout: float) -> str:
        """The next line's value after `word`; TimeoutError when none came in `timeout` seconds."""
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"cli_forkserver ended (exit {self._proc.wait()}); its stderr is above")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        head, _, value = line.decode().partition(" ")
        assert head == word, line
        return value


if __name__ == "__main__":
    serve()
