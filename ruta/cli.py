"""The ``ruta`` command line.

This module knows no part by name. Each part contributes a click command group through the
``ruta.cli`` entry point group in its distribution metadata (``registry = "registry.cli:group"``),
loaded only when that command is used, so ``ruta --help`` stays fast and one broken part cannot
stop the others' commands.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from ruta import __version__
from ruta.faults import RutaError
from ruta.logs import (
    DEFAULT_LOG_FORMAT,
    DEFAULT_LOG_LEVEL,
    LOG_FORMATS,
    LOG_LEVELS,
    configure_logging,
    serve_at_info,
)

__all__ = ["ENTRY_POINT_GROUP", "LazyGroup", "main", "serve_at_info_unless_chosen"]

ENTRY_POINT_GROUP = "ruta.cli"


def _parts() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when used.

    ``lazy_commands`` maps a command name to ``"module:attribute"``. Parts use it for their own
    groups, so each concern keeps its commands in its own module and ``--help`` stays fast.
    """

    def __init__(self, *args: Any, lazy_commands: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        own = super().get_command(ctx, cmd_name)
        if own is not None or cmd_name not in self.lazy_commands:
            return own
        module_name, _, attribute = self.lazy_commands[cmd_name].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise click.ClickException(f"{self.lazy_commands[cmd_name]} is not a click command")
        return command


class _PartsGroup(click.Group):
    """A group whose sub-commands come from entry points, loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_parts()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        own = super().get_command(ctx, cmd_name)
        if own is not None:
            return own
        ep = _parts().get(cmd_name)
        if ep is None:
            return None
        command = ep.load()
        if not isinstance(command, click.Command):
            raise click.ClickException(f"entry point {cmd_name!r} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except RutaError as exc:
            # A deliberate refusal: print the fault code and text, never a traceback.
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_PartsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ruta")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=DEFAULT_LOG_LEVEL,
    show_default=True,
    envvar="RUTA_LOG_LEVEL",
    help="Level of the log lines written to standard error (servers that log one line per "
    "call, like 'adapter serve', default to info).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    default=DEFAULT_LOG_FORMAT,
    show_default=True,
    envvar="RUTA_LOG_FORMAT",
    help="text for people; json: one JSON object per line, for log shippers.",
)
def main(log_level: str, log_format: str) -> None:
    """Ruta: a secure data-exchange bus for public agencies.

    Each agency runs a security server; a central registry keeps members, services and contracts;
    every exchange is signed and logged where anyone can verify it.
    """
    configure_logging(level=log_level.lower(), log_format=log_format.lower())


def serve_at_info_unless_chosen() -> None:
    """For a server command that logs one line per call: log at ``info`` unless the operator
    chose a level (``--log-level`` or ``RUTA_LOG_LEVEL``). Outside ``ruta`` it does nothing."""
    context = click.get_current_context(silent=True)
    if context is None:
        return
    root = context.find_root()
    if root.command is not main:
        return
    source = root.get_parameter_source("log_level")
    serve_at_info(level_chosen=source not in (None, click.core.ParameterSource.DEFAULT))
