"""The open-data report without servers: suppression of small counts and of everything derived
from them, the CSV and JSON shapes, the DCAT-AP record, the gathering (concurrent, deadline,
cache, servers not reached) with an in-memory count source, and the page in three languages."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.console.counts import OpenData, ServerCounts
from gateway.console.opendata import (
    CSV_COLUMNS,
    SUPPRESSED,
    build_report,
    catalog_jsonld,
    report_csv,
    report_json,
)
from gateway.console.pages import CONTENT_SECURITY_POLICY, add_console_routes
from gateway.settings import OpenDataSettings
from ruta.globalconf import GlobalConf, Member, Savings, SecurityServer, Service
from ruta.ids import MemberId, ServerId, ServiceId
from ruta.months import Month, MonthError

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
POP = MemberId("DEV", "GOV", "POP")
TAX = MemberId("DEV", "GOV", "TAX")
PERSONS = ServiceId(POP.subsystem("registry"), "population.v1.PopulationRegister")
INCOME = ServiceId(TAX.subsystem("income"), "tax.v1.TaxAgency")
DEC, NOV = Month(2026, 12), Month(2026, 11)


def _conf(*, audit: bool = True) -> GlobalConf:
    return GlobalConf(
        instance="DEV",
        serial=1,
        generated_at=NOW,
        expires_at=NOW + timedelta(days=1),
        trust_anchors=(),
        ocsp_responder_certs=(),
        members=(Member(POP, "Population <b>Register</b>"), Member(TAX, "Tax Agency")),
        subsystems=(PERSONS.subsystem, INCOME.subsystem),
        servers=tuple(
            SecurityServer(
                id=ServerId(member, "ss1"),
                address="127.0.0.1:1",
                auth_cert_sha256=str(port) * 64,
                audit_address=f"127.0.0.1:{port}" if audit else "",
            )
            for member, port in ((POP, 2), (TAX, 3))
        ),
        services=(
            Service(
                id=PERSONS,
                methods=frozenset({"GetPerson"}),
                savings=Savings(citizen_minutes=20.0, paper_forms=1, cost=3.5),
            ),
            Service(id=INCOME, methods=frozenset({"GetIncome"}), savings=Savings(45.0, 2, 10.0)),
        ),
        contracts=(),
    )


def _settings(tmp_path: Path, **values: Any) -> OpenDataSettings:
    values.setdefault("current_month", True)
    return OpenDataSettings(cert=tmp_path / "c.pem", key=tmp_path / "k.pem", **values)


def test_months_parse_and_count() -> None:
    assert str(Month.parse("2026-01").plus(-1)) == "2025-12"
    assert [str(m) for m in Month(2026, 11).through(Month(2027, 1))] == [
        "2026-11",
        "2026-12",
        "2027-01",
    ]
    for bad in ("2026-13", "2026-1", "26-01", "2026-01-01", "", "\uff12\uff10\uff12\uff16-01"):
        with pytest.raises(MonthError):
            Month.parse(bad)


@pytest.mark.parametrize(
    ("count", "shown"), [(0, None), (1, None), (4, None), (5, 5), (6, 6), (1234, 1234)]
)
def test_a_count_below_five_and_all_it_would_give_back_are_withheld(
    count: int, shown: int | None
) -> None:
    report = build_report(_conf(), {(DEC, str(PERSONS)): count}, months=[NOV, DEC], gathered_at=NOW)
    [persons] = [s for s in report.series if s.service == str(PERSONS)]
    cell = persons.cells[1]
    assert cell.answered == shown
    if shown is None:
        assert (cell.citizen_hours, cell.paper_forms, cell.cost) == (None, None, None)
        # Nor can it be had from the month's total minus the services shown.
        assert report.totals[1].answered == 0
        assert report.totals[1].citizen_hours == 0.0
        assert report.totals[1].suppressed_services == 2
    else:
        assert cell.citizen_hours == pytest.approx(shown * 20.0 / 60)
        assert cell.paper_forms == shown
        assert cell.cost == pytest.approx(shown * 3.5)
        assert report.totals[1].answered == shown


def _report() -> Any:
    return build_report(
        _conf(),
        {(DEC, str(PERSONS)): 7, (DEC, str(INCOME)): 3, (NOV, str(INCOME)): 12},
        months=[NOV, DEC],
        gathered_at=NOW,
        unreached=["DEV/GOV/REG/ss1"],
        currency="EUR",
    )


def test_the_csv_has_one_row_per_month_and_service_and_hides_small_counts() -> None:
    rows = list(csv.reader(io.StringIO(report_csv(_report()))))
    assert tuple(rows[0]) == CSV_COLUMNS
    by_key = {(r[0], r[1]): r for r in rows[1:]}
    assert len(by_key) == 4
    assert by_key[("2026-12", str(PERSONS))] == [
        "2026-12",
        str(PERSONS),
        "DEV/GOV/POP",
        "7",
        "2.33",
        "7",
        "24.50",
        "EUR",
    ]
    assert by_key[("2026-12", str(INCOME))][3:7] == [SUPPRESSED, "", "", ""]
    assert by_key[("2026-11", str(INCOME))][3:7] == ["12", "9.00", "24", "120.00"]
    assert by_key[("2026-11", str(PERSONS))][3] == SUPPRESSED  # zero is below five too


def test_the_json_has_typed_values_and_marks_suppression() -> None:
    document = json.loads(json.dumps(report_json(_report())))
    assert document["months"] == ["2026-11", "2026-12"]
    assert document["suppression_threshold"] == 5
    assert document["servers_not_reached"] == ["DEV/GOV/REG/ss1"]
    rows = {(r["month"], r["service"]): r for r in document["rows"]}
    assert rows[("2026-12", str(PERSONS))] == {
        "month": "2026-12",
        "service": str(PERSONS),
        "provider": "DEV/GOV/POP",
        "answered": 7,
        "suppressed": False,
        "citizen_hours_saved": 2.33,
        "paper_forms_avoided": 7,
        "agency_cost_saved": 24.5,
    }
    small = rows[("2026-12", str(INCOME))]
    assert small["answered"] is None
    assert small["suppressed"] is True
    assert small["citizen_hours_saved"] is None
    assert small["paper_forms_avoided"] is None
    assert small["agency_cost_saved"] is None


def test_the_catalogue_record_is_dcat_ap() -> None:
    document = catalog_jsonld(
        _report(),
        base_url="https://gw.example",
        publisher="Population Register",
        license_url="http://creativecommons.org/licenses/by/4.0/",
        titles={"en": "Exchanges", "es": "Intercambios"},
        descriptions={"en": "What they saved", "es": "Lo que ahorraron"},
    )
    assert document["@type"] == "dcat:Catalog"
    assert document["@context"]["dcat"] == "http://www.w3.org/ns/dcat#"
    assert document["@context"]["dct"] == "http://purl.org/dc/terms/"
    assert document["dct:publisher"]["foaf:name"] == "Population Register"
    [dataset] = document["dcat:dataset"]
    assert dataset["@type"] == "dcat:Dataset"
    assert {"@value": "Intercambios", "@language": "es"} in dataset["dct:title"]
    assert dataset["dct:publisher"]["@type"] == "foaf:Agent"
    assert dataset["dct:temporal"]["@type"] == "dct:PeriodOfTime"
    assert dataset["dct:temporal"]["dcat:startDate"]["@value"] == "2026-11-01"
    assert dataset["dct:temporal"]["dcat:endDate"]["@value"] == "2026-12-31"
    assert dataset["dcat:landingPage"] == {"@id": "https://gw.example/open-data"}
    distributions = {d["dcat:mediaType"]["@id"]: d for d in dataset["dcat:distribution"]}
    assert set(distributions) == {
        "http://www.iana.org/assignments/media-types/text/csv",
        "http://www.iana.org/assignments/media-types/application/json",
    }
    for suffix, distribution in zip(("csv", "json"), distributions.values(), strict=True):
        assert distribution["@type"] == "dcat:Distribution"
        assert distribution["dcat:downloadURL"] == {
            "@id": f"https://gw.example/open-data/exchanges.{suffix}"
        }
        assert distribution["dcat:accessURL"] == {"@id": "https://gw.example/open-data"}
        assert distribution["dct:license"]["@id"] == "http://creativecommons.org/licenses/by/4.0/"


class _Twin:
    """An in-memory count source: answers per server, a server that never answers, a count of
    calls."""

    def __init__(self, answers: dict[str, ServerCounts], *, silent: str = "") -> None:
        self.answers = answers
        self.silent = silent
        self.calls = 0

    async def counts(self, server: SecurityServer, first: Month, last: Month) -> ServerCounts:
        self.calls += 1
        if str(server.id) == self.silent:
            await asyncio.sleep(60)
        return self.answers.get(str(server.id), {})


async def test_gathering_sums_the_servers_names_the_silent_one_and_caches(
    tmp_path: Path,
) -> None:
    clock = [NOW]
    twin = _Twin({"DEV/GOV/POP/ss1": {(DEC, str(PERSONS)): 9}}, silent="DEV/GOV/TAX/ss1")
    open_data = OpenData(
        _settings(tmp_path, months=2, deadline_seconds=0.2, refresh_seconds=60),
        conf=_conf,
        source=twin,
        clock=lambda: clock[0],
    )
    report = await open_data.report()
    assert report.months == (NOV, DEC)
    assert report.unreached == ("DEV/GOV/TAX/ss1",)
    [persons] = [s for s in report.series if s.service == str(PERSONS)]
    assert persons.cells[1].answered == 9
    assert twin.calls == 2
    clock[0] = NOW + timedelta(seconds=30)
    assert await open_data.report() is report
    assert twin.calls == 2
    clock[0] = NOW + timedelta(seconds=61)
    assert await open_data.report() is not report
    assert twin.calls == 4


async def test_a_server_not_reached_leaves_its_members_services_out_not_short(
    tmp_path: Path,
) -> None:
    """Two gatherings, one with every server and one without TAX's: a short count for TAX's
    service beside the full one would give away the missing server's count (here 3, a small
    count the report never publishes). The short gathering leaves the service out whole, and
    its totals differ from the full one's only by cells the full one publishes."""
    answers: dict[str, ServerCounts] = {
        "DEV/GOV/POP/ss1": {(DEC, str(PERSONS)): 9},
        "DEV/GOV/TAX/ss1": {(DEC, str(INCOME)): 3, (NOV, str(INCOME)): 12},
    }
    full = await OpenData(
        _settings(tmp_path, months=2), conf=_conf, source=_Twin(answers), clock=lambda: NOW
    ).report()
    short = await OpenData(
        _settings(tmp_path, months=2, deadline_seconds=0.2),
        conf=_conf,
        source=_Twin(answers, silent="DEV/GOV/TAX/ss1"),
        clock=lambda: NOW,
    ).report()
    assert short.unreached == ("DEV/GOV/TAX/ss1",)
    assert [s.service for s in short.series] == [str(PERSONS)]
    assert str(INCOME) not in report_csv(short)
    assert [r["service"] for r in report_json(short)["rows"]] == [str(PERSONS)] * 2
    for full_total, short_total in zip(full.totals, short.totals, strict=True):
        published_income = [
            c.answered
            for s in full.series
            if s.service == str(INCOME)
            for c in s.cells
            if c.month == full_total.month and c.answered is not None
        ]
        assert full_total.answered - short_total.answered == sum(published_income)


