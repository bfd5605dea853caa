"""The citizen's record of access in Debian's chromium: a citizen signs in through the sandbox's
development issuer and sees exactly the exchanges about their own id (one line per exchange,
though both servers logged it), is told plainly that one agency's server could not be reached,
sees nothing of another citizen's, signs out; axe-core finds no serious violation.

``RUTA_UPDATE_SCREENSHOTS=1`` writes the README's picture (docs/images/console-citizen.png)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import pytest
from playwright.async_api import Browser, Page

from tests.browser import axe_violations, serious_violations
from tests.integration.gateway.citizenbed import ANA, VALENTINA, CitizenBed, citizen_bed

pytestmark = [pytest.mark.integration, pytest.mark.browser]

IMAGES: Final = Path(__file__).resolve().parents[3] / "docs" / "images"
_TIMEOUT_MS: Final = 15_000


async def _sign_in(
    page: Page,
    bed: CitizenBed,
    citizen: str,
    *,
    link: str = "Sign in",
    heading: str = "Who read my data",
    sign_out: str = "Sign out",
) -> None:
    await page.goto(bed.url + "/citizen")
    await page.get_by_role("link", name=link).click()
    # The development issuer's page: pick the test citizen.
    await page.get_by_role("button", name=f"({citizen})").click()
    # Back in the language of the page the sign-in started from.
    await page.get_by_role("heading", name=heading, level=1).wait_for()
    await page.get_by_role("button", name=sign_out).wait_for()
    # The sign-in's own cookie is gone; the session cookie is host-only, Secure, Strict.
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert "__Host-ruta-sign-in" not in cookies
    session = cookies["__Host-ruta-session"]
    assert session["secure"]
    assert session["httpOnly"]
    assert session["sameSite"] == "Strict"


async def test_a_citizen_sees_exactly_the_accesses_to_their_own_id(
    tmp_path: Path, browser: Browser
) -> None:
    async with citizen_bed(tmp_path) as bed:
        context = await browser.new_context(locale="en", viewport={"width": 1200, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(_TIMEOUT_MS)
        await page.goto(bed.url + "/citizen")
        assert serious_violations(await axe_violations(page)) == []
        await _sign_in(page, bed, ANA)

        table = page.get_by_role("table", name="3 accesses to your data")
        rows = table.locator("tbody tr")
        assert await rows.count() == bed.exchanges[ANA]
        assert await table.get_by_role("rowheader", name="Social Benefits Agency").count() == 3
        assert await table.get_by_text("GetPerson from Population Registry Agency").count() == 3
        assert await table.get_by_text("benefit-eligibility").count() == 3
        assert await table.get_by_text("Legal basis: Social Benefits Act, s.12").count() == 3
        assert await table.get_by_text("Answered").count() == 2
        assert await table.get_by_text("Refused: no data was given").count() == 1
        await page.get_by_text(f"(your id: {ANA})").wait_for()
        assert VALENTINA not in await page.content()
        # The registries agency's server is listed but does not answer: said plainly.
        notice = page.get_by_role("status")
        await notice.get_by_text("Public Registries Agency", exact=False).wait_for()
        assert serious_violations(await axe_violations(page)) == []
        if os.environ.get("RUTA_UPDATE_SCREENSHOTS"):
            await page.screenshot(path=IMAGES / "console-citizen.png", full_page=True)

        # A subject in the URL changes nothing: the record is the signed-in citizen's.
        await page.goto(bed.url + f"/citizen?subject={VALENTINA}&lang=es")
        await page.get_by_role("heading", name="Quién consultó mis datos", level=1).wait_for()
        assert await page.locator("tbody tr").count() == bed.exchanges[ANA]
        assert serious_violations(await axe_violations(page)) == []

        await page.get_by_role("button", name="Cerrar sesión").click()
        await page.get_by_role("heading", name="Ha cerrado sesión").wait_for()
        await page.goto(bed.url + "/citizen?lang=en")
        await page.get_by_role("link", name="Sign in").wait_for()
        assert await page.locator("table").count() == 0
        await context.close()

        # Another citizen, in a fresh browser set to Portuguese: only her one exchange.
        context = await browser.new_context(locale="pt-BR")
        page = await context.new_page()
        page.set_default_timeout(_TIMEOUT_MS)
        await _sign_in(
            page,
            bed,
            VALENTINA,
            link="Entrar",
            heading="Quem consultou os meus dados",
            sign_out="Sair",
        )
        assert await page.get_attribute("html", "lang") == "pt"
        assert await page.locator("tbody tr").count() == bed.exchanges[VALENTINA]
        assert ANA not in await page.content()
        assert serious_violations(await axe_violations(page)) == []
        await context.close()


async def test_a_forged_callback_signs_nobody_in(tmp_path: Path, browser: Browser) -> None:
    async with citizen_bed(tmp_path) as bed:
        context = await browser.new_context(locale="en")
        page = await context.new_page()
        page.set_default_timeout(_TIMEOUT_MS)
        response = await page.goto(bed.url + "/citizen/callback?code=stolen&state=guessed")
        assert response is not None
        assert response.status == 401
        await page.get_by_role("heading", name="The sign-in did not work").wait_for()
        assert serious_violations(await axe_violations(page)) == []
        await page.goto(bed.url + "/citizen")
        await page.get_by_role("link", name="Sign in").wait_for()
        await context.close()
