"""The hand-written varint is protobuf's own, on both sides of its short paths."""

from __future__ import annotations

import pytest

from ruta.v1 import log_pb2
from ruta.wire import varint


def test_varint_is_protobufs() -> None:
    for value in (*range(1, 0x4100), 2**21 - 1, 2**21, 2**63 - 1):
        assert b"\x08" + varint(value) == log_pb2.LogRecord(sequence=value).SerializeToString()
    assert varint(0) == b"\x00"


def test_varint_around_each_length_is_protobufs() -> None:
    """Each byte length's first and last value (the written-out branches and the loop)."""
    for bits in range(7, 64, 7):
        for value in (2**bits - 1, 2**bits, 2**bits + 1):
            if value < 2**64:
                encoded = log_pb2.LogRecord(sequence=value).SerializeToString()
                assert b"\x08" + varint(value) == encoded


@pytest.mark.parametrize("value", [-1, -5, -128, -129, -(2**40)])
def test_a_negative_value_is_refused_not_wrapped(value: int) -> None:
    with pytest.raises(ValueError, match="values >= 0"):
        varint(value)
