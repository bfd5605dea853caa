"""Pure helpers of the consumer proxy."""

from __future__ import annotations

import pytest

from security_server.consumer import is_loopback_peer


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        ("ipv4:127.0.0.1:5000", True),
        ("ipv4:127.1.2.3:1", True),
        ("ipv6:[::1]:5000", True),
        ("ipv6:[::ffff:127.0.0.1]:5000", True),
        ("ipv4:10.0.0.1:5000", False),
        ("ipv6:[::ffff:10.0.0.1]:5000", False),
        ("ipv6:[2001:db8::1]:5000", False),
        ("unix:/tmp/socket", False),
        ("", False),
        ("ipv4:not-an-ip:1", False),
    ],
)
def testis_loopback_peer(peer: str, loopback: bool) -> None:
    assert is_loopback_peer(peer) is loopback
