"""The audit API (``ruta.v1.Audit``) of a security server, for auditors over mutual TLS.

Every call needs a client certificate with an auditor role that reads this server's log
(docs/adr/0012): ``urn:ruta:role:auditor:MEMBER`` for the member that owns this server, or the
instance-wide ``urn:ruta:role:auditor-supervisor``. Anything else is refused with
``client.unauthenticated`` (no certificate) or ``client.permission_denied`` (an auditor of
another member among them). Auditors search the message log, fetch records with inclusion proofs
against the latest cosigned checkpoint, ask for consistency proofs, read that checkpoint, and
export evidence bundles (:mod:`security_server.evidence`) streamed in chunks.

``MonthlyCounts`` (open data, :mod:`security_server.statistics`) is the one call for a
certificate with the ``statistics`` role, and the only one that role may make: counts of
exchanges answered per service, method and month, never records. ``AccessRecords`` (the
citizen's record of access, :mod:`security_server.access_records`) is likewise the one call for
the ``citizen-service`` role: one subject's records, metadata only.

Bodies leave the server only to a certificate that also carries the body privilege for this
server (``auditor-bodies:MEMBER`` or ``auditor-bodies``), only where :class:`AuditSettings`
permits (``include_bodies``, not a metadata-only subsystem) and only while retention has kept
them. A stored body the caller may not have is reported as ``withheld`` in records and bundles.
Every number a request carries is bounded (:data:`MAX_SEQUENCE`).

Nodes of the member sharing this server's database are answered for too
(:mod:`security_server.cluster`): ``ListLogs`` lists the member's trees, each request's
``origin`` picks one (empty: this process's own), and evidence is exported of the trees this
server's log key signs.

Build with :class:`AuditServicer` and register with :func:`add_audit_service`;
:func:`audit_server_credentials` makes the port's TLS credentials.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.faults import Fault, RutaError, abort
from ruta.ids import (
    MAX_IDENTIFIER_LENGTH,
    IdentifierError,
    MemberId,
    ServerId,
    ServiceId,
    SubsystemId,
)
from ruta.pki.certs import Role, RoleName, roles_of
from ruta.pki.tls import CertificateSource, KeySource, peer_certificate, server_credentials
from ruta.timestamps import from_timestamp, to_timestamp
from ruta.v1 import audit_pb2, audit_pb2_grpc
from security_server.access_records import access_records, authorise_citizen_service
from security_server.callers import CallerStatus
from security_server.cluster import MemberLog, MemberLogError, MemberLogs
from security_server.evidence import EvidenceFilter, build_bundle, cosigned_note
from security_server.log import (
    MAX_PAGE_SIZE,
    BodyState,
    LogReader,
    MessageLog,
    StoredCheckpoint,
    StoredRecord,
)
from security_server.statistics import count_answered, months_between

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "EXPORT_CHUNK_BYTES",
    "MAX_AUDIT_PAGE_SIZE",
    "MAX_FILTER_TEXT",
    "MAX_SEQUENCE",
    "AuditError",
    "AuditGrant",
    "AuditServicer",
    "AuditSettings",
    "add_audit_service",
    "audit_grant",
    "audit_server_credentials",
]

#: Records per query page when the caller asks for none.
DEFAULT_PAGE_SIZE: Final = 100
#: Most records per query page or per GetRecords call.
MAX_AUDIT_PAGE_SIZE: Final = MAX_PAGE_SIZE
#: Longest filter text (message id, identifiers, method, subject).
MAX_FILTER_TEXT: Final = max(MAX_IDENTIFIER_LENGTH, 255)
#: Size of one streamed piece of an evidence bundle.
EXPORT_CHUNK_BYTES: Final = 64 * 1024
#: Largest sequence number or tree size a request may name: the log stores them as signed
#: 64-bit integers, so anything larger names nothing a log can hold.
MAX_SEQUENCE: Final = 2**63 - 1
#: Longest page token (the decimal sequence number this server handed out).
_MAX_PAGE_TOKEN: Final = len(str(MAX_SEQUENCE))

_SUPERVISOR: Final = Role(RoleName.AUDITOR_SUPERVISOR)
_ALL_BODIES: Final = Role(RoleName.AUDITOR_BODIES)
_STATISTICS: Final = Role(RoleName.STATISTICS)
_WITHHELD: Final = "withheld"


@dataclass(frozen=True, slots=True)
class AuditGrant:
    """What one caller may read on this server: the log (always, once authorised) and, with
    ``bodies``, the message bodies the settings let leave the server."""

    bodies: bool


def audit_grant(roles: frozenset[Role], member: MemberId) -> AuditGrant | None:
    """What a certificate with ``roles`` may read on a server of ``member``; ``None`` when it
    may not read that server's log at all."""
    if _SUPERVISOR not in roles and Role(RoleName.AUDITOR, member) not in roles:
        return None
    return AuditGrant(bodies=_ALL_BODIES in roles or Role(RoleName.AUDITOR_BODIES, member) in roles)