def test_an_unreadable_server_name_leaves_every_service_out() -> None:
    report = build_report(
        _conf(), {(DEC, str(PERSONS)): 7}, months=[DEC], gathered_at=NOW, unreached=["??"]
    )
    assert report.series == ()
    assert report.totals[0].answered == 0


async def test_by_default_only_closed_months_are_published(tmp_path: Path) -> None:
    """The month in progress is left out unless asked for: its figures move while people are
    served, and two snapshots would show a small count's changes."""
    twin = _Twin({"DEV/GOV/POP/ss1": {(DEC, str(PERSONS)): 9}})
    open_data = OpenData(
        _settings(tmp_path, months=2, current_month=False),
        conf=_conf,
        source=twin,
        clock=lambda: NOW,
    )
    report = await open_data.report()
    assert report.months == (NOV.plus(-1), NOV)
    assert OpenDataSettings(cert=tmp_path / "c", key=tmp_path / "k").current_month is False


async def test_servers_without_an_audit_address_are_not_asked(tmp_path: Path) -> None:
    twin = _Twin({})
    open_data = OpenData(
        _settings(tmp_path), conf=lambda: _conf(audit=False), source=twin, clock=lambda: NOW
    )
    report = await open_data.report()
    assert twin.calls == 0
    assert report.unreached == ()


