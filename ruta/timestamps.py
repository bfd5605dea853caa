"""``google.protobuf.Timestamp`` to and from aware UTC datetimes, in one place.

A timestamp read from the wire is untrusted: its seconds or nanos may be out of the range a
datetime can hold, and :func:`from_timestamp` says so with ``ValueError`` for the caller to turn
into its own fault.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

__all__ = ["from_timestamp", "to_timestamp"]


def to_timestamp(at: datetime) -> timestamp_pb2.Timestamp:
    """The Timestamp of ``at`` (an aware datetime; a naive one is taken as UTC)."""
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    """``ts`` as an aware UTC datetime; raises ``ValueError`` when its seconds or nanos are out
    of range."""
    return ts.ToDatetime(tzinfo=UTC)
