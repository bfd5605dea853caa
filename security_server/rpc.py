"""The thin gRPC layer: the only part of the exchange path that knows ``grpc.aio``'s server side.

It serves the consumer proxy on the consumer port (one generic bytes handler for every method
path but the health service's) and the provider proxy as the ``ruta.v1.Transport`` service,
turning each call's context into a :class:`~security_server.calls.CallInfo` and each
:class:`~security_server.calls.Refused` into an aborted call (status, text, trailing metadata).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from ruta.v1 import transport_pb2
from security_server.calls import CallInfo, Metadata, Refused
from security_server.consumer import ConsumerProxy
from security_server.errors import MalformedMessageError, ProxyError, Side, fault_for
from security_server.frames import RESPONSE_AHEAD, capabilities_metadata, capabilities_of
from security_server.provider import ProviderProxy

__all__ = ["HEALTH_SERVICE_PREFIX", "add_transport_service", "call_info", "consumer_handler"]

#: Paths the consumer's generic handler leaves to the health service on the same port.
HEALTH_SERVICE_PREFIX: Final = "/grpc.health.v1.Health/"
_SERVICE: Final = "ruta.v1.Transport"
_M = TypeVar("_M", bound=Message)


def call_info(
    context: grpc.aio.ServicerContext[Any, Any],
    metadata: Metadata = (),
    *,
    certificate: bool = True,
) -> CallInfo:
    """What the proxies need to know of the call ``context`` serves (without the peer's
    certificate when ``certificate`` is false: a port that reads none)."""
    pems = (context.auth_context().get("x509_pem_cert") or ()) if certificate else ()
    # grpc returns None when the caller set no deadline (the stubs say float; no cast: it is a
    # Python call on every exchange).
    remaining: float | None = context.time_remaining()
    return CallInfo(
        peer=context.peer(),
        peer_certificate_pem=next(iter(pems), None),
        deadline=None if remaining is None else asyncio.get_running_loop().time() + remaining,
        metadata=metadata,
    )


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], refused: Refused) -> NoReturn:
    context.set_trailing_metadata(refused.trailing_metadata)
    await context.abort(refused.status, refused.details)
    raise AssertionError("unreachable: grpc.aio abort returned")  # pragma: no cover


def consumer_handler(proxy: ConsumerProxy) -> grpc.GenericRpcHandler:
    """A generic handler serving every method path but the health service's through
    ``proxy``."""
    # A plaintext loopback port has no client certificates to read (auth_context per call).
    certificates = proxy.reads_peer_certificate

    class _Handler(grpc.GenericRpcHandler):
        def service(
            self, handler_call_details: grpc.HandlerCallDetails
        ) -> grpc.RpcMethodHandler[Any, Any] | None:
            path: str = handler_call_details.method
            if path.startswith(HEALTH_SERVICE_PREFIX):
                return None
            metadata = tuple(handler_call_details.invocation_metadata or ())

            async def _call(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
                try:
                    info = call_info(context, metadata, certificate=certificates)
                    answer = await proxy.exchange(path, body, info)
                except Refused as refused:
                    await _refuse(context, refused)
                context.set_trailing_metadata(answer.trailing_metadata)
                return answer.body

            handler = _BytesUnaryHandler()
            handler.unary_unary = _call
            return handler

    return _Handler()


if TYPE_CHECKING:
    _MethodHandler = grpc.RpcMethodHandler[Any, Any]
else:
    _MethodHandler = grpc.RpcMethodHandler


class _BytesUnaryHandler(_MethodHandler):
    """What ``grpc.unary_unary_rpc_method_handler(behavior)`` makes, with no (de)serialiser:
    a unary-unary method of bytes (grpc.aio reads only these attributes). Made once per call
    without a Python call (that function imports a module and builds a namedtuple each time);
    ``unary_unary`` is set on each."""

    request_streaming = False
    response_streaming = False
    request_deserializer = None
    response_serializer = None
    unary_unary: Any = None
    unary_stream = None
    stream_unary = None
    stream_stream = None


def add_transport_service(server: grpc.aio.Server, provider: ProviderProxy) -> None:
    """Serve ``provider`` as ``ruta.v1.Transport/Exchange`` and ``/ExchangeFrames``.

    Requests arrive as bytes and are parsed here, so bytes that are no ``SignedMessage`` or
    ``RequestFrame`` are refused with ``server.provider.invalid_message`` (grpc's own
    deserializer would answer ``UNKNOWN`` with no fault).
    """

    async def on_exchange(
        request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> transport_pb2.SignedMessage:
        try:
            message = _parse(transport_pb2.SignedMessage, request, "signed message")
            return await provider.exchange(message, call_info(context))
        except MalformedMessageError as exc:
            await _refuse(context, _provider_refusal(exc))
        except Refused as refused:
            await _refuse(context, refused)

    async def frames_of(
        requests: AsyncIterator[bytes],
    ) -> AsyncIterator[transport_pb2.RequestFrame]:
        async for request in requests:
            yield _parse(transport_pb2.RequestFrame, request, "request frame")

    # grpc.aio lets a streaming handler write through ``context.write`` and return None.
    async def on_exchange_frames(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        # The capabilities the consumer offered that this provider agrees to, confirmed in the
        # initial metadata before any result (docs/adr/0038).
        agreed = capabilities_of(context.invocation_metadata()) & provider.frames_capabilities
        try:
            if agreed:
                await context.send_initial_metadata(capabilities_metadata(agreed))
            await provider.exchange_frames(
                frames_of(requests),
                context.write,
                call_info(context),
                ahead=RESPONSE_AHEAD in agreed,
            )
        except MalformedMessageError as exc:  # a malformed frame the handler let through
            await _refuse(context, _provider_refusal(exc))
        except Refused as refused:
            await _refuse(context, refused)

    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Exchange": grpc.unary_unary_rpc_method_handler(
            on_exchange, response_serializer=transport_pb2.SignedMessage.SerializeToString
        ),
        # Result frames are written serialised already (security_server.frames).
        "ExchangeFrames": grpc.stream_stream_rpc_method_handler(
            on_exchange_frames, response_serializer=None
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
    server.add_registered_method_handlers(_SERVICE, handlers)


def _provider_refusal(error: MalformedMessageError) -> Refused:
    return Refused.from_error(ProxyError(error.message, fault=fault_for(Side.PROVIDER, error)))


def _parse(kind: type[_M], data: bytes, what: str) -> _M:
    """``data`` parsed as ``kind``; raises :class:`~security_server.errors.MalformedMessageError`
    (the provider's ``server.provider.invalid_message``) when it is not one."""
    try:
        return kind.FromString(data)
    except DecodeError:
        raise MalformedMessageError(
            f"the request is not a {what} (ruta.v1 transport protocol); send a serialised "
            f"{kind.__name__}"
        ) from None
