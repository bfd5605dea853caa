"""``ruta ss reload`` and ``ruta ss backend add|remove|list``: change a running server's settings.

``reload`` checks the settings file, then signals the server that serves it (SIGHUP to the pid in
``DATA_DIR/ready.json``) and prints what the server did, read back from
``DATA_DIR/reload.json`` (:mod:`security_server.reload`). ``backend`` edits the ``[[backends]]``
tables of the file: it reads the file, changes the list, checks that the result loads, and
replaces the file atomically (the other settings keep their values; comments are not kept).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import click

from ruta.addresses import split_address
from ruta.files import write_atomically
from ruta.ids import IdentifierError, ServiceId
from ruta.node_logs import MAX_WORKERS
from ruta.readiness import read_ready_file
from ruta.settings import ConfigError, read_text, read_toml
from security_server.reload import RELOAD_FILE, ReloadOutcome
from security_server.server import READY_FILE, worker_dir
from security_server.settings import SecurityServerSettings, settings_toml

__all__ = ["CONFIG_OPTION", "ReloadError", "backend", "edit_backends", "reload", "signal_reload"]

#: Largest ready.json or reload.json read.
MAX_STATUS_FILE_BYTES: Final = 64 * 1024
#: Longest ``--timeout`` for a server's answer to a reload.
MAX_RELOAD_WAIT_SECONDS: Final = 300.0
_POLL_SECONDS: Final = 0.05
#: Slack between a process's start time (whole seconds on Linux) and its ready.json.
_START_SLACK_SECONDS: Final = 2.0


class ReloadError(click.ClickException):
    """The server could not be asked to reload, or did not answer in time."""


# --- reload ---------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(read_text(path, what=what, limit=MAX_STATUS_FILE_BYTES))
    except (ConfigError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _process_started_at(pid: int) -> float | None:
    """When process ``pid`` started (Unix time), where ``/proc`` tells; else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    # Field 22 (starttime, clock ticks after boot); fields after the ")" of the command name.
    fields = stat.rpartition(")")[2].split()
    try:
        ticks = float(fields[19])
    except (IndexError, ValueError):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _serving_pid(settings: SecurityServerSettings) -> tuple[int, list[tuple[int, Path]]]:
    """The pid of the process serving ``settings`` (from its ready.json), checked to be alive
    and to have started before it wrote that file (not a later process given the same pid);
    and, for a node run as workers, each worker's pid and ``reload.json`` (else the process's
    own)."""
    ready_path = settings.data_dir / READY_FILE
    ready = read_ready_file(ready_path)
    if ready is None:
        raise ReloadError(
            f"no running server for {settings.server_id}: {READY_FILE} is missing or unreadable "
            "in its data directory (start it with ruta ss serve)"
        )
    pid = ready.get("pid")
    if (
        ready.get("server_id") != str(settings.server_identifier)
        or not isinstance(pid, int)
        or pid <= 1
    ):
        raise ReloadError(f"{READY_FILE} in the data directory is not {settings.server_id}'s")
    started = _process_started_at(pid)
    if started is None and not Path("/proc").is_dir():
        started = 0.0  # no /proc: the signal's own liveness check is all there is
    try:
        written = ready_path.stat().st_mtime
    except OSError:
        written = 0.0  # removed meanwhile: the server has stopped
    if started is None or started > written + _START_SLACK_SECONDS:
        raise ReloadError(
            f"the server {settings.server_id} is not running ({READY_FILE} is left from a "
            "process that has ended)"
        )
    workers = ready.get("workers")
    if not isinstance(workers, list) or not workers:
        return pid, [(pid, settings.data_dir / RELOAD_FILE)]
    reporters = [
        (int(w.get("pid", 0)), worker_dir(settings.data_dir, i) / RELOAD_FILE)
        for i, w in enumerate(workers[:MAX_WORKERS])
        if isinstance(w, dict)
    ]
    return pid, reporters


