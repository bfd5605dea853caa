from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruta.faults import Fault
from ruta.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    MemoryTree,
    MerkleRangeError,
    MerkleVerificationError,
    MissingSubtreeError,
    NodeKey,
    consistency_proof_plan,
    fetch_plan,
    inclusion_proof_plan,
    leaf_hash,
    node_hash,
    root_and_inclusion_proofs,
    root_from_inclusion,
    root_from_leaf_hashes,
    root_plan,
    verify_consistency,
    verify_inclusion,
)
from tests.unit.ruta import merkle_reference as ref

#: The transparency-dev/merkle vectors, vendored with their licence (see their README.md).
VECTORS = Path(__file__).resolve().parents[2] / "testdata" / "merkle"


def _vectors(kind: str) -> list[Any]:
    folder = VECTORS / kind
    if not folder.is_dir():
        # One failing case instead of a silently empty parametrization.
        return [pytest.param(None, id=f"missing-{kind}-vectors")]
    files = sorted(folder.rglob("*.json"))
    return [pytest.param(p, id=str(p.relative_to(folder))) for p in files]


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _load(path: Path | None) -> dict[str, Any]:
    if path is None:
        pytest.fail(f"Merkle test vectors not found at {VECTORS}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("path", _vectors("inclusion"))
def test_inclusion_vector(path: Path | None) -> None:
    v = _load(path)
    args = (
        _b64(v["leafHash"]),
        v["leafIdx"],
        v["treeSize"],
        [_b64(p) for p in v["proof"] or []],
        _b64(v["root"]),
    )
    if v["wantErr"]:
        with pytest.raises(MerkleVerificationError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _vectors("consistency"))
def test_consistency_vector(path: Path | None) -> None:
    v = _load(path)
    args = (
        v["size1"],
        v["size2"],
        [_b64(p) for p in v["proof"] or []],
        _b64(v["root1"]),
        _b64(v["root2"]),
    )
    if v["wantErr"]:
        with pytest.raises(MerkleVerificationError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_vector_counts() -> None:
    """Guards against a vector folder that silently lost files."""
    assert len(list((VECTORS / "inclusion").rglob("*.json"))) >= 90
    assert len(list((VECTORS / "consistency").rglob("*.json"))) >= 90


# The README's eight leaf inputs and the roots of each prefix.
README_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                 "606162636465666768696a6b6c6d6e6f"]  # fmt: skip
README_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.parametrize("size", range(9))
def test_known_roots(size: int) -> None:
    hashes = [leaf_hash(bytes.fromhex(x)) for x in README_LEAVES[:size]]
    assert root_from_leaf_hashes(hashes).hex() == README_ROOTS[size]
    tree = MemoryTree()
    for h in hashes:
        tree.append(h)
    assert tree.root().hex() == README_ROOTS[size]


def test_empty_root_and_hash_prefixes() -> None:
    assert EMPTY_ROOT.hex() == README_ROOTS[0]
    assert leaf_hash(b"") != node_hash(b"", b"")
    assert len(leaf_hash(b"x")) == HASH_SIZE


@pytest.mark.parametrize(
    ("index", "size", "keys"),
    [
        (0, 1, []),
        (0, 2, [(0, 1)]),
        (2, 3, [(1, 0)]),
        (0, 3, [(0, 1), (0, 2)]),
        (0, 7, [(0, 1), (1, 1), (1, 2), (0, 6)]),
        (6, 7, [(1, 2), (2, 0)]),
        (5, 8, [(0, 4), (1, 3), (2, 0)]),
    ],
)
def test_inclusion_plan_keys(index: int, size: int, keys: list[NodeKey]) -> None:
    assert list(inclusion_proof_plan(index, size).keys) == keys


@pytest.mark.parametrize(
    ("size1", "size2", "keys"),
    [
        (0, 5, []),
        (5, 5, []),
        (1, 2, [(0, 1)]),
        (2, 3, [(0, 2)]),
        (3, 7, [(0, 2), (0, 3), (1, 0), (1, 2), (0, 6)]),
        (4, 8, [(2, 1)]),
        (6, 8, [(1, 2), (1, 3), (2, 0)]),
    ],
)
def test_consistency_plan_keys(size1: int, size2: int, keys: list[NodeKey]) -> None:
    assert list(consistency_proof_plan(size1, size2).keys) == keys


@pytest.mark.parametrize(
    ("call", "fault"),
    [
        (lambda: inclusion_proof_plan(3, 3), Fault.CLIENT_INVALID_REQUEST),
        (lambda: inclusion_proof_plan(-1, 3), Fault.CLIENT_INVALID_REQUEST),
        (lambda: consistency_proof_plan(4, 3), Fault.CLIENT_INVALID_REQUEST),
        (lambda: root_plan(0), Fault.CLIENT_INVALID_REQUEST),
        (lambda: root_plan(2**64), Fault.CLIENT_INVALID_REQUEST),
        (lambda: CompactRange(size=3, hashes=[EMPTY_ROOT]), Fault.CLIENT_INVALID_REQUEST),
        (lambda: CompactRange().append(b"short"), Fault.CLIENT_INVALID_REQUEST),
        (lambda: MemoryTree().root(1), Fault.CLIENT_INVALID_REQUEST),
    ],
)
def test_bad_requests(call: Any, fault: Fault) -> None:
    with pytest.raises(MerkleRangeError) as info:
        call()
    assert info.value.fault is fault


def test_missing_subtree() -> None:
    with pytest.raises(MissingSubtreeError) as info:
        inclusion_proof_plan(0, 2).assemble({})
    assert info.value.fault is Fault.SERVER_PROVIDER_INTERNAL_ERROR
    with pytest.raises(MissingSubtreeError):
        inclusion_proof_plan(0, 2).assemble({(0, 1): b"short"})


@pytest.mark.parametrize(
    "args",
    [
        (EMPTY_ROOT, 0, 2**64, [], EMPTY_ROOT),
        (EMPTY_ROOT, 0, 2, [EMPTY_ROOT] * 65, EMPTY_ROOT),
        (EMPTY_ROOT, 0, 2, [b"short"], EMPTY_ROOT),
        (EMPTY_ROOT, 0, 0, [], EMPTY_ROOT),
    ],
)
def test_inclusion_bounds(args: Any) -> None:
    with pytest.raises(MerkleVerificationError) as info:
        verify_inclusion(*args)
    assert info.value.fault is Fault.CLIENT_INVALID_PROOF


def test_compact_range_reports_completed_subtrees() -> None:
    frontier = CompactRange()
    hashes = ref.leaf_hashes(4)
    assert frontier.append(hashes[0]) == [(0, 0, hashes[0])]
    h01 = node_hash(hashes[0], hashes[1])
    assert frontier.append(hashes[1]) == [(0, 1, hashes[1]), (1, 0, h01)]
    assert frontier.append(hashes[2]) == [(0, 2, hashes[2])]
    h23 = node_hash(hashes[2], hashes[3])
    assert frontier.append(hashes[3]) == [
        (0, 3, hashes[3]),
        (1, 1, h23),
        (2, 0, node_hash(h01, h23)),
    ]
    assert frontier.size == 4
    assert frontier.hashes == (node_hash(h01, h23),)


def test_a_compact_range_copy_is_the_same_frontier_appended_to_alone() -> None:
    frontier = CompactRange()
    hashes = ref.leaf_hashes(7)
    for h in hashes[:5]:
        frontier.append(h)
    copied = frontier.copy()
    assert (copied.size, copied.hashes, copied.root()) == (5, frontier.hashes, frontier.root())
    copied.append(hashes[5])
    assert (frontier.size, copied.size) == (5, 6)
    frontier.append(hashes[5])
    assert copied.hashes == frontier.hashes
    assert copied.root() == root_from_leaf_hashes(hashes[:6])


@pytest.mark.parametrize(
    ("start", "count"), [(0, 0), (0, 1), (0, 64), (5, 3), (63, 130), (1023, 2)]
)
def test_extend_is_append_leaf_by_leaf(start: int, count: int) -> None:
    hashes = ref.leaf_hashes(start + count)
    one_by_one, at_once = CompactRange(), CompactRange()
    for h in hashes[:start]:
        one_by_one.append(h)
        at_once.append(h)
    expected = [
        (seq, level, h)
        for seq in range(start, start + count)
        for level, idx, h in one_by_one.append(hashes[seq])[1:]
        if idx == (seq + 1 >> level) - 1
    ]
    assert at_once.extend(hashes[start:]) == expected
    assert (at_once.size, at_once.hashes) == (one_by_one.size, one_by_one.hashes)
    assert at_once.root() == root_from_leaf_hashes(hashes)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=70), min_size=1, max_size=8))
