"""The backends in force: replace swaps the map at once and never closes a channel under a call."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from ruta.ids import ServiceId
from security_server import backends
from security_server.backends import BackendChange, BackendChannels, BackendError
from security_server.settings import BackendSettings

POP = "DEV/GOV/POP/registry/population.v1.PopulationRegister"
TAX = "DEV/GOV/POP/registry/tax.v1.Income"


def _backend(service: str, address: str, **tls: object) -> BackendSettings:
    return BackendSettings.model_validate({"service": service, "address": address, **tls})


def _channels(*backends: BackendSettings) -> BackendChannels:
    return BackendChannels(backends, max_message_bytes=1 << 20)


async def test_replace_keeps_unchanged_channels_and_reports_the_change() -> None:
    channels = _channels(_backend(POP, "127.0.0.1:1"), _backend(TAX, "127.0.0.1:2"))
    try:
        pop = channels.get(ServiceId.parse(POP))
        change = channels.replace(
            (_backend(POP, "127.0.0.1:1"), _backend("DEV/GOV/POP/x/a.v1.B", "127.0.0.1:3"))
        )
        assert change == BackendChange(added=("DEV/GOV/POP/x/a.v1.B",), removed=(TAX,))
        assert channels.get(ServiceId.parse(POP)) is pop
        assert channels.get(ServiceId.parse(TAX)) is None
        assert not channels.replace(channels.backends)  # the same map: nothing changed
        change = channels.replace((_backend(POP, "127.0.0.1:4"),))
        assert change.changed == (POP,)
        assert channels.get(ServiceId.parse(POP)) is not pop
    finally:
        await channels.close()


async def test_a_service_asked_about_again_finds_the_map_in_force() -> None:
    """The same service object asked about before and after a replace (the provider hands the
    same remembered objects call after call) finds what the map in force says: a channel
    remembered for it in the old map is not the answer under the new one, nor is an absence."""
    channels = _channels(_backend(POP, "127.0.0.1:1"))
    pop, tax = ServiceId.parse(POP), ServiceId.parse(TAX)
    try:
        first = channels.get(pop)
        assert first is not None
        assert channels.get(pop) is first
        assert channels.get(ServiceId.parse(POP)) is first  # an equal object: the same answer
        assert channels.get(tax) is None
        channels.replace((_backend(TAX, "127.0.0.1:2"),))
        assert channels.get(pop) is None
        assert channels.get(tax) is not None
        channels.replace((_backend(POP, "127.0.0.1:3"), _backend(TAX, "127.0.0.1:2")))
        again = channels.get(pop)
        assert again is not None
        assert again is not first
        assert channels.serves(pop)
    finally:
        await channels.close()


async def test_services_remembered_per_map_are_bounded() -> None:
    """Service objects asked about (found or not) are remembered up to a bound."""
    channels = _channels(_backend(POP, "127.0.0.1:1"))
    try:
        for n in range(backends._MAX_KNOWN_SERVICES + 5):
            assert channels.get(ServiceId.parse(f"DEV/GOV/POP/registry/s{n}.v1.S")) is None
            assert len(channels._current.known) <= backends._MAX_KNOWN_SERVICES
        assert channels.get(ServiceId.parse(POP)) is not None
    finally:
        await channels.close()


async def test_a_call_keeps_its_channel_across_a_replace_until_it_ends() -> None:
    """A call that looked its channel up before the swap but has not started its RPC yet (the
    provider logs the request in between) still finds the channel open."""
    channels = _channels(_backend(POP, "127.0.0.1:1"))
    looked_up = asyncio.Event()
    go_on = asyncio.Event()

    async def call() -> grpc.ChannelConnectivity:
        channel = channels.get(ServiceId.parse(POP))
        assert channel is not None
        looked_up.set()
        await go_on.wait()
        return channel.get_state()

    try:
        task = asyncio.get_running_loop().create_task(call())
        await asyncio.wait_for(looked_up.wait(), timeout=10)
        old = channels.get(ServiceId.parse(POP))  # this test's task holds it too
        channels.replace((_backend(POP, "127.0.0.1:2"),))
        for _ in range(5):
            await asyncio.sleep(0)
        go_on.set()
        assert await asyncio.wait_for(task, timeout=10) is not grpc.ChannelConnectivity.SHUTDOWN
        assert old is not None
        assert old.get_state() is not grpc.ChannelConnectivity.SHUTDOWN
    finally:
        await channels.close()


async def test_a_retired_channel_closes_once_its_calls_have_ended() -> None:
    channels = _channels(_backend(POP, "127.0.0.1:1"))
    holder_started = asyncio.Event()
    finish = asyncio.Event()

    async def holder() -> None:
        channels.get(ServiceId.parse(POP))
        holder_started.set()
        await finish.wait()

    old = channels.services[ServiceId.parse(POP)]
    try:
        task = asyncio.get_running_loop().create_task(holder())
        await asyncio.wait_for(holder_started.wait(), timeout=10)
        channels.replace(())
        await asyncio.sleep(0.05)
        assert old.get_state() is not grpc.ChannelConnectivity.SHUTDOWN
        finish.set()
        await task
        for _ in range(200):
            if old.get_state() is grpc.ChannelConnectivity.SHUTDOWN:
                break
            await asyncio.sleep(0.01)
        assert old.get_state() is grpc.ChannelConnectivity.SHUTDOWN
    finally:
        await channels.close()


async def test_unreadable_tls_file_refuses_the_replace_and_changes_nothing(tmp_path: Path) -> None:
    channels = _channels(_backend(POP, "127.0.0.1:1"))
    try:
        before = channels.get(ServiceId.parse(POP))
        with pytest.raises(BackendError, match=r"its ca file missing\.pem cannot be read"):
            channels.replace(
                (_backend(POP, "backend.example:443", tls=True, ca=tmp_path / "missing.pem"),)
            )
        assert channels.get(ServiceId.parse(POP)) is before
        assert str(tmp_path) not in str(channels.backends)  # still the old map
    finally:
        await channels.close()
