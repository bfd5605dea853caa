"""The gateway's web pages (docs/adr/0026-console-stack.md): Jinja2 templates with autoescape,
messages in gettext catalogues (Spanish, Portuguese, English), a strict Content-Security-Policy.

The first page is the public service catalogue (``GET /catalogue``); the static files the pages
use are served under ``/console/static/`` (:mod:`gateway.console.paths`); the routes are added by
:func:`gateway.console.pages.add_console_routes`. With ``[citizen]`` settings the gateway also
serves the citizen's record of access (``/citizen``, :mod:`gateway.console.citizen`; sign-in in
:mod:`gateway.console.oidc`, the servers read in :mod:`gateway.console.access_record`;
docs/adr/0031-citizen-sign-in.md).
"""