def test_extends_of_groups_are_appends_of_their_leaves(groups: list[int]) -> None:
    """Groups of every size one after another (0, 1, powers of two and across them): each
    extend names the nodes one leaf's append would, by last leaf, and the frontiers agree
    after every group."""
    hashes = ref.leaf_hashes(sum(groups))
    one_by_one, at_once = CompactRange(), CompactRange()
    start = 0
    for count in groups:
        expected = []
        for seq in range(start, start + count):
            for level, idx, h in one_by_one.append(hashes[seq])[1:]:
                assert ((idx + 1) << level) - 1 == seq
                expected.append((seq, level, h))
        assert at_once.extend(hashes[start : start + count]) == expected
        start += count
        assert (at_once.size, at_once.hashes) == (one_by_one.size, one_by_one.hashes)
    assert at_once.root() == root_from_leaf_hashes(hashes)


def test_extend_refuses_a_short_hash_and_leaves_the_frontier_unchanged() -> None:
    hashes = ref.leaf_hashes(3)
    frontier = CompactRange()
    frontier.append(hashes[0])
    with pytest.raises(MerkleRangeError):
        frontier.extend([hashes[1], b"short"])
    assert (frontier.size, frontier.hashes) == (1, (hashes[0],))


async def test_fetch_plan_reads_one_batch() -> None:
    tree = MemoryTree()
    for h in ref.leaf_hashes(11):
        tree.append(h)
    batches: list[tuple[NodeKey, ...]] = []

    async def batch(keys: Any) -> dict[NodeKey, bytes]:
        batches.append(tuple(keys))
        return {k: tree.get_subtree_hash(*k) for k in keys}

    proof = await fetch_plan(inclusion_proof_plan(4, 11), batch)
    assert proof == tree.inclusion_proof(4)
    root = (await fetch_plan(root_plan(11), batch))[0]
    assert root == tree.root()
    assert len(batches) == 2


