"""Signing and verifying the global configuration.

The registry serialises a ``GlobalConfiguration`` once, deterministically, signs those exact bytes
with its configuration-signing key and ships them inside a ``SignedGlobalConfiguration`` with its
certificate. A server verifies the signature over the bytes it received (it never re-serialises)
against the configuration-signing certificate of its :class:`ConfigurationAnchor`.

Determinism: :func:`sign_configuration` puts every repeated field in canonical order (members,
subsystems, servers and services by identifier; contracts by contract id; method names,
certificates and role issuers' fingerprints in byte order) before serialising with
``deterministic=True``, so equal content gives equal ``configuration`` bytes on every registry
node. Builders should still emit sorted
entries: the check is then a cheap scan and no copy is made. With an Ed25519 key, or an ECDSA
signer using deterministic nonces (RFC 6979), the whole signed document is byte-identical too.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import DecodeError

from ruta.globalconf.anchor import ConfigurationAnchor
from ruta.globalconf.errors import (
    ConfigurationSignatureError,
    ConfigurationTooLargeError,
    InvalidConfigurationError,
    OutdatedGlobalConfError,
)
from ruta.globalconf.limits import MAX_DOCUMENT_BYTES
from ruta.globalconf.view import GlobalConf, _datetime
from ruta.pki.keys import Signer
from ruta.v1 import globalconf_pb2

__all__ = [
    "canonicalise",
    "content_digest",
    "open_configuration",
    "sign_configuration",
    "verify_configuration",
]

_T = TypeVar("_T")


def canonicalise(conf: globalconf_pb2.GlobalConfiguration) -> globalconf_pb2.GlobalConfiguration:
    """Return ``conf`` with every repeated field in canonical order.

    Returns ``conf`` itself when it is already canonical (the common case for a builder that
    sorts), otherwise a sorted copy; ``conf`` is never modified.
    """
    if _is_canonical(conf):
        return conf
    out = globalconf_pb2.GlobalConfiguration()
    out.CopyFrom(conf)
    _sort_messages(out.members, _member_key)
    _sort_messages(out.subsystems, _subsystem_key)
    _sort_messages(out.servers, _server_key)
    _sort_messages(out.services, _service_key)
    _sort_messages(out.contracts, _contract_key)
    _sort_scalars(out.trust_anchors)
    _sort_scalars(out.ocsp_responder_certs)
    _sort_scalars(out.role_issuers.anchor_sha256)
    for service in out.services:
        _sort_scalars(service.methods)
    for contract in out.contracts:
        _sort_scalars(contract.methods)
    return out


def sign_configuration(
    conf: globalconf_pb2.GlobalConfiguration,
    *,
    signer: Signer,
    certificate: x509.Certificate,
) -> bytes:
    """Sign ``conf`` and return the serialised ``SignedGlobalConfiguration``.

    Runs the checks every client runs (:meth:`GlobalConf.from_proto`), so the registry never
    publishes a document its servers would refuse, then serialises the canonical form
    deterministically and signs it. Raises :class:`InvalidConfigurationError` or
    :class:`ConfigurationTooLargeError` for a document a client would refuse, and
    :class:`ConfigurationSignatureError` when ``signer`` does not hold ``certificate``'s key.
    ``conf`` is not modified.
    """
    canonical = canonicalise(conf)
    GlobalConf.from_proto(canonical)
    data = canonical.SerializeToString(deterministic=True)
    signature = signer.sign(data)
    try:
        _verify_signature(certificate, signature, data)
    except ConfigurationSignatureError:
        raise ConfigurationSignatureError(
            "the configuration signer's key does not match the configuration-signing "
            "certificate; check the registry's key and certificate files"
        ) from None
    signed = globalconf_pb2.SignedGlobalConfiguration(
        configuration=data,
        signature=signature,
        signer_certificate=certificate.public_bytes(Encoding.DER),
    ).SerializeToString(deterministic=True)
    if len(signed) > MAX_DOCUMENT_BYTES:
        raise ConfigurationTooLargeError(
            f"the signed configuration is {len(signed)} bytes; the limit is {MAX_DOCUMENT_BYTES}"
        )
    return signed


def verify_configuration(
    signed_bytes: bytes, anchor: ConfigurationAnchor, *, now: datetime
) -> GlobalConf:
    """Verify a signed configuration against ``anchor`` and return its indexed view.

    Checks, in order: the size bound, that the signer certificate is one the anchor lists and is
    valid at ``now``, the signature over the exact ``configuration`` bytes, the instance, the
    bounds and consistency of the content, and that it has not expired at ``now``.

    Raises :class:`ConfigurationTooLargeError`, :class:`ConfigurationSignatureError`,
    :class:`InvalidConfigurationError`, or :class:`OutdatedGlobalConfError` (expired).
    """
    view = open_configuration(signed_bytes, anchor, now=now)
    if view.is_expired(now):
        raise OutdatedGlobalConfError(
            f"global configuration serial {view.serial} expired at "
            f"{view.expires_at.isoformat()}; the registry must publish a fresh one"
        )
    return view


def open_configuration(
    signed_bytes: bytes,
    anchor: ConfigurationAnchor,
    *,
    now: datetime,
    previous: GlobalConf | None = None,
) -> GlobalConf:
    """As :func:`verify_configuration` but accept an expired document.

    For reading the last good copy from disk: its serial still guards against rollback even
    once it may no longer be used. When ``previous`` (a view this process verified earlier)
    has the same content apart from serial and timestamps, as when the registry re-signs an
    unchanged store, the result shares its indexes instead of rebuilding them.
    """
    if len(signed_bytes) > MAX_DOCUMENT_BYTES:
        raise ConfigurationTooLargeError(
            f"the signed configuration is {len(signed_bytes)} bytes; "
            f"the limit is {MAX_DOCUMENT_BYTES}"
        )
    envelope = globalconf_pb2.SignedGlobalConfiguration()
    try:
        envelope.ParseFromString(signed_bytes)
    except DecodeError:
        raise ConfigurationSignatureError("not a signed global configuration") from None
    certificate = _anchor_certificate(anchor, envelope.signer_certificate)
    if not (certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc):
        raise ConfigurationSignatureError(
            "the configuration-signing certificate is not valid now "
            f"(valid {certificate.not_valid_before_utc.isoformat()} to "
            f"{certificate.not_valid_after_utc.isoformat()}); the anchor must be renewed"
        )
    _verify_signature(certificate, envelope.signature, envelope.configuration)
    conf = globalconf_pb2.GlobalConfiguration()
    try:
        conf.ParseFromString(envelope.configuration)
    except DecodeError:
        raise InvalidConfigurationError("the signed configuration does not parse") from None
    if conf.instance != anchor.instance:
        raise InvalidConfigurationError(
            f"the configuration is for instance {conf.instance!r}, "
            f"the anchor for {anchor.instance!r}"
        )
    if not conf.HasField("generated_at") or not conf.HasField("expires_at"):
        raise InvalidConfigurationError("the configuration has no generated_at or expires_at")
    digest = content_digest(conf)
    if previous is not None and previous.content_digest == digest:
        return previous._restamped(
            serial=conf.serial,
            generated_at=_datetime(conf.generated_at),
            expires_at=_datetime(conf.expires_at),
            signed=signed_bytes,
        )
    return GlobalConf.from_proto(conf, signed=signed_bytes, content_digest=digest)


def content_digest(conf: globalconf_pb2.GlobalConfiguration) -> bytes:
    """SHA-256 of ``conf``'s deterministic serialisation without serial, generated_at and
    expires_at: equal for two publications of the same content. ``conf`` is left as given."""
    stamps = (
        conf.serial,
        conf.generated_at.SerializeToString(),
        conf.expires_at.SerializeToString(),
    )
    had = (conf.HasField("generated_at"), conf.HasField("expires_at"))
    conf.ClearField("serial")
    conf.ClearField("generated_at")
    conf.ClearField("expires_at")
    try:
        return hashlib.sha256(conf.SerializeToString(deterministic=True)).digest()
    finally:
        conf.serial = stamps[0]
        if had[0]:
            conf.generated_at.ParseFromString(stamps[1])
        if had[1]:
            conf.expires_at.ParseFromString(stamps[2])


def _anchor_certificate(anchor: ConfigurationAnchor, der: bytes) -> x509.Certificate:
    for cert in anchor.certificates:
        if cert.public_bytes(Encoding.DER) == der:
            return cert
    raise ConfigurationSignatureError(
        "the configuration is signed by a certificate the configuration anchor does not list"
    )


def _verify_signature(certificate: x509.Certificate, signature: bytes, data: bytes) -> None:
    key = certificate.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            raise ConfigurationSignatureError(
                "the configuration-signing key must be ECDSA P-256 or Ed25519"
            )
    except InvalidSignature:
        raise ConfigurationSignatureError(
            "the global configuration's signature does not verify"
        ) from None


# Canonical order.


def _member_key(m: globalconf_pb2.Member) -> tuple[str, ...]:
    return (m.id.instance, m.id.member_class, m.id.member_code)


def _subsystem_key(s: globalconf_pb2.Subsystem) -> tuple[str, ...]:
    m = s.id.member
    return (m.instance, m.member_class, m.member_code, s.id.subsystem_code)


def _server_key(s: globalconf_pb2.SecurityServer) -> tuple[str, ...]:
    m = s.id.member
    return (m.instance, m.member_class, m.member_code, s.id.server_code)


def _service_key(s: globalconf_pb2.Service) -> tuple[str, ...]:
    sub = s.id.subsystem
    m = sub.member
    return (m.instance, m.member_class, m.member_code, sub.subsystem_code, s.id.service_name)


def _contract_key(c: globalconf_pb2.Contract) -> tuple[str, ...]:
    return (c.contract_id,)


def _ordered(items: Sequence[_T], key: Callable[[_T], Any]) -> bool:
    keys = [key(item) for item in items]
    return all(a <= b for a, b in itertools.pairwise(keys))


def _identity(x: _T) -> _T:
    return x


def _is_canonical(conf: globalconf_pb2.GlobalConfiguration) -> bool:
    return (
        _ordered(conf.members, _member_key)
        and _ordered(conf.subsystems, _subsystem_key)
        and _ordered(conf.servers, _server_key)
        and _ordered(conf.services, _service_key)
        and _ordered(conf.contracts, _contract_key)
        and _ordered(conf.trust_anchors, _identity)
        and _ordered(conf.ocsp_responder_certs, _identity)
        and _ordered(conf.role_issuers.anchor_sha256, _identity)
        and all(_ordered(s.methods, _identity) for s in conf.services)
        and all(_ordered(c.methods, _identity) for c in conf.contracts)
    )


def _sort_messages(field: Any, key: Callable[[Any], Any]) -> None:
    if _ordered(field, key):
        return
    items = sorted(field, key=key)
    copies = [type(item)() for item in items]
    for copy, item in zip(copies, items, strict=True):
        copy.CopyFrom(item)
    del field[:]
    field.extend(copies)


def _sort_scalars(field: Any) -> None:
    if _ordered(field, _identity):
        return
    items = sorted(field)
    del field[:]
    field.extend(items)
