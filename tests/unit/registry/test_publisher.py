"""The registry's publisher: serial and validity stamping, HTTP caching semantics, and the gRPC
GlobalConfService over real mutual TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
import pytest
from aiohttp import web

from registry.publisher import (
    ConfigurationPublisher,
    add_globalconf_servicer,
    globalconf_app,
)
from ruta.faults import FAULT_HEADER, Fault, fault_from_rpc_error
from ruta.globalconf import (
    CONTENT_TYPE,
    InvalidConfigurationError,
    etag_of,
    verify_configuration,
)
from ruta.pki.testing import TestPki
from ruta.pki.tls import channel_credentials, server_credentials
from ruta.v1 import globalconf_pb2, globalconf_pb2_grpc
from tests.unit.ruta.globalconf.support import (
    FakeClock,
    RegistryIdentity,
    registry_identity,
    sample_configuration,
)


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


@pytest.fixture
def identity(pki: TestPki) -> RegistryIdentity:
    return registry_identity(pki)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def publisher(identity: RegistryIdentity, clock: FakeClock) -> ConfigurationPublisher:
    return ConfigurationPublisher(
        signer=identity.signer,
        certificate=identity.certificate,
        validity=timedelta(seconds=300),
        clock=clock,
    )


def test_publish_stamps_serial_and_validity(
    publisher: ConfigurationPublisher, identity: RegistryIdentity, clock: FakeClock
) -> None:
    conf = sample_configuration(now=clock.now - timedelta(days=1), serial=5)
    before = conf.SerializeToString(deterministic=True)
    first = publisher.publish(conf)
    assert conf.SerializeToString(deterministic=True) == before  # input untouched
    assert first.serial >= int(clock.now.timestamp() * 1000)
    assert (first.generated_at, first.expires_at) == (clock.now, clock.now + timedelta(minutes=5))
    assert first.etag == etag_of(first.signed)
    view = verify_configuration(first.signed, identity.anchor, now=clock.now)
    assert (view.serial, view.generated_at, view.expires_at) == (
        first.serial,
        first.generated_at,
        first.expires_at,
    )
    second = publisher.publish(conf)  # same instant: the serial still grows
    assert second.serial == first.serial + 1
    assert publisher.current is second


def test_serial_floor_and_requested_serial_are_honoured(
    identity: RegistryIdentity, clock: FakeClock
) -> None:
    floor = 10**15
    publisher = ConfigurationPublisher(
        signer=identity.signer, certificate=identity.certificate, clock=clock, serial_floor=floor
    )
    assert publisher.publish(sample_configuration(now=clock.now)).serial == floor + 1
    wanted = floor + 100
    assert publisher.publish(sample_configuration(now=clock.now, serial=wanted)).serial == wanted


def test_refused_document_leaves_the_served_one(
    publisher: ConfigurationPublisher, clock: FakeClock
) -> None:
    good = publisher.publish(sample_configuration(now=clock.now))
    bad = sample_configuration(now=clock.now)
    bad.contracts[0].consumer.subsystem_code = "ghost"
    with pytest.raises(InvalidConfigurationError):
        publisher.publish(bad)
    assert publisher.current is good


async def test_periodic_republication(publisher: ConfigurationPublisher, clock: FakeClock) -> None:
    async def build() -> globalconf_pb2.GlobalConfiguration:
        return sample_configuration(now=clock.now)

    await publisher.start(build, interval=timedelta(seconds=0.02))
    try:
        first = publisher.current
        assert first is not None
        async with asyncio.timeout(10):
            while publisher.current is first:  # noqa: ASYNC110 - set by the publisher's task
                await asyncio.sleep(0.01)
    finally:
        await publisher.stop()


# -- HTTP --------------------------------------------------------------------------------------


@pytest.fixture
async def base_url(publisher: ConfigurationPublisher) -> AsyncIterator[str]:
    runner = web.AppRunner(globalconf_app(publisher))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_http_before_first_publication(base_url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/globalconf") as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"]


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        (None, 200),
        ("{etag}", 304),
        ("W/{etag}", 304),
        ('"nope", {etag}', 304),
        ("*", 304),
        ('"nope"', 200),
    ],
)
async def test_http_conditional_get(
    publisher: ConfigurationPublisher,
    clock: FakeClock,
    base_url: str,
    if_none_match: str | None,
    status: int,
) -> None:
    published = publisher.publish(sample_configuration(now=clock.now))
    headers = {"Accept-Encoding": "identity"}
    if if_none_match is not None:
        headers["If-None-Match"] = if_none_match.format(etag=f'"{published.etag}"')
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url}/globalconf", headers=headers) as resp,
    ):
        assert resp.status == status
        assert resp.headers["ETag"] == f'"{published.etag}"'
        assert resp.headers["Cache-Control"] == "no-cache"
        if status == 200:
            assert resp.content_type == CONTENT_TYPE
            assert await resp.read() == published.signed


async def test_http_gzip_variant(
    publisher: ConfigurationPublisher, clock: FakeClock, base_url: str
) -> None:
    published = publisher.publish(sample_configuration(now=clock.now))
    async with aiohttp.ClientSession() as session:
        headers = {"Accept-Encoding": "gzip"}
        async with session.get(f"{base_url}/globalconf", headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Encoding"] == "gzip"
            assert await resp.read() == published.signed  # decoded by the client
            etag = resp.headers["ETag"]
        assert etag == f'"{published.etag}-gzip"'
        headers["If-None-Match"] = etag
        async with session.get(f"{base_url}/globalconf", headers=headers) as resp:
            assert resp.status == 304
        async with session.head(f"{base_url}/globalconf") as resp:
            assert resp.status == 200


# -- gRPC --------------------------------------------------------------------------------------


@pytest.fixture
async def stub(
    publisher: ConfigurationPublisher, pki: TestPki
) -> AsyncIterator[globalconf_pb2_grpc.GlobalConfServiceAsyncStub]:
    registry_tls = pki.auth("LAC/GOV/REG/reg1")
    server_tls = pki.auth("LAC/GOV/POP/ss1")
    server = grpc.aio.server()
    add_globalconf_servicer(server, publisher)
    port = server.add_secure_port(
        "127.0.0.1:0",
        server_credentials(registry_tls.key_path, registry_tls.cert_path, pki.trust_path),
    )
    await server.start()
    creds = channel_credentials(server_tls.key_path, server_tls.cert_path, pki.trust_path)
    try:
        async with grpc.aio.secure_channel(f"localhost:{port}", creds) as channel:
            yield globalconf_pb2_grpc.GlobalConfServiceStub(channel)
    finally:
        await server.stop(None)


async def test_grpc_get(
    publisher: ConfigurationPublisher,
    clock: FakeClock,
    stub: globalconf_pb2_grpc.GlobalConfServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Get(globalconf_pb2.GetGlobalConfRequest())
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    fault, _ = fault_from_rpc_error(refused.value)
    assert fault is Fault.SERVER_REGISTRY_GLOBALCONF_UNAVAILABLE
    assert any(key == FAULT_HEADER for key, _ in refused.value.trailing_metadata() or ())

    published = publisher.publish(sample_configuration(now=clock.now))
    answer = await stub.Get(globalconf_pb2.GetGlobalConfRequest(known_serial=0))
    assert not answer.not_modified
    assert answer.signed.SerializeToString(deterministic=True) == published.signed
    same = await stub.Get(globalconf_pb2.GetGlobalConfRequest(known_serial=published.serial))
    assert same.not_modified
    assert not same.HasField("signed")
