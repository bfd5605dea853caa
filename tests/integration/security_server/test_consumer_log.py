"""What the consumer server's message log holds for each way an exchange can end (docs/adr/0009).

An answered exchange: the request and the response, consecutive, written in one transaction
before the answer goes back. An exchange that ends any other way after the request was sent (a
provider refusal, the caller's deadline): the request alone. Real servers, real gRPC over mTLS,
real SQLite logs (bed.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from sandbox.examples.population import SLOW_NATIONAL_ID, encode_get_person
from security_server.database import open_database
from security_server.log import MessageLog, load_or_create_body_key
from tests.integration.security_server.bed import (
    POP,
    SOC,
    Bed,
    bed,
    call_metadata,
    consumer_refusal,
    get_person,
    provider_and_consumer,
)

pytestmark = pytest.mark.integration

PERSON = encode_get_person("38001010001")


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Bed]:
    async with provider_and_consumer(tmp_path) as instance:
        yield instance


def _log(instance: Bed) -> MessageLog:
    app = instance.agencies[SOC].app
    assert app is not None
    assert app.log is not None
    return app.log


def _with_id(message_id: str) -> tuple[tuple[str, str], ...]:
    return call_metadata(extra=(("ruta-message-id", message_id),))


async def _logged(log: MessageLog, message_id: str) -> list[tuple[str, str, int, object]]:
    page = await log.query(message_id=message_id)
    return [(r.direction.name, str(r.kind), r.seq, r.logged_at) for r in page.records]


async def test_answered_exchange_logs_request_and_response_in_one_transaction(
    running: Bed,
) -> None:
    log = _log(running)
    async with running.consumer_channel(SOC) as channel:
        await get_person(channel)(PERSON, metadata=call_metadata())  # warm: channel, OCSP
        before = log.stats.transactions
        message_id = str(uuid.uuid4())
        await get_person(channel)(PERSON, metadata=_with_id(message_id))
        after = log.stats.transactions
    records = await _logged(log, message_id)
    assert [(direction, kind) for direction, kind, _, _ in records] == [
        ("SENT", "request"),
        ("RECEIVED", "response"),
    ]
    (_, _, request_seq, request_at), (_, _, response_seq, response_at) = records
    assert response_seq == request_seq + 1
    assert request_at == response_at  # one group: one logged_at
    assert after - before == 1


async def test_request_refused_by_the_provider_is_logged_alone(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        data = instance.settings_dict(POP)
        data["backends"] = []  # POP serves nothing: it refuses the request after the checks
        await instance.start_server(POP, data=data)
        await instance.start_server(SOC)
        log = _log(instance)
        message_id = str(uuid.uuid4())
        code, fault = await consumer_refusal(instance, metadata=_with_id(message_id))
        assert (code, fault) == (grpc.StatusCode.NOT_FOUND, "server.provider.unknown_service")
        assert [(d, k) for d, k, _, _ in await _logged(log, message_id)] == [("SENT", "request")]


async def test_reused_message_id_is_refused_and_not_logged_again(running: Bed) -> None:
    log = _log(running)
    message_id = str(uuid.uuid4())
    async with running.consumer_channel(SOC) as channel:
        await get_person(channel)(PERSON, metadata=_with_id(message_id))
    code, fault = await consumer_refusal(running, metadata=_with_id(message_id))
    assert (code, fault) == (grpc.StatusCode.ALREADY_EXISTS, "client.reused_message_id")
    assert [(d, k) for d, k, _, _ in await _logged(log, message_id)] == [
        ("SENT", "request"),
        ("RECEIVED", "response"),
    ]


async def test_request_whose_caller_gave_up_is_logged_alone(running: Bed) -> None:
    log = _log(running)
    message_id = str(uuid.uuid4())
    code, _ = await consumer_refusal(
        running,
        body=encode_get_person(SLOW_NATIONAL_ID),
        metadata=_with_id(message_id),
        deadline=1.0,
    )
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(100):  # the cancelled handler hands the append to the writer
        if await _logged(log, message_id):
            break
        await asyncio.sleep(0.05)
    assert [(d, k) for d, k, _, _ in await _logged(log, message_id)] == [("SENT", "request")]


async def test_a_cancelled_calls_request_is_not_lost_when_the_server_stops_at_once(
    tmp_path: Path,
) -> None:
    """The caller gives up, and the server stops right away: the stop awaits the append of the
    request that was sent, so it is in the log when the log is opened again."""
    async with provider_and_consumer(tmp_path) as instance:
        app = instance.agencies[SOC].app
        assert app is not None
        message_id = str(uuid.uuid4())
        code, _ = await consumer_refusal(
            instance,
            body=encode_get_person(SLOW_NATIONAL_ID),
            metadata=_with_id(message_id),
            deadline=0.5,
        )
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        await app.stop()
        instance.agencies[SOC].app = None
        engine = await open_database(app.settings.log_url)
        try:
            log = await MessageLog.open(
                engine,
                origin=str(SOC),
                body_key=load_or_create_body_key(app.settings.data_dir / "keys"),
            )
            try:
                assert [(d, k) for d, k, _, _ in await _logged(log, message_id)] == [
                    ("SENT", "request")
                ]
            finally:
                await log.close()
        finally:
            await engine.dispose()
