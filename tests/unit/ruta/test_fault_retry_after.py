"""The rate-limit fault: its gRPC and HTTP status and the retry-after hint on the wire."""

from __future__ import annotations

import grpc

from ruta.faults import (
    MAX_RETRY_AFTER_MS,
    RETRY_AFTER_HEADER,
    Fault,
    RutaError,
    http_status_of,
    report,
    retry_after_of,
    status_of,
)


def test_rate_limited_is_resource_exhausted_and_429_over_http() -> None:
    assert status_of(Fault.SERVER_PROVIDER_RATE_LIMITED) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert http_status_of(Fault.SERVER_PROVIDER_RATE_LIMITED) == 429


def test_the_hint_travels_in_trailing_metadata_and_is_read_back() -> None:
    error = RutaError("slow down", fault=Fault.SERVER_PROVIDER_RATE_LIMITED, retry_after_ms=250)
    metadata = report(error).trailing_metadata
    assert (RETRY_AFTER_HEADER, "250") in metadata
    assert retry_after_of(metadata) == 250


def test_a_refusal_without_a_hint_carries_none() -> None:
    metadata = report(RutaError("no", fault=Fault.SERVER_PROVIDER_ACCESS_DENIED)).trailing_metadata
    assert RETRY_AFTER_HEADER not in dict(metadata)
    assert retry_after_of(metadata) is None


def test_a_peers_hint_is_bounded_and_garbage_ignored() -> None:
    assert retry_after_of([(RETRY_AFTER_HEADER, "99999999999999")]) is None
    assert retry_after_of([(RETRY_AFTER_HEADER, b"7200000")]) == MAX_RETRY_AFTER_MS
    assert retry_after_of([(RETRY_AFTER_HEADER, "-5")]) is None
    assert retry_after_of([(RETRY_AFTER_HEADER, "soon")]) is None
    huge = RutaError("x", fault=Fault.SERVER_PROVIDER_RATE_LIMITED, retry_after_ms=10**12)
    assert report(huge).retry_after_ms == MAX_RETRY_AFTER_MS
