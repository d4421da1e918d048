"""run_cli's forked commands (tests/cli_forkserver.py) report what a cold `python -m kimi_deploy` reports:
the same exit code, stdout and stderr for output that depends on the arguments, the environment (COLUMNS
for rich's tables, a missing key) and a bad input; a hung command is killed at its timeout."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import DEPLOY, ROOT, run_cli

SPEC = str(DEPLOY / "kimi-k2-instruct-h200x16-vllm-tp16.yaml")
ONE_NODE = str(DEPLOY / "kimi-k2-thinking-h200x8-vllm-tp8.yaml")


def _cold(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # stdin /dev/null as for run_cli's commands (rich also sizes its console from a terminal on stdin)
    return subprocess.run([sys.executable, "-m", "kimi_deploy", *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args, extra_env", [
    (["--help"], {}),
    (["plan", SPEC], {"COLUMNS": "200"}),
    (["plan", SPEC], {"COLUMNS": "60"}),
    (["validate", "no-such-spec.yaml"], {}),
    (["serve", ONE_NODE, "--dry-run", "--no-check-args"], {"KIMI_API_KEY": ""}),
    (["bench", "--base-url", "http://127.0.0.1:9", "--model", "m", "--rate", "-1"], {}),
])
def test_a_forked_command_reports_what_a_cold_one_does(args: list[str], extra_env: dict[str, str]) -> None:
    env = {**os.environ, **extra_env}
    cold, forked = _cold(*args, env=env), run_cli(*args, env=env)
    assert (forked.returncode, forked.stdout, forked.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    assert "Traceback" not in forked.stderr


def test_the_environment_is_the_callers() -> None:
    """env=None is this process's environment at the call, as for subprocess.run."""
    os.environ["KIMI_API_KEY"] = ""
    try:
        proc = run_cli("serve", ONE_NODE, "--dry-run", "--no-check-args")
    finally:
        del os.environ["KIMI_API_KEY"]
    assert proc.returncode == 2 and "KIMI_API_KEY is empty" in proc.stderr, proc.stderr


def test_a_command_past_its_timeout_is_killed(sim_factory) -> None:
    """`wait` on a server that never becomes ready would run for its own 30 s: run_cli's 2 s end it, and
    the next command runs as usual."""
    url = sim_factory("--slow-start", "60")
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli("wait", url, "--model", "sim", "--timeout", "30", timeout=2)
    assert run_cli("--version").returncode == 0


def test_a_setting_read_at_import_starts_the_command_cold(tmp_path) -> None:
    """A PYTHON* variable is read when the interpreter starts: with PYTHONPATH naming a directory that
    holds another kimi_deploy, the command runs that one, as a cold start would."""
    fake = tmp_path / "kimi_deploy"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text("print('the kimi_deploy on PYTHONPATH')\n")
    proc = run_cli("--version", env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert (proc.returncode, proc.stdout) == (0, "the kimi_deploy on PYTHONPATH\n"), proc.stderr


def test_what_the_preload_reads_decides_a_cold_start() -> None:
    """The server records the variables its imports read: OpenSSL's certificate paths (aiohttp makes
    its default contexts at import), openai's log level, the locale; any of them changed, or a new PYTHON*
    one, is a cold start; anything else (the test's own variables) is not."""
    import json

    from .cli_forkserver import starts_cold

    proc = subprocess.run([sys.executable, "-c", "import json; from tests.cli_forkserver import _preload; "
                           "print(json.dumps(sorted(_preload())))"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    read = set(json.loads(proc.stdout))  # in a fresh process: this one has imported them already
    assert {"SSL_CERT_FILE", "OPENAI_LOG", "LANG"} <= read
    frozen = {name: os.environ.get(name) for name in read}
    assert not starts_cold(frozen, {**os.environ, "KIMI_API_KEY": "changed", "HF_ENDPOINT": "http://x"})
    for change in ({"SSL_CERT_FILE": "/tmp/ca.pem"}, {"OPENAI_LOG": "debug"}, {"PYTHONHASHSEED": "7"}):
        assert starts_cold(frozen, {**os.environ, **change}), change
    # an import that went through the whole environment: any change at all
    whole = {"*": None, "PATH": "/bin", "LANG": "C.UTF-8"}
    assert not starts_cold(whole, {"PATH": "/bin", "LANG": "C.UTF-8"})
    assert starts_cold(whole, {"PATH": "/bin", "LANG": "C.UTF-8", "KIMI_API_KEY": "k"})


def test_output_is_read_until_every_process_holding_it_ends(tmp_path) -> None:
    """As subprocess.run reads its pipes to the end: a background process the command left behind still
    writes into the captured output, and holds the command until it ends (or the timeout)."""
    import time

    fake = tmp_path / "kimi_deploy"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        "import subprocess\nprint('first', flush=True)\n"
        "subprocess.Popen(['sh', '-c', 'sleep 1; echo late'])\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    t = time.monotonic()
    proc = run_cli("--version", env=env)
    assert (proc.returncode, proc.stdout) == (0, "first\nlate\n") and time.monotonic() - t >= 1
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli("--version", env=env, timeout=0.5)
    assert run_cli("--version").returncode == 0


def test_a_server_that_died_is_started_again() -> None:
    from . import conftest

    assert run_cli("--version").returncode == 0
    conftest._CLI._proc.kill()
    conftest._CLI._proc.wait(10)
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