# --- properties ----------------------------------------------------------------------------------

_MAX = 300
_LEAVES = ref.leaf_hashes(_MAX)


def _tree(size: int) -> MemoryTree:
    tree = MemoryTree()
    for h in _LEAVES[:size]:
        tree.append(h)
    return tree


def _flip(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def _size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, _MAX))
    return size, draw(st.integers(0, size - 1))


@st.composite
def _two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(st.integers(1, _MAX))
    return draw(st.integers(1, size2)), size2


@settings(max_examples=200, deadline=None)
@given(_size_and_index(), st.integers(0, _MAX))
def test_inclusion_matches_reference_and_verifies(si: tuple[int, int], extra: int) -> None:
    size, index = si
    # A store that has grown past `size` must still serve proofs for `size`.
    tree = _tree(min(_MAX, size + extra))
    root = tree.root(size)
    assert root == ref.mth(_LEAVES[:size])
    proof = tree.inclusion_proof(index, size)
    assert proof == ref.path(index, _LEAVES[:size])
    for level, idx in inclusion_proof_plan(index, size).keys:
        assert (idx + 1) << level <= size  # only complete subtrees inside the tree
    verify_inclusion(_LEAVES[index], index, size, proof, root)


@settings(max_examples=200, deadline=None)
@given(_size_and_index(), st.integers(0, 2**16), st.sampled_from(["proof", "root", "leaf"]))
def test_inclusion_flipped_bit_fails(si: tuple[int, int], bit: int, where: str) -> None:
    size, index = si
    tree = _tree(size)
    proof, root, leaf = tree.inclusion_proof(index), tree.root(), _LEAVES[index]
    if where == "proof":
        if not proof:
            return
        i = bit % len(proof)
        proof[i] = _flip(proof[i], bit // len(proof))
    elif where == "root":
        root = _flip(root, bit)
    else:
        leaf = _flip(leaf, bit)
    with pytest.raises(MerkleVerificationError):
        verify_inclusion(leaf, index, size, proof, root)


@settings(max_examples=200, deadline=None)
@given(_size_and_index(), st.sampled_from([-1, 1]), st.sampled_from(["index", "size"]))
def test_inclusion_off_by_one_fails(si: tuple[int, int], delta: int, what: str) -> None:
    """A shifted index fails; so does a shifted size with that size's own (signed) root.

    A shifted size with the *old* root can verify when both sizes give the proof the same shape:
    the root alone does not commit to the size, which is why checkpoints sign both together.
    """
    size, index = si
    tree = _tree(min(_MAX, size + 1))
    proof = tree.inclusion_proof(index, size)
    if what == "index":
        index2, size2, root = index + delta, size, tree.root(size)
    else:
        size2 = size + delta
        if size2 > tree.size:
            return
        index2, root = index, tree.root(size2)
    with pytest.raises(MerkleVerificationError):
        verify_inclusion(_LEAVES[index], index2, size2, proof, root)


@settings(max_examples=200, deadline=None)
@given(_two_sizes(), st.integers(0, _MAX))
def test_consistency_matches_reference_and_verifies(sizes: tuple[int, int], extra: int) -> None:
    size1, size2 = sizes
    tree = _tree(min(_MAX, size2 + extra))
    proof = tree.consistency_proof(size1, size2)
    assert proof == ref.proof(size1, _LEAVES[:size2])
    for level, idx in consistency_proof_plan(size1, size2).keys:
        assert (idx + 1) << level <= size2
    verify_consistency(size1, size2, proof, tree.root(size1), tree.root(size2))


@settings(max_examples=200, deadline=None)
@given(_two_sizes(), st.integers(0, 2**16), st.sampled_from(["proof", "root1", "root2"]))
def test_consistency_flipped_bit_fails(sizes: tuple[int, int], bit: int, where: str) -> None:
    size1, size2 = sizes
    tree = _tree(size2)
    proof, root1, root2 = tree.consistency_proof(size1), tree.root(size1), tree.root(size2)
    if where == "proof":
        if not proof:
            return
        i = bit % len(proof)
        proof[i] = _flip(proof[i], bit // len(proof))
    elif where == "root1":
        root1 = _flip(root1, bit)
    else:
        root2 = _flip(root2, bit)
    with pytest.raises(MerkleVerificationError):
        verify_consistency(size1, size2, proof, root1, root2)


@settings(max_examples=200, deadline=None)
@given(_two_sizes(), st.sampled_from([-1, 1]), st.sampled_from(["size1", "size2"]))
def test_consistency_off_by_one_fails(sizes: tuple[int, int], delta: int, what: str) -> None:
    size1, size2 = sizes
    tree = _tree(min(_MAX, size2 + 1))
    proof = tree.consistency_proof(size1, size2)
    if what == "size1":
        s1, s2 = size1 + delta, size2
    else:
        s1, s2 = size1, size2 + delta
    if max(s1, s2) > tree.size:
        return
    with pytest.raises(MerkleVerificationError):
        verify_consistency(s1, s2, proof, tree.root(s1), tree.root(s2))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, _MAX), st.integers(0, 40))
