"""Reading C2SP verifier-key text (``<name>+<hex key ID>+<base64(type || key)>``) for evidence.

A thin, bounded entry point over :meth:`ruta.checkpoint.Verifier.from_vkey`, which owns the
grammar.
"""

from __future__ import annotations

from typing import Final

from ruta.checkpoint import MAX_KEY_NAME_LENGTH, MalformedNoteError, Verifier

__all__ = ["MAX_VKEY_LENGTH", "parse_vkey"]

#: Longest verifier-key text read (name, key ID and base64 of 33 bytes).
MAX_VKEY_LENGTH: Final = MAX_KEY_NAME_LENGTH + 80


def parse_vkey(text: str) -> Verifier:
    """Parse verifier-key text into a :class:`Verifier`.

    Raises :class:`ruta.checkpoint.MalformedNoteError` for over-long or malformed text, a key
    that is not Ed25519 of type 0x01 or 0x04, or a key ID that does not match name and key.
    """
    if len(text) > MAX_VKEY_LENGTH:
        raise MalformedNoteError("verifier key is too long")
    return Verifier.from_vkey(text)
