"""Field mapping from legacy records to messages built at run time, and request parameters."""

from __future__ import annotations

import contextlib
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.descriptors import ServiceModel, load_service
from adapters.errors import AdapterConfigError, InvalidLegacyAnswerError, InvalidRequestError
from adapters.mapping import (
    MAX_PARAM_CHARS,
    build_request_plan,
    build_response_plan,
    check_answer_shape,
    extract_params,
    fill_message,
    lookup,
)
from adapters.spec import FieldSpec

PROTO = """
syntax = "proto3";
package mapping.v1;
import "google/protobuf/timestamp.proto";
service Records { rpc Get(Query) returns (Record); }
enum Status { STATUS_UNSPECIFIED = 0; ACTIVE = 1; CLOSED = 2; }
message Address { string street = 1; string city = 2; }
message Item { string name = 1; int64 amount_cents = 2; }
message Query {
  string id = 1;
  int32 year = 2;
  Status status = 3;
  repeated string tags = 4;
  Address where = 5;
}
message Record {
  string id = 1;
  string name = 2;
  int32 small = 3;
  uint64 big = 4;
  double ratio = 5;
  bool active = 6;
  bytes blob = 7;
  Status status = 8;
  Address address = 9;
  repeated Item items = 10;
  repeated string tags = 11;
  google.protobuf.Timestamp seen_at = 12;
  string born = 13;
  map<string, string> extra = 14;
}
"""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> ServiceModel:
    folder = tmp_path_factory.mktemp("proto")
    (folder / "mapping.proto").write_text(PROTO, encoding="utf-8")
    return load_service("mapping.v1.Records", proto=folder / "mapping.proto")


def _fill(
    service: ServiceModel, fields: dict[str, Any], record: Any, *, auto: bool = True
) -> dict[str, Any]:
    method = service.methods["Get"]
    specs = {
        k: (FieldSpec.model_validate(v) if isinstance(v, dict) else v) for k, v in fields.items()
    }
    plan = build_response_plan(method.output, specs, auto=auto, where="fields")
    message = method.output_class()
    fill_message(message, plan, record)
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def test_auto_fields_take_same_names_and_convert_types(service: ServiceModel) -> None:
    out = _fill(
        service,
        {},
        {
            "id": 42,
            "NAME": "Ana",
            "small": "17",
            "big": Decimal("18446744073709551615"),
            "ratio": "0.25",
            "active": "Y",
            "blob": "hi",
            "status": "closed",
            "tags": ["a", "b"],
            "seen_at": "2026-01-02T03:04:05+00:00",
            "born": dt.date(1985, 3, 12),
        },
    )
    assert out == {
        "id": "42",
        "name": "Ana",
        "small": 17,
        "big": "18446744073709551615",
        "ratio": 0.25,
        "active": True,
        "blob": "aGk=",
        "status": "CLOSED",
        "tags": ["a", "b"],
        "seen_at": "2026-01-02T03:04:05Z",
        "born": "1985-03-12",
    }


def test_renames_nested_repeated_defaults_and_conversions(service: ServiceModel) -> None:
    fields = {
        "id": "person.code",
        "name": {"from": "person.full_name", "convert": "strip"},
        "address.street": "addr_line",
        "address.city": {"from": "town", "convert": "upper"},
        "items": {
            "from": "lines",
            "each": {"name": "kind", "amount_cents": {"from": "amount", "scale": 100}},
        },
        "born": {"from": "birth", "convert": "date", "date_format": "%d/%m/%Y"},
        "tags": {"from": "labels", "default": ["none"]},
        "small": {"from": "missing", "default": 7},
    }
    record = {
        "person": {"code": "P-1", "full_name": "  Ana Quispe "},
        "addr_line": "Calle 1",
        "town": "lima",
        "lines": [{"kind": "salary", "amount": "1234.50"}, {"kind": "rent", "amount": 10}],
        "birth": "12/03/1985",
    }
    out = _fill(service, fields, record, auto=False)
    assert out == {
        "id": "P-1",
        "name": "Ana Quispe",
        "address": {"street": "Calle 1", "city": "LIMA"},
        "items": [
            {"name": "salary", "amount_cents": "123450"},
            {"name": "rent", "amount_cents": "1000"},
        ],
        "born": "1985-03-12",
        "tags": ["none"],
        "small": 7,
    }