async def _serve(open_data: OpenData) -> tuple[web.AppRunner, str]:
    app = web.Application()
    add_console_routes(app, conf=_conf, open_data=open_data, member=POP)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.mark.parametrize(
    ("language", "heading", "month"),
    [
        ("en", "Open data: what once-only exchanges saved", "December 2026"),
        ("es", "Datos abiertos: lo que ahorraron los intercambios", "diciembre 2026"),
        ("pt", "Dados abertos: o que pouparam as trocas", "dezembro 2026"),
    ],
)
async def test_the_page_and_documents_are_served(
    tmp_path: Path, language: str, heading: str, month: str
) -> None:
    twin = _Twin(
        {"DEV/GOV/POP/ss1": {(DEC, str(PERSONS)): 1234}, "DEV/GOV/TAX/ss1": {(DEC, str(INCOME)): 2}}
    )
    open_data = OpenData(
        _settings(tmp_path, months=2, public_url="https://gw.example"),
        conf=_conf,
        source=twin,
        clock=lambda: NOW,
    )
    runner, base = await _serve(open_data)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(f"{base}/open-data?lang={language}") as response:
                page = await response.text()
                assert response.status == 200
                assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            async with session.get(f"{base}/open-data/exchanges.csv") as response:
                assert response.content_type == "text/csv"
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert "1234" in await response.text()
            async with session.get(f"{base}/open-data/exchanges.json") as response:
                assert response.content_type == "application/json"
                assert len((await response.json())["rows"]) == 4
            async with session.get(f"{base}/open-data/catalog.jsonld") as response:
                assert response.content_type == "application/ld+json"
                record = json.loads(await response.text())
    finally:
        await runner.cleanup()
    assert heading in page
    assert month in page
    assert "1,234" in page or "1.234" in page or "1 234" in page or "1234" in page
    assert SUPPRESSED.replace("<", "&lt;") in page
    # Markup in a member's name is shown as text; no style attribute or element, no script.
    assert "Population &lt;b&gt;Register&lt;/b&gt;" in page
    assert "<script" not in page
    assert "style=" not in page
    assert "<style" not in page
    assert "<svg" in page
    assert record["dct:publisher"]["foaf:name"] == "Population <b>Register</b>"
    assert record["dcat:dataset"][0]["dcat:landingPage"] == {"@id": "https://gw.example/open-data"}


