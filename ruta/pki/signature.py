"""Message signatures: sign the exact header bytes; verify everything about a signature.

A sender serialises a ``MessageHeader`` once, signs those bytes with its member's signing key
(ECDSA P-256/SHA-256) and sends a ``Signature`` with the signing certificate, any intermediates
and the OCSP response it held when signing (stapled). :class:`MessageVerifier` checks, as of the
signing time the header claims (docs/adr/0004-trust-ca-files-and-signing-time.md):

1. the algorithm and the sizes (:data:`MAX_SIGNATURE_BYTES`, certificate and chain bounds);
2. the certificate parses, chains to a trust anchor, is valid at signing time and has the
   signing profile (documentSigning EKU, digitalSignature/nonRepudiation, EC P-256 key);
3. the signature over the header bytes (for a batch signature: over the root the message's
   path leads to from its header bytes, see below);
4. the certificate names the claimed member;
5. the stapled OCSP response is authentic, fresh at signing time, and does not say the
   certificate was revoked at or before signing.

Each failure raises a :class:`~ruta.pki.errors.SignatureError` subclass with its own
:class:`~ruta.pki.errors.Reason`. Chain validation and OCSP parsing are cached per DER digest in
bounded LRUs, so a busy server pays for them once per certificate / response, not per message.

Batch signatures (docs/adr/0010-batch-signatures.md)
----------------------------------------------------

Under load a sender may sign ``n`` headers (``2 <= n <=`` :data:`MAX_BATCH_SIZE`) with one ECDSA
P-256/SHA-256 signature over ``BATCH_SIGNATURE_CONTEXT || uint64be(n) || root``, where:

- :data:`BATCH_SIGNATURE_CONTEXT` is ``b"\\x00ruta.v1.batch-signature\\x00"``. Its first byte
  0x00 would be a protobuf tag of field number 0, which is invalid, so the signed data can never
  be mistaken for a serialised ``MessageHeader`` (and a plain signature never over batch data:
  neither side signs or accepts plain header bytes that start with the context);
- ``uint64be(n)`` is the batch size as 8 big-endian bytes. Signing it binds the path's shape:
  without it a path of the same directions in a batch of another size leads to the same root
  (leaf 2 of 5 and of 6, say), and a ``BatchPath`` with a false size would still verify;
- ``root`` is the RFC 6962 Merkle tree hash over the leaves ``leaf_hash(header_bytes)``
  (``SHA-256(0x00 || header_bytes)``), in batch order.

Each message's ``Signature`` carries that same ``value``, certificate, chain and OCSP response,
plus ``batch = BatchPath(index=i, size=n, proof=...)`` with the RFC 9162 inclusion path of leaf
``i``. A batch of one is a plain signature (no ``batch`` field); a ``batch`` with ``size < 2``,
``size >`` :data:`MAX_BATCH_SIZE`, ``index >= size``, more than :data:`MAX_BATCH_PROOF_LENGTH`
hashes, a hash that is not 32 bytes, or a path whose length is not the one ``index`` and
``size`` determine is refused as :attr:`~ruta.pki.errors.Reason.MALFORMED_BATCH`. Otherwise
the verifier recomputes the root from the message's own header bytes and its path and checks the
signature over context, size and root (:attr:`~ruta.pki.errors.Reason.SIGNATURE_MISMATCH` when
it fails: a tampered header, a wrong path, another batch's signature). Every message stays
individually verifiable; everything else (algorithm, certificate and chain, member, OCSP at
signing time, revocation) is checked per message exactly as for a plain signature. A verified
``(signer, signed bytes, value)`` is remembered in a bounded LRU, so the other messages of the
same batch cost the path hashing only, never a skipped check: another value, size or root misses
the cache.
"""

from __future__ import annotations

import datetime
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification

