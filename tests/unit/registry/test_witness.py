"""The witness: tlog-witness semantics over the in-memory store, request parsing, and HTTP."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import ClientSession, web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.witness import (
    MAX_PROOF_LINES,
    MemoryWitnessStateStore,
    TreeHead,
    UnknownLogError,
    Witness,
    WitnessConflictError,
    WitnessProofError,
    WitnessRequestError,
    WitnessSignatureError,
    parse_add_checkpoint_request,
)
from registry.witness_http import SIZE_CONTENT_TYPE, witness_app
from ruta.checkpoint import (
    Checkpoint,
    SignatureType,
    Verifier,
    sign_note,
    verify_cosignature,
    verify_note,
)
from ruta.faults import FAULT_HEADER, Fault
from ruta.merkle import EMPTY_ROOT, MemoryTree, leaf_hash
from ruta.witness_client import (
    WitnessClient,
    WitnessClientError,
    WitnessRefusedError,
    WitnessSizeConflictError,
)
from tests.conftest import free_port

ORIGIN = "ruta.example/LAC/GOV/POP/ss1"
WITNESS_NAME = "registry.example/witness"
NOW = 1_780_000_000


@dataclass
class Log:
    """A security server's log as the witness sees it: a tree and a checkpoint key."""

    key: Ed25519PrivateKey
    tree: MemoryTree
    origin: str = ORIGIN

    @property
    def verifier(self) -> Verifier:
        return Verifier.for_key(self.origin, SignatureType.ED25519, self.key)

    def grow(self, count: int) -> None:
        for _ in range(count):
            self.tree.append(leaf_hash(self.tree.size.to_bytes(8, "big")))

    def checkpoint(self, size: int | None = None, *, key: Ed25519PrivateKey | None = None) -> str:
        size = self.tree.size if size is None else size
        body = Checkpoint(origin=self.origin, size=size, root=self.tree.root(size)).body()
        return sign_note(body, self.origin, key or self.key)


@pytest.fixture
def log() -> Log:
    return Log(key=Ed25519PrivateKey.generate(), tree=MemoryTree())


@pytest.fixture
def store() -> MemoryWitnessStateStore:
    return MemoryWitnessStateStore()


@pytest.fixture
def witness(log: Log, store: MemoryWitnessStateStore) -> Witness:
    return Witness(
        name=WITNESS_NAME,
        key=Ed25519PrivateKey.generate(),
        logs={ORIGIN: [log.verifier]},
        store=store,
        clock=lambda: NOW,
    )


async def test_first_checkpoint_and_growth_are_cosigned(
    log: Log, witness: Witness, store: MemoryWitnessStateStore
) -> None:
    log.grow(5)
    lines = await witness.add_checkpoint(0, [], log.checkpoint())
    assert len(lines) == 1
    body = Checkpoint(origin=ORIGIN, size=5, root=log.tree.root()).body()
    assert verify_cosignature(body, lines[0], witness.verifier) == NOW
    # The response appended to the checkpoint verifies as a note with both keys.
    verified = verify_note(log.checkpoint() + lines[0], [log.verifier, witness.verifier])
    assert [t for _, t in verified.verified] == [None, NOW]
    assert await store.get(ORIGIN) == TreeHead(5, log.tree.root())

    log.grow(8)
    await witness.add_checkpoint(5, log.tree.consistency_proof(5), log.checkpoint())
    assert await store.get(ORIGIN) == TreeHead(13, log.tree.root())
    # Same size again, same root: cosigned again.
    await witness.add_checkpoint(13, [], log.checkpoint())


async def test_old_size_must_be_last_cosigned(log: Log, witness: Witness) -> None:
    log.grow(4)
    await witness.add_checkpoint(0, [], log.checkpoint())
    log.grow(4)
    for old in (0, 3, 5):
        proof = log.tree.consistency_proof(old) if old else []
        with pytest.raises(WitnessConflictError) as info:
            await witness.add_checkpoint(old, proof, log.checkpoint())
        assert info.value.known_size == 4
        assert info.value.http_status == 409
        assert info.value.fault is Fault.SERVER_REGISTRY_INVALID_CHECKPOINT


