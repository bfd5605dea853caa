"""Service descriptors for the sandbox and its demo: ``.proto`` -> FileDescriptorSet -> messages.

The registry publishes each service's FileDescriptorSet; a client of the bus needs nothing else to
build request and response messages at run time (no generated code), which is what the demo does.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from ruta.sandbox.processes import SandboxError

__all__ = ["MAX_DESCRIPTOR_SET_BYTES", "MethodCodec", "compile_descriptor_set", "method_codec"]

#: Largest FileDescriptorSet accepted.
MAX_DESCRIPTOR_SET_BYTES: Final = 4 << 20
#: Longest a protoc run may take.
PROTOC_TIMEOUT_S: Final = 60.0


def compile_descriptor_set(proto: Path) -> bytes:
    """Compile ``proto`` (with its imports, searched beside it) into a FileDescriptorSet.

    Runs ``grpc_tools.protoc`` in a child process; raises :class:`SandboxError` with protoc's
    message when it fails.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        try:
            result = subprocess.run(  # noqa: S603 - fixed argv
                [
                    sys.executable,
                    "-m",
                    "grpc_tools.protoc",
                    f"-I{proto.parent}",
                    "--include_imports",
                    f"--descriptor_set_out={out}",
                    proto.name,
                ],
                capture_output=True,
                timeout=PROTOC_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SandboxError(f"protoc did not finish compiling {proto.name}") from None
        if result.returncode != 0:
            message = result.stderr.decode("utf-8", "replace")[-1000:]
            raise SandboxError(f"protoc cannot compile {proto.name}: {message}")
        data = out.read_bytes()
    if len(data) > MAX_DESCRIPTOR_SET_BYTES:
        raise SandboxError(f"the descriptors of {proto.name} are too large")
    return data


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
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    try:
        service = pool.FindServiceByName(service_name)
    except KeyError:
        raise SandboxError(f"the descriptors declare no service {service_name}") from None
    found = service.methods_by_name.get(method)
    if found is None:
        raise SandboxError(f"{service_name} has no method {method}")
    return MethodCodec(
        path=f"/{service_name}/{method}",
        request=message_factory.GetMessageClass(found.input_type),
        response=message_factory.GetMessageClass(found.output_type),
    )
