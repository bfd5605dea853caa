"""The verification report shows how each exchange ended (issue 19, item 5): a response's
signed status, fault and the stated purpose, per record and counted, in text and JSON; a refusal
no longer reads like a success."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from ruta.evidence import verify_bundle
from ruta.evidence.cli import group
from ruta.evidence.verify import MAX_REPORTED_TEXT, RecordReport, _printable
from tests.unit.security_server.evidence_support import scenario

INVALID_ARGUMENT = 3


async def test_a_refused_exchange_is_reported_with_its_status_and_fault(tmp_path: Path) -> None:
    async with scenario(tmp_path, exchanges=1) as world:
        refused = await world.exchange(
            "person-9", status_code=INVALID_ARGUMENT, fault="client.invalid_request"
        )
        await world.checkpoint()
        bundle = tmp_path / "pop.zip"
        bundle.write_bytes(await world.export(world.provider))
        anchor = world.anchor

    report = verify_bundle(bundle.read_bytes(), anchor=anchor, name=str(bundle))
    assert report.ok, report.first_failure
    responses = [r for r in report.records if r.kind == "response"]
    assert {r.message_id: (r.status, r.fault) for r in responses}[refused] == (
        "INVALID_ARGUMENT",
        "client.invalid_request",
    )
    assert all(r.purpose == "benefit-eligibility" for r in report.records)
    assert report.outcomes() == {
        "status OK": 1,
        "status INVALID_ARGUMENT fault client.invalid_request": 1,
    }
    requests = [r for r in report.records if r.kind == "request"]
    assert all(r.status == "" and r.outcome() == "" for r in requests)

    text = report.text()
    assert "responses: 1 status INVALID_ARGUMENT fault client.invalid_request, 1 status OK" in text
    line = next(line for line in text.splitlines() if refused in line and "response" in line)
    assert "status INVALID_ARGUMENT fault client.invalid_request purpose benefit-eligibility" in (
        line
    )
    data = json.loads(report.to_json())
    by_id = {(r["message_id"], r["kind"]): r for r in data["records"]}
    assert by_id[(refused, "response")]["status"] == "INVALID_ARGUMENT"
    assert by_id[(refused, "response")]["fault"] == "client.invalid_request"
    assert by_id[(refused, "request")]["purpose"] == "benefit-eligibility"


async def test_a_backends_own_fault_is_reported_with_its_fault_id(tmp_path: Path) -> None:
    """A refusal by the provider's backend (docs/adr/0024): its code under ``backend.`` and the
    fault id the caller got, from the signed header."""
    fault_id = "5b0e51c4-7c1e-4f0a-9d55-0c1f8a3b2d11"
    async with scenario(tmp_path, exchanges=0) as world:
        refused = await world.exchange(
            "person-9",
            status_code=INVALID_ARGUMENT,
            backend_fault="client.invalid_request",
            backend_fault_id=fault_id,
        )
        await world.checkpoint()
        bundle = await world.export(world.consumer)
        anchor = world.anchor

    report = verify_bundle(bundle, anchor=anchor, name="soc.zip")
    assert report.ok, report.first_failure
    (response,) = [r for r in report.records if r.kind == "response"]
    assert response.message_id == refused
    assert (response.status, response.fault, response.fault_id) == (
        "INVALID_ARGUMENT",
        "backend.client.invalid_request",
        fault_id,
    )
    assert report.outcomes() == {"status INVALID_ARGUMENT fault backend.client.invalid_request": 1}
    line = next(
        line for line in report.text().splitlines() if "response" in line and refused in line
    )
    assert f"fault backend.client.invalid_request fault_id {fault_id}" in line
    assert json.loads(report.to_json())["records"][1]["fault_id"] == fault_id


def test_the_cli_prints_the_outcomes(tmp_path: Path) -> None:
    """``ruta audit verify`` (unpinned: the report says so) prints the counted outcomes."""

    async def build() -> Path:
        async with scenario(tmp_path, exchanges=1) as world:
            await world.exchange("person-9", status_code=5, fault="client.not_found")
            await world.checkpoint()
            path = tmp_path / "pop.zip"
            path.write_bytes(await world.export(world.provider))
            return path

    bundle = asyncio.run(build())
    result = CliRunner().invoke(group, ["verify", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "status NOT_FOUND fault client.not_found" in result.output


def test_header_text_cannot_add_lines_to_the_report() -> None:
    assert _printable("purpose\nRESULT: VERIFIED") == "purpose\\nRESULT: VERIFIED"
    assert _printable("x" * (MAX_REPORTED_TEXT + 5)) == "x" * MAX_REPORTED_TEXT + "…"
    record = RecordReport(seq=1, kind="response", status="code 99")
    assert record.refused
    assert record.outcome() == "status code 99"
