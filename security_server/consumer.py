"""The consumer proxy: where an agency's own backends call other agencies' services.

It serves **any** method path ``/pkg.Service/Method`` through one generic bytes handler, so it
never needs the provider's generated code (docs/adr/0005). For each call it: reads the
``ruta-*`` metadata (bounded), refuses a body over the size limit before anything is signed,
authenticates the backend (mTLS client certificate naming its subsystem, or plaintext loopback
where the config allows it) and refuses to act for any subsystem but its own member's that the
configuration registers (it signs with its member's key), checks the configuration in force
(fails closed once expired) and the contract (fail fast; the provider enforces it), connects
over pinned mTLS to a reachable server of the provider's member (balance.py), builds and signs the
request header once (naming that server), sends it to that server within the caller's deadline
(several messages per frame on one stream, ``Transport.ExchangeFrames``, docs/adr/0011;
``Transport.Exchange`` for a message larger than a frame, a provider without frames, or with
``[transport] frames = false``), verifies the response (signature, signer is the provider's
member, bound to this request by ``request_hash``, same message id), logs the request and the
response together in one transaction, and only then returns the body with trailing metadata
``ruta-message-id`` and ``ruta-request-hash``. An exchange that ends any other way after the
request was sent (refusal, network error, bad response, the caller's deadline) still logs the
request, alone, before the refusal goes back (docs/adr/0009). A provider that agreed on
``response-ahead`` may send a response before its own record of it is durable (per response,
docs/adr/0048): the consumer then checks and logs the response while the provider commits, and
answers its caller only once its own records are durable **and** the provider's notice says its
record is; a notice that says otherwise, a broken link or the deadline instead gets the caller
the provider's refusal or a network fault, never the answer (docs/adr/0038).

A provider's refusal reaches the backend unchanged: same fault code, status and fault id (and
the ``ruta-retry-after-ms`` hint of ``server.provider.rate_limited``). A refusal by the
provider's backend reaches it with the backend's status and text, and, when the backend gave
one, its fault code as ``ruta-fault: backend.<code>`` with its fault id (docs/adr/0024).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from typing import Final

import grpc

from ruta.faults import (
    BACKEND_FAULT_PREFIX,
    FAULT_HEADER,
    FAULT_ID_HEADER,
    Fault,
    RutaError,
    backend_fault_code,
    status_from_code,
)
from ruta.globalconf import GlobalConf, SecurityServer
from ruta.ids import MemberId, ServerId, SubsystemId
from ruta.pki.certs import gateway_member_of, load_certificate, subsystem_id_of
from ruta.pki.errors import PkiError
from ruta.v1 import transport_pb2
from security_server.calls import Answer, CallInfo, Refused
from security_server.coalesce import Load
from security_server.errors import MalformedMessageError, ProxyError, Side, TransportError
from security_server.exchange import (
    Clock,
    ExchangeRecorder,
    GlobalConfSource,
    SignatureChecker,
    WitnessGate,
    refusal,
    unexpected_failure,
)
from security_server.frames import signed_message_parts
from security_server.headers import (
    MESSAGE_ID_HEADER,
    REQUEST_HASH_HEADER,
    CallMetadata,
    MetadataBounds,
    ReadHeader,
    build_request_header,
    canonical_uuid,
    id_text,
    parse_call_metadata,
    read_header,
    request_hash,
)
from security_server.identity import ServerIdentity
from security_server.links import (
    MAX_STATUS_TEXT_BYTES,
    PeerLinks,
    PeerRefusal,
)
from security_server.log import Direction, LogEntry
from security_server.metrics import ExchangeMetrics, Outcome
from security_server.settings import SecurityServerSettings, is_loopback_address

__all__ = ["ConsumerProxy", "is_loopback_peer"]

_log = logging.getLogger(__name__)

_BAD_RESPONSE: Final = Fault.SERVER_CONSUMER_INVALID_RESPONSE_SIGNATURE
#: The gRPC status code OK as a header carries it (read once: an enum member's ``value`` is a
#: descriptor of Python code on every read).
_OK: Final = grpc.StatusCode.OK.value[0]


def _peer_host(peer: str) -> str:
    # grpc peer strings: "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:..."
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return ""


def is_loopback_peer(peer: str) -> bool:
    """Whether a gRPC peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``) is a loopback
    address; anything else, IPv4-mapped addresses included, is judged by the address itself."""
    return _is_loopback_host(_peer_host(peer))


# Judged once per peer host (the settings' rule: IPv4-mapped loopback counts; a gRPC peer
# string always carries a numeric address, unix sockets none).
_is_loopback_host = functools.lru_cache(maxsize=1024)(is_loopback_address)
#: Peer strings (address and port: one per caller connection) judged and remembered.
MAX_CACHED_PEERS: Final = 1024
# And once per peer string, for the calls of one connection: what is_loopback_peer says, a
# pure function of the string.
_is_loopback_caller = functools.lru_cache(maxsize=MAX_CACHED_PEERS)(is_loopback_peer)


class ConsumerProxy:
    """The consumer side of an exchange (served over gRPC by :mod:`security_server.rpc`)."""

    def __init__(
        self,
        *,
        settings: SecurityServerSettings,
        identity: ServerIdentity,
        globalconf: GlobalConfSource,
        recorder: ExchangeRecorder,
        links: PeerLinks,
        checker: SignatureChecker,
        metrics: ExchangeMetrics,
        clock: Clock,
        gate: WitnessGate | None = None,
    ) -> None:
        self._settings = settings
        self._limits = settings.limits
        self._bounds = MetadataBounds(
            max_entries=settings.limits.max_metadata_entries,
            max_bytes=settings.limits.max_metadata_bytes,
        )
        self._plain = settings.consumer.allow_plain_loopback
        self._plain_subsystems = settings.consumer.plain_subsystems
        self._identity = identity
        self._globalconf = globalconf
        self._recorder = recorder
        self._peers = links
        self._checker = checker
        self._metrics = metrics
        self._clock = clock
        self._gate = gate
        # (client, message id) of exchanges between their id check and their request being
        # durable in the log (bounded by the calls in flight).
        self._message_ids: set[tuple[str, str]] = set()
        # Those of them whose request is being appended (given back when it is durable).
        self._logging: set[tuple[str, str]] = set()
        # Exchanges being handled now: under load signing batches stay open a moment
        # (security_server.coalesce), so a burst of calls shares one signature and one frame.
        self._load = Load()

    @property
    def reads_peer_certificate(self) -> bool:
        """Whether callers are authenticated by their client certificate (false on a port that
        takes plaintext loopback callers only: :meth:`_authenticate` never reads one there)."""
        return not self._plain

    @property
    def in_flight(self) -> int:
        """Exchanges this proxy is handling now."""
        return self._load.in_flight

    @property
    def frames(self) -> bool:
        """Whether requests go to provider servers several per frame (``[transport] frames``)."""
        return self._peers.frames

    async def close(self) -> None:
        """End the links to provider servers (calls still waiting get network_error)."""
        await self._peers.close()

    async def exchange(self, path: str, body: bytes, info: CallInfo) -> Answer:
        """Carry one call of method ``path`` to the provider and back (see the module
        docstring). Raises :class:`~security_server.calls.Refused` for every refusal (with
        ``ruta-fault``, or a provider backend's own status passed on); nothing else escapes."""
        started = self._load.start()
        try:
            with self._metrics.exchange("consumer") as outcome:
                try:
                    outcome.request_bytes = len(body)
                    call = parse_call_metadata(path, info.metadata, bounds=self._bounds)
                    outcome.message_id = call.message_id
                    return await self._exchange(call, body, info, outcome)
                except _PassThrough as passed:
                    if passed.plain:
                        outcome.fault = f"status.{passed.status.name.lower()}"
                        raise Refused(
                            passed.status, passed.error.message, passed.metadata
                        ) from None
                    outcome.fault = str(passed.error.fault)
                    raise Refused.from_error(
                        passed.error, fault_id=passed.fault_id, status=passed.status
                    ) from None
                except RutaError as exc:
                    error = refusal(Side.CONSUMER, exc)
                    outcome.fault = str(error.fault)
                    raise Refused.from_error(error) from None
                except Exception:  # noqa: BLE001 - a bug must not leak its text to the caller
                    error, fault_id = unexpected_failure(Side.CONSUMER)
                    outcome.fault = str(error.fault)
                    raise Refused.from_error(error, fault_id=fault_id) from None
        finally:
            self._load.end(started)

    async def _exchange(
        self, call: CallMetadata, body: bytes, info: CallInfo, outcome: Outcome
    ) -> Answer:
        if len(body) > self._limits.max_message_bytes:
            raise ProxyError(
                f"the request body is {len(body)} bytes; the limit is "
                f"{self._limits.max_message_bytes}",
                fault=Fault.CLIENT_MESSAGE_TOO_LARGE,
            )
        self._authenticate(call, info)
        conf = self._globalconf.current()
        outcome.identify(conf, call.client, call.service, call.method)
        if not conf.has_subsystem(call.client):
            raise ProxyError(
                f"subsystem {call.client} is not registered in the global configuration; ask "
                "the registry to register it",
                fault=Fault.CLIENT_PERMISSION_DENIED,
            )
        servers = self._provider_servers(conf, call)
        now = self._clock()
        if conf.allows(call.client, call.service, call.method, call.purpose, now) is None:
            raise ProxyError(
                f"no active contract lets {call.client} call {call.service}/{call.method} "
                f"for purpose {call.purpose!r}; ask the provider for a contract",
                fault=Fault.SERVER_CONSUMER_ACCESS_DENIED,
            )
        if self._gate is not None:
            self._gate(now)
        used = (id_text(call.client), call.message_id)
        if call.message_id_from_caller:  # an id this server made is new: nothing to claim
            await self._claim_message_id(call, used)
        try:
            return await self._sign_and_send(
                call, body, info, outcome, conf=conf, servers=servers, used=used
            )
        finally:
            if used not in self._logging:
                self._message_ids.discard(used)

    def _log(self, entries: list[LogEntry], used: tuple[str, str]) -> asyncio.Task[None]:
        """Append ``entries`` (the request, alone or with its response) in a task of the
        recorder, which the server's stop awaits: a cancelled caller does not cancel it. The
        message id ``used`` is given back once the append is done."""
        self._logging.add(used)
        task = self._recorder.append_soon(entries, detached=False)

        def done(_: object) -> None:
            self._logging.discard(used)
            self._message_ids.discard(used)

        task.add_done_callback(done)
        return task

    async def _claim_message_id(self, call: CallMetadata, used: tuple[str, str]) -> None:
        """Take ``call``'s message id for this exchange, before anything is signed: refused
        (``client.reused_message_id``) while another exchange of this server holds it or once
        a request with it is in the log, so a message id names one request only. An id this
        server made (a random UUID) is new by construction: only a caller's id is looked up."""
        if not call.message_id_from_caller:
            return
        if used in self._message_ids:
            raise _reused(call)
        self._message_ids.add(used)
        try:
            taken = await self._recorder.used(call.client, call.message_id)
        except BaseException:
            self._message_ids.discard(used)
            raise
        if taken:
            self._message_ids.discard(used)
            raise _reused(call)

    async def _sign_and_send(
        self,
        call: CallMetadata,
        body: bytes,
        info: CallInfo,
        outcome: Outcome,
        *,
        conf: GlobalConf,
        servers: tuple[SecurityServer, ...],
        used: tuple[str, str],
    ) -> Answer:
        """Sign, send, check, log. Once the request is signed it is logged whatever happens
        (:meth:`_log`), and the message id stays taken until it is durable."""
        # Held fresh nearly always: then no coroutine to run.
        staple = self._identity.cached_staple(conf.trust_anchors)
        if staple is None:
            staple = await self._identity.staple(conf.trust_anchors)
        # Connected before anything is signed, so the request names the server it is sent to
        # and a provider that cannot be reached leaves nothing in the log.
        link = await self._peers.connect(servers, conf.trust_anchors)
        provider = link.server
        created_at = self._clock()
        header, header_bytes = build_request_header(
            call,
            body=body,
            sender=self._identity.server,
            receiver=provider.id,
            created_at=created_at,
        )
        # Serialised once (alone: written, no message built): the log keeps these bytes and
        # the message carries them.
        signature_value, signature_bytes = await self._identity.sign_batched_serialised(
            header_bytes, staple=staple, hold=self._load.hold(), alone=self._load.alone
        )
        sent = self._recorder.entry(
            Direction.SENT,
            header=header_bytes,
            signature=signature_bytes,
            certificate=self._identity.signing_certificate,
            body=body,
            read=ReadHeader(
                header=header,
                client=call.client,
                service=call.service,
                sender=self._identity.server,
                receiver=provider.id,
                created_at=created_at,
            ),
        )
        digest = request_hash(header_bytes, signature_value)
        # The request is logged together with its response, in one transaction, once the
        # response checks out (docs/adr/0009); when the exchange ends any other way after
        # sending, it is logged alone before the refusal goes back (after it, when the caller
        # left: the caller's deadline cancelled this handler).
        try:
            # Awaited here, not in a helper's coroutine: one frame fewer to resume.
            try:
                response, provider_commit = await link.exchange(
                    signed_message_parts(header_bytes, body, signature_bytes),
                    seconds=self._timeout(info),
                )
            except (PeerRefusal, TimeoutError, TransportError) as exc:
                raise _peer_failure(provider, exc) from None
            # protobuf (upb) copies a bytes field on every read: each is read out once.
            response_body = response.body
            response_header_bytes = response.header
            response_signature = response.signature
            read = self._check_response(
                response_header_bytes, response_body, header, digest, provider.id
            )
            response_header = read.header
            certificate = self._checker.verify(
                conf,
                response_header_bytes,
                response_signature,
                claimed_member=call.service.member,
                signed_at=read.created_at,
            )
            received = self._recorder.entry(
                Direction.RECEIVED,
                header=response_header_bytes,
                signature=response_signature,
                certificate=certificate,
                body=response_body,
                read=read,
            )
        except asyncio.CancelledError:
            self._log([sent], used)
            raise
        except Exception:
            await asyncio.shield(self._log([sent], used))
            raise
        if call.message_id_from_caller:
            await asyncio.shield(self._log([sent, received], used))
        else:
            # An id this server made is held by nobody, so nothing waits to be given back, and
            # the append is queued as soon as it is called (MessageLog.append): a caller
            # cancelled now loses no record. No task of its own, then (one per exchange). A
            # quiet server commits it right here, in this step (docs/adr/0045).
            await self._recorder.append([sent, received], at_once=True)
        if provider_commit is not None:
            # The provider sent its response ahead of its own commit (docs/adr/0038): ours is
            # durable now, and the caller is answered only once the provider's is too. When it
            # is not (a refusal, a broken link, the deadline), the request and this response
            # stay in this log and the caller gets the refusal: `ruta audit reconcile` reports
            # the response as received here and never logged by its sender.
            # Within the caller's deadline; its refusal, a broken link or the deadline refuse
            # as the exchange's do.
            try:
                await provider_commit.wait(seconds=self._timeout(info))
            except (PeerRefusal, TimeoutError, TransportError) as exc:
                raise _peer_failure(provider, exc) from None
        outcome.response_bytes = len(response_body)
        exchanged = ((MESSAGE_ID_HEADER, call.message_id), (REQUEST_HASH_HEADER, digest.hex()))
        if response_header.status_code != _OK:
            raise self._backend_status(response_header, response_body, exchanged)
        return Answer(response_body, exchanged)

    def _authenticate(self, call: CallMetadata, info: CallInfo) -> None:
        """The caller may act as ``call.client``: a subsystem of this server's own member
        (a server signs with its member's key, so it never acts for another member), proven by
        its client certificate or allowed to plaintext loopback callers by the configuration."""
        own = self._identity.server.member
        if call.client.member != own:
            raise ProxyError(
                f"this security server acts only for subsystems of {own}; call as "
                f"{call.client} through a security server of {call.client.member}",
                fault=Fault.CLIENT_PERMISSION_DENIED,
            )
        if self._plain:
            if not _is_loopback_caller(info.peer):
                raise ProxyError(
                    "plaintext calls are accepted only from loopback",
                    fault=Fault.CLIENT_UNAUTHENTICATED,
                )
            if call.client not in self._plain_subsystems:
                raise ProxyError(
                    f"a plaintext loopback caller may not act as {call.client}; use a client "
                    "certificate",
                    fault=Fault.CLIENT_PERMISSION_DENIED,
                )
            return
        pem = info.peer_certificate_pem
        gateway, subsystem = _caller_named(pem) if pem is not None else (None, None)
        # A member's HTTP gateway acts for this member's subsystems (the member was checked
        # above), and only at the member's own servers (docs/adr/0021-gateway.md).
        if gateway is not None:
            if gateway == own:
                return
            raise ProxyError(
                f"the gateway of {gateway} may not act as {call.client} at this server",
                fault=Fault.CLIENT_PERMISSION_DENIED,
            )
        if subsystem is None:
            raise ProxyError(
                "the caller presented no client certificate naming a subsystem",
                fault=Fault.CLIENT_UNAUTHENTICATED,
            )
        if subsystem != call.client:
            raise ProxyError(
                f"the caller's certificate names {subsystem}, not {call.client}",
                fault=Fault.CLIENT_PERMISSION_DENIED,
            )

    def _provider_servers(self, conf: GlobalConf, call: CallMetadata) -> tuple[SecurityServer, ...]:
        if conf.service(call.service) is None:
            raise ProxyError(
                f"service {call.service} is not in the global configuration",
                fault=Fault.CLIENT_UNKNOWN_SERVICE,
            )
        servers = conf.servers_of(call.service.member)
        if not servers:
            raise ProxyError(
                f"member {call.service.member} lists no security server",
                fault=Fault.CLIENT_UNKNOWN_SERVICE,
            )
        return servers

    def _timeout(self, info: CallInfo) -> float:
        remaining = info.time_remaining()
        if remaining is None:
            return self._limits.default_deadline_seconds
        return min(remaining, self._limits.max_deadline_seconds)

    def _check_response(
        self,
        response_header: bytes,
        body: bytes,
        request: transport_pb2.MessageHeader,
        digest: bytes,
        provider: ServerId,
    ) -> ReadHeader:
        try:
            read = read_header(response_header)
        except MalformedMessageError as exc:
            raise ProxyError(
                f"the provider's response is malformed: {exc.message}", fault=_BAD_RESPONSE
            ) from None
        header = read.header
        problems = []
        if header.kind != transport_pb2.MESSAGE_KIND_RESPONSE:
            problems.append("it is not a response")
        if header.message_id != request.message_id:
            problems.append("it carries another message id")
        if header.request_hash != digest:
            problems.append("it is bound to another request (request_hash)")
        if read.sender != provider:
            problems.append("another server sent it")
        if header.service != request.service:
            problems.append("it names another service")
        if hashlib.sha256(body).digest() != header.body_sha256:
            problems.append("its body does not match the signed digest")
        if len(body) > self._limits.max_message_bytes:
            problems.append("its body is over the size limit")
        if header.backend_fault or header.backend_fault_id:
            problems.extend(_backend_fault_problems(header))
        if problems:
            raise ProxyError(
                "the provider's response is refused: " + "; ".join(problems), fault=_BAD_RESPONSE
            )
        return read

    def _backend_status(
        self,
        header: transport_pb2.MessageHeader,
        body: bytes,
        exchanged: tuple[tuple[str, str], ...],
    ) -> _PassThrough:
        text = body[:MAX_STATUS_TEXT_BYTES].decode("utf-8", "replace")
        status = status_from_code(header.status_code)
        try:
            fault = Fault(header.fault) if header.fault else None
        except ValueError:
            fault = None
        if fault is not None:
            return _PassThrough(RutaError(text, fault=fault), fault_id=None, status=status)
        if header.backend_fault:
            # The backend's own refusal: its code, under the prefix that keeps it apart from the
            # security servers' codes, and its fault id (docs/adr/0024). Both are in the signed
            # header, so both logs hold them.
            code = BACKEND_FAULT_PREFIX + header.backend_fault
            _log.info(
                "passed on a refusal of the backend of %s: fault=%s fault_id=%s",
                header.service.service_name,
                code,
                header.backend_fault_id,
            )
            exchanged = (
                (FAULT_HEADER, code),
                (FAULT_ID_HEADER, header.backend_fault_id),
                *exchanged,
            )
        # The provider's backend answered with an application status: pass it on as it is.
        return _PassThrough(
            _ApplicationStatusError(text),
            fault_id=None,
            status=status,
            plain=True,
            metadata=exchanged,
        )


def _backend_fault_problems(header: transport_pb2.MessageHeader) -> list[str]:
    """What is wrong with a response's backend fault: the provider server checks what its
    backend gave (docs/adr/0024), so a signed header that breaks the rule is a provider's lie."""
    problems = []
    if header.status_code == _OK:
        problems.append("it carries a backend fault with status OK")
    if backend_fault_code(header.backend_fault) is None:
        problems.append("its backend fault is not a fault code")
    if canonical_uuid(header.backend_fault_id) is None:
        problems.append("its backend fault id is not a UUID")
    return problems


def _peer_failure(
    provider: SecurityServer, exc: PeerRefusal | TimeoutError | TransportError
) -> Exception:
    """What the caller gets when the provider server refused, did not answer in time, or could
    not be reached: its refusal passed on, the deadline's status, or network_error."""
    if isinstance(exc, PeerRefusal):
        if exc.fault is None:
            return ProxyError(
                f"security server {provider.id} refused the request with an unknown fault",
                fault=Fault.SERVER_CONSUMER_NETWORK_ERROR,
            )
        return _PassThrough(
            RutaError(exc.message, fault=exc.fault, retry_after_ms=exc.retry_after_ms),
            fault_id=exc.fault_id,
            status=exc.status,
        )
    if isinstance(exc, TimeoutError):
        return _deadline_passed(provider)
    return ProxyError(exc.message, fault=Fault.SERVER_CONSUMER_NETWORK_ERROR)


def _reused(call: CallMetadata) -> ProxyError:
    return ProxyError(
        f"message id {call.message_id} of {call.client} was already used; send each request "
        "with a new message id (or none: one is generated)",
        fault=Fault.CLIENT_REUSED_MESSAGE_ID,
    )


#: Backend client certificates read (as gRPC hands them over, PEM) and the names found in them.
MAX_CACHED_CALLER_CERTIFICATES: Final = 256


@functools.lru_cache(maxsize=MAX_CACHED_CALLER_CERTIFICATES)
def _caller_named(pem: bytes) -> tuple[MemberId | None, SubsystemId | None]:
    """The member whose gateway a backend's client certificate (PEM, as gRPC hands it over)
    names, and the subsystem it names; each ``None`` where it names none (or is no certificate
    that parses). Read once per certificate, not per call: parsing it and its SAN extension
    took tens of microseconds per call. A certificate is public and its bytes decide the
    answer, so nothing secret is kept and a remembered answer is the one reading it again
    would give (gRPC checked its chain and validity in the TLS handshake of the call)."""
    try:
        cert = load_certificate(pem)
    except PkiError:
        return None, None
    try:
        gateway = gateway_member_of(cert)
    except PkiError:
        gateway = None
    try:
        subsystem: SubsystemId | None = subsystem_id_of(cert)
    except PkiError:
        subsystem = None
    return gateway, subsystem


def _deadline_passed(provider: SecurityServer) -> _PassThrough:
    return _PassThrough(
        RutaError(
            f"security server {provider.id} did not answer within the deadline",
            fault=Fault.SERVER_CONSUMER_NETWORK_ERROR,
        ),
        fault_id=None,
        status=grpc.StatusCode.DEADLINE_EXCEEDED,
    )


class _ApplicationStatusError(RutaError):
    """A non-OK status the provider's backend returned (not a Ruta refusal)."""


class _PassThrough(Exception):  # noqa: N818 - control flow, never escapes this module
    def __init__(
        self,
        error: RutaError,
        *,
        fault_id: str | None,
        status: grpc.StatusCode,
        plain: bool = False,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.fault_id = fault_id
        self.status = status
        self.plain = plain
        self.metadata = metadata
