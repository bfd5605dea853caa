"""The citizen service's ``AccessRecords`` call over real mutual TLS on loopback: only the
citizen-service role may call it, it may call nothing else, one subject per call, metadata only,
newest first, bounded pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa

from ruta.faults import Fault, fault_from_rpc_error
from ruta.pki.testing import Credential
from ruta.pki.tls import channel_credentials
from ruta.v1 import audit_pb2, audit_pb2_grpc
from security_server.access_records import AccessRecordsError, access_records
from security_server.audit import (
    AuditServicer,
    AuditSettings,
    add_audit_service,
    audit_server_credentials,
)
from security_server.database import open_database
from security_server.log import BodyKey, MessageLog
from tests.unit.security_server.evidence_support import CLIENT, SERVICE, Scenario, scenario
from tests.unit.security_server.log.support import FakeClock, make_entry
from tests.unit.security_server.twin import caller_status


@dataclass
class Api:
    world: Scenario
    address: str

    def stub(self, who: Credential) -> tuple[grpc.aio.Channel, audit_pb2_grpc.AuditAsyncStub]:
        creds = channel_credentials(who.key_path, who.cert_path, self.world.pki.trust_path)
        channel = grpc.aio.secure_channel(self.address, creds)
        return channel, audit_pb2_grpc.AuditStub(channel)

    @property
    def citizen_service(self) -> Credential:
        return self.world.pki.role("citizen-service")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with scenario(tmp_path, exchanges=0) as world:
        await world.exchanges(["person-1", "person-2", "person-1"])
        await world.exchange("person-1", status_code=7, fault="server.provider.access_denied")
        side = world.provider
        tls = world.pki.auth(side.server)
        server = grpc.aio.server()
        add_audit_service(
            server,
            AuditServicer(
                log=side.log,
                engine=side.engine,
                server=str(side.server),
                key=side.key,
                globalconf=lambda: world.signed_globalconf,
                settings=AuditSettings(max_page_size=4),
                callers=caller_status(world.pki),
            ),
        )
        port = server.add_secure_port(
            "127.0.0.1:0",
            audit_server_credentials(tls.key_path, tls.cert_path, world.pki.trust_path),
        )
        await server.start()
        try:
            yield Api(world, f"localhost:{port}")
        finally:
            await server.stop(None)


async def _all(stub: audit_pb2_grpc.AuditAsyncStub, subject: str) -> list[audit_pb2.AccessRecord]:
    records: list[audit_pb2.AccessRecord] = []
    token = ""
    while True:
        page = await stub.AccessRecords(
            audit_pb2.AccessRecordsRequest(subject=subject, page_size=3, page_token=token)
        )
        records.extend(page.records)
        token = page.next_page_token
        if not token:
            return records


async def test_the_citizen_service_reads_one_subjects_records_newest_first(api: Api) -> None:
    channel, stub = api.stub(api.citizen_service)
    async with channel:
        mine = await _all(stub, "person-1")
        other = await _all(stub, "person-2")
        nobody = await _all(stub, "person-404")
    # Three exchanges about person-1: a request and a response each, across pages of 3.
    assert len(mine) == 6
    assert [r.sequence for r in mine] == sorted((r.sequence for r in mine), reverse=True)
    assert {r.client for r in mine} == {str(CLIENT)}
    assert {r.service for r in mine} == {str(SERVICE)}
    assert {r.purpose for r in mine} == {"benefit-eligibility"}
    assert {r.kind for r in mine} == {"request", "response"}
    refused = [r for r in mine if r.kind == "response" and r.status_code != 0]
    assert len(refused) == 1
    assert refused[0].fault == "server.provider.access_denied"
    assert len(other) == 2
    assert {r.message_id for r in other}.isdisjoint({r.message_id for r in mine})
    assert nobody == []
    # Metadata only: the message has no field that could carry a body or the signed bytes.
    assert {f.name for f in audit_pb2.AccessRecord.DESCRIPTOR.fields}.isdisjoint(
        {"body", "record", "signature", "user_id"}
    )


@pytest.mark.parametrize(
    "roles",
    [
        ("auditor-supervisor", "auditor-bodies"),
        ("auditor:DEV/GOV/POP",),
        ("registry-admin",),
        ("statistics",),
        (),
    ],
)
async def test_auditors_and_others_may_not_read_a_record_of_access(
    api: Api, roles: tuple[str, ...]
) -> None:
    who = api.world.pki.roles(*roles) if roles else api.world.pki.subsystem(CLIENT)
    channel, stub = api.stub(who)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.AccessRecords(audit_pb2.AccessRecordsRequest(subject="person-1"))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED
    assert "citizen-service" in (caught.value.details() or "")


async def test_the_citizen_service_may_not_search_fetch_or_export(api: Api) -> None:
    channel, stub = api.stub(api.citizen_service)
    async with channel:
        for call in (
            stub.Query(audit_pb2.QueryRequest(filter=audit_pb2.AuditFilter(subject="person-1"))),
            stub.GetRecords(audit_pb2.GetRecordsRequest(sequences=[0], include_bodies=True)),
            stub.GetLatestCheckpoint(audit_pb2.LatestCheckpointRequest()),
            stub.MonthlyCounts(
                audit_pb2.MonthlyCountsRequest(first_month="2026-01", last_month="2026-12")
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.ExportEvidence(audit_pb2.ExportEvidenceRequest()):
                pass
        assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED


@pytest.mark.parametrize(
    "request_",
    [
        audit_pb2.AccessRecordsRequest(),
        audit_pb2.AccessRecordsRequest(subject="x" * 10_000),
        audit_pb2.AccessRecordsRequest(subject="person-1", page_size=5),
        audit_pb2.AccessRecordsRequest(subject="person-1", page_token="not-a-number"),
        audit_pb2.AccessRecordsRequest(subject="person-1", page_token="9" * 40),
    ],
)
async def test_bad_requests_are_refused_plainly(
    api: Api, request_: audit_pb2.AccessRecordsRequest
) -> None:
    channel, stub = api.stub(api.citizen_service)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.AccessRecords(request_)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_INVALID_REQUEST


async def test_a_subjects_records_are_read_through_the_subject_index(tmp_path: Path) -> None:
    """A citizen's record must not walk the whole log (a cost that grows with it): on SQLite
    the query goes through ``(origin, subject, seq)``, in the order asked, without sorting, and
    the few records not yet indexed (ADR 0053) are read on the primary key."""
    async with scenario(tmp_path, exchanges=3) as world:
        engine = world.provider.engine
        executed: list[tuple[str, Any]] = []

        def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            if "subject" in statement:
                executed.append((statement, parameters))

        sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
        try:
            await access_records(
                [world.provider.log],
                audit_pb2.AccessRecordsRequest(subject="person-1"),
                max_page_size=10,
            )
        finally:
            sa.event.remove(engine.sync_engine, "before_cursor_execute", record)
        [pending, indexed] = executed
        async with engine.connect() as conn:
            plans = {}
            for name, (statement, parameters) in (("pending", pending), ("indexed", indexed)):
                plan = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                plans[name] = " ".join(str(row[-1]) for row in plan)
        assert "ix_log_leaves_origin_subject" in plans["indexed"], plans
        assert "TEMP B-TREE" not in plans["indexed"], plans
        assert (
            "USING INDEX sqlite_autoindex_log_leaves_1 (origin=? AND seq>? AND seq<?)"
            in (plans["pending"])
        ), plans
        assert "SCAN" not in plans["pending"], plans


@pytest.mark.parametrize("page_size", [1, 2, 3, 5, 7, 100])
async def test_pages_cover_every_tree_of_the_server_once(tmp_path: Path, page_size: int) -> None:
    """With workers or nodes, a server's records of a subject are in several trees: paging
    through ``AccessRecords`` reads each record of each tree exactly once."""
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
    key, clock = BodyKey.generate(), FakeClock()
    trees: list[MessageLog] = []
    try:
        for origin, count in (
            ("DEV/GOV/POP/ss1", 5),
            ("DEV/GOV/POP/ss1/w1", 0),
            ("DEV/GOV/POP/ss1/w2", 3),
        ):
            tree = await MessageLog.open(engine, origin=origin, body_key=key, clock=clock)
            trees.append(tree)
            await tree.append(
                [make_entry(subject="person-1", message_id=f"{origin}-{i}") for i in range(count)]
            )
            await tree.append([make_entry(subject="person-2")])
        await _page_through(trees, page_size)
    finally:
        for tree in trees:
            await tree.close()
        await engine.dispose()


async def _page_through(trees: list[MessageLog], page_size: int) -> None:
    seen: list[str] = []
    token = ""
    for _ in range(20):
        reply = await access_records(
            trees,
            audit_pb2.AccessRecordsRequest(
                subject="person-1", page_size=page_size, page_token=token
            ),
            max_page_size=100,
        )
        assert len(reply.records) <= page_size
        seen.extend(r.message_id for r in reply.records)
        token = reply.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(
        [f"DEV/GOV/POP/ss1-{i}" for i in range(5)] + [f"DEV/GOV/POP/ss1/w2-{i}" for i in range(3)]
    )
    with pytest.raises(AccessRecordsError):
        await access_records(
            trees,
            audit_pb2.AccessRecordsRequest(subject="person-1", page_token="9."),
            max_page_size=100,
        )
