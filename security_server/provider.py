"""The provider proxy: receives signed requests from other security servers and answers them.

For each request (a ``Transport.Exchange`` call, or one request of a frame) it checks, in this
order (DESIGN.md step 4): the configuration in force (fails closed once expired); the calling
peer is a listed security server (its TLS certificate's fingerprint, not revoked); the witness
cosignature window; the size bound; the header (well formed, a request, addressed to this
server, sent by the calling peer); the signature over the exact header bytes, with the chain to
a trust anchor, the stapled OCSP response at signing time and the signer being the client's
member; the body digest; freshness (``created_at`` within the allowed skew); the contract; the
contract's rate limit, lowered by this server's own (:mod:`security_server.ratelimit`; refused
with ``server.provider.rate_limited`` and a ``ruta-retry-after-ms`` hint, nothing logged); and
uniqueness of the message id: the request is logged together with a durable claim on its id, so
a replay is refused even across a restart. Then it forwards the raw body to the mapped backend
with the original method path, ``ruta-*`` metadata taken from the signed header, and the
remaining deadline; signs a response header bound to the request by ``request_hash`` carrying
the backend's status (and, for a refusal, the fault code and fault id the backend gave, checked:
docs/adr/0024); logs it; and returns it. A backend that cannot be reached gets a signed response
with ``server.provider.service_failed``, so the consumer's log holds the outcome too.

``Transport.ExchangeFrames`` carries the same requests several per frame on one stream
(docs/adr/0011): each framed request goes through exactly the same steps, concurrently, and its
response or refusal goes back in a result frame as soon as it is ready. On a stream whose
consumer asked for ``response-ahead`` (and ``[transport] responses_ahead`` on), a signed
response may go back as soon as it is signed, while its log record is committed, and a notice
follows once the record is durable (or the refusal that undoes the response when it cannot be
logged): the consumer answers its caller only after that notice (docs/adr/0038). It does so
per response, only while the server is not under load and its log's recent commits are slow
enough for the overlap to pay (``responses_ahead_min_commit_ms``, docs/adr/0048); otherwise the
response is durable before it is sent. The replay claim and the request's record stay durable
before the backend is called.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import grpc

from ruta.faults import Fault, RutaError, backend_fault_code, report
from ruta.ids import ServerId, ServiceId
from ruta.v1 import transport_pb2
from security_server.backends import BackendReply, Backends
from security_server.calls import CallInfo, Refused
from security_server.coalesce import Load
from security_server.errors import ProxyError, Side
from security_server.exchange import (
    Clock,
    ExchangeRecorder,
    GlobalConfSource,
    SignatureChecker,
    WitnessGate,
    refusal,
    unexpected_failure,
)
from security_server.frames import (
    FramesStream,
    SendAhead,
    result_frame_bytes,
    stream_capabilities,
)
from security_server.headers import (
    ReadHeader,
    build_response_header,
    canonical_uuid,
    id_text,
    metadata_for_backend,
    read_header,
    request_hash,
)
from security_server.identity import ServerIdentity
from security_server.log import Direction, MessageClaim, ReplayedMessageError
from security_server.metrics import ExchangeMetrics, Outcome
from security_server.ratelimit import RateLimiter
from security_server.settings import SecurityServerSettings
from security_server.transport import (
    PeerStatus,
    authenticate_peer,
)

__all__ = ["ProviderProxy"]

_log = logging.getLogger(__name__)

_INVALID: Final = Fault.SERVER_PROVIDER_INVALID_MESSAGE
_OK: Final = grpc.StatusCode.OK.value[0]


class ProviderProxy:
    """The provider side of an exchange; :meth:`exchange` is ``Transport.Exchange``."""

    def __init__(
        self,
        *,
        settings: SecurityServerSettings,
        identity: ServerIdentity,
        globalconf: GlobalConfSource,
        recorder: ExchangeRecorder,
        backends: Backends,
        checker: SignatureChecker,
        peer_status: PeerStatus,
        metrics: ExchangeMetrics,
        clock: Clock,
        gate: WitnessGate | None = None,
    ) -> None:
        self._limits = settings.limits
        # Result frames within what this server's own gRPC send limit holds (docs/adr/0050).
        self._result_frame_bytes = result_frame_bytes(settings.limits.max_message_bytes)
        self._skew = timedelta(seconds=settings.limits.freshness_seconds)
        # How long a replay claim is kept past its request's creation (see _checked_exchange).
        self._claim_lifetime = 2 * self._skew
        self._identity = identity
        # The last (receiver, this server) and (sender, calling peer) pairs of identifier
        # objects found equal (see _request_header); None: none yet.
        self._addressed: tuple[ServerId | None, ServerId | None] = (None, None)
        self._sent_by: tuple[ServerId | None, ServerId | None] = (None, None)
        self._globalconf = globalconf
        self._recorder = recorder
        self._backends = backends
        self._checker = checker
        self._peer_status = peer_status
        self._metrics = metrics
        self._clock = clock
        self._gate = gate
        self._draining = asyncio.Event()
        # Requests being handled now: under load response signing batches stay open a moment
        # (security_server.coalesce), so responses ready together share one signature.
        self._load = Load()
        self._framed_room = asyncio.Semaphore(settings.limits.max_concurrent_calls)
        #: Frames capabilities this provider agrees to when a consumer offers them.
        self.frames_capabilities: frozenset[str] = stream_capabilities(
            responses_ahead=settings.transport.responses_ahead,
            max_message_bytes=settings.limits.max_message_bytes,
        )
        # A response goes ahead of its commit only while commits take at least this long
        # (docs/adr/0048); 0: always (below the load threshold).
        self._ahead_min_commit = settings.transport.responses_ahead_min_commit_ms / 1000
        rates = settings.rate_limits
        self._rates = RateLimiter(
            max_per_minute=rates.max_per_minute,
            service_per_minute=rates.service_per_minute,
            max_buckets=rates.max_buckets,
        )

    @property
    def in_flight(self) -> int:
        """Exchanges this proxy is handling now."""
        return self._load.in_flight

    def sends_ahead(self) -> bool:
        """Whether a response signed now goes ahead of its log commit, on a stream that agreed
        to it (docs/adr/0038, 0048): not under load (fewer than
        :data:`~security_server.coalesce.COALESCE_MIN_IN_FLIGHT` other exchanges in flight), and
        only while this server's recent durable commits take at least
        ``[transport] responses_ahead_min_commit_ms`` (their median wall time): the overlap
        hides the commit's wait, which must outweigh the notice's extra frame."""
        if self._load.busy:
            return False
        threshold = self._ahead_min_commit
        return threshold <= 0 or self._recorder.log.recent_commit_seconds >= threshold

    def frame_written(self, results: int) -> None:
        """Count a result frame written on a frames stream (metrics)."""
        self._metrics.frame_written("provider", results)

    def drain(self) -> None:
        """The server is stopping: frames streams stop reading, finish the requests they carry,
        and end (a consumer server's link then reconnects elsewhere or reports the outage)."""
        self._draining.set()

    async def exchange(
        self, message: transport_pb2.SignedMessage, info: CallInfo
    ) -> transport_pb2.SignedMessage:
        """Verify, forward and answer one signed request (``Transport.Exchange``); raises
        :class:`~security_server.calls.Refused` (with a ``ruta-fault``) for every refusal."""
        with self._metrics.exchange("provider") as outcome:
            started = self._load.start()
            try:
                try:
                    return await self._checked_exchange(message, info, info.deadline, outcome, None)
                finally:
                    self._load.end(started)
            except RutaError as exc:
                error = refusal(Side.PROVIDER, exc)
                outcome.fault = str(error.fault)
                raise Refused.from_error(error) from None
            except Exception:  # noqa: BLE001 - a bug must not leak its text to the caller
                error, fault_id = unexpected_failure(Side.PROVIDER)
                outcome.fault = str(error.fault)
                raise Refused.from_error(error, fault_id=fault_id) from None

    async def exchange_frames(
        self,
        frames: AsyncIterator[transport_pb2.RequestFrame],
        write: Callable[[bytes], Awaitable[None]],
        info: CallInfo,
        *,
        ahead: bool = False,
    ) -> None:
        """``Transport.ExchangeFrames``: every request of every frame is handled as :meth:`exchange`
        handles one (same checks, same log records, same faults), concurrently; each result goes
        back as soon as it is ready, with every other result ready at that moment in the same
        frame. A refusal is a :class:`~ruta.v1.transport_pb2.Refusal` in its result, not the
        stream's status. Bounds: :data:`~security_server.frames.MAX_FRAME_REQUESTS` per frame,
        :data:`~security_server.frames.MAX_STREAM_IN_FLIGHT` requests per stream read and not
        yet answered on the wire, and ``limits.max_concurrent_calls`` such requests on all
        streams together (reading pauses at a bound, also when the consumer stops reading
        results). Result frames go out through ``write``, serialised (each response serialised
        once, not copied into a ``FramedResult`` and a ``ResultFrame`` first); a malformed frame
        ends the stream with :class:`~security_server.calls.Refused`. With ``ahead`` (the stream
        agreed on ``response-ahead``) responses go out before their records are durable, each
        followed by its notice (docs/adr/0038).
        """

        stream = FramesStream(
            frames,
            answer=lambda item, send_ahead: self._framed_outcome(item, info, ahead=send_ahead),
            write=write,
            on_frame=self.frame_written,
            max_frame_bytes=self._result_frame_bytes,
            shared_room=self._framed_room,
            ahead=ahead,
        )
        try:
            await stream.run(self._draining)
        except RutaError as exc:
            raise Refused.from_error(refusal(Side.PROVIDER, exc)) from None

    async def framed(
        self,
        item: transport_pb2.FramedRequest,
        info: CallInfo,
        *,
        ahead: SendAhead | None = None,
    ) -> transport_pb2.FramedResult:
        """One framed request handled as :meth:`exchange` handles one; a refusal becomes the
        result's :class:`~ruta.v1.transport_pb2.Refusal` (fault code, fault id, status).

        With ``ahead``, the signed response is handed to it before its log record is durable;
        what this returns is then the response's notice: the response once the record is
        durable, or the refusal (``logging_failed``) that undoes it (docs/adr/0038)."""
        outcome = await self._framed_outcome(item, info, ahead=ahead)
        if isinstance(outcome, transport_pb2.Refusal):
            return transport_pb2.FramedResult(tag=item.tag, refusal=outcome)
        return transport_pb2.FramedResult(tag=item.tag, response=outcome)

    async def _framed_outcome(
        self,
        item: transport_pb2.FramedRequest,
        info: CallInfo,
        *,
        ahead: SendAhead | None = None,
    ) -> transport_pb2.SignedMessage | transport_pb2.Refusal:
        """What :meth:`framed` puts in its result: the signed response, or the refusal."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + item.timeout_ms / 1000 if item.timeout_ms else None
        with self._metrics.exchange("provider") as outcome:
            # (The load's start and end around the checked exchange, in this coroutine: one
            # coroutine fewer per request, and per step of it.)
            started = self._load.start()
            try:
                try:
                    return await self._checked_exchange(
                        item.message, info, deadline, outcome, ahead
                    )
                finally:
                    self._load.end(started)
            except RutaError as exc:
                error = refusal(Side.PROVIDER, exc)
                outcome.fault = str(error.fault)
                refused = _refusal(error)
            except Exception:  # noqa: BLE001 - a bug must not leak its text to the caller
                error, fault_id = unexpected_failure(Side.PROVIDER)
                outcome.fault = str(error.fault)
                refused = _refusal(error, fault_id=fault_id)
            return refused

    async def _checked_exchange(
        self,
        message: transport_pb2.SignedMessage,
        info: CallInfo,
        deadline: float | None,
        outcome: Outcome,
        ahead: SendAhead | None,
    ) -> transport_pb2.SignedMessage:
        conf = self._globalconf.current()
        peer = await authenticate_peer(info.peer_certificate_pem, conf, self._peer_status)
        if self._gate is not None:
            self._gate(self._clock())
        # protobuf (upb) copies a bytes field on every read: the body is read out once.
        body = message.body
        if len(body) > self._limits.max_message_bytes:
            raise ProxyError(
                f"the request body is {len(body)} bytes; the limit is "
                f"{self._limits.max_message_bytes}",
                fault=Fault.SERVER_PROVIDER_MESSAGE_TOO_LARGE,
            )
        # Each read of a bytes or message field of a parsed message makes a new object (upb):
        # the header bytes and the signature are read out once, like the body.
        header_bytes = message.header
        signature = message.signature
        read = self._request_header(header_bytes, peer.id)
        header = read.header
        outcome.message_id = header.message_id
        outcome.request_bytes = len(body)
        client = read.client
        service = read.service
        created_at = read.created_at
        certificate = self._checker.verify(
            conf,
            header_bytes,
            signature,
            claimed_member=client.member,
            signed_at=created_at,
        )
        outcome.identify(conf, client, service, header.method)
        if hashlib.sha256(body).digest() != header.body_sha256:
            raise ProxyError(
                "the request body does not match the signed digest",
                fault=Fault.SERVER_PROVIDER_INVALID_SIGNATURE,
            )
        now = self._clock()
        if abs(now - created_at) > self._skew:
            raise ProxyError(
                f"the request was created at {created_at.isoformat()}, more than "
                f"{self._skew.total_seconds():g} s from this server's clock; check both clocks",
                fault=Fault.SERVER_PROVIDER_STALE_MESSAGE,
            )
        if conf.service(service) is None or not self._backends.serves(service):
            raise ProxyError(
                f"service {service} is not served by this security server",
                fault=Fault.SERVER_PROVIDER_UNKNOWN_SERVICE,
            )
        contract = conf.allows(client, service, header.method, header.purpose, now)
        if contract is None:
            purpose = (
                f"purpose {header.purpose!r}"
                if header.purpose
                else "no purpose (the request names none: ruta-purpose is required)"
            )
            raise ProxyError(
                f"no active contract lets {client} call {service}/{header.method} for {purpose}",
                fault=Fault.SERVER_PROVIDER_ACCESS_DENIED,
            )
        wait_ms = self._rates.take(
            id_text(client), id_text(service), contract.rate_limit_per_minute
        )
        if wait_ms is not None:
            raise ProxyError(
                f"{client} is over its rate limit on {service}; retry after {wait_ms} ms",
                fault=Fault.SERVER_PROVIDER_RATE_LIMITED,
                retry_after_ms=wait_ms,
            )
        # Fetched before the request is logged: a request this server could not answer with a
        # signed response (no fresh OCSP response for its own certificate) is refused instead.
        staple = await self._identity.staple(conf.trust_anchors)
        claim = MessageClaim(
            client=id_text(client),
            message_id=header.message_id,
            # A request older than created_at + skew is refused as stale, so the claim need not
            # outlive that; twice the skew keeps a margin for clock steps.
            expires_at=created_at + self._claim_lifetime,
        )
        try:
            await self._recorder.record(
                Direction.RECEIVED,
                header=header_bytes,
                signature=signature,
                certificate=certificate,
                body=body,
                claim=claim,
                read=read,
                # Nothing to overlap it with (the backend waits for it): a quiet server commits
                # it in this step, not through the log writer's task (docs/adr/0045).
                at_once=True,
            )
        except ReplayedMessageError:
            raise ProxyError(
                f"message id {header.message_id} of {client} was already used",
                fault=Fault.SERVER_PROVIDER_REPLAYED_MESSAGE,
            ) from None
        started = time.perf_counter()
        reply = await self._backend_call(read, body, deadline)
        forwarded = self._forwarded(read.service, reply)
        outcome.backend_seconds = time.perf_counter() - started
        outcome.response_bytes = len(forwarded.body)
        if forwarded.fault is not None:
            outcome.fault = str(forwarded.fault)
        return await self._answer(
            request_digest=request_hash(header_bytes, signature.value),
            read=read,
            forwarded=forwarded,
            staple=staple,
            ahead=ahead,
        )

    def _request_header(self, raw: bytes, peer: ServerId) -> ReadHeader:
        """The parsed request header, addressed to this server and sent by ``peer``."""
        read = read_header(raw)
        if read.header.kind != transport_pb2.MESSAGE_KIND_REQUEST:
            raise ProxyError("the message is not a request", fault=_INVALID)
        # The header reader and the configuration hand the same identifier objects from one
        # request to the next: the last pair found equal (receiver and this server, sender and
        # the calling peer) is remembered by identity, so a repeat is not compared again.
        receiver, sender, server = read.receiver, read.sender, self._identity.server
        seen = self._addressed
        if seen[0] is not receiver or seen[1] is not server:
            if receiver != server:
                raise ProxyError(
                    "the request is addressed to another security server", fault=_INVALID
                )
            self._addressed = (receiver, server)
        seen = self._sent_by
        if seen[0] is not sender or seen[1] is not peer:
            if sender != peer:
                raise ProxyError(
                    "the request names a sender other than the calling security server",
                    fault=_INVALID,
                )
            self._sent_by = (sender, peer)
        return read

    def _backend_call(
        self, read: ReadHeader, body: bytes, deadline: float | None
    ) -> Awaitable[BackendReply]:
        """The call of the request's method on its service's backend, with the raw body, the
        ``ruta-*`` metadata of the signed header and the remaining deadline; awaited, the
        backend's reply (no coroutine of this method around the call's steps)."""
        header, service = read.header, read.service
        timeout = (
            self._limits.default_deadline_seconds
            if deadline is None
            else deadline - asyncio.get_running_loop().time()
        )
        return self._backends.call(
            service,
            f"/{service.service_name}/{header.method}",
            body,
            metadata=metadata_for_backend(read),
            seconds=max(0.0, min(timeout, self._limits.max_deadline_seconds)),
        )

    def _forwarded(self, service: ServiceId, reply: BackendReply) -> _Forwarded:
        """What of the backend's ``reply`` goes into the signed response."""
        code = reply.status
        if code is grpc.StatusCode.OK:
            if len(reply.body) > self._limits.max_message_bytes:
                text = (
                    f"the backend's answer is over the {self._limits.max_message_bytes}-byte limit"
                )
                return _Forwarded(
                    text.encode(),
                    grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                    Fault.SERVER_PROVIDER_SERVICE_FAILED,
                )
            return _Forwarded(reply.body, _OK)
        claimed = _backend_fault(service, reply)
        if claimed is None and code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.UNIMPLEMENTED,
        ):
            # No Ruta fault with it: the backend was not reached (or serves no such method).
            _log.warning("backend for %s failed: %s", service, code.name)
            text = f"the backend of {service} is unavailable ({code.name}); try again later"
            return _Forwarded(text.encode(), code.value[0], Fault.SERVER_PROVIDER_SERVICE_FAILED)
        fault, fault_id = claimed if claimed is not None else ("", "")
        return _Forwarded(
            reply.details.encode("utf-8", "replace"),
            code.value[0],
            backend_fault=fault,
            backend_fault_id=fault_id,
        )

    async def _answer(
        self,
        *,
        request_digest: bytes,
        read: ReadHeader,
        forwarded: _Forwarded,
        staple: bytes,
        ahead: SendAhead | None,
    ) -> transport_pb2.SignedMessage:
        """Sign the response (bound to the request by ``request_digest``, :func:`request_hash`)
        and log it durably; returns it once its record is durable. With ``ahead``, and unless
        this server is under load, the response is sent first and its record committed
        meanwhile (the request's record and replay claim are durable already: the backend has
        acted)."""
        body = forwarded.body
        created_at = self._clock()
        response, response_bytes = build_response_header(
            read,
            request_digest=request_digest,
            body=body,
            status_code=forwarded.status,
            fault=forwarded.fault,
            backend_fault=forwarded.backend_fault,
            backend_fault_id=forwarded.backend_fault_id,
            created_at=created_at,
        )
        signature = await self._identity.sign_batched(
            response_bytes, staple=staple, hold=self._load.hold(), alone=self._load.alone
        )
        answer = transport_pb2.SignedMessage(header=response_bytes, body=body, signature=signature)
        sent_ahead = ahead is not None and self.sends_ahead()
        if ahead is not None and sent_ahead:
            # Queued for the wire before the record is appended; the append below is queued to
            # the log's writer in the same step, so the write and the commit overlap. Under load
            # (commits grouped, the CPU the limit) the response waits for its record instead and
            # needs no notice: a notice frame per group costs more than the overlap gains there;
            # so it does while this log's commits are quick (docs/adr/0048).
            # Not at_once (docs/adr/0045): committed in this step, before the stream's writer
            # task ran, the response would wait for its commit; a loop turn first
            # (``asyncio.sleep(0)``) measured 1-2 more context switches per exchange.
            ahead(answer)
        await self._recorder.record(
            Direction.SENT,
            header=response_bytes,
            signature=signature,
            certificate=self._identity.signing_certificate,
            body=body,
            read=ReadHeader(
                header=response,
                client=read.client,
                service=read.service,
                sender=read.receiver,
                receiver=read.sender,
                created_at=created_at,
            ),
            # Not sent ahead, the response waits for its record anyway: while the server is
            # quiet it is committed in this step, without the writer task's two loop turns
            # (docs/adr/0045, 0048).
            at_once=not sent_ahead,
        )
        return answer


