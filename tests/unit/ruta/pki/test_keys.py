"""Private key files and signers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ruta.faults import Fault
from ruta.pki.errors import KeyFileError
from ruta.pki.keys import (
    FileSigner,
    SignatureAlgorithm,
    Signer,
    generate_ec_key,
    generate_ed25519_key,
    load_private_key,
    save_private_key,
)


@pytest.mark.parametrize("passphrase", [None, b"correct horse"])
@pytest.mark.parametrize("make", [generate_ec_key, generate_ed25519_key])
def test_round_trip_with_mode_0600(tmp_path: Path, make: object, passphrase: bytes | None) -> None:
    key = make()  # type: ignore[operator]
    path = tmp_path / "k.pem"
    save_private_key(path, key, passphrase)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    if passphrase:
        assert b"ENCRYPTED" in path.read_bytes()
    loaded = load_private_key(path, passphrase)
    assert loaded.public_key() == key.public_key()


def test_save_replaces_a_wider_file_and_stays_0600(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_text("old")
    path.chmod(0o644)
    save_private_key(path, generate_ec_key())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("setup", "load_with", "text"),
    [
        ("plain-0644", None, "group or others"),
        ("encrypted", None, "needs a passphrase"),
        ("encrypted", b"wrong", "wrong passphrase"),
        ("plain", b"unexpected", "not encrypted"),
        ("garbage", None, "cannot be read"),
        ("missing", None, "cannot read"),
        ("rsa", None, "unsupported private key type"),
    ],
)
def test_refusals_name_no_path(
    tmp_path: Path, setup: str, load_with: bytes | None, text: str
) -> None:
    path = tmp_path / "secret-dir" / "k.pem"
    path.parent.mkdir()
    if setup.startswith("plain"):
        save_private_key(path, generate_ec_key())
        if setup == "plain-0644":
            path.chmod(0o644)
    elif setup == "encrypted":
        save_private_key(path, generate_ec_key(), b"pw")
    elif setup == "garbage":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
        os.close(fd)
    elif setup == "rsa":
        pem = rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, pem)
        os.close(fd)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path, load_with)
    assert text in info.value.message
    assert "secret-dir" not in str(info.value)
    assert info.value.fault is Fault.CLIENT_INVALID_CONFIG


def test_file_signer_ecdsa_and_ed25519(tmp_path: Path) -> None:
    ec_path = tmp_path / "ec.pem"
    save_private_key(ec_path, generate_ec_key(), b"pw")
    signer = FileSigner.from_file(ec_path, b"pw")
    assert isinstance(signer, Signer)
    assert signer.algorithm is SignatureAlgorithm.ECDSA_P256_SHA256
    sig = signer.sign(b"header")
    public = signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(sig, b"header", ec.ECDSA(hashes.SHA256()))

    ed = FileSigner(generate_ed25519_key())
    assert ed.algorithm is SignatureAlgorithm.ED25519
    ed_public = ed.public_key()
    assert isinstance(ed_public, ed25519.Ed25519PublicKey)
    ed_public.verify(ed.sign(b"checkpoint"), b"checkpoint")
    assert "ed25519" in repr(ed)


def test_file_signer_refuses_other_curves() -> None:
    with pytest.raises(KeyFileError):
        FileSigner(ec.generate_private_key(ec.SECP384R1()))
