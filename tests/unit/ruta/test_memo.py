"""ruta.memo: memos by argument identity return what the function returns, and stay bounded."""

from __future__ import annotations

import pytest

from ruta.memo import memo_by_identity, memo_by_identity2, remember


class _Box:
    """Equal by value, hashed by value: a memo must look at the object, not its value."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Box) and other.value == self.value

    def __hash__(self) -> int:
        raise AssertionError("a memo by identity never hashes its argument")


def test_the_same_object_is_computed_once_and_an_equal_one_again() -> None:
    calls: list[int] = []

    def double(box: _Box) -> int:
        calls.append(box.value)
        return 2 * box.value

    memo = memo_by_identity(double)
    first = _Box(3)
    assert memo(first) == 6
    assert memo(first) == 6
    assert calls == [3]
    assert memo(_Box(3)) == 6
    assert calls == [3, 3]


def test_pairs_are_remembered_per_pair_of_objects() -> None:
    calls: list[tuple[int, int]] = []

    def add(a: _Box, b: _Box) -> int:
        calls.append((a.value, b.value))
        return a.value + b.value

    memo = memo_by_identity2(add)
    a, b = _Box(1), _Box(2)
    assert memo(a, b) == 3
    assert memo(a, b) == 3
    assert memo(b, a) == 3
    assert calls == [(1, 2), (2, 1)]


def test_a_full_memo_drops_its_oldest_entry_and_keeps_its_arguments_alive() -> None:
    calls: list[int] = []

    def same(box: _Box) -> int:
        calls.append(box.value)
        return box.value

    memo = memo_by_identity(same, maxsize=2)
    boxes = [_Box(i) for i in range(3)]
    for box in boxes:
        memo(box)
    memo(boxes[2])
    memo(boxes[0])  # dropped when the third came in
    assert calls == [0, 1, 2, 0]
    # Objects made and dropped at once never alias a remembered one.
    assert [memo(_Box(7)) for _ in range(5)] == [7] * 5


def test_a_failure_is_not_remembered() -> None:
    calls = 0

    def fail(_: _Box) -> int:
        nonlocal calls
        calls += 1
        raise ValueError("no")

    memo = memo_by_identity(fail)
    box = _Box(1)
    for _ in range(2):
        with pytest.raises(ValueError, match="no"):
            memo(box)
    assert calls == 2


def test_remember_keeps_by_value_and_drops_the_oldest_when_full() -> None:
    cache: dict[bytes, int] = {}
    assert remember(cache, b"a", 1, maxsize=2) == 1
    remember(cache, bytes([98]), 2, maxsize=2)
    assert cache[b"b"] == 2  # an equal key, another object
    remember(cache, b"c", 3, maxsize=2)
    assert list(cache) == [b"b", b"c"]
