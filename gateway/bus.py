"""The gateway's one way onto the bus: a call to its security server's consumer port.

The gateway calls the consumer port exactly as a backend does (the ``ruta-*`` metadata of
DESIGN.md, the body as bytes), with its gateway certificate (docs/adr/0021-gateway.md). What comes
back is the provider's answer with the message id and request hash of the exchange, or a
:class:`BusRefusedError` carrying the fault code, fault id and gRPC status the refusing side sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import grpc
import grpc.aio

from gateway.settings import GRPC_ENVELOPE_BYTES, ConsumerPortSettings
from ruta.call_metadata import (
    CLIENT_HEADER,
    MESSAGE_ID_HEADER,
    PURPOSE_HEADER,
    REQUEST_HASH_HEADER,
    SERVICE_HEADER,
    SUBJECT_HEADER,
    USER_ID_HEADER,
)
from ruta.faults import (
    BACKEND_FAULT_PREFIX,
    FAULT_HEADER,
    Fault,
    RutaError,
    caller_fault_code,
    fault_from_rpc_error,
    retry_after_of,
)
from ruta.ids import ServiceId, SubsystemId
from ruta.pki.tls import channel_credentials

__all__ = [
    "BusAnswer",
    "BusClient",
    "BusRefusedError",
    "CallerContext",
]


@dataclass(frozen=True, slots=True)
class CallerContext:
    """Who calls and why, as the HTTP caller said it (checked by the security servers)."""

    client: SubsystemId
    purpose: str = ""
    user_id: str = ""
    subject: str = ""


@dataclass(frozen=True, slots=True)
class BusAnswer:
    body: bytes
    message_id: str
    request_hash: str


class BusRefusedError(RutaError):
    """The exchange was refused or failed. ``fault`` is ``None`` for a plain application status
    of the provider's backend (``status`` then says which); ``backend_fault`` is the backend's own
    code as the caller got it (``backend.client.not_found``, docs/adr/0024), or empty."""

    def __init__(
        self,
        message: str,
        *,
        fault: Fault | None,
        fault_id: str | None,
        status: grpc.StatusCode,
        message_id: str = "",
        request_hash: str = "",
        backend_fault: str = "",
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(
            message,
            fault=fault or Fault.SERVER_PROVIDER_SERVICE_FAILED,
            retry_after_ms=retry_after_ms,
        )
        self.application = fault is None
        self.backend_fault = backend_fault
        self.fault_id = fault_id
        self.status = status
        self.message_id = message_id
        self.request_hash = request_hash


class BusClient:
    """One channel to the consumer port, opened at start and shared by every call."""

    def __init__(self, settings: ConsumerPortSettings, *, max_message_bytes: int) -> None:
        # Room for the gRPC envelope around a body at the limit.
        options = [
            ("grpc.max_send_message_length", max_message_bytes + GRPC_ENVELOPE_BYTES),
            ("grpc.max_receive_message_length", max_message_bytes + GRPC_ENVELOPE_BYTES),
        ]
        if settings.plaintext:
            self._channel = grpc.aio.insecure_channel(settings.address, options=options)
        elif settings.key is None or settings.cert is None or settings.ca is None:
            # The settings model requires all three without plaintext.
            raise RutaError(  # pragma: no cover
                "the consumer port needs ca, cert and key", fault=Fault.CLIENT_INVALID_CONFIG
            )
        else:
            credentials = channel_credentials(settings.key, settings.cert, settings.ca)
            self._channel = grpc.aio.secure_channel(settings.address, credentials, options=options)
        self._calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}

    async def close(self) -> None:
        await self._channel.close()

    async def call(
        self,
        *,
        service: ServiceId,
        method: str,
        caller: CallerContext,
        body: bytes,
        deadline_seconds: float,
    ) -> BusAnswer:
        """Carry one call to ``service``/``method`` through the bus.

        Raises :class:`BusRefusedError`.
        """
        path = f"/{service.service_name}/{method}"
        call = self._calls.get(path)
        if call is None:
            if len(self._calls) > 4096:
                self._calls.clear()
            call = self._calls[path] = self._channel.unary_unary(path)
        metadata = [
            (CLIENT_HEADER, str(caller.client)),
            (SERVICE_HEADER, str(service.subsystem)),
        ]
        if caller.purpose:
            metadata.append((PURPOSE_HEADER, caller.purpose))
        if caller.user_id:
            metadata.append((USER_ID_HEADER, caller.user_id))
        if caller.subject:
            metadata.append((SUBJECT_HEADER, caller.subject))
        try:
            grpc_call = call(body, metadata=tuple(metadata), timeout=deadline_seconds)
            answer: bytes = await grpc_call
            trailing = await grpc_call.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            fault, fault_id = fault_from_rpc_error(exc)
            found = _exchanged(exc.trailing_metadata())
            if fault is None and exc.code() in _TRANSPORT_FAILURES and not found[0]:
                fault = Fault.SERVER_CONSUMER_NETWORK_ERROR
                text = "the gateway's security server cannot be reached; try again later"
            else:
                text = exc.details() or exc.code().name
            raise BusRefusedError(
                text,
                fault=fault,
                fault_id=fault_id,
                status=exc.code(),
                message_id=found[0],
                request_hash=found[1],
                backend_fault=_backend_fault(exc.trailing_metadata()) if fault is None else "",
                retry_after_ms=retry_after_of(exc.trailing_metadata()),
            ) from None
        message_id, request_hash = _exchanged(trailing)
        return BusAnswer(body=answer, message_id=message_id, request_hash=request_hash)


_TRANSPORT_FAILURES: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN}
)


def _backend_fault(metadata: object) -> str:
    """The provider backend's ``backend.*`` code in a refusal's ``ruta-fault``, or empty."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == FAULT_HEADER and isinstance(value, str):
            code = caller_fault_code(value)
            if code is not None and code.startswith(BACKEND_FAULT_PREFIX):
                return code
    return ""


def _exchanged(metadata: object) -> tuple[str, str]:
    message_id = request_hash = ""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        text = value.decode() if isinstance(value, bytes) else str(value)
        if key == MESSAGE_ID_HEADER:
            message_id = text
        elif key == REQUEST_HASH_HEADER:
            request_hash = text
    return message_id, request_hash
