"""The registry console over real HTTPS with browser-like client certificates: refusals (no
certificate, wrong role, bad CSRF token, oversized uploads), markup from the registry shown
escaped, and actions that go through the admin API's service and its audit trail."""

from __future__ import annotations

import io
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from registry.admin_api import RegistryAdmin
from registry.console import MAX_FORM_BYTES, console_app
from registry.console.app import MAX_CSR_BYTES
from registry.model import ContractState
from registry.store import RegistryStore, database_url
from ruta.ids import MemberId, ServiceId, SubsystemId
from ruta.pki.certs import fingerprint, load_certificate, make_csr
from ruta.pki.keys import generate_ec_key
from ruta.pki.testing import Credential, TestPki
from ruta.v1 import registry_pb2
from ruta.web import CONTENT_SECURITY_POLICY, CSRF_FIELD, CsrfTokens, console_tls_context
from tests.unit.registry.test_admin_api import _TestIssuer, descriptor_set

POP = MemberId.parse("LAC/GOV/POP")
TAX = MemberId.parse("LAC/GOV/TAX")
TAX_APP = SubsystemId.parse("LAC/GOV/TAX/app")
PEOPLE = ServiceId.parse("LAC/GOV/POP/registry/pop.v1.People")
SCRIPT = '<script>alert("x")</script>'


@dataclass
class Console:
    url: str
    pki: TestPki
    store: RegistryStore
    admin: RegistryAdmin
    csrf: CsrfTokens

    def session(self, credential: Credential | None) -> aiohttp.ClientSession:
        """A client trusting the test CA, presenting ``credential`` (None: no certificate)."""
        context = ssl.create_default_context(cafile=str(self.pki.trust_path))
        if credential is not None:
            context.load_cert_chain(credential.cert_path, credential.key_path)
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

    def token(self, credential: Credential) -> str:
        return self.csrf.issue(fingerprint(credential.certificate))


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    pki = TestPki(tmp_path / "pki")
    store = await RegistryStore.open(database_url(None, tmp_path))
    issuer = _TestIssuer(pki)
    admin = RegistryAdmin(store=store, instance="LAC", issuer=issuer, revoked=issuer.is_revoked)
    csrf = CsrfTokens()
    tls = pki.auth("LAC/RUTA/REGISTRY/registry")
    runner = web.AppRunner(
        console_app(admin=admin, configuration=lambda: None, csrf=csrf), access_log=None
    )
    await runner.setup()
    context = console_tls_context(cert=tls.cert_path, key=tls.key_path, client_ca=pki.trust_path)
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        yield Console(f"https://localhost:{runner.addresses[0][1]}", pki, store, admin, csrf)
    finally:
        await runner.cleanup()
        await store.close()


async def _populate(console: Console) -> None:
    root = await console.admin.authenticate(console.pki.role("registry-admin").certificate)
    for member, name in ((POP, "Population"), (TAX, "Tax")):
        await console.admin.AddMember(
            registry_pb2.AddMemberRequest(id=member.to_proto(), name=name), root
        )
    for subsystem in (SubsystemId.parse("LAC/GOV/POP/registry"), TAX_APP):
        await console.admin.AddSubsystem(
            registry_pb2.AddSubsystemRequest(id=subsystem.to_proto()), root
        )
    await console.admin.AddService(
        registry_pb2.AddServiceRequest(id=PEOPLE.to_proto(), file_descriptor_set=descriptor_set()),
        root,
    )


@pytest.mark.parametrize("path", ["/members", "/contracts", "/audit", "/certificates"])
async def test_without_a_certificate_every_page_says_one_is_needed(
    console: Console, path: str
) -> None:
    async with console.session(None) as session, session.get(console.url + path) as response:
        body = await response.text()
    assert response.status == 401
    assert "A client certificate is needed" in body
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


async def test_a_post_without_a_certificate_changes_nothing(console: Console) -> None:
    async with (
        console.session(None) as session,
        session.post(console.url + "/members", data={"id": "LAC/GOV/X", "name": "X"}) as response,
    ):
        assert response.status == 401
    assert await console.store.list_members(limit=10) == []


