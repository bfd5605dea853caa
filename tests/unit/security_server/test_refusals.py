"""Operational records of refused exchanges (issue 19, item 5): written as JSON lines, read
back, rotated within their bound, never failing the call that is refused."""

from __future__ import annotations

import json
from pathlib import Path

from security_server.refusals import (
    MAX_REFUSAL_LINE_BYTES,
    RefusalLog,
    RefusalRecord,
    read_refusals,
)


def _record(n: int, fault: str = "client.missing_header") -> RefusalRecord:
    return RefusalRecord(
        at=f"2026-12-04T19:00:{n:02d}.000+00:00",
        role="consumer",
        fault=fault,
        fault_id=f"00000000-0000-4000-8000-{n:012d}",
        status="INVALID_ARGUMENT",
        client="unknown",
        service="unknown",
        method="unknown",
        message_id="-",
    )


def test_records_are_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "refusals.jsonl"
    log = RefusalLog(path)
    records = [_record(n) for n in range(3)]
    for record in records:
        log.add(record)
    log.close()
    assert list(read_refusals(path)) == records
    assert path.stat().st_mode & 0o777 == 0o600
    line = json.loads(path.read_text().splitlines()[0])
    assert set(line) == {
        "at",
        "role",
        "fault",
        "fault_id",
        "status",
        "client",
        "service",
        "method",
        "message_id",
    }


def test_the_file_is_rotated_past_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "refusals.jsonl"
    size = len(_record(0).to_line())
    log = RefusalLog(path, max_bytes=3 * size)
    for n in range(8):
        log.add(_record(n))
    log.close()
    assert path.stat().st_size <= 3 * size
    kept = list(read_refusals(path))
    # The current file and the one before it: the newest records, in order, none twice.
    assert kept == [_record(n) for n in range(8)][-len(kept) :]
    assert len(kept) >= 4


def test_lines_that_are_not_records_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "refusals.jsonl"
    good = _record(1)
    path.write_bytes(
        b"not json\n"
        + b'{"at": "x"}\n'
        + b"x" * (MAX_REFUSAL_LINE_BYTES + 10)
        + b"\n"
        + good.to_line()
    )
    assert list(read_refusals(path)) == [good]


def test_a_write_that_fails_is_counted_not_raised(tmp_path: Path) -> None:
    log = RefusalLog(tmp_path / "missing-folder" / "refusals.jsonl")
    log.add(_record(1))
    log.add(_record(2))
    assert log.failures == 2


def test_long_fields_are_cut(tmp_path: Path) -> None:
    path = tmp_path / "refusals.jsonl"
    log = RefusalLog(path)
    log.add(_record(1, fault="x" * 5000))
    log.close()
    (record,) = read_refusals(path)
    assert len(record.fault) == 300
