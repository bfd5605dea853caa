"""Export of evidence bundles (:mod:`ruta.evidence.bundle`) from this server's message log.

The exporter writes what the log holds, exactly: leaf bytes as stored, proofs from the stored
tree against the latest cosigned checkpoint, bodies decrypted where permitted. It never repairs
or hides anything, so whatever was tampered with in the database shows when the bundle is
verified (``ruta audit verify``).
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.evidence.bundle import (
    MAX_BUNDLE_RECORDS,
    BundleCheckpoint,
    BundleConsistency,
    BundleContents,
    BundleRecord,
    write_bundle,
)
from ruta.faults import Fault, RutaError
from ruta.v1 import log_pb2, transport_pb2
from security_server.checkpointer import log_vkey
from security_server.log import (
    MAX_PAGE_SIZE,
    BodyState,
    LogKeyError,
    LogReader,
    StoredCheckpoint,
    StoredRecord,
)
from security_server.log.schema import log_checkpoints

__all__ = [
    "MAX_BUNDLE_BODY_BYTES",
    "EvidenceError",
    "EvidenceFilter",
    "build_bundle",
    "cosigned_note",
]

#: Most body bytes one bundle carries (the bundle is built in memory); beyond it the export is
#: refused: narrow the query, or export without bodies.
MAX_BUNDLE_BODY_BYTES: Final = 256 << 20
#: Distinct checkpoints one bundle carries at most (one per record plus the tree's).
_MAX_CHECKPOINTS: Final = MAX_BUNDLE_RECORDS + 1


class EvidenceError(RutaError):
    """An export cannot be made (nothing cosigned yet, or too many records: narrow the query)."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


