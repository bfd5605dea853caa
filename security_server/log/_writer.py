"""The log's single writer: group commit of appends and replay claims, one transaction per group.

Callers enqueue a job and await its future. One task drains the queue (up to a bound), writes
every claim, leaf, new tree node and body of the group in one transaction, commits, and only then
resolves the futures, so an acknowledged append is durable. While one group commits, the next
one gathers, so the number of transactions falls as concurrency rises.

If a group's transaction fails, every caller in it gets :class:`LogWriteError` (side-neutral:
the calling proxy names its fault), the in-memory tree is discarded and restored from the
database before the next group, so the tree never runs ahead of what is stored.

On a SQLite file the whole group transaction runs in one trip to a worker thread of its own
(a synchronous ``sqlite3`` connection with the same settings): one thread hop per group instead of
one per statement, which under load is what bounded a security server's throughput (bench/README).
While the server is quiet (its owner says so: :meth:`GroupCommitWriter.commit_inline_while`, one
exchange in flight) a group of one append runs in the event loop's own thread instead, on a
connection of its own that never waits for a lock (a busy database goes to the worker): the loop
has nothing else to do meanwhile, and the two thread crossings and the worker's wake-up cost more
than they save (docs/adr/0042). The transaction, its ``COMMIT`` and its durability are the same
either way.
Other databases run the same statements on the async engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ruta.evidence.attachments import Attachment, AttachmentError, detach_signature
from ruta.merkle import CompactRange, leaf_hash
from ruta.v1 import log_pb2
from ruta.wire import varint
from security_server.database import WRITE_TRANSACTION, sqlite_sync_engine
from security_server.log.bodies import (
    FILE_BODY_MIN_BYTES,
    FILE_GROUP_MIN_BODIES,
    FILE_GROUP_MIN_BYTES,
    BodyCipher,
    BodySegments,
    BodySegmentWriter,
)
from security_server.log.errors import (
    LogError,
    LogIntegrityError,
    LogWriteError,
    ReplayedMessageError,
)
from security_server.log.model import (
    AppendedRecord,
    Direction,
    InvalidLogEntryError,
    LogEntry,
    MessageClaim,
    RecordKind,
    TreeHead,
    WriterStats,
    from_micros,
    to_micros,
)
from security_server.log.schema import (
    MAX_PENDING_RECORDS,
    log_attachments,
    log_bodies,
    log_heads,
    log_leaves,
    log_nodes,
    node_idx,
    node_last_seq,
    seen_messages,
)

__all__ = [
    "COMMIT_TIMES_KEPT",
    "DEFAULT_MAX_GROUP_RECORDS",
    "CommitTimes",
    "GroupCommitWriter",
    "Waiting",
    "fetch_many_nodes",
    "fetch_nodes",
    "fetch_nodes_sqlite",
    "restore_frontier",
    "restore_waiting",
]

#: Most records (leaves plus claims) written in one group transaction; a single larger append
#: still goes through, alone.
DEFAULT_MAX_GROUP_RECORDS: Final = 512
#: Durable commits whose wall time :class:`CommitTimes` keeps (their median is the measure).
COMMIT_TIMES_KEPT: Final = 15
#: Compiled statements the SQLite worker keeps (the writer builds a handful, once).
_MAX_COMPILED_STATEMENTS: Final = 128
#: Claim upserts kept built, one per number of claims in a group.
_MAX_CACHED_CLAIM_UPSERTS: Final = 64
#: Attachment digests the writer remembers as stored (beyond it, it forgets them all and
#: re-offers each once more: the insert ignores what is there).
_MAX_KNOWN_ATTACHMENTS: Final = 4096
#: On a SQLite file the log's write-ahead log is copied back into the database (checkpointed) by
#: a thread of its own once the log's commits have written about this many pages to it since the
#: last checkpoint: SQLite's own default for the automatic checkpoint it would otherwise run
#: inside a commit (docs/adr/0054).
_CHECKPOINT_PAGES: Final = 1000
#: The writer's own connections still checkpoint inside a commit, as SQLite does by default,
#: once the write-ahead log holds this many pages: the log's bound whatever the thread does. Under
#: a steady load the thread's passes trail the commits and the log rarely starts over from its
#: passes alone; this checkpoint then copies only what the thread's last pass left, and the log
#: starts over at the next commit (bench/README.md, "Twelfth round").
_WRITER_AUTOCHECKPOINT_PAGES: Final = 2 * _CHECKPOINT_PAGES
#: The estimate of a commit's pages: this many (page 1, the head, the end of each B-tree it
#: touches) plus one for every three rows it changed (a record's leaf, body and node share
#: pages with their neighbours'). Only when to checkpoint depends on it.
_PAGES_PER_COMMIT: Final = 8
_ROWS_PER_PAGE: Final = 3
#: ... plus one for every this many bytes of bodies kept in their rows (a group of a few large
#: bodies keeps them there: FILE_GROUP_MIN_BODIES), which the row count alone misses.
_PAGE_BYTES: Final = 4096
#: Most node keys one query names (a proof needs at most about 2 * 64; bounds the SQL text).
_MAX_KEYS_PER_QUERY: Final = 256
#: A group of at most this many records, on a SQLite file, is written pending (not yet in the
#: audit indexes, ADR 0053) while the origin's pending records stay within
#: MAX_PENDING_RECORDS. A larger group already shares each index page among its own records.
_PENDING_GROUP_RECORDS: Final = 8
#: Puts an origin's pending records in the audit indexes (``log_leaves.pending``).
_INDEX_PENDING: Final = sa.text(
    "UPDATE log_leaves SET pending = NULL"
    " WHERE origin = :origin AND seq >= :first AND seq < :end AND pending IS NOT NULL"
)

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def _null(value: None) -> None:
    return value


# CPython's sqlite3 binds int, float, str and bytearray parameters as they are, but first sends
# every bytes and None parameter through its adaptation protocol (PEP 246), which looks for two
# attributes that are not there and formats an AttributeError for each: about 2,500
# instructions per parameter, 5% of an append's (bench/README.md, fifth round). An adapter
# registered for the exact type is found at the protocol's first step (a dictionary lookup)
# and returns the value itself, so what is bound is unchanged, for every sqlite3 connection of
# the process (the writer's, the lookup's and aiosqlite's).
sqlite3.register_adapter(bytes, bytes.__bytes__)
sqlite3.register_adapter(type(None), _null)


class CommitTimes:
    """The wall time of the log's last :data:`COMMIT_TIMES_KEPT` durable commits, each a group's
    whole transaction: from ``BEGIN`` (a wait for the write lock included) through its
    statements to ``COMMIT`` returned (where SQLite writes the group's pages to its WAL and, with
    ``synchronous=FULL``, waits for their ``fsync``); on another database the same span on its
    connection. What a response committed before it is sent waits for. :attr:`median` is what a
    provider weighs before sending a response ahead of its commit (docs/adr/0038, amended by
    0048): the median, so a WAL checkpoint or a scheduling stall now and then does not move it.
    Noted by whichever thread runs the group (one group at a time); read in the event loop's
    thread (a list copied whole under the GIL: no torn read). A transaction that fails is not
    noted."""

    __slots__ = ("_next", "_recent")

    def __init__(self) -> None:
        self._recent: list[float] = []
        self._next = 0

    def note(self, seconds: float) -> None:
        """Remember one commit's wall time (seconds), forgetting the oldest beyond the bound."""
        if len(self._recent) < COMMIT_TIMES_KEPT:
            self._recent.append(seconds)
        else:
            self._recent[self._next] = seconds
            self._next = (self._next + 1) % COMMIT_TIMES_KEPT

    @property
    def median(self) -> float:
        """The median of the remembered commit times (seconds); 0.0 before the first."""
        recent = sorted(self._recent)
        return recent[len(recent) // 2] if recent else 0.0


@dataclass(slots=True, eq=False)
class _Job:
    entries: Sequence[LogEntry]
    claim: MessageClaim | None
    future: asyncio.Future[list[AppendedRecord]]
    #: Each entry's serialised ``LoggedSignature`` (as its leaf keeps it) and the attachments
    #: that names.
    signatures: Sequence[tuple[bytes, tuple[Attachment, ...]]]
    weight: int = field(init=False)

    def __post_init__(self) -> None:
        self.weight = len(self.entries) + (1 if self.claim is not None else 0)


#: What a group's statements leave (:meth:`GroupCommitWriter._write_group`): the new frontier,
#: each job's outcome, the records and claims written, the attachment digests offered, the
#: leaves in the audit indexes once it commits, and the group's own pending leaves (message id,
#: client, seq).
_Written = tuple[
    CompactRange,
    list[list[AppendedRecord] | LogError],
    int,
    int,
    list[bytes],
    int,
    list[tuple[str, str, int]],
]


def _insert_for(dialect: str) -> Callable[[sa.Table], Any]:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


@functools.lru_cache(maxsize=256)
def _nodes_query(count: int) -> sa.TextClause:
    # One exact primary-key match per key (not a row-value IN, for which SQLite plans a scan),
    # with the origin in every term so SQLite plans one index probe per term. Cached per key
    # count: a proof's query is text built once, not an expression tree rebuilt per call.
    terms = " OR ".join(
        f"(origin = :o AND last_seq = :s{i} AND level = :l{i})" for i in range(count)
    )
    return sa.text(f"SELECT level, last_seq, hash FROM log_nodes WHERE {terms}")  # noqa: S608


#: Leaf hashes (level 0 of the tree) read in one query at most.
_MAX_LEAVES_PER_QUERY: Final = 500


async def _fetch_leaf_hashes(
    conn: AsyncConnection, origin: str, seqs: Sequence[int]
) -> dict[tuple[int, int], bytes]:
    """Level 0 of the tree: the leaf hashes kept beside each record in ``log_leaves``."""
    result: dict[tuple[int, int], bytes] = {}
    wanted = sorted(set(seqs))
    for start in range(0, len(wanted), _MAX_LEAVES_PER_QUERY):
        chunk = wanted[start : start + _MAX_LEAVES_PER_QUERY]
        rows = await conn.execute(
            sa.select(log_leaves.c.seq, log_leaves.c.leaf_hash).where(
                log_leaves.c.origin == origin, log_leaves.c.seq.in_(chunk)
            )
        )
        result.update({(0, int(r.seq)): bytes(r.leaf_hash) for r in rows})
    return result


async def fetch_nodes(
    conn: AsyncConnection, origin: str, keys: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored hashes of ``origin``'s nodes with these ``(level, index)`` keys, in one query
    per level kind (absent keys are simply missing from the result). Level 0 is each record's
    leaf hash in ``log_leaves``; higher levels are ``log_nodes`` rows."""
    result: dict[tuple[int, int], bytes] = {}
    leaves = [idx for level, idx in keys if level == 0]
    inner = [key for key in keys if key[0] > 0]
    if leaves:
        result.update(await _fetch_leaf_hashes(conn, origin, leaves))
    for start in range(0, len(inner), _MAX_KEYS_PER_QUERY):
        chunk = inner[start : start + _MAX_KEYS_PER_QUERY]
        rows = await conn.execute(_nodes_query(len(chunk)), _nodes_params(origin, chunk))
        result.update(_node_hashes(rows))
    return result


def fetch_nodes_sqlite(
    dbapi: sqlite3.Connection, origin: str, keys: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """:func:`fetch_nodes` on a synchronous ``sqlite3`` connection, in the calling thread: the
    same queries (the leaf hashes by primary key, the nodes by :func:`_nodes_query`)."""
    result: dict[tuple[int, int], bytes] = {}
    wanted = sorted({idx for level, idx in keys if level == 0})
    inner = [key for key in keys if key[0] > 0]
    for start in range(0, len(wanted), _MAX_LEAVES_PER_QUERY):
        seqs = wanted[start : start + _MAX_LEAVES_PER_QUERY]
        marks = ", ".join("?" * len(seqs))
        sql = f"SELECT seq, leaf_hash FROM log_leaves WHERE origin = ? AND seq IN ({marks})"  # noqa: S608
        rows = dbapi.execute(sql, (origin, *seqs)).fetchall()
        result.update({(0, int(seq)): bytes(leaf_hash) for seq, leaf_hash in rows})
    for start in range(0, len(inner), _MAX_KEYS_PER_QUERY):
        chunk = inner[start : start + _MAX_KEYS_PER_QUERY]
        params = _nodes_params(origin, chunk)
        result.update(_node_hashes(dbapi.execute(_nodes_query(len(chunk)).text, params)))
    return result


def _nodes_params(origin: str, chunk: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """:func:`_nodes_query`'s parameters for these ``(level, index)`` keys of ``origin``."""
    params: dict[str, Any] = {"o": origin}
    for i, (level, idx) in enumerate(chunk):
        params[f"l{i}"] = level
        params[f"s{i}"] = node_last_seq(level, idx)
    return params


def _node_hashes(rows: Any) -> dict[tuple[int, int], bytes]:
    """``(level, idx)`` -> hash of ``log_nodes`` rows ``(level, last_seq, hash)``."""
    return {(int(r[0]), node_idx(int(r[0]), int(r[1]))): bytes(r[2]) for r in rows}


#: Node indexes of one level at most this far apart are read in one range (the few between
#: come along unasked: cheaper than another query).
_RANGE_GAP: Final = 32
#: Ranges of at least this many indexes are read as ranges; shorter ones by key.
_MIN_RANGE: Final = 8
#: A range of one level above the leaves reads every node whose last leaf is in it, of every
#: level (``log_nodes`` is keyed by last leaf, then level: about one row per leaf); it is read
#: as a range only while those rows are at most this many times the nodes wanted, by key
#: otherwise.
_RANGE_ROWS_PER_WANTED: Final = 8

_NODE_RANGE: Final = sa.text(
    "SELECT level, last_seq, hash FROM log_nodes "
    "WHERE origin = :o AND last_seq >= :a AND last_seq <= :b AND level = :l"
)
_LEAF_RANGE: Final = sa.text(
    "SELECT 0 AS level, seq AS idx, leaf_hash AS hash FROM log_leaves "
    "WHERE origin = :o AND seq >= :a AND seq <= :b"
)


async def fetch_many_nodes(
    conn: AsyncConnection, origin: str, keys: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """As :func:`fetch_nodes`, for the thousands of keys of many proofs at once (an export):
    runs of nearby indexes on one level are read as one index range each, the scattered rest
    by key, so the number of queries follows the shape of the keys, not their count."""
    by_level: dict[int, list[int]] = {}
    for level, idx in set(keys):
        by_level.setdefault(level, []).append(idx)
    result: dict[tuple[int, int], bytes] = {}
    scattered: list[tuple[int, int]] = []
    for level, indexes in by_level.items():
        indexes.sort()
        first = 0
        for last in range(len(indexes)):
            if last + 1 < len(indexes) and indexes[last + 1] - indexes[last] <= _RANGE_GAP:
                continue
            wanted = last - first + 1
            span = indexes[last] - indexes[first] + 1
            if wanted >= _MIN_RANGE and (
                level == 0 or (span << level) <= _RANGE_ROWS_PER_WANTED * wanted
            ):
                a, b = indexes[first], indexes[last]
                if level == 0:
                    rows = await conn.execute(_LEAF_RANGE, {"o": origin, "a": a, "b": b})
                    result.update({(0, int(r.idx)): bytes(r.hash) for r in rows})
                else:
                    # Every node of the level between a and b ends on a leaf in this range.
                    params = {
                        "o": origin,
                        "l": level,
                        "a": node_last_seq(level, a),
                        "b": node_last_seq(level, b),
                    }
                    result.update(_node_hashes(await conn.execute(_NODE_RANGE, params)))
            else:
                scattered.extend((level, i) for i in indexes[first : last + 1])
            first = last + 1
    if scattered:
        result.update(await fetch_nodes(conn, origin, scattered))
    return result


#: An origin's committed records not yet in the audit indexes (ADR 0053), by message id: each
#: one's client and seq (at most MAX_PENDING_RECORDS in all).
Waiting = dict[str, list[tuple[str, int]]]


async def restore_waiting(conn: AsyncConnection, origin: str, size: int) -> tuple[int, Waiting]:
    """How many of ``origin``'s ``size`` leaves are in the audit indexes (``log_heads``), and
    the rest, pending (ADR 0053), by message id. More than MAX_PENDING_RECORDS pending (a head
    row written by another tool, or by a version with a larger bound) are put in the indexes
    first, in a write transaction of their own on ``conn``. Raises :class:`LogIntegrityError`
    unless the count is within 0..size."""
    stored = (
        await conn.execute(sa.select(log_heads.c.indexed_size).where(log_heads.c.origin == origin))
    ).scalar_one_or_none()
    indexed = size if stored is None else int(stored)
    if not 0 <= indexed <= size:
        raise LogIntegrityError(
            f"log {origin!r} records {indexed} indexed leaves of a tree of size {size}"
        )
    if size - indexed > MAX_PENDING_RECORDS:
        await conn.rollback()  # end the read transaction the queries above began
        writing = await conn.execution_options(**{WRITE_TRANSACTION: True})
        async with writing.begin():
            await writing.execute(_INDEX_PENDING, {"origin": origin, "first": indexed, "end": size})
            await writing.execute(
                sa.update(log_heads).where(log_heads.c.origin == origin).values(indexed_size=None)
            )
        return size, {}
    waiting: Waiting = {}
    if indexed < size:
        rows = await conn.execute(
            sa.select(log_leaves.c.message_id, log_leaves.c.client, log_leaves.c.seq).where(
                log_leaves.c.origin == origin, log_leaves.c.seq >= indexed
            )
        )
        for message_id, client, seq in rows:
            waiting.setdefault(str(message_id), []).append((str(client), int(seq)))
    return indexed, waiting


async def restore_frontier(conn: AsyncConnection, origin: str) -> tuple[CompactRange, int]:
    """Rebuild ``origin``'s frontier from stored nodes and check it against the stored head.

    Returns the frontier and the ``logged_at`` (microseconds) of the last leaf, 0 if none.
    Reads O(log n) rows. Raises :class:`LogIntegrityError` if the head, the last leaf and the
    frontier nodes do not agree (missing or extra leaves, a missing node, a different root).
    """
    head = (
        await conn.execute(
            sa.select(log_heads.c.size, log_heads.c.root).where(log_heads.c.origin == origin)
        )
    ).one_or_none()
    last = (
        await conn.execute(
            sa.select(
                log_leaves.c.seq,
                log_leaves.c.record,
                log_leaves.c.leaf_hash,
                log_leaves.c.logged_at,
            )
            .where(log_leaves.c.origin == origin)
            .order_by(log_leaves.c.seq.desc())
            .limit(1)
        )
    ).one_or_none()
    if head is None:
        if last is not None:
            raise LogIntegrityError(f"log {origin!r} has leaves but no recorded tree head")
        return CompactRange(), 0
    size, root = int(head.size), bytes(head.root)
    stored_size = 0 if last is None else int(last.seq) + 1
    if stored_size != size:
        raise LogIntegrityError(
            f"log {origin!r} records tree size {size} but its last leaf is number {stored_size - 1}"
        )
    if last is None:
        return CompactRange(), 0
    keys = CompactRange.frontier_keys(size)
    wanted = (*keys, (0, size - 1))
    nodes = await fetch_nodes(conn, origin, wanted)
    missing = [k for k in wanted if k not in nodes]
    if missing:
        raise LogIntegrityError(f"log {origin!r} lacks tree nodes {missing} of size {size}")
    recomputed = leaf_hash(bytes(last.record))
    if recomputed != bytes(last.leaf_hash) or recomputed != nodes[(0, size - 1)]:
        raise LogIntegrityError(f"log {origin!r}: the last leaf's hash does not match its record")
    frontier = CompactRange(size=size, hashes=[nodes[k] for k in keys])
    if frontier.root() != root:
        raise LogIntegrityError(f"log {origin!r}: the stored tree does not lead to its stored root")
    return frontier, int(last.logged_at)


class GroupCommitWriter:
    """The one writer of one origin's tree. Not for direct use: :class:`MessageLog` owns it."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        origin: str,
        cipher: BodyCipher,
        clock: Callable[[], datetime],
        frontier: CompactRange,
        last_logged_us: int,
        max_group_records: int,
        last_body_segment: int = 0,
        body_files_from: int = FILE_GROUP_MIN_BODIES,
        indexed_size: int | None = None,
        waiting: Waiting | None = None,
    ) -> None:
        self._engine = engine
        self._origin = origin
        self._cipher = cipher
        self._clock = clock
        self._frontier = frontier
        self._max_group = max_group_records
        self._insert = _insert_for(engine.dialect.name)
        self._pending: collections.deque[_Job] = collections.deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._needs_restore = False
        # logged_at never decreases along the tree, even if the wall clock steps back.
        self._last_logged_us = last_logged_us
        self._transactions = 0
        self._failed = 0
        self._records = 0
        self._claims = 0
        self._largest_group = 0
        self._task: asyncio.Task[None] | None = None
        self._commit_times = CommitTimes()
        # Leaves below it are in the audit indexes, the rest pending (committed state; only a
        # SQLite file's small groups are ever written pending, ADR 0053).
        self._indexed = frontier.size if indexed_size is None else indexed_size
        # Those pending leaves by message id (for MessageLog.holds_message: its SQL reads every
        # other origin's from the tables).
        self._waiting: Waiting = waiting or {}
        # Large bodies go to segment files on a SQLite file (written by whichever thread runs the
        # group: the worker's, or the loop's while quiet; one group at a time).
        segments = BodySegments.for_url(engine.url, origin)
        self._body_files = (
            None
            if segments is None
            else BodySegmentWriter(segments, after_segment=last_body_segment)
        )
        self._body_files_from = body_files_from
        # When true, a lone job's group on SQLite runs in the loop's thread (commit_inline_while).
        self._quiet: Callable[[], bool] | None = None
        # True while the writer's task has a group in hand (a job committed in its caller's
        # step may not run then: one group at a time, in the tree's order).
        self._in_group = False
        self._claim_upserts: dict[int, Any] = {}
        # Digests of attachments committed to log_attachments (only after their commit).
        self._known_attachments: set[bytes] = set()
        # Built once: constructing the upsert per group cost more than executing it.
        head = self._insert(log_heads).values(
            {c: sa.bindparam(c) for c in ("origin", "size", "root", "updated_at", "indexed_size")}
        )
        self._head_upsert = head.on_conflict_do_update(
            index_elements=[log_heads.c.origin],
            set_={
                "size": head.excluded.size,
                "root": head.excluded.root,
                "updated_at": head.excluded.updated_at,
                "indexed_size": head.excluded.indexed_size,
            },
        )
        # Last: its threads start here, and nothing after them may fail and leave them running
        # with no writer to close them. None unless a SQLite file (as ``segments``).
        self._sqlite = _SqliteWorker.for_url(engine.url, self._commit_times)

    def commit_inline_while(self, quiet: Callable[[], bool] | None) -> None:
        """On a SQLite file, write a group of one job in the event loop's thread whenever
        ``quiet()`` says nothing else is going on (one exchange in flight), instead of handing it
        to the worker thread and back; ``None``: always the worker. Same transaction, same
        ``COMMIT``: only the thread that runs it changes."""
        self._quiet = quiet

    # --- state readers (committed state only) -------------------------------------------------

    @property
    def head(self) -> TreeHead:
        """The committed size and root."""
        return TreeHead(origin=self._origin, size=self._frontier.size, root=self._frontier.root())

    def waiting(self, message_id: str) -> list[tuple[str, int]]:
        """The committed leaves of this origin not yet in the audit indexes that carry
        ``message_id``: each one's client and seq (ADR 0053)."""
        return self._waiting.get(message_id, [])

    @property
    def recent_commit_seconds(self) -> float:
        """The median wall time of the recent durable commits (:class:`CommitTimes`)."""
        return self._commit_times.median

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            transactions=self._transactions,
            failed_transactions=self._failed,
            records=self._records,
            claims=self._claims,
            largest_group=self._largest_group,
        )

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task on the running loop."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"ruta-log-writer:{self._origin}"
        )

    async def close(self) -> None:
        """Write what is queued, then stop. Later submissions fail with :class:`LogWriteError`."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        worker, self._sqlite = self._sqlite, None
        if worker is not None:
            await worker.close()
        if self._body_files is not None:
            self._body_files.close()  # the groups that use it (worker or inline) are done

    # --- submission -----------------------------------------------------------------------------

    def submit(
        self, entries: Sequence[LogEntry], claim: MessageClaim | None, *, at_once: bool = False
    ) -> asyncio.Future[list[AppendedRecord]]:
        """Queue a job; its future resolves once the job's group has committed (or failed).

        With ``at_once``, while the server is quiet (:meth:`commit_inline_while`), nothing is
        queued and no group is being written, the job is written and committed right here, in
        the caller's own step, and the future returned is already resolved: no trip through the
        writer's task and back (docs/adr/0045). Same transaction, same ``COMMIT``; a busy
        database (or anything else) queues it as usual.

        Raises :class:`InvalidLogEntryError` (nothing queued) if an entry's signature is not a
        readable ``Signature``: only this caller is refused, never its group."""
        if self._closing or self._task is None or self._task.done():
            raise LogWriteError("the message log is closed; nothing was logged")
        try:
            signatures = [detach_signature(entry.signature) for entry in entries]
        except AttachmentError as exc:
            raise InvalidLogEntryError(f"the signature to log: {exc.message}") from None
        future: asyncio.Future[list[AppendedRecord]] = asyncio.get_running_loop().create_future()
        job = _Job(entries=entries, claim=claim, future=future, signatures=signatures)
        if at_once and self._commits_here() and self._commit_here(job):
            return future
        self._pending.append(job)
        self._wakeup.set()
        return future

    @property
    def on_sqlite_file(self) -> bool:
        """Whether the log is a SQLite file with its worker thread running (until :meth:`close`):
        :meth:`transaction_aside` may be used."""
        return self._sqlite is not None

    async def transaction_aside(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(connection, *args)`` (a synchronous ``sqlite3`` connection adapter: compiled
        statements, rows as tuples) in one write transaction of its own in the log's SQLite
        worker thread, between the writer's groups: one thread trip and one ``COMMIT``
        (``synchronous=FULL``) where the async engine takes a trip per statement, cursor and
        pooled connection. For the checkpointer's writes; their commits are not noted among
        the appends' commit times. Raises :class:`LogWriteError` unless :attr:`on_sqlite_file`."""
        worker = self._sqlite
        if worker is None:
            raise LogWriteError("the message log is closed or not a SQLite file")
        return await worker.transaction(fn, *args, timed=False)

    def _commits_here(self) -> bool:
        """Whether a job may be committed in the caller's step: a SQLite file, the server quiet,
        nothing queued, no group in the writer's hands, the tree current."""
        return (
            self._sqlite is not None
            and self._quiet is not None
            and not self._pending
            and not self._in_group
            and not self._needs_restore
            and self._quiet()
        )

    def _commit_here(self, job: _Job) -> bool:
        """Write ``job`` as a group of one in the calling (loop's) thread and settle its future;
        false (nothing written) when another connection holds the write lock."""
        worker = self._sqlite
        if worker is None:
            return False
        group = [job]
        now_us = max(to_micros(self._clock()), self._last_logged_us)
        try:
            written = worker.run_here(self._write_group, group, now_us)
        except Exception as exc:  # noqa: BLE001 - as the writer's task: the caller is refused
            self._group_failed(group, exc)
            return True
        if written is None:
            return False
        self._group_written(group, *self._installed(written, now_us))
        return True

    # --- the writer task ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                group = [self._pending.popleft()]
                weight = group[0].weight
                while self._pending and weight + self._pending[0].weight <= self._max_group:
                    job = self._pending.popleft()
                    group.append(job)
                    weight += job.weight
                self._in_group = True
                try:
                    await self._commit_group(group)
                finally:
                    self._in_group = False
        finally:
            # Cancelled or stopped: nobody may wait forever on a job that will never be written.
            while self._pending:
                job = self._pending.popleft()
                _fail(
                    job,
                    LogWriteError("the message log stopped; nothing was logged"),
                )

    async def _commit_group(self, group: list[_Job]) -> None:
        try:
            if self._needs_restore:
                async with self._engine.connect() as conn:
                    self._frontier, self._last_logged_us = await restore_frontier(
                        conn, self._origin
                    )
                    self._indexed, self._waiting = await restore_waiting(
                        conn, self._origin, self._frontier.size
                    )
                self._needs_restore = False
            frontier, results = await self._write(group)
        except asyncio.CancelledError:
            self._needs_restore = True
            for job in group:
                _fail(
                    job,
                    LogWriteError("the message log stopped; nothing was logged"),
                )
            raise
        except Exception as exc:  # noqa: BLE001 - every cause must reach every waiting caller
            self._group_failed(group, exc)
            return
        self._group_written(group, frontier, results)

    def _group_failed(self, group: list[_Job], exc: Exception) -> None:
        """A group's transaction failed: every caller in it is refused, the tree is restored
        from the database before the next group."""
        self._needs_restore = True
        self._failed += 1
        _log.error(
            "message log write failed (%s); %d waiting callers refused",
            type(exc).__name__,
            len(group),
            exc_info=not isinstance(exc, LogError),
        )
        for job in group:
            _fail(
                job,
                LogWriteError(
                    "the message log could not store the message durably; nothing was "
                    "acknowledged, retry later"
                ),
            )

    def _group_written(
        self,
        group: list[_Job],
        frontier: CompactRange,
        results: list[list[AppendedRecord] | LogError],
    ) -> None:
        """A group committed: install its frontier and settle each caller's future."""
        self._frontier = frontier
        self._transactions += 1
        self._largest_group = max(self._largest_group, len(group))
        for job, outcome in zip(group, results, strict=True):
            if job.future.done():  # the caller gave up (deadline); its records stay logged
                continue
            if isinstance(outcome, LogError):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

    async def _write(
        self, group: list[_Job]
    ) -> tuple[CompactRange, list[list[AppendedRecord] | LogError]]:
        """Write one group in one transaction; return the new frontier and each job's outcome.

        The in-memory frontier is untouched: the caller installs the returned one after commit.
        """
        now_us = max(to_micros(self._clock()), self._last_logged_us)
        if self._sqlite is not None:
            written = None
            if len(group) == 1 and not self._pending and self._quiet is not None and self._quiet():
                # Quiet: no thread crossings (None when the database is busy: the worker waits).
                written = self._sqlite.run_here(self._write_group, group, now_us)
            if written is None:
                written = await self._sqlite.transaction(self._write_group, group, now_us)
        else:
            async with self._engine.connect() as raw:
                conn = await raw.execution_options(**{WRITE_TRANSACTION: True})
                began = time.perf_counter()
                async with conn.begin():
                    written = await conn.run_sync(self._write_group, group, now_us)
                self._commit_times.note(time.perf_counter() - began)
        return self._installed(written, now_us)

    def _installed(
        self,
        written: _Written,
        now_us: int,
    ) -> tuple[CompactRange, list[list[AppendedRecord] | LogError]]:
        """What a committed group leaves in the writer's state besides its frontier; returns
        the frontier and each job's outcome."""
        frontier, outcomes, records, claims, attached, indexed, waited = written
        if indexed != self._indexed:
            self._waiting.clear()  # every one waiting before this group is indexed now
        self._indexed = indexed
        for message_id, client, seq in waited:
            self._waiting.setdefault(message_id, []).append((client, seq))
        if len(self._known_attachments) + len(attached) > _MAX_KNOWN_ATTACHMENTS:
            self._known_attachments.clear()
        self._known_attachments.update(attached)
        self._last_logged_us = now_us
        self._records += records
        self._claims += claims
        return frontier, outcomes

    def _write_group(self, conn: _Conn, group: list[_Job], now_us: int) -> _Written:
        """The group's statements inside the caller's transaction (synchronous: it runs in the
        SQLite worker thread, or under ``run_sync`` on the async engine). Touches no writer
        state; returns the new frontier, each job's outcome, the records and claims written,
        the digests of the attachments offered to ``log_attachments``, how many leaves are in
        the audit indexes once it commits, and the group's leaves left pending.

        A small group on a SQLite file is written pending while the origin's pending leaves
        stay within MAX_PENDING_RECORDS; any other group first puts the pending leaves in the
        audit indexes, in one statement, and is indexed as it is inserted (ADR 0053)."""
        origin = self._origin
        frontier = self._frontier.copy()
        pending = self._pending_mark(group)
        granted = self._write_claims(conn, group, now_us)
        leaves = _GroupLeaves(origin, frontier.size, now_us, pending)
        leaves.add(group, granted, self._known_attachments)
        leaf_rows = leaves.rows
        attachment_rows = leaves.attachments
        # Level 0 of the tree is each leaf's hash, kept in its row; every node above it that a
        # leaf completes ends on that leaf: its key is (origin, seq, level). Half the leaves
        # complete none.
        node_rows = [(origin, last, level, h) for last, level, h in frontier.extend(leaves.digests)]
        indexed = self._indexed
        waited: list[tuple[str, str, int]] = []
        if leaf_rows:
            if pending is None:
                indexed = self._index_waiting(conn, frontier.size)
            else:  # (message id, client, seq): the rows' fields 4, 6 and 1 (_LEAF_COLUMNS)
                waited = [(row[4], row[6], row[1]) for row in leaf_rows]
            if attachment_rows:
                _insert_attachments(conn, list(attachment_rows.values()))
            _insert_rows(conn, log_leaves, _LEAF_COLUMNS, leaf_rows)
            if node_rows:
                _insert_rows(conn, log_nodes, _NODE_COLUMNS, node_rows)
            if leaves.bodies:
                self._write_bodies(conn, leaves.bodies)
            self._write_head(conn, frontier, now_us, indexed)
        return (
            frontier,
            leaves.outcomes,
            len(leaf_rows),
            leaves.claims,
            list(attachment_rows),
            indexed,
            waited,
        )

    def _pending_mark(self, group: list[_Job]) -> int | None:
        """The ``pending`` mark of the group's leaves: 1 (not yet in the audit indexes) for a
        group of at most _PENDING_GROUP_RECORDS on a SQLite file while the origin's pending
        leaves stay within MAX_PENDING_RECORDS, None (indexed) otherwise (ADR 0053)."""
        most = sum(len(job.entries) for job in group)
        if (
            self._sqlite is not None
            and most <= _PENDING_GROUP_RECORDS
            and self._frontier.size + most - self._indexed <= MAX_PENDING_RECORDS
        ):
            return 1
        return None

    def _index_waiting(self, conn: _Conn, size: int) -> int:
        """Put the origin's pending leaves in the audit indexes, in one statement of the
        group's transaction; returns ``size``, the leaves indexed once it commits."""
        if self._indexed < self._frontier.size:
            conn.execute(
                _INDEX_PENDING,
                {"origin": self._origin, "first": self._indexed, "end": self._frontier.size},
            )
        return size

    def _write_bodies(self, conn: _Conn, bodies: list[tuple[int, bytes]]) -> None:
        """Seal the group's bodies and store them: in ``log_bodies`` rows, or, for the large
        ones on a SQLite file, in the origin's body segment file, written and synced here,
        before the rows naming them are inserted and the group commits (ADR 0040). A failed
        file write raises and fails the group; bytes it left are named by no row."""
        origin = self._origin
        key_id = self._cipher.key_id
        sealed = self._cipher.seal_many(origin, bodies)
        files = self._body_files
        in_files: list[tuple[int, bytes, bytes]] = []
        if files is not None:
            large = [body for body in sealed if len(body[2]) >= FILE_BODY_MIN_BYTES]
            # Only enough of them share the file's sync (FILE_GROUP_MIN_BODIES); fewer stay in
            # their rows.
            if large and (
                len(large) >= self._body_files_from
                or sum(len(ciphertext) for _, _, ciphertext in large) >= FILE_GROUP_MIN_BYTES
            ):
                in_files = large
        if in_files:
            to_files = {seq for seq, _, _ in in_files}
            sealed = [body for body in sealed if body[0] not in to_files]
        if sealed:
            if isinstance(conn, _RawSqlite):
                # Bodies kept in their rows fill pages of their own: the checkpoint's estimate.
                conn.stored_bytes += sum(len(ciphertext) for _, _, ciphertext in sealed)
            _insert_rows(
                conn,
                log_bodies,
                _BODY_COLUMNS,
                [(origin, seq, key_id, nonce, ciphertext) for seq, nonce, ciphertext in sealed],
            )
        if in_files and files is not None:
            segment, position = files.write([ciphertext for _, _, ciphertext in in_files])
            referenced: list[tuple[Any, ...]] = []
            for seq, nonce, ciphertext in in_files:
                length = len(ciphertext)
                referenced.append((origin, seq, key_id, nonce, segment, position, length))
                position += length
            _insert_rows(conn, log_bodies, _FILE_BODY_COLUMNS, referenced)

    def _write_claims(self, conn: _Conn, group: list[_Job], now_us: int) -> set[bytes]:
        """Insert the group's replay claims; return the keys that were new (or had expired)."""
        rows: dict[bytes, int] = {}
        for job in group:
            if job.claim is not None and job.claim.key not in rows:
                rows[job.claim.key] = job.claim.expires_at_us
        if not rows:
            return set()
        params: dict[str, Any] = {"now": now_us}
        # In key order: two nodes' groups claiming overlapping ids on one PostgreSQL lock them
        # in the same order, so they queue instead of deadlocking.
        for i, (key, expires_at) in enumerate(sorted(rows.items())):
            params[f"k{i}"] = key
            params[f"e{i}"] = expires_at
        result = conn.execute(self._claims_upsert(len(rows)), params)
        # RETURNING claim_key (by position: rows of either connection kind).
        return {bytes(r[0]) for r in result}

    def _claims_upsert(self, count: int) -> Any:
        """The upsert of ``count`` claims (bound parameters ``k<i>``, ``e<i>``, ``now``), built
        once per count: building it per group cost more than running it."""
        stmt = self._claim_upserts.get(count)
        if stmt is None:
            values: list[dict[str, Any]] = [
                {
                    "claim_key": sa.bindparam(f"k{i}", type_=seen_messages.c.claim_key.type),
                    "expires_at": sa.bindparam(f"e{i}"),
                }
                for i in range(count)
            ]
            insert = self._insert(seen_messages).values(values)
            stmt = insert.on_conflict_do_update(
                index_elements=[seen_messages.c.claim_key],
                set_={"expires_at": insert.excluded.expires_at},
                where=seen_messages.c.expires_at <= sa.bindparam("now"),
            ).returning(seen_messages.c.claim_key)
            if len(self._claim_upserts) < _MAX_CACHED_CLAIM_UPSERTS:
                self._claim_upserts[count] = stmt
        return stmt

    def _write_head(self, conn: _Conn, frontier: CompactRange, now_us: int, indexed: int) -> None:
        values = {
            "origin": self._origin,
            "size": frontier.size,
            "root": frontier.root(),
            "updated_at": now_us,
            # NULL: every leaf indexed (as in a head row written without the column).
            "indexed_size": None if indexed == frontier.size else indexed,
        }
        conn.execute(self._head_upsert, values)


class _RawSqlite:
    """The few statement calls a group makes, on the worker's ``sqlite3`` connection directly:
    each SQLAlchemy statement compiled once (SQLite dialect), then plain ``execute`` and
    ``executemany``. SQLAlchemy's execution layer cost about as much CPU as SQLite itself per
    group (bench/README.md)."""

    def __init__(
        self, dbapi: sqlite3.Connection, dialect: sa.Dialect, compiled: dict[Any, tuple[str, ...]]
    ) -> None:
        self._dbapi = dbapi
        self.dialect = dialect
        self._compiled = compiled
        #: Bytes of large values (bodies kept in their rows) the transaction stored, for the
        #: checkpoint thread's estimate of the pages it wrote (:meth:`_WalCheckpointer.committed`).
        self.stored_bytes = 0

    def execute(self, statement: Any, parameters: dict[str, Any]) -> list[Any]:
        """Run one compiled statement with named ``parameters``; its rows (for RETURNING)."""
        known = self._compiled.get(statement)
        if known is None:
            compiled = statement.compile(dialect=self.dialect)
            known = (compiled.string, *(compiled.positiontup or ()))
            # The writer's statements are built once; anything else is compiled each time.
            if len(self._compiled) < _MAX_COMPILED_STATEMENTS:
                self._compiled[statement] = known
        sql, *order = known
        cursor = self._dbapi.execute(sql, tuple(parameters[name] for name in order))
        rows: list[Any] = cursor.fetchall()
        return rows

    def exec_driver_sql(self, sql: str, parameters: Sequence[tuple[Any, ...]]) -> None:
        self._dbapi.executemany(sql, parameters)


_Conn = sa.Connection | _RawSqlite


class _WalCheckpointer:
    """A thread of its own that checkpoints a SQLite file's write-ahead log (``PRAGMA
    wal_checkpoint(PASSIVE)``, on a connection of its own with Ruta's settings:
    ``synchronous=FULL``, so the database file is synced before the log may start over) once
    the log's commits have written about :data:`_CHECKPOINT_PAGES` pages, instead of SQLite doing
    it inside whichever commit crosses its threshold. The copy runs in SQLite's C code without
    the GIL, beside the log's Python work rather than in series with the commit a group of
    callers waits for (docs/adr/0054). A passive checkpoint never takes the write lock and
    never waits: a commit is neither delayed nor refused by it. Nothing it does is needed for
    durability (a commit is durable in the log once ``COMMIT`` returns); its failures are
    logged, and the writer's connections still checkpoint by themselves at
    :data:`_WRITER_AUTOCHECKPOINT_PAGES`."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._due = threading.Event()
        self._stopping = False
        # Estimated pages committed since the last wake-up (counted by whichever thread runs a
        # group: one at a time).
        self._pages = 0
        self._thread = threading.Thread(
            target=self._serve, name="ruta-log-wal-checkpoint", daemon=True
        )
        self._thread.start()

    def committed(self, rows: int, stored_bytes: int = 0) -> None:
        """A commit that changed ``rows`` rows, ``stored_bytes`` of them bodies kept in their
        rows, returned: wake the thread once the pages since its last wake-up reach
        :data:`_CHECKPOINT_PAGES`."""
        self._pages += _PAGES_PER_COMMIT + rows // _ROWS_PER_PAGE + stored_bytes // _PAGE_BYTES
        if self._pages >= _CHECKPOINT_PAGES:
            self._pages = 0
            self._due.set()

    def _serve(self) -> None:
        connection: Any = None
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._stopping:
                    return
                try:
                    if connection is None:
                        connection = self._engine.raw_connection()
                    _run_checkpoint(connection.driver_connection)
                except Exception as exc:  # noqa: BLE001 - the writer's connections still checkpoint
                    _log.warning(
                        "message log: checkpointing the write-ahead log failed (%s)",
                        type(exc).__name__,
                    )
                    if connection is not None:
                        connection.invalidate()
                        connection = None
        finally:
            if connection is not None:
                connection.close()

    def stop(self) -> None:
        """Stop the thread (it finishes a checkpoint in progress and closes its connection)
        and wait for it: call from a thread other than the event loop's."""
        self._stopping = True
        self._due.set()
        self._thread.join()


def _checkpoint(dbapi: sqlite3.Connection) -> None:
    """One passive checkpoint: what the log holds that no reader still needs, copied into the
    database and synced. Under a steady load the commits append while it copies, so the log
    seldom starts over after it alone: the writer's own checkpoint at
    :data:`_WRITER_AUTOCHECKPOINT_PAGES` then copies only what this one left (more passes,
    each with its two syncs, were measured not to catch up either: bench/README.md)."""
    dbapi.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


#: What the checkpoint thread runs (a seam for tests).
_run_checkpoint = _checkpoint


class _SqliteWorker:
    """One thread with one ``sqlite3`` connection to the log's SQLite file (opened through a
    synchronous engine carrying Ruta's settings); runs a whole group transaction
    (``BEGIN IMMEDIATE`` ... ``COMMIT``) per trip.

    The thread is the worker's own, fed by a queue, and it settles the awaiting asyncio
    future itself with one ``call_soon_threadsafe``: a trip through ``run_in_executor`` added a
    ``concurrent.futures`` future, its chaining to an asyncio one and their callbacks to every
    group, a tenth of the event loop's work per single-record commit (bench/README.md, fifth
    round)."""

    def __init__(self, engine: sa.Engine, commit_times: CommitTimes) -> None:
        self._engine = engine
        self._commit_times = commit_times
        self._jobs: queue.SimpleQueue[_SqliteJob | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="ruta-log-sqlite", daemon=True)
        self._connection: Any = None  # a pooled DBAPI connection, touched by the thread only
        # The connection run_here uses (in the loop's thread; opened on first use).
        self._here: Any = None
        self._compiled: dict[Any, tuple[str, ...]] = {}
        self._checkpointer = _WalCheckpointer(engine)
        try:
            self._thread.start()
        except BaseException:
            # No worker to close it: stop the checkpoint thread begun above.
            self._checkpointer.stop()
            engine.dispose()
            raise

    @classmethod
    def for_url(cls, url: sa.URL, commit_times: CommitTimes) -> _SqliteWorker | None:
        """A worker for a SQLite file database, noting each ``COMMIT``'s wall time in
        ``commit_times``; ``None`` for anything else."""
        engine = sqlite_sync_engine(url)
        return cls(engine, commit_times) if engine is not None else None

    async def transaction(self, fn: Callable[..., _T], *args: Any, timed: bool = True) -> _T:
        """Run ``fn(connection, *args)`` in one write transaction in the worker thread; the
        transaction commits when ``fn`` returns and rolls back when it raises. ``timed``: its
        ``COMMIT``'s wall time is noted in the commit times (the appends'; not the checkpoints').

        Cancelling the awaiting task does not stop the thread: the transaction still finishes
        (commits or rolls back) there, like the records of a caller whose deadline passed; the
        writer restores its tree from the database before its next group."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        call = functools.partial(self._run, fn, *args, timed=timed)
        self._jobs.put(_SqliteJob(loop, future, call))
        return await future

    def run_here(self, fn: Callable[..., _T], *args: Any) -> _T | None:
        """Run ``fn(connection, *args)`` in one write transaction in the calling thread (the
        event loop's) and return its result; ``None`` when another connection holds the write
        lock (nothing was run: :meth:`transaction` waits for it in the worker thread instead).
        Only while no :meth:`transaction` is in progress (the writer runs one group at a
        time). On a connection of its own that never waits for a lock (the worker's waits up
        to the busy timeout), so the loop's thread never blocks on another writer."""
        if self._here is None:
            here: Any = self._engine.raw_connection()
            here.driver_connection.execute("PRAGMA busy_timeout=0")
            _checkpoint_aside(here.driver_connection)
            self._here = here
        dbapi: sqlite3.Connection = self._here.driver_connection
        began = time.perf_counter()
        try:
            dbapi.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return None
        try:
            return self._transact(dbapi, fn, args, began)
        except BaseException:
            here, self._here = self._here, None
            here.invalidate()
            raise

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                result = job.call()
            except BaseException as exc:  # noqa: BLE001 - every outcome goes to the awaiting task
                outcome: tuple[Any, BaseException | None] = (None, exc)
            else:
                outcome = (result, None)
            # A closed loop (RuntimeError) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(_settle, job.future, *outcome)

    def _run(self, fn: Callable[..., _T], *args: Any, timed: bool = True) -> _T:
        if self._connection is None:
            self._connection = self._engine.raw_connection()
            _checkpoint_aside(self._connection.driver_connection)
        dbapi: sqlite3.Connection = self._connection.driver_connection
        try:
            began = time.perf_counter()
            dbapi.execute("BEGIN IMMEDIATE")
            return self._transact(dbapi, fn, args, began, timed=timed)
        except BaseException:
            # The connection is replaced so the next group starts clean.
            connection, self._connection = self._connection, None
            with contextlib.suppress(sqlite3.Error):
                dbapi.rollback()
            connection.invalidate()
            raise

    def _transact(
        self,
        dbapi: sqlite3.Connection,
        fn: Callable[..., _T],
        args: Any,
        began: float,
        *,
        timed: bool = True,
    ) -> _T:
        """``fn`` and ``COMMIT`` in the transaction begun on ``dbapi``; whatever fails (a
        statement, the commit itself), it is rolled back and nothing of the group stays."""
        changes = dbapi.total_changes
        raw = _RawSqlite(dbapi, self._engine.dialect, self._compiled)
        try:
            result = fn(raw, *args)
            _commit(dbapi)
            if timed:
                self._commit_times.note(time.perf_counter() - began)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                dbapi.rollback()
            raise
        self._checkpointer.committed(dbapi.total_changes - changes, raw.stored_bytes)
        return result

    def _close(self) -> None:
        # The checkpoint thread first (it finishes a pass in progress), here in the worker's
        # thread: the close job, once queued, closes everything even if the awaiting task is
        # cancelled (a stop's deadline); the engine is disposed only after its last user.
        self._checkpointer.stop()
        if self._here is not None:
            self._here.close()
            self._here = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._engine.dispose()

    async def close(self) -> None:
        """Stop the checkpoint thread, close the connections (in the worker's own thread) and
        stop the thread. Once the close job is queued it runs whether or not this is awaited
        to the end."""
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        self._jobs.put(_SqliteJob(loop, closed, self._close))
        self._jobs.put(None)
        await closed
        await asyncio.to_thread(self._thread.join)


def _checkpoint_aside(dbapi: sqlite3.Connection) -> None:
    """Leave the write-ahead log's checkpoints to the :class:`_WalCheckpointer` on a writer's
    connection: it checkpoints inside a commit only beyond :data:`_WRITER_AUTOCHECKPOINT_PAGES`."""
    dbapi.execute(f"PRAGMA wal_autocheckpoint={int(_WRITER_AUTOCHECKPOINT_PAGES)}")


def _commit(dbapi: sqlite3.Connection) -> None:
    """``COMMIT`` (a seam: tests make it slow to stand for a slow disk)."""
    dbapi.execute("COMMIT")


@dataclass(slots=True, frozen=True)
class _SqliteJob:
    """One trip to the worker thread: what to call and whose future to settle with it."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    call: Callable[[], Any]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Resolve ``future`` on its loop, unless its awaiting task gave up (cancelled it)."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


#: Column order of the rows the writer builds (tuples: no dict per row on the hot path).
_LEAF_COLUMNS: Final = (
    "origin",
    "seq",
    "direction",
    "logged_at",
    "message_id",
    "kind",
    "client",
    "service",
    "method",
    "subject",
    "created_at",
    "record",
    "leaf_hash",
    "pending",
)
_NODE_COLUMNS: Final = ("origin", "last_seq", "level", "hash")
#: (``purged_at`` is left to its default, NULL: no parameter to bind.)
_BODY_COLUMNS: Final = ("origin", "seq", "key_id", "nonce", "ciphertext")
#: A body kept in a segment file: its row names where (``ciphertext`` left NULL).
_FILE_BODY_COLUMNS: Final = ("origin", "seq", "key_id", "nonce", "segment", "position", "length")


@functools.lru_cache(maxsize=32)
def _sqlite_insert(table: str, columns: tuple[str, ...]) -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608


def _insert_rows(
    conn: _Conn, table: sa.Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """Insert ``rows`` (tuples in the order of ``columns``) in one executemany. On SQLite the
    statement is plain text built once per table and the values (ints, text, bytes, None) go
    to the driver as they are: SQLAlchemy's per-row parameter processing was a quarter of the
    writer thread's time (bench/README.md). Other databases take the ordinary path."""
    if isinstance(conn, sa.Connection) and conn.dialect.name != "sqlite":
        conn.execute(sa.insert(table), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    conn.exec_driver_sql(_sqlite_insert(table.name, columns), rows)


#: Stores an attachment unless its digest is there already (the same text on both backends).
_INSERT_ATTACHMENT: Final = (
    "INSERT INTO log_attachments (digest, kind, content) VALUES ({}, {}, {}) "
    "ON CONFLICT (digest) DO NOTHING"
)
_INSERT_ATTACHMENT_QMARK: Final = _INSERT_ATTACHMENT.format("?", "?", "?")
_INSERT_ATTACHMENT_NAMED: Final = sa.text(
    _INSERT_ATTACHMENT.format(":digest", ":kind", ":content")
).bindparams(
    sa.bindparam("digest", type_=log_attachments.c.digest.type),
    sa.bindparam("content", type_=log_attachments.c.content.type),
)


def _insert_attachments(conn: _Conn, attachments: list[Attachment]) -> None:
    """Store each of ``attachments`` not stored yet (content-addressed: a digest present
    already names the same bytes)."""
    rows = [(a.digest, int(a.kind), a.content) for a in attachments]
    if isinstance(conn, sa.Connection) and conn.dialect.name != "sqlite":
        conn.execute(
            _INSERT_ATTACHMENT_NAMED,
            [
                {"digest": digest, "kind": kind, "content": content}
                for digest, kind, content in rows
            ],
        )
        return
    conn.exec_driver_sql(_INSERT_ATTACHMENT_QMARK, rows)


class _GroupLeaves:
    """A group's leaves as they are built (:meth:`GroupCommitWriter._write_group`): each
    record's bytes, hash and ``log_leaves`` row, the bodies to seal, the attachments not known
    to be stored, each job's outcome and the claims written. One loop over the group's entries,
    with what every record shares (origin, ``logged_at``, the pending mark) bound once."""

    __slots__ = (
        "attachments",
        "bodies",
        "claims",
        "digests",
        "logged_at_us",
        "origin",
        "outcomes",
        "pending",
        "rows",
        "seq",
    )

    def __init__(self, origin: str, seq: int, logged_at_us: int, pending: int | None) -> None:
        self.origin = origin
        #: The next leaf's sequence number.
        self.seq = seq
        self.logged_at_us = logged_at_us
        self.pending = pending
        self.rows: list[tuple[Any, ...]] = []
        self.digests: list[bytes] = []
        self.bodies: list[tuple[int, bytes]] = []
        self.attachments: dict[bytes, Attachment] = {}
        self.outcomes: list[list[AppendedRecord] | LogError] = []
        self.claims = 0

    def add(self, group: list[_Job], granted: set[bytes], known: set[bytes]) -> None:
        """Each job of ``group`` in turn: refused if its claim was not ``granted`` (or an
        earlier job of the group holds it), its leaves built otherwise."""
        origin, seq, now_us, pending = self.origin, self.seq, self.logged_at_us, self.pending
        rows, digests, bodies, attachments = self.rows, self.digests, self.bodies, self.attachments
        outcomes = self.outcomes
        logged_at = from_micros(now_us)
        # The records' field 3, the same for the whole group (None: before 1970, written by
        # protobuf itself in _serialise_record).
        logged_at_field = _logged_at_field(now_us) if now_us >= 0 else None
        sha256 = hashlib.sha256
        holders: set[bytes] = set()
        for job in group:
            if job.claim is not None:
                key = job.claim.key
                if key not in granted or key in holders:
                    # Seen before, or claimed earlier in this same group.
                    outcomes.append(_replayed(job.claim))
                    continue
                holders.add(key)
                self.claims += 1
            appended: list[AppendedRecord] = []
            for entry, (logged, offered) in zip(job.entries, job.signatures, strict=True):
                for attachment in offered:
                    if attachment.digest not in known:
                        attachments[attachment.digest] = attachment
                direction_field, direction = _DIRECTIONS.get(entry.direction) or _direction_parts(
                    entry.direction
                )
                if logged_at_field is None:
                    record = _serialise_record(entry, logged, seq, now_us)
                else:
                    record = _record_bytes(
                        seq, direction_field, logged_at_field, entry.header, logged
                    )
                digest = sha256(_LEAF_PREFIX + record).digest()
                digests.append(digest)
                # In the order of _LEAF_COLUMNS.
                rows.append(
                    (
                        origin,
                        seq,
                        direction,
                        now_us,
                        entry.message_id,
                        _KIND_TEXT.get(entry.kind) or str(entry.kind),
                        entry.client,
                        entry.service,
                        entry.method,
                        entry.subject or None,
                        entry.created_at_us,
                        record,
                        digest,
                        pending,
                    )
                )
                if entry.body is not None:
                    bodies.append((seq, entry.body))
                appended.append(AppendedRecord(origin, seq, digest, logged_at))
                seq += 1
            outcomes.append(appended)
        self.seq = seq


def _replayed(claim: MessageClaim) -> ReplayedMessageError:
    return ReplayedMessageError(
        f"message {claim.message_id!r} of {claim.client} was already received; "
        "send each message once, with a new id"
    )


def _fail(job: _Job, error: LogError) -> None:
    if not job.future.done():
        job.future.set_exception(error)


#: The tag of ``LogRecord.signature_ref`` (field 7, length-delimited).
_SIGNATURE_REF_TAG: Final = bytes([7 << 3 | 2])


def _direction_parts(direction: int) -> tuple[bytes, int]:
    """A ``LogRecord``'s field 2 (``direction``) as deterministic serialisation writes it, and
    the ``log_leaves.direction`` value."""
    value = int(direction)
    return (b"\x10" + varint(value) if value else b""), value


#: :func:`_direction_parts` of each direction, built once.
_DIRECTIONS: Final = {d: _direction_parts(d) for d in Direction}
#: ``log_leaves.kind``'s text (a plain ``str``) of each kind, built once.
_KIND_TEXT: Final = {k: str(k) for k in RecordKind}
#: The prefix of a leaf's hashed bytes (RFC 6962).
_LEAF_PREFIX: Final = b"\x00"


@functools.lru_cache(maxsize=8)
def _logged_at_field(logged_at_us: int) -> bytes:
    """Field 3 of a ``LogRecord`` (``logged_at``, a ``Timestamp``) as deterministic
    serialisation writes it: the same for every record of a group, so built once."""
    seconds, micros = divmod(logged_at_us, 1_000_000)
    timestamp = (b"\x08" + varint(seconds) if seconds else b"") + (
        b"\x10" + varint(micros * 1000) if micros else b""
    )
    return b"\x1a" + varint(len(timestamp)) + timestamp


def _serialise_record(entry: LogEntry, logged: bytes, seq: int, logged_at_us: int) -> bytes:
    """The format-2 leaf of ``entry``, its signature the serialised ``LoggedSignature``
    ``logged``: exactly the bytes of the ``LogRecord`` with ``sequence``, ``direction``,
    ``logged_at``, ``header`` and ``signature_ref`` set, serialised deterministically (fields
    in number order, proto3 defaults left out; a unit test holds them to protobuf's own for
    every kind of value). Written out directly: building the message to serialise it was a
    tenth of the writer's Python time per record."""
    if logged_at_us < 0:  # before 1970: protobuf writes the negative seconds (never in use)
        record = log_pb2.LogRecord(
            sequence=seq,
            direction=int(entry.direction),  # type: ignore[arg-type]
            header=entry.header,
        )
        record.logged_at.FromMicroseconds(logged_at_us)
        record.signature_ref.ParseFromString(logged)
        return record.SerializeToString(deterministic=True)
    direction_field = _direction_parts(entry.direction)[0]
    return _record_bytes(seq, direction_field, _logged_at_field(logged_at_us), entry.header, logged)


def _record_bytes(
    seq: int, direction_field: bytes, logged_at_field: bytes, header: bytes, logged: bytes
) -> bytes:
    """:func:`_serialise_record`'s bytes from their parts (the direction and ``logged_at``
    fields as written, the same for many records)."""
    return b"".join(
        (
            b"\x08" + varint(seq) if seq else b"",
            direction_field,
            logged_at_field,
            b"\x22" + varint(len(header)) + header if header else b"",
            _SIGNATURE_REF_TAG + varint(len(logged)) + logged,
        )
    )
