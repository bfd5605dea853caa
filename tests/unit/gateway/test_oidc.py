"""ID token verification for the citizen's sign-in: only a token the configured issuer signed
with a key of its JWKS, for this client, in date, carrying this sign-in's nonce, is accepted."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.console.oidc import (
    MAX_TOKEN_AGE_SECONDS,
    IdTokenVerifier,
    IssuerUnavailableError,
    JwksCache,
    PendingSignIn,
    ProviderMetadata,
    SignInError,
)

ISSUER = "https://id.example.gov"
CLIENT = "ruta-citizen"
NOW = 1_800_000_000.0
NONCE = "n-0S6_WzA2Mj"


class Issuer:
    """A key pair and a JWKS that serves it (counting fetches)."""

    def __init__(self, kid: str = "k1") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = kid
        self.fetches = 0

    def jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "ES256"})
        return jwk

    async def fetch(self) -> Mapping[str, Any]:
        self.fetches += 1
        return {"keys": [self.jwk()]}

    def token(self, **overrides: Any) -> str:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": CLIENT,
            "sub": "4410000017",
            "iat": int(NOW),
            "exp": int(NOW) + 300,
            "nonce": NONCE,
            "name": "Ana Lucía",
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})


def verifier(issuer: Issuer, *, clock: float = NOW, claim: str = "sub") -> IdTokenVerifier:
    return IdTokenVerifier(
        issuer=ISSUER,
        client_id=CLIENT,
        keys=JwksCache(issuer.fetch, clock=lambda: clock),
        subject_claim=claim,
        clock=lambda: clock,
    )


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_a_good_token_gives_the_citizens_id() -> None:
    issuer = Issuer()
    identity = await verifier(issuer).verify(issuer.token(), nonce=NONCE)
    assert identity.subject == "4410000017"
    assert identity.name == "Ana Lucía"


async def test_the_subject_comes_from_the_configured_claim() -> None:
    issuer = Issuer()
    token = issuer.token(national_id="4410000033")
    identity = await verifier(issuer, claim="national_id").verify(token, nonce=NONCE)
    assert identity.subject == "4410000033"
    with pytest.raises(SignInError, match="national_id"):
        await verifier(issuer, claim="national_id").verify(issuer.token(), nonce=NONCE)


@pytest.mark.parametrize(
    ("overrides", "clock"),
    [
        pytest.param({"iss": "https://evil.example"}, NOW, id="wrong-issuer"),
        pytest.param({"aud": "another-client"}, NOW, id="wrong-audience"),
        pytest.param({"aud": [CLIENT, "other"]}, NOW, id="several-audiences-no-azp"),
        pytest.param({"exp": int(NOW) - 3600}, NOW, id="expired"),
        pytest.param({}, NOW + 3600, id="expired-by-the-clock"),
        pytest.param({"iat": int(NOW) + 3600, "exp": int(NOW) + 7200}, NOW, id="issued-in-future"),
        pytest.param({}, NOW + MAX_TOKEN_AGE_SECONDS + 120, id="issued-too-long-ago"),
        pytest.param({"nonce": "another-sign-in"}, NOW, id="nonce-mismatch"),
        pytest.param({"nonce": None}, NOW, id="no-nonce"),
        pytest.param({"sub": None}, NOW, id="no-subject"),
        pytest.param({"exp": None}, NOW, id="no-expiry"),
    ],
)
async def test_claims_that_do_not_fit_are_refused(overrides: dict[str, Any], clock: float) -> None:
    issuer = Issuer()
    token = issuer.token(**overrides)
    with pytest.raises(SignInError):
        await verifier(issuer, clock=clock).verify(token, nonce=NONCE)


async def test_a_token_signed_by_another_key_is_refused() -> None:
    issuer, forger = Issuer(), Issuer(kid="k1")  # same key id, other key
    with pytest.raises(SignInError, match="does not verify"):
        await verifier(issuer).verify(forger.token(), nonce=NONCE)


async def test_a_tampered_token_is_refused() -> None:
    issuer = Issuer()
    header, _payload, signature = issuer.token().split(".")
    forged = ".".join(
        [header, _b64({"iss": ISSUER, "aud": CLIENT, "sub": "4410000033"}), signature]
    )
    with pytest.raises(SignInError):
        await verifier(issuer).verify(forged, nonce=NONCE)


async def test_alg_none_is_refused() -> None:
    issuer = Issuer()
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "x", "iat": NOW, "exp": NOW + 60, "nonce": NONCE}
    unsigned = f"{_b64({'alg': 'none', 'kid': 'k1'})}.{_b64(claims)}."
    with pytest.raises(SignInError, match="algorithm"):
        await verifier(issuer).verify(unsigned, nonce=NONCE)
    assert issuer.fetches == 0  # refused before any key was looked up


async def test_an_hmac_token_keyed_with_the_public_key_is_refused() -> None:
    issuer = Issuer()
    # The classic confusion: the issuer's public key, as published, used as an HMAC secret.
    secret = json.dumps(issuer.jwk()).encode()
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "x", "iat": NOW, "exp": NOW + 60, "nonce": NONCE}
    signing_input = f"{_b64({'alg': 'HS256', 'kid': 'k1'})}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(SignInError, match="algorithm"):
        await verifier(issuer).verify(forged, nonce=NONCE)


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b", "x" * 20_000])
async def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(SignInError):
        await verifier(Issuer()).verify(token, nonce=NONCE)


async def test_the_jwks_is_cached_and_refetched_for_a_new_key_at_most_once_a_minute() -> None:
    issuer = Issuer()
    now = [NOW]
    cache = JwksCache(issuer.fetch, clock=lambda: now[0])
    check = IdTokenVerifier(issuer=ISSUER, client_id=CLIENT, keys=cache, clock=lambda: NOW)
    await check.verify(issuer.token(), nonce=NONCE)
    await check.verify(issuer.token(), nonce=NONCE)
    assert issuer.fetches == 1
    # The issuer rotates its key: a token naming the new key is refetched for, but only once
    # per minute however many such tokens arrive.
    issuer.key, issuer.kid = ec.generate_private_key(ec.SECP256R1()), "k2"
    with pytest.raises(SignInError):
        await check.verify(issuer.token(), nonce=NONCE)
    assert issuer.fetches == 1
    now[0] += 61
    await check.verify(issuer.token(), nonce=NONCE)
    assert issuer.fetches == 2


def test_discovery_must_name_the_configured_issuer_and_usable_endpoints() -> None:
    document = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
    }
    assert ProviderMetadata.from_document(document, issuer=ISSUER).jwks_uri == f"{ISSUER}/jwks"
    for bad in ({"issuer": "https://other"}, {"jwks_uri": "http://id.example.gov/jwks"}):
        with pytest.raises(IssuerUnavailableError, match=r"issuer|jwks_uri"):
            ProviderMetadata.from_document({**document, **bad}, issuer=ISSUER)


def test_a_pending_sign_in_matches_only_its_own_state() -> None:
    first, second = PendingSignIn.new(now=0), PendingSignIn.new(now=0)
    assert first.matches(first.state)
    assert not first.matches(second.state)
    assert not first.matches("")
    assert not first.matches(None)
    assert first.nonce != second.nonce
    assert first.verifier != second.verifier
    assert "=" not in first.challenge
    assert len(first.challenge) == 43


async def test_concurrent_sign_ins_share_one_jwks_fetch() -> None:
    issuer = Issuer()
    check = verifier(issuer)
    await asyncio.gather(*(check.verify(issuer.token(), nonce=NONCE) for _ in range(20)))
    assert issuer.fetches == 1
