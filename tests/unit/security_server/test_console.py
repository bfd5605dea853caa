"""The auditor console over real TLS on loopback, without a browser: who may open it (no
certificate, wrong role, another member's auditor), CSRF on every form, bounded uploads, markup
from the log shown as text, and the same verdicts as the audit API and ``ruta audit verify``."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import ssl
import uuid
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from ruta.checkpoint import Checkpoint, cosign, sign_note
from ruta.evidence import verify_bundle
from ruta.globalconf import open_configuration
from ruta.pki.certs import Role, RoleName
from ruta.pki.testing import Credential, TestPki
from ruta.v1 import audit_pb2, transport_pb2
from ruta.web import CONTENT_SECURITY_POLICY, CSRF_FIELD, console_tls_context
from security_server.audit import AuditServicer, AuditSettings
from security_server.callers import CallerStatus
from security_server.checkpointer import log_verifier
from security_server.cluster import MemberLogs
from security_server.console import AuditConsole, ConsoleListener, ConsoleSettings, console_app
from security_server.console import pages as console_pages
from security_server.console.records import check_inclusion, decode_record
from security_server.log import Direction, MessageLog
from security_server.transport import PeerStatus
from tests.unit.security_server.evidence_support import (
    CLIENT,
    POP_SS,
    SERVICE,
    SOC_SS,
    Scenario,
    cosign_head,
    scenario,
)
from tests.unit.security_server.log.support import make_entry
from tests.unit.security_server.twin import MemoryOcsp, caller_status

#: Markup in a logged subject and user id: the console must show it as text.
HOSTILE_SUBJECT = '<script>alert("subject")</script>'
HOSTILE_USER = '<img src=x onerror=alert("user")>'


@dataclass
class Console:
    world: Scenario
    url: str

    def session(self, who: Credential | None) -> aiohttp.ClientSession:
        context = ssl.create_default_context(cafile=str(self.world.pki.trust_path))
        if who is not None:
            context.load_cert_chain(who.cert_path, who.key_path)
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))


async def _log_hostile_exchange(world: Scenario) -> str:
    """A request whose signed header carries markup in its subject and user id, logged by the
    provider."""
    message_id = str(uuid.uuid4())
    body = b"GetPerson(hostile)"
    header = transport_pb2.MessageHeader(
        message_id=message_id,
        kind=transport_pb2.MESSAGE_KIND_REQUEST,
        client=CLIENT.to_proto(),
        service=SERVICE.to_proto(),
        method="GetPerson",
        purpose="benefit-eligibility",
        user_id=HOSTILE_USER,
        subject=HOSTILE_SUBJECT,
        body_sha256=hashlib.sha256(body).digest(),
        sender=SOC_SS.to_proto(),
        receiver=POP_SS.to_proto(),
    )
    header.created_at.FromDatetime(datetime.now(UTC).replace(microsecond=0))
    raw = header.SerializeToString(deterministic=True)
    signature = world._sign(raw, world.soc_signer)
    await world._log(world.provider, Direction.RECEIVED, raw, signature, world.soc_signer, body)
    return message_id


@asynccontextmanager
async def _serve(
    world: Scenario, logs: MemberLogs | None = None, ocsp: MemoryOcsp | None = None
) -> AsyncIterator[Console]:
    """The provider's console on loopback; with ``logs``, over every tree of its database; with
    ``ocsp``, checking visitors' certificates for revocation against it."""
    side = world.provider
    view = open_configuration(world.signed_globalconf, world.anchor, now=datetime.now(UTC))
    servicer = AuditServicer(
        log=side.log,
        engine=side.engine,
        server=str(side.server),
        key=side.key,
        globalconf=lambda: world.signed_globalconf,
        settings=AuditSettings(),
        logs=logs,
        callers=CallerStatus(
            PeerStatus(ocsp or MemoryOcsp(world.pki)), lambda: world.pki.trust_anchors
        ),
    )
    app = console_app(
        AuditConsole(servicer=servicer, server=side.server, conf=lambda: view, anchor=world.anchor)
    )
    tls = world.pki.auth(side.server)
    context = console_tls_context(
        cert=tls.cert_path, key=tls.key_path, client_ca=world.pki.trust_path
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        yield Console(world, f"https://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    async with scenario(tmp_path, exchanges=3) as world:
        await _log_hostile_exchange(world)
        await world.checkpoint()
        async with _serve(world) as served:
            yield served


#: The provider's second tree, as its worker 1 keeps it in the same database (docs/adr/0030).
WORKER_LOG = f"{POP_SS}/w1"
#: A tree of another server of the provider's member sharing the database (not exportable here).
OTHER_SERVER_LOG = "DEV/GOV/POP/ss2"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Console]:
    """The provider's console over its own tree, a worker's and another server's: one exchange
    in the worker's tree (subject ``person-worker``), cosigned by the witness like any other,
    and one record in the other server's."""
    async with scenario(tmp_path, exchanges=2) as world:
        side = world.provider
        worker_log = await MessageLog.open(side.engine, origin=WORKER_LOG, body_key=side.body_key)
        other_log = await MessageLog.open(
            side.engine, origin=OTHER_SERVER_LOG, body_key=side.body_key
        )
        worker = dataclasses.replace(side, log=worker_log)
        try:
            await other_log.append([make_entry(subject="person-other")])
            world.provider = worker
            try:
                await world.exchange("person-worker")
                await cosign_head(worker, world.witness)
            finally:
                world.provider = side
            logs = MemberLogs(
                engine=side.engine, own=side.log, server=side.server, body_key=side.body_key
            )
            async with _serve(world, logs) as served:
                yield served
        finally:
            await worker_log.close()
            await other_log.close()


def _token(page: str) -> str:
    found = re.search(rf'name="{CSRF_FIELD}" value="([0-9a-f.]+)"', page)
    assert found is not None, page
    return found.group(1)


async def test_without_a_certificate_the_page_says_how_to_get_one(console: Console) -> None:
    async with console.session(None) as http, http.get(console.url + "/") as response:
        assert response.status == 401
        assert "A client certificate is needed" in await response.text()
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize(
    "roles", [("registry-admin",), ("auditor:DEV/GOV/SOC",), ("citizen-service",)]
)
@pytest.mark.parametrize("path", ["/", "/records/0", "/verify", "/reconcile"])
async def test_a_certificate_without_the_role_gets_a_page_naming_it(
    console: Console, roles: tuple[str, ...], path: str
) -> None:
    who = console.world.pki.roles(*roles)
    async with console.session(who) as http, http.get(console.url + path) as response:
        assert response.status == 403
        page = await response.text()
        assert "auditor:DEV/GOV/POP / auditor-supervisor" in page


async def test_a_revoked_auditor_certificate_gets_the_revoked_page(tmp_path: Path) -> None:
    """The CA revokes one auditor's certificate: the console refuses it with 403 and a page
    saying so, on every page, while another auditor's certificate still opens them."""
    async with scenario(tmp_path, exchanges=1) as world:
        ocsp = MemoryOcsp(world.pki)
        departed = world.pki.roles("auditor-supervisor")
        staying = world.pki.roles("auditor-supervisor")
        ocsp.revoked.add(departed.certificate.serial_number)
        async with _serve(world, ocsp=ocsp) as console:
            for path in ("/", "/records/0", "/verify"):
                async with (
                    console.session(departed) as http,
                    http.get(console.url + path) as response,
                ):
                    assert response.status == 403
                    assert "has been revoked" in await response.text()
            async with console.session(staying) as http, http.get(console.url + "/") as response:
                assert response.status == 200


async def test_an_auditor_finds_records_by_subject_with_bodies_withheld(console: Console) -> None:
    auditor = console.world.pki.roles("auditor:DEV/GOV/POP")
    async with (
        console.session(auditor) as http,
        http.get(console.url + "/", params={"subject": "person-1"}) as response,
    ):
        assert response.status == 200
        page = await response.text()
    assert page.count("person-1") >= 3  # the request, the response and the filter itself
    assert "person-2" not in page
    assert "withheld" in page
    assert "Record 2" in page


async def test_markup_from_the_log_is_shown_escaped(console: Console) -> None:
    auditor = console.world.pki.roles("auditor-supervisor")
    async with console.session(auditor) as http:
        async with http.get(console.url + "/", params={"subject": HOSTILE_SUBJECT}) as response:
            page = await response.text()
        assert "&lt;script&gt;alert(&#34;subject&#34;)&lt;/script&gt;" in page
        assert "<script" not in page
        seq = re.search(r'href="/records/(\d+)', page)
        assert seq is not None
        async with http.get(f"{console.url}/records/{seq.group(1)}") as response:
            record = await response.text()
    assert "&lt;img src=x onerror=alert(&#34;user&#34;)&gt;" in record
    assert "<img" not in record
    assert "<script" not in record


async def test_a_record_page_shows_its_proof_verified(console: Console) -> None:
    auditor = console.world.pki.roles("auditor:DEV/GOV/POP")
    async with console.session(auditor) as http, http.get(console.url + "/records/1") as response:
        assert response.status == 200
        page = await response.text()
    assert "Proof verified" in page
    assert "registry.dev/witness" in page
    assert "person-0" in page


async def test_a_record_not_yet_cosigned_is_said_so(console: Console) -> None:
    auditor = console.world.pki.roles("auditor:DEV/GOV/POP")
    async with console.session(auditor) as http:
        async with http.get(console.url + "/records/999") as response:
            assert response.status == 404
            assert "not in the latest cosigned checkpoint" in await response.text()
        async with http.get(console.url + "/records/99999999999999999999") as response:
            assert response.status == 400


async def test_forms_without_their_token_are_refused(console: Console) -> None:
    auditor = console.world.pki.roles("auditor:DEV/GOV/POP")
    other = console.world.pki.roles("auditor:DEV/GOV/POP")
    async with console.session(other) as http, http.get(console.url + "/verify") as response:
        others_token = _token(await response.text())
    async with console.session(auditor) as http:
        for data in ({}, {CSRF_FIELD: "0" * 64}, {CSRF_FIELD: others_token}):
            async with http.post(console.url + "/export", data=data) as response:
                assert response.status == 403
                assert "The form could not be accepted" in await response.text()
        form = aiohttp.FormData()
        form.add_field("bundle", b"PK", filename="b.zip")
        async with http.post(console.url + "/verify", data=form) as response:
            assert response.status == 403


async def test_an_exported_bundle_verifies_offline_and_in_the_console(console: Console) -> None:
    auditor = console.world.pki.roles("auditor:DEV/GOV/POP")
    async with console.session(auditor) as http:
        async with http.get(console.url + "/", params={"subject": "person-1"}) as response:
            token = _token(await response.text())
        async with http.post(
            console.url + "/export", data={CSRF_FIELD: token, "subject": "person-1"}
        ) as response:
            assert response.status == 200
            assert "attachment" in response.headers["Content-Disposition"]
            bundle = await response.read()
        report = verify_bundle(bundle, anchor=console.world.anchor)
        assert report.ok, report.text()
        assert len(report.records) == 2

        form = aiohttp.FormData()
        form.add_field(CSRF_FIELD, token)
        form.add_field("bundle", bundle, filename="pop.zip", content_type="application/zip")
        async with http.post(console.url + "/verify", data=form) as response:
            assert response.status == 200
            page = await response.text()
        assert "VERIFIED" in page
        assert "RESULT: VERIFIED" in page

        tampered = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(bundle)) as source, zipfile.ZipFile(tampered, "w") as out:
            for item in source.infolist():
                data = source.read(item)
                if item.filename.startswith("records/"):
                    data = data[:-1] + bytes([data[-1] ^ 1])
                out.writestr(item, data)
        form = aiohttp.FormData()
        form.add_field(CSRF_FIELD, token)
        form.add_field("bundle", tampered.getvalue(), filename="bad.zip")
        async with http.post(console.url + "/verify", data=form) as response:
            assert response.status == 422
            assert "FAILED" in await response.text()


