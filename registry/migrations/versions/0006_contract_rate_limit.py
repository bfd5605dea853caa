"""Contracts carry a rate limit: most calls per minute (0: none), enforced by the provider.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contracts") as batch:
        batch.add_column(
            sa.Column("rate_limit_per_minute", sa.BigInteger, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("contracts") as batch:
        batch.drop_column("rate_limit_per_minute")
