"""Which HTTP headers a REST call carries across the bus, within the gateway's bounds.

A request's headers go to the provider's REST backend, and its answer's headers come back, only
when their lower-cased name is in the policy (``[limits] request_headers`` /
``response_headers``); the others are not carried (a policy, said in docs/guides/rest.md). Those
the policy lets through must fit ``[limits] max_headers`` and ``max_header_bytes`` (names and
values, UTF-8): more is refused with a fault naming the bound, never silently cut, so what the
backend acts on is what the caller sent and the signed request says. A value that is not an HTTP
field value (a control character: a line break would split it into two headers) is refused too:
a signed ``HttpRequest`` or ``HttpResponse`` need not come from an HTTP parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from gateway.settings import LimitSettings
from ruta.faults import Fault, RutaError
from ruta.v1 import http_pb2

__all__ = ["HeaderLimitError", "carried_headers"]

#: An HTTP field value (RFC 9110 5.5): visible characters, spaces and tabs, no control character.
#: (Nor a lone surrogate: what a parser made of bytes that are not UTF-8.)
_FIELD_VALUE: Final = re.compile(r"[\t\x20-\x7e\x80-\ud7ff\ue000-\U0010ffff]*")


class HeaderLimitError(RutaError):
    """Headers the policy lets through are over the gateway's bounds."""

    default_fault = Fault.CLIENT_INVALID_HEADER


def carried_headers(
    headers: Iterable[tuple[str, str]],
    allowed: frozenset[str],
    limits: LimitSettings,
    *,
    whose: str,
    fault: Fault,
    invalid: Fault = Fault.CLIENT_INVALID_HEADER,
) -> list[http_pb2.HttpHeader]:
    """The ``(name, value)`` pairs whose lower-cased name is ``allowed``, in order, names
    lower-cased. Raises :class:`HeaderLimitError` with ``fault`` (its text naming ``whose``
    headers and the bound) when they are more than ``limits.max_headers`` or larger than
    ``limits.max_header_bytes``, and with ``invalid`` for a value that is no HTTP field value."""
    kept: list[http_pb2.HttpHeader] = []
    size = 0
    for name, value in headers:
        lower = name.lower()
        if lower not in allowed:
            continue
        if not _FIELD_VALUE.fullmatch(value):
            raise HeaderLimitError(
                f"{whose} carries header {lower} with a value that is not an HTTP field value "
                f"(a control character, or bytes that are not UTF-8)",
                fault=invalid,
            )
        size += len(lower) + len(value.encode("utf-8"))
        if len(kept) >= limits.max_headers:
            raise HeaderLimitError(
                f"{whose} carries more than {limits.max_headers} headers that the gateway "
                f"passes on ([limits] max_headers)",
                fault=fault,
            )
        if size > limits.max_header_bytes:
            raise HeaderLimitError(
                f"{whose}'s headers that the gateway passes on are over {limits.max_header_bytes} "
                f"bytes, names and values ([limits] max_header_bytes)",
                fault=fault,
            )
        kept.append(http_pb2.HttpHeader(name=lower, value=value))
    return kept
