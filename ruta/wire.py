"""Protobuf wire-format pieces for the few messages Ruta writes by hand on its hot paths (the log's
leaf records, the frames link's frames): each such writer is held byte for byte to protobuf's own
deterministic serialisation by a test."""

from __future__ import annotations

from typing import Final

__all__ = ["varint"]


#: Every one-byte varint, built once.
_ONE_BYTE_VARINTS: Final = tuple(bytes((i,)) for i in range(0x80))


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf base-128 varint; without a loop for the values under 2**14
    that lengths, tags and small enums mostly take."""
    if value < 0x80:
        if value < 0:
            # Indexing would wrap (-1 -> 0x7f) or fail oddly: a negative is the caller's bug.
            raise ValueError(f"a varint is written for values >= 0, not {value}")
        return _ONE_BYTE_VARINTS[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    # Up to five bytes (under 2**35: seconds and nanoseconds of a timestamp, sizes) written out
    # without the loop's bytearray: about a third cheaper for each.
    if value < 0x200000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
    if value < 0x10000000:
        return bytes(
            (value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14 & 0x7F | 0x80, value >> 21)
        )
    if value < 0x800000000:
        return bytes(
            (
                value & 0x7F | 0x80,
                value >> 7 & 0x7F | 0x80,
                value >> 14 & 0x7F | 0x80,
                value >> 21 & 0x7F | 0x80,
                value >> 28,
            )
        )
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
