"""The one place the registry's model meets protobuf: model -> wire records and back.

The admin API answers with the records built here (``registry.v1`` ``*Record`` messages), the
global configuration carries the entries built here (``globalconf.v1`` messages), and the CLI prints
those same records through protobuf's JSON mapping (:func:`record_json`), so a record reads the
same over gRPC, in a script's JSON and, later, through the gateway. Requests are validated where
they arrive (:mod:`registry.admin_api`); what they carry is turned into the model here.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from registry.model import (
    AuditEntry,
    Contract,
    Member,
    SecurityServer,
    Service,
    Subsystem,
)
from registry.model import Savings as SavingsModel
from ruta.timestamps import to_timestamp
from ruta.v1 import globalconf_pb2, registry_pb2

__all__ = [
    "audit_record",
    "contract_entry",
    "contract_record",
    "member_entry",
    "member_record",
    "record_json",
    "savings_from_proto",
    "savings_proto",
    "server_entry",
    "server_record",
    "service_entry",
    "service_record",
    "subsystem_entry",
    "subsystem_record",
]


# --- shared pieces -------------------------------------------------------------------------------


def savings_proto(s: SavingsModel) -> globalconf_pb2.Savings:
    """The wire form of what a call saves (in service records and the global configuration)."""
    return globalconf_pb2.Savings(
        citizen_minutes=s.citizen_minutes, paper_forms=s.paper_forms, cost=s.cost
    )


def savings_from_proto(msg: globalconf_pb2.Savings) -> SavingsModel:
    """The model of a request's savings (its bounds are checked by the caller)."""
    return SavingsModel(
        citizen_minutes=msg.citizen_minutes, paper_forms=msg.paper_forms, cost=msg.cost
    )


# --- admin API records ---------------------------------------------------------------------------


def member_record(m: Member) -> registry_pb2.MemberRecord:
    return registry_pb2.MemberRecord(
        id=m.id.to_proto(), name=m.name, created_at=to_timestamp(m.created_at)
    )


def subsystem_record(s: Subsystem) -> registry_pb2.SubsystemRecord:
    return registry_pb2.SubsystemRecord(id=s.id.to_proto(), created_at=to_timestamp(s.created_at))


def server_record(s: SecurityServer) -> registry_pb2.ServerRecord:
    return registry_pb2.ServerRecord(
        id=s.id.to_proto(),
        address=s.address,
        auth_cert_sha256=s.auth_cert_sha256,
        audit_address=s.audit_address,
        created_at=to_timestamp(s.created_at),
        log_public_key=s.log_public_key,
    )


def service_record(s: Service) -> registry_pb2.ServiceRecord:
    return registry_pb2.ServiceRecord(
        id=s.id.to_proto(),
        methods=list(s.methods),
        description=s.description,
        savings=savings_proto(s.savings),
        descriptor_sha256=s.descriptor_sha256,
        descriptor_size=len(s.file_descriptor_set),
        created_at=to_timestamp(s.created_at),
        openapi_size=len(s.openapi),
    )


def contract_record(c: Contract) -> registry_pb2.ContractRecord:
    record = registry_pb2.ContractRecord(
        contract_id=c.id,
        consumer=c.consumer.to_proto(),
        service=c.service.to_proto(),
        methods=list(c.methods),
        purpose=c.purpose,
        legal_basis=c.legal_basis,
        valid_from=to_timestamp(c.valid_from),
        state=str(c.state),
        requested_by=c.requested_by,
        requested_at=to_timestamp(c.requested_at),
        approved_by=c.approved_by or "",
        activated_by=c.activated_by or "",
        revoked_by=c.revoked_by or "",
        rate_limit_per_minute=c.rate_limit_per_minute,
    )
    for name, value in (
        ("valid_until", c.valid_until),
        ("approved_at", c.approved_at),
        ("activated_at", c.activated_at),
        ("revoked_at", c.revoked_at),
    ):
        if value is not None:
            getattr(record, name).CopyFrom(to_timestamp(value))
    return record


def audit_record(e: AuditEntry) -> registry_pb2.AuditRecord:
    return registry_pb2.AuditRecord(
        seq=e.seq,
        at=to_timestamp(e.at),
        actor=e.actor,
        action=e.action,
        object_id=e.object_id,
        before_json="" if e.before is None else json.dumps(e.before, sort_keys=True),
        after_json="" if e.after is None else json.dumps(e.after, sort_keys=True),
    )


# --- global configuration entries ----------------------------------------------------------------


def member_entry(m: Member) -> globalconf_pb2.Member:
    return globalconf_pb2.Member(id=m.id.to_proto(), name=m.name)


def subsystem_entry(s: Subsystem) -> globalconf_pb2.Subsystem:
    return globalconf_pb2.Subsystem(id=s.id.to_proto())


def server_entry(s: SecurityServer) -> globalconf_pb2.SecurityServer:
    return globalconf_pb2.SecurityServer(
        id=s.id.to_proto(),
        address=s.address,
        auth_cert_sha256=s.auth_cert_sha256,
        audit_address=s.audit_address,
        log_public_key=s.log_public_key,
    )


def service_entry(s: Service) -> globalconf_pb2.Service:
    return globalconf_pb2.Service(
        id=s.id.to_proto(),
        methods=sorted(s.methods),
        file_descriptor_set=s.file_descriptor_set,
        openapi=s.openapi,
        description=s.description,
        savings=savings_proto(s.savings),
    )


def contract_entry(c: Contract) -> globalconf_pb2.Contract:
    entry = globalconf_pb2.Contract(
        contract_id=c.id,
        consumer=c.consumer.to_proto(),
        service=c.service.to_proto(),
        methods=sorted(c.methods),
        purpose=c.purpose,
        legal_basis=c.legal_basis,
        valid_from=to_timestamp(c.valid_from),
        rate_limit_per_minute=c.rate_limit_per_minute,
    )
    if c.valid_until is not None:
        entry.valid_until.CopyFrom(to_timestamp(c.valid_until))
    return entry


# --- JSON ----------------------------------------------------------------------------------------


def record_json(record: Message) -> dict[str, Any]:
    """A record as protobuf's JSON mapping gives it (field names as in the .proto, fields at
    their defaults included, 64-bit integers as strings, times in RFC 3339): what the CLI prints
    with ``--json``."""
    return json_format.MessageToDict(
        record, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
