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


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),  # noqa: DTZ001 - hypothesis takes naive bounds
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001 - hypothesis takes naive bounds
        timezones=st.one_of(st.none(), st.timezones()),
    )
)
def test_same_values_as_protobufs_own_conversions(at: datetime) -> None:
    """The shortcut computes what ``Timestamp.FromDatetime``/``ToDatetime`` compute."""
    theirs = timestamp_pb2.Timestamp()
    theirs.FromDatetime(at)
    ours = to_timestamp(at)
    assert (ours.seconds, ours.nanos) == (theirs.seconds, theirs.nanos)
    assert from_timestamp(ours) == theirs.ToDatetime(tzinfo=UTC)
    assert from_timestamp(ours).tzinfo is UTC