@dataclass(slots=True)
class _Forwarded:
    """What goes into the signed response: the body (or a refusal's text), the status, the
    provider's own fault, and the fault code and id the backend gave with its refusal. (Not
    frozen, though never changed: one per exchange, and a frozen dataclass's ``__init__``
    costs twice a plain one's.)"""

    body: bytes
    status: int
    fault: Fault | None = None
    backend_fault: str = ""
    backend_fault_id: str = ""


def _backend_fault(service: ServiceId, reply: BackendReply) -> tuple[str, str] | None:
    """The fault code and id a backend's refusal carries, checked (docs/adr/0024): a code of
    another shape, or over :data:`~ruta.faults.MAX_BACKEND_FAULT_LENGTH`, is not carried (the
    status and text still are); a missing or malformed fault id is replaced by a fresh one,
    logged here so the caller's id leads to this server's log."""
    if not reply.fault:
        return None
    code = backend_fault_code(reply.fault)
    if code is None:
        _log.warning(
            "backend for %s refused with a fault code that is not one (%d characters); "
            "passing its status on without it",
            service,
            len(reply.fault),
        )
        return None
    fault_id = canonical_uuid(reply.fault_id)
    if fault_id is None:
        fault_id = str(uuid.uuid4())
        _log.info(
            "backend for %s refused fault=%s with no usable fault id; fault_id=%s",
            service,
            code,
            fault_id,
        )
    else:
        _log.info("backend for %s refused fault=%s fault_id=%s", service, code, fault_id)
    return code, fault_id


def _refusal(error: RutaError, *, fault_id: str | None = None) -> transport_pb2.Refusal:
    """What :func:`ruta.faults.abort` would send as a status, as a framed result's refusal."""
    rep = report(error, fault_id=fault_id)
    return transport_pb2.Refusal(
        status_code=rep.status.value[0],
        fault=str(rep.fault),
        fault_id=rep.fault_id,
        message=rep.details,
        retry_after_ms=rep.retry_after_ms or 0,
    )
