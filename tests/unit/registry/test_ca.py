"""The CA directory: initialise (root, intermediate), issue from CSRs, revoke, share state."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from registry.ca import CertificateAuthority, parse_reason
from registry.errors import AlreadyExistsError, InvalidRequestError, NotFoundError, StoreError
from ruta.ids import MemberId, ServerId, SubsystemId
from ruta.pki.certs import (
    CertificateKind,
    CertificateProfileError,
    Role,
    RoleName,
    make_csr,
    member_id_of,
    roles_of,
    server_id_of,
    subsystem_id_of,
)
from ruta.pki.errors import KeyFileError, MalformedCertificateError
from ruta.pki.keys import generate_ec_key
from ruta.pki.ocsp import CertStatus, ocsp_url_of

OCSP_URL = "http://127.0.0.1:9/ocsp"
POP = MemberId.parse("LAC/GOV/POP")


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.initialise(
        tmp_path / "ca", common_name="Test CA", ocsp_url=OCSP_URL
    )


def _csr(der: bool = False) -> bytes:
    csr = make_csr(generate_ec_key(), "ignored")
    return csr.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


def test_initialise_root_layout_and_modes(ca: CertificateAuthority) -> None:
    d = ca.directory
    for name in ("ca.json", "ca.key", "ca.pem", "anchor.pem", "ocsp.key", "ocsp.pem"):
        assert (d / name).is_file(), name
    assert stat.S_IMODE((d / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "ocsp.key").stat().st_mode) == 0o600
    assert ca.trust_anchor == ca.certificate
    assert ca.chain == []
    basic = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca
    eku = ca.ocsp_certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    ca.ocsp_certificate.verify_directly_issued_by(ca.certificate)
    with pytest.raises(AlreadyExistsError):
        CertificateAuthority.initialise(d, common_name="again", ocsp_url=OCSP_URL)


def test_initialise_intermediate_under_existing_root(tmp_path: Path) -> None:
    root = CertificateAuthority.initialise(tmp_path / "root", common_name="Root", ocsp_url=OCSP_URL)
    root_key = root._ca_key()
    sub = CertificateAuthority.initialise(
        tmp_path / "sub",
        common_name="Issuing",
        ocsp_url=OCSP_URL,
        parent_key=root_key,
        parent_certificate=root.certificate,
    )
    assert sub.trust_anchor == root.certificate
    assert sub.chain == [sub.certificate]
    sub.certificate.verify_directly_issued_by(root.certificate)
    cert = sub.issue(_csr(), CertificateKind.SIGN, member=POP)
    cert.verify_directly_issued_by(sub.certificate)
    # Reopened from disk, the same chain comes back.
    again = CertificateAuthority.open(tmp_path / "sub")
    assert again.chain == [sub.certificate]
    assert again.trust_anchor == root.certificate
    # A third level, under the intermediate.
    third = CertificateAuthority.initialise(
        tmp_path / "third",
        common_name="Third",
        ocsp_url=OCSP_URL,
        parent_key=sub._ca_key(),
        parent_certificate=sub.certificate,
        parent_chain=[root.certificate],
    )
    assert third.chain == [third.certificate, sub.certificate]
    assert third.trust_anchor == root.certificate


def test_initialise_refusals(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="OCSP URL"):
        CertificateAuthority.initialise(tmp_path / "a", common_name="x", ocsp_url="ftp://x")
    with pytest.raises(InvalidRequestError, match="both"):
        CertificateAuthority.initialise(
            tmp_path / "b", common_name="x", ocsp_url=OCSP_URL, parent_key=generate_ec_key()
        )
    root = CertificateAuthority.initialise(tmp_path / "r", common_name="R", ocsp_url=OCSP_URL)
    with pytest.raises(InvalidRequestError, match="does not belong"):
        CertificateAuthority.initialise(
            tmp_path / "c",
            common_name="x",
            ocsp_url=OCSP_URL,
            parent_key=generate_ec_key(),
            parent_certificate=root.certificate,
        )


@pytest.mark.parametrize("der", [False, True])
def test_issue_every_kind(ca: CertificateAuthority, der: bool) -> None:
    auth = ca.issue(
        _csr(der),
        CertificateKind.AUTH,
        server=ServerId.parse("LAC/GOV/POP/ss1"),
        dns_names=["ss1.pop.example"],
        ip_addresses=["10.0.0.1"],
    )
    assert server_id_of(auth) == ServerId.parse("LAC/GOV/POP/ss1")
    sign = ca.issue(_csr(der), CertificateKind.SIGN, member=POP)
    assert member_id_of(sign) == POP
    sub = ca.issue(
        _csr(der), CertificateKind.SUBSYSTEM, subsystem=SubsystemId.parse("LAC/GOV/POP/reg")
    )
    assert subsystem_id_of(sub) == SubsystemId.parse("LAC/GOV/POP/reg")
    role = ca.issue(
        _csr(der),
        CertificateKind.ROLE,
        roles=[Role(RoleName.AUDITOR_SUPERVISOR), Role(RoleName.MEMBER_ADMIN, POP)],
    )
    assert roles_of(role) == {Role(RoleName.AUDITOR_SUPERVISOR), Role(RoleName.MEMBER_ADMIN, POP)}
    for cert in (auth, sign, sub, role):
        cert.verify_directly_issued_by(ca.certificate)
        assert ocsp_url_of(cert) == OCSP_URL
        assert ca.issued(cert.serial_number) == cert
        assert ca.status(cert.serial_number) == (CertStatus.GOOD, None)
    assert set(ca.issued_serials()) == {c.serial_number for c in (auth, sign, sub, role)}


def test_issue_refusals_record_nothing(ca: CertificateAuthority) -> None:
    with pytest.raises(MalformedCertificateError):
        ca.issue(b"not a csr", CertificateKind.SIGN, member=POP)
    with pytest.raises(CertificateProfileError):
        ca.issue(_csr(), CertificateKind.SIGN, server=ServerId.parse("A/B/C/s"))
    with pytest.raises(InvalidRequestError):
        ca.issue(_csr(), CertificateKind.OCSP)
    p384 = make_csr(ec.generate_private_key(ec.SECP384R1()), "x")
    with pytest.raises(CertificateProfileError, match="not allowed"):
        ca.issue(p384, CertificateKind.SIGN, member=POP)
    small_rsa = make_csr_rsa(1024)
    with pytest.raises(CertificateProfileError, match="2048"):
        ca.issue(small_rsa, CertificateKind.AUTH, server=ServerId.parse("A/B/C/s"))
    assert list(ca.issued_serials()) == []
    # An RSA 2048 key is fine for TLS, and P-384 for auth.
    ca.issue(make_csr_rsa(2048), CertificateKind.AUTH, server=ServerId.parse("A/B/C/s"))
    ca.issue(p384, CertificateKind.AUTH, server=ServerId.parse("A/B/C/s"))


def make_csr_rsa(bits: int) -> x509.CertificateSigningRequest:
    key = rsa.generate_private_key(65537, bits)
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )


def test_validity_capped_by_the_ca(ca: CertificateAuthority) -> None:
    cert = ca.issue(
        _csr(), CertificateKind.SIGN, member=POP, validity=datetime.timedelta(days=100 * 365)
    )
    assert cert.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_revocation_is_shared_between_instances(ca: CertificateAuthority) -> None:
    cert = ca.issue(_csr(), CertificateKind.SIGN, member=POP)
    other = CertificateAuthority.open(ca.directory)  # as another process would
    assert other.status(cert.serial_number)[0] is CertStatus.GOOD
    record = ca.revoke(cert.serial_number, x509.ReasonFlags.key_compromise)
    status, seen = other.status(cert.serial_number)
    assert status is CertStatus.REVOKED
    assert seen == record
    assert seen.reason is x509.ReasonFlags.key_compromise
    with pytest.raises(AlreadyExistsError):
        other.revoke(cert.serial_number)
    with pytest.raises(NotFoundError):
        ca.revoke(12345)
    assert ca.status(12345) == (CertStatus.UNKNOWN, None)


def test_encrypted_ca_key(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    CertificateAuthority.initialise(d, common_name="E", ocsp_url=OCSP_URL, passphrase=b"s3cret")
    assert b"ENCRYPTED" in (d / "ca.key").read_bytes()
    # Opening for OCSP needs no passphrase; issuing does.
    responder = CertificateAuthority.open(d)
    with pytest.raises(KeyFileError):
        responder.issue(_csr(), CertificateKind.SIGN, member=POP)
    CertificateAuthority.open(d, passphrase=b"s3cret").issue(
        _csr(), CertificateKind.SIGN, member=POP
    )


def test_open_missing_and_damaged(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        CertificateAuthority.open(tmp_path / "none")
    d = tmp_path / "ca"
    CertificateAuthority.initialise(d, common_name="D", ocsp_url=OCSP_URL)
    (d / "ca.pem").write_bytes(b"garbage")
    with pytest.raises(StoreError) as info:
        CertificateAuthority.open(d)
    assert str(d) not in str(info.value)


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("keyCompromise", x509.ReasonFlags.key_compromise),
        ("key_compromise", x509.ReasonFlags.key_compromise),
        ("superseded", x509.ReasonFlags.superseded),
        ("unspecified", x509.ReasonFlags.unspecified),
    ],
)
def test_parse_reason(text: str, flag: x509.ReasonFlags) -> None:
    assert parse_reason(text) is flag


@pytest.mark.parametrize("text", ["removeFromCRL", "nonsense", ""])
def test_parse_reason_refusals(text: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_reason(text)
