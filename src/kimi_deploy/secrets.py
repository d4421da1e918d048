"""The one place that keeps credentials out of what the tool writes or prints.

A server may echo the request's Authorization header (or the key) in an error body; that text ends up in
requests.jsonl, local.jsonl/reference.jsonl, summary.json, the reports and the terminal. `scrub` replaces
the value of every key/token environment variable in use with a marker naming the variable, so the
output still says which credential was involved without containing it (issue 12, class 4)."""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable, Mapping

# Variables always treated as credentials, plus every name of this shape (OPENAI_API_KEY, HF_TOKEN,
# HUGGING_FACE_HUB_TOKEN, VLLM_API_KEY, ...).
KNOWN = ("MOONSHOT_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VLLM_API_KEY", "OPENAI_API_KEY")
_SHAPE = re.compile(r"(^|_)(API_KEY|TOKEN|SECRET|PASSWORD|ACCESS_KEY|SECRET_KEY|AUTH)$|_KEY$", re.IGNORECASE)
# Shorter values are not scrubbed: replacing "1" or "true" everywhere would garble the output, and no
# real key is that short.
MIN_LEN = 8


def secret_values(names: Iterable[str | None] = (), env: Mapping[str, str] | None = None,
                  min_len: int = MIN_LEN) -> dict[str, str]:
    """{value: variable name} for the named variables, the known ones and every credential-shaped name."""
    env = os.environ if env is None else env
    wanted = {n for n in names if n} | set(KNOWN) | {k for k in env if _SHAPE.search(k)}
    found: dict[str, str] = {}
    for name in sorted(wanted):
        value = env.get(name)
        if value and len(value) >= min_len:
            found.setdefault(value, name)
    return found


def forms(value: str) -> set[str]:
    """How a secret can read in text: raw, and escaped inside a Python repr or a JSON string (ASCII-only
    or not). Replace the longest first: an escaped form may contain another."""
    return {value, repr(value)[1:-1], json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


class Scrubber:
    """Replaces each secret value (in every form `forms` gives) with `***<NAME>***`."""

    def __init__(self, names: Iterable[str | None] = (), env: Mapping[str, str] | None = None,
                 extra: Mapping[str, str] | None = None, min_len: int = MIN_LEN) -> None:
        """`extra`: more {value: name} pairs, e.g. a key read earlier from another environment mapping."""
        pairs: dict[str, str] = {}
        found = {**{v: n for v, n in (extra or {}).items() if v and len(v) >= min_len},
                 **secret_values(names, env, min_len)}
        for value, name in found.items():
            for form in sorted(forms(value), key=len, reverse=True):
                pairs.setdefault(form, f"***{name}***")
        # longest first, so a key that contains another key is replaced whole
        self._pairs = sorted(pairs.items(), key=lambda kv: -len(kv[0]))

    def __call__(self, text: str) -> str:
        return self.text(text)

    def text(self, text: str) -> str:
        for value, marker in self._pairs:
            if value in text:
                text = text.replace(value, marker)
        return text

    def obj(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string scrubbed (dict keys included)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.obj(k) if isinstance(k, str) else k: self.obj(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.obj(v) for v in value]
        return value


def scrub(text: str, names: Iterable[str | None] = ()) -> str:
    """`text` with the value of every key/token environment variable in use (the `names` given, the
    known ones and every *_API_KEY / *_TOKEN / *_KEY / *_SECRET name) replaced by `***NAME***`."""
    return Scrubber(names).text(text)
