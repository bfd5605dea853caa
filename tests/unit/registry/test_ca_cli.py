"""The ``ca`` command group in-process (the subprocess path is tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from registry.ca import CertificateAuthority
from registry.ca_cli import ca
from ruta.faults import RutaError
from ruta.ids import MemberId
from ruta.pki.certs import Role, RoleName, load_certificate, make_csr, roles_of
from ruta.pki.keys import generate_ec_key


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    result = CliRunner().invoke(
        ca, ["init", "--dir", str(tmp_path / "ca"), "--ocsp-url", "http://127.0.0.1:9/ocsp"]
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "ca"


def _csr(tmp_path: Path) -> Path:
    path = tmp_path / "req.csr"
    path.write_bytes(make_csr(generate_ec_key(), "x").public_bytes(serialization.Encoding.PEM))
    return path


def test_issue_role_certificates(ca_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "admin.pem"
    result = CliRunner().invoke(
        ca,
        [
            "issue", "--dir", str(ca_dir), "--csr", str(_csr(tmp_path)), "--kind", "role",
            "--role", "member-admin", "--member", "LAC/GOV/POP", "--role", "auditor",
            "--role", "auditor-bodies:LAC/GOV/POP", "--role", "auditor-supervisor",
            "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cert = load_certificate(out.read_bytes())
    assert format(cert.serial_number, "x") == result.output.strip()
    assert roles_of(cert) == {
        Role(RoleName.MEMBER_ADMIN, MemberId.parse("LAC/GOV/POP")),
        Role(RoleName.AUDITOR, MemberId.parse("LAC/GOV/POP")),
        Role(RoleName.AUDITOR_BODIES, MemberId.parse("LAC/GOV/POP")),
        Role(RoleName.AUDITOR_SUPERVISOR),
    }


@pytest.mark.parametrize(
    ("args", "fault"),
    [
        (["--kind", "sign", "--member", "not/a/member/id"], "client.invalid_identifier"),
        (["--kind", "sign", "--role", "auditor"], "client.invalid_request"),
        (["--kind", "sign", "--server", "LAC/GOV/POP/ss1"], "client.invalid_request"),
        (["--kind", "role", "--role", "emperor"], "client.unauthenticated"),
        # The bare auditor role is gone (docs/adr/0012): it names a member or is the supervisor.
        (["--kind", "role", "--role", "auditor"], "client.invalid_request"),
        # A body privilege wider than the log the certificate reads.
        (
            [
                "--kind",
                "role",
                "--role",
                "auditor",
                "--role",
                "auditor-bodies",
                "--member",
                "A/B/C",
            ],
            "client.invalid_request",
        ),
    ],
)
def test_issue_refusals_are_ruta_errors(
    ca_dir: Path, tmp_path: Path, args: list[str], fault: str
) -> None:
    result = CliRunner().invoke(
        ca,
        ["issue", "--dir", str(ca_dir), "--csr", str(_csr(tmp_path)), "--out", "x.pem", *args],
    )
    assert isinstance(result.exception, RutaError)
    assert str(result.exception.fault) == fault


@pytest.mark.parametrize(
    ("serial", "reason", "fault"),
    [
        ("zz", "unspecified", "client.invalid_request"),
        ("ab", "unspecified", "client.not_found"),
        ("ab", "bogus", "client.invalid_request"),
    ],
)
def test_revoke_refusals(ca_dir: Path, serial: str, reason: str, fault: str) -> None:
    result = CliRunner().invoke(
        ca, ["revoke", "--dir", str(ca_dir), "--serial", serial, "--reason", reason]
    )
    assert isinstance(result.exception, RutaError)
    assert str(result.exception.fault) == fault


def test_list_and_renew_ocsp(ca_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    issued = runner.invoke(
        ca,
        [
            "issue", "--dir", str(ca_dir), "--csr", str(_csr(tmp_path)), "--kind", "sign",
            "--member", "LAC/GOV/POP", "--out", str(tmp_path / "s.pem"),
        ],
    )  # fmt: skip
    serial = issued.output.strip()
    runner.invoke(ca, ["revoke", "--dir", str(ca_dir), "--serial", serial])
    listed = runner.invoke(ca, ["list", "--dir", str(ca_dir)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.startswith(f"{serial}\trevoked\t")
    assert "CN=LAC/GOV/POP" in listed.output

    before = (ca_dir / "ocsp.pem").read_bytes()
    renewed = runner.invoke(ca, ["renew-ocsp", "--dir", str(ca_dir)])
    assert renewed.exit_code == 0, renewed.output
    assert (ca_dir / "ocsp.pem").read_bytes() != before
    reopened = CertificateAuthority.open(ca_dir)
    assert reopened.ocsp_certificate.public_key() == reopened.ocsp_key.public_key()
    reopened.ocsp_certificate.verify_directly_issued_by(reopened.certificate)