@pytest.mark.parametrize(
    ("role", "method", "path", "needed"),
    [
        ("auditor-supervisor", "post", "/members", "registry-admin"),
        ("auditor-supervisor", "get", "/certificates", "registry-admin"),
        ("member-admin:LAC/GOV/TAX", "get", "/audit", "registry-admin, auditor-supervisor"),
        ("member-admin:LAC/GOV/TAX", "post", "/contracts/revoke", "registry-admin"),
        ("citizen-service", "get", "/members", "auditor-supervisor"),
    ],
)
async def test_a_wrong_role_gets_the_403_page_naming_the_role_needed(
    console: Console, role: str, method: str, path: str, needed: str
) -> None:
    credential = console.pki.roles(role)
    form = {CSRF_FIELD: console.token(credential), "id": "LAC/GOV/NEW", "name": "New"}
    form["contract_id"] = "c-1"
    async with (
        console.session(credential) as session,
        session.request(method, console.url + path, data=form) as response,
    ):
        body = await response.text()
    assert response.status == 403
    assert "You may not open this page" in body
    assert needed in body
    assert await console.store.list_members(limit=10) == []


async def test_the_role_refusal_of_an_approval_names_the_provider_member(
    console: Console,
) -> None:
    await _populate(console)
    tax = await console.admin.authenticate(
        console.pki.roles("member-admin:LAC/GOV/TAX").certificate
    )
    contract = await console.admin.RequestContract(
        registry_pb2.RequestContractRequest(
            consumer=TAX_APP.to_proto(),
            service=PEOPLE.to_proto(),
            purpose="tax-check",
            legal_basis="Tax Act",
        ),
        tax,
    )
    credential = console.pki.roles("member-admin:LAC/GOV/TAX")
    async with (
        console.session(credential) as session,
        session.post(
            console.url + "/contracts/approve",
            data={CSRF_FIELD: console.token(credential), "contract_id": contract.contract_id},
        ) as response,
    ):
        body = await response.text()
    assert response.status == 403
    assert "member-admin:LAC/GOV/POP" in body
    assert (await console.store.get_contract(contract.contract_id)).state is ContractState.REQUESTED


@pytest.mark.parametrize("token", [None, "", "0" * 64, "x" * 1000])
async def test_a_form_without_its_csrf_token_is_refused_before_acting(
    console: Console, token: str | None
) -> None:
    credential = console.pki.role("registry-admin")
    form = {"id": "LAC/GOV/NEW", "name": "New"}
    if token is not None:
        form[CSRF_FIELD] = token
    async with (
        console.session(credential) as session,
        session.post(console.url + "/members", data=form) as response,
    ):
        body = await response.text()
    assert response.status == 403
    assert "The form could not be accepted" in body
    assert await console.store.list_members(limit=10) == []


async def test_another_certificates_token_is_refused(console: Console) -> None:
    credential = console.pki.role("registry-admin")
    other = console.pki.role("registry-admin")
    async with (
        console.session(credential) as session,
        session.post(
            console.url + "/members",
            data={CSRF_FIELD: console.token(other), "id": "LAC/GOV/NEW", "name": "New"},
        ) as response,
    ):
        assert response.status == 403
    assert await console.store.list_members(limit=10) == []


async def test_an_upload_over_the_form_bound_is_refused_with_413(console: Console) -> None:
    credential = console.pki.role("registry-admin")
    form = aiohttp.FormData()
    form.add_field(CSRF_FIELD, console.token(credential))
    form.add_field("id", str(PEOPLE))
    form.add_field("description_file", io.BytesIO(b"\0" * (MAX_FORM_BYTES + 1)), filename="big.pb")
    async with (
        console.session(credential) as session,
        session.post(console.url + "/services", data=form) as response,
    ):
        body = await response.text()
    assert response.status == 413
    assert "The upload is too large" in body


async def test_a_csr_over_its_own_bound_is_refused_with_413(console: Console) -> None:
    credential = console.pki.role("registry-admin")
    form = aiohttp.FormData()
    form.add_field(CSRF_FIELD, console.token(credential))
    form.add_field("profile", "role")
    form.add_field("roles", "auditor-supervisor")
    form.add_field("csr", io.BytesIO(b"A" * (MAX_CSR_BYTES + 1)), filename="big.csr")
    async with (
        console.session(credential) as session,
        session.post(console.url + "/certificates", data=form) as response,
    ):
        assert response.status == 413


