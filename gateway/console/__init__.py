"""The gateway's web pages (docs/adr/0026-console-stack.md): Jinja2 templates with autoescape,
messages in gettext catalogues (Spanish, Portuguese, English), a strict Content-Security-Policy.

The first page is the public service catalogue (``GET /catalogue``); the static files the pages
use are served under ``/console/static/`` (:mod:`gateway.console.paths`); the routes are added by
:func:`gateway.console.pages.add_console_routes`.
"""
