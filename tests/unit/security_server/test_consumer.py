"""Pure helpers of the consumer proxy, and what it remembers."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from ruta.ids import MemberId, SubsystemId
from ruta.pki.certs import certificate_pem, load_certificate
from ruta.pki.testing import TestPki
from security_server import consumer
from security_server.consumer import is_loopback_peer


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        ("ipv4:127.0.0.1:5000", True),
        ("ipv4:127.1.2.3:1", True),
        ("ipv6:[::1]:5000", True),
        ("ipv6:[::ffff:127.0.0.1]:5000", True),
        ("ipv4:10.0.0.1:5000", False),
        ("ipv6:[::ffff:10.0.0.1]:5000", False),
        ("ipv6:[2001:db8::1]:5000", False),
        ("unix:/tmp/socket", False),
        ("", False),
        ("ipv4:not-an-ip:1", False),
    ],
)
def testis_loopback_peer(peer: str, loopback: bool) -> None:
    assert is_loopback_peer(peer) is loopback


def test_backend_certificates_are_read_once_and_remembered_within_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = TestPki(tmp_path / "pki")
    subsystem = SubsystemId.parse("DEV/GOV/SOC/benefits")
    backend_pem = certificate_pem(pki.subsystem(subsystem).certificate)
    gateway_pem = certificate_pem(pki.gateway("DEV/GOV/SOC").certificate)
    reads: list[bytes] = []

    def counting(pem: bytes) -> x509.Certificate:
        reads.append(pem)
        return load_certificate(pem)

    monkeypatch.setattr(consumer, "load_certificate", counting)
    consumer._caller_named.cache_clear()

    for _ in range(3):
        assert consumer._caller_named(backend_pem) == (None, subsystem)
        assert consumer._caller_named(gateway_pem) == (MemberId.parse("DEV/GOV/SOC"), None)
    assert reads == [backend_pem, gateway_pem]
    # What does not parse names nobody (the caller is refused as unauthenticated).
    assert consumer._caller_named(b"not a certificate") == (None, None)
    info = consumer._caller_named.cache_info()
    assert info.maxsize == consumer.MAX_CACHED_CALLER_CERTIFICATES
    consumer._caller_named.cache_clear()
