"""Open data in Debian's chromium (docs/adr/0028-open-data.md): real POP and SOC servers
exchange (six answered gRPC calls, one the backend refuses, two REST calls through the
gateways); POP's gateway gathers every server's monthly counts with its ``statistics``
certificate; the page and the CSV show counts equal to the exchanges in the provider's log (read
back through the audit API), the REST service's two as ``<5``, TAX (listed, not running) as not
reached; the page runs no script and axe-core finds no serious violation in any language.

``RUTA_UPDATE_SCREENSHOTS=1`` writes the README's picture (docs/images/open-data.png)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
import grpc
import pytest
from playwright.async_api import Browser

from ruta.months import Month
from ruta.pki.tls import channel_credentials
from ruta.v1 import audit_pb2, audit_pb2_grpc, globalconf_pb2
from sandbox.examples.population import encode_get_person
from tests.browser import axe_violations, serious_violations
from tests.conftest import free_port
from tests.integration.gateway.consolebed import MEMBER_NAMES
from tests.integration.gateway.gwbed import REST_SERVICE, GatewayBed, gateway_url
from tests.integration.security_server.bed import (
    BENEFITS,
    PERSON_REQUEST,
    POP,
    PURPOSE,
    SERVICE,
    SOC,
    TAX,
    call_metadata,
    get_person,
    wait_cosigned,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

IMAGES: Final = Path(__file__).resolve().parents[3] / "docs" / "images"
_TIMEOUT_MS: Final = 15_000
ANSWERED: Final = 6
REST_CALLS: Final = 2


class OpenDataBed(GatewayBed):
    """Every server lists an audit address (TAX's is never served: it is not reached); the
    services declare their savings; POP's gateway publishes open data."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.audit_ports = {server: free_port() for server in (POP, SOC, TAX)}

    def configuration(self) -> globalconf_pb2.GlobalConfiguration:
        conf = super().configuration()
        for member in conf.members:
            member.name = MEMBER_NAMES.get(member.id.member_code, member.name)
        for server in conf.servers:
            port = next(p for s, p in self.audit_ports.items() if s.to_proto() == server.id)
            server.audit_address = f"127.0.0.1:{port}"
        for service in conf.services:
            if service.id == SERVICE.to_proto():
                service.savings.CopyFrom(
                    globalconf_pb2.Savings(citizen_minutes=20.0, paper_forms=1, cost=3.5)
                )
            else:
                service.savings.CopyFrom(
                    globalconf_pb2.Savings(citizen_minutes=45.0, paper_forms=2, cost=12.0)
                )
        return conf


@pytest.fixture
async def instance(tmp_path: Path) -> AsyncIterator[OpenDataBed]:
    bed = OpenDataBed(tmp_path)
    try:
        await bed.rest.start()
        await bed.build()
        for server in (POP, SOC):
            data = bed.settings_dict(server)
            data["audit"] = {"listen": f"127.0.0.1:{bed.audit_ports[server]}"}
            await bed.start_server(server, data=data)
        statistics = bed.pki.roles("statistics", name="gateway statistics")
        await bed.start_gateway(
            POP,
            open_data={
                "cert": str(statistics.cert_path),
                "key": str(statistics.key_path),
                "ca": str(bed.pki.trust_path),
                "deadline_seconds": 5,
                "currency": "EUR",
                "months": 3,
                "current_month": True,
            },
            # Public pages beside a port that trusts plain loopback callers: a port of their own.
            public={"listen": "127.0.0.1:0"},
        )
        await bed.start_gateway(SOC)
        yield bed
    finally:
        await bed.close()


async def _exchange(bed: OpenDataBed) -> None:
    async with bed.consumer_channel(SOC) as channel:
        for _ in range(ANSWERED):
            await get_person(channel)(PERSON_REQUEST, metadata=call_metadata(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):  # refused by the backend: not answered
            await get_person(channel)(
                encode_get_person("99999999999"), metadata=call_metadata(), timeout=10
            )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        for _ in range(REST_CALLS):
            async with session.get(
                f"{gateway_url(bed)}/r1/{REST_SERVICE}/persons/38001010001",
                headers={"X-Road-Client": str(BENEFITS), "Ruta-Purpose": PURPOSE},
            ) as response:
                assert response.status == 200
    for server in (POP, SOC):
        app = bed.agencies[server].app
        assert app is not None
        await wait_cosigned(app, 2 * (ANSWERED + 1 + REST_CALLS))


async def _answered_in_log(bed: OpenDataBed) -> dict[str, int]:
    """Responses POP's log holds as sent with status OK, per service (the audit API, read by
    a supervisory auditor, headers decoded here)."""
    from ruta.v1 import log_pb2, transport_pb2  # noqa: PLC0415

    auditor = bed.pki.roles("auditor-supervisor")
    creds = channel_credentials(auditor.key_path, auditor.cert_path, bed.pki.trust_path)
    counted: dict[str, int] = {}
    async with grpc.aio.secure_channel(f"127.0.0.1:{bed.audit_ports[POP]}", creds) as channel:
        page = await audit_pb2_grpc.AuditStub(channel).Query(
            audit_pb2.QueryRequest(page_size=100), timeout=10
        )
    for record in page.records:
        leaf = log_pb2.LogRecord.FromString(record.record)
        header = transport_pb2.MessageHeader.FromString(leaf.header)
        if (
            record.kind == "response"
            and leaf.direction == log_pb2.LOG_DIRECTION_SENT
            and header.status_code == 0
        ):
            counted[record.service] = counted.get(record.service, 0) + 1
    return counted


def _csv(text: str) -> dict[tuple[str, str], list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    return {(r[0], r[1]): r for r in rows[1:]}


async def test_the_page_and_csv_show_what_the_logs_hold(
    instance: OpenDataBed, browser: Browser
) -> None:
    await _exchange(instance)
    in_log = await _answered_in_log(instance)
    assert in_log == {str(SERVICE): ANSWERED, str(REST_SERVICE): REST_CALLS}
    month = str(Month.of(datetime.now(UTC)))
    base = instance.gateways[str(POP)].addresses["public"]

    context = await browser.new_context(locale="en-GB", viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(_TIMEOUT_MS)
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text))
    await page.goto(base + "/open-data?lang=en")
    await page.get_by_role("heading", name="Open data: what once-only exchanges saved").wait_for()
    # TAX is listed with an audit address but runs no server: named, not guessed.
    await page.get_by_role("status").get_by_text("DEV/GOV/TAX/ss1").wait_for()

    table = page.get_by_role("table", name=f"{SERVICE}, by month")
    first_row = table.get_by_role("row").nth(1)
    cells = await first_row.get_by_role("cell").all_inner_texts()
    assert cells[0] == str(in_log[str(SERVICE)])
    assert cells[1] == "2"  # 6 x 20 minutes = 2 hours
    assert cells[2] == "6"
    assert cells[3] == "€21.00"

    rest = page.get_by_role("table", name=f"{REST_SERVICE}, by month")
    rest_cells = await rest.get_by_role("row").nth(1).get_by_role("cell").all_inner_texts()
    assert rest_cells == ["<5", "—", "—", "—"]
    assert serious_violations(await axe_violations(page)) == []
    assert await page.locator("script").count() == 0
    if os.environ.get("RUTA_UPDATE_SCREENSHOTS"):
        await page.screenshot(path=IMAGES / "open-data.png", full_page=True)

    # Spanish and Portuguese from the page's own switcher; numbers in their form.
    await (
        page.get_by_role("navigation", name="Language").get_by_role("link", name="Español").click()
    )
    await page.get_by_role(
        "heading", name="Datos abiertos: lo que ahorraron los intercambios"
    ).wait_for()
    assert serious_violations(await axe_violations(page)) == []
    await page.get_by_role("link", name="Português").click()
    await page.get_by_role("heading", name="Dados abertos: o que pouparam as trocas").wait_for()
    assert serious_violations(await axe_violations(page)) == []

    # The CSV, as the page's link serves it.
    response = await page.request.get(base + "/open-data/exchanges.csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = _csv(await response.text())
    assert rows[(month, str(SERVICE))][3] == str(in_log[str(SERVICE)])
    assert rows[(month, str(SERVICE))][4:7] == ["2.00", "6", "21.00"]
    assert rows[(month, str(REST_SERVICE))][3:7] == ["<5", "", "", ""]
    document: dict[str, Any] = await (
        await page.request.get(base + "/open-data/exchanges.json")
    ).json()
    assert document["servers_not_reached"] == ["DEV/GOV/TAX/ss1"]
    await context.close()
    assert not [text for text in blocked if "Content Security Policy" in text]
