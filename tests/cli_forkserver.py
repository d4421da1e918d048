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

Protocol, one line each way: a JSON request {"argv", "env", "cwd", "stdout", "stderr"} on stdin (the last
two are files the server copies the child's streams to, from pipes, until every process holding them has
closed them); "pid N" once the child is forked; "exit N" once it ended (as subprocess reports it: -N when
signal N ended it). A "kill" line meanwhile (the client's timeout) kills the child. The child's stdin is
/dev/null."""

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
    requests = _Lines(0)
    while (line := requests.next()) is not None:
        request = json.loads(line)
        cold = starts_cold(frozen, request["env"])
        pipes = (os.pipe(), os.pipe())  # the child's stdout and stderr
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            for r, _ in pipes:
                os.close(r)
            _run_command(request, cold, pipes[0][1], pipes[1][1])  # ends this process through SystemExit
        for _, w in pipes:
            os.close(w)
        print(f"pid {pid}", flush=True)
        _collect(pid, {pipes[0][0]: request["stdout"], pipes[1][0]: request["stderr"]}, requests)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


class _Lines:
    """Lines from a file descriptor, read unbuffered so that select() on it stays truthful."""

    def __init__(self, fd: int) -> None:
        self.fd, self._buf = fd, b""

    def pending(self) -> bool:
        return b"\n" in self._buf

    def next(self) -> str | None:
        """The next line (None at the end of input); blocks."""
        while b"\n" not in self._buf:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()


def _collect(pid: int, outputs: dict[int, str], requests: _Lines) -> None:
    """Copy the child's streams to their files until every process holding them has closed them (as
    subprocess.run's communicate reads to the end, a background process the command left included), or
    until the client asks to kill the command (its timeout): the child is killed, unreaped still, so the
    pid cannot be another process's."""
    files = {fd: open(path, "wb") for fd, path in outputs.items()}  # noqa: SIM115 -- closed below
    try:
        while files:
            ready, _, _ = select.select([*files, requests.fd], [], [])
            if requests.fd in ready or requests.pending():
                line = requests.next()
                assert line in ("kill", None), line
                os.kill(pid, signal.SIGKILL)
                return
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    files[fd].write(data)
                else:
                    files.pop(fd).close()
                    os.close(fd)
    finally:
        for fd, f in files.items():
            f.close()
            os.close(fd)


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


def _run_command(request: dict, cold: bool, stdout: int, stderr: int) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, target in ((1, stdout), (2, stderr)):
        os.dup2(target, fd)
        os.close(target)
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
            try:
                self._start()
                self._send({"argv": argv, "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)})
                self._reply("pid", 60)
                try:
                    code = int(self._reply("exit", timeout))
                except TimeoutError:
                    self._send("kill")
                    self._reply("exit", 60)
                    raise subprocess.TimeoutExpired(args, timeout, out.read_text(), err.read_text()) from None
            except subprocess.TimeoutExpired:
                raise
            except BaseException:  # Ctrl-C, a server that died or hangs: the next command gets a new one
                self._reset()
                raise
            return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.wait(30)
            self._proc = None

    def _reset(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(30)
            self._proc = None

    def _start(self) -> None:
        """A server, unless the one started before is still running."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-m", "tests.cli_forkserver"], cwd=self._root,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self._buf = b""

    def _send(self, request: dict | str) -> None:
        line = request if isinstance(request, str) else json.dumps(request)
        self._proc.stdin.write(line.encode() + b"\n")
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