async def test_two_sides_reconcile(console: Console) -> None:
    world = console.world
    auditor = world.pki.roles("auditor-supervisor")
    consumer = await world.export(world.consumer)
    provider = await world.export(world.provider)
    async with console.session(auditor) as http:
        async with http.get(console.url + "/reconcile") as response:
            token = _token(await response.text())
        form = aiohttp.FormData()
        form.add_field(CSRF_FIELD, token)
        form.add_field("a", consumer, filename="soc.zip")
        form.add_field("b", provider, filename="pop.zip")
        async with http.post(console.url + "/reconcile", data=form) as response:
            page = await response.text()
    # The hostile request is on the provider's side only: a difference, named.
    assert response.status == 422, page
    assert "DIFFERENCES FOUND" in page
    assert "exchanges on both sides and identical: 3" in page


async def test_an_oversized_upload_is_refused(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_pages, "MAX_UPLOAD_BYTES", 1024)
    auditor = console.world.pki.roles("auditor:DEV/GOV/POP")
    async with console.session(auditor) as http:
        async with http.get(console.url + "/verify") as response:
            token = _token(await response.text())
        form = aiohttp.FormData()
        form.add_field(CSRF_FIELD, token)
        form.add_field("bundle", b"\0" * 4096, filename="big.zip")
        async with http.post(console.url + "/verify", data=form) as response:
            assert response.status == 413
            assert "at most" in await response.text()


