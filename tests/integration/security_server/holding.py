"""A backend that runs a hook before answering, and a SQLite write lock held from the test
process: together they stall a provider's commit of the response it is about to send at a
deterministic moment (its request record and replay claim are durable already: they are committed
before the backend is called). Used for responses ahead of the provider's commit
(docs/adr/0038)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio

from ruta.ids import ServerId
from sandbox.examples.population import PopulationBackend
from tests.integration.security_server.bed import Bed

__all__ = ["HoldingBackend", "WriteLock", "log_file", "logged"]


@dataclass
class HoldingBackend(PopulationBackend):
    """The example backend; before answering the next call it runs :attr:`before_answer`."""

    before_answer: Callable[[], None] | None = None

    async def _get_person(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        hook, self.before_answer = self.before_answer, None
        if hook is not None:
            hook()
        return await super()._get_person(raw, context)


class WriteLock:
    """The write lock of a SQLite file, taken from this process (``BEGIN IMMEDIATE``): every
    other writer waits for it, up to its busy timeout, then fails."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None

    def take(self) -> None:
        connection = sqlite3.connect(self._path, timeout=10, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        self._connection = connection

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.execute("ROLLBACK")
            connection.close()


def log_file(instance: Bed, server: ServerId) -> Path:
    """``server``'s message-log SQLite file."""
    return instance.agencies[server].data_dir / "messagelog.db"


def logged(path: Path, message_id: str) -> list[tuple[Any, Any]]:
    """(direction, kind) of every record of ``message_id`` committed in the log at ``path``
    (read beside the running server)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = connection.execute(
            "SELECT direction, kind FROM log_leaves WHERE message_id = ?", (message_id,)
        ).fetchall()
    finally:
        connection.close()
    return [(direction, kind) for direction, kind in rows]
