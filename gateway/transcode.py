"""JSON <-> protobuf for gRPC services called with JSON, from the descriptor sets in the global
configuration (protobuf's canonical JSON mapping).

Message classes are built once per (service, descriptor set) and kept in a bounded cache, so a
new configuration with a changed descriptor set is picked up and an unchanged one costs nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from ruta.faults import Fault, RutaError
from ruta.globalconf import Service
from ruta.protos import ProtoCompileError, service_descriptor

__all__ = [
    "MAX_CACHED_CODECS",
    "MAX_JSON_DEPTH",
    "MethodCodec",
    "ServiceCodecs",
    "TranscodeError",
    "json_schema_of",
]

#: Services whose message classes are kept built.
MAX_CACHED_CODECS: Final = 256
#: Deepest JSON nesting accepted in a request body (protobuf's parser has its own recursion
#: limit; this keeps the refusal a clean 400).
MAX_JSON_DEPTH: Final = 64


class TranscodeError(RutaError):
    """A JSON body does not fit the method's request message (the text names the field)."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


@dataclass(frozen=True, slots=True)
class MethodCodec:
    """How one method's request and response travel as JSON."""

    name: str
    input: type[Message]
    output: type[Message]

    def request_from_json(self, body: bytes) -> bytes:
        """The wire bytes of the request message the JSON ``body`` describes (an empty body is
        the empty message). Raises :class:`TranscodeError` naming what did not fit."""
        if not body.strip():
            return b""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise TranscodeError("the request body is not UTF-8 JSON") from None
        if _depth(text) > MAX_JSON_DEPTH:
            raise TranscodeError(f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
        message = self.input()
        try:
            json_format.Parse(text, message, ignore_unknown_fields=False)
        except json_format.ParseError as exc:
            raise TranscodeError(
                f"the request body does not fit {self.input.DESCRIPTOR.full_name}: {exc}"
            ) from None
        except (RecursionError, ValueError) as exc:
            raise TranscodeError(
                f"the request body does not fit {self.input.DESCRIPTOR.full_name}: "
                f"{type(exc).__name__}"
            ) from None
        data: bytes = message.SerializeToString()
        return data

    def response_to_json(self, data: bytes) -> bytes:
        """The JSON text of the response message ``data``. Raises :class:`TranscodeError`
        (``server.provider.service_failed``) when the provider's answer does not parse."""
        message = self.output()
        try:
            message.ParseFromString(data)
        except DecodeError:
            raise TranscodeError(
                f"the provider's answer is not a {self.output.DESCRIPTOR.full_name}",
                fault=Fault.SERVER_PROVIDER_SERVICE_FAILED,
            ) from None
        text = json_format.MessageToJson(
            message, preserving_proto_field_name=False, indent=None, ensure_ascii=False
        )
        return text.encode("utf-8")


def _depth(text: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


class ServiceCodecs:
    """The codecs of the services in the global configuration, built on first use."""

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[str, bytes], ServiceDescriptor] = OrderedDict()
        # Method codecs by (service, method), valid while the service's descriptor set is the
        # one they were built from (checked by identity of the bytes, then by value).
        self._methods: dict[tuple[str, str], tuple[bytes, MethodCodec]] = {}

    def descriptor(self, service: Service) -> ServiceDescriptor:
        """The service's descriptor. Raises :class:`TranscodeError` (unknown service) when the
        configuration carries no usable descriptor set for it."""
        key = (str(service.id), hashlib.sha256(service.file_descriptor_set).digest())
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        try:
            found = service_descriptor(service.file_descriptor_set, service.id.service_name)
        except ProtoCompileError:
            raise TranscodeError(
                f"service {service.id} publishes no usable descriptors to call it with JSON",
                fault=Fault.CLIENT_UNKNOWN_SERVICE,
            ) from None
        self._cache[key] = found
        while len(self._cache) > MAX_CACHED_CODECS:
            self._cache.popitem(last=False)
        return found

    def method(self, service: Service, name: str) -> MethodCodec:
        """The codec of ``name``; raises :class:`TranscodeError` (``client.unknown_service``)
        when the service has no such method."""
        key = (str(service.id), name)
        cached = self._methods.get(key)
        if cached is not None and (
            cached[0] is service.file_descriptor_set or cached[0] == service.file_descriptor_set
        ):
            return cached[1]
        descriptor = self.descriptor(service)
        method = descriptor.methods_by_name.get(name)
        if method is None:
            raise TranscodeError(
                f"service {service.id} has no method {name!r}", fault=Fault.CLIENT_UNKNOWN_SERVICE
            )
        codec = MethodCodec(
            name=name,
            input=message_factory.GetMessageClass(method.input_type),
            output=message_factory.GetMessageClass(method.output_type),
        )
        if len(self._methods) >= MAX_CACHED_CODECS * 16:
            self._methods.clear()
        self._methods[key] = (service.file_descriptor_set, codec)
        return codec


_SCALARS: Final[dict[int, dict[str, Any]]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # 64-bit integers are strings in protobuf's JSON mapping.
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}


def json_schema_of(message: Descriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.0 schema reference for ``message`` in protobuf's JSON mapping, adding the
    component schemas it needs (messages by full name) to ``schemas``."""
    name = message.full_name
    if name not in schemas:
        schemas[name] = {}  # placed first so recursive messages end
        properties: dict[str, Any] = {}
        for field in message.fields:
            properties[field.json_name] = _field_schema(field, schemas)
        schemas[name] = {"type": "object", "properties": properties}
    return {"$ref": f"#/components/schemas/{name}"}


def _field_schema(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single_schema(value, schemas)}
    single = _single_schema(field, schemas)
    if field.is_repeated:
        return {"type": "array", "items": single}
    return single


def _single_schema(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None:
        if field.message_type.full_name.startswith("google.protobuf."):
            return {}  # well-known types have their own JSON forms; any value
        return json_schema_of(field.message_type, schemas)
    if field.enum_type is not None:
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    return dict(_SCALARS.get(field.type, {}))


def dumps(value: object) -> bytes:
    """Compact JSON bytes (the gateway's answers)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
