"""Names of the message logs of one security server's nodes and workers (docs/adr/0030).

A security server's log is named by its origin, the server identifier (``DEV/GOV/POP/ss1``), and
signed with the server's Ed25519 log key, whose verifier key the registry publishes under that
name. A server may run as several nodes (processes on several machines behind one address) and
each node as several workers (processes on one machine sharing its ports); each keeps a tree of
its own, so nodes and workers never coordinate on the hot path. Their trees are **node logs** of
the server: origin ``<server origin>/<node log name>``, signed with the same log key, under a key
name equal to that origin (so no signature of one tree verifies as another's).

The witness and the evidence verifier trust a node log exactly as far as they trust its
server's published key: :func:`node_log_verifier` derives the node log's verifier from it.
"""

from __future__ import annotations

import re
from typing import Final

from ruta.checkpoint import Verifier

__all__ = [
    "MAX_NODE_LOG_NAME_LENGTH",
    "MAX_WORKERS",
    "NodeLogNameError",
    "check_node_name",
    "node_log_name",
    "node_log_origin",
    "node_log_verifier",
    "split_node_log_origin",
]

#: Most worker processes one node runs (``[server] workers``).
MAX_WORKERS: Final = 64
#: Longest node log name (the part of the origin after the server's).
MAX_NODE_LOG_NAME_LENGTH: Final = 64
#: A node name or a node log name: an identifier part (letters, digits, ``.``, ``_``, ``-``).
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class NodeLogNameError(ValueError):
    """A node name or node log name that is not an identifier part."""


def check_node_name(name: str) -> str:
    """Return ``name`` if it may name a node (1-64 of ``A-Z a-z 0-9 . _ -``, starting with a
    letter or digit); raise :class:`NodeLogNameError` otherwise."""
    if not _NAME.fullmatch(name):
        raise NodeLogNameError(
            f"a node name is 1 to {MAX_NODE_LOG_NAME_LENGTH} of A-Z a-z 0-9 . _ - and starts "
            "with a letter or digit"
        )
    return name


def node_log_name(node: str, worker: int) -> str:
    """The log name of ``worker`` (0-based) of ``node`` ("" for a server's single node):
    "" for worker 0 of the unnamed node (the server's own log, as before clusters), ``w<i>``
    for its other workers, ``<node>`` and ``<node>.w<i>`` for a named node. Raises
    :class:`NodeLogNameError` for a bad node name or a worker outside 0..MAX_WORKERS-1."""
    if not 0 <= worker < MAX_WORKERS:
        raise NodeLogNameError(f"a worker index is 0 to {MAX_WORKERS - 1}")
    suffix = f"w{worker}" if worker else ""
    if not node:
        return suffix
    check_node_name(node)
    name = f"{node}.{suffix}" if suffix else node
    if len(name) > MAX_NODE_LOG_NAME_LENGTH:
        raise NodeLogNameError(f"node name {node!r} is too long to name its workers' logs")
    return name


def node_log_origin(server_origin: str, name: str) -> str:
    """The origin of node log ``name`` of the server whose own log is ``server_origin``
    (``server_origin`` itself for the empty name)."""
    return f"{server_origin}/{check_node_name(name)}" if name else server_origin


def split_node_log_origin(origin: str) -> tuple[str, str] | None:
    """``(server origin, node log name)`` when ``origin`` has the shape of a node log, else
    ``None`` (the caller still checks that the server origin is a known log)."""
    base, sep, name = origin.rpartition("/")
    if not sep or not base or not _NAME.fullmatch(name):
        return None
    return base, name


def node_log_verifier(published: Verifier, origin: str) -> Verifier | None:
    """The verifier of the log named ``origin`` when it is signed with the key ``published``
    (the server's published log key): ``published`` itself for the server's own log, the same
    key under the name ``origin`` for one of its node logs, ``None`` for any other log."""
    if origin == published.name:
        return published
    split = split_node_log_origin(origin)
    if split is None or split[0] != published.name:
        return None
    return Verifier(name=origin, kind=published.kind, public_key=published.public_key)
