"""The signed exchange end to end: backend -> consumer server -> provider server -> backend.

Real gRPC over loopback with real mTLS, real SQLite message logs, a real registry publisher and
OCSP responder (see bed.py). Servers run in this process here; test_processes.py runs them as
``ruta ss serve`` subprocesses.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from sandbox.examples.population import decode_person, encode_get_person
from tests.integration.security_server.bed import POP, SOC, bed, call_metadata, get_person

pytestmark = pytest.mark.integration


async def test_happy_path(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        await instance.start_server(POP)
        await instance.start_server(SOC)
        async with instance.consumer_channel(SOC) as channel:
            call = get_person(channel)(encode_get_person("38001010001"), metadata=call_metadata())
            raw = await call
            trailing = dict(await call.trailing_metadata() or ())
        assert decode_person(raw)["family_name"] == "Pérez"
        assert len(trailing["ruta-request-hash"]) == 64
        seen = instance.backend.calls[-1]
        assert seen["ruta-client"] == "DEV/GOV/SOC/benefits"
        assert seen["ruta-message-id"] == trailing["ruta-message-id"]


async def _logged(instance: object, server: object, message_id: str) -> list[str]:
    app = instance.agencies[server].app  # type: ignore[attr-defined]
    page = await app.log.query(message_id=message_id)
    return [f"{r.direction.name}:{r.kind}" for r in page.records]


async def test_both_logs_hold_request_and_response(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        await instance.start_server(POP)
        await instance.start_server(SOC)
        async with instance.consumer_channel(SOC) as channel:
            call = get_person(channel)(encode_get_person("38001010001"), metadata=call_metadata())
            await call
            message_id = str(dict(await call.trailing_metadata() or ())["ruta-message-id"])
        assert await _logged(instance, SOC, message_id) == ["SENT:request", "RECEIVED:response"]
        assert await _logged(instance, POP, message_id) == ["RECEIVED:request", "SENT:response"]


async def test_logs_are_checkpointed_and_cosigned_by_the_witness(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        provider = await instance.start_server(POP)
        consumer = await instance.start_server(SOC)
        async with instance.consumer_channel(SOC) as channel:
            for _ in range(3):
                await get_person(channel)(
                    encode_get_person("38001010001"), metadata=call_metadata()
                )
        for app in (provider, consumer):
            assert app.log is not None
            assert app.checkpointer is not None
            size = app.log.size()
            assert size == 6
            for _ in range(200):
                cosigned = app.checkpointer.cosigned
                if cosigned is not None and cosigned.size == size:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"no cosigned checkpoint: {app.checkpointer.last_error}")


async def test_operational_record_never_names_the_subject(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    subject = "SUBJECT-38001010001"
    async with bed(tmp_path) as instance:
        await instance.start_server(POP)
        await instance.start_server(SOC)
        async with instance.consumer_channel(SOC) as channel:
            metadata = call_metadata(extra=(("ruta-subject", subject), ("ruta-user-id", "jdoe")))
            await get_person(channel)(encode_get_person("38001010001"), metadata=metadata)
    records = [r.getMessage() for r in caplog.records if r.name == "security_server.metrics"]
    assert any(m.startswith("exchange role=consumer") and "fault=none" in m for m in records)
    assert any(m.startswith("exchange role=provider") and "backend_seconds=0" in m for m in records)
    assert not any(subject in r.getMessage() or "jdoe" in r.getMessage() for r in caplog.records)


@pytest.mark.postgres
async def test_provider_log_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    async with bed(tmp_path) as instance:
        data = instance.settings_dict(POP)
        data["log"] = {"url": postgres_url}
        provider = await instance.start_server(POP, data=data)
        await instance.start_server(SOC)
        async with instance.consumer_channel(SOC) as channel:
            call = get_person(channel)(encode_get_person("38001010001"), metadata=call_metadata())
            await call
            message_id = str(dict(await call.trailing_metadata() or ())["ruta-message-id"])
        assert provider.log is not None
        assert await _logged(instance, POP, message_id) == ["RECEIVED:request", "SENT:response"]
