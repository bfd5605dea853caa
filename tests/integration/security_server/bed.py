"""A whole small instance on loopback for security-server tests, with every part real.

- a throwaway CA (:class:`ruta.pki.testing.TestPki`) whose certificates name a real OCSP
  responder (aiohttp, answering from the CA);
- a registry publisher (``registry.publisher``) serving a signed global configuration over HTTP;
- the example population backend (gRPC);
- security servers for ``DEV/GOV/POP`` (provider of ``population.v1.PopulationRegister``),
  ``DEV/GOV/SOC`` (consumer with a contract) and ``DEV/GOV/TAX`` (consumer without one), each with
  its own settings file, data directory and SQLite message log; run in-process
  (:meth:`Bed.start_server`) or as ``ruta ss serve`` subprocesses (:meth:`Bed.spawn_server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import grpc
import grpc.aio
import pytest
import tomli_w
from aiohttp import web
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509 import ocsp
from google.protobuf import timestamp_pb2

from registry.publisher import ConfigurationPublisher, globalconf_app
from registry.witness import MemoryWitnessStateStore, Witness
from registry.witness_http import witness_routes
from ruta.evidence import VerificationReport, verify_bundle
from ruta.evidence.cli import group as audit_group
from ruta.globalconf import ConfigurationAnchor
from ruta.ids import MemberId, ServerId, SubsystemId
from ruta.pki.certs import CertificateKind, certificate_der, fingerprint, roles_of
from ruta.pki.keys import generate_ed25519_key
from ruta.pki.signature import sign_message
from ruta.pki.testing import Credential, TestPki
from ruta.v1 import globalconf_pb2, transport_pb2
from sandbox.examples.population import (
    GET_PERSON_PATH,
    SERVICE_NAME,
    PopulationBackend,
    encode_get_person,
    file_descriptor_set,
)
from security_server.checkpointer import (
    LOG_KEY_FILE,
    load_or_create_log_key,
    log_verifier,
    log_vkey,
)
from security_server.database import open_database
from security_server.evidence import EvidenceFilter, build_bundle
from security_server.headers import build_request_header, parse_call_metadata
from security_server.server import READY_FILE, SecurityServerApp
from security_server.settings import SecurityServerSettings
from tests.conftest import free_port

INSTANCE: Final = "DEV"
POP: Final = ServerId.parse("DEV/GOV/POP/ss1")
SOC: Final = ServerId.parse("DEV/GOV/SOC/ss1")
TAX: Final = ServerId.parse("DEV/GOV/TAX/ss1")
REGISTRY_SUBSYSTEM: Final = SubsystemId.parse("DEV/GOV/POP/registry")
BENEFITS: Final = SubsystemId.parse("DEV/GOV/SOC/benefits")
INCOME: Final = SubsystemId.parse("DEV/GOV/TAX/income")
SERVICE: Final = REGISTRY_SUBSYSTEM.service(SERVICE_NAME)
PURPOSE: Final = "benefit-eligibility"
#: The request body of GetPerson for a person the example register holds.
PERSON_REQUEST: Final = encode_get_person("38001010001")
#: Small so the oversized-message test stays cheap.
TEST_MAX_MESSAGE_BYTES: Final = 64 * 1024
_EPOCH: Final = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ts(at: datetime.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at)
    return stamp


@dataclass
class Agency:
    """One agency's server: credentials, files, and how it runs."""

    server: ServerId
    subsystem: SubsystemId
    auth: Credential
    signing: Credential
    backend_cert: Credential
    directory: Path
    config_path: Path = field(init=False)
    app: SecurityServerApp | None = None
    process: subprocess.Popen[bytes] | None = None
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"


