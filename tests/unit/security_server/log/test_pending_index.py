"""Records not yet in the audit indexes (ADR 0053, migration 0009), SQLite and PostgreSQL.

On a SQLite file a small group's records are written pending and put in the four audit indexes
later, all at once, inside a later group's transaction: at most MAX_PENDING_RECORDS of an
origin wait. Every lookup (message id, client, service, method, subject) finds a pending record
exactly as an indexed one; the marks survive a restart and a migration down and up. On
PostgreSQL no record is ever pending."""

from __future__ import annotations

import contextlib
import random
import sqlite3
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.ids import ServiceId, SubsystemId
from security_server.database import migrate
from security_server.log import BodyKey, LogEntry, LogReader, MessageLog, StoredRecord
from security_server.log._writer import _PENDING_GROUP_RECORDS
from security_server.log.schema import MAX_PENDING_RECORDS
from tests.unit.security_server.log.support import ORIGIN, FakeClock, downgrade, make_entry

_CLIENTS = [SubsystemId.parse(f"DEV/GOV/SOC/app{i}") for i in range(3)]
_SERVICES = [ServiceId.parse(f"DEV/GOV/POP/registry/svc{i}.v1.Api") for i in range(3)]
_METHODS = ("Get", "List")
_SUBJECTS = ("", "person-1", "person-2")
_OTHER = "ruta.test/DEV/GOV/POP/ss2"


async def _marks(engine: AsyncEngine, origin: str = ORIGIN) -> tuple[int, int, list[int]]:
    """(size, indexed_size, the seqs marked pending) of ``origin``, read from the tables."""
    async with engine.connect() as conn:
        size, indexed = (
            await conn.execute(
                sa.text(
                    "SELECT size, COALESCE(indexed_size, size) FROM log_heads WHERE origin = :o"
                ),
                {"o": origin},
            )
        ).one()
        pending = [
            int(seq)
            for (seq,) in await conn.execute(
                sa.text(
                    "SELECT seq FROM log_leaves WHERE origin = :o AND pending IS NOT NULL"
                    " ORDER BY seq"
                ),
                {"o": origin},
            )
        ]
    return int(size), int(indexed), pending


def _is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


async def test_small_groups_wait_and_a_later_commit_indexes_them_all(
    log: MessageLog, engine: AsyncEngine
) -> None:
    for _ in range(MAX_PENDING_RECORDS):
        await log.append([make_entry()])
    size, indexed, pending = await _marks(engine)
    if not _is_sqlite(engine):
        assert (size, indexed, pending) == (MAX_PENDING_RECORDS, MAX_PENDING_RECORDS, [])
        return
    # Every single-record commit so far wrote its record pending: no audit index page.
    assert (size, indexed, pending) == (MAX_PENDING_RECORDS, 0, list(range(MAX_PENDING_RECORDS)))
    # The next would pass the bound: its commit indexes the waiting records, and its own.
    await log.append([make_entry()])
    assert await _marks(engine) == (MAX_PENDING_RECORDS + 1, MAX_PENDING_RECORDS + 1, [])
    await log.append([make_entry(), make_entry()])
    assert await _marks(engine) == (MAX_PENDING_RECORDS + 3, MAX_PENDING_RECORDS + 1, [65, 66])
    # A group larger than _PENDING_GROUP_RECORDS shares the index pages among its own records:
    # indexed at once, with the ones waiting before it.
    await log.append([make_entry() for _ in range(_PENDING_GROUP_RECORDS + 1)])
    size, indexed, pending = await _marks(engine)
    assert size == indexed == MAX_PENDING_RECORDS + 3 + _PENDING_GROUP_RECORDS + 1
    assert pending == []


def _entries(rng: random.Random, count: int) -> list[LogEntry]:
    return [
        make_entry(
            client=rng.choice(_CLIENTS),
            service=rng.choice(_SERVICES),
            method=rng.choice(_METHODS),
            subject=rng.choice(_SUBJECTS),
        )
        for _ in range(count)
    ]


def _seqs(records: tuple[StoredRecord, ...] | list[StoredRecord]) -> list[int]:
    return [r.seq for r in records]


