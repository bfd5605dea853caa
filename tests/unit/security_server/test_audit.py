"""The audit API over real mutual TLS on loopback: roles, paging, proofs, export, sandbox CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from click.testing import CliRunner
from google.protobuf import timestamp_pb2

from ruta.checkpoint import open_checkpoint
from ruta.evidence import verify_bundle
from ruta.evidence.cli import group
from ruta.faults import Fault, fault_from_rpc_error
from ruta.merkle import leaf_hash, verify_consistency, verify_inclusion
from ruta.pki.testing import Credential, TestPki
from ruta.pki.tls import channel_credentials
from ruta.v1 import audit_pb2, audit_pb2_grpc
from security_server.audit import (
    AuditServicer,
    AuditSettings,
    add_audit_service,
    audit_server_credentials,
)
from security_server.callers import CallerStatus
from security_server.checkpointer import log_verifier
from security_server.transport import PeerStatus
from tests.unit.security_server.evidence_support import CLIENT, Scenario, scenario
from tests.unit.security_server.twin import MemoryOcsp


@dataclass
class Api:
    world: Scenario
    address: str
    auditor: Credential
    admin: Credential
    #: Answers the servicer's revocation checks of callers' certificates.
    ocsp: MemoryOcsp
    #: A CA the audit port's client_ca also lists (TLS accepts its certificates), which is
    #: not a trust anchor of the configuration: it issues no roles here.
    external: TestPki

    def channel(self, who: Credential) -> grpc.aio.Channel:
        creds = channel_credentials(who.key_path, who.cert_path, self.world.pki.trust_path)
        return grpc.aio.secure_channel(self.address, creds)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with scenario(tmp_path, exchanges=3) as world:
        side = world.provider
        tls = world.pki.auth(side.server)
        ocsp = MemoryOcsp(world.pki)
        external = TestPki(tmp_path / "external")
        client_ca = tmp_path / "client-ca.pem"
        client_ca.write_bytes(world.pki.trust_path.read_bytes() + external.trust_path.read_bytes())
        server = grpc.aio.server()
        add_audit_service(
            server,
            AuditServicer(
                log=side.log,
                engine=side.engine,
                server=str(side.server),
                key=side.key,
                globalconf=lambda: world.signed_globalconf,
                settings=AuditSettings(max_page_size=4, metadata_only_subsystems=(str(CLIENT),)),
                callers=CallerStatus(PeerStatus(ocsp), lambda: world.pki.trust_anchors),
            ),
        )
        port = server.add_secure_port(
            "127.0.0.1:0",
            audit_server_credentials(tls.key_path, tls.cert_path, client_ca),
        )
        await server.start()
        try:
            yield Api(
                world,
                f"localhost:{port}",
                world.pki.roles("auditor-supervisor", "auditor-bodies"),
                world.pki.role("registry-admin"),
                ocsp,
                external,
            )
        finally:
            await server.stop(None)


async def test_there_is_no_audit_service_without_revocation_checks(api: Api) -> None:
    side = api.world.provider
    with pytest.raises(TypeError, match="callers"):
        AuditServicer(  # type: ignore[call-arg]
            log=side.log,
            engine=side.engine,
            server=str(side.server),
            key=side.key,
            globalconf=lambda: api.world.signed_globalconf,
        )


async def test_only_auditors_may_call(api: Api) -> None:
    async with api.channel(api.admin) as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetLatestCheckpoint(audit_pb2.LatestCheckpointRequest())
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED


#: One request per role certificate kind, each to an RPC that role may call.
_ROLE_REQUESTS: list[tuple[str, object]] = [
    ("auditor-supervisor", audit_pb2.QueryRequest()),
    ("auditor:DEV/GOV/POP", audit_pb2.LatestCheckpointRequest()),
    ("citizen-service", audit_pb2.AccessRecordsRequest(subject="person-1")),
    ("statistics", audit_pb2.MonthlyCountsRequest(first_month="2026-01", last_month="2026-12")),
]


@pytest.mark.parametrize("failing", [False, True], ids=["revoked", "status-unknown"])
@pytest.mark.parametrize(
    ("role", "request_"),
    _ROLE_REQUESTS,
)
async def test_a_revoked_caller_certificate_is_refused(
    api: Api, role: str, request_: object, failing: bool
) -> None:
    """A certificate the CA revoked (or whose OCSP status cannot be had) is refused whatever
    role it carries; another certificate with the same role still gets its answer."""
    departed, staying = api.world.pki.roles(role), api.world.pki.roles(role)
    if failing:
        api.ocsp.failing_for.add(departed.certificate.serial_number)
    else:
        api.ocsp.revoked.add(departed.certificate.serial_number)
    async with api.channel(departed) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _unary(audit_pb2_grpc.AuditStub(channel), request_)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED
    details = caught.value.details() or ""
    assert ("cannot be established" if failing else "is revoked according to OCSP") in details
    async with api.channel(staying) as channel:
        await _unary(audit_pb2_grpc.AuditStub(channel), request_)


@pytest.mark.parametrize(
    ("role", "request_"),
    _ROLE_REQUESTS,
)
async def test_roles_from_a_client_ca_that_is_not_the_role_ca_are_refused(
    api: Api, role: str, request_: object
) -> None:
    """A certificate from another CA that the port's client_ca lets through the handshake,
    carrying the very role URI, gets no role: it was not issued by the instance's role CA (and
    its revocation could not be checked)."""
    async with api.channel(api.external.roles(role)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _unary(audit_pb2_grpc.AuditStub(channel), request_)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED
    assert "issued directly" in (caught.value.details() or "")
    async with api.channel(api.world.pki.roles(role)) as channel:
        await _unary(audit_pb2_grpc.AuditStub(channel), request_)


async def _unary(stub: audit_pb2_grpc.AuditAsyncStub, request_: object) -> object:
    if isinstance(request_, audit_pb2.QueryRequest):
        return await stub.Query(request_)
    if isinstance(request_, audit_pb2.LatestCheckpointRequest):
        return await stub.GetLatestCheckpoint(request_)
    if isinstance(request_, audit_pb2.AccessRecordsRequest):
        return await stub.AccessRecords(request_)
    assert isinstance(request_, audit_pb2.MonthlyCountsRequest)
    return await stub.MonthlyCounts(request_)


async def test_a_bare_auditor_certificate_is_refused_with_what_to_ask_for(api: Api) -> None:
    # Earlier versions issued ``urn:ruta:role:auditor`` instance-wide (docs/adr/0012).
    async with api.channel(api.world.pki.unchecked_role("auditor")) as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetLatestCheckpoint(audit_pb2.LatestCheckpointRequest())
    assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_PERMISSION_DENIED
    assert "auditor-supervisor" in (caught.value.details() or "")


async def _call(stub: audit_pb2_grpc.AuditAsyncStub, request_: object) -> None:
    if isinstance(request_, audit_pb2.ExportEvidenceRequest):
        async for _ in stub.ExportEvidence(request_):
            pass
    elif isinstance(request_, audit_pb2.GetRecordsRequest):
        await stub.GetRecords(request_)
    elif isinstance(request_, audit_pb2.ConsistencyProofRequest):
        await stub.GetConsistencyProof(request_)
    else:
        assert isinstance(request_, audit_pb2.QueryRequest)
        await stub.Query(request_)


@pytest.mark.parametrize(
    "request_",
    [
        # The reviewed attack: 2**64 - 1 answered UNKNOWN with an OverflowError traceback.
        audit_pb2.ExportEvidenceRequest(from_sequence=2**64 - 1),
        audit_pb2.ExportEvidenceRequest(until_sequence=2**63),
        audit_pb2.ExportEvidenceRequest(from_sequence=3, until_sequence=2),
        audit_pb2.GetRecordsRequest(sequences=[0, 2**64 - 1]),
        audit_pb2.ConsistencyProofRequest(from_size=2**64 - 1),
        audit_pb2.ConsistencyProofRequest(to_size=2**63),
        audit_pb2.QueryRequest(page_token="99999999999999999999"),
        audit_pb2.QueryRequest(page_token="9223372036854775808"),
        audit_pb2.QueryRequest(page_token="\u0661\u0662"),  # digits, but not ASCII ones
        audit_pb2.QueryRequest(page_size=2**32 - 1),
    ],
    ids=lambda r: type(r).__name__,
)
async def test_numbers_out_of_bounds_are_refused_with_a_fault(api: Api, request_: object) -> None:
    async with api.channel(api.auditor) as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(stub, request_)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_INVALID_REQUEST
    assert "Traceback" not in (caught.value.details() or "")
    assert "Error" not in (caught.value.details() or "")
    # The server is still serving.
    async with api.channel(api.auditor) as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        await stub.GetLatestCheckpoint(audit_pb2.LatestCheckpointRequest())


async def test_query_pages_records_proofs_and_consistency(api: Api) -> None:
    side = api.world.provider
    verifier = log_verifier(side.log.origin, side.key)
    async with api.channel(api.auditor) as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        latest = await stub.GetLatestCheckpoint(audit_pb2.LatestCheckpointRequest())
        checkpoint, _ = open_checkpoint(latest.note, verifier)
        assert checkpoint.size == latest.size == 6

        seen: list[int] = []
        token = ""
        while True:
            page = await stub.Query(
                audit_pb2.QueryRequest(
                    filter=audit_pb2.AuditFilter(client=str(CLIENT)), page_size=4, page_token=token
                )
            )
            seen += [r.sequence for r in page.records]
            token = page.next_page_token
            if not token:
                break
        assert seen == list(range(6))

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Query(audit_pb2.QueryRequest(page_size=5))
        assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_INVALID_REQUEST
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Query(audit_pb2.QueryRequest(filter=audit_pb2.AuditFilter(client="x")))
        assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_INVALID_IDENTIFIER
        out_of_range = timestamp_pb2.Timestamp(seconds=2**62)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Query(
                audit_pb2.QueryRequest(filter=audit_pb2.AuditFilter(since=out_of_range))
            )
        assert fault_from_rpc_error(caught.value)[0] is Fault.CLIENT_INVALID_REQUEST

        got = await stub.GetRecords(
            audit_pb2.GetRecordsRequest(sequences=[1, 4], include_bodies=True)
        )
        for proven in got.records:
            verify_inclusion(
                leaf_hash(proven.record.record),
                proven.record.sequence,
                got.checkpoint.size,
                list(proven.inclusion_proof),
                checkpoint.root,
            )
            assert not proven.body_included  # the client is in metadata-only mode here

        first = await side.log.get_checkpoint(2)
        assert first is not None
        proof = await stub.GetConsistencyProof(audit_pb2.ConsistencyProofRequest(from_size=2))
        verify_consistency(2, proof.to_size, list(proof.proof), first.root, checkpoint.root)


async def test_export_streams_a_bundle_that_verifies(api: Api) -> None:
    async with api.channel(api.auditor) as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        data = b"".join(
            [
                chunk.data
                async for chunk in stub.ExportEvidence(
                    audit_pb2.ExportEvidenceRequest(include_bodies=True)
                )
            ]
        )
    report = verify_bundle(data)
    assert report.ok, report.first_failure
    assert {r.body for r in report.records} == {"withheld"}


async def test_cli_export_with_sandbox_credentials(api: Api, tmp_path: Path) -> None:
    server = str(api.world.provider.server)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "sandbox.json").write_text(
        json.dumps(
            {
                "auditor": {
                    "cert": str(api.auditor.cert_path),
                    "key": str(api.auditor.key_path),
                    "ca": str(api.world.pki.trust_path),
                },
                "servers": {server: {"audit": api.address}},
            }
        )
    )
    out = tmp_path / "pop.zip"
    args = ["export", "--sandbox", str(sandbox), "--server", server, "--out", str(out)]
    result = await asyncio.to_thread(CliRunner().invoke, group, args)
    assert result.exit_code == 0, result.output
    verified = await asyncio.to_thread(CliRunner().invoke, group, ["verify", str(out)])
    assert verified.exit_code == 0, verified.output
