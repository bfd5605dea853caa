"""A group's leaves, nodes, bodies and attachments as the writer stores them (one loop per group,
CompactRange.extend, bodies sealed to tuples): exactly what appending leaf by leaf stores, for
groups of every size around the powers of two, groups that mix replayed claims, entries without
bodies and bodies going to segment files, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.evidence.attachments import detach_signature
from ruta.merkle import MemoryTree, leaf_hash
from ruta.v1 import log_pb2
from security_server.log import BodyKey, LogEntry, MessageClaim, MessageLog, ReplayedMessageError
from security_server.log.bodies import FILE_BODY_MIN_BYTES
from security_server.log.model import AppendedRecord, to_micros
from security_server.log.schema import log_attachments, log_bodies, log_leaves, log_nodes
from tests.unit.security_server.log.support import CLIENT, ORIGIN, FakeClock, make_entry

#: Jobs gathered at once (each one group: the writer takes what is queued when it wakes),
#: around the powers of two and across their boundaries.
_GROUPS = (1, 1, 2, 1, 4, 3, 8, 7, 9, 16, 1, 31, 33, 64, 5)


def _body(job: int, entry: int, *, large: bool) -> bytes | None:
    if (job + entry) % 4 == 1:
        return None  # an entry without a body
    tag = f"{job}/{entry}".encode()
    if large and (job + entry) % 3 == 0:
        return tag * (FILE_BODY_MIN_BYTES // len(tag) + 1)
    return tag


async def _append_groups(
    log: MessageLog, clock: FakeClock, *, large: bool
) -> tuple[dict[int, LogEntry], int]:
    """Append :data:`_GROUPS`; return each acknowledged entry by its seq and the replays
    refused."""
    appended: dict[int, LogEntry] = {}
    refused = 0
    used: list[str] = []
    job = 0
    for size in _GROUPS:
        calls = []
        jobs: list[list[LogEntry]] = []
        for i in range(size):
            job += 1
            count = job % 4  # 0 to 3 entries (0: a claim alone)
            entries = [make_entry(body=_body(job, n, large=large)) for n in range(count)]
            if i % 5 == 2 and used:
                message_id = used[-1]  # seen in an earlier group: a replay
            elif i % 7 == 3 and i > 0:
                message_id = f"same-{job - 1}"  # claimed by the job before, in this group
            else:
                message_id = f"same-{job}"
            used.append(message_id)
            claim = (
                None
                if i % 3 == 0
                else MessageClaim(
                    client=str(CLIENT),
                    message_id=message_id,
                    expires_at=clock() + timedelta(hours=1),
                )
            )
            if claim is None and not entries:
                entries = [make_entry(body=None)]
            jobs.append(entries)
            calls.append(log.append(entries, claim=claim))
        results = await asyncio.gather(*calls, return_exceptions=True)
        for entries, result in zip(jobs, results, strict=True):
            if isinstance(result, ReplayedMessageError):
                refused += 1
                continue
            assert not isinstance(result, BaseException), result
            assert len(result) == len(entries)
            for record, entry in zip(result, entries, strict=True):
                assert isinstance(record, AppendedRecord)
                assert record.seq not in appended
                appended[record.seq] = entry
        clock.advance(0.001)
    return appended, refused


async def _check_stored(
    engine: AsyncEngine, log: MessageLog, appended: dict[int, LogEntry]
) -> None:
    size = len(appended)
    assert sorted(appended) == list(range(size))
    assert log.head().size == size
    async with engine.connect() as conn:
        leaves = (
            await conn.execute(
                sa.select(
                    log_leaves.c.seq,
                    log_leaves.c.record,
                    log_leaves.c.leaf_hash,
                    log_leaves.c.message_id,
                    log_leaves.c.direction,
                    log_leaves.c.kind,
                    log_leaves.c.logged_at,
                ).order_by(log_leaves.c.seq)
            )
        ).all()
        nodes = {
            (int(r.last_seq), int(r.level)): bytes(r.hash)
            for r in await conn.execute(
                sa.select(log_nodes.c.last_seq, log_nodes.c.level, log_nodes.c.hash)
            )
        }
        stored_attachments = {
            bytes(r.digest) for r in await conn.execute(sa.select(log_attachments.c.digest))
        }
        body_seqs = {int(r.seq) for r in await conn.execute(sa.select(log_bodies.c.seq))}
    assert [int(r.seq) for r in leaves] == list(range(size))
    tree = MemoryTree()
    for row in leaves:
        seq = int(row.seq)
        entry = appended[seq]
        logged, attachments = detach_signature(entry.signature)
        # The record as protobuf serialises it (not the writer's own serialiser).
        expected = log_pb2.LogRecord(
            sequence=seq,
            direction=int(entry.direction),  # type: ignore[arg-type]
            header=entry.header,
        )
        expected.logged_at.FromMicroseconds(int(row.logged_at))
        expected.signature_ref.ParseFromString(logged)
        assert bytes(row.record) == expected.SerializeToString(deterministic=True), seq
        assert bytes(row.leaf_hash) == leaf_hash(bytes(row.record))
        assert row.message_id == entry.message_id
        assert int(row.direction) == int(entry.direction)
        assert row.kind == str(entry.kind)
        tree.append(bytes(row.leaf_hash))
        assert {a.digest for a in attachments} <= stored_attachments, seq
        assert (seq in body_seqs) == (entry.body is not None), seq
        # Sealed for this seq: opening it under another seq's associated data would fail.
        assert await log.get_body(seq) == entry.body, seq
    expected_nodes = {
        (((idx + 1) << level) - 1, level): h for (level, idx), h in tree._nodes.items() if level > 0
    }
    assert nodes == expected_nodes
    assert log.head().root == tree.root()


async def test_groups_store_what_appending_leaf_by_leaf_stores(
    engine: AsyncEngine, clock: FakeClock
) -> None:
    log = await MessageLog.open(engine, origin=ORIGIN, body_key=BodyKey.generate(), clock=clock)
    try:
        appended, refused = await _append_groups(log, clock, large=False)
        assert refused > 0
        assert log.stats.largest_group >= 33
        await _check_stored(engine, log, appended)
    finally:
        await log.close()
    # Reopened: the stored frontier leads to the same root, and appends go on from it.
    key_again = await MessageLog.open(
        engine, origin=ORIGIN, body_key=BodyKey.generate(), clock=clock
    )
    try:
        assert key_again.head().size == len(appended)
    finally:
        await key_again.close()


async def test_groups_with_bodies_in_segment_files_store_each_body_under_its_seq(
    file_engine: AsyncEngine, clock: FakeClock
) -> None:
    key = BodyKey.generate()
    log = await MessageLog.open(
        file_engine, origin=ORIGIN, body_key=key, clock=clock, body_files_from=2
    )
    try:
        appended, refused = await _append_groups(log, clock, large=True)
        assert refused > 0
        async with file_engine.connect() as conn:
            in_files = (
                await conn.execute(
                    sa.select(sa.func.count()).where(log_bodies.c.segment.is_not(None))
                )
            ).scalar_one()
            in_rows = (
                await conn.execute(
                    sa.select(sa.func.count()).where(log_bodies.c.ciphertext.is_not(None))
                )
            ).scalar_one()
        assert in_files > 0
        assert in_rows > 0
        await _check_stored(file_engine, log, appended)
    finally:
        await log.close()
    reopened = await MessageLog.open(file_engine, origin=ORIGIN, body_key=key, clock=clock)
    try:
        for seq, entry in appended.items():
            assert await reopened.get_body(seq) == entry.body
        more = await reopened.append([make_entry(body=b"after")])
        assert more[0].seq == len(appended)
    finally:
        await reopened.close()


async def test_inline_groups_store_what_the_worker_stores(
    file_engine: AsyncEngine, clock: FakeClock
) -> None:
    log = await MessageLog.open(
        file_engine, origin=ORIGIN, body_key=BodyKey.generate(), clock=clock
    )
    appended: dict[int, LogEntry] = {}
    try:
        log.commit_inline_while(lambda: True)
        for n in range(70):  # across 1, 2, 4, ..., 64 one leaf at a time, in the loop's thread
            entries = [make_entry(body=None if n % 3 == 0 else str(n).encode())]
            claim = MessageClaim(
                client=str(CLIENT),
                message_id=str(uuid.uuid4()),
                expires_at=clock() + timedelta(hours=1),
            )
            (record,) = await log.append(entries, claim=claim, at_once=n % 2 == 0)
            appended[record.seq] = entries[0]
            assert to_micros(record.logged_at) == to_micros(clock())
        await _check_stored(file_engine, log, appended)
    finally:
        await log.close()
