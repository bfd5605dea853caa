"""The message logs of one member's nodes in a shared database, as the audit API reads them.

Several nodes of one member (several servers, or several nodes and workers of one server) may
share one PostgreSQL, each appending to a tree of its own origin (:mod:`ruta.node_logs`). Any of
them answers audits for all: :class:`MemberLogs` lists the member's trees in the database and
opens a reader at any one's committed head, each verifiable against its own cosigned
checkpoints. Evidence of a tree is exported by a server that holds the tree's log key: its own
log and its node logs (``exportable``); another server's log is exported by that server.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ruta.faults import Fault, RutaError
from ruta.ids import IdentifierError, ServerId
from ruta.node_logs import split_node_log_origin
from security_server.log import BodyKey, LogReader, MessageLog
from security_server.log.schema import MAX_ORIGIN_LENGTH, log_heads

__all__ = [
    "MAX_MEMBER_LOGS",
    "MemberLog",
    "MemberLogError",
    "MemberLogs",
    "OriginInUseError",
    "OriginLock",
    "log_server",
]

#: Most logs one listing returns (nodes times workers of one member; far above any real one).
MAX_MEMBER_LOGS: Final = 1000
#: Most trees read from the database for one listing (other members' too, if they share it).
_MAX_TREES_READ: Final = 10 * MAX_MEMBER_LOGS


class OriginInUseError(RutaError):
    """Another running process already writes this log tree in the shared database."""

    default_fault = Fault.SERVER_PROVIDER_INTERNAL_ERROR


class OriginLock:
    """Held for as long as a process writes one origin's tree in a shared PostgreSQL, so two
    nodes given the same name (``[server] node``) cannot both append to one tree: the second
    refuses to start. A session advisory lock on a connection of its own; released by
    :meth:`release` or when the process ends. Other databases need none (SQLite is one node's
    file, and its workers' origins differ by construction)."""

    def __init__(self, connection: AsyncConnection | None, key: int = 0) -> None:
        """Internal: use :meth:`acquire`."""
        self._connection = connection
        self._key = key

    @classmethod
    async def acquire(cls, engine: AsyncEngine, origin: str) -> OriginLock:
        """Take ``origin``'s lock. Raises :class:`OriginInUseError` if another session holds
        it."""
        if engine.dialect.name != "postgresql":
            return cls(None)
        digest = hashlib.sha256(b"ruta-log:" + origin.encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        connection = await engine.connect()
        try:
            taken = await connection.scalar(
                sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}
            )
            await connection.commit()
        except BaseException:
            await connection.close()
            raise
        if not taken:
            await connection.close()
            raise OriginInUseError(
                f"another running process already writes the log {origin!r} in this database; "
                "give each node of the server its own [server] node name"
            )
        return cls(connection, key)

    async def release(self) -> None:
        """Give the lock up. Idempotent. The connection goes back to the pool unlocked, or is
        discarded (ending its session, and the lock with it) when the unlock fails."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            await connection.commit()
        except sa.exc.SQLAlchemyError:
            await connection.invalidate()
        finally:
            await connection.close()


class MemberLogError(RutaError):
    """The asked log is not one of the member's logs in this database, or cannot be exported
    here."""

    default_fault = Fault.CLIENT_NOT_FOUND


@dataclass(frozen=True, slots=True)
class MemberLog:
    """One tree of the member's in the database: its origin, committed size, and whether this
    server can export its evidence."""

    origin: str
    size: int
    exportable: bool


def log_server(origin: str) -> ServerId | None:
    """The server whose log (or node log, :mod:`ruta.node_logs`) ``origin`` is, if it names
    one: the server whose published log key signs its checkpoints."""
    for candidate in (origin, (split_node_log_origin(origin) or ("", ""))[0]):
        try:
            return ServerId.parse(candidate)
        except IdentifierError:
            continue
    return None


class MemberLogs:
    """Readers of every log of ``server``'s member in ``engine``'s database; ``own`` is this
    process's log, answered without I/O. ``body_key`` opens the bodies of logs written with
    the same key (the workers of this node, and nodes sharing its keys folder)."""

    def __init__(
        self, *, engine: AsyncEngine, own: MessageLog, server: ServerId, body_key: BodyKey
    ) -> None:
        self._engine = engine
        self._own = own
        self._server = server
        self._body_key = body_key

    @property
    def own(self) -> MessageLog:
        """This process's log."""
        return self._own

    def is_member_log(self, origin: str) -> bool:
        """Whether ``origin`` names a log of a server of this member."""
        server = log_server(origin)
        return server is not None and server.member == self._server.member

    def is_exportable(self, origin: str) -> bool:
        """Whether this server's log key signs ``origin``'s checkpoints (its own log or one of
        its node logs), so it can sign an evidence bundle of it."""
        return origin == str(self._server) or log_server(origin) == self._server

    async def list(self) -> list[MemberLog]:
        """The member's logs in the database, by origin (at most :data:`MAX_MEMBER_LOGS`)."""
        stmt = (
            sa.select(log_heads.c.origin, log_heads.c.size)
            .order_by(log_heads.c.origin)
            .limit(_MAX_TREES_READ)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        logs = [
            MemberLog(
                origin=str(r.origin), size=int(r.size), exportable=self.is_exportable(r.origin)
            )
            for r in rows
            if self.is_member_log(str(r.origin))
        ]
        return logs[:MAX_MEMBER_LOGS]

    async def reader(self, origin: str, *, export: bool = False) -> LogReader:
        """A reader of log ``origin`` ("" or this process's origin: its own log) at its newest
        committed head. With ``export``, only a log this server can export.

        Raises :class:`MemberLogError` for an origin that is not one of the member's logs in
        this database (or not exportable here), and the log's errors if its stored tree
        disagrees with itself."""
        if not origin or origin == self._own.origin:
            return self._own
        if len(origin) > MAX_ORIGIN_LENGTH or not self.is_member_log(origin):
            raise MemberLogError(
                f"log {origin[:80]!r} is not a log of {self._server.member}'s servers"
            )
        if export and not self.is_exportable(origin):
            raise MemberLogError(
                f"log {origin[:80]!r} is signed with another server's key; export it from "
                "that server's audit API",
                fault=Fault.CLIENT_INVALID_REQUEST,
            )
        async with self._engine.connect() as conn:
            known = (
                await conn.execute(sa.select(log_heads.c.size).where(log_heads.c.origin == origin))
            ).one_or_none()
        if known is None:
            raise MemberLogError(f"no log {origin[:80]!r} is kept in this server's database")
        return await LogReader.open(self._engine, origin=origin, body_key=self._body_key)
