"""``ruta ss serve --config FILE``: run one security server until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

import click

from ruta.listeners import LISTENER_FAILED_EXIT_STATUS
from ruta.node_logs import MAX_WORKERS
from ruta.readiness import stop_event
from security_server.reload import SettingsReloader, hangup_event, serve_reloads
from security_server.server import SecurityServerApp
from security_server.settings import SecurityServerSettings
from security_server.workers import supervise

__all__ = ["serve"]


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop where it is installed (every platform but Windows): cheaper loop iterations and
    thread wake-ups, measured ~15% lower latency per exchange (bench/README.md)."""
    try:
        import uvloop  # noqa: PLC0415 - optional: absent on Windows
    except ImportError:  # pragma: no cover - platform dependent
        return asyncio.new_event_loop
    return uvloop.new_event_loop


#: Allocations (less deallocations) of container objects between two collections of the
#: youngest generation (CPython's default is 700).
GC_YOUNG_THRESHOLD: Final = 10_000


def _settle_heap() -> None:
    """Once the server has started: what start-up made (modules, configuration, settings,
    channels, caches: ~140,000 objects, which lives as long as the process) is moved out of the
    cyclic garbage collector's sight (``gc.freeze``), and its youngest generation is collected
    after :data:`GC_YOUNG_THRESHOLD` allocations instead of 700. An exchange's objects are freed
    by reference counting; under load the collector kept scanning the exchanges in flight
    several hundred times a second, and every few seconds a full collection walked the whole
    heap (~40-90 ms wall each, measured with ``gc.callbacks`` at concurrency 64; bench/README.md
    "Fifth round"). Cycles are still collected, just in larger, rarer batches."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def _run(settings: SecurityServerSettings, config: Path, worker: int | None) -> bool:
    """Serve until stopped (True) or a listener could not be restarted (False); reload the
    settings file on each SIGHUP meanwhile."""
    hangups = hangup_event()  # before start-up: an early SIGHUP must not end the process
    # Also before start-up: start-up writes the ready file, and a SIGTERM from then on (a
    # worker's supervisor dying, say) must stop the server cleanly, removing it again, not
    # end the process with the signal's default action while the heap is being settled.
    stop = stop_event()
    app = await SecurityServerApp.start(settings, worker=worker)
    _settle_heap()
    reloads = asyncio.get_running_loop().create_task(
        serve_reloads(hangups, SettingsReloader.for_app(app, config))
    )
    try:
        return await app.listeners.serve_until(stop)
    finally:
        reloads.cancel()
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
@click.option(
    "--worker",
    type=click.IntRange(0, MAX_WORKERS - 1),
    default=None,
    hidden=True,
    help="Run as this worker of the node (set by the supervisor of [server] workers).",
)
def serve(config: Path, worker: int | None) -> None:
    """Run the security server described by the settings file until stopped.

    Writes DATA_DIR/ready.json with the bound addresses once every port serves; SIGTERM or
    Ctrl-C stops it cleanly (calls in flight finish, the message log is flushed). A gRPC port
    whose server loop ends is restarted on the same address; if it cannot be, the server stops
    and exits with status 3. SIGHUP (or ``ruta ss reload``) reloads the file: backends and
    metadata-only subsystems change at once, other changes are reported as needing a restart,
    and an invalid file is refused.

    With ``[server] workers = N`` above 1 this process supervises N worker processes that
    share the ports, each with its own log tree (docs/operator/clusters.md); signals reach
    every worker and the node stops as a whole.
    """
    settings = SecurityServerSettings.from_file(config)
    if worker is None and settings.server.workers > 1:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            status = runner.run(supervise(settings, config, env=_worker_env()))
        if status:
            sys.exit(status)
        return
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        if not runner.run(_run(settings, config, worker)):
            sys.exit(LISTENER_FAILED_EXIT_STATUS)


def _worker_env() -> dict[str, str]:
    """This process's environment, plus the log level and format it was given on the command
    line, so the workers log as the supervisor does."""
    env = dict(os.environ)
    context = click.get_current_context(silent=True)
    root = context.find_root() if context is not None else None
    if root is not None:
        for param, variable in (("log_level", "RUTA_LOG_LEVEL"), ("log_format", "RUTA_LOG_FORMAT")):
            value = root.params.get(param)
            if isinstance(value, str):
                env[variable] = value
    return env
