"""The registry's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Identifiers are stored in their canonical text form (:mod:`ruta.ids`), instants as integer
microseconds since the Unix epoch (UTC), lists and audit snapshots as JSON text: the same bytes on
both backends, so reads are deterministic. The schema itself is created by the Alembic migrations
in ``registry/migrations``; these definitions must match them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "administrators",
    "audit_trail",
    "contracts",
    "members",
    "metadata",
    "published_configurations",
    "servers",
    "services",
    "subsystems",
]

#: Longest identifier text stored (five 64-character parts and separators).
ID_LENGTH = 324

metadata = MetaData()

members = Table(
    "members",
    metadata,
    Column("member_id", String(ID_LENGTH), primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
)

subsystems = Table(
    "subsystems",
    metadata,
    Column("subsystem_id", String(ID_LENGTH), primary_key=True),
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Index("ix_subsystems_member", "member_id"),
)

servers = Table(
    "servers",
    metadata,
    Column("server_id", String(ID_LENGTH), primary_key=True),
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), nullable=False),
    Column("address", Text, nullable=False),
    Column("audit_address", Text, nullable=False),
    Column("auth_cert_der", LargeBinary, nullable=False),
    Column("auth_cert_sha256", String(64), nullable=False, unique=True),
    # C2SP verifier-key text of the server's message-log key ("" until it is registered).
    Column("log_public_key", Text, nullable=False, server_default=""),
    Column("created_at_us", BigInteger, nullable=False),
    Index("ix_servers_member", "member_id"),
)

services = Table(
    "services",
    metadata,
    Column("service_id", String(ID_LENGTH), primary_key=True),
    Column(
        "subsystem_id", String(ID_LENGTH), ForeignKey("subsystems.subsystem_id"), nullable=False
    ),
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), nullable=False),
    Column("methods_json", Text, nullable=False),
    Column("file_descriptor_set", LargeBinary, nullable=False),
    Column("openapi", LargeBinary, nullable=True),
    Column("description", Text, nullable=False),
    Column("savings_citizen_minutes", Float, nullable=False),
    Column("savings_paper_forms", Integer, nullable=False),
    Column("savings_cost", Float, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Index("ix_services_member", "member_id"),
)

contracts = Table(
    "contracts",
    metadata,
    Column("contract_id", String(64), primary_key=True),
    Column("consumer_id", String(ID_LENGTH), ForeignKey("subsystems.subsystem_id"), nullable=False),
    Column("consumer_member_id", String(ID_LENGTH), nullable=False),
    Column("service_id", String(ID_LENGTH), ForeignKey("services.service_id"), nullable=False),
    Column("provider_member_id", String(ID_LENGTH), nullable=False),
    Column("methods_json", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("legal_basis", Text, nullable=False),
    Column("valid_from_us", BigInteger, nullable=False),
    Column("valid_until_us", BigInteger, nullable=True),
    Column("state", String(16), nullable=False),
    Column("requested_by", Text, nullable=False),
    Column("requested_at_us", BigInteger, nullable=False),
    Column("approved_by", Text, nullable=True),
    Column("approved_at_us", BigInteger, nullable=True),
    Column("activated_by", Text, nullable=True),
    Column("activated_at_us", BigInteger, nullable=True),
    Column("revoked_by", Text, nullable=True),
    Column("revoked_at_us", BigInteger, nullable=True),
    # Most calls per minute under the contract (0: no limit); migration 0006.
    Column("rate_limit_per_minute", BigInteger, nullable=False, server_default="0"),
    Index("ix_contracts_consumer_member", "consumer_member_id"),
    Index("ix_contracts_provider_member", "provider_member_id"),
    Index("ix_contracts_state", "state"),
)

administrators = Table(
    "administrators",
    metadata,
    Column("cert_sha256", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    # Every role the certificate carries: a JSON list of role texts (Administrator.roles).
    Column("roles", Text, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
)

audit_trail = Table(
    "audit_trail",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at_us", BigInteger, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("object_id", Text, nullable=False),
    Column("before_json", Text, nullable=True),
    Column("after_json", Text, nullable=True),
)

published_configurations = Table(
    "published_configurations",
    metadata,
    Column("serial", BigInteger, primary_key=True, autoincrement=False),
    Column("change_seq", BigInteger, nullable=False),
    Column("generated_at_us", BigInteger, nullable=False),
    Column("expires_at_us", BigInteger, nullable=False),
    Column("document", LargeBinary, nullable=False),
)
