"""The load generator: a separate process that drives one gRPC target with generic bytes calls.

    python -m bench.loadgen --target 127.0.0.1:PORT --path /bench.v1.Echo/Echo --payload 512 \
        --concurrency 64 --calls 2000 --warmup 200 [--metadata key=value ...]

It opens one channel (``--channels N``: N, each its own connection, the callers spread over
them in turn), runs ``--warmup`` calls, prints ``{"event": "warm"}`` and waits for one
line on stdin (so the caller can read every process's CPU counters exactly around the measured
part; ``--no-wait`` skips the wait), runs ``--calls`` calls with ``--concurrency`` callers in
flight, and prints one JSON line with the elapsed time, the latency percentiles and the errors.
The same generator drives the direct baseline and the bus, so their numbers compare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

import grpc
import grpc.aio

__all__ = ["LoadResult", "percentile", "run_load"]

#: Deadline of one call.
CALL_TIMEOUT_SECONDS: Final = 30.0
#: Largest message the generator's channel accepts.
MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024
#: Errors listed in the result (the count covers all).
MAX_ERRORS_LISTED: Final = 5

LoadResult = dict[str, Any]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The value at ``fraction`` (0..1) of ``sorted_values`` (nearest rank); 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


async def _drive(
    stubs: Sequence[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]],
    payload: bytes,
    metadata: tuple[tuple[str, str], ...],
    concurrency: int,
    calls: int,
) -> tuple[float, list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    remaining = calls

    async def caller(call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            try:
                answer = await call(payload, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {(exc.details() or '')[:200]}")
                continue
            latencies.append(time.perf_counter() - start)
            if len(answer) != len(payload):
                errors.append(f"answer of {len(answer)} bytes for {len(payload)}")

    start = time.perf_counter()
    await asyncio.gather(*(caller(stubs[i % len(stubs)]) for i in range(concurrency)))
    return time.perf_counter() - start, latencies, errors


async def run_load(
    *,
    target: str,
    path: str,
    payload_bytes: int,
    concurrency: int,
    calls: int,
    warmup: int,
    metadata: tuple[tuple[str, str], ...] = (),
    wait: bool = True,
    channels: int = 1,
) -> LoadResult:
    """Warm up, report ``warm``, wait for the go line (``wait``), measure; return the result."""
    payload = os.urandom(payload_bytes)
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # Each channel its own connection (so a server's workers each get a share).
        ("grpc.use_local_subchannel_pool", 1),
    ]
    async with contextlib.AsyncExitStack() as stack:
        call: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = []
        for _ in range(max(1, channels)):
            channel = grpc.aio.insecure_channel(target, options=options)
            await stack.enter_async_context(channel)
            call.append(channel.unary_unary(path))
        _, warm_latencies, warm_errors = await _drive(call, payload, metadata, concurrency, warmup)
        warm = {
            "event": "warm",
            "ok": len(warm_latencies),
            "errors": len(warm_errors),
            "error_samples": warm_errors[:MAX_ERRORS_LISTED],
        }
        print(json.dumps(warm), flush=True)
        if wait:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        start = os.times()
        elapsed, latencies, errors = await _drive(call, payload, metadata, concurrency, calls)
        end = os.times()
    latencies.sort()
    ok = len(latencies)
    return {
        "event": "done",
        "calls": calls,
        "ok": ok,
        "errors": len(errors),
        "error_samples": errors[:MAX_ERRORS_LISTED],
        "elapsed_s": elapsed,
        "rps": ok / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p90_ms": percentile(latencies, 0.90) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "max_ms": (latencies[-1] if latencies else 0.0) * 1e3,
        "mean_ms": (sum(latencies) / ok if ok else 0.0) * 1e3,
        # Its own CPU over the measured calls (the harness cannot read /proc of a process that
        # may have exited by the time it looks).
        "cpu_user_s": end.user - start.user,
        "cpu_sys_s": end.system - start.system,
    }


def _metadata(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--metadata wants key=value, got {item!r}")
        pairs.append((key, value))
    return tuple(pairs)


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module docstring); the result is the last line on stdout."""
    parser = argparse.ArgumentParser(description="gRPC load generator (generic bytes calls).")
    parser.add_argument("--target", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--payload", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--metadata", action="append", default=[])
    parser.add_argument("--no-wait", action="store_true")
    parser.add_argument(
        "--channels", type=int, default=1, help="connections, callers spread over them in turn"
    )
    args = parser.parse_args(argv)
    result = asyncio.run(
        run_load(
            target=args.target,
            path=args.path,
            payload_bytes=args.payload,
            concurrency=args.concurrency,
            calls=args.calls,
            warmup=args.warmup,
            metadata=_metadata(args.metadata),
            wait=not args.no_wait,
            channels=args.channels,
        )
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
