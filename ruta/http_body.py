"""Reading an HTTP body whole, but never more than a bound.

``aiohttp.StreamReader.read(n)`` returns as soon as *some* bytes are buffered, so a single call
can hand back the first piece of a body that arrives in several; :func:`read_bounded` keeps
reading until the end of the body or one byte past the bound.
"""

from __future__ import annotations

import aiohttp

__all__ = ["read_bounded"]


async def read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body of ``stream``, or ``None`` when it is longer than ``limit`` bytes.

    Reads at most ``limit + 1`` bytes; raises what the stream raises (``aiohttp.ClientError``,
    ``TimeoutError``) when the connection fails part-way.
    """
    body = bytearray()
    while len(body) <= limit:
        chunk = await stream.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    return None
