"""The witness's state in SQL: one row per log origin with the last cosigned tree head.

SQLAlchemy Core on the registry's engine (SQLite or PostgreSQL). The table is defined on this
module's own :data:`witness_metadata`; the registry's Alembic migrations create it (the table
definition below is the contract), and :func:`create_witness_tables` creates it directly for
tools and tests.

Compare-and-set is a single conditional statement, atomic on both backends: an ``UPDATE ... WHERE
origin = ? AND tree_size = ? AND root_hash = ?`` that must touch exactly one row, or an ``INSERT``
that the primary key refuses when another writer got there first.
"""

from __future__ import annotations

import time
from typing import Final

from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, String, Table, insert, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from registry.errors import StoreError
from registry.witness import MAX_WITNESS_TREE_SIZE, TreeHead
from ruta.checkpoint import MAX_ORIGIN_LENGTH
from ruta.merkle import HASH_SIZE

__all__ = [
    "SqlWitnessStateStore",
    "create_witness_tables",
    "witness_checkpoints",
    "witness_metadata",
]

#: Table name (stable: the registry's migrations create a table of this name and shape).
TABLE_NAME: Final = "witness_checkpoints"

witness_metadata = MetaData()

#: Last cosigned tree head per log origin.
witness_checkpoints = Table(
    TABLE_NAME,
    witness_metadata,
    # The checkpoint origin line (at most MAX_ORIGIN_LENGTH bytes of UTF-8).
    Column("origin", String(MAX_ORIGIN_LENGTH), primary_key=True),
    # Tree size of the last cosigned checkpoint (0 .. 2**63-1).
    Column("tree_size", BigInteger, nullable=False),
    # Its RFC 6962 root hash (32 bytes).
    Column("root_hash", LargeBinary(HASH_SIZE), nullable=False),
    # When it was stored: integer microseconds since the Unix epoch (UTC).
    Column("updated_at", BigInteger, nullable=False),
)


async def create_witness_tables(engine: AsyncEngine) -> None:
    """Create the witness table if it does not exist (tools and tests; the registry migrates)."""
    async with engine.begin() as conn:
        await conn.run_sync(witness_metadata.create_all)


def _now_us() -> int:
    return time.time_ns() // 1000


class SqlWitnessStateStore:
    """:class:`registry.witness.WitnessStateStore` on a SQLAlchemy async engine.

    The engine belongs to the caller (it is not disposed of here). Raises
    :class:`registry.errors.StoreError` when the database cannot be read or written; nothing is
    changed then.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, origin: str) -> TreeHead | None:
        """The tree head last cosigned for ``origin``, or ``None``."""
        query = select(witness_checkpoints.c.tree_size, witness_checkpoints.c.root_hash).where(
            witness_checkpoints.c.origin == origin
        )
        try:
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
        except DBAPIError:
            raise StoreError("the witness state could not be read") from None
        if row is None:
            return None
        return TreeHead(int(row.tree_size), bytes(row.root_hash))

    async def compare_and_set(self, origin: str, old: TreeHead | None, new: TreeHead) -> bool:
        """Store ``new`` for ``origin`` if the stored head is still ``old``; committed on ``True``.

        Raises :class:`StoreError` for a size out of range or a database failure.
        """
        if not 0 <= new.size <= MAX_WITNESS_TREE_SIZE or len(new.root) != HASH_SIZE:
            raise StoreError("the witness cannot store this tree head")
        values = {"tree_size": new.size, "root_hash": bytes(new.root), "updated_at": _now_us()}
        try:
            async with self._engine.begin() as conn:
                if old is None:
                    await conn.execute(insert(witness_checkpoints).values(origin=origin, **values))
                    return True
                result = await conn.execute(
                    sql_update(witness_checkpoints)
                    .where(
                        witness_checkpoints.c.origin == origin,
                        witness_checkpoints.c.tree_size == old.size,
                        witness_checkpoints.c.root_hash == bytes(old.root),
                    )
                    .values(**values)
                )
                return result.rowcount == 1
        except IntegrityError:
            return False  # another writer inserted this origin first
        except DBAPIError:
            raise StoreError("the witness state could not be written") from None
