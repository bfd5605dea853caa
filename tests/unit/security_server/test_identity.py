"""The server identity's batching signer: the headers signed in one loop turn share one ECDSA
signature (docs/adr/0010-batch-signatures.md), each message still verifying on its own."""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass

import pytest
from cryptography import x509

from ruta.ids import MemberId, ServerId
from ruta.pki.keys import FileSigner
from ruta.pki.ocsp import OcspClient
from ruta.pki.signature import MAX_BATCH_SIZE, MessageVerifier
from ruta.pki.testing import TestPki
from ruta.v1 import transport_pb2
from security_server.errors import SigningError
from security_server.identity import ServerIdentity

POP = MemberId.parse("LAC/GOV/POP")
SERVER = ServerId(POP, "ss1")


@dataclass
class World:
    pki: TestPki
    identity: ServerIdentity
    staple: bytes
    verifier: MessageVerifier
    now: datetime.datetime
    #: The data of every ECDSA signature made (by any FileSigner) during the test.
    signed: list[bytes]

    def check(self, header_bytes: bytes, signature: transport_pb2.Signature) -> None:
        self.verifier.verify(header_bytes, signature, claimed_member=POP, signed_at=self.now)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def world(pki: TestPki, monkeypatch: pytest.MonkeyPatch) -> World:
    auth = pki.auth(SERVER)
    signing = pki.sign(POP)
    identity = ServerIdentity.from_files(
        server=SERVER,
        auth_cert=auth.cert_path,
        signing_key=signing.key_path,
        signing_cert=signing.cert_path,
        ocsp=OcspClient(),
    )
    signed: list[bytes] = []
    real_sign = FileSigner.sign

    def counting_sign(self: FileSigner, data: bytes) -> bytes:
        signed.append(data)
        return real_sign(self, data)

    monkeypatch.setattr(FileSigner, "sign", counting_sign)
    return World(
        pki=pki,
        identity=identity,
        staple=pki.ocsp_response(signing.certificate),
        verifier=MessageVerifier(pki.trust_anchors),
        now=datetime.datetime.now(datetime.UTC),
        signed=signed,
    )


def header(i: int) -> bytes:
    return transport_pb2.MessageHeader(message_id=f"m-{i}", method="GetPerson").SerializeToString()


async def test_concurrent_callers_share_one_ecdsa_signature(world: World) -> None:
    n = 10
    headers = [header(i) for i in range(n)]
    signatures = await asyncio.gather(
        *(world.identity.sign_batched(h, staple=world.staple) for h in headers)
    )
    assert len(world.signed) == 1
    assert world.identity.batching_signer.batches == 1
    for i, (h, sig) in enumerate(zip(headers, signatures, strict=True)):
        assert (sig.batch.index, sig.batch.size) == (i, n)
        assert sig.ocsp_response == world.staple
        world.check(h, sig)


async def test_a_lone_caller_gets_a_plain_signature(world: World) -> None:
    first = await world.identity.sign_batched(header(1), staple=world.staple)
    second = await world.identity.sign_batched(header(2), staple=world.staple)
    assert not first.HasField("batch")
    assert not second.HasField("batch")
    assert len(world.signed) == 2
    world.check(header(1), first)
    world.check(header(2), second)
    # sign() is unchanged: plain, at once.
    plain = world.identity.sign(header(3), staple=world.staple)
    assert not plain.HasField("batch")
    world.check(header(3), plain)


async def test_a_cancelled_caller_leaves_the_others_signed(world: World) -> None:
    headers = [header(i) for i in range(5)]
    tasks = [
        asyncio.create_task(world.identity.sign_batched(h, staple=world.staple)) for h in headers
    ]
    await asyncio.sleep(0)  # every task has submitted its header; the flush has not run
    assert world.signed == []
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert len(world.signed) == 1
    kept = [(h, r) for i, (h, r) in enumerate(zip(headers, results, strict=True)) if i != 2]
    for index, (h, sig) in enumerate(kept):
        assert isinstance(sig, transport_pb2.Signature)
        assert (sig.batch.index, sig.batch.size) == (index, 4)
        world.check(h, sig)


