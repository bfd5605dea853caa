"""A backend call made on grpc's Cython call directly (docs/adr/0047) answers exactly what the
same call through grpc.aio answers: body, status, text, and the fault code and id a refusal
carries; a caller cancelled while it waits cancels the call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from ruta.ids import ServiceId
from security_server import backends as backends_module
from security_server.backends import MAX_BACKEND_STATUS_TEXT, BackendChannels, BackendReply
from security_server.settings import BackendSettings

SERVICE = "DEV/GOV/POP/registry/test.v1.Echo"
METADATA = (("ruta-client", "DEV/GOV/SOC/benefits"), ("ruta-purpose", "test"))


class _Backend:
    """A backend that echoes, refuses with a Ruta fault, or waits until cancelled."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, dict[str, str]]] = []
        self.cancelled = asyncio.Event()
        self.waiting = asyncio.Event()

    async def echo(self, body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        entries = context.invocation_metadata() or ()
        self.seen.append((body, {str(k): str(v) for k, v in entries}))
        return body

    async def refuse(self, body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        context.set_trailing_metadata(
            (
                ("ruta-fault", "client.not_found"),
                ("ruta-fault-id", "0193a0b1-2222-7333-8444-555566667777"),
            )
        )
        await context.abort(grpc.StatusCode.NOT_FOUND, "x" * (MAX_BACKEND_STATUS_TEXT + 10))
        raise AssertionError("unreachable")

    async def hang(self, body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.waiting.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return body


@pytest.fixture
async def backend() -> AsyncIterator[tuple[_Backend, str]]:
    handlers = _Backend()
    server = grpc.aio.server()
    method = grpc.unary_unary_rpc_method_handler
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.v1.Echo",
                {
                    name: method(getattr(handlers, name.lower()))
                    for name in ("Echo", "Refuse", "Hang")
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield handlers, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def _channels(address: str, *, direct: bool) -> BackendChannels:
    settings = BackendSettings.model_validate({"service": SERVICE, "address": address})
    channels = BackendChannels((settings,), max_message_bytes=1 << 20)
    channels.direct = direct
    return channels


async def _call(address: str, method: str, *, direct: bool, seconds: float = 5.0) -> BackendReply:
    channels = _channels(address, direct=direct)
    try:
        return await channels.call(
            ServiceId.parse(SERVICE),
            f"/test.v1.Echo/{method}",
            b"\x01body",
            metadata=METADATA,
            seconds=seconds,
        )
    finally:
        await channels.close()


@pytest.mark.parametrize("method", ["Echo", "Refuse", "Hang"])
async def test_the_direct_call_answers_what_grpc_aio_answers(
    backend: tuple[_Backend, str], method: str
) -> None:
    handlers, address = backend
    seconds = 0.3 if method == "Hang" else 5.0
    direct = await _call(address, method, direct=True, seconds=seconds)
    through_aio = await _call(address, method, direct=False, seconds=seconds)
    assert direct == through_aio
    if method == "Echo":
        assert direct == BackendReply(grpc.StatusCode.OK, body=b"\x01body")
        # The backend saw the same body and metadata both ways.
        assert handlers.seen[0] == handlers.seen[1]
        assert dict(METADATA).items() <= handlers.seen[0][1].items()
    elif method == "Refuse":
        assert direct.status is grpc.StatusCode.NOT_FOUND
        assert direct.fault == "client.not_found"
        assert direct.fault_id == "0193a0b1-2222-7333-8444-555566667777"
        assert len(direct.details) == MAX_BACKEND_STATUS_TEXT
    else:
        assert direct.status is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_an_unreachable_backend_is_unavailable_both_ways() -> None:
    direct = await _call("127.0.0.1:1", "Echo", direct=True)
    through_aio = await _call("127.0.0.1:1", "Echo", direct=False)
    assert direct.status is through_aio.status is grpc.StatusCode.UNAVAILABLE


async def test_a_cancelled_caller_cancels_its_backend_call(backend: tuple[_Backend, str]) -> None:
    handlers, address = backend
    task = asyncio.get_running_loop().create_task(_call(address, "Hang", direct=True))
    await asyncio.wait_for(handlers.waiting.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The backend's handler is cancelled too: the call did not run on to its deadline.
    await asyncio.wait_for(handlers.cancelled.wait(), 5)


def test_the_pinned_grpcio_offers_the_direct_call() -> None:
    # grpcio is pinned (constraints.txt): an upgrade that drops a Cython name the direct call
    # uses fails here, instead of every backend call falling back to grpc.aio unnoticed.
    assert backends_module._DIRECT


async def test_a_call_with_direct_on_goes_through_the_cython_call(
    backend: tuple[_Backend, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, address = backend
    made: list[str] = []
    real = backends_module._direct_call

    async def counted(channel: Any, path: str, *args: Any) -> BackendReply:
        made.append(path)
        return await real(channel, path, *args)

    monkeypatch.setattr(backends_module, "_direct_call", counted)
    assert await _call(address, "Echo", direct=True) == BackendReply(
        grpc.StatusCode.OK, body=b"\x01body"
    )
    assert made == ["/test.v1.Echo/Echo"]
    assert await _call(address, "Echo", direct=False) == BackendReply(
        grpc.StatusCode.OK, body=b"\x01body"
    )
    assert made == ["/test.v1.Echo/Echo"]
