"""Building the global configuration document from a store snapshot, deterministically.

The same snapshot and arguments always give the same :class:`GlobalConfiguration` (every repeated
field in the canonical order of :func:`ruta.globalconf.canonicalise`), so several registry nodes on
one store sign byte-identical ``configuration`` bytes. Only contracts in force are published: state
``active`` and a validity window that overlaps the document's lifetime (a server checks the exact
window at call time).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from registry.model import Contract, ContractState, RegistrySnapshot
from ruta.timestamps import to_timestamp
from ruta.v1 import globalconf_pb2

__all__ = ["build_configuration", "contract_published"]


def contract_published(contract: Contract, *, generated_at: datetime, expires_at: datetime) -> bool:
    """True when ``contract`` belongs in a document valid from ``generated_at`` to
    ``expires_at``: it is active and its validity overlaps that interval."""
    if contract.state is not ContractState.ACTIVE or contract.valid_from >= expires_at:
        return False
    return contract.valid_until is None or contract.valid_until > generated_at


def build_configuration(
    snapshot: RegistrySnapshot,
    *,
    instance: str,
    serial: int,
    generated_at: datetime,
    expires_at: datetime,
    trust_anchors: Iterable[bytes],
    ocsp_responder_certs: Iterable[bytes] = (),
    witness_public_key: bytes = b"",
    witness_url: str = "",
) -> globalconf_pb2.GlobalConfiguration:
    """The global configuration for ``snapshot`` (unsigned), canonical and deterministic.

    ``trust_anchors`` and ``ocsp_responder_certs`` are DER certificates. Raises nothing of its
    own; :func:`ruta.globalconf.sign_configuration` checks the bounds a client enforces.
    """
    conf = globalconf_pb2.GlobalConfiguration(
        instance=instance,
        serial=serial,
        generated_at=to_timestamp(generated_at),
        expires_at=to_timestamp(expires_at),
        trust_anchors=sorted(set(trust_anchors)),
        ocsp_responder_certs=sorted(set(ocsp_responder_certs)),
        witness_public_key=witness_public_key,
        witness_url=witness_url,
    )
    for member in sorted(snapshot.members, key=lambda m: m.id):
        conf.members.add(id=member.id.to_proto(), name=member.name)
    for subsystem in sorted(snapshot.subsystems, key=lambda s: s.id):
        conf.subsystems.add(id=subsystem.id.to_proto())
    for server in sorted(snapshot.servers, key=lambda s: s.id):
        conf.servers.add(
            id=server.id.to_proto(),
            address=server.address,
            auth_cert_sha256=server.auth_cert_sha256,
            audit_address=server.audit_address,
            log_public_key=server.log_public_key,
        )
    for service in sorted(snapshot.services, key=lambda s: s.id):
        conf.services.add(
            id=service.id.to_proto(),
            methods=sorted(service.methods),
            file_descriptor_set=service.file_descriptor_set,
            description=service.description,
            savings=service.savings.to_proto(),
        )
    published = (
        c
        for c in snapshot.contracts
        if contract_published(c, generated_at=generated_at, expires_at=expires_at)
    )
    for contract in sorted(published, key=lambda c: c.id):
        entry = conf.contracts.add(
            contract_id=contract.id,
            consumer=contract.consumer.to_proto(),
            service=contract.service.to_proto(),
            methods=sorted(contract.methods),
            purpose=contract.purpose,
            legal_basis=contract.legal_basis,
            valid_from=to_timestamp(contract.valid_from),
        )
        if contract.valid_until is not None:
            entry.valid_until.CopyFrom(to_timestamp(contract.valid_until))
    return conf
