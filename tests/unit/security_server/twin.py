"""An honest in-memory twin of the exchange path, for unit tests without sockets.

A real :class:`~security_server.consumer.ConsumerProxy` (DEV/GOV/SOC/ss1) talks through
:class:`InProcessLinks` (the :class:`~security_server.links.PeerLinks` seam) to a real
:class:`~security_server.provider.ProviderProxy` (DEV/GOV/POP/ss1), which calls a
:class:`MemoryBackend` (the :class:`~security_server.backends.Backends` seam). Everything else is
real: certificates from a throwaway CA (:class:`~ruta.pki.testing.TestPki`), OCSP responses it
signs (:class:`MemoryOcsp` answers from the CA instead of over HTTP), signatures, the global
configuration view, SQLite message logs. As python-tuf's ``RepositorySimulator`` stands in for a
repository behind ``FetcherInterface``, a test can make the provider lie (:attr:`World.tamper`),
fail, or refuse, and see which check of which proxy refuses.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from google.protobuf import timestamp_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.faults import RETRY_AFTER_HEADER, Fault, retry_after_of, status_from_code
from ruta.globalconf import GlobalConf, SecurityServer
from ruta.globalconf.errors import OutdatedGlobalConfError
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.pki.certs import certificate_der, certificate_pem, fingerprint
from ruta.pki.errors import PkiError
from ruta.pki.ocsp import OcspClient, OcspStatus, authenticate_ocsp_response
from ruta.pki.signature import sign_message
from ruta.pki.testing import Credential, TestPki
from ruta.v1 import globalconf_pb2, transport_pb2
from sandbox.examples.population import SERVICE_NAME, encode_get_person, file_descriptor_set
from security_server.backends import BackendReply
from security_server.callers import CallerStatus
from security_server.calls import CallInfo, Refused
from security_server.consumer import ConsumerProxy
from security_server.database import open_database
from security_server.errors import TransportError
from security_server.exchange import ExchangeRecorder, SignatureChecker
from security_server.frames import MessageParts
from security_server.identity import ServerIdentity
from security_server.links import PeerRefusal, ProviderLink, Reply
from security_server.log import BodyKey, MessageLog
from security_server.metrics import ExchangeMetrics
from security_server.provider import ProviderProxy
from security_server.settings import SecurityServerSettings
from security_server.transport import PeerStatus

INSTANCE = "DEV"
SOC = MemberId.parse("DEV/GOV/SOC")
POP = MemberId.parse("DEV/GOV/POP")
TAX = MemberId.parse("DEV/GOV/TAX")
SOC_SS = ServerId(SOC, "ss1")
POP_SS = ServerId(POP, "ss1")
TAX_SS = ServerId(TAX, "ss1")
BENEFITS = SubsystemId(SOC, "benefits")
REGISTRY = SubsystemId(POP, "registry")
SERVICE = ServiceId(REGISTRY, SERVICE_NAME)
METHOD = "GetPerson"
PATH = f"/{SERVICE_NAME}/{METHOD}"
PURPOSE = "benefit-eligibility"
PERSON = encode_get_person("38001010001")
MAX_MESSAGE_BYTES = 64 * 1024

#: Rewrites the provider's signed response before the consumer sees it (a lying provider).
Tamper = Callable[[transport_pb2.SignedMessage], transport_pb2.SignedMessage]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ts(at: datetime.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at)
    return stamp


def caller_status(pki: TestPki) -> CallerStatus:
    """Revocation checks of role certificates against ``pki``'s trust anchors, answered by a
    :class:`MemoryOcsp` (every certificate good)."""
    return CallerStatus(PeerStatus(MemoryOcsp(pki)), lambda: pki.trust_anchors)


class MemoryOcsp(OcspClient):
    """OCSP answered by the test CA itself (no HTTP): good, unless the serial is in
    :attr:`revoked`; :attr:`failing` (or a serial in :attr:`failing_for`) fails as an
    unreachable responder."""

    def __init__(self, pki: TestPki) -> None:
        super().__init__()
        self.pki = pki
        self.revoked: set[int] = set()
        self.failing = False
        #: Serials whose responses cannot be had (the rest are answered).
        self.failing_for: set[int] = set()

    def _der(self, cert: x509.Certificate) -> bytes:
        if self.failing or cert.serial_number in self.failing_for:
            raise PkiError("the OCSP responder cannot be reached")
        revoked_at = (
            _now() - datetime.timedelta(hours=1) if cert.serial_number in self.revoked else None
        )
        return self.pki.ocsp_response(cert, revoked_at=revoked_at)

    async def response_for(self, cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
        return self._der(cert)

    async def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> OcspStatus:
        return authenticate_ocsp_response(self._der(cert), cert, issuer)


@dataclass
class Configuration:
    """The configuration source both proxies read (the globalconf client's interface)."""

    view: GlobalConf
    expired: bool = False

    def current(self) -> GlobalConf:
        if self.expired:
            raise OutdatedGlobalConfError("the global configuration expired; fetch a new one")
        return self.view


@dataclass
class MemoryBackend:
    """The provider's backend: answers every call with :attr:`reply` (and records the calls)."""

    reply: BackendReply = field(default_factory=lambda: BackendReply(grpc.StatusCode.OK, b"ok"))
    serving: bool = True
    calls: list[tuple[str, bytes, tuple[tuple[str, str], ...]]] = field(default_factory=list)

    def serves(self, service: ServiceId) -> bool:
        return self.serving and service == SERVICE

    async def call(
        self,
        service: ServiceId,
        path: str,
        body: bytes,
        *,
        metadata: Sequence[tuple[str, str]],
        seconds: float,
    ) -> BackendReply:
        self.calls.append((path, body, tuple(metadata)))
        return self.reply

    async def close(self) -> None:
        return None


class _Link:
    def __init__(self, world: World, server: SecurityServer) -> None:
        self._world = world
        self._server = server

    @property
    def server(self) -> SecurityServer:
        return self._server

    async def exchange(self, parts: MessageParts, *, seconds: float) -> Reply:
        world = self._world
        message = transport_pb2.SignedMessage.FromString(b"".join(parts))
        if world.link_failure is not None:
            raise world.link_failure
        info = CallInfo(
            peer="ipv4:127.0.0.1:50000",
            peer_certificate_pem=certificate_pem(world.soc_auth.certificate),
            deadline=asyncio.get_running_loop().time() + seconds,
        )
        try:
            if world.framed:
                result = await world.provider.framed(
                    transport_pb2.FramedRequest(
                        tag=1, message=message, timeout_ms=int(seconds * 1000)
                    ),
                    info,
                )
                if result.HasField("refusal"):
                    raise _passed_on(result.refusal)
                response = result.response
            else:
                response = await world.provider.exchange(message, info)
        except Refused as refused:
            trailing = dict(refused.trailing_metadata)
            raise PeerRefusal(
                refused.details,
                fault=Fault(trailing["ruta-fault"]),
                fault_id=trailing.get("ruta-fault-id"),
                status=refused.status,
                retry_after_ms=retry_after_of(refused.trailing_metadata),
            ) from None
        world.sent.append(message)
        return (world.tamper(response) if world.tamper is not None else response), None


def _passed_on(refusal: transport_pb2.Refusal) -> Refused:
    retry = ((RETRY_AFTER_HEADER, str(refusal.retry_after_ms)),) if refusal.retry_after_ms else ()
    return Refused(
        status_from_code(refusal.status_code),
        refusal.message,
        (("ruta-fault", refusal.fault), ("ruta-fault-id", refusal.fault_id), *retry),
    )


class InProcessLinks:
    """The :class:`~security_server.links.PeerLinks` twin: hands each signed message to the
    world's real :class:`ProviderProxy`, as the TLS peer SOC/ss1."""

    def __init__(self, world: World) -> None:
        self._world = world

    @property
    def frames(self) -> bool:
        return self._world.framed

    async def connect(
        self, servers: Sequence[SecurityServer], anchors: Sequence[x509.Certificate]
    ) -> ProviderLink:
        if self._world.connect_failure is not None:
            raise self._world.connect_failure
        return _Link(self._world, servers[0])

    async def close(self) -> None:
        return None


def _settings(
    directory: Path, server: ServerId, extra: dict[str, Any] | None = None
) -> SecurityServerSettings:
    return SecurityServerSettings.model_validate(
        {
            **(extra or {}),
            "server_id": str(server),
            "data_dir": str(directory),
            "keys": {
                "auth_key": "unused",
                "auth_cert": "unused",
                "signing_key": "unused",
                "signing_cert": "unused",
            },
            "globalconf": {"anchor": "unused"},
            "consumer": {"listen": "127.0.0.1:0", "client_ca": "unused"},
            "limits": {"max_message_bytes": MAX_MESSAGE_BYTES},
        }
    )


@dataclass
class World:
    """Both proxies, their logs and everything they read; see the module docstring."""

    directory: Path
    pki: TestPki
    ocsp: MemoryOcsp
    soc_auth: Credential
    soc_sign: Credential
    pop_auth: Credential
    pop_sign: Credential
    tax_sign: Credential
    backend_cert: Credential
    conf_proto: globalconf_pb2.GlobalConfiguration
    configuration: Configuration
    backend: MemoryBackend
    consumer_log: MessageLog
    provider_log: MessageLog
    consumer: ConsumerProxy = field(init=False)
    provider: ProviderProxy = field(init=False)
    #: The consumer's recorder (a server's stop settles it before the log closes).
    consumer_recorder: ExchangeRecorder = field(init=False)
    #: Rewrites the provider's response on its way back (a lying provider).
    tamper: Tamper | None = None
    #: Raised by the link instead of sending (a network failure after connecting).
    link_failure: Exception | None = None
    #: Raised when connecting (no provider server reachable).
    connect_failure: TransportError | None = None
    #: Frames (``ProviderProxy.framed``) or one call per message (``exchange``).
    framed: bool = False
    #: The consumer's witness gate raises this when set; the provider's gate likewise.
    consumer_gate_error: Exception | None = None
    provider_gate_error: Exception | None = None
    clock_offset: datetime.timedelta = datetime.timedelta(0)
    #: Settings sections the provider's server is given on top of the twin's.
    provider_settings: dict[str, Any] = field(default_factory=dict)
    #: Messages the consumer handed to the link and that came back with a response.
    sent: list[transport_pb2.SignedMessage] = field(default_factory=list)

    def clock(self) -> datetime.datetime:
        return _now() + self.clock_offset

    def _consumer_gate(self, now: datetime.datetime | None = None) -> None:
        if self.consumer_gate_error is not None:
            raise self.consumer_gate_error

    def _provider_gate(self, now: datetime.datetime | None = None) -> None:
        if self.provider_gate_error is not None:
            raise self.provider_gate_error

    def republish(self) -> None:
        """Apply changes made to :attr:`conf_proto`."""
        self.configuration.view = GlobalConf.from_proto(self.conf_proto)

    def call_info(
        self,
        *,
        client: SubsystemId = BENEFITS,
        certificate: Credential | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        peer: str = "ipv4:10.0.0.7:41000",
        with_certificate: bool = True,
        message_id: str | None = None,
    ) -> CallInfo:
        """A backend's call on the consumer port, as the gRPC layer would describe it."""
        entries: list[tuple[str, str | bytes]] = [
            ("ruta-client", str(client)),
            ("ruta-service", str(REGISTRY)),
            ("ruta-purpose", PURPOSE),
        ]
        if message_id is not None:
            entries.append(("ruta-message-id", message_id))
        entries.extend(metadata)
        cert = certificate if certificate is not None else self.backend_cert
        return CallInfo(
            peer=peer,
            peer_certificate_pem=certificate_pem(cert.certificate) if with_certificate else None,
            deadline=asyncio.get_running_loop().time() + 10,
            metadata=tuple(entries),
        )

    def peer_info(self, credential: Credential | None = None) -> CallInfo:
        """A call on the provider's transport port from a peer presenting ``credential``'s
        certificate (default SOC/ss1's authentication certificate)."""
        cert = (credential or self.soc_auth).certificate
        return CallInfo(
            peer="ipv4:10.0.0.8:41001",
            peer_certificate_pem=certificate_pem(cert),
            deadline=asyncio.get_running_loop().time() + 10,
        )


def _configuration(
    pki: TestPki,
    servers: dict[ServerId, Credential],
    now: datetime.datetime,
) -> globalconf_pb2.GlobalConfiguration:
    conf = globalconf_pb2.GlobalConfiguration(
        instance=INSTANCE,
        serial=1,
        generated_at=_ts(now - datetime.timedelta(minutes=1)),
        expires_at=_ts(now + datetime.timedelta(hours=1)),
        trust_anchors=[certificate_der(c) for c in pki.trust_anchors],
    )
    for member in (SOC, POP, TAX):
        conf.members.add(id=member.to_proto(), name=member.member_code)
    for subsystem in (BENEFITS, REGISTRY):
        conf.subsystems.add(id=subsystem.to_proto())
    for server, auth in servers.items():
        conf.servers.add(
            id=server.to_proto(),
            address="127.0.0.1:1",
            auth_cert_sha256=fingerprint(auth.certificate),
        )
    conf.services.add(
        id=SERVICE.to_proto(), methods=[METHOD], file_descriptor_set=file_descriptor_set()
    )
    conf.contracts.add(
        contract_id="C-1",
        consumer=BENEFITS.to_proto(),
        service=SERVICE.to_proto(),
        methods=[METHOD],
        purpose=PURPOSE,
        legal_basis="Social Benefits Act s.12",
        valid_from=_ts(now - datetime.timedelta(days=1)),
    )
    return conf


async def _log(directory: Path, name: str, origin: ServerId) -> tuple[AsyncEngine, MessageLog]:
    engine = await open_database(f"sqlite+aiosqlite:///{directory / name}")
    return engine, await MessageLog.open(engine, origin=str(origin), body_key=BodyKey.generate())


@asynccontextmanager
async def world(directory: Path, **overrides: Any) -> AsyncIterator[World]:
    """Build the twin in ``directory``; ``overrides`` set :class:`World` fields first."""
    pki = TestPki(directory / "pki")
    ocsp = MemoryOcsp(pki)
    soc_auth, pop_auth = pki.auth(SOC_SS), pki.auth(POP_SS)
    tax_auth = pki.auth(TAX_SS)
    conf_proto = _configuration(pki, {SOC_SS: soc_auth, POP_SS: pop_auth, TAX_SS: tax_auth}, _now())
    consumer_engine, consumer_log = await _log(directory, "soc.db", SOC_SS)
    provider_engine, provider_log = await _log(directory, "pop.db", POP_SS)
    instance = World(
        directory=directory,
        pki=pki,
        ocsp=ocsp,
        soc_auth=soc_auth,
        soc_sign=pki.sign(SOC),
        pop_auth=pop_auth,
        pop_sign=pki.sign(POP),
        tax_sign=pki.sign(TAX),
        backend_cert=pki.subsystem(BENEFITS),
        conf_proto=conf_proto,
        configuration=Configuration(GlobalConf.from_proto(conf_proto)),
        backend=MemoryBackend(),
        consumer_log=consumer_log,
        provider_log=provider_log,
    )
    for name, value in overrides.items():
        setattr(instance, name, value)
    checker = SignatureChecker(ocsp_freshness=datetime.timedelta(hours=1))

    def identity(server: ServerId, auth: Credential, sign: Credential) -> ServerIdentity:
        return ServerIdentity.from_files(
            server=server,
            auth_cert=auth.cert_path,
            signing_key=sign.key_path,
            signing_cert=sign.cert_path,
            ocsp=ocsp,
        )

    instance.provider = ProviderProxy(
        settings=_settings(directory / "pop", POP_SS, instance.provider_settings),
        identity=identity(POP_SS, pop_auth, instance.pop_sign),
        globalconf=instance.configuration,
        recorder=ExchangeRecorder(instance.provider_log),
        backends=instance.backend,
        checker=checker,
        peer_status=PeerStatus(ocsp),
        metrics=ExchangeMetrics(),
        clock=instance.clock,
        gate=instance._provider_gate,
    )
    instance.consumer_recorder = ExchangeRecorder(instance.consumer_log)
    instance.consumer = ConsumerProxy(
        settings=_settings(directory / "soc", SOC_SS),
        identity=identity(SOC_SS, soc_auth, instance.soc_sign),
        globalconf=instance.configuration,
        recorder=instance.consumer_recorder,
        links=InProcessLinks(instance),
        checker=checker,
        metrics=ExchangeMetrics(),
        clock=instance.clock,
        gate=instance._consumer_gate,
    )
    try:
        yield instance
    finally:
        await instance.consumer.close()
        await instance.consumer_recorder.settle()
        for log in (consumer_log, provider_log):
            await log.close()
        for engine in (consumer_engine, provider_engine):
            await engine.dispose()


def resign(
    world_: World,
    message: transport_pb2.SignedMessage,
    header: transport_pb2.MessageHeader,
    *,
    signer: Credential | None = None,
    staple: bytes | None = None,
) -> transport_pb2.SignedMessage:
    """``message`` with ``header`` serialised and signed by ``signer`` (default POP's signing
    credential), stapling ``staple`` (default: a good OCSP response of that moment)."""
    cred = signer or world_.pop_sign
    raw = header.SerializeToString(deterministic=True)
    signature = sign_message(
        raw,
        signer=cred.signer(),
        certificate=cred.certificate,
        ocsp_response=staple if staple is not None else world_.pki.ocsp_response(cred.certificate),
    )
    return transport_pb2.SignedMessage(header=raw, body=message.body, signature=signature)


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()
