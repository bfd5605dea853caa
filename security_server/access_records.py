"""The citizen's record of access on one security server (docs/adr/0027): the audit API's
``AccessRecords`` call, for the citizen service only.

The caller's client certificate must carry ``urn:ruta:role:citizen-service``; auditors keep
their own calls and may not use this one, and the citizen service may use no other (its
certificate carries no auditor role, so :mod:`security_server.audit` refuses it there). One
call names exactly one subject and returns the records whose subject it is, newest first,
each read from the header the log signed: who asked, which service and method, the purpose,
when, and (for a response) its status. Never a body, never the signature or the record bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import grpc.aio
from cryptography import x509
from google.protobuf.message import DecodeError

from ruta.faults import Fault, RutaError, abort
from ruta.pki.certs import Role, RoleName, roles_of
from ruta.pki.tls import peer_certificate
from ruta.timestamps import to_timestamp
from ruta.v1 import audit_pb2, log_pb2, transport_pb2
from security_server.log import LogReader, StoredRecord
from security_server.log.schema import MAX_SUBJECT_LENGTH

__all__ = [
    "DEFAULT_ACCESS_PAGE_SIZE",
    "AccessRecordsError",
    "access_records",
    "authorise_citizen_service",
]

#: Records per page when the caller asks for none.
DEFAULT_ACCESS_PAGE_SIZE: Final = 100
#: Longest page token (``LOG.SEQUENCE``: which of this server's logs, and where in it).
_MAX_PAGE_TOKEN: Final = 2 * len(str(2**63 - 1)) + 1
_CITIZEN_SERVICE: Final = Role(RoleName.CITIZEN_SERVICE)


class AccessRecordsError(RutaError):
    """A refused ``AccessRecords`` call."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


async def authorise_citizen_service(
    context: grpc.aio.ServicerContext[Any, Any],
    check_revocation: Callable[[x509.Certificate], Awaitable[None]],
) -> None:
    """Return when the caller's certificate carries the citizen-service role and
    ``check_revocation`` (the audit API's revocation check, :mod:`security_server.callers`)
    returns for it; abort the call with ``client.unauthenticated`` (no certificate) or
    ``client.permission_denied`` otherwise (the fault ``check_revocation`` raises for a revoked
    certificate)."""
    try:
        cert = peer_certificate(context)
    except RutaError:
        cert = None
    if cert is None:
        await abort(
            context,
            AccessRecordsError(
                "the record of access needs the citizen service's client certificate",
                fault=Fault.CLIENT_UNAUTHENTICATED,
            ),
        )
    try:
        roles = roles_of(cert)
    except RutaError:
        roles = frozenset()
    if _CITIZEN_SERVICE not in roles:
        await abort(
            context,
            AccessRecordsError(
                "only the citizen service (role citizen-service) may read a subject's record "
                "of access; auditors search the log with Query",
                fault=Fault.CLIENT_PERMISSION_DENIED,
            ),
        )
    try:
        await check_revocation(cert)
    except RutaError as exc:
        await abort(context, exc)


def _page_cursor(token: str, logs: int) -> tuple[int, int | None]:
    """Which log a page token points into and after which sequence (None: from its newest)."""
    if not token:
        return 0, None
    index, _, after = token.partition(".")
    if (
        len(token) > _MAX_PAGE_TOKEN
        or not token.isascii()
        or not index.isdigit()
        or not (after == "" or after.isdigit())
        or int(index) >= logs
    ):
        raise AccessRecordsError("the page token is not one this server gave")
    return int(index), (int(after) if after else None)


def _access_record(stored: StoredRecord) -> audit_pb2.AccessRecord:
    """What the citizen may see of ``stored``, read from the header bytes it signed."""
    header = transport_pb2.MessageHeader()
    try:
        leaf = log_pb2.LogRecord.FromString(stored.record)
        header.ParseFromString(leaf.header)
    except DecodeError:  # the log only holds headers it parsed when it wrote them
        header.Clear()
    return audit_pb2.AccessRecord(
        sequence=stored.seq,
        message_id=stored.message_id,
        kind=str(stored.kind),
        client=stored.client,
        service=stored.service,
        method=stored.method,
        purpose=header.purpose,
        created_at=to_timestamp(stored.created_at),
        logged_at=to_timestamp(stored.logged_at),
        status_code=header.status_code,
        fault=header.fault,
    )


async def access_records(
    logs: Sequence[LogReader], request: audit_pb2.AccessRecordsRequest, *, max_page_size: int
) -> audit_pb2.AccessRecordsResponse:
    """One page of the records whose subject is ``request.subject`` in this server's ``logs``
    (its own, and its other nodes' and workers' trees), log by log, newest first in each; a
    page token names the log and the place in it where the next page starts.

    Raises :class:`AccessRecordsError` for a missing or overlong subject, a page size above
    ``max_page_size`` or a page token this server did not give."""
    subject = request.subject
    if not subject:
        raise AccessRecordsError("name the subject whose record of access to read")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise AccessRecordsError(f"the subject is longer than {MAX_SUBJECT_LENGTH} characters")
    size = request.page_size or min(DEFAULT_ACCESS_PAGE_SIZE, max_page_size)
    if size > max_page_size:
        raise AccessRecordsError(f"a page holds at most {max_page_size} records")
    index, after = _page_cursor(request.page_token, len(logs))
    records: list[StoredRecord] = []
    next_token = ""
    while index < len(logs):
        page = await logs[index].query(
            subject=subject, after=after, limit=size - len(records), newest_first=True
        )
        records.extend(page.records)
        if page.next_after is not None:
            next_token = f"{index}.{page.next_after}"
            break
        index, after = index + 1, None
        if len(records) >= size:
            next_token = f"{index}." if index < len(logs) else ""
            break
    return audit_pb2.AccessRecordsResponse(
        records=[_access_record(r) for r in records], next_page_token=next_token
    )
