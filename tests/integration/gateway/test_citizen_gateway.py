"""A gateway started from settings with a ``[citizen]`` section serves the citizen's pages: the
sign-in goes to the configured issuer with PKCE, state and nonce, the callback starts a session,
and the page reads the record with the citizen-service certificate from the settings."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from gateway.app import GatewayApp
from gateway.settings import GatewaySettings
from sandbox.oidc import DevIssuer
from tests.conftest import free_port
from tests.integration.gateway.gwbed import gateway_bed
from tests.integration.security_server.bed import POP

pytestmark = [pytest.mark.integration]


async def test_a_gateway_with_citizen_settings_signs_a_citizen_in(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        port, issuer_port = free_port(), free_port()
        public, issuer_url = f"http://localhost:{port}", f"http://localhost:{issuer_port}"
        secret = tmp_path / "client-secret"
        secret.write_text("s3cret\n", encoding="utf-8")
        issuer = DevIssuer(
            issuer=issuer_url,
            client_id="ruta-citizen",
            client_secret="s3cret",
            redirect_uris=[public + "/citizen/callback"],
        )
        runner = web.AppRunner(issuer.build(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", issuer_port).start()
        credential = instance.pki.role("citizen-service")
        data = instance.gateway_settings(
            POP,
            data_dir=str(tmp_path / "citizen-gateway"),
            public={"listen": f"127.0.0.1:{port}"},
        )
        data.pop("backend", None)
        data["citizen"] = {
            "issuer": issuer_url,
            "client_id": "ruta-citizen",
            "client_secret_file": str(secret),
            "public_url": public,
            "cert": str(credential.cert_path),
            "key": str(credential.key_path),
            "ca": str(instance.pki.trust_path),
        }
        app = await GatewayApp.start(GatewaySettings(**data))
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[public])
        try:
            async with aiohttp.ClientSession(cookie_jar=jar) as http:
                async with http.get(public + "/citizen?lang=en") as page:
                    assert page.status == 200
                    assert 'href="/citizen/sign-in?lang=' in await page.text()
                # The callers' port (plain loopback callers) serves no citizen page, and the
                # public port no service access, whatever caller header a proxy passes on.
                async with http.get(app.addresses["http"] + "/citizen") as elsewhere:
                    assert elsewhere.status == 404
                async with http.get(
                    f"{public}/r1/DEV/GOV/POP/registry/persons/persons/1",
                    headers={"X-Road-Client": "DEV/GOV/POP/registry"},
                ) as r1:
                    assert r1.status == 404
                    assert (await r1.json())["type"] == "client.unknown_service"
                async with http.get(public + "/citizen/sign-in", allow_redirects=False) as start:
                    assert start.status == 303
                    target = start.headers["Location"]
                    cookie = start.cookies["__Host-ruta-sign-in"]
                    assert cookie["samesite"] == "Lax"
                    assert cookie["secure"]
                    assert cookie["httponly"]
                query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
                assert target.startswith(issuer_url + "/authorize?")
                assert query["code_challenge_method"] == "S256"
                assert query["redirect_uri"] == public + "/citizen/callback"
                assert query["state"] != query["nonce"]
                async with http.post(
                    issuer_url + "/authorize", data={**query, "citizen": "4410000025"}
                ) as signed_in:
                    assert signed_in.status == 200
                    assert "You are signed in" in await signed_in.text()
                async with http.get(public + "/citizen?lang=en") as record:
                    text = await record.text()
                assert "Hello, Mateo Fernández Rojas." in text
                assert "(your id: 4410000025)" in text
                # This bed's servers list no audit address: nothing to read, said plainly.
                assert "No agency has asked for information about you." in text
        finally:
            await app.stop()
            await runner.cleanup()
