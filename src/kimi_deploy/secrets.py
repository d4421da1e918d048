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
says which credential was involved without containing it: raw, escaped, in any case, spaced, in part,
percent- or base64-encoded (the forms a hostile server reflects; "the forms a reflected key takes"
below)."""

from __future__ import annotations

import base64
import bisect
import heapq
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


# --- the forms a reflected key takes --------------------------------------------------------------
#
# A server may reflect a key otherwise than raw, repr- or JSON-escaped: in another letter case, in part
# (its first characters), spaced (characters separated by spaces, dashes or zero-width characters),
# percent-encoded, or base64-encoded, alone or inside an Authorization value ("Bearer KEY", "user:KEY",
# ":KEY"). The scrubber finds all of these in two steps, each linear in the text:
#
# 1. Detection, on the text's skeleton (`_skeleton`): ASCII only, lower case, separators and their
#    escapes dropped, then every character but letters and digits dropped. Each form above leaves in the
#    skeleton a stretch of its target's skeleton (the key's letters and digits lower-cased; the hex digits
#    of its percent-encoding; a base64 core), and a few short windows of those, chosen so that every run
#    to be masked contains one (`_cover`), are looked for with bytes.find. The skeleton is built per block
#    of the text, so a hit names its block.
# 2. Confirmation, in that block of the original text only: a regex of the window's characters (each in
#    either case, escaped at any depth, percent-encoded; separators allowed between them) finds the exact
#    place, and the match is extended along the key, one character at a time, as far as the text follows
#    it. The run found is masked when it is the whole target, or a partial run the rule below admits.
#
# Partial runs. In an n-character key, a run of at least partial_len(n) = max(MIN_LEN, ceil(n / 5))
# consecutive characters is masked when it mixes two of lower-case letters, upper-case letters and digits
# and is at least half ASCII letters and digits (`_partial_ok`). The fifth: a run left unmasked is shorter
# than a fifth of a key of 40 characters or more, so four fifths of it stay unknown (32 of 40 characters,
# ~190 bits of base62); in a shorter key at most 7 characters (13 of 20 stay unknown, ~77 bits). The floor:
# a given run of 8 characters, case-folded (36 symbols), turns up by chance once in 36**8 (2.8e12)
# positions of random letters and digits, so the 33 runs of 8 of a 40-character key meet such text about
# once in 85 GB (a longer key's runs are longer, rarer still). The mix: words, paths and option names are
# runs of one class ("hardening", "/var/run/", the "sk-proj-" of every OpenAI project key) and are left
# alone, while a run of 8 random base62 characters is of one class with probability
# 2 * (26/62)**8 + (10/62)**8, about 0.002.
#
# Base64: the encoding of a substring depends on its offset modulo 3 in the encoded bytes, so each key
# has three cores (the 4-character groups made of its bytes only, after 0, 1 or 2 leading bytes); a core
# is found inside any longer blob, standard or URL-safe alphabet, and the match is widened over the
# neighbouring groups that hold the key's first and last bytes (up to 4 characters each side, then "=").

# Separators a spaced form may put between two characters of a key (up to three): space, dash, no-break
# space, soft hyphen, the zero-width characters, and their \u / \x escapes at any depth.
_SEP = ("(?:[ \\-\u00a0\u00ad\u200b-\u200d\u2060\ufeff]"
        r"|\\+(?i:u(?:00a0|00ad|200[b-d]|2060|feff)|x(?:a0|ad))){0,3}")
_SEP_ESCAPE = re.compile(rb"\\(?:u(?:00a0|00ad|200[b-d]|2060|feff)|x(?:a0|ad))")  # on lower-cased bytes
_NOT_ALNUM = bytes(c for c in range(128) if not chr(c).isalnum())
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")  # RFC 3986
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
_BLOCK = 4096  # characters of text per skeleton block
_UNIT_SPAN = 64  # the most text one character of a key, with its separators, is taken to occupy


def partial_len(n: int) -> int:
    """The shortest run of an n-character key that is masked on its own (the rule above)."""
    return max(MIN_LEN, -(-n // 5))


def _partial_ok(run: str) -> bool:
    """Does this run of a key mix two of lower case, upper case and digits, and is it at least half ASCII
    letters and digits (the rule above)."""
    alnum = [c for c in run if c.isascii() and c.isalnum()]
    classes = {"l" if c.islower() else "u" if c.isupper() else "d" for c in alnum}
    return len(classes) >= 2 and 2 * len(alnum) >= len(run)


def _skeleton(text: str) -> bytes:
    """ASCII letters and digits of `text`, lower-cased, with separator escapes removed first."""
    b = text.encode("ascii", "ignore").lower()
    if b"\\" in b:
        b = _SEP_ESCAPE.sub(b"", b)
    return b.translate(None, _NOT_ALNUM)


def _escaped(form: str) -> str:
    """A regex for an escape sequence (`\\u00e4`, `\\ud83d\\ude00`) at any escaping depth, hex in any case."""
    return "".join(r"\\+(?i:" + re.escape(part) + ")" for part in form.split("\\")[1:])


def _char_unit(c: str) -> tuple[str, str | None]:
    """(regex, skeleton) for one character of a key: the regex matches it in either case, escaped by repr
    or JSON at any depth, or percent-encoded; the skeleton is what every one of those leaves in
    `_skeleton` ("" for nothing, None when an escape may leave letters or digits of its own)."""
    if c.isascii() and c.isalnum():
        return (f"[{c.lower()}{c.upper()}]" if c.isalpha() else c), c.lower()
    if c == "\\":
        alts = [r"\\+"]
    elif c.isascii() and c.isprintable():  # punctuation: repr and JSON put a backslash before some
        alts = [r"\\*" + re.escape(c)]
    else:
        alts = [re.escape(c) if c.lower() == c.upper() else f"(?i:{re.escape(c)})"]
        for v in dict.fromkeys(x for x in (c, c.lower(), c.upper()) if len(x) == 1):  # each case's escapes
            alts += [_escaped(f) for f in (repr(v)[1:-1], json.dumps(v)[1:-1]) if f.startswith("\\")]
    if c not in _UNRESERVED:
        alts.append("".join(f"%(?i:{b:02x})" for b in c.encode("utf-8", "surrogatepass")))
    return "(?:" + "|".join(dict.fromkeys(alts)) + ")", ("" if c in _UNRESERVED else None)


def _cover(skel: list[str | None], intervals: list[tuple[int, int]], width: int) -> tuple[list, int]:
    """Windows (unit ranges [a, b) whose skeleton is `width` letters and digits with no None between)
    such that each interval [i, j) of units contains one: greedy over the intervals by right end, which
    gives the fewest. Returns (windows as (a, b, skeleton bytes), number of intervals none fits)."""
    cands = []
    for a, s in enumerate(skel):
        if not s:
            continue
        got, b = "", a
        while b < len(skel) and len(got) < width and skel[b] is not None:
            got += skel[b]
            b += 1
        if len(got) == width:
            cands.append((a, b, got.encode()))
    chosen: list[tuple[int, int, bytes]] = []
    missed, k = 0, -1
    for i, j in sorted(intervals, key=lambda iv: (iv[1], iv[0])):
        if chosen and chosen[-1][0] >= i:
            continue
        while k + 1 < len(cands) and cands[k + 1][1] <= j:
            k += 1
        if k >= 0 and cands[k][0] >= i and cands[k][1] <= j:
            chosen.append(cands[k])
        else:
            missed += 1
    return chosen, missed


class _Target:
    """One spelling family of one secret (the text, its percent-encoding, one base64 core) as a list of
    units: the regex of each, the windows detection looks for, and how a confirmed run is judged."""

    def __init__(self, marker: str, units: list[tuple[str, str | None]], sep: str, key: str | None,
                 edge: bool = False) -> None:
        """`key`: the secret, when runs of it are masked too (partial_len, _partial_ok); `edge`: widen a
        match over neighbouring base64 characters."""
        self.marker, self.sep, self.key, self.edge = marker, sep, key, edge
        self.atoms = [u[0] for u in units]
        self.n = len(units)
        skel = [u[1] for u in units]
        intervals = [(0, self.n)]
        if key is not None:
            t = partial_len(len(key))
            intervals += [(i, i + t) for i in range(len(key) - t + 1) if _partial_ok(key[i:i + t])]
        # Windows of 4 keep the count low (every window is one pass over the skeleton) while a chance
        # match stays rare (36**4 positions); 3 only where 4 leaves a run uncovered. The encoded targets
        # are masked whole only: one window of 8.
        best: tuple[list, int] | None = None
        for width in ((4, 3) if key is not None else (8, 6, 4, 3)):
            windows, missed = _cover(skel, intervals, width)
            if best is None or missed < best[1]:
                best = (windows, missed)
        self.windows: list[tuple[int, int, bytes]] = best[0] if best else []
        self.window_rx = [re.compile(self._chain(a, b)) for a, b, _ in self.windows]
        self._rx: dict[tuple[str, int], re.Pattern[str]] = {}

    def _chain(self, a: int, b: int) -> str:
        """The regex of units [a, b), separators allowed between them."""
        return self.sep.join(self.atoms[a:b])

    def _compiled(self, kind: str, u: int) -> re.Pattern[str]:
        """The extension regexes, compiled when first needed (most windows never meet a match)."""
        rx = self._rx.get((kind, u))
        if rx is None:
            sep = self.sep
            pattern = {"right": sep + sep.join(self.atoms[u:]),  # the rest of the target from unit u
                       "step": sep + self.atoms[u],
                       "left": self._chain(0, u) + sep + r"\Z",  # all of it before unit u
                       "back": self.atoms[u] + sep + r"\Z"}[kind]
            rx = self._rx[(kind, u)] = re.compile(pattern)
        return rx

    def spans(self, text: str, hits: dict[int, dict[int, list[int]]], blocks: list[tuple[int, int]],
              offsets: list[int]) -> list[tuple]:
        """(start, end, rank, marker) of every run confirmed around the windows detection found (`hits`:
        block -> window -> where in the skeleton); rank 0 for the whole target, 1 for a part. A hit
        inside the skeleton of a run already confirmed needs no search of its own."""
        out: list[tuple] = []
        done: list[tuple[int, int]] = []  # the runs confirmed, in text order
        done_skel: list[tuple[int, int]] = []  # the same, as skeleton positions
        starts = [a for a, _ in blocks]
        for bi in sorted(hits):
            start, end = blocks[bi]
            for wi, found in sorted(hits[bi].items()):
                a, b, window = self.windows[wi]
                if all(_inside(done_skel, q, q + len(window)) for q in found):
                    continue
                stop = min(len(text), end + _UNIT_SPAN * (b - a))
                queue = [(m.start(), m.end()) for m in self.window_rx[wi].finditer(text, start, stop)]
                heapq.heapify(queue)
                while queue:
                    s, e = heapq.heappop(queue)
                    if _inside(done, s, e):
                        continue
                    run = self._extend(text, s, e, a, b)
                    if run is not None:
                        out.append(run)
                        bisect.insort(done, run[:2])
                        k = bisect.bisect_right(starts, run[0]) - 1
                        q = offsets[k] + len(_skeleton(text[starts[k]:run[0]]))
                        bisect.insort(done_skel, (q, q + len(_skeleton(text[run[0]:run[1]]))))
                    elif (m := self.window_rx[wi].search(text, s + 1, stop)) is not None and m.start() < e:
                        # an overlapping match finditer stepped over: in "0000000" one alignment is the key's
                        heapq.heappush(queue, (m.start(), m.end()))
        return out

    def _extend(self, text: str, s: int, e: int, a: int, b: int) -> tuple | None:
        """The run around a window match [s, e) of units [a, b): extended right, then left, as far as the
        text follows the target; (start, end, rank, marker) when the rule masks it, else None."""
        j, end = b, e
        if j < self.n:
            m = self._compiled("right", j).match(text, end)
            if m:
                j, end = self.n, m.end()
            while j < self.n and (m := self._compiled("step", j).match(text, end)):
                j, end = j + 1, m.end()
        i, start = a, s
        if i > 0:
            m = self._compiled("left", i).search(text, max(0, start - _UNIT_SPAN * i), start)
            if m:
                i, start = 0, m.start()
            while i > 0 and (m := self._compiled("back", i - 1).search(text, max(0, start - _UNIT_SPAN), start)):
                i, start = i - 1, m.start()
        if i == 0 and j == self.n:
            rank = 0
        elif self.key is not None and j - i >= partial_len(len(self.key)) and _partial_ok(self.key[i:j]):
            rank = 1
        else:
            return None
        if self.edge:  # the base64 groups that hold the key's first and last bytes
            for _ in range(4):
                if start > 0 and text[start - 1] in _B64_CHARS:
                    start -= 1
            for _ in range(4):
                if end < len(text) and text[end] in _B64_CHARS:
                    end += 1
            while end < len(text) and text[end] == "=":
                end += 1
        return start, end, rank, self.marker


def _inside(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Is [start, end) inside one of `spans` (sorted by start)."""
    k = bisect.bisect_right(spans, (start, float("inf"))) - 1
    return k >= 0 and spans[k][1] >= end


