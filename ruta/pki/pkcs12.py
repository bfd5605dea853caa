"""PKCS#12 (``.p12``) files: a private key with its certificate and chain, encrypted with a
passphrase, in the form browsers and operating systems import (an administrator's or auditor's
client certificate for the consoles: docs/operator/console-certificates.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import PrivateFormat, pkcs12

from ruta.pki.errors import PkiError
from ruta.pki.keys import PrivateKey

__all__ = ["MIN_PASSPHRASE_CHARS", "PKCS12_KDF_ROUNDS", "pkcs12_bundle"]

#: Shortest passphrase accepted for a file that carries a private key.
MIN_PASSPHRASE_CHARS: Final = 8
#: PBKDF2 rounds of the key-encryption key (AES-256-CBC under PBES2, HMAC-SHA-256 MAC).
PKCS12_KDF_ROUNDS: Final = 200_000


def pkcs12_bundle(
    *,
    key: PrivateKey,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
    passphrase: bytes,
    name: str,
) -> bytes:
    """The PKCS#12 file of ``key`` and ``certificate`` (with ``chain``, the issuers up to the
    anchor), encrypted under ``passphrase`` with PBES2 / AES-256 (what current browsers and
    OpenSSL 3 import). ``name`` is the friendly name a browser shows.

    Raises :class:`PkiError` for a passphrase shorter than :data:`MIN_PASSPHRASE_CHARS` or a key
    that does not match the certificate. The passphrase is never part of an error.
    """
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise PkiError(f"the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters")
    if key.public_key() != certificate.public_key():
        raise PkiError("the private key does not belong to the certificate")
    encryption = (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(PKCS12_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(passphrase)
    )
    return pkcs12.serialize_key_and_certificates(
        name.encode(), key, certificate, list(chain) or None, encryption
    )
