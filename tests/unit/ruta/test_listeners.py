"""The listener watchdog against the real grpcio failure: a request whose ``:path`` is not UTF-8
ends the aio server loop; the listener is seen down, counted, and serves again on its address."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from ruta.listeners import Listener, ListenerError, Listeners, ListenerSpec
from ruta.pki.testing import TestPki
from ruta.pki.tls import channel_credentials, server_credentials
from tests.conftest import free_port
from tests.listener_attacks import client_tls, send_invalid_path

_SLOW = "/ruta.test.Slow/Wait"
#: Bound on every wait in these tests (none asserts a time).
_WAIT = 20.0

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Slow(grpc.GenericRpcHandler):
    """Answers ``b"done"`` once ``release`` is set (a call in flight while the loop dies)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    def service(
        self, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        if details.method != _SLOW:
            return None

        async def wait(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            await self.release.wait()
            return b"done"

        return grpc.unary_unary_rpc_method_handler(wait)


def _spec(name: str, **kwargs: Any) -> ListenerSpec:
    slow = kwargs.pop("slow", None) or _Slow()
    return ListenerSpec(
        name=name,
        # Below the ephemeral range: no outgoing connection takes it while it is closed.
        listen=f"127.0.0.1:{free_port()}",
        add_services=lambda server: server.add_generic_rpc_handlers((slow,)),
        health_names=(f"ruta.test.{name}",),
        **kwargs,
    )


@pytest.fixture
async def listeners() -> AsyncIterator[Listeners]:
    group = Listeners(grace_seconds=5.0)
    try:
        yield group
    finally:
        await group.stop(None)


def _metric(group: Listeners, name: str, listener: str) -> float | None:
    value: float | None = group.registry.get_sample_value(name, {"listener": listener})
    return value


def _restarts_are(group: Listeners, listener: str, count: int) -> bool:
    return _metric(group, "ruta_listener_restarts_total", listener) == count


async def _until(condition: Callable[[], Awaitable[bool] | bool]) -> None:
    """Wait (bounded) until ``condition`` holds."""

    async def poll() -> None:
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), _WAIT)


async def _health(listener: Listener, service: str = "") -> int:
    async with grpc.aio.insecure_channel(listener.address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=_WAIT, wait_for_ready=True
        )
        status: int = response.status
        return status


async def _crash(listener: Listener, **kwargs: Any) -> None:
    await asyncio.to_thread(send_invalid_path, listener.address, **kwargs)


async def test_listener_serves_again_after_its_loop_ends(listeners: Listeners) -> None:
    listener = listeners.bind(_spec("consumer"))
    await listeners.start()
    assert await _health(listener) == _SERVING
    address = listener.address

    await _crash(listener)
    await _until(lambda: _metric(listeners, "ruta_listener_restarts_total", "consumer") == 1)

    assert await _health(listener) == _SERVING
    assert await _health(listener, "ruta.test.consumer") == _SERVING
    assert listener.address == address  # same port, even though it was bound as port 0
    assert _metric(listeners, "ruta_listener_up", "consumer") == 1
    assert not listeners.failed.is_set()


async def test_every_crash_is_counted(listeners: Listeners) -> None:
    listener = listeners.bind(_spec("adapter"))
    await listeners.start()
    for count in (1, 2, 3):
        await _crash(listener)
        await _until(functools.partial(_restarts_are, listeners, "adapter", count))
        assert await _health(listener) == _SERVING


async def test_health_reports_not_serving_while_a_listener_is_down() -> None:
    listeners = Listeners(restart_delay_seconds=_WAIT * 3)  # stays down for the whole test
    try:
        down = listeners.bind(_spec("transport"))
        other = listeners.bind(_spec("audit"))
        await listeners.start()
        assert await _health(other) == _SERVING

        await _crash(down)
        await _until(lambda: _metric(listeners, "ruta_listener_up", "transport") == 0)

        # The process as a whole is not serving; the other listener's own service still is.
        assert await _health(other) == _NOT_SERVING
        assert await _health(other, "ruta.test.audit") == _SERVING
        assert _metric(listeners, "ruta_listener_restarts_total", "transport") == 1
    finally:
        await listeners.stop(None)  # cancels the pending restart


async def test_calls_in_flight_on_the_dead_server_finish(listeners: Listeners) -> None:
    slow = _Slow()
    listener = listeners.bind(_spec("admin", slow=slow))
    await listeners.start()
    async with grpc.aio.insecure_channel(listener.address) as channel:
        wait: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(_SLOW)
        in_flight = asyncio.ensure_future(wait(b"", timeout=_WAIT))
        await asyncio.sleep(0.2)  # let the call reach the handler

        await _crash(listener)
        await _until(lambda: _metric(listeners, "ruta_listener_restarts_total", "admin") == 1)
        assert await _health(listener) == _SERVING

        slow.release.set()
        assert await in_flight == b"done"


async def test_mutual_tls_listener_recovers(listeners: Listeners, tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    server = pki.auth("LAC/GOV/POP/ss1")
    client = pki.subsystem("LAC/GOV/POP/registry")
    listener = listeners.bind(
        _spec(
            "transport",
            credentials=lambda: server_credentials(
                server.key_path, server.cert_path, pki.trust_path
            ),
        )
    )
    await listeners.start()

    await _crash(
        listener, tls=client_tls(ca=pki.trust_path, cert=client.cert_path, key=client.key_path)
    )
    await _until(lambda: _metric(listeners, "ruta_listener_restarts_total", "transport") == 1)

    creds = channel_credentials(client.key_path, client.cert_path, pki.trust_path)
    target = f"localhost:{listener.port}"
    async with grpc.aio.secure_channel(target, creds) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=_WAIT, wait_for_ready=True
        )
    assert response.status == _SERVING


async def test_a_listener_that_cannot_be_rebuilt_fails_the_process() -> None:
    builds = 0
    slow = _Slow()

    def add_services(server: grpc.aio.Server) -> None:
        nonlocal builds
        builds += 1
        if builds > 1:
            raise RuntimeError("cannot be rebuilt")
        server.add_generic_rpc_handlers((slow,))

    listeners = Listeners(restart_attempts=2)
    try:
        listener = listeners.bind(
            ListenerSpec(name="consumer", listen="127.0.0.1:0", add_services=add_services)
        )
        await listeners.start()
        await _crash(listener)
        await asyncio.wait_for(listeners.failed.wait(), _WAIT)
        assert not await listeners.serve_until(asyncio.Event())  # the process exits with 3
        assert builds == 3
        assert _metric(listeners, "ruta_listener_up", "consumer") == 0
    finally:
        await listeners.stop(None)


async def test_an_address_in_use_is_refused(listeners: Listeners) -> None:
    first = listeners.bind(_spec("consumer", options=(("grpc.so_reuseport", 0),)))
    with pytest.raises(ListenerError, match=r"cannot listen on 127\.0\.0\.1:\d+ for the audit"):
        listeners.bind(
            ListenerSpec(
                name="audit",
                listen=first.address,
                add_services=lambda server: None,
                options=(("grpc.so_reuseport", 0),),
            )
        )
