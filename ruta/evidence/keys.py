"""Reading C2SP verifier-key text (``<name>+<hex key ID>+<base64(type || key)>``).

The base64 part may itself contain ``+``, so the text is split at the first two ``+`` only
(as Go's ``note.NewVerifier`` does). :meth:`ruta.checkpoint.Verifier.from_vkey` splits at every
``+`` and so refuses about half of all keys; until it is fixed, Ruta's evidence and checkpoint
code reads keys here.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ruta.checkpoint import MAX_KEY_NAME_LENGTH, MalformedNoteError, SignatureType, Verifier

__all__ = ["MAX_VKEY_LENGTH", "parse_vkey"]

#: Longest verifier-key text read (name, key ID and base64 of 33 bytes).
MAX_VKEY_LENGTH: Final = MAX_KEY_NAME_LENGTH + 80
_KEY_MATERIAL_SIZE: Final = 33


def parse_vkey(text: str) -> Verifier:
    """Parse verifier-key text into a :class:`Verifier`.

    Raises :class:`ruta.checkpoint.MalformedNoteError` for over-long or malformed text, a key
    that is not Ed25519 of type 0x01 or 0x04, or a key ID that does not match name and key.
    """
    text = text.strip()
    if len(text) > MAX_VKEY_LENGTH:
        raise MalformedNoteError("verifier key is too long")
    name, sep1, rest = text.partition("+")
    hex_id, sep2, encoded = rest.partition("+")
    if not sep1 or not sep2:
        raise MalformedNoteError("verifier key is not '<name>+<key ID>+<key>'")
    try:
        raw = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise MalformedNoteError("verifier key is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != encoded:
        raise MalformedNoteError("verifier key is not canonical base64")
    kinds = {t.value for t in SignatureType}
    if len(raw) != _KEY_MATERIAL_SIZE or raw[0] not in kinds:
        raise MalformedNoteError("verifier key is not an Ed25519 key of a known type")
    verifier = Verifier(
        name=name,
        kind=SignatureType(raw[0]),
        public_key=Ed25519PublicKey.from_public_bytes(raw[1:]),
    )
    if verifier.key_id.hex() != hex_id:
        raise MalformedNoteError("verifier key ID does not match its name and key")
    return verifier
