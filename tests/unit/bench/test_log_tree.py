"""The proof benchmarks' fast log builder (bench/log_tree.py) writes the tree that appending the
same leaves one by one gives: same nodes, same root, same proofs, read back through the log's own
reader from a real SQLite file."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from bench.log_tree import ORIGIN, build_log, cached_log, chunk_nodes
from ruta.merkle import MemoryTree, leaf_hash, verify_consistency, verify_inclusion
from ruta.v1 import log_pb2
from security_server.database import open_database
from security_server.log import BodyKey, LogReader
from security_server.log.schema import node_idx


def _stored(path: Path) -> tuple[list[bytes], dict[tuple[int, int], bytes]]:
    conn = sqlite3.connect(path)
    try:
        records = [bytes(r[0]) for r in conn.execute("SELECT record FROM log_leaves ORDER BY seq")]
        nodes = {
            (int(lv), node_idx(int(lv), int(last))): bytes(h)
            for lv, last, h in conn.execute("SELECT level, last_seq, hash FROM log_nodes")
        }
    finally:
        conn.close()
    return records, nodes


@pytest.mark.parametrize(
    ("leaves", "chunk_level"),
    [
        (1000, 16),  # one short chunk: every node from the level-by-level pass
        (1000, 4),  # 62 full chunks and a tail: nodes above a chunk from the chunk roots
        (1024, 3),  # a power of two: no tail
        (1, 4),
    ],
)
async def test_built_tree_is_the_appended_tree(
    tmp_path: Path, leaves: int, chunk_level: int
) -> None:
    path = tmp_path / "log.db"
    root = await build_log(path, leaves, chunk_level=chunk_level)

    records, nodes = _stored(path)
    assert len(records) == leaves
    appended = MemoryTree()
    for seq, data in enumerate(records):
        record = log_pb2.LogRecord.FromString(data)
        assert record.sequence == seq
        appended.append_data(data)
    assert root == appended.root()
    # Exactly the complete subtrees above the leaves appending writes, with the same hashes
    # (level 0 is each leaf's own leaf_hash, ADR 0033).
    assert nodes == {k: appended.get_subtree_hash(*k) for k in nodes}
    assert len(nodes) == sum(leaves >> level for level in range(1, leaves.bit_length()))

    engine = await open_database(f"sqlite+aiosqlite:///{path}")
    try:
        reader = await LogReader.open(engine, origin=ORIGIN, body_key=BodyKey.generate())
        assert reader.head().size == leaves
        assert reader.head().root == root
        rng = random.Random(leaves)
        for seq in {0, leaves - 1, *(rng.randrange(leaves) for _ in range(20))}:
            size = rng.randrange(seq + 1, leaves + 1)
            proof = await reader.inclusion_proof(seq, size)
            assert proof == appended.inclusion_proof(seq, size)
            verify_inclusion(leaf_hash(records[seq]), seq, size, proof, appended.root(size))
            size1 = rng.randrange(1, size + 1)
            consistency = await reader.consistency_proof(size1, size)
            assert consistency == appended.consistency_proof(size1, size)
            verify_consistency(size1, size, consistency, appended.root(size1), appended.root(size))
        [stored] = await reader.get_records([leaves - 1])
        assert stored.leaf_hash == leaf_hash(stored.record)
    finally:
        await engine.dispose()


async def test_cached_log_is_reused(tmp_path: Path) -> None:
    first = await cached_log(300, data_dir=tmp_path)
    again = await cached_log(300, data_dir=tmp_path)
    assert (first.reused, again.reused) == (False, True)
    assert first.build_seconds is not None
    assert (again.path, again.size, again.root, again.build_seconds) == (
        first.path,
        first.size,
        first.root,
        first.build_seconds,
    )
    assert _names(tmp_path) == [first.path.name, first.path.name + ".build.json"]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_chunk_must_be_aligned() -> None:
    with pytest.raises(ValueError, match="chunk"):
        chunk_nodes([b"\x00" * 32], 3, chunk_level=2)
    with pytest.raises(ValueError, match="chunk"):
        chunk_nodes([b"\x00" * 32] * 5, 0, chunk_level=2)
