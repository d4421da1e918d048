"""Shared test helpers: run the real `kimi-deploy` CLI in a subprocess, as an operator would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def run_cli(*args: str, check: bool = False, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m kimi_deploy ARGS` and capture its output."""
    proc = subprocess.run([sys.executable, "-m", "kimi_deploy", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


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
