"""Every record a server writes verifies (issue 12, finding 3).

After some refused exchanges (a ``ruta-message-id`` sent twice through a consumer) complete
exports failed verification: the consumer signed and logged a second request under the same id,
and the first response no longer matched "the" request of that id. Now a consumer refuses a
message id it has already used before signing (``client.reused_message_id``), and whatever
sequence of calls reaches the servers, a full export of either log verifies: a stateful property
test drives random sequences of valid, refused, duplicated, cancelled and failing calls against
real servers (real gRPC over mTLS, real SQLite logs) and verifies both full exports after each run.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from sandbox.examples.population import SLOW_NATIONAL_ID, encode_get_person
from tests.integration.security_server.bed import (
    POP,
    SOC,
    Bed,
    call_metadata,
    fault_of,
    full_export,
    get_person,
    provider_and_consumer,
    send_to_provider,
    signed_request,
)

pytestmark = pytest.mark.integration

PERSON = encode_get_person("38001010001")
#: Checkpoints often, so the full exports need not wait long for a cosigned tree.
_FAST_CHECKPOINTS: dict[str, Any] = {"interval_seconds": 0.1}


def _with_id(message_id: str, **kwargs: Any) -> tuple[tuple[str, str], ...]:
    return call_metadata(extra=(("ruta-message-id", message_id),), **kwargs)


async def _call(
    instance: Bed,
    metadata: tuple[tuple[str, str], ...],
    *,
    body: bytes = PERSON,
    seconds: float = 10,
) -> str:
    """What the call ended with: ``ok``, a fault code, or ``status.<code>``."""
    async with instance.consumer_channel(SOC) as channel:
        try:
            await get_person(channel)(body, metadata=metadata, timeout=seconds)
        except grpc.aio.AioRpcError as exc:
            return fault_of(exc) or f"status.{exc.code().name.lower()}"
    return "ok"


async def _deadline_passed(
    instance: Bed, metadata: tuple[tuple[str, str], ...], *, body: bytes, seconds: float
) -> bool:
    """Whether the call ended with DEADLINE_EXCEEDED: the caller's own deadline, or, when the
    caller's timer runs late (a loaded machine), the consumer's refusal at that same deadline
    (``server.consumer.network_error``), whichever reached the caller first."""
    async with instance.consumer_channel(SOC) as channel:
        try:
            await get_person(channel)(body, metadata=metadata, timeout=seconds)
        except grpc.aio.AioRpcError as exc:
            return exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED and fault_of(exc) in (
                None,
                "server.consumer.network_error",
            )
    return False


async def _bounded(coroutine: Any) -> Any:
    async with asyncio.timeout(30):
        return await coroutine


async def _twice(instance: Bed, metadata: tuple[tuple[str, str], ...]) -> list[str]:
    """The outcomes of two calls with the same metadata at once."""
    return list(await asyncio.gather(_call(instance, metadata), _call(instance, metadata)))


async def _verified(instance: Bed) -> None:
    """Both servers' full exports verify (a log still empty has nothing to export)."""
    for server in (SOC, POP):
        app = instance.agencies[server].app
        assert app is not None
        assert app.log is not None
        if app.log.size() == 0:
            continue
        report = await full_export(instance, server)
        assert report.ok, report.text()


async def test_reused_message_id_is_refused_before_signing(tmp_path: Path) -> None:
    async with provider_and_consumer(tmp_path) as instance:
        app = instance.agencies[SOC].app
        assert app is not None
        assert app.log is not None
        message_id = str(uuid.uuid4())
        assert await _call(instance, _with_id(message_id)) == "ok"
        size = app.log.size()
        assert await _call(instance, _with_id(message_id)) == "client.reused_message_id"
        assert app.log.size() == size  # nothing signed, nothing logged
        # Two calls with one fresh id at once: one goes through, the other is refused.
        outcomes = await _twice(instance, _with_id(str(uuid.uuid4())))
        assert sorted(outcomes) == ["client.reused_message_id", "ok"]
        await _verified(instance)


