"""``ruta ss refusals --config FILE``: read the refused exchanges a server kept
(:mod:`security_server.refusals`), newest last, filtered, or counted by fault."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import click

from ruta.settings import ConfigError
from security_server.refusals import REFUSALS_FILE, RefusalRecord, read_refusals
from security_server.server import worker_dir
from security_server.settings import SecurityServerSettings

__all__ = ["refusals"]


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 time", param_hint="--since"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _matches(
    record: RefusalRecord,
    *,
    since: datetime | None,
    fault: str | None,
    client: str | None,
    service: str | None,
) -> bool:
    if since is not None:
        try:
            if datetime.fromisoformat(record.at) < since:
                return False
        except ValueError:
            return False
    return (
        (fault is None or record.fault == fault)
        and (client is None or record.client == client)
        and (service is None or record.service == service)
    )


@click.command(name="refusals")
@click.option(
    "--config",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The server's settings file (TOML), as given to ruta ss serve.",
)
@click.option("--since", help="Only refusals at or after this ISO 8601 time (UTC if no zone).")
@click.option("--fault", help="Only this fault code (e.g. server.consumer.access_denied).")
@click.option("--client", help="Only calls of this client subsystem.")
@click.option("--service", help="Only calls of this service.")
@click.option("--count", "count_only", is_flag=True, help="Print counts by role and fault.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Print at most the newest N matching refusals.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def refusals(
    *,
    config: Path,
    since: str | None,
    fault: str | None,
    client: str | None,
    service: str | None,
    count_only: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Print the refused exchanges the server kept in DATA_DIR/refusals.jsonl: time, role,
    fault code, fault id, status, client, service, method, message id (never bodies). They
    include refusals decided before anything was signed, which no message log holds."""
    try:
        settings = SecurityServerSettings.from_file(config)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    moment = _since(since)
    # A node run as workers keeps one file per worker (docs/operator/clusters.md).
    folders = [settings.data_dir]
    if settings.server.workers > 1:
        folders = [worker_dir(settings.data_dir, i) for i in range(settings.server.workers)]
    found = sorted(
        (
            r
            for folder in folders
            for r in read_refusals(folder / REFUSALS_FILE)
            if _matches(r, since=moment, fault=fault, client=client, service=service)
        ),
        key=lambda r: r.at,
    )
    if count_only:
        counts = Counter((r.role, r.fault) for r in found)
        rows = [
            {"role": role, "fault": code, "count": n}
            for (role, code), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        ]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        click.echo("COUNT  ROLE      FAULT")
        for row in rows:
            click.echo(f"{row['count']:>5}  {row['role']:<8}  {row['fault']}")
        return
    shown = found[-limit:]
    if as_json:
        click.echo(json.dumps([_as_dict(r) for r in shown], indent=2))
        return
    click.echo("AT  ROLE  FAULT  FAULT_ID  STATUS  CLIENT  SERVICE  METHOD  MESSAGE_ID")
    for r in shown:
        click.echo(
            f"{r.at}  {r.role}  {r.fault}  {r.fault_id}  {r.status}  {r.client}  {r.service}  "
            f"{r.method}  {r.message_id}"
        )


def _as_dict(record: RefusalRecord) -> dict[str, str]:
    return {name: getattr(record, name) for name in RefusalRecord.__dataclass_fields__}
