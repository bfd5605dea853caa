"""Auditor roles against running security servers (docs/adr/0012).

Two real servers (POP provider, SOC consumer) exchange, the witness cosigns their logs, and
auditors with different certificates call each server's audit port over mutual TLS: an auditor
scoped to one member is refused on another member's server; an auditor without the body
privilege gets no body from queries, records or exports (``withheld``), and its exports still
verify; the supervisory auditor reads every server.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest

from ruta.evidence import verify_bundle
from ruta.faults import Fault, fault_from_rpc_error
from ruta.ids import ServerId
from ruta.pki.testing import Credential, TestPki
from ruta.pki.tls import channel_credentials
from ruta.settings import ConfigError
from ruta.v1 import audit_pb2, audit_pb2_grpc
from security_server.server import SecurityServerApp
from tests.integration.security_server.bed import (
    PERSON_REQUEST,
    POP,
    SOC,
    Bed,
    bed,
    call_metadata,
    get_person,
    wait_cosigned,
)

pytestmark = pytest.mark.integration

EXCHANGES = 2
#: Records each server logs per exchange (request and response).
RECORDS = 2 * EXCHANGES


@dataclass
class Running:
    instance: Bed
    apps: dict[ServerId, SecurityServerApp]

    def stub(
        self, server: ServerId, who: Credential
    ) -> tuple[grpc.aio.Channel, audit_pb2_grpc.AuditAsyncStub]:
        creds = channel_credentials(who.key_path, who.cert_path, self.instance.pki.trust_path)
        channel = grpc.aio.secure_channel(self.apps[server].addresses["audit"], creds)
        return channel, audit_pb2_grpc.AuditStub(channel)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with bed(tmp_path) as instance:
        apps = {}
        for server in (POP, SOC):
            data = instance.settings_dict(server)
            data["audit"] = {"listen": "127.0.0.1:0"}
            apps[server] = await instance.start_server(server, data=data)
        async with instance.consumer_channel(SOC) as channel:
            for _ in range(EXCHANGES):
                await get_person(channel)(PERSON_REQUEST, metadata=call_metadata(), timeout=10)
        for app in apps.values():
            await wait_cosigned(app, RECORDS)
        yield Running(instance, apps)


@dataclass(frozen=True)
class Seen:
    """What one auditor got from one server: body states from Query, GetRecords and the
    export, the bodies GetRecords handed out, and the export's body files."""

    query_states: set[str]
    record_states: set[str]
    bodies: int
    bundle_states: set[str]
    bundle_body_files: int


async def _read_all(running: Running, server: ServerId, who: Credential) -> Seen:
    channel, stub = running.stub(server, who)
    async with channel:
        page = await stub.Query(audit_pb2.QueryRequest(page_size=RECORDS), timeout=10)
        got = await stub.GetRecords(
            audit_pb2.GetRecordsRequest(sequences=range(RECORDS), include_bodies=True),
            timeout=10,
        )
        data = b"".join(
            [
                chunk.data
                async for chunk in stub.ExportEvidence(
                    audit_pb2.ExportEvidenceRequest(include_bodies=True), timeout=30
                )
            ]
        )
    report = verify_bundle(data)
    assert report.ok, report.first_failure
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        body_files = sum(1 for n in bundle.namelist() if n.startswith("bodies/"))
    return Seen(
        query_states={r.body_state for r in page.records},
        record_states={p.record.body_state for p in got.records},
        bodies=sum(1 for p in got.records if p.body_included and p.body),
        bundle_states={r.body for r in report.records},
        bundle_body_files=body_files,
    )


WITHHELD = Seen({"withheld"}, {"withheld"}, 0, {"withheld"}, 0)
WITH_BODIES = Seen({"stored"}, {"stored"}, RECORDS, {"stored, digest ok"}, RECORDS)


