"""The message log: durable group-committed appends, a Merkle tree kept in the database, proofs.

One :class:`MessageLog` is one origin's tree (one security-server node). Appends go through its
single writer (:mod:`security_server.log._writer`); readers run on their own connections and see
only committed state. Every complete subtree hash is stored, so an append writes O(1) amortised
nodes and any root or proof reads O(log n) of them in one query; nothing is ever rebuilt.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ruta.evidence.attachments import AttachmentKind
from ruta.merkle import (
    EMPTY_ROOT,
    MerkleError,
    NodeKey,
    ProofPlan,
    consistency_proof_plan,
    inclusion_proof_plan,
    root_plan,
)
from security_server.database import WRITE_TRANSACTION, sqlite_sync_engine
from security_server.log._writer import (
    DEFAULT_MAX_GROUP_RECORDS,
    GroupCommitWriter,
    fetch_many_nodes,
    fetch_nodes,
    fetch_nodes_sqlite,
    restore_frontier,
    restore_waiting,
)
from security_server.log.bodies import (
    FILE_GROUP_MIN_BODIES,
    TAG_SIZE,
    BodyCipher,
    BodySegments,
    SealedBody,
)
from security_server.log.errors import LogError, LogIntegrityError, LogKeyError, LogRangeError
from security_server.log.keys import BodyKey
from security_server.log.model import (
    AppendedRecord,
    BodyState,
    Direction,
    InvalidLogEntryError,
    LogEntry,
    MessageClaim,
    RecordKind,
    RecordPage,
    StoredCheckpoint,
    StoredRecord,
    TreeHead,
    WriterStats,
    from_micros,
    to_micros,
)
from security_server.log.schema import (
    INDEXED,
    MAX_ORIGIN_LENGTH,
    log_attachments,
    log_bodies,
    log_checkpoints,
    log_heads,
    log_leaves,
    purged_body,
    seen_messages,
)

__all__ = [
    "MAX_APPEND_ENTRIES",
    "MAX_ATTACHMENTS_PER_READ",
    "MAX_BODIES_PER_READ",
    "MAX_CHECKPOINT_TEXT",
    "MAX_PAGE_SIZE",
    "MAX_PURGE_CHUNK",
    "LogReader",
    "MessageLog",
    "first_seq_logged_at_or_after",
]

_log = logging.getLogger(__name__)

#: A body row whose body is there: in the row, or in a body segment file (ADR 0040).
_BODY_STORED: Final = sa.or_(
    log_bodies.c.ciphertext.is_not(None), log_bodies.c.segment.is_not(None)
)

#: Most entries one append call may carry (an exchange logs one or two).
MAX_APPEND_ENTRIES: Final = 64
#: Most records one query page or one ``get_records`` call returns.
MAX_PAGE_SIZE: Final = 1000
#: Longest checkpoint note or cosignature text stored (a signed note is a few hundred bytes).
MAX_CHECKPOINT_TEXT: Final = 16 * 1024
#: Bodies purged per transaction, so retention never holds the write lock for long.
MAX_PURGE_CHUNK: Final = 1000
#: Body segment files (the oldest first) one retention round considers for deletion: retention
#: purges the oldest bodies first, so the oldest segments are the ones to go; the rest wait for
#: the next round (bounds the round's query).
_MAX_SEGMENTS_PER_ROUND: Final = 256
#: Most proofs one :meth:`LogReader.inclusion_proofs` call assembles (a bundle's records).
_MAX_PROOFS_PER_READ: Final = 10 * MAX_PAGE_SIZE
#: Most bodies one :meth:`LogReader.get_bodies` call reads.
MAX_BODIES_PER_READ: Final = MAX_PAGE_SIZE
#: Most attachments one :meth:`LogReader.get_attachments` call reads (a bundle names a few).
MAX_ATTACHMENTS_PER_READ: Final = 4096
#: Digests named in one query (bounds the statement's parameters).
_ATTACHMENTS_PER_QUERY: Final = 500
#: A search by service without a method first reads up to this many matching sequence numbers
#: through the service index: a service with no more records is answered from them (a rare
#: service's records are scattered, and walking the log in sequence order to find a page of them
#: would read it all); a more common one is found quickly in sequence order.
_RARE_SERVICE_PROBE: Final = 2000
#: The probe, by dialect (is SQLite): SQLite is told to use the service index, or it walks the
#: primary key (origin, seq), the whole log for a service with no records; PostgreSQL plans it
#: from its statistics.
_RARE_SERVICE_PROBE_SQL: Final = {
    True: sa.text(
        "SELECT seq FROM log_leaves INDEXED BY ix_log_leaves_service_seq"  # noqa: S608 - constants only
        f" WHERE service = :service AND origin = :origin AND seq < :size AND {INDEXED} LIMIT :n"
    ),
    False: sa.text(
        "SELECT seq FROM log_leaves"  # noqa: S608 - constants only
        f" WHERE service = :service AND origin = :origin AND seq < :size AND {INDEXED} LIMIT :n"
    ),
}
#: The first of an origin's leaves not yet in the audit indexes (ADR 0053): the pending ones,
#: at most MAX_PENDING_RECORDS, are read on the primary key from it.
_PENDING_FROM: Final = (
    sa.select(log_heads.c.indexed_size)
    .where(log_heads.c.origin == sa.bindparam("pending_origin"))
    .scalar_subquery()
)
#: The probe's pending leaves of the service (on the primary key).
_RARE_SERVICE_PENDING: Final = sa.select(log_leaves.c.seq).where(
    log_leaves.c.origin == sa.bindparam("origin"),
    log_leaves.c.seq >= _PENDING_FROM,
    log_leaves.c.seq < sa.bindparam("size"),
    log_leaves.c.service == sa.bindparam("service"),
)
#: Longest the consumer's message-id lookup waits on a busy SQLite file (it runs on the loop).
_LOOKUP_BUSY_MS: Final = 200


#: The rows that carry one message id (:meth:`LogReader.holds_message`), by dialect (is
#: SQLite): the indexed ones through the message-id index alone, and on SQLite each origin's
#: few pending ones (ADR 0053) on the primary key, from its ``indexed_size``. One statement:
#: one snapshot, in which the two parts are disjoint and together every record. SQLite is told
#: to read the heads first (``CROSS JOIN`` fixes its join order: otherwise, without
#: statistics, it may walk every leaf). PostgreSQL writes no pending record: the index alone
#: (the pending part would cost it a walk of every leaf, the partial index being no help).
#: Named parameters, as both ``sqlite3`` and SQLAlchemy's text take them.
_MESSAGE_ID_INDEXED_SQL: Final = (
    "SELECT origin, client, seq FROM log_leaves"  # noqa: S608 - constants only
    f" WHERE message_id = :message_id AND {INDEXED}"
)
_MESSAGE_ID_LOOKUP_SQL: Final = {
    True: _MESSAGE_ID_INDEXED_SQL + " UNION ALL"  # noqa: S608 - constants only
    " SELECT l.origin, l.client, l.seq FROM log_heads h"
    " CROSS JOIN log_leaves l ON l.origin = h.origin AND l.seq >= h.indexed_size"
    " WHERE l.message_id = :message_id",
    False: _MESSAGE_ID_INDEXED_SQL,
}
_MESSAGE_ID_LOOKUP: Final = {sqlite: sa.text(sql) for sqlite, sql in _MESSAGE_ID_LOOKUP_SQL.items()}
#: The same on a log's own SQLite connection, but the pending records of every origin except
#: its own (:meth:`MessageLog.holds_message` has its own in memory: reading up to 64 rows on
#: the primary key doubled the lookup's time).
_MESSAGE_ID_LOOKUP_OTHERS_SQL: Final = _MESSAGE_ID_LOOKUP_SQL[True] + " AND h.origin <> :own"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_origin(origin: str) -> None:
    if not origin or len(origin) > MAX_ORIGIN_LENGTH:
        raise InvalidLogEntryError(f"a log origin is 1 to {MAX_ORIGIN_LENGTH} characters")


#: Records whose ``logged_at`` one round of :func:`first_seq_logged_at_or_after` reads (one
#: primary-key query per round: a tree of a million records is searched in four, of ten
#: million in five).
_TIME_PROBES: Final = 64
_LOGGED_AT_OF: Final = sa.select(log_leaves.c.seq, log_leaves.c.logged_at).where(
    log_leaves.c.origin == sa.bindparam("origin"),
    log_leaves.c.seq.in_(sa.bindparam("seqs", expanding=True)),
)


async def first_seq_logged_at_or_after(
    conn: AsyncConnection, origin: str, size: int, micros: int
) -> int:
    """The first sequence number of ``origin``'s tree, below ``size``, whose ``logged_at`` is
    at least ``micros`` (microseconds); ``size`` if there is none.

    ``logged_at`` never decreases along a tree (the writer stamps each group with the later of
    its clock and the tree's last time, across restarts too), so a time is a point in sequence
    order, found by search on the primary key ``(origin, seq)``: each round reads
    :data:`_TIME_PROBES` evenly spread records in one query and keeps the stretch between the
    last earlier one and the first later one. What a time range once needed an index
    ``(origin, logged_at)`` for, one more B-tree written by every append (ADR 0037). Raises
    :class:`LogIntegrityError` if a record below ``size`` is missing."""
    low, high = 0, size  # every seq below low is earlier; every seq from high on is not
    while low < high:
        span = high - low
        if span <= _TIME_PROBES:
            probes = list(range(low, high))
        else:
            probes = sorted({low + span * i // _TIME_PROBES for i in range(_TIME_PROBES)})
        rows = await conn.execute(_LOGGED_AT_OF, {"origin": origin, "seqs": probes})
        times = {int(seq): int(logged_at) for seq, logged_at in rows}
        for seq in probes:
            logged_at = times.get(seq)
            if logged_at is None:
                raise LogIntegrityError(f"log {origin!r} lacks committed record {seq}")
            if logged_at >= micros:
                high = seq
                break
            low = seq + 1
    return low


class LogReader:
    """Read access to one origin's log at its committed head: roots, proofs, records, bodies,
    checkpoints.

    :class:`MessageLog` is the reader of its own origin, always at its writer's head. To read
    another node's log in a shared database (any node answers audits for all), open one with
    :meth:`open` and :meth:`refresh` it when a newer head is wanted.
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        origin: str,
        cipher: BodyCipher,
        head: TreeHead,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        """Internal: use :meth:`open` (or :meth:`MessageLog.open`)."""
        self._engine = engine
        self._origin = origin
        self._cipher = cipher
        self._snapshot = head
        self._clock = clock
        # Where large bodies live on a SQLite file (None: every body is in its row).
        self._segments = BodySegments.for_url(engine.url, origin)

    @classmethod
    async def open(
        cls, engine: AsyncEngine, *, origin: str, body_key: BodyKey | BodyCipher
    ) -> LogReader:
        """Open ``origin``'s log for reading at its stored head (checked as on a writer's open).

        Raises :class:`LogIntegrityError` if the stored tree disagrees with itself.
        """
        _check_origin(origin)
        cipher = body_key if isinstance(body_key, BodyCipher) else BodyCipher(body_key)
        reader = cls(
            engine=engine, origin=origin, cipher=cipher, head=TreeHead(origin, 0, EMPTY_ROOT)
        )
        await reader.refresh()
        return reader

    async def refresh(self) -> TreeHead:
        """Move to the newest stored head (checked); return it. Raises
        :class:`LogIntegrityError`."""
        async with self._engine.connect() as conn:
            frontier, _ = await restore_frontier(conn, self._origin)
        self._snapshot = TreeHead(origin=self._origin, size=frontier.size, root=frontier.root())
        return self._snapshot

    @property
    def origin(self) -> str:
        """The origin this log's tree and checkpoints are named by."""
        return self._origin

    def size(self) -> int:
        """Number of leaves at the head this reader serves (no I/O)."""
        return self.head().size

    def head(self) -> TreeHead:
        """The committed size and root this reader serves, as one consistent pair (no I/O)."""
        return self._snapshot

    # --- tree -----------------------------------------------------------------------------------

    def _check_size(self, size: int | None) -> int:
        current = self.head().size
        if size is None:
            return current
        if not 0 <= size <= current:
            raise LogRangeError(f"tree size {size} is not between 0 and the log's size {current}")
        return size

    async def _fetch_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        if not keys:
            return {}
        async with self._engine.connect() as conn:
            return await fetch_nodes(conn, self._origin, keys)

    async def _run_plan(self, plan: ProofPlan) -> list[bytes]:
        nodes = await self._fetch_nodes(plan.keys)
        missing = [k for k in plan.keys if k not in nodes]
        if missing:
            raise LogIntegrityError(f"log {self._origin!r} lacks tree nodes {missing}")
        return plan.assemble(nodes)

    async def root(self, size: int | None = None) -> bytes:
        """Root of the tree of the first ``size`` leaves (default: the committed size).

        Raises :class:`LogRangeError` for a size beyond the log.
        """
        head = self.head()
        size = self._check_size(size)
        if size == head.size:
            return head.root
        if size == 0:
            return EMPTY_ROOT
        return (await self._run_plan(root_plan(size)))[0]

    async def inclusion_proof(self, seq: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of leaf ``seq`` in the tree of ``size`` leaves (default: the
        committed size), read in one query. Raises :class:`LogRangeError` unless
        ``0 <= seq < size <= self.size()``."""
        size = self._check_size(size)
        if not 0 <= seq < size:
            raise LogRangeError(f"record {seq} is not in the tree of size {size}")
        return await self._run_plan(inclusion_proof_plan(seq, size))

    async def inclusion_proofs(
        self, seqs: Sequence[int], size: int, *, strict: bool = True
    ) -> list[list[bytes]]:
        """The inclusion proofs of many leaves in the tree of ``size`` leaves, in the order
        asked, from one read of every node they need (ranges of nearby nodes in one query each):
        what an export of thousands of records needs, at a fraction of a query per proof.

        Raises :class:`LogRangeError` for more than ten times :data:`MAX_PAGE_SIZE` leaves or
        one not in the tree, and :class:`LogIntegrityError` if a node is missing; with
        ``strict`` false, a proof missing a node is returned empty instead (an exporter's
        choice: the record then fails verification under its own name, nothing is hidden)."""
        if len(seqs) > _MAX_PROOFS_PER_READ:
            raise LogRangeError(f"at most {_MAX_PROOFS_PER_READ} proofs are read at once")
        size = self._check_size(size)
        for seq in seqs:
            if not 0 <= seq < size:
                raise LogRangeError(f"record {seq} is not in the tree of size {size}")
        plans = [inclusion_proof_plan(seq, size) for seq in seqs]
        keys = [key for plan in plans for part in plan.parts for key in part]
        if not keys:
            return [[] for _ in plans]
        async with self._engine.connect() as conn:
            nodes = await fetch_many_nodes(conn, self._origin, keys)
        proofs: list[list[bytes]] = []
        for plan in plans:
            try:
                proofs.append(plan.assemble(nodes))
            except MerkleError as exc:
                if strict:
                    raise LogIntegrityError(
                        f"log {self._origin!r} lacks tree nodes: {exc}"
                    ) from None
                proofs.append([])
        return proofs

    async def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof from ``size1`` to ``size2`` leaves (default: the committed
        size), read in one query; empty when ``size1`` is 0 or equals ``size2``. Raises
        :class:`LogRangeError` unless ``0 <= size1 <= size2 <= self.size()``."""
        size2 = self._check_size(size2)
        if not 0 <= size1 <= size2:
            raise LogRangeError(f"size {size1} is not between 0 and {size2}")
        return await self._run_plan(consistency_proof_plan(size1, size2))

    # --- records --------------------------------------------------------------------------------

    def _record_select(self) -> sa.Select[Any]:
        body_state = sa.case(
            (
                _BODY_STORED,
                sa.literal(str(BodyState.STORED)),
            ),
            (log_bodies.c.purged_at.is_not(None), sa.literal(str(BodyState.PURGED))),
            else_=sa.literal(str(BodyState.ABSENT)),
        ).label("body_state")
        return sa.select(
            log_leaves.c.origin,
            log_leaves.c.seq,
            log_leaves.c.direction,
            log_leaves.c.logged_at,
            log_leaves.c.message_id,
            log_leaves.c.kind,
            log_leaves.c.client,
            log_leaves.c.service,
            log_leaves.c.method,
            log_leaves.c.subject,
            log_leaves.c.created_at,
            log_leaves.c.record,
            log_leaves.c.leaf_hash,
            body_state,
        ).select_from(
            log_leaves.outerjoin(
                log_bodies,
                sa.and_(
                    log_bodies.c.origin == log_leaves.c.origin,
                    log_bodies.c.seq == log_leaves.c.seq,
                ),
            )
        )

    async def get_records(self, seqs: Sequence[int]) -> list[StoredRecord]:
        """The records with these sequence numbers, in the order asked.

        Raises :class:`LogRangeError` for more than :data:`MAX_PAGE_SIZE` numbers or one that is
        not a committed leaf, and :class:`LogIntegrityError` if a committed leaf is missing.
        """
        if len(seqs) > MAX_PAGE_SIZE:
            raise LogRangeError(f"at most {MAX_PAGE_SIZE} records are read at once")
        size = self.head().size
        for seq in seqs:
            if not 0 <= seq < size:
                raise LogRangeError(f"record {seq} is not in the log (size {size})")
        if not seqs:
            return []
        stmt = self._record_select().where(
            log_leaves.c.origin == self._origin, log_leaves.c.seq.in_(sorted(set(seqs)))
        )
        async with self._engine.connect() as conn:
            found = {int(r.seq): _stored_record(r) for r in await conn.execute(stmt)}
        missing = [s for s in seqs if s not in found]
        if missing:
            raise LogIntegrityError(f"log {self._origin!r} lacks committed records {missing[:10]}")
        return [found[s] for s in seqs]

    async def holds_message(self, *, client: str, message_id: str) -> bool:
        """Whether a committed record of ``client`` carries ``message_id``, in this log or in
        any other log sharing its database (the member's other nodes and workers).

        Looked up through the message-id index alone (origin and client are checked on the
        few rows one id has): the consumer asks this before it signs every request, so the
        cost must not grow with the records one client has in the log, as a query ordered by
        sequence on the client index does."""
        async with self._engine.connect() as conn:
            lookup = _MESSAGE_ID_LOOKUP[conn.dialect.name == "sqlite"]
            rows = (await conn.execute(lookup, {"message_id": message_id})).all()
        return self._holds(rows, client)

    def _holds(self, rows: Sequence[Any], client: str) -> bool:
        """Whether one of ``rows`` (origin, client, seq) is a committed record of ``client``
        in this origin's log or in another log of the same database (another node or worker
        of the member: a row of another origin is visible only once its writer committed)."""
        size = self.head().size
        return any(
            holder == client and (origin != self._origin or seq < size)
            for origin, holder, seq in rows
        )

    async def query(
        self,
        *,
        message_id: str | None = None,
        client: str | None = None,
        service: str | None = None,
        method: str | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> RecordPage:
        """Records matching every given filter, in sequence order (descending with
        ``newest_first``), one page at a time.

        ``since`` is inclusive and ``until`` exclusive, on ``logged_at``. ``after`` is the
        ``next_after`` of the previous page (the page goes on past it, in the page's order).
        Raises :class:`LogRangeError` for ``limit`` outside 1..:data:`MAX_PAGE_SIZE`.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise LogRangeError(f"a page holds 1 to {MAX_PAGE_SIZE} records, not {limit}")
        size = self.head().size
        async with self._engine.connect() as conn:
            # A time range is a range of sequence numbers (logged_at never decreases along
            # the tree): found on the primary key, it narrows every other index's search too.
            first, end = 0, size  # only what the writer acknowledged
            if since is not None:
                first = await first_seq_logged_at_or_after(
                    conn, self._origin, size, to_micros(since)
                )
            if until is not None:
                end = await first_seq_logged_at_or_after(conn, self._origin, size, to_micros(until))
            if first >= end:
                return RecordPage(records=(), next_after=None)
            # The filters on values, and the two lower or upper bounds on seq besides ``end``
            # (the pending records' statement takes only the first, see _indexed_page).
            values: list[sa.ColumnElement[bool]] = [
                log_leaves.c.origin == self._origin,
                log_leaves.c.seq < end,
            ]
            for column, value in (
                (log_leaves.c.message_id, message_id),
                (log_leaves.c.client, client),
                (log_leaves.c.service, service),
                (log_leaves.c.method, method),
                (log_leaves.c.subject, subject),
            ):
                if value is not None:
                    values.append(column == value)
            conditions = list(values)
            if first > 0:
                conditions.append(log_leaves.c.seq >= first)
            if after is not None:
                conditions.append(
                    log_leaves.c.seq < after if newest_first else log_leaves.c.seq > after
                )

            def within(seq: int) -> bool:
                if seq < first:
                    return False
                return after is None or (seq < after if newest_first else seq > after)

            rare = None
            if service is not None and method is None and message_id is None and subject is None:
                rare = await self._rare_service_page(conn, service, conditions, limit, newest_first)
            if rare is not None:
                records = rare
            elif any(v is not None for v in (message_id, client, service, subject)):
                records = await self._indexed_page(
                    conn, conditions, values, within, limit=limit, newest_first=newest_first
                )
            else:
                order = log_leaves.c.seq.desc() if newest_first else log_leaves.c.seq
                stmt = self._record_select().where(*conditions).order_by(order).limit(limit + 1)
                records = [_stored_record(r) for r in await conn.execute(stmt)]
        more = len(records) > limit
        records = records[:limit]
        return RecordPage(
            records=tuple(records), next_after=records[-1].seq if more and records else None
        )

    async def _indexed_page(
        self,
        conn: AsyncConnection,
        conditions: Sequence[sa.ColumnElement[bool]],
        values: Sequence[sa.ColumnElement[bool]],
        within: Callable[[int], bool],
        *,
        limit: int,
        newest_first: bool,
    ) -> list[StoredRecord]:
        """Up to ``limit + 1`` records matching ``conditions`` (which name an indexed column),
        in page order: the indexed ones through an audit index (``pending IS NULL``, the
        indexes' condition), and, on SQLite, the origin's few pending ones (ADR 0053).

        The pending ones are read on the primary key from the origin's ``indexed_size`` with
        ``values`` alone (the value filters and the end), and ``within`` (the start of a time
        range, the page's ``after``) is applied to them here: given a second lower bound on
        seq, SQLite's range may start from that one instead and walk the log from there to its
        end. On SQLite both statements read one snapshot (one transaction); a leaf is indexed
        once and stays so, so even two snapshots would miss none, and one in both answers is
        taken once. PostgreSQL writes no pending record (ADR 0053): one statement there."""
        order = log_leaves.c.seq.desc() if newest_first else log_leaves.c.seq
        pending: dict[int, StoredRecord] = {}
        if conn.dialect.name == "sqlite":
            pending = {
                record.seq: record
                for record in map(
                    _stored_record,
                    await conn.execute(
                        self._record_select().where(*values, log_leaves.c.seq >= _PENDING_FROM),
                        {"pending_origin": self._origin},
                    ),
                )
                if within(record.seq)
            }
        stmt = (
            self._record_select()
            .where(*conditions, log_leaves.c.pending.is_(None))
            .order_by(order)
            .limit(limit + 1)
        )
        found = {record.seq: record for record in map(_stored_record, await conn.execute(stmt))}
        found.update(pending)
        return [found[seq] for seq in sorted(found, reverse=newest_first)[: limit + 1]]

    async def _rare_service_page(
        self,
        conn: AsyncConnection,
        service: str,
        conditions: Sequence[sa.ColumnElement[bool]],
        limit: int,
        newest_first: bool,
    ) -> list[StoredRecord] | None:
        """Up to ``limit + 1`` records matching ``conditions`` (which name ``service``), in page
        order, when the service has at most :data:`_RARE_SERVICE_PROBE` records in this log;
        None when it has more (then a walk in sequence order finds a page quickly)."""
        probe = _RARE_SERVICE_PROBE_SQL[conn.dialect.name == "sqlite"]
        size = self.head().size
        # The pending leaves first, on SQLite (ADR 0053; see _indexed_page).
        pending: set[int] = set()
        if conn.dialect.name == "sqlite":
            pending = {
                int(row.seq)
                for row in await conn.execute(
                    _RARE_SERVICE_PENDING,
                    {
                        "service": service,
                        "origin": self._origin,
                        "pending_origin": self._origin,
                        "size": size,
                    },
                )
            }
        indexed = {
            int(row.seq)
            for row in await conn.execute(
                probe,
                {
                    "service": service,
                    "origin": self._origin,
                    "size": size,
                    "n": _RARE_SERVICE_PROBE + 1,
                },
            )
        }
        candidates = sorted(indexed | pending)
        if len(candidates) > _RARE_SERVICE_PROBE:
            return None
        if not candidates:
            return []
        matching = await conn.execute(
            sa.select(log_leaves.c.seq).where(*conditions, log_leaves.c.seq.in_(candidates))
        )
        page = sorted((int(row.seq) for row in matching), reverse=newest_first)[: limit + 1]
        if not page:
            return []
        rows = await conn.execute(
            self._record_select().where(
                log_leaves.c.origin == self._origin, log_leaves.c.seq.in_(page)
            )
        )
        by_seq = {record.seq: record for record in map(_stored_record, rows)}
        return [by_seq[seq] for seq in page]

    # --- attachments ----------------------------------------------------------------------------

    async def get_attachments(
        self, digests: Collection[bytes]
    ) -> dict[bytes, tuple[AttachmentKind, bytes]]:
        """The stored certificates and OCSP responses with these SHA-256 digests (what format-2
        leaves name), as kind and content by digest; a digest not stored is simply absent.

        Raises :class:`LogRangeError` for more than :data:`MAX_ATTACHMENTS_PER_READ` digests.
        """
        wanted = sorted(set(digests))
        if len(wanted) > MAX_ATTACHMENTS_PER_READ:
            raise LogRangeError(f"at most {MAX_ATTACHMENTS_PER_READ} attachments are read at once")
        found: dict[bytes, tuple[AttachmentKind, bytes]] = {}
        if not wanted:
            return found
        async with self._engine.connect() as conn:
            for start in range(0, len(wanted), _ATTACHMENTS_PER_QUERY):
                chunk = wanted[start : start + _ATTACHMENTS_PER_QUERY]
                rows = await conn.execute(
                    sa.select(
                        log_attachments.c.digest, log_attachments.c.kind, log_attachments.c.content
                    ).where(log_attachments.c.digest.in_(chunk))
                )
                for row in rows:
                    found[bytes(row.digest)] = (AttachmentKind(int(row.kind)), bytes(row.content))
        return found

    # --- bodies ---------------------------------------------------------------------------------

    async def get_body(self, seq: int) -> bytes | None:
        """The decrypted body of record ``seq``; ``None`` if it was purged or never stored.

        Raises :class:`LogRangeError` for a seq not in the log and :class:`LogKeyError` if the
        stored body does not authenticate (tampered, moved to another record, unknown key).
        """
        size = self.head().size
        if not 0 <= seq < size:
            raise LogRangeError(f"record {seq} is not in the log (size {size})")
        opened = (await self._read_bodies([seq])).get(seq)
        if isinstance(opened, LogKeyError):
            raise opened
        return opened

    async def body_sizes(self, seqs: Sequence[int]) -> dict[int, int]:
        """The size of each stored body of these records, read without reading the bodies (a
        record whose body was purged or never stored is absent). Raises :class:`LogRangeError`
        for more than :data:`MAX_PAGE_SIZE` records."""
        if len(seqs) > MAX_PAGE_SIZE:
            raise LogRangeError(f"at most {MAX_PAGE_SIZE} body sizes are read at once")
        if not seqs:
            return {}
        stmt = sa.select(
            log_bodies.c.seq,
            sa.func.coalesce(sa.func.length(log_bodies.c.ciphertext), log_bodies.c.length).label(
                "size"
            ),
        ).where(
            log_bodies.c.origin == self._origin,
            log_bodies.c.seq.in_(sorted(set(seqs))),
            _BODY_STORED,
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {int(row.seq): max(0, int(row.size) - TAG_SIZE) for row in rows}

    async def get_bodies(self, seqs: Sequence[int]) -> dict[int, bytes | LogKeyError]:
        """The decrypted bodies of these records in one read: by sequence number, the body, or
        the :class:`LogKeyError` its stored copy raised (tampered, moved, unknown key); a
        record whose body was purged or never stored is absent from the result.

        Raises :class:`LogRangeError` for more than :data:`MAX_BODIES_PER_READ` records or one
        not in the log."""
        if len(seqs) > MAX_BODIES_PER_READ:
            raise LogRangeError(f"at most {MAX_BODIES_PER_READ} bodies are read at once")
        size = self.head().size
        for seq in seqs:
            if not 0 <= seq < size:
                raise LogRangeError(f"record {seq} is not in the log (size {size})")
        return await self._read_bodies(seqs)

    async def _read_bodies(self, seqs: Sequence[int]) -> dict[int, bytes | LogKeyError]:
        """:meth:`get_bodies` without its checks: each stored body opened, from its row or from
        its segment file (read in a worker thread, each file opened once per call)."""
        if not seqs:
            return {}
        stmt = sa.select(
            log_bodies.c.seq,
            log_bodies.c.key_id,
            log_bodies.c.nonce,
            log_bodies.c.ciphertext,
            log_bodies.c.segment,
            log_bodies.c.position,
            log_bodies.c.length,
        ).where(log_bodies.c.origin == self._origin, log_bodies.c.seq.in_(sorted(set(seqs))))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        stored: list[tuple[int, str, bytes, bytes | None]] = []
        refs: list[tuple[int, int, int]] = []
        for row in rows:
            if row.nonce is None:
                continue
            if row.ciphertext is not None:
                stored.append(
                    (int(row.seq), str(row.key_id), bytes(row.nonce), bytes(row.ciphertext))
                )
            elif row.segment is not None:
                stored.append((int(row.seq), str(row.key_id), bytes(row.nonce), None))
                refs.append((int(row.segment), int(row.position), int(row.length)))
        from_files: list[bytes | None] = []
        if refs:
            if self._segments is None:
                from_files = [None] * len(refs)
            else:
                from_files = await asyncio.to_thread(self._segments.read_many, refs)
        read = iter(from_files)
        found: dict[int, bytes | LogKeyError] = {}
        for seq, key_id, nonce, in_row in stored:
            ciphertext = in_row if in_row is not None else next(read)
            if ciphertext is None:
                found[seq] = LogKeyError(
                    f"the stored body of record {seq} is missing from the log's body files"
                )
                continue
            sealed = SealedBody(key_id=key_id, nonce=nonce, ciphertext=ciphertext)
            try:
                found[seq] = self._cipher.open(self._origin, seq, sealed)
            except LogKeyError as exc:
                found[seq] = exc
        return found

    # --- checkpoints ----------------------------------------------------------------------------

    async def get_checkpoint(self, size: int) -> StoredCheckpoint | None:
        """The stored checkpoint of ``size``, or ``None``."""
        async with self._engine.connect() as conn:
            return await self._checkpoint_row(conn, size)

    async def latest_checkpoint(self, *, cosigned: bool = False) -> StoredCheckpoint | None:
        """The stored checkpoint of the largest size (only cosigned ones if ``cosigned``)."""
        stmt = sa.select(log_checkpoints).where(log_checkpoints.c.origin == self._origin)
        if cosigned:
            stmt = stmt.where(log_checkpoints.c.cosignature.is_not(None))
        stmt = stmt.order_by(log_checkpoints.c.size.desc()).limit(1)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _stored_checkpoint(row)

    async def _checkpoint_row(self, conn: AsyncConnection, size: int) -> StoredCheckpoint | None:
        row = (
            await conn.execute(
                sa.select(log_checkpoints).where(
                    log_checkpoints.c.origin == self._origin, log_checkpoints.c.size == size
                )
            )
        ).one_or_none()
        return None if row is None else _stored_checkpoint(row)


class MessageLog(LogReader):
    """One origin's message log, read and written. Open with :meth:`open`; close with
    :meth:`close` (or ``async with``). Safe for concurrent use by many tasks of one event loop."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        origin: str,
        cipher: BodyCipher,
        writer: GroupCommitWriter,
        clock: Callable[[], datetime],
    ) -> None:
        """Internal: use :meth:`open`."""
        super().__init__(engine=engine, origin=origin, cipher=cipher, head=writer.head, clock=clock)
        self._writer = writer
        self._lookup = _SqliteLookup.for_url(engine.url)

    @classmethod
    async def open(
        cls,
        engine: AsyncEngine,
        *,
        origin: str,
        body_key: BodyKey | BodyCipher,
        clock: Callable[[], datetime] = _utc_now,
        max_group_records: int = DEFAULT_MAX_GROUP_RECORDS,
        body_files_from: int = FILE_GROUP_MIN_BODIES,
    ) -> MessageLog:
        """Open ``origin``'s log in a migrated database and start its writer.

        Restores the tree's frontier from the stored nodes and checks it against the stored size
        and root (O(log n) reads). The caller keeps owning ``engine``. Raises
        :class:`LogIntegrityError` if the stored tree disagrees with itself, and
        :class:`InvalidLogEntryError` for an empty or over-long origin.
        """
        _check_origin(origin)
        if max_group_records < 1:
            raise InvalidLogEntryError("a log group holds at least one record")
        cipher = body_key if isinstance(body_key, BodyCipher) else BodyCipher(body_key)
        async with engine.connect() as conn:
            frontier, last_logged_us = await restore_frontier(conn, origin)
            indexed_size, waiting = await restore_waiting(conn, origin, frontier.size)
            last_body_segment = await _check_body_files(conn, origin, engine.url)
        writer = GroupCommitWriter(
            engine=engine,
            origin=origin,
            cipher=cipher,
            clock=clock,
            frontier=frontier,
            last_logged_us=last_logged_us,
            max_group_records=max_group_records,
            last_body_segment=last_body_segment,
            body_files_from=body_files_from,
            indexed_size=indexed_size,
            waiting=waiting,
        )
        writer.start()
        return cls(engine=engine, origin=origin, cipher=cipher, writer=writer, clock=clock)

    async def holds_message(self, *, client: str, message_id: str) -> bool:
        """As :meth:`LogReader.holds_message`; on a SQLite file, one indexed point read on a
        connection of this log's own, in the calling thread (tens of microseconds: cheaper
        than a trip through the async engine's worker thread, which cost the consumer more
        CPU per exchange than signing)."""
        if self._lookup is None:
            return await super().holds_message(client=client, message_id=message_id)
        origin = self._origin
        rows = self._lookup.rows(message_id, origin)
        rows += [(origin, holder, seq) for holder, seq in self._writer.waiting(message_id)]
        return self._holds(rows, client)

    async def _fetch_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """As :meth:`LogReader._fetch_nodes`; on a SQLite file, read on this log's own
        connection in the calling thread (a proof's few indexed reads: the checkpointer's
        consistency proof each second took twelve trips through the async engine's worker
        threads, bench/README.md "Tenth round (perf-futex)")."""
        if self._lookup is None or not keys:
            return await super()._fetch_nodes(keys)
        return self._lookup.nodes(self._origin, keys)

    async def close(self) -> None:
        """Write every append already queued, then stop the writer. The engine stays open."""
        await self._writer.close()
        if self._lookup is not None:
            self._lookup.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- writing --------------------------------------------------------------------------------

    async def append(
        self,
        entries: Sequence[LogEntry],
        *,
        claim: MessageClaim | None = None,
        at_once: bool = False,
    ) -> list[AppendedRecord]:
        """Append ``entries`` as consecutive leaves; return them once they are durable.

        Concurrent calls are grouped into one transaction by the log's writer; with
        ``at_once``, while the log is quiet (:meth:`commit_inline_while`) and its writer idle,
        the append is committed in the caller's own step instead (docs/adr/0045). With ``claim``
        the append also records the claimed message id atomically: if the client used that id
        before (within its freshness window) nothing is appended and
        :class:`ReplayedMessageError` is raised. On any storage failure nothing of this call is
        acknowledged and :class:`LogWriteError` is raised (side-neutral: each proxy maps it to
        its own ``logging_failed``). Raises :class:`InvalidLogEntryError` for more than
        :data:`MAX_APPEND_ENTRIES` entries. Once called, the entries are queued: cancelling the
        caller does not withdraw them.
        """
        if len(entries) > MAX_APPEND_ENTRIES:
            raise InvalidLogEntryError(
                f"one append carries at most {MAX_APPEND_ENTRIES} entries, not {len(entries)}"
            )
        if not entries and claim is None:
            return []
        return await self._writer.submit(tuple(entries), claim, at_once=at_once)

    def commit_inline_while(self, quiet: Callable[[], bool] | None) -> None:
        """On a SQLite file, commit a lone append in the event loop's thread while ``quiet()``
        (its owner: one exchange in flight) instead of through the writer's worker thread; the
        same transaction, durable before the append returns either way (``None``: always the
        worker)."""
        self._writer.commit_inline_while(quiet)

    async def record_claim(self, claim: MessageClaim) -> None:
        """Record ``claim`` durably through the writer's next group (no extra transaction).

        Raises :class:`ReplayedMessageError` if the id is already claimed and unexpired, and
        :class:`LogWriteError` if it could not be stored.
        """
        await self._writer.submit((), claim)

    @property
    def recent_commit_seconds(self) -> float:
        """The median wall time of this log's recent durable commits (seconds; 0.0 before the
        first): how long a commit waits on this host's storage now."""
        return self._writer.recent_commit_seconds

    @property
    def stats(self) -> WriterStats:
        """Counters of the writer: transactions, failures, records, claims, largest group."""
        return self._writer.stats

    def head(self) -> TreeHead:
        """The writer's committed size and root, as one consistent pair (no I/O)."""
        return self._writer.head

    async def refresh(self) -> TreeHead:
        """The writer's head (a writer's log is always current)."""
        return self._writer.head

    # --- retention ------------------------------------------------------------------------------

    async def purge_bodies(self, older_than: datetime) -> int:
        """Remove the bodies of records logged before ``older_than``; return how many.

        The leaves, nodes and the headers' body digests stay, so every proof remains valid. Works
        in chunks of :data:`MAX_PURGE_CHUNK` (one short transaction each); safe to run beside
        appends and to interrupt (what is purged stays purged).
        """
        now = to_micros(self._clock())
        # The records logged before the cutoff are those below one sequence number.
        async with self._engine.connect() as conn:
            end = await first_seq_logged_at_or_after(
                conn, self._origin, self.head().size, to_micros(older_than)
            )
        total = 0
        while end > 0:
            chunk = (
                sa.select(log_bodies.c.seq)
                .where(
                    log_bodies.c.origin == self._origin,
                    log_bodies.c.seq < end,
                    log_bodies.c.purged_at.is_(None),
                )
                .order_by(log_bodies.c.seq)
                .limit(MAX_PURGE_CHUNK)
            )
            async with self._engine.connect() as raw:
                conn = await raw.execution_options(**{WRITE_TRANSACTION: True})
                async with conn.begin():
                    seqs = [int(s) for s in (await conn.execute(chunk)).scalars()]
                    if seqs:
                        await conn.execute(
                            sa.update(log_bodies)
                            .where(log_bodies.c.origin == self._origin, log_bodies.c.seq.in_(seqs))
                            .values(purged_body(now))
                        )
            total += len(seqs)
            if len(seqs) < MAX_PURGE_CHUNK:
                break
        await self.remove_purged_body_files()
        return total

    async def remove_purged_body_files(self) -> int:
        """Delete this origin's body segment files that no row names any more (every body in
        them purged, or none committed: a failed group's bytes); return how many. The newest
        segment stays (the writer may be filling it); of the others, the oldest
        :data:`_MAX_SEGMENTS_PER_ROUND` are looked at per call. Safe beside appends: a segment older
        than the newest is never written again, so a row naming it is committed already.
        Nothing to do where bodies stay in the table (PostgreSQL, in-memory SQLite)."""
        if self._segments is None:
            return 0
        segments = self._segments
        # The listing comes first: only segments older than the newest on disk *now* are
        # candidates, and every row naming one of them committed before the newest was begun.
        candidates = (await asyncio.to_thread(segments.segment_ids))[:-1][:_MAX_SEGMENTS_PER_ROUND]
        if not candidates:
            return 0
        async with self._engine.connect() as conn:
            named = {
                int(segment)
                for segment in (
                    await conn.execute(
                        sa.select(log_bodies.c.segment)
                        .where(
                            log_bodies.c.origin == self._origin,
                            log_bodies.c.segment.in_(candidates),
                        )
                        .distinct()
                    )
                ).scalars()
            }
        unnamed = [segment for segment in candidates if segment not in named]
        if not unnamed:
            return 0
        removed = await asyncio.to_thread(segments.remove, unnamed)
        _log.info("message log %s: %d body segment files removed", self._origin, removed)
        return removed

    # --- checkpoints (written by the checkpointer) -----------------------------------------------

    async def save_checkpoint(self, *, size: int, root: bytes, note: str) -> StoredCheckpoint:
        """Store a signed checkpoint (C2SP note text) of this log's tree at ``size``.

        Refuses a checkpoint the tree does not back: raises :class:`LogRangeError` for a size
        beyond the log and :class:`LogIntegrityError` if ``root`` is not the tree's root at
        ``size``. Storing the same size again keeps the first one and returns it.
        """
        if len(note) > MAX_CHECKPOINT_TEXT:
            raise InvalidLogEntryError(f"a checkpoint note is at most {MAX_CHECKPOINT_TEXT} chars")
        if await self.root(size) != root:
            raise LogIntegrityError(f"checkpoint root for size {size} is not the log's root")
        now = to_micros(self._clock())
        if self._writer.on_sqlite_file:
            # One trip to the log's SQLite thread (the async engine took twelve).
            return await self._writer.transaction_aside(
                _save_checkpoint_sqlite,
                {"o": self._origin, "s": size, "r": root, "n": note, "t": now},
            )
        async with self._engine.connect() as raw:
            conn = await raw.execution_options(**{WRITE_TRANSACTION: True})
            async with conn.begin():
                existing = await self._checkpoint_row(conn, size)
                if existing is not None:
                    return existing
                await conn.execute(
                    sa.insert(log_checkpoints).values(
                        origin=self._origin, size=size, root=root, note=note, created_at=now
                    )
                )
        return StoredCheckpoint(
            origin=self._origin,
            size=size,
            root=root,
            note=note,
            created_at=from_micros(now),
            cosignature=None,
            cosigned_at=None,
        )

    async def save_cosignature(self, size: int, cosignature: str, cosigned_at: datetime) -> None:
        """Attach the witness's cosignature (C2SP tlog-cosignature line) to the stored
        checkpoint of ``size``. Raises :class:`LogRangeError` if no checkpoint of that size is
        stored."""
        if len(cosignature) > MAX_CHECKPOINT_TEXT:
            raise InvalidLogEntryError(f"a cosignature is at most {MAX_CHECKPOINT_TEXT} chars")
        at = to_micros(cosigned_at)
        if self._writer.on_sqlite_file:
            # One trip to the log's SQLite thread (the async engine took eight).
            updated = await self._writer.transaction_aside(
                _save_cosignature_sqlite, self._origin, size, cosignature, at
            )
        else:
            async with self._engine.connect() as raw:
                conn = await raw.execution_options(**{WRITE_TRANSACTION: True})
                async with conn.begin():
                    result = await conn.execute(
                        sa.update(log_checkpoints)
                        .where(
                            log_checkpoints.c.origin == self._origin,
                            log_checkpoints.c.size == size,
                        )
                        .values(cosignature=cosignature, cosigned_at=at)
                    )
            updated = result.rowcount
        if updated != 1:
            raise LogRangeError(f"no checkpoint of size {size} is stored")

    # --- replay claims --------------------------------------------------------------------------

    async def prune_claims(self, now: datetime | None = None) -> int:
        """Delete replay claims that expired before ``now`` (default: the clock); return how many.

        Claims are shared by every node of the database: any node may prune.
        """
        cutoff = to_micros(now if now is not None else self._clock())
        async with self._engine.connect() as raw:
            conn = await raw.execution_options(**{WRITE_TRANSACTION: True})
            async with conn.begin():
                result = await conn.execute(
                    sa.delete(seen_messages).where(seen_messages.c.expires_at < cutoff)
                )
        return int(result.rowcount)


#: The body file reference that ends furthest into the newest segment committed rows name.
_LAST_BODY_REFERENCE: Final = (
    sa.select(log_bodies.c.segment, log_bodies.c.position, log_bodies.c.length)
    .where(log_bodies.c.origin == sa.bindparam("origin"), log_bodies.c.segment.is_not(None))
    .order_by(log_bodies.c.segment.desc(), log_bodies.c.position.desc())
    .limit(1)
)


async def _check_body_files(conn: AsyncConnection, origin: str, url: sa.URL) -> int:
    """The newest body segment committed rows of ``origin`` name (0 if none, or bodies stay in
    rows here), so the writer never begins a segment under a name rows already use. Logs a
    warning if that segment's file is missing or shorter than the rows say (a database restored
    without its body files): those records' bodies then read as damaged, named, never guessed.
    """
    segments = BodySegments.for_url(url, origin)
    if segments is None:
        return 0
    row = (await conn.execute(_LAST_BODY_REFERENCE, {"origin": origin})).one_or_none()
    if row is None:
        return 0
    segment, end = int(row.segment), int(row.position) + int(row.length)
    try:
        size = (await asyncio.to_thread(segments.path(segment).stat)).st_size
    except FileNotFoundError:
        size = -1
    if size < end:
        _log.warning(
            "message log %s: body segment %d, which committed records name, is %s; their "
            "bodies read as unreadable (restore the database's -bodies directory with it)",
            origin,
            segment,
            "missing" if size < 0 else "shorter than they say",
        )
    return segment


_CHECKPOINT_COLUMNS: Final = (
    log_checkpoints.c.origin,
    log_checkpoints.c.size,
    log_checkpoints.c.root,
    log_checkpoints.c.note,
    log_checkpoints.c.created_at,
    log_checkpoints.c.cosignature,
    log_checkpoints.c.cosigned_at,
)
#: The checkpointer's statements on the log's SQLite thread (compiled once there).
_CHECKPOINT_AT: Final = sa.select(*_CHECKPOINT_COLUMNS).where(
    log_checkpoints.c.origin == sa.bindparam("o"), log_checkpoints.c.size == sa.bindparam("s")
)
_INSERT_CHECKPOINT: Final = sa.insert(log_checkpoints).values(
    origin=sa.bindparam("o"),
    size=sa.bindparam("s"),
    root=sa.bindparam("r"),
    note=sa.bindparam("n"),
    created_at=sa.bindparam("t"),
)
_COSIGN_CHECKPOINT: Final = (
    sa.update(log_checkpoints)
    .where(
        log_checkpoints.c.origin == sa.bindparam("o"), log_checkpoints.c.size == sa.bindparam("s")
    )
    .values(cosignature=sa.bindparam("c"), cosigned_at=sa.bindparam("t"))
    .returning(log_checkpoints.c.size)
)


def _save_checkpoint_sqlite(conn: Any, params: dict[str, Any]) -> StoredCheckpoint:
    """:meth:`MessageLog.save_checkpoint`'s transaction on the log's SQLite thread (``params``:
    :data:`_INSERT_CHECKPOINT`'s): the stored checkpoint of that size if there is one, else the
    new one inserted."""
    rows = conn.execute(_CHECKPOINT_AT, {"o": params["o"], "s": params["s"]})
    if rows:
        return _checkpoint_of(rows[0])
    conn.execute(_INSERT_CHECKPOINT, params)
    return _checkpoint_of(
        (params["o"], params["s"], params["r"], params["n"], params["t"], None, None)
    )


def _save_cosignature_sqlite(conn: Any, origin: str, size: int, cosignature: str, at: int) -> int:
    """:meth:`MessageLog.save_cosignature`'s transaction on the log's SQLite thread: how many
    checkpoints took the cosignature (0 or 1)."""
    return len(
        conn.execute(_COSIGN_CHECKPOINT, {"o": origin, "s": size, "c": cosignature, "t": at})
    )


def _checkpoint_of(values: Sequence[Any]) -> StoredCheckpoint:
    """A checkpoint from a row of :data:`_CHECKPOINT_COLUMNS` (a tuple)."""
    origin, size, root, note, created_at, cosignature, cosigned_at = values
    return StoredCheckpoint(
        origin=str(origin),
        size=int(size),
        root=bytes(root),
        note=str(note),
        created_at=from_micros(int(created_at)),
        cosignature=None if cosignature is None else str(cosignature),
        cosigned_at=None if cosigned_at is None else from_micros(int(cosigned_at)),
    )


def _stored_checkpoint(row: sa.Row[Any]) -> StoredCheckpoint:
    return StoredCheckpoint(
        origin=str(row.origin),
        size=int(row.size),
        root=bytes(row.root),
        note=str(row.note),
        created_at=from_micros(int(row.created_at)),
        cosignature=None if row.cosignature is None else str(row.cosignature),
        cosigned_at=None if row.cosigned_at is None else from_micros(int(row.cosigned_at)),
    )


def _stored_record(row: sa.Row[Any]) -> StoredRecord:
    return StoredRecord(
        origin=str(row.origin),
        seq=int(row.seq),
        direction=Direction(int(row.direction)),
        logged_at=from_micros(int(row.logged_at)),
        message_id=str(row.message_id),
        kind=RecordKind(str(row.kind)),
        client=str(row.client),
        service=str(row.service),
        method=str(row.method),
        subject=None if row.subject is None else str(row.subject),
        created_at=from_micros(int(row.created_at)),
        record=bytes(row.record),
        leaf_hash=bytes(row.leaf_hash),
        body_state=BodyState(str(row.body_state)),
    )


class _SqliteLookup:
    """A read-only ``sqlite3`` connection to a log's SQLite file for the message-id lookup,
    used from the event loop's thread only. In WAL mode a reader never waits for the writer;
    a wait on the database's own recovery is bounded by :data:`_LOOKUP_BUSY_MS`."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._connection: Any = engine.raw_connection()
        self._connection.execute("PRAGMA query_only = ON")
        self._connection.execute(f"PRAGMA busy_timeout = {_LOOKUP_BUSY_MS}")
        self._closed = False

    @classmethod
    def for_url(cls, url: sa.URL) -> _SqliteLookup | None:
        """A lookup for a SQLite file database; ``None`` for anything else."""
        engine = sqlite_sync_engine(url)
        return cls(engine) if engine is not None else None

    def rows(self, message_id: str, own: str) -> list[tuple[str, str, int]]:
        """(origin, client, seq) of every record carrying ``message_id``, except the records
        of origin ``own`` not yet in the audit indexes (its writer knows those). Raises
        :class:`LogError` if the file cannot be read or the log is closed."""
        if self._closed:
            raise LogError("the message log is closed")
        try:
            rows: list[tuple[str, str, int]] = self._connection.execute(
                _MESSAGE_ID_LOOKUP_OTHERS_SQL, {"message_id": message_id, "own": own}
            ).fetchall()
        except sqlite3.Error as exc:
            raise LogError(f"the message log cannot be read: {type(exc).__name__}") from None
        return rows

    def nodes(self, origin: str, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """The stored tree nodes of ``origin`` with these keys (:func:`fetch_nodes_sqlite`).
        Raises :class:`LogError` if the file cannot be read or the log is closed."""
        if self._closed:
            raise LogError("the message log is closed")
        try:
            return fetch_nodes_sqlite(self._connection.driver_connection, origin, keys)
        except sqlite3.Error as exc:
            raise LogError(f"the message log cannot be read: {type(exc).__name__}") from None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if not self._closed:
            self._closed = True
            self._connection.close()
            self._engine.dispose()
