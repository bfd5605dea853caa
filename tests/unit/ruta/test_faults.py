from __future__ import annotations

import re
import uuid

import grpc
import grpc.aio
import pytest

from ruta.faults import (
    FAULT_HEADER,
    FAULT_ID_HEADER,
    MAX_FAULT_TEXT_LENGTH,
    Fault,
    RutaError,
    abort,
    backend_fault_code,
    caller_fault_code,
    fault_from_rpc_error,
    http_status_of,
    report,
    status_of,
)
from ruta.v1 import ids_pb2

#: The codes DESIGN.md requires at least.
DESIGN_CODES = {
    "client.invalid_identifier": grpc.StatusCode.INVALID_ARGUMENT,
    "client.missing_header": grpc.StatusCode.INVALID_ARGUMENT,
    "client.message_too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "client.unknown_service": grpc.StatusCode.NOT_FOUND,
    "server.provider.access_denied": grpc.StatusCode.PERMISSION_DENIED,
    "server.provider.invalid_signature": grpc.StatusCode.UNAUTHENTICATED,
    "server.provider.cert_revoked": grpc.StatusCode.UNAUTHENTICATED,
    "server.provider.cert_invalid": grpc.StatusCode.UNAUTHENTICATED,
    "server.provider.replayed_message": grpc.StatusCode.ALREADY_EXISTS,
    "server.provider.stale_message": grpc.StatusCode.FAILED_PRECONDITION,
    "server.provider.service_failed": grpc.StatusCode.UNAVAILABLE,
    "server.consumer.outdated_globalconf": grpc.StatusCode.UNAVAILABLE,
    "server.consumer.network_error": grpc.StatusCode.UNAVAILABLE,
    "server.consumer.invalid_response_signature": grpc.StatusCode.INTERNAL,
    "server.consumer.logging_failed": grpc.StatusCode.INTERNAL,
}


@pytest.mark.parametrize(("code", "status"), sorted(DESIGN_CODES.items()))
def test_design_codes_exist_with_their_status(code: str, status: grpc.StatusCode) -> None:
    assert status_of(Fault(code)) is status


@pytest.mark.parametrize("fault", list(Fault))
def test_every_code_maps_to_a_status_and_is_well_formed(fault: Fault) -> None:
    status = status_of(fault)
    assert isinstance(status, grpc.StatusCode)
    assert status is not grpc.StatusCode.OK
    assert re.fullmatch(r"(client|server\.(consumer|provider|registry))\.[a-z_]+", fault.value)


@pytest.mark.parametrize("fault", list(Fault))
def test_report_carries_code_and_fresh_id(fault: Fault) -> None:
    rep = report(RutaError("what went wrong", fault=fault))
    assert rep.status is status_of(fault)
    assert dict(rep.trailing_metadata)[FAULT_HEADER] == fault.value
    assert uuid.UUID(dict(rep.trailing_metadata)[FAULT_ID_HEADER]) is not None
    assert rep.details == "what went wrong"


def test_long_fault_text_is_bounded() -> None:
    rep = report(RutaError("x" * 10 * MAX_FAULT_TEXT_LENGTH))
    assert len(rep.details) == MAX_FAULT_TEXT_LENGTH


def test_subclass_default_and_override() -> None:
    class DeniedError(RutaError):
        default_fault = Fault.SERVER_PROVIDER_ACCESS_DENIED

    assert DeniedError("no").fault is Fault.SERVER_PROVIDER_ACCESS_DENIED
    assert DeniedError("no", fault=Fault.SERVER_CONSUMER_ACCESS_DENIED).fault is (
        Fault.SERVER_CONSUMER_ACCESS_DENIED
    )
    assert str(DeniedError("no")) == "server.provider.access_denied: no"


