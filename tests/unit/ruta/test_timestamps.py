"""ruta.timestamps: round trip, and out-of-range wire values refused with ValueError."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from ruta.timestamps import from_timestamp, to_timestamp


@given(st.datetimes(timezones=st.just(UTC)))
def test_round_trip(at: datetime) -> None:
    assert from_timestamp(to_timestamp(at)) == at


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(2**62, 0), (-(2**62), 0), (0, -1), (0, 1_000_000_000)]
)
def test_out_of_range_is_value_error(seconds: int, nanos: int) -> None:
    with pytest.raises(ValueError, match="Timestamp is not valid"):
        from_timestamp(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
