"""One running security server: everything assembled, started in order, stopped cleanly.

Three listeners: the **consumer** port (the agency's own backends; mTLS with subsystem client
certificates, or plaintext loopback where the settings allow it), the **transport** port (other
security servers; mTLS with authentication certificates, client certificates checked against the
trust anchors of the configuration in force and then pinned by fingerprint), and the **metrics**
port (HTTP ``/metrics`` and ``/healthz``). Every gRPC port also serves ``grpc.health.v1.Health``
and runs under the listener watchdog (:mod:`ruta.listeners`): a port whose grpcio server loop
ends is reported NOT_SERVING and restarted on the same address.

Once every port is bound, ``DATA_DIR/ready.json`` is written atomically with the bound addresses
(so a caller may configure port 0)::

    {"server_id": "DEV/GOV/POP/ss1", "pid": 1234, "consumer": "127.0.0.1:40001",
     "transport": "127.0.0.1:40002", "metrics": "http://127.0.0.1:40003/metrics",
     "log_vkey": "DEV/GOV/POP/ss1+1a2b3c4d+AbC..."}

``log_vkey`` is the message log's checkpoint verifier key, which the registry publishes for the
server so its witness cosigns this log. The process appends to its own tree, named by ``origin``
(also in ``ready.json``): the server's identifier, or a node log of it for a named node or a
worker (``[server]`` settings, :mod:`ruta.node_logs`, docs/operator/clusters.md). Run as worker
``i`` of a node (:mod:`security_server.workers`), the process shares the node's ports with its
siblings and keeps its ready file, configuration cache and refusals under
``DATA_DIR/workers/w<i>/``.

:meth:`SecurityServerApp.stop` stops accepting calls, lets calls in flight finish within a grace
period, flushes the message log and closes every resource; it removes ``ready.json``.
"""

from __future__ import annotations

import asyncio
import functools
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
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.addresses import join_address, split_address
from ruta.globalconf import ConfigurationAnchor, GlobalConf
from ruta.globalconf.client import GlobalConfClient
from ruta.listeners import ListenerError, Listeners, ListenerSpec
from ruta.pki.certs import certificate_pem, load_certificates, read_certificate_file
from ruta.pki.keys import load_private_key
from ruta.pki.ocsp import OcspClient
from ruta.pki.tls import server_credentials
from ruta.readiness import write_ready_file
from ruta.settings import ConfigError
from security_server.audit import AuditServicer, add_audit_service, audit_server_credentials
from security_server.backends import BackendChannels
from security_server.callers import CallerIssuerError, CallerStatus, check_role_ca
from security_server.checkpointer import (
    LOG_KEY_FILE,
    Checkpointer,
    load_or_create_log_key,
    log_vkey,
    witness_target_of,
)
from security_server.cluster import MemberLogs, OriginLock
from security_server.console import AuditConsole, ConsoleListener
from security_server.consumer import ConsumerProxy
from security_server.database import PlannerStatistics, open_database
from security_server.exchange import ExchangeRecorder, SignatureChecker
from security_server.identity import MAX_CERTIFICATE_FILE_CHAIN, ServerIdentity
from security_server.links import GrpcPeerLinks
from security_server.log import BodyKey, LogMaintenance, MessageLog, load_or_create_body_key
from security_server.metrics import ExchangeMetrics, metrics_app
from security_server.provider import ProviderProxy
from security_server.refusals import REFUSALS_FILE, RefusalLog
from security_server.reload import LiveSubsystems
from security_server.rpc import add_transport_service, consumer_handler
from security_server.settings import KeepaliveSettings, SecurityServerSettings
from security_server.transport import (
    PeerChannels,
    PeerStatus,
    grpc_message_options,
    keepalive_options,
    ping_policy_options,
)

__all__ = [
    "READY_FILE",
    "SHUTDOWN_GRACE_SECONDS",
    "WORKERS_DIR",
    "SecurityServerApp",
    "ServerStartError",
    "worker_dir",
]

_log = logging.getLogger(__name__)

#: Name of the file in the data directory that tells the bound addresses.
READY_FILE: Final = "ready.json"
#: Folder of the data directory that holds each worker's own files (``w0``, ``w1``, ...).
WORKERS_DIR: Final = "workers"
#: How long calls in flight may take to finish at shutdown.
SHUTDOWN_GRACE_SECONDS: Final = 5.0
#: Largest metadata gRPC accepts on a listener (Ruta's own bound is checked per call).
_GRPC_MAX_METADATA_BYTES: Final = 64 * 1024


