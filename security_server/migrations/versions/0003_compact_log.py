"""Compact message log: attachments stored once, narrower indexes, key-only tables without rowid.

- ``log_attachments``: the certificates and OCSP responses that format-2 leaves name by SHA-256
  (evidence format ``ruta-evidence/v2``). Leaves written before stay as they are (their bytes
  are hashed into the tree) and keep carrying their attachments inline.
- The client and service indexes of ``log_leaves`` no longer repeat the origin (one index per
  audit lookup stays: message id, time, client, service and method, subject; the time's
  ``(origin, logged_at)`` and the subject's ``(origin, subject, seq)`` from 0002 are kept).
- ``log_nodes`` no longer holds level 0 of the tree: each leaf hash is read from its record's
  ``leaf_hash`` (always equal; the log checked it on every open).
- On SQLite, ``log_nodes``, ``log_heads`` and ``seen_messages`` are rebuilt ``WITHOUT ROWID``:
  each row is kept once, in its primary key's tree, instead of in the table and again in the
  key's index (for the head, one page less written by every commit). The
  rebuild copies every node once (minutes for a log of many millions of records).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ORIGIN = 255
_IDENTIFIER = 324  # ruta.ids.MAX_IDENTIFIER_LENGTH at the time of writing
_MESSAGE_ID = 128

_OLD_INDEXES = (
    ("ix_log_leaves_client", ["origin", "client", "seq"]),
    ("ix_log_leaves_service", ["origin", "service", "method", "seq"]),
)
_NEW_INDEXES = (
    ("ix_log_leaves_client_seq", ["client", "seq"]),
    ("ix_log_leaves_service_seq", ["service", "method", "seq"]),
)


def _nodes_table(name: str, *, with_rowid: bool) -> None:
    op.create_table(
        name,
        sa.Column("origin", sa.String(_ORIGIN), primary_key=True),
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sqlite_with_rowid=with_rowid,
    )


def _heads_table(name: str, *, with_rowid: bool) -> None:
    op.create_table(
        name,
        sa.Column("origin", sa.String(_ORIGIN), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sqlite_with_rowid=with_rowid,
    )


def _claims_table(name: str, *, with_rowid: bool) -> None:
    op.create_table(
        name,
        sa.Column("client", sa.String(_IDENTIFIER), primary_key=True),
        sa.Column("message_id", sa.String(_MESSAGE_ID), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sqlite_with_rowid=with_rowid,
    )


def _rebuild(
    name: str, create: Callable[..., None], columns: str, *, with_rowid: bool, where: str = ""
) -> None:
    """Copy table ``name`` (the rows ``where`` selects) into a new one made by ``create`` and
    put it in its place."""
    staging = f"{name}_rebuilt"
    create(staging, with_rowid=with_rowid)
    op.execute(f"INSERT INTO {staging} ({columns}) SELECT {columns} FROM {name} {where}")  # noqa: S608
    op.drop_table(name)
    op.rename_table(staging, name)


def upgrade() -> None:
    op.create_table(
        "log_attachments",
        sa.Column("digest", sa.LargeBinary(32), primary_key=True),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )
    for name, _ in _OLD_INDEXES:
        op.drop_index(name, table_name="log_leaves")
    for name, columns in _NEW_INDEXES:
        op.create_index(name, "log_leaves", columns)
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(
            "log_nodes",
            _nodes_table,
            "origin, level, idx, hash",
            with_rowid=False,
            where="WHERE level > 0",
        )
        _rebuild("log_heads", _heads_table, "origin, size, root, updated_at", with_rowid=False)
        op.drop_index("ix_seen_messages_expires_at", table_name="seen_messages")
        _rebuild("seen_messages", _claims_table, "client, message_id, expires_at", with_rowid=False)
        op.create_index("ix_seen_messages_expires_at", "seen_messages", ["expires_at"])
    else:
        op.execute("DELETE FROM log_nodes WHERE level = 0")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_seen_messages_expires_at", table_name="seen_messages")
        _rebuild("seen_messages", _claims_table, "client, message_id, expires_at", with_rowid=True)
        op.create_index("ix_seen_messages_expires_at", "seen_messages", ["expires_at"])
        _rebuild("log_nodes", _nodes_table, "origin, level, idx, hash", with_rowid=True)
        _rebuild("log_heads", _heads_table, "origin, size, root, updated_at", with_rowid=True)
    op.execute(
        "INSERT INTO log_nodes (origin, level, idx, hash) "
        "SELECT origin, 0, seq, leaf_hash FROM log_leaves"
    )
    for name, _ in _NEW_INDEXES:
        op.drop_index(name, table_name="log_leaves")
    for name, columns in _OLD_INDEXES:
        op.create_index(name, "log_leaves", columns)
    op.drop_table("log_attachments")
