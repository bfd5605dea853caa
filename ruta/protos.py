"""Compiling ``.proto`` files into serialised ``FileDescriptorSet`` bytes, and finding a service
in such a set.

The registry (``service add --proto``), adapters (a ``proto`` source) and the sandbox all describe
a service by its FileDescriptorSet; this is the one place that runs ``grpc_tools.protoc`` for
them. protoc runs in a child process, so its diagnostics can be reported, bounded in time and
stripped of the folders it was given.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from ruta.faults import Fault, RutaError
from ruta.files import FileProblem, FileReadError, read_bounded

__all__ = [
    "MAX_COMPILED_DESCRIPTOR_SET_BYTES",
    "MAX_PROTO_FILE_BYTES",
    "PROTOC_TIMEOUT_SECONDS",
    "ProtoCompileError",
    "compile_descriptor_set",
    "service_descriptor",
]

#: Largest ``.proto`` file compiled.
MAX_PROTO_FILE_BYTES: Final = 1024 * 1024
#: Largest descriptor set a compilation may produce.
MAX_COMPILED_DESCRIPTOR_SET_BYTES: Final = 8 * 1024 * 1024
#: Longest a protoc run may take.
PROTOC_TIMEOUT_SECONDS: Final = 60.0
#: Longest protoc diagnostic kept in an error.
_MAX_DIAGNOSTIC_CHARS: Final = 2000


class ProtoCompileError(RutaError):
    """A ``.proto`` file cannot be read or does not compile."""

    default_fault = Fault.CLIENT_INVALID_CONFIG


def compile_descriptor_set(proto: Path, import_paths: Sequence[Path] = ()) -> bytes:
    """Compile ``proto`` (with its imports) into a serialised ``FileDescriptorSet``.

    ``import_paths`` are searched in order (default: the file's own folder), then the well-known
    types shipped with grpc_tools; ``proto`` must lie inside one of them. Raises
    :class:`ProtoCompileError` when the file is missing or over :data:`MAX_PROTO_FILE_BYTES`,
    protoc fails or takes longer than :data:`PROTOC_TIMEOUT_SECONDS` (the message carries
    protoc's diagnostics, with the given folders stripped), or the result is over
    :data:`MAX_COMPILED_DESCRIPTOR_SET_BYTES`. Nothing is left behind either way.
    """
    try:
        import grpc_tools  # type: ignore[import-untyped]  # noqa: PLC0415 - only .proto sources need it
    except ImportError:
        raise ProtoCompileError(
            "compiling a .proto needs grpcio-tools; install it, or compile once with "
            "'protoc --include_imports --descriptor_set_out=FILE' and give that file instead"
        ) from None
    try:
        size = proto.stat().st_size
    except OSError:
        raise ProtoCompileError(f"proto file {proto.name} cannot be read") from None
    if size > MAX_PROTO_FILE_BYTES:
        raise ProtoCompileError(
            f"proto file {proto.name} is {size} bytes; the limit is {MAX_PROTO_FILE_BYTES}"
        )
    folders = [Path(p).resolve() for p in import_paths] or [proto.resolve().parent]
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="ruta-protoc-") as tmp:
        out = Path(tmp) / "descriptors.pb"
        args = [sys.executable, "-m", "grpc_tools.protoc"]
        args += [f"-I{folder}" for folder in folders]
        args += [f"-I{well_known}", "--include_imports", f"--descriptor_set_out={out}"]
        args.append(str(proto.resolve()))
        try:
            done = subprocess.run(  # noqa: S603 - fixed interpreter and arguments, no shell
                args,
                capture_output=True,
                text=True,
                timeout=PROTOC_TIMEOUT_SECONDS,
                check=False,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
        except subprocess.TimeoutExpired:
            raise ProtoCompileError(f"compiling {proto.name} took too long") from None
        if done.returncode != 0:
            diagnostic = (done.stderr or done.stdout).strip()
            for folder in (*folders, proto.resolve().parent):
                diagnostic = diagnostic.replace(str(folder) + os.sep, "")
            raise ProtoCompileError(
                f"proto file {proto.name} does not compile:\n{diagnostic[:_MAX_DIAGNOSTIC_CHARS]}"
            )
        try:
            return read_bounded(out, MAX_COMPILED_DESCRIPTOR_SET_BYTES)
        except FileReadError as exc:
            if exc.problem is FileProblem.TOO_LARGE:
                raise ProtoCompileError(f"the descriptors of {proto.name} are too large") from None
            raise ProtoCompileError(f"the descriptors of {proto.name} cannot be read") from None


def service_descriptor(descriptor_set: bytes, service: str) -> ServiceDescriptor:
    """The descriptor of ``service`` (``package.Service``) in a serialised FileDescriptorSet.

    The files go into a private pool, so names never clash with another set or with Ruta's own
    generated code. Raises :class:`ProtoCompileError` when the bytes are not a
    FileDescriptorSet, a file cannot be added (an import missing: compile with
    ``--include_imports``), or the set does not define ``service`` (the message lists what it
    defines).
    """
    files = descriptor_pb2.FileDescriptorSet()
    try:
        files.ParseFromString(descriptor_set)
    except DecodeError:
        raise ProtoCompileError("descriptor set is not a valid FileDescriptorSet") from None
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        try:
            pool.Add(file)
        except (TypeError, ValueError) as exc:
            raise ProtoCompileError(
                f"descriptor set cannot be loaded at {file.name}: {type(exc).__name__} "
                "(compile with --include_imports)"
            ) from None
    try:
        found: ServiceDescriptor = pool.FindServiceByName(service)
    except KeyError:
        names = sorted(
            f"{f.package}.{s.name}" if f.package else s.name for f in files.file for s in f.service
        )
        raise ProtoCompileError(
            f"service {service} is not defined (defined: {', '.join(names) or 'none'})"
        ) from None
    return found
