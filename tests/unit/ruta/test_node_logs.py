"""Names of node logs (ruta.node_logs): what a node's workers call their trees, and which key
verifies them."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ruta.checkpoint import SignatureType, Verifier
from ruta.node_logs import (
    MAX_WORKERS,
    NodeLogNameError,
    node_log_name,
    node_log_origin,
    node_log_verifier,
    split_node_log_origin,
)

SERVER = "DEV/GOV/POP/ss1"


@pytest.mark.parametrize(
    ("node", "worker", "name", "origin"),
    [
        ("", 0, "", SERVER),
        ("", 1, "w1", f"{SERVER}/w1"),
        ("b", 0, "b", f"{SERVER}/b"),
        ("b", 3, "b.w3", f"{SERVER}/b.w3"),
    ],
)
def test_names(node: str, worker: int, name: str, origin: str) -> None:
    assert node_log_name(node, worker) == name
    assert node_log_origin(SERVER, name) == origin
    if name:
        assert split_node_log_origin(origin) == (SERVER, name)


@pytest.mark.parametrize(
    ("node", "worker"), [("", -1), ("", MAX_WORKERS), (".x", 0), ("a/b", 0), ("a" * 64, 1)]
)
def test_bad_names(node: str, worker: int) -> None:
    with pytest.raises(NodeLogNameError):
        node_log_name(node, worker)


def test_a_node_log_is_verified_by_its_servers_key_under_its_own_name() -> None:
    key = Ed25519PrivateKey.generate()
    published = Verifier.for_key(SERVER, SignatureType.ED25519, key)
    assert node_log_verifier(published, SERVER) is published
    derived = node_log_verifier(published, f"{SERVER}/w1")
    assert derived == Verifier.for_key(f"{SERVER}/w1", SignatureType.ED25519, key)
    assert derived.key_id != published.key_id  # no signature of one tree verifies as another's
    for other in ("DEV/GOV/POP/ss2/w1", f"{SERVER}/w1/w2", f"{SERVER}/", "DEV/GOV/POP"):
        assert node_log_verifier(published, other) is None
