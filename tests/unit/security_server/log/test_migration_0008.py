"""Migration 0008 (tree nodes keyed by the leaf that completes them), SQLite and PostgreSQL:
a populated log of two origins goes down to 0007's key and back up with every node, record,
body and checkpoint as it was, and every root and proof (single, bulk, consistency) still
verifies; the log keeps appending after it."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.merkle import leaf_hash, verify_consistency, verify_inclusion
from security_server.database import VERSION_TABLE, create_engine, migrate
from security_server.log import BodyKey, MessageLog
from security_server.log.schema import node_idx, node_last_seq
from tests.unit.security_server.log.support import ORIGIN, FakeClock, downgrade, make_entry

_OTHER = "ruta.test/DEV/GOV/POP/ss2"
#: Group sizes appended per origin (odd sizes: groups end at every level's boundary and between).
_GROUPS = (1, 3, 7, 1, 16, 5, 2, 9)
_Nodes = dict[tuple[str, int, int], bytes]


async def _nodes(engine: AsyncEngine, *, keyed_by_level: bool) -> _Nodes:
    sql = (
        "SELECT origin, level, idx, hash FROM log_nodes"
        if keyed_by_level
        else "SELECT origin, level, last_seq, hash FROM log_nodes"
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text(sql))).all()
    if keyed_by_level:
        return {(str(o), int(lv), int(i)): bytes(h) for o, lv, i, h in rows}
    return {(str(o), int(lv), node_idx(int(lv), int(last))): bytes(h) for o, lv, last, h in rows}


async def _check(log: MessageLog, bodies: dict[int, bytes]) -> None:
    """Every record of ``log`` is in its tree at every size, bulk proofs equal single ones, each
    smaller tree is consistent with the whole, and the bodies read back."""
    head = log.head()
    records = await log.get_records(list(range(head.size)))
    singles = [await log.inclusion_proof(r.seq) for r in records]
    assert await log.inclusion_proofs([r.seq for r in records], head.size) == singles
    for size in range(1, head.size + 1):
        root = await log.root(size)
        proofs = await log.inclusion_proofs([r.seq for r in records[:size]], size)
        for record, proof in zip(records[:size], proofs, strict=True):
            verify_inclusion(leaf_hash(record.record), record.seq, size, proof, root)
        verify_consistency(size, head.size, await log.consistency_proof(size), root, head.root)
    assert await log.get_bodies(list(bodies)) == bodies


async def test_a_populated_log_migrates_down_and_up_and_keeps_every_proof(
    database_url: str, clock: FakeClock
) -> None:
    key = BodyKey.generate()
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        bodies: dict[str, dict[int, bytes]] = {ORIGIN: {}, _OTHER: {}}
        heads = {}
        for origin in (ORIGIN, _OTHER):
            log = await MessageLog.open(engine, origin=origin, body_key=key, clock=clock)
            try:
                for n, count in enumerate(_GROUPS):
                    entries = [
                        make_entry(body=None if (n + i) % 3 == 0 else f"{origin} {n} {i}".encode())
                        for i in range(count)
                    ]
                    for record, entry in zip(await log.append(entries), entries, strict=True):
                        if entry.body is not None:
                            bodies[origin][record.seq] = entry.body
                    if n == 4:
                        size = log.head().size
                        await log.save_checkpoint(size=size, root=await log.root(), note="n\n")
                heads[origin] = log.head()
            finally:
                await log.close()
        before = await _nodes(engine, keyed_by_level=False)
        size = sum(_GROUPS)
        # One node per complete subtree above the leaves, under the key of its last leaf.
        assert len(before) == 2 * sum(size >> level for level in range(1, size.bit_length()))
        async with engine.connect() as conn:
            lasts = {
                (str(o), int(lv), int(last))
                for o, lv, last in await conn.execute(
                    sa.text("SELECT origin, level, last_seq FROM log_nodes")
                )
            }
        assert lasts == {(o, lv, node_last_seq(lv, i)) for o, lv, i in before}

        async with engine.begin() as conn:
            await conn.run_sync(downgrade, "0007")
            version = (await conn.execute(sa.text(f"SELECT * FROM {VERSION_TABLE}"))).scalar()
        assert version == "0007"
        assert await _nodes(engine, keyed_by_level=True) == before

        await migrate(engine)
        assert await _nodes(engine, keyed_by_level=False) == before
        for origin in (ORIGIN, _OTHER):
            log = await MessageLog.open(engine, origin=origin, body_key=key, clock=clock)
            try:
                assert log.head() == heads[origin]
                checkpoint = await log.latest_checkpoint()
                assert checkpoint is not None
                assert await log.root(checkpoint.size) == checkpoint.root
                await _check(log, bodies[origin])
                [record] = await log.append([make_entry(body=b"after")])
                bodies[origin][record.seq] = b"after"
                await _check(log, bodies[origin])
            finally:
                await log.close()
    finally:
        await engine.dispose()
