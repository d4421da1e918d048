"""kimi_deploy.progress: plain lines when the console is not a terminal (at start, at the interval, even
with no update, at the end), the ETA, the timer stopping with the block, a bar and no lines on a
terminal, and counts from many threads."""

from __future__ import annotations

import io
import re
import threading
import time

import pytest
from rich.console import Console

from kimi_deploy.errors import BadInput
from kimi_deploy.progress import ENV_INTERVAL, Progress, interval_from_env


def _console(terminal: bool = False) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=200), buf


def _lines(buf: io.StringIO) -> list[str]:
    return [ln for ln in buf.getvalue().splitlines() if ln.strip()]


def _wait_for(pred, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_plain_lines_at_start_at_the_interval_without_updates_and_at_the_end() -> None:
    console, buf = _console()
    with Progress(console, label="bench", total=400, interval_s=0.2) as p:
        assert re.fullmatch(r"bench: 0/400 done, 0 failed, \d+ s elapsed", _lines(buf)[0])
        p.update(120, failed=3)
        # no further update: the timer prints (a stuck phase still shows)
        assert _wait_for(lambda: any(ln.startswith("bench: 120/400 done, 3 failed") for ln in _lines(buf)))
        line = next(ln for ln in _lines(buf) if ln.startswith("bench: 120/400"))
        assert re.fullmatch(r"bench: 120/400 done, 3 failed, \d+ s elapsed, ETA \d+ s", line), line
        p.advance(280, failed=1)
    lines = _lines(buf)
    assert re.fullmatch(r"bench: 400/400 done, 4 failed, \d+ s elapsed", lines[-1]), lines
    assert p._thread is not None and not p._thread.is_alive()
    n = len(lines)
    time.sleep(0.6)  # three intervals: a stopped timer prints nothing more
    assert len(_lines(buf)) == n


def test_updates_print_no_more_often_than_the_interval() -> None:
    console, buf = _console()
    with Progress(console, label="x", total=None, interval_s=3600) as p:
        for _ in range(10_000):
            p.advance()
    lines = _lines(buf)
    assert len(lines) == 2, lines
    assert re.fullmatch(r"x: 0 done, 0 failed, \d+ s elapsed", lines[0])
    assert re.fullmatch(r"x: 10000 done, 0 failed, \d+ s elapsed", lines[1])


def test_eta_from_the_rate_so_far() -> None:
    console, _ = _console()
    p = Progress(console, label="diff", total=10, interval_s=1)
    p.update(5, failed=1)
    c = p._first
    assert c.line(c.started + 10) == "diff: 5/10 done, 1 failed, 10 s elapsed, ETA 10 s"
    assert c.line(c.started + 10, final=True) == "diff: 5/10 done, 1 failed, 10 s elapsed"
    p.update(0)
    assert "ETA" not in c.line(c.started + 10)  # nothing done yet: no rate to go by
    assert c.line(c.started + 1200) == "diff: 0/10 done, 0 failed, 20 min elapsed"


def test_an_exception_stops_the_timer_and_still_prints_the_last_line() -> None:
    console, buf = _console()
    with pytest.raises(RuntimeError):
        with Progress(console, label="phase", total=3, interval_s=0.05) as p:
            p.advance()
            raise RuntimeError("boom")
    assert p._thread is not None and not p._thread.is_alive()
    assert _lines(buf)[-1].startswith("phase: 1/3 done, 0 failed")


def test_several_counts_print_together() -> None:
    console, buf = _console()
    with Progress(console, label="compare: local", total=4, interval_s=3600) as p:
        ref = p.add("compare: reference", 4)
        p.advance(4)
        ref.advance(2, failed=1)
    lines = _lines(buf)
    assert lines[0].startswith("compare: local: 0/4") and lines[1].startswith("compare: reference: 0/4")
    assert lines[-2].startswith("compare: local: 4/4 done, 0 failed")
    assert lines[-1].startswith("compare: reference: 2/4 done, 1 failed")


def test_counts_from_many_threads_add_up() -> None:
    console, buf = _console()
    with Progress(console, label="t", total=8000, interval_s=0.01) as p:
        def work() -> None:
            for i in range(1000):
                p.advance(failed=1 if i % 10 == 0 else 0)
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert _lines(buf)[-1].startswith("t: 8000/8000 done, 800 failed")


def test_a_terminal_gets_a_bar_and_no_lines() -> None:
    console, buf = _console(terminal=True)
    with Progress(console, label="render --check", total=2, interval_s=0.01) as p:
        p.advance(2)
        time.sleep(0.1)
    assert p._thread is None
    assert "done," not in buf.getvalue()


def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_INTERVAL, raising=False)
    assert interval_from_env() == 10.0
    monkeypatch.setenv(ENV_INTERVAL, "0.5")
    assert Progress(_console()[0], label="x", total=1).interval_s == 0.5
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv(ENV_INTERVAL, bad)
        with pytest.raises(BadInput, match=ENV_INTERVAL):
            interval_from_env()
