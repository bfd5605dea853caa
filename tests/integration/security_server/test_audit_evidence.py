"""Evidence end to end: two running security servers exchange, their logs are cosigned by the
registry's witness, an auditor exports a bundle from each server's audit API over mTLS, and the
bundles verify offline (pinned to the instance's anchor) and reconcile."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sandbox.examples.population import encode_get_person
from tests.integration.security_server.bed import (
    POP,
    SOC,
    audit_cli,
    bed,
    call_metadata,
    get_person,
    wait_cosigned,
)

pytestmark = pytest.mark.integration

EXCHANGES = 3


async def test_export_verify_and_reconcile_both_sides(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        apps = {}
        for server in (POP, SOC):
            data = instance.settings_dict(server)
            data["audit"] = {"listen": "127.0.0.1:0"}
            apps[server] = await instance.start_server(server, data=data)
        async with instance.consumer_channel(SOC) as channel:
            for _ in range(EXCHANGES):
                await get_person(channel)(
                    encode_get_person("38001010001"), metadata=call_metadata()
                )
        auditor = instance.pki.role("auditor-supervisor")
        bundles = {}
        for server, app in apps.items():
            await wait_cosigned(app, 2 * EXCHANGES)
            out = tmp_path / f"{server.member.member_code}.zip"
            args = [
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
                str(out),
            ]
            code, output = await asyncio.to_thread(audit_cli, *args)
            assert code == 0, output
            code, output = audit_cli("verify", str(out), "--anchor", str(instance.anchor_path))
            assert code == 0, output
            assert "signer pinned by the anchor" in output
            bundles[server] = out
        code, output = audit_cli("reconcile", str(bundles[SOC]), str(bundles[POP]))
        assert code == 0, output
        assert f"identical: {EXCHANGES}" in output