async def test_a_form_over_its_bound_is_refused_unread(console: Console) -> None:
    auditor = console.world.pki.roles("auditor:DEV/GOV/POP")
    async with console.session(auditor) as http:
        async with http.get(console.url + "/verify") as response:
            token = _token(await response.text())
        data = {CSRF_FIELD: token, "subject": "x" * (console_pages.MAX_FORM_BYTES + 1)}
        async with http.post(console.url + "/export", data=data) as response:
            assert response.status == 413


@pytest.mark.parametrize("listen", ["nowhere", "127.0.0.1:99999", ":80"])
def test_a_console_address_must_be_host_and_port(listen: str) -> None:
    with pytest.raises(ValidationError):
        ConsoleSettings(listen=listen)
    assert ConsoleSettings().listen == ""  # off unless configured


async def test_the_listener_follows_the_anchors_of_the_configuration_in_force(
    tmp_path: Path,
) -> None:
    async with scenario(tmp_path / "world", exchanges=1) as world:
        side = world.provider
        view = open_configuration(world.signed_globalconf, world.anchor, now=datetime.now(UTC))
        other = TestPki(tmp_path / "other")  # a CA a new configuration adds
        in_force = list(view.trust_anchors)
        servicer = AuditServicer(
            log=side.log,
            engine=side.engine,
            server=str(side.server),
            key=side.key,
            globalconf=lambda: world.signed_globalconf,
            # With two anchors in force, the server names the one that issues roles.
            callers=CallerStatus(
                PeerStatus(MemoryOcsp(other)),
                lambda: in_force,
                role_ca=(other.root.certificate,),
            ),
        )
        tls = world.pki.auth(side.server)
        listener = await ConsoleListener.start(
            AuditConsole(servicer=servicer, server=side.server, conf=lambda: view),
            settings=ConsoleSettings(listen="127.0.0.1:0"),
            auth_cert=tls.cert_path,
            auth_key=tls.key_path,
            data_dir=tmp_path,
            view=view,
        )
        try:
            console = Console(world, listener.url.rstrip("/"))
            newcomer = other.roles("auditor-supervisor")
            with pytest.raises(aiohttp.ClientError):
                async with console.session(newcomer) as http, http.get(console.url) as response:
                    await response.read()
            in_force.extend(other.trust_anchors)
            listener.configuration_changed(
                dataclasses.replace(view, trust_anchors=(*view.trust_anchors, *other.trust_anchors))
            )
            async with console.session(newcomer) as http, http.get(console.url) as response:
                assert response.status == 200
        finally:
            await listener.stop()


