"""Registry store: members, subsystems, servers, services, contracts, administrators, audit
trail, published configurations.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = 324


def _id(name: str, **kwargs: object) -> sa.Column[str]:
    return sa.Column(name, sa.String(_ID), **kwargs)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "members",
        _id("member_id", primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "subsystems",
        _id("subsystem_id", primary_key=True),
        _id("member_id", nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.member_id"]),
    )
    op.create_index("ix_subsystems_member", "subsystems", ["member_id"])
    op.create_table(
        "servers",
        _id("server_id", primary_key=True),
        _id("member_id", nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("audit_address", sa.Text, nullable=False),
        sa.Column("auth_cert_der", sa.LargeBinary, nullable=False),
        sa.Column("auth_cert_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.member_id"]),
    )
    op.create_index("ix_servers_member", "servers", ["member_id"])
    op.create_table(
        "services",
        _id("service_id", primary_key=True),
        _id("subsystem_id", nullable=False),
        _id("member_id", nullable=False),
        sa.Column("methods_json", sa.Text, nullable=False),
        sa.Column("file_descriptor_set", sa.LargeBinary, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("savings_citizen_minutes", sa.Float, nullable=False),
        sa.Column("savings_paper_forms", sa.Integer, nullable=False),
        sa.Column("savings_cost", sa.Float, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(["subsystem_id"], ["subsystems.subsystem_id"]),
        sa.ForeignKeyConstraint(["member_id"], ["members.member_id"]),
    )
    op.create_index("ix_services_member", "services", ["member_id"])
    op.create_table(
        "contracts",
        sa.Column("contract_id", sa.String(64), primary_key=True),
        _id("consumer_id", nullable=False),
        _id("consumer_member_id", nullable=False),
        _id("service_id", nullable=False),
        _id("provider_member_id", nullable=False),
        sa.Column("methods_json", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("legal_basis", sa.Text, nullable=False),
        sa.Column("valid_from_us", sa.BigInteger, nullable=False),
        sa.Column("valid_until_us", sa.BigInteger, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("requested_at_us", sa.BigInteger, nullable=False),
        sa.Column("approved_by", sa.Text, nullable=True),
        sa.Column("approved_at_us", sa.BigInteger, nullable=True),
        sa.Column("activated_by", sa.Text, nullable=True),
        sa.Column("activated_at_us", sa.BigInteger, nullable=True),
        sa.Column("revoked_by", sa.Text, nullable=True),
        sa.Column("revoked_at_us", sa.BigInteger, nullable=True),
        sa.ForeignKeyConstraint(["consumer_id"], ["subsystems.subsystem_id"]),
        sa.ForeignKeyConstraint(["service_id"], ["services.service_id"]),
    )
    op.create_index("ix_contracts_consumer_member", "contracts", ["consumer_member_id"])
    op.create_index("ix_contracts_provider_member", "contracts", ["provider_member_id"])
    op.create_index("ix_contracts_state", "contracts", ["state"])
    op.create_table(
        "administrators",
        sa.Column("cert_sha256", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        _id("member_id", nullable=True),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "audit_trail",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_id", sa.Text, nullable=False),
        sa.Column("before_json", sa.Text, nullable=True),
        sa.Column("after_json", sa.Text, nullable=True),
    )
    op.create_table(
        "published_configurations",
        sa.Column("serial", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("change_seq", sa.BigInteger, nullable=False),
        sa.Column("generated_at_us", sa.BigInteger, nullable=False),
        sa.Column("expires_at_us", sa.BigInteger, nullable=False),
        sa.Column("document", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "published_configurations",
        "audit_trail",
        "administrators",
        "contracts",
        "services",
        "servers",
        "subsystems",
        "members",
    ):
        op.drop_table(table)
