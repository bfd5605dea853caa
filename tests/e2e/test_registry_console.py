"""The registry console in Debian's chromium, on a whole sandbox (a registry and four security
servers as real processes): the sandbox's administrator loads the ``.p12`` the sandbox wrote,
requests and approves a contract for the tax agency on the population register, and the tax
agency's call that the provider refused before now succeeds. Every page passes axe-core with no
serious violation; a browser without a certificate gets the page that says what to do.

``RUTA_UPDATE_SCREENSHOTS=1`` writes the README's picture (docs/images/console-registry.png)."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext

from ruta.ids import SubsystemId
from sandbox.client import BusClient, CallResult
from sandbox.layout import PURPOSE, SERVICES, examples_dir
from sandbox.processes import ManagedProcess, ruta_command
from sandbox.protos import MethodCodec, compile_descriptor_set, method_codec
from tests.browser import axe_violations, chromium, serious_violations

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.browser]

IMAGES: Final = Path(__file__).resolve().parents[2] / "docs" / "images"
UP_TIMEOUT_S: Final = 240.0
#: How long the servers may take to fetch the configuration that carries the new contract.
CONTRACT_VISIBLE_S: Final = 60.0
POPULATION: Final = SERVICES[0]
INCOME: Final = SubsystemId.parse("DEV/GOV/TAX/income")
PERSON: Final = "4410000017"
PAGES: Final = (
    "/members",
    "/subsystems",
    "/servers",
    "/services",
    "/contracts",
    "/certificates",
    "/audit",
    "/configuration",
)
_TIMEOUT_MS: Final = 15_000


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One ``ruta sandbox up``, its sandbox.json; ``down`` afterwards."""
    directory = tmp_path_factory.mktemp("console") / "sandbox"
    process = ManagedProcess(
        name="sandbox console",
        argv=ruta_command("sandbox", "up", "--dir", str(directory), "--quiet"),
        log_path=directory.parent / "sandbox.log",
        ready_path=directory / "sandbox.json",
        env={"PYTHONSAFEPATH": "1"},
    )
    process.start()
    try:
        yield process.wait_ready(timeout=UP_TIMEOUT_S)
    finally:
        subprocess.run(
            ruta_command("sandbox", "down", "--dir", str(directory)),
            capture_output=True,
            timeout=180,
            check=False,
        )
        process.stop()


@pytest.fixture
async def console_browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def _codec() -> MethodCodec:
    proto = examples_dir() / POPULATION.example / POPULATION.proto
    return method_codec(
        compile_descriptor_set(proto), POPULATION.service.service_name, POPULATION.method
    )


async def _tax_gets_a_person(description: dict[str, Any]) -> CallResult:
    async with BusClient.for_sandbox(description, INCOME) as client:
        return await client.call(
            POPULATION.service, _codec(), {"national_id": PERSON}, purpose=PURPOSE, subject=PERSON
        )


def _server_certificate_chains_to_the_anchor(url: str, anchor: str) -> None:
    """The console's own certificate verifies against the instance's anchor for its host."""
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=anchor)
    import socket  # noqa: PLC0415 - only here

    with (
        socket.create_connection((parts.hostname, parts.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
    ):
        assert tls.getpeercert()


def _passphrase(path: str) -> str:
    return Path(path).read_text(encoding="utf-8").splitlines()[0]


async def _administrator(browser: Browser, sandbox: dict[str, Any]) -> BrowserContext:
    console = sandbox["registry"]["console"]
    administrator = sandbox["administrator"]
    passphrase = await asyncio.to_thread(_passphrase, administrator["p12_passphrase_file"])
    return await browser.new_context(
        client_certificates=[
            {"origin": console, "pfxPath": administrator["p12"], "passphrase": passphrase}
        ],
        ignore_https_errors=False,
        viewport={"width": 1280, "height": 900},
        locale="en-GB",
    )


async def test_an_administrator_approves_a_contract_and_the_refused_call_passes(
    sandbox: dict[str, Any], console_browser: Browser
) -> None:
    console = sandbox["registry"]["console"]
    assert console.startswith("https://127.0.0.1:")
    _server_certificate_chains_to_the_anchor(console, sandbox["administrator"]["ca"])

    refused = await _tax_gets_a_person(sandbox)
    assert refused.fault in {"server.consumer.access_denied", "server.provider.access_denied"}

    context = await _administrator(console_browser, sandbox)
    page = await context.new_page()
    page.set_default_timeout(_TIMEOUT_MS)
    await page.goto(console + "/contracts")
    await page.get_by_role("heading", name="Contracts", level=1).wait_for()
    form = page.locator("form.action")
    await form.get_by_label("Consumer subsystem").fill(str(INCOME))
    await form.get_by_label("Service", exact=True).fill(str(POPULATION.service))
    await form.get_by_label("Purpose", exact=True).fill(PURPOSE)
    await form.get_by_label("Legal basis").fill("Income Tax Act, s.4 (residence checks)")
    await form.get_by_role("button", name="Request contract").click()
    await page.get_by_role("status").get_by_text("The contract was requested.").wait_for()

    service = str(POPULATION.service)
    await page.get_by_role("button", name=f"Approve the contract of {INCOME} on {service}").click()
    await page.get_by_role("status").get_by_text("The contract moved one step forward.").wait_for()
    await page.get_by_role("button", name=f"Activate the contract of {INCOME} on {service}").click()
    await page.get_by_role("status").wait_for()
    row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name=str(INCOME)))
    await row.get_by_text("active", exact=True).wait_for()
    if os.environ.get("RUTA_UPDATE_SCREENSHOTS"):
        await page.screenshot(path=IMAGES / "console-registry.png")

    # The servers fetch the new configuration every few seconds; then the call passes.
    deadline = time.monotonic() + CONTRACT_VISIBLE_S
    result = await _tax_gets_a_person(sandbox)
    while result.fault is not None and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        result = await _tax_gets_a_person(sandbox)
    assert result.fault is None, result

    # The approval is in the administrators' audit trail, made by the browser's certificate.
    await page.goto(console + "/audit")
    last = page.get_by_role("table").get_by_role("row").last
    await last.get_by_text("contract.activate").wait_for()
    await last.get_by_role("cell", name="local operator", exact=False).first.wait_for()
    assert str(INCOME) in (await last.inner_text())
    await context.close()


async def test_every_page_passes_axe_in_every_language(
    sandbox: dict[str, Any], console_browser: Browser
) -> None:
    console = sandbox["registry"]["console"]
    context = await _administrator(console_browser, sandbox)
    page = await context.new_page()
    page.set_default_timeout(_TIMEOUT_MS)
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text))
    for path in PAGES:
        for language in ("en", "es", "pt"):
            response = await page.goto(f"{console}{path}?lang={language}")
            assert response is not None
            assert response.status == 200, (path, language)
            assert await page.get_attribute("html", "lang") == language
            assert serious_violations(await axe_violations(page)) == [], (path, language)
    assert not [text for text in blocked if "Content Security Policy" in text]
    await context.close()


async def test_a_browser_without_a_certificate_is_told_what_to_do(
    sandbox: dict[str, Any], console_browser: Browser
) -> None:
    # Chromium does not know the instance's CA; the server's certificate is checked above.
    context = await console_browser.new_context(ignore_https_errors=True, locale="es-ES")
    page = await context.new_page()
    response = await page.goto(sandbox["registry"]["console"] + "/contracts")
    assert response is not None
    assert response.status == 401
    await page.get_by_role("heading", name="Se necesita un certificado de cliente").wait_for()
    assert serious_violations(await axe_violations(page)) == []
    await context.close()