async def test_a_proof_is_verified_only_against_the_published_keys(tmp_path: Path) -> None:
    async with scenario(tmp_path, exchanges=2) as world:
        side = world.provider
        servicer = AuditServicer(
            log=side.log,
            engine=side.engine,
            server=str(side.server),
            key=side.key,
            globalconf=lambda: world.signed_globalconf,
            callers=caller_status(world.pki),
        )
        grant = servicer.grant_for(frozenset({Role(RoleName.AUDITOR_SUPERVISOR)}))
        answer = await servicer.proven_records(grant, [1], include_bodies=False)
        proven, checkpoint = answer.records[0], answer.checkpoint
        log_key = log_verifier(side.log.origin, side.key)
        witness = world.witness.verifier
        good = check_inclusion(
            proven.record, proven.inclusion_proof, checkpoint, log_key=log_key, witness=witness
        )
        assert good.verified, good.problem
        assert good.size == checkpoint.size
        assert good.witness == witness.name
        # A checkpoint of another log, signed by this log's key name and cosigned.
        body = Checkpoint(f"{side.log.origin}/w9", checkpoint.size, checkpoint.root).body()
        cosigned = cosign(body, witness.name, world.witness_key, 1_700_000_000)
        foreign = audit_pb2.CosignedCheckpoint()
        foreign.CopyFrom(checkpoint)
        foreign.note = sign_note(body, side.log.origin, side.key) + cosigned.line()
        misnamed = check_inclusion(
            proven.record, proven.inclusion_proof, foreign, log_key=log_key, witness=witness
        )
        assert "the checkpoint is of log" in misnamed.problem
        stranger = log_verifier(side.log.origin, Ed25519PrivateKey.generate())
        wrong_node = [bytes(32), *proven.inclusion_proof[1:]]
        tampered = audit_pb2.AuditLogRecord()
        tampered.CopyFrom(proven.record)
        tampered.record = proven.record.record + b"\0"
        for record, proof, keys, problem in (
            (proven.record, proven.inclusion_proof, (None, witness), "publishes no log key"),
            (proven.record, proven.inclusion_proof, (log_key, None), "names no witness key"),
            (proven.record, proven.inclusion_proof, (stranger, witness), "does not verify"),
            (proven.record, proven.inclusion_proof, (log_key, log_key), "does not verify"),
            (proven.record, wrong_node, (log_key, witness), "inclusion proof"),
            (tampered, proven.inclusion_proof, (log_key, witness), "leaf hash"),
        ):
            check = check_inclusion(record, proof, checkpoint, log_key=keys[0], witness=keys[1])
            assert not check.verified
            assert problem in check.problem


