from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ruta.faults import Fault
from ruta.ids import (
    MAX_PART_LENGTH,
    IdentifierError,
    MemberId,
    ServerId,
    ServiceId,
    SubsystemId,
)

_FIRST = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_REST = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-",
    max_size=MAX_PART_LENGTH - 1,
)
parts = st.builds(lambda a, b: a + b, _FIRST, _REST)
AnyId = type[MemberId] | type[SubsystemId] | type[ServiceId] | type[ServerId]
KINDS: dict[AnyId, int] = {MemberId: 3, SubsystemId: 4, ServiceId: 5, ServerId: 4}


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (MemberId, "LAC/GOV/POP"),
        (SubsystemId, "LAC/GOV/POP/registry"),
        (ServiceId, "LAC/GOV/POP/registry/population.v1.PersonRegistry"),
        (ServerId, "LAC/GOV/POP/ss1"),
    ],
)
def test_examples_round_trip_through_text_and_proto(kind: AnyId, text: str) -> None:
    ident = kind.parse(text)
    assert str(ident) == text
    assert kind.from_proto(ident.to_proto()) == ident  # type: ignore[arg-type]


def test_parts_are_reachable() -> None:
    svc = ServiceId.parse("LAC/GOV/POP/registry/population.v1.PersonRegistry")
    assert svc.member == MemberId("LAC", "GOV", "POP")
    assert svc.subsystem.code == "registry"
    assert svc.service_name == "population.v1.PersonRegistry"
    assert svc.member.subsystem("registry").service(svc.service_name) == svc


@pytest.mark.parametrize(
    ("kind", "text", "named"),
    [
        (MemberId, "", "has 1 part"),
        (MemberId, "LAC/GOV", "has 2 part"),
        (MemberId, "LAC/GOV/POP/x", "has 4 part"),
        (MemberId, "LAC//POP", "member class '' of member 'LAC//POP' is empty"),
        (MemberId, "LAC/G V/POP", "member class 'G V'"),
        (MemberId, "../GOV/POP", "instance '..'"),
        (MemberId, ".hidden/GOV/POP", "must start with a letter or digit"),
        (MemberId, "LAC/GOV/" + "x" * 65, "longer than 64"),
        (MemberId, "LAC/GOV/PÖP", "member code 'PÖP'"),
        (MemberId, "LAC/GOV/POP\n", "member code 'POP\\n'"),
        (SubsystemId, "LAC/GOV/POP/-x", "subsystem code '-x'"),
        (ServiceId, "LAC/GOV/POP/reg/pop/v1", "has 6 part"),
        (ServiceId, "LAC/GOV/POP/reg/pop v1", "service name 'pop v1'"),
        (ServerId, "LAC/GOV/POP/", "server code ''"),
        (ServerId, "x" * 10_000, "longer than"),
    ],
)
def test_bad_identifiers_name_the_part(kind: AnyId, text: str, named: str) -> None:
    with pytest.raises(IdentifierError) as info:
        kind.parse(text)
    assert named in str(info.value)
    assert info.value.fault is Fault.CLIENT_INVALID_IDENTIFIER


def test_constructor_validates_like_the_parser() -> None:
    with pytest.raises(IdentifierError, match="member code"):
        MemberId("LAC", "GOV", "bad code")
    with pytest.raises(IdentifierError, match="subsystem code"):
        SubsystemId(MemberId("LAC", "GOV", "POP"), "")


def test_non_text_is_refused_not_crashed() -> None:
    with pytest.raises(IdentifierError, match="must be text"):
        MemberId.parse(b"LAC/GOV/POP")  # type: ignore[arg-type]


@given(kind=st.sampled_from(list(KINDS)), data=st.data())
def test_format_parse_round_trip(kind: AnyId, data: st.DataObject) -> None:
    text = "/".join(data.draw(st.lists(parts, min_size=KINDS[kind], max_size=KINDS[kind])))
    ident = kind.parse(text)
    assert str(ident) == text
    assert kind.parse(str(ident)) == ident


@given(kind=st.sampled_from(list(KINDS)), text=st.text(max_size=400))
def test_no_input_crashes_the_parser(kind: AnyId, text: str) -> None:
    try:
        ident = kind.parse(text)
    except IdentifierError as exc:
        message = exc.message
    else:
        message = ""
        assert str(ident) == text
    assert message or str(ident) == text


@given(
    kind=st.sampled_from(list(KINDS)),
    chunks=st.lists(st.text(alphabet="aZ9._-/ é\x00", max_size=70), max_size=7),
)
def test_near_valid_input_never_crashes(kind: AnyId, chunks: list[str]) -> None:
    text = "/".join(chunks)
    with contextlib.suppress(IdentifierError):
        assert str(kind.parse(text)) == text


def _fields(identifier: object) -> tuple[object, ...]:
    """Every part of ``identifier``, nested ones flattened: what equality compares."""
    out: list[object] = [type(identifier)]
    for field in dataclasses.fields(identifier):  # type: ignore[arg-type]
        value = getattr(identifier, field.name)
        out.extend(_fields(value) if dataclasses.is_dataclass(value) else (value,))
    return tuple(out)


_SMALL_PARTS = st.sampled_from(["A", "B", "AB"])


@given(
    st.sampled_from([SubsystemId, ServiceId, ServerId]),
    st.sampled_from([SubsystemId, ServiceId, ServerId]),
    st.lists(_SMALL_PARTS, min_size=5, max_size=5),
    st.lists(_SMALL_PARTS, min_size=5, max_size=5),
    st.booleans(),
)
def test_equality_and_hash_are_the_fields_in_one_call(
    kind_a: AnyId, kind_b: AnyId, parts_a: list[str], parts_b: list[str], shared: bool
) -> None:
    """The nested identifiers' own ``__eq__`` and ``__hash__`` (one call each) are the relation
    the dataclass makes: every field compared, the class too, equal ones hashing alike, also
    when both share their member or subsystem object."""
    a = kind_a.parse("/".join(parts_a[: KINDS[kind_a]]))
    b = kind_b.parse("/".join(parts_b[: KINDS[kind_b]]))
    if shared and type(a) is type(b):
        if isinstance(a, ServiceId) and isinstance(b, ServiceId):
            b = ServiceId(a.subsystem, b.service_name)
        elif isinstance(a, SubsystemId | ServerId) and isinstance(b, SubsystemId | ServerId):
            b = type(b)(a.member, b.code)
    same = _fields(a) == _fields(b)
    assert (a == b) is same
    assert (a != b) is not same
    assert a == a
    if same:
        assert hash(a) == hash(b)
        assert len({a, b}) == 1
    assert (a == "text") is False
