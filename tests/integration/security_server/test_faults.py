"""Each refusal of DESIGN.md "Faults", provoked for real through running security servers.

Calls go through a real consumer server where a backend could cause the fault; forged, tampered,
stale and replayed messages come from a test client that speaks directly to the provider's
``Transport.Exchange`` over mTLS with a listed server's authentication certificate and a
hand-made ``SignedMessage``.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from click.testing import CliRunner

from ruta.ids import ServerId, SubsystemId
from sandbox.examples.population import SLOW_NATIONAL_ID, decode_person, encode_get_person
from security_server.refusals import REFUSALS_FILE, read_refusals
from security_server.refusals_cli import refusals
from tests.conftest import free_port
from tests.integration.security_server.bed import (
    INCOME,
    POP,
    SOC,
    TAX,
    TEST_MAX_MESSAGE_BYTES,
    Bed,
    bed,
    call_metadata,
    consumer_refusal,
    fault_of,
    get_person,
    provider_fault,
    send_to_provider,
    signed_request,
)

pytestmark = pytest.mark.integration

PERSON = encode_get_person("38001010001")
BENEFITS_TEXT = "DEV/GOV/SOC/benefits"


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Bed]:
    async with bed(tmp_path) as instance:
        await instance.start_server(POP)
        await instance.start_server(SOC)
        await instance.start_server(TAX)
        yield instance


async def _ok(instance: Bed, metadata: tuple[tuple[str, str], ...] | None = None) -> dict[str, str]:
    async with instance.consumer_channel(SOC) as channel:
        return decode_person(
            await get_person(channel)(PERSON, metadata=metadata or call_metadata())
        )


# --- refused by the consumer server ---------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "fault"),
    [
        ((("ruta-service", "DEV/GOV/POP/registry"),), "client.missing_header"),
        ((("ruta-client", "DEV/GOV/SOC/benefits"),), "client.missing_header"),
        (
            (("ruta-client", "DEV/GOV/SOC"), ("ruta-service", "DEV/GOV/POP/registry")),
            "client.invalid_identifier",
        ),
        (call_metadata(extra=(("ruta-message-id", "nope"),)), "client.invalid_header"),
        (call_metadata(purpose="marketing"), "server.consumer.access_denied"),
    ],
)
async def test_bad_call_metadata(
    running: Bed, metadata: tuple[tuple[str, str], ...], fault: str
) -> None:
    code, got = await consumer_refusal(running, metadata=metadata)
    assert got == fault
    assert code != grpc.StatusCode.OK


async def test_no_contract(running: Bed) -> None:
    code, fault = await consumer_refusal(running, server=TAX, metadata=call_metadata(INCOME))
    assert (code, fault) == (grpc.StatusCode.PERMISSION_DENIED, "server.consumer.access_denied")


async def test_refusals_are_kept_as_operational_records(running: Bed) -> None:
    """Refusals decided before anything is signed are in no message log: the server keeps each
    as an operational record (fault, fault id, status, client, service; never the body), which
    ``ruta ss refusals`` reads (issue 19, item 5)."""
    soc = running.agencies[SOC]
    log_size = soc.app.log.size()  # type: ignore[union-attr]
    trailers = {}
    for metadata in (call_metadata(purpose="marketing"), (("ruta-client", BENEFITS_TEXT),)):
        async with running.consumer_channel(SOC) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await get_person(channel)(PERSON, metadata=metadata)
        found = dict(info.value.trailing_metadata() or ())
        trailers[found["ruta-fault"]] = found["ruta-fault-id"]
    assert soc.app.log.size() == log_size  # type: ignore[union-attr]
    records = {r.fault: r for r in read_refusals(soc.data_dir / REFUSALS_FILE)}
    denied = records["server.consumer.access_denied"]
    assert denied.fault_id == trailers["server.consumer.access_denied"]
    assert (denied.role, denied.status) == ("consumer", "PERMISSION_DENIED")
    assert denied.client == BENEFITS_TEXT
    assert denied.service == "DEV/GOV/POP/registry/population.v1.PopulationRegister"
    assert denied.message_id != "-"
    missing = records["client.missing_header"]
    assert missing.fault_id == trailers["client.missing_header"]
    assert "38001010001" not in (soc.data_dir / REFUSALS_FILE).read_text()

    listed = CliRunner().invoke(
        refusals, ["--config", str(soc.config_path), "--fault", "server.consumer.access_denied"]
    )
    assert listed.exit_code == 0, listed.output
    assert trailers["server.consumer.access_denied"] in listed.output
    assert trailers["client.missing_header"] not in listed.output
    counted = CliRunner().invoke(refusals, ["--config", str(soc.config_path), "--count", "--json"])
    assert counted.exit_code == 0, counted.output
    assert {"role": "consumer", "fault": "client.missing_header", "count": 1} in json.loads(
        counted.output
    )


async def test_revoked_contract_applies_once_the_new_configuration_arrives(running: Bed) -> None:
    assert (await _ok(running))["given_name"] == "Ana"
    running.contract_active = False
    await running.wait_for_serial(running.publish())
    code, fault = await consumer_refusal(running)
    assert (code, fault) == (grpc.StatusCode.PERMISSION_DENIED, "server.consumer.access_denied")


async def test_unknown_service(running: Bed) -> None:
    code, fault = await consumer_refusal(running, path="/other.v1.Other/Get")
    assert (code, fault) == (grpc.StatusCode.NOT_FOUND, "client.unknown_service")


async def test_oversized_message_refused_before_signing(running: Bed) -> None:
    before = running.agencies[SOC].app.log.size()  # type: ignore[union-attr]
    code, fault = await consumer_refusal(running, body=b"\x0a" * (TEST_MAX_MESSAGE_BYTES + 1))
    assert (code, fault) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "client.message_too_large")
    assert running.agencies[SOC].app.log.size() == before  # type: ignore[union-attr]


async def test_backend_certificate_must_name_the_claimed_subsystem(running: Bed) -> None:
    other = SubsystemId.parse("DEV/GOV/SOC/other")
    code, fault = await consumer_refusal(running, as_subsystem=other)
    assert (code, fault) == (grpc.StatusCode.PERMISSION_DENIED, "client.permission_denied")


async def test_configuration_expired_fails_closed(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        await instance.start_server(POP)
        late = datetime.timedelta(days=1)
        await instance.start_server(SOC, clock=lambda: datetime.datetime.now(datetime.UTC) + late)
        code, fault = await consumer_refusal(instance)
    assert (code, fault) == (grpc.StatusCode.UNAVAILABLE, "server.consumer.outdated_globalconf")


async def test_registry_down_but_configuration_still_valid(running: Bed) -> None:
    await running.stop_registry()
    assert (await _ok(running))["national_id"] == "38001010001"


async def test_provider_pinned_by_fingerprint(running: Bed) -> None:
    # The configuration now lists another certificate for POP: the consumer must refuse to talk.
    conf = running.configuration()
    for server in conf.servers:
        if ServerId.from_proto(server.id) == POP:
            server.auth_cert_sha256 = "ab" * 32
    serial = running.publisher.publish(conf).serial
    await running.wait_for_serial(serial)
    code, fault = await consumer_refusal(running)
    assert (code, fault) == (grpc.StatusCode.UNAVAILABLE, "server.consumer.network_error")


# --- refused by the provider server, passed through the consumer unchanged --------------------


async def test_reused_message_id(running: Bed) -> None:
    # Refused by the consumer before signing (a replay reaching the provider is
    # test_replayed_message below).
    metadata = call_metadata(extra=(("ruta-message-id", str(uuid.uuid4())),))
    await _ok(running, metadata)
    code, fault = await consumer_refusal(running, metadata=metadata)
    assert (code, fault) == (grpc.StatusCode.ALREADY_EXISTS, "client.reused_message_id")


async def test_backend_down(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        data = instance.settings_dict(POP)
        data["backends"][0]["address"] = f"127.0.0.1:{free_port()}"
        await instance.start_server(POP, data=data)
        await instance.start_server(SOC)
        code, fault = await consumer_refusal(instance)
    assert (code, fault) == (grpc.StatusCode.UNAVAILABLE, "server.provider.service_failed")


async def test_backend_status_passes_through_without_fault(running: Bed) -> None:
    async with running.consumer_channel(SOC) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await get_person(channel)(encode_get_person("00000000000"), metadata=call_metadata())
    assert (info.value.code(), fault_of(info.value)) == (grpc.StatusCode.NOT_FOUND, None)
    assert info.value.details() == "no person with that national_id"
    trailing = dict(info.value.trailing_metadata() or ())
    assert len(str(trailing["ruta-request-hash"])) == 64
    message_id = str(trailing["ruta-message-id"])
    page = await running.agencies[SOC].app.log.query(message_id=message_id)  # type: ignore[union-attr]
    assert len(page.records) == 2


async def test_client_deadline_propagates(running: Bed) -> None:
    code, _ = await consumer_refusal(
        running, body=encode_get_person(SLOW_NATIONAL_ID), deadline=1.0
    )
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


# --- hand-made messages straight to the provider's transport -----------------------------------


async def test_hand_made_message_is_answered(running: Bed) -> None:
    _, message = signed_request(running)
    response = await send_to_provider(running, message)
    assert decode_person(response.body)["given_name"] == "Ana"


async def test_tampered_header(running: Bed) -> None:
    header, message = signed_request(running)
    header.purpose = "something-else"
    message.header = header.SerializeToString(deterministic=True)
    assert await provider_fault(running, message) == "server.provider.invalid_signature"


async def test_tampered_body(running: Bed) -> None:
    _, message = signed_request(running)
    message.body = encode_get_person("39202020002")
    assert await provider_fault(running, message) == "server.provider.invalid_signature"


async def test_forged_signature_value(running: Bed) -> None:
    _, message = signed_request(running)
    _, other = signed_request(running)
    message.signature.value = other.signature.value
    assert await provider_fault(running, message) == "server.provider.invalid_signature"


async def test_signed_by_another_member(running: Bed) -> None:
    _, message = signed_request(running, signing=running.agencies[TAX].signing)
    assert await provider_fault(running, message) == "server.provider.signer_mismatch"


async def test_signing_certificate_revoked(running: Bed) -> None:
    _, message = signed_request(running, revoked=True)
    assert await provider_fault(running, message) == "server.provider.cert_revoked"


async def test_replayed_message(running: Bed) -> None:
    _, message = signed_request(running)
    await send_to_provider(running, message)
    assert await provider_fault(running, message) == "server.provider.replayed_message"


async def test_replay_refused_after_provider_restart(running: Bed) -> None:
    _, message = signed_request(running)
    await send_to_provider(running, message)
    app = running.agencies[POP].app
    assert app is not None
    await app.stop()
    await running.start_server(POP)
    assert await provider_fault(running, message) == "server.provider.replayed_message"


async def test_stale_message(running: Bed) -> None:
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=10)
    _, message = signed_request(running, created_at=old)
    assert await provider_fault(running, message) == "server.provider.stale_message"


async def test_provider_enforces_the_contract(running: Bed) -> None:
    _, message = signed_request(running, sender=TAX, client=INCOME)
    assert await provider_fault(running, message, peer=TAX) == "server.provider.access_denied"


async def test_sender_must_be_the_calling_server(running: Bed) -> None:
    _, message = signed_request(running)  # names SOC as sender, but TAX's server sends it
    assert await provider_fault(running, message, peer=TAX) == "server.provider.invalid_message"


async def test_provider_refuses_oversized_message(running: Bed) -> None:
    body = b"\x0a" * (TEST_MAX_MESSAGE_BYTES + 1)
    _, message = signed_request(running, body=body)
    assert await provider_fault(running, message) == "server.provider.message_too_large"


async def test_peer_with_revoked_authentication_certificate(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        instance.ocsp.revoked.add(instance.agencies[SOC].auth.certificate.serial_number)
        await instance.start_server(POP)
        await instance.start_server(SOC)
        code, fault = await consumer_refusal(instance)
    assert (code, fault) == (grpc.StatusCode.UNAUTHENTICATED, "server.provider.cert_revoked")


async def test_provider_with_revoked_authentication_certificate(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        instance.ocsp.revoked.add(instance.agencies[POP].auth.certificate.serial_number)
        await instance.start_server(POP)
        await instance.start_server(SOC)
        code, fault = await consumer_refusal(instance)
    assert (code, fault) == (grpc.StatusCode.UNAVAILABLE, "server.consumer.network_error")


@pytest.mark.parametrize(
    ("server", "fault"),
    [(SOC, "server.consumer.witness_unavailable"), (POP, "server.provider.witness_unavailable")],
)
async def test_no_witness_cosignature_within_the_window(
    tmp_path: Path, server: ServerId, fault: str
) -> None:
    # The configuration names no witness, so no cosignature ever comes; a tiny window has passed
    # at once. (With the bed's witness, a cosignature could land just before the check.)
    async with bed(tmp_path) as instance:
        conf = instance.configuration()
        conf.ClearField("witness_url")
        instance.publisher.publish(conf)
        for each in (POP, SOC):
            data = instance.settings_dict(each)
            if each == server:
                data["checkpoints"] = {"cosign_window_seconds": 0.001}
            await instance.start_server(each, data=data)
        code, got = await consumer_refusal(instance)
    assert (code, got) == (grpc.StatusCode.UNAVAILABLE, fault)


async def test_unreachable_provider_server_is_skipped_before_signing(running: Bed) -> None:
    # POP now lists a first server nobody answers at; the consumer must use the next one.
    conf = running.configuration()
    conf.servers.add(
        id=ServerId.parse("DEV/GOV/POP/ss0").to_proto(),
        address=f"127.0.0.1:{free_port()}",
        auth_cert_sha256="cd" * 32,
    )
    await running.wait_for_serial(running.publisher.publish(conf).serial)
    async with running.consumer_channel(SOC) as channel:
        call = get_person(channel)(PERSON, metadata=call_metadata())
        await call
        message_id = str(dict(await call.trailing_metadata() or ())["ruta-message-id"])
    app = running.agencies[SOC].app
    assert app is not None
    assert app.log is not None
    page = await app.log.query(message_id=message_id)
    assert [(r.direction.name, str(r.kind)) for r in page.records] == [
        ("SENT", "request"),
        ("RECEIVED", "response"),
    ]


async def test_provider_without_ocsp_for_its_signing_cert_refuses_before_logging(
    running: Bed,
) -> None:
    del running.ocsp.certificates[running.agencies[POP].signing.certificate.serial_number]
    app = running.agencies[POP].app
    assert app is not None
    assert app.log is not None
    _, message = signed_request(running)
    assert await provider_fault(running, message) == "server.provider.internal_error"
    assert app.log.size() == 0


async def test_server_started_without_any_configuration_fails_closed_then_recovers(
    tmp_path: Path,
) -> None:
    async with bed(tmp_path) as instance:
        await instance.stop_registry()
        # No configuration reachable, none saved: the provider's transport port cannot know the
        # trust anchors yet, the consumer refuses; both recover once the registry answers.
        await instance.start_server(POP)
        await instance.start_server(SOC)
        code, fault = await consumer_refusal(instance)
        assert (code, fault) == (grpc.StatusCode.UNAVAILABLE, "server.consumer.outdated_globalconf")
        await instance.start_registry(instance.registry_port)
        await instance.wait_for_serial(instance.publisher.current.serial)  # type: ignore[union-attr]
        async with instance.consumer_channel(SOC) as channel:
            raw = await get_person(channel)(PERSON, metadata=call_metadata())
        assert decode_person(raw)["given_name"] == "Ana"
