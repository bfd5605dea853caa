"""Migration 0005 (body segment files, ADR 0040) on a log written under 0004, SQLite and
PostgreSQL: the bodies stored in rows before read as they were, and the log keeps appending,
large bodies on a SQLite file going to its segment files from then on."""

from __future__ import annotations

import sqlalchemy as sa

from security_server.database import create_engine, migrate
from security_server.log import BodyCipher, BodyKey, MessageLog
from security_server.log._writer import (
    DEFAULT_MAX_GROUP_RECORDS,
    GroupCommitWriter,
    restore_frontier,
)
from security_server.log.bodies import FILE_BODY_MIN_BYTES
from security_server.log.schema import log_bodies
from tests.unit.security_server.log.support import ORIGIN, FakeClock, make_entry

_LARGE = b"x" * (2 * FILE_BODY_MIN_BYTES)
#: The columns migration 0009 adds, which today's writer writes.
_COLUMNS_OF_0009 = (("log_leaves", "pending"), ("log_heads", "indexed_size"))


async def test_bodies_written_under_0004_read_after_0005(
    database_url: str, clock: FakeClock
) -> None:
    key = BodyKey.generate()
    engine = create_engine(database_url)
    try:
        await migrate(engine, "0004")
        # Under 0004 there are no body file columns.
        async with engine.connect() as conn:
            columns = {c["name"] for c in await conn.run_sync(_body_columns)}
        assert "segment" not in columns
        # The writer alone (a log opened today checks the body file columns first): its rows
        # of small bodies are those the writer of 0004 wrote, column for column. One leaf
        # only: it completes no tree node (nodes have another key since 0008). Today's writer
        # also writes the pending marks of 0009, so those two columns exist while it writes.
        async with engine.begin() as conn:
            for table, column in _COLUMNS_OF_0009:
                await conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} BIGINT"))
        async with engine.connect() as conn:
            frontier, last_logged_us = await restore_frontier(conn, ORIGIN)
        writer = GroupCommitWriter(
            engine=engine,
            origin=ORIGIN,
            cipher=BodyCipher(key),
            clock=clock,
            frontier=frontier,
            last_logged_us=last_logged_us,
            max_group_records=DEFAULT_MAX_GROUP_RECORDS,
        )
        writer.start()
        try:
            await writer.submit((make_entry(body=b"small"),), None)
        finally:
            await writer.close()
        async with engine.begin() as conn:
            for table, column in _COLUMNS_OF_0009:
                await conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        await migrate(engine)
        log = await MessageLog.open(
            engine, origin=ORIGIN, body_key=key, clock=clock, body_files_from=1
        )
        try:
            await log.append([make_entry(body=None)])
            await log.append([make_entry(body=_LARGE)])
            assert await log.get_bodies([0, 1, 2]) == {0: b"small", 2: _LARGE}
            async with engine.connect() as conn:
                rows = {
                    int(r.seq): r
                    for r in await conn.execute(
                        sa.select(log_bodies.c.seq, log_bodies.c.ciphertext, log_bodies.c.segment)
                    )
                }
            assert rows[0].ciphertext is not None
            assert rows[0].segment is None
            in_file = engine.dialect.name == "sqlite"
            assert (rows[2].segment is not None) is in_file
            assert (rows[2].ciphertext is None) is in_file
        finally:
            await log.close()
    finally:
        await engine.dispose()


def _body_columns(connection: sa.Connection) -> list[dict[str, object]]:
    return list(sa.inspect(connection).get_columns("log_bodies"))  # type: ignore[arg-type]