async def test_an_auditor_of_another_member_is_refused_on_every_call(running: Running) -> None:
    soc_auditor = running.instance.pki.roles(
        f"auditor:{SOC.member}", f"auditor-bodies:{SOC.member}"
    )
    channel, stub = running.stub(POP, soc_auditor)
    async with channel:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: stub.Query(audit_pb2.QueryRequest(), timeout=10),
            lambda: stub.GetRecords(
                audit_pb2.GetRecordsRequest(sequences=[0], include_bodies=True), timeout=10
            ),
            lambda: stub.GetConsistencyProof(audit_pb2.ConsistencyProofRequest(), timeout=10),
            lambda: stub.GetLatestCheckpoint(audit_pb2.LatestCheckpointRequest(), timeout=10),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call()
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED
            assert f"audits {SOC.member} only" in (caught.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.ExportEvidence(audit_pb2.ExportEvidenceRequest(), timeout=10):
                pass
        assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED
    # Its own member's server it reads, bodies included.
    assert await _read_all(running, SOC, soc_auditor) == WITH_BODIES


async def test_without_the_body_privilege_no_body_leaves_the_server(running: Running) -> None:
    pki = running.instance.pki
    reader = pki.roles(f"auditor:{POP.member}")
    assert await _read_all(running, POP, reader) == WITHHELD
    privileged = pki.roles(f"auditor:{POP.member}", f"auditor-bodies:{POP.member}")
    assert await _read_all(running, POP, privileged) == WITH_BODIES


async def test_the_supervisory_auditor_reads_every_server(running: Running) -> None:
    pki = running.instance.pki
    supervisor = pki.roles("auditor-supervisor")
    for server in (POP, SOC):
        assert await _read_all(running, server, supervisor) == WITHHELD
    with_all_bodies = pki.roles("auditor-supervisor", "auditor-bodies")
    for server in (POP, SOC):
        assert await _read_all(running, server, with_all_bodies) == WITH_BODIES
    # A body privilege for one member opens that member's bodies only.
    pop_bodies = pki.roles("auditor-supervisor", f"auditor-bodies:{POP.member}")
    assert await _read_all(running, POP, pop_bodies) == WITH_BODIES
    assert await _read_all(running, SOC, pop_bodies) == WITHHELD


async def test_a_revoked_auditor_certificate_is_refused(running: Running) -> None:
    """The CA revokes a departed auditor's certificate: its OCSP responder reports it, and the
    running server refuses that certificate on every call while another auditor still reads."""
    departed = running.instance.pki.roles("auditor-supervisor")
    staying = running.instance.pki.roles("auditor-supervisor")
    running.instance.ocsp.revoked.add(departed.certificate.serial_number)
    channel, stub = running.stub(POP, departed)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Query(audit_pb2.QueryRequest(), timeout=10)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED
    assert "revoked" in (caught.value.details() or "")
    channel, stub = running.stub(POP, staying)
    async with channel:
        page = await stub.Query(audit_pb2.QueryRequest(page_size=RECORDS), timeout=10)
    assert len(page.records) == RECORDS


async def test_audit_role_ca_names_the_ca_whose_role_certificates_count(tmp_path: Path) -> None:
    """``[audit] role_ca`` read from the settings: the instance's CA there, roles count; a CA
    that is no trust anchor of the configuration in force there, no role counts (docs/adr/0036)."""
    other = TestPki(tmp_path / "other")
    async with bed(tmp_path / "bed") as instance:
        apps = {}
        for server, role_ca in ((POP, other.trust_path), (SOC, instance.pki.trust_path)):
            data = instance.settings_dict(server)
            data["audit"] = {"listen": "127.0.0.1:0", "role_ca": str(role_ca)}
            apps[server] = await instance.start_server(server, data=data)
        running = Running(instance, apps)
        supervisor = instance.pki.roles("auditor-supervisor")
        channel, stub = running.stub(SOC, supervisor)
        # ListLogs depends on the caller's role alone (not on a witness having cosigned yet).
        async with channel:
            await stub.ListLogs(audit_pb2.ListLogsRequest(), timeout=10)  # answered: roles count
        channel, stub = running.stub(POP, supervisor)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListLogs(audit_pb2.ListLogsRequest(), timeout=10)
        assert fault_from_rpc_error(refused.value)[0] is Fault.CLIENT_PERMISSION_DENIED
        assert "role_ca" in (refused.value.details() or "")


async def _list_logs(running: Running, server: ServerId, who: Credential) -> None:
    """``who`` calls ListLogs on ``server``: it depends on the caller's role alone (not on a
    witness having cosigned yet)."""
    channel, stub = running.stub(server, who)
    async with channel:
        await stub.ListLogs(audit_pb2.ListLogsRequest(), timeout=10)


async def _list_logs_refused(running: Running, server: ServerId, who: Credential) -> str:
    """The details of ListLogs's refusal of ``who`` on ``server`` (``client.permission_denied``)."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _list_logs(running, server, who)
    assert fault_from_rpc_error(refused.value)[0] is Fault.CLIENT_PERMISSION_DENIED
    return refused.value.details() or ""


async def test_the_configuration_names_the_role_ca_among_two_anchors(tmp_path: Path) -> None:
    """Two trust anchors, the registry naming the instance's CA as role issuer: its role
    certificates count with no server setting; the other anchor's grant nothing; and the same
    two anchors without the field (an older configuration) keep ADR 0036's rule (docs/adr/0039)."""
    other = TestPki(tmp_path / "other")
    async with bed(tmp_path / "bed") as instance:
        instance.more_anchors = [other.root.certificate]
        instance.role_issuers = [instance.pki.root.certificate]
        instance.publish()
        data = instance.settings_dict(POP)
        data["audit"] = {"listen": "127.0.0.1:0"}
        running = Running(instance, {POP: await instance.start_server(POP, data=data)})
        client = running.apps[POP].globalconf
        assert client is not None
        assert client.held is not None
        assert len(client.held.trust_anchors) == 2

        named = instance.pki.roles("auditor-supervisor")
        await _list_logs(running, POP, named)  # answered: its roles count
        foreign = other.roles("auditor-supervisor")
        assert "issued directly" in await _list_logs_refused(running, POP, foreign)

        instance.role_issuers = None
        await instance.wait_for_serial(instance.publish())
        assert "2 trust anchors" in await _list_logs_refused(running, POP, named)


async def test_a_role_ca_the_configuration_does_not_name_as_role_issuer_is_refused(
    tmp_path: Path,
) -> None:
    """``[audit] role_ca`` may narrow the published role issuers, never widen them: naming
    another trust anchor stops the server at start-up; naming the published one starts it."""
    other = TestPki(tmp_path / "other")
    async with bed(tmp_path / "bed") as instance:
        instance.more_anchors = [other.root.certificate]
        instance.role_issuers = [instance.pki.root.certificate]
        instance.publish()
        data = instance.settings_dict(POP)
        data["audit"] = {"listen": "127.0.0.1:0", "role_ca": str(other.trust_path)}
        with pytest.raises(ConfigError, match="does not name as a role issuer") as refused:
            await instance.start_server(POP, data=data)
        assert refused.value.fault is Fault.CLIENT_INVALID_CONFIG
        data["audit"]["role_ca"] = str(instance.pki.trust_path)
        running = Running(instance, {POP: await instance.start_server(POP, data=data)})
        supervisor = instance.pki.roles("auditor-supervisor")
        await _list_logs(running, POP, supervisor)