from ruta.faults import Fault
from ruta.ids import MemberId
from ruta.merkle import (
    MerkleError,
    leaf_hash,
    root_and_inclusion_proofs,
    root_from_inclusion,
)
from ruta.pki.certs import (
    DOCUMENT_SIGNING,
    MAX_CERTIFICATE_BYTES,
    MAX_CHAIN_LENGTH,
    CertificateProfileError,
    member_id_of,
    parse_der_certificate,
)
from ruta.pki.errors import (
    CertificateInvalidError,
    CertificateRevokedError,
    InvalidSignatureError,
    OcspInvalidError,
    PkiError,
    Reason,
    SignerMismatchError,
)
from ruta.pki.keys import SignatureAlgorithm, Signer
from ruta.pki.ocsp import (
    DEFAULT_OCSP_FRESHNESS,
    MAX_CLOCK_SKEW,
    OcspStatus,
    authenticate_ocsp_response,
    check_ocsp_freshness,
)
from ruta.v1 import transport_pb2
from ruta.wire import varint

__all__ = [
    "BATCH_SIGNATURE_CONTEXT",
    "MAX_BATCH_PROOF_LENGTH",
    "MAX_BATCH_SIZE",
    "MAX_SIGNATURE_BYTES",
    "MAX_VERIFIER_CACHE_ENTRIES",
    "MessageSigner",
    "MessageVerifier",
    "VerifiedSigner",
    "sign_message",
]

#: Largest signature value accepted (a DER ECDSA P-256 signature is at most 72 bytes).
MAX_SIGNATURE_BYTES: Final = 128
#: Entries kept in each of the verifier's caches (validated chains, authenticated OCSP, verified
#: batch roots).
MAX_VERIFIER_CACHE_ENTRIES: Final = 4096
#: What a batch signature signs before the Merkle root; the leading 0x00 is never the first byte
#: of a serialised protobuf message (field number 0 is invalid).
BATCH_SIGNATURE_CONTEXT: Final = b"\x00ruta.v1.batch-signature\x00"
#: Most headers under one batch signature (a sender splits larger batches).
MAX_BATCH_SIZE: Final = 1024
#: Longest inclusion path in a batch: the depth of a tree of :data:`MAX_BATCH_SIZE` leaves.
MAX_BATCH_PROOF_LENGTH: Final = (MAX_BATCH_SIZE - 1).bit_length()

_DER: Final = serialization.Encoding.DER
#: The signature algorithm object, made once (immutable; checked by the library on each use).
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_ALGORITHMS: Final = {
    SignatureAlgorithm.ECDSA_P256_SHA256: transport_pb2.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256,
}


