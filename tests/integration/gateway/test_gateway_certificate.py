"""The consumer port accepts a member's gateway certificate for that member's subsystems only
(docs/adr/0021-gateway.md), over real mTLS."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio
import pytest

from ruta.ids import MemberId, SubsystemId
from sandbox.examples.population import decode_person
from tests.integration.security_server.bed import (
    BENEFITS,
    INCOME,
    PERSON_REQUEST,
    SOC,
    Bed,
    call_metadata,
    fault_of,
    get_person,
    provider_and_consumer,
)

pytestmark = pytest.mark.integration


def _gateway_channel(instance: Bed, member: MemberId) -> grpc.aio.Channel:
    cred = instance._issue(instance.pki.gateway(member))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=instance.pki.trust_path.read_bytes(),
        private_key=cred.key_path.read_bytes(),
        certificate_chain=cred.cert_path.read_bytes(),
    )
    return grpc.aio.secure_channel(instance.agencies[SOC].addresses["consumer"], credentials)


async def test_a_gateway_acts_for_its_own_members_subsystems(tmp_path: Path) -> None:
    async with (
        provider_and_consumer(tmp_path) as instance,
        _gateway_channel(instance, BENEFITS.member) as channel,
    ):
        answer = await get_person(channel)(PERSON_REQUEST, metadata=call_metadata(), timeout=10)
        assert decode_person(answer)["given_name"] == "Ana"


@pytest.mark.parametrize(
    ("gateway_of", "client"),
    [
        # Another member's gateway, acting for its own subsystem at SOC's server.
        (INCOME.member, INCOME),
        # Another member's gateway, acting for a subsystem of SOC.
        (INCOME.member, BENEFITS),
        # SOC's own gateway, acting for another member's subsystem.
        (BENEFITS.member, INCOME),
        (BENEFITS.member, SubsystemId.parse("DEV/GOV/TAX/other")),
    ],
)
async def test_a_gateway_never_acts_for_another_members_subsystems(
    tmp_path: Path, gateway_of: MemberId, client: SubsystemId
) -> None:
    async with (
        provider_and_consumer(tmp_path) as instance,
        _gateway_channel(instance, gateway_of) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await get_person(channel)(PERSON_REQUEST, metadata=call_metadata(client), timeout=10)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert fault_of(info.value) == "client.permission_denied"
