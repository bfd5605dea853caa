"""Acceptance: a non-Python client (Node's fetch) calls a REST service and a gRPC service as
JSON through the gateway and two security servers; both exchanges are in both message logs, and
the auditor's evidence from each server verifies offline and reconciles."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from ruta.v1 import http_pb2, log_pb2, transport_pb2
from tests.integration.gateway.gwbed import REST_SERVICE, gateway_bed, gateway_url
from tests.integration.security_server.bed import (
    BENEFITS,
    POP,
    PURPOSE,
    SERVICE,
    SOC,
    audit_cli,
    wait_cosigned,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NODE = shutil.which("node")
SCRIPT = Path(__file__).parent / "clients" / "fetch.mjs"


@pytest.mark.skipif(NODE is None, reason="node is not installed")
async def test_node_fetch_rest_and_json_grpc_logged_and_verified(tmp_path: Path) -> None:
    assert NODE is not None
    async with gateway_bed(tmp_path, audit=True) as instance:
        process = await asyncio.create_subprocess_exec(
            NODE,
            str(SCRIPT),
            gateway_url(instance),
            str(BENEFITS),
            PURPOSE,
            f"/r1/{REST_SERVICE}/persons/38001010001",
            f"/r1/{SERVICE}/GetPerson",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, err.decode()
        answers = json.loads(out)
        assert answers["rest"]["status"] == 200
        assert answers["rest"]["body"]["name"] == "Ana Pérez"
        assert answers["grpc"]["status"] == 200
        assert answers["grpc"]["body"]["givenName"] == "Ana"
        message_ids = {answers["rest"]["messageId"], answers["grpc"]["messageId"]}
        assert len(message_ids) == 2

        auditor = instance.pki.roles("auditor-supervisor", "auditor-bodies")
        bundles = {}
        for server in (POP, SOC):
            app = instance.agencies[server].app
            assert app is not None
            await wait_cosigned(app, 4)  # request + response of each exchange
            bundle = tmp_path / f"{server.member.member_code}.zip"
            code, output = await asyncio.to_thread(
                audit_cli,
                "export",
                "--address",
                app.addresses["audit"],
                "--cert",
                str(auditor.cert_path),
                "--key",
                str(auditor.key_path),
                "--ca",
                str(instance.pki.trust_path),
                "--out",
                str(bundle),
            )
            assert code == 0, output
            code, output = audit_cli("verify", str(bundle), "--anchor", str(instance.anchor_path))
            assert code == 0, output
            bundles[server] = bundle
        code, output = audit_cli("reconcile", str(bundles[SOC]), str(bundles[POP]))
        assert code == 0, output
        assert "identical: 2" in output
        for bundle in bundles.values():
            assert _logged_message_ids(bundle) >= message_ids
        # The REST request as signed: the body whose digest the signed header carries is the
        # whole HTTP request (method, path, query, allowed headers, body).
        signed = _signed_rest_request(bundles[POP], answers["rest"]["messageId"])
        assert signed.method == "GET"
        assert signed.path == "/persons/38001010001"


def _logged_message_ids(bundle: Path) -> set[str]:
    """Message ids of the records in an evidence bundle (each exchange: request and response)."""
    found: set[str] = set()
    with zipfile.ZipFile(bundle) as archive:
        for name in archive.namelist():
            if not name.startswith("records/"):
                continue
            record = log_pb2.LogRecord.FromString(archive.read(name))
            found.add(transport_pb2.MessageHeader.FromString(record.header).message_id)
    return found


def _signed_rest_request(bundle: Path, message_id: str) -> http_pb2.HttpRequest:
    """The provider's logged REST request with ``message_id``, its body checked against the
    digest in the signed header."""
    with zipfile.ZipFile(bundle) as archive:
        for name in archive.namelist():
            if not name.startswith("records/"):
                continue
            record = log_pb2.LogRecord.FromString(archive.read(name))
            header = transport_pb2.MessageHeader.FromString(record.header)
            if header.message_id != message_id or header.kind != transport_pb2.MESSAGE_KIND_REQUEST:
                continue
            seq = name.removeprefix("records/").removesuffix(".leaf")
            body = archive.read(f"bodies/{seq}.body")
            assert hashlib.sha256(body).digest() == header.body_sha256
            return http_pb2.HttpRequest.FromString(body)
    raise AssertionError(f"no request {message_id} in {bundle.name}")
