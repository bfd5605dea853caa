"""The auditor console in Debian's chromium, served by a running security server: an auditor
with a browser certificate finds an exchange by subject, sees its proof verified, downloads a
bundle that ``ruta audit verify`` accepts, and has it verified by the console too; a browser
without a certificate gets a page saying what to do. axe-core finds no serious violation on any
page.

``RUTA_UPDATE_SCREENSHOTS=1`` writes the README's picture (docs/images/console-audit.png)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Page

from sandbox.examples.population import encode_get_person
from tests.browser import axe_violations, serious_violations
from tests.integration.security_server.bed import (
    POP,
    SOC,
    Bed,
    audit_cli,
    bed,
    call_metadata,
    get_person,
    wait_cosigned,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

IMAGES: Final = Path(__file__).resolve().parents[3] / "docs" / "images"
_TIMEOUT_MS: Final = 15_000
#: The person the exchanges are about.
SUBJECT: Final = "38001010001"


async def _context(browser: Browser, instance: Bed, url: str, *roles: str) -> BrowserContext:
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    certificates = []
    if roles:
        auditor = instance.pki.roles(*roles)
        certificates = [
            {"origin": origin, "certPath": str(auditor.cert_path), "keyPath": str(auditor.key_path)}
        ]
    # The console presents the server's certificate from the instance's CA, which chromium
    # does not know; the browser's own certificate is what this test is about.
    return await browser.new_context(
        client_certificates=certificates,  # type: ignore[arg-type]
        ignore_https_errors=True,
        accept_downloads=True,
        locale="en-GB",
        viewport={"width": 1280, "height": 900},
    )


async def _no_serious_violation(page: Page) -> None:
    assert serious_violations(await axe_violations(page)) == [], page.url


async def test_an_auditor_finds_an_exchange_proves_it_and_exports_it(
    tmp_path: Path, browser: Browser
) -> None:
    async with bed(tmp_path) as instance:
        apps = {}
        for server in (POP, SOC):
            data = instance.settings_dict(server)
            data["console"] = {"listen": "127.0.0.1:0"}
            apps[server] = await instance.start_server(server, data=data)
        async with instance.consumer_channel(SOC) as channel:
            await get_person(channel)(
                encode_get_person(SUBJECT),
                metadata=call_metadata(extra=(("ruta-subject", SUBJECT),)),
            )
            await get_person(channel)(
                encode_get_person(SUBJECT),
                metadata=call_metadata(extra=(("ruta-subject", "38001010002"),)),
            )
        pop = apps[POP]
        await wait_cosigned(pop, 4)
        url = pop.addresses["console"]

        context = await _context(browser, instance, url, "auditor:DEV/GOV/POP")
        page = await context.new_page()
        page.set_default_timeout(_TIMEOUT_MS)
        blocked: list[str] = []
        page.on("console", lambda message: blocked.append(message.text))
        await page.goto(url)
        await page.get_by_role("heading", name="Message log", level=1).wait_for()
        await _no_serious_violation(page)

        # Find the exchange by its subject: the request and the response, nothing else.
        await page.get_by_label("Subject").fill(SUBJECT)
        await page.get_by_role("button", name="Search").click()
        results = page.get_by_role("table", name="2 records, oldest first")
        await results.wait_for()
        assert await results.get_by_text("38001010002").count() == 0
        await _no_serious_violation(page)

        # Its page: the signed header decoded, the proof checked against the cosigned checkpoint.
        await results.get_by_role("link").first.click()
        await page.get_by_text("Proof verified").wait_for()
        header = page.get_by_role("table", name="Fields of the header as signed by the sender")
        await header.get_by_role("cell", name=SUBJECT).wait_for()
        await page.get_by_text("witness.dev.example").first.wait_for()
        await _no_serious_violation(page)
        if os.environ.get("RUTA_UPDATE_SCREENSHOTS"):
            await page.screenshot(path=IMAGES / "console-audit.png", full_page=True)

        # Export the search, verify the bundle offline, then in the console.
        await page.go_back()
        async with page.expect_download() as download_info:
            await page.get_by_role(
                "button", name="Export an evidence bundle of this search"
            ).click()
        download = await download_info.value
        bundle = tmp_path / "pop.zip"
        await download.save_as(bundle)
        code, output = audit_cli("verify", str(bundle), "--anchor", str(instance.anchor_path))
        assert code == 0, output
        assert "records: 2" in output

        await page.get_by_role("link", name="Verify a bundle").click()
        await _no_serious_violation(page)
        await page.get_by_label("Evidence bundle (zip)").set_input_files(bundle)
        await page.get_by_role("button", name="Verify").click()
        await page.get_by_text("RESULT: VERIFIED", exact=False).wait_for()
        await _no_serious_violation(page)

        await page.get_by_role("link", name="Reconcile two bundles").click()
        await page.get_by_role("heading", name="Reconcile two evidence bundles").wait_for()
        await _no_serious_violation(page)

        # Spanish from the page's switcher.
        await page.get_by_role("link", name="Español").click()
        await page.get_by_role("heading", name="Conciliar dos paquetes de evidencia").wait_for()
        await _no_serious_violation(page)
        await context.close()
        assert not [text for text in blocked if "Content Security Policy" in text]

        # No certificate: a page that says what to do. Another member's auditor: the role named.
        for roles, expected in (
            ((), "A client certificate is needed"),
            (("auditor:DEV/GOV/SOC",), "auditor:DEV/GOV/POP / auditor-supervisor"),
        ):
            context = await _context(browser, instance, url, *roles)
            page = await context.new_page()
            page.set_default_timeout(_TIMEOUT_MS)
            await page.goto(url)
            await page.get_by_text(expected, exact=False).wait_for()
            await _no_serious_violation(page)
            await context.close()
