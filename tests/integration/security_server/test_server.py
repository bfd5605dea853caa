"""The running server's other faces: ready.json, health on every gRPC port, metrics, and the
plaintext-loopback mode of the consumer port."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from sandbox.examples.population import decode_person, encode_get_person
from security_server.server import READY_FILE, ServerStartError
from tests.integration.security_server.bed import (
    BENEFITS,
    POP,
    SOC,
    bed,
    call_metadata,
    fault_of,
    get_person,
)

pytestmark = pytest.mark.integration


async def _health(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    status: int = reply.status
    return status


async def test_ready_file_health_and_metrics(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        await instance.start_server(POP)
        app = await instance.start_server(SOC)
        ready = json.loads((instance.agencies[SOC].data_dir / READY_FILE).read_text())
        assert ready["server_id"] == "DEV/GOV/SOC/ss1"
        assert ready["consumer"] == app.addresses["consumer"]
        async with instance.consumer_channel(SOC) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
            await get_person(channel)(encode_get_person("38001010001"), metadata=call_metadata())
            with pytest.raises(grpc.aio.AioRpcError):
                await get_person(channel)(
                    encode_get_person("1"), metadata=call_metadata(purpose="x")
                )
        pop = instance.agencies[POP]
        credentials = grpc.ssl_channel_credentials(
            root_certificates=instance.pki.trust_path.read_bytes(),
            private_key=pop.auth.key_path.read_bytes(),
            certificate_chain=pop.auth.cert_path.read_bytes(),
        )
        async with grpc.aio.secure_channel(ready["transport"], credentials) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        async with aiohttp.ClientSession() as session, session.get(ready["metrics"]) as reply:
            text = await reply.text()
    assert not (instance.agencies[SOC].data_dir / READY_FILE).exists()
    assert (
        'ruta_exchanges_total{client="DEV/GOV/SOC/benefits",fault="none",method="GetPerson",'
        'role="consumer",service="DEV/GOV/POP/registry/population.v1.PopulationRegister"} 1.0'
    ) in text
    assert 'fault="server.consumer.access_denied"' in text
    assert "ruta_exchange_seconds_bucket" in text
    for gauge in (
        "ruta_log_size ",
        "ruta_checkpoint_cosignature_age_seconds ",
        'ruta_certificate_expires_timestamp_seconds{kind="signing"}',
        'ruta_certificate_expires_timestamp_seconds{kind="auth"}',
        "ruta_globalconf_serial ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
    ):
        assert gauge in text


async def test_plain_loopback_consumer(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        await instance.start_server(POP)
        data = instance.settings_dict(SOC)
        data["consumer"] = {
            "listen": "127.0.0.1:0",
            "allow_plain_loopback": True,
            "plain_loopback_subsystems": [str(BENEFITS)],
        }
        app = await instance.start_server(SOC, data=data)
        async with grpc.aio.insecure_channel(app.addresses["consumer"]) as channel:
            raw = await get_person(channel)(
                encode_get_person("38001010001"), metadata=call_metadata()
            )
            assert decode_person(raw)["given_name"] == "Ana"
            other = call_metadata(BENEFITS.member.subsystem("other"))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await get_person(channel)(encode_get_person("38001010001"), metadata=other)
    assert fault_of(info.value) == "client.permission_denied"


async def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        pop = await instance.start_server(POP)
        data = instance.settings_dict(SOC)
        data["transport"]["listen"] = pop.addresses["transport"]
        with pytest.raises(ServerStartError, match="transport port"):
            await instance.start_server(SOC, data=data)


def test_serve_refuses_a_bad_settings_file(tmp_path: Path) -> None:
    config = tmp_path / "ss.toml"
    config.write_text('server_id = "nope"\n')
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ruta.cli import main; main()",
            "ss",
            "serve",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "client.invalid_config" in result.stderr
    assert "Traceback" not in result.stderr
    assert str(tmp_path) not in result.stderr
