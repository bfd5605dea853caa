"""The admin API over real grpc.aio mutual TLS: roles from client certificates, faults, bounds."""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf import descriptor_pb2, timestamp_pb2

from registry.admin_api import IssuedCertificate, IssueRequest, RegistryAdminServicer
from registry.errors import NotFoundError
from registry.limits import MAX_DESCRIPTOR_SET_BYTES
from registry.store import RegistryStore, database_url
from ruta.faults import Fault, fault_from_rpc_error
from ruta.globalconf.limits import MAX_OPENAPI_BYTES
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.pki.certs import Role, RoleName, fingerprint, load_certificate, make_csr, roles_of
from ruta.pki.keys import generate_ec_key
from ruta.pki.testing import Credential, TestPki
from ruta.pki.tls import channel_credentials, server_credentials
from ruta.v1 import ids_pb2, registry_pb2, registry_pb2_grpc

POP = MemberId.parse("LAC/GOV/POP")
TAX = MemberId.parse("LAC/GOV/TAX")
POP_REG = SubsystemId.parse("LAC/GOV/POP/registry")
TAX_APP = SubsystemId.parse("LAC/GOV/TAX/app")
PEOPLE = ServiceId.parse("LAC/GOV/POP/registry/pop.v1.People")


def descriptor_set(package: str = "pop.v1", service: str = "People") -> bytes:
    """A FileDescriptorSet declaring ``package.service`` with methods Get and Find."""
    file = descriptor_pb2.FileDescriptorProto(name="people.proto", package=package, syntax="proto3")
    file.message_type.add(name="Query").field.add(
        name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    )
    svc = file.service.add(name=service)
    for method in ("Get", "Find"):
        svc.method.add(name=method, input_type=f".{package}.Query", output_type=f".{package}.Query")
    return descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString()


@dataclass
class Registry:
    pki: TestPki
    port: int
    changes: list[int]
    channels: list[grpc.aio.Channel]
    store: RegistryStore
    issuer: _TestIssuer

    def stub(self, credential: Credential) -> registry_pb2_grpc.RegistryAdminAsyncStub:
        creds = channel_credentials(credential.key, credential.certificate, self.pki.trust_path)
        channel = grpc.aio.secure_channel(f"localhost:{self.port}", creds)
        self.channels.append(channel)
        return registry_pb2_grpc.RegistryAdminStub(channel)


class _TestIssuer:
    """The test PKI as the admin API's CA (a fresh key per certificate; the CSR's is unused)."""

    def __init__(self, pki: TestPki) -> None:
        self._pki = pki
        self.issued_certificates: dict[int, x509.Certificate] = {}
        #: What was issued, keys included (the test holds them as their owners would).
        self.issued_credentials: dict[int, Credential] = {}
        self.revoked: set[int] = set()

    def issue(self, request: IssueRequest) -> IssuedCertificate:
        cred = self._pki.issue(
            request.kind,
            server=request.server,
            member=request.member,
            subsystem=request.subsystem,
            roles=request.roles,
        )
        self.issued_certificates[cred.certificate.serial_number] = cred.certificate
        self.issued_credentials[cred.certificate.serial_number] = cred
        return IssuedCertificate(certificate=cred.certificate, chain=())

    def revoke(self, serial_number: int, reason: x509.ReasonFlags) -> datetime.datetime:
        if serial_number not in self.issued_certificates:
            raise NotFoundError("never issued")
        self.revoked.add(serial_number)
        return datetime.datetime.now(datetime.UTC)

    def is_revoked(self, certificate: x509.Certificate) -> bool:
        return certificate.serial_number in self.revoked

    def issued(self, serial_number: int) -> x509.Certificate | None:
        return self.issued_certificates.get(serial_number)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    pki = TestPki(tmp_path / "pki")
    store = await RegistryStore.open(database_url(None, tmp_path))
    changes: list[int] = []

    async def changed() -> None:
        changes.append(1)

    issuer = _TestIssuer(pki)
    server = grpc.aio.server()
    registry_pb2_grpc.add_RegistryAdminServicer_to_server(
        RegistryAdminServicer(
            store=store,
            instance="LAC",
            on_change=changed,
            issuer=issuer,
            revoked=issuer.is_revoked,
        ),
        server,
    )
    tls = pki.auth("LAC/RUTA/REGISTRY/registry")
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials(tls.key, tls.certificate, pki.trust_path)
    )
    await server.start()
    reg = Registry(pki=pki, port=port, changes=changes, channels=[], store=store, issuer=issuer)
    try:
        yield reg
    finally:
        for channel in reg.channels:
            await channel.close()
        await server.stop(None)
        await store.close()


