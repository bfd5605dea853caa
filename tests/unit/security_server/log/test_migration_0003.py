"""Migrations 0002 to 0007 on a database written under 0001, SQLite and PostgreSQL: the
records, tree and replay claims written before stay exactly as they were, the log opens and
keeps appending (format-2 leaves after format-1 ones), and every proof still verifies."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from ruta.merkle import CompactRange, leaf_hash, verify_inclusion
from ruta.v1 import log_pb2, transport_pb2
from security_server.database import create_engine, migrate
from security_server.log import BodyKey, MessageClaim, MessageLog, ReplayedMessageError
from security_server.log.model import claim_key
from tests.unit.security_server.log.support import CLIENT, ORIGIN, SERVICE, FakeClock, make_entry

_LEGACY_RECORDS = 5


def _legacy_record(seq: int, logged_at_us: int) -> tuple[dict[str, object], bytes]:
    """A format-1 leaf row (signature with its certificate and OCSP response inline)."""
    entry = make_entry(subject="EE38001085718")
    signature = transport_pb2.Signature.FromString(entry.signature)
    signature.ocsp_response = secrets.token_bytes(700)
    record = log_pb2.LogRecord(
        sequence=seq,
        direction=log_pb2.LOG_DIRECTION_RECEIVED,
        header=entry.header,
        signature=signature.SerializeToString(),
        certificate_fingerprint=entry.certificate_fingerprint,
    )
    record.logged_at.FromMicroseconds(logged_at_us)
    data = record.SerializeToString()
    row = {
        "origin": ORIGIN,
        "seq": seq,
        "direction": log_pb2.LOG_DIRECTION_RECEIVED,
        "logged_at": logged_at_us,
        "message_id": entry.message_id,
        "kind": "request",
        "client": str(CLIENT),
        "service": str(SERVICE),
        "method": entry.method,
        "subject": entry.subject,
        "created_at": logged_at_us,
        "record": data,
        "leaf_hash": leaf_hash(data),
    }
    return row, data


async def test_a_log_written_under_0001_migrates_and_keeps_working(
    database_url: str, clock: FakeClock
) -> None:
    engine = create_engine(database_url)
    try:
        await migrate(engine, "0001")
        frontier = CompactRange()
        legacy: list[bytes] = []
        t0 = int(clock.now.timestamp() * 1_000_000)
        claim_expiry = int((clock.now + timedelta(hours=1)).timestamp() * 1_000_000)
        async with engine.begin() as conn:
            for seq in range(_LEGACY_RECORDS):
                row, data = _legacy_record(seq, t0 + seq)
                legacy.append(data)
                await conn.execute(
                    sa.text(
                        "INSERT INTO log_leaves (origin, seq, direction, logged_at, message_id, "
                        "kind, client, service, method, subject, created_at, record, leaf_hash) "
                        "VALUES (:origin, :seq, :direction, :logged_at, :message_id, :kind, "
                        ":client, :service, :method, :subject, :created_at, :record, :leaf_hash)"
                    ),
                    row,
                )
                for level, idx, digest in frontier.append(leaf_hash(data)):
                    await conn.execute(
                        sa.text("INSERT INTO log_nodes VALUES (:o, :l, :i, :h)"),
                        {"o": ORIGIN, "l": level, "i": idx, "h": digest},
                    )
            await conn.execute(
                sa.text("INSERT INTO log_heads VALUES (:o, :s, :r, :u)"),
                {"o": ORIGIN, "s": frontier.size, "r": frontier.root(), "u": t0},
            )
            await conn.execute(
                sa.text("INSERT INTO seen_messages VALUES (:c, :m, :e)"),
                {"c": str(CLIENT), "m": "claimed-before", "e": claim_expiry},
            )

        await migrate(engine)

        async with engine.connect() as conn:
            indexes = {
                i["name"]
                for i in await conn.run_sync(lambda c: sa.inspect(c).get_indexes("log_leaves"))
            }
            claims = (await conn.execute(sa.text("SELECT claim_key FROM seen_messages"))).all()
        assert {
            "ix_log_leaves_message_id",
            "ix_log_leaves_client_seq",
            "ix_log_leaves_service_seq",
            "ix_log_leaves_origin_subject",
        } <= indexes
        assert "ix_log_leaves_origin_logged_at" not in indexes  # 0004: time is a seq range
        # 0007: the claim is kept as its key, and still refuses the id it claimed.
        assert [bytes(c[0]) for c in claims] == [claim_key(str(CLIENT), "claimed-before")]

        log = await MessageLog.open(engine, origin=ORIGIN, body_key=BodyKey.generate(), clock=clock)
        try:
            assert log.head().root == frontier.root()
            [appended] = await log.append([make_entry(body=b"after")])
            assert appended.seq == _LEGACY_RECORDS
            records = await log.get_records(list(range(_LEGACY_RECORDS + 1)))
            assert [r.record for r in records[:_LEGACY_RECORDS]] == legacy
            assert records[-1].log_record().HasField("signature_ref")
            expires = clock.now + timedelta(minutes=5)
            with pytest.raises(ReplayedMessageError):
                await log.record_claim(MessageClaim(str(CLIENT), "claimed-before", expires))
            await log.record_claim(MessageClaim(str(CLIENT), "claimed-after", expires))
            head = log.head()
            for record in records:
                proof = await log.inclusion_proof(record.seq)
                verify_inclusion(leaf_hash(record.record), record.seq, head.size, proof, head.root)
            page = await log.query(client=str(CLIENT), since=datetime.fromtimestamp(0, UTC))
            assert [r.seq for r in page.records] == list(range(_LEGACY_RECORDS + 1))
            # The legacy records' times (t0 + seq microseconds) found through the primary key.
            third = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=t0 + 2)
            page = await log.query(since=third, until=third + timedelta(microseconds=2))
            assert [r.seq for r in page.records] == [2, 3]
            # 0006: the subject index holds the records naming one, and still finds them.
            page = await log.query(subject="EE38001085718")
            assert [r.seq for r in page.records] == list(range(_LEGACY_RECORDS))
            async with engine.connect() as conn:
                entries = await conn.run_sync(lambda c: sa.inspect(c).get_indexes("log_leaves"))
            [subject_index] = [i for i in entries if i["name"] == "ix_log_leaves_origin_subject"]
            options = subject_index["dialect_options"]
            where = str(options.get("sqlite_where", options.get("postgresql_where")))
            assert "subject IS NOT NULL" in where.replace('"', "").replace("(", "").replace(
                ")", ""
            ), where
        finally:
            await log.close()
    finally:
        await engine.dispose()