async def _check_lookups(log: MessageLog, logged: list[LogEntry], rng: random.Random) -> None:
    """Every lookup answers what a walk of ``logged`` (entry i is record i) answers."""
    everything = list(enumerate(logged))
    for seq in rng.sample(range(len(logged)), min(4, len(logged))):
        entry = logged[seq]
        assert await log.holds_message(client=entry.client, message_id=entry.message_id)
        page = await log.query(message_id=entry.message_id)
        assert _seqs(page.records) == [seq]
    assert not await log.holds_message(client=str(_CLIENTS[0]), message_id="never-sent")
    filters: list[dict[str, str]] = [
        {"client": str(rng.choice(_CLIENTS))},
        {"service": str(rng.choice(_SERVICES))},
        {"service": str(rng.choice(_SERVICES)), "method": rng.choice(_METHODS)},
        {"subject": rng.choice(_SUBJECTS[1:])},
        {"client": str(rng.choice(_CLIENTS)), "subject": rng.choice(_SUBJECTS[1:])},
    ]
    for wanted in filters:
        expected = [
            seq
            for seq, entry in everything
            if all(
                (entry.subject or "") == value
                if name == "subject"
                else getattr(entry, name) == value
                for name, value in wanted.items()
            )
        ]
        for newest_first in (False, True):
            order = expected[::-1] if newest_first else expected
            found: list[int] = []
            after = None
            while True:
                page = await log.query(
                    **wanted,  # type: ignore[arg-type]
                    limit=7,
                    after=after,
                    newest_first=newest_first,
                )
                found += _seqs(page.records)
                if page.next_after is None:
                    break
                after = page.next_after
            assert found == order, (wanted, newest_first)


async def test_every_lookup_finds_pending_and_indexed_records_alike(
    log: MessageLog, engine: AsyncEngine
) -> None:
    rng = random.Random(53)
    logged: list[LogEntry] = []
    saw_pending = False
    while len(logged) < 3 * MAX_PENDING_RECORDS:
        entries = _entries(rng, rng.choice((1, 1, 2, 2, 3, _PENDING_GROUP_RECORDS + 4)))
        await log.append(entries)
        logged += entries
        size, indexed, pending = await _marks(engine)
        # Below indexed_size every record is indexed, from it on every one pending, and few.
        assert pending == list(range(indexed, size))
        assert size - indexed <= MAX_PENDING_RECORDS
        saw_pending = saw_pending or bool(pending)
        await _check_lookups(log, logged, rng)
    assert saw_pending is _is_sqlite(engine)


async def test_a_reopened_log_keeps_its_pending_records_and_indexes_them_later(
    log: MessageLog, engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> None:
    first = [make_entry(subject="person-1") for _ in range(5)]
    for entry in first:
        await log.append([entry])
    before = await _marks(engine)
    await log.close()
    reopened = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key, clock=clock)
    try:
        assert await _marks(engine) == before
        # The writer knows its waiting records again (the message-id check reads them there).
        for entry in first:
            assert await reopened.holds_message(client=entry.client, message_id=entry.message_id)
        page = await reopened.query(subject="person-1")
        assert _seqs(page.records) == [0, 1, 2, 3, 4]
        await reopened.append([make_entry() for _ in range(_PENDING_GROUP_RECORDS + 1)])
        size, indexed, pending = await _marks(engine)
        assert (indexed, pending) == (size, [])
        page = await reopened.query(subject="person-1", newest_first=True)
        assert _seqs(page.records) == [4, 3, 2, 1, 0]
    finally:
        await reopened.close()


async def test_migration_0009_down_indexes_pending_records_and_up_keeps_lookups(
    log: MessageLog, engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> None:
    rng = random.Random(9)
    logged: list[LogEntry] = []
    for count in (_PENDING_GROUP_RECORDS + 2, 1, 2, 1):
        entries = _entries(rng, count)
        await log.append(entries)
        logged += entries
    size, _, pending = await _marks(engine)
    assert bool(pending) is _is_sqlite(engine)
    await log.close()
    async with engine.begin() as conn:
        await conn.run_sync(downgrade, "0008")
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT count(*) FROM log_leaves WHERE message_id = :m"),
            {"m": logged[-1].message_id},
        )
        assert rows.scalar_one() == 1
    await migrate(engine)
    # Upgraded: every record indexed, as before 0009.
    assert await _marks(engine) == (size, size, [])
    reopened = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key, clock=clock)
    try:
        await _check_lookups(reopened, logged, rng)
        more = _entries(rng, 1)
        await reopened.append(more)
        await _check_lookups(reopened, logged + more, rng)
    finally:
        await reopened.close()