async def _fault(call: Callable[[], object]) -> Fault | None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call()  # type: ignore[misc]
    fault, fault_id = fault_from_rpc_error(info.value)
    assert fault_id
    return fault


async def _populate(admin: registry_pb2_grpc.RegistryAdminAsyncStub) -> None:
    for member, name in ((POP, "Population"), (TAX, "Tax")):
        await admin.AddMember(registry_pb2.AddMemberRequest(id=member.to_proto(), name=name))
    for sub in (POP_REG, TAX_APP):
        await admin.AddSubsystem(registry_pb2.AddSubsystemRequest(id=sub.to_proto()))
    await admin.AddService(
        registry_pb2.AddServiceRequest(
            id=PEOPLE.to_proto(), file_descriptor_set=descriptor_set(), description="people"
        )
    )


async def test_registry_admin_builds_the_registry(registry: Registry) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    auth = registry.pki.auth("LAC/GOV/POP/ss1")
    server = await admin.AddServer(
        registry_pb2.AddServerRequest(
            id=ServerId(POP, "ss1").to_proto(),
            address="pop.example:8443",
            auth_certificate=auth.der,
        )
    )
    assert (
        server.auth_cert_sha256
        == auth.certificate.fingerprint(
            __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256()
        ).hex()
    )
    services = await admin.ListServices(registry_pb2.ListRequest())
    assert [list(s.methods) for s in services.services] == [["Find", "Get"]]
    members = await admin.ListMembers(registry_pb2.ListRequest(page_size=1))
    assert [m.name for m in members.members] == ["Population"]
    assert members.next_page_token == str(POP)
    assert len(registry.changes) == 6


async def test_contract_needs_both_sides_and_the_registry(registry: Registry) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    tax = registry.stub(registry.pki.role("member-admin", TAX))
    pop = registry.stub(registry.pki.role("member-admin", POP))
    contract = await tax.RequestContract(
        registry_pb2.RequestContractRequest(
            consumer=TAX_APP.to_proto(),
            service=PEOPLE.to_proto(),
            methods=["Get"],
            purpose="tax-assessment",
            legal_basis="Tax Act s. 12",
        )
    )
    assert contract.state == "requested"
    ref = registry_pb2.ContractRef(contract_id=contract.contract_id)
    # The consumer cannot approve its own request on someone else's service.
    assert await _fault(lambda: tax.ApproveContract(ref)) is Fault.CLIENT_PERMISSION_DENIED
    approved = await pop.ApproveContract(ref)
    assert approved.state == "approved"
    # Activation is the registry's step.
    assert await _fault(lambda: pop.ApproveContract(ref)) is Fault.CLIENT_PERMISSION_DENIED
    active = await admin.ApproveContract(ref)
    assert active.state == "active"
    assert active.approved_by.startswith("urn:ruta:role:member-admin:LAC/GOV/POP")
    listed = await tax.ListContracts(registry_pb2.ListContractsRequest())
    assert [c.contract_id for c in listed.contracts] == [contract.contract_id]
    assert await _fault(lambda: tax.RevokeContract(ref)) is Fault.CLIENT_PERMISSION_DENIED
    revoked = await admin.RevokeContract(ref)
    assert revoked.state == "revoked"


