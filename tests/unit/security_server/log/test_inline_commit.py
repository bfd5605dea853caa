"""A lone append committed in the event loop's thread while the server is quiet
(``MessageLog.commit_inline_while``): the same transaction and durability as through the writer's
worker thread, a busy database left to the worker, failures refused as before."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.merkle import leaf_hash, root_from_leaf_hashes
from security_server.database import open_database
from security_server.log import (
    BodyKey,
    LogWriteError,
    MessageClaim,
    MessageLog,
    ReplayedMessageError,
)
from security_server.log import _writer as writer_module
from security_server.log.schema import log_leaves
from tests.unit.security_server.log.support import (
    CLIENT,
    ORIGIN,
    FakeClock,
    make_entry,
    take_leaf_behind_the_logs_back,
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'ss.db'}"


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    eng = await open_database(url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def log(engine: AsyncEngine) -> AsyncIterator[MessageLog]:
    opened = await MessageLog.open(
        engine, origin=ORIGIN, body_key=BodyKey.generate(), clock=FakeClock()
    )
    try:
        yield opened
    finally:
        await opened.close()


class _Trips:
    """Counts the groups that went through the worker thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = writer_module._SqliteWorker.transaction

        async def counted(worker: Any, fn: Any, *args: Any) -> Any:
            self.count += 1
            return await original(worker, fn, *args)

        monkeypatch.setattr(writer_module._SqliteWorker, "transaction", counted)


async def _leaf_hashes(engine: AsyncEngine) -> list[bytes]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(log_leaves.c.record).where(log_leaves.c.origin == ORIGIN).order_by("seq")
        )
        return [leaf_hash(bytes(r.record)) for r in rows]


async def _assert_committed(log: MessageLog, engine: AsyncEngine, url: str, size: int) -> None:
    """The log's head is what its database holds, and another connection reads ``size`` leaves:
    committed, not just written."""
    assert log.head().root == root_from_leaf_hashes(await _leaf_hashes(engine))
    other = await open_database(url)
    try:
        assert len(await _leaf_hashes(other)) == size
    finally:
        await other.dispose()


