"""A backend's view of the bus: call a service through one's own security server.

A backend calls the provider's method path on its own server's consumer port, over mutual TLS
with its subsystem's client certificate, naming itself (``ruta-client``), the provider subsystem
(``ruta-service``) and the purpose (``ruta-purpose``). Messages are built at run time from the
service's descriptors (:mod:`sandbox.protos`), so no generated code is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Self

import grpc
import grpc.aio

from ruta.call_metadata import (
    CLIENT_HEADER,
    MESSAGE_ID_HEADER,
    PURPOSE_HEADER,
    REQUEST_HASH_HEADER,
    SERVICE_HEADER,
    SUBJECT_HEADER,
    USER_ID_HEADER,
)
from ruta.faults import FAULT_HEADER, caller_fault_code, fault_from_rpc_error
from ruta.ids import ServiceId, SubsystemId
from ruta.pki.tls import channel_credentials
from sandbox.processes import SandboxError
from sandbox.protos import MethodCodec

__all__ = ["CALL_TIMEOUT_S", "BusClient", "CallResult"]

#: Deadline of one call through the bus.
CALL_TIMEOUT_S: Final = 20.0


@dataclass(frozen=True, slots=True)
class CallResult:
    """What one call returned: the decoded answer, or the refusal's status and fault code."""

    service: ServiceId
    method: str
    response: dict[str, Any] | None
    message_id: str
    request_hash: str = ""
    status: str = "OK"
    fault: str | None = None
    fault_id: str | None = None
    details: str = ""

    @property
    def ok(self) -> bool:
        return self.response is not None


def _metadata_value(metadata: Any, key: str) -> str:
    for item_key, value in metadata or ():
        if item_key == key:
            return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
    return ""


class BusClient:
    """A backend of ``subsystem``, talking to its own server's consumer port (``async with``)."""

    def __init__(self, subsystem: SubsystemId, channel: grpc.aio.Channel) -> None:
        self.subsystem = subsystem
        self._channel = channel

    @classmethod
    def for_sandbox(cls, sandbox: dict[str, Any], subsystem: SubsystemId) -> Self:
        """The client a sandbox's backend of ``subsystem`` would be (from sandbox.json)."""
        entry = next((s for s in sandbox["subsystems"] if s["id"] == str(subsystem)), None)
        if entry is None:
            raise SandboxError(f"the sandbox has no subsystem {subsystem}")
        server = next((s for s in sandbox["servers"] if s["id"] == entry["server"]), None)
        if server is None:
            raise SandboxError(f"the sandbox has no server {entry['server']}")
        if entry.get("cert"):
            credentials = channel_credentials(entry["key"], entry["cert"], entry["ca"])
            channel = grpc.aio.secure_channel(server["consumer"], credentials)
        else:
            channel = grpc.aio.insecure_channel(server["consumer"])
        return cls(subsystem, channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def call(
        self,
        service: ServiceId,
        codec: MethodCodec,
        request: dict[str, Any],
        *,
        purpose: str,
        subject: str = "",
        user: str = "",
    ) -> CallResult:
        """Call ``service``'s method through the bus; a refusal is returned, not raised."""
        metadata = [
            (CLIENT_HEADER, str(self.subsystem)),
            (SERVICE_HEADER, str(service.subsystem)),
            (PURPOSE_HEADER, purpose),
        ]
        if subject:
            metadata.append((SUBJECT_HEADER, subject))
        if user:
            metadata.append((USER_ID_HEADER, user))
        method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            codec.path
        )
        name = codec.path.rsplit("/", 1)[-1]
        call = method(codec.encode(**request), metadata=metadata, timeout=CALL_TIMEOUT_S)
        try:
            answer = await call
        except grpc.aio.AioRpcError as error:
            _, fault_id = fault_from_rpc_error(error)
            trailing = error.trailing_metadata()
            # Read as text: a provider backend's code (``backend.…``, docs/adr/0024) is no Fault.
            fault = caller_fault_code(_metadata_value(trailing, FAULT_HEADER))
            return CallResult(
                service=service,
                method=name,
                response=None,
                message_id=_metadata_value(trailing, MESSAGE_ID_HEADER),
                status=error.code().name,
                fault=fault,
                fault_id=fault_id,
                details=error.details() or "",
            )
        trailing = await call.trailing_metadata()
        return CallResult(
            service=service,
            method=name,
            response=codec.decode(answer),
            message_id=_metadata_value(trailing, MESSAGE_ID_HEADER),
            request_hash=_metadata_value(trailing, REQUEST_HASH_HEADER),
        )