class AuditSettings(BaseModel):
    """The audit port and what it may hand out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``host:port`` of the audit port; empty: no audit port.
    listen: str = Field(default="", max_length=300)
    #: CA certificates (PEM) whose client certificates complete the TLS handshake; default: the
    #: instance's trust anchors. Roles are honoured only from the role CA's (``role_ca``).
    client_ca: Path | None = None
    #: The CA certificate(s) (PEM) whose role certificates this server honours (auditors, the
    #: citizen service, statistics). Where the configuration names its role issuers, each must
    #: be one of them (the setting narrows them, never widens them; default: all of them,
    #: docs/adr/0039-role-issuers-in-the-global-configuration.md); in an older configuration,
    #: each a trust anchor in force (default: its only trust anchor, docs/adr/0036).
    role_ca: Path | None = None
    #: Whether message bodies may leave the server at all (through records or bundles).
    include_bodies: bool = True
    #: Subsystems in metadata-only mode: their exchanges' bodies never leave the server.
    metadata_only_subsystems: tuple[str, ...] = ()
    #: Most records one query page returns.
    max_page_size: int = Field(default=MAX_AUDIT_PAGE_SIZE, ge=1, le=MAX_AUDIT_PAGE_SIZE)


class AuditError(RutaError):
    """A refused audit call."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


def audit_server_credentials(
    key: KeySource, cert: CertificateSource, client_ca: CertificateSource
) -> grpc.ServerCredentials:
    """TLS credentials of the audit port: client certificates required, chaining to
    ``client_ca`` (the role is checked per call)."""
    return server_credentials(key, cert, client_ca, require_client_auth=True)


def add_audit_service(server: grpc.aio.Server, servicer: AuditServicer) -> None:
    """Register ``servicer`` on ``server``."""
    audit_pb2_grpc.add_AuditServicer_to_server(servicer, server)


def _sequence(value: int, what: str) -> int:
    """``value`` when it is a sequence number or size a log can hold; raises
    :class:`AuditError` otherwise."""
    if not 0 <= value <= MAX_SEQUENCE:
        raise AuditError(f"the {what} must be between 0 and {MAX_SEQUENCE}")
    return value


def _page_after(token: str) -> int | None:
    """The sequence a page token continues after; raises :class:`AuditError` for a token this
    server would not give."""
    if not token:
        return None
    if len(token) > _MAX_PAGE_TOKEN or not token.isascii() or not token.isdigit():
        raise AuditError("the page token is not one this server gave")
    try:
        return _sequence(int(token), "page token")
    except AuditError:
        raise AuditError("the page token is not one this server gave") from None


def _text(value: str, what: str) -> str | None:
    if len(value) > MAX_FILTER_TEXT:
        raise AuditError(f"the {what} filter is longer than {MAX_FILTER_TEXT} characters")
    return value or None


def _instant(filt: audit_pb2.AuditFilter, name: Literal["since", "until"]) -> datetime | None:
    if not filt.HasField(name):
        return None
    try:
        moment = from_timestamp(getattr(filt, name))
    except ValueError:  # seconds or nanos out of range
        raise AuditError(f"the {name} filter is not a valid time") from None
    return moment


