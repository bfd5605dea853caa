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

Since ``ruta-evidence/v3`` a message signed in a batch of at least :data:`SHARE_MIN_BATCH`
names the part of its signature that every message of the batch shares (algorithm, value and
the digests above: a ``LoggedSignature`` without batch path) by SHA-256 as well
(``LoggedSignature.shared_sha256``), stored once as an attachment of kind ``SHARED_SIGNATURE``;
its leaf keeps only its own batch path and that digest. Under load, when batches are large,
the ~145 shared bytes no longer repeat in every record (bench/README.md, "Sixth round").
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from typing import Final, NamedTuple

from google.protobuf.message import DecodeError

from ruta.faults import Fault, RutaError
from ruta.memo import remember
from ruta.pki.certs import MAX_CHAIN_LENGTH
from ruta.v1 import log_pb2, transport_pb2
from ruta.wire import varint

__all__ = [
    "DIGEST_BYTES",
    "MAX_SHARED_SIGNATURE_BYTES",
    "SHARE_MIN_BATCH",
    "Attachment",
    "AttachmentError",
    "AttachmentKind",
    "attach_signature",
    "attachment_path",
    "detach_signature",
    "referenced_attachments",
    "resolve_shared",
]

#: Length of an attachment's digest (SHA-256).
DIGEST_BYTES: Final = 32
#: Smallest signing batch whose messages name their shared signature by digest. Storing it once
#: costs one attachment row (~225 bytes with its key) and saves ~110 bytes in every record
#: naming it, so it pays from about two records of a batch in one log; four leaves room for
#: a receiver that gets only some of a batch's messages.
SHARE_MIN_BATCH: Final = 4
#: Largest shared signature read: algorithm, value (an ECDSA or RSA signature, at most a few
#: hundred bytes) and at most ``2 + MAX_CHAIN_LENGTH`` digests.
MAX_SHARED_SIGNATURE_BYTES: Final = 4096


class AttachmentError(RutaError):
    """A signature cannot be detached (unreadable, too long a chain) or attached (an
    attachment is missing or does not match its digest)."""

    default_fault = Fault.SERVER_PROVIDER_INVALID_MESSAGE


class AttachmentKind(enum.IntEnum):
    """What an attachment is (the log stores the number)."""

    CERTIFICATE = 1
    OCSP_RESPONSE = 2
    #: The part of a batch signature its messages share (a serialised ``LoggedSignature``
    #: without batch path; evidence format v3).
    SHARED_SIGNATURE = 3


class Attachment(NamedTuple):
    """One certificate or OCSP response a leaf names by its SHA-256."""

    digest: bytes
    kind: AttachmentKind
    content: bytes


_FOLDERS: Final = {
    AttachmentKind.CERTIFICATE: ("certificates", "der"),
    AttachmentKind.OCSP_RESPONSE: ("ocsp", "der"),
    AttachmentKind.SHARED_SIGNATURE: ("signatures", "pb"),
}


def attachment_path(kind: AttachmentKind, digest: bytes) -> str:
    """Where a bundle carries an attachment: ``certificates/<hex>.der``, ``ocsp/<hex>.der`` or
    ``signatures/<hex>.pb``."""
    folder, suffix = _FOLDERS[kind]
    return f"{folder}/{digest.hex()}.{suffix}"


#: The tags of ``LoggedSignature.batch`` (field 6) and ``shared_sha256`` (field 7), both
#: length-delimited.
_BATCH_TAG: Final = bytes([6 << 3 | 2])
_SHARED_TAG: Final = bytes([7 << 3 | 2, DIGEST_BYTES])


#: The digests of the shared parts detached lately, by their bytes (a batch's messages are
#: logged close together); the oldest forgotten first beyond this many.
_MAX_SHARED_DIGESTS: Final = 256
_SHARED_DIGESTS: dict[bytes, bytes] = {}

#: The attachments of the certificates and OCSP responses detached lately, by kind and DER (a
#: server logs its own signing certificate and OCSP response, and its peers', in record after
#: record: looking the bytes up costs less than hashing them and building the attachment again);
#: the oldest forgotten first beyond this many.
_MAX_DER_ATTACHMENTS: Final = 256
_DER_ATTACHMENTS: dict[tuple[AttachmentKind, bytes], Attachment] = {}


def _attachment(kind: AttachmentKind, der: bytes) -> Attachment:
    """The attachment of ``der`` (its SHA-256, ``kind``, the bytes), remembered by its bytes."""
    key = (kind, der)
    found = _DER_ATTACHMENTS.get(key)
    if found is None:
        found = remember(
            _DER_ATTACHMENTS,
            key,
            Attachment(hashlib.sha256(der).digest(), kind, der),
            maxsize=_MAX_DER_ATTACHMENTS,
        )
    return found


