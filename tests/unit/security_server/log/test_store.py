"""The message log against real SQLite files and real PostgreSQL: appends, group commit, proofs,
restart, purge, write failures and integrity checks on open."""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.evidence.attachments import AttachmentKind, attach_signature
from ruta.faults import Fault
from ruta.merkle import (
    MerkleVerificationError,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from ruta.v1 import log_pb2, transport_pb2
from security_server.database import open_database
from security_server.errors import Side, fault_for
from security_server.log import (
    MAX_APPEND_ENTRIES,
    MAX_PAGE_SIZE,
    BodyKey,
    BodyState,
    Direction,
    InvalidLogEntryError,
    LogIntegrityError,
    LogKeyError,
    LogRangeError,
    LogReader,
    LogWriteError,
    MessageLog,
    RecordKind,
    StoredRecord,
)
from security_server.log import store as store_module
from security_server.log.model import to_micros
from security_server.log.schema import log_attachments, log_bodies, log_heads, log_leaves
from security_server.log.store import first_seq_logged_at_or_after
from tests.conftest import POSTGRES_ADMIN_URL
from tests.unit.security_server.log.support import (
    CLIENT,
    ORIGIN,
    SERVICE,
    FakeClock,
    make_entry,
    take_leaf_behind_the_logs_back,
)


async def _all_leaf_hashes(log: MessageLog) -> list[bytes]:
    size = log.size()
    hashes: list[bytes] = []
    for start in range(0, size, MAX_PAGE_SIZE):
        records = await log.get_records(list(range(start, min(size, start + MAX_PAGE_SIZE))))
        hashes.extend(leaf_hash(r.record) for r in records)
    return hashes


async def test_append_and_read_back(log: MessageLog, clock: FakeClock) -> None:
    with_body = make_entry(subject="EE38001085718", body=b"\x00payload")
    metadata_only = make_entry(
        body=None, kind=transport_pb2.MESSAGE_KIND_RESPONSE, direction=Direction.SENT
    )
    appended = await log.append([with_body, metadata_only])

    assert [a.seq for a in appended] == [0, 1]
    assert log.size() == 2
    first, second = await log.get_records([0, 1])
    assert first.leaf_hash == leaf_hash(first.record) == appended[0].leaf_hash
    parsed = first.log_record()
    assert parsed.sequence == 0
    assert parsed.direction == log_pb2.LOG_DIRECTION_RECEIVED
    assert parsed.header == with_body.header
    # Format 2: the leaf names the certificate by digest; the log keeps it once, beside.
    assert parsed.signature == b""
    assert parsed.certificate_fingerprint == ""
    original = transport_pb2.Signature.FromString(with_body.signature)
    stored = await log.get_attachments([parsed.signature_ref.certificate_sha256])
    restored = attach_signature(
        parsed.signature_ref, lambda kind, digest: stored[digest][1] if digest in stored else None
    )
    assert restored == original
    assert stored[parsed.signature_ref.certificate_sha256][0] is AttachmentKind.CERTIFICATE
    assert parsed.logged_at.ToDatetime().replace(tzinfo=clock.now.tzinfo) == clock.now
    assert (first.client, first.service, first.method) == (str(CLIENT), str(SERVICE), "GetPerson")
    assert first.subject == "EE38001085718"
    assert first.kind is RecordKind.REQUEST
    assert first.body_state is BodyState.STORED
    assert second.kind is RecordKind.RESPONSE
    assert second.direction is Direction.SENT
    assert second.body_state is BodyState.ABSENT
    assert await log.get_body(0) == b"\x00payload"
    assert await log.get_body(1) is None
    assert log.head().root == root_from_leaf_hashes([first.leaf_hash, second.leaf_hash])


async def test_body_is_encrypted_at_rest(log: MessageLog, engine: AsyncEngine) -> None:
    secret = b"national id EE38001085718 lives at Tartu mnt 1"
    await log.append([make_entry(body=secret)])
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.select(log_bodies.c.ciphertext))).scalar_one()
    assert secret not in bytes(stored)


