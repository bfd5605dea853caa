"""Message log: leaves, tree nodes, heads, encrypted bodies, seen message ids, checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ORIGIN = 255
_IDENTIFIER = 324  # ruta.ids.MAX_IDENTIFIER_LENGTH at the time of writing
_MESSAGE_ID = 128


def upgrade() -> None:
    op.create_table(
        "log_leaves",
        sa.Column("origin", sa.String(_ORIGIN), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("direction", sa.SmallInteger, nullable=False),
        sa.Column("logged_at", sa.BigInteger, nullable=False),
        sa.Column("message_id", sa.String(_MESSAGE_ID), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("client", sa.String(_IDENTIFIER), nullable=False),
        sa.Column("service", sa.String(_IDENTIFIER), nullable=False),
        sa.Column("method", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("record", sa.LargeBinary, nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_index("ix_log_leaves_message_id", "log_leaves", ["message_id"])
    op.create_index("ix_log_leaves_origin_logged_at", "log_leaves", ["origin", "logged_at"])
    op.create_index("ix_log_leaves_client", "log_leaves", ["origin", "client", "seq"])
    op.create_index("ix_log_leaves_service", "log_leaves", ["origin", "service", "method", "seq"])
    op.create_index("ix_log_leaves_subject", "log_leaves", ["subject"])

    op.create_table(
        "log_nodes",
        sa.Column("origin", sa.String(_ORIGIN), primary_key=True),
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "log_heads",
        sa.Column("origin", sa.String(_ORIGIN), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "log_bodies",
        sa.Column("origin", sa.String(_ORIGIN), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("nonce", sa.LargeBinary(12), nullable=True),
        sa.Column("ciphertext", sa.LargeBinary, nullable=True),
        sa.Column("purged_at", sa.BigInteger, nullable=True),
        sa.ForeignKeyConstraint(
            ["origin", "seq"],
            ["log_leaves.origin", "log_leaves.seq"],
            name="fk_log_bodies_leaf",
        ),
    )
    op.create_table(
        "seen_messages",
        sa.Column("client", sa.String(_IDENTIFIER), primary_key=True),
        sa.Column("message_id", sa.String(_MESSAGE_ID), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_seen_messages_expires_at", "seen_messages", ["expires_at"])
    op.create_table(
        "log_checkpoints",
        sa.Column("origin", sa.String(_ORIGIN), primary_key=True),
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("cosignature", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("cosigned_at", sa.BigInteger, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("log_checkpoints")
    op.drop_index("ix_seen_messages_expires_at", table_name="seen_messages")
    op.drop_table("seen_messages")
    op.drop_table("log_bodies")
    op.drop_table("log_heads")
    op.drop_table("log_nodes")
    for name in (
        "ix_log_leaves_subject",
        "ix_log_leaves_service",
        "ix_log_leaves_client",
        "ix_log_leaves_origin_logged_at",
        "ix_log_leaves_message_id",
    ):
        op.drop_index(name, table_name="log_leaves")
    op.drop_table("log_leaves")
