"""The trust floor's small parts (``bench/trust_relay.py``): its envelope, its durable log's
replay claim, its stage medians."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from bench.trust_relay import Stages, TrustError, TrustLog, decode_envelope, encode_envelope


@pytest.mark.parametrize(
    ("header", "signature", "body"),
    [(b"h" * 200, b"s" * 72, b"b" * 512), (b"", b"", b""), (b"h", b"s" * 255, b"\x00" * 70000)],
)
def test_envelope_round_trip(header: bytes, signature: bytes, body: bytes) -> None:
    assert decode_envelope(encode_envelope(header, signature, body)) == (header, signature, body)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x05\x01abc"])
def test_short_envelope_is_refused(data: bytes) -> None:
    with pytest.raises(TrustError):
        decode_envelope(data)


def _count(db: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_a_replayed_claim_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "trust.db"
    log = TrustLog(db)
    log.commit(((b"m1", 0, b"request"),), b"m1")
    with pytest.raises(TrustError):
        log.commit(((b"m1", 0, b"again"),), b"m1")
    log.commit(((b"m1", 1, b"response"),), None)
    log.close()
    assert _count(db, "claims") == 1
    assert _count(db, "records") == 2


def test_stages_are_drained() -> None:
    stages = Stages()
    for ns in (1_000, 3_000, 2_000):
        stages.add("sign", ns)
    assert stages.drain() == {"sign": {"median_us": 2.0, "count": 3}}
    assert stages.drain() == {}
