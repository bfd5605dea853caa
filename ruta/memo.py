"""Memos keyed by the identity of their arguments, for values derived from immutable objects that
a server holds on to (its own certificates, the trust anchors of the configuration in force, a
peer certificate parsed once per PEM).

``functools.lru_cache`` hashes its arguments on every call, and a
:class:`cryptography.x509.Certificate` hashes its whole parsed structure (~15,000 instructions;
a tuple of anchors once per anchor), which made hashing ~5% of a security server's instructions
per exchange. These memos look the arguments up by ``id`` and check the hit with ``is``; each
entry keeps its arguments alive, so an id cannot be reused while it is cached. An equal but
distinct object misses and is computed again, so a memo only ever returns what the function
returns for those arguments (the functions memoised are pure functions of immutable values).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

__all__ = ["DEFAULT_MEMO_SIZE", "memo_by_identity", "memo_by_identity2", "remember"]

#: Entries a memo keeps unless told otherwise (the oldest goes first when full).
DEFAULT_MEMO_SIZE: Final = 256

K = TypeVar("K")
A = TypeVar("A")
B = TypeVar("B")
R = TypeVar("R")


def memo_by_identity(
    function: Callable[[A], R], *, maxsize: int = DEFAULT_MEMO_SIZE
) -> Callable[[A], R]:
    """``function`` of one argument, remembered per argument object (see the module text)."""
    entries: dict[int, tuple[A, R]] = {}

    def memoised(arg: A) -> R:
        hit = entries.get(id(arg))
        if hit is not None and hit[0] is arg:
            return hit[1]
        value = function(arg)
        if len(entries) >= maxsize:
            entries.pop(next(iter(entries)))
        entries[id(arg)] = (arg, value)
        return value

    memoised.__doc__ = function.__doc__
    memoised.__wrapped__ = function  # type: ignore[attr-defined]
    return memoised


def memo_by_identity2(
    function: Callable[[A, B], R], *, maxsize: int = DEFAULT_MEMO_SIZE
) -> Callable[[A, B], R]:
    """``function`` of two arguments, remembered per pair of argument objects."""
    entries: dict[tuple[int, int], tuple[A, B, R]] = {}

    def memoised(first: A, second: B) -> R:
        key = (id(first), id(second))
        hit = entries.get(key)
        if hit is not None and hit[0] is first and hit[1] is second:
            return hit[2]
        value = function(first, second)
        if len(entries) >= maxsize:
            entries.pop(next(iter(entries)))
        entries[key] = (first, second, value)
        return value

    memoised.__doc__ = function.__doc__
    memoised.__wrapped__ = function  # type: ignore[attr-defined]
    return memoised


def remember(cache: dict[K, R], key: K, value: R, *, maxsize: int = DEFAULT_MEMO_SIZE) -> R:
    """Keep ``value`` in ``cache`` under ``key`` (a memo by value, for keys that arrive as new but
    equal objects: wire bytes, identifier text) and return it; when ``cache`` holds ``maxsize``
    entries, the oldest goes first."""
    if len(cache) >= maxsize:
        cache.pop(next(iter(cache)))
    cache[key] = value
    return value
