"""The citizen's record of access on the gateway (``/citizen``; docs/adr/0027, 0031).

A citizen signs in with OpenID Connect (:mod:`gateway.console.oidc`): ``/citizen/sign-in``
starts a sign-in bound to a short-lived ``__Host-`` cookie (SameSite=Lax, so it survives the
issuer's redirect back; it holds the sign-in itself, sealed: no table of sign-ins in progress
that a flood of unauthenticated requests could fill), the issuer sends the browser to
``/citizen/callback``, whose ``state`` must be that sign-in's; the ID token's subject claim
becomes a :class:`ruta.web.Sessions` session. ``/citizen`` then shows the record of access of
that session's subject, read from every security server (:mod:`gateway.console.access_record`)
and kept for the session :data:`RECORD_CACHE_SECONDS` so reloads do not ask every server again.
The subject is never taken from a URL or a form. ``/citizen/sign-out`` (a form with a CSRF
token) ends the session. No page runs script.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.console.access_record import AccessRecord, AccessRecordReader
from gateway.console.oidc import (
    IssuerUnavailableError,
    OidcClient,
    PendingSignIn,
    SignInError,
)
from gateway.settings import CitizenSettings
from ruta.globalconf import GlobalConf
from ruta.globalconf.errors import GlobalConfError
from ruta.web import (
    CSRF_FIELD,
    SESSION_COOKIE,
    CsrfTokens,
    Pages,
    Sessions,
    language_of,
    page,
)
from ruta.web.csrf import MAX_CSRF_TOKEN_CHARS
from ruta.web.messages import N_

__all__ = [
    "CALLBACK_PATH",
    "CITIZEN_PATH",
    "MAX_CACHED_RECORDS",
    "RECORD_CACHE_SECONDS",
    "SIGN_IN_COOKIE",
    "SIGN_IN_PATH",
    "SIGN_OUT_PATH",
    "CitizenConsole",
]

CITIZEN_PATH: Final = "/citizen"
SIGN_IN_PATH: Final = "/citizen/sign-in"
CALLBACK_PATH: Final = "/citizen/callback"
SIGN_OUT_PATH: Final = "/citizen/sign-out"
#: The cookie that binds a sign-in in progress to the browser that started it.
SIGN_IN_COOKIE: Final = "__Host-ruta-sign-in"
#: How long a started sign-in may take.
SIGN_IN_SECONDS: Final = 600
#: How long a session's gathered record is shown again without asking the servers anew.
RECORD_CACHE_SECONDS: Final = 60
#: Most sessions' records kept at once (the oldest is dropped).
MAX_CACHED_RECORDS: Final = 1_000
#: Longest ``state`` or ``code`` read from the callback.
_MAX_CALLBACK_VALUE: Final = 2048
#: Longest sign-in cookie issued or read (a sealed sign-in is about 300 characters).
_MAX_COOKIE_CHARS: Final = 512
_GCM_NONCE_BYTES: Final = 12
_SUBJECT: Final = "subject"
_NAME: Final = "name"

_log = logging.getLogger(__name__)

SIGN_IN_FAILED: Final = N_("The sign-in did not work")
SIGN_IN_FAILED_EXPLANATION: Final = N_(
    "The sign-in service's answer could not be checked, or the sign-in took too long or was "
    "started in another window. Nothing about you was shown. Start again from the sign-in page."
)
RECORD_UNAVAILABLE: Final = N_("Your record cannot be read just now")
RECORD_UNAVAILABLE_EXPLANATION: Final = N_(
    "This service does not yet hold the list of the agencies' servers to ask. Please try again "
    "in a minute."
)
ISSUER_UNAVAILABLE: Final = N_("The sign-in service cannot be reached")
ISSUER_UNAVAILABLE_EXPLANATION: Final = N_(
    "We could not reach the service you sign in with. Please try again in a few minutes."
)


def _forget(response: web.StreamResponse, cookie: str) -> None:
    """Expire ``cookie`` in the browser (a ``__Host-`` cookie only yields to a Secure one)."""
    response.del_cookie(cookie, path="/", secure=True, httponly=True)


class _SealedSignIns:
    """Sign-ins in progress, each sealed into its own cookie; the gateway keeps none of them.

    The cookie is AES-GCM under a key made afresh by each process (a restart only fails the
    sign-ins then in progress): GCM makes it tamper-proof (state, nonce and verifier are the
    gateway's own) and also keeps the PKCE verifier secret. HMAC alone would be enough against
    forgery, and the cookie only ever sits in the citizen's own browser (HttpOnly, Secure), but
    encryption costs no more here and keeps :class:`PendingSignIn`'s promise that only the S256
    challenge leaves the gateway before the redemption. The seal carries the start time, so a
    cookie older than :data:`SIGN_IN_SECONDS` is refused whatever its Max-Age said. Nothing
    marks a cookie used: the issuer's code is single-use and bound to this sign-in by its
    state, nonce and PKCE challenge, so a replayed cookie gains nothing."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self._clock = clock

    def start(self, language: str) -> tuple[str, PendingSignIn]:
        """A new sign-in, started from a page in ``language``; its sealed cookie value."""
        pending = PendingSignIn.new(now=self._clock())
        plain = json.dumps(
            [pending.state, pending.nonce, pending.verifier, pending.started, language]
        ).encode("utf-8")
        nonce = os.urandom(_GCM_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plain, SIGN_IN_COOKIE.encode("ascii"))
        value = base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("=")
        if len(value) > _MAX_COOKIE_CHARS:  # pragma: no cover - bounded by the fields above
            raise AssertionError("sealed sign-in cookie longer than its bound")
        return value, pending

    def take(self, value: str | None) -> tuple[PendingSignIn, str] | None:
        """The sign-in sealed in ``value`` and its page's language; None when absent, too long,
        not sealed by this process, or older than :data:`SIGN_IN_SECONDS`."""
        if not value or len(value) > _MAX_COOKIE_CHARS:
            return None
        try:
            sealed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = self._aead.decrypt(
                sealed[:_GCM_NONCE_BYTES],
                sealed[_GCM_NONCE_BYTES:],
                SIGN_IN_COOKIE.encode("ascii"),
            )
        except (binascii.Error, ValueError, InvalidTag):
            return None
        state, nonce, verifier, started, language = json.loads(plain)
        age = self._clock() - started
        if not 0 <= age <= SIGN_IN_SECONDS:
            return None
        return PendingSignIn(state, nonce, verifier, started), language


class CitizenConsole:
    """The citizen pages of one gateway (see the module docstring). ``sessions`` and ``clock``
    are seams for tests; :meth:`close` closes the issuer and audit connections."""

    def __init__(
        self,
        *,
        settings: CitizenSettings,
        pages: Pages,
        conf: Callable[[], GlobalConf],
        oidc: OidcClient,
        reader: AccessRecordReader,
        sessions: Sessions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._pages = pages
        self._conf = conf
        self._oidc = oidc
        self._reader = reader
        self._sessions = sessions or Sessions(
            idle_seconds=settings.session_idle_minutes * 60,
            absolute_seconds=settings.session_max_minutes * 60,
        )
        self._pending = _SealedSignIns(clock)
        self._clock = clock
        # Session id -> (when gathered, record); oldest first.
        self._records: OrderedDict[str, tuple[float, AccessRecord]] = OrderedDict()
        self._csrf = CsrfTokens()

    @classmethod
    def from_settings(
        cls, settings: CitizenSettings, *, pages: Pages, conf: Callable[[], GlobalConf]
    ) -> CitizenConsole:
        """The console the settings describe; reads the client secret file (never logged)."""
        secret = settings.client_secret_file.read_text(encoding="utf-8").strip()
        oidc = OidcClient(
            issuer=settings.issuer,
            client_id=settings.client_id,
            client_secret=secret,
            redirect_uri=settings.public_url + CALLBACK_PATH,
            subject_claim=settings.subject_claim,
        )
        reader = AccessRecordReader(
            key=settings.key,
            cert=settings.cert,
            ca=settings.ca,
            deadline_seconds=settings.deadline_seconds,
        )
        return cls(settings=settings, pages=pages, conf=conf, oidc=oidc, reader=reader)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(CITIZEN_PATH, self.record)
        app.router.add_get(SIGN_IN_PATH, self.sign_in)
        app.router.add_get(CALLBACK_PATH, self.callback)
        app.router.add_post(SIGN_OUT_PATH, self.sign_out)

    async def close(self) -> None:
        await self._reader.close()
        await self._oidc.close()

    # --- pages ---------------------------------------------------------------------------------

    async def record(self, request: web.Request) -> web.Response:
        """The signed-in citizen's record of access, or the sign-in page."""
        session = self._sessions.get(request)
        if session is None or _SUBJECT not in session.values:
            expired = SESSION_COOKIE in request.cookies
            response = self._pages.respond(request, "citizen_sign_in.html", expired=expired)
            if expired:
                _forget(response, SESSION_COOKIE)
            return response
        try:
            conf = self._conf()
        except GlobalConfError:
            return self._pages.error(
                request,
                status=503,
                heading=RECORD_UNAVAILABLE,
                explanation=RECORD_UNAVAILABLE_EXPLANATION,
            )
        subject = session.values[_SUBJECT]
        found = await self._record_of(session.id, conf, subject)
        return self._pages.respond(
            request,
            "citizen_record.html",
            record=found,
            subject=subject,
            name=session.values.get(_NAME, ""),
            csrf_field=CSRF_FIELD,
            csrf_token=self._csrf.issue(session.id),
            sign_out=SIGN_OUT_PATH,
        )

    async def _record_of(self, session_id: str, conf: GlobalConf, subject: str) -> AccessRecord:
        """``subject``'s record, as gathered for this session in the last
        :data:`RECORD_CACHE_SECONDS`, else read from every server afresh and kept."""
        now = self._clock()
        while self._records:  # drop what is stale, oldest first
            oldest = next(iter(self._records.values()))
            if now - oldest[0] <= RECORD_CACHE_SECONDS:
                break
            self._records.popitem(last=False)
        kept = self._records.get(session_id)
        if kept is not None:
            return kept[1]
        found = await self._reader.read(conf, subject)
        self._records[session_id] = (self._clock(), found)
        while len(self._records) > MAX_CACHED_RECORDS:
            self._records.popitem(last=False)
        return found

    async def sign_in(self, request: web.Request) -> web.Response:
        """Start a sign-in: a fresh state, nonce and PKCE verifier bound to this browser."""
        handle, pending = self._pending.start(language_of(request))
        try:
            target = await self._oidc.authorization_url(pending)
        except IssuerUnavailableError as exc:
            _log.warning("citizen sign-in: %s", exc.message)
            return self._issuer_unavailable(request)
        response = web.Response(status=303, headers={"Location": target})
        response.set_cookie(
            SIGN_IN_COOKIE,
            handle,
            path="/",
            secure=True,
            httponly=True,
            samesite="Lax",
            max_age=SIGN_IN_SECONDS,
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        """The issuer's answer: redeem the code of this browser's sign-in, start the session."""
        found = self._pending.take(request.cookies.get(SIGN_IN_COOKIE))
        state = request.query.get("state", "")[:_MAX_CALLBACK_VALUE]
        code = request.query.get("code", "")[:_MAX_CALLBACK_VALUE]
        if found is None or not found[0].matches(state) or "error" in request.query:
            return self._sign_in_failed(request)
        pending, language = found
        try:
            identity = await self._oidc.redeem(code, pending)
        except SignInError as exc:
            _log.warning("citizen sign-in refused: %s", exc.message)
            return self._sign_in_failed(request)
        except IssuerUnavailableError as exc:
            _log.warning("citizen sign-in: %s", exc.message)
            return self._issuer_unavailable(request)
        # The sign-in goes on in the language of the page it was started from.
        target = f"{CITIZEN_PATH}?lang={language}"
        response = page(
            self._pages.render(
                "citizen_signed_in.html", language, path=CITIZEN_PATH, target=target
            ),
            language,
        )
        self._sessions.end(request, response)  # never reuse a session from before sign-in
        self._sessions.start(response, **{_SUBJECT: identity.subject, _NAME: identity.name})
        _forget(response, SIGN_IN_COOKIE)
        return response

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        """End the session (the form must carry its CSRF token)."""
        session = self._sessions.get(request)
        form = await request.post()
        token = form.get(CSRF_FIELD)
        if session is not None and not self._csrf.check(
            session.id, token[: MAX_CSRF_TOKEN_CHARS + 1] if isinstance(token, str) else None
        ):
            return self._pages.form_expired(request)
        response = self._pages.respond(request, "citizen_signed_out.html")
        if session is not None:
            self._records.pop(session.id, None)
        self._sessions.end(request, response)
        return response

    # --- refusals ------------------------------------------------------------------------------

    def _sign_in_failed(self, request: web.Request) -> web.Response:
        response = self._pages.error(
            request,
            status=401,
            heading=SIGN_IN_FAILED,
            explanation=SIGN_IN_FAILED_EXPLANATION,
        )
        _forget(response, SIGN_IN_COOKIE)
        return response

    def _issuer_unavailable(self, request: web.Request) -> web.Response:
        return self._pages.error(
            request,
            status=502,
            heading=ISSUER_UNAVAILABLE,
            explanation=ISSUER_UNAVAILABLE_EXPLANATION,
        )
