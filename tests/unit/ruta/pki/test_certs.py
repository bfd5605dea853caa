"""Certificate profiles, SAN readers and bounded parsing."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ruta.ids import MemberId, ServerId, SubsystemId
from ruta.pki.certs import (
    DOCUMENT_SIGNING,
    MAX_CSR_BYTES,
    CertificateKind,
    CertificateProfileError,
    Role,
    RoleName,
    certificate_pem,
    fingerprint,
    gateway_member_of,
    load_certificate,
    load_certificates,
    load_csr,
    make_csr,
    member_id_of,
    parse_role,
    profile_names,
    roles_of,
    server_id_of,
    subsystem_id_of,
)
from ruta.pki.errors import MalformedCertificateError
from ruta.pki.keys import generate_ec_key
from ruta.pki.testing import DEFAULT_TEST_OCSP_URL, TestPki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"), intermediate=True)


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _ocsp_urls(cert: x509.Certificate) -> list[str]:
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    return [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
    ]


def test_auth_profile(pki: TestPki) -> None:
    cred = pki.auth("LAC/GOV/POP/ss1")
    cert = cred.certificate
    assert server_id_of(cert) == ServerId.parse("LAC/GOV/POP/ss1")
    assert _eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.content_commitment
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert _ocsp_urls(cert) == [DEFAULT_TEST_OCSP_URL]
    with pytest.raises(CertificateProfileError):
        member_id_of(cert)


def test_sign_subsystem_role_profiles(pki: TestPki) -> None:
    sign = pki.sign("LAC/GOV/POP").certificate
    assert member_id_of(sign) == MemberId.parse("LAC/GOV/POP")
    assert _eku(sign) == [DOCUMENT_SIGNING]
    usage = sign.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.content_commitment

    sub = pki.subsystem("LAC/GOV/POP/registry").certificate
    assert subsystem_id_of(sub) == SubsystemId.parse("LAC/GOV/POP/registry")
    assert _eku(sub) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    admin = pki.role("member-admin", "LAC/GOV/POP").certificate
    assert roles_of(admin) == {Role(RoleName.MEMBER_ADMIN, MemberId.parse("LAC/GOV/POP"))}
    assert roles_of(pki.role("auditor-supervisor").certificate) == {
        Role(RoleName.AUDITOR_SUPERVISOR)
    }
    scoped = pki.roles("auditor:LAC/GOV/POP", "auditor-bodies:LAC/GOV/POP").certificate
    assert roles_of(scoped) == {
        Role(RoleName.AUDITOR, MemberId.parse("LAC/GOV/POP")),
        Role(RoleName.AUDITOR_BODIES, MemberId.parse("LAC/GOV/POP")),
    }
    assert roles_of(sub) == frozenset()

    ocsp = pki.ocsp_responder.certificate
    assert _eku(ocsp) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    ocsp.extensions.get_extension_for_class(x509.OCSPNoCheck)


def test_gateway_profile_names_a_member_and_nothing_else(pki: TestPki) -> None:
    gateway = pki.gateway("LAC/GOV/POP").certificate
    assert gateway_member_of(gateway) == MemberId.parse("LAC/GOV/POP")
    assert _eku(gateway) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # Not a subsystem, not a signer: the consumer port treats it only as the member's gateway.
    with pytest.raises(CertificateProfileError):
        subsystem_id_of(gateway)
    with pytest.raises(CertificateProfileError):
        member_id_of(gateway)
    assert gateway_member_of(pki.subsystem("LAC/GOV/POP/registry").certificate) is None


def test_intermediate_chain(pki: TestPki) -> None:
    leaf = pki.sign("LAC/GOV/POP").certificate
    leaf.verify_directly_issued_by(pki.chain[0])
    pki.chain[0].verify_directly_issued_by(pki.root.certificate)
    assert pki.trust_anchors == [pki.root.certificate]


@pytest.mark.parametrize(
    ("kind", "options", "text"),
    [
        (CertificateKind.AUTH, {}, "need a server identifier"),
        (CertificateKind.SIGN, {"server": ServerId.parse("A/B/C/s")}, "need a member"),
        (
            CertificateKind.SIGN,
            {"member": MemberId.parse("A/B/C"), "server": ServerId.parse("A/B/C/s")},
            "not server",
        ),
        (CertificateKind.SIGN, {"member": MemberId.parse("A/B/C"), "dns_names": ["x"]}, "DNS"),
        (CertificateKind.AUTH, {"server": ServerId.parse("A/B/C/s"), "ip_addresses": ["x"]}, "IP"),
        (CertificateKind.OCSP, {}, "no identifier"),
    ],
)
def test_profile_names_refusals(
    kind: CertificateKind, options: dict[str, object], text: str
) -> None:
    with pytest.raises(CertificateProfileError, match=text):
        profile_names(kind, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("member-admin", "names a member"),
        ("auditor", "the instance-wide auditor is auditor-supervisor"),
        ("registry-admin:A/B/C", "names no member"),
        ("auditor-supervisor:A/B/C", "names no member"),
        ("auditor-bodies:A/B", "member"),
    ],
)
def test_roles_name_a_member_exactly_where_they_must(text: str, message: str) -> None:
    with pytest.raises(CertificateProfileError, match=message):
        parse_role(text)


@pytest.mark.parametrize(
    ("texts", "refused"),
    [
        (("auditor:A/B/C", "auditor-bodies:A/B/C"), False),
        (("auditor-supervisor", "auditor-bodies"), False),
        (("auditor-supervisor", "auditor-bodies:A/B/C"), False),
        (("auditor-bodies:A/B/C",), True),
        (("auditor:A/B/D", "auditor-bodies:A/B/C"), True),
        (("auditor:A/B/C", "auditor-bodies"), True),
        (("member-admin:A/B/C", "auditor-bodies:A/B/C"), True),
    ],
)
def test_a_body_privilege_needs_a_reader_role_as_wide(
    texts: tuple[str, ...], refused: bool
) -> None:
    roles = [parse_role(t) for t in texts]
    if refused:
        with pytest.raises(CertificateProfileError, match="does not read the log"):
            profile_names(CertificateKind.ROLE, roles=roles)
    else:
        profile_names(CertificateKind.ROLE, roles=roles)


def test_fingerprint_and_loaders(pki: TestPki) -> None:
    cert = pki.sign("LAC/GOV/POP").certificate
    der = cert.public_bytes(serialization.Encoding.DER)
    assert fingerprint(cert) == hashlib.sha256(der).hexdigest()
    assert load_certificate(der) == cert
    assert load_certificate(certificate_pem(cert)) == cert
    bundle = certificate_pem(cert, pki.ca.certificate, pki.root.certificate)
    assert load_certificates(bundle) == [cert, pki.ca.certificate, pki.root.certificate]
    with pytest.raises(MalformedCertificateError):
        load_certificates(bundle, limit=2)
    with pytest.raises(MalformedCertificateError):
        load_certificate(bundle)


def test_csr_round_trip_and_bounds(tmp_path: Path) -> None:
    key = generate_ec_key()
    csr = make_csr(key, "LAC/GOV/POP")

    pem = csr.public_bytes(serialization.Encoding.PEM)
    assert load_csr(pem).public_key() == key.public_key()
    assert load_csr(csr.public_bytes(serialization.Encoding.DER)) == csr
    with pytest.raises(MalformedCertificateError, match="larger"):
        load_csr(b"x" * (MAX_CSR_BYTES + 1))
    # A CSR whose signature does not verify: flip a byte of the signature (the last bytes).
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01
    with pytest.raises(MalformedCertificateError):
        load_csr(bytes(der))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_loaders_never_crash(data: bytes) -> None:
    for loader in (load_certificate, load_certificates, load_csr):
        with contextlib.suppress(MalformedCertificateError):
            loader(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000))
def test_pem_armoured_garbage_never_crashes(data: bytes) -> None:

    pem = (
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(data) + b"-----END CERTIFICATE-----\n"
    )
    with pytest.raises(MalformedCertificateError):
        load_certificate(pem)
