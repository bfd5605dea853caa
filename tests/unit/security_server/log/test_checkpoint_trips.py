"""The checkpointer's log work on a SQLite file: each write one transaction on the log's own
SQLite thread, the proof's nodes read on the log's own connection, none of it through the async
engine's worker threads (bench/README.md "Tenth round (perf-futex)"); stored durably, refused
as before, and beside appends in flight."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.merkle import verify_consistency
from security_server.log import BodyKey, LogIntegrityError, LogRangeError, MessageLog
from security_server.log import _writer as writer_module
from tests.unit.security_server.log.support import ORIGIN, FakeClock, make_entry


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ss.db"


@pytest.fixture
def database_url(db_path: Path) -> str:
    """SQLite only (the conftest's ``engine`` and ``log`` open it): the worker and the lookup
    connection are SQLite's."""
    return f"sqlite+aiosqlite:///{db_path}"


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Thread trips counted: through aiosqlite's connection threads (the async engine) and to
    the log's SQLite worker thread."""
    counted = {"engine": 0, "worker": 0}
    execute = aiosqlite.core.Connection._execute
    transaction = writer_module._SqliteWorker.transaction

    async def engine_trip(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        counted["engine"] += 1
        return await execute(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    async def worker_trip(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        counted["worker"] += 1
        return await transaction(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", engine_trip)
    monkeypatch.setattr(writer_module._SqliteWorker, "transaction", worker_trip)
    return counted


async def test_a_checkpoint_round_takes_two_trips_and_none_through_the_engine(
    log: MessageLog, trips: dict[str, int], db_path: Path
) -> None:
    await log.append([make_entry() for _ in range(9)])
    old = log.head()
    await log.append([make_entry() for _ in range(4)])
    head = log.head()
    before = dict(trips)

    saved = await log.save_checkpoint(size=head.size, root=head.root, note="thirteen")
    proof = await log.consistency_proof(old.size, head.size)
    await log.save_cosignature(head.size, "— witness", FakeClock().now)

    assert {k: trips[k] - before[k] for k in trips} == {"engine": 0, "worker": 2}
    verify_consistency(old.size, head.size, proof, old.root, head.root)
    assert (saved.size, saved.root, saved.note, saved.cosignature) == (
        head.size,
        head.root,
        "thirteen",
        None,
    )
    # Durable and committed: another connection to the file sees both writes.
    with sqlite3.connect(db_path) as other:
        row = other.execute(
            "SELECT size, root, note, cosignature FROM log_checkpoints WHERE origin = ?",
            (ORIGIN,),
        ).fetchone()
    assert row == (head.size, head.root, "thirteen", "— witness")
    cosigned = await log.latest_checkpoint(cosigned=True)
    assert cosigned is not None
    assert (cosigned.size, cosigned.cosignature) == (head.size, "— witness")


async def test_the_same_size_again_keeps_the_first_and_bad_ones_are_refused(
    log: MessageLog,
) -> None:
    await log.append([make_entry() for _ in range(6)])
    head = log.head()
    first = await log.save_checkpoint(size=head.size, root=head.root, note="first")
    again = await log.save_checkpoint(size=head.size, root=head.root, note="second")
    assert again == first
    with pytest.raises(LogIntegrityError):
        await log.save_checkpoint(size=head.size - 1, root=head.root, note="wrong root")
    with pytest.raises(LogRangeError):
        await log.save_cosignature(head.size - 1, "sig", FakeClock().now)
    # A refused cosignature leaves the worker's connection usable for the next append.
    await log.append([make_entry()])
    assert log.head().size == head.size + 1


async def test_checkpoint_commits_are_not_counted_among_the_appends(log: MessageLog) -> None:
    await log.append([make_entry()])
    commits = log._writer._commit_times._recent
    counted = len(commits)
    head = log.head()
    await log.save_checkpoint(size=head.size, root=head.root, note="n")
    await log.save_cosignature(head.size, "sig", FakeClock().now)
    assert len(commits) == counted


async def test_checkpoints_beside_appends_in_flight(log: MessageLog) -> None:
    await log.append([make_entry() for _ in range(3)])
    head = log.head()
    appended, saved = await asyncio.gather(
        asyncio.gather(*(log.append([make_entry()]) for _ in range(20))),
        log.save_checkpoint(size=head.size, root=head.root, note="mid-flight"),
    )
    assert len(appended) == 20
    assert log.head().size == head.size + 20
    assert (saved.size, saved.root) == (head.size, head.root)
    await log.save_cosignature(head.size, "sig", FakeClock().now)
    assert (await log.latest_checkpoint(cosigned=True)) == await log.get_checkpoint(head.size)


async def test_after_close_the_engine_path_still_serves(engine: AsyncEngine) -> None:
    log = await MessageLog.open(
        engine, origin=ORIGIN, body_key=BodyKey.generate(), clock=FakeClock()
    )
    await log.append([make_entry() for _ in range(2)])
    head = log.head()
    await log.close()
    saved = await log.save_checkpoint(size=head.size, root=head.root, note="late")
    await log.save_cosignature(head.size, "sig", FakeClock().now)
    assert saved.size == head.size
