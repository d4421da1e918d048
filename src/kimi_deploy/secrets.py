"""The one place that decides what a credential is and keeps credentials out of what the tool writes or
prints. Every other module asks here:

- `is_secret_name(name)`: does an environment variable's name say "credential" (the one name rule);
- `credential_problem(value, name)`: does a value look like a credential whatever its name (key and token
  shapes, or a long random string under an auth-like name);
- `is_secret_option(arg)`: is a command-line option one that takes a credential (`--api-key` and kin);
- `MIN_LEN`: the shortest value that is redacted;
- `Scrubber` / `scrub`: redact a string, an argv or a mapping (any JSON-like value).

The spec refuses in serving.env exactly the variables `is_secret` holds for, and in extra_args the
options `is_secret_option` names or values `credential_problem` finds (spec.py); the scrubber redacts
the values of exactly those variables, plus the ones a caller names (an endpoint's or a deployment's key
variable), in bench and compare results, error messages, serve's output and SGLang's log (redact_log.py).

A server may echo the request's Authorization header (or the key) in an error body; that text ends up in
requests.jsonl, local.jsonl/reference.jsonl, summary.json, the reports and the terminal. The scrubber
replaces each secret value with a marker naming its variable (`***HF_TOKEN***`), so the output still
says which credential was involved without containing it."""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from typing import Any, Iterable, Mapping

# --- the name rule --------------------------------------------------------------------------------

# A variable name is a credential's when, upper-cased, it contains KEY, TOKEN, SECRET, PASSWORD or PASSWD
# anywhere, or its last `_`-separated word is AUTH. This is the union of the two rules it replaces (the
# spec refused names containing those words; the scrubber took names ending in _KEY, _TOKEN, _SECRET,
# _PASSWORD or _AUTH), so nothing either caught is let through. Substrings, not whole words: names glue
# words together (PGPASSWORD, GHTOKEN, APIKEY, AWS_SECRET_ACCESS_KEY). The price is a few settings read as
# credentials (KEYBOARD_LAYOUT, MONKEY, TOKENIZERS_PARALLELISM): the spec refuses them in serving.env
# (set them in the engine's environment instead), and redacting their values costs nothing, since values
# shorter than MIN_LEN ("true", "false", "1") are never redacted. AUTH only as the last word: as a
# substring it is also in AUTHOR and in settings such as NCCL_AUTH_MODE; such names (and CREDENTIAL,
# COOKIE, SESSION) are credentials only with a random-looking value (`credential_problem`).
_NAME_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD")
_NAME_LAST_WORDS = ("AUTH",)
NAME_RULE = "contains KEY, TOKEN, SECRET, PASSWORD or PASSWD, or ends in _AUTH"  # for messages
# Names that may hold a credential, judged by the value: long and random-looking means a key.
_WEAK_NAME_WORDS = ("AUTH", "CREDENTIAL", "COOKIE", "SESSION")

# Shorter values are never redacted: replacing "true", "1" or "none" everywhere would garble the output
# (a JSON line scrubbed whole would lose its booleans), and no real key is that short (OpenAI, Moonshot,
# Hugging Face and AWS keys are 20 characters and more).
MIN_LEN = 8


def is_secret_name(name: str) -> bool:
    """The name rule: does this environment variable's name say it holds a credential."""
    upper = name.upper()
    return any(word in upper for word in _NAME_WORDS) or upper.rsplit("_", 1)[-1] in _NAME_LAST_WORDS


# --- credential values ----------------------------------------------------------------------------

# Credential shapes: OpenAI/Moonshot-style `sk-` keys, Hugging Face `hf_` tokens, an HTTP `Bearer`
# credential, AWS access key ids (AKIA/ASIA + 16, https://docs.aws.amazon.com/IAM/latest/UserGuide/
# reference_identifiers.html#identifiers-unique-ids), GitHub tokens (ghp_/gho_/ghs_/github_pat_) and a PEM key.
_CREDENTIAL = re.compile(
    r"(?:^|[^A-Za-z0-9])(?:sk-[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{20,}|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"
    r"|(?i:\bbearer\s+\S{8,})|-----BEGIN [A-Z ]*PRIVATE KEY-----")