def test_compact_range_restores_and_continues(size: int, more: int) -> None:
    tree = _tree(min(_MAX, size + more))
    frontier = CompactRange.from_subtrees(size, tree.get_subtree_hash)
    assert frontier.root() == tree.root(size)
    for i in range(size, tree.size):
        for level, idx, h in frontier.append(_LEAVES[i]):
            assert tree.get_subtree_hash(level, idx) == h
    assert frontier.root() == tree.root()
    assert len(frontier.hashes) == frontier.size.bit_count()


@settings(max_examples=100, deadline=None)
@given(st.integers(1, _MAX))
def test_all_inclusion_proofs_at_once_match_the_reference(size: int) -> None:
    """What a batch signature uses: the root and every leaf's proof from one bottom-up pass."""
    leaves = _LEAVES[:size]
    root, proofs = root_and_inclusion_proofs(leaves)
    assert root == ref.mth(leaves)
    for index in {0, size // 3, size // 2, size - 1}:
        assert proofs[index] == ref.path(index, leaves)
        assert root_from_inclusion(leaves[index], index, size, proofs[index]) == root


def test_all_inclusion_proofs_refusals() -> None:
    with pytest.raises(MerkleRangeError):
        root_and_inclusion_proofs([])
    with pytest.raises(MerkleRangeError):
        root_and_inclusion_proofs([bytes(31)])
    assert root_and_inclusion_proofs([_LEAVES[0]]) == (_LEAVES[0], [[]])


@pytest.mark.parametrize(
    ("index", "size", "proof"),
    [
        (0, 0, []),
        (3, 3, [bytes(32)] * 2),
        (0, 2, []),
        (0, 2, [bytes(32)] * 2),
        (0, 2, [bytes(31)]),
    ],
)
def test_root_from_inclusion_refuses_impossible_paths(
    index: int, size: int, proof: list[bytes]
) -> None:
    with pytest.raises(MerkleVerificationError):
        root_from_inclusion(_LEAVES[0], index, size, proof)