def test_a_record_that_does_not_decode_is_named_not_raised() -> None:
    assert decode_record(b"\xff\xff").problem
    decoded = decode_record(b"")
    assert decoded.problem == ""
    assert dict(decoded.header_fields)["message_id"] == ""


async def test_one_log_shows_no_log_select(console: Console) -> None:
    auditor = console.world.pki.roles("auditor:DEV/GOV/POP")
    async with console.session(auditor) as http, http.get(console.url + "/") as response:
        page = await response.text()
    assert "<select" not in page


async def test_the_log_select_lists_every_tree_own_first(cluster: Console) -> None:
    auditor = cluster.world.pki.roles("auditor:DEV/GOV/POP")
    async with cluster.session(auditor) as http, http.get(cluster.url + "/") as response:
        assert response.status == 200
        page = await response.text()
    select = re.search(r'<select id="f-log" name="log">(.*?)</select>', page, re.S)
    assert select is not None, page
    options = re.findall(r'<option value="([^"]+)"( selected)?>', select.group(1))
    assert options == [(str(POP_SS), " selected"), (WORKER_LOG, ""), (OTHER_SERVER_LOG, "")]


async def test_another_servers_tree_is_read_but_not_exported_here(cluster: Console) -> None:
    auditor = cluster.world.pki.roles("auditor:DEV/GOV/POP")
    async with cluster.session(auditor) as http:
        params = {"search": "1", "log": OTHER_SERVER_LOG}
        async with http.get(cluster.url + "/", params=params) as response:
            assert response.status == 200
            page = await response.text()
        assert "person-other" in page
        assert "export it from that server's console" in page
        assert 'action="/export' not in page
        async with http.get(cluster.url + "/verify") as response:
            token = _token(await response.text())
        data = {CSRF_FIELD: token, "log": OTHER_SERVER_LOG}
        async with http.post(cluster.url + "/export", data=data) as response:
            assert response.status == 400
            assert "signed with another server&#39;s key" in await response.text()


