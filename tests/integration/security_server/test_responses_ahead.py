"""Responses ahead of the provider's commit (docs/adr/0038), on real servers over real mTLS.

Both ends negotiate ``response-ahead`` in the frames stream's metadata: a consumer offers it, a
provider confirms it in its initial metadata, and only then sends responses with
``commit_pending`` followed by durability notices. An old consumer (offers nothing) and an old
provider (confirms nothing; here ``[transport] responses_ahead = false``, which behaves the same
on the wire) keep today's order: every response durable before it is sent. A provider that sends
a response ahead unasked breaks the protocol. A response whose record the provider cannot commit
is refused to the caller, and reconciliation names it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.aio
import pytest

from ruta.evidence import reconcile
from ruta.v1 import transport_pb2
from sandbox.examples.population import decode_person
from security_server.errors import TransportError
from security_server.frames import (
    CAPABILITIES_HEADER,
    FRAMES_PATH,
    RESPONSE_AHEAD,
    FrameLink,
)
from security_server.log import _writer as writer_module
from tests.integration.security_server.bed import (
    PERSON_REQUEST,
    POP,
    SOC,
    Bed,
    bed,
    call_metadata,
    fault_of,
    full_export,
    get_person,
    provider_channel,
    signed_request,
)
from tests.integration.security_server.holding import (
    HoldingBackend,
    WriteLock,
    log_file,
    logged,
)

pytestmark = pytest.mark.integration

AHEAD = frozenset({RESPONSE_AHEAD})


#: The provider sends ahead whenever it is not under load, however quick its commits
#: (docs/adr/0048): what ADR 0038's guarantees are tested with.
ALWAYS_AHEAD: dict[str, Any] = {"responses_ahead_min_commit_ms": 0}


def _with_transport(instance: Bed, server: Any, **transport: Any) -> dict[str, Any]:
    data = instance.settings_dict(server)
    data["transport"] = {**data["transport"], **transport}
    return data


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Bed]:
    async with bed(tmp_path) as instance:
        await instance.start_server(POP, data=_with_transport(instance, POP, **ALWAYS_AHEAD))
        await instance.start_server(SOC)
        yield instance


def _log_size(instance: Bed, server: Any) -> int:
    app = instance.agencies[server].app
    assert app is not None
    assert app.log is not None
    return app.log.size()


async def _each_answered_call_in_the_providers_log(instance: Bed, *, calls: int) -> None:
    """``calls`` calls through the consumer server, one at a time: each is answered, and by
    then the provider's log holds both records of it (its request and its response)."""
    before = _log_size(instance, POP)
    async with instance.consumer_channel(SOC) as channel:
        for answered in range(1, calls + 1):
            person = decode_person(
                await get_person(channel)(PERSON_REQUEST, metadata=call_metadata())
            )
            assert person["family_name"] == "Pérez"
            assert _log_size(instance, POP) == before + 2 * answered


async def _raw_frames(
    channel: grpc.aio.Channel,
    requests: list[transport_pb2.SignedMessage],
    metadata: tuple[tuple[str, str], ...] = (),
) -> tuple[dict[str, Any], list[transport_pb2.ResultFrame]]:
    """One ExchangeFrames stream written by hand: the provider's initial metadata and every
    result frame it writes until the stream ends."""
    call: Any = channel.stream_stream(
        FRAMES_PATH,
        request_serializer=transport_pb2.RequestFrame.SerializeToString,
        response_deserializer=transport_pb2.ResultFrame.FromString,
    )(metadata=metadata or None)
    await call.write(
        transport_pb2.RequestFrame(
            requests=[
                transport_pb2.FramedRequest(tag=tag, message=message, timeout_ms=10_000)
                for tag, message in enumerate(requests, start=1)
            ]
        )
    )
    await call.done_writing()
    frames = [frame async for frame in call]
    return dict(await call.initial_metadata() or ()), frames


async def test_both_ends_agree_and_every_answer_is_in_both_logs(running: Bed) -> None:
    async with provider_channel(running) as channel:
        headers, frames = await _raw_frames(
            channel,
            [signed_request(running)[1] for _ in range(3)],
            ((CAPABILITIES_HEADER, f"some-future-thing, {RESPONSE_AHEAD}"),),
        )
        link = FrameLink(channel, capabilities=AHEAD)
        try:
            result, commit = await link.send(signed_request(running)[1], seconds=10)
            assert link.agreed == AHEAD
            assert result.HasField("response")
            assert result.commit_pending
            assert commit is not None
            assert await commit is None  # durable
        finally:
            await link.close()
    assert headers[CAPABILITIES_HEADER] == RESPONSE_AHEAD  # the unknown token is not confirmed
    pending = [r.tag for f in frames for r in f.results if r.commit_pending]
    durable = [tag for f in frames for tag in f.durable]
    assert sorted(pending) == [1, 2, 3]
    assert sorted(durable) == [1, 2, 3]
    assert not [u for f in frames for u in f.undone]
    # Each notice comes after its response (the same frame at the earliest).
    seen: set[int] = set()
    for frame in frames:
        seen.update(r.tag for r in frame.results)
        assert set(frame.durable) <= seen
    # Through the consumer server: each call is answered only once the provider's record of
    # its response is durable, so the provider's log holds both records of every answered call.
    await _each_answered_call_in_the_providers_log(running, calls=5)


