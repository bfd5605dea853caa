"""A bare gRPC relay for the benchmark's *relay floor*: what two hops cost with no trust at all.

    python -m bench.relay --listen 127.0.0.1:0 --target HOST:PORT --ready-file F \
        [--tls-cert PEM --tls-key PEM --tls-client-ca PEM]         # serve mutual TLS
        [--target-ca PEM --target-cert PEM --target-key PEM]       # call the target over mTLS

One grpc.aio server with one generic handler: any unary method path's request bytes are sent
unchanged (no parsing: serializers are ``None``) to ``--target`` over one shared channel, with
the caller's remaining deadline, and the answer's bytes (or its status) are returned. No
signatures, no logs, no checks, no metadata: the same two gRPC call halves per message a security
server pays, and nothing else. Runs on uvloop like ``ruta ss serve``. Writes
``{"address": "HOST:PORT", "pid": N}`` to the ready file once it serves
(:mod:`ruta.readiness`); SIGTERM/SIGINT stop it.

``bench/exchange.py`` chains two of them like the bus: load generator -> relay 1 (plaintext
loopback) -> mutual TLS -> relay 2 -> echo backend (plaintext loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.aio

from bench.echo import MAX_ECHO_BYTES
from ruta.readiness import stop_event, write_ready_file

__all__ = ["MAX_RELAY_BYTES", "serve"]

#: Largest message relayed (the echo backend's limit).
MAX_RELAY_BYTES: Final = MAX_ECHO_BYTES

_Call = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]


def _options() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", MAX_RELAY_BYTES),
        ("grpc.max_send_message_length", MAX_RELAY_BYTES),
    ]


class _Forward(grpc.GenericRpcHandler):
    """Every unary method: the request's bytes to the target, the answer's bytes back."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        path = handler_call_details.method
        handler = self._handlers.get(path)
        if handler is None:
            handler = grpc.unary_unary_rpc_method_handler(
                self._forwarder(self._channel.unary_unary(path)),
                request_deserializer=None,
                response_serializer=None,
            )
            self._handlers[path] = handler
        return handler

    @staticmethod
    def _forwarder(
        call: _Call,
    ) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Any]:
        async def forward(body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            try:
                return await call(body, timeout=context.time_remaining())
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
                raise  # not reached: abort raises

        return forward


def _channel(target: str, ca: Path | None, cert: Path | None, key: Path | None) -> grpc.aio.Channel:
    if ca is None:
        return grpc.aio.insecure_channel(target, options=_options())
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key is not None else None,
        certificate_chain=cert.read_bytes() if cert is not None else None,
    )
    return grpc.aio.secure_channel(target, credentials, options=_options())


@contextlib.asynccontextmanager
async def relay_server(
    args: argparse.Namespace, handler: Callable[[grpc.aio.Channel], grpc.GenericRpcHandler]
) -> AsyncIterator[grpc.aio.Channel]:
    """A relay's server (the arguments of :func:`add_link_arguments`): the channel to
    ``args.target``, ``handler(channel)`` served on ``args.listen`` (mutual TLS with
    ``--tls-cert``), the ready file written once it serves; stopped and closed on leaving."""
    channel = _channel(args.target, args.target_ca, args.target_cert, args.target_key)
    server = grpc.aio.server(options=_options())
    server.add_generic_rpc_handlers((handler(channel),))
    if args.tls_cert is not None:
        credentials = grpc.ssl_server_credentials(
            [(args.tls_key.read_bytes(), args.tls_cert.read_bytes())],
            root_certificates=args.tls_client_ca.read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port(args.listen, credentials)
    else:
        port = server.add_insecure_port(args.listen)
    await server.start()
    if args.ready_file is not None:
        host = args.listen.rpartition(":")[0]
        write_ready_file(args.ready_file, {"address": f"{host}:{port}", "pid": os.getpid()})
    try:
        yield channel
    finally:
        await server.stop(grace=1.0)
        await channel.close()


async def serve(args: argparse.Namespace) -> None:
    """Relay ``args.listen`` -> ``args.target`` until SIGTERM/SIGINT."""
    stop = stop_event()
    async with relay_server(args, _Forward):
        await stop.wait()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop where installed, as ``ruta ss serve`` runs (``security_server/serve_cli.py``; not
    imported from there, so the relay does not load the security server's modules)."""
    try:
        import uvloop  # noqa: PLC0415 - optional: absent on Windows
    except ImportError:  # pragma: no cover - platform dependent
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    """A relay's listening and target arguments (:func:`relay_server` reads them)."""
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--target", required=True, help="HOST:PORT every call is sent to")
    parser.add_argument("--ready-file", type=Path, default=None)
    parser.add_argument("--tls-cert", type=Path, default=None, help="serve TLS with this cert")
    parser.add_argument("--tls-key", type=Path, default=None)
    parser.add_argument("--tls-client-ca", type=Path, default=None, help="client certs' CA")
    parser.add_argument("--target-ca", type=Path, default=None, help="call the target over TLS")
    parser.add_argument("--target-cert", type=Path, default=None, help="client certificate")
    parser.add_argument("--target-key", type=Path, default=None)


def check_link_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (``parser.error``) TLS arguments of :func:`add_link_arguments` given apart."""
    if args.tls_cert is not None and (args.tls_key is None or args.tls_client_ca is None):
        parser.error("--tls-cert needs --tls-key and --tls-client-ca (mutual TLS)")
    if (args.target_cert is None) != (args.target_key is None):
        parser.error("--target-cert and --target-key go together")
    if args.target_cert is not None and args.target_ca is None:
        parser.error("--target-cert needs --target-ca")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    add_link_arguments(parser)
    args = parser.parse_args(argv)
    check_link_arguments(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module's text)."""
    args = _parse(argv)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
