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

from registry import protomap
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
    verification: globalconf_pb2.VerificationParameters | None = None,
    role_issuers: Iterable[str] | None = None,
) -> globalconf_pb2.GlobalConfiguration:
    """The global configuration for ``snapshot`` (unsigned), canonical and deterministic.

    ``trust_anchors`` and ``ocsp_responder_certs`` are DER certificates; ``verification`` the
    OCSP freshness and clock skew every verifier applies (``None``: the defaults);
    ``role_issuers`` the lowercase hex SHA-256 fingerprints of the trust anchors whose
    certificates carry roles (``None``: the field is left out, as before it existed). Raises
    nothing of its own; :func:`ruta.globalconf.sign_configuration` checks the bounds a client
    enforces, and that every role issuer is one of ``trust_anchors``.
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
    if verification is not None:
        conf.verification.CopyFrom(verification)
    if role_issuers is not None:
        conf.role_issuers.SetInParent()
        conf.role_issuers.anchor_sha256.extend(sorted(set(role_issuers)))
    conf.members.extend(
        protomap.member_entry(m) for m in sorted(snapshot.members, key=lambda e: e.id)
    )
    conf.subsystems.extend(
        protomap.subsystem_entry(s) for s in sorted(snapshot.subsystems, key=lambda e: e.id)
    )
    conf.servers.extend(
        protomap.server_entry(s) for s in sorted(snapshot.servers, key=lambda e: e.id)
    )
    conf.services.extend(
        protomap.service_entry(s) for s in sorted(snapshot.services, key=lambda e: e.id)
    )
    published = (
        c
        for c in snapshot.contracts
        if contract_published(c, generated_at=generated_at, expires_at=expires_at)
    )
    conf.contracts.extend(protomap.contract_entry(c) for c in sorted(published, key=lambda c: c.id))
    return conf