def _high_entropy(value: str) -> bool:
    """A long random-looking string (a key or token), not a setting: 20+ characters, no spaces, letters
    and digits mixed, at least 3.5 bits of Shannon entropy per character."""
    v = value.strip()
    if len(v) < 20 or any(c.isspace() for c in v):
        return False
    if not (any(c.isdigit() for c in v) and any(c.isalpha() for c in v)):
        return False
    counts = Counter(v)
    entropy = -sum(n / len(v) * math.log2(n / len(v)) for n in counts.values())
    return entropy >= 3.5


def credential_problem(value: str, name: str = "") -> str | None:
    """Why `value` looks like a credential (under the variable `name`, if any), or None."""
    if _CREDENTIAL.search(value):
        return "looks like a credential (an API key, token or Bearer header)"
    if any(word in name.upper() for word in _WEAK_NAME_WORDS) and _high_entropy(value):
        return "looks like a credential (a long random string under a credential-like name)"
    return None


def is_secret(name: str, value: str) -> bool:
    """Does the variable `name` hold a credential: its name says so, or its value looks like one."""
    return is_secret_name(name) or credential_problem(value, name) is not None


def is_secret_option(arg: str) -> bool:
    """--api-key, --api-key=..., --admin-api-key, --api_key, --admin-key, --hf-token, --token: the options
    that take a credential (vLLM and SGLang both take --api-key; SGLang also --admin-api-key,
    sgl-project/sglang python/sglang/srt/server_args.py; vLLM --hf-token). Options are not matched by the
    name rule: it would take --max-num-batched-tokens and --tokenizer for credentials."""
    if not arg.startswith("-"):
        return False
    name = arg.lstrip("-").split("=", 1)[0].lower().replace("_", "-")
    return name.endswith("api-key") or name in ("admin-key", "hf-token", "token")


# --- redaction ------------------------------------------------------------------------------------

def secret_values(names: Iterable[str | None] = (), env: Mapping[str, str] | None = None) -> dict[str, str]:
    """{value: variable name} for the named variables and every variable of `env` (default: this
    process's environment) that holds a credential (`is_secret`), values of MIN_LEN characters and more."""
    env = os.environ if env is None else env
    named = {n for n in names if n}
    found: dict[str, str] = {}
    for name in sorted(env):
        value = env[name]
        if value and len(value) >= MIN_LEN and (name in named or is_secret(name, value)):
            found.setdefault(value, name)
    return found


def forms(value: str) -> set[str]:
    """How a secret can read in text: raw, and escaped inside a Python repr or a JSON string (ASCII-only
    or not). Replace the longest first: an escaped form may contain another."""
    return {value, repr(value)[1:-1], json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


class Scrubber:
    """Replaces each secret value (in every form `forms` gives) with `marker` (`{name}`: the variable's
    name), in a string, an argv or a mapping. Built once, applied to every line written."""

    def __init__(self, names: Iterable[str | None] = (), env: Mapping[str, str] | None = None,
                 extra: Mapping[str, str] | None = None, marker: str = "***{name}***") -> None:
        """`names`: variables whose values are secrets whatever their names; `extra`: more {value: name}
        pairs, e.g. a key read earlier from another environment mapping."""
        pairs: dict[str, str] = {}
        found = {**{v: n for v, n in (extra or {}).items() if v and len(v) >= MIN_LEN},
                 **secret_values(names, env)}
        for value, name in found.items():
            for form in sorted(forms(value), key=len, reverse=True):
                pairs.setdefault(form, marker.format(name=name))
        # longest first, so a key that contains another key is replaced whole
        self._pairs = sorted(pairs.items(), key=lambda kv: -len(kv[0]))

    def __bool__(self) -> bool:
        """False when there is nothing to redact."""
        return bool(self._pairs)

    def __call__(self, value: Any) -> Any:
        return self.obj(value)

    def text(self, text: str) -> str:
        for value, marker in self._pairs:
            if value in text:
                text = text.replace(value, marker)
        return text

    def obj(self, value: Any) -> Any:
        """A copy of a string, an argv or a JSON-like value with every string redacted (mapping keys
        included; a tuple comes back as a list)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.obj(k) if isinstance(k, str) else k: self.obj(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.obj(v) for v in value]
        return value


def scrub(value: Any, names: Iterable[str | None] = (), env: Mapping[str, str] | None = None) -> Any:
    """`value` (a string, an argv, a mapping) with the value of every credential variable of `env`
    (default: this process's environment; see `is_secret`) and of the `names` given replaced by
    `***NAME***`."""
    return Scrubber(names, env).obj(value)
