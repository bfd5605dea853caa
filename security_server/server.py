"""One running security server: everything assembled, started in order, stopped cleanly.

Three listeners: the **consumer** port (the agency's own backends; mTLS with subsystem client
certificates, or plaintext loopback where the settings allow it), the **transport** port (other
security servers; mTLS with authentication certificates, client certificates checked against the
trust anchors of the configuration in force and then pinned by fingerprint), and the **metrics**
port (HTTP ``/metrics`` and ``/healthz``). Both gRPC ports also serve ``grpc.health.v1.Health``.

Once every port is bound, ``DATA_DIR/ready.json`` is written atomically with the bound addresses
(so a caller may configure port 0)::

    {"server_id": "DEV/GOV/POP/ss1", "pid": 1234, "consumer": "127.0.0.1:40001",
     "transport": "127.0.0.1:40002", "metrics": "http://127.0.0.1:40003/metrics",
     "log_vkey": "DEV/GOV/POP/ss1+1a2b3c4d+AbC..."}

``log_vkey`` is the message log's checkpoint verifier key, which the registry publishes for the
server so its witness cosigns this log.

:meth:`SecurityServerApp.stop` stops accepting calls, lets calls in flight finish within a grace
period, flushes the message log and closes every resource; it removes ``ready.json``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
import grpc
import grpc.aio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health, health_pb2_grpc  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.addresses import join_address, split_address
from ruta.faults import Fault, RutaError
from ruta.globalconf import ConfigurationAnchor, GlobalConf
from ruta.globalconf.client import GlobalConfClient
from ruta.pki.certs import certificate_pem
from ruta.pki.keys import load_private_key
from ruta.pki.ocsp import OcspClient
from ruta.pki.tls import server_credentials
from ruta.readiness import write_ready_file
from security_server.audit import AuditServicer, add_audit_service, audit_server_credentials
from security_server.backends import GrpcBackends
from security_server.checkpointer import (
    LOG_KEY_FILE,
    Checkpointer,
    load_or_create_log_key,
    witness_target_of,
)
from security_server.consumer import ConsumerProxy
from security_server.database import open_database
from security_server.exchange import ExchangeRecorder, SignatureChecker
from security_server.identity import ServerIdentity
from security_server.links import GrpcPeerLinks
from security_server.log import LogMaintenance, MessageLog, load_or_create_body_key
from security_server.metrics import ExchangeMetrics, metrics_app
from security_server.provider import ProviderProxy
from security_server.rpc import add_transport_service, consumer_handler
from security_server.settings import SecurityServerSettings
from security_server.transport import (
    PeerChannels,
    PeerStatus,
    grpc_message_options,
)

__all__ = ["READY_FILE", "SHUTDOWN_GRACE_SECONDS", "SecurityServerApp", "ServerStartError"]

_log = logging.getLogger(__name__)

#: Name of the file in the data directory that tells the bound addresses.
READY_FILE: Final = "ready.json"
#: How long calls in flight may take to finish at shutdown.
SHUTDOWN_GRACE_SECONDS: Final = 5.0
#: Largest metadata gRPC accepts on a listener (Ruta's own bound is checked per call).
_GRPC_MAX_METADATA_BYTES: Final = 64 * 1024


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _key_pem(path: Path) -> bytes:
    return load_private_key(path).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class _TransportTrust:
    """Feeds the transport port's TLS with the trust anchors of the configuration in force."""

    key_pem: bytes
    cert_pem: bytes
    fallback: bytes
    globalconf: GlobalConfClient
    _anchors: tuple[x509.Certificate, ...] = ()

    def configuration(self) -> Any:
        view = self.globalconf.held
        roots = (
            certificate_pem(*view.trust_anchors) if view and view.trust_anchors else self.fallback
        )
        return grpc.ssl_server_certificate_configuration([(self.key_pem, self.cert_pem)], roots)

    def fetch(self) -> Any:
        """Called by gRPC before handshakes: a new configuration when the anchors changed."""
        view = self.globalconf.held
        anchors = view.trust_anchors if view is not None else ()
        if anchors == self._anchors:
            return None
        self._anchors = anchors
        return self.configuration()