def _base64_cores(value: str) -> list[str]:
    """The three base64 cores of `value` (see above): for 0, 1 and 2 bytes before it, the 4-character
    groups that encode its bytes only."""
    raw = value.encode("utf-8", "surrogatepass")
    cores = []
    for lead in range(3):
        enc = base64.b64encode(b"\0" * lead + raw).decode()
        first = 0 if lead == 0 else 1  # the group holding the leading bytes mixes them with the key's
        last = (lead + len(raw)) // 3  # groups made of the key's bytes only end before this one
        cores.append(enc[4 * first:4 * last])
    return cores


def _targets(value: str, marker: str) -> list[_Target]:
    """Every spelling family of one secret: its text (any case, spaced, escaped, in part), its
    percent-encoding (every byte), its three base64 cores (either alphabet)."""
    text = _Target(marker, [_char_unit(c) for c in value], _SEP, value)
    pct = _Target(marker, [(f"%(?i:{b:02x})", f"{b:02x}") for b in value.encode("utf-8", "surrogatepass")], "",
                  None)
    b64 = {"+": r"(?:\+|-|%2[bB])", "/": r"(?:\\*/|_|%2[fF])"}
    cores = [_Target(marker, [(b64.get(c, c), "" if c in "+/" else c.lower()) for c in core], "", None, edge=True)
             for core in _base64_cores(value) if len(core) >= MIN_LEN]
    return [t for t in (text, pct, *cores) if t.windows]


