"""``ruta registry serve``: one registry node.

Two listeners, and a third where the console is configured:

- the admin gRPC API (``ruta.v1.RegistryAdmin``), the configuration over gRPC
  (``ruta.v1.GlobalConfService``) and the gRPC health service, over mutual TLS with the
  registry's TLS certificate; callers present client certificates from the registry's CA;
- the registry console (optional: ``[console] listen``), HTTPS pages over the same service as
  the admin API for browsers with a client certificate from the instance's CA
  (:mod:`registry.console`);
- HTTP: ``GET /globalconf`` (the signed configuration, ETag / If-None-Match), ``/ocsp`` (the CA's
  OCSP responder), ``POST /witness/add-checkpoint`` (the checkpoint witness), ``GET /healthz`` and
  ``GET /metrics`` (Prometheus: the admin listener's ``ruta_listener_up`` and
  ``ruta_listener_restarts_total``, ``ruta_certificate_expires_timestamp_seconds{kind}`` of the
  CA, OCSP, TLS and configuration-signing certificates, and the process collector's
  ``process_*``).

The gRPC listener runs under the listener watchdog (:mod:`ruta.listeners`): if grpcio's server
loop ends, it is reported NOT_SERVING and restarted on the same address; if it cannot be,
:func:`serve_forever` stops the node and the command exits with status 3.

The configuration is rebuilt from the store, signed and published after every change the admin
API commits (before the call returns), after any change another node committed to the same
database (polled every ``change_poll_seconds``), and re-signed periodically so it never expires
while the node runs. Once listening, the node writes ``DIR/registry.ready.json`` with the bound
addresses (ports may be 0 in the settings) and removes it on shutdown.

A node made by ``ruta registry node init`` and ``node add`` holds neither the CA nor the witness
key (docs/adr/0025): it publishes the same configuration, signed with its own key, over HTTP and
gRPC, but serves neither the admin API, ``/ocsp`` nor the witness; those stay with the first node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import grpc
import grpc.aio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from registry import limits
from registry.admin_api import IssuedCertificate, IssueRequest, RegistryAdminServicer
from registry.ca import CertificateAuthority
from registry.console import ConfigurationInForce, console_app
from registry.errors import InvalidRequestError, RegistryError, StoreError
from registry.globalconf_build import build_configuration
from registry.log_keys import parse_vkey
from registry.model import SecurityServer
from registry.ocsp_server import add_ocsp_routes
from registry.publisher import (
    ConfigurationPublisher,
    add_globalconf_routes,
    add_globalconf_servicer,
)
from registry.settings import RegistryLayout, RegistrySettings, connectable_host, split_address
from registry.store import PublishedConfiguration, RegistryStore, database_url
from registry.witness import Witness
from registry.witness_http import witness_routes
from registry.witness_store import SqlWitnessStateStore
from ruta.addresses import join_address
from ruta.checkpoint import SignatureType, Verifier
from ruta.faults import RutaError
from ruta.globalconf import MAX_DOCUMENT_BYTES, ConfigurationAnchor
from ruta.listeners import ListenerError, Listeners, ListenerSpec
from ruta.metrics_http import certificate_expiry, metrics_handler
from ruta.pki.certs import load_certificate, read_certificate_file
from ruta.pki.errors import MalformedCertificateError
from ruta.pki.keys import FileSigner, load_private_key
from ruta.pki.ocsp import CertStatus
from ruta.pki.tls import server_credentials
from ruta.readiness import stop_event, write_ready_file
from ruta.settings import ConfigError, read_text
from ruta.tasks import cancel_and_wait
from ruta.v1 import globalconf_pb2, registry_pb2_grpc
from ruta.web import console_tls_context

__all__ = ["READY_FILE_VERSION", "RegistryNode", "serve_forever"]

#: Version of the ready file's JSON shape.
READY_FILE_VERSION: Final = 1
#: Path prefix of the witness on the HTTP listener.
WITNESS_PREFIX: Final = "/witness"
#: Published configurations kept in the store (the newest serve; older ones are history).
_KEEP_PUBLISHED: Final = 16
#: Largest HTTP request body the listener reads (OCSP and witness bound theirs further).
_MAX_HTTP_BODY: Final = 64 * 1024
#: Seconds given to in-flight calls on shutdown.
_GRACE_SECONDS: Final = 5.0

_log = logging.getLogger(__name__)


class _CaIssuer:
    """The admin API's :class:`CertificateIssuer` over the registry's CA directory."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self._ca = ca

    def issue(self, request: IssueRequest) -> IssuedCertificate:
        try:
            certificate = self._ca.issue(
                request.csr,
                request.kind,
                server=request.server,
                member=request.member,
                subsystem=request.subsystem,
                roles=request.roles,
                dns_names=request.dns_names,
                ip_addresses=request.ip_addresses,
            )
        except RutaError as exc:
            raise InvalidRequestError(f"the CA refused the request: {exc.message}") from None
        return IssuedCertificate(
            certificate=certificate, chain=(*self._ca.chain, self._ca.trust_anchor)
        )

    def revoke(self, serial_number: int, reason: x509.ReasonFlags) -> datetime:
        return self._ca.revoke(serial_number, reason).revoked_at

    def issued(self, serial_number: int) -> x509.Certificate | None:
        return self._ca.issued(serial_number)


