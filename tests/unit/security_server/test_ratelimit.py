"""The provider's token buckets (security_server/ratelimit.py), on a clock the test moves."""

from __future__ import annotations

import pytest

from security_server.ratelimit import RateLimiter, effective_limit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_local_limit_only_lowers_the_central_one() -> None:
    assert effective_limit(600, 0) == 600
    assert effective_limit(0, 60) == 60
    assert effective_limit(600, 60) == 60
    assert effective_limit(60, 600) == 60
    assert effective_limit(0, 0) == 0


def test_no_limit_takes_nothing_and_keeps_no_bucket() -> None:
    limiter = RateLimiter()
    assert all(limiter.take("c", "s", 0) is None for _ in range(1000))
    assert len(limiter) == 0


def test_a_bucket_holds_one_seconds_calls_and_refills_at_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    # 600 a minute: 10 a second, a burst of 10.
    assert all(limiter.take("c", "s", 600) is None for _ in range(10))
    wait = limiter.take("c", "s", 600)
    assert wait in (100, 101)  # one call comes back every 100 ms
    clock.now += 0.1
    assert limiter.take("c", "s", 600) is None
    assert limiter.take("c", "s", 600) is not None


def test_a_slow_limit_bursts_one_call_and_hints_the_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert limiter.take("c", "s", 2) is None  # two a minute
    assert limiter.take("c", "s", 2) == 30_000
    clock.now += 10
    assert limiter.take("c", "s", 2) in (20_000, 20_001)  # rounded up
    clock.now += 20
    assert limiter.take("c", "s", 2) is None


def test_clients_and_services_have_their_own_buckets() -> None:
    limiter = RateLimiter(clock=Clock())
    assert limiter.take("a", "s", 1) is None
    assert limiter.take("a", "s", 1) is not None
    assert limiter.take("b", "s", 1) is None
    assert limiter.take("a", "t", 1) is None


def test_a_service_wide_limit_bounds_all_clients_together() -> None:
    limiter = RateLimiter(service_per_minute=120, clock=Clock())  # 2 a second
    assert limiter.take("a", "s", 0) is None
    assert limiter.take("b", "s", 0) is None
    assert limiter.take("c", "s", 0) is not None
    assert limiter.take("c", "t", 0) is None


def test_a_refused_call_takes_no_token() -> None:
    # Within its own limit but over the service's: its own bucket keeps its token.
    clock = Clock()
    limiter = RateLimiter(service_per_minute=60, clock=clock)
    assert limiter.take("a", "s", 60) is None
    assert limiter.take("b", "s", 60) is not None
    clock.now += 1
    assert limiter.take("b", "s", 60) is None


def test_a_changed_limit_starts_a_new_bucket() -> None:
    limiter = RateLimiter(clock=Clock())
    assert limiter.take("a", "s", 1) is None
    assert limiter.take("a", "s", 1) is not None
    assert limiter.take("a", "s", 6000) is None  # the configuration raised it


def test_buckets_are_bounded_and_the_idle_ones_go_first() -> None:
    clock = Clock()
    limiter = RateLimiter(max_buckets=16, clock=clock)
    assert limiter.take("busy", "s", 1) is None
    for n in range(100):
        assert limiter.take(f"client{n}", "s", 1) is None
        assert len(limiter) <= 16
        if n % 10 == 0:
            assert limiter.take("busy", "s", 1) is not None  # used recently: kept, still empty
    assert len(limiter) == 16


def test_a_bound_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="max_buckets"):
        RateLimiter(max_buckets=1)
