"""Reading ``ruta-*`` call metadata with bounds, and building/parsing message headers."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ruta.faults import Fault, RutaError
from ruta.ids import ServerId, ServiceId, SubsystemId
from ruta.v1 import transport_pb2
from security_server import headers
from security_server.errors import MalformedMessageError, Side, fault_for
from security_server.headers import (
    MAX_HEADER_BYTES,
    MAX_PURPOSE_LENGTH,
    CallMetadata,
    MetadataBounds,
    build_request_header,
    build_response_header,
    id_text,
    metadata_for_backend,
    new_message_id,
    parse_call_metadata,
    read_header,
    request_hash,
)

PATH = "/population.v1.PopulationRegister/GetPerson"
MID = "0b7f6c1e-6a52-4d43-9a3c-2d3c7f1a9b10"
GOOD = (
    ("ruta-client", "DEV/GOV/SOC/benefits"),
    ("ruta-service", "DEV/GOV/POP/registry"),
    ("ruta-purpose", "benefit-eligibility"),
)


def _fault_of(path: str, metadata: tuple[tuple[str, str | bytes], ...], **kw: int) -> Fault:
    with pytest.raises(RutaError) as info:
        parse_call_metadata(path, metadata, bounds=MetadataBounds(**kw))
    return info.value.fault


def test_good_call_parses() -> None:
    call = parse_call_metadata(PATH, (*GOOD, ("ruta-message-id", MID), ("ruta-subject", "EE1")))
    assert call.client == SubsystemId.parse("DEV/GOV/SOC/benefits")
    assert call.service == ServiceId.parse("DEV/GOV/POP/registry/population.v1.PopulationRegister")
    assert call.method == "GetPerson"
    assert call.purpose == "benefit-eligibility"
    assert call.subject == "EE1"
    assert call.user_id == ""
    assert call.message_id == MID
    assert call.message_id_from_caller
    assert call.path == PATH


def test_new_message_ids_are_canonical_time_ordered_uuids() -> None:
    ids = {new_message_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_a_call_read_again_is_the_same_but_for_its_fresh_message_id() -> None:
    metadata = (*GOOD, ("user-agent", "grpc-python-asyncio"))
    first = parse_call_metadata(PATH, metadata)
    again = parse_call_metadata(PATH, tuple(metadata))  # equal, not the same object
    assert dataclasses.replace(again, message_id=first.message_id) == first
    assert again.message_id != first.message_id
    assert not again.message_id_from_caller
    # Other bounds are another key: a call over them is refused, remembered or not.
    with pytest.raises(RutaError):
        parse_call_metadata(PATH, metadata, bounds=MetadataBounds(max_entries=2))


def test_calls_naming_a_message_id_subject_or_user_id_are_not_remembered() -> None:
    headers._CALLS.clear()
    for extra in (("ruta-message-id", MID), ("ruta-subject", "EE1"), ("ruta-user-id", "jdoe")):
        for _ in range(2):
            parse_call_metadata(PATH, (*GOOD, extra))
    assert headers._CALLS == {}
    with pytest.raises(RutaError):
        parse_call_metadata(PATH, (*GOOD[:2], ("ruta-purpose", "")))
    assert headers._CALLS == {}
    parse_call_metadata(PATH, GOOD)
    assert len(headers._CALLS) == 1


def test_calls_carrying_other_entries_than_rutas_and_user_agent_are_not_remembered() -> None:
    """A caller's credentials or cookies are never held past its call."""
    headers._CALLS.clear()
    for extra in (
        ("authorization", "Bearer not-a-real-token"),
        ("cookie", "session=x"),
        ("x-trace-bin", b"\x01\x02"),
    ):
        for _ in range(2):
            call = parse_call_metadata(PATH, (*GOOD, extra))
            assert call.purpose == "benefit-eligibility"
    assert headers._CALLS == {}
    parse_call_metadata(PATH, (*GOOD, ("user-agent", "grpc-python-asyncio")))
    assert len(headers._CALLS) == 1


def test_unhashable_metadata_entries_are_read_the_long_way() -> None:
    metadata = (*GOOD, ["x-other", "value"])  # a list: not a dict key
    call = parse_call_metadata(PATH, metadata)  # type: ignore[arg-type]
    assert call.purpose == "benefit-eligibility"


