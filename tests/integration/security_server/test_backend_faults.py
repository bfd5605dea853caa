"""A provider backend's refusal reaches the caller with its fault code and fault id, through two
real security servers, and both logs' signed response records carry them (docs/adr/0024).

The backend is the real population SQL adapter (adapters/examples/population) serving a real
SQLite file; the servers are the bed's POP and SOC, in this process, over real mTLS.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path

import grpc
import grpc.aio
import pytest

from adapters.examples.population.make_db import create_population_db
from ruta.v1 import transport_pb2
from sandbox.examples.population import encode_get_person
from security_server.headers import read_header
from security_server.log import MessageLog
from security_server.refusals import REFUSALS_FILE, read_refusals
from tests.integration.adapters.support import example, serving
from tests.integration.security_server.bed import (
    POP,
    SERVICE,
    SOC,
    call_metadata,
    full_export,
    get_person,
)
from tests.integration.security_server.bed import bed as make_bed

pytestmark = pytest.mark.integration


async def _response_headers(log: MessageLog) -> list[tuple[bytes, transport_pb2.MessageHeader]]:
    """The response records of ``log``: their exact header bytes, and parsed."""
    page = await log.query()
    found = []
    for record in page.records:
        if str(record.kind) == "response":
            raw = record.log_record().header
            found.append((raw, read_header(raw).header))
    return found


async def test_an_adapters_refusal_reaches_the_caller_and_both_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "population.db"
    create_population_db(database)
    monkeypatch.setenv("RUTA_POPULATION_DB", str(database))
    caplog.set_level(logging.INFO, logger="adapters")
    async with (
        serving(example(tmp_path, "population")) as adapter,
        make_bed(tmp_path / "bed") as instance,
    ):
        for server in (POP, SOC):
            data = instance.settings_dict(server)
            if server == POP:
                data["backends"] = [
                    {"service": str(SERVICE), "address": f"127.0.0.1:{adapter.port}"}
                ]
            await instance.start_server(server, data=data)
        async with instance.consumer_channel(SOC) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                # The adapter's pattern refuses a malformed national_id.
                await get_person(channel)(
                    encode_get_person("12-34"), metadata=call_metadata(), timeout=10
                )
        error = caught.value
        trailing = {k: v for k, v in error.trailing_metadata() or () if isinstance(v, str)}
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == "request field national_id has an invalid format"
        assert trailing["ruta-fault"] == "backend.client.invalid_request"
        fault_id = trailing["ruta-fault-id"]
        assert str(uuid.UUID(fault_id)) == fault_id
        assert trailing["ruta-message-id"]
        # The id is the adapter's own: it is in the adapter's log line for that call.
        adapter_lines = [r.getMessage() for r in caplog.records if r.name.startswith("adapters")]
        assert any(
            f"fault=client.invalid_request fault_id={fault_id}" in line for line in adapter_lines
        ), adapter_lines

        # SOC's operational record of the refusal it passed back holds what its caller got.
        soc = instance.agencies[SOC].app
        assert soc is not None
        kept = [
            (r.role, r.fault, r.fault_id, r.status)
            for r in read_refusals(soc.settings.data_dir / REFUSALS_FILE)
        ]
        assert (
            "consumer",
            "backend.client.invalid_request",
            fault_id,
            "INVALID_ARGUMENT",
        ) in kept

        for server in (SOC, POP):
            app = instance.agencies[server].app
            assert app is not None
            assert app.log is not None
            ((raw, header),) = await _response_headers(app.log)
            assert header.status_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert header.fault == ""
            assert header.backend_fault == "client.invalid_request"
            assert header.backend_fault_id == fault_id
            # The export of the whole log verifies, and holds exactly these header bytes.
            report = await full_export(instance, server)
            assert report.ok, report.first_failure
            responses = [r for r in report.records if r.kind == "response"]
            assert [r.header_sha256 for r in responses] == [hashlib.sha256(raw).hexdigest()]