async def test_fork_is_refused(log: Log, witness: Witness, store: MemoryWitnessStateStore) -> None:
    log.grow(4)
    await witness.add_checkpoint(0, [], log.checkpoint())
    fork = Log(key=log.key, tree=MemoryTree())
    for i in range(6):
        fork.tree.append(leaf_hash(b"other" + bytes([i])))
    with pytest.raises(WitnessProofError) as info:
        await witness.add_checkpoint(4, fork.tree.consistency_proof(4), fork.checkpoint())
    assert info.value.http_status == 422
    # Same size, other root: a conflict.
    with pytest.raises(WitnessConflictError):
        await witness.add_checkpoint(4, [], fork.checkpoint(4))
    assert await store.get(ORIGIN) == TreeHead(4, log.tree.root())


async def test_refusals(log: Log, witness: Witness) -> None:
    log.grow(3)
    with pytest.raises(WitnessSignatureError) as sig:
        await witness.add_checkpoint(0, [], log.checkpoint(key=Ed25519PrivateKey.generate()))
    assert sig.value.http_status == 403
    stranger = Log(key=Ed25519PrivateKey.generate(), tree=log.tree, origin="elsewhere.example/log")
    with pytest.raises(UnknownLogError) as unknown:
        await witness.add_checkpoint(0, [], stranger.checkpoint())
    assert unknown.value.http_status == 404
    with pytest.raises(WitnessRequestError):
        await witness.add_checkpoint(4, [], log.checkpoint())  # old size above the checkpoint
    with pytest.raises(WitnessRequestError):
        await witness.add_checkpoint(0, [EMPTY_ROOT], log.checkpoint())  # proof from size 0
    with pytest.raises(WitnessRequestError):
        await witness.add_checkpoint(0, [], "not a note")
    bad_empty = sign_note(Checkpoint(origin=ORIGIN, size=0, root=bytes(32)).body(), ORIGIN, log.key)
    with pytest.raises(WitnessProofError):
        await witness.add_checkpoint(0, [], bad_empty)


async def test_set_logs_replaces_known_origins(log: Log, witness: Witness) -> None:
    log.grow(1)
    witness.set_logs({})
    with pytest.raises(UnknownLogError):
        await witness.add_checkpoint(0, [], log.checkpoint())
    witness.set_logs({ORIGIN: [log.verifier]})
    await witness.add_checkpoint(0, [], log.checkpoint())


async def test_node_logs_of_a_server_are_witnessed_with_its_key(
    log: Log, witness: Witness, store: MemoryWitnessStateStore
) -> None:
    """A server's nodes and workers keep node logs ``<origin>/<name>`` signed with the server's
    registered key under the node log's name (ruta.node_logs): each is witnessed on its own."""
    node = Log(key=log.key, tree=MemoryTree(), origin=f"{ORIGIN}/w1")
    node.grow(3)
    await witness.add_checkpoint(0, [], node.checkpoint())
    assert await store.get(f"{ORIGIN}/w1") == TreeHead(3, node.tree.root())
    assert await store.get(ORIGIN) is None  # the server's own tree is another tree
    # Signed by another key, or under the server's own name: not trusted.
    stranger = Log(key=Ed25519PrivateKey.generate(), tree=node.tree, origin=f"{ORIGIN}/b")
    with pytest.raises(WitnessSignatureError):
        await witness.add_checkpoint(0, [], stranger.checkpoint())
    body = Checkpoint(origin=f"{ORIGIN}/b", size=3, root=node.tree.root()).body()
    with pytest.raises(WitnessSignatureError):
        await witness.add_checkpoint(0, [], sign_note(body, ORIGIN, log.key))
    # Not a node log name, or a node log of an unknown server.
    for origin in (f"{ORIGIN}/", f"{ORIGIN}/.w1", "elsewhere.example/x/w1"):
        odd = Log(key=log.key, tree=node.tree, origin=origin)
        with pytest.raises((UnknownLogError, WitnessRequestError)):
            await witness.add_checkpoint(0, [], odd.checkpoint())


