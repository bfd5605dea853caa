"""Sealing log bodies at rest: AES-256-GCM with associated data binding origin and sequence.

A sealed body opens only under the same origin and sequence number it was sealed for, so a body
moved to another record (or another node's tree) fails to open instead of passing as that
record's body.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from security_server.log.errors import LogKeyError
from security_server.log.keys import BodyKey

__all__ = ["NONCE_SIZE", "TAG_SIZE", "BodyCipher", "SealedBody"]

#: AES-GCM nonce size in bytes (random per body).
NONCE_SIZE: Final = 12
#: AES-GCM tag size in bytes: a sealed body's ciphertext is this much longer than the body.
TAG_SIZE: Final = 16
_AAD_CONTEXT: Final = b"ruta log body v1\x00"


def _associated_prefix(origin: str) -> bytes:
    origin_bytes = origin.encode("utf-8")
    return _AAD_CONTEXT + struct.pack(">H", len(origin_bytes)) + origin_bytes


def _associated_data(origin: str, seq: int) -> bytes:
    return _associated_prefix(origin) + struct.pack(">Q", seq)


class SealedBody:
    """A body as stored: the key it was sealed with, the nonce and the ciphertext (with tag)."""

    __slots__ = ("ciphertext", "key_id", "nonce")

    def __init__(self, *, key_id: str, nonce: bytes, ciphertext: bytes) -> None:
        self.key_id = key_id
        self.nonce = nonce
        self.ciphertext = ciphertext


class BodyCipher:
    """Seals with the current key; opens with the current key or any older one it was given."""

    def __init__(self, current: BodyKey, *, previous: Sequence[BodyKey] = ()) -> None:
        self._current = current
        self._current_id = current.key_id
        self._sealer = AESGCM(current.key)
        self._openers = {k.key_id: AESGCM(k.key) for k in (*previous, current)}

    @property
    def key_id(self) -> str:
        """Public id of the key new bodies are sealed with."""
        return self._current_id

    def seal(self, origin: str, seq: int, body: bytes) -> SealedBody:
        """Encrypt ``body`` for record ``seq`` of ``origin`` under a fresh random nonce."""
        nonce = os.urandom(NONCE_SIZE)
        ciphertext = self._sealer.encrypt(nonce, body, _associated_data(origin, seq))
        return SealedBody(key_id=self._current_id, nonce=nonce, ciphertext=ciphertext)

    def seal_many(self, origin: str, bodies: Sequence[tuple[int, bytes]]) -> list[SealedBody]:
        """:meth:`seal` for each ``(seq, body)``: one read of the system's random source for
        every nonce of the group (each nonce still fresh and random, never reused)."""
        randomness = os.urandom(NONCE_SIZE * len(bodies))
        prefix = _associated_prefix(origin)
        sealed: list[SealedBody] = []
        for i, (seq, body) in enumerate(bodies):
            nonce = randomness[i * NONCE_SIZE : (i + 1) * NONCE_SIZE]
            ciphertext = self._sealer.encrypt(nonce, body, prefix + struct.pack(">Q", seq))
            sealed.append(SealedBody(key_id=self._current_id, nonce=nonce, ciphertext=ciphertext))
        return sealed

    def open(self, origin: str, seq: int, sealed: SealedBody) -> bytes:
        """Decrypt a stored body. Raises :class:`LogKeyError` if its key is unknown or it does not
        authenticate for this origin and sequence (tampered, moved, or another key)."""
        opener = self._openers.get(sealed.key_id)
        if opener is None:
            raise LogKeyError(f"the body of record {seq} was sealed with an unknown key")
        try:
            return opener.decrypt(sealed.nonce, sealed.ciphertext, _associated_data(origin, seq))
        except InvalidTag:
            raise LogKeyError(f"the stored body of record {seq} does not authenticate") from None
