"""Responses ahead of the provider's commit (docs/adr/0038): the provider's record of a response
it already sent does not become durable, and the caller is never answered.

Both servers run as real processes (``ruta ss serve``) over real mutual TLS with real SQLite
logs. The test's backend, when called, takes the provider log's SQLite write lock (``BEGIN
IMMEDIATE`` on the provider's ``messagelog.db`` from the test process): the provider's request
record and replay claim are durable already (they are committed before the backend is called),
and its response, signed and sent ahead, cannot be committed while the lock is held. The moment
is deterministic: the consumer receives the response and logs its own records meanwhile, which
the test sees in the consumer's database before it acts. Then either

- the lock is held past the provider's SQLite busy timeout: its commit fails, its notice undoes
  the response, and the caller gets ``server.provider.logging_failed``; or
- the provider is killed (SIGKILL) while its commit waits: the stream breaks, and the caller
  gets ``server.consumer.network_error``.

Either way the logs read back hold the request in both, the response in the consumer's only
(received: the exchange ``ruta audit reconcile`` names as refused, not answered), and the caller
was never answered.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.aio
import pytest

from tests.faults.support import read_log
from tests.integration.security_server.bed import (
    PERSON_REQUEST,
    POP,
    SOC,
    Bed,
    bed,
    call_metadata,
    fault_of,
    get_person,
)
from tests.integration.security_server.holding import (
    HoldingBackend,
    WriteLock,
    log_file,
    logged,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

#: Longest wait for the consumer to have logged the response it received ahead.
MAX_WAIT_SECONDS: Final = 30.0


async def _until_consumer_logged_response(instance: Bed, message_id: str) -> None:
    path = log_file(instance, SOC)
    for _ in range(int(MAX_WAIT_SECONDS / 0.02)):
        if len(logged(path, message_id)) == 2:  # its request and the response received
            return
        await asyncio.sleep(0.02)
    raise AssertionError(
        "the consumer never logged a response while the provider's commit was held: the "
        "response did not come ahead of the provider's commit"
    )


async def _spawn_both(instance: Bed, backend: HoldingBackend) -> grpc.aio.Server:
    served, instance.backend_address = await backend.start()
    for server in (POP, SOC):
        data = instance.settings_dict(server)
        # Ahead whatever this disk's commits take (docs/adr/0048): the path under test.
        data["transport"] = {**data["transport"], "responses_ahead_min_commit_ms": 0}
        data["checkpoints"] = {"interval_seconds": 0.5}
        await instance.spawn_server(server, data=data)
    return served


def _check_logs(consumer: Any, provider: Any, message_id: str) -> None:
    mine = consumer.count()
    theirs = provider.count()
    assert mine[(message_id, "SENT", "request")] == 1
    assert mine[(message_id, "RECEIVED", "response")] == 1
    assert theirs[(message_id, "RECEIVED", "request")] == 1
    assert theirs[(message_id, "SENT", "response")] == 0


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", ["commit_fails", "provider_killed"])
async def test_the_caller_is_never_answered_when_the_providers_response_is_not_durable(
    tmp_path: Path, fault: str
) -> None:
    backend = HoldingBackend()
    async with bed(tmp_path) as instance:
        served = await _spawn_both(instance, backend)
        try:
            async with instance.consumer_channel(SOC) as channel:
                # A first exchange settles the link (and shows both ends agree and answer).
                await get_person(channel)(PERSON_REQUEST, metadata=call_metadata(), timeout=30)
                lock = WriteLock(log_file(instance, POP))
                backend.before_answer = lock.take
                message_id = str(uuid.uuid4())
                call = get_person(channel)(
                    PERSON_REQUEST,
                    metadata=call_metadata(extra=(("ruta-message-id", message_id),)),
                    timeout=60,
                )
                try:
                    await _until_consumer_logged_response(instance, message_id)
                    if fault == "provider_killed":
                        await instance.stop_process(POP, signal.SIGKILL)
                    # commit_fails: the lock is held until the call ends, so the provider's
                    # commit waits out its busy timeout and fails however late it began waiting.
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await call
                finally:
                    lock.release()
            if fault == "provider_killed":
                assert fault_of(refused.value) == "server.consumer.network_error"
                assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            else:
                assert fault_of(refused.value) == "server.provider.logging_failed"
            await instance.stop_process(SOC)
            await instance.stop_process(POP)
            consumer = await read_log(instance, SOC)
            provider = await read_log(instance, POP)
            _check_logs(consumer, provider, message_id)
        finally:
            await instance.stop_process(SOC, signal.SIGKILL)
            await instance.stop_process(POP, signal.SIGKILL)
            await served.stop(None)