def _filter(
    filt: audit_pb2.AuditFilter, *, from_seq: int = 0, until_seq: int | None = None
) -> EvidenceFilter:
    """The log query of a request filter; raises :class:`AuditError` for bad values."""
    client = _text(filt.client, "client")
    service = _text(filt.service, "service")
    try:
        if client is not None:
            SubsystemId.parse(client)
        if service is not None:
            ServiceId.parse(service)
    except IdentifierError as exc:
        raise AuditError(exc.message, fault=Fault.CLIENT_INVALID_IDENTIFIER) from None
    return EvidenceFilter(
        message_id=_text(filt.message_id, "message id"),
        client=client,
        service=service,
        method=_text(filt.method, "method"),
        subject=_text(filt.subject, "subject"),
        since=_instant(filt, "since"),
        until=_instant(filt, "until"),
        from_seq=from_seq,
        until_seq=until_seq,
    )


def _record(record: StoredRecord, *, body_readable: bool) -> audit_pb2.AuditLogRecord:
    """``record`` as the audit API shows it; a stored body the caller may not read is
    ``withheld``."""
    state = str(record.body_state)
    if record.body_state is BodyState.STORED and not body_readable:
        state = _WITHHELD
    return audit_pb2.AuditLogRecord(
        sequence=record.seq,
        record=record.record,
        leaf_hash=record.leaf_hash,
        body_state=state,
        message_id=record.message_id,
        kind=str(record.kind),
        client=record.client,
        service=record.service,
        method=record.method,
        subject=record.subject or "",
        logged_at=to_timestamp(record.logged_at),
        origin=record.origin,
    )


def _checkpoint(stored: StoredCheckpoint) -> audit_pb2.CosignedCheckpoint:
    out = audit_pb2.CosignedCheckpoint(
        size=stored.size, root=stored.root, note=cosigned_note(stored)
    )
    if stored.cosigned_at is not None:
        out.cosigned_at.CopyFrom(to_timestamp(stored.cosigned_at))
    return out


