"""Rate limits with real servers: a client at ten times its contract's quota is refused with
``server.provider.rate_limited`` and a retry-after hint, and does not push another client's p99
latency past its bound.

The three security servers run as ``ruta ss serve`` subprocesses, so the load this test makes
and the servers' work do not share one event loop. The bound is relative to a baseline measured
in the same test on the same machine (generous: a loaded 2-core machine must not make it flaky).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from pathlib import Path
from typing import Final

import grpc
import grpc.aio

from ruta.faults import retry_after_of
from tests.integration.security_server.bed import (
    INCOME,
    PERSON_REQUEST,
    POP,
    SOC,
    TAX,
    bed,
    call_metadata,
    fault_of,
    get_person,
)

#: The noisy client's quota: 10 calls a second.
QUOTA_PER_MINUTE: Final = 600
#: It offers ten times that.
NOISY_CALLS_PER_SECOND: Final = 10 * QUOTA_PER_MINUTE / 60
#: The quiet client's calls, measured alone and then beside the noisy one.
QUIET_CALLS: Final = 100
#: Most calls the noisy client starts (bounds the test whatever the machine's speed).
MAX_NOISY_CALLS: Final = 2000
#: Each call's deadline: far above any latency expected, so a slow call is measured, not lost.
DEADLINE_SECONDS: Final = 30.0


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


async def _quiet(call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes], count: int) -> list[float]:
    """``count`` calls one after another as BENEFITS; each must succeed. Their latencies."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await call(PERSON_REQUEST, metadata=call_metadata(), timeout=DEADLINE_SECONDS)
        latencies.append(time.perf_counter() - started)
    return latencies


async def test_a_client_at_ten_times_its_quota_does_not_slow_another(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        instance.more_contracts.append(INCOME)
        instance.rate_limits[INCOME] = QUOTA_PER_MINUTE
        instance.publish()
        for server in (POP, SOC, TAX):
            await instance.spawn_server(server)
        async with (
            instance.consumer_channel(SOC) as quiet_channel,
            instance.consumer_channel(TAX) as noisy_channel,
        ):
            quiet = get_person(quiet_channel)
            noisy = get_person(noisy_channel)
            await _quiet(quiet, 10)  # warm up: channels, pins, OCSP staples
            baseline = await _quiet(quiet, QUIET_CALLS)

            outcomes: list[tuple[str | None, int | None]] = []

            async def one_noisy_call() -> None:
                try:
                    await noisy(
                        PERSON_REQUEST,
                        metadata=call_metadata(INCOME),
                        timeout=DEADLINE_SECONDS,
                    )
                    outcomes.append(("ok", None))
                except grpc.aio.AioRpcError as exc:
                    outcomes.append((fault_of(exc), retry_after_of(exc.trailing_metadata())))

            stop = asyncio.Event()

            async def noise() -> None:
                # Starts calls at ten times the quota (each in its own task) until told to stop.
                async with asyncio.TaskGroup() as group:
                    started = time.perf_counter()
                    for n in range(MAX_NOISY_CALLS):
                        if stop.is_set():
                            break
                        group.create_task(one_noisy_call())
                        delay = started + (n + 1) / NOISY_CALLS_PER_SECOND - time.perf_counter()
                        if delay > 0:
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), delay)

            noisy_task = asyncio.create_task(noise())
            try:
                await asyncio.sleep(1.0)  # the noisy client is at full rate, its bucket empty
                loaded = await _quiet(quiet, QUIET_CALLS)
            finally:
                stop.set()
                await noisy_task

    # The noisy client was held to its quota: refused with the rate-limit fault and a hint,
    # and nothing else went wrong for it.
    faults = {fault for fault, _ in outcomes}
    assert faults <= {"ok", "server.provider.rate_limited"}, faults
    refused = [hint for fault, hint in outcomes if fault == "server.provider.rate_limited"]
    assert refused, "the noisy client was never refused"
    assert all(hint is not None and 0 < hint <= 60_000 for hint in refused)
    # Every quiet call succeeded (_quiet raises otherwise); its p99 stays within its bound:
    # ten times its p99 alone, with a second's slack for a loaded shared machine.
    quiet_p99, loaded_p99 = _p99(baseline), _p99(loaded)
    bound = max(10 * quiet_p99, quiet_p99 + 1.0)
    assert loaded_p99 <= bound, (
        f"quiet client's p99 {loaded_p99 * 1000:.0f} ms beside the noisy one; "
        f"alone {quiet_p99 * 1000:.0f} ms; bound {bound * 1000:.0f} ms"
    )
