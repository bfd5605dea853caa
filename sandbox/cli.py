"""``ruta sandbox up|down``: a whole Ruta instance on loopback, as real processes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sandbox.control import request_restart
from sandbox.instance import PID_FILE, Sandbox, stop_sandbox
from sandbox.processes import SandboxError

__all__ = ["group"]


@click.group(name="sandbox", help="Run a whole Ruta instance on loopback (registry + servers).")
def group() -> None:
    """The ``ruta sandbox`` command group."""


_DIR = click.Path(file_okay=False, path_type=Path, resolve_path=True)


@group.command(name="up")
@click.option("--dir", "directory", required=True, type=_DIR, help="A fresh directory for it.")
@click.option("--quiet", is_flag=True, help="Print only errors and the final line.")
def up(directory: Path, quiet: bool) -> None:
    """Start a registry, four agencies' security servers, the adapters and the legacy systems
    they front; write DIR/sandbox.json; stay up until ``ruta sandbox down --dir DIR``,
    SIGTERM or Ctrl-C, then stop every process and exit 0."""

    def echo(text: str) -> None:
        if not quiet or text.startswith(("error", "warning", "sandbox ")):
            click.echo(text, err=text.startswith("error"))

    sys.exit(Sandbox(directory, echo=echo).run())


@group.command(name="down")
@click.option("--dir", "directory", required=True, type=_DIR, help="The sandbox's directory.")
def down(directory: Path) -> None:
    """Stop the sandbox running in DIR (every process it started) and wait until it has."""
    try:
        found = stop_sandbox(directory)
    except SandboxError as error:
        raise click.ClickException(error.message) from None
    click.echo("sandbox stopped" if found else f"no sandbox was running in {directory}")


@group.command(name="restart")
@click.option("--dir", "directory", required=True, type=_DIR, help="The sandbox's directory.")
@click.argument("server")
def restart(directory: Path, server: str) -> None:
    """Restart one security server of the sandbox running in DIR, in place: the sandbox stops
    it (or a copy restarted by hand from its settings file) and starts it again as its own
    child, with the same settings file (re-read, so edits to ss.toml take effect), log file
    (DIR/logs/ss-AGENCY.log, appended to) and log level; sandbox.json names the new pid.
    SERVER is the server's id (DEV/GOV/REG/ss1) or its agency's folder name (reg)."""
    try:
        answer = request_restart(directory, server, pid_file=PID_FILE)
    except SandboxError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"{answer.get('server')} restarted (pid {answer.get('pid')})")
