"""Witness state: the last cosigned tree head per log origin (registry/witness_store.py).

The table's shape is the contract of ``registry.witness_store.witness_checkpoints``; it is
written out here (not imported) so this revision stays what it was when it was written.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: ruta.checkpoint.MAX_ORIGIN_LENGTH and ruta.merkle.HASH_SIZE when this revision was written.
_ORIGIN_LENGTH = 255
_HASH_SIZE = 32


def upgrade() -> None:
    op.create_table(
        "witness_checkpoints",
        sa.Column("origin", sa.String(_ORIGIN_LENGTH), primary_key=True),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(_HASH_SIZE), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("witness_checkpoints")
