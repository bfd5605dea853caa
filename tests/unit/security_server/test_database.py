"""The security server's database: pragmas on SQLite, migrations that match the tables in code."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from security_server.database import (
    VERSION_TABLE,
    DatabaseError,
    create_engine,
    migrate,
    open_database,
)
from security_server.log.schema import metadata


def _differences(conn: sa.Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return list(compare_metadata(context, metadata))


async def test_migrations_create_exactly_the_tables_in_code(database_url: str) -> None:
    engine = await open_database(database_url)
    try:
        await migrate(engine)  # idempotent: a second start changes nothing
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
    finally:
        await engine.dispose()


async def test_sqlite_connections_are_durable(tmp_path: Path) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'ss.db'}")
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: (await conn.execute(sa.text(f"PRAGMA {name}"))).scalar_one()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        await engine.dispose()
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 2,
        "busy_timeout": 10000,
        "foreign_keys": 1,
    }


def test_unsupported_backends_are_refused() -> None:
    with pytest.raises(DatabaseError, match="not supported"):
        create_engine("mysql+aiomysql://user:secret@host/db")


async def test_a_failing_statement_does_not_carry_its_bound_values(database_url: str) -> None:
    # Database errors reach log lines; in the message log the bound values are data subjects'
    # identifiers and message bodies.
    marker = "bound-value-marker-7d20e3"
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE hide_parameters_probe (id TEXT PRIMARY KEY)"))
            await conn.execute(
                sa.text("INSERT INTO hide_parameters_probe VALUES (:id)"), {"id": marker}
            )
        with pytest.raises(sa.exc.DBAPIError) as caught:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text("INSERT INTO hide_parameters_probe VALUES (:id)"), {"id": marker}
                )
        error = caught.value
        assert "parameters hidden" in str(error)
        # PostgreSQL's own DETAIL line echoes key values whatever the engine options; SQLAlchemy's
        # part of the text must not, and on SQLite nothing may.
        assert marker not in str(error).replace(str(error.orig), "")
        if engine.dialect.name == "sqlite":
            assert marker not in str(error)
    finally:
        await engine.dispose()