async def test_a_contract_carries_the_rate_limit_the_provider_grants(registry: Registry) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    tax = registry.stub(registry.pki.role("member-admin", TAX))
    pop = registry.stub(registry.pki.role("member-admin", POP))
    asked = registry_pb2.RequestContractRequest(
        consumer=TAX_APP.to_proto(),
        service=PEOPLE.to_proto(),
        purpose="tax-assessment",
        legal_basis="Tax Act s. 12",
        rate_limit_per_minute=600,
    )
    contract = await tax.RequestContract(asked)
    assert contract.rate_limit_per_minute == 600
    too_many = registry_pb2.RequestContractRequest()
    too_many.CopyFrom(asked)
    too_many.rate_limit_per_minute = 4_000_000_000
    assert await _fault(lambda: tax.RequestContract(too_many)) is Fault.CLIENT_INVALID_REQUEST
    approved = await pop.ApproveContract(
        registry_pb2.ContractRef(contract_id=contract.contract_id, rate_limit_per_minute=60)
    )
    assert approved.rate_limit_per_minute == 60
    # Activation keeps it (no rate limit named: the approved one stands).
    active = await admin.ApproveContract(registry_pb2.ContractRef(contract_id=contract.contract_id))
    assert active.rate_limit_per_minute == 60


@pytest.mark.parametrize(
    "call",
    [
        "add_member",
        "add_service",
        "request_for_other_member",
        "list_other_members_contracts",
        "audit",
    ],
)
async def test_member_admin_cannot_touch_other_objects(registry: Registry, call: str) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    tax = registry.stub(registry.pki.role("member-admin", TAX))
    calls = {
        "add_member": lambda: tax.AddMember(
            registry_pb2.AddMemberRequest(id=MemberId("LAC", "GOV", "X").to_proto(), name="x")
        ),
        "add_service": lambda: tax.AddService(
            registry_pb2.AddServiceRequest(
                id=ServiceId(TAX_APP, "pop.v1.People").to_proto(),
                file_descriptor_set=descriptor_set(),
            )
        ),
        "request_for_other_member": lambda: tax.RequestContract(
            registry_pb2.RequestContractRequest(
                consumer=POP_REG.to_proto(),
                service=PEOPLE.to_proto(),
                purpose="p",
                legal_basis="l",
            )
        ),
        "list_other_members_contracts": lambda: tax.ListContracts(
            registry_pb2.ListContractsRequest(member=POP.to_proto())
        ),
        "audit": lambda: tax.ListAuditTrail(registry_pb2.ListAuditRequest()),
    }
    before = len(registry.changes)
    assert await _fault(calls[call]) is Fault.CLIENT_PERMISSION_DENIED
    assert len(registry.changes) == before


async def test_auditor_reads_the_audit_trail_but_changes_nothing(registry: Registry) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    auditor = registry.stub(registry.pki.role("auditor-supervisor"))
    trail = await auditor.ListAuditTrail(registry_pb2.ListAuditRequest(page_size=2))
    assert [e.action for e in trail.entries] == ["member.add", "member.add"]
    assert trail.entries[0].actor.startswith("urn:ruta:role:registry-admin (sha256:")
    assert '"name": "Population"' in trail.entries[0].after_json
    rest = await auditor.ListAuditTrail(
        registry_pb2.ListAuditRequest(after_seq=trail.next_after_seq)
    )
    assert [e.action for e in rest.entries] == ["subsystem.add", "subsystem.add", "service.add"]
    assert rest.next_after_seq == 0
    assert (
        await _fault(
            lambda: auditor.AddMember(
                registry_pb2.AddMemberRequest(id=MemberId("LAC", "GOV", "X").to_proto(), name="x")
            )
        )
        is Fault.CLIENT_PERMISSION_DENIED
    )


async def test_a_member_scoped_auditor_reads_its_member_only(registry: Registry) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    auditor = registry.stub(registry.pki.role("auditor", TAX))
    listed = await auditor.ListContracts(registry_pb2.ListContractsRequest())
    assert list(listed.contracts) == []
    members = await auditor.ListMembers(registry_pb2.ListRequest())
    assert [m.name for m in members.members] == ["Population", "Tax"]
    refused = [
        lambda: auditor.ListContracts(registry_pb2.ListContractsRequest(member=POP.to_proto())),
        lambda: auditor.ListAuditTrail(registry_pb2.ListAuditRequest()),
        lambda: auditor.AddMember(
            registry_pb2.AddMemberRequest(id=MemberId("LAC", "GOV", "X").to_proto(), name="x")
        ),
    ]
    for call in refused:
        assert await _fault(call) is Fault.CLIENT_PERMISSION_DENIED


