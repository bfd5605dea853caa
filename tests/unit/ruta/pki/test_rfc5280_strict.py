"""Certificates cryptography only warns about today (a serial number that is not positive,
against RFC 5280) are refused as malformed by every Ruta parser of certificates it receives.

Found by fuzzing: the warning escaped the signature verifier and the anchor parser instead of
their typed errors (and a coming cryptography release raises it as an exception).
"""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from ruta.globalconf import ConfigurationAnchor
from ruta.ids import MemberId
from ruta.pki.certs import load_certificate, parse_der_certificate, parse_pem_certificates
from ruta.pki.errors import CertificateInvalidError, MalformedCertificateError
from ruta.pki.signature import MessageVerifier, sign_message
from ruta.pki.testing import TestPki
from ruta.settings import ConfigError

SOC = MemberId.parse("DEV/GOV/SOC")


def _negative_serial(der: bytes) -> bytes:
    """``der`` with its serial number made negative (the signature no longer matches; parsing
    is what is tested)."""
    at = der.index(b"\xa0\x03\x02\x01\x02\x02") + 7  # [0] version, then INTEGER serial
    patched = bytearray(der)
    patched[at] |= 0x80
    return bytes(patched)


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(Path(tmp_path_factory.mktemp("pki")))


def test_parsers_refuse_a_negative_serial(pki: TestPki) -> None:
    bad = _negative_serial(pki.sign(SOC).certificate.public_bytes(Encoding.DER))
    with pytest.raises(ValueError, match="RFC 5280"):
        parse_der_certificate(bad)
    with pytest.raises(ValueError, match="RFC 5280"):
        parse_pem_certificates(_pem(bad))
    with pytest.raises(MalformedCertificateError):
        load_certificate(bad)


def test_the_verifier_refuses_a_signature_carrying_one(pki: TestPki) -> None:
    signing = pki.sign(SOC)
    header = b"header bytes"
    signature = sign_message(
        header,
        signer=signing.signer(),
        certificate=signing.certificate,
        ocsp_response=pki.ocsp_response(signing.certificate),
    )
    signature.certificate = _negative_serial(signature.certificate)
    with pytest.raises(CertificateInvalidError):
        MessageVerifier(pki.trust_anchors).verify(
            header, signature, claimed_member=SOC, signed_at=datetime.datetime.now(datetime.UTC)
        )


def test_an_anchor_carrying_one_is_refused(pki: TestPki) -> None:
    good = pki.sign(SOC).certificate
    text = ConfigurationAnchor(
        instance="DEV", globalconf_url="http://127.0.0.1:9/globalconf", certificates=(good,)
    ).to_toml()
    pem = good.public_bytes(Encoding.PEM).decode()
    bad = _pem(_negative_serial(good.public_bytes(Encoding.DER))).decode()
    assert pem.strip() in text
    with pytest.raises(ConfigError):
        ConfigurationAnchor.from_text(text.replace(pem.strip(), bad.strip()))
