"""The security server's database: one engine by URL, SQLite or PostgreSQL, migrated at startup.

SQLite (``sqlite+aiosqlite:///PATH``) is the embedded default: every connection runs in WAL mode
with ``synchronous=FULL`` (a commit is on disk before it returns) and a busy timeout, set by a
connect event so no connection escapes them. PostgreSQL (``postgresql+psycopg://...``) is the
production backend; several nodes of one agency may share it. Both run the same SQLAlchemy Core
code and the same Alembic migrations (``security_server/migrations``), applied by
:func:`migrate` with the engine's own connection, so no ``alembic.ini`` is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ruta.faults import Fault, RutaError

__all__ = [
    "MIGRATIONS_DIR",
    "PLANNER_STATISTICS_INTERVAL_SECONDS",
    "SQLITE_ANALYSIS_LIMIT",
    "SQLITE_BUSY_TIMEOUT_MS",
    "VERSION_TABLE",
    "WRITE_TRANSACTION",
    "DatabaseError",
    "PlannerStatistics",
    "create_engine",
    "migrate",
    "open_database",
    "refresh_planner_statistics",
    "sqlite_file",
    "sqlite_sync_engine",
]

_log = logging.getLogger(__name__)

#: How long a SQLite connection waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
#: Alembic's version table for the security server (its own name, so a database shared with
#: another part never confuses their histories).
VERSION_TABLE: Final = "ruta_ss_alembic_version"
MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
#: Execution option naming a connection that will write: on SQLite its transactions start with
#: ``BEGIN IMMEDIATE``, so the write lock is taken up front and never upgraded mid-transaction.
WRITE_TRANSACTION: Final = "ruta_write_transaction"
#: Rows SQLite reads per index when it refreshes the query planner's statistics
#: (``PRAGMA analysis_limit``): enough to tell a selective index from a scan, tens of
#: milliseconds at a million records.
SQLITE_ANALYSIS_LIMIT: Final = 1000
#: How often a running server refreshes them (the log grows; the first refresh is at start).
PLANNER_STATISTICS_INTERVAL_SECONDS: Final = 600.0
#: Arbitrary constant key of the PostgreSQL advisory lock that serialises concurrent migrations.
_MIGRATION_LOCK_KEY: Final = 0x52555441_5353  # "RUTA" "SS"


class DatabaseError(RutaError):
    """The database URL is unusable or the schema cannot be brought up to date."""

    default_fault = Fault.SERVER_PROVIDER_INTERNAL_ERROR


def create_engine(url: str | sa.URL, **engine_options: Any) -> AsyncEngine:
    """Create the async engine for ``url`` with Ruta's connection settings.

    SQLite connections get WAL, ``synchronous=FULL``, a busy timeout and foreign keys on every
    connect, and Ruta emits the ``BEGIN`` itself (``BEGIN IMMEDIATE`` for connections carrying the
    :data:`WRITE_TRANSACTION` execution option). PostgreSQL connections are checked at checkout.
    Statement parameters are hidden from error messages, so a failure never carries message bytes
    into a log line. Raises :class:`DatabaseError` for a URL whose backend Ruta does not support.
    """
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(
            f"database backend {backend!r} is not supported; use sqlite or postgresql"
        )
    if backend == "postgresql":
        # A connection the server dropped (restart, failover) is replaced at checkout instead
        # of failing the next group of appends.
        engine_options.setdefault("pool_pre_ping", True)
    engine = create_async_engine(parsed, hide_parameters=True, **engine_options)
    if backend == "sqlite":
        _configure_sqlite(engine.sync_engine)
    return engine


def sqlite_file(url: str | sa.URL) -> str | None:
    """The file a SQLite URL names; ``None`` for any other database and for in-memory or URI
    (``file:``) SQLite, which have no file of their own beside which to keep anything."""
    parsed = sa.make_url(url)
    database = parsed.database or ""
    if (
        parsed.get_backend_name() != "sqlite"
        or database in ("", ":memory:")
        or database.startswith("file:")
        or parsed.query.get("mode") == "memory"
    ):
        return None
    return database


def sqlite_sync_engine(url: str | sa.URL) -> sa.Engine | None:
    """A synchronous engine (the standard library's ``sqlite3``) on the same SQLite file as
    ``url``, with the same connection settings (WAL, ``synchronous=FULL``, busy timeout, Ruta's
    own ``BEGIN``); ``None`` unless ``url`` names a SQLite file. For work that runs whole in a
    worker thread (the log writer's group transaction: one thread hop instead of one per
    statement). Use it from one thread only."""
    if sqlite_file(url) is None:
        return None
    parsed = sa.make_url(url)
    engine = sa.create_engine(
        parsed.set(drivername="sqlite+pysqlite"), hide_parameters=True, pool_size=1
    )
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Ruta issues BEGIN itself (below); the driver's implicit transactions are switched off.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_MS)}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_TRANSACTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # Several nodes may start at once against one database: one migrates, the others wait.
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
        )
    config = _alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` in one transaction.

    Safe to run at every start and from several nodes at once (PostgreSQL serialises them with
    an advisory lock). On failure nothing is half-applied where the backend supports
    transactional DDL (both supported backends do) and :class:`DatabaseError` is raised.
    """
    try:
        async with engine.connect() as raw:
            conn = await raw.execution_options(**{WRITE_TRANSACTION: True})
            async with conn.begin():
                await conn.run_sync(_upgrade, revision)
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(
            f"the security server's database schema could not be migrated ({type(exc).__name__})"
        ) from exc


async def open_database(url: str | sa.URL, **engine_options: Any) -> AsyncEngine:
    """Create the engine for ``url`` (see :func:`create_engine`) and migrate it to the latest
    schema. The caller owns the engine and disposes it. Raises :class:`DatabaseError`."""
    engine = create_engine(url, **engine_options)
    try:
        await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    return engine


async def refresh_planner_statistics(engine: AsyncEngine) -> None:
    """Refresh the query planner's statistics: on SQLite ``ANALYZE``, reading at most
    :data:`SQLITE_ANALYSIS_LIMIT` rows per index; on PostgreSQL nothing (autovacuum analyses).

    Without statistics SQLite answers an audit search by subject or message id by walking the
    whole log in sequence order, over a second at a million records, instead of through its
    index in milliseconds (bench/README.md, "Audit search"). Raises :class:`DatabaseError`;
    a failure leaves the previous statistics in place.
    """
    if engine.dialect.name != "sqlite":
        return
    try:
        async with engine.connect() as raw:
            conn = await raw.execution_options(**{WRITE_TRANSACTION: True})
            async with conn.begin():
                await conn.exec_driver_sql(f"PRAGMA analysis_limit={int(SQLITE_ANALYSIS_LIMIT)}")
                await conn.exec_driver_sql("ANALYZE")
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(
            f"the planner statistics could not be refreshed ({type(exc).__name__})"
        ) from exc


class PlannerStatistics:
    """Refreshes :func:`refresh_planner_statistics` at :meth:`start` and every ``interval``
    seconds until :meth:`stop`; a failed refresh is logged and retried at the next one."""

    def __init__(
        self, engine: AsyncEngine, *, interval: float = PLANNER_STATISTICS_INTERVAL_SECONDS
    ) -> None:
        self._engine = engine
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="planner-statistics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await refresh_planner_statistics(self._engine)
            except DatabaseError as exc:
                _log.warning("%s; retrying in %.0f s", exc.message, self._interval)
            await asyncio.sleep(self._interval)