class MessageSigner:
    """Signs header bytes for one signer and signing certificate, checked to belong together
    once, with the certificate and chain encoded once (a server signs every message it sends
    with the same pair).

    Raises :class:`PkiError` when the signer is not ECDSA P-256 or its key does not belong to
    ``certificate``.
    """

    def __init__(
        self,
        *,
        signer: Signer,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
    ) -> None:
        algorithm = _ALGORITHMS.get(signer.algorithm)
        if algorithm is None:
            raise PkiError(
                f"message signatures use ECDSA P-256, not {signer.algorithm}",
                fault=Fault.CLIENT_INVALID_CONFIG,
            )
        if signer.public_key() != certificate.public_key():
            raise PkiError(
                "the signing key does not belong to the signing certificate",
                fault=Fault.CLIENT_INVALID_CONFIG,
            )
        self._signer = signer
        self._algorithm = algorithm
        self._certificate = certificate.public_bytes(_DER)
        self._chain = [c.public_bytes(_DER) for c in chain]
        # A plain signature's serialised fields but the value's and the staple's, in field
        # order (sign_serialised): the algorithm; the certificate and the chain.
        self._algorithm_field = _SIGNATURE_ALGORITHM_KEY + varint(algorithm) if algorithm else b""
        fields = (
            [_key_and_length(_SIGNATURE_CERTIFICATE_KEY, self._certificate)]
            if self._certificate
            else []
        )
        fields += (_key_and_length(_SIGNATURE_CHAIN_KEY, der) for der in self._chain)
        self._certificate_fields = b"".join(fields)
        # The latest staple and its serialised field (the same response for minutes).
        self._staple_field: tuple[bytes, bytes] = (b"", b"")

    def sign(self, header_bytes: bytes, *, ocsp_response: bytes) -> transport_pb2.Signature:
        """Sign ``header_bytes`` exactly as given, stapling ``ocsp_response`` (the DER OCSP
        response for the certificate held now, see :class:`~ruta.pki.ocsp.OcspClient`).

        Raises :class:`PkiError` for bytes that start with :data:`BATCH_SIGNATURE_CONTEXT`
        (never a header; signing them would vouch for a batch root)."""
        if header_bytes.startswith(BATCH_SIGNATURE_CONTEXT):
            raise PkiError(
                "header bytes start with the batch signature context; refusing to sign them",
                fault=Fault.CLIENT_INVALID_REQUEST,
            )
        return transport_pb2.Signature(
            algorithm=self._algorithm,
            value=self._signer.sign(header_bytes),
            certificate=self._certificate,
            chain=self._chain,
            ocsp_response=ocsp_response,
        )

    def sign_serialised(self, header_bytes: bytes, *, ocsp_response: bytes) -> tuple[bytes, bytes]:
        """:meth:`sign`, for a caller that needs the signature's bytes only: its value, and the
        ``Signature`` serialised, exactly as ``sign(...).SerializeToString(deterministic=True)``
        writes it (a unit test holds them to it), without building the message (a copy of the
        certificate and the staple into it, and one out). Raises as :meth:`sign`."""
        if header_bytes.startswith(BATCH_SIGNATURE_CONTEXT):
            raise PkiError(
                "header bytes start with the batch signature context; refusing to sign them",
                fault=Fault.CLIENT_INVALID_REQUEST,
            )
        value = self._signer.sign(header_bytes)
        staple = self._staple_field
        if staple[0] is not ocsp_response:
            field = _key_and_length(_SIGNATURE_OCSP_KEY, ocsp_response) if ocsp_response else b""
            staple = self._staple_field = (ocsp_response, field)
        return value, b"".join(
            (
                self._algorithm_field,
                _SIGNATURE_VALUE_KEY + varint(len(value)) if value else b"",
                value,
                self._certificate_fields,
                staple[1],
            )
        )

    def sign_batch(
        self, headers: Sequence[bytes], *, ocsp_response: bytes
    ) -> list[transport_pb2.Signature]:
        """Sign every header of ``headers`` with one ECDSA operation; one ``Signature`` each, in
        order (see the module text for the format). One header gets a plain signature, no
        headers an empty list. Raises :class:`PkiError` for more than :data:`MAX_BATCH_SIZE`
        headers (the caller splits) and as :meth:`sign` does."""
        if len(headers) <= 1:
            return [self.sign(h, ocsp_response=ocsp_response) for h in headers]
        if len(headers) > MAX_BATCH_SIZE:
            raise PkiError(
                f"a batch holds at most {MAX_BATCH_SIZE} headers, not {len(headers)}",
                fault=Fault.CLIENT_INVALID_REQUEST,
            )
        root, proofs = root_and_inclusion_proofs([leaf_hash(h) for h in headers])
        size = len(headers)
        value = self._signer.sign(_batch_signed_data(size, root))
        return [
            transport_pb2.Signature(
                algorithm=self._algorithm,
                value=value,
                certificate=self._certificate,
                chain=self._chain,
                ocsp_response=ocsp_response,
                batch=transport_pb2.BatchPath(index=i, size=size, proof=proof),
            )
            for i, proof in enumerate(proofs)
        ]


