"""The public open-data pages (docs/adr/0028-open-data.md): ``GET /open-data`` (tables and
inline SVG charts, in the page's language), ``/open-data/exchanges.csv``,
``/open-data/exchanges.json`` and ``/open-data/catalog.jsonld`` (DCAT-AP). No certificate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal

from gateway.console.charts import Chart, bar_chart, line_chart, scale_top
from gateway.console.counts import OpenData
from gateway.console.opendata import (
    SUPPRESSED,
    SUPPRESSION_THRESHOLD,
    Report,
    ServiceSeries,
    catalog_jsonld,
    dumps,
    report_csv,
    report_json,
)
from gateway.console.paths import (
    OPEN_DATA_CATALOG_PATH,
    OPEN_DATA_CSV_PATH,
    OPEN_DATA_JSON_PATH,
    OPEN_DATA_PATH,
)
from ruta.globalconf import GlobalConf
from ruta.globalconf.errors import GlobalConfError
from ruta.ids import MemberId
from ruta.months import Month
from ruta.web import LANGUAGES, SECURITY_HEADERS, Pages, language_of
from ruta.web.messages import N_

__all__ = ["add_open_data_routes"]

#: What a derived value of a suppressed count shows.
_WITHHELD: Final = "—"
#: Fractions of the axis top where ticks are drawn.
_TICKS: Final = (0.0, 0.25, 0.5, 0.75, 1.0)


#: The dataset's title and description in the catalogue record (in every language).
_DATASET_TITLE: Final = N_("Once-only exchanges answered and what they saved")
_DATASET_DESCRIPTION: Final = N_(
    "Per service and month: the once-only exchanges the agencies' security servers answered, "
    "and the citizen time, paper forms and agency cost they saved, as each service declares "
    "per call. Counted from operational data, never from subjects or message bodies; counts "
    "below 5 are published as <5 and nothing derived from them is published."
)


@dataclass(frozen=True, slots=True)
class Row:
    month: str
    answered: str
    hours: str
    forms: str
    cost: str
    suppressed: bool


@dataclass(frozen=True, slots=True)
class ServiceView:
    series: ServiceSeries
    chart: Chart
    rows: tuple[Row, ...]
    any_published: bool


@dataclass(frozen=True, slots=True)
class OpenDataView:
    report: Report
    services: tuple[ServiceView, ...]
    totals: tuple[Row, ...]
    hours_chart: Chart
    latest: Row
    latest_month: str
    threshold: int
    suppressed_marker: str


class _Formats:
    def __init__(self, language: str, currency: str) -> None:
        self.language = language
        self.currency = currency

    def number(self, value: float) -> str:
        return format_decimal(value, format="#,##0.#", locale=self.language)

    def money(self, value: float) -> str:
        return format_currency(value, self.currency, locale=self.language)

    def month(self, month: Month) -> str:
        return format_date(month.start.date(), format="LLLL y", locale=self.language)

    def short(self, month: Month) -> str:
        return format_date(month.start.date(), format="LLL yy", locale=self.language)

    def ticks(self, values: Sequence[float | None]) -> list[str]:
        top = scale_top(values)
        return [format_decimal(top * f, format="#,##0.##", locale=self.language) for f in _TICKS]

    def row(
        self,
        month: Month,
        answered: int | None,
        hours: float | None,
        forms: int | None,
        cost: float | None,
    ) -> Row:
        return Row(
            month=self.month(month),
            answered=SUPPRESSED if answered is None else self.number(answered),
            hours=_WITHHELD if hours is None else self.number(round(hours, 1)),
            forms=_WITHHELD if forms is None else self.number(forms),
            cost=_WITHHELD if cost is None else self.money(cost),
            suppressed=answered is None,
        )


def _view(report: Report, language: str) -> OpenDataView:
    formats = _Formats(language, report.currency)
    labels = [formats.short(m) for m in report.months]
    services = []
    for series in report.series:
        values = [None if c.answered is None else float(c.answered) for c in series.cells]
        texts = [SUPPRESSED if v is None else formats.number(v) for v in values]
        services.append(
            ServiceView(
                series=series,
                chart=bar_chart(values, labels, texts, formats.ticks(values)),
                rows=tuple(
                    formats.row(c.month, c.answered, c.citizen_hours, c.paper_forms, c.cost)
                    for c in reversed(series.cells)
                ),
                any_published=any(not c.suppressed for c in series.cells),
            )
        )
    hours = [t.citizen_hours for t in report.totals]
    totals = tuple(
        formats.row(t.month, t.answered, t.citizen_hours, t.paper_forms, t.cost)
        for t in reversed(report.totals)
    )
    return OpenDataView(
        report=report,
        services=tuple(services),
        totals=totals,
        hours_chart=line_chart(
            hours,
            labels,
            [formats.number(round(h, 1)) for h in hours],
            formats.ticks(list(hours)),
        ),
        latest=totals[0],
        latest_month=totals[0].month,
        threshold=SUPPRESSION_THRESHOLD,
        suppressed_marker=SUPPRESSED,
    )


#: How a shared cache may keep an open-data document that is the same for every request.
_PUBLIC_CACHING: Final = "public, max-age=60"


def _data(text: str, content_type: str, *, cache: str = _PUBLIC_CACHING) -> web.Response:
    """``text`` as open data any site may read; ``cache`` is its ``Cache-Control`` (``no-store``
    when the text depends on the request's Host, which a shared cache does not key on)."""
    response = web.Response(text=text, content_type=content_type, charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    # Open data: any site may read it.
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = cache
    return response


def add_open_data_routes(
    app: web.Application,
    *,
    pages: Pages,
    conf: Callable[[], GlobalConf],
    open_data: OpenData,
    publisher: MemberId,
) -> None:
    """The open-data page and its CSV, JSON and DCAT-AP documents; ``publisher`` is the
    member publishing them (the gateway's; its name in the configuration)."""

    async def current(request: web.Request) -> Report | web.Response:
        try:
            return await open_data.report()
        except GlobalConfError:
            return pages.respond(request, "unavailable.html", status=503)

    async def page(request: web.Request) -> web.Response:
        report = await current(request)
        if isinstance(report, web.Response):
            return report
        view = _view(report, language_of(request))
        return pages.respond(request, "open_data.html", view=view)

    async def as_csv(request: web.Request) -> web.Response:
        report = await current(request)
        if isinstance(report, web.Response):
            return report
        return _data(report_csv(report), "text/csv")

    async def as_json(request: web.Request) -> web.Response:
        report = await current(request)
        if isinstance(report, web.Response):
            return report
        return _data(dumps(report_json(report)), "application/json")

    async def catalogue(request: web.Request) -> web.Response:
        report = await current(request)
        if isinstance(report, web.Response):
            return report
        settings = open_data.settings
        base = settings.public_url or f"{request.scheme}://{request.host}"
        held = conf()
        member = held.member(publisher)
        document = catalog_jsonld(
            report,
            base_url=base,
            publisher=member.name if member is not None and member.name else held.instance,
            license_url=settings.license,
            titles={code: pages.gettext(code, _DATASET_TITLE) for code in LANGUAGES},
            descriptions={code: pages.gettext(code, _DATASET_DESCRIPTION) for code in LANGUAGES},
        )
        # Without public_url the links echo the request's Host: never let a shared cache keep
        # (and serve others) a catalogue built from a forged Host.
        cache = _PUBLIC_CACHING if settings.public_url else "no-store"
        return _data(dumps(document), "application/ld+json", cache=cache)

    app.router.add_get(OPEN_DATA_PATH, page)
    app.router.add_get(OPEN_DATA_CSV_PATH, as_csv)
    app.router.add_get(OPEN_DATA_JSON_PATH, as_json)
    app.router.add_get(OPEN_DATA_CATALOG_PATH, catalogue)
