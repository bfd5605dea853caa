"""RFC 6962 / RFC 9162 Merkle trees: hashing, proofs from stored subtrees, and their verification.

A log stores the hash of every *complete* subtree, keyed by ``(level, index)``: the subtree of
``2**level`` leaves starting at leaf ``index * 2**level`` (level 0 holds the leaf hashes). A
subtree is written once, when its last leaf is appended, and never changes (ADR 0002). From such a
store every root and proof of any tree size is a function of at most ``O(log n)`` node hashes:

- :class:`CompactRange` appends leaf hashes and returns the subtrees each append completes;
- :func:`inclusion_proof`, :func:`consistency_proof` and :func:`root_from_subtrees` read the nodes
  they need through a ``get_subtree_hash(level, index)`` callable;
- :func:`inclusion_proof_plan`, :func:`consistency_proof_plan` and :func:`root_plan` first name
  the keys, so a database store can fetch all of them in one query, then assemble the result.

:func:`root_and_inclusion_proofs` builds a small tree in memory with every leaf's proof at once
(a batch signature). Verification (:func:`verify_inclusion`, :func:`root_from_inclusion`,
:func:`verify_consistency`) follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 plus the rules the
shared test vectors require: a leaf hash must be 32 bytes; a consistency check refuses
``size1 == 0`` and ``size2 < size1``, and for ``size1 == size2`` accepts only an empty proof with
equal roots. Every failure raises :class:`MerkleVerificationError`; nothing else escapes for
well-typed input.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Self, TypeAlias

from ruta.faults import Fault, RutaError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_PROOF_LENGTH",
    "MAX_TREE_SIZE",
    "CompactRange",
    "MemoryTree",
    "MerkleError",
    "MerkleRangeError",
    "MerkleVerificationError",
    "MissingSubtreeError",
    "NodeKey",
    "ProofPlan",
    "SubtreeHashGetter",
    "consistency_proof",
    "consistency_proof_plan",
    "fetch_plan",
    "inclusion_proof",
    "inclusion_proof_plan",
    "leaf_hash",
    "node_hash",
    "root_and_inclusion_proofs",
    "root_from_inclusion",
    "root_from_leaf_hashes",
    "root_from_subtrees",
    "root_plan",
    "verify_consistency",
    "verify_inclusion",
]

#: Size of every hash in the tree (SHA-256).
HASH_SIZE: Final = 32
#: Root of the empty tree: SHA-256 of the empty string.
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
#: Largest tree size accepted anywhere (sizes travel as unsigned 64-bit integers).
MAX_TREE_SIZE: Final = 2**64 - 1
#: Longest proof accepted: a proof for a tree of fewer than 2**64 leaves has at most 64 hashes.
MAX_PROOF_LENGTH: Final = 64

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"

#: ``(level, index)``: the complete subtree of ``2**level`` leaves from leaf ``index * 2**level``.
NodeKey: TypeAlias = tuple[int, int]
#: Reads one complete subtree hash from a store; raises (anything) if the store lacks it.
SubtreeHashGetter: TypeAlias = Callable[[int, int], bytes]


class MerkleError(RutaError):
    """Root of the errors this module raises."""

    default_fault = Fault.CLIENT_INVALID_PROOF


class MerkleVerificationError(MerkleError):
    """A proof, root or leaf hash does not verify; the message says which check failed."""

    default_fault = Fault.CLIENT_INVALID_PROOF


class MerkleRangeError(MerkleError):
    """A proof or root was asked for an index or size the tree cannot have (a caller's mistake)."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


class MissingSubtreeError(MerkleError):
    """A store did not supply a subtree hash a proof needs (the store is behind or damaged)."""

    default_fault = Fault.SERVER_PROVIDER_INTERNAL_ERROR


# --- hashing -------------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """Combine hashes of consecutive, decreasing-size subtrees into the root over all of them."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> bytes:
    """Return the tree head over ``leaf_hashes`` in order (``EMPTY_ROOT`` for none), in O(n)."""
    frontier = CompactRange()
    for h in leaf_hashes:
        frontier.append(h)
    return frontier.root()


def root_and_inclusion_proofs(leaf_hashes: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """Return the tree head over ``leaf_hashes`` and the inclusion proof of every leaf, in one
    pass over the levels (O(n log n) hashes copied, n - 1 hashes computed).

    Building the tree bottom-up, pairing neighbours and carrying a level's odd last node up
    unchanged, gives the RFC 6962 tree; a leaf's RFC 9162 inclusion proof is its sibling on
    each level where it has one. For one leaf the root is its hash and the proof is empty.
    Raises :class:`MerkleRangeError` for no leaves or a hash that is not 32 bytes.
    """
    if not leaf_hashes:
        raise MerkleRangeError("a tree of no leaves has no inclusion proofs")
    if any(len(h) != HASH_SIZE for h in leaf_hashes):
        raise MerkleRangeError(f"every leaf hash is {HASH_SIZE} bytes")
    proofs: list[list[bytes]] = [[] for _ in leaf_hashes]
    level = list(leaf_hashes)
    # positions[i]: leaf i's node index on the current level.
    positions = list(range(len(level)))
    while len(level) > 1:
        last = len(level) - 1
        for leaf, pos in enumerate(positions):
            sibling = pos ^ 1
            if sibling <= last:
                proofs[leaf].append(level[sibling])
            positions[leaf] = pos >> 1
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, last, 2)]
        if len(level) & 1:
            paired.append(level[last])
        level = paired
    return level[0], proofs


