"""Message log: the subject index leads with the origin and ends with the sequence number.

A subject's records (the auditor's search by subject, the citizen's record of access) are read
per origin in sequence order, newest first for the citizen; with ``(subject)`` alone the
planner walked the whole tree's primary key instead. ``(origin, subject, seq)`` answers both
orders from the index; it replaces the old one, so an append still maintains as many indexes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_log_leaves_origin_subject", "log_leaves", ["origin", "subject", "seq"])
    op.drop_index("ix_log_leaves_subject", table_name="log_leaves")


def downgrade() -> None:
    op.create_index("ix_log_leaves_subject", "log_leaves", ["subject"])
    op.drop_index("ix_log_leaves_origin_subject", table_name="log_leaves")
