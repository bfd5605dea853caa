"""Fixtures for the message log tests: one database URL per backend, a clock, entries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from security_server.database import open_database
from security_server.log import BodyKey, MessageLog
from tests.unit.security_server.log.support import ORIGIN, FakeClock


@pytest.fixture
def body_key() -> BodyKey:
    return BodyKey.generate()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = await open_database(database_url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def log(
    engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> AsyncIterator[MessageLog]:
    opened = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


# A SQLite file of its own, for the tests of what only a file has (body segment files, the
# write-ahead log's checkpoint thread), whichever backend ``database_url`` names.
@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "ss.db"


@pytest.fixture
async def file_engine(sqlite_file: Path) -> AsyncIterator[AsyncEngine]:
    eng = await open_database(f"sqlite+aiosqlite:///{sqlite_file}")
    try:
        yield eng
    finally:
        await eng.dispose()
