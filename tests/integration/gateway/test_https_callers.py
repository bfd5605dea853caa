"""Callers over HTTPS authenticate with a client certificate naming their subsystem, as backends
do at the consumer port."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from ruta.pki.testing import Credential
from tests.integration.gateway.gwbed import GatewayBed, gateway_bed
from tests.integration.security_server.bed import BENEFITS, PURPOSE, SERVICE, SOC

pytestmark = pytest.mark.integration

HEADERS = {"X-Road-Client": str(BENEFITS), "Ruta-Purpose": PURPOSE}


def _context(instance: GatewayBed, client: Credential | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(instance.pki.trust_path))
    if client is not None:
        context.load_cert_chain(client.cert_path, client.key_path)
    return context


async def _post(url: str, context: ssl.SSLContext) -> tuple[int, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, json={"nationalId": "38001010001"}, headers=HEADERS, ssl=context
        ) as response,
    ):
        body: dict[str, str] = await response.json()
        return response.status, body


async def test_https_callers_prove_their_subsystem(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        await instance.gateways.pop(str(SOC)).stop()
        server_cert = instance.pki.auth(SOC.member.server("gw"))
        app = await instance.start_gateway(
            SOC,
            http={
                "listen": "127.0.0.1:0",
                "tls_cert": str(server_cert.cert_path),
                "tls_key": str(server_cert.key_path),
                "client_ca": str(instance.pki.trust_path),
                "plain_loopback_subsystems": [],
            },
        )
        url = f"{app.addresses['http']}/r1/{SERVICE}/GetPerson"
        assert url.startswith("https://")
        own = instance.agencies[SOC].backend_cert
        status, body = await _post(url, _context(instance, own))
        assert status == 200, body
        assert body["givenName"] == "Ana"

        status, body = await _post(url, _context(instance, None))
        assert (status, body["type"]) == (401, "client.unauthenticated")

        other = instance.pki.subsystem("DEV/GOV/SOC/other")
        status, body = await _post(url, _context(instance, other))
        assert (status, body["type"]) == (403, "client.permission_denied")
