"""Open-data counts on running security servers (docs/adr/0028-open-data.md).

Two real servers (POP provider, SOC consumer) exchange: six answered calls and one the backend
refuses. ``MonthlyCounts`` over the audit port's mutual TLS gives the ``statistics`` role the
answered exchanges on the provider's side only (the consumer counts none, so an exchange counts
once), refuses every other caller, and is the only call the ``statistics`` role may make. Its
months are bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio
import pytest

from ruta.faults import Fault, fault_from_rpc_error
from ruta.ids import ServerId
from ruta.months import Month
from ruta.pki.tls import channel_credentials
from ruta.v1 import audit_pb2, audit_pb2_grpc
from sandbox.examples.population import encode_get_person
from tests.integration.security_server.bed import (
    PERSON_REQUEST,
    POP,
    SERVICE,
    SOC,
    Bed,
    bed,
    call_metadata,
    get_person,
    wait_cosigned,
)

pytestmark = pytest.mark.integration

ANSWERED = 6


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Bed]:
    async with bed(tmp_path) as instance:
        apps = {}
        for server in (POP, SOC):
            data = instance.settings_dict(server)
            data["audit"] = {"listen": "127.0.0.1:0"}
            apps[server] = await instance.start_server(server, data=data)
        async with instance.consumer_channel(SOC) as channel:
            for _ in range(ANSWERED):
                await get_person(channel)(PERSON_REQUEST, metadata=call_metadata(), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await get_person(channel)(
                    encode_get_person("99999999999"), metadata=call_metadata(), timeout=10
                )
            assert refused.value.code() is grpc.StatusCode.NOT_FOUND
        for app in apps.values():
            await wait_cosigned(app, 2 * (ANSWERED + 1))
        yield instance


def _stub(
    instance: Bed, server: ServerId, *roles: str
) -> tuple[grpc.aio.Channel, audit_pb2_grpc.AuditAsyncStub]:
    who = instance.pki.roles(*roles)
    creds = channel_credentials(who.key_path, who.cert_path, instance.pki.trust_path)
    app = instance.agencies[server].app
    assert app is not None
    channel = grpc.aio.secure_channel(app.addresses["audit"], creds)
    return channel, audit_pb2_grpc.AuditStub(channel)


def _this_month() -> str:
    return str(Month.of(datetime.now(UTC)))


async def test_the_statistics_role_counts_what_the_provider_answered(running: Bed) -> None:
    month = _this_month()
    request = audit_pb2.MonthlyCountsRequest(
        first_month=str(Month.parse(month).plus(-2)), last_month=month
    )
    counted = {}
    for server in (POP, SOC):
        channel, stub = _stub(running, server, "statistics")
        async with channel:
            counted[server] = await stub.MonthlyCounts(request, timeout=10)
    [row] = counted[POP].counts
    assert (row.month, row.service, row.method, row.answered) == (
        month,
        str(SERVICE),
        "GetPerson",
        ANSWERED,
    )
    assert not counted[POP].truncated
    # The consumer's server answered nothing as provider: the exchange is counted once.
    assert list(counted[SOC].counts) == []
    # The answer carries counts only: no client, subject or body field exists in it.
    assert set(audit_pb2.MonthlyCount.DESCRIPTOR.fields_by_name) == {
        "month",
        "service",
        "method",
        "answered",
    }


async def test_months_outside_the_window_count_nothing(running: Bed) -> None:
    channel, stub = _stub(running, POP, "statistics")
    async with channel:
        answer = await stub.MonthlyCounts(
            audit_pb2.MonthlyCountsRequest(first_month="2020-01", last_month="2020-12"),
            timeout=10,
        )
    assert list(answer.counts) == []


@pytest.mark.parametrize(
    ("first", "last"),
    [
        ("2026-13", "2026-12"),
        ("2026-1", "2026-12"),
        ("", ""),
        ("2026-12", "2026-11"),  # backwards
        ("2023-01", "2026-01"),  # 37 months
        ("2026-01", "2026-01" + "x" * 10_000),
    ],
)
async def test_bad_or_too_wide_months_are_refused(running: Bed, first: str, last: str) -> None:
    channel, stub = _stub(running, POP, "statistics")
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.MonthlyCounts(
                audit_pb2.MonthlyCountsRequest(first_month=first, last_month=last), timeout=10
            )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_INVALID_REQUEST


@pytest.mark.parametrize(
    "roles",
    [
        ("auditor-supervisor", "auditor-bodies"),
        (f"auditor:{POP.member}",),
        ("citizen-service",),
        ("registry-admin",),
    ],
)
async def test_only_the_statistics_role_may_ask_for_counts(
    running: Bed, roles: tuple[str, ...]
) -> None:
    channel, stub = _stub(running, POP, *roles)
    month = _this_month()
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.MonthlyCounts(
                audit_pb2.MonthlyCountsRequest(first_month=month, last_month=month), timeout=10
            )
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED
    assert "statistics role" in (caught.value.details() or "")


async def test_the_statistics_role_reads_no_record(running: Bed) -> None:
    channel, stub = _stub(running, POP, "statistics")
    async with channel:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: stub.Query(audit_pb2.QueryRequest(), timeout=10),
            lambda: stub.GetRecords(audit_pb2.GetRecordsRequest(sequences=[0]), timeout=10),
            lambda: stub.GetConsistencyProof(audit_pb2.ConsistencyProofRequest(), timeout=10),
            lambda: stub.GetLatestCheckpoint(audit_pb2.LatestCheckpointRequest(), timeout=10),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call()
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.ExportEvidence(audit_pb2.ExportEvidenceRequest(), timeout=10):
                pass
        assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED
