"""``ruta registry ca p12``: a key and its certificate as a passphrase-protected PKCS#12 file that
browsers (and OpenSSL) import; the passphrase never appears in the output."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.serialization import pkcs12

from registry.ca_cli import ca
from ruta.pki.testing import TestPki

PASSPHRASE = "correct horse battery"


def _run(tmp_path: Path, passphrase: str, *extra: str) -> tuple[int, str, Path]:
    pki = TestPki(tmp_path / "pki")
    admin = pki.role("registry-admin")
    secret = tmp_path / "passphrase"
    secret.write_text(passphrase + "\n")
    out = tmp_path / "admin.p12"
    result = CliRunner().invoke(
        ca,
        [
            "p12",
            "--key",
            str(admin.key_path),
            "--cert",
            str(admin.cert_path),
            "--chain",
            str(pki.trust_path),
            "--p12-passphrase-file",
            str(secret),
            "--out",
            str(out),
            *extra,
        ],
    )
    return result.exit_code, result.output + str(result.exception or ""), out


def test_the_p12_holds_the_key_certificate_and_chain_under_the_passphrase(
    tmp_path: Path,
) -> None:
    code, output, out = _run(tmp_path, PASSPHRASE, "--name", "Ana (registry)")
    assert code == 0, output
    assert PASSPHRASE not in output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    bundle = pkcs12.load_pkcs12(out.read_bytes(), PASSPHRASE.encode())
    assert bundle.key is not None
    assert bundle.cert is not None
    assert bundle.cert.friendly_name == b"Ana (registry)"
    assert bundle.key.public_key() == bundle.cert.certificate.public_key()
    assert len(bundle.additional_certs) == 1
    with pytest.raises(ValueError, match="Invalid password"):
        pkcs12.load_pkcs12(out.read_bytes(), b"wrong passphrase")


def test_a_short_passphrase_is_refused_and_not_echoed(tmp_path: Path) -> None:
    code, output, out = _run(tmp_path, "short")
    assert code != 0
    assert "at least 8 characters" in output
    assert "short\n" not in output
    assert not out.exists()
