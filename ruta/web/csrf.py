"""Cross-site request forgery tokens for console forms.

A token is an HMAC of the session it belongs to (a session id, or a client certificate's
fingerprint for consoles authenticated by certificate) under a per-process random key: a form
carries it in a hidden field, and a POST whose token does not match its own session is refused.
Together with ``SameSite=Strict`` cookies and ``form-action 'self'`` this stops another site
from making a signed-in browser act.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

__all__ = ["CSRF_FIELD", "MAX_CSRF_TOKEN_CHARS", "CsrfTokens"]

#: The hidden form field that carries the token.
CSRF_FIELD: Final = "csrf_token"
#: Longest token read from a form (a real one is 64 hex characters).
MAX_CSRF_TOKEN_CHARS: Final = 128


class CsrfTokens:
    """Issues and checks tokens bound to a session; the key lives only in this process."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def issue(self, session: str) -> str:
        """The token that forms shown to ``session`` carry."""
        return hmac.new(self._key, session.encode(), hashlib.sha256).hexdigest()

    def check(self, session: str, token: str | None) -> bool:
        """Whether ``token`` (from a submitted form; may be missing) belongs to ``session``."""
        if not token or len(token) > MAX_CSRF_TOKEN_CHARS:
            return False
        return hmac.compare_digest(self.issue(session), token)
