"""Error types that map to the CLI's exit codes (README.md: 1 failed, 2 bad input, 3 does not fit)."""

from __future__ import annotations

import math
import os


class KimiDeployError(Exception):
    """Base class: a message meant for the operator, printed without a traceback."""

    exit_code: int = 1


class BadInput(KimiDeployError):
    """A spec, flag or file the operator gave is wrong. Exit code 2.

    `field` names the offending field or file so the message can point at it.
    """

    exit_code = 2

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class OperationFailed(KimiDeployError):
    """The operation itself failed (engine died, comparison FAIL, download failed). Exit code 1."""

    exit_code = 1


def seconds_from_env(name: str, default: float) -> float:
    """The environment variable `name` as seconds (a positive finite number), or `default` when it is unset
    or blank; any other value is bad input naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise BadInput(f"{text!r} is not a positive number of seconds", name)
    return value
