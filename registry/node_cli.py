"""``ruta registry init``, ``ruta registry serve`` and ``ruta registry node add``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from registry.serve import serve_forever
from registry.settings import RegistryLayout
from registry.setup import add_registry_node, initialise_registry, prepare_registry_node
from ruta.listeners import LISTENER_FAILED_EXIT_STATUS

__all__ = ["init", "node", "serve"]

_DIR = click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
    envvar="RUTA_REGISTRY_DIR",
    show_envvar=True,
    help="The registry directory.",
)


@click.command()
@_DIR
@click.option("--instance", required=True, help="The instance identifier, e.g. LAC.")
@click.option(
    "--db",
    "db_url",
    help="SQLAlchemy URL of the store, e.g. postgresql://user@host/db "
    "(default: SQLite registry.db in the directory).",
)
@click.option(
    "--admin-listen", default="127.0.0.1:4470", show_default=True, help="Admin API HOST:PORT."
)
@click.option(
    "--http-listen", default="127.0.0.1:4480", show_default=True, help="HTTP listener HOST:PORT."
)
@click.option(
    "--public-url",
    help="The HTTP listener's URL as security servers reach it (default: http://HTTP-LISTEN).",
)
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
def init(
    *,
    directory: Path,
    instance: str,
    db_url: str | None,
    admin_listen: str,
    http_listen: str,
    public_url: str | None,
    json_output: bool,
) -> None:
    """Create a registry: store, CA, keys, settings and the local operator's admin credential."""
    made = asyncio.run(
        initialise_registry(
            directory,
            instance=instance,
            db_url=db_url,
            admin_listen=admin_listen,
            http_listen=http_listen,
            public_url=public_url,
        )
    )
    summary = made.to_json()
    if json_output:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    click.echo(f"registry for instance {instance} created in {directory}")
    click.echo(f"  configuration anchor for security servers: {summary['anchor']}")
    click.echo(f"  local operator's admin certificate: {summary['admin_cert']}")
    click.echo(f"  start it with: ruta registry serve --dir {directory}")


@click.command()
@_DIR
def serve(directory: Path) -> None:
    """Run the registry: admin API, /globalconf, /ocsp and the witness, until SIGTERM.

    Exits with status 3 if the admin API's listener stopped and could not be restarted.
    """
    try:
        import uvloop  # noqa: PLC0415

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is absent on some platforms
        pass
    if not asyncio.run(serve_forever(directory)):
        sys.exit(LISTENER_FAILED_EXIT_STATUS)


@click.group()
def node() -> None:
    """Further registry nodes on the same PostgreSQL database (docs/operator/registry.md)."""


@node.command("init")
@_DIR
@click.option("--instance", required=True, help="The instance identifier, e.g. LAC.")
@click.option(
    "--admin-listen",
    default="127.0.0.1:4470",
    show_default=True,
    help="This node's gRPC listener HOST:PORT.",
)
@click.option(
    "--http-listen",
    default="127.0.0.1:4480",
    show_default=True,
    help="This node's HTTP listener HOST:PORT.",
)
@click.option(
    "--public-url",
    help="This node's HTTP listener URL as security servers reach it "
    "(default: http://HTTP-LISTEN).",
)
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
def node_init(
    *,
    directory: Path,
    instance: str,
    admin_listen: str,
    http_listen: str,
    public_url: str | None,
    json_output: bool,
) -> None:
    """On the new node's host: make its keys and a request for the node that holds the CA."""
    made = prepare_registry_node(
        directory,
        instance=instance,
        admin_listen=admin_listen,
        http_listen=http_listen,
        public_url=public_url,
    )
    if json_output:
        click.echo(json.dumps(made.to_json(), indent=2, sort_keys=True))
        return
    click.echo(f"keys for a new registry node made in {directory}")
    click.echo(f"  take {made.request} to the node that holds the CA and run there:")
    click.echo(
        f"  ruta registry node add --dir REGISTRY-DIR --request {made.request.name} --out GRANT"
    )


@node.command("add")
@_DIR
@click.option(
    "--request",
    "request",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path, resolve_path=True),
    help="The node-request.json that `ruta registry node init` wrote.",
)
@click.option(
    "--out",
    "grant",
    required=True,
    type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
    help="Directory to write the grant to (public files; must not exist).",
)
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
def add(*, directory: Path, request: Path, grant: Path, json_output: bool) -> None:
    """Where the CA is: admit a new node and write its grant; extends the anchor in --dir."""
    made = add_registry_node(directory, request, grant)
    if json_output:
        click.echo(json.dumps(made.to_json(), indent=2, sort_keys=True))
        return
    click.echo(f"grant for the new node written to {grant}: copy its files into the node's --dir")
    click.echo(f"  configuration URLs: {', '.join(made.anchor.globalconf_urls)}")
    click.echo(f"  give the new anchor {RegistryLayout(directory).anchor} to every security server")