async def test_a_quiet_provider_writes_the_response_before_it_commits_it(running: Bed) -> None:
    # One exchange in flight: the provider commits in the request's own step (docs/adr/0042,
    # 0045), but only after the stream's writer has handed the response to gRPC. Had the
    # commit come first, the response and its notice would leave in one frame.
    before = _log_size(running, POP)
    async with provider_channel(running) as channel:
        _, frames = await _raw_frames(
            channel, [signed_request(running)[1]], ((CAPABILITIES_HEADER, RESPONSE_AHEAD),)
        )
    assert [(len(f.results), list(f.durable)) for f in frames] == [(1, []), (0, [1])]
    assert frames[0].results[0].commit_pending
    assert _log_size(running, POP) == before + 2


async def test_under_load_each_response_either_goes_ahead_with_one_notice_or_durable(
    running: Bed,
) -> None:
    """Twelve requests in one frame: the provider is under load while most of them are
    answered, and those responses wait for their records (no notice needed); whichever went
    ahead gets exactly one durable notice. Every request gets exactly one result."""
    async with provider_channel(running) as channel:
        _, frames = await _raw_frames(
            channel,
            [signed_request(running)[1] for _ in range(12)],
            ((CAPABILITIES_HEADER, RESPONSE_AHEAD),),
        )
    results = [r for f in frames for r in f.results]
    assert sorted(r.tag for r in results) == list(range(1, 13))
    assert all(r.HasField("response") for r in results)
    pending = sorted(r.tag for r in results if r.commit_pending)
    assert sorted(tag for f in frames for tag in f.durable) == pending
    assert len(pending) < 12  # under load most waited for their records


async def test_an_old_consumer_gets_every_response_durable_before_it_is_sent(
    running: Bed,
) -> None:
    async with provider_channel(running) as channel:
        headers, frames = await _raw_frames(channel, [signed_request(running)[1] for _ in range(3)])
        link = FrameLink(channel)  # offers nothing, as before this change
        try:
            result, commit = await link.send(signed_request(running)[1], seconds=10)
        finally:
            await link.close()
    assert CAPABILITIES_HEADER not in headers
    assert sorted(r.tag for f in frames for r in f.results) == [1, 2, 3]
    assert not [r for f in frames for r in f.results if r.commit_pending]
    assert not [t for f in frames for t in f.durable]
    assert link.agreed == frozenset()
    assert result.HasField("response")
    assert not result.commit_pending
    assert commit is None


