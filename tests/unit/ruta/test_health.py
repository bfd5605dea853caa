"""``ruta health`` against real gRPC health services: plaintext, mutual TLS, down, not serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from ruta.cli import main
from ruta.ids import ServerId
from ruta.pki.testing import TestPki
from ruta.pki.tls import server_credentials
from tests.conftest import free_port


class HealthServer:
    def __init__(self, server: grpc.aio.Server, servicer: health.aio.HealthServicer, port: int):
        self.server = server
        self.servicer = servicer
        self.address = f"127.0.0.1:{port}"


async def _serve(credentials: grpc.ServerCredentials | None) -> HealthServer:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = f"127.0.0.1:{free_port()}"
    port = (
        server.add_secure_port(address, credentials)
        if credentials is not None
        else server.add_insecure_port(address)
    )
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("ruta.v1.Down", health_pb2.HealthCheckResponse.NOT_SERVING)
    return HealthServer(server, servicer, port)


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


@pytest.fixture
async def plain() -> AsyncIterator[HealthServer]:
    served = await _serve(None)
    try:
        yield served
    finally:
        await served.server.stop(None)


@pytest.fixture
async def mutual(pki: TestPki) -> AsyncIterator[HealthServer]:
    ident = pki.auth(ServerId.parse("LAC/GOV/POP/ss1"))
    served = await _serve(server_credentials(ident.key_path, ident.cert_path, pki.trust_path))
    try:
        yield served
    finally:
        await served.server.stop(None)


async def _ruta(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, main, ["health", *args])
    return result.exit_code, result.output


async def test_plaintext_serving_and_not_serving(plain: HealthServer) -> None:
    assert await _ruta("--address", plain.address) == (0, "SERVING\n")
    code, out = await _ruta("--address", plain.address, "--service", "ruta.v1.Down")
    assert (code, out) == (1, "NOT_SERVING\n")
    code, out = await _ruta("--address", plain.address, "--service", "ruta.v1.Nothing")
    assert (code, out) == (1, "SERVICE_UNKNOWN\n")


async def test_mutual_tls(mutual: HealthServer, pki: TestPki) -> None:
    client = pki.auth(ServerId.parse("LAC/GOV/TAX/ss1"))
    tls = ("--ca", str(pki.trust_path), "--cert", str(client.cert_path))
    code, out = await _ruta("--address", mutual.address, *tls, "--key", str(client.key_path))
    assert (code, out) == (0, "SERVING\n")
    # Without a client certificate the mutual-TLS port does not answer.
    code, out = await _ruta("--address", mutual.address, "--ca", str(pki.trust_path))
    assert code == 1
    assert out.startswith("UNREACHABLE")
    # Plaintext to a TLS port: no answer either.
    code, out = await _ruta("--address", mutual.address, "--timeout", "2")
    assert code == 1
    assert out.startswith("UNREACHABLE")


async def test_nothing_listening_is_unhealthy() -> None:
    code, out = await _ruta("--address", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == 1
    assert out.startswith("UNREACHABLE: ")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--address", "nohost"), "host:port"),
        (("--address", "127.0.0.1:1", "--cert", __file__), "both --cert and --key"),
        (("--address", "127.0.0.1:1", "--cert", __file__, "--key", __file__), "need --ca"),
        (("--address", "127.0.0.1:1", "--timeout", "0"), "timeout"),
    ],
)
async def test_usage_errors(args: tuple[str, ...], words: str) -> None:
    code, out = await _ruta(*args)
    assert code == 2
    assert words in out