def test_id_text_is_str() -> None:
    client = SubsystemId.parse("DEV/GOV/SOC/benefits")
    service = client.service("population.v1.PopulationRegister")
    server = ServerId(client.member, "ss1")
    for identifier in (client, service, server, client, service):
        assert id_text(identifier) == str(identifier)


def test_message_id_generated_when_absent() -> None:
    call = parse_call_metadata(PATH, GOOD)
    first, second = call.message_id, parse_call_metadata(PATH, GOOD).message_id
    assert str(uuid.UUID(first)) == first
    assert first != second
    # Made here, so the consumer does not look it up in its log (a random UUID is new).
    assert not call.message_id_from_caller
    assert uuid.UUID(first).version == 7


def test_made_message_ids_are_version_7_uuids_ordered_by_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 9562's layout: the Unix time in milliseconds, version 7, 12 random bits, the
    variant, 62 random bits; canonical text; ids of a later millisecond sort after."""
    now = [1_796_000_000_123_456_789]
    monkeypatch.setattr("security_server.headers.time.time_ns", lambda: now[0])
    same = [new_message_id() for _ in range(200)]
    now[0] += 1_000_000
    later = new_message_id()
    assert len(set(same)) == 200
    for text in (*same, later):
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert parsed.int >> 80 == int(now[0] // 1_000_000) - (0 if text == later else 1)
    assert max(same) < later
    # The random bits vary (not a counter): both random fields take many values.
    assert len({uuid.UUID(t).int >> 64 & 0xFFF for t in same}) > 100
    assert len({uuid.UUID(t).int & (1 << 62) - 1 for t in same}) == 200


def test_full_service_identifier_accepted_when_it_matches_path() -> None:
    metadata = (
        ("ruta-client", "DEV/GOV/SOC/benefits"),
        ("ruta-service", "DEV/GOV/POP/registry/population.v1.PopulationRegister"),
        ("ruta-purpose", "benefit-eligibility"),
    )
    assert (
        parse_call_metadata(PATH, metadata).service.service_name
        == "population.v1.PopulationRegister"
    )


def test_missing_purpose_names_the_metadata() -> None:
    with pytest.raises(RutaError) as info:
        parse_call_metadata(PATH, GOOD[:2])
    assert "ruta-purpose is required" in info.value.message


def test_foreign_metadata_ignored() -> None:
    assert parse_call_metadata(PATH, (*GOOD, ("user-agent", "grpc-python"))).method == "GetPerson"


@pytest.mark.parametrize(
    ("path", "metadata", "fault"),
    [
        (PATH, GOOD[1:], Fault.CLIENT_MISSING_HEADER),
        (PATH, (GOOD[0],), Fault.CLIENT_MISSING_HEADER),
        (PATH, (("ruta-client", "DEV/GOV/SOC"), GOOD[1]), Fault.CLIENT_INVALID_IDENTIFIER),
        (PATH, (("ruta-client", "DEV/GOV/SOC/.."), GOOD[1]), Fault.CLIENT_INVALID_IDENTIFIER),
        (PATH, (GOOD[0], ("ruta-service", "DEV/GOV//registry")), Fault.CLIENT_INVALID_IDENTIFIER),
        (
            PATH,
            (GOOD[0], ("ruta-service", "DEV/GOV/POP/registry/other.v1.Other")),
            Fault.CLIENT_INVALID_HEADER,
        ),
        (PATH, (*GOOD, ("ruta-message-id", "not-a-uuid")), Fault.CLIENT_INVALID_HEADER),
        (PATH, (*GOOD, ("ruta-message-id", "{" + MID + "}")), Fault.CLIENT_INVALID_HEADER),
        (PATH, (*GOOD, ("ruta-purpose", "x")), Fault.CLIENT_INVALID_HEADER),
        (PATH, (*GOOD, ("ruta-colour", "blue")), Fault.CLIENT_INVALID_HEADER),
        (
            PATH,
            (*GOOD[:2], ("ruta-purpose", "p" * (MAX_PURPOSE_LENGTH + 1))),
            Fault.CLIENT_INVALID_HEADER,
        ),
        (PATH, (*GOOD, ("ruta-subject", "tab\there")), Fault.CLIENT_INVALID_HEADER),
        (PATH, (*GOOD, ("ruta-subject", b"binary")), Fault.CLIENT_INVALID_HEADER),
        (PATH, GOOD[:2], Fault.CLIENT_MISSING_HEADER),
        (PATH, (*GOOD[:2], ("ruta-purpose", "")), Fault.CLIENT_MISSING_HEADER),
        (PATH, (*GOOD[:2], ("ruta-purpose", b"binary")), Fault.CLIENT_INVALID_HEADER),
        ("population.v1.PopulationRegister/GetPerson", GOOD, Fault.CLIENT_INVALID_HEADER),
        ("/population.v1.PopulationRegister", GOOD, Fault.CLIENT_INVALID_HEADER),
        ("/a/b/c", GOOD, Fault.CLIENT_INVALID_HEADER),
        ("/population.v1.PopulationRegister/Get-Person", GOOD, Fault.CLIENT_INVALID_HEADER),
        ("//GetPerson", GOOD, Fault.CLIENT_INVALID_HEADER),
        ("/" + "s" * 300 + "/M", GOOD, Fault.CLIENT_INVALID_HEADER),
    ],
)
def test_refusals(path: str, metadata: tuple[tuple[str, str | bytes], ...], fault: Fault) -> None:
    assert _fault_of(path, metadata) is fault


@pytest.mark.parametrize(
    ("extra", "bounds"),
    [
        (tuple((f"x-{i}", "v") for i in range(10)), {"max_entries": 8}),
        ((("x-big", "v" * 500),), {"max_bytes": 256}),
    ],
)
def test_metadata_bounds(extra: tuple[tuple[str, str], ...], bounds: dict[str, int]) -> None:
    assert _fault_of(PATH, (*GOOD, *extra), **bounds) is Fault.CLIENT_INVALID_HEADER


def _call() -> CallMetadata:
    return parse_call_metadata(PATH, (*GOOD, ("ruta-message-id", MID), ("ruta-user-id", "jdoe")))


def test_a_header_time_in_another_zone_is_the_same_instant() -> None:
    """The creation time is written as the instant it is, whatever the zone it is given in."""
    sender, receiver = ServerId.parse("DEV/GOV/SOC/ss1"), ServerId.parse("DEV/GOV/POP/ss1")
    in_utc = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
    elsewhere = in_utc.astimezone(timezone(timedelta(hours=-3)))
    built = [
        build_request_header(_call(), body=b"b", sender=sender, receiver=receiver, created_at=at)
        for at in (in_utc, elsewhere)
    ]
    assert built[0][0].created_at == built[1][0].created_at
    assert built[0][0].created_at.ToDatetime(tzinfo=UTC) == in_utc


def test_request_header_round_trip_and_backend_metadata() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    sender = ServerId.parse("DEV/GOV/SOC/ss1")
    receiver = ServerId.parse("DEV/GOV/POP/ss1")
    header, raw = build_request_header(
        _call(), body=b"body", sender=sender, receiver=receiver, created_at=now
    )
    read = read_header(raw)
    parsed = read.header
    assert parsed == header
    assert parsed.kind == transport_pb2.MESSAGE_KIND_REQUEST
    assert ServerId.from_proto(parsed.receiver) == receiver
    assert read.receiver == receiver
    assert dict(metadata_for_backend(read)) == {
        "ruta-client": "DEV/GOV/SOC/benefits",
        "ruta-service": "DEV/GOV/POP/registry",
        "ruta-message-id": MID,
        "ruta-purpose": "benefit-eligibility",
        "ruta-user-id": "jdoe",
    }
    digest = request_hash(raw, b"sig")
    response, response_raw = build_response_header(
        parsed, request_digest=digest, body=b"", status_code=0, fault=None, created_at=now
    )
    assert read_header(response_raw).header.request_hash == digest
    assert ServerId.from_proto(response.sender) == receiver
    assert response.kind == transport_pb2.MESSAGE_KIND_RESPONSE


def test_identifiers_are_read_once_and_remembered() -> None:
    """A server sees few distinct identifiers: each is parsed and checked once, and every later
    call or header naming it gets the same (immutable) identifier; a bad one is refused each
    time, never remembered."""
    first, second = parse_call_metadata(PATH, GOOD), parse_call_metadata(PATH, GOOD)
    assert first.client is second.client
    assert first.service is second.service
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    sender = ServerId.parse("DEV/GOV/SOC/ss1")
    receiver = ServerId.parse("DEV/GOV/POP/ss1")
    reads = [
        read_header(
            build_request_header(
                first, body=b"b", sender=sender, receiver=receiver, created_at=now
            )[1]
        )
        for _ in range(2)
    ]
    assert reads[0].client is reads[1].client == first.client
    assert reads[0].service is reads[1].service == first.service
    assert reads[0].sender is reads[1].sender == sender
    assert reads[0].receiver is reads[1].receiver == receiver
    bad = (("ruta-client", "DEV/GOV/SOC/bad!"), *GOOD[1:])
    for _ in range(2):
        assert _fault_of(PATH, bad) is Fault.CLIENT_INVALID_IDENTIFIER
    header = transport_pb2.MessageHeader()
    header.ParseFromString(
        build_request_header(first, body=b"b", sender=sender, receiver=receiver, created_at=now)[1]
    )
    header.sender.server_code = "bad!"
    for _ in range(2):
        with pytest.raises(MalformedMessageError):
            read_header(header.SerializeToString(deterministic=True))


def test_a_headers_identifiers_are_remembered_together_and_bounded() -> None:
    """The four identifiers of a header are looked up together, by their sub-messages' bytes:
    a header that differs in any one of them gets its own (each the object read from its
    bytes), and the memo stays within its bound."""
    call = parse_call_metadata(PATH, GOOD)
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    sender = ServerId.parse("DEV/GOV/SOC/ss1")
    receiver = ServerId.parse("DEV/GOV/POP/ss1")
    raw = build_request_header(call, body=b"b", sender=sender, receiver=receiver, created_at=now)[1]
    first = read_header(raw)
    for n in range(headers.MAX_CACHED_IDENTIFIERS + 5):
        header = transport_pb2.MessageHeader()
        header.ParseFromString(raw)
        if n % 2:
            header.receiver.server_code = f"ss-{n}"
        else:
            header.client.subsystem_code = f"client-{n}"
        read = read_header(header.SerializeToString(deterministic=True))
        assert read.receiver == ServerId.from_proto(header.receiver)
        assert read.client == SubsystemId.from_proto(header.client)
        assert read.service is first.service
        assert read.sender is first.sender
        assert len(headers._IDS_BY_WIRES) <= headers.MAX_CACHED_IDENTIFIERS
    again = read_header(raw)
    assert (again.client, again.service, again.sender, again.receiver) == (
        call.client,
        call.service,
        sender,
        receiver,
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xff\xff",
        b"x" * (MAX_HEADER_BYTES + 1),
        b"",
        transport_pb2.MessageHeader(method="M").SerializeToString(),
    ],
)
def test_read_header_refuses_garbage(raw: bytes) -> None:
    with pytest.raises(MalformedMessageError) as info:
        read_header(raw)
    assert fault_for(Side.PROVIDER, info.value) is Fault.SERVER_PROVIDER_INVALID_MESSAGE
    assert fault_for(Side.CONSUMER, info.value) is Fault.SERVER_CONSUMER_INVALID_RESPONSE_SIGNATURE


@given(st.binary(max_size=300))
def test_read_header_is_total(raw: bytes) -> None:
    with contextlib.suppress(RutaError):
        assert read_header(raw).created_at.tzinfo is not None  # accepted: an aware time


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(2**62, 0), (-(2**62), 0), (1_800_000_000, -1), (1_800_000_000, 10**9)],
)
def test_out_of_range_created_at_is_an_invalid_message(seconds: int, nanos: int) -> None:
    """A peer's out-of-range timestamp is a refusal with a fault, not an internal error."""
    header, _ = build_request_header(
        _call(),
        body=b"body",
        sender=ServerId.parse("DEV/GOV/SOC/ss1"),
        receiver=ServerId.parse("DEV/GOV/POP/ss1"),
        created_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
    )
    header.created_at.seconds = seconds
    header.created_at.nanos = nanos
    with pytest.raises(MalformedMessageError, match="created_at is out of range") as info:
        read_header(header.SerializeToString())
    assert fault_for(Side.PROVIDER, info.value) is Fault.SERVER_PROVIDER_INVALID_MESSAGE