# --- verification --------------------------------------------------------------------------------


def _check_proof_shape(proof: Sequence[bytes]) -> None:
    if len(proof) > MAX_PROOF_LENGTH:
        raise MerkleVerificationError(
            f"proof has {len(proof)} hashes; at most {MAX_PROOF_LENGTH} are possible"
        )
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise MerkleVerificationError(
                f"proof hash {i} is {len(h)} bytes; every hash is {HASH_SIZE} bytes"
            )


def _check_size(name: str, value: int) -> None:
    if not 0 <= value <= MAX_TREE_SIZE:
        raise MerkleVerificationError(f"{name} {value} is outside 0..2**64-1")


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def root_from_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Return the root that ``proof`` leads to from ``leaf_hash`` as leaf ``index`` of ``size``.

    The walk of RFC 9162 section 2.1.3.2 without the final comparison: a caller that trusts a
    root only through a signature over it (a batch signature) recomputes the root here and
    checks the signature. Raises :class:`MerkleVerificationError` when the leaf hash is not 32
    bytes, ``index >= size``, or the proof has the wrong length or a malformed hash.
    """
    if len(leaf_hash) != HASH_SIZE:
        raise MerkleVerificationError(
            f"leaf hash is {len(leaf_hash)} bytes; a leaf hash is {HASH_SIZE} bytes"
        )
    _check_size("tree size", size)
    if not 0 <= index < size:
        raise MerkleVerificationError(f"leaf index {index} is not inside a tree of size {size}")
    _check_proof_shape(proof)
    fn, sn = index, size - 1
    result = leaf_hash
    for p in proof:
        if sn == 0:
            raise MerkleVerificationError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            result = node_hash(p, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleVerificationError("inclusion proof is shorter than the tree is deep")
    return result


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    Returns nothing on success. Raises :class:`MerkleVerificationError` when the leaf hash is not
    32 bytes, ``index >= size``, the proof has the wrong length or a malformed hash, or the
    recomputed root differs from ``root``.
    """
    if not _same(root_from_inclusion(leaf_hash, index, size, proof), root):
        raise MerkleVerificationError(
            f"inclusion proof for leaf {index} does not lead to the root of tree size {size}"
        )


