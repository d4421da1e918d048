"""Reading JSON Lines files that operators write by hand (suites, datasets): one clear error naming the
file and line for a line that is not JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from .errors import BadInput


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"line {n}: invalid JSON ({exc.msg})", str(path)) from None