async def test_quiet_appends_commit_in_the_loop_thread_and_are_durable(
    log: MessageLog, engine: AsyncEngine, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = _Trips(monkeypatch)
    log.commit_inline_while(lambda: True)
    for _ in range(5):
        await log.append([make_entry(), make_entry()])
    claim = MessageClaim(client=str(CLIENT), message_id="m-1", expires_at=FakeClock()())
    await log.append([make_entry()], claim=claim)
    assert trips.count == 0
    assert log.size() == 11
    # What another connection reads is what was acknowledged (committed, not just written).
    await _assert_committed(log, engine, url, 11)


async def test_appends_use_the_worker_unless_quiet(
    log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = _Trips(monkeypatch)
    quiet = False
    log.commit_inline_while(lambda: quiet)
    await log.append([make_entry()])
    assert trips.count == 1
    quiet = True
    await log.append([make_entry()])
    assert trips.count == 1
    log.commit_inline_while(None)
    await log.append([make_entry()])
    assert trips.count == 2
    # Several appends waiting together are one group through the worker, quiet or not.
    log.commit_inline_while(lambda: True)
    await asyncio.gather(*(log.append([make_entry()]) for _ in range(8)))
    assert trips.count >= 3
    assert log.size() == 11


async def test_a_busy_database_is_waited_for_in_the_worker_not_the_loop(
    log: MessageLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = _Trips(monkeypatch)
    log.commit_inline_while(lambda: True)
    await log.append([make_entry()])
    holder = sqlite3.connect(tmp_path / "ss.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        append = asyncio.create_task(log.append([make_entry()]))
        # The loop keeps running while the append waits for the lock.
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert not append.done()
    finally:
        holder.execute("COMMIT")
        holder.close()
    [record] = await append
    assert record.seq == 1
    assert trips.count == 1
    # Quiet again and the lock free: back in the loop's thread, with the lock wait restored.
    await log.append([make_entry()])
    assert trips.count == 1
    assert log.size() == 3


async def test_a_failed_inline_write_refuses_its_caller_then_recovers(
    log: MessageLog, engine: AsyncEngine
) -> None:
    log.commit_inline_while(lambda: True)
    await log.append([make_entry() for _ in range(3)])
    await take_leaf_behind_the_logs_back(engine, 3)
    with pytest.raises(LogWriteError):
        await log.append([make_entry()])
    assert log.size() == 3
    async with engine.begin() as conn:
        await conn.execute(sa.delete(log_leaves).where(log_leaves.c.seq == 3))
    [record] = await log.append([make_entry()])
    assert record.seq == 3
    assert log.head().root == root_from_leaf_hashes(await _leaf_hashes(engine))


# --- at_once: committed in the caller's own step (docs/adr/0045) ---------------------------------


class _WriterTurns:
    """Counts the groups the writer's task wrote (a job committed at once is not one of them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = writer_module.GroupCommitWriter._commit_group

        async def counted(writer: Any, group: Any) -> None:
            self.count += 1
            await original(writer, group)

        monkeypatch.setattr(writer_module.GroupCommitWriter, "_commit_group", counted)


async def test_an_append_at_once_commits_in_the_callers_step_and_is_durable(
    log: MessageLog, engine: AsyncEngine, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    turns = _WriterTurns(monkeypatch)
    trips = _Trips(monkeypatch)
    log.commit_inline_while(lambda: True)
    claim = MessageClaim(
        client=str(CLIENT), message_id="m-1", expires_at=FakeClock()() + timedelta(minutes=5)
    )
    # The append's coroutine finishes in its first step: its future is settled before it is
    # awaited, so the caller never yields to the loop (nothing else runs meanwhile).
    step = log.append([make_entry()], claim=claim, at_once=True)
    with pytest.raises(StopIteration) as done:
        step.send(None)
    [record] = done.value.value
    assert record.seq == 0
    await log.append([make_entry(), make_entry()], at_once=True)
    assert (turns.count, trips.count) == (0, 0)
    assert log.size() == 3
    assert log.stats.transactions == 2
    assert log.stats.claims == 1
    # Committed, not just written: another connection reads it all.
    await _assert_committed(log, engine, url, 3)
    # A replayed claim is refused at once, nothing appended.
    with pytest.raises(ReplayedMessageError):
        await log.append([make_entry()], claim=claim, at_once=True)
    assert log.size() == 3


async def test_an_append_at_once_is_queued_unless_quiet_and_idle(
    log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    turns = _WriterTurns(monkeypatch)
    quiet = False
    log.commit_inline_while(lambda: quiet)
    await log.append([make_entry()], at_once=True)
    assert turns.count == 1  # not quiet: the writer's task
    quiet = True
    await log.append([make_entry()])
    assert turns.count == 2  # not asked for: the writer's task (in the loop's thread)
    log.commit_inline_while(None)
    await log.append([make_entry()], at_once=True)
    assert turns.count == 3
    # Something queued: behind it, in the tree's order, through the writer.
    log.commit_inline_while(lambda: True)
    first = asyncio.ensure_future(log.append([make_entry()]))
    await asyncio.sleep(0)  # queued, the writer's task not run yet
    [second] = await log.append([make_entry()], at_once=True)
    [earlier] = await first
    assert (earlier.seq, second.seq) == (3, 4)
    assert turns.count >= 4


async def test_an_append_at_once_waits_while_the_writer_has_a_group(
    log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer's task is in the middle of a group through the worker (not quiet then): a job
    # at once meanwhile is queued behind it, never written beside it.
    quiet = False
    log.commit_inline_while(lambda: quiet)
    release = asyncio.Event()
    original = writer_module._SqliteWorker.transaction

    async def slow(worker: Any, fn: Any, *args: Any) -> Any:
        await release.wait()
        return await original(worker, fn, *args)

    monkeypatch.setattr(writer_module._SqliteWorker, "transaction", slow)
    first = asyncio.ensure_future(log.append([make_entry()]))
    for _ in range(3):
        await asyncio.sleep(0)
    quiet = True
    second = asyncio.ensure_future(log.append([make_entry()], at_once=True))
    await asyncio.sleep(0)
    assert not second.done()
    release.set()
    [one] = await first
    [two] = await second
    assert (one.seq, two.seq) == (0, 1)


async def test_a_busy_database_sends_an_append_at_once_to_the_worker(
    log: MessageLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = _Trips(monkeypatch)
    log.commit_inline_while(lambda: True)
    holder = sqlite3.connect(tmp_path / "ss.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        append = asyncio.ensure_future(log.append([make_entry()], at_once=True))
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert not append.done()  # the loop ran on; the worker waits for the lock
    finally:
        holder.execute("COMMIT")
        holder.close()
    [record] = await append
    assert record.seq == 0
    assert trips.count >= 1


async def test_a_failed_append_at_once_refuses_its_caller_then_recovers(
    log: MessageLog, engine: AsyncEngine
) -> None:
    log.commit_inline_while(lambda: True)
    await log.append([make_entry() for _ in range(2)], at_once=True)
    await take_leaf_behind_the_logs_back(engine, 2)
    with pytest.raises(LogWriteError):
        await log.append([make_entry()], at_once=True)
    assert log.size() == 2
    assert log.stats.failed_transactions == 1
    async with engine.begin() as conn:
        await conn.execute(sa.delete(log_leaves).where(log_leaves.c.seq == 2))
    # The tree is restored (by the writer's task) before the next group: at once is declined
    # until then, and the append still lands in order.
    [record] = await log.append([make_entry()], at_once=True)
    assert record.seq == 2
    [record] = await log.append([make_entry()], at_once=True)
    assert record.seq == 3
    assert log.head().root == root_from_leaf_hashes(await _leaf_hashes(engine))
