"""The web kit the parts' consoles share (docs/adr/0026-console-stack.md, 0027): pages rendered
with Jinja2 and gettext catalogues in Spanish, Portuguese and English under a strict
Content-Security-Policy, the shared page frame and error pages, CSRF tokens, sessions, and
client-certificate authentication for the consoles that use it.

Each part keeps its own templates and catalogues (``<part>/console/``) and builds a
:class:`~ruta.web.pages.Pages` over them.
"""

from ruta.web.clientcert import ClientCertificate, client_certificate, console_tls_context
from ruta.web.csrf import CSRF_FIELD, CsrfTokens
from ruta.web.i18n import LANGUAGES, choose_language, language_name, translations
from ruta.web.pages import (
    CONTENT_SECURITY_POLICY,
    SECURITY_HEADERS,
    STATIC_PREFIX,
    Pages,
    add_static_routes,
    language_of,
    page,
)
from ruta.web.sessions import SESSION_COOKIE, Session, Sessions

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "CSRF_FIELD",
    "LANGUAGES",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "STATIC_PREFIX",
    "ClientCertificate",
    "CsrfTokens",
    "Pages",
    "Session",
    "Sessions",
    "add_static_routes",
    "choose_language",
    "client_certificate",
    "console_tls_context",
    "language_name",
    "language_of",
    "page",
    "translations",
]
