"""The open-data report (docs/adr/0028-open-data.md): per service and month, the once-only
exchanges answered and what they saved (citizen time, paper forms, agency cost), from the counts
the security servers give the ``statistics`` role and the savings each service declares in the
global configuration; with its CSV and JSON forms and its DCAT-AP catalogue record.

Small counts are suppressed: a count below :data:`SUPPRESSION_THRESHOLD` is published as
``<5`` and nothing derived from it is published (its savings would give it back), nor is any
total that includes it (a total minus the published cells would give it back too).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from ruta.globalconf import GlobalConf
from ruta.ids import IdentifierError, MemberId, ServerId, ServiceId
from ruta.months import Month

__all__ = [
    "CSV_COLUMNS",
    "SUPPRESSED",
    "SUPPRESSION_THRESHOLD",
    "Cell",
    "MonthTotal",
    "Report",
    "ServiceSeries",
    "build_report",
    "catalog_jsonld",
    "dumps",
    "report_csv",
    "report_json",
]

#: Counts below this are published as :data:`SUPPRESSED`, with no derived value.
SUPPRESSION_THRESHOLD: Final = 5
SUPPRESSED: Final = "<5"
CSV_COLUMNS: Final = (
    "month",
    "service",
    "provider",
    "exchanges_answered",
    "citizen_hours_saved",
    "paper_forms_avoided",
    "agency_cost_saved",
    "currency",
)
_MEDIA: Final = "http://www.iana.org/assignments/media-types/"
_FILE_TYPE: Final = "http://publications.europa.eu/resource/authority/file-type/"
_MONTHLY: Final = "http://publications.europa.eu/resource/authority/frequency/MONTHLY"
_THEME_GOVERNMENT: Final = "http://publications.europa.eu/resource/authority/data-theme/GOVE"


@dataclass(frozen=True, slots=True)
class Cell:
    """One service in one month. ``answered`` and every derived value are ``None`` when the
    count is suppressed."""

    month: Month
    answered: int | None
    citizen_hours: float | None
    paper_forms: int | None
    cost: float | None

    @property
    def suppressed(self) -> bool:
        return self.answered is None


@dataclass(frozen=True, slots=True)
class ServiceSeries:
    """One service's cells, one per month of the report, oldest first."""

    service: str
    name: str
    provider: str
    provider_name: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True, slots=True)
class MonthTotal:
    """Sums over one month's published (not suppressed) cells only."""

    month: Month
    answered: int
    citizen_hours: float
    paper_forms: int
    cost: float
    #: How many services' cells were suppressed (left out of the sums).
    suppressed_services: int


@dataclass(frozen=True, slots=True)
class Report:
    """What the page, the CSV and the JSON publish."""

    instance: str
    months: tuple[Month, ...]
    series: tuple[ServiceSeries, ...]
    totals: tuple[MonthTotal, ...]
    gathered_at: datetime
    #: Servers whose counts are missing (not reached in time, or refused).
    unreached: tuple[str, ...]
    currency: str


def _cell(month: Month, count: int, minutes: float, forms: int, cost: float) -> Cell:
    if count < SUPPRESSION_THRESHOLD:
        return Cell(month, None, None, None, None)
    return Cell(month, count, count * minutes / 60.0, count * forms, count * cost)


def build_report(
    conf: GlobalConf,
    counts: Mapping[tuple[Month, str], int],
    *,
    months: Iterable[Month],
    gathered_at: datetime,
    unreached: Iterable[str] = (),
    currency: str = "USD",
) -> Report:
    """The report over ``months`` of ``counts`` (answered exchanges by month and service text),
    with each service's savings as ``conf`` declares them. Every service of ``conf`` has a
    series, and so does a counted service no longer listed (its savings then unknown: zero),
    except the services of a member one of whose servers is ``unreached``: those are left out
    whole, not published short. A short count beside the full one of another gathering would
    give away the difference, the missing server's count, however small (and a total over
    it likewise); left out, the page's notice names the server, and the totals are over the
    services shown, each of which a complete gathering publishes alike."""
    window = tuple(sorted(set(months)))
    unreached = tuple(sorted(set(unreached)))
    incomplete = _members_of(unreached)
    names = {service.id: service for service in conf.services}
    keys: set[ServiceId] = set(names)
    for _month, text in counts:
        try:
            keys.add(ServiceId.parse(text))
        except IdentifierError:
            continue  # a server's answer is read with care; an unreadable id is dropped
    series = []
    for service_id in sorted(keys):
        if incomplete is None or service_id.subsystem.member in incomplete:
            continue
        declared = names.get(service_id)
        savings = declared.savings if declared is not None else None
        minutes = savings.citizen_minutes if savings else 0.0
        forms = savings.paper_forms if savings else 0
        cost = savings.cost if savings else 0.0
        member = conf.member(service_id.subsystem.member)
        series.append(
            ServiceSeries(
                service=str(service_id),
                name=service_id.service_name,
                provider=str(service_id.subsystem.member),
                provider_name=member.name if member is not None else "",
                cells=tuple(
                    _cell(m, counts.get((m, str(service_id)), 0), minutes, forms, cost)
                    for m in window
                ),
            )
        )
    totals = []
    for index, month in enumerate(window):
        published = [s.cells[index] for s in series if not s.cells[index].suppressed]
        totals.append(
            MonthTotal(
                month=month,
                answered=sum(c.answered or 0 for c in published),
                citizen_hours=sum(c.citizen_hours or 0.0 for c in published),
                paper_forms=sum(c.paper_forms or 0 for c in published),
                cost=sum(c.cost or 0.0 for c in published),
                suppressed_services=len(series) - len(published),
            )
        )
    return Report(
        instance=conf.instance,
        months=window,
        series=tuple(series),
        totals=tuple(totals),
        gathered_at=gathered_at,
        unreached=unreached,
        currency=currency,
    )