async def test_every_caller_cancelled_signs_nothing(world: World) -> None:
    tasks = [
        asyncio.create_task(world.identity.sign_batched(header(i), staple=world.staple))
        for i in range(3)
    ]
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)
    assert world.signed == []
    # The next caller starts a new batch.
    sig = await world.identity.sign_batched(header(9), staple=world.staple)
    world.check(header(9), sig)


def _break_the_key(monkeypatch: pytest.MonkeyPatch) -> RuntimeError:
    """Make every signature fail (until ``monkeypatch.undo()``) with the error returned."""
    boom = RuntimeError("the key is gone")

    def failing_sign(self: FileSigner, data: bytes) -> bytes:
        raise boom

    monkeypatch.setattr(FileSigner, "sign", failing_sign)
    return boom


async def test_a_signing_failure_fails_every_caller_of_the_batch(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    boom = _break_the_key(monkeypatch)
    results = await asyncio.gather(
        *(world.identity.sign_batched(header(i), staple=world.staple) for i in range(4)),
        return_exceptions=True,
    )
    assert all(r is boom for r in results)
    # The batcher recovers: the next batch signs (once the key works again).
    monkeypatch.undo()
    sig = await world.identity.sign_batched(header(5), staple=world.staple)
    world.check(header(5), sig)


async def test_batches_never_exceed_the_bound(world: World) -> None:
    n = MAX_BATCH_SIZE + 3
    headers = [header(i) for i in range(n)]
    signatures = await asyncio.gather(
        *(world.identity.sign_batched(h, staple=world.staple) for h in headers)
    )
    assert len(world.signed) == 2
    assert [s.batch.size for s in signatures[:MAX_BATCH_SIZE]] == [MAX_BATCH_SIZE] * MAX_BATCH_SIZE
    assert [(s.batch.index, s.batch.size) for s in signatures[MAX_BATCH_SIZE:]] == [
        (0, 3),
        (1, 3),
        (2, 3),
    ]
    for i in (0, MAX_BATCH_SIZE - 1, MAX_BATCH_SIZE, n - 1):
        world.check(headers[i], signatures[i])


async def test_headers_with_different_staples_are_signed_apart(world: World) -> None:
    other = world.pki.ocsp_response(world.identity.signing_certificate)
    assert other != world.staple
    staples = [world.staple, other, world.staple, other, world.staple]
    signatures = await asyncio.gather(
        *(world.identity.sign_batched(header(i), staple=s) for i, s in enumerate(staples))
    )
    assert len(world.signed) == 2
    assert [s.batch.size for s in signatures] == [3, 2, 3, 2, 3]
    for i, (sig, staple) in enumerate(zip(signatures, staples, strict=True)):
        assert sig.ocsp_response == staple
        world.check(header(i), sig)


def test_the_identity_stays_a_value(world: World) -> None:
    assert "batching_signer" not in repr(world.identity)
    assert world.identity == world.identity


async def test_a_held_batch_gathers_callers_of_later_loop_turns(world: World) -> None:
    # Under load the first caller holds the batch open: callers arriving in later loop turns,
    # before the hold ends, join it; each message still verifies on its own.
    first = asyncio.create_task(
        world.identity.sign_batched(header(0), staple=world.staple, hold=0.05)
    )
    await asyncio.sleep(0)
    await asyncio.sleep(0.005)
    later = asyncio.create_task(world.identity.sign_batched(header(1), staple=world.staple))
    signatures = await asyncio.gather(first, later)
    assert len(world.signed) == 1
    for i, sig in enumerate(signatures):
        assert (sig.batch.index, sig.batch.size) == (i, 2)
        world.check(header(i), sig)


async def test_a_full_held_batch_is_signed_without_waiting_out_the_hold(world: World) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    headers = [header(i) for i in range(MAX_BATCH_SIZE)]
    signatures = await asyncio.gather(
        world.identity.sign_batched(headers[0], staple=world.staple, hold=30.0),
        *(world.identity.sign_batched(h, staple=world.staple) for h in headers[1:]),
    )
    assert loop.time() - started < 30.0  # the hold did not have to pass
    assert len(world.signed) == 1
    assert world.identity.batching_signer.signed == MAX_BATCH_SIZE
    world.check(headers[-1], signatures[-1])


async def test_a_caller_alone_is_signed_at_once(world: World) -> None:
    # The only exchange in flight: signed before the call returns to the loop (no loop turn),
    # a plain signature, counted as a batch of one.
    task = asyncio.create_task(
        world.identity.sign_batched(header(1), staple=world.staple, alone=True)
    )
    await asyncio.sleep(0)
    assert task.done()
    sig = task.result()
    assert not sig.HasField("batch")
    world.check(header(1), sig)
    assert (world.identity.batching_signer.batches, world.identity.batching_signer.signed) == (1, 1)


async def test_a_caller_alone_joins_a_batch_already_open(world: World) -> None:
    # Another caller (say the other proxy's) opened a batch this loop turn: joining it is free.
    first = asyncio.create_task(world.identity.sign_batched(header(0), staple=world.staple))
    second = asyncio.create_task(
        world.identity.sign_batched(header(1), staple=world.staple, alone=True)
    )
    signatures = await asyncio.gather(first, second)
    assert len(world.signed) == 1
    for i, sig in enumerate(signatures):
        assert (sig.batch.index, sig.batch.size) == (i, 2)
        world.check(header(i), sig)


async def test_a_signing_failure_reaches_a_caller_alone(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    boom = _break_the_key(monkeypatch)
    with pytest.raises(RuntimeError) as raised:
        await world.identity.sign_batched(header(1), staple=world.staple, alone=True)
    assert raised.value is boom


async def test_a_cached_staple_is_what_staple_returns_without_waiting(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[bytes] = []
    identity = world.identity

    async def fetch(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
        fetched.append(world.pki.ocsp_response(cert))
        return fetched[-1]

    monkeypatch.setattr(identity.ocsp, "_fetch", fetch)
    anchors = world.pki.trust_anchors
    assert identity.cached_staple(anchors) is None  # nothing held yet: only staple() gets one
    staple = await identity.staple(anchors)
    assert fetched == [staple]
    assert identity.cached_staple(anchors) == staple
    assert await identity.staple(anchors) == staple  # from the cache: no second fetch
    assert len(fetched) == 1
    # No anchor names the signing certificate's issuer: both refuse alike.
    with pytest.raises(SigningError):
        identity.cached_staple(())
    with pytest.raises(SigningError):
        await identity.staple(())


async def test_serialised_signatures_alone_and_batched(world: World) -> None:
    """sign_batched_serialised gives the value and the serialised Signature: alone (no batch
    open) written without a message, in a batch the batch's signature serialised; each
    verifies and is counted as sign_batched counts it."""
    signer = world.identity.batching_signer
    value, encoded = await world.identity.sign_batched_serialised(
        header(1), staple=world.staple, alone=True
    )
    alone = transport_pb2.Signature.FromString(encoded)
    assert alone.value == value
    assert not alone.HasField("batch")
    assert alone.SerializeToString(deterministic=True) == encoded
    world.check(header(1), alone)
    assert (signer.batches, signer.signed) == (1, 1)
    together = await asyncio.gather(
        *(world.identity.sign_batched_serialised(header(i), staple=world.staple) for i in (2, 3))
    )
    assert (signer.batches, signer.signed) == (2, 3)
    for i, (value, encoded) in zip((2, 3), together, strict=True):
        signature = transport_pb2.Signature.FromString(encoded)
        assert signature.value == value
        assert (signature.batch.index, signature.batch.size) == (i - 2, 2)
        assert signature.SerializeToString(deterministic=True) == encoded
        world.check(header(i), signature)
