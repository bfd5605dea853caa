"""Refusals over HTTP: ``{"type": CODE, "message": TEXT, "detail": FAULT_ID}`` with the status
:func:`ruta.faults.http_status_of` gives (DESIGN.md "Faults"), the same codes as over gRPC."""

from __future__ import annotations

import json
from typing import Final

import grpc
from aiohttp import web

from ruta.faults import MAX_FAULT_TEXT_LENGTH, Fault, RutaError, http_status_of, report

__all__ = ["JSON_TYPE", "GatewayError", "fault_response", "json_response"]

JSON_TYPE: Final = "application/json"


class GatewayError(RutaError):
    """A refusal by the gateway itself (the caller's mistakes, mostly)."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


def json_response(
    value: object, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        status=status,
        content_type=JSON_TYPE,
        charset="utf-8",
        headers=headers,
    )


def fault_response(
    error: RutaError,
    *,
    fault_id: str | None = None,
    grpc_status: grpc.StatusCode | None = None,
    http_status: int | None = None,
    fault_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The JSON refusal for ``error``, logged once under its fault id (a peer's when given).
    A load limit's retry-after hint (``ruta-retry-after-ms``) becomes ``Retry-After`` (seconds,
    rounded up)."""
    rep = report(error, fault_id=fault_id)
    if rep.retry_after_ms is not None:
        headers = {**(headers or {}), "Retry-After": str(max(1, -(-rep.retry_after_ms // 1000)))}
    status = (
        http_status if http_status is not None else http_status_of(error.fault, status=grpc_status)
    )
    body = {
        "type": fault_type or str(error.fault),
        "message": rep.details[:MAX_FAULT_TEXT_LENGTH],
        "detail": rep.fault_id,
    }
    return json_response(body, status=status, headers=headers)