def _reload_mark(path: Path) -> tuple[object, object]:
    status = _read_json(path, "reload file") or {}
    return status.get("pid"), status.get("sequence")


def signal_reload(settings: SecurityServerSettings, *, timeout: float) -> dict[str, Any]:
    """Send SIGHUP to the server that serves ``settings`` and return its reload's outcome
    (the content of ``DATA_DIR/reload.json``). Raises :class:`ReloadError` when no server runs
    or it does not answer within ``timeout`` seconds."""
    pid, reporters = _serving_pid(settings)
    before = {path: _reload_mark(path) for _, path in reporters}
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ReloadError(f"the server {settings.server_id} is not running") from None
    except PermissionError:
        raise ReloadError(
            f"not allowed to signal the server {settings.server_id} (run as its user)"
        ) from None
    # A supervisor passes the signal to its workers; each reports in its own folder, and the
    # least favourable outcome is the node's.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = []
        for reporter, path in reporters:
            mark = _reload_mark(path)
            status = _read_json(path, "reload file") if mark != before[path] else None
            if status is None or mark[0] != reporter:
                break
            statuses.append(status)
        else:
            return max(statuses, key=lambda s: _OUTCOME_RANK.get(str(s.get("outcome")), 3))
        time.sleep(_POLL_SECONDS)
    raise ReloadError(
        f"the server {settings.server_id} did not report a reload within {timeout:g} s; see its log"
    )


#: Outcomes from best to worst (a node of workers reports its worst worker's).
_OUTCOME_RANK: Final[dict[str, int]] = {
    str(ReloadOutcome.APPLIED): 0,
    str(ReloadOutcome.NEEDS_RESTART): 1,
    str(ReloadOutcome.REFUSED): 2,
}


def _load(config: Path) -> SecurityServerSettings:
    try:
        return SecurityServerSettings.from_file(config)
    except ConfigError as exc:
        raise click.ClickException(
            f"{exc.message}; nothing was changed and the running server keeps its settings"
        ) from None


def _report(status: dict[str, Any]) -> None:
    outcome = status.get("outcome")
    message = str(status.get("message", ""))
    if outcome == ReloadOutcome.REFUSED:
        raise click.ClickException(f"the server refused the file and keeps its settings: {message}")
    click.echo(f"{outcome}: {message}")


_TIMEOUT_OPTION = click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=MAX_RELOAD_WAIT_SECONDS),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the server's answer.",
)
CONFIG_OPTION = click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    envvar="RUTA_SS_CONFIG",
    help="The server's settings file (TOML), as given to ruta ss serve.",
)


@click.command("reload")
@CONFIG_OPTION
@_TIMEOUT_OPTION
def reload(config: Path, timeout: float) -> None:
    """Make the running server read its settings file again.

    The file is checked first; an invalid one is refused here (and by the server) and the
    server keeps its settings. Backends and log.metadata_only_subsystems change at once, without
    dropping calls in flight; any other changed setting is reported as needing a restart and is
    not applied. Exits 0 when the server applied the file, 1 otherwise.
    """
    _report(signal_reload(_load(config), timeout=timeout))


# --- backend --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (POSIX): two edits of one file do not interleave."""
    try:
        import fcntl  # noqa: PLC0415 - POSIX only
    except ImportError:  # pragma: no cover - platform dependent
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


Backends = list[dict[str, Any]]


def edit_backends(config: Path, change: Callable[[Backends], Backends]) -> None:
    """Replace the backends of the settings file ``config`` by ``change(backends)``.

    The result is written as ``[[backends]]`` tables (an inline ``backends = [...]`` array is
    rewritten so) with every other setting kept, and only if the whole file then loads; the file
    is replaced atomically, so a reader sees the old file or the new one. Raises
    :class:`~ruta.settings.ConfigError` (the file is then unchanged) or what ``change`` raises.
    """
    with _locked(config.parent):
        document = read_toml(config)
        backends = document.get("backends", [])
        if not isinstance(backends, list) or not all(isinstance(b, dict) for b in backends):
            raise ConfigError(f"settings file {config.name}: backends is not a list of tables")
        new = change([dict(b) for b in backends])
        if new:
            document["backends"] = new
        else:
            document.pop("backends", None)
        text = settings_toml(document)
        SecurityServerSettings.from_data(document, where="the settings after this edit")
        write_atomically(config, text.encode("utf-8"), mode=config.stat().st_mode & 0o777)