@dataclass(frozen=True, slots=True)
class EvidenceFilter:
    """What to export: every given filter must match. With none set, the export is complete
    over the half-open range ``[from_seq, until_seq)``: ``from_seq`` included, ``until_seq``
    not (``None``: up to the latest cosigned checkpoint)."""

    message_id: str | None = None
    client: str | None = None
    service: str | None = None
    method: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    from_seq: int = 0
    until_seq: int | None = None

    @property
    def is_range(self) -> bool:
        """Whether only a sequence range was asked (the bundle then claims completeness)."""
        return all(
            v is None
            for v in (
                self.message_id,
                self.client,
                self.service,
                self.method,
                self.subject,
                self.since,
                self.until,
            )
        )

    def as_dict(self) -> dict[str, Any]:
        """The filter as the manifest records it."""
        out: dict[str, Any] = {}
        for name in ("message_id", "client", "service", "method", "subject"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None:
                out[name] = moment.astimezone(UTC).isoformat()
        out["from_sequence"] = self.from_seq
        if self.until_seq is not None:
            out["until_sequence"] = self.until_seq
        return out


def cosigned_note(checkpoint: StoredCheckpoint) -> str:
    """The stored checkpoint note with the witness's cosignature line appended (one signed
    note carrying both signatures)."""
    return checkpoint.note + (checkpoint.cosignature or "")


async def _first_cosigned_above(
    engine: AsyncEngine, origin: str, seq: int
) -> StoredCheckpoint | None:
    """The smallest cosigned checkpoint whose tree holds record ``seq``."""
    stmt = (
        sa.select(log_checkpoints)
        .where(
            log_checkpoints.c.origin == origin,
            log_checkpoints.c.size > seq,
            log_checkpoints.c.cosignature.is_not(None),
        )
        .order_by(log_checkpoints.c.size)
        .limit(1)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(stmt)).one_or_none()
    if row is None:
        return None
    return StoredCheckpoint(
        origin=str(row.origin),
        size=int(row.size),
        root=bytes(row.root),
        note=str(row.note),
        created_at=datetime.fromtimestamp(0, UTC),
        cosignature=None if row.cosignature is None else str(row.cosignature),
        cosigned_at=None,
    )


async def _select_records(
    log: LogReader, query: EvidenceFilter, tree_size: int
) -> list[StoredRecord]:
    end = tree_size if query.until_seq is None else min(query.until_seq, tree_size)
    found: list[StoredRecord] = []
    after = query.from_seq - 1 if query.from_seq > 0 else None
    while True:
        page = await log.query(
            message_id=query.message_id,
            client=query.client,
            service=query.service,
            method=query.method,
            subject=query.subject,
            since=query.since,
            until=query.until,
            after=after,
            limit=MAX_PAGE_SIZE,
        )
        for record in page.records:
            if record.seq >= end:
                return found
            found.append(record)
            if len(found) > MAX_BUNDLE_RECORDS:
                raise EvidenceError(
                    f"more than {MAX_BUNDLE_RECORDS} records match; narrow the query or the "
                    "sequence range and export several bundles"
                )
        if page.next_after is None:
            return found
        after = page.next_after


def _certificates_of(
    leaf: bytes, certificates: dict[str, bytes], ocsp_responses: dict[str, bytes]
) -> None:
    record = log_pb2.LogRecord()
    signature = transport_pb2.Signature()
    try:
        record.ParseFromString(leaf)
        signature.ParseFromString(record.signature)
    except DecodeError:
        return  # the verifier names the unreadable leaf
    for der in (signature.certificate, *signature.chain):
        if der:
            certificates[hashlib.sha256(der).hexdigest()] = bytes(der)
    if signature.ocsp_response:
        digest = hashlib.sha256(signature.ocsp_response).hexdigest()
        ocsp_responses[digest] = bytes(signature.ocsp_response)


async def build_bundle(
    *,
    log: LogReader,
    engine: AsyncEngine,
    server: str,
    key: Ed25519PrivateKey,
    globalconf: bytes,
    query: EvidenceFilter,
    bodies_permitted: Callable[[StoredRecord], bool],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> bytes:
    """The evidence bundle (zip bytes) of the records matching ``query``, proven against the
    latest cosigned checkpoint; bodies of records for which ``bodies_permitted`` is true.

    ``key`` is the log key (it signs the manifest), ``globalconf`` the signed configuration in
    force. Raises :class:`EvidenceError` when no checkpoint is cosigned yet or more than
    :data:`MAX_BUNDLE_RECORDS` records match.
    """
    latest = await log.latest_checkpoint(cosigned=True)
    if latest is None or latest.size == 0:
        raise EvidenceError(
            "no checkpoint of this server's log is cosigned yet; retry once the witness cosigned"
        )
    tree_size = latest.size
    records = await _select_records(log, query, tree_size)
    checkpoints: dict[int, StoredCheckpoint] = {tree_size: latest}
    holder: StoredCheckpoint | None = None
    certificates: dict[str, bytes] = {}
    ocsp_responses: dict[str, bytes] = {}
    exported: list[BundleRecord] = []
    body_bytes = 0
    for record in records:
        if holder is None or record.seq >= holder.size:
            holder = await _first_cosigned_above(engine, log.origin, record.seq) or latest
            checkpoints.setdefault(holder.size, holder)
        body: bytes | None = None
        state = str(record.body_state)
        if record.body_state is BodyState.STORED:
            if not bodies_permitted(record):
                state = "withheld"
            else:
                try:
                    body = await log.get_body(record.seq)
                except LogKeyError:
                    state = "unreadable"
                if body is None and state == "stored":
                    state = "purged"
                body_bytes += len(body or b"")
                if body_bytes > MAX_BUNDLE_BODY_BYTES:
                    raise EvidenceError(
                        f"the matching bodies exceed {MAX_BUNDLE_BODY_BYTES} bytes; narrow the "
                        "query or export without bodies"
                    )
        exported.append(
            BundleRecord(
                seq=record.seq,
                leaf=record.record,
                body=body,
                body_state=state,
                inclusion_proof=tuple(await log.inclusion_proof(record.seq, tree_size)),
                witnessed_by=holder.size,
            )
        )
        _certificates_of(record.record, certificates, ocsp_responses)
    if len(checkpoints) > _MAX_CHECKPOINTS:  # pragma: no cover - bounded by the records
        raise EvidenceError("too many checkpoints for one bundle")
    sizes = sorted(checkpoints)
    consistency = [
        BundleConsistency(size1=a, size2=b, proof=tuple(await log.consistency_proof(a, b)))
        for a, b in itertools.pairwise(sizes)
    ]
    complete = None
    if query.is_range:
        end = tree_size if query.until_seq is None else min(query.until_seq, tree_size)
        complete = (min(query.from_seq, end), end)
    contents = BundleContents(
        server=server,
        origin=log.origin,
        exported_at=clock(),
        query=query.as_dict(),
        tree_size=tree_size,
        checkpoints=tuple(
            BundleCheckpoint(size=s, note=cosigned_note(checkpoints[s])) for s in sizes
        ),
        consistency=tuple(consistency),
        records=tuple(exported),
        globalconf=globalconf,
        log_vkey=log_vkey(log.origin, key),
        certificates=certificates,
        ocsp_responses=ocsp_responses,
        complete_range=complete,
    )
    out = io.BytesIO()
    write_bundle(contents, key, out)
    return out.getvalue()
