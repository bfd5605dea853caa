"""A leaf's signature with its certificates and OCSP response named by digest (format v2).

Every record a security server logs carries the same few signing certificates and OCSP
responses (a server staples the response it holds until it refreshes it, and a member signs
with one certificate). Since ``ruta-evidence/v2`` a leaf keeps a ``LoggedSignature``: the
signature value and batch path as signed, and the SHA-256 of each certificate and of the OCSP
response in place of their DER. The leaf hash commits to those digests, so a log stores each
distinct attachment once and a bundle carries each once (``certificates/<sha256>.der``,
``ocsp/<sha256>.der``); a verifier rebuilds the ``Signature`` after checking each attachment
against its digest, with the same strength as before (SHA-256 collision resistance).

:func:`detach_signature` is what the log's writer does per record; :func:`attach_signature` is
what a verifier does.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from typing import Final, NamedTuple

from google.protobuf.message import DecodeError

from ruta.faults import Fault, RutaError
from ruta.pki.certs import MAX_CHAIN_LENGTH
from ruta.v1 import log_pb2, transport_pb2

__all__ = [
    "DIGEST_BYTES",
    "Attachment",
    "AttachmentError",
    "AttachmentKind",
    "attach_signature",
    "attachment_path",
    "detach_signature",
    "referenced_attachments",
]

#: Length of an attachment's digest (SHA-256).
DIGEST_BYTES: Final = 32


class AttachmentError(RutaError):
    """A signature cannot be detached (unreadable, too long a chain) or attached (an
    attachment is missing or does not match its digest)."""

    default_fault = Fault.SERVER_PROVIDER_INVALID_MESSAGE


class AttachmentKind(enum.IntEnum):
    """What an attachment is (the log stores the number)."""

    CERTIFICATE = 1
    OCSP_RESPONSE = 2


class Attachment(NamedTuple):
    """One certificate or OCSP response a leaf names by its SHA-256."""

    digest: bytes
    kind: AttachmentKind
    content: bytes


def attachment_path(kind: AttachmentKind, digest: bytes) -> str:
    """Where a bundle carries an attachment: ``certificates/<hex>.der`` or ``ocsp/<hex>.der``."""
    folder = "certificates" if kind is AttachmentKind.CERTIFICATE else "ocsp"
    return f"{folder}/{digest.hex()}.der"


def detach_signature(signature: bytes) -> tuple[bytes, tuple[Attachment, ...]]:
    """Split a serialised ``Signature`` into the serialised ``LoggedSignature`` a v2 leaf keeps
    and the attachments it names (certificate, each chain certificate, the OCSP response if
    stapled), in that order.

    The two messages share field numbers and types, so the signature is parsed once, each DER
    is replaced by its digest in place and the result serialised: the bytes are exactly those of
    the equivalent ``LoggedSignature`` (unknown fields are dropped). Raises
    :class:`AttachmentError` if ``signature`` is not a readable ``Signature`` or its chain is
    longer than :data:`ruta.pki.certs.MAX_CHAIN_LENGTH`.
    """
    parsed = transport_pb2.Signature()
    try:
        parsed.ParseFromString(signature)
    except DecodeError:
        raise AttachmentError("the signature to log is not a readable Signature") from None
    if len(parsed.chain) > MAX_CHAIN_LENGTH:
        raise AttachmentError(
            f"the signature carries more than {MAX_CHAIN_LENGTH} chain certificates"
        )
    parsed.DiscardUnknownFields()
    attachments: list[Attachment] = []
    certificate = parsed.certificate
    if certificate:
        digest = hashlib.sha256(certificate).digest()
        attachments.append(Attachment(digest, AttachmentKind.CERTIFICATE, certificate))
        parsed.certificate = digest
    if parsed.chain:
        chain = list(parsed.chain)
        digests = [hashlib.sha256(der).digest() for der in chain]
        attachments.extend(
            Attachment(d, AttachmentKind.CERTIFICATE, der)
            for d, der in zip(digests, chain, strict=True)
        )
        parsed.chain[:] = digests
    response = parsed.ocsp_response
    if response:
        digest = hashlib.sha256(response).digest()
        attachments.append(Attachment(digest, AttachmentKind.OCSP_RESPONSE, response))
        parsed.ocsp_response = digest
    return parsed.SerializeToString(deterministic=True), tuple(attachments)


def referenced_attachments(
    logged: log_pb2.LoggedSignature,
) -> tuple[tuple[AttachmentKind, bytes], ...]:
    """Every attachment ``logged`` names, as (kind, digest), in its order."""
    named: list[tuple[AttachmentKind, bytes]] = []
    if logged.certificate_sha256:
        named.append((AttachmentKind.CERTIFICATE, logged.certificate_sha256))
    named.extend((AttachmentKind.CERTIFICATE, digest) for digest in logged.chain_sha256)
    if logged.ocsp_response_sha256:
        named.append((AttachmentKind.OCSP_RESPONSE, logged.ocsp_response_sha256))
    return tuple(named)


def attach_signature(
    logged: log_pb2.LoggedSignature,
    content_of: Callable[[AttachmentKind, bytes], bytes | None],
) -> transport_pb2.Signature:
    """The ``Signature`` ``logged`` stands for, each attachment taken from ``content_of(kind,
    digest)`` and checked against its digest.

    Raises :class:`AttachmentError` if a digest is not 32 bytes, an attachment is missing
    (``content_of`` returned ``None``) or its SHA-256 is not the digest that names it.
    """
    if len(logged.chain_sha256) > MAX_CHAIN_LENGTH:
        raise AttachmentError(
            f"the signature names more than {MAX_CHAIN_LENGTH} chain certificates"
        )

    def content(kind: AttachmentKind, digest: bytes) -> bytes:
        if len(digest) != DIGEST_BYTES:
            raise AttachmentError("an attachment digest is not a SHA-256")
        found = content_of(kind, digest)
        if found is None:
            raise AttachmentError(f"attachment {attachment_path(kind, digest)} is missing")
        if hashlib.sha256(found).digest() != digest:
            raise AttachmentError(
                f"attachment {attachment_path(kind, digest)} does not match its digest"
            )
        return found

    signature = transport_pb2.Signature(
        algorithm=logged.algorithm,
        value=logged.value,
        certificate=(
            content(AttachmentKind.CERTIFICATE, logged.certificate_sha256)
            if logged.certificate_sha256
            else b""
        ),
        chain=[content(AttachmentKind.CERTIFICATE, d) for d in logged.chain_sha256],
        ocsp_response=(
            content(AttachmentKind.OCSP_RESPONSE, logged.ocsp_response_sha256)
            if logged.ocsp_response_sha256
            else b""
        ),
    )
    if logged.HasField("batch"):
        signature.batch.CopyFrom(logged.batch)
    return signature
