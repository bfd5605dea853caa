"""The witness's SQL state store on a SQLite file and on PostgreSQL, including CAS races."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncEngine

from registry.errors import StoreError
from registry.store import database_url
from registry.store.engine import create_engine
from registry.witness import TreeHead, Witness, WitnessConflictError
from registry.witness_store import SqlWitnessStateStore, create_witness_tables
from ruta.checkpoint import Checkpoint, SignatureType, Verifier, sign_note
from ruta.merkle import MemoryTree, leaf_hash

ORIGIN = "ruta.example/LAC/GOV/POP/ss1"


def _root(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return database_url(None, tmp_path)
    pg: str = request.getfixturevalue("postgres_url")
    return database_url(pg, tmp_path)


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    created = create_engine(url)
    try:
        await create_witness_tables(created)
        yield created
    finally:
        await created.dispose()


async def test_get_and_compare_and_set(engine: AsyncEngine) -> None:
    store = SqlWitnessStateStore(engine)
    assert await store.get(ORIGIN) is None
    assert await store.compare_and_set(ORIGIN, None, TreeHead(1, _root(1)))
    assert not await store.compare_and_set(ORIGIN, None, TreeHead(2, _root(2)))
    assert await store.get(ORIGIN) == TreeHead(1, _root(1))
    # A stale expectation (wrong size, or right size with another root) stores nothing.
    assert not await store.compare_and_set(ORIGIN, TreeHead(2, _root(1)), TreeHead(3, _root(3)))
    assert not await store.compare_and_set(ORIGIN, TreeHead(1, _root(9)), TreeHead(3, _root(3)))
    assert await store.compare_and_set(ORIGIN, TreeHead(1, _root(1)), TreeHead(2**63 - 1, _root(3)))
    assert await store.get(ORIGIN) == TreeHead(2**63 - 1, _root(3))
    assert await store.get("other") is None
    with pytest.raises(StoreError):
        await store.compare_and_set("other", None, TreeHead(2**63, _root(1)))


async def test_state_survives_a_new_engine(url: str, engine: AsyncEngine) -> None:
    assert await SqlWitnessStateStore(engine).compare_and_set(ORIGIN, None, TreeHead(4, _root(4)))
    other = create_engine(url)
    try:
        assert await SqlWitnessStateStore(other).get(ORIGIN) == TreeHead(4, _root(4))
    finally:
        await other.dispose()


@pytest.mark.parametrize("start", [None, TreeHead(1, _root(1))])
async def test_concurrent_compare_and_set_has_one_winner(
    url: str, engine: AsyncEngine, start: TreeHead | None
) -> None:
    """Several writers, each on its own engine (own connections), race from the same state."""
    if start is not None:
        assert await SqlWitnessStateStore(engine).compare_and_set(ORIGIN, None, start)
    engines = [create_engine(url) for _ in range(4)]
    try:
        stores = [SqlWitnessStateStore(e) for e in engines]
        # Warm each pool so the race is between statements, not connection set-up.
        await asyncio.gather(*(s.get(ORIGIN) for s in stores))
        results = await asyncio.gather(
            *(
                s.compare_and_set(ORIGIN, start, TreeHead(10 + i, _root(10 + i)))
                for i, s in enumerate(stores)
            )
        )
    finally:
        for e in engines:
            await e.dispose()
    assert sorted(results) == [False, False, False, True]
    winner = results.index(True)
    assert await SqlWitnessStateStore(engine).get(ORIGIN) == TreeHead(
        10 + winner, _root(10 + winner)
    )


async def test_witness_over_sql_store(url: str, engine: AsyncEngine) -> None:
    """Two witness nodes on one database: a checkpoint is cosigned at most once per old size."""
    log_key = Ed25519PrivateKey.generate()
    logs = {ORIGIN: [Verifier.for_key(ORIGIN, SignatureType.ED25519, log_key)]}
    witness_key = Ed25519PrivateKey.generate()
    tree = MemoryTree()
    for i in range(7):
        tree.append(leaf_hash(bytes([i])))

    def signed(size: int) -> str:
        body = Checkpoint(origin=ORIGIN, size=size, root=tree.root(size)).body()
        return sign_note(body, ORIGIN, log_key)

    first = Witness(name="w", key=witness_key, logs=logs, store=SqlWitnessStateStore(engine))
    await first.add_checkpoint(0, [], signed(3))
    other_engine = create_engine(url)
    try:
        second = Witness(
            name="w", key=witness_key, logs=logs, store=SqlWitnessStateStore(other_engine)
        )
        results = await asyncio.gather(
            first.add_checkpoint(3, tree.consistency_proof(3, 5), signed(5)),
            second.add_checkpoint(3, tree.consistency_proof(3, 7), signed(7)),
            return_exceptions=True,
        )
    finally:
        await other_engine.dispose()
    assert sum(isinstance(r, list) for r in results) == 1
    assert sum(isinstance(r, WitnessConflictError) for r in results) == 1
    head = await SqlWitnessStateStore(engine).get(ORIGIN)
    assert head in (TreeHead(5, tree.root(5)), TreeHead(7, tree.root(7)))
