"""The example population backend: its run-time descriptor matches the .proto, and it serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2

from sandbox.examples.population import (
    GET_PERSON_PATH,
    PopulationBackend,
    decode_person,
    encode_get_person,
    file_descriptor_set,
)

PROTO_ROOT = Path(__file__).resolve().parents[3] / "proto" / "examples"


def test_descriptor_matches_proto_file(tmp_path: Path) -> None:
    out = tmp_path / "set.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--descriptor_set_out={out}",
            "population/v1/population.proto",
        ],
        check=True,
    )
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    built = descriptor_pb2.FileDescriptorSet.FromString(file_descriptor_set())
    assert built == compiled


@pytest.mark.parametrize(
    ("national_id", "code"),
    [
        ("38001010001", grpc.StatusCode.OK),
        ("00000000000", grpc.StatusCode.NOT_FOUND),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_backend_serves(national_id: str, code: grpc.StatusCode) -> None:
    backend = PopulationBackend()
    server, address = await backend.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                GET_PERSON_PATH
            )
            metadata = (("ruta-client", "A/B/C/D"),)
            if code == grpc.StatusCode.OK:
                raw = await call(encode_get_person(national_id), metadata=metadata)
                assert decode_person(raw)["given_name"] == "Ana"
            else:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(encode_get_person(national_id), metadata=metadata)
                assert info.value.code() == code
        assert backend.calls[0]["ruta-client"] == "A/B/C/D"
    finally:
        await server.stop(None)
