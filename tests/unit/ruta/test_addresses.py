"""ruta.addresses: the one HOST:PORT parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ruta.addresses import join_address, split_address


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:4470", ("127.0.0.1", 4470)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:80", ("::1", 80)),
        ("[2001:db8::1]:65535", ("2001:db8::1", 65535)),
        ("registry.example:443", ("registry.example", 443)),
    ],
)
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "",
        "host",
        ":80",
        "[]:80",
        "host:",
        "host:http",
        "host:-1",
        "host:70000",
        "host:\u00b2",
        "host:\u0663",
    ],
)
def test_refusals_name_what_and_the_form(address: str) -> None:
    with pytest.raises(ValueError, match=r"^peer address .* must have the form host:port"):
        split_address(address, what="peer address")


@given(st.text(max_size=40))
def test_any_text_splits_or_is_refused_with_value_error(text: str) -> None:
    try:
        host, port = split_address(text)
    except ValueError:
        return
    assert host
    assert 0 <= port <= 65535


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [("127.0.0.1", 80, "127.0.0.1:80"), ("::1", 0, "[::1]:0"), ("h.example", 443, "h.example:443")],
)
def test_join_address_inverts_split(host: str, port: int, expected: str) -> None:
    assert join_address(host, port) == expected
    assert split_address(expected) == (host, port)