async def test_concurrent_appends_share_few_transactions(
    log: MessageLog, database_url: str, body_key: BodyKey, engine: AsyncEngine
) -> None:
    before = log.stats.transactions
    results = await asyncio.gather(*(log.append([make_entry()]) for _ in range(200)))

    seqs = sorted(r[0].seq for r in results)
    assert seqs == list(range(200))
    transactions = log.stats.transactions - before
    assert 1 <= transactions <= 5, transactions
    assert log.stats.largest_group >= 40
    # Durable: a second, independent log instance sees all of them.
    await log.close()
    reopened = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key)
    try:
        assert reopened.size() == 200
        assert reopened.head() == log.head()
        assert len(await reopened.get_records(list(range(200)))) == 200
    finally:
        await reopened.close()


async def test_proofs_verify_against_roots(log: MessageLog) -> None:
    for batch in (1, 2, 5, 13, 16):
        await log.append([make_entry() for _ in range(batch)])
    size = log.size()
    hashes = await _all_leaf_hashes(log)
    for tree_size in (1, 2, 3, 7, 8, 16, 17, 30, size):
        root = await log.root(tree_size)
        assert root == root_from_leaf_hashes(hashes[:tree_size])
        for seq in {0, tree_size // 2, tree_size - 1}:
            proof = await log.inclusion_proof(seq, tree_size)
            verify_inclusion(hashes[seq], seq, tree_size, proof, root)
    for size1, size2 in ((1, 2), (3, 7), (4, 8), (7, 16), (16, 37), (30, size)):
        proof = await log.consistency_proof(size1, size2)
        verify_consistency(size1, size2, proof, await log.root(size1), await log.root(size2))
    assert await log.consistency_proof(size, size) == []


async def test_proofs_read_in_bulk_equal_single_ones(log: MessageLog) -> None:
    # Enough leaves for runs of one level to be read as ranges (levels 1 to 3 of a contiguous
    # export) and by key (the levels above, and scattered records), over a tree that grows
    # past the ranges asked.
    entries = [make_entry(body=None) for _ in range(64)]
    for _ in range(17):
        await log.append(entries)
    size = log.size()
    hashes = await _all_leaf_hashes(log)
    wanted = {
        "contiguous": list(range(300, 520)),
        "scattered": list(range(3, size, 37)),
        "mixed": [*range(40), *range(640, 700, 3), size - 1],
    }
    for tree_size in (size, 701, 520):
        root = await log.root(tree_size)
        for asked in wanted.values():
            seqs = [seq for seq in asked if seq < tree_size]
            proofs = await log.inclusion_proofs(seqs, tree_size)
            assert proofs == [await log.inclusion_proof(seq, tree_size) for seq in seqs]
            for seq, proof in zip(seqs, proofs, strict=True):
                verify_inclusion(hashes[seq], seq, tree_size, proof, root)


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("inclusion_proof", (5, 5)),
        ("inclusion_proof", (0, 6)),
        ("inclusion_proof", (-1, None)),
        ("consistency_proof", (4, 3)),
        ("consistency_proof", (1, 6)),
        ("root", (6,)),
        ("get_body", (5,)),
    ],
)
async def test_requests_outside_the_tree_are_refused(
    log: MessageLog, call: str, args: tuple[int | None, ...]
) -> None:
    await log.append([make_entry() for _ in range(5)])
    with pytest.raises(LogRangeError) as info:
        await getattr(log, call)(*args)
    assert info.value.fault is Fault.CLIENT_INVALID_REQUEST


async def test_restart_restores_the_tree_and_continues(
    engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> None:
    first = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key, clock=clock)
    await first.append([make_entry() for _ in range(11)])
    old_head = first.head()
    await first.close()

    second = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key, clock=clock)
    try:
        assert second.head() == old_head
        appended = await second.append([make_entry() for _ in range(6)])
        assert [a.seq for a in appended] == list(range(11, 17))
        hashes = await _all_leaf_hashes(second)
        assert second.head().root == root_from_leaf_hashes(hashes)
        proof = await second.consistency_proof(11)
        verify_consistency(11, 17, proof, old_head.root, second.head().root)
        for seq in range(17):
            verify_inclusion(
                hashes[seq], seq, 17, await second.inclusion_proof(seq), second.head().root
            )
    finally:
        await second.close()


