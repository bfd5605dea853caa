"""Attacks on gRPC listeners, and how a test sees the listener watchdog repair them.

:func:`send_invalid_path` sends one raw HTTP/2, gRPC-shaped request whose ``:path`` is not valid
UTF-8 (no gRPC client sends it): it ends grpcio's asyncio server loop
(docs/upstream/grpcio-aio-invalid-path.md), which Ruta's listener watchdog must notice and repair
(docs/adr/0020-listener-watchdog.md). :func:`crash_listener` sends it to a process and waits
until the process's ``/metrics`` count the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from pathlib import Path
from typing import Final

import aiohttp
import h2.config
import h2.connection
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["INVALID_PATH", "client_tls", "crash_listener", "restarts_of", "send_invalid_path"]

#: A method path with a byte that is not UTF-8.
INVALID_PATH: Final = b"/x.Y/Z\xff"
#: How long to wait for the server's answer before giving up on it (it may answer nothing).
_READ_SECONDS: Final = 2.0
#: Bound on waiting for a restart to show in the metrics (the watchdog needs well under 1 s).
_RESTART_WAIT_SECONDS: Final = 30.0


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


async def restarts_of(metrics_url: str, listener: str) -> float:
    """``ruta_listener_restarts_total{listener=...}`` as the process at ``metrics_url`` serves it
    (0 when the series is absent)."""
    return await _sample(metrics_url, "ruta_listener_restarts_total", listener)


async def _sample(metrics_url: str, name: str, listener: str) -> float:
    timeout = aiohttp.ClientTimeout(total=_READ_SECONDS * 5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(metrics_url) as response,
    ):
        response.raise_for_status()
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("listener") == listener:
                return float(sample.value)
    return 0.0


async def crash_listener(
    address: str, *, metrics_url: str, listener: str, tls: ssl.SSLContext | None = None
) -> None:
    """Send the invalid-path request to ``address`` and wait (bounded) until the process counts
    one more restart of ``listener`` (proof that the request ended the server loop and that the
    watchdog saw it) and reports it up again. Raises :class:`TimeoutError` otherwise."""
    before = await restarts_of(metrics_url, listener)
    await asyncio.to_thread(send_invalid_path, address, tls=tls)

    async def counted() -> None:
        while True:
            if (
                await restarts_of(metrics_url, listener) > before
                and await _sample(metrics_url, "ruta_listener_up", listener) == 1
            ):
                return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(counted(), _RESTART_WAIT_SECONDS)
