"""Starting one shard of a sharded run together with the others: the run's identity (what every shard
of one run shares), the agreed start (a given wall-clock time, or a barrier in a directory every shard
can write), and the shard's clock as the merge needs it.

The barrier: each shard writes `ready-I-of-N.json` (its run's identity) into the directory and waits
until all N are there; the start is the newest ready file's modification time plus a margin, a time
every shard reads alike from the same files. The file times come from the directory's own clock (the
file server's, on NFS or any shared volume), so each shard also learns its clock's offset from that
common clock: the file's time minus the midpoint of the shard's clock before and after writing it, give
or take half that interval. `bench merge` puts every shard's timestamps on the common clock with these
offsets and flags a skew between shards."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInput, OperationFailed

# Seconds between the last ready file and the start: every shard polls the directory far more often.
MARGIN_S = 3.0
POLL_S = 0.1
MAX_AHEAD_S = 86_400.0  # a --start-at further ahead is a typo, not a plan
# Configuration fields that may differ between the shards of one run: where each writes, how it starts,
# how many worker processes its machine runs.
LOCAL_FIELDS = ("output", "overwrite", "shard", "start_at", "barrier", "barrier_timeout_s", "workers")


def run_identity(facts: dict[str, Any]) -> str:
    """A digest of the configuration every shard of one run shares (summary.json's `config`, less
    LOCAL_FIELDS, with the shard count)."""
    shared = {k: v for k, v in facts.items() if k not in LOCAL_FIELDS}
    shared["shards"] = (facts.get("shard") or (0, 1))[1]
    return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    """When this shard starts and how its clock relates to the others'."""

    at: float  # the start on this machine's wall clock (seconds since the epoch)
    common_at: float  # the same moment on the common clock (the barrier directory's, else this machine's)
    offset_s: float | None  # common clock - this clock; None: not measured (--start-at trusts NTP)
    uncertainty_s: float | None  # how far off offset_s may be
    source: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def given(start_at: float) -> Start:
    """A --start-at time: bad input when it has passed or is more than a day ahead."""
    now = time.time()
    if start_at < now - 1.0:
        raise BadInput(f"{start_at:.3f} passed {now - start_at:.1f} s ago (this machine's clock)", "--start-at")
    if start_at > now + MAX_AHEAD_S:
        raise BadInput(f"{start_at:.3f} is {(start_at - now) / 3600:.1f} h ahead; at most {MAX_AHEAD_S / 3600:.0f} h",
                       "--start-at")
    return Start(at=start_at, common_at=start_at, offset_s=None, uncertainty_s=None,
                 source="--start-at on each machine's own wall clock (offsets not measured: the clocks are "
                        "trusted to agree, e.g. through NTP)")


def _ready_name(index: int, count: int) -> str:
    return f"ready-{index}-of-{count}.json"


def barrier(directory: Path, *, shard: tuple[int, int], identity: str, timeout_s: float,
            log: Callable[[str], None] = lambda _msg: None) -> Start:
    """Write this shard's ready file into `directory` and wait (at most timeout_s) for the run's other
    shards; see the module docstring. Bad input naming --barrier for a directory that cannot be used or
    holds another run's files; OperationFailed when the others do not come in time."""
    index, count = shard
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create {directory}: {exc.strerror or exc}", "--barrier") from None
    mine = directory / _ready_name(index, count)
    if mine.exists():
        raise BadInput(f"{mine} exists: this directory is an earlier run's barrier; give every run its own "
                       "--barrier directory", "--barrier")
    tmp = directory / f".{mine.name}.{os.getpid()}.tmp"
    before = time.time()
    try:  # from the first byte written: whatever ends this (SIGTERM included) takes the ready file back
        try:
            with tmp.open("w") as fh:
                json.dump({"run": identity, "shard": index, "of": count}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            after = time.time()
            os.replace(tmp, mine)  # readers see a whole file or none
        except OSError as exc:
            raise BadInput(f"cannot write {mine}: {exc.strerror or exc}", "--barrier") from None
        written = mine.stat().st_mtime  # set by the write, on the directory's clock
        offset = written - (before + after) / 2
        uncertainty = (after - before) / 2
        log(f"shard {index}/{count}: ready; waiting for {count - 1} other shard(s) in {directory} "
            f"(at most {timeout_s:g} s)")
        deadline = time.monotonic() + timeout_s
        while True:
            times = _ready_times(directory, count, identity, oldest=time.time() - timeout_s - MARGIN_S)
            if len(times) == count:
                break
            if time.monotonic() >= deadline:
                missing = sorted(set(range(count)) - set(times))
                raise OperationFailed(f"{len(times)} of {count} shards were ready in {directory} after {timeout_s:g} s "
                                      f"(--barrier-timeout); missing: {', '.join(map(str, missing[:20]))}")
            time.sleep(POLL_S)
    except BaseException:
        # a shard that gives up (timeout, bad input, Ctrl-C, SIGTERM) takes its ready file back: left behind,
        # it would let a later shard of the run start without it
        tmp.unlink(missing_ok=True)
        mine.unlink(missing_ok=True)
        raise
    common = max(times.values()) + MARGIN_S
    at = common - offset
    if at < time.time() - 1.0:
        raise BadInput(f"the newest ready file in {directory} is {time.time() - at + MARGIN_S:.0f} s old: the "
                       "directory holds an earlier run's barrier; give every run its own --barrier directory",
                       "--barrier")
    return Start(at=at, common_at=common, offset_s=offset, uncertainty_s=uncertainty,
                 source=f"barrier {directory}: the start is the newest ready file's time + {MARGIN_S:g} s, "
                        "each shard's offset measured against the directory's file times")


def _ready_times(directory: Path, count: int, identity: str, *, oldest: float) -> dict[int, float]:
    """Shard index -> its ready file's time, for the ready files of this run; bad input for another run's,
    for one older than `oldest` (an earlier run's: no shard of this one waits that long), and for a ready
    file that is not one (ready files are replaced whole, never seen half-written)."""
    out: dict[int, float] = {}
    for path in directory.glob("ready-*.json"):
        parts = path.stem.split("-")  # ready, I, of, N
        if len(parts) != 4 or not (parts[1].isdigit() and parts[3].isdigit()):
            continue
        if int(parts[3]) != count:
            raise BadInput(f"{path} is a ready file of a run with {parts[3]} shards, this one has {count}: give "
                           "every run its own --barrier directory", "--barrier")
        try:
            stamp = path.stat().st_mtime
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            continue  # taken back by a shard that gave up
        except (OSError, ValueError, UnicodeDecodeError):
            raise BadInput(f"{path} is not a ready file (a directory, unreadable, or not JSON): give every run its "
                           "own --barrier directory", "--barrier") from None
        if stamp < oldest:
            raise BadInput(f"{path} is {time.time() - stamp:.0f} s old, older than --barrier-timeout: an earlier "
                           "run's; give every run its own --barrier directory", "--barrier")
        if not isinstance(meta, dict) or meta.get("run") != identity:
            raise BadInput(f"{path} belongs to another run (a different configuration); the shards of one run "
                           "differ only in --shard, --output and how they start", "--barrier")
        out[int(parts[1])] = stamp
    return out