async def test_origins_keep_separate_trees(
    engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> None:
    node1 = await MessageLog.open(engine, origin="ruta.test/node1", body_key=body_key, clock=clock)
    node2 = await MessageLog.open(engine, origin="ruta.test/node2", body_key=body_key, clock=clock)
    try:
        await asyncio.gather(
            node1.append([make_entry() for _ in range(3)]),
            node2.append([make_entry() for _ in range(5)]),
        )
        assert (node1.size(), node2.size()) == (3, 5)
        assert (await node2.get_records([4]))[0].origin == "ruta.test/node2"
        page = await node1.query()
        assert [r.seq for r in page.records] == [0, 1, 2]
    finally:
        await node1.close()
        await node2.close()


async def test_purge_removes_bodies_and_keeps_proofs(log: MessageLog, clock: FakeClock) -> None:
    await log.append([make_entry(body=f"old {i}".encode()) for i in range(4)])
    clock.advance(3600)
    cutoff = clock.now
    await log.append([make_entry(body=b"new"), make_entry(body=None)])
    root_before = log.head().root

    assert await log.purge_bodies(cutoff) == 4
    assert await log.purge_bodies(cutoff) == 0

    for seq in range(4):
        assert await log.get_body(seq) is None
    assert await log.get_body(4) == b"new"
    states = [r.body_state for r in await log.get_records(list(range(6)))]
    assert states == [BodyState.PURGED] * 4 + [BodyState.STORED, BodyState.ABSENT]
    assert log.head().root == root_before
    hashes = await _all_leaf_hashes(log)
    for seq in range(6):
        verify_inclusion(hashes[seq], seq, 6, await log.inclusion_proof(seq), root_before)


async def test_a_body_moved_to_another_record_does_not_open(
    log: MessageLog, engine: AsyncEngine
) -> None:
    await log.append([make_entry(body=b"first"), make_entry(body=b"second")])
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                sa.select(log_bodies.c.nonce, log_bodies.c.ciphertext).where(log_bodies.c.seq == 0)
            )
        ).one()
        await conn.execute(
            sa.update(log_bodies)
            .where(log_bodies.c.seq == 1)
            .values(nonce=row.nonce, ciphertext=row.ciphertext)
        )
    with pytest.raises(LogKeyError, match="does not authenticate"):
        await log.get_body(1)


@pytest.mark.parametrize(
    ("side", "fault"),
    [
        (Side.CONSUMER, Fault.SERVER_CONSUMER_LOGGING_FAILED),
        (Side.PROVIDER, Fault.SERVER_PROVIDER_LOGGING_FAILED),
    ],
)
async def test_a_failed_write_refuses_every_waiter_then_recovers(
    log: MessageLog, engine: AsyncEngine, side: Side, fault: Fault
) -> None:
    await log.append([make_entry() for _ in range(3)])
    # Another writer took leaf 3 behind this log's back: the group's insert fails for real.
    await take_leaf_behind_the_logs_back(engine, 3)
    outcomes = await asyncio.gather(
        *(log.append([make_entry()]) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(o, LogWriteError) for o in outcomes), outcomes
    # Side-neutral: each proxy names its own logging_failed.
    assert {fault_for(side, o) for o in outcomes if isinstance(o, LogWriteError)} == {fault}
    assert log.stats.failed_transactions >= 1
    assert log.size() == 3

    async with engine.begin() as conn:
        await conn.execute(sa.delete(log_leaves).where(log_leaves.c.seq == 3))
    [record] = await log.append([make_entry()])
    assert record.seq == 3
    hashes = await _all_leaf_hashes(log)
    assert log.head().root == root_from_leaf_hashes(hashes)


@pytest.mark.parametrize("damage", ["root", "size", "extra_leaf"])
async def test_open_refuses_a_stored_tree_that_disagrees(
    engine: AsyncEngine, body_key: BodyKey, damage: str
) -> None:
    log = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key)
    await log.append([make_entry() for _ in range(5)])
    await log.close()
    async with engine.begin() as conn:
        if damage == "root":
            await conn.execute(sa.update(log_heads).values(root=b"\x01" * 32))
        elif damage == "size":
            await conn.execute(sa.update(log_heads).values(size=4))
        else:
            record = (
                (await conn.execute(sa.select(log_leaves).where(log_leaves.c.seq == 4)))
                .one()
                ._asdict()
            )
            await conn.execute(sa.insert(log_leaves).values({**record, "seq": 5}))
    with pytest.raises(LogIntegrityError):
        await MessageLog.open(engine, origin=ORIGIN, body_key=body_key)