async def test_id_of_a_request_refused_by_the_provider_stays_used(tmp_path: Path) -> None:
    async with provider_and_consumer(tmp_path) as instance:
        message_id = str(uuid.uuid4())
        refused = _with_id(message_id, purpose="no-such-purpose")
        assert await _call(instance, refused) == "server.consumer.access_denied"
        # Refused before signing: the id was never used and is still free.
        assert await _call(instance, _with_id(message_id)) == "ok"
        slow = _with_id(str(uuid.uuid4()))
        body = encode_get_person(SLOW_NATIONAL_ID)
        assert await _deadline_passed(instance, slow, body=body, seconds=0.5)
        # The request was sent (and is logged): its id is used even though nothing came back.
        assert await _call(instance, slow) == "client.reused_message_id"
        await _verified(instance)


class ExchangeSequences(RuleBasedStateMachine):
    """Random sequences of calls through SOC's consumer port and straight to POP's transport
    port; after each sequence both servers' full exports verify."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = Path(tempfile.mkdtemp(prefix="ruta-sequences-"))
        self.bed_context = provider_and_consumer(self.directory, checkpoints=_FAST_CHECKPOINTS)
        self.instance: Bed = self.loop.run_until_complete(self.bed_context.__aenter__())
        self.sent_unanswered: list[str] = []

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(_bounded(coroutine))

    used = Bundle("used")

    @rule(target=used, found=st.booleans())
    def valid(self, found: bool) -> str:
        message_id = str(uuid.uuid4())
        body = PERSON if found else encode_get_person("00000000000")
        outcome = self.run(_call(self.instance, _with_id(message_id), body=body))
        assert outcome == ("ok" if found else "status.not_found")
        return message_id

    @rule()
    def refused_by_the_consumer(self) -> None:
        metadata = _with_id(str(uuid.uuid4()), purpose="no-such-purpose")
        assert self.run(_call(self.instance, metadata)) == "server.consumer.access_denied"

    @rule(target=used)
    def failing_backend_answer(self) -> str:
        message_id = str(uuid.uuid4())
        outcome = self.run(_call(self.instance, _with_id(message_id), body=b"\xff\xff"))
        assert outcome == "status.invalid_argument"
        return message_id

    @rule(message_id=used)
    def duplicated(self, message_id: str) -> None:
        outcome = self.run(_call(self.instance, _with_id(message_id)))
        assert outcome == "client.reused_message_id"

    @rule(target=used)
    def duplicated_at_once(self) -> str:
        message_id = str(uuid.uuid4())
        metadata = _with_id(message_id)
        outcomes = self.run(_twice(self.instance, metadata))
        assert sorted(outcomes) == ["client.reused_message_id", "ok"]
        return message_id

    @rule(target=used)
    def cancelled(self) -> str:
        message_id = str(uuid.uuid4())
        body = encode_get_person(SLOW_NATIONAL_ID)
        outcome = self.run(_call(self.instance, _with_id(message_id), body=body, seconds=0.3))
        # The caller's deadline, or the consumer server's own wait for the provider (which
        # ends at the same moment) with its fault.
        assert outcome in ("status.deadline_exceeded", "server.consumer.network_error")
        self.sent_unanswered.append(message_id)
        return message_id

    @rule()
    def replayed_to_the_provider(self) -> None:
        _, message = signed_request(self.instance)
        self.run(send_to_provider(self.instance, message))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            self.run(send_to_provider(self.instance, message))
        assert fault_of(info.value) == "server.provider.replayed_message"

    @rule()
    def forged_to_the_provider(self) -> None:
        header, message = signed_request(self.instance)
        header.purpose = "tampered"
        message.header = header.SerializeToString(deterministic=True)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            self.run(send_to_provider(self.instance, message))
        assert fault_of(info.value) == "server.provider.invalid_signature"

    @invariant()
    def alive(self) -> None:
        assert self.instance.agencies[SOC].app is not None

    def teardown(self) -> None:
        try:
            self.run(self._settled())
            self.run(_verified(self.instance))
        finally:
            self.loop.run_until_complete(self.bed_context.__aexit__(None, None, None))
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    async def _settled(self) -> None:
        """Wait (bounded) until the requests of cancelled calls are logged (appended after the
        caller's deadline cancelled the handler)."""
        app = self.instance.agencies[SOC].app
        assert app is not None
        assert app.log is not None
        for message_id in self.sent_unanswered:
            for _ in range(200):
                if (await app.log.query(message_id=message_id)).records:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the request of {message_id} was never logged")


ExchangeSequences.TestCase.settings = settings(
    max_examples=4,
    stateful_step_count=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
test_exchange_sequences = ExchangeSequences.TestCase
