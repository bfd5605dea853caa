"""The synchronous SQLite engine the log writer's worker thread uses keeps Ruta's durability
settings (WAL, synchronous=FULL, busy timeout, BEGIN IMMEDIATE for writers), and exists only for
SQLite files."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from security_server.database import (
    SQLITE_BUSY_TIMEOUT_MS,
    WRITE_TRANSACTION,
    open_database,
    sqlite_sync_engine,
)
from security_server.log import BodyKey, MessageLog
from tests.unit.security_server.log.support import make_entry


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite:///file:x?mode=memory&uri=true",
        "postgresql+psycopg://postgres@127.0.0.1/x",
    ],
)
def test_no_sync_engine_but_for_a_sqlite_file(url: str) -> None:
    assert sqlite_sync_engine(url) is None


async def test_sync_engine_has_the_same_durability_settings(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ss.db'}"
    engine = await open_database(url)  # migrated; WAL set on the file
    await engine.dispose()
    sync = sqlite_sync_engine(url)
    assert sync is not None
    try:
        with sync.connect() as raw:
            conn = raw.execution_options(**{WRITE_TRANSACTION: True})
            with conn.begin():
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
                timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
                assert timeout == SQLITE_BUSY_TIMEOUT_MS
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                # BEGIN IMMEDIATE took the write lock: another writer cannot start meanwhile.
                other = sa.create_engine(
                    f"sqlite:///{tmp_path / 'ss.db'}", connect_args={"timeout": 0}
                )
                try:
                    with other.connect() as second, pytest.raises(sa.exc.OperationalError):
                        second.exec_driver_sql("BEGIN IMMEDIATE")
                finally:
                    other.dispose()
    finally:
        sync.dispose()


async def test_the_log_writers_own_connection_is_durable(tmp_path: Path) -> None:
    # White-box on purpose: the writer's worker connection is where every append is committed,
    # so its settings are the log's durability (WAL, synchronous=FULL).
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'ss.db'}")
    try:
        log = await MessageLog.open(engine, origin="DEV/GOV/SOC/ss1", body_key=BodyKey.generate())
        try:
            await log.append([make_entry()])
            worker = log._writer._sqlite
            assert worker is not None
            dbapi = worker._connection.driver_connection
            assert dbapi.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert dbapi.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert dbapi.execute("PRAGMA busy_timeout").fetchone()[0] == SQLITE_BUSY_TIMEOUT_MS
        finally:
            await log.close()
    finally:
        await engine.dispose()


async def test_the_quiet_inline_connection_is_as_durable_and_never_waits(tmp_path: Path) -> None:
    # White-box as above: a quiet server commits a lone exchange's records on this second
    # connection in the loop's thread (docs/adr/0042); its durability settings are the worker's,
    # its busy timeout 0 (a busy database goes to the worker instead of blocking the loop).
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'ss.db'}")
    try:
        log = await MessageLog.open(engine, origin="DEV/GOV/SOC/ss1", body_key=BodyKey.generate())
        try:
            log.commit_inline_while(lambda: True)
            await log.append([make_entry()])
            worker = log._writer._sqlite
            assert worker is not None
            assert worker._here is not None, "the append did not commit inline"
            dbapi = worker._here.driver_connection
            assert dbapi.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert dbapi.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert dbapi.execute("PRAGMA busy_timeout").fetchone()[0] == 0
        finally:
            await log.close()
    finally:
        await engine.dispose()


def test_a_failing_statement_does_not_carry_its_bound_values(tmp_path: Path) -> None:
    marker = "bound-value-marker-c93a51"
    sync = sqlite_sync_engine(f"sqlite+aiosqlite:///{tmp_path / 'ss.db'}")
    assert sync is not None
    try:
        with sync.connect() as conn:
            with conn.begin():
                conn.execute(sa.text("CREATE TABLE hide_parameters_probe (id TEXT PRIMARY KEY)"))
                conn.execute(
                    sa.text("INSERT INTO hide_parameters_probe VALUES (:id)"), {"id": marker}
                )
            with pytest.raises(sa.exc.IntegrityError) as caught, conn.begin():
                conn.execute(
                    sa.text("INSERT INTO hide_parameters_probe VALUES (:id)"), {"id": marker}
                )
        assert "parameters hidden" in str(caught.value)
        assert marker not in str(caught.value)
    finally:
        sync.dispose()