async def test_a_search_in_a_workers_tree_finds_its_record_proven(cluster: Console) -> None:
    auditor = cluster.world.pki.roles("auditor:DEV/GOV/POP")
    async with cluster.session(auditor) as http:
        async with http.get(cluster.url + "/", params={"subject": "person-worker"}) as response:
            assert "No record matches this search." in await response.text()  # not in its own
        params = {"subject": "person-worker", "log": WORKER_LOG}
        async with http.get(cluster.url + "/", params=params) as response:
            assert response.status == 200
            page = await response.text()
        assert f'<option value="{WORKER_LOG}" selected>' in page
        assert f'name="log" value="{WORKER_LOG}"' in page  # the export form carries it
        link = re.search(r'href="(/records/0\?[^"]+)"', page)
        assert link is not None, page
        assert "log=DEV%2FGOV%2FPOP%2Fss1%2Fw1" in link.group(1)
        async with http.get(cluster.url + link.group(1).replace("&amp;", "&")) as response:
            assert response.status == 200
            record = await response.text()
        assert "Proof verified" in record, record
        assert "person-worker" in record
        assert WORKER_LOG in record
        # The same sequence number in the server's own tree is another record.
        async with http.get(cluster.url + "/records/0") as response:
            own = await response.text()
        assert "Proof verified" in own
        assert "person-worker" not in own
        assert "<script" not in page + record + own


async def test_a_workers_tree_exports_a_bundle_that_verifies(cluster: Console) -> None:
    auditor = cluster.world.pki.roles("auditor:DEV/GOV/POP")
    async with cluster.session(auditor) as http:
        async with http.get(cluster.url + "/verify") as response:
            token = _token(await response.text())
        data = {CSRF_FIELD: token, "subject": "person-worker", "log": WORKER_LOG}
        async with http.post(cluster.url + "/export", data=data) as response:
            assert response.status == 200
            assert "ss1-w1" in response.headers["Content-Disposition"]
            bundle = await response.read()
    report = verify_bundle(bundle, anchor=cluster.world.anchor)
    assert report.ok, report.text()
    assert report.origin == WORKER_LOG
    assert len(report.records) == 2  # the request and its response


@pytest.mark.parametrize(
    "log",
    [
        "DEV/GOV/POP/ss1/w2",  # the shape of a worker's tree, but none is kept
        "DEV/GOV/TAX/ss1",  # another member's server
        "<script>alert(1)</script>",
        "DEV/GOV/POP/ss1/w1" + "x" * 5000,
    ],
)
async def test_a_log_not_in_the_list_is_refused(cluster: Console, log: str) -> None:
    auditor = cluster.world.pki.roles("auditor-supervisor")
    async with cluster.session(auditor) as http:
        async with http.get(cluster.url + "/", params={"log": log}) as response:
            assert response.status == 400
            page = await response.text()
        assert "is not one of this server&#39;s logs" in page
        assert "<script" not in page
        async with http.get(cluster.url + "/records/0", params={"log": log}) as response:
            assert response.status == 400
        async with http.get(cluster.url + "/verify") as response:
            token = _token(await response.text())
        async with http.post(
            cluster.url + "/export", data={CSRF_FIELD: token, "log": log}
        ) as response:
            assert response.status == 400
            assert "is not one of this server&#39;s logs" in await response.text()