@pytest.mark.parametrize(
    ("roles", "text"),
    [
        (["auditor"], "auditor-supervisor"),
        (["auditor-supervisor:LAC/GOV/POP"], "names no member"),
        (["auditor:LAC/GOV/POP", "auditor-bodies"], "does not read the log"),
        (["auditor:LAC/GOV/POP", "auditor-bodies:LAC/GOV/TAX"], "add auditor:LAC/GOV/TAX"),
    ],
)
async def test_auditor_certificates_grant_no_more_than_they_say(
    registry: Registry, roles: list[str], text: str
) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await admin.IssueCertificate(
            registry_pb2.IssueCertificateRequest(
                csr=make_csr(generate_ec_key(), "an auditor").public_bytes(Encoding.DER),
                profile=registry_pb2.CERTIFICATE_PROFILE_ROLE,
                roles=roles,
            )
        )
    assert fault_from_rpc_error(info.value)[0] is Fault.CLIENT_INVALID_REQUEST
    assert text in (info.value.details() or "")


async def test_the_ca_issues_the_statistics_role_alone(registry: Registry) -> None:
    # The open-data gateway's certificate (docs/adr/0028-open-data.md): no member, nothing else.
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    issued = await admin.IssueCertificate(
        registry_pb2.IssueCertificateRequest(
            csr=make_csr(generate_ec_key(), "open data").public_bytes(Encoding.DER),
            profile=registry_pb2.CERTIFICATE_PROFILE_ROLE,
            roles=["statistics"],
        )
    )
    assert roles_of(load_certificate(issued.certificate)) == {Role(RoleName.STATISTICS)}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await admin.IssueCertificate(
            registry_pb2.IssueCertificateRequest(
                csr=make_csr(generate_ec_key(), "open data").public_bytes(Encoding.DER),
                profile=registry_pb2.CERTIFICATE_PROFILE_ROLE,
                roles=["statistics:LAC/GOV/POP"],
            )
        )
    assert fault_from_rpc_error(info.value)[0] is Fault.CLIENT_INVALID_REQUEST


async def test_certificates_without_a_role_are_refused(registry: Registry) -> None:
    server_cert = registry.stub(registry.pki.auth("LAC/GOV/POP/ss1"))
    fault = await _fault(lambda: server_cert.ListMembers(registry_pb2.ListRequest()))
    assert fault is Fault.CLIENT_PERMISSION_DENIED


