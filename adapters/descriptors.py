"""The served service's descriptors and message classes, built at run time from a ``.proto``.

A ``.proto`` file is compiled with :func:`ruta.protos.compile_descriptor_set`; a ready
``FileDescriptorSet`` file is read as is. Message classes come from a private descriptor pool,
so two adapters (or an adapter and Ruta's own generated code) never clash over a name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from adapters.errors import AdapterConfigError
from ruta.files import FileReadError, read_bounded
from ruta.protos import ProtoCompileError, compile_descriptor_set, service_descriptor

__all__ = [
    "MAX_DESCRIPTOR_SET_BYTES",
    "MethodModel",
    "ServiceModel",
    "load_service",
]

#: Largest descriptor set read or produced.
MAX_DESCRIPTOR_SET_BYTES: Final = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class MethodModel:
    """One method of the served service, with its message classes."""

    name: str
    path: str  # "/package.Service/Method", as on the wire
    input: Descriptor
    output: Descriptor
    input_class: type[Message]
    output_class: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def unary(self) -> bool:
        return not (self.client_streaming or self.server_streaming)


@dataclass(frozen=True, slots=True)
class ServiceModel:
    """The served service: its methods and the descriptor set it was built from."""

    name: str
    methods: Mapping[str, MethodModel]
    file_descriptor_set: bytes


def _read_descriptor_set(path: Path) -> bytes:
    try:
        return read_bounded(path, MAX_DESCRIPTOR_SET_BYTES, what="descriptor set")
    except FileReadError as exc:
        raise AdapterConfigError(exc.message) from None


def load_service(
    service: str,
    *,
    proto: Path | None = None,
    descriptor_set: Path | None = None,
    include: Sequence[Path] = (),
) -> ServiceModel:
    """Build the model of ``service`` from a ``.proto`` file or a descriptor-set file.

    Raises :class:`AdapterConfigError` when the source does not compile or parse, or does not
    define ``service``.
    """
    if proto is not None:
        try:
            # The file's own folder first, then the adapter file's include paths.
            raw = compile_descriptor_set(proto, (proto.resolve().parent, *include))
        except ProtoCompileError as exc:
            raise AdapterConfigError(exc.message) from None
    elif descriptor_set is not None:
        raw = _read_descriptor_set(descriptor_set)
    else:
        raise AdapterConfigError("no proto file or descriptor set given")
    return service_from_descriptor_set(service, raw)


def service_from_descriptor_set(service: str, raw: bytes) -> ServiceModel:
    """Build the model of ``service`` from serialised ``FileDescriptorSet`` bytes.

    Raises :class:`AdapterConfigError` when the bytes do not parse, a file's imports are missing,
    or the service is not defined.
    """
    if len(raw) > MAX_DESCRIPTOR_SET_BYTES:
        raise AdapterConfigError("descriptor set is over the size limit")
    try:
        found = service_descriptor(raw, service)
    except ProtoCompileError as exc:
        raise AdapterConfigError(exc.message) from None
    methods: dict[str, MethodModel] = {}
    for method in found.methods:
        methods[method.name] = _method_model(found, method)
    return ServiceModel(name=service, methods=methods, file_descriptor_set=raw)


def _method_model(service: ServiceDescriptor, method: MethodDescriptor) -> MethodModel:
    return MethodModel(
        name=method.name,
        path=f"/{service.full_name}/{method.name}",
        input=method.input_type,
        output=method.output_type,
        input_class=message_factory.GetMessageClass(method.input_type),
        output_class=message_factory.GetMessageClass(method.output_type),
        client_streaming=bool(method.client_streaming),
        server_streaming=bool(method.server_streaming),
    )
