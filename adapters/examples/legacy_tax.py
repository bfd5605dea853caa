"""A small legacy tax-agency service: HTTP/JSON, as such systems tend to look.

``python -m adapters.examples.legacy_tax --listen 127.0.0.1:8091`` serves::

    GET /api/v2/taxpayers/{tin}/income?year=YYYY
        200 {"taxpayer": {"tin", "fullName"}, "fiscalYear", "isAssessed": "Y"|"N",
             "currency", "total": "1234.50", "lines": [{"kind", "amount", "payer"}]}
        400 when year is missing or not a year; 404 when the taxpayer or year is unknown
    GET /health   200 "ok"

The figures are fictional and match the example population register's national ids.
"""

from __future__ import annotations

import re
import sys
from decimal import Decimal
from typing import Any, Final

from aiohttp import web

from adapters.examples._legacy_http import run_legacy_service

__all__ = ["INCOMES", "main", "make_app"]

_TIN_RE: Final = re.compile(r"[0-9]{10}")

#: tin -> (full name, {year: (assessed, [(kind, amount, payer)])})
INCOMES: Final[dict[str, tuple[str, dict[int, tuple[bool, list[tuple[str, str, str]]]]]]] = {
    "4410000017": (
        "QUISPE MAMANI ANA LUCIA",
        {
            2024: (True, [("EMPLOYMENT", "14200.00", "Escuela Municipal 5")]),
            2025: (
                True,
                [
                    ("EMPLOYMENT", "15350.00", "Escuela Municipal 5"),
                    ("RENTAL", "1200.50", ""),
                ],
            ),
        },
    ),
    "4410000025": (
        "FERNANDEZ ROJAS MATEO",
        {2025: (False, [("BUSINESS", "38900.00", "Panaderia Fernandez SAC")])},
    ),
    "4410000033": (
        "SOTO PEREZ VALENTINA",
        {2025: (True, [("PENSION", "9800.00", "Caja de Pensiones")])},
    ),
    "4410000041": ("MENDOZA LUNA DIEGO", {2025: (True, [])}),
}


def _income(tin: str, year: int) -> dict[str, Any] | None:
    found = INCOMES.get(tin)
    if found is None or year not in found[1]:
        return None
    name, years = found
    assessed, lines = years[year]
    total = sum((Decimal(amount) for _, amount, _ in lines), Decimal("0.00"))
    return {
        "taxpayer": {"tin": tin, "fullName": name},
        "fiscalYear": year,
        "isAssessed": "Y" if assessed else "N",
        "currency": "PEN",
        "total": f"{total:.2f}",
        "lines": [{"kind": k, "amount": a, "payer": p or None} for k, a, p in lines],
    }


async def _get_income(request: web.Request) -> web.Response:
    tin = request.match_info["tin"]
    year_text = request.query.get("year", "")
    if not year_text.isdigit() or not 1900 <= int(year_text) <= 2100:
        return web.json_response({"error": "year must be a four-digit year"}, status=400)
    if not _TIN_RE.fullmatch(tin):
        return web.json_response({"error": "unknown taxpayer"}, status=404)
    body = _income(tin, int(year_text))
    if body is None:
        return web.json_response({"error": "no assessment for this taxpayer and year"}, status=404)
    return web.json_response(body)


async def _health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app() -> web.Application:
    """The service as an aiohttp application (tests run it on a loopback port)."""
    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/api/v2/taxpayers/{tin}/income", _get_income)
    app.router.add_get("/health", _health)
    app.router.add_get("/", _health)
    return app


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--listen HOST:PORT`` (default 127.0.0.1:8091), ``--ready-file PATH``."""
    return run_legacy_service(
        argv,
        make_app,
        name="legacy tax service",
        description="Example legacy tax-agency HTTP service.",
        default_listen="127.0.0.1:8091",
    )


if __name__ == "__main__":
    sys.exit(main())
