"""Adaptive coalescing under load (docs/adr/0034-adaptive-coalescing.md; the hold's constants:
docs/adr/0043-longer-coalescing-hold.md and
docs/adr/0049-coalescing-hold-a-fifth-of-the-exchange-time.md; the look at the machine during a
hold: docs/adr/0052-coalescing-hold-shaped-by-the-machine.md).

A proxy keeps one :class:`Load` of the exchanges it is handling. While few are in flight a
signing batch closes at the end of the loop turn, as before: no latency is added. Under load a
batch stays open a moment, a small fraction of what an exchange takes at that load, so the
messages of the exchanges arriving meanwhile share one ECDSA signature (and, on the consumer,
one frame to the provider server). Part-way through its hold a batch looks at the machine: with a
CPU idle it closes then, the work it carries can start at once; with none idle it stays open a
little longer than the hold, since then the CPU a shared signature and frame save is what the
machine lacks. Each message is still signed, verified and logged on its own;
what changes is how many share one signature operation and one gRPC write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeAlias

__all__ = [
    "COALESCE_CHECK_FRACTION",
    "COALESCE_LATENCY_FRACTION",
    "COALESCE_MAX_HOLD_SECONDS",
    "COALESCE_MIN_IN_FLIGHT",
    "COALESCE_SATURATED_EXTENSION",
    "Load",
    "MachineLook",
    "hold_after_check",
    "runnable_threads",
]

#: Exchanges in flight besides the caller's from which a server counts as under load.
COALESCE_MIN_IN_FLIGHT: Final = 4
#: The hold is at most this fraction of the recent exchange time (the latency it may add).
COALESCE_LATENCY_FRACTION: Final = 0.20
#: And never longer than this.
COALESCE_MAX_HOLD_SECONDS: Final = 0.010
#: Weight of the newest exchange in the moving average of exchange times.
_EWMA_WEIGHT: Final = 1 / 64
#: A held batch looks at the machine once this fraction of its hold has passed.
COALESCE_CHECK_FRACTION: Final = 0.3
#: With no CPU idle at that look, the batch stays open this fraction of its hold past the hold.
COALESCE_SATURATED_EXTENSION: Final = 0.5

_LOADAVG: Final = Path("/proc/loadavg")


def runnable_threads() -> int | None:
    """Threads running or waiting for a CPU on this machine now (the kernel's count, the
    caller's own thread included), or ``None`` where the kernel does not say (not Linux)."""
    try:
        # "0.50 0.40 0.30 3/250 12345": the fourth field is runnable/total.
        return int(_LOADAVG.read_bytes().split()[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        return None


#: Reads the machine for a held batch, as :func:`runnable_threads` does (a seam for tests).
MachineLook: TypeAlias = Callable[[], int | None]


def hold_after_check(hold: float, *, runnable: int | None, cpus: int) -> float:
    """How much longer a batch held ``hold`` seconds stays open once
    :data:`COALESCE_CHECK_FRACTION` of the hold has passed, given ``runnable`` threads on a
    machine of ``cpus`` CPUs (:func:`runnable_threads`, the looking thread included):

    - a CPU idle (fewer runnable threads than CPUs): 0, the batch closes now and its work
      runs on the idle CPU;
    - no CPU idle: the rest of the hold and :data:`COALESCE_SATURATED_EXTENSION` of it more
      (the CPU a larger batch saves is what the machine lacks);
    - unknown (``None``): the rest of the hold, as before the look.
    """
    rest = hold * (1 - COALESCE_CHECK_FRACTION)
    if runnable is None:
        return rest
    if runnable < cpus:
        return 0.0
    return rest + hold * COALESCE_SATURATED_EXTENSION


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
