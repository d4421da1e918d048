"""Reading JSON Lines files that operators write by hand (suites, datasets): one clear error naming the
file and line for a line that is not JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from .errors import BadInput

MAX_LINE_BYTES = 64 * 2**20  # characters, strictly; one request, suite case or trace row is far smaller


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line, read as it goes (a caller that stops early
    never reads the rest of a large file). A file that is not UTF-8 text (a binary file given by mistake),
    cannot be read, or has a line longer than MAX_LINE_BYTES is bad input naming it."""
    try:
        fh = path.open(encoding="utf-8")
    except IsADirectoryError:
        raise BadInput("is a directory, not a JSON Lines file", str(path)) from None
    except OSError as exc:
        raise BadInput(f"cannot read it: {exc.strerror or exc}", str(path)) from None
    with fh:
        n = 0
        while True:
            try:
                line = fh.readline(MAX_LINE_BYTES + 1)
            except UnicodeDecodeError:
                raise BadInput(f"not UTF-8 text (near line {n + 1}): give a JSON Lines file", str(path)) from None
            except OSError as exc:
                raise BadInput(f"cannot read it: {exc.strerror or exc}", str(path)) from None
            if not line:
                return
            n += 1
            if len(line) > MAX_LINE_BYTES:
                raise BadInput(f"line {n} is longer than {MAX_LINE_BYTES // 2**20} MiB (not a JSON Lines file?)",
                               str(path))
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInput(f"line {n}: invalid JSON ({exc.msg})", str(path)) from None