class _InterleavingStore(MemoryWitnessStateStore):
    """The in-memory store with a scheduling point in ``get``, so requests interleave."""

    async def get(self, origin: str) -> TreeHead | None:
        head = await super().get(origin)
        await asyncio.sleep(0)
        return head


async def test_lost_compare_and_set_is_a_conflict(log: Log) -> None:
    """Two requests from the same old size pass every check; the CAS lets exactly one through."""
    store = _InterleavingStore()
    witness = Witness(
        name=WITNESS_NAME,
        key=Ed25519PrivateKey.generate(),
        logs={ORIGIN: [log.verifier]},
        store=store,
    )
    log.grow(2)
    await witness.add_checkpoint(0, [], log.checkpoint())
    log.grow(3)
    first = log.checkpoint()
    log.grow(3)
    second = log.checkpoint()
    results = await asyncio.gather(
        witness.add_checkpoint(2, log.tree.consistency_proof(2, 5), first),
        witness.add_checkpoint(2, log.tree.consistency_proof(2, 8), second),
        return_exceptions=True,
    )
    assert sum(isinstance(r, list) for r in results) == 1
    conflicts = [r for r in results if isinstance(r, WitnessConflictError)]
    assert len(conflicts) == 1
    assert "same time" in conflicts[0].message
    assert (await store.get(ORIGIN)) in (
        TreeHead(5, log.tree.root(5)),
        TreeHead(8, log.tree.root()),
    )


def _request(old: int, proof: list[bytes], checkpoint: str) -> bytes:
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]
    return ("\n".join(lines) + "\n\n" + checkpoint).encode()


def test_parse_request() -> None:
    parsed = parse_add_checkpoint_request(_request(7, [EMPTY_ROOT, EMPTY_ROOT], "cp\n\n— x y\n"))
    assert parsed.old_size == 7
    assert parsed.proof == (EMPTY_ROOT, EMPTY_ROOT)
    assert parsed.checkpoint == "cp\n\n— x y\n"


_B64 = base64.b64encode(EMPTY_ROOT).decode()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 1\n",
        b"old 01\n\ncp\n",
        b"old -1\n\ncp\n",
        b"old  1\n\ncp\n",
        b"Old 1\n\ncp\n",
        b"old 1\nnot-base64\n\ncp\n",
        f"old 1\n{_B64[:-4]}\n\ncp\n".encode(),
        ("old 1\n" + (_B64 + "\n") * (MAX_PROOF_LINES + 1) + "\ncp\n").encode(),
        b"old 1\xff\n\ncp\n",
        b"old 1\n\n" + b"x" * 100_000,
    ],
)
def test_parse_bad_requests(body: bytes) -> None:
    with pytest.raises(WitnessRequestError):
        parse_add_checkpoint_request(body)


@pytest.fixture
async def witness_url(witness: Witness) -> AsyncIterator[str]:
    runner = web.AppRunner(witness_app(witness))
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_http_add_checkpoint(log: Log, witness: Witness, witness_url: str) -> None:
    url = witness_url + "/add-checkpoint"
    log.grow(3)
    async with ClientSession() as session:
        async with session.post(url, data=_request(0, [], log.checkpoint())) as resp:
            assert resp.status == 200
            text = await resp.text()
        body = Checkpoint(origin=ORIGIN, size=3, root=log.tree.root()).body()
        assert verify_cosignature(body, text, witness.verifier) == NOW

        log.grow(2)
        async with session.post(url, data=_request(1, [], log.checkpoint())) as resp:
            assert resp.status == 409
            assert resp.headers["Content-Type"] == SIZE_CONTENT_TYPE
            assert await resp.text() == "3\n"
            assert resp.headers[FAULT_HEADER] == "server.registry.invalid_checkpoint"

        wrong_proof = [EMPTY_ROOT] * len(log.tree.consistency_proof(3))
        async with session.post(url, data=_request(3, wrong_proof, log.checkpoint())) as resp:
            assert resp.status == 422

        forged = log.checkpoint(key=Ed25519PrivateKey.generate())
        async with session.post(url, data=_request(3, [], forged)) as resp:
            assert resp.status == 403

        async with session.post(url, data=b"garbage") as resp:
            assert resp.status == 400

        async with session.post(url, data=b"x" * 200_000) as resp:
            assert resp.status in (400, 413)

        proof = log.tree.consistency_proof(3)
        async with session.post(url, data=_request(3, proof, log.checkpoint())) as resp:
            assert resp.status == 200