async def test_the_message_id_check_sees_every_origins_waiting_records(
    log: MessageLog, engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> None:
    """Another node or worker of the member writes to the same database: its waiting records
    are read from the tables, this log's own from its writer, and only committed ones count."""
    other = await MessageLog.open(engine, origin=_OTHER, body_key=body_key, clock=clock)
    try:
        mine, theirs = make_entry(), make_entry()
        await log.append([mine])
        await other.append([theirs])
        for entry in (mine, theirs):
            for reader in (log, other):
                assert await reader.holds_message(client=entry.client, message_id=entry.message_id)
                assert not await reader.holds_message(
                    client=str(_CLIENTS[0]), message_id=entry.message_id
                )
        if _is_sqlite(engine):
            assert (await _marks(engine, _OTHER))[2] == [0]
        # Indexed at last (a large group): still found, once each.
        await other.append([make_entry() for _ in range(_PENDING_GROUP_RECORDS + 1)])
        assert (await _marks(engine, _OTHER))[2] == []
        assert await log.holds_message(client=theirs.client, message_id=theirs.message_id)
        assert await other.holds_message(client=theirs.client, message_id=theirs.message_id)
    finally:
        await other.close()


async def test_more_waiting_records_than_the_bound_are_indexed_at_open(
    log: MessageLog, engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> None:
    """More waiting records than the bound (a head written by a version with a larger one, or
    by hand): the log indexes them all before it starts, so its writer knows every record it
    would otherwise have to remember."""
    entries = [make_entry(subject="person-2") for _ in range(2 * MAX_PENDING_RECORDS)]
    for start in range(0, len(entries), 32):
        await log.append(entries[start : start + 32])
    await log.close()
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE log_leaves SET pending = 1"))
        await conn.execute(sa.text("UPDATE log_heads SET indexed_size = 0"))
    reopened = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key, clock=clock)
    try:
        assert await _marks(engine) == (len(entries), len(entries), [])
        for entry in entries[:: MAX_PENDING_RECORDS // 2]:
            assert await reopened.holds_message(client=entry.client, message_id=entry.message_id)
        page = await reopened.query(subject="person-2", limit=MAX_PENDING_RECORDS)
        assert _seqs(page.records) == list(range(MAX_PENDING_RECORDS))
    finally:
        await reopened.close()


async def test_time_ranges_and_pages_after_a_record_find_waiting_records_too(
    log: MessageLog, engine: AsyncEngine, clock: FakeClock
) -> None:
    rng = random.Random(7)
    logged: list[tuple[LogEntry, datetime]] = []
    while len(logged) < 2 * MAX_PENDING_RECORDS:
        entries = _entries(rng, rng.choice((1, 2, _PENDING_GROUP_RECORDS + 1)))
        await log.append(entries)
        logged += [(entry, clock.now) for entry in entries]
        clock.advance(1)
    assert bool((await _marks(engine))[2]) is _is_sqlite(engine)
    client = str(_CLIENTS[1])
    for cut in (len(logged) // 3, len(logged) - 3):
        since = logged[cut][1]
        until = logged[-2][1]
        expected = [
            seq
            for seq, (entry, at) in enumerate(logged)
            if entry.client == client and since <= at < until
        ]
        for newest_first in (False, True):
            found: list[int] = []
            after = None
            while True:
                page = await log.query(
                    client=client,
                    since=since,
                    until=until,
                    after=after,
                    limit=5,
                    newest_first=newest_first,
                )
                found += _seqs(page.records)
                if page.next_after is None:
                    break
                after = page.next_after
            assert found == (expected[::-1] if newest_first else expected)


async def test_the_waiting_records_statement_reads_only_the_waiting_ones(
    log: MessageLog, engine: AsyncEngine
) -> None:
    """Paging forward (``after``) or a time range gives the statement a second lower bound on
    seq; were it given to SQLite, its range could start there and walk the log to its end."""
    if not _is_sqlite(engine):
        pytest.skip("PostgreSQL writes no waiting record: there is no such statement")
    for _ in range(40):
        await log.append([make_entry() for _ in range(50)])
    await log.append([make_entry()])
    assert len((await _marks(engine))[2]) == 1
    executed: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "indexed_size" in statement:
            executed.append((statement, parameters))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        page = await log.query(client=str(make_entry().client), after=10, limit=3)
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert _seqs(page.records) == [11, 12, 13]
    [(statement, parameters)] = executed
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    database = engine.url.database
    assert database is not None
    with contextlib.closing(sqlite3.connect(database)) as plain:
        plain.set_progress_handler(count, 100)
        rows = plain.execute(statement, parameters).fetchall()
    assert len(rows) == 1
    # A walk of the 2,000 records from seq 10 takes ~20,000 steps of 100 instructions; the one
    # waiting record, a few.
    assert steps[0] < 50, steps[0]


async def test_postgresql_checks_a_message_id_through_its_index_alone(
    log: MessageLog, engine: AsyncEngine, body_key: BodyKey
) -> None:
    """PostgreSQL writes no waiting record, and the waiting part of the check would cost it a
    walk of every leaf (the partial index is no help there): its statement is the index's
    part alone. SQLite's reads the heads first, then each origin's waiting records."""
    entry = make_entry()
    await log.append([entry])
    executed: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "message_id" in statement:
            executed.append(statement)

    reader = await LogReader.open(engine, origin=ORIGIN, body_key=body_key)
    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        assert await reader.holds_message(client=entry.client, message_id=entry.message_id)
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)
    [statement] = executed
    if _is_sqlite(engine):
        assert "CROSS JOIN log_leaves" in statement
    else:
        assert "log_heads" not in statement
        assert "pending IS NULL" in statement
