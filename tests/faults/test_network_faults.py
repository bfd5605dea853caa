"""Network faults between hosts: the consumer's and the provider's security servers run in network
namespaces of their own, joined by a veth pair on private addresses of the test's own.

- A partition (the link cut, packets dropped silently): every call ends within its deadline with
  the consumer's fault, none hangs; when the link heals, the frames stream between the servers
  recovers and calls are answered again, with no restart.
- Delay and loss (``tc netem``): calls are answered or refused with a fault, within their
  deadlines. Skipped where the kernel offers no netem.
- The same through a userspace link shaper on the provider's side (each chunk delayed, some held
  back for seconds as a lost segment is), which runs wherever namespaces can be made.

Both logs are read back afterwards: every call a caller saw answered is in both.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import grpc
import grpc.aio
import pytest

from tests.conftest import free_port
from tests.faults.netns import Forwarders, Link, forwarders, link, netem_problem, netns_problem
from tests.faults.support import (
    Outcome,
    assert_acknowledged_in_both,
    call_once,
    read_log,
    reported,
    run_load,
)
from tests.integration.security_server.bed import POP, SOC, Bed, bed, fault_of

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

#: The callers' deadline while the link is cut or shaped.
DEADLINE: Final = 3.0
#: What a caller sees when the link fails: the consumer's fault, or, when the caller's deadline
#: passes before the consumer's own refusal reaches it (both expire together), the caller's
#: DEADLINE_EXCEEDED without a fault.
LINK_FAULTS: Final = {"server.consumer.network_error", "grpc.deadline_exceeded"}
#: How much later than its deadline a call may end before it counts as hung.
HANG_MARGIN: Final = 15.0


@contextlib.asynccontextmanager
async def _two_hosts(
    tmp_path: Path, *, netem: bool = False, shaping: Path | None = None
) -> AsyncIterator[tuple[Bed, Link]]:
    """The bed with SOC and POP in namespaces of their own; with ``shaping``, POP's transport is
    reached through a userspace link shaper in its namespace that the file controls."""
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespaces cannot be made here: {problem}")
    with link() as net:
        problem = netem_problem(net.consumer_ns, net.consumer_dev) if netem else None
        if problem is not None:
            pytest.skip(problem)
        async with (
            forwarders() as fwd,
            bed(tmp_path, auth_ip_addresses=(net.consumer_ip, net.provider_ip)) as instance,
        ):
            instance.server_hosts = {POP: net.provider_ip, SOC: net.consumer_ip}
            instance.publish()
            await _reach_the_bed(instance, net, fwd)
            consumer_port = free_port()
            data = instance.settings_dict(SOC)
            data["consumer"] = {**data["consumer"], "listen": f"127.0.0.1:{consumer_port}"}
            pop = instance.settings_dict(POP)
            port = instance.transport_ports[POP]
            if shaping is not None:
                pop["transport"] = {"listen": f"127.0.0.1:{port}"}
            await instance.spawn_server(POP, data=pop, prefix=net.exec_prefix(net.provider_ns))
            if shaping is not None:
                await fwd.inside(
                    net.exec_prefix(net.provider_ns),
                    [f"shaped:{net.provider_ip}:{port}=tcp:{port}@{shaping}"],
                )
            await instance.spawn_server(SOC, data=data, prefix=net.exec_prefix(net.consumer_ns))
            # The test's callers reach the consumer port from outside its namespace.
            await fwd.inside(
                net.exec_prefix(net.consumer_ns),
                [f"unix:{fwd.socket('consumer')}=tcp:{consumer_port}"],
            )
            outside = free_port()
            await fwd.here(f"tcp:{outside}=unix:{fwd.socket('consumer')}")
            instance.agencies[SOC].addresses["consumer"] = f"127.0.0.1:{outside}"
            try:
                yield instance, net
            finally:
                with contextlib.suppress(AssertionError):
                    net.heal()
                net.unshape()


async def _reach_the_bed(instance: Bed, net: Link, fwd: Forwarders) -> None:
    """Registry (configuration, witness), OCSP responder and backend, from both namespaces."""
    ocsp_port = int(instance.ocsp.url.rsplit(":", 1)[1].split("/")[0])
    backend_port = int(instance.backend_address.rsplit(":", 1)[1])
    shared = [instance.registry_port, ocsp_port]
    for port in [*shared, backend_port]:
        await fwd.here(f"unix:{fwd.socket(str(port))}=tcp:{port}")
    for namespace, ports in (
        (net.consumer_ns, shared),
        (net.provider_ns, [*shared, backend_port]),
    ):
        await fwd.inside(
            net.exec_prefix(namespace), [f"tcp:{p}=unix:{fwd.socket(str(p))}" for p in ports]
        )


async def _bounded_calls(
    channel: grpc.aio.Channel, count: int, outcome: Outcome
) -> collections.Counter[str]:
    """``count`` concurrent calls with :data:`DEADLINE`; each must end (answered or refused)
    before its deadline plus :data:`HANG_MARGIN`. Returns the refusals by fault."""
    refusals: collections.Counter[str] = collections.Counter()

    async def one() -> None:
        message_id = str(uuid.uuid4())
        try:
            await asyncio.wait_for(
                call_once(channel, message_id, deadline=DEADLINE), DEADLINE + HANG_MARGIN
            )
        except grpc.aio.AioRpcError as error:
            refusals[fault_of(error) or f"grpc.{error.code().name.lower()}"] += 1
            return
        except TimeoutError:
            raise AssertionError("a call hung past its deadline") from None
        outcome.acknowledged.append(message_id)

    await asyncio.gather(*(one() for _ in range(count)))
    return refusals


async def _answered_again(channel: grpc.aio.Channel, outcome: Outcome) -> None:
    """Calls are answered again within a bounded time (the links recovered)."""
    for _ in range(60):
        before = len(outcome.acknowledged)
        await _bounded_calls(channel, 1, outcome)
        if len(outcome.acknowledged) > before:
            return
        await asyncio.sleep(0.5)
    raise AssertionError("calls were not answered again after the link healed")


async def _check_logs(instance: Bed, outcome: Outcome) -> None:
    await instance.stop_process(SOC)
    await instance.stop_process(POP)
    consumer = await read_log(instance, SOC)
    provider = await read_log(instance, POP)
    assert_acknowledged_in_both(outcome.acknowledged, consumer, provider)


@pytest.mark.timeout(240)
async def test_partition_faults_within_deadline_then_streams_recover(tmp_path: Path) -> None:
    outcome = Outcome()
    async with _two_hosts(tmp_path) as (instance, net):
        with reported(outcome):
            async with instance.consumer_channel(SOC) as channel:
                await run_load(channel, calls=20, concurrency=4, outcome=outcome)
                assert len(outcome.acknowledged) == 20, outcome.faults
                net.partition()
                refusals = await _bounded_calls(channel, 8, outcome)
                assert sum(refusals.values()) == 8
                assert set(refusals) <= LINK_FAULTS, dict(refusals)
                net.heal()
                await _answered_again(channel, outcome)
                before = len(outcome.acknowledged)
                await run_load(channel, calls=20, concurrency=4, outcome=outcome)
                assert len(outcome.acknowledged) == before + 20, outcome.faults
            await _check_logs(instance, outcome)


@pytest.mark.timeout(240)
async def test_delay_and_loss_answer_or_fault_within_deadline(tmp_path: Path) -> None:
    outcome = Outcome()
    async with _two_hosts(tmp_path, netem=True) as (instance, net):
        with reported(outcome):
            async with instance.consumer_channel(SOC) as channel:
                net.shape("delay", "200ms", "50ms")
                refusals = await _bounded_calls(channel, 16, outcome)
                assert not refusals, dict(refusals)  # slow, but within the deadline
                net.shape("loss", "20%")
                refusals = await _bounded_calls(channel, 16, outcome)
                assert set(refusals) <= LINK_FAULTS, dict(refusals)
                net.unshape()
                await _answered_again(channel, outcome)
            await _check_logs(instance, outcome)


@pytest.mark.timeout(240)
async def test_slow_and_stalling_link_answer_or_fault_within_deadline(tmp_path: Path) -> None:
    outcome = Outcome()
    control = tmp_path / "shaping"
    control.write_text("0 0 0")
    async with _two_hosts(tmp_path / "bed", shaping=control) as (instance, _):
        with reported(outcome):
            async with instance.consumer_channel(SOC) as channel:
                await run_load(channel, calls=20, concurrency=4, outcome=outcome)
                assert len(outcome.acknowledged) == 20, outcome.faults
                control.write_text("0.02 0 0")  # every chunk 20 ms late, each way
                refusals = await _bounded_calls(channel, 16, outcome)
                assert not refusals, dict(refusals)  # slow, but within the deadline
                control.write_text("0.005 0.2 2.5")  # a fifth of chunks held back 2.5 s
                refusals = await _bounded_calls(channel, 16, outcome)
                assert set(refusals) <= LINK_FAULTS, dict(refusals)
                control.write_text("0 0 0")
                await _answered_again(channel, outcome)
                before = len(outcome.acknowledged)
                await run_load(channel, calls=20, concurrency=4, outcome=outcome)
                assert len(outcome.acknowledged) == before + 20, outcome.faults
            await _check_logs(instance, outcome)
