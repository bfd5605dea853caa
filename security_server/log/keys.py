"""The message log's body encryption key: 32 random bytes in a 0600 file in the server's key dir.

The key is generated on first use and never leaves the host; it is never logged, and no error
names its path. Bodies are sealed with AES-256-GCM (:mod:`security_server.log.bodies`). Each key
has a short public ``key_id`` (a digest, not the key) stored beside each body, so a later key
rotation can keep opening bodies sealed under an older key.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ruta.files import FileProblem, FileReadError, read_bounded, write_atomically
from security_server.log.errors import LogKeyError

__all__ = ["BODY_KEY_FILE", "BODY_KEY_SIZE", "BodyKey", "load_or_create_body_key"]

#: File name of the body key inside the server's key directory.
BODY_KEY_FILE: Final = "log-body.key"
#: AES-256 key size in bytes (also the exact size of the key file).
BODY_KEY_SIZE: Final = 32
_KEY_ID_CONTEXT: Final = b"ruta log body key id v1\x00"


@dataclass(frozen=True, slots=True)
class BodyKey:
    """An AES-256 key for log bodies. ``repr`` never shows the key."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != BODY_KEY_SIZE:
            raise LogKeyError(f"a log body key is {BODY_KEY_SIZE} bytes")

    @property
    def key_id(self) -> str:
        """A public 16-hex-digit name of the key (a one-way digest of it)."""
        return hashlib.sha256(_KEY_ID_CONTEXT + self.key).hexdigest()[:16]

    @classmethod
    def generate(cls) -> BodyKey:
        """A fresh random key."""
        return cls(secrets.token_bytes(BODY_KEY_SIZE))


def _read_key(path: Path) -> BodyKey:
    try:
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise LogKeyError(
                f"the log body key file {BODY_KEY_FILE} is readable by others; make it mode 0600"
            )
        data = read_bounded(path, BODY_KEY_SIZE, what="the log body key file")
    except FileReadError as exc:
        if exc.problem is FileProblem.TOO_LARGE:
            raise LogKeyError(
                f"the log body key file {BODY_KEY_FILE} is not {BODY_KEY_SIZE} bytes"
            ) from None
        raise LogKeyError(f"the log body key file {BODY_KEY_FILE} cannot be read") from None
    except PermissionError:
        raise LogKeyError(f"the log body key file {BODY_KEY_FILE} cannot be read") from None
    if len(data) != BODY_KEY_SIZE:
        raise LogKeyError(f"the log body key file {BODY_KEY_FILE} is not {BODY_KEY_SIZE} bytes")
    return BodyKey(data)


def load_or_create_body_key(key_dir: str | os.PathLike[str]) -> BodyKey:
    """Return the body key from ``key_dir``, creating it (mode 0600) if it does not exist.

    Creation is atomic: the key is written and synced under a temporary name, then linked into
    place, so a concurrent or crashed start never sees a partial key, and an existing key is
    never replaced. Raises :class:`LogKeyError` if the file has group/other permissions, the
    wrong size, or cannot be read or written.
    """
    directory = Path(key_dir)
    path = directory / BODY_KEY_FILE
    if path.exists():
        return _read_key(path)
    key = BodyKey.generate()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            write_atomically(path, key.key, mode=0o600, exclusive=True)
        except FileExistsError:
            return _read_key(path)  # another process created it first: use theirs
    except OSError as exc:
        raise LogKeyError(
            f"the log body key file {BODY_KEY_FILE} cannot be created ({type(exc).__name__})"
        ) from None
    return key
