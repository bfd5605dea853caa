"""The gateway's public service catalogue over HTTP: the bed's members, subsystems and services
with their methods, in the language asked for, with a strict Content-Security-Policy, and every
value from the registry escaped."""

from __future__ import annotations

import html
from pathlib import Path

import aiohttp
import pytest
from markupsafe import escape

from gateway.console.pages import CONTENT_SECURITY_POLICY
from tests.integration.gateway.consolebed import (
    HOSTILE_DESCRIPTION,
    HOSTILE_NAME,
    HostileBed,
    ShowcaseBed,
)
from tests.integration.gateway.gwbed import gateway_bed, gateway_url
from tests.integration.security_server.bed import SOC

pytestmark = pytest.mark.integration

_TIMEOUT = aiohttp.ClientTimeout(total=30)


async def _get(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession(timeout=_TIMEOUT) as session,
        session.get(url, headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.text()


async def test_the_catalogue_lists_the_services_in_the_language_asked_for(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path, bed=ShowcaseBed) as instance:
        await instance.gateways.pop(str(SOC)).stop()
        app = await instance.start_gateway(SOC, metrics={"listen": "127.0.0.1:0"})
        url = gateway_url(instance) + "/catalogue"
        status, headers, page = await _get(url, **{"Accept-Language": "pt-BR,pt;q=0.9"})
        assert status == 200
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "script-src" not in CONTENT_SECURITY_POLICY  # default-src 'none': no script
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Content-Language"] == "pt"
        assert '<html lang="pt">' in page
        assert "Catálogo de serviços" in page
        for text in (
            "Population Registry Agency",
            "Social Security Institute",
            "DEV/GOV/POP/registry",
            "population.v1.PopulationRegister",
            "GetPerson",
            "GET /persons/{id}",
            "Population register: persons by national id",
            "42,5 minutos",  # the savings, with Portuguese decimals
        ):
            assert html.escape(text, quote=False) in page, text

        _, headers, page = await _get(url + "?lang=es", **{"Accept-Language": "pt"})
        assert headers["Content-Language"] == "es"
        assert "Catálogo de servicios" in page
        _, headers, page = await _get(url, **{"Accept-Language": "fr"})
        assert headers["Content-Language"] == "en"
        assert "Service catalogue" in page
        assert "42.5 minutes" in page

        status, headers, _css = await _get(gateway_url(instance) + "/console/static/console.css")
        assert status == 200
        assert headers["Content-Type"].startswith("text/css")
        _, _, metrics = await _get(app.addresses["metrics"])
        assert 'ruta_gateway_requests_total{kind="console",status="200"} 4.0' in metrics


async def test_markup_from_the_registry_is_shown_as_text(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path, bed=HostileBed) as instance:
        _, _, page = await _get(gateway_url(instance) + "/catalogue")
    assert "<script" not in page
    assert "<img" not in page
    # Shown as the text it is (Jinja2's autoescape: markupsafe).
    assert str(escape(HOSTILE_NAME)) in page
    assert str(escape(HOSTILE_DESCRIPTION)) in page