class _Refuser:
    """A real grpc.aio server whose only method refuses with a Ruta fault."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault

    async def handle(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        await abort(context, RutaError("refused for the test", fault=self.fault))


@pytest.mark.parametrize(
    "fault",
    [
        Fault.CLIENT_MISSING_HEADER,
        Fault.SERVER_PROVIDER_ACCESS_DENIED,
        Fault.SERVER_CONSUMER_NETWORK_ERROR,
    ],
)
async def test_abort_puts_fault_on_the_wire(fault: Fault) -> None:
    refuser = _Refuser(fault)
    handler = grpc.method_handlers_generic_handler(
        "test.Refuser", {"Call": grpc.unary_unary_rpc_method_handler(refuser.handle)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/test.Refuser/Call"
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(ids_pb2.MemberId().SerializeToString())
        err = info.value
        assert err.code() is status_of(fault)
        assert err.details() == "refused for the test"
        code, fault_id = fault_from_rpc_error(err)
        assert code is fault
        assert fault_id is not None
        assert uuid.UUID(fault_id)
    finally:
        await server.stop(None)


async def test_abort_passes_a_peers_fault_id_and_status_on() -> None:
    """A refusal relayed from a peer keeps the peer's fault id and gRPC status."""

    async def handle(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await abort(
            context,
            RutaError("relayed", fault=Fault.SERVER_PROVIDER_ACCESS_DENIED),
            fault_id="11111111-2222-3333-4444-555555555555",
            status=grpc.StatusCode.DEADLINE_EXCEEDED,
        )

    handler = grpc.method_handlers_generic_handler(
        "test.Relay", {"Call": grpc.unary_unary_rpc_method_handler(handle)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/test.Relay/Call"
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(b"")
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert fault_from_rpc_error(info.value) == (
            Fault.SERVER_PROVIDER_ACCESS_DENIED,
            "11111111-2222-3333-4444-555555555555",
        )
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    ("fault", "http"),
    [
        (Fault.CLIENT_INVALID_IDENTIFIER, 400),
        (Fault.CLIENT_MISSING_HEADER, 400),
        (Fault.CLIENT_INVALID_REQUEST, 400),
        (Fault.CLIENT_UNAUTHENTICATED, 401),
        (Fault.CLIENT_PERMISSION_DENIED, 403),
        (Fault.SERVER_CONSUMER_ACCESS_DENIED, 403),
        (Fault.SERVER_PROVIDER_ACCESS_DENIED, 403),
        (Fault.CLIENT_UNKNOWN_SERVICE, 404),
        (Fault.SERVER_PROVIDER_UNKNOWN_SERVICE, 404),
        (Fault.CLIENT_MESSAGE_TOO_LARGE, 413),
        (Fault.SERVER_PROVIDER_SERVICE_FAILED, 502),
        (Fault.SERVER_CONSUMER_NETWORK_ERROR, 502),
        (Fault.SERVER_PROVIDER_LEGACY_TIMEOUT, 504),
        (Fault.SERVER_CONSUMER_OUTDATED_GLOBALCONF, 503),
        (Fault.SERVER_CONSUMER_INTERNAL_ERROR, 500),
    ],
)
def test_http_status_per_fault(fault: Fault, http: int) -> None:
    assert http_status_of(fault) == http


def test_every_fault_has_an_http_status_in_the_error_range() -> None:
    for fault in Fault:
        assert 400 <= http_status_of(fault) <= 599, fault


def test_a_deadline_that_passed_is_504_whatever_the_code() -> None:
    assert (
        http_status_of(
            Fault.SERVER_CONSUMER_NETWORK_ERROR, status=grpc.StatusCode.DEADLINE_EXCEEDED
        )
        == 504
    )
    assert (
        http_status_of(Fault.SERVER_PROVIDER_SERVICE_FAILED, status=grpc.StatusCode.UNAVAILABLE)
        == 502
    )


@pytest.mark.parametrize(
    ("code", "kept"),
    [
        ("client.invalid_request", True),
        ("server.provider.legacy_unavailable", True),
        ("agency_x.register_closed2", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("Client.Invalid", False),
        ("client..invalid", False),
        (".client", False),
        ("client.", False),
        ("client invalid", False),
        ("1client", False),
        ("client.é", False),
    ],
)
def test_backend_fault_code_takes_only_the_shape_of_a_fault_code(code: str, kept: bool) -> None:
    assert (backend_fault_code(code) == code) is kept
    assert kept or backend_fault_code(code) is None


@pytest.mark.parametrize(
    ("code", "kept"),
    [
        ("server.provider.access_denied", True),
        ("backend.client.invalid_request", True),
        ("backend.server.consumer.access_denied", True),
        ("backend.agency.closed", True),
        ("server.provider.made_up", False),
        ("backend.", False),
        ("backend.Bad Code", False),
        ("backend." + "a" * 65, False),
        ("", False),
    ],
)
def test_caller_fault_code_passes_bus_codes_and_prefixed_backend_codes(
    code: str, kept: bool
) -> None:
    assert caller_fault_code(code) == (code if kept else None)
