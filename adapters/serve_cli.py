"""``ruta adapter serve FILE`` and ``ruta adapter check FILE``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from adapters.check import PROBE_TIMEOUT_SECONDS, check_adapter
from adapters.server import Adapter, start_server
from ruta.cli import serve_at_info_unless_chosen
from ruta.listeners import LISTENER_FAILED_EXIT_STATUS
from ruta.readiness import stop_event, write_ready_file

__all__ = ["check", "serve"]

_log = logging.getLogger(__name__)

_FILE = click.Path(dir_okay=False, path_type=Path)


async def _serve(file: Path, listen: str | None, ready_file: Path | None) -> bool:
    """Serve until stopped (True) or the listener could not be restarted (False)."""
    adapter = Adapter.load(file)
    try:
        running = await start_server(adapter, listen)
        stop = stop_event()
        address = (listen or adapter.server_spec.listen).rpartition(":")[0]
        # One line on stdout that scripts (and tests) wait for: the service and the bound port.
        click.echo(f"serving {adapter.service.name} on {address}:{running.port}")
        sys.stdout.flush()
        if ready_file is not None:
            ready: dict[str, object] = {
                "address": f"{address}:{running.port}",
                "service": adapter.service.name,
                "pid": os.getpid(),
            }
            if running.metrics_url is not None:
                ready["metrics"] = running.metrics_url
            write_ready_file(ready_file, ready)
        _log.info("adapter %s serving on port %d", adapter.service.name, running.port)
        stopped = await running.listeners.serve_until(stop)
        _log.info("adapter %s stopping", adapter.service.name)
        await running.stop(adapter.server_spec.shutdown_grace_seconds)
        return stopped
    finally:
        await adapter.aclose()


@click.command("serve")
@click.argument("file", type=_FILE)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Address to listen on (port 0: any free port); default: [server] listen in FILE.",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help='Once listening, write {"address": "HOST:PORT", "service": ..., "pid": ...} here '
    '(and "metrics": URL when the file sets metrics_listen).',
)
def serve(file: Path, listen: str | None, ready_file: Path | None) -> None:
    """Serve the service described by the adapter FILE until SIGTERM or SIGINT.

    The gRPC health service (grpc.health.v1.Health) answers on the same port. Prints one line,
    "serving SERVICE on HOST:PORT", once it listens. Logs one line per call (method, status,
    fault, fault id, message id, duration) to standard error at info, the level it logs at
    unless 'ruta --log-level' says otherwise; 'ruta --log-format json' writes them as JSON. If
    the gRPC server loop ends, it is restarted on the same address; if it cannot be, the adapter
    exits with status 3.
    """
    serve_at_info_unless_chosen()
    if not asyncio.run(_serve(file, listen, ready_file)):
        sys.exit(LISTENER_FAILED_EXIT_STATUS)


@click.command("check")
@click.argument("file", type=_FILE)
@click.option(
    "--offline",
    is_flag=True,
    help="Check the file and its .proto only; do not contact the legacy systems.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 300),
    default=PROBE_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds to wait for each legacy system.",
)
def check(file: Path, offline: bool, timeout: float) -> None:
    """Check the adapter FILE against its .proto and, unless --offline, its legacy systems.

    Prints one line per finding; exits 1 when any problem was found.
    """
    report = asyncio.run(check_adapter(file, reach=not offline, probe_seconds=timeout))
    click.echo(report.render())
    if not report.ok:
        sys.exit(1)