def _members_of(servers: Iterable[str]) -> frozenset[MemberId] | None:
    """The owner members of these servers; None (every service is incomplete) if one of the
    names cannot be read."""
    members = set()
    for text in servers:
        try:
            members.add(ServerId.parse(text).member)
        except IdentifierError:
            return None
    return frozenset(members)


def _rows(report: Report) -> Iterable[tuple[ServiceSeries, Cell]]:
    for month_index in range(len(report.months)):
        for series in report.series:
            yield series, series.cells[month_index]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def report_csv(report: Report) -> str:
    """The report as CSV (RFC 4180, a header row of :data:`CSV_COLUMNS`), one row per month
    and service; a suppressed count is ``<5`` with empty derived columns."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for series, cell in _rows(report):
        writer.writerow(
            (
                str(cell.month),
                series.service,
                series.provider,
                SUPPRESSED if cell.answered is None else cell.answered,
                "" if cell.citizen_hours is None else f"{cell.citizen_hours:.2f}",
                "" if cell.paper_forms is None else cell.paper_forms,
                "" if cell.cost is None else f"{cell.cost:.2f}",
                report.currency,
            )
        )
    return out.getvalue()


def report_json(report: Report) -> dict[str, Any]:
    """The report as a JSON document: one object per month and service; a suppressed count is
    ``"answered": null`` with ``"suppressed": true`` and null derived values."""
    return {
        "instance": report.instance,
        "gathered_at": report.gathered_at.isoformat(),
        "months": [str(m) for m in report.months],
        "suppression_threshold": SUPPRESSION_THRESHOLD,
        "currency": report.currency,
        "servers_not_reached": list(report.unreached),
        "rows": [
            {
                "month": str(cell.month),
                "service": series.service,
                "provider": series.provider,
                "answered": cell.answered,
                "suppressed": cell.suppressed,
                "citizen_hours_saved": _rounded(cell.citizen_hours),
                "paper_forms_avoided": cell.paper_forms,
                "agency_cost_saved": _rounded(cell.cost),
            }
            for series, cell in _rows(report)
        ],
    }


def _texts(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"@value": text, "@language": language} for language, text in values.items()]


def catalog_jsonld(
    report: Report,
    *,
    base_url: str,
    publisher: str,
    license_url: str,
    titles: Mapping[str, str],
    descriptions: Mapping[str, str],
) -> dict[str, Any]:
    """The DCAT-AP (2.1 / 3) catalogue record of the report as JSON-LD: a ``dcat:Catalog``
    holding one ``dcat:Dataset`` with a CSV and a JSON ``dcat:Distribution``. ``titles`` and
    ``descriptions`` are the dataset's by language; ``base_url`` is the gateway's public
    origin (``https://host``)."""
    page = f"{base_url}/open-data"
    publisher_node = {"@id": f"{page}#publisher", "@type": "foaf:Agent", "foaf:name": publisher}
    license_node = {"@id": license_url, "@type": "dct:LicenseDocument"}
    first = report.months[0].start.date().isoformat() if report.months else ""
    last = (report.months[-1].end - timedelta(days=1)).date().isoformat() if report.months else ""
    modified = {"@value": report.gathered_at.isoformat(), "@type": "xsd:dateTime"}

    def distribution(name: str, media: str, file_type: str) -> dict[str, Any]:
        url = f"{page}/exchanges.{name}"
        return {
            "@id": f"{url}#distribution",
            "@type": "dcat:Distribution",
            "dct:title": f"{titles.get('en', '')} ({file_type})",
            "dcat:accessURL": {"@id": page},
            "dcat:downloadURL": {"@id": url},
            "dcat:mediaType": {"@id": _MEDIA + media},
            "dct:format": {"@id": _FILE_TYPE + file_type},
            "dct:license": license_node,
            "dct:modified": modified,
        }

    return {
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "foaf": "http://xmlns.com/foaf/0.1/",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
        },
        "@id": f"{page}/catalog.jsonld",
        "@type": "dcat:Catalog",
        "dct:title": _texts({k: f"Ruta {report.instance}: {v}" for k, v in titles.items()}),
        "dct:description": _texts(descriptions),
        "dct:publisher": publisher_node,
        "dct:license": license_node,
        "dct:modified": modified,
        "foaf:homepage": {"@id": page},
        "dcat:dataset": [
            {
                "@id": f"{page}#dataset",
                "@type": "dcat:Dataset",
                "dct:identifier": f"{page}#dataset",
                "dct:title": _texts(titles),
                "dct:description": _texts(descriptions),
                "dct:publisher": publisher_node,
                "dct:modified": modified,
                "dct:temporal": {
                    "@type": "dct:PeriodOfTime",
                    "dcat:startDate": {"@value": first, "@type": "xsd:date"},
                    "dcat:endDate": {"@value": last, "@type": "xsd:date"},
                },
                "dct:accrualPeriodicity": {"@id": _MONTHLY},
                "dcat:theme": {"@id": _THEME_GOVERNMENT},
                "dcat:keyword": ["once-only", "interoperability", "digital government"],
                "dcat:landingPage": {"@id": page},
                "dcat:distribution": [
                    distribution("csv", "text/csv", "CSV"),
                    distribution("json", "application/json", "JSON"),
                ],
            }
        ],
    }


def dumps(document: Mapping[str, Any]) -> str:
    """``document`` as compact, stable JSON text."""
    return json.dumps(document, ensure_ascii=False, sort_keys=False, separators=(",", ":"))
