"""``ruta audit``: export evidence from a security server, verify it offline, reconcile two sides.

``verify`` and ``reconcile`` need nothing but the bundles (and optionally the instance's
configuration anchor to pin the registry's signer). ``export`` calls a server's audit API over
mutual TLS with an auditor certificate (``urn:ruta:role:auditor:MEMBER`` or
``urn:ruta:role:auditor-supervisor``; bodies need ``auditor-bodies`` besides, docs/adr/0012).
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import click
import grpc
import grpc.aio

from ruta.evidence.bundle import MAX_BUNDLE_BYTES
from ruta.evidence.reconcile import reconcile
from ruta.evidence.verify import verify_bundle
from ruta.faults import RutaError, fault_from_rpc_error
from ruta.files import FileReadError, atomic_file, read_bounded
from ruta.globalconf import ConfigurationAnchor
from ruta.pki.tls import channel_credentials
from ruta.v1 import audit_pb2, audit_pb2_grpc

__all__ = ["MAX_SANDBOX_FILE_BYTES", "SANDBOX_FILE", "group", "sandbox_target"]

#: The file a sandbox directory describes itself with (``export --sandbox DIR``). The dev kit
#: (``sandbox/``) writes it and takes the name from here: production code never imports the kit.
SANDBOX_FILE: Final = "sandbox.json"
#: Largest sandbox.json / ready.json read.
MAX_SANDBOX_FILE_BYTES: Final = 1 << 20

#: Largest sequence number ``export`` asks for: a server's log holds signed 64-bit sequences and
#: refuses anything larger (``client.invalid_request``).
MAX_SEQUENCE_OPTION: Final = 2**63 - 1


class _AuditCliError(RutaError):
    pass


@click.group(name="audit", help="Export, verify and reconcile message-log evidence.")
def group() -> None:
    """The ``ruta audit`` command group."""


@group.command(name="verify")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--anchor",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The instance's configuration anchor: pins the registry's configuration signer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(bundle: Path, anchor: Path | None, as_json: bool) -> None:
    """Check BUNDLE offline; exit 1 naming the first record that fails."""
    pinned = ConfigurationAnchor.from_file(anchor) if anchor is not None else None
    report = verify_bundle(str(bundle), anchor=pinned, name=bundle.name)
    click.echo(report.to_json() if as_json else report.text(), nl=as_json)
    if not report.ok:
        if not as_json:
            click.echo(f"error: {report.first_failure}", err=True)
        sys.exit(1)


@group.command(name="reconcile")
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--anchor", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def reconcile_command(a: Path, b: Path, anchor: Path | None, as_json: bool) -> None:
    """Pair a consumer's (A) and a provider's (B) bundles by message id; exit 1 on any
    exchange present, or different, on one side only (or a bundle that does not verify)."""
    pinned = ConfigurationAnchor.from_file(anchor) if anchor is not None else None
    result = reconcile(
        verify_bundle(str(a), anchor=pinned, name=a.name),
        verify_bundle(str(b), anchor=pinned, name=b.name),
    )
    click.echo(result.to_json() if as_json else result.text(), nl=as_json)
    if not result.ok:
        sys.exit(1)


# --- export ------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_bounded(path, MAX_SANDBOX_FILE_BYTES, what="file"))
    except FileReadError as exc:
        raise _AuditCliError(exc.message) from None
    except (ValueError, UnicodeDecodeError):
        raise _AuditCliError(f"{path.name} cannot be read as JSON") from None
    if not isinstance(data, dict):
        raise _AuditCliError(f"{path.name} is not a JSON object")
    return data


def _server_entry(data: dict[str, Any], server: str) -> dict[str, Any]:
    servers = data.get("servers", {})
    if isinstance(servers, dict):
        entry = servers.get(server)
        if isinstance(entry, dict):
            return entry
    elif isinstance(servers, list):
        for item in servers:
            if isinstance(item, dict) and server in (item.get("id"), item.get("server_id")):
                return item
    raise _AuditCliError(f"the sandbox has no server {server}")


def sandbox_target(directory: Path, server: str) -> tuple[str, Path, Path, Path]:
    """``(audit address, auditor cert, auditor key, CA)`` for ``server`` of a sandbox.

    Reads ``DIR/sandbox.json``: ``"auditor": {"cert", "key", "ca"}`` (paths, relative to DIR
    allowed) and ``"servers"`` (an object keyed by server id, or a list of objects with ``id``)
    whose entry gives ``audit`` / ``audit_address``, or a ``data_dir`` whose ``ready.json`` has
    ``audit``. Raises a :class:`RutaError` naming what is missing.
    """
    data = _read_json(directory / SANDBOX_FILE)
    auditor = data.get("auditor")
    if not isinstance(auditor, dict) or not all(k in auditor for k in ("cert", "key", "ca")):
        raise _AuditCliError('the sandbox gives no "auditor": {"cert", "key", "ca"}')
    paths = [directory / str(auditor[k]) for k in ("cert", "key", "ca")]
    entry = _server_entry(data, server)
    address = entry.get("audit") or entry.get("audit_address")
    if not address and entry.get("data_dir"):
        ready = _read_json(directory / str(entry["data_dir"]) / "ready.json")
        address = ready.get("audit")
    if not isinstance(address, str) or not address:
        raise _AuditCliError(f"the sandbox gives no audit address for {server}")
    return address, paths[0], paths[1], paths[2]


def _timestamp(text: str | None) -> Any:
    if text is None:
        return None
    from google.protobuf import timestamp_pb2  # noqa: PLC0415 - only for time filters

    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


async def _export(
    address: str,
    credentials: grpc.ChannelCredentials,
    request: audit_pb2.ExportEvidenceRequest,
    out: Path,
    server_name: str | None,
) -> int:
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    written = 0
    async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        with atomic_file(out, mode=0o600) as sink:
            try:
                async for chunk in stub.ExportEvidence(request, timeout=600):
                    written += len(chunk.data)
                    if written > MAX_BUNDLE_BYTES:
                        # Larger than any bundle ``verify`` reads.
                        raise _AuditCliError(
                            f"the server sent a bundle over {MAX_BUNDLE_BYTES} bytes"
                        )
                    sink.write(chunk.data)
            except grpc.aio.AioRpcError as exc:
                fault, fault_id = fault_from_rpc_error(exc)
                raise _AuditCliError(
                    f"the server refused the export ({fault or exc.code().name}, "
                    f"fault id {fault_id}): {exc.details()}"
                ) from None
    return written


def _renamed_to_seq(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """``--to-seq`` was read as including its end; it is refused rather than guessed at."""
    if value is not None:
        raise click.UsageError(
            "--to-seq was renamed --until-seq: the end is excluded (--from-seq 0 --until-seq "
            "100 exports records 0 to 99); for records 0 to 100 give --until-seq 101"
        )


@group.command(name="export")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--address", help="host:port of the server's audit API.")
@click.option("--cert", type=click.Path(exists=True, path_type=Path), help="Auditor cert (PEM).")
@click.option("--key", type=click.Path(exists=True, path_type=Path), help="Auditor key (PEM).")
@click.option("--ca", type=click.Path(exists=True, path_type=Path), help="CA of the server.")
@click.option("--sandbox", type=click.Path(file_okay=False, path_type=Path))
@click.option("--server", "server", help="Server id within the sandbox (with --sandbox).")
@click.option("--tls-name", help="Name expected in the server's certificate (default: host).")
@click.option("--message-id")
@click.option("--client")
@click.option("--service")
@click.option("--method")
@click.option("--subject")
@click.option("--since", help="ISO 8601 time (inclusive).")
@click.option("--until", help="ISO 8601 time (exclusive).")
@click.option(
    "--from-seq",
    type=click.IntRange(min=0, max=MAX_SEQUENCE_OPTION),
    default=0,
    help="First sequence number exported (included).",
)
@click.option(
    "--until-seq",
    type=click.IntRange(min=0, max=MAX_SEQUENCE_OPTION),
    default=0,
    help="First sequence number NOT exported (the end is excluded: --from-seq 0 --until-seq "
    "100 exports records 0 to 99); 0: up to the latest cosigned checkpoint.",
)
@click.option(
    "--to-seq",
    hidden=True,
    callback=_renamed_to_seq,
    expose_value=False,
    help="Renamed --until-seq.",
)
@click.option("--no-bodies", is_flag=True, help="Leave message bodies out.")
@click.option(
    "--origin",
    default="",
    help="Which of the member's logs kept in the server's database (a node's or worker's tree, "
    "docs/operator/clusters.md); default: the answering server's own.",
)
def export_command(
    *,
    out: Path,
    address: str | None,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    sandbox: Path | None,
    server: str | None,
    tls_name: str | None,
    message_id: str | None,
    client: str | None,
    service: str | None,
    method: str | None,
    subject: str | None,
    since: str | None,
    until: str | None,
    from_seq: int,
    until_seq: int,
    no_bodies: bool,
    origin: str,
) -> None:
    """Write an evidence bundle from a security server's audit API to OUT.

    With no filter but the sequence range, the bundle claims to be complete over the half-open
    range [--from-seq, --until-seq), and verification names any record missing from it.
    """
    if sandbox is not None:
        if server is None:
            raise click.UsageError("--sandbox needs --server SERVER-ID")
        address, cert, key, ca = sandbox_target(sandbox, server)
    if address is None or cert is None or key is None or ca is None:
        raise click.UsageError("give --address, --cert, --key and --ca, or --sandbox/--server")
    try:
        filt = audit_pb2.AuditFilter(
            message_id=message_id or "",
            client=client or "",
            service=service or "",
            method=method or "",
            subject=subject or "",
        )
        if since:
            filt.since.CopyFrom(_timestamp(since))
        if until:
            filt.until.CopyFrom(_timestamp(until))
    except ValueError:
        raise click.UsageError("--since/--until must be ISO 8601 times") from None
    request = audit_pb2.ExportEvidenceRequest(
        filter=filt,
        from_sequence=from_seq,
        until_sequence=until_seq,
        include_bodies=not no_bodies,
        origin=origin,
    )
    written = asyncio.run(
        _export(address, channel_credentials(key, cert, ca), request, out, tls_name)
    )
    click.echo(f"wrote {out} ({written} bytes)")
