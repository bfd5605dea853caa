"""Which of a provider member's security servers a call goes to.

A member may list several servers. :class:`ServerRotation` orders them afresh for each call: the
servers that are not backing off first, taken in turn (round robin, one turn per call to that
member), then the servers backing off, the one whose back-off ends soonest first. A server backs
off after it could not be reached (its channel failed to open, or a call on it failed on the
network): 0.5 s after the first failure, doubling per failure in a row up to 30 s, each with
jitter, and its back-off ends the moment it is reached again. A backing-off server is tried last,
never excluded: when every server of a member is failing, calls still try them.

The consumer tries the servers in this order before anything is signed (at most
``MAX_PROVIDER_SERVERS_TRIED``), so a dead server costs a connection attempt only until its
first failure, and calls spread over the servers that answer instead of always the first.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from ruta.globalconf import SecurityServer
from ruta.ids import MemberId, ServerId

__all__ = [
    "INITIAL_BACKOFF_SECONDS",
    "MAX_BACKOFF_SECONDS",
    "MAX_TRACKED",
    "ServerRotation",
]

#: Back-off after a server's first failure in a row.
INITIAL_BACKOFF_SECONDS: Final = 0.5
#: Longest back-off, however many failures in a row.
MAX_BACKOFF_SECONDS: Final = 30.0
#: Most members (turns) and servers (back-offs) remembered; past it the oldest are forgotten.
MAX_TRACKED: Final = 4096
_K = TypeVar("_K")
_V = TypeVar("_V")

#: Failures in a row past which the back-off no longer grows (2**16 * 0.5 s > 30 s).
_MAX_EXPONENT: Final = 16


def _jitter() -> float:
    return random.uniform(0.5, 1.0)  # noqa: S311 - spreading retries, not a secret


@dataclass(slots=True)
class _Backoff:
    failures: int
    until: float


class ServerRotation:
    """Round robin over a member's servers, with back-off for the ones that failed.

    ``clock`` is a monotonic time source in seconds and ``jitter`` a factor in (0, 1] applied to
    each back-off (tests pass fixed ones). Not thread-safe: use it from one event loop.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = _jitter,
        initial_backoff: float = INITIAL_BACKOFF_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        if not 0 < initial_backoff <= max_backoff:
            raise ValueError("back-offs must be positive, the initial one at most the longest")
        self._clock = clock
        self._jitter = jitter
        self._initial = initial_backoff
        self._max = max_backoff
        self._turns: dict[MemberId, int] = {}
        self._backoffs: dict[ServerId, _Backoff] = {}

    def order(self, servers: Sequence[SecurityServer]) -> list[SecurityServer]:
        """``servers`` (one member's) in the order to try them for the next call: the ones not
        backing off, starting one further along than last time, then the ones backing off, the
        soonest available first. Every server appears once. A member with one server: that
        one (nothing to rotate, and backing off or not it is the only one to try)."""
        if len(servers) <= 1:
            return list(servers)
        now = self._clock()
        member = servers[0].id.member
        turn = self._turns.pop(member, -1) + 1
        self._turns[member] = turn  # re-inserted: the dict stays in least-recent order
        _forget_oldest(self._turns)
        ready: list[SecurityServer] = []
        waiting: list[tuple[float, int, SecurityServer]] = []
        for index, server in enumerate(servers):
            backoff = self._backoffs.get(server.id)
            if backoff is None or backoff.until <= now:
                ready.append(server)
            else:
                waiting.append((backoff.until, index, server))
        if ready:
            start = turn % len(ready)
            ready = ready[start:] + ready[:start]
        waiting.sort(key=lambda entry: (entry[0], entry[1]))
        return ready + [server for _, _, server in waiting]

    def failed(self, server: ServerId) -> None:
        """``server`` could not be reached: it backs off, longer for each failure in a row."""
        previous = self._backoffs.pop(server, None)
        failures = 1 if previous is None else previous.failures + 1
        delay = min(self._max, self._initial * 2.0 ** min(failures - 1, _MAX_EXPONENT))
        self._backoffs[server] = _Backoff(failures, self._clock() + delay * self._jitter())
        _forget_oldest(self._backoffs)

    def reached(self, server: ServerId) -> None:
        """``server`` was reached: its back-off (if any) ends now."""
        self._backoffs.pop(server, None)

    def backing_off(self, server: ServerId) -> bool:
        """Whether ``server`` is backing off now (for status pages and tests)."""
        backoff = self._backoffs.get(server)
        return backoff is not None and backoff.until > self._clock()


def _forget_oldest(entries: dict[_K, _V]) -> None:
    while len(entries) > MAX_TRACKED:
        del entries[next(iter(entries))]