@pytest.mark.parametrize(
    ("request_", "fault"),
    [
        (
            registry_pb2.AddMemberRequest(id=MemberId("LAC", "GOV", "X").to_proto(), name=""),
            Fault.CLIENT_INVALID_REQUEST,
        ),
        (
            registry_pb2.AddMemberRequest(id=MemberId("XX", "GOV", "X").to_proto(), name="x"),
            Fault.CLIENT_INVALID_REQUEST,
        ),
        (registry_pb2.AddMemberRequest(name="x"), Fault.CLIENT_INVALID_REQUEST),
        (
            registry_pb2.AddMemberRequest(
                id=ids_pb2.MemberId(instance="LAC", member_class="G/V", member_code="X"),
                name="x",
            ),
            Fault.CLIENT_INVALID_IDENTIFIER,
        ),
        (
            registry_pb2.AddServiceRequest(
                id=PEOPLE.to_proto(), file_descriptor_set=b"\x00" * (MAX_DESCRIPTOR_SET_BYTES + 1)
            ),
            Fault.CLIENT_INVALID_REQUEST,
        ),
        (
            registry_pb2.AddServiceRequest(
                id=PEOPLE.to_proto(), file_descriptor_set=descriptor_set(service="Other")
            ),
            Fault.CLIENT_INVALID_REQUEST,
        ),
        (
            registry_pb2.AddServiceRequest(
                id=PEOPLE.to_proto(), file_descriptor_set=descriptor_set(), methods=["Delete"]
            ),
            Fault.CLIENT_INVALID_REQUEST,
        ),
        (
            registry_pb2.AddServerRequest(
                id=ServerId(POP, "ss1").to_proto(), address="nohost", auth_certificate=b"x"
            ),
            Fault.CLIENT_INVALID_REQUEST,
        ),
        (
            registry_pb2.AddServerRequest(
                id=ServerId(POP, "ss1").to_proto(), address="h:1", auth_certificate=b"garbage"
            ),
            Fault.CLIENT_INVALID_REQUEST,
        ),
        (registry_pb2.ListRequest(page_size=100_000), Fault.CLIENT_INVALID_REQUEST),
        (
            registry_pb2.RequestContractRequest(
                consumer=TAX_APP.to_proto(),
                service=PEOPLE.to_proto(),
                purpose="p",
                legal_basis="b",
                valid_until=timestamp_pb2.Timestamp(seconds=2**62),
            ),
            Fault.CLIENT_INVALID_REQUEST,
        ),
        (registry_pb2.ContractRef(contract_id="nope"), Fault.CLIENT_NOT_FOUND),
        (
            registry_pb2.AddSubsystemRequest(id=SubsystemId(POP, "again").to_proto()),
            None,
        ),
    ],
)
async def test_bad_requests_get_their_fault(
    registry: Registry, request_: object, fault: Fault | None
) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    method = {
        registry_pb2.AddMemberRequest: admin.AddMember,
        registry_pb2.AddServiceRequest: admin.AddService,
        registry_pb2.AddServerRequest: admin.AddServer,
        registry_pb2.ListRequest: admin.ListMembers,
        registry_pb2.ContractRef: admin.ApproveContract,
        registry_pb2.AddSubsystemRequest: admin.AddSubsystem,
        registry_pb2.RequestContractRequest: admin.RequestContract,
    }[type(request_)]
    if fault is None:
        await method(request_)  # type: ignore[operator]
        assert await _fault(lambda: method(request_)) is Fault.CLIENT_ALREADY_EXISTS  # type: ignore[operator]
        return
    assert await _fault(lambda: method(request_)) is fault  # type: ignore[operator]


async def test_a_multi_role_certificate_is_recorded_with_all_its_roles(registry: Registry) -> None:
    # The certificate grants every role it names, so the administrators table and the audit
    # trail record every one of them, in the certificate's order, not only the first.
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    roles = [
        "member-admin:LAC/GOV/POP",
        "auditor-supervisor",
        "auditor:LAC/GOV/TAX",
        "auditor-bodies:LAC/GOV/TAX",
    ]
    issued = await admin.IssueCertificate(
        registry_pb2.IssueCertificateRequest(
            csr=make_csr(generate_ec_key(), "ops team").public_bytes(Encoding.DER),
            profile=registry_pb2.CERTIFICATE_PROFILE_ROLE,
            roles=roles,
        )
    )
    recorded = await registry.store.administrator(fingerprint(load_certificate(issued.certificate)))
    assert recorded is not None
    assert recorded.name == "ops team"
    assert recorded.roles == tuple(roles)
    trail = await admin.ListAuditTrail(registry_pb2.ListAuditRequest())
    entry = trail.entries[-1]
    assert entry.action == "administrator.add"
    assert json.loads(entry.after_json)["roles"] == roles


async def test_a_certificate_revoked_through_the_api_is_refused_on_its_next_call(
    registry: Registry,
) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    issued = await admin.IssueCertificate(
        registry_pb2.IssueCertificateRequest(
            csr=make_csr(generate_ec_key(), "second admin").public_bytes(Encoding.DER),
            profile=registry_pb2.CERTIFICATE_PROFILE_ROLE,
            roles=["registry-admin"],
        )
    )
    serial = load_certificate(issued.certificate).serial_number
    second = registry.stub(registry.issuer.issued_credentials[serial])
    await second.ListMembers(registry_pb2.ListRequest())
    await admin.RevokeCertificate(registry_pb2.RevokeCertificateRequest(serial=format(serial, "x")))
    assert await _fault(lambda: second.ListMembers(registry_pb2.ListRequest())) is (
        Fault.CLIENT_UNAUTHENTICATED
    )


