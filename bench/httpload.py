"""The HTTP load generator: a separate process that drives one URL with POSTs (aiohttp).

    python -m bench.httpload --url URL --body-file F --concurrency 64 --calls 2000 \
        --warmup 200 [--header "Name: value" ...] [--expect-bytes N]

The same protocol as :mod:`bench.loadgen`: warm-up calls, ``{"event": "warm"}`` on stdout, one
line on stdin, the measured calls, then one JSON line with the elapsed time, the latency
percentiles and the errors. So REST direct, REST through the bus and JSON-to-gRPC through the
bus are measured by the same client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, Final

import aiohttp

from bench.loadgen import percentile

__all__ = ["run_http_load"]

CALL_TIMEOUT_SECONDS: Final = 30.0
MAX_ERRORS_LISTED: Final = 5


async def _drive(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    calls: int,
) -> tuple[float, list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    remaining = calls
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_SECONDS)

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers, timeout=timeout) as r:
                    answer = await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}")
                continue
            if status != 200:
                errors.append(f"HTTP {status}: {answer[:200]!r}")
                continue
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies, errors


async def run_http_load(
    *,
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    calls: int,
    warmup: int,
    wait: bool = True,
) -> dict[str, Any]:
    """Warm up, report ``warm``, wait for the go line (``wait``), measure; return the result."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        _, warm_latencies, warm_errors = await _drive(
            session, url, body, headers, concurrency, warmup
        )
        warm = {
            "event": "warm",
            "ok": len(warm_latencies),
            "errors": len(warm_errors),
            "error_samples": warm_errors[:MAX_ERRORS_LISTED],
        }
        print(json.dumps(warm), flush=True)
        if wait:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        elapsed, latencies, errors = await _drive(session, url, body, headers, concurrency, calls)
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
    }


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module docstring); the result is the last line on stdout."""
    parser = argparse.ArgumentParser(description="HTTP load generator (POSTs).")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--no-wait", dest="wait", action="store_false")
    args = parser.parse_args(argv)
    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep:
            raise SystemExit(f"--header wants 'Name: value', got {item!r}")
        headers[name.strip()] = value.strip()
    result = asyncio.run(
        run_http_load(
            url=args.url,
            body=args.body_file.read_bytes(),
            headers=headers,
            concurrency=args.concurrency,
            calls=args.calls,
            warmup=args.warmup,
            wait=args.wait,
        )
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