def sign_message(
    header_bytes: bytes,
    *,
    signer: Signer,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
    ocsp_response: bytes,
) -> transport_pb2.Signature:
    """Sign ``header_bytes`` exactly as given and return the ``Signature`` to send with them.

    ``certificate`` is the signer's signing certificate, ``chain`` any intermediates up to (not
    including) the trust anchor, ``ocsp_response`` the DER OCSP response for ``certificate``
    held now (see :class:`~ruta.pki.ocsp.OcspClient`). Raises :class:`PkiError` when the signer
    is not ECDSA P-256 or its key does not belong to ``certificate``; nothing is signed then.
    A sender that signs many messages keeps a :class:`MessageSigner` instead.
    """
    return MessageSigner(signer=signer, certificate=certificate, chain=chain).sign(
        header_bytes, ocsp_response=ocsp_response
    )


K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A bounded least-recently-used map (single event loop; no locking needed)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, slots=True)
class VerifiedSigner:
    """A signing certificate whose chain and profile were checked (cached per DER digest).

    ``valid_from``/``valid_until`` intersect the validity of every certificate in the chain, so a
    cached entry is reused only for signing times inside it.
    """

    certificate: x509.Certificate
    issuer: x509.Certificate
    member: MemberId
    public_key: ec.EllipticCurvePublicKey
    valid_from: datetime.datetime
    valid_until: datetime.datetime
    #: SHA-256 over the certificate and chain DER, as they arrived (with the length of each).
    digest: bytes


# Signature's wire keys (ruta/v1/transport.proto): algorithm (1, varint), value (2), certificate
# (3), chain (4, repeated), ocsp_response (5), all length-delimited but the first.
_SIGNATURE_ALGORITHM_KEY: Final = b"\x08"
_SIGNATURE_VALUE_KEY: Final = b"\x12"
_SIGNATURE_CERTIFICATE_KEY: Final = b"\x1a"
_SIGNATURE_CHAIN_KEY: Final = b"\x22"
_SIGNATURE_OCSP_KEY: Final = b"\x2a"


def _key_and_length(key: bytes, data: bytes) -> bytes:
    """A length-delimited field: its key, ``data``'s length as a varint, ``data``."""
    return key + varint(len(data)) + data


def _utc(at: datetime.datetime) -> datetime.datetime:
    return at.replace(tzinfo=datetime.UTC) if at.tzinfo is None else at.astimezone(datetime.UTC)


def _cert_invalid(reason: Reason, text: str) -> CertificateInvalidError:
    return CertificateInvalidError(text, reason=reason)


def _check_ecdsa(signer: VerifiedSigner, value: bytes, data: bytes) -> None:
    try:
        signer.public_key.verify(value, data, _ECDSA_SHA256)
    except InvalidSignature as exc:
        raise InvalidSignatureError(
            "signature does not match the header and the signing certificate",
            reason=Reason.SIGNATURE_MISMATCH,
        ) from exc


def _batch_signed_data(size: int, root: bytes) -> bytes:
    """What a batch signature signs: the context, the batch size (8 bytes) and the root."""
    return BATCH_SIGNATURE_CONTEXT + size.to_bytes(8, "big") + root


def _malformed_batch(text: str) -> InvalidSignatureError:
    return InvalidSignatureError(text, reason=Reason.MALFORMED_BATCH)


def _batch_root(header_bytes: bytes, batch: transport_pb2.BatchPath) -> bytes:
    """The root a batch path leads to from ``header_bytes``; refuses impossible shapes."""
    size, index, proof = batch.size, batch.index, batch.proof
    if not 2 <= size <= MAX_BATCH_SIZE:
        raise _malformed_batch(f"a batch holds 2 to {MAX_BATCH_SIZE} messages, not {size}")
    if index >= size:
        raise _malformed_batch(f"batch index {index} is not inside a batch of {size}")
    if len(proof) > MAX_BATCH_PROOF_LENGTH:
        raise _malformed_batch(
            f"batch path has {len(proof)} hashes; at most {MAX_BATCH_PROOF_LENGTH} are possible"
        )
    try:
        return root_from_inclusion(leaf_hash(header_bytes), index, size, proof)
    except MerkleError as exc:
        raise _malformed_batch(f"batch path does not fit its batch: {exc.message}") from None


