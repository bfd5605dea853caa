"""Private keys and the :class:`Signer` seam.

ECDSA P-256 keys sign TLS handshakes and messages; Ed25519 keys sign log checkpoints. Keys are
generated where they are used and never leave that host. Key files are PKCS#8 PEM, written with
mode 0600 (created that way, never widened), optionally encrypted with a passphrase.

Callers that sign hold a :class:`Signer`, never a key: a hardware module (PKCS#11) can replace
:class:`FileSigner` later without touching them.
"""

from __future__ import annotations

import enum
import os
import stat
from pathlib import Path
from typing import Final, Protocol, Self, runtime_checkable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ruta.files import FileReadError, read_bounded, write_atomically
from ruta.pki.errors import KeyFileError

__all__ = [
    "MAX_KEY_FILE_BYTES",
    "FileSigner",
    "PrivateKey",
    "PublicKey",
    "SignatureAlgorithm",
    "Signer",
    "generate_ec_key",
    "generate_ed25519_key",
    "load_private_key",
    "private_key_from_pem",
    "save_private_key",
]

#: Largest private key file read (a PEM EC or Ed25519 key is a few hundred bytes).
MAX_KEY_FILE_BYTES: Final = 64 * 1024
#: The signature algorithm object, made once (immutable; checked by the library on each use).
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class SignatureAlgorithm(enum.StrEnum):
    """What a :class:`Signer` produces."""

    #: ECDSA over P-256 with SHA-256, DER-encoded (r, s) — messages and TLS.
    ECDSA_P256_SHA256 = "ecdsa-p256-sha256"
    #: Ed25519 (RFC 8032) — log checkpoints.
    ED25519 = "ed25519"


@runtime_checkable
class Signer(Protocol):
    """Something that signs bytes with a private key it may not reveal."""

    @property
    def algorithm(self) -> SignatureAlgorithm:
        """The algorithm :meth:`sign` uses."""
        ...

    def public_key(self) -> PublicKey:
        """The public half, to match against a certificate."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` (the whole message, hashed inside) and return the signature bytes."""
        ...


def generate_ec_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def generate_ed25519_key() -> ed25519.Ed25519PrivateKey:
    """A fresh Ed25519 private key."""
    return ed25519.Ed25519PrivateKey.generate()


def save_private_key(
    path: str | os.PathLike[str], key: PrivateKey, passphrase: bytes | None = None
) -> None:
    """Write ``key`` as PKCS#8 PEM to ``path`` with mode 0600, replacing any file there.

    With a ``passphrase`` the file is encrypted (best available PKCS#8 encryption). The file is
    written beside the target and renamed into place, so a crash leaves the old file or the new
    one, never half a key. Raises :class:`KeyFileError` when the file cannot be written.
    """
    target = Path(path)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    try:
        write_atomically(target, pem, mode=0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot write private key file ({exc.strerror})") from exc


def load_private_key(path: str | os.PathLike[str], passphrase: bytes | None = None) -> PrivateKey:
    """Read a PEM (PKCS#8 or traditional) EC or Ed25519 private key.

    Refuses a file readable or writable by group or others (it must be 0600 or stricter), a file
    over :data:`MAX_KEY_FILE_BYTES`, a wrong or missing passphrase, and any other key type, with
    :class:`KeyFileError`. The message never contains the path or key material.
    """
    target = Path(path)
    try:
        info = target.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                "private key file is accessible to group or others; restrict it to mode 0600"
            )
        data = read_bounded(target, MAX_KEY_FILE_BYTES, what="private key file", show_name=False)
    except FileReadError as exc:
        raise KeyFileError(exc.message) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read private key file ({exc.strerror})") from exc
    return private_key_from_pem(data, passphrase)


def private_key_from_pem(data: bytes, passphrase: bytes | None = None) -> PrivateKey:
    """Parse a PEM private key held in memory; same refusals as :func:`load_private_key`."""
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as exc:
        # Raised for an encrypted key without passphrase, or a passphrase for a plain key.
        raise KeyFileError(
            "private key is encrypted and needs a passphrase"
            if not passphrase
            else "private key is not encrypted; give no passphrase"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError("private key cannot be read: wrong passphrase or not a PEM key") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        return key
    raise KeyFileError(f"unsupported private key type {type(key).__name__}; use EC or Ed25519")


class FileSigner:
    """A :class:`Signer` over a private key held in this process (read from a file or made here).

    An EC P-256 key signs ECDSA/SHA-256 (DER signatures); an Ed25519 key signs Ed25519.
    """

    def __init__(self, key: PrivateKey) -> None:
        if isinstance(key, ed25519.Ed25519PrivateKey):
            self._algorithm = SignatureAlgorithm.ED25519
        elif isinstance(key.curve, ec.SECP256R1):
            self._algorithm = SignatureAlgorithm.ECDSA_P256_SHA256
        else:
            raise KeyFileError(f"unsupported EC curve {key.curve.name}; signing keys are P-256")
        self._key = key
        # The key by kind, judged once (an ABC's isinstance is two Python calls a signature).
        self._ed25519 = key if isinstance(key, ed25519.Ed25519PrivateKey) else None
        self._ec = None if isinstance(key, ed25519.Ed25519PrivateKey) else key

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], passphrase: bytes | None = None) -> Self:
        """Load the key at ``path`` (see :func:`load_private_key` for refusals)."""
        return cls(load_private_key(path, passphrase))

    @property
    def algorithm(self) -> SignatureAlgorithm:
        return self._algorithm

    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        if self._ec is not None:
            return self._ec.sign(data, _ECDSA_SHA256)
        assert self._ed25519 is not None  # noqa: S101 - one of the two is set at construction
        return self._ed25519.sign(data)

    def __repr__(self) -> str:
        return f"FileSigner(algorithm={self._algorithm.value})"
