"""Service descriptors for the sandbox and its demo: ``.proto`` -> FileDescriptorSet -> messages.

The registry publishes each service's FileDescriptorSet; a client of the bus needs nothing else to
build request and response messages at run time (no generated code), which is what the demo does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.message import Message

from ruta.protos import ProtoCompileError, compile_descriptor_set, service_descriptor
from sandbox.processes import SandboxError

# compile_descriptor_set is re-exported: the sandbox guide and the demo import it from here.
__all__ = ["MethodCodec", "compile_descriptor_set", "method_codec"]


@dataclass(frozen=True, slots=True)
class MethodCodec:
    """Request/response classes of one method, built from descriptors at run time."""

    path: str
    request: type[Message]
    response: type[Message]

    def encode(self, **fields: Any) -> bytes:
        return self.request(**fields).SerializeToString()

    def decode(self, data: bytes) -> dict[str, Any]:
        message = self.response.FromString(data)
        return json_format.MessageToDict(message, preserving_proto_field_name=True)


def method_codec(descriptor_set: bytes, service_name: str, method: str) -> MethodCodec:
    """The codec of ``service_name``'s ``method`` in ``descriptor_set`` (a fresh pool each time,
    so two services never clash). Raises :class:`SandboxError` when either is missing."""
    try:
        service = service_descriptor(descriptor_set, service_name)
    except ProtoCompileError as exc:
        raise SandboxError(exc.message) from None
    found = service.methods_by_name.get(method)
    if found is None:
        raise SandboxError(f"{service_name} has no method {method}")
    return MethodCodec(
        path=f"/{service_name}/{method}",
        request=message_factory.GetMessageClass(found.input_type),
        response=message_factory.GetMessageClass(found.output_type),
    )