class SecurityServerApp:
    """A started security server. Build with :meth:`start`; always :meth:`stop` it."""

    def __init__(self, settings: SecurityServerSettings) -> None:
        self.settings = settings
        self.metrics = ExchangeMetrics()
        self.addresses: dict[str, str] = {}
        self._closers: list[Callable[[], Any]] = []
        self._grpc_servers: list[grpc.aio.Server] = []
        self._stopped = asyncio.Event()
        self._health: list[health.aio.HealthServicer] = []
        self._draining: list[Callable[[], None]] = []
        self.globalconf: GlobalConfClient | None = None
        self.log: MessageLog | None = None
        self.checkpointer: Checkpointer | None = None
        self.consumer: ConsumerProxy | None = None

    @classmethod
    async def start(
        cls, settings: SecurityServerSettings, *, clock: Callable[[], datetime] = _utc_now
    ) -> SecurityServerApp:
        """Load credentials, open the log, fetch the configuration, bind every port and write
        ``ready.json``. On any failure everything already opened is closed again and the error
        (a :class:`~ruta.faults.RutaError` naming what is wrong, never a secret) propagates."""
        app = cls(settings)
        try:
            await app._start(clock)
        except BaseException:
            await app.stop()
            raise
        return app

    async def _start(self, clock: Callable[[], datetime]) -> None:
        settings = self.settings
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        limits = settings.limits

        ocsp = OcspClient(freshness=timedelta(seconds=limits.ocsp_freshness_seconds))
        self._closers.append(ocsp.close)
        identity = ServerIdentity.from_files(
            server=settings.server,
            auth_cert=settings.keys.auth_cert,
            signing_key=settings.keys.signing_key,
            signing_cert=settings.keys.signing_cert,
            ocsp=ocsp,
        )

        globalconf = GlobalConfClient(
            anchor=ConfigurationAnchor.from_file(settings.globalconf.anchor),
            cache_path=data_dir / "globalconf.bin",
            settings=settings.globalconf,
            clock=clock,
        )
        await globalconf.start()
        self._closers.append(globalconf.stop)
        self.globalconf = globalconf
        globalconf.on_update(self._on_configuration)
        if globalconf.held is not None:
            self._on_configuration(globalconf.held)

        engine: AsyncEngine = await open_database(settings.log_url)
        self._closers.append(engine.dispose)
        log = await MessageLog.open(
            engine, origin=str(settings.server), body_key=load_or_create_body_key(data_dir / "keys")
        )
        self._closers.append(log.close)
        self.log = log
        retention = settings.log.body_retention_days
        maintenance = LogMaintenance(
            log,
            body_retention=timedelta(days=retention) if retention is not None else None,
            interval=timedelta(seconds=settings.log.maintenance_interval_seconds),
            clock=clock,
        )
        maintenance.start()
        self._closers.append(maintenance.stop)
        metadata_only = frozenset(settings.log.metadata_only_subsystems)

        self._session = aiohttp.ClientSession()
        self._closers.append(self._session.close)
        log_key = load_or_create_log_key(
            settings.checkpoints.log_key or data_dir / "keys" / LOG_KEY_FILE
        )
        checkpointer = await Checkpointer.open(
            log=log,
            key=log_key,
            witness=lambda: witness_target_of(globalconf.held),
            session=self._session,
            settings=settings.checkpoints,
            clock=clock,
        )
        checkpointer.start()
        self._closers.append(checkpointer.stop)
        self.checkpointer = checkpointer
        self.metrics.watch(
            log_size=log.size,
            cosignature_age=lambda: checkpointer.cosignature_age().total_seconds(),
            certificates={
                "auth": identity.auth_certificate.not_valid_after_utc,
                "signing": identity.signing_certificate.not_valid_after_utc,
            },
        )

        checker = SignatureChecker(ocsp_freshness=timedelta(seconds=limits.ocsp_freshness_seconds))
        peer_status = PeerStatus(ocsp)
        peers = PeerChannels(
            key_path=settings.keys.auth_key,
            cert_path=settings.keys.auth_cert,
            max_message_bytes=limits.max_message_bytes,
            status=peer_status,
        )
        self._closers.append(peers.close)
        backends = GrpcBackends(settings.backends, max_message_bytes=limits.max_message_bytes)
        self._closers.append(backends.close)

        consumer_recorder = ExchangeRecorder(log, metadata_only)
        # Closers run in reverse: requests still being logged are durable before the log closes.
        self._closers.append(consumer_recorder.settle)
        consumer = ConsumerProxy(
            settings=settings,
            identity=identity,
            globalconf=globalconf,
            recorder=consumer_recorder,
            links=GrpcPeerLinks(
                peers,
                frames=settings.transport.frames,
                on_frame=lambda messages: self.metrics.frame_written("consumer", messages),
            ),
            checker=checker,
            gate=checkpointer.check_cosigned,
            metrics=self.metrics,
            clock=clock,
        )
        provider = ProviderProxy(
            settings=settings,
            identity=identity,
            globalconf=globalconf,
            recorder=ExchangeRecorder(log, metadata_only),
            backends=backends,
            checker=checker,
            peer_status=peer_status,
            gate=checkpointer.check_cosigned,
            metrics=self.metrics,
            clock=clock,
        )

        self._bind_consumer(consumer)
        self._bind_transport(provider, identity, globalconf)
        if settings.audit.listen:
            self._bind_audit(
                log=log,
                engine=engine,
                log_key=log_key,
                globalconf=globalconf,
                identity=identity,
                clock=clock,
            )
        for server in self._grpc_servers:
            await server.start()
        await self._bind_metrics()
        self._write_ready()
        _log.info(
            "security server %s serving: consumer %s, transport %s, metrics %s",
            settings.server,
            self.addresses["consumer"],
            self.addresses["transport"],
            self.addresses["metrics"],
        )

    def _options(self) -> list[tuple[str, Any]]:
        return [
            *grpc_message_options(self.settings.limits.max_message_bytes),
            ("grpc.max_metadata_size", _GRPC_MAX_METADATA_BYTES),
            # Never share a port with another process: a second server must fail to start.
            ("grpc.so_reuseport", 0),
        ]

    def _bind_audit(
        self,
        *,
        log: MessageLog,
        engine: AsyncEngine,
        log_key: Ed25519PrivateKey,
        globalconf: GlobalConfClient,
        identity: ServerIdentity,
        clock: Callable[[], datetime],
    ) -> None:
        """The audit port: auditors over mTLS (docs/auditor-guide.md). Auditor certificates
        chain to ``audit.client_ca``, or by default to the trust anchors of the configuration in
        force (followed as it changes)."""
        settings = self.settings
        audit_server = self._grpc_server(self._options())
        add_audit_service(
            audit_server,
            AuditServicer(
                log=log,
                engine=engine,
                server=str(settings.server),
                key=log_key,
                globalconf=lambda: globalconf.held.signed if globalconf.held else b"",
                settings=settings.audit,
                clock=clock,
            ),
        )
        listen = settings.audit.listen
        if settings.audit.client_ca is not None:
            credentials = audit_server_credentials(
                settings.keys.auth_key, settings.keys.auth_cert, settings.audit.client_ca
            )
        else:
            credentials = self._anchored_credentials(identity, globalconf)
        port = _add_port(listen, "audit", lambda: audit_server.add_secure_port(listen, credentials))
        self.addresses["audit"] = _bound(listen, port)

    def _anchored_credentials(
        self, identity: ServerIdentity, globalconf: GlobalConfClient
    ) -> grpc.ServerCredentials:
        """mTLS with the auth certificate, accepting client certificates that chain to the trust
        anchors of the configuration in force (re-read before handshakes when they change)."""
        trust = _TransportTrust(
            key_pem=_key_pem(self.settings.keys.auth_key),
            cert_pem=self.settings.keys.auth_cert.read_bytes(),
            fallback=certificate_pem(identity.auth_certificate),
            globalconf=globalconf,
        )
        return grpc.dynamic_ssl_server_credentials(
            trust.configuration(), trust.fetch, require_client_authentication=True
        )

    def _bind_consumer(self, consumer: ConsumerProxy) -> None:
        self.consumer = consumer
        self._closers.append(consumer.close)  # before the peer channels close (reverse order)
        settings = self.settings
        consumer_server = self._grpc_server(self._options())
        consumer_server.add_generic_rpc_handlers((consumer_handler(consumer),))
        listen = settings.consumer.listen
        if settings.consumer.allow_plain_loopback:
            port = _add_port(listen, "consumer", lambda: consumer_server.add_insecure_port(listen))
        else:
            assert settings.consumer.client_ca is not None  # checked by the settings model
            credentials = server_credentials(
                settings.consumer.tls_key or settings.keys.auth_key,
                settings.consumer.tls_cert or settings.keys.auth_cert,
                settings.consumer.client_ca,
                require_client_auth=True,
            )
            port = _add_port(
                listen, "consumer", lambda: consumer_server.add_secure_port(listen, credentials)
            )
        self.addresses["consumer"] = _bound(listen, port)

    def _bind_transport(
        self, provider: ProviderProxy, identity: ServerIdentity, globalconf: GlobalConfClient
    ) -> None:
        self._draining.append(provider.drain)  # streams end when the server stops
        settings = self.settings
        # Transport port: client certificates must chain to the configuration's trust anchors.
        transport_server = self._grpc_server(self._options())
        add_transport_service(transport_server, provider)
        listen = settings.transport.listen
        credentials = self._anchored_credentials(identity, globalconf)
        port = _add_port(
            listen, "transport", lambda: transport_server.add_secure_port(listen, credentials)
        )
        self.addresses["transport"] = _bound(listen, port)

    async def _bind_metrics(self) -> None:
        settings = self.settings
        runner = web.AppRunner(metrics_app(self.metrics), access_log=None)
        await runner.setup()
        self._closers.append(runner.cleanup)
        host, port = split_address(settings.metrics.listen)
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ServerStartError(
                f"cannot listen on {settings.metrics.listen} for the metrics port ({exc.strerror})"
            ) from None
        bound = runner.addresses[0]
        self.addresses["metrics"] = f"http://{join_address(host, bound[1])}/metrics"

    def _grpc_server(self, options: list[tuple[str, Any]]) -> grpc.aio.Server:
        server = grpc.aio.server(
            options=options, maximum_concurrent_rpcs=self.settings.limits.max_concurrent_calls
        )
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        self._health.append(servicer)
        self._grpc_servers.append(server)
        return server

    def _on_configuration(self, view: GlobalConf) -> None:
        self.metrics.globalconf_serial.set(view.serial)
        self.metrics.globalconf_generated.set(view.generated_at.timestamp())
        self.metrics.globalconf_expiry.set(view.expires_at.timestamp())

    def _write_ready(self) -> None:
        write_ready_file(
            self.settings.data_dir / READY_FILE,
            {
                "server_id": str(self.settings.server),
                "pid": os.getpid(),
                **self.addresses,
                "log_vkey": self.checkpointer.vkey if self.checkpointer else "",
            },
        )

    async def wait_stopped(self) -> None:
        """Return once :meth:`stop` has finished."""
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop serving (calls in flight get :data:`SHUTDOWN_GRACE_SECONDS`), then close the log,
        the database, the configuration client and every channel. Idempotent."""
        if self._stopped.is_set():
            return
        for servicer in self._health:
            await servicer.enter_graceful_shutdown()
        for drain in self._draining:
            drain()  # streams finish what they carry and end, instead of waiting out the grace
        servers, self._grpc_servers = self._grpc_servers, []
        await asyncio.gather(*(s.stop(SHUTDOWN_GRACE_SECONDS) for s in servers))
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            try:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # noqa: BLE001 - a failing closer must not keep the others open
                _log.exception("error while shutting down")
        (self.settings.data_dir / READY_FILE).unlink(missing_ok=True)
        self._stopped.set()


class ServerStartError(RutaError):
    """A listener cannot be bound (address in use, not local, no permission)."""

    default_fault = Fault.CLIENT_INVALID_CONFIG


def _add_port(listen: str, what: str, add: Callable[[], int]) -> int:
    try:
        port = add()
    except RuntimeError:  # grpc's "failed to bind"
        port = 0
    if port == 0:
        raise ServerStartError(
            f"cannot listen on {listen} for the {what} port (address in use or not local)"
        )
    return port


def _bound(listen: str, port: int) -> str:
    host, _ = split_address(listen)
    return join_address(host, port)
