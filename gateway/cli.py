"""``ruta gateway …``: the HTTP gateway's command group."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import click

from ruta.listeners import LISTENER_FAILED_EXIT_STATUS
from ruta.readiness import stop_event

__all__ = ["group", "serve"]


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop where it is installed (every platform but Windows), as the security server uses."""
    try:
        import uvloop  # noqa: PLC0415 - optional: absent on Windows
    except ImportError:  # pragma: no cover - platform dependent
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def _run(config: Path) -> bool:
    from gateway.app import GatewayApp  # noqa: PLC0415 - keep `ruta --help` fast
    from gateway.settings import GatewaySettings  # noqa: PLC0415

    app = await GatewayApp.start(GatewaySettings.load(config))
    stop = stop_event()
    try:
        return await app.listeners.serve_until(stop)
    finally:
        await app.stop()


@click.command("serve")
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    envvar="RUTA_GW_CONFIG",
    help="The gateway's settings file (TOML); RUTA_GW_* variables override it.",
)
def serve(config: Path) -> None:
    """Run the gateway described by the settings file until stopped.

    Writes DATA_DIR/ready.json with the bound addresses once it serves; SIGTERM or Ctrl-C stops it.
    If the back end's gRPC server loop ends and cannot be restarted, it exits with status 3.
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        served = runner.run(_run(config))
    if not served:
        sys.exit(LISTENER_FAILED_EXIT_STATUS)


@click.group("gateway")
def group() -> None:
    """The HTTP gateway: REST/JSON service access and directory services."""


group.add_command(serve)
