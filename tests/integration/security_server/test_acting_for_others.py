"""A security server acts only for subsystems of its own member (issue 12, finding 2).

The attack: a backend certificate of DEV/GOV/SOC/benefits presented on another member's consumer
port with ``ruta-client: DEV/GOV/SOC/benefits``. That server would sign the request with its own
member's key and log it; the provider refuses it (``signer_mismatch``), and the record left behind
made every complete export of that server's log fail verification. Now it is refused with a
``client.*`` fault before anything is signed or logged. Real servers, real mTLS, real SQLite.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from ruta.ids import ServerId, SubsystemId
from tests.integration.security_server.bed import (
    BENEFITS,
    PERSON_REQUEST,
    POP,
    SOC,
    TAX,
    bed,
    call_metadata,
    consumer_refusal,
    full_export,
    get_person,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("server", [TAX, POP], ids=str)
async def test_another_members_subsystem_is_refused_before_signing(
    tmp_path: Path, server: ServerId
) -> None:
    async with bed(tmp_path) as instance:
        await instance.start_server(POP)
        if server != POP:
            await instance.start_server(server)
        app = instance.agencies[server].app
        assert app is not None
        assert app.log is not None
        before = app.log.size()
        refusal = await consumer_refusal(
            instance, server=server, as_subsystem=BENEFITS, metadata=call_metadata(BENEFITS)
        )
        assert refusal == (grpc.StatusCode.PERMISSION_DENIED, "client.permission_denied")
        assert app.log.size() == before  # nothing signed, nothing logged


async def test_unregistered_subsystem_of_the_own_member_is_refused(tmp_path: Path) -> None:
    unregistered = SubsystemId.parse("DEV/GOV/SOC/unlisted")
    async with bed(tmp_path) as instance:
        await instance.start_server(POP)
        app = await instance.start_server(SOC)
        assert app.log is not None
        refusal = await consumer_refusal(
            instance, as_subsystem=unregistered, metadata=call_metadata(unregistered)
        )
        assert refusal == (grpc.StatusCode.PERMISSION_DENIED, "client.permission_denied")
        assert app.log.size() == 0


async def test_own_log_still_verifies_after_the_attempt(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        await instance.start_server(POP)
        await instance.start_server(SOC)
        await instance.start_server(TAX)
        async with instance.consumer_channel(SOC) as channel:
            await get_person(channel)(PERSON_REQUEST, metadata=call_metadata())
        await consumer_refusal(
            instance, server=TAX, as_subsystem=BENEFITS, metadata=call_metadata(BENEFITS)
        )
        for server in (SOC, POP):
            report = await full_export(instance, server)
            assert report.ok, report.text()