async def test_query_filters_and_pages(log: MessageLog, clock: FakeClock) -> None:
    other = CLIENT.member.subsystem("other")
    await log.append([make_entry(subject="P1") for _ in range(5)])
    clock.advance(60)
    middle = clock.now
    await log.append([make_entry(client=other, method="ListPeople") for _ in range(4)])
    clock.advance(60)
    await log.append([make_entry(subject="P1", message_id="fixed-id")])

    assert [r.seq for r in (await log.query(subject="P1")).records] == [0, 1, 2, 3, 4, 9]
    assert [r.seq for r in (await log.query(client=str(other))).records] == [5, 6, 7, 8]
    assert [r.seq for r in (await log.query(method="ListPeople")).records] == [5, 6, 7, 8]
    assert [r.seq for r in (await log.query(service=str(SERVICE), limit=3)).records] == [0, 1, 2]
    assert [r.seq for r in (await log.query(message_id="fixed-id")).records] == [9]
    window = await log.query(since=middle, until=middle + timedelta(seconds=1))
    assert [r.seq for r in window.records] == [5, 6, 7, 8]

    seen: list[int] = []
    after: int | None = None
    while True:
        page = await log.query(limit=4, after=after)
        seen.extend(r.seq for r in page.records)
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == list(range(10))

    with pytest.raises(LogRangeError):
        await log.query(limit=MAX_PAGE_SIZE + 1)
    with pytest.raises(LogRangeError):
        await log.get_records([10])


async def test_time_ranges_are_found_in_sequence_order(
    log: MessageLog, engine: AsyncEngine, clock: FakeClock
) -> None:
    """Without a time index, since/until become a range of seq found on the primary key
    (logged_at never decreases along a tree): exact at every boundary, over trees of more
    than one round of probes, with equal times across many records."""
    times: list[datetime] = []
    for group in range(150):  # 150 groups of 1-3 records: more than two rounds of 64 probes
        times.append(clock.now)
        await log.append([make_entry() for _ in range(1 + group % 3)])
        clock.advance(1 + group % 2)
    seqs_at: dict[datetime, list[int]] = {}
    for record in await _all_records(log):
        seqs_at.setdefault(record.logged_at, []).append(record.seq)
    size = log.size()

    async def seqs(since: datetime | None, until: datetime | None) -> list[int]:
        found: list[int] = []
        after: int | None = None
        while True:
            page = await log.query(since=since, until=until, after=after, limit=MAX_PAGE_SIZE)
            found.extend(r.seq for r in page.records)
            if page.next_after is None:
                return found
            after = page.next_after

    def expected(since: datetime | None, until: datetime | None) -> list[int]:
        return [
            seq
            for at, group_seqs in seqs_at.items()
            if (since is None or at >= since) and (until is None or at < until)
            for seq in group_seqs
        ]

    second = timedelta(seconds=1)
    for since, until in [
        (times[0], None),
        (times[0] - second, times[0]),
        (None, times[0] + timedelta(microseconds=1)),
        (times[37], times[38]),
        (times[37] + timedelta(microseconds=1), times[120]),
        (times[-1], None),
        (times[-1] + second, None),
        (times[80], times[10]),
    ]:
        assert await seqs(since, until) == expected(since, until), (since, until)
    assert len(await seqs(None, None)) == size
    page = await log.query(since=times[50], until=times[52], newest_first=True)
    assert [r.seq for r in page.records] == sorted(expected(times[50], times[52]), reverse=True)
    async with engine.connect() as conn:
        for at in (*times[::7], times[-1] + second):
            first = await first_seq_logged_at_or_after(conn, ORIGIN, size, to_micros(at))
            assert first == (expected(at, None) or [size])[0]