class OcspResponder:
    """A real HTTP OCSP responder answering "good" for every certificate the CA issued here,
    or "revoked" for those in :attr:`revoked`."""

    def __init__(self) -> None:
        self.pki: TestPki | None = None
        self.certificates: dict[int, x509.Certificate] = {}
        self.revoked: set[int] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/ocsp", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/ocsp"
        return self.url

    async def _answer(self, request: web.Request) -> web.Response:
        assert self.pki is not None
        der = await request.read()
        serial = ocsp.load_der_ocsp_request(der).serial_number
        cert = self.certificates.get(serial) or self._written(serial)
        if cert is None:
            return web.Response(status=404)
        revoked_at = _now() - datetime.timedelta(minutes=5) if serial in self.revoked else None
        body = self.pki.ocsp_response(cert, revoked_at=revoked_at)
        return web.Response(body=body, content_type="application/ocsp-response")

    def _written(self, serial: int) -> x509.Certificate | None:
        """A role certificate the test CA wrote that was not registered (auditors, the citizen
        service, statistics: the audit port checks their revocation). Other certificates get no
        answer unless registered, so a test can leave a signing certificate without OCSP."""
        assert self.pki is not None
        for path in self.pki.directory.glob("*.pem"):
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            if cert.serial_number == serial and roles_of(cert):
                self.certificates[serial] = cert
                return cert
        return None

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Bed:
    """The instance. Use :func:`bed` (an async context manager) to build and tear it down."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ocsp = OcspResponder()
        self.backend = PopulationBackend()
        self.agencies: dict[ServerId, Agency] = {}
        self.contract_active = True
        #: Consumer subsystems given a contract like BENEFITS's (C-2, C-3, ...), when active.
        self.more_contracts: list[SubsystemId] = []
        #: Calls per minute each client's contract allows (absent: no limit).
        self.rate_limits: dict[SubsystemId, int] = {}
        #: Transport addresses the configuration lists instead of the servers' own (a proxy's).
        self.advertised: dict[ServerId, str] = {}
        self._runners: list[web.AppRunner] = []
        self._grpc: list[grpc.aio.Server] = []
        self.registry_runner: web.AppRunner | None = None
        self.backend_address = ""
        #: Transport host of a server other than 127.0.0.1 (a server in a network namespace).
        self.server_hosts: dict[ServerId, str] = {}
        #: Trust anchors the configuration lists besides the instance's CA (external CAs).
        self.more_anchors: list[x509.Certificate] = []
        #: The anchors the configuration names as role issuers (``None``: the field is left
        #: out, as in a configuration from before it; docs/adr/0039).
        self.role_issuers: list[x509.Certificate] | None = None

    # --- building ---------------------------------------------------------------------------

    async def build(
        self,
        *,
        validity: datetime.timedelta = datetime.timedelta(minutes=10),
        auth_ip_addresses: tuple[str, ...] = (),
    ) -> None:
        """Issue every credential and publish the configuration; ``auth_ip_addresses``: more
        addresses the servers' TLS certificates name besides 127.0.0.1."""
        url = await self.ocsp.start()
        self.pki = TestPki(self.directory / "pki", ocsp_url=url)
        self.ocsp.pki = self.pki
        backend_server, self.backend_address = await self.backend.start()
        self._grpc.append(backend_server)
        for server, subsystem in ((POP, REGISTRY_SUBSYSTEM), (SOC, BENEFITS), (TAX, INCOME)):
            folder = self.directory / server.member.member_code.lower()
            auth = self._issue(
                self.pki.auth(server, ip_addresses=("127.0.0.1", *auth_ip_addresses))
            )
            signing = self._issue(self.pki.sign(server.member))
            backend_cert = self._issue(self.pki.subsystem(subsystem))
            self.agencies[server] = Agency(server, subsystem, auth, signing, backend_cert, folder)
        self.log_keys = {
            server: load_or_create_log_key(agency.data_dir / "keys" / LOG_KEY_FILE)
            for server, agency in self.agencies.items()
        }
        self.witness = Witness(
            name="witness.dev.example",
            key=generate_ed25519_key(),
            logs={str(s): [log_verifier(str(s), key)] for s, key in self.log_keys.items()},
            store=MemoryWitnessStateStore(),
        )
        config_key = self.pki.issue(CertificateKind.OCSP, name="globalconf-signer")
        self.publisher = ConfigurationPublisher(
            signer=config_key.signer(), certificate=config_key.certificate, validity=validity
        )
        port = await self.start_registry()
        self.globalconf_url = f"http://127.0.0.1:{port}/globalconf"
        self.witness_url = f"http://127.0.0.1:{port}"
        self.anchor_path = self.directory / "anchor.toml"
        self.anchor_path.write_text(
            ConfigurationAnchor(
                instance=INSTANCE,
                globalconf_url=self.globalconf_url,
                certificates=(config_key.certificate,),
            ).to_toml()
        )
        for agency in self.agencies.values():
            agency.directory.mkdir(parents=True, exist_ok=True)
            agency.config_path = agency.directory / "ss.toml"
        self.transport_ports = {server: free_port() for server in self.agencies}
        self.publish()

    def _issue(self, credential: Credential) -> Credential:
        self.ocsp.certificates[credential.certificate.serial_number] = credential.certificate
        return credential

    def transport_address(self, server: ServerId) -> str:
        """Where ``server``'s transport port listens."""
        return f"{self.server_hosts.get(server, '127.0.0.1')}:{self.transport_ports[server]}"

    def configuration(self) -> globalconf_pb2.GlobalConfiguration:
        """The instance's configuration as it stands (contract present or revoked)."""
        conf = globalconf_pb2.GlobalConfiguration(
            instance=INSTANCE,
            trust_anchors=[
                certificate_der(c) for c in [*self.pki.trust_anchors, *self.more_anchors]
            ],
            witness_public_key=self.witness.verifier.vkey().encode(),
            witness_url=self.witness_url,
        )
        if self.role_issuers is not None:
            conf.role_issuers.SetInParent()
            conf.role_issuers.anchor_sha256.extend(fingerprint(c) for c in self.role_issuers)
        for server, agency in self.agencies.items():
            conf.members.add(id=server.member.to_proto(), name=server.member.member_code)
            conf.subsystems.add(id=agency.subsystem.to_proto())
            conf.servers.add(
                id=server.to_proto(),
                address=self.advertised.get(server, self.transport_address(server)),
                auth_cert_sha256=fingerprint(agency.auth.certificate),
                log_public_key=log_vkey(str(server), self.log_keys[server]),
            )
        conf.services.add(
            id=SERVICE.to_proto(),
            methods=["GetPerson"],
            file_descriptor_set=file_descriptor_set(),
            description="Population register: persons by national id",
        )
        if self.contract_active:
            for number, client in enumerate([BENEFITS, *self.more_contracts], start=1):
                conf.contracts.add(
                    contract_id=f"C-{number}",
                    consumer=client.to_proto(),
                    service=SERVICE.to_proto(),
                    methods=["GetPerson"],
                    purpose=PURPOSE,
                    legal_basis="Social Benefits Act s.12",
                    valid_from=_ts(_now() - datetime.timedelta(days=1)),
                    rate_limit_per_minute=self.rate_limits.get(client, 0),
                )
        return conf

    def publish(self) -> int:
        """Sign and serve the current configuration; returns its serial."""
        return self.publisher.publish(self.configuration()).serial

    # --- settings -----------------------------------------------------------------------------

    def settings_dict(self, server: ServerId, **limits: Any) -> dict[str, Any]:
        agency = self.agencies[server]
        data: dict[str, Any] = {
            "server_id": str(server),
            "data_dir": "data",
            "keys": {
                "auth_key": str(agency.auth.key_path),
                "auth_cert": str(agency.auth.cert_path),
                "signing_key": str(agency.signing.key_path),
                "signing_cert": str(agency.signing.cert_path),
            },
            "globalconf": {
                "anchor": str(self.anchor_path),
                "fetch_interval_seconds": 0.2,
                "retry_initial_seconds": 0.2,
                "retry_max_seconds": 0.5,
            },
            "consumer": {"listen": "127.0.0.1:0", "client_ca": str(self.pki.trust_path)},
            "transport": {"listen": self.transport_address(server)},
            "metrics": {"listen": "127.0.0.1:0"},
            "limits": {"max_message_bytes": TEST_MAX_MESSAGE_BYTES, **limits},
        }
        if server == POP:
            data["backends"] = [{"service": str(SERVICE), "address": self.backend_address}]
        return data

    def write_settings(self, server: ServerId, data: dict[str, Any] | None = None) -> Path:
        agency = self.agencies[server]
        agency.config_path.write_text(tomli_w.dumps(data or self.settings_dict(server)))
        return agency.config_path

    # --- running ------------------------------------------------------------------------------

    async def start_server(
        self, server: ServerId, *, clock: Any = None, data: dict[str, Any] | None = None
    ) -> SecurityServerApp:
        """Run ``server`` in this process (real ports, real TLS, real SQLite)."""
        agency = self.agencies[server]
        settings = SecurityServerSettings.from_file(self.write_settings(server, data))
        kwargs = {"clock": clock} if clock is not None else {}
        app = await SecurityServerApp.start(settings, **kwargs)
        agency.app = app
        agency.addresses = dict(app.addresses)
        return app

    async def spawn_server(
        self,
        server: ServerId,
        *,
        data: dict[str, Any] | None = None,
        prefix: Sequence[str] = (),
    ) -> Agency:
        """Run ``server`` as ``ruta ss serve --config FILE`` (from ``data``, default
        :meth:`settings_dict`; the command after ``prefix``, e.g. ``ip netns exec NS``) and wait
        for its ready.json."""
        agency = self.agencies[server]
        config = self.write_settings(server, data)
        ready = agency.data_dir / READY_FILE
        ready.unlink(missing_ok=True)
        with open(agency.directory / "stderr.log", "ab") as stderr:  # noqa: ASYNC230 - test setup
            agency.process = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, polled below
                [
                    *prefix,
                    sys.executable,
                    "-c",
                    "from ruta.cli import main; main()",
                    "--log-level",
                    "info",
                    "ss",
                    "serve",
                    "--config",
                    str(config),
                ],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                # A crash of the server process (a fatal signal) leaves every thread's Python
                # stack in its stderr.log, which a failing test prints.
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
            )
        for _ in range(600):
            if ready.exists():
                agency.addresses = json.loads(ready.read_text())
                return agency
            if agency.process.poll() is not None:
                raise AssertionError(
                    f"{server} exited: {(agency.directory / 'stderr.log').read_text()[-3000:]}"
                )
            await asyncio.sleep(0.05)
        raise AssertionError(f"{server} did not become ready")

    async def stop_process(self, server: ServerId, sig: int = signal.SIGTERM) -> None:
        agency = self.agencies[server]
        process = agency.process
        if process is None:
            return
        agency.process = None
        if process.poll() is None:
            process.send_signal(sig)
            for _ in range(400):
                if process.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                process.kill()
        process.wait()

    async def wait_for_serial(self, serial: int) -> None:
        """Wait until every in-process server holds configuration ``serial`` or newer."""
        for _ in range(400):
            held = [
                a.app.globalconf.held.serial if a.app.globalconf.held else 0
                for a in self.agencies.values()
                if a.app is not None and a.app.globalconf is not None
            ]
            if held and min(held) >= serial:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("servers did not pick up the new configuration")

    async def process_serial(self, server: ServerId) -> int:
        """The configuration serial a ``ruta ss serve`` process holds (from its metrics)."""
        url = self.agencies[server].addresses["metrics"]
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            text = await reply.text()
        found = re.search(r"^ruta_globalconf_serial (\S+)$", text, re.MULTILINE)
        return int(float(found.group(1))) if found else 0

    async def wait_for_process_serial(self, serial: int, *servers: ServerId) -> None:
        """Wait until each of ``servers`` (processes) holds configuration ``serial`` or newer."""
        for _ in range(400):
            if all([await self.process_serial(s) >= serial for s in servers]):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the servers did not pick up the new configuration")

    async def stop_backend(self) -> None:
        """Stop the example backend (the provider's next call to it fails)."""
        for server in self._grpc:
            await server.stop(None)
        self._grpc.clear()

    async def start_registry(self, port: int = 0) -> int:
        """Serve the configuration and the witness over HTTP (again, on ``port``)."""
        registry_app = globalconf_app(self.publisher)
        registry_app.add_routes(witness_routes(self.witness))
        self.registry_runner = web.AppRunner(registry_app, access_log=None)
        await self.registry_runner.setup()
        site = web.TCPSite(self.registry_runner, "127.0.0.1", port)
        await site.start()
        bound: int = self.registry_runner.addresses[0][1]
        self.registry_port = bound
        return bound

    async def stop_registry(self) -> None:
        if self.registry_runner is not None:
            await self.registry_runner.cleanup()
            self.registry_runner = None

    async def close(self) -> None:
        for agency in self.agencies.values():
            if agency.app is not None:
                await agency.app.stop()
                agency.app = None
            await self.stop_process(agency.server)
        await self.stop_registry()
        for server in self._grpc:
            await server.stop(None)
        await self.ocsp.stop()

    # --- calling ------------------------------------------------------------------------------

    def consumer_channel(
        self, server: ServerId, *, as_subsystem: SubsystemId | None = None
    ) -> grpc.aio.Channel:
        """An mTLS channel from a backend (with its subsystem certificate) to ``server``'s
        consumer port."""
        agency = self.agencies[server]
        cred = agency.backend_cert
        if as_subsystem is not None:
            cred = self._issue(self.pki.subsystem(as_subsystem))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.pki.trust_path.read_bytes(),
            private_key=cred.key_path.read_bytes(),
            certificate_chain=cred.cert_path.read_bytes(),
        )
        return grpc.aio.secure_channel(agency.addresses["consumer"], credentials)


