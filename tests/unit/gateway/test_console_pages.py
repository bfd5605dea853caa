"""The console pages without a bed: a gateway holding no valid configuration answers the
catalogue with a 503 page in the asked language, under the same security headers."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.console.pages import CONTENT_SECURITY_POLICY, add_console_routes
from gateway.console.paths import CATALOGUE_PATH
from ruta.globalconf import GlobalConf
from ruta.globalconf.errors import OutdatedGlobalConfError


def _no_configuration() -> GlobalConf:
    raise OutdatedGlobalConfError("no valid global configuration is held")


async def test_without_a_configuration_the_catalogue_says_so() -> None:
    app = web.Application()
    add_console_routes(app, conf=_no_configuration)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(
                f"http://127.0.0.1:{port}{CATALOGUE_PATH}", headers={"Accept-Language": "es"}
            ) as response,
        ):
            page = await response.text()
            assert response.status == 503
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    finally:
        await runner.cleanup()
    assert "El catálogo no está disponible" in page
    assert "no valid global configuration is held" not in page
