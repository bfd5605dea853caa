"""``ruta registry member|subsystem|server|service|contract|audit …``: the admin commands.

Each command makes one or more calls to the admin API over mutual TLS. Where to connect and with
which credentials: ``--registry HOST:PORT --cert FILE --key FILE --ca FILE``; each defaults from the
registry directory (``--dir``, or ``RUTA_REGISTRY_DIR``) for its local operator: the address a
running ``serve`` wrote into ``registry.ready.json`` (else the settings' ``admin_listen``), and the
registry-admin credential ``init`` made. ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from registry import limits, protomap
from registry.admin_client import admin_stub, call
from registry.errors import InvalidRequestError
from registry.openapi import canonical_openapi
from registry.settings import RegistryLayout, RegistrySettings
from ruta.files import FileReadError, read_bounded, write_atomically
from ruta.globalconf.limits import MAX_OPENAPI_BYTES
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.pki.certs import certificate_pem, fingerprint, load_certificate, make_csr
from ruta.pki.keys import generate_ec_key, save_private_key
from ruta.protos import ProtoCompileError, compile_descriptor_set
from ruta.readiness import read_ready_file
from ruta.settings import ConfigError
from ruta.v1 import globalconf_pb2, registry_pb2, registry_pb2_grpc

__all__ = ["audit", "certificate", "contract", "member", "server", "service", "subsystem"]

#: Most entries a list command prints unless ``--limit`` says otherwise.
DEFAULT_LIST_LIMIT: Final = 1000
#: Largest file a command reads (certificate, .proto, descriptor set).
MAX_INPUT_FILE_BYTES: Final = limits.MAX_DESCRIPTOR_SET_BYTES

_T = TypeVar("_T")
#: An API record the CLI prints.
_R = TypeVar("_R", bound=Message)
if TYPE_CHECKING:
    Stub = registry_pb2_grpc.RegistryAdminAsyncStub


@dataclass(frozen=True, slots=True)
class _Target:
    address: str
    key: Path
    cert: Path
    trust: Path
    json_output: bool


def _resolve_target(
    *,
    directory: Path,
    registry: str | None,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    json_output: bool,
) -> _Target:
    layout = RegistryLayout(directory)
    address = registry
    if address is None:
        ready = read_ready_file(layout.ready) or {}
        if "admin" in ready:
            address = str(ready["admin"])
        else:
            try:
                address = RegistrySettings.load(directory).admin_listen
            except ConfigError:
                raise click.UsageError(
                    "give --registry HOST:PORT (or --dir of a registry directory)"
                ) from None
    return _Target(
        address=address,
        key=key or layout.admin_key,
        cert=cert or layout.admin_cert,
        trust=ca or layout.trust,
        json_output=json_output,
    )


_F = TypeVar("_F", bound=Callable[..., Any])


def _connection(command: _F) -> _F:
    """Add the connection options; the command receives ``target: _Target``."""
    options = [
        click.option(
            "--dir",
            "directory",
            type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
            default=".",
            envvar="RUTA_REGISTRY_DIR",
            show_envvar=True,
            show_default=True,
            help="Registry directory whose local-operator defaults to use (the admin address "
            "in registry.ready.json, the registry-admin credential).",
        ),
        click.option("--registry", help="Admin API address HOST:PORT."),
        click.option(
            "--cert", type=click.Path(dir_okay=False, path_type=Path), help="Client cert (PEM)."
        ),
        click.option(
            "--key", type=click.Path(dir_okay=False, path_type=Path), help="Client key (PEM)."
        ),
        click.option(
            "--ca",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Trust anchor(s) for the registry's TLS certificate (PEM).",
        ),
        click.option("--json", "json_output", is_flag=True, help="Print JSON."),
    ]

    def wrapper(
        *,
        directory: Path,
        registry: str | None,
        cert: Path | None,
        key: Path | None,
        ca: Path | None,
        json_output: bool,
        **kwargs: Any,
    ) -> Any:
        target = _resolve_target(
            directory=directory,
            registry=registry,
            cert=cert,
            key=key,
            ca=ca,
            json_output=json_output,
        )
        return command(target=target, **kwargs)

    wrapper.__name__ = command.__name__
    wrapper.__doc__ = command.__doc__
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def _run(target: _Target, action: Callable[[Stub], Awaitable[_T]]) -> _T:
    async def main() -> _T:
        async with admin_stub(
            target.address, key=target.key, cert=target.cert, trust=target.trust
        ) as stub:
            return await action(stub)

    return asyncio.run(main())


def _read_file(path: Path, what: str, *, limit: int = MAX_INPUT_FILE_BYTES) -> bytes:
    try:
        return read_bounded(path, limit, what=f"{what} file")
    except FileReadError as exc:
        raise InvalidRequestError(exc.message) from None


# --- output ----------------------------------------------------------------------------------


def _iso(ts: timestamp_pb2.Timestamp, present: bool = True) -> str | None:
    return ts.ToDatetime(tzinfo=UTC).isoformat() if present else None


def _member_row(m: registry_pb2.MemberRecord) -> dict[str, Any]:
    return {"id": str(MemberId.from_proto(m.id)), "name": m.name, "created_at": _iso(m.created_at)}


def _subsystem_row(s: registry_pb2.SubsystemRecord) -> dict[str, Any]:
    return {"id": str(SubsystemId.from_proto(s.id)), "created_at": _iso(s.created_at)}


def _server_row(s: registry_pb2.ServerRecord) -> dict[str, Any]:
    return {
        "id": str(ServerId.from_proto(s.id)),
        "address": s.address,
        "audit_address": s.audit_address,
        "auth_cert_sha256": s.auth_cert_sha256,
        "log_public_key": s.log_public_key,
        "created_at": _iso(s.created_at),
    }


def _service_row(s: registry_pb2.ServiceRecord) -> dict[str, Any]:
    return {
        "id": str(ServiceId.from_proto(s.id)),
        "methods": list(s.methods),
        "description": s.description,
        "savings": {
            "citizen_minutes": s.savings.citizen_minutes,
            "paper_forms": s.savings.paper_forms,
            "cost": s.savings.cost,
        },
        "descriptor_sha256": s.descriptor_sha256,
        "descriptor_size": s.descriptor_size,
        "openapi_size": s.openapi_size,
        "created_at": _iso(s.created_at),
    }


def _contract_row(c: registry_pb2.ContractRecord) -> dict[str, Any]:
    return {
        "id": c.contract_id,
        "consumer": str(SubsystemId.from_proto(c.consumer)),
        "service": str(ServiceId.from_proto(c.service)),
        "methods": list(c.methods),
        "purpose": c.purpose,
        "legal_basis": c.legal_basis,
        "valid_from": _iso(c.valid_from),
        "valid_until": _iso(c.valid_until, c.HasField("valid_until")),
        "rate_limit_per_minute": c.rate_limit_per_minute or None,
        "state": c.state,
        "requested_by": c.requested_by,
        "requested_at": _iso(c.requested_at),
        "approved_by": c.approved_by or None,
        "approved_at": _iso(c.approved_at, c.HasField("approved_at")),
        "activated_by": c.activated_by or None,
        "activated_at": _iso(c.activated_at, c.HasField("activated_at")),
        "revoked_by": c.revoked_by or None,
        "revoked_at": _iso(c.revoked_at, c.HasField("revoked_at")),
    }


def _audit_row(e: registry_pb2.AuditRecord) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": _iso(e.at),
        "actor": e.actor,
        "action": e.action,
        "object_id": e.object_id,
        "before": json.loads(e.before_json) if e.before_json else None,
        "after": json.loads(e.after_json) if e.after_json else None,
    }


def _emit(
    target: _Target,
    records: Sequence[_R],
    row: Callable[[_R], dict[str, Any]],
    columns: tuple[str, ...],
    *,
    one: bool,
) -> None:
    """Print the API's ``records``: with ``--json`` as protobuf's JSON mapping gives them
    (:func:`registry.protomap.record_json`, the shape the API has), else a table of ``columns``
    of each record's ``row``."""
    if target.json_output:
        data = [protomap.record_json(record) for record in records]
        click.echo(json.dumps(data[0] if one else data, indent=2, sort_keys=True))
        return
    _table([row(record) for record in records], columns)


