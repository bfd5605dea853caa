"""Reading log verifier keys: every key the checkpoint module writes reads back."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.errors import InvalidRequestError
from registry.log_keys import parse_vkey
from ruta.checkpoint import SignatureType, Verifier


@settings(max_examples=50)
@given(seed=st.binary(min_size=32, max_size=32))
def test_every_written_key_reads_back(seed: bytes) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    written = Verifier.for_key("LAC/GOV/POP/ss1", SignatureType.ED25519, key)
    read = parse_vkey(written.vkey())
    assert read.key_id == written.key_id
    assert read.name == "LAC/GOV/POP/ss1"


def _vkey(kind: SignatureType = SignatureType.ED25519) -> str:
    return Verifier.for_key("origin", kind, Ed25519PrivateKey.generate()).vkey()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "origin",
        "origin+1234abcd",
        "origin+XYZ+AAAA",
        "+12345678+AAAA",
        _vkey(SignatureType.COSIGNATURE_V1),
        _vkey().rsplit("+", 1)[0] + "+AAAA",
        "origin+00000000+" + _vkey().split("+", 2)[2],
        "x" * 600,
    ],
)
def test_malformed_keys_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_vkey(text)
