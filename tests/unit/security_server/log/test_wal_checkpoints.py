"""On a SQLite file the log's write-ahead log is checkpointed by a thread of its own
(docs/adr/0054): the writer's connections leave it alone below their own bound, the thread copies
the log into the database once the commits have written enough, and it stops with the log."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from security_server.database import sqlite_sync_engine
from security_server.log import BodyKey, MessageLog
from security_server.log import _writer as writer_module
from tests.unit.security_server.log.support import ORIGIN, FakeClock, make_entry


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ruta-log-wal-checkpoint"]


async def test_the_thread_checkpoints_what_the_commits_wrote(
    file_engine: AsyncEngine, sqlite_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "_CHECKPOINT_PAGES", 40)
    passes: list[tuple[int, int, int]] = []
    checked = threading.Event()

    def recording(dbapi: sqlite3.Connection) -> None:
        writer_module._checkpoint(dbapi)
        passes.append(dbapi.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
        checked.set()

    monkeypatch.setattr(writer_module, "_run_checkpoint", recording)
    before = set(_checkpoint_threads())
    log = await MessageLog.open(
        file_engine, origin=ORIGIN, body_key=BodyKey.generate(), clock=FakeClock()
    )
    try:
        # Concurrent appends (the worker thread's groups), then single ones.
        await asyncio.gather(*(log.append([make_entry()]) for _ in range(64)))
        for _ in range(8):
            await log.append([make_entry()])
        assert await asyncio.to_thread(checked.wait, 10)
        busy, pages, done = passes[0]
        assert busy == 0
        assert done <= pages
        assert set(_checkpoint_threads()) - before
    finally:
        await log.close()
    assert set(_checkpoint_threads()) <= before  # stopped with the log


async def test_bodies_kept_in_their_rows_count_toward_the_next_pass(
    file_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Single appends of 64 KiB bodies stay in their rows (fewer than FILE_GROUP_MIN_BODIES large
    # ones in a group): each commit writes ~16 pages of body the row count alone does not see.
    monkeypatch.setattr(writer_module, "_CHECKPOINT_PAGES", 100)
    passes = threading.Semaphore(0)

    def counting(dbapi: sqlite3.Connection) -> None:
        writer_module._checkpoint(dbapi)
        passes.release()

    monkeypatch.setattr(writer_module, "_run_checkpoint", counting)
    log = await MessageLog.open(
        file_engine, origin=ORIGIN, body_key=BodyKey.generate(), clock=FakeClock()
    )
    try:
        log.commit_inline_while(lambda: True)
        # 8 commits: 8 * (8 + 0) pages by rows alone (no pass), 8 * 16 more by their bodies.
        for _ in range(8):
            await log.append([make_entry(body=bytes(64 * 1024))])
        assert await asyncio.to_thread(passes.acquire, True, 10)
    finally:
        await log.close()


async def test_the_writers_connections_checkpoint_only_beyond_their_bound(
    file_engine: AsyncEngine, sqlite_file: Path
) -> None:
    log = await MessageLog.open(
        file_engine, origin=ORIGIN, body_key=BodyKey.generate(), clock=FakeClock()
    )
    seen: list[Any] = []

    def autocheckpoint(conn: Any) -> None:
        seen.append(conn._dbapi.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    try:
        log.commit_inline_while(lambda: True)
        await log.append([make_entry()])  # inline, in this thread
        worker = log._writer._sqlite
        assert worker is not None
        await worker.transaction(autocheckpoint)
        seen.append(
            worker._here.driver_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
    finally:
        await log.close()
    assert seen == [writer_module._WRITER_AUTOCHECKPOINT_PAGES] * 2


def test_a_failed_checkpoint_is_logged_and_the_thread_goes_on(
    sqlite_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sqlite_sync_engine(f"sqlite:///{sqlite_file}")
    assert engine is not None
    calls: list[int] = []
    second = threading.Event()

    def failing_then_fine(dbapi: sqlite3.Connection) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        second.set()

    monkeypatch.setattr(writer_module, "_run_checkpoint", failing_then_fine)
    checkpointer = writer_module._WalCheckpointer(engine)
    try:
        checkpointer.committed(3 * writer_module._CHECKPOINT_PAGES)
        while not calls:
            threading.Event().wait(0.01)
        checkpointer.committed(3 * writer_module._CHECKPOINT_PAGES)
        assert second.wait(10)
    finally:
        checkpointer.stop()
        engine.dispose()
    assert "checkpointing the write-ahead log failed (OperationalError)" in caplog.text
