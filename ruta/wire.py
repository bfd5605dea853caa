"""Protobuf wire-format pieces for the few messages Ruta writes by hand on its hot paths (the log's
leaf records, the frames link's frames): each such writer is held byte for byte to protobuf's own
deterministic serialisation by a test."""

from __future__ import annotations

__all__ = ["varint"]


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
