"""``HOST:PORT`` network addresses, as settings files and command lines give them.

One parser for every part, so a listen address, a peer's transport address and an admin API
address are read the same way: ``host:port``, or ``[v6]:port`` for IPv6, port 0 to 65535 (0 asks
the system for a free port where the address is bound).
"""

from __future__ import annotations

__all__ = ["join_address", "split_address"]

_MAX_PORT = 65535


def split_address(address: str, *, what: str = "address") -> tuple[str, int]:
    """Split ``address`` into host (without IPv6 brackets) and port.

    Raises :class:`ValueError` naming ``what`` and saying the form expected when there is no
    host, no numeric port, or the port is over 65535.
    """
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"{what} {address!r} must have the form host:port")
    port = int(port_text)
    if port > _MAX_PORT:
        raise ValueError(
            f"{what} {address!r} must have the form host:port; port {port} is out of range"
        )
    return host, port


def join_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (the inverse of :func:`split_address`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
