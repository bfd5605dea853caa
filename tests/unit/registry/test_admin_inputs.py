"""Untrusted admin-API inputs: descriptor sets and log keys either parse or are refused with
:class:`InvalidRequestError` (``client.invalid_request``); nothing else escapes."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.admin_api import service_methods
from registry.errors import InvalidRequestError
from registry.log_keys import parse_vkey
from ruta.faults import Fault
from tests.unit.registry.test_admin_api import descriptor_set


def test_refusals_carry_the_invalid_request_fault() -> None:
    assert InvalidRequestError("x").fault is Fault.CLIENT_INVALID_REQUEST


@settings(max_examples=300)
@given(data=st.binary(max_size=512))
def test_arbitrary_descriptor_bytes_are_parsed_or_refused(data: bytes) -> None:
    with contextlib.suppress(InvalidRequestError):
        assert all(isinstance(m, str) for m in service_methods(data, "pop.v1.People"))


@settings(max_examples=200)
@given(cut=st.integers(min_value=0), flip=st.integers(min_value=0, max_value=255))
def test_corrupted_descriptor_sets_are_parsed_or_refused(cut: int, flip: int) -> None:
    corrupted = bytearray(descriptor_set())
    corrupted[cut % len(corrupted)] ^= flip
    with contextlib.suppress(InvalidRequestError):
        service_methods(bytes(corrupted), "pop.v1.People")


def test_a_real_descriptor_set_lists_its_methods() -> None:
    assert service_methods(descriptor_set(), "pop.v1.People") == ["Find", "Get"]


@settings(max_examples=300)
@given(text=st.text(max_size=200))
def test_arbitrary_log_keys_are_parsed_or_refused(text: str) -> None:
    with contextlib.suppress(InvalidRequestError):
        parse_vkey(text)
