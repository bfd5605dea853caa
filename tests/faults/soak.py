"""Soak: the two-server bed (``ruta ss serve`` processes) under moderate load for a set time,
sampling each server's memory, open file descriptors, log growth and the callers' errors and
latency over time. Not a test (nothing here asserts a time); ``make soak`` runs it.

Settings (environment): ``SOAK_SECONDS`` (default 600), ``SOAK_RATE`` calls per second
(default 40), ``SOAK_CONCURRENCY`` (default 8), ``SOAK_SAMPLE_SECONDS`` (default 10),
``SOAK_OUT`` folder for the report (default ``soak-report``).

The report: a table on stdout, ``samples.csv`` and ``soak.svg`` (a plot per measure, drawn by
hand so no plotting library is needed) in ``SOAK_OUT``. At the end both logs are read back and
verified, and every answered call must be in both (exit status 1 otherwise).
"""

from __future__ import annotations

import asyncio
import csv
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import grpc.aio

from ruta.ids import ServerId
from tests.faults.support import (
    Outcome,
    assert_acknowledged_in_both,
    call_once,
    read_log,
)
from tests.integration.security_server.bed import POP, SOC, Bed, bed, fault_of

SECONDS: Final = float(os.environ.get("SOAK_SECONDS", "600"))
RATE: Final = float(os.environ.get("SOAK_RATE", "40"))
CONCURRENCY: Final = int(os.environ.get("SOAK_CONCURRENCY", "8"))
SAMPLE_SECONDS: Final = float(os.environ.get("SOAK_SAMPLE_SECONDS", "10"))
OUT: Final = Path(os.environ.get("SOAK_OUT", "soak-report"))
SERVERS: Final = (SOC, POP)


@dataclass
class Sample:
    at: float
    rss_mib: dict[str, float]
    fds: dict[str, int]
    log_mib: dict[str, float]
    calls: int
    errors: int
    p50_ms: float
    p99_ms: float