@given(
    st.text(max_size=80),
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "ruta-client",
                    "ruta-service",
                    "ruta-purpose",
                    "ruta-subject",
                    "ruta-message-id",
                    "x",
                ]
            ),
            st.text(max_size=80),
        ),
        max_size=8,
    ),
)
def test_parse_call_metadata_is_total(path: str, metadata: list[tuple[str, str]]) -> None:
    with contextlib.suppress(RutaError):
        parse_call_metadata(path, metadata)


_PART = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True)
_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@given(
    st.tuples(_PART, _PART, _PART, _PART),
    st.tuples(_PART, _PART, _PART, _PART),
    _PART,
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
    _TEXT.filter(bool),
    _TEXT,
    st.binary(max_size=64),
)
def test_request_header_round_trips(
    client: tuple[str, str, str, str],
    provider: tuple[str, str, str, str],
    service_name: str,
    method: str,
    purpose: str,
    subject: str,
    body: bytes,
) -> None:
    metadata = (
        ("ruta-client", "/".join(client)),
        ("ruta-service", "/".join(provider)),
        ("ruta-purpose", purpose),
        ("ruta-subject", subject),
    )
    call = parse_call_metadata(f"/{service_name}/{method}", metadata)
    sender = ServerId(call.client.member, "ss1")
    receiver = ServerId(call.service.member, "ss1")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    header, raw = build_request_header(
        call, body=body, sender=sender, receiver=receiver, created_at=now
    )
    read = read_header(raw)
    parsed = read.header
    assert parsed == header
    assert parsed.purpose == purpose
    assert str(SubsystemId.from_proto(parsed.client)) == "/".join(client)
    assert ServiceId.from_proto(parsed.service).service_name == service_name
    assert dict(metadata_for_backend(read))["ruta-client"] == "/".join(client)


