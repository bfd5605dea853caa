"""The subject index of ``log_leaves`` holds only records that name a subject.

The citizen's record of access (migration 0002) reads a subject's records per origin through
``(origin, subject, seq)``; every lookup names a subject (``subject = :s``), so a record without
one was an index entry no query reads: one B-tree insert per append and ~31 bytes a record for
the many exchanges that are not about a person (ADR 0041, bench/README.md "Sixth round"). The
index is rebuilt partial (``WHERE subject IS NOT NULL``, on SQLite and PostgreSQL alike), which
both planners use for ``subject = :s``. No row is touched.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_NAME = "ix_log_leaves_origin_subject"
_COLUMNS = ["origin", "subject", "seq"]
_WHERE = "subject IS NOT NULL"


def upgrade() -> None:
    op.drop_index(_NAME, table_name="log_leaves")
    op.create_index(
        _NAME,
        "log_leaves",
        _COLUMNS,
        sqlite_where=sa.text(_WHERE),
        postgresql_where=sa.text(_WHERE),
    )


def downgrade() -> None:
    op.drop_index(_NAME, table_name="log_leaves")
    op.create_index(_NAME, "log_leaves", _COLUMNS)
