"""Adaptive coalescing under load (docs/adr/0034-adaptive-coalescing.md; the hold's constants:
docs/adr/0043-longer-coalescing-hold.md and
docs/adr/0049-coalescing-hold-a-fifth-of-the-exchange-time.md).

A proxy keeps one :class:`Load` of the exchanges it is handling. While few are in flight a
signing batch closes at the end of the loop turn, as before: no latency is added. Under load a
batch stays open a moment, a small fraction of what an exchange takes at that load, so the
messages of the exchanges arriving meanwhile share one ECDSA signature (and, on the consumer,
one frame to the provider server). Each message is still signed, verified and logged on its own;
what changes is how many share one signature operation and one gRPC write.
"""

from __future__ import annotations

import time
from typing import Final

__all__ = [
    "COALESCE_LATENCY_FRACTION",
    "COALESCE_MAX_HOLD_SECONDS",
    "COALESCE_MIN_IN_FLIGHT",
    "Load",
]

#: Exchanges in flight besides the caller's from which a server counts as under load.
COALESCE_MIN_IN_FLIGHT: Final = 4
#: The hold is at most this fraction of the recent exchange time (the latency it may add).
COALESCE_LATENCY_FRACTION: Final = 0.20
#: And never longer than this.
COALESCE_MAX_HOLD_SECONDS: Final = 0.010
#: Weight of the newest exchange in the moving average of exchange times.
_EWMA_WEIGHT: Final = 1 / 64


class Load:
    """The exchanges one proxy is handling: how many now, and how long they took lately."""

    __slots__ = ("_average", "in_flight")

    def __init__(self) -> None:
        #: Exchanges started and not finished.
        self.in_flight = 0
        self._average = 0.0

    def start(self) -> float:
        """Count an exchange in; returns its start time for :meth:`end`."""
        self.in_flight += 1
        return time.perf_counter()

    def end(self, started: float) -> None:
        """Count the exchange started at ``started`` out and into the moving average."""
        self.in_flight -= 1
        self._average += (time.perf_counter() - started - self._average) * _EWMA_WEIGHT

    @property
    def busy(self) -> bool:
        """Whether at least :data:`COALESCE_MIN_IN_FLIGHT` exchanges are in flight besides the
        caller's (under load: batches stay open, commits are grouped)."""
        return self.in_flight - 1 >= COALESCE_MIN_IN_FLIGHT

    @property
    def alone(self) -> bool:
        """Whether the caller's exchange is the only one in flight (nothing to batch with)."""
        return self.in_flight <= 1

    @property
    def average_seconds(self) -> float:
        """Moving average of the exchange times (seconds)."""
        return self._average

    def hold(self) -> float:
        """How long a signing batch started now stays open (seconds): 0 unless at least
        :data:`COALESCE_MIN_IN_FLIGHT` other exchanges are in flight; then
        :data:`COALESCE_LATENCY_FRACTION` of the recent exchange time, at most
        :data:`COALESCE_MAX_HOLD_SECONDS`."""
        if self.in_flight - 1 < COALESCE_MIN_IN_FLIGHT:
            return 0.0
        return min(COALESCE_MAX_HOLD_SECONDS, self._average * COALESCE_LATENCY_FRACTION)