def _utc_now() -> datetime:
    return datetime.now(UTC)


def worker_dir(data_dir: Path, worker: int | None) -> Path:
    """Where a process keeps its own files: ``data_dir`` itself for a server run alone, and
    ``data_dir/workers/w<i>`` for worker ``i`` under a supervisor."""
    return data_dir if worker is None else data_dir / WORKERS_DIR / f"w{worker}"


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

    def __init__(self, settings: SecurityServerSettings, *, worker: int | None = None) -> None:
        self.settings = settings
        #: This process's worker index under a supervisor (``[server] workers``), else ``None``.
        self.worker = worker
        #: Where this process keeps its own files (ready file, configuration cache, refusals):
        #: the data directory, or a worker's folder inside it.
        self.run_dir = worker_dir(settings.data_dir, worker)
        #: The origin of this process's message-log tree (:mod:`ruta.node_logs`).
        self.origin = settings.log_origin(worker or 0)
        # Refused exchanges kept as operational records (the file opens at the first one).
        self.refusals = RefusalLog(self.run_dir / REFUSALS_FILE)
        self.metrics = ExchangeMetrics(refusals=self.refusals)
        self.addresses: dict[str, str] = {}
        self._closers: list[Callable[[], Any]] = []
        self.listeners = Listeners(
            registry=self.metrics.registry, grace_seconds=SHUTDOWN_GRACE_SECONDS
        )
        self._stopped = asyncio.Event()
        self.globalconf: GlobalConfClient | None = None
        self.log: MessageLog | None = None
        self.checkpointer: Checkpointer | None = None
        self.consumer: ConsumerProxy | None = None
        self.backends: BackendChannels | None = None
        self.metadata_only: LiveSubsystems | None = None
        self._log_key: Ed25519PrivateKey | None = None
        self.console: ConsoleListener | None = None

    @classmethod
    async def start(
        cls,
        settings: SecurityServerSettings,
        *,
        clock: Callable[[], datetime] = _utc_now,
        worker: int | None = None,
    ) -> SecurityServerApp:
        """Load credentials, open the log, fetch the configuration, bind every port and write
        ``ready.json``. On any failure everything already opened is closed again and the error
        (a :class:`~ruta.faults.RutaError` naming what is wrong, never a secret) propagates.

        ``worker`` is this process's index among the node's workers when a supervisor runs it
        (:mod:`security_server.workers`): its log tree, ready file, configuration cache and
        refusals are its own, and its ports are shared with its siblings (SO_REUSEPORT)."""
        app = cls(settings, worker=worker)
        try:
            await app._start(clock)
        except BaseException:
            await app.stop()
            raise
        return app

    async def _start(self, clock: Callable[[], datetime]) -> None:
        settings = self.settings
        data_dir = settings.data_dir
        for folder in (data_dir, self.run_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        limits = settings.limits

        ocsp = OcspClient(freshness=timedelta(seconds=limits.ocsp_freshness_seconds))
        self._closers.append(ocsp.close)
        identity = ServerIdentity.from_files(
            server=settings.server_identifier,
            auth_cert=settings.keys.auth_cert,
            signing_key=settings.keys.signing_key,
            signing_cert=settings.keys.signing_cert,
            ocsp=ocsp,
        )

        globalconf = GlobalConfClient(
            anchor=ConfigurationAnchor.from_file(settings.globalconf.anchor),
            cache_path=self.run_dir / "globalconf.bin",
            settings=settings.globalconf,
            clock=clock,
        )
        await globalconf.start()
        self._closers.append(globalconf.stop)
        self.globalconf = globalconf
        globalconf.on_update(self._on_configuration)
        if globalconf.held is not None:
            self._on_configuration(globalconf.held)
        role_ca = self._checked_role_ca(globalconf)

        engine: AsyncEngine = await open_database(settings.log_url)
        self._closers.append(engine.dispose)
        log, body_key = await self._open_log(engine)
        retention = settings.log.body_retention_days
        maintenance = LogMaintenance(
            log,
            body_retention=timedelta(days=retention) if retention is not None else None,
            interval=timedelta(seconds=settings.log.maintenance_interval_seconds),
            clock=clock,
        )
        maintenance.start()
        self._closers.append(maintenance.stop)
        metadata_only = LiveSubsystems(settings.log.metadata_only_subsystems)
        self.metadata_only = metadata_only  # a settings reload swaps its contents

        self._session = aiohttp.ClientSession()
        self._closers.append(self._session.close)
        self._log_key = log_key = load_or_create_log_key(
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
        backends = BackendChannels(settings.backends, max_message_bytes=limits.max_message_bytes)
        self._closers.append(backends.close)
        self.backends = backends  # a settings reload swaps its contents

        consumer_recorder = ExchangeRecorder(log, metadata_only)
        # Closers run in reverse: requests still being logged are durable before the log closes.
        self._closers.append(consumer_recorder.settle)
        consumer = ConsumerProxy(
            settings=settings,
            identity=identity,
            globalconf=globalconf,
            recorder=consumer_recorder,
            links=self._peer_links(peer_status),
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

        # One exchange in flight: its log commits run in the loop's thread, no thread crossings
        # (bench/README.md, sixth round); otherwise in the log writer's worker thread, grouped.
        log.commit_inline_while(lambda: consumer.in_flight + provider.in_flight <= 1)
        self._bind_consumer(consumer)
        self._bind_transport(provider, identity, globalconf)
        audit = self._bind_audit(
            self._audit_service(
                log=log,
                engine=engine,
                log_key=log_key,
                body_key=body_key,
                globalconf=globalconf,
                clock=clock,
                peer_status=peer_status,
                role_ca=role_ca,
            ),
            globalconf=globalconf,
            identity=identity,
        )
        await self.listeners.start()
        await self._bind_metrics()
        await self._start_console(audit, globalconf)
        self._write_ready()
        _log.info(
            "security server %s serving: consumer %s, transport %s, metrics %s, log %s",
            settings.server_identifier,
            self.addresses["consumer"],
            self.addresses["transport"],
            self.addresses["metrics"],
            self.origin,
        )

    async def _open_log(self, engine: AsyncEngine) -> tuple[MessageLog, BodyKey]:
        """This process's log tree (its own origin) and the node's body key; closed at stop.
        Raises :class:`~security_server.cluster.OriginInUseError` if another process writes
        that tree in the same PostgreSQL database."""
        body_key = load_or_create_body_key(self.settings.data_dir / "keys")
        # No two processes append to one tree (two nodes given the same [server] node name).
        lock = await OriginLock.acquire(engine, self.origin)
        self._closers.append(lock.release)  # after the log closes (closers run in reverse)
        log = await MessageLog.open(engine, origin=self.origin, body_key=body_key)
        self._closers.append(log.close)
        self.log = log
        return log, body_key

    def _listen(
        self,
        name: str,
        listen: str,
        add_services: Callable[[grpc.aio.Server], None],
        credentials: Callable[[], grpc.ServerCredentials] | None,
        *,
        health_names: tuple[str, ...] = (),
        drain: Callable[[], None] | None = None,
    ) -> None:
        """Bind one gRPC port under the watchdog and record its address as ``name``."""
        keepalive = self.settings.transport.keepalive
        listener = self.listeners.bind(
            ListenerSpec(
                name=name,
                listen=listen,
                add_services=add_services,
                health_names=health_names,
                credentials=credentials,
                options=(
                    *grpc_message_options(self.settings.limits.max_message_bytes),
                    ("grpc.max_metadata_size", _GRPC_MAX_METADATA_BYTES),
                    # Never share a port with another process (a second server must fail to
                    # start), except with this node's own workers (``[server] workers``).
                    ("grpc.so_reuseport", 1 if self.settings.server.workers > 1 else 0),
                    # Peers' keepalive pings are accepted (not answered with GOAWAY), and this
                    # server pings callers too, so a dead caller's streams end.
                    *ping_policy_options(keepalive.min_ping_interval_seconds),
                    ("grpc.keepalive_time_ms", int(keepalive.time_seconds * 1000)),
                    ("grpc.keepalive_timeout_ms", int(keepalive.timeout_seconds * 1000)),
                ),
                max_concurrent_calls=self.settings.limits.max_concurrent_calls,
                drain=drain,
            )
        )
        self.addresses[name] = listener.address

    def _audit_service(
        self,
        *,
        log: MessageLog,
        engine: AsyncEngine,
        log_key: Ed25519PrivateKey,
        body_key: BodyKey,
        globalconf: GlobalConfClient,
        clock: Callable[[], datetime],
        peer_status: PeerStatus,
        role_ca: tuple[x509.Certificate, ...],
    ) -> AuditServicer:
        """The audit service layer (the audit port and the console call it), and the planner
        statistics its searches need to stay fast as the log grows (kept fresh while the
        server runs). Callers' certificates are checked for revocation as peers' are
        (``peer_status``, against the trust anchors in force: :mod:`security_server.callers`);
        their roles count only from the role CAs in force (``role_ca``: ``[audit] role_ca``)."""
        settings = self.settings
        statistics = PlannerStatistics(engine)
        statistics.start()
        self._closers.append(statistics.stop)
        return AuditServicer(
            log=log,
            engine=engine,
            server=str(settings.server_identifier),
            key=log_key,
            globalconf=lambda: globalconf.held.signed if globalconf.held else b"",
            settings=settings.audit,
            clock=clock,
            logs=MemberLogs(
                engine=engine, own=log, server=settings.server_identifier, body_key=body_key
            ),
            callers=CallerStatus(
                peer_status,
                lambda: globalconf.held.trust_anchors if globalconf.held is not None else (),
                role_ca=role_ca,
                role_issuers=lambda: (
                    globalconf.held.role_issuers if globalconf.held is not None else None
                ),
            ),
        )

    def _checked_role_ca(self, globalconf: GlobalConfClient) -> tuple[x509.Certificate, ...]:
        """``[audit] role_ca``'s certificates, checked against the role issuers the
        configuration held publishes. Raises :class:`ConfigError` when it names a CA the
        configuration does not publish as a role issuer (a server may narrow the registry's
        role issuers, never widen them), before anything listens; a later configuration that
        does so is logged, and honours nobody until the setting is fixed
        (:mod:`security_server.callers`)."""
        role_ca = self._role_ca()
        held = globalconf.held
        try:
            check_role_ca(role_ca, held.role_issuers if held is not None else None)
        except CallerIssuerError as exc:
            raise ConfigError(exc.message) from None

        def role_ca_still_published(view: GlobalConf) -> None:
            try:
                check_role_ca(role_ca, view.role_issuers)
            except CallerIssuerError as exc:
                _log.warning("%s", exc.message)

        if role_ca:
            globalconf.on_update(role_ca_still_published)
        return role_ca

    def _role_ca(self) -> tuple[x509.Certificate, ...]:
        """``[audit] role_ca``'s certificates (none: the role issuers the configuration names,
        or else its only trust anchor)."""
        path = self.settings.audit.role_ca
        if path is None:
            return ()
        limit = MAX_CERTIFICATE_FILE_CHAIN
        data = read_certificate_file(path, limit=limit, what="[audit] role_ca")
        return tuple(load_certificates(data, limit=limit))

    def _bind_audit(
        self,
        servicer: AuditServicer,
        *,
        globalconf: GlobalConfClient,
        identity: ServerIdentity,
    ) -> AuditServicer:
        """The audit port, where ``[audit] listen`` asks for one: auditors over mTLS
        (docs/auditor-guide.md). Auditor certificates chain to ``audit.client_ca``, or by
        default to the trust anchors of the configuration in force (followed as it changes).
        Returns ``servicer`` (the console uses it too)."""
        settings = self.settings
        listen = settings.audit.listen
        if not listen:
            return servicer
        client_ca = settings.audit.client_ca

        def credentials() -> grpc.ServerCredentials:
            if client_ca is not None:
                return audit_server_credentials(
                    settings.keys.auth_key, settings.keys.auth_cert, client_ca
                )
            return self._anchored_credentials(identity, globalconf)

        self._listen(
            "audit",
            listen,
            lambda server: add_audit_service(server, servicer),
            credentials,
            health_names=("ruta.v1.Audit",),
        )
        return servicer

    async def _start_console(self, audit: AuditServicer, globalconf: GlobalConfClient) -> None:
        """The auditor console (HTTPS, docs/adr/0027): the audit service layer behind pages, for
        browsers whose certificates chain to ``console.client_ca`` or the trust anchors; only
        where ``[console] listen`` asks for it, and under a node of workers in worker 0 alone
        (a console's forms are bound to the process that showed them)."""
        settings = self.settings
        if not settings.console.listen or (self.worker or 0) > 0:
            return
        console = AuditConsole(
            servicer=audit,
            server=settings.server_identifier,
            conf=lambda: globalconf.held,
            anchor=ConfigurationAnchor.from_file(settings.globalconf.anchor),
        )
        listener = await ConsoleListener.start(
            console,
            settings=settings.console,
            auth_cert=settings.keys.auth_cert,
            auth_key=settings.keys.auth_key,
            data_dir=self.run_dir,
            view=globalconf.held,
        )
        self._closers.append(listener.stop)
        globalconf.on_update(listener.configuration_changed)
        self.console = listener
        self.addresses["console"] = listener.url

    def _anchored_credentials(
        self, identity: ServerIdentity, globalconf: GlobalConfClient
    ) -> grpc.ServerCredentials:
        """mTLS with the auth certificate, accepting client certificates that chain to the trust
        anchors of the configuration in force (re-read before handshakes when they change)."""
        trust = _TransportTrust(
            key_pem=_key_pem(self.settings.keys.auth_key),
            cert_pem=read_certificate_file(
                self.settings.keys.auth_cert, limit=MAX_CERTIFICATE_FILE_CHAIN
            ),
            fallback=certificate_pem(identity.auth_certificate),
            globalconf=globalconf,
        )
        return grpc.dynamic_ssl_server_credentials(
            trust.configuration(), trust.fetch, require_client_authentication=True
        )

    def _peer_links(self, status: PeerStatus) -> GrpcPeerLinks:
        """The consumer's links to provider servers: one pinned channel per peer (closed at
        stop), several messages per frame unless ``[transport] frames = false``."""
        settings = self.settings
        peers = PeerChannels(
            key_path=settings.keys.auth_key,
            cert_path=settings.keys.auth_cert,
            max_message_bytes=settings.limits.max_message_bytes,
            status=status,
            keepalive=tuple(_keepalive(settings.transport.keepalive)),
        )
        self._closers.append(peers.close)
        return GrpcPeerLinks(
            peers,
            frames=settings.transport.frames,
            responses_ahead=settings.transport.responses_ahead,
            on_frame=lambda messages: self.metrics.frame_written("consumer", messages),
        )

    def _bind_consumer(self, consumer: ConsumerProxy) -> None:
        self.consumer = consumer
        self._closers.append(consumer.close)  # before the peer channels close (reverse order)
        settings = self.settings
        handler = consumer_handler(consumer)
        credentials: Callable[[], grpc.ServerCredentials] | None = None
        if not settings.consumer.allow_plain_loopback:
            client_ca = settings.consumer.client_ca
            if client_ca is None:  # the settings model refuses this already
                raise ConfigError(
                    "consumer.client_ca is required unless allow_plain_loopback is set"
                )
            credentials = functools.partial(
                server_credentials,
                settings.consumer.tls_key or settings.keys.auth_key,
                settings.consumer.tls_cert or settings.keys.auth_cert,
                client_ca,
                require_client_auth=True,
            )
        self._listen(
            "consumer",
            settings.consumer.listen,
            lambda server: server.add_generic_rpc_handlers((handler,)),
            credentials,
        )

    def _bind_transport(
        self, provider: ProviderProxy, identity: ServerIdentity, globalconf: GlobalConfClient
    ) -> None:
        # Transport port: client certificates must chain to the configuration's trust anchors.
        self._listen(
            "transport",
            self.settings.transport.listen,
            lambda server: add_transport_service(server, provider),
            lambda: self._anchored_credentials(identity, globalconf),
            health_names=("ruta.v1.Transport",),
            drain=provider.drain,  # streams end when the server stops
        )

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

    def _on_configuration(self, view: GlobalConf) -> None:
        self.metrics.globalconf_serial.set(view.serial)
        self.metrics.globalconf_generated.set(view.generated_at.timestamp())
        self.metrics.globalconf_expiry.set(view.expires_at.timestamp())

    def _write_ready(self) -> None:
        write_ready_file(
            self.run_dir / READY_FILE,
            {
                "server_id": str(self.settings.server_identifier),
                "pid": os.getpid(),
                "origin": self.origin,
                **self.addresses,
                # The server's key, named by the server's origin (what the registry publishes),
                # whichever node log this process writes.
                "log_vkey": log_vkey(str(self.settings.server_identifier), self._log_key)
                if self._log_key is not None
                else "",
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
        # Health NOT_SERVING, streams drained (they end instead of waiting out the grace), stop.
        await self.listeners.stop(SHUTDOWN_GRACE_SECONDS)
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            try:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # noqa: BLE001 - a failing closer must not keep the others open
                _log.exception("error while shutting down")
        self.refusals.close()
        (self.run_dir / READY_FILE).unlink(missing_ok=True)
        self._stopped.set()


#: A listener cannot be bound (address in use, not local, no permission): the gRPC ports raise it
#: from :mod:`ruta.listeners`, the metrics port here.
ServerStartError = ListenerError


def _keepalive(settings: KeepaliveSettings) -> list[tuple[str, Any]]:
    return keepalive_options(
        time_seconds=settings.time_seconds,
        timeout_seconds=settings.timeout_seconds,
        permit_without_calls=settings.permit_without_calls,
    )