async def test_markup_in_a_member_name_and_a_purpose_is_shown_escaped(console: Console) -> None:
    await _populate(console)
    credential = console.pki.role("registry-admin")
    token = console.token(credential)
    async with console.session(credential) as session:
        async with session.post(
            console.url + "/members", data={CSRF_FIELD: token, "id": "LAC/GOV/EVIL", "name": SCRIPT}
        ) as response:
            members = await response.text()
            assert response.status == 200
            assert response.url.path == "/members"
        async with session.post(
            console.url + "/contracts",
            data={
                CSRF_FIELD: token,
                "consumer": str(TAX_APP),
                "service": str(PEOPLE),
                "purpose": SCRIPT,
                "legal_basis": "Act <b>1</b>",
                "valid_until": "2099-12-31",
            },
        ) as response:
            contracts = await response.text()
            assert response.status == 200
    for body in (members, contracts):
        assert "<script>" not in body
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in body
    assert "The member was added." in members
    assert "The contract was requested." in contracts
    assert "Act &lt;b&gt;1&lt;/b&gt;" in contracts


async def test_console_actions_write_the_admin_api_audit_trail(console: Console) -> None:
    await _populate(console)
    tax = await console.admin.authenticate(
        console.pki.roles("member-admin:LAC/GOV/TAX").certificate
    )
    contract = await console.admin.RequestContract(
        registry_pb2.RequestContractRequest(
            consumer=TAX_APP.to_proto(), service=PEOPLE.to_proto(), purpose="p", legal_basis="b"
        ),
        tax,
    )
    credential = console.pki.role("registry-admin")
    async with console.session(credential) as session:
        for _step in range(2):  # requested -> approved -> active
            async with session.post(
                console.url + "/contracts/approve?lang=es",
                data={CSRF_FIELD: console.token(credential), "contract_id": contract.contract_id},
            ) as response:
                body = await response.text()
                assert response.status == 200
        assert "El contrato avanzó un paso." in body
    assert (await console.store.get_contract(contract.contract_id)).state is ContractState.ACTIVE
    trail = await console.store.list_audit(limit=100)
    actions = [(entry.action, entry.actor.split(" (")[0]) for entry in trail[-2:]]
    assert [action for action, _ in actions] == ["contract.approve", "contract.activate"]
    name = credential.certificate.subject.rfc4514_string()
    assert all(actor in name for _, actor in actions)


async def test_a_refused_request_reshows_the_page_with_the_reason(console: Console) -> None:
    credential = console.pki.role("registry-admin")
    async with (
        console.session(credential) as session,
        session.post(
            console.url + "/members",
            data={CSRF_FIELD: console.token(credential), "id": "not an id", "name": "X"},
        ) as response,
    ):
        body = await response.text()
    assert response.status == 400
    assert "The registry refused the request:" in body
    assert await console.store.list_members(limit=10) == []


async def test_a_refused_query_shows_the_reason_not_a_crash(console: Console) -> None:
    credential = console.pki.role("registry-admin")
    async with (
        console.session(credential) as session,
        session.get(console.url + "/contracts?member=<script>") as response,
    ):
        body = await response.text()
    assert response.status == 400
    assert "The page could not be shown" in body
    assert "<script>" not in body


async def test_a_member_admin_of_two_members_sees_one_at_a_time(console: Console) -> None:
    await _populate(console)
    credential = console.pki.roles("member-admin:LAC/GOV/TAX", "member-admin:LAC/GOV/POP")
    async with console.session(credential) as session:
        async with session.get(console.url + "/contracts") as response:
            first = await response.text()
        async with session.get(console.url + "/contracts?member=LAC/GOV/TAX") as response:
            second = await response.text()
    assert response.status == 200
    assert "Contracts of LAC/GOV/POP" in first
    assert "Contracts of LAC/GOV/TAX" in second
    assert 'href="/contracts?member=LAC/GOV/TAX' in first


def _upload(credential_token: str, fields: dict[str, str], files: dict[str, bytes]) -> Any:
    form = aiohttp.FormData()
    form.add_field(CSRF_FIELD, credential_token)
    for name, value in fields.items():
        form.add_field(name, value)
    for name, data in files.items():
        form.add_field(name, io.BytesIO(data), filename=f"{name}.bin")
    return form


