"""Export of evidence bundles (:mod:`ruta.evidence.bundle`) from this server's message log.

The exporter writes what the log holds, exactly: leaf bytes as stored, proofs from the stored
tree against the latest cosigned checkpoint, bodies decrypted where permitted. It never repairs
or hides anything, so whatever was tampered with in the database shows when the bundle is
verified (``ruta audit verify``).
"""

from __future__ import annotations

import bisect
import contextlib
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

from ruta.evidence.attachments import AttachmentKind, referenced_attachments
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
    MAX_ATTACHMENTS_PER_READ,
    MAX_BODIES_PER_READ,
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


#: Cosigned checkpoints read at once when looking for the ones that hold the exported records.
_CHECKPOINTS_PER_READ: Final = 1000


class _Holders:
    """The smallest cosigned checkpoint holding each record, for records asked in increasing
    sequence order: cosigned checkpoints are read a window at a time, so an export of a
    contiguous range reads them in one or two queries, and a sparse one in at most one per
    record (as before)."""

    def __init__(self, engine: AsyncEngine, origin: str, latest: StoredCheckpoint) -> None:
        self._engine = engine
        self._origin = origin
        self._latest = latest
        self._window: list[StoredCheckpoint] = []
        self._sizes: list[int] = []

    async def holder_of(self, seq: int) -> StoredCheckpoint:
        """The smallest cosigned checkpoint whose tree holds record ``seq`` (the latest one if
        none smaller is stored)."""
        at = bisect.bisect_right(self._sizes, seq)
        if at == len(self._sizes):
            await self._read_window(seq)
            at = bisect.bisect_right(self._sizes, seq)
            if at == len(self._sizes):
                return self._latest
        return self._window[at]

    async def _read_window(self, seq: int) -> None:
        stmt = (
            sa.select(
                log_checkpoints.c.size,
                log_checkpoints.c.root,
                log_checkpoints.c.note,
                log_checkpoints.c.cosignature,
            )
            .where(
                log_checkpoints.c.origin == self._origin,
                log_checkpoints.c.size > seq,
                log_checkpoints.c.size <= self._latest.size,
                log_checkpoints.c.cosignature.is_not(None),
            )
            .order_by(log_checkpoints.c.size)
            .limit(_CHECKPOINTS_PER_READ)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        self._window = [
            StoredCheckpoint(
                origin=self._origin,
                size=int(row.size),
                root=bytes(row.root),
                note=str(row.note),
                created_at=datetime.fromtimestamp(0, UTC),
                cosignature=None if row.cosignature is None else str(row.cosignature),
                cosigned_at=None,
            )
            for row in rows
        ]
        self._sizes = [c.size for c in self._window]


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


def _attachments_of(
    leaf: bytes,
    named: set[tuple[AttachmentKind, bytes]],
    certificates: dict[str, bytes],
    ocsp_responses: dict[str, bytes],
) -> None:
    """Collect what ``leaf``'s signature names by digest (format 2) into ``named``, or, for a
    leaf written before, copy its inline certificates and OCSP response (informative copies)."""
    record = log_pb2.LogRecord()
    try:
        record.ParseFromString(leaf)
    except DecodeError:
        return  # the verifier names the unreadable leaf
    if record.HasField("signature_ref"):
        named.update(referenced_attachments(record.signature_ref))
        return
    signature = transport_pb2.Signature()
    try:
        signature.ParseFromString(record.signature)
    except DecodeError:
        return
    for der in (signature.certificate, *signature.chain):
        if der:
            certificates[hashlib.sha256(der).hexdigest()] = bytes(der)
    if signature.ocsp_response:
        digest = hashlib.sha256(signature.ocsp_response).hexdigest()
        ocsp_responses[digest] = bytes(signature.ocsp_response)


#: Body bytes read in one query at most (a page of bodies is also at most MAX_BODIES_PER_READ).
_BODY_BYTES_PER_READ: Final = 16 << 20


async def _bodies(
    log: LogReader, records: list[StoredRecord], permitted: Callable[[StoredRecord], bool]
) -> dict[int, bytes | LogKeyError]:
    """The bodies of the stored, permitted records, in pages bounded by count and bytes.

    Their sizes are read first: more than :data:`MAX_BUNDLE_BODY_BYTES` in all is refused
    (:class:`EvidenceError`) before any body is read."""
    wanted = [r.seq for r in records if r.body_state is BodyState.STORED and permitted(r)]
    sizes: dict[int, int] = {}
    for start in range(0, len(wanted), MAX_PAGE_SIZE):
        sizes.update(await log.body_sizes(wanted[start : start + MAX_PAGE_SIZE]))
    if sum(sizes.values()) > MAX_BUNDLE_BODY_BYTES:
        raise EvidenceError(
            f"the matching bodies exceed {MAX_BUNDLE_BODY_BYTES} bytes; narrow the query or "
            "export without bodies"
        )
    found: dict[int, bytes | LogKeyError] = {}
    page: list[int] = []
    page_bytes = 0
    for seq in [s for s in wanted if s in sizes]:
        if page and (
            len(page) == MAX_BODIES_PER_READ or page_bytes + sizes[seq] > _BODY_BYTES_PER_READ
        ):
            found.update(await log.get_bodies(page))
            page, page_bytes = [], 0
        page.append(seq)
        page_bytes += sizes[seq]
    if page:
        found.update(await log.get_bodies(page))
    return found


def _body_of(
    record: StoredRecord,
    bodies: dict[int, bytes | LogKeyError],
    permitted: Callable[[StoredRecord], bool],
) -> tuple[bytes | None, str]:
    """The body a record exports with and its ``body_state`` in the manifest."""
    if record.body_state is not BodyState.STORED:
        return None, str(record.body_state)
    if not permitted(record):
        return None, "withheld"
    opened = bodies.get(record.seq)
    if isinstance(opened, LogKeyError):
        return None, "unreadable"
    if opened is None:
        return None, "purged"
    return opened, "stored"


async def _add_attachments(
    log: LogReader,
    named: set[tuple[AttachmentKind, bytes]],
    certificates: dict[str, bytes],
    ocsp_responses: dict[str, bytes],
    shared_signatures: dict[str, bytes],
) -> None:
    """Add the stored attachments the leaves name, each once: first the shared parts of batch
    signatures (format 3), then what those and the leaves name. One the log lacks is left out,
    never repaired: the verifier names the records that need it."""
    targets = {
        AttachmentKind.CERTIFICATE: certificates,
        AttachmentKind.OCSP_RESPONSE: ocsp_responses,
        AttachmentKind.SHARED_SIGNATURE: shared_signatures,
    }
    shared = {digest for kind, digest in named if kind is AttachmentKind.SHARED_SIGNATURE}
    wanted = {*named}
    stored = await _stored_attachments(log, shared)
    for digest in shared:
        found = stored.get(digest)
        if found is not None and found[0] is AttachmentKind.SHARED_SIGNATURE:
            shared_part = log_pb2.LoggedSignature()
            with contextlib.suppress(DecodeError):  # exported as stored: the verifier names it
                shared_part.ParseFromString(found[1])
            wanted.update(referenced_attachments(shared_part))
    stored.update(await _stored_attachments(log, {d for _, d in wanted} - shared))
    for kind, digest in wanted:
        found = stored.get(digest)
        if found is not None and found[0] is kind:
            targets[kind][digest.hex()] = found[1]


async def _stored_attachments(
    log: LogReader, digests: set[bytes]
) -> dict[bytes, tuple[AttachmentKind, bytes]]:
    """:meth:`LogReader.get_attachments` for any number of digests."""
    wanted = sorted(digests)
    stored: dict[bytes, tuple[AttachmentKind, bytes]] = {}
    for start in range(0, len(wanted), MAX_ATTACHMENTS_PER_READ):
        stored.update(await log.get_attachments(wanted[start : start + MAX_ATTACHMENTS_PER_READ]))
    return stored


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
    holders = _Holders(engine, log.origin, latest)
    certificates: dict[str, bytes] = {}
    ocsp_responses: dict[str, bytes] = {}
    shared_signatures: dict[str, bytes] = {}
    named: set[tuple[AttachmentKind, bytes]] = set()
    bodies = await _bodies(log, records, bodies_permitted)
    proofs = await log.inclusion_proofs([r.seq for r in records], tree_size, strict=False)
    exported: list[BundleRecord] = []
    body_bytes = 0
    for record, proof in zip(records, proofs, strict=True):
        holder = await holders.holder_of(record.seq)
        checkpoints.setdefault(holder.size, holder)
        body, state = _body_of(record, bodies, bodies_permitted)
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
                inclusion_proof=tuple(proof),
                witnessed_by=holder.size,
            )
        )
        _attachments_of(record.record, named, certificates, ocsp_responses)
    await _add_attachments(log, named, certificates, ocsp_responses, shared_signatures)
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
        shared_signatures=shared_signatures,
        complete_range=complete,
    )
    out = io.BytesIO()
    write_bundle(contents, key, out)
    return out.getvalue()