def _header_field_by_field(
    call: CallMetadata, body: bytes, sender: ServerId, receiver: ServerId, now: datetime
) -> bytes:
    """A request header as it was built before the templates: every field set at once."""
    header = transport_pb2.MessageHeader(
        message_id=call.message_id,
        kind=transport_pb2.MESSAGE_KIND_REQUEST,
        client=call.client.to_proto(),
        service=call.service.to_proto(),
        method=call.method,
        purpose=call.purpose,
        user_id=call.user_id,
        subject=call.subject,
        body_sha256=hashlib.sha256(body).digest(),
        sender=sender.to_proto(),
        receiver=receiver.to_proto(),
    )
    header.created_at.FromDatetime(now)
    return header.SerializeToString(deterministic=True)


@pytest.mark.parametrize(("user_id", "subject"), [("", ""), ("jdoe", ""), ("", "p-1"), ("a", "b")])
def test_request_headers_from_templates_are_the_bytes_built_field_by_field(
    user_id: str, subject: str
) -> None:
    now = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
    sender = ServerId.parse("DEV/GOV/SOC/ss1")
    receiver = ServerId.parse("DEV/GOV/POP/ss1")
    first = dataclasses.replace(_call(), user_id=user_id, subject=subject)
    second = dataclasses.replace(first, message_id=new_message_id(), user_id="", subject="")
    for call, body in ((first, b"body"), (second, b""), (first, b"x" * 70_000)):
        header, raw = build_request_header(
            call, body=body, sender=sender, receiver=receiver, created_at=now
        )
        assert raw == _header_field_by_field(call, body, sender, receiver, now)
        assert header.SerializeToString(deterministic=True) == raw


