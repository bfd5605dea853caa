"""Every refusal of both proxies, tested where it is decided, over the in-memory twin (twin.py):
no sockets, real signatures, real certificates, real SQLite logs. Each table lists the checks
in the order the proxy runs them; each case breaks exactly one thing and names the fault and
what the refusal says."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from ruta.faults import Fault, retry_after_of, status_of
from ruta.ids import ServerId, SubsystemId
from ruta.pki.testing import Credential
from ruta.v1 import transport_pb2
from security_server.backends import BackendReply
from security_server.calls import Answer, CallInfo, Refused
from security_server.errors import TransportError, WitnessUnavailableError
from security_server.headers import build_request_header, parse_call_metadata, read_header
from tests.unit.security_server.twin import (
    BENEFITS,
    MAX_MESSAGE_BYTES,
    PATH,
    PERSON,
    POP_SS,
    SOC_SS,
    TAX,
    TAX_SS,
    World,
    resign,
    world,
)

#: Breaks one thing in the world and returns the consumer call (path, body, call) to make.
ConsumerCase = Callable[[World], Awaitable[tuple[str, bytes, CallInfo]]]


async def _refused(w: World, path: str, body: bytes, info: CallInfo) -> Refused:
    with pytest.raises(Refused) as caught:
        await w.consumer.exchange(path, body, info)
    return caught.value


async def test_an_exchange_through_the_twin(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        answer = await w.consumer.exchange(PATH, PERSON, w.call_info())
        assert isinstance(answer, Answer)
        assert answer.body == b"ok"
        assert w.consumer_log.size() == 2
        assert w.provider_log.size() == 2


# --- the consumer's own checks, in order -------------------------------------------------------


async def _no_client_header(w: World) -> tuple[str, bytes, CallInfo]:
    info = w.call_info()
    return PATH, PERSON, dataclasses.replace(info, metadata=info.metadata[1:])


async def _no_purpose_header(w: World) -> tuple[str, bytes, CallInfo]:
    info = w.call_info()
    kept = tuple(entry for entry in info.metadata if entry[0] != "ruta-purpose")
    return PATH, PERSON, dataclasses.replace(info, metadata=kept)


async def _empty_purpose_header(w: World) -> tuple[str, bytes, CallInfo]:
    info = w.call_info()
    kept = tuple(e if e[0] != "ruta-purpose" else (e[0], "") for e in info.metadata)
    return PATH, PERSON, dataclasses.replace(info, metadata=kept)


async def _too_large(w: World) -> tuple[str, bytes, CallInfo]:
    return PATH, b"\x0a" * (MAX_MESSAGE_BYTES + 1), w.call_info()


async def _other_members_subsystem(w: World) -> tuple[str, bytes, CallInfo]:
    other = SubsystemId(TAX, "income")
    return PATH, PERSON, w.call_info(client=other, certificate=w.pki.subsystem(other))


async def _no_client_certificate(w: World) -> tuple[str, bytes, CallInfo]:
    return PATH, PERSON, w.call_info(with_certificate=False)


async def _certificate_of_another_subsystem(w: World) -> tuple[str, bytes, CallInfo]:
    other = SubsystemId(SOC_SS.member, "other")
    return PATH, PERSON, w.call_info(certificate=w.pki.subsystem(other))


async def _expired_configuration(w: World) -> tuple[str, bytes, CallInfo]:
    w.configuration.expired = True
    return PATH, PERSON, w.call_info()


async def _unregistered_subsystem(w: World) -> tuple[str, bytes, CallInfo]:
    unlisted = SubsystemId(SOC_SS.member, "unlisted")
    return PATH, PERSON, w.call_info(client=unlisted, certificate=w.pki.subsystem(unlisted))


async def _unknown_service(w: World) -> tuple[str, bytes, CallInfo]:
    return "/other.v1.Other/Get", PERSON, w.call_info()


async def _no_contract(w: World) -> tuple[str, bytes, CallInfo]:
    del w.conf_proto.contracts[:]
    w.republish()
    return PATH, PERSON, w.call_info()


async def _no_cosignature(w: World) -> tuple[str, bytes, CallInfo]:
    w.consumer_gate_error = WitnessUnavailableError("no witness cosignature for 5 h")
    return PATH, PERSON, w.call_info()


async def _reused_message_id(w: World) -> tuple[str, bytes, CallInfo]:
    message_id = str(uuid.uuid4())
    await w.consumer.exchange(PATH, PERSON, w.call_info(message_id=message_id))
    return PATH, PERSON, w.call_info(message_id=message_id)


async def _no_fresh_ocsp_for_own_certificate(w: World) -> tuple[str, bytes, CallInfo]:
    w.ocsp.failing = True
    return PATH, PERSON, w.call_info()


async def _provider_unreachable(w: World) -> tuple[str, bytes, CallInfo]:
    w.connect_failure = TransportError("security server DEV/GOV/POP/ss1 cannot be reached")
    return PATH, PERSON, w.call_info()


async def _link_fails_after_sending(w: World) -> tuple[str, bytes, CallInfo]:
    w.link_failure = TransportError("the link to DEV/GOV/POP/ss1 failed")
    return PATH, PERSON, w.call_info()


async def _provider_does_not_answer_in_time(w: World) -> tuple[str, bytes, CallInfo]:
    w.link_failure = TimeoutError()
    return PATH, PERSON, w.call_info()


async def _log_cannot_store(w: World) -> tuple[str, bytes, CallInfo]:
    await w.consumer_log.close()
    return PATH, PERSON, w.call_info()


CONSUMER_CHECKS: list[tuple[ConsumerCase, Fault, str]] = [
    (_no_client_header, Fault.CLIENT_MISSING_HEADER, "ruta-client"),
    (_no_purpose_header, Fault.CLIENT_MISSING_HEADER, "ruta-purpose is required"),
    (_empty_purpose_header, Fault.CLIENT_MISSING_HEADER, "ruta-purpose is required"),
    (_too_large, Fault.CLIENT_MESSAGE_TOO_LARGE, "the limit is"),
    (_other_members_subsystem, Fault.CLIENT_PERMISSION_DENIED, "only for subsystems of"),
    (_no_client_certificate, Fault.CLIENT_UNAUTHENTICATED, "no client certificate"),
    (_certificate_of_another_subsystem, Fault.CLIENT_PERMISSION_DENIED, "names"),
    (_expired_configuration, Fault.SERVER_CONSUMER_OUTDATED_GLOBALCONF, "expired"),
    (_unregistered_subsystem, Fault.CLIENT_PERMISSION_DENIED, "not registered"),
    (_unknown_service, Fault.CLIENT_UNKNOWN_SERVICE, "not in the global configuration"),
    (_no_contract, Fault.SERVER_CONSUMER_ACCESS_DENIED, "no active contract"),
    (_no_cosignature, Fault.SERVER_CONSUMER_WITNESS_UNAVAILABLE, "cosignature"),
    (_reused_message_id, Fault.CLIENT_REUSED_MESSAGE_ID, "already used"),
    (_no_fresh_ocsp_for_own_certificate, Fault.SERVER_CONSUMER_INTERNAL_ERROR, "OCSP"),
    (_provider_unreachable, Fault.SERVER_CONSUMER_NETWORK_ERROR, "cannot be reached"),
    (_link_fails_after_sending, Fault.SERVER_CONSUMER_NETWORK_ERROR, "failed"),
    (_provider_does_not_answer_in_time, Fault.SERVER_CONSUMER_NETWORK_ERROR, "deadline"),
    (_log_cannot_store, Fault.SERVER_CONSUMER_LOGGING_FAILED, "message log"),
]


@pytest.mark.parametrize(
    ("case", "fault", "says"),
    CONSUMER_CHECKS,
    ids=[c[0].__name__.strip("_") for c in CONSUMER_CHECKS],
)
async def test_consumer_refusals(
    tmp_path: Path, case: ConsumerCase, fault: Fault, says: str
) -> None:
    async with world(tmp_path) as w:
        path, body, info = await case(w)
        refused = await _refused(w, path, body, info)
    assert refused.fault == fault
    assert says in refused.details


# --- a provider that lies -----------------------------------------------------------------------


def _header_of(message: transport_pb2.SignedMessage) -> transport_pb2.MessageHeader:
    return read_header(message.header).header


def _lie(
    change: Callable[[World, transport_pb2.MessageHeader], None],
) -> Callable[[World], Callable[[transport_pb2.SignedMessage], transport_pb2.SignedMessage]]:
    """A provider that changes its response header as ``change`` says and signs it again."""

    def tamper_in(w: World) -> Callable[[transport_pb2.SignedMessage], transport_pb2.SignedMessage]:
        def tamper(response: transport_pb2.SignedMessage) -> transport_pb2.SignedMessage:
            header = _header_of(response)
            change(w, header)
            return resign(w, response, header)

        return tamper

    return tamper_in


def _signed_by(
    credential: Callable[[World], object],
) -> Callable[[World], Callable[[transport_pb2.SignedMessage], transport_pb2.SignedMessage]]:
    def tamper_in(w: World) -> Callable[[transport_pb2.SignedMessage], transport_pb2.SignedMessage]:
        cred = credential(w)

        def tamper(response: transport_pb2.SignedMessage) -> transport_pb2.SignedMessage:
            return resign(w, response, _header_of(response), signer=cred)  # type: ignore[arg-type]

        return tamper

    return tamper_in


def _wrong_request_hash(w: World, header: transport_pb2.MessageHeader) -> None:
    header.request_hash = bytes(32)


def _wrong_message_id(w: World, header: transport_pb2.MessageHeader) -> None:
    header.message_id = str(uuid.uuid4())


def _wrong_kind(w: World, header: transport_pb2.MessageHeader) -> None:
    header.kind = transport_pb2.MESSAGE_KIND_REQUEST


def _another_sender(w: World, header: transport_pb2.MessageHeader) -> None:
    header.sender.CopyFrom(TAX_SS.to_proto())


def _another_service(w: World, header: transport_pb2.MessageHeader) -> None:
    header.service.service_name = "other.v1.Other"


def _body_not_matching(
    w: World,
) -> Callable[[transport_pb2.SignedMessage], transport_pb2.SignedMessage]:
    def tamper(response: transport_pb2.SignedMessage) -> transport_pb2.SignedMessage:
        return transport_pb2.SignedMessage(
            header=response.header, body=response.body + b"!", signature=response.signature
        )

    return tamper


def _header_changed_after_signing(
    w: World,
) -> Callable[[transport_pb2.SignedMessage], transport_pb2.SignedMessage]:
    def tamper(response: transport_pb2.SignedMessage) -> transport_pb2.SignedMessage:
        header = _header_of(response)
        header.status_code = 5
        return transport_pb2.SignedMessage(
            header=header.SerializeToString(deterministic=True),
            body=response.body,
            signature=response.signature,
        )

    return tamper


def _garbage_header(
    w: World,
) -> Callable[[transport_pb2.SignedMessage], transport_pb2.SignedMessage]:
    def tamper(response: transport_pb2.SignedMessage) -> transport_pb2.SignedMessage:
        return transport_pb2.SignedMessage(
            header=b"\xff\xff", body=response.body, signature=response.signature
        )

    return tamper


def _expired_signing_certificate(w: World) -> object:
    now = datetime.datetime.now(datetime.UTC)
    return w.pki.sign(
        POP_SS.member,
        not_before=now - datetime.timedelta(days=2),
        not_after=now - datetime.timedelta(days=1),
    )


def _revoked_staple(
    w: World,
) -> Callable[[transport_pb2.SignedMessage], transport_pb2.SignedMessage]:
    def tamper(response: transport_pb2.SignedMessage) -> transport_pb2.SignedMessage:
        staple = w.pki.ocsp_response(
            w.pop_sign.certificate,
            revoked_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1),
        )
        return resign(w, response, _header_of(response), staple=staple)

    return tamper


def _backend_fault_with_ok(w: World, header: transport_pb2.MessageHeader) -> None:
    header.backend_fault = "client.not_found"
    header.backend_fault_id = str(uuid.uuid4())


def _backend_fault_not_a_code(w: World, header: transport_pb2.MessageHeader) -> None:
    header.status_code = grpc.StatusCode.NOT_FOUND.value[0]
    header.backend_fault = "Not Found!"
    header.backend_fault_id = str(uuid.uuid4())


def _backend_fault_id_not_a_uuid(w: World, header: transport_pb2.MessageHeader) -> None:
    header.status_code = grpc.StatusCode.NOT_FOUND.value[0]
    header.backend_fault = "client.not_found"
    header.backend_fault_id = "42"


LIES: list[tuple[str, Callable[[World], Callable[..., transport_pb2.SignedMessage]], str]] = [
    ("garbage_header", _garbage_header, "malformed"),
    ("wrong_kind", _lie(_wrong_kind), "it is not a response"),
    ("wrong_message_id", _lie(_wrong_message_id), "it carries another message id"),
    ("wrong_request_hash", _lie(_wrong_request_hash), "bound to another request (request_hash)"),
    ("another_sender", _lie(_another_sender), "another server sent it"),
    ("another_service", _lie(_another_service), "it names another service"),
    ("body_not_matching_digest", _body_not_matching, "its body does not match the signed digest"),
    ("header_changed_after_signing", _header_changed_after_signing, "signature"),
    ("signed_by_another_member", _signed_by(lambda w: w.tax_sign), "DEV/GOV/TAX"),
    ("expired_signing_certificate", _signed_by(_expired_signing_certificate), "expired"),
    ("revoked_signing_certificate", _revoked_staple, "revoked"),
    ("backend_fault_with_ok", _lie(_backend_fault_with_ok), "a backend fault with status OK"),
    ("backend_fault_not_a_code", _lie(_backend_fault_not_a_code), "is not a fault code"),
    ("backend_fault_id_not_a_uuid", _lie(_backend_fault_id_not_a_uuid), "is not a UUID"),
]


@pytest.mark.parametrize(("name", "lie", "says"), LIES, ids=[c[0] for c in LIES])
async def test_a_lying_provider_is_caught(
    tmp_path: Path,
    name: str,
    lie: Callable[[World], Callable[..., transport_pb2.SignedMessage]],
    says: str,
) -> None:
    async with world(tmp_path) as w:
        w.tamper = lie(w)
        refused = await _refused(w, PATH, PERSON, w.call_info())
        # The request was sent: it is logged (alone), the lie is not.
        assert w.consumer_log.size() == 1
    assert refused.fault == Fault.SERVER_CONSUMER_INVALID_RESPONSE_SIGNATURE
    assert says in refused.details, refused.details


@pytest.mark.parametrize(
    "change", [_wrong_request_hash, _wrong_message_id, _wrong_kind, _another_sender]
)
async def test_each_lie_alone_names_its_check(
    tmp_path: Path, change: Callable[[World, transport_pb2.MessageHeader], None]
) -> None:
    """One lie, one problem named: the checks do not hide behind each other."""
    async with world(tmp_path) as w:
        w.tamper = _lie(change)(w)
        refused = await _refused(w, PATH, PERSON, w.call_info())
    assert refused.details.count(";") == 0, refused.details


# --- the provider's checks, in order ------------------------------------------------------------


def _request(
    w: World,
    *,
    sender: ServerId = SOC_SS,
    receiver: ServerId = POP_SS,
    client: SubsystemId = BENEFITS,
    signer: Credential | None = None,
    created_at: datetime.datetime | None = None,
    body: bytes = PERSON,
    staple: bytes | None = None,
    change: Callable[[transport_pb2.MessageHeader], None] | None = None,
) -> transport_pb2.SignedMessage:
    """A signed request as a consumer server makes it, with one thing changed."""
    call = parse_call_metadata(PATH, w.call_info(client=client).metadata)
    header, _ = build_request_header(
        call,
        body=body,
        sender=sender,
        receiver=receiver,
        created_at=created_at or datetime.datetime.now(datetime.UTC),
    )
    if change is not None:
        change(header)
    return resign(
        w,
        transport_pb2.SignedMessage(body=body),
        header,
        signer=signer or w.soc_sign,
        staple=staple,
    )


#: Breaks one thing and returns the message to send and the peer's call.
ProviderCase = Callable[[World], Awaitable[tuple[transport_pb2.SignedMessage, CallInfo]]]


async def _provider_configuration_expired(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    w.configuration.expired = True
    return _request(w), w.peer_info()


async def _peer_without_certificate(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    return _request(w), dataclasses.replace(w.peer_info(), peer_certificate_pem=None)


async def _peer_not_listed(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    return _request(w), w.peer_info(w.pki.auth(ServerId(SOC_SS.member, "ss9")))


async def _peer_revoked(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    w.ocsp.revoked.add(w.soc_auth.certificate.serial_number)
    return _request(w), w.peer_info()


async def _provider_not_cosigned(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    w.provider_gate_error = WitnessUnavailableError("no witness cosignature for 5 h")
    return _request(w), w.peer_info()


async def _request_too_large(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    return _request(w, body=b"\x0a" * (MAX_MESSAGE_BYTES + 1)), w.peer_info()


async def _garbage_request_header(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    message = _request(w)
    message.header = b"\xff\xff"
    return message, w.peer_info()


async def _not_a_request(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    def response(header: transport_pb2.MessageHeader) -> None:
        header.kind = transport_pb2.MESSAGE_KIND_RESPONSE

    return _request(w, change=response), w.peer_info()


async def _addressed_elsewhere(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    return _request(w, receiver=TAX_SS), w.peer_info()


async def _sender_not_the_peer(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    return _request(w, sender=TAX_SS), w.peer_info()


async def _tampered_request(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    message = _request(w)
    header = read_header(message.header).header
    header.purpose = "tampered"
    message.header = header.SerializeToString(deterministic=True)
    return message, w.peer_info()


async def _request_signed_by_another_member(
    w: World,
) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    return _request(w, signer=w.tax_sign), w.peer_info()


async def _request_signed_with_expired_certificate(
    w: World,
) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    now = datetime.datetime.now(datetime.UTC)
    expired = w.pki.sign(
        SOC_SS.member,
        not_before=now - datetime.timedelta(days=2),
        not_after=now - datetime.timedelta(days=1),
    )
    return _request(w, signer=expired), w.peer_info()


async def _request_with_revoked_staple(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    staple = w.pki.ocsp_response(
        w.soc_sign.certificate,
        revoked_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1),
    )
    return _request(w, staple=staple), w.peer_info()


async def _request_with_foreign_staple(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    return _request(w, staple=w.pki.ocsp_response(w.tax_sign.certificate)), w.peer_info()


async def _request_body_not_matching(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    message = _request(w)
    message.body = PERSON + b"!"
    return message, w.peer_info()


async def _stale_request(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    staple = w.pki.ocsp_response(w.soc_sign.certificate, this_update=old)
    return _request(w, created_at=old, staple=staple), w.peer_info()


async def _service_not_served(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    w.backend.serving = False
    return _request(w), w.peer_info()


async def _no_contract_at_the_provider(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    del w.conf_proto.contracts[:]
    w.republish()
    return _request(w), w.peer_info()


async def _request_without_purpose(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    """A consumer server of another make sends no purpose: the provider names what is missing."""

    def no_purpose(header: transport_pb2.MessageHeader) -> None:
        header.purpose = ""

    return _request(w, change=no_purpose), w.peer_info()


def _limit_contracts(w: World, per_minute: int) -> None:
    for contract in w.conf_proto.contracts:
        contract.rate_limit_per_minute = per_minute
    w.republish()


async def _over_the_rate_limit(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    # One call a minute: a bucket of one call, refilled in 60 s; the first call takes it.
    _limit_contracts(w, 1)
    await w.provider.exchange(_request(w), w.peer_info())
    return _request(w), w.peer_info()


async def _provider_cannot_staple(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    w.ocsp.failing_for.add(w.pop_sign.certificate.serial_number)
    return _request(w), w.peer_info()


async def _replayed_request(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    message = _request(w)
    await w.provider.exchange(message, w.peer_info())
    return message, w.peer_info()


async def _provider_log_cannot_store(w: World) -> tuple[transport_pb2.SignedMessage, CallInfo]:
    await w.provider_log.close()
    return _request(w), w.peer_info()


PROVIDER_CHECKS: list[tuple[ProviderCase, Fault, str]] = [
    (_provider_configuration_expired, Fault.SERVER_PROVIDER_OUTDATED_GLOBALCONF, "expired"),
    (_peer_without_certificate, Fault.SERVER_PROVIDER_ACCESS_DENIED, "no usable client"),
    (_peer_not_listed, Fault.SERVER_PROVIDER_ACCESS_DENIED, "not the authentication"),
    (_peer_revoked, Fault.SERVER_PROVIDER_CERT_REVOKED, "revoked"),
    (_provider_not_cosigned, Fault.SERVER_PROVIDER_WITNESS_UNAVAILABLE, "cosignature"),
    (_request_too_large, Fault.SERVER_PROVIDER_MESSAGE_TOO_LARGE, "the limit is"),
    (_garbage_request_header, Fault.SERVER_PROVIDER_INVALID_MESSAGE, "MessageHeader"),
    (_not_a_request, Fault.SERVER_PROVIDER_INVALID_MESSAGE, "not a request"),
    (_addressed_elsewhere, Fault.SERVER_PROVIDER_INVALID_MESSAGE, "another security server"),
    (_sender_not_the_peer, Fault.SERVER_PROVIDER_INVALID_MESSAGE, "other than the calling"),
    (_tampered_request, Fault.SERVER_PROVIDER_INVALID_SIGNATURE, "signature"),
    (_request_signed_by_another_member, Fault.SERVER_PROVIDER_SIGNER_MISMATCH, "DEV/GOV/TAX"),
    (_request_signed_with_expired_certificate, Fault.SERVER_PROVIDER_CERT_INVALID, "expired"),
    (_request_with_revoked_staple, Fault.SERVER_PROVIDER_CERT_REVOKED, "revoked"),
    (_request_with_foreign_staple, Fault.SERVER_PROVIDER_OCSP_INVALID, "OCSP"),
    (_request_body_not_matching, Fault.SERVER_PROVIDER_INVALID_SIGNATURE, "digest"),
    (_stale_request, Fault.SERVER_PROVIDER_STALE_MESSAGE, "check both clocks"),
    (_service_not_served, Fault.SERVER_PROVIDER_UNKNOWN_SERVICE, "not served"),
    (_no_contract_at_the_provider, Fault.SERVER_PROVIDER_ACCESS_DENIED, "no active contract"),
    (_request_without_purpose, Fault.SERVER_PROVIDER_ACCESS_DENIED, "ruta-purpose is required"),
    (_over_the_rate_limit, Fault.SERVER_PROVIDER_RATE_LIMITED, "over its rate limit"),
    (_provider_cannot_staple, Fault.SERVER_PROVIDER_INTERNAL_ERROR, "OCSP"),
    (_replayed_request, Fault.SERVER_PROVIDER_REPLAYED_MESSAGE, "already used"),
    (_provider_log_cannot_store, Fault.SERVER_PROVIDER_LOGGING_FAILED, "message log"),
]
_PROVIDER_IDS = [c[0].__name__.strip("_") for c in PROVIDER_CHECKS]


@pytest.mark.parametrize(("case", "fault", "says"), PROVIDER_CHECKS, ids=_PROVIDER_IDS)
async def test_provider_refusals(
    tmp_path: Path, case: ProviderCase, fault: Fault, says: str
) -> None:
    async with world(tmp_path) as w:
        message, info = await case(w)
        size, calls = w.provider_log.size(), len(w.backend.calls)
        with pytest.raises(Refused) as caught:
            await w.provider.exchange(message, info)
        # Refused before anything of it was logged or sent to the backend.
        assert w.provider_log.size() == size
        assert len(w.backend.calls) == calls
    assert caught.value.fault == fault
    assert says in caught.value.details, caught.value.details


async def test_address_and_sender_are_checked_after_accepted_requests(tmp_path: Path) -> None:
    """The provider remembers the last receiver and sender it found right by identity: a
    request addressed elsewhere, or naming another sender, after accepted ones is refused all
    the same, and a right one after them is accepted."""
    async with world(tmp_path) as w:
        await w.provider.exchange(_request(w), w.peer_info())
        await w.provider.exchange(_request(w), w.peer_info())
        for case, says in (
            (_addressed_elsewhere, "another security server"),
            (_sender_not_the_peer, "other than the calling"),
        ):
            message, info = await case(w)
            with pytest.raises(Refused) as caught:
                await w.provider.exchange(message, info)
            assert caught.value.fault == Fault.SERVER_PROVIDER_INVALID_MESSAGE
            assert says in caught.value.details
        await w.provider.exchange(_request(w), w.peer_info())


@pytest.mark.parametrize(("case", "fault", "says"), PROVIDER_CHECKS, ids=_PROVIDER_IDS)
async def test_framed_refusals_are_the_same(
    tmp_path: Path, case: ProviderCase, fault: Fault, says: str
) -> None:
    async with world(tmp_path) as w:
        message, info = await case(w)
        result = await w.provider.framed(
            transport_pb2.FramedRequest(tag=7, message=message, timeout_ms=5000), info
        )
    assert result.tag == 7
    assert result.refusal.fault == fault
    assert result.refusal.status_code == status_of(fault).value[0]
    assert says in result.refusal.message


@pytest.mark.parametrize("framed", [False, True], ids=["unary", "framed"])
async def test_provider_refusal_passes_through_the_consumer_unchanged(
    tmp_path: Path, framed: bool
) -> None:
    async with world(tmp_path, framed=framed) as w:
        w.backend.serving = False
        refused = await _refused(w, PATH, PERSON, w.call_info())
        assert w.consumer_log.size() == 1  # the request, sent and refused
    assert refused.fault == Fault.SERVER_PROVIDER_UNKNOWN_SERVICE
    assert refused.status is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("status", "fault"),
    [
        (grpc.StatusCode.UNAVAILABLE, Fault.SERVER_PROVIDER_SERVICE_FAILED),
        (grpc.StatusCode.UNIMPLEMENTED, Fault.SERVER_PROVIDER_SERVICE_FAILED),
        (grpc.StatusCode.NOT_FOUND, None),
    ],
)
async def test_a_failing_backend_is_answered_with_a_signed_response(
    tmp_path: Path, status: grpc.StatusCode, fault: Fault | None
) -> None:
    async with world(tmp_path) as w:
        w.backend.reply = BackendReply(status, details="no person with that national_id")
        refused = await _refused(w, PATH, PERSON, w.call_info())
        # Both sides logged the request and the signed response carrying the outcome.
        assert w.consumer_log.size() == 2
        assert w.provider_log.size() == 2
    assert refused.status is status
    assert refused.fault == (str(fault) if fault is not None else None)


async def _response_headers(w: World) -> list[transport_pb2.MessageHeader]:
    """The signed response header in each log (consumer's, then provider's)."""
    headers = []
    for log in (w.consumer_log, w.provider_log):
        page = await log.query()
        (response,) = [r for r in page.records if str(r.kind) == "response"]
        headers.append(read_header(response.log_record().header).header)
    return headers


@pytest.mark.parametrize("framed", [False, True], ids=["unary", "framed"])
@pytest.mark.parametrize(
    ("status", "code"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "client.invalid_request"),
        (grpc.StatusCode.NOT_FOUND, "client.not_found"),
        # An adapter's legacy system is down: the backend answered, so it is its fault, not
        # the provider server's service_failed.
        (grpc.StatusCode.UNAVAILABLE, "server.provider.legacy_unavailable"),
        # A backend cannot pass for a security server: its code keeps the backend prefix.
        (grpc.StatusCode.PERMISSION_DENIED, "server.consumer.access_denied"),
        (grpc.StatusCode.FAILED_PRECONDITION, "agency.register_closed"),
    ],
)
async def test_a_backends_fault_reaches_the_caller_and_both_logs(
    tmp_path: Path, framed: bool, status: grpc.StatusCode, code: str
) -> None:
    fault_id = str(uuid.uuid4())
    async with world(tmp_path, framed=framed) as w:
        w.backend.reply = BackendReply(
            status, details="national_id must be 11 digits", fault=code, fault_id=fault_id
        )
        refused = await _refused(w, PATH, PERSON, w.call_info())
        headers = await _response_headers(w)
    trailing = dict(refused.trailing_metadata)
    assert refused.status is status
    assert refused.details == "national_id must be 11 digits"
    assert trailing["ruta-fault"] == f"backend.{code}"
    assert trailing["ruta-fault-id"] == fault_id
    assert trailing["ruta-message-id"]
    assert trailing["ruta-request-hash"]
    for header in headers:
        assert header.status_code == status.value[0]
        assert header.fault == ""
        assert (header.backend_fault, header.backend_fault_id) == (code, fault_id)


@pytest.mark.parametrize(
    "fault_id", ["", "not-a-uuid", "x" * 4096], ids=["none", "not_a_uuid", "huge"]
)
async def test_a_backend_fault_without_a_usable_id_gets_one(tmp_path: Path, fault_id: str) -> None:
    async with world(tmp_path) as w:
        w.backend.reply = BackendReply(
            grpc.StatusCode.NOT_FOUND,
            details="no person",
            fault="client.not_found",
            fault_id=fault_id,
        )
        refused = await _refused(w, PATH, PERSON, w.call_info())
        consumer, provider = await _response_headers(w)
    given = dict(refused.trailing_metadata)["ruta-fault-id"]
    assert str(uuid.UUID(given)) == given
    assert consumer.backend_fault_id == provider.backend_fault_id == given


@pytest.mark.parametrize(
    "code",
    ["Client.Invalid", "client invalid", "client..invalid", ".client", "a" * 65, "client.é"],
)
async def test_a_backend_fault_that_is_no_fault_code_is_not_carried(
    tmp_path: Path, code: str
) -> None:
    """Status and text still pass; the malformed claim reaches neither the caller nor a log."""
    async with world(tmp_path) as w:
        w.backend.reply = BackendReply(
            grpc.StatusCode.INVALID_ARGUMENT,
            details="bad national_id",
            fault=code,
            fault_id=str(uuid.uuid4()),
        )
        refused = await _refused(w, PATH, PERSON, w.call_info())
        headers = await _response_headers(w)
    assert refused.status is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.fault is None
    assert "ruta-fault-id" not in dict(refused.trailing_metadata)
    assert all(not h.backend_fault and not h.backend_fault_id for h in headers)


async def test_an_unreachable_backend_is_still_service_failed(tmp_path: Path) -> None:
    """UNAVAILABLE with no Ruta fault: the backend was not reached; the provider server says so
    with its own fault, and a malformed code does not turn that into a backend's answer."""
    async with world(tmp_path) as w:
        w.backend.reply = BackendReply(
            grpc.StatusCode.UNAVAILABLE, details="connection refused", fault="Not A Code"
        )
        refused = await _refused(w, PATH, PERSON, w.call_info())
    assert refused.fault == Fault.SERVER_PROVIDER_SERVICE_FAILED