@pytest.mark.parametrize(
    ("public_url", "caching"),
    [("", "no-store"), ("https://gw.example", "public, max-age=60")],
)
async def test_a_catalogue_built_from_the_host_header_is_never_cached(
    tmp_path: Path, public_url: str, caching: str
) -> None:
    open_data = OpenData(
        _settings(tmp_path, months=2, public_url=public_url),
        conf=_conf,
        source=_Twin({}),
        clock=lambda: NOW,
    )
    runner, base = await _serve(open_data)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            forged = {"Host": "evil.example"}
            async with session.get(f"{base}/open-data/catalog.jsonld", headers=forged) as response:
                catalogue = response.headers["Cache-Control"]
                record = json.loads(await response.text())
            async with session.get(f"{base}/open-data/exchanges.csv", headers=forged) as response:
                csv_caching = response.headers["Cache-Control"]
    finally:
        await runner.cleanup()
    assert catalogue == caching
    landing = record["dcat:dataset"][0]["dcat:landingPage"]["@id"]
    assert landing == f"{public_url or 'http://evil.example'}/open-data"
    # The CSV does not depend on the Host: a shared cache may keep it either way.
    assert csv_caching == "public, max-age=60"


def test_the_settings_section_is_bounded_and_resolved(tmp_path: Path) -> None:
    from pydantic import ValidationError  # noqa: PLC0415

    from gateway.settings import GatewaySettings  # noqa: PLC0415

    base: dict[str, Any] = {
        "member": "DEV/GOV/SOC",
        "consumer": {"address": "127.0.0.1:1", "ca": "ca.pem", "cert": "g.pem", "key": "g.key"},
        "globalconf": {"anchor": "anchor.toml"},
    }
    settings = GatewaySettings(
        **base, open_data={"cert": "s.pem", "key": "s.key", "ca": "ca.pem"}
    ).resolved(tmp_path)
    assert settings.open_data is not None
    assert settings.open_data.cert == tmp_path / "s.pem"
    assert settings.open_data.ca == tmp_path / "ca.pem"
    assert GatewaySettings(**base).open_data is None
    for bad in (
        {"months": 0},
        {"months": 37},
        {"currency": "eur"},
        {"refresh_seconds": 0},
        {"public_url": "javascript:alert(1)"},
        {"public_url": "https://gw.example/path"},
    ):
        with pytest.raises(ValidationError):
            OpenDataSettings(cert=tmp_path / "c", key=tmp_path / "k", **bad)
