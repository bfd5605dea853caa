"""A bed for the citizen's record of access: two security servers' message logs holding real
signed exchanges about two test citizens, each server's audit API over mutual TLS, a third
server listed with an audit address where nothing answers, the sandbox's development OpenID
Connect issuer, and the gateway's citizen pages in this process."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import grpc.aio
from aiohttp import web
from google.protobuf import timestamp_pb2

from gateway.console.access_record import AccessRecordReader
from gateway.console.citizen import CALLBACK_PATH, CitizenConsole
from gateway.console.oidc import OidcClient
from gateway.console.pages import PAGES, add_console_routes
from gateway.settings import CitizenSettings
from ruta.globalconf import GlobalConf
from ruta.ids import ServerId
from ruta.v1 import globalconf_pb2
from sandbox.oidc import DevIssuer
from security_server.audit import AuditServicer, add_audit_service, audit_server_credentials
from tests.conftest import free_port
from tests.unit.security_server.evidence_support import (
    CLIENT,
    REG,
    SERVICE,
    Scenario,
    Side,
    scenario,
)
from tests.unit.security_server.twin import caller_status

#: Two of the sandbox's test citizens (the example population register).
ANA: Final = "4410000017"
VALENTINA: Final = "4410000033"
CLIENT_ID: Final = "ruta-citizen"
MEMBER_NAMES: Final = {
    "SOC": "Social Benefits Agency",
    "POP": "Population Registry Agency",
    "REG": "Public Registries Agency",
}
LEGAL_BASIS: Final = "Social Benefits Act, s.12"


@dataclass
class CitizenBed:
    world: Scenario
    url: str
    issuer: str
    conf: GlobalConf
    #: Exchanges per citizen (each logged by both servers).
    exchanges: dict[str, int]


def _ts(at: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


async def _serve_audit(world: Scenario, side: Side) -> tuple[grpc.aio.Server, str]:
    tls = world.pki.auth(side.server)
    server = grpc.aio.server()
    add_audit_service(
        server,
        AuditServicer(
            log=side.log,
            engine=side.engine,
            server=str(side.server),
            key=side.key,
            globalconf=lambda: world.signed_globalconf,
            callers=caller_status(world.pki),
        ),
    )
    port = server.add_secure_port(
        "127.0.0.1:0", audit_server_credentials(tls.key_path, tls.cert_path, world.pki.trust_path)
    )
    await server.start()
    return server, f"localhost:{port}"


def _configuration(world: Scenario, audit: dict[str, str]) -> GlobalConf:
    signed = globalconf_pb2.SignedGlobalConfiguration.FromString(world.signed_globalconf)
    conf = globalconf_pb2.GlobalConfiguration.FromString(signed.configuration)
    for member in conf.members:
        member.name = MEMBER_NAMES[member.id.member_code]
    for server in conf.servers:
        server.audit_address = audit[ServerId.from_proto(server.id).member.member_code]
    unreachable = REG.server("ss1")
    conf.servers.add(
        id=unreachable.to_proto(),
        address="127.0.0.1:1",
        auth_cert_sha256=hashlib.sha256(str(unreachable).encode()).hexdigest(),
        audit_address=audit["REG"],
    )
    conf.services.add(id=SERVICE.to_proto(), methods=["GetPerson"])
    conf.contracts.add(
        contract_id="C-1",
        consumer=CLIENT.to_proto(),
        service=SERVICE.to_proto(),
        purpose="benefit-eligibility",
        legal_basis=LEGAL_BASIS,
        valid_from=_ts(datetime.now(UTC) - timedelta(days=1)),
    )
    return GlobalConf.from_proto(conf)


@asynccontextmanager
async def citizen_bed(tmp_path: Path) -> AsyncIterator[CitizenBed]:
    """The bed running; Ana has three exchanges (one refused), Valentina one."""
    async with scenario(tmp_path, exchanges=0) as world:
        await world.exchanges([ANA, VALENTINA, ANA])
        await world.exchange(ANA, status_code=7, fault="server.provider.access_denied")
        servers = []
        audit = {}
        for side in (world.consumer, world.provider):
            server, address = await _serve_audit(world, side)
            servers.append(server)
            audit[side.server.member.member_code] = address
        audit["REG"] = f"127.0.0.1:{free_port()}"  # listed, but nothing answers there
        conf = _configuration(world, audit)

        gateway_port, issuer_port = free_port(), free_port()
        url, issuer_url = f"http://localhost:{gateway_port}", f"http://localhost:{issuer_port}"
        secret = tmp_path / "client-secret"
        secret.write_text("sandbox-secret\n", encoding="utf-8")
        issuer = DevIssuer(
            issuer=issuer_url,
            client_id=CLIENT_ID,
            client_secret="sandbox-secret",
            redirect_uris=[url + CALLBACK_PATH],
        )
        issuer_runner = web.AppRunner(issuer.build(), access_log=None)
        await issuer_runner.setup()
        await web.TCPSite(issuer_runner, "127.0.0.1", issuer_port).start()

        citizen_service = world.pki.role("citizen-service")
        settings = CitizenSettings(
            issuer=issuer_url,
            client_id=CLIENT_ID,
            client_secret_file=secret,
            public_url=url,
            cert=citizen_service.cert_path,
            key=citizen_service.key_path,
            ca=world.pki.trust_path,
            deadline_seconds=2.0,
        )
        console = CitizenConsole(
            settings=settings,
            pages=PAGES,
            conf=lambda: conf,
            oidc=OidcClient(
                issuer=issuer_url,
                client_id=CLIENT_ID,
                client_secret="sandbox-secret",
                redirect_uri=url + CALLBACK_PATH,
            ),
            reader=AccessRecordReader(
                key=settings.key, cert=settings.cert, ca=settings.ca, deadline_seconds=2.0
            ),
        )
        app = web.Application()
        add_console_routes(app, conf=lambda: conf)
        console.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", gateway_port).start()
        try:
            yield CitizenBed(world, url, issuer_url, conf, {ANA: 3, VALENTINA: 1})
        finally:
            await runner.cleanup()
            await console.close()
            await issuer_runner.cleanup()
            for server in servers:
                await server.stop(None)