#: What the fields after a signature's value detach to (the rest of the ``LoggedSignature``
#: and the attachments), by those bytes, for signatures whose rest holds only a certificate,
#: chain certificates and an OCSP response: a server logs the same few signers' rests in
#: record after record, so each is parsed, hashed and serialised once; the oldest forgotten
#: first beyond this many. Not thread-safe: used from one thread (a server's event loop).
_MAX_DETACHED_RESTS: Final = 64
_DETACHED_RESTS: dict[bytes, tuple[bytes, tuple[Attachment, ...]]] = {}
#: The lengths of the rests above: a rest of another length (a batch path's, under load) is not
#: looked up (no copy and hash of its bytes).
_DETACHED_REST_LENGTHS: set[int] = set()
#: The keys of the fields a rest above may hold: ``certificate`` (3), ``chain`` (4) and
#: ``ocsp_response`` (5), each length-delimited.
_REST_KEYS: Final = frozenset((3 << 3 | 2, 4 << 3 | 2, 5 << 3 | 2))


def _value_end(signature: bytes) -> int:
    """Where ``signature``'s value ends when it starts as deterministic serialisation writes
    a set algorithm (field 1, one byte) and a non-empty value (field 2, a length under 2**14
    written in as few bytes as it takes); 0 otherwise. Those bytes are then exactly what
    :func:`detach_signature` writes for the two fields."""
    if len(signature) < 5 or signature[0] != 0x08 or not 0 < signature[1] < 0x80:
        return 0
    if signature[2] != 0x12:
        return 0
    length = signature[3]
    start = 4
    if length >= 0x80:
        high = signature[4]
        if not 0 < high < 0x80:
            return 0
        length = length & 0x7F | high << 7
        start = 5
    end = start + length
    return end if length and end <= len(signature) else 0


