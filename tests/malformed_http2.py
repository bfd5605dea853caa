"""Raw HTTP/2 requests no gRPC client would send, for the tests of hostile input to listeners.

:func:`send_invalid_path` sends one gRPC-shaped request whose ``:path`` is not valid UTF-8: it
ends grpcio's asyncio server loop (docs/upstream/grpcio-aio-invalid-path.md), which Ruta's
listener watchdog must notice and repair (docs/adr/0012-listener-watchdog.md).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from pathlib import Path
from typing import Final

import h2.config
import h2.connection

__all__ = ["INVALID_PATH", "client_tls", "send_invalid_path"]

#: A method path with a byte that is not UTF-8.
INVALID_PATH: Final = b"/x.Y/Z\xff"
#: How long to wait for the server's answer before giving up on it (it may answer nothing).
_READ_SECONDS: Final = 2.0


def client_tls(
    *, ca: Path, cert: Path | None = None, key: Path | None = None, server_name: str | None = None
) -> ssl.SSLContext:
    """A TLS context that speaks HTTP/2 (ALPN ``h2``), trusts ``ca`` and, when given, presents
    ``cert``/``key`` (what an mTLS listener asks for); ``server_name`` ``None`` skips the host
    name check (the listener's certificate names something else than 127.0.0.1)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    if server_name is None:
        context.check_hostname = False
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def send_invalid_path(
    address: str,
    *,
    tls: ssl.SSLContext | None = None,
    path: bytes = INVALID_PATH,
    server_name: str = "localhost",
) -> None:
    """Send one unary gRPC request for ``path`` to ``address`` (``host:port``), over TLS when
    ``tls`` is given, read what comes back for a moment and close. Blocking: run it in a thread
    from async code. Raises :class:`OSError` when the connection cannot be opened."""
    host, _, port = address.rpartition(":")
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    connection = h2.connection.H2Connection(config=config)
    connection.initiate_connection()
    stream = connection.get_next_available_stream_id()
    connection.send_headers(
        stream,
        [
            (b":method", b"POST"),
            (b":scheme", b"https" if tls else b"http"),
            (b":path", path),
            (b":authority", server_name.encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ],
    )
    connection.send_data(stream, b"\x00\x00\x00\x00\x00", end_stream=True)  # one empty message
    raw = socket.create_connection((host.strip("[]"), int(port)), timeout=_READ_SECONDS)
    with contextlib.ExitStack() as stack:
        sock: socket.socket = stack.enter_context(raw)
        if tls is not None:
            sock = stack.enter_context(tls.wrap_socket(raw, server_hostname=server_name))
        sock.sendall(connection.data_to_send())
        with contextlib.suppress(OSError):  # a reset or a timeout ends the read the same way
            while sock.recv(65536):
                pass
