"""This server's own identity: its authentication and signing credentials, and signing.

The authentication key and certificate are what the server presents on every TLS link; the
signing key and certificate are the member's, used to sign message headers. Signing staples the
OCSP response for the signing certificate, fetched and cached by :class:`~ruta.pki.ocsp.OcspClient`
from the certificate's AIA URL, so a verifier can check revocation at signing time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from ruta.ids import MemberId, ServerId
from ruta.memo import memo_by_identity2
from ruta.pki.certs import (
    fingerprint,
    load_certificates,
    member_id_of,
    read_certificate_file,
    server_id_of,
)
from ruta.pki.errors import PkiError
from ruta.pki.keys import FileSigner, Signer
from ruta.pki.ocsp import OcspClient, OcspFetchError
from ruta.pki.signature import MAX_BATCH_SIZE, MessageSigner
from ruta.v1 import transport_pb2
from security_server.errors import IdentityError, SigningError

__all__ = ["BatchingSigner", "IdentityError", "ServerIdentity", "SigningError"]

#: Most certificates read from a certificate file (leaf + intermediates).
MAX_CERTIFICATE_FILE_CHAIN = 8


def _read_chain(path: Path, what: str) -> list[x509.Certificate]:
    try:
        data = read_certificate_file(
            path, limit=MAX_CERTIFICATE_FILE_CHAIN, what=f"{what} certificate file"
        )
    except PkiError as exc:
        raise IdentityError(exc.message) from None
    try:
        return load_certificates(data, limit=MAX_CERTIFICATE_FILE_CHAIN)
    except PkiError as exc:
        raise IdentityError(f"the {what} certificate file is invalid: {exc.message}") from None


def _issuer_of(
    identity: ServerIdentity, anchors: tuple[x509.Certificate, ...]
) -> x509.Certificate | None:
    for candidate in (*identity.signing_chain, *anchors):
        if candidate.subject == identity.signing_certificate.issuer:
            return candidate
    return None


# Asked on every signature; names compared once per identity and configuration's anchors
# (remembered per object: hashing the certificates for an lru_cache cost more than the lookup).
_issuer_memo = memo_by_identity2(_issuer_of, maxsize=16)


#: A header waiting for the flush: its bytes, the staple to sign with, the caller's future.
_Waiter = tuple[bytes, bytes, asyncio.Future[transport_pb2.Signature]]


class BatchingSigner:
    """Signs the headers submitted together with one ECDSA operation.

    The first :meth:`sign` after an idle moment schedules a flush: with ``loop.call_soon``
    (the headers submitted in the same loop turn join), or, when that caller passes ``hold``
    (a server under load: :meth:`security_server.coalesce.Load.hold`), that many seconds later,
    so the headers of exchanges arriving meanwhile join too. The flush signs the batch with
    :meth:`MessageSigner.sign_batch` (a batch of one is a plain signature; more than
    :data:`~ruta.pki.signature.MAX_BATCH_SIZE` are split, and a batch that reaches that size is
    flushed at once; headers stapling different OCSP responses are signed apart) and resolves
    each caller's future. A signing failure fails every caller of that batch with the same
    exception; a caller cancelled before the flush is left out of it and the others are
    unaffected. Under no load a batch is one header: the cost is one loop turn of latency, no
    extra signature. One event loop (not thread-safe).
    """

    __slots__ = ("_handle", "_loop", "_pending", "_signer", "batches", "signed")

    def __init__(self, signer: MessageSigner) -> None:
        self._signer = signer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.Handle | None = None
        self._pending: list[_Waiter] = []
        #: Signing operations made so far (one per batch signed).
        self.batches = 0
        #: Headers signed so far (divided by ``batches``: how full the batches run).
        self.signed = 0

    async def sign(
        self, header_bytes: bytes, *, staple: bytes, hold: float = 0.0, alone: bool = False
    ) -> transport_pb2.Signature:
        """Sign ``header_bytes``, stapling ``staple``, in the current batch; a caller that
        starts a batch with ``hold`` > 0 keeps it open that many seconds. A caller ``alone``
        (the only exchange in flight) when no batch is open is signed at once, as a batch of
        one: nobody would join its batch, and the loop turn it waited for cost a wake-up."""
        if alone and self._loop is None:
            try:
                # What sign_batch makes of one header: a plain signature.
                return self._signer.sign(header_bytes, ocsp_response=staple)
            finally:
                self.batches += 1
                self.signed += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[transport_pb2.Signature] = loop.create_future()
        if self._loop is not loop:
            # No flush is scheduled on this loop: start a batch (a batch left behind by a
            # loop that stopped before flushing is dropped with it).
            self._loop = loop
            self._pending = []
            self._handle = (
                loop.call_later(hold, self._flush) if hold > 0 else loop.call_soon(self._flush)
            )
        self._pending.append((header_bytes, staple, future))
        if len(self._pending) >= MAX_BATCH_SIZE and self._handle is not None:
            # Full: sign now rather than wait out the hold.
            self._handle.cancel()
            self._handle = loop.call_soon(self._flush)
        return await future

    async def sign_serialised(
        self, header_bytes: bytes, *, staple: bytes, hold: float = 0.0, alone: bool = False
    ) -> tuple[bytes, bytes]:
        """:meth:`sign`, for a caller that needs the signature's bytes only: its value and the
        ``Signature`` serialised deterministically. Alone with no batch open, made without
        building the message (:meth:`MessageSigner.sign_serialised`)."""
        if alone and self._loop is None:
            try:
                return self._signer.sign_serialised(header_bytes, ocsp_response=staple)
            finally:
                self.batches += 1
                self.signed += 1
        signature = await self.sign(header_bytes, staple=staple, hold=hold, alone=alone)
        return signature.value, signature.SerializeToString(deterministic=True)

    def _flush(self) -> None:
        waiting = [w for w in self._pending if not w[2].done()]
        self._loop = None
        self._handle = None
        self._pending = []
        by_staple: dict[bytes, list[_Waiter]] = {}
        for waiter in waiting:
            by_staple.setdefault(waiter[1], []).append(waiter)
        for staple, group in by_staple.items():
            for start in range(0, len(group), MAX_BATCH_SIZE):
                self._sign(staple, group[start : start + MAX_BATCH_SIZE])

    def _sign(self, staple: bytes, batch: list[_Waiter]) -> None:
        try:
            signatures = self._signer.sign_batch([w[0] for w in batch], ocsp_response=staple)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller, unchanged
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self.batches += 1
            self.signed += len(batch)
        for (_, _, future), signature in zip(batch, signatures, strict=True):
            if not future.done():
                future.set_result(signature)


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """What this server is and how it signs. Build with :meth:`from_files`."""

    server: ServerId
    auth_certificate: x509.Certificate
    auth_fingerprint: str
    signer: Signer
    signing_certificate: x509.Certificate
    #: Intermediates above the signing certificate (may be empty).
    signing_chain: tuple[x509.Certificate, ...]
    signing_fingerprint: str
    ocsp: OcspClient
    #: Signs with ``signer`` and ``signing_certificate`` (checked to belong together at load).
    message_signer: MessageSigner
    #: Batches the headers signed in one loop turn under one signature (:meth:`sign_batched`).
    batching_signer: BatchingSigner = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen: the batcher is derived from message_signer, set once here.
        object.__setattr__(self, "batching_signer", BatchingSigner(self.message_signer))

    @property
    def member(self) -> MemberId:
        return self.server.member

    @classmethod
    def from_files(
        cls,
        *,
        server: ServerId,
        auth_cert: Path,
        signing_key: Path,
        signing_cert: Path,
        ocsp: OcspClient,
    ) -> ServerIdentity:
        """Load and check the certificates: the auth certificate must name ``server`` and the
        signing certificate its member. Raises :class:`IdentityError` (never a path in the
        text)."""
        auth = _read_chain(auth_cert, "authentication")[0]
        signing = _read_chain(signing_cert, "signing")
        try:
            named_server = server_id_of(auth)
            named_member = member_id_of(signing[0])
            signer: Signer = FileSigner.from_file(signing_key)
            message_signer = MessageSigner(signer=signer, certificate=signing[0], chain=signing[1:])
        except PkiError as exc:
            raise IdentityError(f"this server's credentials are invalid: {exc.message}") from None
        if named_server != server:
            raise IdentityError(
                f"the authentication certificate names server {named_server}, not {server}"
            )
        if named_member != server.member:
            raise IdentityError(
                f"the signing certificate names member {named_member}, not {server.member}"
            )
        return cls(
            server=server,
            auth_certificate=auth,
            auth_fingerprint=fingerprint(auth),
            signer=signer,
            signing_certificate=signing[0],
            signing_chain=tuple(signing[1:]),
            signing_fingerprint=fingerprint(signing[0]),
            ocsp=ocsp,
            message_signer=message_signer,
        )

    def _issuer(self, anchors: Sequence[x509.Certificate]) -> x509.Certificate:
        issuer = _issuer_memo(self, tuple(anchors))
        if issuer is None:
            raise SigningError(
                "the signing certificate's issuer is neither in its chain nor a trust anchor"
            )
        return issuer

    def cached_staple(self, anchors: Sequence[x509.Certificate]) -> bytes | None:
        """What :meth:`staple` returns without waiting, when the OCSP client holds a fresh
        response; ``None`` when only :meth:`staple` can get one. Raises as :meth:`staple` when
        the issuer is unknown. (No coroutine: the usual case, once per exchange.)"""
        self._issuer(anchors)
        return self.ocsp.cached_response(self.signing_certificate)

    async def staple(self, anchors: Sequence[x509.Certificate]) -> bytes:
        """A fresh OCSP response for the signing certificate (cached by the OCSP client).

        Raises :class:`~security_server.errors.SigningError` when none can be had (the
        responder has been unreachable for longer than the freshness bound, or answers something
        unusable).
        """
        issuer = self._issuer(anchors)
        cached = self.ocsp.cached_response(self.signing_certificate)
        if cached is not None:
            return cached
        try:
            return await self.ocsp.response_for(self.signing_certificate, issuer)
        except (OcspFetchError, PkiError) as exc:
            raise SigningError(
                f"no fresh OCSP response for this server's signing certificate: {exc.message}"
            ) from None

    def sign(self, header_bytes: bytes, *, staple: bytes) -> transport_pb2.Signature:
        """Sign ``header_bytes`` with the member's key, stapling ``staple`` (from :meth:`staple`);
        the key was checked against the certificate when the identity was loaded."""
        # ECDSA P-256 signing takes well under a millisecond: on the loop, no thread hop.
        return self.message_signer.sign(header_bytes, ocsp_response=staple)

    def sign_batched_serialised(
        self, header_bytes: bytes, *, staple: bytes, hold: float = 0.0, alone: bool = False
    ) -> Coroutine[Any, Any, tuple[bytes, bytes]]:
        """:meth:`sign_batched`, for a caller that needs the signature's bytes only: its value
        and the ``Signature`` serialised deterministically (:meth:`BatchingSigner.sign_serialised`:
        alone, without building the message). Returns the batcher's coroutine (to await)."""
        return self.batching_signer.sign_serialised(
            header_bytes, staple=staple, hold=hold, alone=alone
        )

    def sign_batched(
        self, header_bytes: bytes, *, staple: bytes, hold: float = 0.0, alone: bool = False
    ) -> Coroutine[Any, Any, transport_pb2.Signature]:
        """Like :meth:`sign`, but the headers signed in the same loop turn (or, when the batch's
        first caller passes ``hold``, within that many seconds) share one ECDSA signature over
        the Merkle root of their hashes, each with its own inclusion path
        (docs/adr/0010-batch-signatures.md); alone, a plain signature. Raises what
        :meth:`sign` raises. ``alone`` (the caller's is the only exchange in flight): signed
        at once when no batch is open (:meth:`BatchingSigner.sign`). Returns the batcher's
        coroutine itself (to await), not one awaiting it."""
        return self.batching_signer.sign(header_bytes, staple=staple, hold=hold, alone=alone)
