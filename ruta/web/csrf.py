"""Cross-site request forgery tokens for console forms.

A token is the time it was issued and an HMAC of it with the session it belongs to (a session
id, or a client certificate's fingerprint for consoles authenticated by certificate) under a
per-process random key: a form carries it in a hidden field, and a POST whose token does not
match its own session, or is older than the token lifetime, is refused. Together with
``SameSite=Strict`` cookies and ``form-action 'self'`` this stops another site from making a
signed-in browser act; a restart or the lifetime ends every token (the form is shown again).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Final

__all__ = ["CSRF_FIELD", "DEFAULT_TOKEN_SECONDS", "MAX_CSRF_TOKEN_CHARS", "CsrfTokens"]

#: The hidden form field that carries the token.
CSRF_FIELD: Final = "csrf_token"
#: Longest token read from a form (a real one is under 80 characters).
MAX_CSRF_TOKEN_CHARS: Final = 128
#: How long a form stays valid after it was shown.
DEFAULT_TOKEN_SECONDS: Final = 8 * 60 * 60


class CsrfTokens:
    """Issues and checks tokens bound to a session; the key lives only in this process.
    ``clock`` is wall-clock seconds (a seam for tests)."""

    def __init__(
        self,
        key: bytes | None = None,
        *,
        lifetime_seconds: float = DEFAULT_TOKEN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)
        self._lifetime = lifetime_seconds
        self._clock = clock

    def _mac(self, session: str, issued: str) -> str:
        message = f"{issued}\x00{session}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def issue(self, session: str) -> str:
        """The token that forms shown to ``session`` now carry."""
        issued = format(int(self._clock()), "x")
        return f"{issued}.{self._mac(session, issued)}"

    def check(self, session: str, token: str | None) -> bool:
        """Whether ``token`` (from a submitted form; may be missing) belongs to ``session`` and
        is still within its lifetime."""
        if not token or len(token) > MAX_CSRF_TOKEN_CHARS:
            return False
        issued, _, mac = token.partition(".")
        try:
            at = int(issued, 16)
        except ValueError:
            return False
        if not 0 <= self._clock() - at <= self._lifetime:
            return False
        return hmac.compare_digest(self._mac(session, issued), mac)
