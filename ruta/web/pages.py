"""Rendering and serving console pages: Jinja2 with autoescape and the i18n extension, one
environment per part and language, the shared page frame and error pages, security headers on
every response (docs/adr/0026-console-stack.md)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from babel.dates import format_datetime
from babel.numbers import format_decimal
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined

from ruta.web import messages
from ruta.web.i18n import LANGUAGES, choose_language, language_name, translations

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "STATIC_DIR",
    "STATIC_PREFIX",
    "TEMPLATES_DIR",
    "Pages",
    "add_static_routes",
    "language_of",
    "page",
]

_HERE: Final = Path(__file__).parent
#: The shared page frame (``base.html``) and the error pages every console uses.
TEMPLATES_DIR: Final = _HERE / "templates"
#: The stylesheet every console uses, served under :data:`STATIC_PREFIX`.
STATIC_DIR: Final = _HERE / "static"
STATIC_PREFIX: Final = "/console/static"
#: No script at all, styles and images from this origin only, no framing, forms only to here.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def language_of(request: web.Request) -> str:
    """The language of the response to ``request``: its ``lang`` parameter, else its
    ``Accept-Language``, else English (bounded: see :mod:`ruta.web.i18n`)."""
    return choose_language(request.query.get("lang"), request.headers.get("Accept-Language"))


def page(body: str, language: str, *, status: int = 200) -> web.Response:
    """An HTML page in ``language`` under the security headers, never cached by a shared cache."""
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    response.headers["Content-Language"] = language
    response.headers["Vary"] = "Accept-Language"
    response.headers["Cache-Control"] = "no-store"
    return response


class Pages:
    """One part's pages: its templates (which extend this kit's ``base.html``) and its message
    catalogues (merged over this kit's), in every language of :data:`LANGUAGES`."""

    def __init__(self, *, templates: Path, locale: Path) -> None:
        self._templates = templates
        self._locale = locale
        self._environments: dict[str, Environment] = {}

    def environment(self, language: str) -> Environment:
        """The Jinja2 environment of ``language`` (autoescape on, missing values are errors)."""
        environment = self._environments.get(language)
        if environment is None:
            environment = Environment(
                loader=ChoiceLoader(
                    [FileSystemLoader(self._templates), FileSystemLoader(TEMPLATES_DIR)]
                ),
                autoescape=True,
                undefined=StrictUndefined,
                extensions=["jinja2.ext.i18n"],
            )
            environment.install_gettext_translations(  # type: ignore[attr-defined]
                translations(language, self._locale), newstyle=True
            )
            environment.filters["datetime"] = lambda at: format_datetime(
                at, format="long", tzinfo=UTC, locale=language
            )
            environment.filters["number"] = lambda value: format_decimal(value, locale=language)
            self._environments[language] = environment
        return environment

    def gettext(self, language: str, message: str) -> str:
        """``message`` in ``language`` (for text made in code, such as a refusal's reason)."""
        return translations(language, self._locale).gettext(message)

    def render(self, template: str, language: str, **context: Any) -> str:
        """``template`` in ``language`` with ``context``; every value is escaped by autoescape.
        ``path`` (the page's own path, for the language switcher) must be in ``context``."""
        languages = [(code, language_name(code)) for code in LANGUAGES]
        return (
            self.environment(language)
            .get_template(template)
            .render(language=language, languages=languages, **context)
        )

    def respond(
        self, request: web.Request, template: str, *, status: int = 200, **context: Any
    ) -> web.Response:
        """``template`` rendered in the request's language, as a page under the security headers."""
        language = language_of(request)
        context.setdefault("path", request.path)
        return page(self.render(template, language, **context), language, status=status)

    def error(
        self,
        request: web.Request,
        *,
        status: int,
        heading: str,
        explanation: str,
        **values: str,
    ) -> web.Response:
        """The shared error page. ``heading`` and ``explanation`` are English messages in a
        catalogue (this kit's or the part's), shown translated; ``explanation`` may hold
        ``%(name)s`` fields filled from ``values`` after translation (escaped like any value)."""
        language = language_of(request)
        body = self.render(
            "error.html",
            language,
            path=request.path,
            heading=self.gettext(language, heading),
            explanation=self.gettext(language, explanation) % values,
        )
        return page(body, language, status=status)

    def no_certificate(self, request: web.Request) -> web.Response:
        """401: the browser presented no client certificate; says how to get one."""
        return self.error(
            request,
            status=401,
            heading=messages.NO_CERTIFICATE,
            explanation=messages.NO_CERTIFICATE_EXPLANATION,
        )

    def forbidden(self, request: web.Request, *, role: str, subject: str) -> web.Response:
        """403 naming the role the page needs and the certificate that lacks it."""
        return self.error(
            request,
            status=403,
            heading=messages.FORBIDDEN,
            explanation=messages.FORBIDDEN_EXPLANATION,
            role=role,
            subject=subject,
        )

    def revoked(self, request: web.Request, *, subject: str) -> web.Response:
        """403: the certificate presented (``subject``) is revoked, or its revocation status
        cannot be established."""
        return self.error(
            request,
            status=403,
            heading=messages.REVOKED,
            explanation=messages.REVOKED_EXPLANATION,
            subject=subject,
        )

    def form_expired(self, request: web.Request) -> web.Response:
        """403: a form whose CSRF token does not belong to the sender's session."""
        return self.error(
            request,
            status=403,
            heading=messages.FORM_EXPIRED,
            explanation=messages.FORM_EXPIRED_EXPLANATION,
        )

    def session_expired(self, request: web.Request) -> web.Response:
        """401: the session has ended (idle or too old); sign in again."""
        return self.error(
            request,
            status=401,
            heading=messages.SESSION_EXPIRED,
            explanation=messages.SESSION_EXPIRED_EXPLANATION,
        )


def add_static_routes(app: web.Application) -> None:
    """Serve the consoles' stylesheet under :data:`STATIC_PREFIX`."""
    app.router.add_static(STATIC_PREFIX, STATIC_DIR, append_version=False)