class MessageVerifier:
    """Verifies message signatures against the trust anchors of an instance.

    Build one per set of trust anchors (one per global configuration) and reuse it: its caches
    make repeated verification cheap. ``trusted_responders`` pins OCSP responder certificates
    beyond the ones each issuer delegates to; ``ocsp_freshness`` and ``ocsp_clock_skew`` come
    from the configuration's ``VerificationParameters`` (:attr:`GlobalConf.ocsp_freshness`).
    Not thread-safe (one event loop).
    """

    def __init__(
        self,
        trust_anchors: Sequence[x509.Certificate],
        *,
        ocsp_freshness: datetime.timedelta = DEFAULT_OCSP_FRESHNESS,
        ocsp_clock_skew: datetime.timedelta = MAX_CLOCK_SKEW,
        trusted_responders: Sequence[x509.Certificate] = (),
        max_chain_length: int = MAX_CHAIN_LENGTH,
        cache_size: int = MAX_VERIFIER_CACHE_ENTRIES,
    ) -> None:
        if not trust_anchors:
            raise PkiError(
                "a verifier needs at least one trust anchor", fault=Fault.CLIENT_INVALID_CONFIG
            )
        self._anchors = list(trust_anchors)
        self._store = verification.Store(self._anchors)
        self._freshness = ocsp_freshness
        self._clock_skew = ocsp_clock_skew
        self._responders = tuple(trusted_responders)
        self._max_chain_length = max_chain_length
        #: By the certificate's and chain's DER, as they arrived.
        self._signers: _Lru[tuple[bytes, ...], VerifiedSigner] = _Lru(cache_size)
        #: By the signer's digest and the OCSP response's DER.
        self._ocsp: _Lru[tuple[bytes, bytes], OcspStatus] = _Lru(cache_size)
        #: ``(signer digest, signed bytes, value)`` of batch signatures that verified.
        self._roots: _Lru[tuple[bytes, bytes, bytes], bool] = _Lru(cache_size)
        # The latest signer and OCSP status looked up, with their keys (a peer signs every
        # message with the same certificate and staple for minutes): compared before the LRUs
        # are asked. Each is an entry those caches made, for the same bytes.
        self._last_signer: tuple[tuple[bytes, ...], VerifiedSigner] | None = None
        self._last_ocsp: tuple[bytes, bytes, OcspStatus] | None = None

    @property
    def trust_anchors(self) -> list[x509.Certificate]:
        return list(self._anchors)

    def verify(
        self,
        header_bytes: bytes,
        signature: transport_pb2.Signature,
        *,
        claimed_member: MemberId,
        signed_at: datetime.datetime,
    ) -> x509.Certificate:
        """Check ``signature`` over ``header_bytes`` as made by ``claimed_member`` at
        ``signed_at`` (the header's ``created_at``); return the signing certificate.

        Raises a :class:`SignatureError` subclass — :class:`InvalidSignatureError`,
        :class:`CertificateInvalidError`, :class:`SignerMismatchError`,
        :class:`OcspInvalidError`, :class:`CertificateRevokedError` — whose ``reason`` names the
        failure (side-neutral: the verifying server maps it to its fault). Never raises
        anything else for any input. Whether ``signed_at`` is recent enough is the caller's
        check (stale_message).
        """
        # A header's time, as read, is in UTC already (what _utc would return, unchanged).
        if signed_at.tzinfo is not datetime.UTC:
            signed_at = _utc(signed_at)
        return self._verify(header_bytes, signature, claimed_member, signed_at)

    def _verify(
        self,
        header_bytes: bytes,
        signature: transport_pb2.Signature,
        claimed_member: MemberId,
        signed_at: datetime.datetime,
    ) -> x509.Certificate:
        if signature.algorithm != transport_pb2.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256:
            raise InvalidSignatureError(
                "unsupported signature algorithm; expected ECDSA P-256 SHA-256",
                reason=Reason.UNSUPPORTED_ALGORITHM,
            )
        # protobuf (upb) copies a bytes field on every read: the value is read out once.
        value = signature.value
        if not value or len(value) > MAX_SIGNATURE_BYTES:
            raise InvalidSignatureError(
                "signature value is empty or too long", reason=Reason.MALFORMED_SIGNATURE
            )
        if signature.HasField("batch"):
            signed = _batch_signed_data(
                signature.batch.size, _batch_root(header_bytes, signature.batch)
            )
            signer = self._signer(signature.certificate, list(signature.chain), signed_at)
            self._check_batch(signer, signed, value)
        else:
            if header_bytes.startswith(BATCH_SIGNATURE_CONTEXT):
                raise InvalidSignatureError(
                    "header bytes start with the batch signature context",
                    reason=Reason.SIGNATURE_MISMATCH,
                )
            signer = self._signer(signature.certificate, list(signature.chain), signed_at)
            _check_ecdsa(signer, value, header_bytes)
        if signer.member != claimed_member:
            raise SignerMismatchError(
                f"signing certificate belongs to {signer.member}, not to {claimed_member}",
                reason=Reason.SIGNER_NOT_CLAIMED_MEMBER,
            )
        status = self._ocsp_status(signature.ocsp_response, signer)
        check_ocsp_freshness(
            status, at=signed_at, freshness=self._freshness, clock_skew=self._clock_skew
        )
        if status.revoked_at_or_before(signed_at):
            raise CertificateRevokedError(
                "signing certificate was revoked before the message was signed",
                reason=Reason.REVOKED,
            )
        return signer.certificate

    def _check_batch(self, signer: VerifiedSigner, signed: bytes, value: bytes) -> None:
        # Keyed by everything the check depends on: the key (via the certificate and chain
        # digest), the signed bytes (context, size, root) and the value.
        key = (signer.digest, signed, value)
        if self._roots.get(key):
            return
        _check_ecdsa(signer, value, signed)
        self._roots.put(key, True)

    # --- certificate chain (cached) ---------------------------------------------------------

    def _signer(
        self, certificate_der: bytes, chain_der: list[bytes], signed_at: datetime.datetime
    ) -> VerifiedSigner:
        key = (certificate_der, *chain_der)
        last = self._last_signer
        if last is not None and last[0] == key:
            # The same bytes passed the checks below when the entry was made.
            cached = last[1]
            if cached.valid_from <= signed_at <= cached.valid_until:
                return cached
        if not certificate_der:
            raise _cert_invalid(Reason.MALFORMED_CERTIFICATE, "signature carries no certificate")
        if len(chain_der) + 2 > self._max_chain_length:
            raise _cert_invalid(
                Reason.CHAIN_TOO_LONG,
                f"certificate chain is longer than {self._max_chain_length}",
            )
        if any(len(d) > MAX_CERTIFICATE_BYTES for d in (certificate_der, *chain_der)):
            raise _cert_invalid(
                Reason.CERTIFICATE_TOO_LARGE,
                f"a certificate is larger than {MAX_CERTIFICATE_BYTES} bytes",
            )
        # Looked up by the exact bytes (a dict hashes them far faster than SHA-256, which the
        # entry's digest needs only when it is made).
        found = self._signers.get(key)
        if found is not None and found.valid_from <= signed_at <= found.valid_until:
            self._last_signer = (key, found)
            return found
        digest = hashlib.sha256()
        for der in key:
            digest.update(len(der).to_bytes(4, "big"))
            digest.update(der)
        verified = self._validate(certificate_der, chain_der, signed_at, digest.digest())
        self._signers.put(key, verified)
        self._last_signer = (key, verified)
        return verified

    def _validate(
        self,
        certificate_der: bytes,
        chain_der: list[bytes],
        signed_at: datetime.datetime,
        digest: bytes,
    ) -> VerifiedSigner:
        try:
            leaf = parse_der_certificate(certificate_der)
            intermediates = [parse_der_certificate(d) for d in chain_der]
            not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        except ValueError as exc:
            raise _cert_invalid(
                Reason.MALFORMED_CERTIFICATE, "signing certificate does not parse"
            ) from exc
        if signed_at < not_before:
            raise _cert_invalid(
                Reason.NOT_YET_VALID, "signing certificate was not yet valid at signing time"
            )
        if signed_at > not_after:
            raise _cert_invalid(Reason.EXPIRED, "signing certificate had expired at signing time")
        policy = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(signed_at)
            .max_chain_depth(self._max_chain_length)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=verification.ExtensionPolicy.permit_all(),
            )
        )
        try:
            chain = policy.build_client_verifier().verify(leaf, intermediates).chain
        except verification.VerificationError as exc:
            raise _cert_invalid(
                Reason.UNKNOWN_ISSUER,
                "signing certificate does not chain to a trust anchor of this instance",
            ) from exc
        except ValueError as exc:
            raise _cert_invalid(
                Reason.MALFORMED_CERTIFICATE, "a certificate of the chain does not parse"
            ) from exc
        public_key, member = self._check_profile(leaf)
        return VerifiedSigner(
            certificate=leaf,
            issuer=chain[1],
            member=member,
            public_key=public_key,
            valid_from=max(c.not_valid_before_utc for c in chain),
            valid_until=min(c.not_valid_after_utc for c in chain),
            digest=digest,
        )

    @staticmethod
    def _check_profile(leaf: x509.Certificate) -> tuple[ec.EllipticCurvePublicKey, MemberId]:
        try:
            usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
            eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            public_key = leaf.public_key()
        except x509.ExtensionNotFound as exc:
            raise _cert_invalid(
                Reason.WRONG_KEY_USAGE, "certificate is not a message-signing certificate"
            ) from exc
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise _cert_invalid(
                Reason.MALFORMED_CERTIFICATE, "signing certificate extensions do not parse"
            ) from exc
        if DOCUMENT_SIGNING not in eku or not (usage.digital_signature or usage.content_commitment):
            raise _cert_invalid(
                Reason.WRONG_KEY_USAGE,
                "certificate is not a message-signing certificate (key usage or EKU)",
            )
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise _cert_invalid(Reason.WRONG_KEY_TYPE, "signing certificate key is not EC P-256")
        try:
            member = member_id_of(leaf)
        except (CertificateProfileError, PkiError) as exc:
            raise _cert_invalid(
                Reason.NO_MEMBER_IDENTIFIER, "signing certificate names no valid member"
            ) from exc
        return public_key, member

    # --- OCSP (cached) ----------------------------------------------------------------------

    def _ocsp_status(self, der: bytes, signer: VerifiedSigner) -> OcspStatus:
        if not der:
            raise OcspInvalidError(
                "signature carries no OCSP response for its certificate",
                reason=Reason.OCSP_MISSING,
            )
        last = self._last_ocsp
        if last is not None and last[0] == signer.digest and last[1] == der:
            return last[2]
        # By the exact bytes, not their SHA-256 (see _signer).
        key = (signer.digest, der)
        cached = self._ocsp.get(key)
        if cached is None:
            cached = authenticate_ocsp_response(
                der, signer.certificate, signer.issuer, trusted_responders=self._responders
            )
            self._ocsp.put(key, cached)
        self._last_ocsp = (signer.digest, der, cached)
        return cached
