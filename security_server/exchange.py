"""What the consumer and provider proxies share: the configuration source, signature checks
against the configuration in force, message-log appends, and refusals that keep a peer's fault.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final, Protocol

from cryptography import x509
from sqlalchemy.exc import SQLAlchemyError

from ruta.faults import Fault, RutaError
from ruta.globalconf import GlobalConf
from ruta.ids import MemberId, SubsystemId
from ruta.memo import memo_by_identity
from ruta.pki.certs import fingerprint
from ruta.pki.signature import MessageVerifier
from ruta.tasks import TaskOwner
from ruta.v1 import transport_pb2
from security_server.errors import ExchangeError, ProxyError, Reason, Side, fault_for
from security_server.headers import ReadHeader
from security_server.log import (
    Direction,
    LogEntry,
    LogError,
    MessageClaim,
    MessageLog,
    ReplayedMessageError,
)

__all__ = [
    "Clock",
    "ExchangeRecorder",
    "GlobalConfSource",
    "ProxyError",
    "SignatureChecker",
    "WitnessGate",
    "refusal",
    "unexpected_failure",
]

_log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Signing certificates whose fingerprints are kept (ours and our peers' signers').
MAX_CACHED_FINGERPRINTS = 256
# Certificates are immutable: each is encoded and hashed once, remembered per certificate
# object (ours, and the verifier's cached one of each signer), never hashed for the lookup.
_fingerprint = memo_by_identity(fingerprint, maxsize=MAX_CACHED_FINGERPRINTS)


class WitnessGate(Protocol):
    """Refuses exchanges while the message log has no recent witness cosignature
    (:meth:`security_server.checkpointer.Checkpointer.check_cosigned`), with
    :class:`~security_server.errors.WitnessUnavailableError`."""

    def __call__(self, now: datetime | None = None) -> None: ...


class GlobalConfSource(Protocol):
    """Where the configuration in force comes from (``ruta.globalconf`` client in production)."""

    def current(self) -> GlobalConf:
        """The configuration in force; raises the outdated-configuration fault once expired."""
        ...


_INTERNAL: Final = {
    Side.CONSUMER: Fault.SERVER_CONSUMER_INTERNAL_ERROR,
    Side.PROVIDER: Fault.SERVER_PROVIDER_INTERNAL_ERROR,
}


def unexpected_failure(side: Side) -> tuple[ProxyError, str]:
    """For an exchange that failed on a bug: log the traceback under a fresh fault id and return
    the refusal the caller gets (``side``'s internal_error, never the exception text) with that
    id."""
    fault_id = str(uuid.uuid4())
    _log.exception("%s exchange failed unexpectedly fault_id=%s", side, fault_id)
    error = ProxyError(
        f"the {side}'s security server failed unexpectedly; its operator can find the cause by "
        "the fault id",
        fault=_INTERNAL[side],
    )
    return error, fault_id


def refusal(side: Side, error: RutaError) -> RutaError:
    """``error`` as ``side`` refuses with it: an error from below the proxies gets the side's
    fault (:func:`~security_server.errors.fault_for`), a proxy's own refusal stays as it is."""
    fault = fault_for(side, error)
    if fault is error.fault:
        return error
    return ProxyError(error.message, fault=fault)


@dataclass
class SignatureChecker:
    """Verifies signed headers against the trust anchors of the configuration in force, with one
    :class:`~ruta.pki.signature.MessageVerifier` (and its cache) per configuration serial.

    OCSP freshness and clock skew are the configuration's ``VerificationParameters`` (what an
    offline verifier of this server's evidence applies too); ``ocsp_freshness`` (the server's
    setting) applies only while the configuration publishes none."""

    ocsp_freshness: timedelta
    _verifiers: dict[
        tuple[tuple[x509.Certificate, ...], tuple[x509.Certificate, ...], timedelta, timedelta],
        MessageVerifier,
    ] = field(default_factory=dict)
    #: The configuration of the latest call and its verifier.
    _last: tuple[GlobalConf, MessageVerifier] | None = field(default=None, repr=False)

    def verify(
        self,
        conf: GlobalConf,
        header_bytes: bytes,
        signature: transport_pb2.Signature,
        *,
        claimed_member: MemberId,
        signed_at: datetime,
    ) -> x509.Certificate:
        """The signer's certificate once the signature, chain, OCSP staple and member check out.

        Raises the verifier's :class:`~ruta.pki.errors.SignatureError` (side-neutral: each proxy
        maps it to its own fault).
        """
        last = self._last
        if last is not None and last[0] is conf:
            # The configuration in force, as on the previous call: its verifier (no key to
            # build and hash, which hashes every anchor certificate).
            return last[1].verify(
                header_bytes, signature, claimed_member=claimed_member, signed_at=signed_at
            )
        verifier = self._verifier(conf)
        self._last = (conf, verifier)
        return verifier.verify(
            header_bytes,
            signature,
            claimed_member=claimed_member,
            signed_at=signed_at,
        )

    def _verifier(self, conf: GlobalConf) -> MessageVerifier:
        # Keyed by what a verifier depends on, so a re-published configuration with the same
        # anchors keeps its warm caches.
        freshness = conf.ocsp_freshness if conf.ocsp_freshness_seconds else self.ocsp_freshness
        key = (conf.trust_anchors, conf.ocsp_responder_certs, freshness, conf.ocsp_clock_skew)
        verifier = self._verifiers.get(key)
        if verifier is None:
            verifier = MessageVerifier(
                conf.trust_anchors,
                ocsp_freshness=freshness,
                ocsp_clock_skew=conf.ocsp_clock_skew,
                trusted_responders=conf.ocsp_responder_certs,
            )
            # Keep only the newest few configurations' verifiers.
            if len(self._verifiers) >= 4:
                self._verifiers.pop(next(iter(self._verifiers)))
            self._verifiers[key] = verifier
        return verifier


@dataclass(frozen=True, slots=True)
class ExchangeRecorder:
    """Appends signed messages to this server's message log, durably, before they are
    acknowledged. Its failures are side-neutral (``logging_failed``): each proxy names its
    fault."""

    log: MessageLog
    #: Subsystems (text form) in metadata-only mode: their exchanges are logged without bodies.
    metadata_only: Set[str] = frozenset()
    #: Appends scheduled by :meth:`append_soon` and not yet finished.
    _pending: TaskOwner = field(default_factory=TaskOwner, init=False, repr=False, compare=False)

    def entry(
        self,
        direction: Direction,
        *,
        header: bytes,
        signature: transport_pb2.Signature | bytes,
        certificate: x509.Certificate,
        body: bytes,
        read: ReadHeader,
    ) -> LogEntry:
        """The log entry of one signed message (without its body for a metadata-only
        subsystem); ``read`` is ``header`` as already parsed (or built), so it is not parsed
        again, and ``signature`` may be given serialised already (deterministically, as it is
        logged). Raises :class:`~security_server.errors.ExchangeError` (``logging_failed``) if it
        cannot be logged."""
        try:
            entry = LogEntry.from_parsed(
                direction=direction,
                header=header,
                parsed=read.header,
                client=read.client,
                service=read.service,
                created_at=read.created_at,
                signature=(
                    signature
                    if isinstance(signature, bytes)
                    else signature.SerializeToString(deterministic=True)
                ),
                certificate_fingerprint=_fingerprint(certificate),
                body=body,
            )
        except LogError as exc:
            raise self._failed(exc) from None
        if self.metadata_only and self._metadata_only(entry):
            entry = replace(entry, body=None)
        return entry

    async def append(
        self,
        entries: Sequence[LogEntry],
        *,
        claim: MessageClaim | None = None,
        at_once: bool = False,
    ) -> None:
        """Append ``entries`` as consecutive leaves in one group transaction (with ``claim``,
        atomically refusing a replayed id) and return once they are durable. ``at_once``: a
        quiet server commits them in the caller's own step (``MessageLog.append``).

        Raises :class:`~security_server.log.ReplayedMessageError` for a replay and
        :class:`~security_server.errors.ExchangeError` (``logging_failed``) when the log cannot
        store them; nothing is acknowledged then.
        """
        try:
            await self.log.append(entries, claim=claim, at_once=at_once)
        except ReplayedMessageError:
            raise
        except LogError as exc:
            raise self._failed(exc) from None

    async def record(
        self,
        direction: Direction,
        *,
        header: bytes,
        signature: transport_pb2.Signature,
        certificate: x509.Certificate,
        body: bytes,
        read: ReadHeader,
        claim: MessageClaim | None = None,
        at_once: bool = False,
    ) -> None:
        """Append one signed message (with ``claim``, atomically refusing a replayed id); see
        :meth:`append` and :meth:`entry`."""
        entry = self.entry(
            direction,
            header=header,
            signature=signature,
            certificate=certificate,
            body=body,
            read=read,
        )
        # (What append does, here: one coroutine fewer per message, and per step of its commit.)
        try:
            await self.log.append([entry], claim=claim, at_once=at_once)
        except ReplayedMessageError:
            raise
        except LogError as exc:
            raise self._failed(exc) from None

    async def used(self, client: SubsystemId, message_id: str) -> bool:
        """Whether this log holds a message of ``client`` with ``message_id`` (durable
        appends only). Raises :class:`~security_server.errors.ExchangeError`
        (``logging_failed``) if the log cannot be read."""
        try:
            return await self.log.holds_message(client=str(client), message_id=message_id)
        except (LogError, SQLAlchemyError) as exc:
            raise ExchangeError(
                f"the message log cannot be read: {type(exc).__name__}",
                reason=Reason.LOGGING_FAILED,
            ) from None

    def append_soon(
        self, entries: Sequence[LogEntry], *, detached: bool = True
    ) -> asyncio.Task[None]:
        """Append ``entries`` in a task of this recorder (:meth:`settle` awaits it), so that
        cancelling whoever waits for it does not lose them: for messages already sent. The
        task raises as :meth:`append` does, or, ``detached``, makes a failure this server's
        log line instead (nobody waits for it then)."""
        append = self._append_detached(entries) if detached else self.append(entries)
        return self._pending.spawn(append, name="ruta-log-append")

    async def settle(self) -> None:
        """Return once every append scheduled by :meth:`append_soon` is done: a server's stop
        awaits it before the log closes, so a request already sent is never lost."""
        await self._pending.wait()

    async def _append_detached(self, entries: Sequence[LogEntry]) -> None:
        try:
            await self.append(entries)
        except RutaError as exc:
            _log.error("a sent message could not be logged: %s", exc.message)

    def _failed(self, exc: LogError) -> ExchangeError:
        return ExchangeError(
            f"the message could not be written to the message log: {exc.message}",
            reason=Reason.LOGGING_FAILED,
        )

    def _metadata_only(self, entry: LogEntry) -> bool:
        provider = entry.service.rsplit("/", 1)[0]
        return entry.client in self.metadata_only or provider in self.metadata_only
