"""``ruta ss serve --config FILE``: run one security server until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from security_server.server import SecurityServerApp
from security_server.settings import SecurityServerSettings

__all__ = ["serve"]


async def _run(settings: SecurityServerSettings) -> None:
    app = await SecurityServerApp.start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await app.stop()


@click.command("serve")
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    envvar="RUTA_SS_CONFIG",
    help="The server's settings file (TOML); RUTA_SS_* variables override it.",
)
def serve(config: Path) -> None:
    """Run the security server described by the settings file until stopped.

    Writes DATA_DIR/ready.json with the bound addresses once every port serves; SIGTERM or
    Ctrl-C stops it cleanly (calls in flight finish, the message log is flushed).
    """
    settings = SecurityServerSettings.from_file(config)
    asyncio.run(_run(settings))
