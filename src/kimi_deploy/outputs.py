"""Result directories of the commands that write one (`bench`, `compare`): checked before any request is
sent, so a file in the way or a directory that cannot be made is bad input naming the flag, not a crash
after the run."""

from __future__ import annotations

from pathlib import Path

from .errors import BadInput


def check_output_dir(path: Path, flag: str) -> None:
    """The result directory: created if missing; bad input naming `flag` when it is a file or cannot be made."""
    if path.exists() and not path.is_dir():
        raise BadInput(f"{path} exists and is not a directory", flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create {path}: {exc.strerror or exc}", flag) from None
