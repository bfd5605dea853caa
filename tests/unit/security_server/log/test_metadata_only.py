"""Metadata-only mode: exchanges of listed subsystems are logged without bodies, others with."""

from __future__ import annotations

from pathlib import Path

import pytest

from ruta.ids import MemberId
from ruta.pki.testing import TestPki
from ruta.v1 import transport_pb2
from security_server.exchange import ExchangeRecorder
from security_server.headers import read_header
from security_server.log import Direction, MessageLog
from security_server.settings import LogSettings
from tests.unit.security_server.log.support import CLIENT, SERVICE, make_entry


@pytest.mark.parametrize(
    ("metadata_only", "body_kept"),
    [
        (frozenset(), True),
        (frozenset({str(CLIENT)}), False),
        (frozenset({str(SERVICE.subsystem)}), False),
        (frozenset({"DEV/GOV/TAX/income"}), True),
    ],
)
async def test_recorder_drops_bodies_of_metadata_only_subsystems(
    log: MessageLog, tmp_path: Path, metadata_only: frozenset[str], body_kept: bool
) -> None:
    pki = TestPki(tmp_path / "pki")
    credential = pki.sign(MemberId.parse("DEV/GOV/SOC"))
    entry = make_entry(body=b"a body")
    recorder = ExchangeRecorder(log, metadata_only)

    await recorder.record(
        Direction.SENT,
        header=entry.header,
        signature=transport_pb2.Signature.FromString(entry.signature),
        certificate=credential.certificate,
        body=b"a body",
        read=read_header(entry.header),
    )

    assert log.size() == 1
    assert await log.get_body(0) == (b"a body" if body_kept else None)
    # The leaf (and so every proof) is the same either way: only the body beside it differs.
    [record] = await log.get_records([0])
    assert record.message_id == entry.message_id


def test_log_settings_refuse_a_bad_subsystem() -> None:
    with pytest.raises(ValueError, match="subsystem"):
        LogSettings(metadata_only_subsystems=("DEV/GOV/POP",))
    assert LogSettings(body_retention_days=30).body_retention_days == 30
