"""The sql backend: read-only, parameterised queries through SQLAlchemy Core (async).

Any database SQLAlchemy reaches with an async driver works; SQLite (aiosqlite) and PostgreSQL
(psycopg) are tested. Three layers keep it read-only: the query must be one ``SELECT`` (or
``WITH … SELECT``) statement with no writing keyword; request values travel only as bind
parameters, never as SQL text; and every call runs in a read-only transaction (PostgreSQL
``SET TRANSACTION READ ONLY``; SQLite opened ``mode=ro`` with ``query_only``). The database
account should still be one that can only read.

The URL (which may hold a password) appears in no error and no log line: failures are logged by
exception class and backend name only, and SQLAlchemy is told to hide bound values.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from google.protobuf.descriptor import FieldDescriptor
from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    LargeBinary,
    Select,
    String,
    bindparam,
    false,
    literal_column,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import TypeEngine

from adapters.backends import Backend, BoundCall
from adapters.errors import (
    AdapterConfigError,
    InvalidRequestError,
    LegacyUnavailableError,
    ResultTooLargeError,
)
from adapters.spec import MethodSpec, SqlBackendSpec

__all__ = ["ReadOnlyQueryError", "SqlBackend", "check_read_only"]

_log = logging.getLogger(__name__)

#: Words that make a statement write, lock, change the session or reach outside the database.
_FORBIDDEN: Final = frozenset(
    {
        "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "DROP", "ALTER", "CREATE",
        "TRUNCATE", "GRANT", "REVOKE", "ATTACH", "DETACH", "PRAGMA", "VACUUM", "ANALYZE",
        "REINDEX", "COPY", "CALL", "EXEC", "EXECUTE", "DO", "LOCK", "SET", "RESET", "INTO",
        "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "BEGIN", "LISTEN", "NOTIFY", "LOAD",
        "PREPARE", "DEALLOCATE", "DISCARD", "REFRESH", "CLUSTER", "COMMENT", "SECURITY",
        "IMPORT", "SHUTDOWN", "HANDLER", "OUTFILE", "DUMPFILE",
    }
)  # fmt: skip
_TOKEN_RE = re.compile(
    r"(?P<line>--[^\n]*)|(?P<block>/\*.*?\*/)|(?P<str>'(?:[^']|'')*')|(?P<ident>\"(?:[^\"]|\"\")*\")",
    re.DOTALL,
)
_WORD_RE = re.compile(r"(?<![A-Za-z0-9_$])[A-Za-z_][A-Za-z0-9_$]*")
_FIRST_RE = re.compile(r"(SELECT|WITH)(?![A-Za-z0-9_$])", re.IGNORECASE)


class ReadOnlyQueryError(ValueError):
    """A query is not a single read-only SELECT statement."""


def _split(sql: str) -> tuple[str, str]:
    """``(without_comments, masked)``: the query with comments removed (literals kept), and the
    same with string literals and quoted identifiers blanked, for keyword checks."""
    kept: list[str] = []
    masked: list[str] = []
    last = 0
    for match in _TOKEN_RE.finditer(sql):
        kept.append(sql[last : match.start()])
        masked.append(sql[last : match.start()])
        if match.lastgroup in {"line", "block"}:
            kept.append(" ")
            masked.append(" ")
        else:
            kept.append(match.group(0))
            masked.append(" '' ")
        last = match.end()
    kept.append(sql[last:])
    masked.append(sql[last:])
    return "".join(kept), "".join(masked)


def check_read_only(sql: str) -> str:
    """Return ``sql`` without comments if it is one read-only ``SELECT``/``WITH`` statement.

    Raises :class:`ReadOnlyQueryError` saying why not: more than one statement, a first word other
    than SELECT or WITH, a writing or session keyword (INSERT, UPDATE, INTO, SET, PRAGMA, …), an
    unterminated literal or comment, or dollar quoting.
    """
    without_comments, masked = _split(sql)
    if "'" in masked.replace(" '' ", "") or '"' in masked or "/*" in masked:
        raise ReadOnlyQueryError("has an unterminated string, identifier or comment")
    if "$" in masked:
        raise ReadOnlyQueryError("uses dollar quoting or $-parameters; use :name parameters")
    body = masked.strip()
    if body.endswith(";"):
        body = body[:-1].rstrip()
        without_comments = without_comments.rstrip().removesuffix(";")
    if ";" in body:
        raise ReadOnlyQueryError("must be a single statement")
    words = [w.upper() for w in _WORD_RE.findall(body)]
    if not _FIRST_RE.match(body):
        raise ReadOnlyQueryError("must start with SELECT or WITH")
    bad = sorted(set(words) & _FORBIDDEN)
    if bad:
        raise ReadOnlyQueryError(
            f"uses {', '.join(bad)}, which is not allowed in a read-only query"
        )
    return without_comments.strip()


class SqlBackend(Backend):
    """A database answering read-only queries."""

    kind = "sql"
    answers_rows = True

    def __init__(self, name: str, spec: SqlBackendSpec, base_dir: Path) -> None:
        super().__init__(name, timeout=spec.timeout_seconds)
        self.spec = spec
        try:
            url = make_url(spec.url.get_secret_value())
        except (sa_exc.ArgumentError, ValueError):
            raise AdapterConfigError(f"backends.{name}.url: is not a valid database URL") from None
        self.dialect = url.get_backend_name()
        self._url = _read_only_sqlite(url, base_dir) if self.dialect == "sqlite" else url
        self._engine: AsyncEngine | None = None

    def _engine_now(self) -> AsyncEngine:
        if self._engine is None:
            options: dict[str, Any] = {"hide_parameters": True, "pool_pre_ping": True}
            if self.dialect != "sqlite":
                options["pool_size"] = self.spec.pool_size
            try:
                self._engine = create_async_engine(self._url, **options)
            except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
                _log.warning(
                    "backend %s: cannot build the engine (%s)", self.name, type(exc).__name__
                )
                raise LegacyUnavailableError(
                    f"database backend {self.name} cannot be used: its driver is not installed "
                    "or its URL is not supported"
                ) from None
        return self._engine

    def bind(
        self,
        method: str,
        spec: MethodSpec,
        params: frozenset[str],
        *,
        lists: Mapping[str, int] | None = None,
    ) -> BoundCall:
        """Check the method's query (read-only, parameters provided) and return its call.

        A parameter that carries a list (a repeated request field) binds as an expanding
        parameter: ``WHERE id IN :ids`` receives one bound value per element.
        """
        if spec.query is None:  # AdapterFile validation requires it; an API caller may not
            raise AdapterConfigError(f"methods.{method}: a sql method needs a query")
        try:
            query = check_read_only(spec.query)
        except ReadOnlyQueryError as exc:
            raise AdapterConfigError(f"methods.{method}.query: {exc}") from None
        statement = text(query)
        binds = frozenset(statement.compile().params)
        missing = sorted(binds - params)
        if missing:
            raise AdapterConfigError(
                f"methods.{method}.query: uses :{', :'.join(missing)} but the request provides "
                f"no such parameter (parameters: {', '.join(sorted(params)) or 'none'})"
            )
        lists = lists or {}
        expanding = sorted(binds & set(lists))
        if expanding:
            statement = statement.bindparams(
                *(bindparam(n, expanding=True, type_=_sql_type(lists[n])) for n in expanding)
            )
        return _SqlCall(self, method, statement, binds)

    async def aclose(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def _begin_read_only(self, conn: AsyncConnection, budget: float) -> None:
        if self.dialect == "postgresql":
            await conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            # A whole number of milliseconds, formatted here: no request value reaches this text.
            millis = max(1, int(budget * 1000))
            await conn.exec_driver_sql(f"SET LOCAL statement_timeout = {millis}")
        elif self.dialect == "sqlite":
            await conn.exec_driver_sql("PRAGMA query_only = ON")

    def failure(self, exc: Exception) -> Exception:
        """The adapter error for a database exception, logged by class name only."""
        orig = getattr(exc, "orig", None)
        _log.warning(
            "backend %s: database call failed (%s%s)",
            self.name,
            type(exc).__name__,
            f"/{type(orig).__name__}" if orig is not None else "",
        )
        if isinstance(exc, sa_exc.DataError):
            return InvalidRequestError(
                f"database backend {self.name} refused a request value (wrong type or format)"
            )
        return LegacyUnavailableError(f"database backend {self.name} is unavailable or failed")


def _sql_type(proto_type: int) -> TypeEngine[Any]:
    """The SQL type of a list element (typed, so an empty list still compiles everywhere)."""
    if proto_type in _PROTO_INTEGERS:
        return BigInteger()
    if proto_type in {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}:
        return Float()
    if proto_type == FieldDescriptor.TYPE_BOOL:
        return Boolean()
    if proto_type == FieldDescriptor.TYPE_BYTES:
        return LargeBinary()
    return String()


_PROTO_INTEGERS: Final = frozenset(
    {
        FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SFIXED64,
    }
)  # fmt: skip


def _read_only_sqlite(url: URL, base_dir: Path) -> URL:
    """Open SQLite files read-only (never create one), relative paths from the adapter file."""
    database = url.database or ""
    if database in {"", ":memory:"} or database.startswith("file:"):
        return url
    path = Path(database)
    if not path.is_absolute():
        path = base_dir / path
    uri = f"file:{quote(str(path), safe='/')}?mode=ro"
    return url.set(database=uri).update_query_dict({"uri": "true"})


class _SqlCall(BoundCall):
    def __init__(
        self, backend: SqlBackend, method: str, statement: TextClause, binds: frozenset[str]
    ) -> None:
        self.backend = backend
        self.method = method
        self.binds = binds
        # The query as a subquery, so the row bound is the database's LIMIT (or TOP, or FETCH
        # FIRST: SQLAlchemy writes each dialect's form) and at most max_rows + 1 rows travel.
        rows = statement.columns().subquery("ruta_rows")
        everything: Select[Any] = select(literal_column("*")).select_from(rows)
        self.limited: Select[Any] = everything.limit(backend.spec.max_rows + 1)
        # For checks: the query's columns, no rows, no full scan.
        self.empty: Select[Any] = everything.where(false())

    async def fetch(self, params: Mapping[str, Any], budget: float) -> Any:
        backend = self.backend
        values = {name: params[name] for name in self.binds}
        limit = backend.spec.max_rows
        engine = backend._engine_now()
        try:
            async with engine.connect() as conn:
                await backend._begin_read_only(conn, budget)
                result = await conn.execute(self.limited, values)
                rows = result.fetchall()
                await conn.rollback()
        except (sa_exc.DBAPIError, sa_exc.InterfaceError, OSError) as exc:
            raise backend.failure(exc) from None
        if len(rows) > limit:
            raise ResultTooLargeError(
                f"database backend {backend.name} returned more than {limit} rows for "
                f"{self.method}; narrow the query or raise max_rows"
            )
        return [dict(row._mapping) for row in rows]

    async def probe(self, budget: float) -> frozenset[str] | None:
        backend = self.backend
        values = dict.fromkeys(self.binds)
        engine = backend._engine_now()
        try:
            async with engine.connect() as conn:
                await backend._begin_read_only(conn, budget)
                result = await conn.execute(self.empty, values)
                columns = frozenset(result.keys())
                await conn.rollback()
        except (sa_exc.DBAPIError, sa_exc.InterfaceError, OSError) as exc:
            raise backend.failure(exc) from None
        return columns