@dataclass(frozen=True, slots=True)
class _Bound:
    admin: str
    http: str
    #: The console's URL ("" when it is off).
    console: str = ""


class RegistryNode:
    """Everything one ``ruta registry serve`` runs; :meth:`start` then :meth:`stop`."""

    def __init__(self, directory: Path, *, clock: Callable[[], datetime] | None = None) -> None:
        self._layout = RegistryLayout(directory.resolve())
        self._settings = RegistrySettings.load(self._layout.root)
        self._clock = clock if clock is not None else (lambda: datetime.now(UTC))
        self._store: RegistryStore | None = None
        self.listeners = Listeners(grace_seconds=_GRACE_SECONDS)
        self._runner: web.AppRunner | None = None
        self._console_runner: web.AppRunner | None = None
        self._publisher: ConfigurationPublisher | None = None
        self._publish_lock = asyncio.Lock()
        self._base_url = ""
        #: The role issuers the configuration publishes (fingerprints), for the console.
        self._role_issuers: tuple[str, ...] = ()
        self._published_seq = 0
        self._watcher: asyncio.Task[None] | None = None
        self._build: Callable[[], Awaitable[globalconf_pb2.GlobalConfiguration]] | None = None
        self.bound: _Bound | None = None

    @property
    def layout(self) -> RegistryLayout:
        return self._layout

    async def start(self) -> None:
        """Open the store (migrating it), publish a first configuration and start listening.

        Raises :class:`ruta.settings.ConfigError`, :class:`StoreError` or a PKI error when the
        directory is incomplete or the database unreachable; nothing keeps running then.
        """
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings, layout = self._settings, self._layout
        self._store = store = await RegistryStore.open(
            database_url(settings.database_url, layout.root)
        )
        ca = CertificateAuthority.open(layout.ca) if layout.holds_ca else None
        signer = FileSigner.from_file(layout.signing_key)
        try:
            signing_pem = read_certificate_file(layout.signing_cert, limit=1)
        except MalformedCertificateError as exc:
            raise ConfigError(
                f"the registry directory has no readable configuration-signing certificate "
                f"({exc.message})"
            ) from None
        signing_cert = load_certificate(signing_pem)
        latest = await store.latest_configuration()
        self._publisher = publisher = ConfigurationPublisher(
            signer=signer,
            certificate=signing_cert,
            validity=timedelta(seconds=settings.globalconf_validity_seconds),
            clock=self._clock,
            serial_floor=latest.serial if latest is not None else 0,
        )
        witness, witness_vkey = _open_witness(layout, settings, store)
        trust_anchors, ocsp_certs = _published_ca_certificates(layout, ca)
        role_issuers = _role_issuers(settings.role_issuers, trust_anchors)
        self._role_issuers = tuple(sorted(role_issuers))
        self._watch_certificates(ca, signing_cert)

        # HTTP first: its bound port completes the public URL the configuration names.
        app = web.Application(client_max_size=_MAX_HTTP_BODY)
        add_globalconf_routes(app, publisher)
        if ca is not None:
            add_ocsp_routes(app, ca, path="/ocsp")
        if witness is not None:
            app.add_routes(witness_routes(witness, prefix=WITNESS_PREFIX))
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/metrics", metrics_handler(self.listeners.registry))
        http_host, bound_http = await self._listen_http(app)
        self._base_url = settings.base_url(bound_http)

        async def build() -> globalconf_pb2.GlobalConfiguration:
            snapshot = await store.snapshot()
            if witness is not None:
                witness.set_logs(_witnessed_logs(snapshot.servers))
            now = self._clock()
            return build_configuration(
                snapshot,
                instance=settings.instance,
                serial=0,
                generated_at=now,
                expires_at=now + publisher.validity,
                trust_anchors=trust_anchors,
                ocsp_responder_certs=ocsp_certs,
                witness_public_key=witness_vkey,
                witness_url=settings.witness_url or f"{self._base_url}{WITNESS_PREFIX}",
                verification=globalconf_pb2.VerificationParameters(
                    ocsp_freshness_seconds=settings.ocsp_freshness_seconds,
                    ocsp_clock_skew_seconds=settings.ocsp_clock_skew_seconds,
                ),
                role_issuers=role_issuers,
            )

        self._build = build
        await self._publish()
        await publisher.start(
            self._publish_build, interval=timedelta(seconds=settings.globalconf_republish_seconds)
        )
        self._watcher = asyncio.create_task(
            self._watch_changes(store, settings.change_poll_seconds), name="registry-change-watcher"
        )

        admin = self._admin_servicer(store, ca) if ca is not None else None
        admin_port = await self._listen_admin(admin, publisher)
        admin_host, _ = split_address(settings.admin_listen)
        console_url = ""
        if admin is not None and settings.console.listen is not None:
            console_url = await self._listen_console(admin, publisher)
        self.bound = bound = _Bound(
            admin=join_address(connectable_host(admin_host), admin_port),
            http=f"http://{join_address(connectable_host(http_host), bound_http)}",
            console=console_url,
        )
        self._write_ready(bound)
        _log.info(
            "registry %s listening: admin %s, http %s", settings.instance, bound.admin, bound.http
        )

    def _watch_certificates(
        self, ca: CertificateAuthority | None, signing_cert: x509.Certificate
    ) -> None:
        """``ruta_certificate_expires_timestamp_seconds{kind}`` of the node's certificates: the
        CA's and its OCSP responder's (read at scrape time: a renewed responder shows), the
        TLS certificate and the configuration-signing certificate."""
        try:
            tls_cert = load_certificate(read_certificate_file(self._layout.tls_cert, limit=1))
        except MalformedCertificateError as exc:
            raise ConfigError(
                f"the registry directory has no readable TLS certificate ({exc.message})"
            ) from None
        certificates: dict[str, Callable[[], datetime]] = {
            "tls": lambda: tls_cert.not_valid_after_utc,
            "globalconf_signing": lambda: signing_cert.not_valid_after_utc,
        }
        if ca is not None:
            certificates["ca"] = lambda: ca.certificate.not_valid_after_utc
            certificates["ocsp"] = lambda: ca.ocsp_certificate.not_valid_after_utc
        certificate_expiry(self.listeners.registry, certificates)

    async def _listen_http(self, app: web.Application) -> tuple[str, int]:
        """Serve ``app`` on the HTTP address; return the host and the bound port."""
        self._runner = runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = split_address(self._settings.http_listen)
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {self._settings.http_listen} for HTTP ({exc.strerror})"
            ) from None
        return host, _site_port(runner)

    async def _listen_console(
        self, admin: RegistryAdminServicer, publisher: ConfigurationPublisher
    ) -> str:
        """Serve the registry console over HTTPS on ``[console] listen``, with the admin API's
        service; return its URL."""
        console, layout = self._settings.console, self._layout
        assert console.listen is not None  # noqa: S101 - the caller checked
        cert = console.tls_cert or layout.tls_cert
        key = console.tls_key or layout.tls_key
        try:
            context = console_tls_context(
                cert=layout.root / cert, key=layout.root / key, client_ca=layout.trust
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"the console's TLS certificate or key is unusable ({exc})") from None

        def configuration() -> ConfigurationInForce | None:
            current = publisher.current
            if current is None:
                return None
            try:
                nodes = ConfigurationAnchor.from_file(layout.anchor).globalconf_urls
            except ConfigError:
                nodes = ()
            return ConfigurationInForce(
                serial=current.serial,
                generated_at=current.generated_at,
                expires_at=current.expires_at,
                size=len(current.signed),
                sha256=current.etag,
                nodes=nodes,
                this_node=f"{self._base_url}/globalconf",
                role_issuers=self._role_issuers,
            )

        self._console_runner = runner = web.AppRunner(
            console_app(admin=admin.admin, configuration=configuration), access_log=None
        )
        await runner.setup()
        host, port = split_address(console.listen)
        try:
            await web.TCPSite(runner, host, port, ssl_context=context).start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {console.listen} for the console ({exc.strerror})"
            ) from None
        return f"https://{join_address(connectable_host(host), _site_port(runner))}"

    async def _listen_admin(
        self, admin: RegistryAdminServicer | None, publisher: ConfigurationPublisher
    ) -> int:
        """Start the mutual-TLS gRPC server (admin API where the node holds the CA,
        configuration, health) under the listener watchdog; return its port."""
        settings, layout = self._settings, self._layout

        def add_services(server: grpc.aio.Server) -> None:
            if admin is not None:
                registry_pb2_grpc.add_RegistryAdminServicer_to_server(admin, server)
            add_globalconf_servicer(server, publisher)

        health_names: tuple[str, ...] = ("ruta.v1.GlobalConfService",)
        if admin is not None:
            health_names = ("ruta.v1.RegistryAdmin", *health_names)
        try:
            listener = self.listeners.bind(
                ListenerSpec(
                    name="admin",
                    listen=settings.admin_listen,
                    add_services=add_services,
                    health_names=health_names,
                    credentials=lambda: server_credentials(
                        layout.tls_key, layout.tls_cert, layout.trust
                    ),
                    options=(
                        ("grpc.max_receive_message_length", limits.MAX_REQUEST_BYTES),
                        ("grpc.max_send_message_length", MAX_DOCUMENT_BYTES),
                    ),
                )
            )
        except ListenerError:
            raise ConfigError(
                f"cannot listen on {settings.admin_listen} for the admin API"
            ) from None
        await self.listeners.start()
        return listener.port

    def _admin_servicer(
        self, store: RegistryStore, ca: CertificateAuthority
    ) -> RegistryAdminServicer:
        return RegistryAdminServicer(
            store=store,
            instance=self._settings.instance,
            issuer=_CaIssuer(ca),
            on_change=self._republish,
            clock=self._clock,
            revoked=lambda certificate: (
                ca.status(certificate.serial_number)[0] is CertStatus.REVOKED
            ),
        )

    async def _publish_build(self) -> globalconf_pb2.GlobalConfiguration:
        if self._build is None:
            raise RegistryError("the registry is not started: nothing to publish")
        return await self._build()

    async def _publish(self) -> None:
        """Build, sign and serve a configuration now, and record it in the store."""
        publisher, store = self._publisher, self._store
        if publisher is None or store is None:
            raise RegistryError("the registry is not started: nothing to publish")
        async with self._publish_lock:
            change_seq = await store.change_seq()
            published = await publisher.publish_from(self._publish_build)
            self._published_seq = change_seq
            await store.save_configuration(
                PublishedConfiguration(
                    serial=published.serial,
                    change_seq=change_seq,
                    generated_at=published.generated_at,
                    expires_at=published.expires_at,
                    document=published.signed,
                ),
                keep=_KEEP_PUBLISHED,
            )

    async def _watch_changes(self, store: RegistryStore, interval: float) -> None:
        """Republish when the store changed behind this node's back (another registry node on
        the same database, or a change whose immediate publication failed)."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await store.change_seq() > self._published_seq:
                    await self._publish()
            except Exception:  # noqa: BLE001 - logged; the loop must survive a database outage
                _log.exception("checking the store for changes failed")

    async def _republish(self) -> None:
        """After a change: publish at once; a failure is logged (the periodic loop retries)."""
        try:
            await self._publish()
        except Exception:  # noqa: BLE001 - the change is committed; the next cycle retries
            _log.exception("publishing the global configuration after a change failed")

    def _write_ready(self, bound: _Bound) -> None:
        ready = {
            "version": READY_FILE_VERSION,
            "pid": os.getpid(),
            "instance": self._settings.instance,
            "admin": bound.admin,
            "http": bound.http,
            "globalconf_url": f"{bound.http}/globalconf",
            "public_url": self._base_url,
        }
        if bound.console:
            ready["console"] = bound.console
        write_ready_file(self._layout.ready, ready)

    async def stop(self) -> None:
        """Stop listening and close the store; safe to call more than once."""
        with contextlib.suppress(FileNotFoundError):
            if self.bound is not None:
                self._layout.ready.unlink()
        await self.listeners.stop(_GRACE_SECONDS)
        watcher, self._watcher = self._watcher, None
        await cancel_and_wait(watcher)
        if self._publisher is not None:
            await self._publisher.stop()
        if self._console_runner is not None:
            await self._console_runner.cleanup()
            self._console_runner = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._store is not None:
            await self._store.close()
            self._store = None


def _open_witness(
    layout: RegistryLayout, settings: RegistrySettings, store: RegistryStore
) -> tuple[Witness | None, bytes]:
    """The witness this node runs (``None`` on a node without its key) and the witness's
    verifier key the configuration names."""
    if not layout.witness_key.exists():
        try:
            vkey = parse_vkey(
                read_text(layout.witness_vkey, what="witness key", limit=limits.MAX_LOG_KEY_LENGTH),
                kind=SignatureType.COSIGNATURE_V1,
            )
        except RutaError as exc:
            raise ConfigError(f"the witness's verifier key is unusable: {exc.message}") from None
        return None, vkey.vkey().encode()
    witness_key = load_private_key(layout.witness_key)
    if not isinstance(witness_key, Ed25519PrivateKey):
        raise StoreError("the witness key must be an Ed25519 key")
    witness = Witness(
        name=settings.witness_name,
        key=witness_key,
        logs={},
        store=SqlWitnessStateStore(store.engine),
    )
    return witness, witness.verifier.vkey().encode()


def _published_ca_certificates(
    layout: RegistryLayout, ca: CertificateAuthority | None
) -> tuple[list[bytes], list[bytes]]:
    """The CA's trust anchor and OCSP responder certificate (DER) the configuration lists: from
    the CA, or from the public copies a node without the CA holds."""
    if ca is not None:
        return (
            [ca.trust_anchor.public_bytes(Encoding.DER)],
            [ca.ocsp_certificate.public_bytes(Encoding.DER)],
        )
    try:
        anchor = load_certificate(layout.trust.read_bytes())
        ocsp = load_certificate(layout.ocsp_cert.read_bytes())
    except OSError as exc:
        raise ConfigError(
            f"the registry directory lacks the CA's public certificates ({exc.strerror})"
        ) from None
    return [anchor.public_bytes(Encoding.DER)], [ocsp.public_bytes(Encoding.DER)]


def _role_issuers(named: tuple[str, ...] | None, trust_anchors: Sequence[bytes]) -> list[str]:
    """The fingerprints the configuration publishes as role issuers: ``[role_issuers]`` as
    set, or the registry's own CA (its published anchor). Raises :class:`ConfigError` when one
    named is not a trust anchor the configuration lists, before anything is published."""
    published = [hashlib.sha256(der).hexdigest() for der in trust_anchors]
    if named is None:
        return published
    for sha256 in named:
        if sha256 not in published:
            raise ConfigError(
                f"role_issuers names {sha256}, which is not a trust anchor this registry "
                f"publishes ({', '.join(published)}); a role issuer must be one of them"
            )
    return list(named)


def _witnessed_logs(servers: Iterable[SecurityServer]) -> dict[str, list[Verifier]]:
    """The logs the witness cosigns: each registered log key, by its origin (the key's name)."""
    logs: dict[str, list[Verifier]] = {}
    for server in servers:
        if not server.log_public_key:
            continue
        try:
            verifier = parse_vkey(server.log_public_key)
        except RutaError:
            _log.warning("server %s has an unreadable log key; not witnessed", server.id)
            continue
        logs.setdefault(verifier.name, []).append(verifier)
    return logs


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def _site_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise StoreError("the HTTP listener did not bind")


async def serve_forever(directory: Path) -> bool:
    """Run a node until SIGINT or SIGTERM (True), or until its gRPC listener could not be
    restarted (False: exit with :data:`ruta.listeners.LISTENER_FAILED_EXIT_STATUS`); then shut
    down gracefully."""
    node = RegistryNode(directory)
    stop = stop_event()
    await node.start()
    try:
        return await node.listeners.serve_until(stop)
    finally:
        await node.stop()
