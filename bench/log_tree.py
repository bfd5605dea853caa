"""A fast builder of large message logs for the proof benchmarks (not for production use).

Appending ten million records through the log's writer takes hours on the development machine;
the proof benchmarks only need the *rows* the writer would have left behind. This builder writes
them directly into a migrated SQLite file, chunk by chunk, each chunk one large transaction
(``synchronous=OFF``: a crash while building leaves a file that is never used, see below):

- ``log_leaves``: one synthetic, well-formed ``ruta.v1.LogRecord`` per leaf (a request received
  by ``DEV/GOV/POP/ss1`` from ``DEV/GOV/SOC/benefits``; no body) with its RFC 6962 leaf hash;
- ``log_nodes``: every complete subtree (ADR 0002). Leaves go in chunks of ``2**CHUNK_LEVEL``
  starting at multiples of the chunk size, so every subtree of up to ``2**CHUNK_LEVEL`` leaves
  is complete inside one chunk and is computed level by level there (``ruta.merkle.node_hash``
  over neighbour pairs); the roots of full chunks go through a :class:`ruta.merkle.CompactRange`
  whose completed subtrees, lifted by ``CHUNK_LEVEL`` levels, are the larger nodes;
- ``log_heads``: the size and root, last. The root is computed twice, from the chunk frontier in
  memory and from the stored nodes through ``ruta.merkle.root_plan``; they must agree.

:func:`cached_log` keeps the built file in a data directory (``bench/data/`` by default, ignored
by git) under a name that carries the leaf count, the schema's migration head and
:data:`BUILDER_VERSION`, and builds into ``*.building`` renamed only when complete, so a rerun
reuses a finished file and never an interrupted one (``*.build.json`` beside it keeps the build
time and load average). ``tests/unit/bench/test_log_tree.py`` checks
that the builder's tree equals the one ``ruta.merkle.MemoryTree`` builds by appending.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from ruta.ids import ServerId, ServiceId, SubsystemId
from ruta.merkle import CompactRange, leaf_hash, node_hash, root_from_leaf_hashes, root_plan
from ruta.v1 import log_pb2, transport_pb2
from security_server.database import open_database
from security_server.log.schema import node_last_seq

__all__ = [
    "BUILDER_VERSION",
    "CHUNK_LEVEL",
    "DATA_DIR",
    "ORIGIN",
    "BuiltLog",
    "build_log",
    "cached_log",
    "chunk_nodes",
]

#: Bumped whenever the rows written change, so cached files of an older builder are not reused.
BUILDER_VERSION: Final = 3
#: Leaves per chunk (and per transaction) are ``2**CHUNK_LEVEL``.
CHUNK_LEVEL: Final = 16
#: Where built logs are kept between runs (override with ``RUTA_BENCH_DATA``); not committed.
DATA_DIR: Final = Path(os.environ.get("RUTA_BENCH_DATA", Path(__file__).parent / "data"))
#: The origin every built log is written under.
ORIGIN: Final = "DEV/GOV/POP/ss1"

_CLIENT: Final = SubsystemId.parse("DEV/GOV/SOC/benefits")
_SERVICE: Final = ServiceId.parse("DEV/GOV/POP/registry/population.v1.PopulationRegister")
_T0_US: Final = int(datetime(2026, 11, 26, tzinfo=UTC).timestamp() * 1_000_000)

_LeafRow = tuple[str, int, int, int, str, str, str, str, str, None, int, bytes, bytes]
_NodeRow = tuple[str, int, int, bytes]


@dataclass(frozen=True, slots=True)
class BuiltLog:
    """A built log file: its path, tree size and root, whether it came from the cache, and how
    long building it took with the load average before and after (``None`` when not known)."""

    path: Path
    size: int
    root: bytes
    reused: bool
    build_seconds: float | None
    build_load_average: tuple[float, float] | None


def _leaf_rows(start: int, stop: int) -> list[_LeafRow]:
    """Synthetic leaf rows ``start .. stop - 1``: each a distinct, parseable LogRecord."""
    header = transport_pb2.MessageHeader(
        kind=transport_pb2.MESSAGE_KIND_REQUEST,
        client=_CLIENT.to_proto(),
        service=_SERVICE.to_proto(),
        method="GetPerson",
        purpose="benefit-eligibility",
        sender=ServerId.parse("DEV/GOV/SOC/ss1").to_proto(),
        receiver=ServerId.parse("DEV/GOV/POP/ss1").to_proto(),
    )
    record = log_pb2.LogRecord(
        direction=log_pb2.LOG_DIRECTION_RECEIVED,
        signature=transport_pb2.Signature(value=b"\x30" * 72).SerializeToString(),
        certificate_fingerprint="ab" * 32,
    )
    client, service = str(_CLIENT), str(_SERVICE)
    rows: list[_LeafRow] = []
    for seq in range(start, stop):
        at = _T0_US + seq
        header.message_id = f"00000000-0000-4000-8000-{seq:012d}"
        header.created_at.FromMicroseconds(at)
        record.sequence = seq
        record.header = header.SerializeToString()
        record.logged_at.FromMicroseconds(at)
        data = record.SerializeToString()
        rows.append(
            (
                ORIGIN,
                seq,
                log_pb2.LOG_DIRECTION_RECEIVED,
                at,
                header.message_id,
                "request",
                client,
                service,
                "GetPerson",
                None,
                at,
                data,
                leaf_hash(data),
            )
        )
    return rows


def chunk_nodes(
    leaf_hashes: Sequence[bytes], first: int, *, chunk_level: int = CHUNK_LEVEL
) -> list[tuple[int, int, bytes]]:
    """Every complete subtree inside the leaves ``first .. first + len(leaf_hashes) - 1``, as
    ``(level, index, hash)`` sorted by level then index (level 0: the leaf hashes themselves).

    ``first`` must be a multiple of ``2**chunk_level`` and at most ``2**chunk_level`` leaves are
    given, so each pair of neighbours on a level is a complete subtree of the whole tree; an
    odd last node of a short chunk completes nothing above it. Raises ``ValueError`` otherwise.
    """
    if first % (1 << chunk_level) or len(leaf_hashes) > 1 << chunk_level:
        raise ValueError(f"a chunk is at most 2**{chunk_level} leaves from a multiple of that")
    out: list[tuple[int, int, bytes]] = []
    level, hashes, index0 = 0, list(leaf_hashes), first
    while hashes:
        out.extend((level, index0 + i, h) for i, h in enumerate(hashes))
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes) - 1, 2)]
        level, index0 = level + 1, index0 >> 1
    return out


def _write_rows(conn: sqlite3.Connection, leaves: list[_LeafRow], nodes: list[_NodeRow]) -> None:
    """THE ONLY PLACE THAT WRITES TREE ROWS: adapt it (and BUILDER_VERSION) when the log's schema
    changes. It writes the rows ``security_server/log``'s writer would for these leaves (they
    carry no bodies): ``log_leaves`` rows and the ``log_nodes`` of every complete subtree above
    the leaves (level 0 is each leaf's ``leaf_hash``, ADR 0033: its rows are dropped here, and
    :func:`_stored_root` reads level-0 keys from ``log_leaves``).
    """
    conn.executemany(
        "INSERT INTO log_leaves (origin, seq, direction, logged_at, message_id, kind, client, "
        "service, method, subject, created_at, record, leaf_hash) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        leaves,
    )
    conn.executemany(
        "INSERT INTO log_nodes (origin, last_seq, level, hash) VALUES (?,?,?,?)",
        [(o, node_last_seq(lv, ix), lv, h) for o, lv, ix, h in nodes if lv > 0],
    )


def _write_head(conn: sqlite3.Connection, size: int, root: bytes) -> None:
    """The tree head row, written last (part of the same schema contract as :func:`_write_rows`)."""
    conn.execute(
        "INSERT INTO log_heads (origin, size, root, updated_at) VALUES (?,?,?,?)",
        (ORIGIN, size, root, _T0_US + size),
    )


def _stored_root(conn: sqlite3.Connection, size: int) -> bytes:
    """The root of ``size`` leaves from the stored nodes (through ``ruta.merkle.root_plan``)."""
    plan = root_plan(size)
    found: dict[tuple[int, int], bytes] = {}
    for level, idx in plan.keys:
        row = (
            conn.execute(
                "SELECT leaf_hash FROM log_leaves WHERE origin = ? AND seq = ?", (ORIGIN, idx)
            ).fetchone()
            if level == 0
            else conn.execute(
                "SELECT hash FROM log_nodes WHERE origin = ? AND last_seq = ? AND level = ?",
                (ORIGIN, node_last_seq(level, idx), level),
            ).fetchone()
        )
        if row is not None:
            found[(level, idx)] = bytes(row[0])
    return plan.assemble(found)[0]


def _fill(path: Path, leaves: int, progress: bool, chunk_level: int) -> bytes:
    """Write ``leaves`` leaves, their nodes and the head into the migrated file; the root."""
    upper = CompactRange()  # over the roots of full chunks
    tail_root: bytes | None = None
    chunk = 1 << chunk_level
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # No journal while building: an interrupted build is never reused (see cached_log).
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: index pages stay in memory
        for first in range(0, leaves, chunk):
            rows = _leaf_rows(first, min(first + chunk, leaves))
            hashes = [r[12] for r in rows]
            nodes = [
                (ORIGIN, lv, ix, h)
                for lv, ix, h in chunk_nodes(hashes, first, chunk_level=chunk_level)
            ]
            if len(rows) == chunk:
                # Subtrees above a chunk complete as chunk roots are appended; level 0 of
                # ``upper`` is the chunk root itself, already among ``nodes``.
                done = upper.append(nodes[-1][3])
                nodes.extend((ORIGIN, lv + chunk_level, ix, h) for lv, ix, h in done[1:])
            else:
                tail_root = root_from_leaf_hashes(hashes)
            conn.execute("BEGIN")
            _write_rows(conn, rows, nodes)
            conn.execute("COMMIT")
            if progress and (first // chunk) % 16 == 15:
                took = time.perf_counter() - started
                done_leaves = first + len(rows)
                print(f"  built {done_leaves:,} leaves in {took:.0f} s", flush=True)
        frontier = list(upper.hashes) + ([tail_root] if tail_root is not None else [])
        root = frontier[-1]
        for left in reversed(frontier[:-1]):
            root = node_hash(left, root)
        if _stored_root(conn, leaves) != root:
            raise RuntimeError("the stored nodes do not give the root computed while building")
        conn.execute("BEGIN")
        _write_head(conn, leaves, root)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")  # as the log's own connections keep it
    finally:
        conn.close()
    return root


async def build_log(
    path: Path, leaves: int, *, progress: bool = False, chunk_level: int = CHUNK_LEVEL
) -> bytes:
    """Create ``path`` (must not exist) as a migrated message-log database holding ``leaves``
    synthetic leaves under :data:`ORIGIN`; return the tree root. ``chunk_level`` sets the
    transaction size (``2**chunk_level`` leaves); the rows do not depend on it.

    Raises ``ValueError`` for fewer than one leaf, ``FileExistsError`` if ``path`` exists, and
    ``RuntimeError`` if the stored nodes do not give the root computed in memory; a failure
    leaves a partial file at ``path`` (callers build into a temporary name).
    """
    if leaves < 1:
        raise ValueError("a built log has at least one leaf")
    if await asyncio.to_thread(path.exists):
        raise FileExistsError(path)
    engine = await open_database(f"sqlite+aiosqlite:///{path}")  # runs the log's migrations
    await engine.dispose()
    return await asyncio.to_thread(_fill, path, leaves, progress, chunk_level)


def _schema_head() -> str:
    """The message log's newest migration revision (part of the cache key)."""
    versions = Path(__file__).resolve().parent.parent / "security_server/migrations/versions"
    return max(p.stem.split("_", 1)[0] for p in versions.glob("[0-9]*.py"))


