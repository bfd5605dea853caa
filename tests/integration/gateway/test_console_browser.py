"""The public service catalogue in Debian's chromium: it loads with the bed's services, switches
language from the page, runs no script from the registry's data, and axe-core finds no serious
accessibility violation in any language.

``RUTA_UPDATE_SCREENSHOTS=1`` writes the README's pictures (docs/images/catalogue-*.png)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import pytest
from playwright.async_api import Browser, Dialog

from tests.browser import axe_violations, serious_violations
from tests.integration.gateway.consolebed import HostileBed, ShowcaseBed
from tests.integration.gateway.gwbed import gateway_bed, gateway_url

pytestmark = [pytest.mark.integration, pytest.mark.browser]

IMAGES: Final = Path(__file__).resolve().parents[3] / "docs" / "images"
_TIMEOUT_MS: Final = 15_000


async def test_a_person_reads_the_catalogue_and_switches_language(
    tmp_path: Path, browser: Browser
) -> None:
    async with gateway_bed(tmp_path, bed=ShowcaseBed) as instance:
        context = await browser.new_context(
            locale="es-419", viewport={"width": 1200, "height": 900}
        )
        page = await context.new_page()
        page.set_default_timeout(_TIMEOUT_MS)
        blocked: list[str] = []
        page.on("console", lambda message: blocked.append(message.text))
        await page.goto(gateway_url(instance) + "/catalogue")

        # Spanish from the browser's language, with the bed's members and services.
        assert await page.get_attribute("html", "lang") == "es"
        await page.get_by_role("heading", name="Catálogo de servicios", level=1).wait_for()
        await page.get_by_role("heading", name="Population Registry Agency").wait_for()
        table = page.get_by_role("table", name="Servicios de DEV/GOV/POP/registry")
        await table.get_by_role("rowheader", name="population.v1.PopulationRegister").wait_for()
        await table.get_by_text("GET /persons/{id}").wait_for()
        await table.get_by_text("42,5 minutos", exact=False).wait_for()
        assert serious_violations(await axe_violations(page)) == []
        if os.environ.get("RUTA_UPDATE_SCREENSHOTS"):
            await page.screenshot(path=IMAGES / "catalogue-es.png", full_page=True)

        # Portuguese, then English, from the page's own switcher.
        await (
            page.get_by_role("navigation", name="Idioma")
            .get_by_role("link", name="Português")
            .click()
        )
        await page.get_by_role("heading", name="Catálogo de serviços", level=1).wait_for()
        assert await page.get_attribute("html", "lang") == "pt"
        assert serious_violations(await axe_violations(page)) == []
        await page.get_by_role("link", name="English").click()
        await page.get_by_role("heading", name="Service catalogue", level=1).wait_for()
        assert (
            await page.get_by_role("link", name="English").get_attribute("aria-current") == "true"
        )
        assert serious_violations(await axe_violations(page)) == []
        if os.environ.get("RUTA_UPDATE_SCREENSHOTS"):
            await page.screenshot(path=IMAGES / "catalogue-en.png", full_page=True)
        await context.close()
    # The page loads no script and breaks no rule of its policy.
    assert not [text for text in blocked if "Content Security Policy" in text]


async def test_markup_in_the_registry_runs_nothing_in_the_browser(
    tmp_path: Path, browser: Browser
) -> None:
    async with gateway_bed(tmp_path, bed=HostileBed) as instance:
        page = await browser.new_page()
        page.set_default_timeout(_TIMEOUT_MS)
        dialogs: list[str] = []

        async def dismiss(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", dismiss)
        await page.goto(gateway_url(instance) + "/catalogue")
        await page.get_by_text('<script>alert("member")</script> Population').first.wait_for()
        assert await page.locator("main script, main img").count() == 0
        await page.close()
    assert dialogs == []