def _service(text: str) -> str:
    try:
        return str(ServiceId.parse(text))
    except IdentifierError as exc:
        raise click.BadParameter(exc.message) from None


def _apply(config: Path, change: Callable[[Backends], Backends], *, then_reload: bool) -> None:
    try:
        edit_backends(config, change)
    except ConfigError as exc:
        raise click.ClickException(f"{exc.message}; the file is unchanged") from None
    except OSError as exc:
        raise click.ClickException(
            f"{config.name} cannot be written ({exc.strerror or 'I/O error'}); it is unchanged"
        ) from None
    if then_reload:
        _report(signal_reload(_load(config), timeout=10.0))


_RELOAD_FLAG = click.option(
    "--reload", "then_reload", is_flag=True, help="Then make the running server reload the file."
)
_FilePath = click.Path(exists=True, dir_okay=False, path_type=Path, resolve_path=True)


@click.group("backend")
def backend() -> None:
    """List, add or remove the backends in a server's settings file ([[backends]] tables)."""


@backend.command("list")
@CONFIG_OPTION
def list_backends(config: Path) -> None:
    """Print the backends of the file: service, address, tls."""
    settings = _load(config)
    click.echo("SERVICE\tADDRESS\tTLS")
    for item in settings.backends:
        click.echo(f"{item.service}\t{item.address}\t{'yes' if item.tls else 'no'}")


@backend.command("add")
@CONFIG_OPTION
@click.argument("service")
@click.argument("address")
@click.option("--tls", is_flag=True, help="Call the backend over TLS (required off loopback).")
@click.option("--ca", type=_FilePath, help="With --tls: CA certificates of the backend (PEM).")
@click.option("--client-cert", type=_FilePath, help="With --tls: client certificate (PEM).")
@click.option("--client-key", type=_FilePath, help="With --tls: client key (PEM).")
@click.option("--replace", is_flag=True, help="Replace the service's backend if it has one.")
@_RELOAD_FLAG
def add_backend(
    *,
    config: Path,
    service: str,
    address: str,
    tls: bool,
    ca: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
    replace: bool,
    then_reload: bool,
) -> None:
    """Map SERVICE (INSTANCE/CLASS/CODE/SUBSYSTEM/package.Service) to the backend at ADDRESS
    (HOST:PORT)."""
    name = _service(service)
    try:
        split_address(address)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ADDRESS") from None
    entry: dict[str, Any] = {"service": name, "address": address, "tls": tls}
    for key, value in (("ca", ca), ("client_cert", client_cert), ("client_key", client_key)):
        if value is not None:
            entry[key] = str(value)

    def change(backends: Backends) -> Backends:
        others = [b for b in backends if b.get("service") != name]
        if len(others) != len(backends) and not replace:
            raise click.ClickException(f"{name} has a backend already (give --replace)")
        return [*others, entry]

    _apply(config, change, then_reload=then_reload)
    click.echo(f"backend of {name}: {address}")


@backend.command("remove")
@CONFIG_OPTION
@click.argument("service")
@_RELOAD_FLAG
def remove_backend(*, config: Path, service: str, then_reload: bool) -> None:
    """Remove SERVICE's backend (calls in flight finish; new calls are refused as unknown)."""
    name = _service(service)

    def change(backends: Backends) -> Backends:
        others = [b for b in backends if b.get("service") != name]
        if len(others) == len(backends):
            raise click.ClickException(f"{name} has no backend in {config.name}")
        return others

    _apply(config, change, then_reload=then_reload)
    click.echo(f"removed the backend of {name}")
