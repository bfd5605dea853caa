"""Issue 12, finding 1, against real ``ruta ss serve`` processes: a request whose ``:path`` is not
UTF-8 ends grpcio's aio server loop of the consumer, transport or audit port; each port is seen
down, counted in ``ruta_listener_restarts_total`` and restarted, and a valid call succeeds again
(docs/adr/0020-listener-watchdog.md).

Every port a test crashes is claimed below the kernel's ephemeral range (``free_port``): a
crashed port closes until the watchdog binds it again, and a port-0 port lies in the ephemeral
range, where any outgoing connection on the machine may take it meanwhile (under load, one did:
the rebind failed for as long as that connection lived, the process exited with status 3 and
its metrics port refused the test's next look)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from ruta.v1 import audit_pb2, audit_pb2_grpc
from sandbox.examples.population import decode_person, encode_get_person
from tests.conftest import free_port
from tests.integration.security_server.bed import (
    POP,
    SOC,
    Agency,
    Bed,
    bed,
    call_metadata,
    get_person,
    provider_channel,
)
from tests.listener_attacks import client_tls, crash_listener

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Bound on a call once the listener is back (it waits for the channel to reconnect).
_CALL_SECONDS = 20.0


async def _exchange(instance: Bed) -> None:
    """One exchange through SOC's consumer port and POP's transport port."""
    async with instance.consumer_channel(SOC) as channel:
        raw = await get_person(channel)(
            encode_get_person("38001010001"),
            metadata=call_metadata(),
            timeout=_CALL_SECONDS,
            wait_for_ready=True,
        )
    assert decode_person(raw)["given_name"] == "Ana"


async def _audit_query(instance: Bed) -> int:
    auditor = instance.pki.roles(f"auditor:{POP.member}")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=instance.pki.trust_path.read_bytes(),
        private_key=auditor.key_path.read_bytes(),
        certificate_chain=auditor.cert_path.read_bytes(),
    )
    address = instance.agencies[POP].addresses["audit"]
    async with grpc.aio.secure_channel(address, credentials) as channel:
        response = await audit_pb2_grpc.AuditStub(channel).Query(
            audit_pb2.QueryRequest(), timeout=_CALL_SECONDS, wait_for_ready=True
        )
    return len(response.records)


async def _transport_health(instance: Bed) -> int:
    """Health of POP's transport service, over a new connection (a peer's open stream may still
    run on the server whose loop ended, within its grace)."""
    async with provider_channel(instance) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="ruta.v1.Transport"),
            timeout=_CALL_SECONDS,
            wait_for_ready=True,
        )
    status: int = response.status
    return status


def _settings(instance: Bed, server: Any, *, audit: bool = False) -> dict[str, Any]:
    """``server``'s settings with every port on a claimed port below the ephemeral range (the
    transport port is already; see the module docstring)."""
    data = instance.settings_dict(server)
    data["consumer"] = {**data["consumer"], "listen": f"127.0.0.1:{free_port()}"}
    data["metrics"] = {**data["metrics"], "listen": f"127.0.0.1:{free_port()}"}
    if audit:
        data["audit"] = {"listen": f"127.0.0.1:{free_port()}"}
    return data


async def _crash(agency: Agency, listener: str, tls: ssl.SSLContext) -> None:
    """:func:`crash_listener` on ``agency``'s ``listener`` port; a failure says whether the
    process is still running and how its log ends."""
    try:
        await crash_listener(
            agency.addresses[listener],
            metrics_url=agency.addresses["metrics"],
            listener=listener,
            tls=tls,
        )
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        status = agency.process.poll() if agency.process is not None else None
        log = (agency.directory / "stderr.log").read_text(errors="replace")[-3000:]
        raise AssertionError(
            f"the {listener} port was not seen repaired ({exc!r}); the process "
            f"{'runs' if status is None else f'exited with status {status}'}; its log ends:\n{log}"
        ) from exc


async def test_every_port_of_a_security_server_survives_the_invalid_path(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        pop = await instance.spawn_server(POP, data=_settings(instance, POP, audit=True))
        soc = await instance.spawn_server(SOC, data=_settings(instance, SOC))
        await _exchange(instance)
        pki = instance.pki

        # The consumer port: a backend of SOC with its client certificate.
        backend = soc.backend_cert
        await _crash(
            soc,
            "consumer",
            client_tls(ca=pki.trust_path, cert=backend.cert_path, key=backend.key_path),
        )
        await _exchange(instance)

        # The transport port: another security server with its authentication certificate.
        peer = soc.auth
        await _crash(
            pop, "transport", client_tls(ca=pki.trust_path, cert=peer.cert_path, key=peer.key_path)
        )
        assert await _transport_health(instance) == health_pb2.HealthCheckResponse.SERVING
        await _exchange(instance)

        # The audit port: any certificate the TLS layer accepts is enough.
        await _crash(
            pop, "audit", client_tls(ca=pki.trust_path, cert=peer.cert_path, key=peer.key_path)
        )
        assert await _audit_query(instance) > 0

        # Both processes stayed up: the ports were repaired in place.
        for agency in (pop, soc):
            assert agency.process is not None
            assert agency.process.poll() is None
