"""Administrators keep every role their certificate carries (a JSON list), not only the first.

Existing rows get a one-element list from their ``role`` and ``member_id``; a downgrade keeps
the first role of each list (what the registry recorded before).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID_LENGTH = 324

_admins = sa.table(
    "administrators",
    sa.column("cert_sha256", sa.String),
    sa.column("role", sa.String),
    sa.column("member_id", sa.String),
    sa.column("roles", sa.Text),
)


def upgrade() -> None:
    with op.batch_alter_table("administrators") as batch:
        batch.add_column(sa.Column("roles", sa.Text, nullable=False, server_default="[]"))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_admins.c.cert_sha256, _admins.c.role, _admins.c.member_id))
    for sha, role, member in rows.all():
        text = role if member is None else f"{role}:{member}"
        conn.execute(
            _admins.update().where(_admins.c.cert_sha256 == sha).values(roles=json.dumps([text]))
        )
    with op.batch_alter_table("administrators") as batch:
        batch.alter_column("roles", server_default=None)
        batch.drop_column("role")
        batch.drop_column("member_id")


def downgrade() -> None:
    with op.batch_alter_table("administrators") as batch:
        batch.add_column(sa.Column("role", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("member_id", sa.String(_ID_LENGTH), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_admins.c.cert_sha256, _admins.c.roles))
    for sha, roles in rows.all():
        role, _, member = json.loads(roles)[0].partition(":")
        conn.execute(
            _admins.update()
            .where(_admins.c.cert_sha256 == sha)
            .values(role=role, member_id=member or None)
        )
    with op.batch_alter_table("administrators") as batch:
        batch.alter_column("role", server_default=None)
        batch.drop_column("roles")
