"""Security servers' message-log verifier keys (published; the witness trusts them).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("servers") as batch:
        batch.add_column(sa.Column("log_public_key", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("servers") as batch:
        batch.drop_column("log_public_key")
