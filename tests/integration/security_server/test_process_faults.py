"""The faults of DESIGN.md provoked against security servers running as ``ruta ss serve``
processes (test_faults.py covers each one in detail with in-process servers).

The servers are started once per test and every refusal is checked in turn, which keeps the
machine's load low; each check names the fault it provokes.
"""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path

import pytest

from ruta.ids import SubsystemId
from sandbox.examples.population import encode_get_person
from tests.integration.security_server.bed import (
    INCOME,
    POP,
    SOC,
    TAX,
    TEST_MAX_MESSAGE_BYTES,
    Bed,
    bed,
    call_metadata,
    consumer_refusal,
    get_person,
    provider_fault,
    send_to_provider,
    signed_request,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _ok(instance: Bed) -> None:
    async with instance.consumer_channel(SOC) as channel:
        await get_person(channel)(encode_get_person("38001010001"), metadata=call_metadata())


async def test_each_fault_against_server_processes(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        for server in (POP, SOC, TAX):
            await instance.spawn_server(server)
        await _ok(instance)

        async def refused(**kwargs: object) -> str | None:
            _, fault = await consumer_refusal(instance, **kwargs)  # type: ignore[arg-type]
            return fault

        # Refused by the consumer server.
        assert await refused(server=TAX, metadata=call_metadata(INCOME)) == (
            "server.consumer.access_denied"
        )
        assert await refused(path="/other.v1.Other/Get") == "client.unknown_service"
        assert await refused(body=b"\x0a" * (TEST_MAX_MESSAGE_BYTES + 1)) == (
            "client.message_too_large"
        )
        assert await refused(metadata=(("ruta-client", "DEV/GOV/SOC/benefits"),)) == (
            "client.missing_header"
        )
        assert await refused(as_subsystem=SubsystemId.parse("DEV/GOV/SOC/other")) == (
            "client.permission_denied"
        )
        repeated = call_metadata(extra=(("ruta-message-id", str(uuid.uuid4())),))
        async with instance.consumer_channel(SOC) as channel:
            await get_person(channel)(encode_get_person("38001010001"), metadata=repeated)
        assert await refused(metadata=repeated) == "client.reused_message_id"
        # Hand-made messages straight to the provider's transport.
        header, message = signed_request(instance)
        header.purpose = "tampered"
        message.header = header.SerializeToString(deterministic=True)
        assert await provider_fault(instance, message) == "server.provider.invalid_signature"
        _, message = signed_request(instance)
        _, other = signed_request(instance)
        message.signature.value = other.signature.value
        assert await provider_fault(instance, message) == "server.provider.invalid_signature"
        _, message = signed_request(instance, signing=instance.agencies[TAX].signing)
        assert await provider_fault(instance, message) == "server.provider.signer_mismatch"
        old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=10)
        _, message = signed_request(instance, created_at=old)
        assert await provider_fault(instance, message) == "server.provider.stale_message"
        _, message = signed_request(instance, sender=TAX, client=INCOME)
        assert await provider_fault(instance, message, peer=TAX) == (
            "server.provider.access_denied"
        )
        _, message = signed_request(instance)
        await send_to_provider(instance, message)
        assert await provider_fault(instance, message) == "server.provider.replayed_message"
        # Revoked contract: a new configuration without it reaches both servers.
        instance.contract_active = False
        await instance.wait_for_process_serial(instance.publish(), SOC, POP)
        assert await refused() == "server.consumer.access_denied"
        _, message = signed_request(instance)
        assert await provider_fault(instance, message) == "server.provider.access_denied"
        # Backend down.
        instance.contract_active = True
        await instance.wait_for_process_serial(instance.publish(), SOC, POP)
        await _ok(instance)
        await instance.stop_backend()
        assert await refused() == "server.provider.service_failed"