@pytest.mark.parametrize(
    ("fields", "record", "message"),
    [
        ({"small": "v"}, {"v": "seven"}, "small does not fit"),
        ({"small": "v"}, {"v": 2**40}, "small does not fit: number out of range"),
        ({"big": "v"}, {"v": -1}, "big does not fit"),
        ({"active": "v"}, {"v": "maybe"}, "active does not fit: expected a boolean"),
        ({"status": "v"}, {"v": "OPEN"}, "status does not fit: not a value of enum Status"),
        ({"born": {"from": "v", "convert": "date"}}, {"v": "yesterday"}, "born does not fit"),
        ({"name": {"from": "v", "required": True}}, {}, "no value for name"),
        ({"address": "v"}, {"v": "Calle Falsa 123"}, "address is not a record"),
        (
            {"items": {"from": "v", "each": {"amount_cents": "a"}}},
            {"v": [{"a": "x"}]},
            "items.0.amount_cents",
        ),
    ],
)
def test_bad_legacy_values_name_the_field_not_the_value(
    service: ServiceModel, fields: dict[str, Any], record: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidLegacyAnswerError, match=message) as caught:
        _fill(service, fields, record, auto=False)
    for value in record.values():
        if isinstance(value, str) and len(value) > 2:
            assert value not in caught.value.message


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nope": "x"}, "has no field 'nope'"),
        ({"address.nope": "x"}, "Address has no field 'nope'"),
        ({"items.name": "x"}, "must be a singular message"),
        ({"extra": "x"}, "map fields are not supported"),
        ({"name": {"from": "x", "each": {"a": "b"}}}, "'each' is only for message fields"),
        ({"small": {"from": "x", "default": "seven"}}, "default does not fit"),
        ({"small": {"from": "x", "default": [1, 2]}}, "a list is only a default for a repeated"),
        ({"name": {"from": "x", "scale": 100}}, "'scale' needs a numeric field"),
        ({"small": {"from": "x", "convert": "date"}}, "convert=date needs a string field"),
    ],
)
def test_mappings_that_cannot_work_fail_at_load(
    service: ServiceModel, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(AdapterConfigError, match=message):
        _fill(service, fields, {})


#: The kinds of answer a method's mapping is checked against: (many, answers_rows, text_cells).
ONE_JSON = (False, False, False)
ONE_SQL = (False, True, False)
ONE_CSV = (False, True, True)
MANY_SQL = (True, True, False)
MANY_CSV = (True, True, True)


@pytest.mark.parametrize(
    ("shape", "fields", "problem"),
    [
        # The case: a repeated field from 'rows' without expect = "many".
        (ONE_CSV, {"items": {"from": "rows"}}, "'rows' is offered only with expect = \"many\""),
        (ONE_SQL, {"items": {"from": "rows", "each": {"name": "n"}}}, "expects one record"),
        (ONE_SQL, {"name": "ROWS.0.n"}, "'rows' is offered only with expect"),
        (MANY_SQL, {"name": "rows"}, "name is a single field; map it onto a repeated message"),
        (MANY_SQL, {"tags": "rows"}, "tags is a repeated scalar field"),
        (MANY_SQL, {"address": "rows"}, "address is a single field"),
        (MANY_SQL, {"items": "rows.name"}, "'rows' is a list; index it ('rows.0.name')"),
        (MANY_SQL, {"name": "rows.0"}, "'rows.0' is a record and name is not a message field"),
        (MANY_SQL, {"name": "given_name"}, "'given_name' is never there; map from 'rows'"),
        (MANY_SQL, {"items": {"each": {"name": "n"}}}, "'items' is never there"),
        (MANY_CSV, {"items": {"from": "rows", "each": {"name": "a.b"}}}, "'a.b' cannot reach"),
        (MANY_CSV, {"name": "rows.0.a.b"}, "a CSV cell is text, so 'a.b' cannot reach into it"),
        (ONE_CSV, {"address": {"from": "addr", "each": {"city": "c"}}}, "address is a message"),
        (ONE_CSV, {"name": "person.name"}, "'person.name' cannot reach into it"),
    ],
)
def test_mappings_that_do_not_fit_the_answer_are_named(
    service: ServiceModel, shape: tuple[bool, bool, bool], fields: dict[str, Any], problem: str
) -> None:
    many, answers_rows, text_cells = shape
    specs = {
        k: (FieldSpec.model_validate(v) if isinstance(v, dict) else v) for k, v in fields.items()
    }
    plan = build_response_plan(service.methods["Get"].output, specs, auto=True, where="m.fields")
    problems = check_answer_shape(
        plan, many=many, answers_rows=answers_rows, text_cells=text_cells, where="m.fields"
    )
    assert len(problems) == 1, problems
    (target,) = fields
    assert problems[0].startswith(f"m.fields.{target}")
    assert problem in problems[0]


@pytest.mark.parametrize(
    ("shape", "fields"),
    [
        (MANY_SQL, {"items": {"from": "rows", "each": {"name": "n", "amount_cents": "a"}}}),
        (MANY_SQL, {"items": "rows", "name": "rows.0.n", "address": "rows.0"}),
        (MANY_SQL, {"name": {"default": "none"}}),
        (MANY_CSV, {"items": {"from": "rows", "each": {"name": "n"}}, "address.city": "rows.0.c"}),
        (ONE_SQL, {"name": "given_name", "address": "addr", "tags": "t"}),
        (ONE_CSV, {"name": "given_name", "address.city": "city", "tags": "t"}),
        # A JSON answer may have a key of that name: it is a record key like any other.
        (ONE_JSON, {"items": "rows", "address": "a.b"}),
    ],
)
def test_mappings_that_fit_the_answer_pass(
    service: ServiceModel, shape: tuple[bool, bool, bool], fields: dict[str, Any]
) -> None:
    many, answers_rows, text_cells = shape
    specs = {
        k: (FieldSpec.model_validate(v) if isinstance(v, dict) else v) for k, v in fields.items()
    }
    plan = build_response_plan(service.methods["Get"].output, specs, auto=True, where="m.fields")
    problems = check_answer_shape(
        plan, many=many, answers_rows=answers_rows, text_cells=text_cells, where="m.fields"
    )
    assert problems == []


def test_request_params_checks_and_bounds(service: ServiceModel) -> None:
    method = service.methods["Get"]
    plan = build_request_plan(
        method.input,
        params=None,
        required=["id"],
        patterns={"id": "[A-Z]-[0-9]+", "tags": "[a-z]+"},
        where="methods.Get",
    )
    # Default parameters: every top-level scalar (and repeated scalar), not messages.
    assert plan.names == {"id", "year", "status", "tags"}
    request = method.input_class(id="P-1", year=2025, status=1, tags=["a", "b"])
    assert extract_params(plan, request) == {
        "id": "P-1",
        "year": 2025,
        "status": "ACTIVE",
        "tags": ["a", "b"],
    }
    with pytest.raises(InvalidRequestError, match="request field id is required"):
        extract_params(plan, method.input_class())
    with pytest.raises(InvalidRequestError, match="id has an invalid format"):
        extract_params(plan, method.input_class(id="x' OR 1=1 --"))
    with pytest.raises(InvalidRequestError, match="tags has an invalid format"):
        extract_params(plan, method.input_class(id="P-1", tags=["ok", "NOT OK"]))
    long_plan = build_request_plan(
        method.input, params={"v": "where.street"}, required=[], patterns={}, where="m"
    )
    with pytest.raises(InvalidRequestError, match=f"longer than {MAX_PARAM_CHARS}"):
        extract_params(long_plan, method.input_class(where={"street": "x" * (MAX_PARAM_CHARS + 1)}))
    with pytest.raises(AdapterConfigError, match="is a message"):
        build_request_plan(method.input, params={"w": "where"}, required=[], patterns={}, where="m")


def test_lookup_walks_mappings_lists_and_folds_case() -> None:
    record = {"A": {"b": [{"c": 1}, {"c": 2}]}}
    assert lookup(record, ["a", "B", "1", "c"]) == 2
    assert lookup(record, ["a", "b", "9", "c"]) is None
    assert lookup(record, ["x"]) is None
    assert lookup("scalar", ["x"]) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    record=st.dictionaries(
        st.sampled_from(
            [
                "id",
                "small",
                "big",
                "active",
                "status",
                "address",
                "items",
                "tags",
                "seen_at",
                "ratio",
            ]
        ),
        _json,
    )
)
def test_any_json_record_fills_or_refuses_cleanly(
    service: ServiceModel, record: dict[str, Any]
) -> None:
    """Whatever a legacy system answers, the mapping fills the message or raises
    InvalidLegacyAnswerError: never another exception."""
    method = service.methods["Get"]
    plan = build_response_plan(method.output, {}, auto=True, where="fields")
    with contextlib.suppress(InvalidLegacyAnswerError):
        fill_message(method.output_class(), plan, record)


def test_descriptor_set_file_and_unknown_service(tmp_path: Path, service: ServiceModel) -> None:
    path = tmp_path / "set.pb"
    path.write_bytes(service.file_descriptor_set)
    again = load_service("mapping.v1.Records", descriptor_set=path)
    assert again.methods["Get"].path == "/mapping.v1.Records/Get"
    with pytest.raises(
        AdapterConfigError,
        match=r"service mapping\.v1\.Nope is not defined \(defined: mapping\.v1\.Records\)",
    ):
        load_service("mapping.v1.Nope", descriptor_set=path)
    path.write_bytes(b"\xff\xff not a descriptor set")
    with pytest.raises(AdapterConfigError, match="not a valid FileDescriptorSet"):
        load_service("mapping.v1.Records", descriptor_set=path)


def test_proto_that_does_not_compile_reports_protoc_lines(tmp_path: Path) -> None:
    (tmp_path / "broken.proto").write_text('syntax = "proto3";\nmessage A {\n  strin x = 1;\n}\n')
    with pytest.raises(AdapterConfigError) as caught:
        load_service("A", proto=tmp_path / "broken.proto")
    assert "broken.proto:3" in caught.value.message
    assert str(tmp_path) not in caught.value.message