async def test_a_bug_is_internal_error_with_a_fault_id_and_no_text(tmp_path: Path) -> None:
    async with world(tmp_path) as w:

        async def broken(*args: object, **kwargs: object) -> BackendReply:
            raise RuntimeError("secret detail")

        w.backend.call = broken  # type: ignore[method-assign]
        with pytest.raises(Refused) as caught:
            await w.provider.exchange(_request(w), w.peer_info())
    assert caught.value.fault == Fault.SERVER_PROVIDER_INTERNAL_ERROR
    assert "secret" not in caught.value.details
    assert dict(caught.value.trailing_metadata)["ruta-fault-id"]


async def test_a_cancelled_calls_request_is_durable_once_the_recorder_settles(
    tmp_path: Path,
) -> None:
    """The caller leaves while the provider's backend works: the request was sent, so it is
    logged (in a task of the recorder, which a server's stop settles before the log closes)."""
    async with world(tmp_path) as w:
        answered, forwarded = asyncio.Event(), asyncio.Event()

        async def slow(*args: object, **kwargs: object) -> BackendReply:
            forwarded.set()  # the provider logged the request before forwarding it: it was sent
            await answered.wait()
            return BackendReply(grpc.StatusCode.OK, b"late")

        w.backend.call = slow  # type: ignore[method-assign]
        call = asyncio.create_task(w.consumer.exchange(PATH, PERSON, w.call_info()))
        async with asyncio.timeout(10):
            await forwarded.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await w.consumer_recorder.settle()
        assert w.consumer_log.size() == 1
        page = await w.consumer_log.query()
        assert [str(r.kind) for r in page.records] == ["request"]
        answered.set()