async def consumer_refusal(
    instance: Bed,
    *,
    server: ServerId = SOC,
    metadata: tuple[tuple[str, str], ...] | None = None,
    body: bytes = PERSON_REQUEST,
    path: str | None = None,
    as_subsystem: SubsystemId | None = None,
    deadline: float | None = None,
) -> tuple[grpc.StatusCode, str | None]:
    async with instance.consumer_channel(server, as_subsystem=as_subsystem) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = (
            channel.unary_unary(path) if path else get_person(channel)
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(body, metadata=metadata or call_metadata(), timeout=deadline)
    return info.value.code(), fault_of(info.value)


def signed_request(
    instance: Bed,
    *,
    sender: ServerId = SOC,
    client: SubsystemId = BENEFITS,
    signing: Credential | None = None,
    created_at: datetime.datetime | None = None,
    body: bytes = PERSON_REQUEST,
    revoked: bool = False,
) -> tuple[transport_pb2.MessageHeader, transport_pb2.SignedMessage]:
    call = parse_call_metadata("/population.v1.PopulationRegister/GetPerson", call_metadata(client))
    header, raw = build_request_header(
        call,
        body=body,
        sender=sender,
        receiver=POP,
        created_at=created_at or datetime.datetime.now(datetime.UTC),
    )
    cred = signing or instance.agencies[sender].signing
    staple = instance.pki.ocsp_response(
        cred.certificate,
        this_update=created_at,
        revoked_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
        if revoked
        else None,
    )
    signature = sign_message(
        raw, signer=cred.signer(), certificate=cred.certificate, ocsp_response=staple
    )
    return header, transport_pb2.SignedMessage(header=raw, body=body, signature=signature)


def provider_channel(instance: Bed, *, peer: ServerId = SOC) -> grpc.aio.Channel:
    """A mutual-TLS channel to POP's transport port, presenting ``peer``'s auth certificate (the
    test client that plays a listed security server)."""
    auth = instance.agencies[peer].auth
    credentials = grpc.ssl_channel_credentials(
        root_certificates=instance.pki.trust_path.read_bytes(),
        private_key=auth.key_path.read_bytes(),
        certificate_chain=auth.cert_path.read_bytes(),
    )
    return grpc.aio.secure_channel(instance.agencies[POP].addresses["transport"], credentials)


@contextlib.asynccontextmanager
async def provider_and_consumer(
    tmp_path: Path, *, checkpoints: dict[str, Any] | None = None
) -> AsyncIterator[Bed]:
    """A bed with POP (provider) and SOC (consumer) serving in this process (with
    ``checkpoints`` as both servers' ``[checkpoints]`` settings when given)."""
    async with bed(tmp_path) as instance:
        for server in (POP, SOC):
            data = instance.settings_dict(server)
            if checkpoints is not None:
                data["checkpoints"] = checkpoints
            await instance.start_server(server, data=data)
        yield instance


async def send_to_provider(
    instance: Bed, message: transport_pb2.SignedMessage, *, peer: ServerId = SOC
) -> transport_pb2.SignedMessage:
    async with provider_channel(instance, peer=peer) as channel:
        exchange = channel.unary_unary(
            "/ruta.v1.Transport/Exchange",
            request_serializer=transport_pb2.SignedMessage.SerializeToString,
            response_deserializer=transport_pb2.SignedMessage.FromString,
        )
        response: transport_pb2.SignedMessage = await exchange(message, timeout=10)
        return response


async def provider_fault(
    instance: Bed, message: transport_pb2.SignedMessage, *, peer: ServerId = SOC
) -> str | None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await send_to_provider(instance, message, peer=peer)
    return fault_of(info.value)


def get_person(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GET_PERSON_PATH)
    return call


def call_metadata(
    client: SubsystemId = BENEFITS,
    *,
    purpose: str = PURPOSE,
    extra: Sequence[tuple[str, str]] = (),
) -> tuple[tuple[str, str], ...]:
    return (
        ("ruta-client", str(client)),
        ("ruta-service", str(REGISTRY_SUBSYSTEM)),
        ("ruta-purpose", purpose),
        *extra,
    )


def fault_of(error: grpc.aio.AioRpcError) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == "ruta-fault":
            return value if isinstance(value, str) else value.decode()
    return None


async def full_export(instance: Bed, server: ServerId) -> VerificationReport:
    """Export every record of in-process ``server``'s log (as ``ExportEvidence`` from sequence
    0 does) once the witness cosigned all of it, and verify the bundle offline against the
    instance's anchor."""
    app = instance.agencies[server].app
    assert app is not None
    assert app.log is not None
    assert app.checkpointer is not None
    assert app.globalconf is not None
    assert app.globalconf.held is not None
    size = app.log.size()
    for _ in range(400):
        cosigned = app.checkpointer.cosigned
        if cosigned is not None and cosigned.size >= size:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"no cosigned checkpoint: {app.checkpointer.last_error}")
    engine = await open_database(app.settings.log_url)
    try:
        bundle = await build_bundle(
            log=app.log,
            engine=engine,
            server=str(server),
            key=instance.log_keys[server],
            globalconf=app.globalconf.held.signed,
            query=EvidenceFilter(from_seq=0),
            bodies_permitted=lambda _: True,
        )
    finally:
        await engine.dispose()
    return verify_bundle(bundle, anchor=ConfigurationAnchor.from_file(instance.anchor_path))