def _plain_rest(rest: bytes) -> bool:
    """Whether ``rest`` is a sequence of well-formed length-delimited fields 3, 4 and 5 only
    (nothing that sets the algorithm, the value or a batch path, no unknown field)."""
    position, size = 0, len(rest)
    while position < size:
        if rest[position] not in _REST_KEYS:
            return False
        position += 1
        length, shift = 0, 0
        while True:
            if position >= size or shift > 28:
                return False
            byte = rest[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        position += length
    return position == size


def detach_signature(signature: bytes) -> tuple[bytes, tuple[Attachment, ...]]:
    """Split a serialised ``Signature`` into the serialised ``LoggedSignature`` a leaf keeps
    and the attachments it names (certificate, each chain certificate, the OCSP response if
    stapled, in that order; then the shared signature, if any).

    The two messages share field numbers and types, so the signature is parsed once, each DER
    is replaced by its digest in place and the result serialised: the bytes are exactly those of
    the equivalent ``LoggedSignature`` (unknown fields are dropped). A signature of a batch of at
    least :data:`SHARE_MIN_BATCH` is split once more: the result without its batch path is the
    shared attachment, and the leaf keeps the batch path and the shared part's digest (written
    out as protobuf's deterministic serialisation would: field 6, then field 7). Raises
    :class:`AttachmentError` if ``signature`` is not a readable ``Signature`` or its chain is
    longer than :data:`ruta.pki.certs.MAX_CHAIN_LENGTH`.
    """
    end = _value_end(signature)
    if end and len(signature) - end in _DETACHED_REST_LENGTHS:
        found = _DETACHED_RESTS.get(signature[end:])
        if found is not None:
            return signature[:end] + found[0], found[1]
    logged, attachments, batched = _detach(signature)
    if end and not batched and logged[:end] == signature[:end]:
        rest = signature[end:]
        if _plain_rest(rest):
            if len(_DETACHED_RESTS) >= _MAX_DETACHED_RESTS:
                _DETACHED_RESTS.pop(next(iter(_DETACHED_RESTS)))
                _DETACHED_REST_LENGTHS.clear()
                _DETACHED_REST_LENGTHS.update(map(len, _DETACHED_RESTS))
            _DETACHED_RESTS[rest] = (logged[end:], attachments)
            _DETACHED_REST_LENGTHS.add(len(rest))
    return logged, attachments


def _detach(signature: bytes) -> tuple[bytes, tuple[Attachment, ...], bool]:
    """:func:`detach_signature` by parsing ``signature`` and serialising the result; and
    whether it carries a batch path."""
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
        attached = _attachment(AttachmentKind.CERTIFICATE, certificate)
        attachments.append(attached)
        parsed.certificate = attached.digest
    if parsed.chain:
        chain = [_attachment(AttachmentKind.CERTIFICATE, der) for der in parsed.chain]
        attachments.extend(chain)
        parsed.chain[:] = [attached.digest for attached in chain]
    response = parsed.ocsp_response
    if response:
        attached = _attachment(AttachmentKind.OCSP_RESPONSE, response)
        attachments.append(attached)
        parsed.ocsp_response = attached.digest
    batched = parsed.HasField("batch")
    if parsed.batch.size < SHARE_MIN_BATCH:
        return parsed.SerializeToString(deterministic=True), tuple(attachments), batched
    batch = parsed.batch.SerializeToString(deterministic=True)
    parsed.ClearField("batch")
    shared = parsed.SerializeToString(deterministic=True)
    # The messages of a batch share these bytes: hashed once per batch, not per message.
    shared_digest = _SHARED_DIGESTS.get(shared)
    if shared_digest is None:
        shared_digest = remember(
            _SHARED_DIGESTS, shared, hashlib.sha256(shared).digest(), maxsize=_MAX_SHARED_DIGESTS
        )
    attachments.append(Attachment(shared_digest, AttachmentKind.SHARED_SIGNATURE, shared))
    logged = _BATCH_TAG + varint(len(batch)) + batch + _SHARED_TAG + shared_digest
    return logged, tuple(attachments), batched


def referenced_attachments(
    logged: log_pb2.LoggedSignature,
) -> tuple[tuple[AttachmentKind, bytes], ...]:
    """Every attachment ``logged`` names, as (kind, digest), in its order (for a leaf naming
    a shared signature, that one alone: resolve it to see what it names in turn)."""
    named: list[tuple[AttachmentKind, bytes]] = []
    if logged.shared_sha256:
        named.append((AttachmentKind.SHARED_SIGNATURE, logged.shared_sha256))
    if logged.certificate_sha256:
        named.append((AttachmentKind.CERTIFICATE, logged.certificate_sha256))
    named.extend((AttachmentKind.CERTIFICATE, digest) for digest in logged.chain_sha256)
    if logged.ocsp_response_sha256:
        named.append((AttachmentKind.OCSP_RESPONSE, logged.ocsp_response_sha256))
    return tuple(named)


ContentOf = Callable[[AttachmentKind, bytes], bytes | None]


def _content(content_of: ContentOf, kind: AttachmentKind, digest: bytes) -> bytes:
    """The attachment ``(kind, digest)`` from ``content_of``, checked against its digest."""
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


def resolve_shared(
    logged: log_pb2.LoggedSignature, content_of: ContentOf
) -> log_pb2.LoggedSignature:
    """``logged`` with its shared signature (format v3) filled in from ``content_of`` and
    checked against its digest; ``logged`` itself if it names none.

    Raises :class:`AttachmentError` if the shared signature is missing, does not match its
    digest, is longer than :data:`MAX_SHARED_SIGNATURE_BYTES` or not a ``LoggedSignature`` of
    fields 1-5 only, or if ``logged`` carries any of fields 1-5 beside it."""
    if not logged.shared_sha256:
        return logged
    if (
        logged.algorithm
        or logged.value
        or logged.certificate_sha256
        or logged.chain_sha256
        or logged.ocsp_response_sha256
    ):
        raise AttachmentError("the signature names its shared part but also carries it")
    found = _content(content_of, AttachmentKind.SHARED_SIGNATURE, logged.shared_sha256)
    path = attachment_path(AttachmentKind.SHARED_SIGNATURE, logged.shared_sha256)
    if len(found) > MAX_SHARED_SIGNATURE_BYTES:
        raise AttachmentError(f"attachment {path} exceeds {MAX_SHARED_SIGNATURE_BYTES} bytes")
    shared = log_pb2.LoggedSignature()
    try:
        shared.ParseFromString(found)
    except DecodeError:
        raise AttachmentError(f"attachment {path} is not a readable LoggedSignature") from None
    if shared.HasField("batch") or shared.shared_sha256:
        raise AttachmentError(f"attachment {path} carries a batch path or names another")
    if logged.HasField("batch"):
        shared.batch.CopyFrom(logged.batch)
    return shared


def attach_signature(
    logged: log_pb2.LoggedSignature, content_of: ContentOf
) -> transport_pb2.Signature:
    """The ``Signature`` ``logged`` stands for, each attachment (the shared signature first,
    if it names one) taken from ``content_of(kind, digest)`` and checked against its digest.

    Raises :class:`AttachmentError` if a digest is not 32 bytes, an attachment is missing
    (``content_of`` returned ``None``) or its SHA-256 is not the digest that names it, or a
    shared signature is not one (:func:`resolve_shared`).
    """
    logged = resolve_shared(logged, content_of)
    if len(logged.chain_sha256) > MAX_CHAIN_LENGTH:
        raise AttachmentError(
            f"the signature names more than {MAX_CHAIN_LENGTH} chain certificates"
        )

    def content(kind: AttachmentKind, digest: bytes) -> bytes:
        return _content(content_of, kind, digest)

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
