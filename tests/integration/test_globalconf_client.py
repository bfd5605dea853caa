"""The global-configuration client against a real registry publisher over real HTTP.

Each test runs ``registry.publisher``'s aiohttp application on a loopback port and a
:class:`GlobalConfClient` against it. Where a test needs a registry that misbehaves (tampered,
oversize), it serves those bytes from a plain aiohttp handler on the same port: that is the
attacker, not a stand-in for Ruta's code. Time is a settable clock shared by both sides.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from registry.publisher import ConfigurationPublisher, globalconf_app
from ruta.faults import Fault
from ruta.globalconf import (
    ConfigurationAnchor,
    ConfigurationSignatureError,
    ConfigurationTooLargeError,
    GlobalConf,
    GlobalConfClient,
    GlobalConfFetchError,
    GlobalConfSettings,
    OutdatedGlobalConfError,
    SerialRegressionError,
)
from ruta.pki.testing import TestPki
from ruta.v1 import globalconf_pb2
from tests.conftest import free_port
from tests.unit.ruta.globalconf.support import (
    PERSON_REGISTRY,
    POP,
    PURPOSE,
    TAX_COLLECTOR,
    FakeClock,
    RegistryIdentity,
    registry_identity,
    sample_configuration,
)

pytestmark = pytest.mark.integration

FAST = GlobalConfSettings(
    fetch_interval_seconds=0.05,
    retry_initial_seconds=0.02,
    retry_max_seconds=0.1,
    fetch_timeout_seconds=5,
)
#: Far above any millisecond clock: a publisher with this floor outranks a default one.
HIGH_SERIAL = 10**15


class Registry:
    """A loopback HTTP listener serving a real publisher, raw bytes, or nothing (down)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.statuses: list[int] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/globalconf"

    async def serve(self, publisher: ConfigurationPublisher) -> None:
        await self._start(globalconf_app(publisher))

    async def serve_raw(self, body: bytes, *, chunked: bool = False, status: int = 200) -> None:
        async def raw(request: web.Request) -> web.StreamResponse:
            if not chunked:
                return web.Response(body=body, status=status)
            response = web.StreamResponse(status=status)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(0, len(body), 8192):
                await response.write(body[i : i + 8192])
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_get("/globalconf", raw)
        await self._start(app)

    async def down(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _start(self, app: web.Application) -> None:
        await self.down()

        @web.middleware
        async def record(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            response = await handler(request)
            self.statuses.append(response.status)
            return response

        app.middlewares.append(record)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._runner = runner


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    reg = Registry()
    try:
        yield reg
    finally:
        await reg.down()


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def identity(pki: TestPki, registry: Registry) -> RegistryIdentity:
    return registry_identity(pki, registry.url)


def _publisher(
    identity: RegistryIdentity, clock: FakeClock, *, serial_floor: int = 0
) -> ConfigurationPublisher:
    return ConfigurationPublisher(
        signer=identity.signer,
        certificate=identity.certificate,
        validity=timedelta(seconds=600),
        clock=clock,
        serial_floor=serial_floor,
    )


@pytest.fixture
def publisher(identity: RegistryIdentity, clock: FakeClock) -> ConfigurationPublisher:
    return _publisher(identity, clock)


@pytest.fixture
async def client(
    identity: RegistryIdentity, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[GlobalConfClient]:
    gc = GlobalConfClient(
        anchor=identity.anchor,
        cache_path=tmp_path / "ss" / "globalconf.bin",
        settings=FAST,
        clock=clock,
    )
    try:
        yield gc
    finally:
        await gc.stop()


async def eventually(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` until it holds (bounded, so a regression fails instead of hanging)."""
    async with asyncio.timeout(15):
        while not predicate():  # noqa: ASYNC110 - polls state set by another task
            await asyncio.sleep(0.01)


def _serial_is(client: GlobalConfClient, serial: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return client.current().serial == serial
        except OutdatedGlobalConfError:
            return False

    return check


def _tampered(signed: bytes) -> bytes:
    envelope = globalconf_pb2.SignedGlobalConfiguration.FromString(signed)
    conf = globalconf_pb2.GlobalConfiguration.FromString(envelope.configuration)
    conf.contracts[0].methods.append("ListPeople")  # widen a contract
    envelope.configuration = conf.SerializeToString(deterministic=True)
    return envelope.SerializeToString()


async def test_fetches_verifies_and_follows_new_publications(
    registry: Registry,
    publisher: ConfigurationPublisher,
    client: GlobalConfClient,
    clock: FakeClock,
) -> None:
    first = publisher.publish(sample_configuration(now=clock()))
    await registry.serve(publisher)
    seen: list[GlobalConf] = []
    client.on_update(seen.append)
    await client.start()
    view = client.current()
    assert view.serial == first.serial
    assert view.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, clock()) is not None
    assert [v.serial for v in seen] == [first.serial]

    await eventually(lambda: 304 in registry.statuses)  # unchanged: conditional GET
    clock.advance(1)
    second = publisher.publish(sample_configuration(now=clock(), member_name="Civil Registry"))
    await eventually(_serial_is(client, second.serial))
    member = client.current().member(POP)
    assert member is not None
    assert member.name == "Civil Registry"
    assert [v.serial for v in seen] == [first.serial, second.serial]
    assert client.last_contact is not None


async def test_tampered_document_is_refused_and_the_held_one_kept(
    registry: Registry,
    publisher: ConfigurationPublisher,
    client: GlobalConfClient,
    clock: FakeClock,
) -> None:
    first = publisher.publish(sample_configuration(now=clock()))
    await registry.serve(publisher)
    await client.start()
    clock.advance(1)
    second = publisher.publish(sample_configuration(now=clock()))
    await registry.serve_raw(_tampered(second.signed))
    with pytest.raises(ConfigurationSignatureError):
        await client.refresh()
    assert client.current().serial == first.serial
    contract = client.current().contracts[0]
    assert contract.methods == frozenset({"GetPerson"})


async def test_wrong_signer_is_refused(
    registry: Registry,
    publisher: ConfigurationPublisher,
    client: GlobalConfClient,
    clock: FakeClock,
    pki: TestPki,
) -> None:
    first = publisher.publish(sample_configuration(now=clock()))
    await registry.serve(publisher)
    await client.start()
    impostor = _publisher(registry_identity(pki, registry.url, code="EVIL"), clock)
    clock.advance(1)
    impostor.publish(sample_configuration(now=clock()))
    await registry.serve(impostor)
    with pytest.raises(ConfigurationSignatureError, match="anchor does not list"):
        await client.refresh()
    assert client.current().serial == first.serial


async def test_older_serial_is_refused(
    registry: Registry,
    identity: RegistryIdentity,
    client: GlobalConfClient,
    clock: FakeClock,
) -> None:
    ahead = _publisher(identity, clock, serial_floor=HIGH_SERIAL)
    first = ahead.publish(sample_configuration(now=clock()))
    await registry.serve(ahead)
    await client.start()
    behind = _publisher(identity, clock)
    clock.advance(1)
    older = behind.publish(sample_configuration(now=clock()))
    assert older.serial < first.serial
    await registry.serve(behind)
    with pytest.raises(SerialRegressionError, match="older"):
        await client.refresh()
    assert client.current().serial == first.serial


async def test_same_serial_with_other_content_is_refused(
    registry: Registry,
    identity: RegistryIdentity,
    client: GlobalConfClient,
    clock: FakeClock,
) -> None:
    node_a = _publisher(identity, clock, serial_floor=HIGH_SERIAL)
    node_b = _publisher(identity, clock, serial_floor=HIGH_SERIAL)
    first = node_a.publish(sample_configuration(now=clock()))
    await registry.serve(node_a)
    await client.start()

    # The same content signed again by another node (ECDSA: other bytes) is not news.
    again = node_b.publish(sample_configuration(now=clock()))
    assert (again.serial, again.signed != first.signed) == (first.serial, True)
    await registry.serve(node_b)
    assert await client.refresh() is False

    other = _publisher(identity, clock, serial_floor=HIGH_SERIAL)
    forked = other.publish(sample_configuration(now=clock(), member_name="Forked"))
    assert forked.serial == first.serial
    await registry.serve(other)
    with pytest.raises(SerialRegressionError, match="different content"):
        await client.refresh()
    member = client.current().member(POP)
    assert member is not None
    assert member.name == "Population Registry"


async def test_expired_document_is_refused(
    registry: Registry,
    identity: RegistryIdentity,
    publisher: ConfigurationPublisher,
    client: GlobalConfClient,
    clock: FakeClock,
) -> None:
    first = publisher.publish(sample_configuration(now=clock()))
    await registry.serve(publisher)
    await client.start()
    stale_clock = FakeClock(clock.now - timedelta(hours=1))
    stale = _publisher(identity, stale_clock, serial_floor=HIGH_SERIAL)
    stale.publish(sample_configuration(now=stale_clock()))
    await registry.serve(stale)
    with pytest.raises(OutdatedGlobalConfError, match="expired"):
        await client.refresh()
    assert client.current().serial == first.serial


async def test_registry_down_serves_until_expiry_then_fails_closed_then_recovers(
    registry: Registry,
    publisher: ConfigurationPublisher,
    client: GlobalConfClient,
    clock: FakeClock,
) -> None:
    first = publisher.publish(sample_configuration(now=clock()))
    await registry.serve(publisher)
    await client.start()
    await registry.down()

    with pytest.raises(GlobalConfFetchError) as fetch:
        await client.refresh()
    assert fetch.value.fault is Fault.SERVER_CONSUMER_NETWORK_ERROR
    clock.advance(599)
    assert client.current().serial == first.serial  # still within its validity
    clock.advance(1)
    with pytest.raises(OutdatedGlobalConfError) as outdated:
        client.current()
    assert outdated.value.fault is Fault.SERVER_CONSUMER_OUTDATED_GLOBALCONF
    assert "expired" in outdated.value.message
    assert client.held is not None  # still known, no longer usable

    second = publisher.publish(sample_configuration(now=clock()))
    await registry.serve(publisher)
    await eventually(_serial_is(client, second.serial))  # the background loop recovers


async def test_restart_loads_the_saved_copy_and_keeps_refusing_rollback(
    registry: Registry,
    identity: RegistryIdentity,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    cache = tmp_path / "ss" / "globalconf.bin"
    ahead = _publisher(identity, clock, serial_floor=HIGH_SERIAL)
    first = ahead.publish(sample_configuration(now=clock()))
    await registry.serve(ahead)
    async with GlobalConfClient(
        anchor=identity.anchor, cache_path=cache, settings=FAST, clock=clock
    ) as before:
        assert before.current().serial == first.serial
    assert cache.read_bytes() == first.signed
    assert sorted(p.name for p in cache.parent.iterdir()) == ["globalconf.bin"]  # no temp files
    await registry.down()

    clock.advance(60)
    async with GlobalConfClient(
        anchor=identity.anchor, cache_path=cache, settings=FAST, clock=clock
    ) as after:
        assert after.current().serial == first.serial  # from disk, registry down
        assert after.last_contact is None
        behind = _publisher(identity, clock)
        behind.publish(sample_configuration(now=clock()))
        await registry.serve(behind)
        with pytest.raises(SerialRegressionError):
            await after.refresh()
        assert after.current().serial == first.serial


async def test_damaged_saved_copy_is_ignored(
    registry: Registry,
    publisher: ConfigurationPublisher,
    client: GlobalConfClient,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    published = publisher.publish(sample_configuration(now=clock()))
    cache = tmp_path / "ss" / "globalconf.bin"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(_tampered(published.signed))
    await client.start()  # registry down: nothing usable
    with pytest.raises(OutdatedGlobalConfError, match="no global configuration"):
        client.current()
    await registry.serve(publisher)
    await eventually(_serial_is(client, published.serial))
    assert cache.read_bytes() == published.signed


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversize_document_is_refused(
    registry: Registry,
    identity: RegistryIdentity,
    clock: FakeClock,
    tmp_path: Path,
    chunked: bool,
) -> None:
    settings = FAST.model_copy(update={"max_document_bytes": 64 * 1024})
    await registry.serve_raw(b"\x0a" * (100 * 1024), chunked=chunked)
    gc = GlobalConfClient(
        anchor=identity.anchor, cache_path=tmp_path / "gc.bin", settings=settings, clock=clock
    )
    await gc.start()
    try:
        with pytest.raises(ConfigurationTooLargeError):
            await gc.refresh()
        with pytest.raises(OutdatedGlobalConfError):
            gc.current()
    finally:
        await gc.stop()


async def test_registry_error_status_is_a_fetch_error(
    registry: Registry, client: GlobalConfClient
) -> None:
    await registry.serve_raw(b"boom", status=500)
    await client.start()
    with pytest.raises(GlobalConfFetchError, match="HTTP 500"):
        await client.refresh()


async def test_registry_still_serving_an_expired_document_is_reported(
    registry: Registry,
    publisher: ConfigurationPublisher,
    client: GlobalConfClient,
    clock: FakeClock,
) -> None:
    publisher.publish(sample_configuration(now=clock()))
    await registry.serve(publisher)
    await client.start()
    clock.advance(601)  # the registry's publisher stopped re-signing
    with pytest.raises(OutdatedGlobalConfError, match="still serves"):
        await client.refresh()
    fresh = publisher.publish(sample_configuration(now=clock()))
    await eventually(_serial_is(client, fresh.serial))


async def test_fails_over_between_registry_nodes_each_with_its_own_key(
    registry: Registry, identity: RegistryIdentity, pki: TestPki, clock: FakeClock, tmp_path: Path
) -> None:
    """Two registry nodes sign with their own keys; the anchor lists both URLs and both
    certificates. A node that is down, or serves something refused, is passed over for the next,
    and the node that answered is asked first from then on."""
    second = Registry()
    second_identity = registry_identity(pki, second.url, code="REG2")
    anchor = identity.anchor.with_node(url=second.url, certificate=second_identity.certificate)
    first_node = _publisher(identity, clock)
    second_node = _publisher(second_identity, clock)
    gc = GlobalConfClient(
        anchor=anchor, cache_path=tmp_path / "ss" / "globalconf.bin", settings=FAST, clock=clock
    )
    try:
        first_doc = first_node.publish(sample_configuration(now=clock()))
        await registry.serve_raw(_tampered(first_doc.signed))  # the first node misbehaves
        clock.advance(1)
        second_doc = second_node.publish(sample_configuration(now=clock()))
        await second.serve(second_node)
        await gc.start()
        assert gc.current().serial == second_doc.serial
        assert gc.source_url == second.url
        assert await gc.refresh() is False  # asks the second node first now: not modified
        assert second.statuses[-1] == 304

        # The second node stops; the first is sound again and has published since.
        await second.down()
        await registry.serve(first_node)
        clock.advance(1)
        third_doc = first_node.publish(sample_configuration(now=clock()))
        await eventually(_serial_is(gc, third_doc.serial))
        assert gc.source_url == registry.url

        # Every node down: the error of the node asked first, the held document kept.
        await registry.down()
        with pytest.raises(GlobalConfFetchError):
            await gc.refresh()
        assert gc.current().serial == third_doc.serial
    finally:
        await gc.stop()
        await second.down()


async def test_a_document_signed_by_a_key_the_anchor_does_not_list_is_refused_at_every_node(
    registry: Registry, identity: RegistryIdentity, pki: TestPki, clock: FakeClock, tmp_path: Path
) -> None:
    second = Registry()
    stranger = registry_identity(pki, second.url, code="REG2")
    # The anchor lists the second URL but only the first node's certificate.
    anchor = ConfigurationAnchor(
        instance=identity.anchor.instance,
        globalconf_url=registry.url,
        fallback_urls=(second.url,),
        certificates=identity.anchor.certificates,
    )
    node = _publisher(stranger, clock)
    node.publish(sample_configuration(now=clock()))
    gc = GlobalConfClient(
        anchor=anchor, cache_path=tmp_path / "ss" / "globalconf.bin", settings=FAST, clock=clock
    )
    try:
        await second.serve(node)
        await gc.start()
        with pytest.raises(GlobalConfFetchError):  # the first node's error: unreachable
            await gc.refresh()
        assert gc.held is None
    finally:
        await gc.stop()
        await second.down()
