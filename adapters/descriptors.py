"""The served service's descriptors and message classes, built at run time from a ``.proto``.

A ``.proto`` file is compiled with ``grpc_tools.protoc --descriptor_set_out --include_imports``
(a child process, so its diagnostics can be reported); a ready ``FileDescriptorSet`` file is read
as is. Message classes come from a private descriptor pool, so two adapters (or an adapter and
Ruta's own generated code) never clash over a name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from adapters.errors import AdapterConfigError

__all__ = [
    "MAX_DESCRIPTOR_SET_BYTES",
    "MAX_PROTO_FILE_BYTES",
    "MethodModel",
    "ServiceModel",
    "compile_proto",
    "load_service",
]

#: Largest ``.proto`` file compiled.
MAX_PROTO_FILE_BYTES: Final = 1024 * 1024
#: Largest descriptor set read or produced.
MAX_DESCRIPTOR_SET_BYTES: Final = 8 * 1024 * 1024
#: Longest a protoc run may take.
PROTOC_TIMEOUT_SECONDS: Final = 60.0
#: Longest protoc diagnostic kept in an error.
_MAX_DIAGNOSTIC_CHARS: Final = 2000


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


def compile_proto(proto: Path, include: Sequence[Path] = ()) -> bytes:
    """Compile ``proto`` (and its imports) to a serialised ``FileDescriptorSet``.

    The file's own folder is the first import path, then ``include``, then the well-known types
    shipped with grpc_tools. Raises :class:`AdapterConfigError` with protoc's diagnostics (which
    name files relative to their import path) when it does not compile.
    """
    try:
        # Optional at run time: only .proto sources need it.
        import grpc_tools  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError:
        raise AdapterConfigError(
            "compiling a .proto needs grpcio-tools; install it, or compile once with "
            "'protoc --include_imports --descriptor_set_out=FILE' and set 'descriptor_set'"
        ) from None
    try:
        size = proto.stat().st_size
    except OSError:
        raise AdapterConfigError(f"proto file {proto.name} cannot be read") from None
    if size > MAX_PROTO_FILE_BYTES:
        raise AdapterConfigError(
            f"proto file {proto.name} is {size} bytes; the limit is {MAX_PROTO_FILE_BYTES}"
        )
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="ruta-adapter-") as tmp:
        out = Path(tmp) / "descriptors.pb"
        args = [sys.executable, "-m", "grpc_tools.protoc", "-I."]
        args += [f"-I{Path(p).resolve()}" for p in include]
        args += [f"-I{well_known}", f"--descriptor_set_out={out}", "--include_imports", proto.name]
        try:
            done = subprocess.run(  # noqa: S603  (fixed interpreter and arguments, no shell)
                args,
                cwd=proto.resolve().parent,
                capture_output=True,
                text=True,
                timeout=PROTOC_TIMEOUT_SECONDS,
                check=False,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
        except subprocess.TimeoutExpired:
            raise AdapterConfigError(f"compiling {proto.name} took too long") from None
        if done.returncode != 0:
            diagnostic = (done.stderr or done.stdout).strip()[:_MAX_DIAGNOSTIC_CHARS]
            diagnostic = diagnostic.replace(str(proto.resolve().parent) + os.sep, "")
            raise AdapterConfigError(f"proto file {proto.name} does not compile:\n{diagnostic}")
        return out.read_bytes()


def _read_descriptor_set(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_DESCRIPTOR_SET_BYTES:
            raise AdapterConfigError(
                f"descriptor set {path.name} is {size} bytes; the limit is "
                f"{MAX_DESCRIPTOR_SET_BYTES}"
            )
        return path.read_bytes()
    except OSError:
        raise AdapterConfigError(f"descriptor set {path.name} cannot be read") from None


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
        raw = compile_proto(proto, include)
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
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(raw)
    except DecodeError:
        raise AdapterConfigError("descriptor set is not a valid FileDescriptorSet") from None
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        try:
            pool.Add(file)
        except (TypeError, ValueError) as exc:
            raise AdapterConfigError(
                f"descriptor set cannot be loaded at {file.name}: {type(exc).__name__} "
                "(compile with --include_imports)"
            ) from None
    try:
        found: ServiceDescriptor = pool.FindServiceByName(service)
    except KeyError:
        names = sorted(
            f"{f.package}.{s.name}" if f.package else s.name for f in fds.file for s in f.service
        )
        raise AdapterConfigError(
            f"service {service} is not defined (defined: {', '.join(names) or 'none'})"
        ) from None
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
