"""The member's logs in a shared database (security_server/cluster.py), on SQLite and
PostgreSQL: listed, read at their committed heads, exported only where this server's key
signs them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.faults import Fault
from ruta.ids import ServerId
from security_server.cluster import (
    MemberLog,
    MemberLogError,
    MemberLogs,
    OriginInUseError,
    OriginLock,
)
from security_server.database import open_database
from security_server.log import BodyKey, MessageLog
from tests.unit.security_server.log.support import make_entry

SERVER = ServerId.parse("DEV/GOV/POP/ss1")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = await open_database(database_url)
    try:
        yield eng
    finally:
        await eng.dispose()


async def test_member_logs(engine: AsyncEngine) -> None:
    key = BodyKey.generate()
    origins = ("DEV/GOV/POP/ss1", "DEV/GOV/POP/ss1/w1", "DEV/GOV/POP/ss2", "DEV/GOV/TAX/ss1")
    logs = [await MessageLog.open(engine, origin=o, body_key=key) for o in origins]
    try:
        for count, log in enumerate(logs, start=1):
            await log.append([make_entry() for _ in range(count)])
        member = MemberLogs(engine=engine, own=logs[0], server=SERVER, body_key=key)
        assert await member.list() == [
            MemberLog("DEV/GOV/POP/ss1", 1, exportable=True),
            MemberLog("DEV/GOV/POP/ss1/w1", 2, exportable=True),
            MemberLog("DEV/GOV/POP/ss2", 3, exportable=False),
        ]
        assert await member.reader("") is logs[0]
        worker = await member.reader("DEV/GOV/POP/ss1/w1", export=True)
        assert worker.head() == logs[1].head()
        assert await worker.get_body(0) == b"body"  # the node's body key opens its workers'
        other = await member.reader("DEV/GOV/POP/ss2")
        assert other.size() == 3
        with pytest.raises(MemberLogError) as not_exported:
            await member.reader("DEV/GOV/POP/ss2", export=True)
        assert not_exported.value.fault is Fault.CLIENT_INVALID_REQUEST
        for origin in ("DEV/GOV/TAX/ss1", "DEV/GOV/POP/ss9", "nonsense", "x" * 300):
            with pytest.raises(MemberLogError) as unknown:
                await member.reader(origin)
            assert unknown.value.fault is Fault.CLIENT_NOT_FOUND
    finally:
        for log in logs:
            await log.close()


async def test_one_process_per_tree(engine: AsyncEngine) -> None:
    """Two nodes given the same name would append to one tree: on PostgreSQL the second is
    refused at start (SQLite holds one node's trees, named apart by construction)."""
    first = await OriginLock.acquire(engine, "DEV/GOV/POP/ss1/a")
    try:
        other = await OriginLock.acquire(engine, "DEV/GOV/POP/ss1/b")
        await other.release()
        if engine.dialect.name == "postgresql":
            with pytest.raises(OriginInUseError):
                await OriginLock.acquire(engine, "DEV/GOV/POP/ss1/a")
    finally:
        await first.release()
        await first.release()  # idempotent
    again = await OriginLock.acquire(engine, "DEV/GOV/POP/ss1/a")
    await again.release()
