"""Reading JSON Lines files that operators write by hand (suites, datasets): one clear error naming the
file and line for a line that is not JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from .errors import BadInput


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line. A file that is not UTF-8 text (a binary
    file given by mistake) or cannot be read is bad input naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text (byte {exc.start}): give a JSON Lines file", str(path)) from None
    except IsADirectoryError:
        raise BadInput("is a directory, not a JSON Lines file", str(path)) from None
    except OSError as exc:
        raise BadInput(f"cannot read it: {exc.strerror or exc}", str(path)) from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"line {n}: invalid JSON ({exc.msg})", str(path)) from None
