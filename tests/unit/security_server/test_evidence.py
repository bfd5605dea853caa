"""Evidence bundles exported from real message logs (SQLite files, real signatures, a real
witness) and verified offline with ``ruta audit verify``; tampering with the server's database
is caught and the failing record named."""

from __future__ import annotations

import dataclasses
import io
import json
import sqlite3
import zipfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from ruta.evidence import reconcile, verify_bundle
from ruta.evidence.attachments import SHARE_MIN_BATCH, AttachmentKind
from ruta.evidence.cli import group
from ruta.v1 import log_pb2
from security_server import evidence
from security_server.evidence import EvidenceError, EvidenceFilter
from security_server.log import BodyCipher, LogKeyError, MessageLog
from tests.unit.security_server.evidence_support import Scenario, Side, cosign_head, scenario

# 4 exchanges: each side logs 8 records (request and response per exchange).
EXCHANGES = 4


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[Scenario]:
    async with scenario(tmp_path, exchanges=EXCHANGES) as built:
        yield built


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(group, list(args))
    return result.exit_code, result.output


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


async def test_untouched_bundles_verify_and_reconcile(world: Scenario, tmp_path: Path) -> None:
    consumer = _write(tmp_path / "soc.zip", await world.export(world.consumer))
    provider = _write(tmp_path / "pop.zip", await world.export(world.provider))
    anchor = tmp_path / "anchor.toml"
    anchor.write_text(world.anchor.to_toml())
    for bundle in (consumer, provider):
        code, out = _run("verify", bundle, "--anchor", str(anchor))
        assert code == 0, out
        assert "RESULT: VERIFIED" in out
    code, out = _run("verify", provider, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] is True
    assert len(report["records"]) == 2 * EXCHANGES
    assert all(r["body"] == "stored, digest ok" for r in report["records"])
    assert any("not pinned" in w for w in report["warnings"])
    code, out = _run("reconcile", consumer, provider)
    assert code == 0, out
    assert f"identical: {EXCHANGES}" in out


async def test_filtered_export_verifies(world: Scenario) -> None:
    message_id = world.message_ids[2]
    bundle = await world.export(world.provider, EvidenceFilter(message_id=message_id))
    report = verify_bundle(bundle)
    assert report.ok, report.first_failure
    assert [r.message_id for r in report.records] == [message_id, message_id]
    assert [r.kind for r in report.records] == ["request", "response"]


