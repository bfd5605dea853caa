"""The sandbox's development OpenID Connect issuer (``python -m sandbox.oidc``): discovery, a
JWKS, a sign-in page where you pick one of the sandbox's test citizens (the people in the
example population register), and a token endpoint issuing ES256-signed ID tokens.

For development only (a part of the dev kit; production never imports it): anyone who can open
the page signs in as anyone on the list. It does implement what the gateway checks: one
registered client with its secret and redirect URI, the authorization code flow with PKCE
(S256 only), single-use codes that expire, the nonce carried into the ID token.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote_plus, urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from adapters.examples.population.make_db import PERSONS

__all__ = ["CITIZENS", "DevIssuer", "main"]

#: The sandbox's test citizens: national id -> full name (the example population register).
CITIZENS: Final[Mapping[str, str]] = {pid: f"{given} {family}" for pid, given, family, _ in PERSONS}
#: How long a code may wait for its redemption, and how long an ID token is valid.
CODE_SECONDS: Final = 120
TOKEN_SECONDS: Final = 300
_MAX_CODES: Final = 1000
_PAGE_POLICY: Final = "default-src 'none'; style-src 'unsafe-inline'; form-action *"


@dataclass(frozen=True, slots=True)
class _Grant:
    client_id: str
    redirect_uri: str
    subject: str
    nonce: str
    challenge: str
    expires: float


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class DevIssuer:
    """One issuer at ``issuer`` (its public URL) with one client. ``build`` gives the aiohttp
    application."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        redirect_uris: Sequence[str],
        citizens: Mapping[str, str] = CITIZENS,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uris = frozenset(redirect_uris)
        self._citizens = dict(citizens)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._kid = secrets.token_hex(8)
        self._codes: dict[str, _Grant] = {}

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/authorize", self._choose)
        app.router.add_post("/token", self._token)
        return app

    async def _discovery(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }
        )

    async def _jwks(self, _: web.Request) -> web.Response:
        jwk: dict[str, Any] = jwt.algorithms.ECAlgorithm.to_jwk(
            self._key.public_key(), as_dict=True
        )
        jwk.update({"kid": self._kid, "use": "sig", "alg": "ES256"})
        return web.json_response({"keys": [jwk]})

    def _check_request(self, values: Mapping[str, str]) -> str | None:
        """Why an authorization request is refused, or None."""
        if values.get("client_id") != self._client_id:
            return "unknown client"
        if values.get("redirect_uri") not in self._redirect_uris:
            return "redirect URI not registered for this client"
        if values.get("response_type", "code") != "code":
            return "only the code flow"
        if values.get("code_challenge_method") != "S256" or not values.get("code_challenge"):
            return "PKCE with S256 is required"
        if not values.get("state") or not values.get("nonce"):
            return "state and nonce are required"
        return None

    async def _authorize(self, request: web.Request) -> web.Response:
        """The sign-in page: pick a test citizen."""
        values = dict(request.query)
        problem = self._check_request(values)
        if problem is not None:
            return web.Response(status=400, text=f"invalid request: {problem}")
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in values.items()
            if k
            in {"client_id", "redirect_uri", "state", "nonce", "code_challenge", "response_type"}
        )
        buttons = "".join(
            f'<li><button type="submit" name="citizen" value="{html.escape(pid)}">'
            f"{html.escape(name)} ({html.escape(pid)})</button></li>"
            for pid, name in self._citizens.items()
        )
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>Sandbox sign-in</title><style>body{font:16px system-ui;margin:2rem}"
            "li{margin:.5rem 0}button{font:inherit;padding:.4rem 1rem}</style></head><body>"
            "<main><h1>Sandbox sign-in (development only)</h1>"
            "<p>Choose the test citizen to sign in as.</p>"
            f'<form method="post" action="/authorize">{hidden}<ul>{buttons}</ul></form>'
            "</main></body></html>"
        )
        response = web.Response(text=page, content_type="text/html")
        response.headers["Content-Security-Policy"] = _PAGE_POLICY
        return response

    async def _choose(self, request: web.Request) -> web.Response:
        form = await request.post()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        problem = self._check_request({**values, "code_challenge_method": "S256"})
        subject = values.get("citizen", "")
        if problem is not None or subject not in self._citizens:
            return web.Response(status=400, text=f"invalid request: {problem or 'citizen'}")
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Grant(
            client_id=values["client_id"],
            redirect_uri=values["redirect_uri"],
            subject=subject,
            nonce=values["nonce"],
            challenge=values["code_challenge"],
            expires=time.monotonic() + CODE_SECONDS,
        )
        while len(self._codes) > _MAX_CODES:
            self._codes.pop(next(iter(self._codes)))
        target = values["redirect_uri"] + "?" + urlencode({"code": code, "state": values["state"]})
        raise web.HTTPSeeOther(target)

    def _client_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        user, password = unquote_plus(user), unquote_plus(password)
        return hmac.compare_digest(user, self._client_id) and hmac.compare_digest(
            password, self._client_secret
        )

    async def _token(self, request: web.Request) -> web.Response:
        if not self._client_ok(request):
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        grant = self._codes.pop(str(form.get("code", "")), None)
        verifier = str(form.get("code_verifier", ""))
        if (
            grant is None
            or grant.expires < time.monotonic()
            or grant.client_id != self._client_id
            or grant.redirect_uri != form.get("redirect_uri")
            or _b64url(hashlib.sha256(verifier.encode()).digest()) != grant.challenge
        ):
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        token = jwt.encode(
            {
                "iss": self.issuer,
                "sub": grant.subject,
                "aud": self._client_id,
                "iat": now,
                "exp": now + TOKEN_SECONDS,
                "auth_time": now,
                "nonce": grant.nonce,
                "name": self._citizens[grant.subject],
            },
            self._key,
            algorithm="ES256",
            headers={"kid": self._kid},
        )
        return web.json_response(
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": TOKEN_SECONDS,
                "id_token": token,
            },
            headers={"Cache-Control": "no-store"},
        )


async def _serve(args: argparse.Namespace, secret: str) -> None:
    host, _, port = args.listen.rpartition(":")
    issuer = DevIssuer(
        issuer=args.issuer or f"http://{host}:{port}",
        client_id=args.client_id,
        client_secret=secret,
        redirect_uris=args.redirect_uri,
    )
    runner = web.AppRunner(issuer.build(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, int(port)).start()
    sys.stdout.write(f"serving {issuer.issuer}\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT (loopback)")
    parser.add_argument("--issuer", default="", help="its public URL (default http://LISTEN)")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret-file", required=True)
    parser.add_argument("--redirect-uri", action="append", required=True)
    args = parser.parse_args(argv)
    secret = Path(args.client_secret_file).read_text(encoding="utf-8").strip()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, secret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