async def test_witness_client_against_the_witness(
    log: Log, witness: Witness, witness_url: str
) -> None:
    async with ClientSession() as session:
        client = WitnessClient(url=witness_url, verifier=witness.verifier, session=session)
        log.grow(4)
        cosig = await client.add_checkpoint(0, [], log.checkpoint())
        assert cosig.timestamp == NOW
        verify_note(log.checkpoint() + cosig.line, [log.verifier, witness.verifier])
        log.grow(3)
        with pytest.raises(WitnessSizeConflictError) as info:
            await client.add_checkpoint(0, [], log.checkpoint())
        assert info.value.known_size == 4
        with pytest.raises(WitnessRefusedError) as refused:
            await client.add_checkpoint(4, [EMPTY_ROOT], log.checkpoint())
        assert refused.value.status == 422
        cosig = await client.add_checkpoint(4, log.tree.consistency_proof(4), log.checkpoint())
        assert cosig.line.startswith("— " + WITNESS_NAME + " ")
        # A client configured with another witness key does not believe the answer.
        impostor = Verifier.for_key(
            WITNESS_NAME, SignatureType.COSIGNATURE_V1, Ed25519PrivateKey.generate()
        )
        other = WitnessClient(url=witness_url, verifier=impostor, session=session)
        with pytest.raises(WitnessClientError) as bad:
            await other.add_checkpoint(7, [], log.checkpoint())
        assert bad.value.fault is Fault.SERVER_PROVIDER_WITNESS_UNAVAILABLE


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.lists(
            st.sampled_from(
                [b"old ", b"0", b"1", b"\n", b"\n\n", _B64.encode(), b"=", b"\xe2\x80\x94 "]
            ),
            max_size=40,
        ).map(b"".join),
    )
)
def test_request_parser_is_total(body: bytes) -> None:
    try:
        parsed = parse_add_checkpoint_request(body)
    except WitnessRequestError:
        return
    assert parsed.old_size >= 0
    assert all(len(h) == 32 for h in parsed.proof)


async def test_cosignature_times_of_a_log_never_go_backwards(
    log: Log, store: MemoryWitnessStateStore
) -> None:
    """The registry's clock stepping back (NTP) does not make a larger checkpoint look older
    than a smaller one: auditors' verifiers refuse that (checkpoint.time_backwards)."""
    times = iter([NOW, NOW - 30])
    witness = Witness(
        name=WITNESS_NAME,
        key=Ed25519PrivateKey.generate(),
        logs={ORIGIN: [log.verifier]},
        store=store,
        clock=lambda: next(times),
    )
    log.grow(3)
    first = await witness.add_checkpoint(0, [], log.checkpoint())
    body = Checkpoint(origin=ORIGIN, size=3, root=log.tree.root()).body()
    assert verify_cosignature(body, first[0], witness.verifier) == NOW
    log.grow(2)
    second = await witness.add_checkpoint(3, log.tree.consistency_proof(3), log.checkpoint())
    body = Checkpoint(origin=ORIGIN, size=5, root=log.tree.root()).body()
    assert verify_cosignature(body, second[0], witness.verifier) == NOW
