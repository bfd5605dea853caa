"""An example backend: a population register serving ``population.v1.PopulationRegister``.

Demos, the sandbox and tests put it behind a provider security server. Its contract is
``proto/examples/population/v1/population.proto``; this module builds the same descriptor at run
time (no generated code, no compiler needed) and a test checks that the two agree.

Run it on its own with
``python -m sandbox.examples.population --listen 127.0.0.1:0 --ready-file F``; it writes
``{"address": "127.0.0.1:PORT"}`` to ``F`` once it serves, and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from ruta.readiness import stop_event, write_ready_file

__all__ = [
    "GET_PERSON_PATH",
    "MAX_NATIONAL_ID_LENGTH",
    "PACKAGE",
    "SAMPLE_PEOPLE",
    "SERVICE_NAME",
    "PopulationBackend",
    "decode_person",
    "encode_get_person",
    "file_descriptor_set",
    "request_message",
]

PACKAGE: Final = "population.v1"
SERVICE_NAME: Final = "population.v1.PopulationRegister"
GET_PERSON_PATH: Final = f"/{SERVICE_NAME}/GetPerson"
#: Longest national id looked up.
MAX_NATIONAL_ID_LENGTH: Final = 64
#: A national id that makes the backend wait past any reasonable deadline (deadline tests).
SLOW_NATIONAL_ID: Final = "SLOW"

#: The register's contents: national id -> (given name, family name, birth date, address).
SAMPLE_PEOPLE: Final[Mapping[str, tuple[str, str, str, str]]] = {
    "38001010001": ("Ana", "Pérez", "1980-01-01", "Calle Mayor 1, Montevideo"),
    "39202020002": ("Luis", "Gómez", "1992-02-02", "Av. Central 22, Asunción"),
    "40503030003": ("Marta", "Silva", "2005-03-03", "Rua Nova 3, Porto Alegre"),
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    file = descriptor_pb2.FileDescriptorProto(
        name="population/v1/population.proto", package=PACKAGE, syntax="proto3"
    )
    request = file.message_type.add(name="GetPersonRequest")
    request.field.add(
        name="national_id", json_name="nationalId", number=1, type=string, label=optional
    )
    person = file.message_type.add(name="Person")
    for number, (name, json_name) in enumerate(
        [
            ("national_id", "nationalId"),
            ("given_name", "givenName"),
            ("family_name", "familyName"),
            ("birth_date", "birthDate"),
            ("address", "address"),
        ],
        start=1,
    ):
        person.field.add(name=name, json_name=json_name, number=number, type=string, label=optional)
    service = file.service.add(name="PopulationRegister")
    service.method.add(
        name="GetPerson",
        input_type=f".{PACKAGE}.GetPersonRequest",
        output_type=f".{PACKAGE}.Person",
    )
    return file


def file_descriptor_set() -> bytes:
    """The serialised ``FileDescriptorSet`` of the service (what a registry publishes)."""
    return descriptor_pb2.FileDescriptorSet(file=[_file_descriptor()]).SerializeToString(
        deterministic=True
    )


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
_REQUEST: Final = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{PACKAGE}.GetPersonRequest")
)
_PERSON: Final = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.Person"))


def request_message(national_id: str) -> Message:
    """A ``GetPersonRequest``."""
    message: Message = _REQUEST(national_id=national_id)
    return message


def encode_get_person(national_id: str) -> bytes:
    """The wire bytes of ``GetPersonRequest{national_id}``."""
    return request_message(national_id).SerializeToString()


def decode_person(data: bytes) -> dict[str, str]:
    """Parse ``Person`` wire bytes into a field dict; raises ``DecodeError`` on bad bytes."""
    message = _PERSON()
    message.ParseFromString(data)
    return {f.name: getattr(message, f.name) for f in message.DESCRIPTOR.fields}


@dataclass
class PopulationBackend:
    """The register as a grpc.aio generic handler; ``calls`` records each call's metadata."""

    people: Mapping[str, tuple[str, str, str, str]] = field(default_factory=lambda: SAMPLE_PEOPLE)
    calls: list[dict[str, str]] = field(default_factory=list)

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler serving ``GetPerson`` with raw bytes in and out."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "GetPerson": grpc.unary_unary_rpc_method_handler(
                    self._get_person,
                    request_deserializer=None,
                    response_serializer=None,
                )
            },
        )

    async def _get_person(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.calls.append(
            {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        )
        request = _REQUEST()
        try:
            request.ParseFromString(raw)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a GetPersonRequest")
        national_id: str = getattr(request, "national_id", "")
        if not national_id or len(national_id) > MAX_NATIONAL_ID_LENGTH:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "national_id is required")
        if national_id == SLOW_NATIONAL_ID:
            await asyncio.sleep(3600)
        found = self.people.get(national_id)
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no person with that national_id")
        given, family, born, address = found
        person = _PERSON(
            national_id=national_id,
            given_name=given,
            family_name=family,
            birth_date=born,
            address=address,
        )
        data: bytes = person.SerializeToString()
        return data

    async def start(self, listen: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, str]:
        """Serve on ``listen`` (plaintext; a backend sits on loopback next to its server).
        Returns the started server and the bound ``host:port``."""
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self.handler(),))
        host = listen.rpartition(":")[0]
        port = server.add_insecure_port(listen)
        await server.start()
        return server, f"{host}:{port}"


async def _serve(listen: str, ready_file: Path | None) -> None:
    server, address = await PopulationBackend().start(listen)
    stop = stop_event()
    if ready_file is not None:
        write_ready_file(ready_file, {"address": address, "pid": os.getpid()})
    await stop.wait()
    await server.stop(grace=1.0)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--listen host:port`` (default 127.0.0.1:0), ``--ready-file PATH``."""
    parser = argparse.ArgumentParser(description="Example population register backend.")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.listen, args.ready_file))


if __name__ == "__main__":
    main()