async def test_a_consumer_that_does_not_offer_it_is_answered_as_before(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        await instance.start_server(POP)
        data = instance.settings_dict(SOC)
        data["transport"] = {**data["transport"], "responses_ahead": False}
        await instance.start_server(SOC, data=data)
        async with instance.consumer_channel(SOC) as channel:
            person = decode_person(
                await get_person(channel)(PERSON_REQUEST, metadata=call_metadata())
            )
        assert person["family_name"] == "Pérez"
        assert _log_size(instance, POP) == _log_size(instance, SOC) == 2


async def test_a_new_consumer_with_a_provider_that_does_not_agree_keeps_todays_order(
    tmp_path: Path,
) -> None:
    async with bed(tmp_path) as instance:
        data = instance.settings_dict(POP)
        data["transport"] = {**data["transport"], "responses_ahead": False}
        await instance.start_server(POP, data=data)
        await instance.start_server(SOC)
        async with provider_channel(instance) as channel:
            headers, frames = await _raw_frames(
                channel, [signed_request(instance)[1]], ((CAPABILITIES_HEADER, RESPONSE_AHEAD),)
            )
            link = FrameLink(channel, capabilities=AHEAD)
            try:
                result, commit = await link.send(signed_request(instance)[1], seconds=10)
            finally:
                await link.close()
        assert CAPABILITIES_HEADER not in headers
        assert not [r for f in frames for r in f.results if r.commit_pending]
        assert link.agreed == frozenset()
        assert result.HasField("response")
        assert commit is None
        async with instance.consumer_channel(SOC) as channel:
            person = decode_person(
                await get_person(channel)(PERSON_REQUEST, metadata=call_metadata())
            )
        assert person["family_name"] == "Pérez"


async def test_a_response_sent_ahead_unasked_breaks_the_link() -> None:
    """A provider that marks a response commit_pending on a stream that did not agree to it
    (an old consumer would answer its caller before the record is durable) is refused: the
    link fails, and the exchange gets a transport error, not the response."""

    async def frames(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[transport_pb2.ResultFrame]:
        async for raw in requests:
            for item in transport_pb2.RequestFrame.FromString(raw).requests:
                yield transport_pb2.ResultFrame(
                    results=[
                        transport_pb2.FramedResult(
                            tag=item.tag,
                            response=transport_pb2.SignedMessage(body=b"x"),
                            commit_pending=True,
                        )
                    ]
                )

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "ruta.v1.Transport",
                {
                    "ExchangeFrames": grpc.stream_stream_rpc_method_handler(
                        frames, response_serializer=transport_pb2.ResultFrame.SerializeToString
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for capabilities in (frozenset(), AHEAD):  # unasked, or asked and not confirmed
                link = FrameLink(channel, capabilities=capabilities)
                with pytest.raises(TransportError):
                    await link.exchange(transport_pb2.SignedMessage(), seconds=10)
                assert not link.usable
                await link.close()
    finally:
        await server.stop(None)


#: The threshold of the two tests below, far above a commit on any disk the tests run on and far
#: below the slow commit they inject.
THRESHOLD_MS: Final = 20.0
#: What each slowed ``COMMIT`` waits besides its own work.
SLOW_COMMIT_SECONDS: Final = 0.040


def _slow_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``COMMIT`` of this process's logs waits :data:`SLOW_COMMIT_SECONDS` first, as on a
    disk whose fsync is slow (the commit is the same, and as durable)."""
    commit = writer_module._commit

    def slow(dbapi: sqlite3.Connection) -> None:
        time.sleep(SLOW_COMMIT_SECONDS)
        commit(dbapi)

    monkeypatch.setattr(writer_module, "_commit", slow)


@pytest.mark.parametrize("slow", [False, True], ids=["fast-log", "slow-log"])
async def test_the_provider_sends_ahead_only_while_its_commits_are_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow: bool
) -> None:
    """docs/adr/0048: with ``response-ahead`` agreed, a provider whose log commits quickly sends
    each response durable, without a notice; one whose commits wait sends it ahead and follows
    with its notice. Either way every answered call is in both logs."""
    if slow:
        _slow_commits(monkeypatch)
    async with bed(tmp_path) as instance:
        await instance.start_server(
            POP,
            data=_with_transport(instance, POP, responses_ahead_min_commit_ms=THRESHOLD_MS),
        )
        await instance.start_server(SOC)
        async with provider_channel(instance) as channel:
            for _ in range(3):
                headers, frames = await _raw_frames(
                    channel,
                    [signed_request(instance)[1]],
                    ((CAPABILITIES_HEADER, RESPONSE_AHEAD),),
                )
                assert headers[CAPABILITIES_HEADER] == RESPONSE_AHEAD  # negotiation unchanged
                [result] = [r for f in frames for r in f.results]
                assert result.HasField("response")
                assert result.commit_pending is slow
                assert [t for f in frames for t in f.durable] == ([1] if slow else [])
                assert not [u for f in frames for u in f.undone]
        await _each_answered_call_in_the_providers_log(instance, calls=3)
        assert _log_size(instance, SOC) == 6


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_response_the_provider_cannot_log_is_refused_and_reconciled(
    tmp_path: Path,
) -> None:
    """The provider's commit of a response it sent ahead fails (its log's write lock is held
    past its busy timeout): the caller gets ``server.provider.logging_failed``, never the
    answer. The consumer's log holds the request and the response it received, the provider's
    the request alone; ``ruta audit reconcile`` names that response as received and never logged
    by its sender, a caller refused."""
    backend = HoldingBackend()
    async with bed(tmp_path) as instance:
        served, instance.backend_address = await backend.start()
        try:
            for server in (POP, SOC):
                data = _with_transport(instance, server, **ALWAYS_AHEAD)
                data["checkpoints"] = {"interval_seconds": 0.5}
                await instance.start_server(server, data=data)
            lock = WriteLock(log_file(instance, POP))
            backend.before_answer = lock.take
            message_id = str(uuid.uuid4())
            async with instance.consumer_channel(SOC) as channel:
                call = get_person(channel)(
                    PERSON_REQUEST,
                    metadata=call_metadata(extra=(("ruta-message-id", message_id),)),
                    timeout=60,
                )
                try:
                    for _ in range(1500):  # the consumer logs what it received meanwhile
                        if len(logged(log_file(instance, SOC), message_id)) == 2:
                            break
                        await asyncio.sleep(0.02)
                    else:
                        raise AssertionError("the response did not come ahead of the commit")
                    # The lock is held until the call ends: the provider's commit waits out its
                    # busy timeout and fails however late it began waiting (a fixed sleep here
                    # let a commit begun late under load outlast the lock and succeed).
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await call
                finally:
                    lock.release()
            assert fault_of(refused.value) == "server.provider.logging_failed"
            assert len(logged(log_file(instance, POP), message_id)) == 1  # the request
            result = reconcile(await full_export(instance, SOC), await full_export(instance, POP))
            assert not result.ok
            [discrepancy] = result.discrepancies
            assert discrepancy.message_id == message_id
            assert "which received it" in discrepancy.problem
            assert "refused, not answered" in discrepancy.problem
        finally:
            await served.stop(None)