class Scrubber:
    """Replaces each secret value, in every form a server may reflect it in (above), with `marker`
    (`{name}`: the variable's name), in a string, an argv or a mapping. Built once, applied to every line
    written."""

    def __init__(self, names: Iterable[str | None] = (), env: Mapping[str, str] | None = None,
                 extra: Mapping[str, str] | None = None, marker: str = "***{name}***") -> None:
        """`names`: variables whose values are secrets whatever their names; `extra`: more {value: name}
        pairs, e.g. a key read earlier from another environment mapping."""
        found = {**{v: n for v, n in (extra or {}).items() if v and len(v) >= MIN_LEN},
                 **secret_values(names, env)}
        self._targets: list[_Target] = []
        pairs: dict[str, str] = {}
        for value, name in found.items():
            targets = _targets(value, marker.format(name=name))
            self._targets += targets
            if not any(t.key == value for t in targets):  # no window fits its text: the literal forms
                for form in forms(value):
                    pairs.setdefault(form, marker.format(name=name))
        # longest first, so a key that contains another key is replaced whole
        self._pairs = sorted(pairs.items(), key=lambda kv: -len(kv[0]))

    def __bool__(self) -> bool:
        """False when there is nothing to redact."""
        return bool(self._targets or self._pairs)

    def __call__(self, value: Any) -> Any:
        return self.obj(value)

    def text(self, text: str) -> str:
        """`text` with every form of every secret replaced by its marker."""
        if self._targets and len(text) >= MIN_LEN:
            text = self._mask(text)
        for value, marker in self._pairs:
            if value in text:
                text = text.replace(value, marker)
        return text

    def _mask(self, text: str) -> str:
        """Detection on the skeleton, confirmation in the text, then each run (overlapping runs merged,
        the whole target's marker before a part's) replaced by its marker."""
        blocks = _blocks(text)
        parts = [_skeleton(text[a:b]) for a, b in blocks]
        offsets, total = [], 0
        for p in parts:
            offsets.append(total)
            total += len(p)
        skel = parts[0] if len(parts) == 1 else b"".join(parts)
        spans: list[tuple] = []
        for target in self._targets:
            hits: dict[int, dict[int, list[int]]] = {}
            for wi, (_, _, window) in enumerate(target.windows):
                q = skel.find(window)
                while q != -1:
                    hits.setdefault(bisect.bisect_right(offsets, q) - 1, {}).setdefault(wi, []).append(q)
                    q = skel.find(window, q + 1)
            if hits:
                spans += target.spans(text, hits, blocks, offsets)
        if not spans:
            return text
        out: list[str] = []
        pos = 0
        cur: list | None = None
        for start, end, _, marker in sorted(spans, key=lambda s: (s[0], -s[1], s[2])):
            back = start
            while back > 0 and text[back - 1] == "\\":
                back -= 1
            if (start - back) % 2:  # an odd backslash before: it escapes the first character masked
                start -= 1
            if cur is not None and start < cur[1]:
                cur[1] = max(cur[1], end)
                continue
            if cur is not None:
                out += [text[pos:cur[0]], cur[2]]
                pos = cur[1]
            cur = [max(start, pos), end, marker]
        assert cur is not None
        out += [text[pos:cur[0]], cur[2], text[cur[1]:]]
        return "".join(out)

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


def _blocks(text: str) -> list[tuple[int, int]]:
    """[start, end) blocks of about _BLOCK characters covering `text`, no boundary inside a \\u escape."""
    n = len(text)
    out, a = [], 0
    while a < n:
        b = min(n, a + _BLOCK)
        while b < n and (k := text.rfind("\\", b - 5, b)) != -1:
            b = min(n, k + 6)
        out.append((a, b))
        a = b
    return out or [(0, 0)]


def scrub(value: Any, names: Iterable[str | None] = (), env: Mapping[str, str] | None = None) -> Any:
    """`value` (a string, an argv, a mapping) with the value of every credential variable of `env`
    (default: this process's environment; see `is_secret`) and of the `names` given replaced by
    `***NAME***`."""
    return Scrubber(names, env).obj(value)
