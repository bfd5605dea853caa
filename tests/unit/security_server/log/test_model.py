"""Log entries: built from a signed header's exact bytes, bounded, refused when unreadable."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from ruta.v1 import transport_pb2
from security_server.headers import read_header
from security_server.log import Direction, InvalidLogEntryError, LogEntry, RecordKind
from security_server.log.model import MAX_BODY_BYTES, MAX_SIGNATURE_BYTES, from_micros, to_micros
from tests.unit.security_server.log.support import CLIENT, SERVICE, make_entry


def test_from_signed_reads_the_query_columns_from_the_header() -> None:
    created = datetime(2026, 11, 26, 9, 30, 1, 250_000, tzinfo=UTC)
    entry = make_entry(subject="P-1", created_at=created, message_id="m-1")
    assert (entry.client, entry.service, entry.method) == (str(CLIENT), str(SERVICE), "GetPerson")
    assert (entry.message_id, entry.subject, entry.created_at) == ("m-1", "P-1", created)
    assert entry.kind is RecordKind.REQUEST
    assert entry.created_at_us == to_micros(created)  # what the writer stores, computed once


@pytest.mark.parametrize(
    "header",
    [
        b"\xff\xff\xff",  # not protobuf
        transport_pb2.MessageHeader(message_id="m").SerializeToString(),  # no ids, no kind
        transport_pb2.MessageHeader(
            message_id="m",
            kind=transport_pb2.MESSAGE_KIND_REQUEST,
            client=CLIENT.to_proto(),
            service=SERVICE.to_proto(),
            created_at=timestamp_pb2.Timestamp(seconds=2**62),
        ).SerializeToString(),
    ],
    ids=["garbage", "empty-header", "time-out-of-range"],
)
def test_unreadable_headers_are_refused(header: bytes) -> None:
    with pytest.raises(InvalidLogEntryError):
        LogEntry.from_signed(
            direction=Direction.SENT,
            header=header,
            signature=b"",
            certificate_fingerprint="00",
            body=None,
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message_id", ""),
        ("message_id", "m" * 129),
        ("method", "M" * 256),
        ("subject", "s" * 256),
        ("header", b"h" * (64 * 1024 + 1)),
        ("certificate_fingerprint", "f" * 129),
        ("signature", b"s" * (MAX_SIGNATURE_BYTES + 1)),
        ("body", b"b" * (MAX_BODY_BYTES + 1)),
        ("created_at", datetime(2026, 1, 1)),  # noqa: DTZ001 - naive on purpose
    ],
)
def test_entries_outside_their_bounds_are_refused(field: str, value: object) -> None:
    fields = {
        "direction": Direction.SENT,
        "header": b"h",
        "signature": b"s",
        "certificate_fingerprint": "00",
        "message_id": "m",
        "kind": RecordKind.REQUEST,
        "client": str(CLIENT),
        "service": str(SERVICE),
        "method": "GetPerson",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        field: value,
    }
    with pytest.raises(InvalidLogEntryError):
        LogEntry(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 11, 26, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 11, 26, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(1960, 5, 5, 5, 5, 5, 5, tzinfo=UTC),
    ],
)
def test_times_round_trip_through_microseconds(moment: datetime) -> None:
    assert from_micros(to_micros(moment)) == moment


def test_from_parsed_builds_the_same_entry_as_from_signed() -> None:
    # The exchange path hands over the header it already parsed (read_header); the entry must be
    # exactly what parsing the bytes again would give.
    entry = make_entry(subject="P-1", message_id="7d8a0c0e-2f7b-4d1e-9a57-1f1b1f3f0c11")
    read = read_header(entry.header)
    again = LogEntry.from_parsed(
        direction=entry.direction,
        header=entry.header,
        parsed=read.header,
        client=read.client,
        service=read.service,
        created_at=read.created_at,
        signature=entry.signature,
        certificate_fingerprint=entry.certificate_fingerprint,
        body=entry.body,
    )
    assert again == entry


def test_from_parsed_refuses_a_header_of_no_kind() -> None:
    entry = make_entry()
    parsed = transport_pb2.MessageHeader.FromString(entry.header)
    parsed.kind = transport_pb2.MESSAGE_KIND_UNSPECIFIED
    with pytest.raises(InvalidLogEntryError, match="no message kind"):
        LogEntry.from_parsed(
            direction=entry.direction,
            header=entry.header,
            parsed=parsed,
            client=CLIENT,
            service=SERVICE,
            created_at=entry.created_at,
            signature=entry.signature,
            certificate_fingerprint=entry.certificate_fingerprint,
            body=None,
        )


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("header", b"h" * (64 * 1024 + 1), "the header to log is 65537 long"),
        ("method", "M" * 256, "the method to log is 256 long"),
        ("subject", "s" * 256, "the subject to log is 256 long"),
        ("message_id", "m" * 129, "the message id to log is 129 long"),
    ],
)
def test_an_entry_over_a_bound_is_refused_naming_it(field: str, value: object, named: str) -> None:
    entry = make_entry()
    with pytest.raises(InvalidLogEntryError, match=named):
        replace(entry, **{field: value})  # type: ignore[arg-type]
    # At the bound itself, it is taken.
    replace(entry, subject="s" * 255, method="M" * 255, message_id="m" * 128)


def test_the_identifier_text_is_that_of_the_identifier() -> None:
    first = make_entry()
    again = make_entry()
    assert (first.client, first.service) == (again.client, again.service)
    assert (first.client, first.service) == (str(CLIENT), str(SERVICE))
