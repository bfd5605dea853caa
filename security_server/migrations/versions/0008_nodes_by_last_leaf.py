"""Tree nodes keyed by the leaf that completes them: ``log_nodes (origin, last_seq, level)``.

``log_nodes`` was keyed ``(origin, level, idx)``: every append writes the nodes its leaf
completes, one per level, each into the middle of the B-tree (after the last node of its level,
before the first of the next), so a commit dirtied one page per level written and split them
half full (bench/README.md, "Seventh round (branch perf-keys)": 1.48 WAL frames per
single-record commit, ~19 of a group of 64's 87). A node of ``level`` and index ``idx`` covers
the leaves up to ``last_seq = (idx + 1) * 2**level - 1``, and is completed by appending that
leaf: keyed ``(origin, last_seq, level)``, every node an append writes carries the new leaf's
sequence number, so every insert lands at the end of the B-tree (ADR 0046). ``idx`` is not
stored: it is ``(last_seq + 1) / 2**level - 1``.

Upgrade copies every node under its new key (hashes unchanged: every root, proof and
checkpoint reads the same bytes) and puts the new table in the old one's place; downgrade does
the reverse. Both run in the migration's transaction: a log is never left half converted.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ORIGIN = 255  # security_server.log.schema.MAX_ORIGIN_LENGTH at the time of writing
_STAGING = "log_nodes_rebuilt"


def _by_last_leaf(name: str) -> None:
    op.create_table(
        name,
        sa.Column("origin", sa.String(_ORIGIN), primary_key=True),
        sa.Column("last_seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sqlite_with_rowid=False,
    )


def _by_level(name: str) -> None:
    op.create_table(
        name,
        sa.Column("origin", sa.String(_ORIGIN), primary_key=True),
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sqlite_with_rowid=False,
    )


def _replace(select: str, columns: str, order: str) -> None:
    """Fill the staging table from ``log_nodes`` (in the staging key's order, so its B-tree is
    built at its end) and put it in ``log_nodes``' place."""
    op.execute(f"INSERT INTO {_STAGING} ({columns}) {select} ORDER BY {order}")
    op.drop_table("log_nodes")
    op.rename_table(_STAGING, "log_nodes")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE log_nodes RENAME CONSTRAINT {_STAGING}_pkey TO log_nodes_pkey")


def upgrade() -> None:
    _by_last_leaf(_STAGING)
    # idx * 2**level + 2**level - 1, as a shift on both backends (level < 64, idx < 2**63).
    _replace(
        "SELECT origin, ((idx + 1) << level) - 1, level, hash FROM log_nodes",
        "origin, last_seq, level, hash",
        "1, 2, 3",
    )


def downgrade() -> None:
    _by_level(_STAGING)
    _replace(
        "SELECT origin, level, ((last_seq + 1) >> level) - 1, hash FROM log_nodes",
        "origin, level, idx, hash",
        "1, 2, 3",
    )
