"""Rate limits on the provider side: a token bucket per (client subsystem, service).

The limit is the contract's ``rate_limit_per_minute`` from the global configuration (set centrally
by the registry), lowered where this server's ``[rate_limits] max_per_minute`` is lower: a
provider may tighten a limit, never loosen it. ``[rate_limits] service_per_minute`` bounds every
client of one service together, so one service cannot take the whole server. Over a limit a
request is refused with ``server.provider.rate_limited`` (RESOURCE_EXHAUSTED) and a hint, in
milliseconds, after which the same call would pass (``ruta-retry-after-ms``; docs/adr/0023).

A bucket holds at most one second's worth of calls (at least one), so a client may burst that
much and otherwise gets its rate. Memory is bounded: at most ``max_buckets`` buckets are kept,
the least recently used evicted first; a bucket idle long enough to be full again is no different
from a new one, so evicting idle buckets forgets nothing.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_MAX_RATE_BUCKETS", "RateLimiter", "effective_limit"]

#: Buckets kept when the settings name no other bound.
DEFAULT_MAX_RATE_BUCKETS: Final = 10_000
#: The key of a service's bucket shared by all its clients.
_ALL_CLIENTS: Final = "*"


def effective_limit(central: int, local: int) -> int:
    """The limit in force, calls per minute (0: none): the lower of the contract's ``central``
    limit and this server's ``local`` one, each 0 when unset. A local limit only ever lowers."""
    if central and local:
        return min(central, local)
    return central or local


@dataclass(slots=True)
class _Bucket:
    per_minute: int
    tokens: float
    at: float

    @property
    def capacity(self) -> float:
        return float(max(1, math.ceil(self.per_minute / 60)))

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.per_minute / 60

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def wait_ms(self) -> int:
        """Milliseconds until one token is there (at least 1)."""
        return max(1, math.ceil((1.0 - self.tokens) / self.rate * 1000))


class RateLimiter:
    """Token buckets per (client, service) and per service, at most ``max_buckets`` kept."""

    def __init__(
        self,
        *,
        max_per_minute: int = 0,
        service_per_minute: int = 0,
        max_buckets: int = DEFAULT_MAX_RATE_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_buckets < 2:
            raise ValueError("max_buckets must be at least 2")
        self._local = max_per_minute
        self._service = service_per_minute
        self._max = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str, service: str, central_per_minute: int) -> int | None:
        """Take one call of ``client`` to ``service`` under a contract allowing
        ``central_per_minute`` (0: no limit). Returns None when it may go ahead, or the
        milliseconds after which it would pass (nothing is taken then)."""
        limit = effective_limit(central_per_minute, self._local)
        if not limit and not self._service:
            return None
        now = self._clock()
        own = self._bucket((client, service), limit, now) if limit else None
        shared = (
            self._bucket((_ALL_CLIENTS, service), self._service, now) if self._service else None
        )
        waits = [b.wait_ms() for b in (own, shared) if b is not None and b.tokens < 1.0]
        if waits:
            return max(waits)
        for bucket in (own, shared):
            if bucket is not None:
                bucket.tokens -= 1.0
        return None

    def _bucket(self, key: tuple[str, str], per_minute: int, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.per_minute != per_minute:
            # New, or its limit changed with the configuration: start full at the new limit.
            bucket = _Bucket(per_minute=per_minute, tokens=0.0, at=now)
            bucket.tokens = bucket.capacity
            self._buckets[key] = bucket
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            bucket.refill(now)
        self._buckets.move_to_end(key)
        return bucket
