"""The console kit without a browser: CSRF tokens bound to a session, sessions that expire, error
pages that name the role needed, and every page under the security headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from ruta.web import CONTENT_SECURITY_POLICY, SESSION_COOKIE, CsrfTokens, Pages, Sessions
from ruta.web.csrf import MAX_CSRF_TOKEN_CHARS
from ruta.web.pages import TEMPLATES_DIR


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_csrf_token_belongs_to_its_session_only() -> None:
    tokens = CsrfTokens()
    token = tokens.issue("session-a")
    assert tokens.check("session-a", token)
    assert not tokens.check("session-b", token)
    assert not tokens.check("session-a", None)
    assert not tokens.check("session-a", "")
    assert not tokens.check("session-a", token + "0" * MAX_CSRF_TOKEN_CHARS)
    assert not CsrfTokens().check("session-a", token)  # another process's key
    assert not tokens.check("session-a", "zz." + token.partition(".")[2])


def test_a_csrf_token_expires() -> None:
    clock = _Clock()
    tokens = CsrfTokens(lifetime_seconds=600, clock=clock)
    token = tokens.issue("s")
    clock.now += 599
    assert tokens.check("s", token)
    clock.now += 2
    assert not tokens.check("s", token)


def _request_with(cookie: str | None) -> web.Request:
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"} if cookie else {}
    return make_mocked_request("GET", "/", headers=headers)


def test_sessions_expire_when_idle_and_when_old() -> None:
    clock = _Clock()
    sessions = Sessions(idle_seconds=60, absolute_seconds=300, clock=clock)
    response = web.Response()
    session = sessions.start(response, subject="123")
    cookie = response.cookies[SESSION_COOKIE]
    assert cookie["secure"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    for _ in range(4):
        clock.now += 59
        found = sessions.get(_request_with(session.id))
        assert found is not None
        assert found.values == {"subject": "123"}
    clock.now += 70
    assert sessions.get(_request_with(session.id)) is None  # was dropped
    young = sessions.start(web.Response())
    for _ in range(6):
        clock.now += 55
    assert sessions.get(_request_with(young.id)) is None
    assert sessions.get(_request_with(None)) is None
    assert sessions.get(_request_with("x" * 500)) is None


def test_sessions_are_bounded() -> None:
    sessions = Sessions(max_sessions=2)
    first = sessions.start(web.Response())
    sessions.start(web.Response())
    sessions.start(web.Response())
    assert sessions.get(_request_with(first.id)) is None


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[str]:
    (tmp_path / "templates").mkdir()
    pages = Pages(templates=tmp_path / "templates", locale=tmp_path / "locale")

    async def forbidden(request: web.Request) -> web.Response:
        return pages.forbidden(request, role="registry-admin", subject="CN=<script>x</script>")

    async def no_cert(request: web.Request) -> web.Response:
        return pages.no_certificate(request)

    app = web.Application()
    app.router.add_get("/forbidden", forbidden)
    app.router.add_get("/no-cert", no_cert)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_the_403_page_names_the_role_in_the_asked_language(site: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{site}/forbidden", headers={"Accept-Language": "es"}) as response,
    ):
        body = await response.text()
        assert response.status == 403
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["Cache-Control"] == "no-store"
    assert "No puede abrir esta página" in body
    assert "registry-admin" in body
    assert "<script>x" not in body
    assert "&lt;script&gt;x" in body


async def test_the_no_certificate_page_says_what_to_do(site: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{site}/no-cert?lang=pt") as response,
    ):
        body = await response.text()
        assert response.status == 401
    assert "É necessário um certificado de cliente" in body


def test_the_kit_templates_are_packaged_beside_the_code() -> None:
    assert (TEMPLATES_DIR / "base.html").is_file()
    assert (TEMPLATES_DIR / "error.html").is_file()
