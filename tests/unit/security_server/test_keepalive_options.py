"""Keepalive settings become the gRPC options of peer channels and of the listeners."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from security_server.settings import KeepaliveSettings
from security_server.transport import keepalive_options, ping_policy_options


def test_defaults_ping_idle_peer_links_and_close_dead_ones() -> None:
    settings = KeepaliveSettings()
    options = dict(
        keepalive_options(
            time_seconds=settings.time_seconds,
            timeout_seconds=settings.timeout_seconds,
            permit_without_calls=settings.permit_without_calls,
        )
    )
    assert options["grpc.keepalive_time_ms"] == 20_000
    assert options["grpc.keepalive_timeout_ms"] == 10_000
    # An unanswered ping closes the connection after the keepalive timeout, not gRPC's minute.
    assert options["grpc.http2.ping_timeout_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0


def test_a_listener_accepts_pings_as_often_as_peers_send_them() -> None:
    settings = KeepaliveSettings()
    policy = dict(ping_policy_options(settings.min_ping_interval_seconds))
    assert policy["grpc.keepalive_permit_without_calls"] == 1
    # At or below the default ping interval of peers: no GOAWAY "too_many_pings".
    assert policy["grpc.http2.min_ping_interval_without_data_ms"] <= settings.time_seconds * 1000


@pytest.mark.parametrize(
    "field", [{"time_seconds": 0.1}, {"timeout_seconds": 0}, {"min_ping_interval_seconds": 0.5}]
)
def test_keepalive_settings_are_bounded(field: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        KeepaliveSettings.model_validate(field)
