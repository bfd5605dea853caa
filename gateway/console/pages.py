"""Rendering and serving the console pages: one Jinja2 environment per language (autoescape on,
the i18n extension with that language's catalogue), security headers on every page."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from babel.dates import format_datetime
from babel.numbers import format_decimal
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from gateway.console.i18n import LANGUAGES, choose_language, language_name, translations
from gateway.console.paths import CATALOGUE_PATH, STATIC_PREFIX
from gateway.directory import rest_endpoints
from ruta.globalconf import GlobalConf, Service
from ruta.globalconf.errors import GlobalConfError
from ruta.ids import MemberId, SubsystemId

__all__ = [
    "CATALOGUE_PATH",
    "CONTENT_SECURITY_POLICY",
    "STATIC_PREFIX",
    "Catalogue",
    "add_console_routes",
    "catalogue_of",
    "render",
]

_HERE: Final = Path(__file__).parent
#: No script at all, styles and images from this origin only, no framing, forms only to here.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: Most methods or endpoints listed for one service on a page.
MAX_METHODS_SHOWN: Final = 256


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    code: str
    kind: str
    methods: tuple[str, ...]
    description: str
    citizen_minutes: float
    paper_forms: int


@dataclass(frozen=True, slots=True)
class SubsystemEntry:
    code: str
    identifier: str
    services: tuple[ServiceEntry, ...]


@dataclass(frozen=True, slots=True)
class MemberEntry:
    name: str
    identifier: str
    subsystems: tuple[SubsystemEntry, ...]


@dataclass(frozen=True, slots=True)
class Catalogue:
    """What the catalogue page shows, taken from the global configuration in force."""

    instance: str
    serial: int
    generated_at: datetime
    expires_at: datetime
    members: tuple[MemberEntry, ...]

    @property
    def service_count(self) -> int:
        return sum(len(s.services) for m in self.members for s in m.subsystems)


def _service(service: Service) -> ServiceEntry:
    if service.is_rest:
        methods = tuple(f"{e['method']} {e['path']}" for e in rest_endpoints(service.openapi))
    else:
        methods = tuple(sorted(service.methods))
    return ServiceEntry(
        code=service.id.service_name,
        kind="REST" if service.is_rest else "gRPC",
        methods=methods[:MAX_METHODS_SHOWN],
        description=service.description,
        citizen_minutes=service.savings.citizen_minutes,
        paper_forms=service.savings.paper_forms,
    )


def catalogue_of(conf: GlobalConf) -> Catalogue:
    """Members (by name), their subsystems and the services each offers."""
    by_member: dict[MemberId, list[SubsystemId]] = {}
    for subsystem in sorted(conf.subsystems):
        by_member.setdefault(subsystem.member, []).append(subsystem)
    members = tuple(
        MemberEntry(
            name=member.name,
            identifier=str(member.id),
            subsystems=tuple(
                SubsystemEntry(
                    code=subsystem.code,
                    identifier=str(subsystem),
                    services=tuple(
                        _service(s) for s in sorted(conf.services_of(subsystem), key=lambda s: s.id)
                    ),
                )
                for subsystem in by_member.get(member.id, ())
            ),
        )
        for member in sorted(conf.members, key=lambda m: (m.name.casefold(), m.id))
    )
    return Catalogue(
        instance=conf.instance,
        serial=conf.serial,
        generated_at=conf.generated_at,
        expires_at=conf.expires_at,
        members=members,
    )


@functools.cache
def _environment(language: str) -> Environment:
    environment = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    environment.install_gettext_translations(  # type: ignore[attr-defined]
        translations(language), newstyle=True
    )
    environment.filters["datetime"] = lambda at: format_datetime(
        at, format="long", tzinfo=UTC, locale=language
    )
    environment.filters["number"] = lambda value: format_decimal(value, locale=language)
    return environment


def render(template: str, language: str, **context: Any) -> str:
    """``template`` in ``language`` with ``context`` (every value escaped by autoescape)."""
    languages = [(code, language_name(code)) for code in LANGUAGES]
    return (
        _environment(language)
        .get_template(template)
        .render(language=language, languages=languages, **context)
    )


def page(body: str, language: str, *, status: int = 200) -> web.Response:
    """An HTML page in ``language`` under the security headers."""
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    response.headers["Content-Language"] = language
    response.headers["Vary"] = "Accept-Language"
    response.headers["Cache-Control"] = "no-cache"
    return response


def add_console_routes(app: web.Application, *, conf: Callable[[], GlobalConf]) -> None:
    """``GET /catalogue`` and the pages' static files."""

    async def catalogue(request: web.Request) -> web.Response:
        language = choose_language(
            request.query.get("lang"), request.headers.get("Accept-Language")
        )
        try:
            current = conf()
        except GlobalConfError:
            return page(
                render("unavailable.html", language, path=CATALOGUE_PATH), language, status=503
            )
        body = render(
            "catalogue.html", language, path=CATALOGUE_PATH, catalogue=catalogue_of(current)
        )
        return page(body, language)

    app.router.add_get(CATALOGUE_PATH, catalogue)
    app.router.add_static(STATIC_PREFIX, _HERE / "static", append_version=False)