async def test_bodies_over_the_bundle_bound_are_refused_before_they_are_read(
    world: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[int] = []
    real = MessageLog.get_bodies

    async def counting(self: MessageLog, seqs: Sequence[int]) -> dict[int, bytes | LogKeyError]:
        read.extend(seqs)
        return await real(self, seqs)

    monkeypatch.setattr(MessageLog, "get_bodies", counting)
    monkeypatch.setattr(evidence, "MAX_BUNDLE_BODY_BYTES", 10)
    with pytest.raises(EvidenceError, match="bodies exceed 10 bytes"):
        await world.export(world.provider)
    assert read == []
    monkeypatch.setattr(evidence, "MAX_BUNDLE_BODY_BYTES", 1 << 20)
    assert verify_bundle(await world.export(world.provider)).ok
    assert read


async def test_a_second_request_under_a_used_message_id_still_verifies(world: Scenario) -> None:
    """Issue 12, finding 3: a consumer log holding two requests with one message id (the second
    refused by the provider as a replay) verifies: a response is bound to the request its
    ``request_hash`` names, not to whichever request last carried its message id."""
    message_id = world.message_ids[0]
    await world.repeated_request(message_id)
    await world.exchange("person-after")
    await world.checkpoint()
    report = verify_bundle(await world.export(world.consumer))
    assert report.ok, report.text()
    assert [r.kind for r in report.records if r.message_id == message_id] == [
        "request",
        "response",
        "request",
    ]


@pytest.mark.parametrize("batch_size", [3, SHARE_MIN_BATCH + 1])
async def test_batch_signed_records_verify(
    world: Scenario, tmp_path: Path, batch_size: int
) -> None:
    """Records whose messages were signed in batches (one signature over a Merkle root, each
    record carrying its path) verify offline like plainly signed ones; from a batch of
    SHARE_MIN_BATCH on, the part the batch shares is named by digest and carried once."""
    batched = await world.exchanges([f"batch-{i}" for i in range(batch_size)], batched=True)
    await world.checkpoint()
    for side in (world.consumer, world.provider):
        report = verify_bundle(await world.export(side))
        assert report.ok, report.first_failure
        assert len(report.records) == 2 * (EXCHANGES + batch_size)
    bundle = await world.export(world.provider, EvidenceFilter(message_id=batched[1]))
    report = verify_bundle(bundle)
    assert report.ok, report.first_failure
    assert [r.message_id for r in report.records] == [batched[1], batched[1]]
    # The records hold the batch signatures as sent: one value, each with its own path; the
    # certificate and OCSP response by digest, each carried once in the bundle.
    paths = []
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        names = archive.namelist()
        for name in names:
            if name.startswith("records/"):
                record = log_pb2.LogRecord.FromString(archive.read(name))
                assert not record.signature
                signature = record.signature_ref
                assert signature.HasField("batch")
                paths.append((signature.batch.index, signature.batch.size))
                shared = signature.shared_sha256
                assert bool(shared) is (batch_size >= SHARE_MIN_BATCH)
                if shared:
                    assert not signature.value
                    signature = log_pb2.LoggedSignature.FromString(
                        archive.read(f"signatures/{shared.hex()}.pb")
                    )
                assert f"certificates/{signature.certificate_sha256.hex()}.der" in names
                assert f"ocsp/{signature.ocsp_response_sha256.hex()}.der" in names
    assert paths == [(1, batch_size), (1, batch_size)]
    consumer = _write(tmp_path / "soc.zip", await world.export(world.consumer))
    code, out = _run("verify", consumer)
    assert code == 0, out
    assert "RESULT: VERIFIED" in out


async def test_a_changed_shared_signature_fails_naming_the_record(
    world: Scenario, tmp_path: Path
) -> None:
    """The shared part of a batch signature, stored once, changed in the database: the
    first record naming it fails, by name, and so does every other of its batch."""
    await world.exchanges([f"batch-{i}" for i in range(SHARE_MIN_BATCH)], batched=True)
    await world.checkpoint()
    side = world.provider
    with sqlite3.connect(side.db_path) as db:
        rows = db.execute(
            "SELECT digest, content FROM log_attachments WHERE kind = ?",
            (int(AttachmentKind.SHARED_SIGNATURE),),
        ).fetchall()
        assert len(rows) == 2  # the requests' batch and the responses'
        for digest, content in rows:
            part = log_pb2.LoggedSignature.FromString(content)
            part.value = bytes(len(part.value))
            db.execute(
                "UPDATE log_attachments SET content = ? WHERE digest = ?",
                (part.SerializeToString(), digest),
            )
    bundle = _write(tmp_path / "pop.zip", await world.export(side))
    code, out = _run("verify", bundle)
    assert code == 1, out
    assert f"RESULT: FAILED: record {2 * EXCHANGES}" in out
    report = verify_bundle(await world.export(side))
    failed = [r.seq for r in report.records if not r.ok]
    assert failed == list(range(2 * EXCHANGES, 2 * (EXCHANGES + SHARE_MIN_BATCH)))


def _flip_leaf_byte(db: sqlite3.Connection, origin: str, seq: int) -> None:
    (record,) = db.execute(
        "SELECT record FROM log_leaves WHERE origin = ? AND seq = ?", (origin, seq)
    ).fetchone()
    changed = bytearray(record)
    changed[len(changed) // 2] ^= 0x01
    db.execute(
        "UPDATE log_leaves SET record = ? WHERE origin = ? AND seq = ?",
        (bytes(changed), origin, seq),
    )


def _leaf_time_out_of_range(db: sqlite3.Connection, origin: str, seq: int) -> None:
    (record,) = db.execute(
        "SELECT record FROM log_leaves WHERE origin = ? AND seq = ?", (origin, seq)
    ).fetchone()
    parsed = log_pb2.LogRecord.FromString(record)
    parsed.logged_at.seconds = 2**62
    db.execute(
        "UPDATE log_leaves SET record = ? WHERE origin = ? AND seq = ?",
        (parsed.SerializeToString(), origin, seq),
    )


def _delete(db: sqlite3.Connection, origin: str, seq: int) -> None:
    db.execute("DELETE FROM log_bodies WHERE origin = ? AND seq = ?", (origin, seq))
    db.execute("DELETE FROM log_leaves WHERE origin = ? AND seq = ?", (origin, seq))


def _swap(db: sqlite3.Connection, origin: str, a: int, b: int) -> None:
    rows = {
        seq: db.execute(
            "SELECT record, leaf_hash FROM log_leaves WHERE origin = ? AND seq = ?", (origin, seq)
        ).fetchone()
        for seq in (a, b)
    }
    for seq, other in ((a, b), (b, a)):
        db.execute(
            "UPDATE log_leaves SET record = ?, leaf_hash = ? WHERE origin = ? AND seq = ?",
            (*rows[other], origin, seq),
        )


def _truncate(db: sqlite3.Connection, origin: str, size: int, keep: int) -> None:
    for seq in range(keep, size):
        _delete(db, origin, seq)


def _substitute_body(side: Side, db: sqlite3.Connection, seq: int) -> None:
    # An operator holding the body key re-encrypts another body under this record.
    sealed = BodyCipher(side.body_key).seal(side.log.origin, seq, b"Person(someone-else)")
    db.execute(
        "UPDATE log_bodies SET nonce = ?, ciphertext = ? WHERE origin = ? AND seq = ?",
        (sealed.nonce, sealed.ciphertext, side.log.origin, seq),
    )


TAMPERS: dict[str, tuple[Callable[[Side, sqlite3.Connection], None], str]] = {
    "change one byte of a leaf": (
        lambda side, db: _flip_leaf_byte(db, side.log.origin, 3),
        "record 3",
    ),
    "put a leaf's time out of range": (
        lambda side, db: _leaf_time_out_of_range(db, side.log.origin, 3),
        "record 3",
    ),
    # The deleted record's leaf hash goes with it: its neighbour's proof cannot be built, so
    # the bundle names the neighbour first (and the deleted record as missing, below).
    "delete a record": (lambda side, db: _delete(db, side.log.origin, 5), "record 4"),
    "reorder two records": (lambda side, db: _swap(db, side.log.origin, 2, 6), "record 2"),
    # As above: the first record cut off was the sibling of the one before it.
    "truncate the tail": (
        lambda side, db: _truncate(db, side.log.origin, 2 * EXCHANGES, 2 * EXCHANGES - 3),
        f"record {2 * EXCHANGES - 4}",
    ),
    "substitute a body": (lambda side, db: _substitute_body(side, db, 4), "record 4"),
}


@pytest.mark.parametrize("tamper", list(TAMPERS))
async def test_tampered_database_fails_naming_the_record(
    world: Scenario, tmp_path: Path, tamper: str
) -> None:
    change, named = TAMPERS[tamper]
    side = world.provider
    with sqlite3.connect(side.db_path) as db:
        change(side, db)
    bundle = _write(tmp_path / "pop.zip", await world.export(side))
    code, out = _run("verify", bundle)
    assert code == 1, out
    assert f"RESULT: FAILED: {named}" in out
    code, out = _run("verify", bundle, "--json")
    assert code == 1
    assert json.loads(out)["first_failure"].startswith(named)
    if tamper == "delete a record":
        assert "range.missing_record" in out


async def test_reconcile_reports_an_exchange_missing_on_one_side(
    world: Scenario, tmp_path: Path
) -> None:
    consumer = await world.export(world.consumer)
    provider = await world.export(world.provider, EvidenceFilter(from_seq=0, until_seq=6))
    result = reconcile(verify_bundle(consumer, name="soc"), verify_bundle(provider, name="pop"))
    assert not result.ok
    assert [d.message_id for d in result.discrepancies] == [world.message_ids[3]]
    assert "only in soc" in result.discrepancies[0].problem


async def test_reconcile_names_a_response_its_provider_never_logged(
    world: Scenario, tmp_path: Path
) -> None:
    """A provider that sent a response ahead of its commit (docs/adr/0038) and whose commit
    then failed: the consumer logged the request and the response, the provider the request
    alone. Reconcile names the response as received but never logged by its sender, an exchange
    whose caller was refused; the request pairs up, and the other exchanges match."""
    consumer = await world.export(world.consumer)
    # The provider's log without the last exchange's response (its last record).
    provider = await world.export(world.provider, EvidenceFilter(from_seq=0, until_seq=7))
    result = reconcile(verify_bundle(consumer, name="soc"), verify_bundle(provider, name="pop"))
    assert not result.ok
    assert result.matched == EXCHANGES - 1
    [discrepancy] = result.discrepancies
    assert discrepancy.message_id == world.message_ids[3]
    assert discrepancy.problem.startswith("the response is only in soc, which received it")
    assert "docs/adr/0038" in discrepancy.problem
    assert "refused, not answered" in discrepancy.problem
    assert "request" not in discrepancy.problem.split(":")[0]
    code, out = _run(
        "reconcile", _write(tmp_path / "soc.zip", consumer), _write(tmp_path / "pop.zip", provider)
    )
    assert code == 1
    assert "never logged it" in out


async def test_reconcile_names_a_response_its_consumer_never_logged(world: Scenario) -> None:
    """The other way round: the provider logged the response it sent, the consumer nothing of
    it (its caller gave up first): named as sent, never received."""
    consumer = await world.export(world.consumer, EvidenceFilter(from_seq=0, until_seq=7))
    provider = await world.export(world.provider)
    result = reconcile(verify_bundle(consumer, name="soc"), verify_bundle(provider, name="pop"))
    [discrepancy] = result.discrepancies
    assert discrepancy.problem.startswith("the response is only in pop, which sent it")


async def test_reconcile_names_a_retried_request_and_pairs_the_rest(world: Scenario) -> None:
    """A retried message id (the consumer logged a second request the provider refused) is
    reported as one more request on the consumer's side, not as headers that differ."""
    retried = world.message_ids[0]
    await world.repeated_request(retried)
    await world.checkpoint()
    consumer = verify_bundle(await world.export(world.consumer), name="soc")
    provider = verify_bundle(await world.export(world.provider), name="pop")
    result = reconcile(consumer, provider)
    assert [d.message_id for d in result.discrepancies] == [retried]
    assert result.discrepancies[0].problem.startswith(
        "1 more request with this message id only in soc"
    )
    assert result.matched == len(world.message_ids) - 1


@pytest.mark.postgres
async def test_export_verifies_on_a_shared_postgresql_database(
    tmp_path: Path, postgres_url: str
) -> None:
    async with scenario(tmp_path, exchanges=3, url=postgres_url) as shared:
        consumer = verify_bundle(await shared.export(shared.consumer), name="soc")
        provider = verify_bundle(await shared.export(shared.provider), name="pop")
        assert consumer.ok, consumer.first_failure
        assert provider.ok, provider.first_failure
        assert reconcile(consumer, provider).matched == 3


async def test_a_node_log_verifies_against_its_servers_published_key(
    world: Scenario, tmp_path: Path
) -> None:
    """A worker's (or node's) tree ``<server>/w1`` is signed with the server's log key under its
    own name; the verifier derives that key from the one the configuration publishes for the
    server, and refuses the tree under any other server."""
    node_log = await MessageLog.open(
        world.provider.engine,
        origin=f"{world.provider.server}/w1",
        body_key=world.provider.body_key,
    )
    node = dataclasses.replace(world.provider, log=node_log)
    server_side, world.provider = world.provider, node
    try:
        await world.exchange("person-node")
        await cosign_head(node, world.witness)
        bundle = await world.export(node)
        report = verify_bundle(bundle, anchor=world.anchor)
        assert report.ok, report.problems
        assert report.origin == f"{server_side.server}/w1"
        assert len(report.records) == 2
        # The same tree claimed for another server (whose published key is not its signer).
        elsewhere = dataclasses.replace(node, server=world.consumer.server)
        refused = verify_bundle(await world.export(elsewhere), anchor=world.anchor)
        assert refused.first_reason in ("log_key.mismatch", "log_key.invalid"), refused.problems
    finally:
        world.provider = server_side
        await node_log.close()