def test_request_templates_are_bounded_and_keep_no_per_call_field() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    sender = ServerId.parse("DEV/GOV/SOC/ss1")
    base = dataclasses.replace(_call(), user_id="jdoe", subject="person-1")
    for i in range(headers.MAX_REQUEST_TEMPLATES + 20):
        receiver = ServerId.parse(f"DEV/GOV/POP/ss{i}")
        build_request_header(base, body=b"b", sender=sender, receiver=receiver, created_at=now)
    assert len(headers._REQUEST_TEMPLATES) <= headers.MAX_REQUEST_TEMPLATES
    for *_, template in headers._REQUEST_TEMPLATES.values():
        assert not template.message_id
        assert not template.user_id
        assert not template.subject
        assert not template.body_sha256
        assert not template.HasField("created_at")


def test_a_template_is_only_used_for_the_same_identifier_objects() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    call = _call()
    sender = ServerId.parse("DEV/GOV/SOC/ss1")
    one = ServerId.parse("DEV/GOV/POP/ss1")
    _, raw_one = build_request_header(call, body=b"", sender=sender, receiver=one, created_at=now)
    # Another object (the first one gone, its id() possibly reused) naming another server.
    del one
    two = ServerId.parse("DEV/GOV/POP/ss2")
    _, raw_two = build_request_header(call, body=b"", sender=sender, receiver=two, created_at=now)
    assert read_header(raw_two).receiver == two
    assert raw_one != raw_two


