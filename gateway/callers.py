"""Who is calling the gateway: the caller header, checked against how the caller connected.

A caller names itself in ``X-Road-Client`` (or ``Information-Mediator-Client``, or the GovStack
spec's ``X-GovStack-Client``) as ``INSTANCE/CLASS/MEMBER/SUBSYSTEM``, and proves it as the
consumer port's backends do: over HTTPS with a client certificate naming that subsystem, or over
plain HTTP from loopback for the subsystems the settings list. Purpose, user id and subject travel
in ``Ruta-Purpose``, ``X-Road-UserId`` and ``Ruta-Subject``.
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web

from gateway.bus import CallerContext
from gateway.http_faults import GatewayError
from gateway.settings import HttpSettings, is_loopback_address
from ruta.faults import Fault
from ruta.ids import IdentifierError, MemberId, SubsystemId
from ruta.pki.certs import subsystem_id_of
from ruta.pki.errors import PkiError
from ruta.web.clientcert import peer_certificate

__all__ = [
    "CLIENT_HEADERS",
    "MAX_CALLER_TEXT_LENGTH",
    "PURPOSE_HEADER",
    "SUBJECT_HEADER",
    "USER_ID_HEADER",
    "Callers",
]

#: Caller headers, first found wins (X-Road, GovStack IM, the GovStack spec's spelling).
CLIENT_HEADERS: Final = ("X-Road-Client", "Information-Mediator-Client", "X-GovStack-Client")
PURPOSE_HEADER: Final = "Ruta-Purpose"
USER_ID_HEADER: Final = "X-Road-UserId"
SUBJECT_HEADER: Final = "Ruta-Subject"
#: Longest purpose, user id or subject carried (the security server bounds them again).
MAX_CALLER_TEXT_LENGTH: Final = 256
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def _text(request: web.Request, name: str) -> str:
    value = request.headers.get(name, "")
    if len(value) > MAX_CALLER_TEXT_LENGTH or not _PRINTABLE.fullmatch(value):
        raise GatewayError(
            f"header {name} must be printable ASCII of at most {MAX_CALLER_TEXT_LENGTH} characters",
            fault=Fault.CLIENT_INVALID_HEADER,
        )
    return value


class Callers:
    """Authenticates callers per the gateway's HTTP settings."""

    def __init__(self, settings: HttpSettings, *, member: MemberId) -> None:
        self._tls = settings.tls
        self._plain = settings.plain_subsystems
        self._member = member

    def claimed(self, request: web.Request) -> SubsystemId | None:
        """The subsystem the caller header names, or ``None`` without one. Raises
        :class:`GatewayError` (``client.invalid_identifier``) for a malformed one."""
        for name in CLIENT_HEADERS:
            value = request.headers.get(name)
            if value is None:
                continue
            try:
                return SubsystemId.parse(value.strip())
            except IdentifierError as exc:
                raise GatewayError(
                    f"header {name}: {exc.message}", fault=Fault.CLIENT_INVALID_IDENTIFIER
                ) from None
        return None

    def authenticate(self, request: web.Request) -> CallerContext:
        """The caller of ``request``, authenticated. Raises :class:`GatewayError`:
        ``client.missing_header``, ``client.invalid_identifier``, ``client.unauthenticated``,
        ``client.permission_denied``."""
        client = self.claimed(request)
        if client is None:
            raise GatewayError(
                f"the caller header {CLIENT_HEADERS[0]} (INSTANCE/CLASS/MEMBER/SUBSYSTEM) is "
                "required",
                fault=Fault.CLIENT_MISSING_HEADER,
            )
        self._prove(request, client)
        return CallerContext(
            client=client,
            purpose=_text(request, PURPOSE_HEADER),
            user_id=_text(request, USER_ID_HEADER),
            subject=_text(request, SUBJECT_HEADER),
        )

    def _prove(self, request: web.Request, client: SubsystemId) -> None:
        if client.member != self._member:
            raise GatewayError(
                f"this gateway serves {self._member}; {client} must call through its own",
                fault=Fault.CLIENT_PERMISSION_DENIED,
            )
        if not self._tls:
            if not is_loopback_address(request.remote or ""):
                raise GatewayError(
                    "plain HTTP calls are accepted only from loopback",
                    fault=Fault.CLIENT_UNAUTHENTICATED,
                )
            if client not in self._plain:
                raise GatewayError(
                    f"a plain loopback caller may not act as {client}; use a client certificate",
                    fault=Fault.CLIENT_PERMISSION_DENIED,
                )
            return
        subsystem = _certificate_subsystem(request)
        if subsystem is None:
            raise GatewayError(
                "the caller presented no client certificate naming a subsystem",
                fault=Fault.CLIENT_UNAUTHENTICATED,
            )
        if subsystem != client:
            raise GatewayError(
                f"the caller's certificate names {subsystem}, not {client}",
                fault=Fault.CLIENT_PERMISSION_DENIED,
            )


def _certificate_subsystem(request: web.Request) -> SubsystemId | None:
    certificate = peer_certificate(request)
    if certificate is None:
        return None
    try:
        return subsystem_id_of(certificate)
    except PkiError:
        return None
