"""Reading security servers' message-log verifier keys (C2SP signed-note vkey text) as the admin
API receives them: ``<name>+<key ID>+<base64(type || key)>``, the name being the log's origin."""

from __future__ import annotations

from registry import limits
from registry.errors import InvalidRequestError
from ruta.checkpoint import CheckpointError, SignatureType, Verifier

__all__ = ["parse_vkey"]


def parse_vkey(text: str, *, kind: SignatureType = SignatureType.ED25519) -> Verifier:
    """Parse verifier-key text of a key of ``kind``.

    Raises :class:`InvalidRequestError` for text over :data:`registry.limits.MAX_LOG_KEY_LENGTH`,
    bad syntax, another key type, or a key ID that does not match the name and key.
    """
    if len(text) > limits.MAX_LOG_KEY_LENGTH:
        raise InvalidRequestError(f"a verifier key is at most {limits.MAX_LOG_KEY_LENGTH} chars")
    try:
        verifier = Verifier.from_vkey(text)
    except CheckpointError as exc:
        raise InvalidRequestError(f"not a verifier key: {exc.message}") from None
    if verifier.kind is not kind:
        raise InvalidRequestError(f"the verifier key is not of type {int(kind):#04x}")
    return verifier
