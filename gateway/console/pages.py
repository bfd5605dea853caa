"""Rendering and serving the console pages: one Jinja2 environment per language (autoescape on,
the i18n extension with that language's catalogue), security headers on every page."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from gateway.console.counts import OpenData
from gateway.console.opendata_pages import add_open_data_routes
from gateway.console.paths import CATALOGUE_PATH
from gateway.directory import rest_endpoints
from ruta.globalconf import GlobalConf, Service
from ruta.globalconf.errors import GlobalConfError
from ruta.ids import MemberId, SubsystemId
from ruta.web import CONTENT_SECURITY_POLICY, STATIC_PREFIX, Pages, add_static_routes

__all__ = [
    "CATALOGUE_PATH",
    "CONTENT_SECURITY_POLICY",
    "PAGES",
    "STATIC_PREFIX",
    "Catalogue",
    "add_console_routes",
    "catalogue_of",
    "render",
]

_HERE: Final = Path(__file__).parent
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


PAGES: Final = Pages(templates=_HERE / "templates", locale=_HERE / "locale")


def render(template: str, language: str, **context: Any) -> str:
    """``template`` in ``language`` with ``context`` (every value escaped by autoescape)."""
    return PAGES.render(template, language, **context)


def add_console_routes(
    app: web.Application,
    *,
    conf: Callable[[], GlobalConf],
    open_data: OpenData | None = None,
    member: MemberId | None = None,
) -> None:
    """``GET /catalogue``, the pages' static files and, with ``open_data``, the open-data
    pages published by ``member`` (:mod:`gateway.console.opendata_pages`)."""

    async def catalogue(request: web.Request) -> web.Response:
        try:
            current = conf()
        except GlobalConfError:
            return PAGES.respond(request, "unavailable.html", status=503)
        return PAGES.respond(request, "catalogue.html", catalogue=catalogue_of(current))

    app.router.add_get(CATALOGUE_PATH, catalogue)
    if open_data is not None and member is not None:
        add_open_data_routes(app, pages=PAGES, conf=conf, open_data=open_data, publisher=member)
    add_static_routes(app)
