"""``ruta health``: ask a port's gRPC health service (``grpc.health.v1.Health/Check``) whether it
serves, for container health checks and orchestrator probes.

Every Ruta gRPC listener registers the standard health service (the registry's admin port, the
security server's consumer, transport and audit ports, adapters). The command exits 0 when the
answer is ``SERVING``, 1 for any other answer or no answer within the timeout, and 2 for a usage
error; it prints the status (or why there is none) on one line, never a key or a path.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import click
import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from ruta.addresses import split_address
from ruta.faults import RutaError
from ruta.pki.tls import channel_credentials

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_TIMEOUT_SECONDS",
    "HealthAnswer",
    "check_health",
    "health",
]

#: How long a check waits for an answer by default.
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
#: The longest wait a caller may ask for.
MAX_TIMEOUT_SECONDS: Final = 60.0
#: Largest health answer read (it is a single enum).
_MAX_ANSWER_BYTES: Final = 1024


@dataclass(frozen=True, slots=True)
class HealthAnswer:
    """What a health check found: ``status`` is the service's status name (``SERVING``,
    ``NOT_SERVING``, ``SERVICE_UNKNOWN``, …) or ``UNREACHABLE``; ``detail`` says why in a few
    words when there was no status."""

    status: str
    detail: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"


async def check_health(
    address: str,
    *,
    service: str = "",
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
    deadline_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> HealthAnswer:
    """Ask ``address`` (``HOST:PORT``) for the health of ``service`` ("" = the whole server),
    over TLS when ``credentials`` are given (``server_name`` overrides the name checked in the
    server's certificate), in plaintext otherwise, waiting at most ``deadline_seconds``. Never
    raises for a down or refusing server: that is an ``UNREACHABLE`` answer."""
    options: list[tuple[str, object]] = [("grpc.max_receive_message_length", _MAX_ANSWER_BYTES)]
    if server_name is not None:
        options.append(("grpc.ssl_target_name_override", server_name))
    channel = (
        grpc.aio.secure_channel(address, credentials, options=options)
        if credentials is not None
        else grpc.aio.insecure_channel(address, options=options)
    )
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=deadline_seconds
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return HealthAnswer("SERVICE_UNKNOWN")
        return HealthAnswer("UNREACHABLE", exc.code().name.lower())
    finally:
        await channel.close()
    return HealthAnswer(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)


@click.command("health")
@click.option(
    "--address",
    required=True,
    envvar="RUTA_HEALTH_ADDRESS",
    help="HOST:PORT of the gRPC listener to ask.",
)
@click.option("--service", default="", help="Service name to ask about (default: the server).")
@click.option(
    "--ca", type=_FILE, envvar="RUTA_HEALTH_CA", help="Trust anchors (PEM): ask over TLS."
)
@click.option(
    "--cert", type=_FILE, envvar="RUTA_HEALTH_CERT", help="Client certificate (PEM) for mTLS."
)
@click.option("--key", type=_FILE, envvar="RUTA_HEALTH_KEY", help="Client key (PEM) for mTLS.")
@click.option(
    "--server-name",
    envvar="RUTA_HEALTH_SERVER_NAME",
    help="Name to check in the server's certificate (default: the address's host).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, MAX_TIMEOUT_SECONDS, min_open=True),
    default=DEFAULT_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds to wait for an answer.",
)
def health(
    *,
    address: str,
    service: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    server_name: str | None,
    timeout: float,
) -> None:
    """Exit 0 if the gRPC health service at ADDRESS answers SERVING, 1 otherwise.

    Plaintext without --ca; with --ca, TLS (and with --cert and --key, mutual TLS, as every Ruta
    port but a loopback consumer port requires).
    """
    try:
        split_address(address)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--address") from None
    if (cert is None) != (key is None):
        raise click.UsageError("give both --cert and --key, or neither")
    if ca is None and cert is not None:
        raise click.UsageError("--cert and --key need --ca (mutual TLS)")
    credentials: grpc.ChannelCredentials | None = None
    if ca is not None:
        try:
            credentials = (
                channel_credentials(key, cert, ca)
                if key is not None and cert is not None
                else grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
            )
        except (RutaError, OSError) as exc:
            click.echo(
                f"UNREACHABLE: the TLS files cannot be used ({type(exc).__name__})", err=True
            )
            raise SystemExit(1) from None
    answer = asyncio.run(
        check_health(
            address,
            service=service,
            credentials=credentials,
            server_name=server_name,
            deadline_seconds=timeout,
        )
    )
    click.echo(f"{answer.status}: {answer.detail}" if answer.detail else answer.status)
    raise SystemExit(0 if answer.serving else 1)
