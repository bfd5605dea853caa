"""Reading security servers' message-log verifier keys (C2SP signed-note vkey text).

``<name>+<key ID>+<base64(type || key)>``: the name is the log's checkpoint origin and cannot
contain ``+``, but the base64 part can, so the text is split at the first two ``+`` only.
(:meth:`ruta.checkpoint.Verifier.from_vkey` splits at every ``+`` and so refuses about one key in
three; this reader is used until it is fixed.)
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from registry import limits
from registry.errors import InvalidRequestError
from ruta.checkpoint import SignatureType, Verifier
from ruta.faults import RutaError

__all__ = ["parse_vkey"]

_KEY_ID: Final = re.compile(r"[0-9a-f]{8}")
_ED25519_PUBLIC_KEY_BYTES: Final = 32


def parse_vkey(text: str, *, kind: SignatureType = SignatureType.ED25519) -> Verifier:
    """Parse verifier-key text of a key of ``kind``.

    Raises :class:`InvalidRequestError` for text over :data:`registry.limits.MAX_LOG_KEY_LENGTH`,
    bad syntax, another key type, or a key ID that does not match the name and key.
    """
    if len(text) > limits.MAX_LOG_KEY_LENGTH:
        raise InvalidRequestError(f"a verifier key is at most {limits.MAX_LOG_KEY_LENGTH} chars")
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not parts[0] or not _KEY_ID.fullmatch(parts[1]):
        raise InvalidRequestError("a verifier key reads <origin>+<8 hex key ID>+<base64 key>")
    name, key_id, encoded = parts
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("the verifier key's key is not base64") from None
    if len(raw) != 1 + _ED25519_PUBLIC_KEY_BYTES or raw[0] != kind:
        raise InvalidRequestError(f"the verifier key is not an Ed25519 key of type {kind:#04x}")
    try:
        verifier = Verifier(
            name=name, kind=kind, public_key=Ed25519PublicKey.from_public_bytes(raw[1:])
        )
    except (RutaError, ValueError):
        raise InvalidRequestError("the verifier key's name is not a valid key name") from None
    if verifier.key_id.hex() != key_id:
        raise InvalidRequestError("the verifier key's ID does not match its name and key")
    return verifier
