"""ruta.admin_rpc: an unreachable registry is server.registry.unavailable, not a gRPC error."""

from __future__ import annotations

import grpc.aio
import pytest

from ruta.admin_rpc import admin_call
from ruta.faults import Fault, RutaError
from ruta.v1 import registry_pb2, registry_pb2_grpc
from tests.conftest import free_port


async def test_an_unreachable_registry_is_unavailable() -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        stub = registry_pb2_grpc.RegistryAdminStub(channel)
        with pytest.raises(RutaError) as caught:
            await admin_call(stub.ListMembers(registry_pb2.ListRequest()))
    assert caught.value.fault is Fault.SERVER_REGISTRY_UNAVAILABLE
    assert "cannot reach the registry's admin API (UNAVAILABLE" in caught.value.message