class AuditServicer(audit_pb2_grpc.AuditServicer):
    """Serves one server's log to auditors (see the module docstring).

    ``globalconf`` returns the signed configuration in force (its exact bytes), bundled with
    every export; ``key`` is the log key that signs bundle manifests; ``callers`` checks every
    caller's role certificate for revocation (required: there is no unchecked mode).
    """

    def __init__(
        self,
        *,
        log: MessageLog,
        engine: AsyncEngine,
        server: str,
        key: Ed25519PrivateKey,
        globalconf: Callable[[], bytes],
        settings: AuditSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        logs: MemberLogs | None = None,
        callers: CallerStatus,
    ) -> None:
        self._log = log
        #: Refuses revoked caller certificates: every role this API grants is checked here.
        self._callers = callers
        #: The member's other nodes' logs in the shared database (none: this log alone).
        self._logs = logs
        self._engine = engine
        self._server = server
        self._member = ServerId.parse(server).member
        self._key = key
        self._globalconf = globalconf
        self._settings = settings if settings is not None else AuditSettings()
        self._metadata_only = frozenset(self._settings.metadata_only_subsystems)
        self._clock = clock

    # --- helpers -----------------------------------------------------------------------------

    async def _authorise(self, context: grpc.aio.ServicerContext[Any, Any]) -> AuditGrant:
        """What the caller's certificate may read here; refuses the call otherwise."""
        try:
            cert = peer_certificate(context)
        except RutaError:
            cert = None
        if cert is None:
            await abort(
                context,
                AuditError(
                    "the audit API needs an auditor client certificate",
                    fault=Fault.CLIENT_UNAUTHENTICATED,
                ),
            )
        try:
            roles = roles_of(cert)
        except RutaError as exc:
            await abort(
                context,
                AuditError(
                    f"the client certificate carries a role this server does not grant: "
                    f"{exc.message}",
                    fault=Fault.CLIENT_PERMISSION_DENIED,
                ),
            )
        try:
            grant = self.grant_for(roles)
            await self.check_caller(cert)
        except RutaError as exc:
            await abort(context, exc)
        return grant

    # --- the service layer (the gRPC methods below and the auditor console call these) ------

    @property
    def member(self) -> MemberId:
        """The member whose server's log this serves."""
        return self._member

    @property
    def roles_needed(self) -> str:
        """The roles that read this server's log, as an auditor would ask for them."""
        return f"auditor:{self._member} / auditor-supervisor"

    async def check_caller(self, cert: x509.Certificate) -> None:
        """Return when the caller's certificate ``cert`` is not revoked; raises
        :class:`~security_server.callers.CallerRevokedError` (``client.permission_denied``) when
        OCSP reports it revoked or its status cannot be established
        (:mod:`security_server.callers`). Every role this API grants is checked here."""
        await self._callers.check(cert)

    def grant_for(self, roles: frozenset[Role]) -> AuditGrant:
        """What a certificate with ``roles`` may read here; raises :class:`AuditError`
        (``client.permission_denied``, naming the roles needed) when it may not read this log."""
        grant = audit_grant(roles, self._member)
        if grant is None:
            scoped = sorted(str(r.member) for r in roles if r.name is RoleName.AUDITOR and r.member)
            detail = (
                f"it audits {', '.join(scoped)} only" if scoped else "it carries no auditor role"
            )
            raise AuditError(
                f"the client certificate may not read this server's log ({self._member}): "
                f"{detail}; ask for auditor:{self._member} or auditor-supervisor",
                fault=Fault.CLIENT_PERMISSION_DENIED,
            )
        return grant

    def bodies_permitted(self, record: StoredRecord, grant: AuditGrant) -> bool:
        """Whether ``record``'s body may leave the server to a caller with ``grant`` (body
        privilege and settings; retention acts itself)."""
        if not grant.bodies or not self._settings.include_bodies:
            return False
        provider = str(ServiceId.parse(record.service).subsystem)
        return record.client not in self._metadata_only and provider not in self._metadata_only

    @staticmethod
    async def _latest_cosigned(log: LogReader) -> StoredCheckpoint:
        latest = await log.latest_checkpoint(cosigned=True)
        if latest is None:
            raise AuditError(
                "no checkpoint of this log is cosigned yet; retry shortly",
                fault=Fault.CLIENT_NOT_FOUND,
            )
        return latest

    async def _cosigned(
        self, context: grpc.aio.ServicerContext[Any, Any], log: LogReader
    ) -> StoredCheckpoint:
        try:
            return await self._latest_cosigned(log)
        except AuditError as exc:
            await abort(context, exc)

    async def query(
        self,
        grant: AuditGrant,
        filt: audit_pb2.AuditFilter,
        *,
        page_size: int,
        page_token: str,
        origin: str = "",
    ) -> audit_pb2.QueryResponse:
        """One page of records of log ``origin`` (empty: this server's own) matching ``filt``,
        in sequence order (``page_size`` 0: the default); raises :class:`RutaError` for a bad
        filter, size, token or origin."""
        size = page_size or min(DEFAULT_PAGE_SIZE, self._settings.max_page_size)
        if size > self._settings.max_page_size:
            raise AuditError(f"a page holds at most {self._settings.max_page_size} records")
        after = _page_after(page_token)
        q = _filter(filt)
        log = await self._log_of(origin)
        page = await log.query(
            message_id=q.message_id,
            client=q.client,
            service=q.service,
            method=q.method,
            subject=q.subject,
            since=q.since,
            until=q.until,
            after=after,
            limit=size,
        )
        return audit_pb2.QueryResponse(
            records=[
                _record(r, body_readable=self.bodies_permitted(r, grant)) for r in page.records
            ],
            next_page_token="" if page.next_after is None else str(page.next_after),
        )

    async def proven_records(
        self,
        grant: AuditGrant,
        sequences: Sequence[int],
        *,
        include_bodies: bool,
        origin: str = "",
    ) -> audit_pb2.GetRecordsResponse:
        """Records of log ``origin`` with inclusion proofs against its latest cosigned
        checkpoint (records not yet inside it are left out); raises :class:`RutaError`."""
        log = await self._log_of(origin)
        checkpoint = await self._latest_cosigned(log)
        if len(sequences) > MAX_AUDIT_PAGE_SIZE:
            raise AuditError(f"at most {MAX_AUDIT_PAGE_SIZE} records per call")
        asked = [_sequence(s, "sequence") for s in sequences]
        wanted = [s for s in asked if s < checkpoint.size]
        out = audit_pb2.GetRecordsResponse(checkpoint=_checkpoint(checkpoint))
        for record in await log.get_records(wanted):
            readable = self.bodies_permitted(record, grant)
            proven = out.records.add(
                record=_record(record, body_readable=readable),
                inclusion_proof=await log.inclusion_proof(record.seq, checkpoint.size),
            )
            if include_bodies and readable:
                body = await log.get_body(record.seq)
                if body is not None:
                    proven.body = body
                    proven.body_included = True
        return out

    @property
    def origin(self) -> str:
        """The origin of this process's own log (what an empty ``origin`` names)."""
        return self._log.origin

    async def list_logs(self) -> list[MemberLog]:
        """The member's logs in this server's database, by origin (what ``ListLogs`` answers):
        every node's and worker's tree, and the member's other servers' sharing it; this
        process's own alone when it shares none."""
        if self._logs is None:
            head = self._log.head()
            return [MemberLog(origin=head.origin, size=head.size, exportable=True)]
        return await self._logs.list()

    async def export(self, grant: AuditGrant, request: audit_pb2.ExportEvidenceRequest) -> bytes:
        """An evidence bundle (zip bytes) of the records ``request`` selects; raises
        :class:`RutaError`."""
        from_seq = _sequence(request.from_sequence, "from sequence")
        until_seq = _sequence(request.until_sequence, "until sequence") or None
        if until_seq is not None and from_seq > until_seq:
            raise AuditError("the from sequence must not be above the until sequence")
        query = _filter(request.filter, from_seq=from_seq, until_seq=until_seq)
        include = request.include_bodies
        signed_conf = self._globalconf()
        if not signed_conf:
            raise AuditError(
                "this server holds no global configuration to bundle yet; retry shortly",
                fault=Fault.CLIENT_NOT_FOUND,
            )
        log = await self._log_of(request.origin, export=True)
        return await build_bundle(
            log=log,
            engine=self._engine,
            server=self._server,
            key=self._key,
            globalconf=signed_conf,
            query=query,
            bodies_permitted=lambda r: include and self.bodies_permitted(r, grant),
            clock=self._clock,
        )

    async def _authorise_statistics(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Refuses the call unless the caller's certificate carries the ``statistics`` role."""
        try:
            cert = peer_certificate(context)
        except RutaError:
            cert = None
        try:
            roles = frozenset() if cert is None else roles_of(cert)
        except RutaError:  # a role this server does not know: not the statistics role
            roles = frozenset()
        if _STATISTICS not in roles:
            await abort(
                context,
                AuditError(
                    "monthly counts are for a client certificate with the statistics role",
                    fault=Fault.CLIENT_UNAUTHENTICATED
                    if cert is None
                    else Fault.CLIENT_PERMISSION_DENIED,
                ),
            )
        if cert is not None:
            try:
                await self.check_caller(cert)
            except RutaError as exc:
                await abort(context, exc)

    # --- RPCs -----------------------------------------------------------------------------

    async def Query(  # noqa: N802 - gRPC method name
        self, request: audit_pb2.QueryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.QueryResponse:
        """One page of records matching the filter, in sequence order."""
        grant = await self._authorise(context)
        try:
            return await self.query(
                grant,
                request.filter,
                page_size=request.page_size,
                page_token=request.page_token,
                origin=request.origin,
            )
        except RutaError as exc:
            await abort(context, exc)

    async def GetRecords(  # noqa: N802 - gRPC method name
        self, request: audit_pb2.GetRecordsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.GetRecordsResponse:
        """Records with inclusion proofs against the latest cosigned checkpoint (records not
        yet inside it are left out), bodies where asked and permitted."""
        grant = await self._authorise(context)
        try:
            return await self.proven_records(
                grant,
                request.sequences,
                include_bodies=request.include_bodies,
                origin=request.origin,
            )
        except RutaError as exc:
            await abort(context, exc)

    async def GetConsistencyProof(  # noqa: N802 - gRPC method name
        self,
        request: audit_pb2.ConsistencyProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.ConsistencyProofResponse:
        """The consistency proof between two sizes up to the latest cosigned checkpoint."""
        await self._authorise(context)
        log = await self._log_or_abort(request.origin, context)
        checkpoint = await self._cosigned(context, log)
        try:
            _sequence(request.from_size, "from size")
            to_size = _sequence(request.to_size, "to size") or checkpoint.size
            if not request.from_size <= to_size <= checkpoint.size:
                raise AuditError(
                    f"sizes must satisfy from <= to <= {checkpoint.size} (the cosigned size)"
                )
            proof = await log.consistency_proof(request.from_size, to_size)
        except RutaError as exc:
            await abort(context, exc)
        return audit_pb2.ConsistencyProofResponse(
            from_size=request.from_size, to_size=to_size, proof=proof
        )

    async def GetLatestCheckpoint(  # noqa: N802 - gRPC method name
        self,
        request: audit_pb2.LatestCheckpointRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.CosignedCheckpoint:
        """The newest checkpoint the witness cosigned."""
        await self._authorise(context)
        log = await self._log_or_abort(request.origin, context)
        return _checkpoint(await self._cosigned(context, log))

    async def ExportEvidence(  # noqa: N802 - gRPC method name
        self,
        request: audit_pb2.ExportEvidenceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[audit_pb2.EvidenceChunk]:
        """An evidence bundle of the matching records, streamed in chunks."""
        grant = await self._authorise(context)
        try:
            bundle = await self.export(grant, request)
        except RutaError as exc:
            await abort(context, exc)
        view = memoryview(bundle)
        for start in range(0, len(bundle), EXPORT_CHUNK_BYTES):
            yield audit_pb2.EvidenceChunk(data=bytes(view[start : start + EXPORT_CHUNK_BYTES]))

    async def MonthlyCounts(  # noqa: N802 - gRPC method name
        self,
        request: audit_pb2.MonthlyCountsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.MonthlyCountsResponse:
        """Exchanges this server answered as provider, per month, service and method
        (statistics role only; see :mod:`security_server.statistics`)."""
        await self._authorise_statistics(context)
        try:
            first, last = months_between(request.first_month, request.last_month)
            counted = await count_answered(
                self._engine, self._log, first, last, server=self._server
            )
        except RutaError as exc:
            await abort(context, exc)
        return audit_pb2.MonthlyCountsResponse(
            counts=[
                audit_pb2.MonthlyCount(
                    month=str(c.month), service=c.service, method=c.method, answered=c.answered
                )
                for c in counted.counts
            ],
            truncated=counted.truncated,
        )

    async def AccessRecords(  # noqa: N802 - gRPC method name
        self,
        request: audit_pb2.AccessRecordsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.AccessRecordsResponse:
        """The citizen service's call: one subject's records, metadata only
        (:mod:`security_server.access_records`)."""
        await authorise_citizen_service(context, self.check_caller)
        try:
            return await access_records(
                await self._own_logs(), request, max_page_size=self._settings.max_page_size
            )
        except RutaError as exc:
            await abort(context, exc)

    async def ListLogs(  # noqa: N802 - gRPC method name
        self, request: audit_pb2.ListLogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.ListLogsResponse:
        """The member's logs in this server's database: every node's and worker's tree."""
        await self._authorise(context)
        return audit_pb2.ListLogsResponse(
            logs=[
                audit_pb2.MemberLog(origin=m.origin, size=m.size, exportable=m.exportable)
                for m in await self.list_logs()
            ]
        )

    # --- the member's logs (docs/operator/clusters.md) ------------------------------------

    async def _own_logs(self) -> list[LogReader]:
        """This server's logs: its own first, then its other nodes' and workers' trees (not
        other servers' of the member: those answer for themselves)."""
        if self._logs is None:
            return [self._log]
        others = [
            await self._logs.reader(m.origin)
            for m in await self._logs.list()
            if m.exportable and m.origin != self._log.origin
        ]
        return [self._log, *others]

    async def _log_of(self, origin: str, *, export: bool = False) -> LogReader:
        """The log a request names by ``origin`` (empty: this server's own). Raises
        :class:`~security_server.cluster.MemberLogError` for a log not kept here."""
        if not origin or origin == self._log.origin:
            return self._log
        if self._logs is None:
            raise MemberLogError(f"this server keeps no log {origin[:80]!r}")
        return await self._logs.reader(origin, export=export)

    async def _log_or_abort(
        self, origin: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> LogReader:
        try:
            return await self._log_of(origin)
        except RutaError as exc:
            await abort(context, exc)