def _table(items: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """A table whose first line names the columns (``COLUMN`` in capitals), one row per item,
    columns aligned."""
    rows = [[column.upper() for column in columns]]
    rows.extend([_cell(item.get(column)) for column in columns] for item in items)
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo(line.rstrip())


def _cell(value: Any) -> str:
    """One table cell: a list joined by commas (empty: ``*``, all methods), ``-`` for none, and
    no tab or line break that would break the row."""
    if isinstance(value, list):
        text = ",".join(value) or "*"
    else:
        text = "-" if value is None or value == "" else str(value)
    return " ".join(text.split()) if any(c in text for c in "\t\r\n") else text


def _list(
    target: _Target, limit: int, page: Callable[[Stub, str], Awaitable[tuple[list[_T], str]]]
) -> list[_T]:
    """Up to ``limit`` records of a paged List call; ``page(stub, token)`` fetches one page and
    returns its records and the next page's token ("" after the last)."""

    async def action(stub: Stub) -> list[_T]:
        items: list[_T] = []
        token = ""
        while len(items) < limit:
            records, token = await page(stub, token)
            items.extend(records)
            if not token:
                break
        return items[:limit]

    return _run(target, action)


def _page_size(limit: int) -> int:
    return max(1, min(limit, limits.MAX_PAGE_SIZE))


_LIMIT = click.option(
    "--limit",
    type=click.IntRange(1, 1_000_000),
    default=DEFAULT_LIST_LIMIT,
    show_default=True,
    help="Most entries to print.",
)
_MEMBER_FILTER = click.option("--member", help="Only this member's (INSTANCE/CLASS/CODE).")


def _member_filter(text: str | None) -> dict[str, Any]:
    return {} if text is None else {"member": MemberId.parse(text).to_proto()}


# --- members ---------------------------------------------------------------------------------


@click.group()
def member() -> None:
    """Admit and list members."""


@member.command("add")
@click.argument("member_id")
@click.option("--name", required=True, help="The organisation's name.")
@_connection
def member_add(target: _Target, member_id: str, name: str) -> None:
    """Admit MEMBER_ID (INSTANCE/CLASS/CODE)."""
    request = registry_pb2.AddMemberRequest(id=MemberId.parse(member_id).to_proto(), name=name)
    record = _run(target, lambda stub: call(stub.AddMember(request)))
    _emit(target, [record], _member_row, ("id", "name"), one=True)


@member.command("list")
@_LIMIT
@_connection
def member_list(target: _Target, limit: int) -> None:
    """List members."""

    async def page(stub: Stub, token: str) -> tuple[list[registry_pb2.MemberRecord], str]:
        r = await call(
            stub.ListMembers(
                registry_pb2.ListRequest(page_size=_page_size(limit), page_token=token)
            )
        )
        return list(r.members), r.next_page_token

    records = _list(target, limit, page)
    _emit(target, records, _member_row, ("id", "name"), one=False)


# --- subsystems ------------------------------------------------------------------------------


@click.group()
def subsystem() -> None:
    """Register and list subsystems."""


@subsystem.command("add")
@click.argument("subsystem_id")
@_connection
def subsystem_add(target: _Target, subsystem_id: str) -> None:
    """Register SUBSYSTEM_ID (INSTANCE/CLASS/CODE/SUBSYSTEM)."""
    request = registry_pb2.AddSubsystemRequest(id=SubsystemId.parse(subsystem_id).to_proto())
    record = _run(target, lambda stub: call(stub.AddSubsystem(request)))
    _emit(target, [record], _subsystem_row, ("id",), one=True)


@subsystem.command("list")
@_MEMBER_FILTER
@_LIMIT
@_connection
def subsystem_list(target: _Target, member: str | None, limit: int) -> None:
    """List subsystems."""
    extra = _member_filter(member)

    async def page(stub: Stub, token: str) -> tuple[list[registry_pb2.SubsystemRecord], str]:
        r = await call(
            stub.ListSubsystems(
                registry_pb2.ListRequest(page_size=_page_size(limit), page_token=token, **extra)
            )
        )
        return list(r.subsystems), r.next_page_token

    records = _list(target, limit, page)
    _emit(target, records, _subsystem_row, ("id",), one=False)


# --- servers ---------------------------------------------------------------------------------


@click.group()
def server() -> None:
    """Register and list security servers."""


@server.command("add")
@click.argument("server_id")
@click.option("--address", required=True, help="HOST:PORT of its server-to-server transport.")
@click.option(
    "--auth-cert",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Its authentication certificate (PEM or DER).",
)
@click.option("--audit-address", default="", help="HOST:PORT of its audit API (optional).")
@click.option("--log-key", default="", help="Its message-log verifier key (C2SP vkey text).")
@_connection
def server_add(
    *,
    target: _Target,
    server_id: str,
    address: str,
    auth_cert: Path,
    audit_address: str,
    log_key: str,
) -> None:
    """Register SERVER_ID (INSTANCE/CLASS/CODE/SERVER)."""
    request = registry_pb2.AddServerRequest(
        id=ServerId.parse(server_id).to_proto(),
        address=address,
        auth_certificate=_read_file(auth_cert, "certificate"),
        audit_address=audit_address,
        log_public_key=log_key,
    )
    record = _run(target, lambda stub: call(stub.AddServer(request)))
    _emit(target, [record], _server_row, ("id", "address", "auth_cert_sha256"), one=True)


@server.command("update")
@click.argument("server_id")
@click.option("--address", help="New HOST:PORT of its server-to-server transport.")
@click.option(
    "--auth-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Its renewed authentication certificate (PEM or DER).",
)
@click.option("--audit-address", help="HOST:PORT of its audit API ('' to clear).")
@click.option("--log-key", help="Its message-log verifier key (C2SP vkey text).")
@_connection
def server_update(
    *,
    target: _Target,
    server_id: str,
    address: str | None,
    auth_cert: Path | None,
    audit_address: str | None,
    log_key: str | None,
) -> None:
    """Change SERVER_ID's address, certificate, audit address or log key."""
    request = registry_pb2.UpdateServerRequest(id=ServerId.parse(server_id).to_proto())
    if address is not None:
        request.address = address
    if auth_cert is not None:
        request.auth_certificate = _read_file(auth_cert, "certificate")
    if audit_address is not None:
        request.audit_address = audit_address
    if log_key is not None:
        request.log_public_key = log_key
    record = _run(target, lambda stub: call(stub.UpdateServer(request)))
    _emit(target, [record], _server_row, ("id", "address", "auth_cert_sha256"), one=True)


@server.command("list")
@_MEMBER_FILTER
@_LIMIT
@_connection
def server_list(target: _Target, member: str | None, limit: int) -> None:
    """List security servers."""
    extra = _member_filter(member)

    async def page(stub: Stub, token: str) -> tuple[list[registry_pb2.ServerRecord], str]:
        r = await call(
            stub.ListServers(
                registry_pb2.ListRequest(page_size=_page_size(limit), page_token=token, **extra)
            )
        )
        return list(r.servers), r.next_page_token

    records = _list(target, limit, page)
    _emit(target, records, _server_row, ("id", "address", "auth_cert_sha256"), one=False)


# --- services --------------------------------------------------------------------------------

#: What ``service add`` and ``service list`` print, the same columns for both (``*``: all methods).
_SERVICE_COLUMNS: Final = ("id", "methods", "descriptor_sha256", "description")


def _compile_proto(proto: Path, include_paths: tuple[Path, ...]) -> bytes:
    """Compile ``proto`` (and its imports) into a serialised FileDescriptorSet with protoc.

    Raises :class:`InvalidRequestError` with protoc's diagnostics when it cannot, or when the
    result is over :data:`MAX_INPUT_FILE_BYTES`.
    """
    try:
        compiled = compile_descriptor_set(proto, include_paths)
    except ProtoCompileError as exc:
        raise InvalidRequestError(exc.message) from None
    if len(compiled) > MAX_INPUT_FILE_BYTES:
        raise InvalidRequestError(f"descriptor set is larger than {MAX_INPUT_FILE_BYTES} bytes")
    return compiled


@click.group()
def service() -> None:
    """Register and list services."""


@service.command("add")
@click.argument("service_id")
@click.option(
    "--proto",
    "proto_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path, resolve_path=True),
    help="The .proto declaring the service (compiled with its imports).",
)
@click.option(
    "--proto-path",
    "-I",
    "proto_paths",
    multiple=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path, resolve_path=True),
    help="Import path for --proto (repeatable; default: the file's folder).",
)
@click.option(
    "--descriptor-set",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A serialised FileDescriptorSet (protoc --include_imports --descriptor_set_out).",
)
@click.option(
    "--openapi",
    "openapi_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A REST service instead: its OpenAPI 3 description (JSON or YAML), validated here and "
    "by the registry; the service is called through the fixed method Call.",
)
@click.option("--method", "methods", multiple=True, help="Offered method (default: all).")
@click.option("--description", default="", help="What the service provides.")
@click.option("--citizen-minutes", type=float, default=0.0, help="Citizen minutes saved per call.")
@click.option(
    "--paper-forms", type=click.IntRange(0), default=0, help="Paper forms saved per call."
)
@click.option("--cost", type=float, default=0.0, help="Agency cost saved per call.")
@_connection
def service_add(
    *,
    target: _Target,
    service_id: str,
    proto_file: Path | None,
    proto_paths: tuple[Path, ...],
    descriptor_set: Path | None,
    openapi_file: Path | None,
    methods: tuple[str, ...],
    description: str,
    citizen_minutes: float,
    paper_forms: int,
    cost: float,
) -> None:
    """Register SERVICE_ID (INSTANCE/CLASS/CODE/SUBSYSTEM/package.Service for a gRPC service,
    INSTANCE/CLASS/CODE/SUBSYSTEM/CODE for a REST service with --openapi)."""
    given = [p for p in (proto_file, descriptor_set, openapi_file) if p is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --proto, --descriptor-set and --openapi")
    fds = b""
    openapi = b""
    if openapi_file is not None:
        if methods:
            raise click.UsageError("a REST service (--openapi) takes no --method")
        try:
            openapi = canonical_openapi(
                _read_file(openapi_file, "OpenAPI description", limit=MAX_OPENAPI_BYTES)
            )
        except InvalidRequestError as exc:
            raise click.ClickException(exc.message) from None
    elif proto_file is not None:
        fds = _compile_proto(proto_file, proto_paths)
    else:
        fds = _read_file(descriptor_set, "descriptor set")  # type: ignore[arg-type]
    request = registry_pb2.AddServiceRequest(
        id=ServiceId.parse(service_id).to_proto(),
        methods=list(methods),
        file_descriptor_set=fds,
        openapi=openapi,
        description=description,
        savings=globalconf_pb2.Savings(
            citizen_minutes=citizen_minutes, paper_forms=paper_forms, cost=cost
        ),
    )
    record = _run(target, lambda stub: call(stub.AddService(request)))
    _emit(target, [record], _service_row, _SERVICE_COLUMNS, one=True)


@service.command("list")
@_MEMBER_FILTER
@_LIMIT
@_connection
def service_list(target: _Target, member: str | None, limit: int) -> None:
    """List services."""
    extra = _member_filter(member)

    async def page(stub: Stub, token: str) -> tuple[list[registry_pb2.ServiceRecord], str]:
        r = await call(
            stub.ListServices(
                registry_pb2.ListRequest(page_size=_page_size(limit), page_token=token, **extra)
            )
        )
        return list(r.services), r.next_page_token

    records = _list(target, limit, page)
    _emit(target, records, _service_row, _SERVICE_COLUMNS, one=False)


# --- contracts -------------------------------------------------------------------------------


def _timestamp(text: str | None, what: str) -> timestamp_pb2.Timestamp | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{what} must be an ISO 8601 instant") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


_CONTRACT_COLUMNS: Final = ("id", "state", "consumer", "service", "methods", "purpose")
_PER: Final = {"s": 60, "min": 1}


def _per_minute(text: str) -> int:
    """A rate limit given as ``N/s`` or ``N/min`` (or ``none``), in calls per minute."""
    if text.strip().lower() in ("none", "0"):
        return 0
    count, _, unit = text.strip().partition("/")
    factor = _PER.get(unit.strip().lower())
    if factor is None or not count.strip().isdigit() or len(count.strip()) > 9:
        raise click.BadParameter("--rate-limit must be N/s or N/min (or none)")
    return int(count) * factor


@click.group()
def contract() -> None:
    """Request, approve, revoke and list contracts."""


@contract.command("request")
@click.option("--consumer", required=True, help="Consumer subsystem INSTANCE/CLASS/CODE/SUB.")
@click.option("--service", "service_id", required=True, help="Service identifier.")
@click.option("--method", "methods", multiple=True, help="Allowed method (default: all).")
@click.option("--purpose", required=True, help="Purpose code callers state (ruta-purpose).")
@click.option("--legal-basis", required=True, help="The legal basis, as text.")
@click.option("--valid-from", help="ISO 8601 instant (default: now).")
@click.option("--valid-until", help="ISO 8601 instant (default: no end).")
@click.option(
    "--rate-limit",
    "rate_limit",
    default=None,
    help="Most calls asked for, as N/s or N/min (default: no limit).",
)
@_connection
def contract_request(
    *,
    target: _Target,
    consumer: str,
    service_id: str,
    methods: tuple[str, ...],
    purpose: str,
    legal_basis: str,
    valid_from: str | None,
    valid_until: str | None,
    rate_limit: str | None,
) -> None:
    """Request a contract for a consumer subsystem to call a service."""
    request = registry_pb2.RequestContractRequest(
        consumer=SubsystemId.parse(consumer).to_proto(),
        service=ServiceId.parse(service_id).to_proto(),
        methods=list(methods),
        purpose=purpose,
        legal_basis=legal_basis,
        rate_limit_per_minute=0 if rate_limit is None else _per_minute(rate_limit),
    )
    start = _timestamp(valid_from, "--valid-from")
    end = _timestamp(valid_until, "--valid-until")
    if start is not None:
        request.valid_from.CopyFrom(start)
    if end is not None:
        request.valid_until.CopyFrom(end)
    record = _run(target, lambda stub: call(stub.RequestContract(request)))
    _emit(target, [record], _contract_row, _CONTRACT_COLUMNS, one=True)


@contract.command("approve")
@click.argument("contract_id")
@click.option(
    "--rate-limit",
    "rate_limit",
    default=None,
    help="On the provider's approval: the rate limit granted, as N/s or N/min, or "
    "'none' (default: the one requested).",
)
@_connection
def contract_approve(target: _Target, contract_id: str, rate_limit: str | None) -> None:
    """Approve CONTRACT_ID one step: requested -> approved (provider), approved -> active
    (registry administrator)."""
    request = registry_pb2.ContractRef(contract_id=contract_id)
    if rate_limit is not None:
        request.rate_limit_per_minute = _per_minute(rate_limit)
    record = _run(target, lambda stub: call(stub.ApproveContract(request)))
    _emit(target, [record], _contract_row, _CONTRACT_COLUMNS, one=True)


@contract.command("revoke")
@click.argument("contract_id")
@_connection
def contract_revoke(target: _Target, contract_id: str) -> None:
    """Revoke CONTRACT_ID."""
    request = registry_pb2.ContractRef(contract_id=contract_id)
    record = _run(target, lambda stub: call(stub.RevokeContract(request)))
    _emit(target, [record], _contract_row, _CONTRACT_COLUMNS, one=True)


@contract.command("list")
@_MEMBER_FILTER
@click.option(
    "--state", type=click.Choice(["requested", "approved", "active", "revoked"]), default=None
)
@_LIMIT
@_connection
def contract_list(target: _Target, member: str | None, state: str | None, limit: int) -> None:
    """List contracts (a member's administrator sees its member's)."""
    extra = _member_filter(member)

    async def page(stub: Stub, token: str) -> tuple[list[registry_pb2.ContractRecord], str]:
        r = await call(
            stub.ListContracts(
                registry_pb2.ListContractsRequest(
                    page_size=_page_size(limit), page_token=token, state=state or "", **extra
                )
            )
        )
        return list(r.contracts), r.next_page_token

    records = _list(target, limit, page)
    _emit(target, records, _contract_row, _CONTRACT_COLUMNS, one=False)


# --- audit trail -----------------------------------------------------------------------------


@click.group()
def audit() -> None:
    """Read the admin audit trail."""


@audit.command("list")
@click.option("--after", type=click.IntRange(0), default=0, help="Entries after this seq.")
@_LIMIT
@_connection
def audit_list(target: _Target, after: int, limit: int) -> None:
    """List audit-trail entries in order (who, what, when, before/after)."""

    async def page(stub: Stub, token: str) -> tuple[list[registry_pb2.AuditRecord], str]:
        r = await call(
            stub.ListAuditTrail(
                registry_pb2.ListAuditRequest(
                    page_size=_page_size(limit), after_seq=int(token or after)
                )
            )
        )
        return list(r.entries), str(r.next_after_seq) if r.next_after_seq else ""

    records = _list(target, limit, page)
    _emit(
        target,
        records,
        _audit_row,
        ("seq", "at", "action", "object_id", "actor"),
        one=False,
    )


# --- certificates ----------------------------------------------------------------------------

_PROFILES: Final = {
    "auth": registry_pb2.CERTIFICATE_PROFILE_AUTH,
    "sign": registry_pb2.CERTIFICATE_PROFILE_SIGN,
    "subsystem": registry_pb2.CERTIFICATE_PROFILE_SUBSYSTEM,
    "role": registry_pb2.CERTIFICATE_PROFILE_ROLE,
    "gateway": registry_pb2.CERTIFICATE_PROFILE_GATEWAY,
}


@click.group()
def certificate() -> None:
    """Have the registry's CA issue certificates (registry administrators only)."""


@certificate.command("issue")
@click.option("--profile", required=True, type=click.Choice(sorted(_PROFILES)))
@click.option(
    "--csr",
    "csr_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PKCS#10 request (PEM or DER) whose key stays where it was made.",
)
@click.option(
    "--new-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Instead of --csr: make an EC P-256 key here (mode 0600) and certify it.",
)
@click.option("--name", default="ruta", show_default=True, help="Common name for --new-key.")
@click.option("--server", "server_id", help="Server INSTANCE/CLASS/CODE/SERVER (auth).")
@click.option("--member", "member_id", help="Member INSTANCE/CLASS/CODE (sign, gateway).")
@click.option("--subsystem", "subsystem_id", help="Subsystem (subsystem).")
@click.option(
    "--role",
    "roles",
    multiple=True,
    help=(
        "registry-admin, member-admin:MEMBER, auditor:MEMBER, auditor-supervisor, "
        "auditor-bodies[:MEMBER], citizen-service or statistics (role; MEMBER is "
        "INSTANCE/CLASS/CODE). Repeatable."
    ),
)
@click.option("--dns", "dns_names", multiple=True, help="DNS name (auth). Repeatable.")
@click.option("--ip", "ip_addresses", multiple=True, help="IP address (auth). Repeatable.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the certificate and its chain (PEM, leaf first).",
)
@_connection
def certificate_issue(
    *,
    target: _Target,
    profile: str,
    csr_file: Path | None,
    new_key: Path | None,
    name: str,
    server_id: str | None,
    member_id: str | None,
    subsystem_id: str | None,
    roles: tuple[str, ...],
    dns_names: tuple[str, ...],
    ip_addresses: tuple[str, ...],
    out: Path,
) -> None:
    """Issue a certificate of PROFILE from a CSR (or for a new key made here)."""
    if (csr_file is None) == (new_key is None):
        raise click.UsageError("give exactly one of --csr and --new-key")
    if csr_file is not None:
        csr = _read_file(csr_file, "CSR")
    else:
        key = generate_ec_key()
        csr = make_csr(key, name).public_bytes(Encoding.DER)
    request = registry_pb2.IssueCertificateRequest(
        csr=csr,
        profile=_PROFILES[profile],
        roles=list(roles),
        dns_names=list(dns_names),
        ip_addresses=list(ip_addresses),
    )
    if server_id is not None:
        request.server.CopyFrom(ServerId.parse(server_id).to_proto())
    if member_id is not None:
        request.member.CopyFrom(MemberId.parse(member_id).to_proto())
    if subsystem_id is not None:
        request.subsystem.CopyFrom(SubsystemId.parse(subsystem_id).to_proto())
    issued = _run(target, lambda stub: call(stub.IssueCertificate(request)))
    leaf = load_certificate(issued.certificate)
    if new_key is not None:
        save_private_key(new_key, key)
    pem = certificate_pem(leaf, *(load_certificate(der) for der in issued.chain[:-1]))
    write_atomically(out, pem)
    summary = {
        "serial": format(leaf.serial_number, "x"),
        "sha256": fingerprint(leaf),
        "subject": leaf.subject.rfc4514_string(),
        "not_after": leaf.not_valid_after_utc.isoformat(),
        "certificate": str(out),
    }
    if target.json_output:  # a summary of the certificate written, not an API record
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _table([summary], ("serial", "sha256", "subject"))


@certificate.command("revoke")
@click.option("--serial", required=True, help="Serial number of the certificate, hex.")
@click.option(
    "--reason",
    default="unspecified",
    show_default=True,
    help="RFC 5280 reason: keyCompromise, superseded, cessationOfOperation, ...",
)
@_connection
def certificate_revoke(*, target: _Target, serial: str, reason: str) -> None:
    """Revoke a certificate the registry's CA issued (audited; OCSP reports it at once)."""
    request = registry_pb2.RevokeCertificateRequest(serial=serial, reason=reason)
    revoked = _run(target, lambda stub: call(stub.RevokeCertificate(request)))
    summary = {"serial": revoked.serial, "revoked_at": revoked.revoked_at.ToJsonString()}
    if target.json_output:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _table([summary], ("serial", "revoked_at"))
