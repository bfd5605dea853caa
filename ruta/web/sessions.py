"""Console sessions: a random id in a ``__Host-`` cookie (Secure, HttpOnly, SameSite=Strict),
the session's values kept in this process, expiring after an idle time and an absolute lifetime.

Nothing about the person is in the cookie; a restart signs everyone out. The number of sessions
held is bounded: when full, the oldest is dropped.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

__all__ = [
    "DEFAULT_ABSOLUTE_SECONDS",
    "DEFAULT_IDLE_SECONDS",
    "MAX_SESSIONS",
    "SESSION_COOKIE",
    "Session",
    "Sessions",
]

SESSION_COOKIE: Final = "__Host-ruta-session"
DEFAULT_IDLE_SECONDS: Final = 15 * 60
DEFAULT_ABSOLUTE_SECONDS: Final = 8 * 60 * 60
#: Most sessions one process holds.
MAX_SESSIONS: Final = 10_000
#: Longest session cookie value read (a real one is 43 characters).
_MAX_COOKIE_CHARS: Final = 64


@dataclass(slots=True)
class Session:
    """One signed-in browser: its id (the cookie's value) and what the console keeps for it."""

    id: str
    created: float
    last_seen: float
    values: dict[str, str] = field(default_factory=dict)


class Sessions:
    """The sessions of one console; ``clock`` is monotonic seconds (a seam for tests)."""

    def __init__(
        self,
        *,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        absolute_seconds: float = DEFAULT_ABSOLUTE_SECONDS,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle = idle_seconds
        self._absolute = absolute_seconds
        self._max = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def start(self, response: web.StreamResponse, **values: str) -> Session:
        """A new session holding ``values``, its cookie set on ``response``."""
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), now, now, dict(values))
        self._sessions[session.id] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        response.set_cookie(
            SESSION_COOKIE,
            session.id,
            path="/",
            secure=True,
            httponly=True,
            samesite="Strict",
            max_age=int(self._absolute),
        )
        return session

    def get(self, request: web.Request) -> Session | None:
        """The request's live session, or None (no cookie, unknown, or expired: then dropped)."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie or len(cookie) > _MAX_COOKIE_CHARS:
            return None
        session = self._sessions.get(cookie)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self._idle or now - session.created > self._absolute:
            del self._sessions[cookie]
            return None
        session.last_seen = now
        self._sessions.move_to_end(cookie)
        return session

    def end(self, request: web.Request, response: web.StreamResponse) -> None:
        """Forget the request's session (if any) and clear its cookie."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            self._sessions.pop(cookie, None)
        # A ``__Host-`` cookie is only replaced (here: expired) by one that is Secure too.
        response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
