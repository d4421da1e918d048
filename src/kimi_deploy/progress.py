"""Progress of a long command that shows wherever its output goes. On a terminal: a rich progress bar
(transient, as `rich.progress` draws it). Anywhere else (under `tee`, in CI, in `kubectl logs`, where a
bar prints nothing until the end): plain lines, one at the start, one every `interval_s` seconds and
one at the end, e.g.

    bench: 120/400 done, 3 failed, 42 s elapsed, ETA 98 s

`done` counts every finished item, the failed ones included; the ETA (elapsed / done x the items left)
is shown once something is done and the total is known. A background timer prints the lines even when
no item finishes (a stuck phase), and stops when the `with` block ends.

    with Progress(err, label="bench", total=400) as p:
        ...
        p.advance(failed=1)            # thread-safe; a lock and a clock read per call

Several counts in one display (items running side by side): `p.add(label, total)` returns one more
counter with the same `update` / `advance`. The interval: `interval_s`, else the environment variable
KIMI_PROGRESS_INTERVAL_S, else 10 s."""

from __future__ import annotations

import math
import threading
import time
from types import TracebackType
from typing import Optional

from rich.console import Console

from .errors import seconds_from_env

ENV_INTERVAL = "KIMI_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 10.0


def interval_from_env() -> float:
    """KIMI_PROGRESS_INTERVAL_S as seconds (a positive finite number), or the default when unset."""
    return seconds_from_env(ENV_INTERVAL, DEFAULT_INTERVAL_S)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 600 else f"{s / 60:.0f} min"


class Counter:
    """One labelled count: `update(done, failed)` sets it, `advance(n, failed)` adds to it."""

    def __init__(self, owner: Progress, label: str, total: Optional[int]) -> None:
        self._owner = owner
        self.label = label
        self.total = total
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self.task_id: Optional[int] = None  # the rich task, on a terminal

    def update(self, done: int, failed: int = 0) -> None:
        with self._owner._lock:
            self.done, self.failed = done, failed
        self._owner._changed(self)

    def advance(self, n: int = 1, failed: int = 0) -> None:
        with self._owner._lock:
            self.done += n
            self.failed += failed
        self._owner._changed(self)

    def line(self, now: float, *, final: bool = False) -> str:
        """`label: done/total done, F failed, E s elapsed, ETA S s` (ETA while unfinished and computable)."""
        elapsed = now - self.started
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        text = f"{self.label}: {count} done, {self.failed} failed, {_seconds(elapsed)} elapsed"
        if not final and self.total is not None and 0 < self.done < self.total:
            text += f", ETA {_seconds(elapsed / self.done * (self.total - self.done))}"
        return text


class Progress:
    """A context manager reporting one count (and any added with `add`) on `console`: a bar when it is a
    terminal, else plain lines at `interval_s` (see the module's docstring). `plain` forces the choice."""

    def __init__(self, console: Console, *, label: str, total: Optional[int],
                 interval_s: Optional[float] = None, plain: Optional[bool] = None) -> None:
        if interval_s is not None and not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be a positive number, got {interval_s}")
        self.console = console
        self.interval_s = interval_s if interval_s is not None else interval_from_env()
        self.plain = (not console.is_terminal) if plain is None else plain
        self._lock = threading.RLock()
        self._counters: list[Counter] = []
        self._bar = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._next_due = math.inf
        self._first = Counter(self, label, total)

    @property
    def main(self) -> Counter:
        """The count named by `label` (the one `update` and `advance` change)."""
        return self._first

    # the first counter's methods, for the common one-count case
    def update(self, done: int, failed: int = 0) -> None:
        self._first.update(done, failed)

    def advance(self, n: int = 1, failed: int = 0) -> None:
        self._first.advance(n, failed)

    def add(self, label: str, total: Optional[int]) -> Counter:
        """One more count in the same display, with its own elapsed time and ETA."""
        c = Counter(self, label, total)
        with self._lock:
            self._counters.append(c)
            if self._bar is not None:
                c.task_id = self._bar.add_task(label, total=total)
            elif self.plain and self._thread is not None:
                self._print([c.line(time.monotonic())])
        return c

    def __enter__(self) -> Progress:
        now = time.monotonic()
        with self._lock:
            self._first.started = now
            self._counters.insert(0, self._first)
            if self.plain:
                self._next_due = now + self.interval_s
                self._print([c.line(now) for c in self._counters])
                self._thread = threading.Thread(target=self._timer, name="progress-timer", daemon=True)
                self._thread.start()
            else:
                from rich.progress import Progress as Bar

                self._bar = Bar(console=self.console, transient=True)
                self._bar.start()
                for c in self._counters:
                    c.task_id = self._bar.add_task(c.label, total=c.total)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)  # the timer wakes on the event at once
        with self._lock:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None
            elif self.plain:
                now = time.monotonic()
                self._print([c.line(now, final=True) for c in self._counters])

    def _print(self, lines: list[str]) -> None:
        for line in lines:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _changed(self, c: Counter) -> None:
        if self._bar is not None:
            with self._lock:
                if self._bar is not None and c.task_id is not None:
                    desc = c.label + (f" ({c.failed} failed)" if c.failed else "")
                    self._bar.update(c.task_id, completed=c.done, description=desc)  # type: ignore[arg-type]
            return
        if time.monotonic() >= self._next_due:
            self._tick()

    def _tick(self) -> None:
        """Print every count's line when the interval is up (from an update or from the timer)."""
        with self._lock:
            now = time.monotonic()
            if self._stop.is_set() or now < self._next_due:
                return
            self._next_due = now + self.interval_s
            self._print([c.line(now) for c in self._counters])

    def _timer(self) -> None:
        while not self._stop.wait(max(0.01, self._next_due - time.monotonic())):
            self._tick()
