"""Citizens' sign-in with OpenID Connect (docs/adr/0031-citizen-sign-in.md): the authorization
code flow with PKCE (S256) and a nonce, ID tokens verified with PyJWT against the issuer's JWKS.

:class:`OidcClient` reads the issuer's discovery document (its ``issuer`` must be the configured
one exactly), builds the authorization URL of a :class:`PendingSignIn`, redeems the code at the
token endpoint and verifies the ID token it returns (:class:`IdTokenVerifier`): signature by a
key of the issuer's JWKS with an asymmetric algorithm (never ``none``, never HMAC), ``iss``,
``aud`` (and ``azp`` when several audiences), ``exp``, ``iat`` and ``nonce``. The JWKS is cached
(:class:`JwksCache`) for a bounded time and fetched again, at most once per
:data:`MIN_JWKS_REFRESH_SECONDS`, when a token names a key it does not hold (key rotation).
Every document read from the issuer is bounded in size.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote_plus, urlencode

import aiohttp
import jwt

from gateway.settings import check_issuer_url
from ruta.faults import Fault, RutaError

__all__ = [
    "ALLOWED_ALGORITHMS",
    "MAX_ID_TOKEN_CHARS",
    "MAX_ISSUER_DOCUMENT_BYTES",
    "MIN_JWKS_REFRESH_SECONDS",
    "CitizenIdentity",
    "IdTokenVerifier",
    "IssuerUnavailableError",
    "JwksCache",
    "OidcClient",
    "PendingSignIn",
    "ProviderMetadata",
    "SignInError",
]

#: Signature algorithms an ID token may use: asymmetric only, so a key published in the JWKS can
#: never be used as an HMAC secret, and ``none`` is never accepted.
ALLOWED_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
#: Largest discovery document, JWKS or token response read from the issuer.
MAX_ISSUER_DOCUMENT_BYTES: Final = 64 * 1024
#: Longest ID token accepted.
MAX_ID_TOKEN_CHARS: Final = 16 * 1024
#: Most keys of a JWKS considered.
MAX_JWKS_KEYS: Final = 32
#: How long a fetched JWKS is used before it is fetched again.
JWKS_MAX_AGE_SECONDS: Final = 3600.0
#: Least time between two fetches of the JWKS (a token naming an unknown key cannot make the
#: gateway hammer the issuer).
MIN_JWKS_REFRESH_SECONDS: Final = 60.0
#: Clock skew allowed on ``exp`` and ``iat``.
LEEWAY_SECONDS: Final = 60
#: Oldest ``iat`` accepted: a token is redeemed right after it is issued.
MAX_TOKEN_AGE_SECONDS: Final = 600
#: Bound on each request to the issuer.
ISSUER_TIMEOUT_SECONDS: Final = 10.0


class SignInError(RutaError):
    """The sign-in cannot be completed: a token or answer that does not verify, or a sign-in
    this gateway did not start. The message never contains the token."""

    default_fault = Fault.CLIENT_UNAUTHENTICATED


class IssuerUnavailableError(RutaError):
    """The issuer could not be reached, or answered with something unusable."""

    default_fault = Fault.SERVER_CONSUMER_NETWORK_ERROR


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """One sign-in in progress: what the browser's sign-in cookie is bound to. ``verifier`` is
    the PKCE code verifier; only its S256 challenge leaves the gateway before the redemption."""

    state: str
    nonce: str
    verifier: str
    started: float

    @classmethod
    def new(cls, *, now: float) -> PendingSignIn:
        return cls(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),
            started=now,
        )

    @property
    def challenge(self) -> str:
        return _b64url(hashlib.sha256(self.verifier.encode("ascii")).digest())

    def matches(self, state: str | None) -> bool:
        """Whether ``state`` (from the callback's query) is this sign-in's."""
        return bool(state) and hmac.compare_digest(self.state, str(state))


@dataclass(frozen=True, slots=True)
class CitizenIdentity:
    """Who signed in: ``subject`` is the claim the settings name (the citizen's id, what the logs
    record as the subject); ``name`` is shown only as a greeting."""

    subject: str
    name: str


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """What the gateway uses of the issuer's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str

    @classmethod
    def from_document(cls, document: Mapping[str, Any], *, issuer: str) -> ProviderMetadata:
        """The metadata of ``document``; raises :class:`IssuerUnavailableError` when its issuer
        is not ``issuer`` exactly or an endpoint is missing or not a URL the gateway may use."""
        if document.get("issuer") != issuer:
            raise IssuerUnavailableError("the issuer's discovery document names another issuer")
        endpoints: dict[str, str] = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(name)
            try:
                endpoints[name] = check_issuer_url(value if isinstance(value, str) else "")
            except ValueError:
                raise IssuerUnavailableError(
                    f"the issuer's discovery document has no usable {name}"
                ) from None
        return cls(issuer=issuer, **endpoints)


class JwksCache:
    """The issuer's signing keys, fetched with ``fetch`` (the JWKS document), kept for
    :data:`JWKS_MAX_AGE_SECONDS` and fetched again early (at most once per ``min_refresh``) when
    asked for a key it does not hold."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Mapping[str, Any]]],
        *,
        max_age: float = JWKS_MAX_AGE_SECONDS,
        min_refresh: float = MIN_JWKS_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._max_age = max_age
        self._min_refresh = min_refresh
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched: float | None = None
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        document = await self._fetch()
        raw = document.get("keys")
        if not isinstance(raw, list):
            raise IssuerUnavailableError("the issuer's JWKS holds no key list")
        keys: dict[str, jwt.PyJWK] = {}
        for entry in raw[:MAX_JWKS_KEYS]:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # a key type or curve this gateway does not use
            keys[str(entry.get("kid", ""))] = key
        self._keys = keys
        self._fetched = self._clock()

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key named ``kid`` (``""`` when the token names none and the set holds one
        unnamed key); raises :class:`SignInError` when the issuer does not publish it."""
        async with self._lock:  # concurrent sign-ins share one fetch
            now = self._clock()
            stale = self._fetched is None or now - self._fetched > self._max_age
            rotated = self._fetched is not None and now - self._fetched > self._min_refresh
            if stale or (kid not in self._keys and rotated):
                await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            raise SignInError("the ID token is signed with a key the issuer does not publish")
        return key


class IdTokenVerifier:
    """Verifies ID tokens of one issuer for one client (see the module docstring).
    ``clock`` is wall-clock seconds (a seam for tests)."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        keys: JwksCache,
        subject_claim: str = "sub",
        max_subject_chars: int = 255,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuer = issuer
        self._client_id = client_id
        self._keys = keys
        self._subject_claim = subject_claim
        self._max_subject = max_subject_chars
        self._clock = clock

    async def verify(self, token: str, *, nonce: str) -> CitizenIdentity:
        """The identity in ``token`` when it verifies and carries ``nonce``; raises
        :class:`SignInError` otherwise (wrong issuer or audience, expired, issued in the future
        or too long ago, bad signature, algorithm not allowed, nonce mismatch, no subject)."""
        if not token or len(token) > MAX_ID_TOKEN_CHARS:
            raise SignInError("the issuer returned no usable ID token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise SignInError("the ID token is not a signed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise SignInError("the ID token's signature algorithm is not accepted")
        kid = header.get("kid", "")
        key = await self._keys.key(kid if isinstance(kid, str) else "")
        try:
            # Times are checked below against this verifier's clock (a seam for tests).
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=self._client_id,
                issuer=self._issuer,
                options={
                    "require": ["iss", "aud", "exp", "iat", "sub", "nonce"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise SignInError(f"the ID token does not verify ({type(exc).__name__})") from None
        now = self._clock()
        exp, iat, nbf = claims["exp"], claims["iat"], claims.get("nbf", 0)
        if not all(isinstance(t, int | float) for t in (exp, iat, nbf)):
            raise SignInError("the ID token's times are not numbers")
        if exp <= now - LEEWAY_SECONDS:
            raise SignInError("the ID token has expired; sign in again")
        if iat > now + LEEWAY_SECONDS or nbf > now + LEEWAY_SECONDS:
            raise SignInError("the ID token was issued in the future")
        if iat < now - MAX_TOKEN_AGE_SECONDS:
            raise SignInError("the ID token was issued too long ago; sign in again")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self._client_id:
            raise SignInError("the ID token was issued to another party")
        if not isinstance(claims["nonce"], str) or not hmac.compare_digest(claims["nonce"], nonce):
            raise SignInError("the ID token belongs to another sign-in")
        subject = claims.get(self._subject_claim)
        if not isinstance(subject, str) or not subject or len(subject) > self._max_subject:
            raise SignInError(
                f"the ID token carries no usable {self._subject_claim} claim (the citizen's id)"
            )
        name = claims.get("name")
        return CitizenIdentity(subject=subject, name=name[:200] if isinstance(name, str) else "")


async def _read_json(response: aiohttp.ClientResponse, what: str) -> Mapping[str, Any]:
    body = await response.content.read(MAX_ISSUER_DOCUMENT_BYTES + 1)
    if len(body) > MAX_ISSUER_DOCUMENT_BYTES:
        raise IssuerUnavailableError(f"the issuer's {what} is larger than allowed")
    try:
        document = json.loads(body)
    except ValueError:
        raise IssuerUnavailableError(f"the issuer's {what} is not JSON") from None
    if not isinstance(document, dict):
        raise IssuerUnavailableError(f"the issuer's {what} is not a JSON object")
    return document


class OidcClient:
    """The gateway as an OpenID Connect relying party of one issuer (see the module docstring).

    ``client_secret`` is sent to the token endpoint only (HTTP Basic), never logged or shown.
    Close with :meth:`close`."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        subject_claim: str = "sub",
        max_subject_chars: int = 255,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._issuer = check_issuer_url(issuer)
        self._client_id = client_id
        self._client_secret = client_secret
        self.redirect_uri = redirect_uri
        self._http = session
        self._metadata: ProviderMetadata | None = None
        self._keys = JwksCache(self._fetch_jwks)
        self._verifier = IdTokenVerifier(
            issuer=issuer,
            client_id=client_id,
            keys=self._keys,
            subject_claim=subject_claim,
            max_subject_chars=max_subject_chars,
        )

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=ISSUER_TIMEOUT_SECONDS)
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _get(self, url: str, what: str) -> Mapping[str, Any]:
        try:
            async with self._session().get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise IssuerUnavailableError(
                        f"the issuer's {what} answered HTTP {response.status}"
                    )
                return await _read_json(response, what)
        except (aiohttp.ClientError, TimeoutError):
            raise IssuerUnavailableError(f"the issuer's {what} could not be reached") from None

    async def metadata(self) -> ProviderMetadata:
        """The issuer's discovery document, read once; raises :class:`IssuerUnavailableError`."""
        if self._metadata is None:
            document = await self._get(
                self._issuer.rstrip("/") + "/.well-known/openid-configuration",
                "discovery document",
            )
            self._metadata = ProviderMetadata.from_document(document, issuer=self._issuer)
        return self._metadata

    async def _fetch_jwks(self) -> Mapping[str, Any]:
        return await self._get((await self.metadata()).jwks_uri, "JWKS")

    async def authorization_url(self, pending: PendingSignIn) -> str:
        """Where to send the browser to sign in for ``pending``."""
        endpoint = (await self.metadata()).authorization_endpoint
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._client_id,
                "redirect_uri": self.redirect_uri,
                "scope": "openid profile",
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": pending.challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def redeem(self, code: str, pending: PendingSignIn) -> CitizenIdentity:
        """Exchange ``code`` (from the callback of ``pending``) for a verified identity; raises
        :class:`SignInError` or :class:`IssuerUnavailableError`."""
        if not code or len(code) > 2048:
            raise SignInError("the issuer's answer carries no usable code")
        endpoint = (await self.metadata()).token_endpoint
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": pending.verifier,
            "client_id": self._client_id,
        }
        # RFC 6749 s.2.3.1: each part form-urlencoded, then HTTP Basic.
        pair = f"{quote_plus(self._client_id)}:{quote_plus(self._client_secret)}"
        auth = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
        try:
            async with self._session().post(
                endpoint, data=form, headers=auth, allow_redirects=False
            ) as response:
                if response.status in (400, 401):
                    raise SignInError("the issuer refused the sign-in code; sign in again")
                if response.status != 200:
                    raise IssuerUnavailableError(
                        f"the issuer's token endpoint answered HTTP {response.status}"
                    )
                answer = await _read_json(response, "token response")
        except (aiohttp.ClientError, TimeoutError):
            raise IssuerUnavailableError(
                "the issuer's token endpoint could not be reached"
            ) from None
        token = answer.get("id_token")
        if not isinstance(token, str):
            raise SignInError("the issuer returned no ID token")
        return await self._verifier.verify(token, nonce=pending.nonce)
