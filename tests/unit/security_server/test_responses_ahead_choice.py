"""Which responses a provider sends ahead of its log commit (docs/adr/0038, amended by 0048):
per response, only while it is not under load (ADR 0034's threshold) and its log's recent
durable commits are slow enough for the overlap to pay (the median wall time of the last
:data:`~security_server.log._writer.COMMIT_TIMES_KEPT` transactions against ``[transport]
responses_ahead_min_commit_ms``). Slow commits are injected at the log's ``COMMIT`` seam, as a
disk with a slow fsync would make them; the tests assert choices, never times."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import pytest

from ruta.v1 import transport_pb2
from security_server.calls import CallInfo
from security_server.coalesce import COALESCE_MIN_IN_FLIGHT
from security_server.frames import SendAhead
from security_server.log import Direction, LogEntry, MessageClaim
from security_server.log import _writer as writer_module
from security_server.log._writer import COMMIT_TIMES_KEPT, CommitTimes
from security_server.settings import TransportSettings
from tests.unit.security_server.twin import PATH, PERSON, World, world

#: Far above a commit on any disk the tests run on, far below the slow commit injected.
THRESHOLD_MS: Final = 20.0
SLOW_COMMIT_SECONDS: Final = 0.040


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


def test_the_default_threshold_is_a_fifth_of_a_millisecond() -> None:
    assert TransportSettings().responses_ahead_min_commit_ms == 0.2
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


class _Sent:
    """Over the twin's frames path with ``response-ahead`` agreed: what the provider sent ahead,
    and with which ``at_once`` each of its response records was appended."""

    def __init__(self, w: World, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ahead: list[transport_pb2.SignedMessage] = []
        self.responses_at_once: list[bool] = []
        w.framed = True
        framed = w.provider.framed

        async def framed_ahead(
            item: transport_pb2.FramedRequest, info: CallInfo, *, ahead: SendAhead | None = None
        ) -> transport_pb2.FramedResult:
            return await framed(item, info, ahead=self.ahead.append)

        monkeypatch.setattr(w.provider, "framed", framed_ahead)
        append = w.provider_log.append

        async def spied(
            entries: Sequence[LogEntry], *, claim: MessageClaim | None = None, at_once: bool = False
        ) -> Any:
            if any(entry.direction is Direction.SENT for entry in entries):
                self.responses_at_once.append(at_once)
            return await append(entries, claim=claim, at_once=at_once)

        monkeypatch.setattr(w.provider_log, "append", spied)


async def test_each_response_goes_ahead_or_is_committed_first_as_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The choice is made per response: sent ahead (its commit left to the writer's task, so the
    stream writes it first: docs/adr/0045), or committed first, in the caller's step when quiet
    (``at_once``), and sent durable."""
    commits = _Commits(monkeypatch)
    settings = {"transport": {"responses_ahead_min_commit_ms": THRESHOLD_MS}}
    async with world(tmp_path, provider_settings=settings) as w:
        sent = _Sent(w, monkeypatch)
        await _exchanges(w, 1)
        assert (len(sent.ahead), sent.responses_at_once) == (0, [True])
        commits.slow = True
        await _exchanges(w, COMMIT_TIMES_KEPT // 2)
        assert sent.ahead  # the slow commits reached the median
        assert len(sent.ahead) == sent.responses_at_once.count(False)
        assert sent.responses_at_once[-1] is False
        assert w.provider_log.size() == w.consumer_log.size()  # every answer in both logs
