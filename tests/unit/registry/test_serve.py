"""A registry node in process: init, start, health, publication after a change, clean stop."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from registry.admin_client import admin_stub, call
from registry.ca import CertificateAuthority
from registry.errors import AlreadyExistsError
from registry.serve import RegistryNode
from registry.settings import RegistryLayout
from registry.setup import initialise_registry
from ruta.faults import Fault, RutaError
from ruta.globalconf import ConfigurationAnchor, open_configuration
from ruta.ids import MemberId
from ruta.pki.certs import certificate_pem, fingerprint, load_certificate, make_csr
from ruta.pki.keys import generate_ec_key, save_private_key
from ruta.pki.tls import channel_credentials
from ruta.settings import ConfigError
from ruta.v1 import globalconf_pb2, globalconf_pb2_grpc, registry_pb2
from tests.conftest import free_port


async def test_node_serves_health_and_publishes_changes(tmp_path: Path) -> None:
    directory = tmp_path / "registry"
    made = await initialise_registry(
        directory,
        instance="LAC",
        admin_listen="127.0.0.1:0",
        http_listen=f"127.0.0.1:{free_port()}",
    )
    layout = made.layout
    assert layout.admin_key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(AlreadyExistsError):
        await initialise_registry(directory, instance="LAC")

    node = RegistryNode(directory)
    await node.start()
    try:
        assert node.bound is not None
        ready = json.loads(layout.ready.read_text())
        assert ready["admin"] == node.bound.admin
        creds = channel_credentials(layout.admin_key, layout.admin_cert, layout.trust)
        async with grpc.aio.secure_channel(node.bound.admin, creds) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "ruta.v1.RegistryAdmin"):
                answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            conf_service = globalconf_pb2_grpc.GlobalConfServiceStub(channel)
            got = await conf_service.Get(globalconf_pb2.GetGlobalConfRequest())
            assert got.signed.signature
            serial = globalconf_pb2.GlobalConfiguration.FromString(got.signed.configuration).serial
            again = await conf_service.Get(globalconf_pb2.GetGlobalConfRequest(known_serial=serial))
            assert again.not_modified

        anchor = ConfigurationAnchor.from_file(layout.anchor)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{node.bound.http}/healthz") as response:
                assert response.status == 200
            async with session.get(f"{node.bound.http}/globalconf") as response:
                first = await response.read()
            async with admin_stub(
                node.bound.admin, key=layout.admin_key, cert=layout.admin_cert, trust=layout.trust
            ) as stub:
                await call(
                    stub.AddMember(
                        registry_pb2.AddMemberRequest(
                            id=MemberId.parse("LAC/GOV/POP").to_proto(), name="Population"
                        )
                    )
                )
                with pytest.raises(RutaError) as refused:
                    await call(
                        stub.AddMember(
                            registry_pb2.AddMemberRequest(
                                id=MemberId.parse("LAC/GOV/POP").to_proto(), name="again"
                            )
                        )
                    )
                assert refused.value.fault is Fault.CLIENT_ALREADY_EXISTS
                auditor_key = generate_ec_key()
                issued = await call(
                    stub.IssueCertificate(
                        registry_pb2.IssueCertificateRequest(
                            csr=make_csr(auditor_key, "an auditor").public_bytes(Encoding.DER),
                            profile=registry_pb2.CERTIFICATE_PROFILE_ROLE,
                            roles=["auditor-supervisor"],
                        )
                    )
                )
            auditor_cert = load_certificate(issued.certificate)
            save_private_key(tmp_path / "auditor.key", auditor_key)
            (tmp_path / "auditor.pem").write_bytes(certificate_pem(auditor_cert))
            auditor = {"key": tmp_path / "auditor.key", "cert": tmp_path / "auditor.pem"}
            async with admin_stub(node.bound.admin, trust=layout.trust, **auditor) as stub:
                trail = await call(stub.ListAuditTrail(registry_pb2.ListAuditRequest()))
                assert trail.entries[-1].action == "administrator.add"
                assert trail.entries[-1].object_id == "an auditor"
                CertificateAuthority.open(layout.ca).revoke(auditor_cert.serial_number)
                with pytest.raises(RutaError) as revoked:
                    await call(stub.ListMembers(registry_pb2.ListRequest()))
                assert revoked.value.fault is Fault.CLIENT_UNAUTHENTICATED
            async with session.get(f"{node.bound.http}/globalconf") as response:
                second = await response.read()
        now = datetime.now(UTC)
        before = open_configuration(first, anchor, now=now)
        after = open_configuration(second, anchor, now=now)
        assert before.members == ()
        # The registry's own CA issues role certificates (ADR 0039): published as such.
        assert before.role_issuers == before.trust_anchors
        assert before.trust_anchors == (load_certificate(layout.trust.read_bytes()),)
        assert [str(m.id) for m in after.members] == ["LAC/GOV/POP"]
        assert after.serial > before.serial
    finally:
        await node.stop()
    assert not layout.ready.exists()
    await node.stop()  # idempotent


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_a_change_through_one_node_reaches_the_other(
    tmp_path: Path, database: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUTA_REGISTRY_CHANGE_POLL_SECONDS", "0.05")
    directory = tmp_path / "registry"
    made = await initialise_registry(
        directory,
        instance="LAC",
        db_url=database,
        admin_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        public_url="http://registry.example",
    )
    layout = made.layout
    first, second = RegistryNode(directory), RegistryNode(directory)
    await first.start()
    try:
        await second.start()
        try:
            assert first.bound is not None
            assert second.bound is not None
            async with admin_stub(
                first.bound.admin, key=layout.admin_key, cert=layout.admin_cert, trust=layout.trust
            ) as stub:
                await call(
                    stub.AddMember(
                        registry_pb2.AddMemberRequest(
                            id=MemberId.parse("LAC/GOV/POP").to_proto(), name="Population"
                        )
                    )
                )
            anchor = ConfigurationAnchor.from_file(layout.anchor)
            async with aiohttp.ClientSession() as session:
                for _ in range(400):  # the second node polls every 0.05 s
                    async with session.get(f"{second.bound.http}/globalconf") as response:
                        signed = await response.read()
                    view = open_configuration(signed, anchor, now=datetime.now(UTC))
                    if view.members:
                        break
                    await asyncio.sleep(0.05)
            assert [str(m.id) for m in view.members] == ["LAC/GOV/POP"]
        finally:
            await second.stop()
    finally:
        await first.stop()


@pytest.mark.parametrize("listener", ["admin", "http"])
async def test_a_busy_address_is_a_clear_error(tmp_path: Path, listener: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        await initialise_registry(
            tmp_path / "registry",
            instance="LAC",
            admin_listen=taken if listener == "admin" else "127.0.0.1:0",
            http_listen=taken if listener == "http" else f"127.0.0.1:{free_port()}",
            public_url="http://registry.example",
        )
        node = RegistryNode(tmp_path / "registry")
        with pytest.raises(ConfigError, match=f"cannot listen on {taken}"):
            await node.start()
    assert not node.layout.ready.exists()


async def test_the_console_starts_and_stops_with_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "registry"
    made = await initialise_registry(
        directory,
        instance="LAC",
        admin_listen="127.0.0.1:0",
        http_listen=f"127.0.0.1:{free_port()}",
    )
    layout = made.layout
    monkeypatch.setenv("RUTA_REGISTRY_CONSOLE__LISTEN", "127.0.0.1:0")
    node = RegistryNode(directory)
    await node.start()
    context = ssl.create_default_context(cafile=str(layout.trust))
    context.load_cert_chain(layout.admin_cert, layout.admin_key)
    try:
        assert node.bound is not None
        console = node.bound.console
        assert console.startswith("https://127.0.0.1:")
        assert json.loads(layout.ready.read_text())["console"] == console
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.get(console + "/configuration") as response,
        ):
            body = await response.text()
        assert response.status == 200
        assert "Configuration in force" in body
        assert "/globalconf" in body
        # The registry's own CA is the one role issuer it publishes by default (ADR 0039).
        issuer = load_certificate(layout.trust.read_bytes()).public_bytes(Encoding.DER)
        assert "Who issues role certificates" in body
        assert hashlib.sha256(issuer).hexdigest() in body
    finally:
        await node.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.get(console + "/members"),
        ):
            pass


async def test_without_console_settings_there_is_no_console(tmp_path: Path) -> None:
    directory = tmp_path / "registry"
    made = await initialise_registry(
        directory,
        instance="LAC",
        admin_listen="127.0.0.1:0",
        http_listen=f"127.0.0.1:{free_port()}",
    )
    node = RegistryNode(directory)
    await node.start()
    try:
        assert node.bound is not None
        assert node.bound.console == ""
        assert "console" not in json.loads(made.layout.ready.read_text())
    finally:
        await node.stop()


async def _registry(tmp_path: Path) -> RegistryLayout:
    made = await initialise_registry(
        tmp_path / "registry",
        instance="LAC",
        admin_listen="127.0.0.1:0",
        http_listen=f"127.0.0.1:{free_port()}",
    )
    return made.layout


async def _published_role_issuers(layout: RegistryLayout) -> tuple[str, ...] | None:
    """Start the node, and return the fingerprints its configuration publishes as role
    issuers (``None``: the field is absent)."""
    node = RegistryNode(layout.root)
    await node.start()
    try:
        assert node.bound is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{node.bound.http}/globalconf") as response,
        ):
            signed = await response.read()
    finally:
        await node.stop()
    anchor = ConfigurationAnchor.from_file(layout.anchor)
    view = open_configuration(signed, anchor, now=datetime.now(UTC))
    if view.role_issuers is None:
        return None
    return tuple(fingerprint(c) for c in view.role_issuers)


async def test_role_issuers_default_to_the_registrys_ca_and_name_it_in_either_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = await _registry(tmp_path)
    ca = fingerprint(load_certificate(layout.trust.read_bytes()))
    assert await _published_role_issuers(layout) == (ca,)
    colons = ":".join(ca[i : i + 2] for i in range(0, 64, 2)).upper()  # openssl's spelling
    monkeypatch.setenv("RUTA_REGISTRY_ROLE_ISSUERS", json.dumps([colons]))
    assert await _published_role_issuers(layout) == (ca,)
    # Empty: published as "no certificate carries a role", not left out.
    monkeypatch.setenv("RUTA_REGISTRY_ROLE_ISSUERS", "[]")
    assert await _published_role_issuers(layout) == ()


async def test_a_role_issuer_the_registry_does_not_publish_as_anchor_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = await _registry(tmp_path)
    stranger = hashlib.sha256(b"not an anchor").hexdigest()
    monkeypatch.setenv("RUTA_REGISTRY_ROLE_ISSUERS", json.dumps([stranger]))
    with pytest.raises(ConfigError, match=f"role_issuers names {stranger}.*not a trust anchor"):
        await _published_role_issuers(layout)
    assert not layout.ready.exists()