def _build_note(path: Path) -> Path:
    """Beside a built file: how long it took, so a reused file still reports it."""
    return path.with_name(path.name + ".build.json")


def _reused(data_dir: Path, leaves: int) -> tuple[Path, BuiltLog | None]:
    """The cache path for ``leaves``, and the finished log there if there is one; clears an
    interrupted build's files."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"log-{leaves}-m{_schema_head()}-b{BUILDER_VERSION}.db"
    if path.exists():
        conn = sqlite3.connect(path)
        try:
            size, root = conn.execute(
                "SELECT size, root FROM log_heads WHERE origin = ?", (ORIGIN,)
            ).fetchone()
        finally:
            conn.close()
        note = _build_note(path)
        built = json.loads(note.read_text()) if note.exists() else {}
        load = built.get("load_average")
        return path, BuiltLog(
            path=path,
            size=int(size),
            root=bytes(root),
            reused=True,
            build_seconds=built.get("seconds"),
            build_load_average=None if load is None else (float(load[0]), float(load[1])),
        )
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + ".building" + suffix).unlink(missing_ok=True)
    return path, None


async def cached_log(leaves: int, *, data_dir: Path = DATA_DIR, progress: bool = False) -> BuiltLog:
    """A built log of ``leaves`` leaves from ``data_dir``, built there first if absent.

    The file name carries the leaf count, the migration head and :data:`BUILDER_VERSION`; a
    file is only ever reused once complete (built as ``*.building``, then renamed). The root
    of a reused file is read from its head row. Raises what :func:`build_log` raises.
    """
    path, reused = await asyncio.to_thread(_reused, data_dir, leaves)
    if reused is not None:
        return reused
    partial = path.with_name(path.name + ".building")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    root = await build_log(partial, leaves, progress=progress)
    took = round(time.perf_counter() - started, 1)
    load = (round(load_before, 2), round(os.getloadavg()[0], 2))
    note = json.dumps({"seconds": took, "load_average": load})
    await asyncio.to_thread(_build_note(path).write_text, note)
    await asyncio.to_thread(partial.rename, path)
    return BuiltLog(
        path=path,
        size=leaves,
        root=root,
        reused=False,
        build_seconds=took,
        build_load_average=load,
    )