@pytest.mark.parametrize("framed", [False, True], ids=["unary", "framed"])
async def test_a_rate_limited_call_gets_a_retry_after_hint_through_the_consumer(
    tmp_path: Path, framed: bool
) -> None:
    async with world(tmp_path, framed=framed) as w:
        _limit_contracts(w, 1)
        await w.consumer.exchange(PATH, PERSON, w.call_info())
        refused = await _refused(w, PATH, PERSON, w.call_info())
        # The second request was sent and refused: the consumer logs it alone; the provider
        # refused it before its log.
        assert w.consumer_log.size() == 3
        assert w.provider_log.size() == 2
    assert refused.fault == Fault.SERVER_PROVIDER_RATE_LIMITED
    assert refused.status is grpc.StatusCode.RESOURCE_EXHAUSTED
    hint = retry_after_of(refused.trailing_metadata)
    assert hint is not None
    assert 0 < hint <= 60_000
    assert str(hint) in refused.details


async def test_the_providers_own_limit_only_lowers_the_contracts(tmp_path: Path) -> None:
    local = {"rate_limits": {"max_per_minute": 1}}
    async with world(tmp_path, provider_settings=local) as w:
        _limit_contracts(w, 6000)  # the contract allows 100 a second; this server, one a minute
        await w.provider.exchange(_request(w), w.peer_info())
        with pytest.raises(Refused) as caught:
            await w.provider.exchange(_request(w), w.peer_info())
    assert caught.value.fault == Fault.SERVER_PROVIDER_RATE_LIMITED
    lower = {"rate_limits": {"max_per_minute": 6000}}
    async with world(tmp_path / "again", provider_settings=lower) as w:
        _limit_contracts(w, 1)  # the contract's one a minute stands
        await w.provider.exchange(_request(w), w.peer_info())
        with pytest.raises(Refused) as caught:
            await w.provider.exchange(_request(w), w.peer_info())
    assert caught.value.fault == Fault.SERVER_PROVIDER_RATE_LIMITED
