"""Mutual TLS over real grpc.aio on loopback, and the peer certificate seen by a servicer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from ruta.pki.certs import fingerprint, subsystem_id_of
from ruta.pki.testing import Credential, TestPki
from ruta.pki.tls import channel_credentials, peer_certificate, server_credentials

_METHOD = "/ruta.test.Echo/Who"


class _WhoAmI(grpc.GenericRpcHandler):
    """Answers with the fingerprint of the client's certificate (empty if none)."""

    def service(
        self, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        if details.method != _METHOD:
            return None

        async def who(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            cert = peer_certificate(context)
            return b"" if cert is None else fingerprint(cert).encode()

        return grpc.unary_unary_rpc_method_handler(who)


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki", intermediate=True)


@pytest.fixture
async def server_port(pki: TestPki) -> AsyncIterator[int]:
    ss = pki.auth("LAC/GOV/POP/ss1")
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_WhoAmI(),))
    # Files for the server, objects (leaf + intermediate) to show both input forms.
    port = server.add_secure_port(
        "127.0.0.1:0",
        server_credentials(ss.key_path, [ss.certificate, *pki.chain], pki.trust_path),
    )
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def _call(port: int, creds: grpc.ChannelCredentials) -> bytes:
    async with grpc.aio.secure_channel(f"localhost:{port}", creds) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(_METHOD)
        result: bytes = await call(b"", timeout=10)
        return result


async def test_mutual_tls_sees_client_certificate(pki: TestPki, server_port: int) -> None:
    backend: Credential = pki.subsystem("LAC/GOV/POP/registry")
    creds = channel_credentials(backend.key, [backend.certificate, *pki.chain], pki.trust_anchors)
    seen = await _call(server_port, creds)
    assert seen.decode() == fingerprint(backend.certificate)
    assert str(subsystem_id_of(backend.certificate)) == "LAC/GOV/POP/registry"


async def test_client_from_another_ca_is_refused(
    pki: TestPki, server_port: int, tmp_path: Path
) -> None:
    stranger = TestPki(tmp_path / "other").subsystem("LAC/GOV/EVIL/x")
    creds = channel_credentials(stranger.key_path, stranger.cert_path, pki.trust_path)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(server_port, creds)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_no_client_certificate_reads_as_none(pki: TestPki) -> None:
    ss = pki.auth("LAC/GOV/POP/ss1")
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_WhoAmI(),))
    port = server.add_secure_port(
        "127.0.0.1:0",
        server_credentials(ss.key, [ss.certificate, *pki.chain], pki.trust_anchors, False),
    )
    await server.start()
    try:
        anonymous = grpc.ssl_channel_credentials(root_certificates=pki.root.pem)
        assert await _call(port, anonymous) == b""
    finally:
        await server.stop(None)