def _request_bytes(*, user_id: str, subject: str, unknown_in_client: bool, unknown: bool) -> bytes:
    client = SubsystemId.parse("DEV/GOV/SOC/benefits").to_proto().SerializeToString()
    if unknown_in_client:
        client += b"\xfa\x01\x03new"  # field 31, length-delimited: a newer peer's addition
    request = transport_pb2.MessageHeader(
        message_id=str(uuid.uuid4()),
        kind=transport_pb2.MESSAGE_KIND_REQUEST,
        service=ServiceId.parse("DEV/GOV/POP/registry/population.v1.PopulationRegister").to_proto(),
        method="GetPerson",
        purpose="benefit-eligibility",
        user_id=user_id,
        subject=subject,
        body_sha256=hashlib.sha256(b"q").digest(),
        sender=ServerId.parse("DEV/GOV/SOC/ss1").to_proto(),
        receiver=ServerId.parse("DEV/GOV/POP/ss1").to_proto(),
    )
    request.client.ParseFromString(client)
    request.created_at.seconds = 1_765_000_000
    return request.SerializeToString() + (b"\xf2\x01\x02hi" if unknown else b"")  # field 30


@given(
    user_id=st.sampled_from(["", "jdoe"]),
    subject=st.sampled_from(["", "EE38001010001"]),
    unknown_in_client=st.booleans(),
    unknown=st.booleans(),
    status_code=st.sampled_from([0, 5, 14]),
    fault=st.sampled_from([None, Fault.SERVER_PROVIDER_SERVICE_FAILED]),
    backend=st.sampled_from([("", ""), ("no_such_person", "f-1")]),
    body=st.sampled_from([b"", b"answer"]),
)
def test_a_response_from_a_template_is_the_response_built_field_by_field(
    user_id: str,
    subject: str,
    unknown_in_client: bool,
    unknown: bool,
    status_code: int,
    fault: Fault | None,
    backend: tuple[str, str],
    body: bytes,
) -> None:
    """Given what read_header read, the response's fixed fields come from a remembered template:
    the same bytes as built from the request header alone (unknown fields of an identifier
    echoed, the request's own unknown fields not), again and again."""
    now = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
    for _ in range(2):
        read = read_header(
            _request_bytes(
                user_id=user_id,
                subject=subject,
                unknown_in_client=unknown_in_client,
                unknown=unknown,
            )
        )
        arguments = {
            "request_digest": hashlib.sha256(b"r").digest(),
            "body": body,
            "status_code": status_code,
            "fault": fault,
            "created_at": now,
            "backend_fault": backend[0],
            "backend_fault_id": backend[1],
        }
        templated = build_response_header(read, **arguments)  # type: ignore[arg-type]
        plain = build_response_header(read.header, **arguments)  # type: ignore[arg-type]
        assert headers._response_template(read) is not None  # the template's path was taken
        assert templated[1] == plain[1]
        assert templated[0] == plain[0]


def test_response_templates_are_bounded_and_only_for_identifiers_read() -> None:
    read = read_header(
        _request_bytes(user_id="", subject="", unknown_in_client=False, unknown=False)
    )
    headers._RESPONSE_TEMPLATES.clear()
    # Identifiers built elsewhere (equal, but not what read_header made): no template.
    elsewhere = dataclasses.replace(read, client=SubsystemId.parse(str(read.client)))
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    made = build_response_header(
        elsewhere, request_digest=b"d" * 32, body=b"", status_code=0, fault=None, created_at=now
    )
    assert not headers._RESPONSE_TEMPLATES
    assert (
        made[1]
        == build_response_header(
            read.header,
            request_digest=b"d" * 32,
            body=b"",
            status_code=0,
            fault=None,
            created_at=now,
        )[1]
    )
    for n in range(headers.MAX_RESPONSE_TEMPLATES + 5):
        request = transport_pb2.MessageHeader()
        request.ParseFromString(read.header.SerializeToString())
        request.purpose = f"purpose-{n}"
        build_response_header(
            read_header(request.SerializeToString()),
            request_digest=b"d" * 32,
            body=b"",
            status_code=0,
            fault=None,
            created_at=now,
        )
    assert len(headers._RESPONSE_TEMPLATES) == headers.MAX_RESPONSE_TEMPLATES