def _consistency_roots(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> tuple[bytes, bytes]:
    """Walk a consistency proof (RFC 9162 2.1.4.2); return the two roots it leads to."""
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        # size1 is a power of two: its root is a node of the larger tree, left implicit.
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = path[0]
    for c in path[1:]:
        if sn == 0:
            raise MerkleVerificationError("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            first = node_hash(c, first)
            second = node_hash(c, second)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            second = node_hash(second, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleVerificationError("consistency proof is shorter than the tree is deep")
    return first, second


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size1`` leaves with ``root1`` is a prefix of ``size2`` / ``root2``.

    Returns nothing on success. Raises :class:`MerkleVerificationError` when ``size1`` is 0 (a
    check against the empty tree proves nothing; callers handle that case themselves), when
    ``size2 < size1``, when equal sizes come with a proof or with different roots, or when the
    proof does not lead to both roots.
    """
    _check_size("size1", size1)
    _check_size("size2", size2)
    if size1 == 0:
        raise MerkleVerificationError("consistency with the empty tree cannot be proved")
    if size2 < size1:
        raise MerkleVerificationError(f"size2 {size2} is smaller than size1 {size1}")
    if size1 == size2:
        if proof:
            raise MerkleVerificationError("equal tree sizes need an empty consistency proof")
        if not _same(root1, root2):
            raise MerkleVerificationError(f"two different roots for tree size {size1}")
        return
    if not proof:
        raise MerkleVerificationError("consistency proof is empty")
    _check_proof_shape(proof)
    if len(root1) != HASH_SIZE or len(root2) != HASH_SIZE:
        raise MerkleVerificationError(f"a root is not {HASH_SIZE} bytes")
    first, second = _consistency_roots(size1, size2, proof, root1)
    if not _same(first, root1):
        raise MerkleVerificationError(
            f"consistency proof does not lead to the root of size {size1}"
        )
    if not _same(second, root2):
        raise MerkleVerificationError(
            f"consistency proof does not lead to the root of size {size2}"
        )


# --- proof plans from complete subtrees ----------------------------------------------------------


def _range_keys(begin: int, end: int) -> tuple[NodeKey, ...]:
    """Keys of the complete subtrees that tile ``[begin, end)``, largest first.

    ``begin`` is a multiple of the smallest power of two not below ``end - begin`` (true of every
    node range in an RFC 6962 tree), so the right-fold of their hashes is the node's hash.
    """
    keys: list[NodeKey] = []
    while begin < end:
        size = 1 << ((end - begin).bit_length() - 1)
        if begin:
            size = min(size, begin & -begin)
        level = size.bit_length() - 1
        keys.append((level, begin >> level))
        begin += size
    return tuple(keys)


def _split(n: int) -> int:
    """Largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


@dataclass(frozen=True, slots=True)
class ProofPlan:
    """The subtree hashes a proof (or root) needs, and how to assemble it from them.

    ``keys`` lists each needed ``(level, index)`` once. ``assemble`` turns a mapping holding (at
    least) those keys into the proof hashes, in the order RFC 9162 sends them.
    """

    #: One tuple of keys per output hash; each output hash is the right-fold of its keys' hashes.
    parts: tuple[tuple[NodeKey, ...], ...]

    @property
    def keys(self) -> tuple[NodeKey, ...]:
        """Each needed subtree key once, in first-use order."""
        return tuple(dict.fromkeys(k for part in self.parts for k in part))

    def assemble(self, hashes: Mapping[NodeKey, bytes]) -> list[bytes]:
        """Return the proof hashes built from ``hashes``.

        Raises :class:`MissingSubtreeError` if a needed key is missing or a hash is not 32
        bytes (the store is behind or damaged).
        """
        out: list[bytes] = []
        for part in self.parts:
            found: list[bytes] = []
            for key in part:
                h = hashes.get(key)
                if h is None or len(h) != HASH_SIZE:
                    raise MissingSubtreeError(f"subtree {key} is not available")
                found.append(h)
            out.append(_fold_right(found))
        return out

    def fetch(self, get_subtree_hash: SubtreeHashGetter) -> list[bytes]:
        """Assemble the proof reading each key once through ``get_subtree_hash``."""
        return self.assemble({k: get_subtree_hash(*k) for k in self.keys})


async def fetch_plan(
    plan: ProofPlan,
    get_subtree_hashes: Callable[[Sequence[NodeKey]], Awaitable[Mapping[NodeKey, bytes]]],
) -> list[bytes]:
    """Assemble ``plan`` from one awaited batch read (``get_subtree_hashes(plan.keys)``)."""
    return plan.assemble(await get_subtree_hashes(plan.keys))


def _check_request_size(size: int) -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise MerkleRangeError(f"tree size {size} is outside 0..2**64-1")


def root_plan(size: int) -> ProofPlan:
    """Plan for the root of the tree of ``size >= 1`` leaves: one part (the frontier keys).

    Raises :class:`MerkleRangeError` for ``size < 1`` (the empty root is :data:`EMPTY_ROOT`).
    """
    _check_request_size(size)
    if size == 0:
        raise MerkleRangeError("the empty tree has no subtrees; its root is EMPTY_ROOT")
    return ProofPlan(parts=(_range_keys(0, size),))


def root_from_subtrees(size: int, get_subtree_hash: SubtreeHashGetter) -> bytes:
    """Return the root of the tree of ``size`` leaves from at most log2(size)+1 stored subtrees."""
    if size == 0:
        return EMPTY_ROOT
    return root_plan(size).fetch(get_subtree_hash)[0]


def inclusion_proof_plan(index: int, size: int) -> ProofPlan:
    """Plan for the inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

    Raises :class:`MerkleRangeError` unless ``0 <= index < size``.
    """
    _check_request_size(size)
    if not 0 <= index < size:
        raise MerkleRangeError(f"leaf index {index} is not inside a tree of size {size}")
    parts: list[tuple[NodeKey, ...]] = []
    begin, n, m = 0, size, index
    # Walk from the root down; RFC 9162 sends the siblings from the leaf up, so reverse at the end.
    while n > 1:
        k = _split(n)
        if m < k:
            parts.append(_range_keys(begin + k, begin + n))
            n = k
        else:
            parts.append(_range_keys(begin, begin + k))
            begin, m, n = begin + k, m - k, n - k
    parts.reverse()
    return ProofPlan(parts=tuple(parts))


def inclusion_proof(index: int, size: int, get_subtree_hash: SubtreeHashGetter) -> list[bytes]:
    """Return the RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

    Raises :class:`MerkleRangeError` unless ``0 <= index < size``; propagates what
    ``get_subtree_hash`` raises.
    """
    return inclusion_proof_plan(index, size).fetch(get_subtree_hash)


def consistency_proof_plan(size1: int, size2: int) -> ProofPlan:
    """Plan for the RFC 9162 consistency proof from tree size ``size1`` to ``size2``.

    ``size1 == 0`` and ``size1 == size2`` give an empty plan (the proof is empty; note that
    :func:`verify_consistency` refuses ``size1 == 0``). Raises :class:`MerkleRangeError` for
    ``size1 > size2``.
    """
    _check_request_size(size1)
    _check_request_size(size2)
    if size1 > size2:
        raise MerkleRangeError(f"size1 {size1} is larger than size2 {size2}")
    parts: list[tuple[NodeKey, ...]] = []
    if 0 < size1 < size2:
        begin, n, m, complete = 0, size2, size1, True
        while m != n:
            k = _split(n)
            if m <= k:
                parts.append(_range_keys(begin + k, begin + n))
                n = k
            else:
                parts.append(_range_keys(begin, begin + k))
                begin, m, n, complete = begin + k, m - k, n - k, False
        if not complete:
            parts.append(_range_keys(begin, begin + m))
        parts.reverse()
    return ProofPlan(parts=tuple(parts))


def consistency_proof(size1: int, size2: int, get_subtree_hash: SubtreeHashGetter) -> list[bytes]:
    """Return the RFC 9162 consistency proof from tree size ``size1`` to ``size2``.

    Empty for ``size1 == 0`` or ``size1 == size2``. Raises :class:`MerkleRangeError` for
    ``size1 > size2``; propagates what ``get_subtree_hash`` raises.
    """
    return consistency_proof_plan(size1, size2).fetch(get_subtree_hash)


# --- appending -----------------------------------------------------------------------------------


class CompactRange:
    """The frontier of a tree: one hash per complete subtree that tiles ``[0, size)``.

    Appending a leaf hash is O(log n) and returns every subtree the append completed, which is
    exactly what a store must write. Not safe for concurrent use; a log has one writer.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, *, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """Start from ``size`` leaves whose frontier hashes (largest subtree first) are ``hashes``.

        Raises :class:`MerkleRangeError` if the number or length of ``hashes`` does not fit
        ``size``.
        """
        _check_request_size(size)
        if len(hashes) != size.bit_count() or any(len(h) != HASH_SIZE for h in hashes):
            raise MerkleRangeError(
                f"a frontier of tree size {size} is {size.bit_count()} hashes of {HASH_SIZE} bytes"
            )
        self._size = size
        self._hashes = list(hashes)

    def copy(self) -> Self:
        """Another frontier of the same size and hashes, appended to independently (this one
        was checked when it was made: the copy is not checked again)."""
        copied = type(self).__new__(type(self))
        copied._size = self._size
        copied._hashes = self._hashes.copy()
        return copied

    @staticmethod
    def frontier_keys(size: int) -> tuple[NodeKey, ...]:
        """Keys of the complete subtrees a frontier of ``size`` leaves holds, largest first."""
        _check_request_size(size)
        return _range_keys(0, size)

    @classmethod
    def from_subtrees(cls, size: int, get_subtree_hash: SubtreeHashGetter) -> Self:
        """Restore the frontier of ``size`` leaves from stored complete subtrees."""
        return cls(size=size, hashes=[get_subtree_hash(*k) for k in cls.frontier_keys(size)])

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Frontier hashes, largest subtree first (the keys are :meth:`frontier_keys`)."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Append one leaf hash; return the ``(level, index, hash)`` of every subtree it completes.

        The first entry is the leaf itself at level 0. Raises :class:`MerkleRangeError` for a hash
        that is not 32 bytes or a full tree; the frontier is unchanged then.
        """
        if len(leaf_hash) != HASH_SIZE:
            raise MerkleRangeError(f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf_hash)}")
        if self._size >= MAX_TREE_SIZE:
            raise MerkleRangeError("the tree is full")
        level, index, h = 0, self._size, leaf_hash
        completed = [(0, index, h)]
        while index & 1:
            h = node_hash(self._hashes.pop(), h)
            level += 1
            index >>= 1
            completed.append((level, index, h))
        self._hashes.append(h)
        self._size += 1
        return completed

    def extend(self, leaf_hashes: Sequence[bytes]) -> list[tuple[int, int, bytes]]:
        """Append each of ``leaf_hashes`` in turn; return ``(last, level, hash)`` of every
        subtree above the leaves that they complete (level >= 1), in the order completed,
        ``last`` the index of the leaf that completes it: what :meth:`append` returns for each
        leaf after its first entry, each subtree named by its last leaf instead of its index
        within its level (``index = (last + 1 >> level) - 1``), in one call for many leaves.

        Raises :class:`MerkleRangeError` for a hash that is not 32 bytes or more leaves than
        the tree holds; the frontier is unchanged then.
        """
        if not set(map(len, leaf_hashes)) <= {HASH_SIZE}:
            raise MerkleRangeError(f"a leaf hash is {HASH_SIZE} bytes")
        size = self._size
        if len(leaf_hashes) > MAX_TREE_SIZE - size:
            raise MerkleRangeError("the tree is full")
        hashes = self._hashes
        pop = hashes.pop
        sha256 = hashlib.sha256
        completed: list[tuple[int, int, bytes]] = []
        for leaf in leaf_hashes:
            h, index, level = leaf, size, 0
            while index & 1:
                h = sha256(_NODE_PREFIX + pop() + h).digest()
                level += 1
                index >>= 1
                completed.append((size, level, h))
            hashes.append(h)
            size += 1
        self._size = size
        return completed

    def root(self) -> bytes:
        """Root of the tree of :attr:`size` leaves (``EMPTY_ROOT`` when empty)."""
        if not self._hashes:
            return EMPTY_ROOT
        return _fold_right(self._hashes)


class MemoryTree:
    """A complete in-memory tree: a :class:`CompactRange` plus a dict of every complete subtree.

    The honest twin of a log store for tests and for offline tools: same node keys, same proofs.
    """

    __slots__ = ("_frontier", "_nodes")

    def __init__(self) -> None:
        self._frontier = CompactRange()
        self._nodes: dict[NodeKey, bytes] = {}

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._frontier.size

    def append(self, leaf_hash: bytes) -> int:
        """Append one leaf hash; return its index."""
        index = self._frontier.size
        for level, idx, h in self._frontier.append(leaf_hash):
            self._nodes[(level, idx)] = h
        return index

    def append_data(self, data: bytes) -> int:
        """Append the leaf hash of ``data``; return its index."""
        return self.append(leaf_hash(data))

    def get_subtree_hash(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree ``(level, index)``; ``KeyError`` if it is not complete."""
        return self._nodes[(level, index)]

    def root(self, size: int | None = None) -> bytes:
        """Root of the first ``size`` leaves (default: all)."""
        size = self.size if size is None else size
        if size > self.size:
            raise MerkleRangeError(f"tree size {size} is beyond the {self.size} leaves appended")
        return root_from_subtrees(size, self.get_subtree_hash)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of leaf ``index`` in the first ``size`` leaves (default: all)."""
        size = self.size if size is None else size
        if size > self.size:
            raise MerkleRangeError(f"tree size {size} is beyond the {self.size} leaves appended")
        return inclusion_proof(index, size, self.get_subtree_hash)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Consistency proof from ``size1`` leaves to ``size2`` (default: all)."""
        size2 = self.size if size2 is None else size2
        if size2 > self.size:
            raise MerkleRangeError(f"tree size {size2} is beyond the {self.size} leaves appended")
        return consistency_proof(size1, size2, self.get_subtree_hash)
