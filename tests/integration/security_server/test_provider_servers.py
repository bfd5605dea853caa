"""A provider member with two security servers: the consumer spreads calls over both in turn,
and when one stops, calls go on through the other (security_server/balance.py).

Real servers in this process (real gRPC, mutual TLS, SQLite logs): POP lists ss1 and ss2, both
serving the population register with the member's signing key; SOC calls it."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from ruta.ids import ServerId
from ruta.v1 import globalconf_pb2
from security_server.checkpointer import LOG_KEY_FILE, load_or_create_log_key, log_verifier
from tests.conftest import free_port
from tests.integration.security_server.bed import (
    PERSON_REQUEST,
    POP,
    REGISTRY_SUBSYSTEM,
    SERVICE,
    SOC,
    Agency,
    Bed,
    call_metadata,
    fault_of,
    get_person,
)

pytestmark = pytest.mark.integration

POP2 = ServerId.parse("DEV/GOV/POP/ss2")
_PROVIDED = re.compile(r'^ruta_exchanges_total\{[^}]*role="provider"[^}]*\} ([0-9.e+]+)$', re.M)


class TwoProviderServers(Bed):
    """The bed with a second server of POP (one member listed once)."""

    async def build(self, **kwargs: Any) -> None:
        await super().build(**kwargs)
        pop = self.agencies[POP]
        auth = self._issue(self.pki.auth(POP2))
        second = Agency(
            POP2, REGISTRY_SUBSYSTEM, auth, pop.signing, pop.backend_cert, self.directory / "pop2"
        )
        second.directory.mkdir(parents=True)
        second.config_path = second.directory / "ss.toml"
        self.agencies[POP2] = second
        self.log_keys[POP2] = load_or_create_log_key(second.data_dir / "keys" / LOG_KEY_FILE)
        self.witness.set_logs(
            {str(s): [log_verifier(str(s), key)] for s, key in self.log_keys.items()}
        )
        self.transport_ports[POP2] = free_port()
        self.publish()

    def configuration(self) -> globalconf_pb2.GlobalConfiguration:
        conf = super().configuration()
        members = {m.SerializeToString(deterministic=True): m for m in conf.members}
        subsystems = {s.SerializeToString(deterministic=True): s for s in conf.subsystems}
        del conf.members[:]
        conf.members.extend(members.values())
        del conf.subsystems[:]
        conf.subsystems.extend(subsystems.values())
        return conf

    def settings_dict(self, server: ServerId, **limits: Any) -> dict[str, Any]:
        data = super().settings_dict(server, **limits)
        if server == POP2:
            data["backends"] = [{"service": str(SERVICE), "address": self.backend_address}]
        return data


def _provided(instance: Bed, server: ServerId) -> int:
    url = instance.agencies[server].addresses["metrics"]
    with urllib.request.urlopen(url, timeout=30) as response:
        text: str = response.read().decode()
    return int(sum(float(count) for count in _PROVIDED.findall(text)))


async def test_calls_spread_over_a_members_servers_and_fail_over(tmp_path: Path) -> None:
    instance = TwoProviderServers(tmp_path)
    try:
        await instance.build()
        for server in (POP, POP2, SOC):
            await instance.start_server(server)
        await instance.wait_for_serial(instance.publish())
        async with instance.consumer_channel(SOC) as channel:
            call = get_person(channel)
            for _ in range(6):
                await call(PERSON_REQUEST, metadata=call_metadata(), timeout=30)
            first = {s: await asyncio.to_thread(_provided, instance, s) for s in (POP, POP2)}
            assert first == {POP: 3, POP2: 3}  # in turn, not always the first listed

            # ss2 stops: sequential calls go on through ss1 (at most the one call that was
            # already on its way to ss2 fails, with a network error, before anything is lost).
            app = instance.agencies[POP2].app
            assert app is not None
            await app.stop()
            instance.agencies[POP2].app = None
            faults = []
            for _ in range(8):
                try:
                    await call(PERSON_REQUEST, metadata=call_metadata(), timeout=30)
                except grpc.aio.AioRpcError as exc:
                    faults.append(fault_of(exc))
            assert faults in ([], ["server.consumer.network_error"])
            failed = len(faults)
            after = await asyncio.to_thread(_provided, instance, POP)
            assert after - first[POP] == 8 - failed
    finally:
        await instance.close()
