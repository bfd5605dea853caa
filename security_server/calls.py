"""What a proxy knows about the call it serves, and how it refuses one, without gRPC's context.

The proxies take a :class:`CallInfo` (peer address, peer certificate, deadline, metadata) instead
of a ``grpc.aio.ServicerContext``, and end a refused call by raising :class:`Refused` (status,
text, trailing metadata). Only the thin gRPC layer (:mod:`security_server.rpc`) turns a context
into a :class:`CallInfo` and a :class:`Refused` into an aborted call; unit tests build both by
hand and run the proxies without sockets.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

import grpc

from ruta.faults import FAULT_HEADER, RutaError, report

__all__ = ["Answer", "CallInfo", "Metadata", "Refused"]

#: Call metadata as gRPC hands it over (text values, bytes for ``-bin`` keys).
Metadata = tuple[tuple[str, str | bytes], ...]
_NO_METADATA: Final[Metadata] = ()


@dataclass(frozen=True, slots=True)
class CallInfo:
    """One call as a proxy sees it.

    ``peer`` is the caller's address as gRPC names it (``ipv4:127.0.0.1:5000``),
    ``peer_certificate_pem`` the client certificate it presented over TLS (None: plaintext or
    none), ``deadline`` the event-loop time after which the caller no longer waits (None: it set
    no deadline), ``metadata`` the call's metadata.
    """

    peer: str = ""
    peer_certificate_pem: bytes | None = None
    deadline: float | None = None
    metadata: Metadata = _NO_METADATA

    def time_remaining(self) -> float | None:
        """Seconds until the deadline (never negative), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())


@dataclass(frozen=True, slots=True)
class Answer:
    """A call's answer: the body and the trailing metadata that go with it."""

    body: bytes
    trailing_metadata: tuple[tuple[str, str], ...] = ()


class Refused(Exception):  # noqa: N818 - a refusal, not a failure of the proxy
    """A refused call: the status, text and trailing metadata the caller gets."""

    def __init__(
        self,
        status: grpc.StatusCode,
        details: str,
        trailing_metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(details)
        self.status = status
        self.details = details
        self.trailing_metadata = trailing_metadata

    @classmethod
    def from_error(
        cls,
        error: RutaError,
        *,
        fault_id: str | None = None,
        status: grpc.StatusCode | None = None,
    ) -> Refused:
        """The refusal of ``error`` (its fault code, a fresh fault id unless ``fault_id`` keeps
        a peer's, its fault's status unless ``status`` keeps a peer's), logged once."""
        rep = report(error, fault_id=fault_id)
        return cls(status or rep.status, rep.details, rep.trailing_metadata)

    @property
    def fault(self) -> str | None:
        """The ``ruta-fault`` code it carries (None for a status passed on without one)."""
        return dict(self.trailing_metadata).get(FAULT_HEADER)