async def _all_records(log: MessageLog) -> list[StoredRecord]:
    records: list[StoredRecord] = []
    after: int | None = None
    while True:
        page = await log.query(after=after, limit=MAX_PAGE_SIZE)
        records.extend(page.records)
        if page.next_after is None:
            return records
        after = page.next_after


async def test_holds_message_by_client_and_id(
    log: MessageLog, engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> None:
    other = CLIENT.member.subsystem("other")
    await log.append([make_entry() for _ in range(20)])
    await log.append([make_entry(message_id="taken"), make_entry(client=other, message_id="x")])

    assert await log.holds_message(client=str(CLIENT), message_id="taken")
    assert not await log.holds_message(client=str(other), message_id="taken")
    assert await log.holds_message(client=str(other), message_id="x")
    assert not await log.holds_message(client=str(CLIENT), message_id="x")
    assert not await log.holds_message(client=str(CLIENT), message_id="never")
    # Another node (or worker) of the member sharing the database: an id used on one is used
    # on all, so the consumer's reuse check holds across the cluster.
    node2 = await MessageLog.open(engine, origin="ruta.test/node2", body_key=body_key, clock=clock)
    try:
        assert await node2.holds_message(client=str(CLIENT), message_id="taken")
        assert not await node2.holds_message(client=str(other), message_id="taken")
        await node2.append([make_entry(message_id="on-node2")])
        assert await log.holds_message(client=str(CLIENT), message_id="on-node2")
    finally:
        await node2.close()


async def test_holds_message_reads_through_the_message_id_index(
    log: MessageLog, engine: AsyncEngine, body_key: BodyKey
) -> None:
    """The consumer asks before signing every request: the lookup must go through the message
    id's index, not walk one client's records (a cost that grows with the log), and read the
    few pending records (ADR 0053) on the primary key. Checked for the writer's own SQLite
    connection and for a reader's trip through the async engine."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the plan checked is SQLite's; PostgreSQL plans from its own statistics")
    await log.append([make_entry() for _ in range(5)])
    executed: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "message_id" in statement:
            executed.append(statement)

    lookup = log._lookup  # the writer's own connection (SQLite files only)
    assert lookup is not None
    lookup._connection.set_trace_callback(executed.append)
    assert not await log.holds_message(client=str(CLIENT), message_id="m")
    lookup._connection.set_trace_callback(None)
    reader = await LogReader.open(engine, origin=ORIGIN, body_key=body_key)
    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        assert not await reader.holds_message(client=str(CLIENT), message_id="m")
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert len(executed) == 2
    async with engine.connect() as conn:
        for statement in executed:
            sql = statement.replace("'m'", "?")  # the trace shows the bound value
            plan = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", ("m",) * sql.count("?"))
            details = [str(row[-1]) for row in plan]
            assert any("ix_log_leaves_message_id" in d for d in details), details
            # The pending part: each origin's head, then its leaves from indexed_size on.
            assert any(
                "SEARCH l USING INDEX sqlite_autoindex_log_leaves_1" in d for d in details
            ), details
            assert not any(d.startswith("SCAN l") for d in details), details


async def test_random_proofs_verify_and_any_flipped_bit_fails(log: MessageLog) -> None:
    rng = random.Random(9162)
    while log.size() < 300:
        await asyncio.gather(*(log.append([make_entry()]) for _ in range(rng.randint(1, 40))))
    hashes = await _all_leaf_hashes(log)
    for _ in range(60):
        size = rng.randint(1, log.size())
        seq = rng.randrange(size)
        root = await log.root(size)
        proof = await log.inclusion_proof(seq, size)
        verify_inclusion(hashes[seq], seq, size, proof, root)
        if proof:
            which, bit = rng.randrange(len(proof)), rng.randrange(256)
            damaged = list(proof)
            flipped = bytearray(damaged[which])
            flipped[bit // 8] ^= 1 << (bit % 8)
            damaged[which] = bytes(flipped)
            with pytest.raises(MerkleVerificationError):
                verify_inclusion(hashes[seq], seq, size, damaged, root)
        size1 = rng.randint(1, size)
        verify_consistency(
            size1, size, await log.consistency_proof(size1, size), await log.root(size1), root
        )


async def test_logged_at_never_goes_back_across_a_restart(
    engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> None:
    first = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key, clock=clock)
    [early] = await first.append([make_entry()])
    await first.close()
    clock.advance(-3600)  # the wall clock steps back an hour
    second = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key, clock=clock)
    try:
        [late] = await second.append([make_entry()])
    finally:
        await second.close()
    assert late.logged_at >= early.logged_at


async def test_checkpoints_are_stored_and_cosigned(log: MessageLog, clock: FakeClock) -> None:
    await log.append([make_entry() for _ in range(7)])
    assert await log.latest_checkpoint() is None
    root5 = await log.root(5)
    saved = await log.save_checkpoint(size=5, root=root5, note="origin\n5\nroot\n\n— sig\n")
    assert (saved.size, saved.root, saved.cosignature) == (5, root5, None)
    again = await log.save_checkpoint(size=5, root=root5, note="a different note")
    assert again.note == saved.note
    await log.save_checkpoint(size=7, root=log.head().root, note="seven")

    assert (await log.latest_checkpoint()) is not None
    assert (await log.latest_checkpoint(cosigned=True)) is None
    await log.save_cosignature(5, "— witness sig", clock.now)
    cosigned = await log.latest_checkpoint(cosigned=True)
    assert cosigned is not None
    assert (cosigned.size, cosigned.cosignature, cosigned.cosigned_at) == (
        5,
        "— witness sig",
        clock.now,
    )
    latest = await log.latest_checkpoint()
    assert latest is not None
    assert latest.size == 7

    with pytest.raises(LogIntegrityError):
        await log.save_checkpoint(size=6, root=root5, note="wrong root")
    with pytest.raises(LogRangeError):
        await log.save_checkpoint(size=8, root=root5, note="beyond the log")
    with pytest.raises(LogRangeError):
        await log.save_cosignature(6, "sig", clock.now)


async def test_groups_respect_their_bound(
    engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> None:
    log = await MessageLog.open(
        engine, origin=ORIGIN, body_key=body_key, clock=clock, max_group_records=10
    )
    try:
        await asyncio.gather(*(log.append([make_entry(body=None)]) for _ in range(35)))
        assert log.stats.largest_group == 10
        assert log.stats.transactions == 4
        with pytest.raises(InvalidLogEntryError):
            await log.append([make_entry() for _ in range(MAX_APPEND_ENTRIES + 1)])
    finally:
        await log.close()


async def test_a_caller_that_gives_up_does_not_disturb_the_others(log: MessageLog) -> None:
    impatient = asyncio.ensure_future(log.append([make_entry()]))
    patient = asyncio.ensure_future(log.append([make_entry()]))
    await asyncio.sleep(0)
    impatient.cancel()
    [record] = await patient
    with pytest.raises(asyncio.CancelledError):
        await impatient
    # The cancelled caller's record may be logged (it was already queued); the tree stays whole.
    assert log.size() in (1, 2)
    assert record.seq in (0, 1)
    [later] = await log.append([make_entry()])
    assert later.seq == log.size() - 1
    hashes = await _all_leaf_hashes(log)
    assert log.head().root == root_from_leaf_hashes(hashes)


async def test_a_reader_serves_another_nodes_log(log: MessageLog, engine: AsyncEngine) -> None:
    other_key = BodyKey.generate()  # bodies stay sealed to readers without the node's key
    await log.append([make_entry(body=b"b") for _ in range(5)])
    reader = await LogReader.open(engine, origin=ORIGIN, body_key=other_key)
    assert reader.head() == log.head()
    await log.append([make_entry() for _ in range(3)])
    assert reader.size() == 5  # a fixed head until refreshed
    hashes = await _all_leaf_hashes(log)
    verify_inclusion(hashes[4], 4, 5, await reader.inclusion_proof(4), reader.head().root)
    with pytest.raises(LogRangeError):
        await reader.get_records([5])
    with pytest.raises(LogKeyError):
        await reader.get_body(0)

    assert await reader.refresh() == log.head()
    assert [r.seq for r in (await reader.query()).records] == list(range(8))
    verify_consistency(
        5, 8, await reader.consistency_proof(5), await reader.root(5), reader.head().root
    )


@pytest.mark.postgres
async def test_appends_go_on_after_postgres_drops_every_connection(
    postgres_url: str, body_key: BodyKey
) -> None:
    engine = await open_database(postgres_url)
    try:
        log = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key)
        try:
            await asyncio.gather(*(log.append([make_entry()]) for _ in range(8)))
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (sa.make_url(postgres_url).database,),
                )
            [record] = await log.append([make_entry()])
            assert record.seq == 8
            assert len(await log.get_records(list(range(9)))) == 9
        finally:
            await log.close()
    finally:
        await engine.dispose()


async def test_a_certificate_shared_by_many_records_is_stored_once(
    log: MessageLog, engine: AsyncEngine
) -> None:
    first = make_entry()
    shared = transport_pb2.Signature.FromString(first.signature)
    entries = []
    for _ in range(20):
        signature = transport_pb2.Signature.FromString(first.signature)
        signature.value = secrets.token_bytes(72)
        entries.append(replace(make_entry(), signature=signature.SerializeToString()))
    await asyncio.gather(*(log.append([e]) for e in entries))
    await log.append(entries[:3])
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(log_attachments.c.digest))).all()
    assert [bytes(r.digest) for r in rows] == [hashlib.sha256(shared.certificate).digest()]


async def test_an_unreadable_signature_is_refused_alone(log: MessageLog) -> None:
    bad = replace(make_entry(), signature=b"\xff\xff")
    good = log.append([make_entry()])
    with pytest.raises(InvalidLogEntryError, match="signature"):
        await log.append([bad])
    [appended] = await good
    assert appended.seq == 0
    assert log.size() == 1


@pytest.mark.parametrize("probe", [1, 3, 2000])
@pytest.mark.parametrize("newest_first", [False, True])
async def test_a_search_by_service_alone_pages_alike_for_rare_and_common_services(
    log: MessageLog, monkeypatch: pytest.MonkeyPatch, probe: int, newest_first: bool
) -> None:
    """A service with few records is read through the service index, one with many in
    sequence order: either way the pages hold the same records in the same order."""
    monkeypatch.setattr(store_module, "_RARE_SERVICE_PROBE", probe)
    rare = SERVICE.subsystem.service("rare.v1.Rare")
    entries = [make_entry(service=rare if i % 4 == 1 else SERVICE) for i in range(14)]
    await log.append(entries)
    for service, expected in (
        (rare, [i for i in range(14) if i % 4 == 1]),
        (SERVICE, [i for i in range(14) if i % 4 != 1]),
        (SERVICE.subsystem.service("none.v1.None"), []),
    ):
        seen: list[int] = []
        after: int | None = None
        while True:
            page = await log.query(
                service=str(service), limit=2, after=after, newest_first=newest_first
            )
            seen.extend(r.seq for r in page.records)
            assert all(r.service == str(service) for r in page.records)
            if page.next_after is None:
                break
            after = page.next_after
        assert seen == sorted(expected, reverse=newest_first)
