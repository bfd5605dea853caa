"""Over HTTP a rate-limit refusal's retry-after hint is a ``Retry-After`` header."""

from __future__ import annotations

import grpc

from gateway.http_faults import fault_response
from ruta.faults import Fault, RutaError


def test_over_http_the_hint_is_a_retry_after_header_in_seconds() -> None:
    error = RutaError("slow down", fault=Fault.SERVER_PROVIDER_RATE_LIMITED, retry_after_ms=1500)
    response = fault_response(error, grpc_status=grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert response.status == 429
    assert response.headers["Retry-After"] == "2"
    plain = fault_response(RutaError("no", fault=Fault.SERVER_PROVIDER_ACCESS_DENIED))
    assert "Retry-After" not in plain.headers
