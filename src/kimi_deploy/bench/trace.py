"""The `trace` workload: replay a Mooncake-format request trace (Kimi's own serving traffic).

Format (FAST'25 Mooncake traces, github.com/kvcache-ai/Mooncake `FAST25-release/traces/`, Apache-2.0;
described in that repository's FAST25-release/README.md and the paper's appendix,
FAST25-release/Mooncake-FAST25.pdf): one JSON object per line with
`timestamp` (ms from the start of the trace), `input_length` and `output_length` (tokens) and `hash_ids`
(one id per 512-token block of the prompt; equal ids are identical blocks, so prefix sharing is encoded).

Replay: request i is sent at (timestamp_i - timestamp_0) x time_scale ms after the run starts (open loop;
rows with equal timestamps go out together), asks for exactly output_length tokens (max_tokens, min_tokens,
ignore_eos) and carries a prompt whose chat-templated length is input_length tokens by the server's own
tokenizer, built from blocks: every hash id maps to one fixed 512-token block of text, so two requests
that share leading hash ids share that exact text prefix and the engine's prefix cache sees what Kimi's
saw.

How the lengths are made exact without trial per prompt: the block text is a sequence of "units" (a
space and a short word) that each tokenize to exactly one token. Byte-level BPE tokenizers (Kimi's tiktoken
pattern and GPT-2's) split text into pre-tokens at every " word" before merging, so the token count of a
sequence of units is the number of units, and blocks concatenate without merging across their
boundaries. The units are found once per run with the server's /tokenize (one call for the whole candidate
list when all are single tokens, else one per candidate); two more calls measure the chat template's
overhead (the tokens the template adds around the user message, with the same thinking switch as the
requests), which is taken off the end of the last block, so usage.prompt_tokens equals input_length. Two
more calls check whole templated prompts (the first row's and the longest). Without /tokenize the lengths
are approximate (words, not tokens) and the results say so."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..jsonl import read_jsonl

if TYPE_CHECKING:
    from .loadgen import JobSource
    from .workloads import Tokenizer

# Tokens per hash id: the FAST'25 paper's appendix (FAST25-release/Mooncake-FAST25.pdf); in its
# synthetic_trace.jsonl every one of the 3,993 rows has len(hash_ids) == ceil(input_length / 512).
BLOCK_TOKENS = 512

# Bounds of a row: lengths beyond any context window (Kimi K2's is 256k tokens, K3's 1M), and a replay
# longer than a week, are mistakes; building such a prompt or waiting for such a send would only stall.
MAX_TOKENS = 4 * 2**20
MAX_SCHEDULE_S = 7 * 86400.0

# Candidate units: short, frequent English words and single letters, each with a leading space. Kimi's
# 160k-token vocabulary has all of them as single tokens; a small BPE (tiny-k2's) has a few.
_CANDIDATES = tuple(" " + w for w in (
    "the of and to in is it that for on with as at by from this be or are was an not but all can has its one "
    "we our out new use more time any way each may set run how had his her two see who get made make part "
    "long near a b c d e f g h i j k l m n o p q r s t u v w x y z").split())
_MIN_UNITS = 2  # fewer distinct one-token units could not give distinct blocks


@dataclass(frozen=True, slots=True)
class TraceRow:
    line: int
    timestamp: float  # ms
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def _int_field(obj: dict[str, Any], key: str, low: int, where: str, path: Path) -> int:
    if key not in obj:
        raise BadInput(f"{where}: missing field {key!r} (a Mooncake trace row has timestamp, input_length, "
                       "output_length, hash_ids)", str(path))
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadInput(f"{where}: {key} must be an integer, got {v!r}", str(path))
    if v < low:
        raise BadInput(f"{where}: {key} must be >= {low}, got {v}", str(path))
    return v


def read_trace(path: Path, limit: int | None = None, *, time_scale: float = 1.0,
               duration_s: float | None = None) -> list[TraceRow]:
    """The first `limit` rows (all when None; with a --duration, only the rows due before it, read no
    further), validated: bad input naming the file and line for a line that is not a JSON object, a
    missing, non-integer or out-of-range field (lengths up to MAX_TOKENS, a schedule up to
    MAX_SCHEDULE_S after time-scaling), a hash_ids list whose length is not ceil(input_length / 512), or a
    timestamp earlier than the row before it (Mooncake's traces are sorted by timestamp; an unsorted file
    is more likely a mistake than a schedule, so it is refused rather than reordered)."""
    if not path.is_file():
        raise BadInput("trace file not found", str(path))
    rows: list[TraceRow] = []
    last = None
    try:
        for ln, obj in read_jsonl(path):
            if limit is not None and len(rows) >= limit:
                break
            where = f"line {ln}"
            if not isinstance(obj, dict):
                raise BadInput(f"{where}: each line must be a JSON object", str(path))
            ts = obj.get("timestamp")
            if "timestamp" not in obj:
                raise BadInput(f"{where}: missing field 'timestamp' (a Mooncake trace row has timestamp, "
                               "input_length, output_length, hash_ids)", str(path))
            if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
                raise BadInput(f"{where}: timestamp must be a finite number of milliseconds >= 0, got {ts!r}",
                               str(path))
            if rows:
                offset_s = (ts - rows[0].timestamp) * time_scale / 1000
                if duration_s is not None and offset_s >= duration_s:
                    break  # due after the --duration deadline: never sent
                if offset_s > MAX_SCHEDULE_S:
                    raise BadInput(f"{where}: timestamp {ts} is {offset_s / 86400:.3g} days after the first row at "
                                   f"--time-scale {time_scale:g}; a replay spans at most {MAX_SCHEDULE_S // 86400:.0f} "
                                   "days (a smaller --time-scale, a --duration, or fewer rows)", str(path))
            n_in = _int_field(obj, "input_length", 1, where, path)
            n_out = _int_field(obj, "output_length", 1, where, path)
            for key, value in (("input_length", n_in), ("output_length", n_out)):
                if value > MAX_TOKENS:
                    raise BadInput(f"{where}: {key} {value} is more than {MAX_TOKENS:,} tokens, beyond any model's "
                                   "context", str(path))
            ids = obj.get("hash_ids")
            if "hash_ids" not in obj:
                raise BadInput(f"{where}: missing field 'hash_ids'", str(path))
            if not isinstance(ids, list) or any(isinstance(h, bool) or not isinstance(h, int) or h < 0 for h in ids):
                raise BadInput(f"{where}: hash_ids must be a list of integers >= 0", str(path))
            blocks = -(-n_in // BLOCK_TOKENS)
            if len(ids) != blocks:
                raise BadInput(f"{where}: {len(ids)} hash_ids for input_length {n_in}; a Mooncake row has one per "
                               f"{BLOCK_TOKENS}-token block, ceil({n_in}/{BLOCK_TOKENS}) = {blocks}", str(path))
            if last is not None and ts < last:
                raise BadInput(f"{where}: timestamp {ts} is earlier than the row before ({last}); a trace must be "
                               "sorted by timestamp", str(path))
            last = ts
            rows.append(TraceRow(line=ln, timestamp=float(ts), input_length=n_in, output_length=n_out,
                                 hash_ids=tuple(ids)))
    except UnicodeDecodeError:
        raise BadInput("not a text file", str(path)) from None
    if not rows:
        raise BadInput("the trace has no row (an empty file?)", str(path))
    return rows


def ideal_hit_rate(rows: list[TraceRow]) -> dict[str, Any]:
    """The prefix-cache hit rate an engine with an unbounded cache would reach on these rows, from the hash
    ids: a block hits when the same chain of ids up to and including it was in an earlier request (prefix
    caching reuses leading blocks only, so a block after a miss is a miss). In tokens (a last block
    counts its own length) and in blocks. Linear: each (prefix node, id) pair is one dict entry."""
    nodes: dict[tuple[int, int], int] = {}
    hit_tokens = tokens = hit_blocks = blocks = 0
    for r in rows:
        parent, leading = -1, True
        for j, h in enumerate(r.hash_ids):
            n = min(BLOCK_TOKENS, r.input_length - BLOCK_TOKENS * j)
            key = (parent, h)
            node = nodes.get(key)
            if node is None:
                node = nodes[key] = len(nodes)
                leading = False
            elif leading:
                hit_tokens += n
                hit_blocks += 1
            parent = node
            tokens += n
            blocks += 1
    return {"ideal_token_hit_rate": round(hit_tokens / tokens, 4) if tokens else None,
            "ideal_block_hit_rate": round(hit_blocks / blocks, 4) if blocks else None,
            "prompt_tokens": tokens, "blocks": blocks}


@dataclass(frozen=True, kw_only=True)
class Blocks:
    """hash id -> its fixed block: BLOCK_TOKENS units drawn by a generator seeded with (seed, id)."""

    units: tuple[str, ...]
    seed: int = 0

    def block(self, h: int) -> tuple[str, ...]:
        return _block(self.units, self.seed, h)

    def content(self, hash_ids: tuple[int, ...], n_units: int) -> str:
        """The first n_units units of the blocks of hash_ids, as one string (linear in its length)."""
        parts: list[str] = []
        for j, h in enumerate(hash_ids):
            left = n_units - j * BLOCK_TOKENS
            if left <= 0:
                break
            b = self.block(h)
            parts.append("".join(b if left >= BLOCK_TOKENS else b[:left]))
        return "".join(parts)


@lru_cache(maxsize=8192)  # per process: a trace reuses its shared blocks (512 references each: ~32 MB at the cap)
def _block(units: tuple[str, ...], seed: int, h: int) -> tuple[str, ...]:
    rng = random.Random(f"{seed}:{h}")
    return tuple(rng.choices(units, k=BLOCK_TOKENS))


def calibrate(tok: Tokenizer, extra: dict[str, Any], seed: int) -> tuple[Blocks, int, dict[str, Any]]:
    """Find one-token units and the chat template's overhead with the server's /tokenize: (blocks,
    overhead tokens, facts). Facts say `lengths: exact` only when every check passed."""
    kwargs = extra.get("chat_template_kwargs")
    probe = tok.count(text="".join(_CANDIDATES))
    if not tok.available:
        return Blocks(units=_CANDIDATES, seed=seed), 0, {
            "lengths": "approximate", "tokenizer": "whitespace",
            "note": "the server has no /tokenize: prompts are input_length words (not tokens) and the chat "
                    "template's overhead is not taken off; compare usage.prompt_tokens with input_length"}
    if probe == len(_CANDIDATES):  # every candidate is at least one token, so each is exactly one
        units = _CANDIDATES
    else:
        units = tuple(u for u in _CANDIDATES if tok.count(text=u) == 1)
    if len(units) < _MIN_UNITS:
        return Blocks(units=_CANDIDATES, seed=seed), 0, {
            "lengths": "approximate", "tokenizer": "server /tokenize",
            "note": f"only {len(units)} of the candidate words is a single token with this tokenizer: prompts "
                    "are input_length words, not tokens"}
    blocks = Blocks(units=units, seed=seed)
    one = blocks.content((0,), BLOCK_TOKENS)
    two = blocks.content((0, 1), 2 * BLOCK_TOKENS)
    plain = tok.count(text=two)
    over1 = tok.count(messages=[{"role": "user", "content": one}], chat_template_kwargs=kwargs) - BLOCK_TOKENS
    over2 = tok.count(messages=[{"role": "user", "content": two}], chat_template_kwargs=kwargs) - 2 * BLOCK_TOKENS
    facts: dict[str, Any] = {"tokenizer": "server /tokenize", "units": len(units), "template_overhead": over1}
    if plain != 2 * BLOCK_TOKENS or over1 != over2:
        facts.update(lengths="approximate",
                     note=f"blocks do not add up with this tokenizer (two blocks: {plain} tokens, template "
                          f"overhead {over1} vs {over2}): lengths are approximate")
        return blocks, max(over1, 0), facts
    facts["lengths"] = "exact"
    return blocks, over1, facts


def body(row: TraceRow, blocks: Blocks, overhead: int) -> dict[str, Any]:
    """The chat request of one row: one user message whose templated length is input_length tokens (when
    input_length is at least the template's own overhead), exactly output_length tokens asked for."""
    content = blocks.content(row.hash_ids, max(row.input_length - overhead, 0))
    return {"messages": [{"role": "user", "content": content}], "max_tokens": row.output_length,
            "min_tokens": row.output_length, "ignore_eos": True}


def jobs(path: Path, *, limit: int | None, warmup: int, model: str, extra: dict[str, Any], time_scale: float,
         seed: int, tok: Tokenizer, duration_s: float | None = None) -> tuple[JobSource, dict[str, Any]]:
    """The trace as a lazy job source with its absolute send times (seconds after the start; the first
    row goes at 0), and facts for summary.json. A prompt is built when its row is due, in the worker."""
    from .loadgen import JobSource, RequestInput

    rows = read_trace(path, limit, time_scale=time_scale, duration_s=duration_s)
    blocks, overhead, facts = calibrate(tok, extra, seed)
    exact = facts["lengths"] == "exact"
    if exact:
        # Whole templated prompts through the server's tokenizer, the proof that the parts add up: the first
        # row, and the longest (a tokenizer may encode very long text in pieces, which could merge
        # differently at a piece boundary).
        first = next((r for r in rows if r.input_length > overhead), None)
        longest = max(rows, key=lambda r: r.input_length)
        facts["checked"] = []
        for row in dict.fromkeys(r for r in (first, longest) if r is not None and r.input_length > overhead):
            got = tok.count(messages=body(row, blocks, overhead)["messages"],
                            chat_template_kwargs=extra.get("chat_template_kwargs"))
            facts["checked"].append({"line": row.line, "input_length": row.input_length, "prompt_tokens": got})
            if got != row.input_length and exact:
                exact = False
                facts.update(lengths="approximate", note=f"line {row.line}: the templated prompt is {got} tokens, "
                                                         f"not {row.input_length}: lengths are approximate")
    short = sum(1 for r in rows if r.input_length <= overhead)
    t0 = rows[0].timestamp
    at = [(r.timestamp - t0) * time_scale / 1000.0 for r in rows]
    facts.update({"file": str(path), "rows": len(rows), "time_scale": time_scale, "first_timestamp_ms": t0,
                  "schedule_s": round(at[-1], 3), "block_tokens": BLOCK_TOKENS,
                  "rows_shorter_than_template": short, **ideal_hit_rate(rows)})
    if short and exact:
        facts["note"] = (f"{short} row(s) have input_length <= the chat template's {overhead} tokens: their "
                         "prompt is the template alone, longer than input_length")

    def make(i: int) -> RequestInput:
        return RequestInput(index=i, body={"model": model, **body(rows[i], blocks, overhead), **extra},
                            warmup=i < warmup)
    return JobSource(total=len(rows), make=make, at=at), facts
