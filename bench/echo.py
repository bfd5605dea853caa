"""A trivial provider backend for benchmarks: ``bench.v1.Echo/Echo`` answers with the request's
own bytes, so the payload size is the caller's choice and the backend costs next to nothing.

Run on its own: ``python -m bench.echo --listen 127.0.0.1:0 --ready-file F`` writes
``{"address": "127.0.0.1:PORT", "pid": N}`` to ``F`` once it serves; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2

from ruta.readiness import stop_event, write_ready_file

__all__ = ["ECHO_PATH", "MAX_ECHO_BYTES", "METHOD", "SERVICE_NAME", "file_descriptor_set", "serve"]

SERVICE_NAME: Final = "bench.v1.Echo"
METHOD: Final = "Echo"
ECHO_PATH: Final = f"/{SERVICE_NAME}/{METHOD}"
#: Largest request echoed (and largest message the backend's gRPC accepts).
MAX_ECHO_BYTES: Final = 8 * 1024 * 1024


def file_descriptor_set() -> bytes:
    """The ``FileDescriptorSet`` a registry would publish for the echo service (bytes in,
    the same bytes out: one message with one ``bytes`` field)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="bench/v1/echo.proto", package="bench.v1", syntax="proto3"
    )
    message = file.message_type.add(name="Blob")
    message.field.add(
        name="data",
        json_name="data",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    service = file.service.add(name="Echo")
    service.method.add(name=METHOD, input_type=".bench.v1.Blob", output_type=".bench.v1.Blob")
    return descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString(deterministic=True)


async def _echo(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return body


def _handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            METHOD: grpc.unary_unary_rpc_method_handler(
                _echo, request_deserializer=None, response_serializer=None
            )
        },
    )


async def serve(listen: str, ready_file: Path | None) -> None:
    """Serve on ``listen`` (plaintext loopback) until SIGTERM/SIGINT."""
    options = [
        ("grpc.max_receive_message_length", MAX_ECHO_BYTES),
        ("grpc.max_send_message_length", MAX_ECHO_BYTES),
    ]
    stop = stop_event()
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((_handler(),))
    port = server.add_insecure_port(listen)
    await server.start()
    if ready_file is not None:
        host = listen.rpartition(":")[0]
        write_ready_file(ready_file, {"address": f"{host}:{port}", "pid": os.getpid()})
    try:
        await stop.wait()
    finally:
        await server.stop(grace=1.0)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--listen host:port`` (default 127.0.0.1:0), ``--ready-file PATH``."""
    parser = argparse.ArgumentParser(description="Echo backend for benchmarks.")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.ready_file))


if __name__ == "__main__":
    main()
