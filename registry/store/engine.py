"""Opening the registry's database and bringing its schema up to date.

One code path for both backends: a SQLite file (aiosqlite, WAL) by default, PostgreSQL (psycopg 3)
by URL. Migrations are Alembic revisions in ``registry/migrations``, configured here in code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from registry.errors import StoreError

__all__ = ["DEFAULT_DATABASE_FILE", "create_engine", "database_url", "migrate"]

#: The SQLite file a registry directory holds when no database URL is given.
DEFAULT_DATABASE_FILE: Final = "registry.db"
#: How long a SQLite writer waits for the lock before failing (milliseconds).
_SQLITE_BUSY_TIMEOUT_MS: Final = 10_000

#: PostgreSQL advisory-lock key serialising migrations of the registry schema ("ruta-reg").
_MIGRATION_LOCK: Final = 0x727574612D726567

_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def database_url(url: str | None, data_dir: Path) -> str:
    """The SQLAlchemy async URL to use: ``url`` with its async driver named, or the default
    SQLite file in ``data_dir``. Raises :class:`StoreError` for an unsupported URL."""
    if url is None:
        return f"sqlite+aiosqlite:///{(data_dir / DEFAULT_DATABASE_FILE).resolve()}"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError("the database URL is not a valid SQLAlchemy URL") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise StoreError(f"database backend {backend!r} is not supported; use sqlite or postgresql")


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url`` (as returned by :func:`database_url`); SQLite connections run
    in WAL mode with foreign keys on. Bound parameters are hidden from error messages, so a
    failing statement never carries the values it bound (identifiers, certificates, audit
    details) into a log line. The caller disposes of it."""
    engine = create_async_engine(url, pool_pre_ping=True, hide_parameters=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    return engine


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Registry nodes sharing one database may start together: one migrates, the others wait
        # (the lock is held until this transaction commits) and then find nothing to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema up to the newest revision (idempotent). Raises :class:`StoreError` when
    the database cannot be reached or migrated; a failed migration leaves the old schema."""
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
    except (OSError, DBAPIError) as exc:
        raise StoreError(
            f"cannot reach or migrate the registry database ({type(exc).__name__})"
        ) from None
