"""The registry's domain objects: who is who on the instance and who may call what.

Plain frozen dataclasses, built by the store from its rows and by the admin API from validated
requests. They carry identifiers from :mod:`ruta.ids` and aware UTC datetimes; they hold no I/O.
Their ``to_json()`` form is what the admin audit trail records as *before* / *after*.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId

__all__ = [
    "AdminRole",
    "Administrator",
    "AuditEntry",
    "Contract",
    "ContractState",
    "Member",
    "RegistrySnapshot",
    "Savings",
    "SecurityServer",
    "Service",
    "Subsystem",
    "admin_role_text",
]


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


@dataclass(frozen=True, slots=True)
class Member:
    """An organisation admitted to the instance."""

    id: MemberId
    name: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"id": str(self.id), "name": self.name, "created_at": _iso(self.created_at)}


@dataclass(frozen=True, slots=True)
class Subsystem:
    """A subsystem of a member; every caller and every provider is one."""

    id: SubsystemId
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"id": str(self.id), "created_at": _iso(self.created_at)}


@dataclass(frozen=True, slots=True)
class SecurityServer:
    """A member's security server: where it listens and the certificate it authenticates with."""

    id: ServerId
    address: str
    auth_cert_der: bytes
    audit_address: str
    created_at: datetime
    #: The server's message-log verifier key (C2SP vkey text; its name is the log's origin), or
    #: "" before it is registered.
    log_public_key: str = ""

    @property
    def auth_cert_sha256(self) -> str:
        """Lowercase hex SHA-256 of the authentication certificate's DER."""
        return hashlib.sha256(self.auth_cert_der).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "address": self.address,
            "audit_address": self.audit_address,
            "auth_cert_sha256": self.auth_cert_sha256,
            "log_public_key": self.log_public_key,
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Savings:
    """What one once-only call saves, as the provider declares it (zero when undeclared)."""

    citizen_minutes: float = 0.0
    paper_forms: int = 0
    cost: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "citizen_minutes": self.citizen_minutes,
            "paper_forms": self.paper_forms,
            "cost": self.cost,
        }


@dataclass(frozen=True, slots=True)
class Service:
    """A service a subsystem offers: a gRPC service with the descriptors that describe its
    messages, or a REST service with its OpenAPI description (``openapi``)."""

    id: ServiceId
    methods: tuple[str, ...]
    file_descriptor_set: bytes
    description: str
    savings: Savings
    created_at: datetime
    openapi: bytes = b""

    @property
    def descriptor_sha256(self) -> str:
        return hashlib.sha256(self.file_descriptor_set).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "methods": list(self.methods),
            "description": self.description,
            "descriptor_sha256": self.descriptor_sha256,
            "descriptor_size": len(self.file_descriptor_set),
            "openapi_size": len(self.openapi),
            "savings": self.savings.to_json(),
            "created_at": _iso(self.created_at),
        }


class ContractState(enum.StrEnum):
    """Life of a contract: requested by the consumer, approved by the provider, activated by the
    registry; revoked at any point. Only ``active`` contracts within their validity are in force."""

    REQUESTED = "requested"
    APPROVED = "approved"
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Contract:
    """Lets ``consumer`` call ``methods`` of ``service`` for ``purpose`` (deny by default).

    Each step records who took it and when. An empty ``methods`` means every method.
    """

    id: str
    consumer: SubsystemId
    service: ServiceId
    methods: tuple[str, ...]
    purpose: str
    legal_basis: str
    valid_from: datetime
    valid_until: datetime | None
    state: ContractState
    requested_by: str
    requested_at: datetime
    approved_by: str | None = None
    approved_at: datetime | None = None
    activated_by: str | None = None
    activated_at: datetime | None = None
    revoked_by: str | None = None
    revoked_at: datetime | None = None
    #: Most calls per minute under this contract (0: no limit), enforced by the provider.
    rate_limit_per_minute: int = 0

    def in_force(self, at: datetime) -> bool:
        """True when the contract is active and ``at`` lies within [valid_from, valid_until)."""
        if self.state is not ContractState.ACTIVE or at < self.valid_from:
            return False
        return self.valid_until is None or at < self.valid_until

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "consumer": str(self.consumer),
            "service": str(self.service),
            "methods": list(self.methods),
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "valid_from": _iso(self.valid_from),
            "valid_until": _iso(self.valid_until),
            "state": str(self.state),
            "requested_by": self.requested_by,
            "requested_at": _iso(self.requested_at),
            "approved_by": self.approved_by,
            "approved_at": _iso(self.approved_at),
            "activated_by": self.activated_by,
            "activated_at": _iso(self.activated_at),
            "revoked_by": self.revoked_by,
            "revoked_at": _iso(self.revoked_at),
            "rate_limit_per_minute": self.rate_limit_per_minute,
        }


class AdminRole(enum.StrEnum):
    """What an administrator's client certificate lets it do on the admin API."""

    REGISTRY_ADMIN = "registry-admin"
    MEMBER_ADMIN = "member-admin"
    AUDITOR = "auditor"
    AUDITOR_SUPERVISOR = "auditor-supervisor"
    AUDITOR_BODIES = "auditor-bodies"
    CITIZEN_SERVICE = "citizen-service"
    STATISTICS = "statistics"


def admin_role_text(role: AdminRole, member: MemberId | None = None) -> str:
    """How an administrator's role is written (as in a certificate request): the role's name,
    followed by ``:MEMBER`` for a member-scoped role (``member-admin``, ``auditor``,
    ``auditor-bodies``)."""
    return str(role) if member is None else f"{role}:{member}"


@dataclass(frozen=True, slots=True)
class Administrator:
    """A person or system holding an admin client certificate the registry issued.

    ``roles`` are all the roles the certificate carries, in its order, each as the admin API
    names it: ``registry-admin``, ``member-admin:INSTANCE/CLASS/CODE``,
    ``auditor:INSTANCE/CLASS/CODE``, ``auditor-supervisor`` or ``auditor-bodies[:MEMBER]`` (see
    :func:`admin_role_text`); the certificate grants every one of them.
    """

    name: str
    roles: tuple[str, ...]
    cert_sha256: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "roles": list(self.roles),
            "cert_sha256": self.cert_sha256,
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change in the admin audit trail: who did what to which object, and when.

    ``before`` / ``after`` are the object's JSON form (``None`` when it did not exist / was
    removed). Entries are numbered by ``seq`` in the order they committed.
    """

    seq: int
    at: datetime
    actor: str
    action: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": _iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "object_id": self.object_id,
            "before": self.before,
            "after": self.after,
        }


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """Everything the global configuration is built from, read in one transaction.

    ``change_seq`` is the audit-trail sequence number of the last change it includes, so two
    snapshots with the same ``change_seq`` hold the same content.
    """

    change_seq: int
    members: tuple[Member, ...] = field(default=())
    subsystems: tuple[Subsystem, ...] = field(default=())
    servers: tuple[SecurityServer, ...] = field(default=())
    services: tuple[Service, ...] = field(default=())
    contracts: tuple[Contract, ...] = field(default=())
