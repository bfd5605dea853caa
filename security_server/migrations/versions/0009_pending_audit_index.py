"""Records not yet in the audit indexes: ``log_leaves.pending`` and ``log_heads.indexed_size``.

A single exchange's commit on a SQLite file wrote ~12 WAL frames, ~4.8 of them pages of the four
audit indexes (message id, client, service, subject), each a page of its own for one or two
entries (bench/README.md, "Eleventh round"). A record may now be inserted ``pending`` (1): in
none of the four, which become partial indexes of the records with ``pending IS NULL``. The
writer puts pending records in the indexes later, all of them in one statement inside a later
group's transaction, so their pages are written once for many records. ``log_heads`` gains
``indexed_size``: an origin's leaves below it are indexed, the rest (at most
``MAX_PENDING_RECORDS``) pending, and a lookup reads those few on the primary key (ADR 0053).

Upgrade adds the two columns, both NULL (no row rewritten: every existing record is indexed, and
a head's NULL ``indexed_size`` means none of its leaves is pending, as for a head row written
without it), then rebuilds the four indexes partial. Downgrade indexes any pending record
first, then restores the full indexes and drops the columns. Every node and worker sharing the
database runs the new version (an old one's lookups cannot use the partial indexes).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_INDEXED = "pending IS NULL"
_SUBJECT_NAMED = "subject IS NOT NULL"

# name, columns, the condition before this migration (None: a full index)
_INDEXES: tuple[tuple[str, list[str], str | None], ...] = (
    ("ix_log_leaves_message_id", ["message_id"], None),
    ("ix_log_leaves_client_seq", ["client", "seq"], None),
    ("ix_log_leaves_service_seq", ["service", "method", "seq"], None),
    ("ix_log_leaves_origin_subject", ["origin", "subject", "seq"], _SUBJECT_NAMED),
)


def _create(name: str, columns: list[str], where: str | None) -> None:
    if where is None:
        op.create_index(name, "log_leaves", columns)
        return
    op.create_index(
        name,
        "log_leaves",
        columns,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    op.add_column("log_leaves", sa.Column("pending", sa.SmallInteger, nullable=True))
    op.add_column("log_heads", sa.Column("indexed_size", sa.BigInteger, nullable=True))
    for name, columns, before in _INDEXES:
        op.drop_index(name, table_name="log_leaves")
        _create(name, columns, _INDEXED if before is None else f"{before} AND {_INDEXED}")


def downgrade() -> None:
    op.execute("UPDATE log_leaves SET pending = NULL WHERE pending IS NOT NULL")
    for name, columns, before in _INDEXES:
        op.drop_index(name, table_name="log_leaves")
        _create(name, columns, before)
    op.drop_column("log_heads", "indexed_size")
    op.drop_column("log_leaves", "pending")