async def test_services_are_registered_from_a_descriptor_set_or_an_openapi_file(
    console: Console,
) -> None:
    await _populate(console)
    credential = console.pki.role("registry-admin")
    token = console.token(credential)
    openapi = json.dumps(
        {
            "openapi": "3.0.3",
            "info": {"title": "persons", "version": "1"},
            "paths": {"/persons": {"get": {"responses": {"200": {"description": "all"}}}}},
        }
    ).encode()
    async with console.session(credential) as session:
        async with session.post(
            console.url + "/services",
            data=_upload(
                token,
                {"id": "LAC/GOV/POP/registry/pop.v2.People", "kind": "grpc", "methods": "Get"},
                {"description_file": descriptor_set("pop.v2")},
            ),
        ) as response:
            assert response.status == 200
            assert "The service was registered." in await response.text()
        async with session.post(
            console.url + "/services",
            data=_upload(
                token,
                {"id": "LAC/GOV/POP/registry/persons", "kind": "openapi", "citizen_minutes": "2,5"},
                {"description_file": openapi},
            ),
        ) as response:
            page = await response.text()
            assert response.status == 200
    assert "pop.v2.People" in page
    assert "REST" in page
    services = {str(s.id): s for s in await console.store.list_services(limit=10)}
    assert services["LAC/GOV/POP/registry/pop.v2.People"].methods == ("Get",)
    assert services["LAC/GOV/POP/registry/persons"].savings.citizen_minutes == 2.5


async def test_a_server_is_added_with_its_uploaded_certificate(console: Console) -> None:
    await _populate(console)
    credential = console.pki.role("registry-admin")
    auth = console.pki.auth("LAC/GOV/POP/ss1")
    async with (
        console.session(credential) as session,
        session.post(
            console.url + "/servers",
            data=_upload(
                console.token(credential),
                {"id": "LAC/GOV/POP/ss1", "address": "ss1.pop.example:8443"},
                {"auth_certificate": auth.pem},
            ),
        ) as response,
    ):
        page = await response.text()
    assert response.status == 200
    assert fingerprint(auth.certificate) in page


async def test_a_certificate_is_issued_from_a_csr_downloaded_and_revoked(
    console: Console,
) -> None:
    credential = console.pki.role("registry-admin")
    token = console.token(credential)
    csr = make_csr(generate_ec_key(), "Ana").public_bytes(Encoding.PEM)
    async with console.session(credential) as session:
        async with session.post(
            console.url + "/certificates",
            data=_upload(token, {"profile": "role", "roles": "auditor-supervisor"}, {"csr": csr}),
        ) as response:
            page = await response.text()
            assert response.status == 200
        serial = response.url.query["serial"]
        assert f"/certificates/{serial}.pem" in page
        async with session.get(f"{console.url}/certificates/{serial}.pem") as download:
            pem = await download.read()
            assert download.status == 200
            assert download.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert format(load_certificate(pem).serial_number, "x") == serial
        async with session.post(
            console.url + "/certificates/revoke",
            data={CSRF_FIELD: token, "serial": serial, "reason": "keyCompromise"},
        ) as response:
            assert response.status == 200
            assert "The certificate was revoked" in await response.text()
    trail = await console.store.list_audit(limit=100)
    assert [e.action for e in trail[-2:]] == ["administrator.add", "certificate.revoke"]


async def test_a_revoked_certificate_gets_a_page_saying_so(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    store = await RegistryStore.open(database_url(None, tmp_path))
    admin = RegistryAdmin(store=store, instance="LAC", revoked=lambda _certificate: True)
    tls = pki.auth("LAC/RUTA/REGISTRY/registry")
    runner = web.AppRunner(console_app(admin=admin, configuration=lambda: None), access_log=None)
    await runner.setup()
    context = console_tls_context(cert=tls.cert_path, key=tls.key_path, client_ca=pki.trust_path)
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    revoked = Console(
        f"https://localhost:{runner.addresses[0][1]}", pki, store, admin, CsrfTokens()
    )
    try:
        async with (
            revoked.session(pki.role("registry-admin")) as session,
            session.get(revoked.url + "/members?lang=pt") as response,
        ):
            body = await response.text()
    finally:
        await runner.cleanup()
        await store.close()
    assert response.status == 403
    assert "O seu certificado foi revogado" in body
