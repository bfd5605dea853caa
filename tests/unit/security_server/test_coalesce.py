"""Adaptive coalescing (docs/adr/0034-adaptive-coalescing.md; its constants: 0043, 0049): no
hold with few exchanges in flight, a hold proportional to the recent exchange time under load,
never over the cap."""

from __future__ import annotations

import time

import pytest

from security_server.coalesce import (
    COALESCE_LATENCY_FRACTION,
    COALESCE_MAX_HOLD_SECONDS,
    COALESCE_MIN_IN_FLIGHT,
    Load,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(time, "perf_counter", fake)  # what coalesce.Load reads
    return fake


def settle(load: Load, clock: FakeClock, seconds: float, rounds: int = 2000) -> None:
    """Finish ``rounds`` exchanges of ``seconds`` each (the moving average converges)."""
    for _ in range(rounds):
        started = load.start()
        clock.now += seconds
        load.end(started)


def test_no_hold_while_few_exchanges_are_in_flight(clock: FakeClock) -> None:
    load = Load()
    settle(load, clock, 0.050)
    starts = [load.start() for _ in range(COALESCE_MIN_IN_FLIGHT)]
    # The caller plus fewer than COALESCE_MIN_IN_FLIGHT others: the loop turn only.
    assert load.hold() == 0.0
    for started in starts:
        load.end(started)
    assert load.in_flight == 0


def test_under_load_the_hold_follows_the_exchange_time(clock: FakeClock) -> None:
    load = Load()
    settle(load, clock, 0.020)
    assert load.average_seconds == pytest.approx(0.020, rel=1e-3)
    for _ in range(COALESCE_MIN_IN_FLIGHT + 1):
        load.start()
    assert load.hold() == pytest.approx(0.020 * COALESCE_LATENCY_FRACTION, rel=1e-3)


def test_the_hold_is_capped(clock: FakeClock) -> None:
    load = Load()
    settle(load, clock, 10.0)
    for _ in range(64):
        load.start()
    assert load.hold() == COALESCE_MAX_HOLD_SECONDS


def test_under_heavy_load_the_hold_is_a_fifth_of_the_exchange_time(clock: FakeClock) -> None:
    # docs/adr/0049: at concurrency 64 an exchange takes ~45 ms here; its batch stays open ~9 ms,
    # under the 10 ms cap (ADR 0043's 10% held ~4.5 ms).
    load = Load()
    settle(load, clock, 0.045)
    for _ in range(64):
        load.start()
    assert COALESCE_LATENCY_FRACTION == 0.20
    assert COALESCE_MAX_HOLD_SECONDS == 0.010
    assert load.hold() == pytest.approx(0.009, rel=1e-3)
