"""Field mapping between protobuf messages (built from descriptors) and legacy records.

A *legacy record* is what a backend returns: JSON-like values (mappings, lists, strings, numbers,
booleans, dates, ``None``). The response side fills a message from a record following a
:class:`ResponsePlan` (renames, nested fields, repeated fields, type conversion, defaults); the
request side reads the legacy call's parameters out of a request message following a
:class:`RequestPlan`. Plans are built once, when the adapter loads, and check every field name
and default against the descriptors, so a mapping that cannot work fails at start, not per call.

Errors never quote legacy or request values (they are personal data); they name the field.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from adapters.errors import AdapterConfigError, InvalidLegacyAnswerError, InvalidRequestError
from adapters.spec import FieldSpec

__all__ = [
    "MAX_MAPPING_DEPTH",
    "MAX_PARAM_CHARS",
    "MAX_REPEATED_ELEMENTS",
    "ROWS",
    "RequestPlan",
    "ResponsePlan",
    "build_request_plan",
    "build_response_plan",
    "check_answer_shape",
    "extract_params",
    "fill_message",
    "lookup",
]

#: Deepest nesting of messages a mapping follows (protobuf allows recursive messages).
MAX_MAPPING_DEPTH: Final = 8
#: Most elements put in one repeated field.
MAX_REPEATED_ELEMENTS: Final = 10_000
#: Longest string a request parameter may carry to the legacy system.
MAX_PARAM_CHARS: Final = 4096
#: The record key under which a method with ``expect = "many"`` offers its list of records.
ROWS: Final = "rows"

_TIMESTAMP = "google.protobuf.Timestamp"
_MISSING: Final = object()

_INT_RANGES: Final[dict[int, tuple[int, int]]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS: Final = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}
_TRUE: Final = {"true", "t", "yes", "y", "1"}
_FALSE: Final = {"false", "f", "no", "n", "0", ""}


class _ConversionError(ValueError):
    """A value does not fit a field's type (message names the type, never the value)."""


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    target: tuple[FieldDescriptor, ...]
    label: str
    source: tuple[str, ...]
    default: Any
    required: bool
    convert: str | None
    date_format: str | None
    scale: Decimal | None
    nested: ResponsePlan | None
    explicit: bool  # named in the file (not filled by auto_fields)


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """How to fill one message type from a legacy record."""

    descriptor: Descriptor
    fields: tuple[_FieldPlan, ...]


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _is_timestamp(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.full_name == _TIMESTAMP


def _is_plain_message(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and not _is_timestamp(fd)


def _resolve_target(descriptor: Descriptor, path: str, where: str) -> tuple[FieldDescriptor, ...]:
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    parts = path.split(".")
    for i, part in enumerate(parts):
        if current is None:
            raise AdapterConfigError(f"{where}: {'.'.join(parts[:i])} is not a message field")
        fd = current.fields_by_name.get(part)
        if fd is None:
            known = ", ".join(sorted(current.fields_by_name)) or "none"
            raise AdapterConfigError(
                f"{where}: {current.full_name} has no field {part!r} (fields: {known})"
            )
        if _is_map(fd):
            raise AdapterConfigError(f"{where}: map fields are not supported ({fd.full_name})")
        last = i == len(parts) - 1
        if not last and (fd.is_repeated or not _is_plain_message(fd)):
            raise AdapterConfigError(
                f"{where}: {part} must be a singular message to reach into; "
                "map repeated messages with 'each'"
            )
        fields.append(fd)
        current = fd.message_type
    return tuple(fields)


def build_response_plan(
    descriptor: Descriptor,
    fields: Mapping[str, str | FieldSpec],
    *,
    auto: bool,
    where: str,
    depth: int = 0,
) -> ResponsePlan:
    """Check ``fields`` (target path -> source) against ``descriptor`` and build the plan.

    With ``auto``, every top-level field not named in ``fields`` is filled from the record key of
    the same name when present. Raises :class:`AdapterConfigError` naming ``where`` and the field.
    """
    if depth > MAX_MAPPING_DEPTH:
        raise AdapterConfigError(f"{where}: mapping nests deeper than {MAX_MAPPING_DEPTH}")
    plans: list[_FieldPlan] = []
    named: set[str] = set()
    for target_text, mapping in fields.items():
        here = f"{where}.{target_text}"
        spec = mapping if isinstance(mapping, FieldSpec) else FieldSpec(from_=mapping)
        if isinstance(mapping, str) and not re.fullmatch(r"[A-Za-z_][\w]*(\.(\w+))*", mapping):
            raise AdapterConfigError(f"{here}: source {mapping!r} is not a dotted path")
        target = _resolve_target(descriptor, target_text, here)
        named.add(target[0].name)
        plans.append(_field_plan(target, spec, here, auto=auto, depth=depth, explicit=True))
    if auto:
        for fd in descriptor.fields:
            too_deep = _is_plain_message(fd) and depth + 1 > MAX_MAPPING_DEPTH
            if fd.name in named or _is_map(fd) or too_deep:
                continue
            plans.append(
                _field_plan(
                    (fd,), FieldSpec(), f"{where}.{fd.name}", auto=True, depth=depth, explicit=False
                )
            )
    return ResponsePlan(descriptor=descriptor, fields=tuple(plans))


def _field_plan(
    target: tuple[FieldDescriptor, ...],
    spec: FieldSpec,
    where: str,
    *,
    auto: bool,
    depth: int,
    explicit: bool,
) -> _FieldPlan:
    leaf = target[-1]
    nested: ResponsePlan | None = None
    if leaf.message_type is not None and _is_plain_message(leaf):
        nested = build_response_plan(
            leaf.message_type, spec.each or {}, auto=auto, where=where, depth=depth + 1
        )
    elif spec.each is not None:
        raise AdapterConfigError(f"{where}: 'each' is only for message fields")
    if (
        spec.convert in {"date", "datetime"}
        and leaf.type != FieldDescriptor.TYPE_STRING
        and not _is_timestamp(leaf)
    ):
        raise AdapterConfigError(f"{where}: convert={spec.convert} needs a string field")
    if spec.scale is not None and leaf.type not in {*_INT_RANGES, *_FLOATS}:
        raise AdapterConfigError(f"{where}: 'scale' needs a numeric field")
    default: Any = _MISSING
    if spec.default is not None:
        if nested is not None:
            raise AdapterConfigError(f"{where}: message fields take no 'default'")
        if isinstance(spec.default, list) and not leaf.is_repeated:
            raise AdapterConfigError(f"{where}: a list is only a default for a repeated field")
        try:
            if leaf.is_repeated:
                values = spec.default if isinstance(spec.default, list) else [spec.default]
                default = [_coerce(v, leaf) for v in values]
            else:
                default = _coerce(spec.default, leaf)
        except _ConversionError as exc:
            raise AdapterConfigError(f"{where}: default does not fit: {exc}") from None
    source_text = spec.from_ if spec.from_ is not None else ".".join(fd.name for fd in target)
    return _FieldPlan(
        target=target,
        label=".".join(fd.name for fd in target),
        source=tuple(source_text.split(".")),
        default=default,
        required=spec.required,
        convert=spec.convert,
        date_format=spec.date_format,
        scale=Decimal(str(spec.scale)) if spec.scale is not None else None,
        nested=nested,
        explicit=explicit,
    )


def check_answer_shape(
    plan: ResponsePlan, *, many: bool, answers_rows: bool, text_cells: bool, where: str
) -> list[str]:
    """What in ``plan`` cannot work with the record it will be filled from, one text per field.

    ``many``: the method offers its answer as ``{"rows": [record, ...]}`` (``expect = "many"``).
    ``answers_rows``: the backend always answers a list of records (sql, csv), so with one record
    expected there is no ``rows`` to map from. ``text_cells``: every value of a record is text
    (csv), so nothing reaches into a value and no message field is filled from one. Only fields
    the file names are checked; each text starts with ``where.FIELD`` and says what to change.
    """
    problems: list[str] = []
    for field in plan.fields:
        if not field.explicit:
            continue
        here = f"{where}.{field.label}"
        source = ".".join(field.source)
        from_rows = field.source[0].casefold() == ROWS
        if many:
            if from_rows:
                problems.extend(_rows_problems(field, here, text_cells=text_cells))
            elif field.default is _MISSING:
                problems.append(
                    f"{here}: with expect = \"many\" the answer is the list '{ROWS}' and nothing "
                    f"else, so '{source}' is never there; map from '{ROWS}' (every record with "
                    f"'each', one record's value as '{ROWS}.0.NAME')"
                )
        elif answers_rows and from_rows:
            problems.append(
                f"{here}: '{ROWS}' is offered only with expect = \"many\", and this method "
                "expects one record (more than one is refused, and one has no "
                f"'{ROWS}'); set expect = \"many\" to map a list of records"
            )
        elif text_cells:
            problems.extend(_cell_problems(field, field.source, here))
    return problems


def _all_rows_problems(field: _FieldPlan, here: str, *, text_cells: bool) -> list[str]:
    """Problems of a field filled from the whole list of records."""
    leaf = field.target[-1]
    if not leaf.is_repeated or field.nested is None:
        shape = "a repeated scalar" if leaf.is_repeated else "a single"
        return [
            f"{here}: '{ROWS}' is a list of records and {field.label} is {shape} field; map "
            f"it onto a repeated message field (with 'each' for the record's values), or "
            f"one record's value as '{ROWS}.0.NAME'"
        ]
    if not text_cells:
        return []
    return [
        problem
        for nested in field.nested.fields
        if nested.explicit
        for problem in _cell_problems(nested, nested.source, f"{here}.{nested.label}")
    ]


def _rows_problems(field: _FieldPlan, here: str, *, text_cells: bool) -> list[str]:
    """Problems of a field filled from ``rows`` (all of it, or one record or value in it)."""
    rest = field.source[1:]
    if not rest:
        return _all_rows_problems(field, here, text_cells=text_cells)
    if not rest[0].isdigit():
        return [
            f"{here}: '{ROWS}' is a list; index it ('{ROWS}.0.{'.'.join(rest)}') or map every "
            "record with 'each'"
        ]
    if len(rest) == 1:
        if field.nested is None:
            return [
                f"{here}: '{ROWS}.{rest[0]}' is a record and {field.label} is not a message "
                f"field; name one of its values ('{ROWS}.{rest[0]}.NAME')"
            ]
        return []
    return _cell_problems(field, rest[1:], here) if text_cells else []


def _cell_problems(field: _FieldPlan, source: Sequence[str], here: str) -> list[str]:
    if len(source) > 1:
        return [f"{here}: a CSV cell is text, so '{'.'.join(source)}' cannot reach into it"]
    if field.nested is not None:
        return [
            f"{here}: a CSV cell is text and {field.label} is a message field; map its fields "
            f"one by one ('{field.label}.NAME' = \"COLUMN\")"
        ]
    return []


def lookup(record: Any, path: Sequence[str]) -> Any:
    """The value at ``path`` in ``record`` (mapping keys, then case-insensitive; list indexes),
    or ``None`` when any step is missing."""
    current = record
    for part in path:
        if isinstance(current, Mapping):
            if part in current:
                current = current[part]
                continue
            folded = part.casefold()
            for key, value in current.items():
                if isinstance(key, str) and key.casefold() == folded:
                    current = value
                    break
            else:
                return None
        elif isinstance(current, list | tuple) and part.isdigit():
            index = int(part)
            if index >= len(current):
                return None
            current = current[index]
        else:
            return None
    return current


def fill_message(message: Message, plan: ResponsePlan, record: Any, *, where: str = "") -> None:
    """Fill ``message`` from ``record`` following ``plan``.

    Raises :class:`InvalidLegacyAnswerError` naming the field when a value is missing where
    required, does not convert to the field's type, or a repeated field is over
    :data:`MAX_REPEATED_ELEMENTS`. ``message`` may be partly filled when it raises.
    """
    if not isinstance(record, Mapping):
        raise InvalidLegacyAnswerError(
            f"legacy answer for {where or plan.descriptor.name} is not a record"
        )
    for field in plan.fields:
        label = f"{where}.{field.label}" if where else field.label
        value = lookup(record, field.source)
        if value is None:
            if field.default is not _MISSING:
                value = field.default
            elif field.required:
                raise InvalidLegacyAnswerError(f"legacy answer has no value for {label}")
            else:
                continue
        else:
            value = _prepare(value, field, label)
        target: Message = message
        for fd in field.target[:-1]:
            target = getattr(target, fd.name)
        _assign(target, field, value, label)


def _assign(target: Message, field: _FieldPlan, value: Any, label: str) -> None:
    leaf = field.target[-1]
    try:
        if leaf.is_repeated:
            items = value if isinstance(value, list | tuple) else [value]
            if len(items) > MAX_REPEATED_ELEMENTS:
                raise InvalidLegacyAnswerError(
                    f"legacy answer has more than {MAX_REPEATED_ELEMENTS} elements for {label}"
                )
            container = getattr(target, leaf.name)
            if field.nested is not None:
                for index, item in enumerate(items):
                    fill_message(container.add(), field.nested, item, where=f"{label}.{index}")
            elif _is_timestamp(leaf):
                for item in items:
                    _set_timestamp(container.add(), _coerce(item, leaf))
            else:
                container.extend(_coerce(item, leaf) for item in items)
        elif field.nested is not None:
            sub = getattr(target, leaf.name)
            sub.SetInParent()
            fill_message(sub, field.nested, value, where=label)
        elif _is_timestamp(leaf):
            _set_timestamp(getattr(target, leaf.name), _coerce(value, leaf))
        else:
            setattr(target, leaf.name, _coerce(value, leaf))
    except _ConversionError as exc:
        raise InvalidLegacyAnswerError(f"legacy value for {label} does not fit: {exc}") from None


def _prepare(value: Any, field: _FieldPlan, label: str) -> Any:
    if isinstance(value, list | tuple):
        return [_prepare(v, field, label) for v in value]
    try:
        if field.convert in {"strip", "upper", "lower"} and isinstance(value, str):
            value = getattr(value, field.convert)()
        elif field.convert in {"date", "datetime"}:
            value = _parse_date(value, field.convert, field.date_format)
        if field.scale is not None and value is not None:
            value = _decimal(value) * field.scale
    except _ConversionError as exc:
        raise InvalidLegacyAnswerError(f"legacy value for {label} does not fit: {exc}") from None
    return value


def _parse_date(value: Any, kind: str, fmt: str | None) -> str:
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    elif isinstance(value, str):
        try:
            if fmt:
                parsed = dt.datetime.strptime(value.strip(), fmt)  # noqa: DTZ007
            else:
                parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise _ConversionError(f"not a {kind} in the expected format") from None
    else:
        raise _ConversionError(f"not a {kind}")
    return parsed.date().isoformat() if kind == "date" else parsed.isoformat()


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise _ConversionError("a boolean is not a number")
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise _ConversionError("not a number") from None


def _coerce(value: Any, fd: FieldDescriptor) -> Any:  # noqa: PLR0911, PLR0912
    """``value`` converted to the Python value of field ``fd``; raises _ConversionError."""
    kind = fd.type
    if _is_timestamp(fd):
        return _timestamp(value, fd)
    if kind == FieldDescriptor.TYPE_STRING:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float | Decimal):
            return str(value)
        if isinstance(value, dt.date | dt.time):
            return value.isoformat()
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise _ConversionError("bytes are not UTF-8 text") from None
        raise _ConversionError("expected text")
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        number = _decimal(value)
        if not number.is_finite():
            raise _ConversionError("not a finite number")
        integral = int(number.to_integral_value(rounding=ROUND_HALF_EVEN))
        if not low <= integral <= high:
            raise _ConversionError("number out of range for the field")
        return integral
    if kind in _FLOATS:
        return float(_decimal(value))
    if kind == FieldDescriptor.TYPE_BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _ConversionError("expected a boolean")
    if kind == FieldDescriptor.TYPE_BYTES:
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        raise _ConversionError("expected bytes or text")
    if kind == FieldDescriptor.TYPE_ENUM:
        enum = fd.enum_type
        if enum is None:
            raise _ConversionError("enum field without its enum type")
        if isinstance(value, str):
            found = enum.values_by_name.get(value) or enum.values_by_name.get(value.upper())
            if found is None:
                raise _ConversionError(f"not a value of enum {enum.name}")
            return found.number
        if isinstance(value, int) and not isinstance(value, bool):
            if value not in enum.values_by_number:
                raise _ConversionError(f"not a value of enum {enum.name}")
            return value
        raise _ConversionError(f"expected a value of enum {enum.name}")
    raise _ConversionError("field type is not supported")


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: Range of google.protobuf.Timestamp: 0001-01-01 to 9999-12-31.
_MIN_SECONDS: Final = -62135596800
_MAX_SECONDS: Final = 253402300799


def _timestamp(value: Any, fd: FieldDescriptor) -> tuple[int, int]:
    """``(seconds, nanos)`` of a google.protobuf.Timestamp for ``value``."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise _ConversionError("not an ISO 8601 time") from None
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        number = _decimal(value)
        if not number.is_finite() or not _MIN_SECONDS <= number <= _MAX_SECONDS:
            raise _ConversionError("time out of range")
        seconds = int(number.to_integral_value(rounding=ROUND_FLOOR))
        return seconds, int((number - seconds) * 1_000_000_000)
    else:
        raise _ConversionError("expected a time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    delta = moment - _EPOCH
    return delta.days * 86400 + delta.seconds, delta.microseconds * 1000


def _set_timestamp(stamp: Message, value: tuple[int, int]) -> None:
    stamp.seconds, stamp.nanos = value  # type: ignore[attr-defined]


# --- request side -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _RequestField:
    label: str
    path: tuple[FieldDescriptor, ...]


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """Which request fields become which legacy parameters, and the checks they pass first."""

    params: tuple[tuple[str, _RequestField], ...]
    required: tuple[_RequestField, ...]
    patterns: tuple[tuple[_RequestField, re.Pattern[str]], ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.params)

    @property
    def lists(self) -> Mapping[str, int]:
        """The parameters that carry a list (repeated request fields), with the protobuf type
        (``FieldDescriptor.TYPE_*``) of their elements."""
        return {
            name: field.path[-1].type for name, field in self.params if field.path[-1].is_repeated
        }


def _request_field(descriptor: Descriptor, path: str, where: str) -> _RequestField:
    target = _resolve_target(descriptor, path, where)
    leaf = target[-1]
    if _is_plain_message(leaf):
        raise AdapterConfigError(f"{where}: {path} is a message; name one of its scalar fields")
    return _RequestField(label=path, path=target)


def build_request_plan(
    descriptor: Descriptor,
    *,
    params: Mapping[str, str] | None,
    required: Sequence[str],
    patterns: Mapping[str, str],
    where: str,
) -> RequestPlan:
    """Check the request side of a method against the request descriptor and build its plan.

    ``params`` maps a legacy parameter name to a request field path; ``None`` means every
    top-level scalar field under its own name. Raises :class:`AdapterConfigError`.
    """
    if params is None:
        params = {
            fd.name: fd.name
            for fd in descriptor.fields
            if not _is_plain_message(fd) and not _is_map(fd)
        }
    return RequestPlan(
        params=tuple(
            (name, _request_field(descriptor, path, f"{where}.params.{name}"))
            for name, path in params.items()
        ),
        required=tuple(_request_field(descriptor, p, f"{where}.required") for p in required),
        patterns=tuple(
            (_request_field(descriptor, p, f"{where}.patterns.{p}"), re.compile(rx))
            for p, rx in patterns.items()
        ),
    )


def _read(message: Message, field: _RequestField) -> Any:
    current: Any = message
    for fd in field.path:
        current = getattr(current, fd.name)
    leaf = field.path[-1]
    if leaf.is_repeated:
        return [_param_value(v, leaf) for v in current]
    return _param_value(current, leaf)


def _param_value(value: Any, fd: FieldDescriptor) -> Any:
    if _is_timestamp(fd):
        return _EPOCH + dt.timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)
    if fd.type == FieldDescriptor.TYPE_ENUM and fd.enum_type is not None:
        found = fd.enum_type.values_by_number.get(value)
        return found.name if found is not None else value
    return value


def _is_empty(value: Any) -> bool:
    return value in ("", b"", 0, False, None) or (isinstance(value, list) and not value)


def extract_params(plan: RequestPlan, message: Message) -> dict[str, Any]:
    """Check ``message`` and return the legacy parameters it carries.

    Raises :class:`InvalidRequestError` naming the field when a required field is empty, a value
    does not match its pattern, or a string is longer than :data:`MAX_PARAM_CHARS`.
    """
    for field in plan.required:
        if _is_empty(_read(message, field)):
            raise InvalidRequestError(f"request field {field.label} is required")
    for field, pattern in plan.patterns:
        value = _read(message, field)
        for item in value if isinstance(value, list) else [value]:
            if not _is_empty(item) and not pattern.fullmatch(str(item)):
                raise InvalidRequestError(f"request field {field.label} has an invalid format")
    params: dict[str, Any] = {}
    for name, field in plan.params:
        value = _read(message, field)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str | bytes) and len(item) > MAX_PARAM_CHARS:
                raise InvalidRequestError(
                    f"request field {field.label} is longer than {MAX_PARAM_CHARS} characters"
                )
        params[name] = value
    return params