@contextlib.asynccontextmanager
async def bed(directory: Path, **kwargs: Any) -> AsyncIterator[Bed]:
    instance = Bed(directory)
    try:
        await instance.build(**kwargs)
        yield instance
    finally:
        await instance.close()


__all__ = [
    "BENEFITS",
    "INCOME",
    "POP",
    "PURPOSE",
    "REGISTRY_SUBSYSTEM",
    "SERVICE",
    "SOC",
    "TAX",
    "TEST_MAX_MESSAGE_BYTES",
    "Bed",
    "MemberId",
    "bed",
    "call_metadata",
    "consumer_refusal",
    "fault_of",
    "full_export",
    "get_person",
    "provider_fault",
    "send_to_provider",
    "signed_request",
]


async def wait_cosigned(app: SecurityServerApp, size: int) -> None:
    """Wait (bounded) until ``app``'s log has a cosigned checkpoint of at least ``size``."""
    assert app.checkpointer is not None
    for _ in range(200):
        cosigned = app.checkpointer.cosigned
        if cosigned is not None and cosigned.size >= size:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no cosigned checkpoint: {app.checkpointer.last_error}")


def audit_cli(*args: str) -> tuple[int, str]:
    """``ruta audit ARGS`` in process: its exit code and output."""
    result = CliRunner().invoke(audit_group, list(args))
    return result.exit_code, result.output