@dataclass
class Window:
    """What the callers saw since the last sample."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0


def _proc(pid: int) -> tuple[float, int]:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _log_bytes(instance: Bed, server: ServerId) -> float:
    folder = instance.agencies[server].data_dir
    return sum(p.stat().st_size for p in folder.glob("messagelog.db*")) / (1 << 20)


def _sample(instance: Bed, started: float, window: Window) -> Sample:
    rss: dict[str, float] = {}
    fds: dict[str, int] = {}
    logs: dict[str, float] = {}
    for server in SERVERS:
        name = server.member.member_code
        process = instance.agencies[server].process
        if process is not None:
            rss[name], fds[name] = _proc(process.pid)
        logs[name] = _log_bytes(instance, server)
    latencies = sorted(window.latencies) or [0.0]
    return Sample(
        at=time.monotonic() - started,
        rss_mib=rss,
        fds=fds,
        log_mib=logs,
        calls=len(window.latencies),
        errors=window.errors,
        p50_ms=1000 * statistics.median(latencies),
        p99_ms=1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    )


async def _caller(
    channel: grpc.aio.Channel, outcome: Outcome, window: list[Window], stop: float
) -> None:
    pause = CONCURRENCY / RATE
    while time.monotonic() < stop:
        message_id = str(uuid.uuid4())
        began = time.monotonic()
        try:
            await call_once(channel, message_id)
        except grpc.aio.AioRpcError as error:
            window[0].errors += 1
            outcome.faults[fault_of(error) or error.code().name] += 1
        else:
            window[0].latencies.append(time.monotonic() - began)
            outcome.acknowledged.append(message_id)
        await asyncio.sleep(max(0.0, pause - (time.monotonic() - began)))


def _rows(samples: list[Sample]) -> list[list[str]]:
    names = [s.member.member_code for s in SERVERS]
    head = ["t (s)"]
    for name in names:
        head += [f"{name} RSS MiB", f"{name} fds", f"{name} log MiB"]
    head += ["calls", "errors", "p50 ms", "p99 ms"]
    rows = [head]
    for s in samples:
        row = [f"{s.at:.0f}"]
        for name in names:
            row += [
                f"{s.rss_mib.get(name, 0):.1f}",
                str(s.fds.get(name, 0)),
                f"{s.log_mib.get(name, 0):.2f}",
            ]
        row += [str(s.calls), str(s.errors), f"{s.p50_ms:.1f}", f"{s.p99_ms:.1f}"]
        rows.append(row)
    return rows


def _table(samples: list[Sample]) -> str:
    rows = _rows(samples)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _svg(samples: list[Sample]) -> str:
    """Four small line plots (memory, descriptors, log size, errors and p99) as SVG text."""
    names = [s.member.member_code for s in SERVERS]
    panels: list[tuple[str, dict[str, list[float]]]] = [
        ("RSS (MiB)", {n: [s.rss_mib.get(n, 0.0) for s in samples] for n in names}),
        ("open file descriptors", {n: [float(s.fds.get(n, 0)) for s in samples] for n in names}),
        ("message log on disk (MiB)", {n: [s.log_mib.get(n, 0.0) for s in samples] for n in names}),
        (
            "per interval: errors, p99 latency (ms)",
            {"errors": [float(s.errors) for s in samples], "p99": [s.p99_ms for s in samples]},
        ),
    ]
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    width, height, pad = 420, 220, 40
    xs = [s.at for s in samples] or [0.0]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{2 * height}" '
        'font-family="sans-serif" font-size="11">'
    ]
    for index, (title, series) in enumerate(panels):
        ox, oy = (index % 2) * width, (index // 2) * height
        top = max([max(v) for v in series.values() if v] + [1e-9])
        span = max(xs[-1] - xs[0], 1e-9)
        out.append(f'<text x="{ox + pad}" y="{oy + 16}" font-weight="bold">{title}</text>')
        out.append(
            f'<rect x="{ox + pad}" y="{oy + 24}" width="{width - 2 * pad}" '
            f'height="{height - 2 * pad}" fill="none" stroke="#999"/>'
        )
        out.append(f'<text x="{ox + 2}" y="{oy + 32}">{top:.4g}</text>')
        out.append(f'<text x="{ox + 2}" y="{oy + height - pad + 24}">0</text>')
        out.append(f'<text x="{ox + width - pad - 40}" y="{oy + height - 4}">{xs[-1]:.0f} s</text>')
        for (label, values), colour in zip(series.items(), colours, strict=False):
            points = " ".join(
                f"{ox + pad + (x - xs[0]) / span * (width - 2 * pad):.1f},"
                f"{oy + 24 + (1 - v / top) * (height - 2 * pad):.1f}"
                for x, v in zip(xs, values, strict=True)
            )
            out.append(f'<polyline fill="none" stroke="{colour}" points="{points}"/>')
            legend_x = ox + pad + 8 + 70 * list(series).index(label)
            out.append(
                f'<text x="{legend_x}" y="{oy + height - pad + 14}" fill="{colour}">{label}</text>'
            )
    out.append("</svg>")
    return "\n".join(out)


async def _soak(directory: Path) -> int:
    samples: list[Sample] = []
    outcome = Outcome()
    async with bed(directory) as instance:
        for server in (POP, SOC):
            await instance.spawn_server(server)
        started = time.monotonic()
        stop = started + SECONDS
        window = [Window()]
        async with instance.consumer_channel(SOC) as channel:
            callers = [
                asyncio.create_task(_caller(channel, outcome, window, stop))
                for _ in range(CONCURRENCY)
            ]
            samples.append(_sample(instance, started, window[0]))
            while time.monotonic() < stop:
                await asyncio.sleep(min(SAMPLE_SECONDS, max(0.0, stop - time.monotonic())))
                current, window[0] = window[0], Window()
                samples.append(_sample(instance, started, current))
                print(_table(samples[-1:]).splitlines()[-1], flush=True)
            await asyncio.gather(*callers)
        await instance.stop_process(SOC)
        await instance.stop_process(POP)
        consumer = await read_log(instance, SOC)
        provider = await read_log(instance, POP)
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "samples.csv", "w", newline="") as out:  # noqa: ASYNC230 - once, at the end
        csv.writer(out).writerows(_rows(samples))
    (OUT / "soak.svg").write_text(_svg(samples))
    print(_table(samples))
    print(
        f"\n{len(outcome.acknowledged)} calls answered, {sum(outcome.faults.values())} refused "
        f"{dict(outcome.faults)}; report in {OUT}/ (samples.csv, soak.svg)"
    )
    try:
        assert_acknowledged_in_both(outcome.acknowledged, consumer, provider)
    except AssertionError as exc:
        print(f"LOST: {exc}")
        return 1
    print("both logs verify; every answered call is in both")
    return 0


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ruta-soak-") as directory:
        sys.exit(asyncio.run(_soak(Path(directory))))


if __name__ == "__main__":
    main()
