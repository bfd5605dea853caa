"""Which responses a provider sends ahead of its log commit (docs/adr/0038, amended by 0931):
per response, only while it is not under load (ADR 0034's threshold) and its log's recent
durable commits are slow enough for the overlap to pay (the median of the last
:data:`~security_server.log._writer.COMMIT_TIMES_KEPT` commits against ``[transport]
responses_ahead_min_commit_ms``). Slow commits are injected at the log's ``COMMIT`` seam, as a
disk with a slow fsync would make them; the tests assert choices, never times."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Final

import pytest

from security_server.coalesce import COALESCE_MIN_IN_FLIGHT
from security_server.log import _writer as writer_module
from security_server.log._writer import COMMIT_TIMES_KEPT, CommitTimes
from security_server.settings import TransportSettings
from tests.unit.security_server.twin import PATH, PERSON, World, world

#: Far above a commit on any disk the tests run on, far below the slow commit injected.
THRESHOLD_MS: Final = 5.0
SLOW_COMMIT_SECONDS: Final = 0.010


class _Commits:
    """The log's ``COMMIT`` seam, slowed while :attr:`slow`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.slow = False
        self._commit = writer_module._commit
        monkeypatch.setattr(writer_module, "_commit", self)

    def __call__(self, dbapi: sqlite3.Connection) -> None:
        if self.slow:
            time.sleep(SLOW_COMMIT_SECONDS)
        self._commit(dbapi)


async def _exchanges(w: World, count: int) -> None:
    for _ in range(count):
        await w.consumer.exchange(PATH, PERSON, w.call_info())


def test_the_default_threshold_is_half_a_millisecond() -> None:
    assert TransportSettings().responses_ahead_min_commit_ms == 0.5
    assert TransportSettings().responses_ahead


def test_commit_times_keep_the_median_of_the_recent_commits() -> None:
    times = CommitTimes()
    assert times.median == 0.0
    for seconds in (0.003, 0.001, 0.002):
        times.note(seconds)
    assert times.median == 0.002
    # One stall (a WAL checkpoint, a descheduled thread) does not move it.
    times.note(9.0)
    times.note(0.002)
    assert times.median == 0.002
    # Only the last COMMIT_TIMES_KEPT count: a disk that turned slow is seen as slow.
    for _ in range(COMMIT_TIMES_KEPT // 2 + 1):
        times.note(0.5)
    assert times.median == 0.5
    for _ in range(COMMIT_TIMES_KEPT):
        times.note(0.001)
    assert times.median == 0.001


async def test_each_choice_follows_the_logs_recent_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = _Commits(monkeypatch)
    settings = {"transport": {"responses_ahead_min_commit_ms": THRESHOLD_MS}}
    async with world(tmp_path, provider_settings=settings) as w:
        await _exchanges(w, 2)
        assert not w.provider.sends_ahead()  # quick commits: durable before sent
        commits.slow = True
        await _exchanges(w, COMMIT_TIMES_KEPT // 2)
        assert w.provider.sends_ahead()  # most recent commits slow: ahead
        commits.slow = False
        await _exchanges(w, COMMIT_TIMES_KEPT // 2)
        assert not w.provider.sends_ahead()  # quick again
        commits.slow = True
        await _exchanges(w, COMMIT_TIMES_KEPT // 2)
        assert w.provider.sends_ahead()
        # Under load (ADR 0034's threshold) never, however slow the commits.
        load = w.provider._load
        started = [load.start() for _ in range(COALESCE_MIN_IN_FLIGHT + 1)]
        assert not w.provider.sends_ahead()
        load.end(started.pop())
        assert w.provider.sends_ahead()
        for began in started:
            load.end(began)


async def test_a_threshold_of_zero_sends_ahead_whenever_not_under_load(tmp_path: Path) -> None:
    settings = {"transport": {"responses_ahead_min_commit_ms": 0}}
    async with world(tmp_path, provider_settings=settings) as w:
        assert w.provider.sends_ahead()  # before any commit
        await _exchanges(w, 2)
        assert w.provider.sends_ahead()
        load = w.provider._load
        started = [load.start() for _ in range(COALESCE_MIN_IN_FLIGHT + 1)]
        assert not w.provider.sends_ahead()
        for began in started:
            load.end(began)