async def test_a_failure_of_the_registry_itself_is_internal_error_without_its_text(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(registry.store, "list_members", broken)
    admin = registry.stub(registry.pki.role("registry-admin"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await admin.ListMembers(registry_pb2.ListRequest())
    assert fault_from_rpc_error(info.value)[0] is Fault.SERVER_REGISTRY_INTERNAL_ERROR
    assert "hunter2" not in (info.value.details() or "")


PERSONS_API = json.dumps(
    {
        "openapi": "3.0.3",
        "info": {"title": "persons", "version": "1"},
        "paths": {
            "/persons/{id}": {
                "get": {
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {"200": {"description": "a person"}},
                }
            }
        },
    }
).encode()


async def test_a_rest_service_is_registered_with_its_openapi_description(
    registry: Registry,
) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    rest = SubsystemId(POP, "registry").service("persons")
    record = await admin.AddService(
        registry_pb2.AddServiceRequest(id=rest.to_proto(), openapi=PERSONS_API)
    )
    assert list(record.methods) == ["Call"]
    assert record.openapi_size > 0
    stored = {s.id: s for s in await registry.store.list_services(limit=10)}[rest]
    assert json.loads(stored.openapi) == json.loads(PERSONS_API)
    assert stored.file_descriptor_set == b""


@pytest.mark.parametrize(
    "openapi",
    [
        b"{not: [json",
        json.dumps({"swagger": "2.0", "info": {}, "paths": {}}).encode(),
        json.dumps({"openapi": "3.0.3", "info": {"title": "x"}, "paths": {}}).encode(),
        json.dumps({"openapi": "3.0.3", "paths": {"/x": {"get": {"responses": 5}}}}).encode(),
        b"x" * (MAX_OPENAPI_BYTES + 1),
        ("[" * 200 + "]" * 200).encode(),
    ],
    ids=["not-yaml", "swagger-2", "info-without-version", "bad-responses", "too-large", "deep"],
)
async def test_an_invalid_openapi_description_is_refused(
    registry: Registry, openapi: bytes
) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    rest = SubsystemId(POP, "registry").service("persons")
    fault = await _fault(
        lambda: admin.AddService(
            registry_pb2.AddServiceRequest(id=rest.to_proto(), openapi=openapi)
        )
    )
    assert fault is Fault.CLIENT_INVALID_REQUEST


async def test_a_rest_service_takes_no_descriptors_or_methods(registry: Registry) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    rest = SubsystemId(POP, "registry").service("persons")
    fault = await _fault(
        lambda: admin.AddService(
            registry_pb2.AddServiceRequest(id=rest.to_proto(), openapi=PERSONS_API, methods=["X"])
        )
    )
    assert fault is Fault.CLIENT_INVALID_REQUEST


async def test_the_ca_issues_the_citizen_service_role_and_it_names_no_member(
    registry: Registry,
) -> None:
    admin = registry.stub(registry.pki.role("registry-admin"))
    await _populate(admin)
    issued = await admin.IssueCertificate(
        registry_pb2.IssueCertificateRequest(
            csr=make_csr(generate_ec_key(), "citizen service").public_bytes(Encoding.DER),
            profile=registry_pb2.CERTIFICATE_PROFILE_ROLE,
            roles=["citizen-service"],
        )
    )
    assert roles_of(load_certificate(issued.certificate)) == {Role(RoleName.CITIZEN_SERVICE)}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await admin.IssueCertificate(
            registry_pb2.IssueCertificateRequest(
                csr=make_csr(generate_ec_key(), "citizen service").public_bytes(Encoding.DER),
                profile=registry_pb2.CERTIFICATE_PROFILE_ROLE,
                roles=["citizen-service:LAC/GOV/POP"],
            )
        )
    assert "names no member" in (info.value.details() or "")
