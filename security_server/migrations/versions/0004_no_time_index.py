"""The time index of ``log_leaves`` goes: a time range is a range of sequence numbers.

``logged_at`` never decreases along a tree (the writer stamps each group with the later of its
clock and the tree's last time, across restarts too, since the log's first release), so the
records of a time range are those between two sequence numbers, found by a search on the
primary key ``(origin, seq)`` (``security_server.log.store.first_seq_logged_at_or_after``).
The index ``(origin, logged_at)`` was one more B-tree written by every append: a page more
in every commit's write-ahead log, and 30-37 bytes a record (ADR 0037, bench/README.md
"Fifth round"). Dropping it touches no row: every record, node and proof stays as it was.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_log_leaves_origin_logged_at", table_name="log_leaves")


def downgrade() -> None:
    op.create_index("ix_log_leaves_origin_logged_at", "log_leaves", ["origin", "logged_at"])
