"""Large bodies on SQLite move out of the database into body segment files (ADR 0040).

``log_bodies`` gains the file reference of a body kept in its origin's segment file beside the
SQLite database (``segment``, ``position``, ``length``; ``ciphertext`` then stays empty) and a
partial index of the rows that have one, which retention reads to find segments no row names
any more. Existing rows are untouched: their bodies stay in the table and read as before.
PostgreSQL keeps every body in the table; the columns stay empty there.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("log_bodies", sa.Column("segment", sa.BigInteger, nullable=True))
    op.add_column("log_bodies", sa.Column("position", sa.BigInteger, nullable=True))
    op.add_column("log_bodies", sa.Column("length", sa.BigInteger, nullable=True))
    op.create_index(
        "ix_log_bodies_segment",
        "log_bodies",
        ["origin", "segment"],
        sqlite_where=sa.text("segment IS NOT NULL"),
        postgresql_where=sa.text("segment IS NOT NULL"),
    )


def downgrade() -> None:
    # Only for a database whose bodies are all in the table (no file references).
    op.drop_index("ix_log_bodies_segment", table_name="log_bodies")
    with op.batch_alter_table("log_bodies") as batch:
        batch.drop_column("length")
        batch.drop_column("position")
        batch.drop_column("segment")
