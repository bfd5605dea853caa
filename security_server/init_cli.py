"""``ruta ss init``: make a security server's keys, enrol it with the registry, write its settings.

Every private key is generated here, where it is used, and written 0600; only certificate signing
requests leave the machine. Enrolment talks to the registry's admin API over mutual TLS (the
``RegistryAdmin`` wire contract; this package never imports the registry): the authentication
and signing certificates are issued from the CSRs (``IssueCertificate``), and with
``--register`` the server is registered with its transport address, authentication certificate
and message-log verifier key (``AddServer``). With ``--offline`` only the keys and CSRs are
written; an operator then has them certified out of band (``ruta registry ca issue``) and runs
the same ``ruta ss init --offline`` again once the certificates sit beside the CSRs (keys are
kept; the settings are written then).

The directory it fills::

    DIR/ss.toml                     settings (absolute paths: the file is self-contained)
    DIR/anchor.toml                 configuration anchor (copied)
    DIR/ca.pem                      the instance's CA trust anchor (default backend client CA)
    DIR/keys/{auth,sign}.{key,csr,pem}
    DIR/data/keys/log-ed25519.key   message-log checkpoint key (Ed25519)
    DIR/data/keys/log-body.key      message-body encryption key
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click
import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ruta.addresses import split_address
from ruta.admin_rpc import admin_call
from ruta.faults import Fault, RutaError
from ruta.files import FileReadError, read_bounded, write_atomically
from ruta.globalconf import ConfigurationAnchor
from ruta.ids import IdentifierError, ServerId, ServiceId, SubsystemId
from ruta.pki.certs import certificate_pem, load_certificate, make_csr
from ruta.pki.keys import generate_ec_key, load_private_key, save_private_key
from ruta.pki.tls import channel_credentials
from ruta.readiness import read_ready_file
from ruta.v1 import registry_pb2, registry_pb2_grpc
from security_server.checkpointer import LOG_KEY_FILE, load_or_create_log_key, log_vkey
from security_server.log import load_or_create_body_key
from security_server.settings import SecurityServerSettings, settings_toml

__all__ = ["SETTINGS_FILE", "InitError", "InitPlan", "init", "initialise"]

#: The settings file ``init`` writes into the server directory.
SETTINGS_FILE: Final = "ss.toml"
#: Largest certificate or anchor file read.
MAX_INPUT_FILE_BYTES: Final = 1 << 20


class InitError(RutaError):
    """The server could not be initialised; the message says which step."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


@dataclass(frozen=True, slots=True)
class RegistryTarget:
    """The registry's admin API and the credential used to call it."""

    address: str
    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True, slots=True)
class InitPlan:
    """What ``init`` makes: the server, its listeners, its backends and how backends call it."""

    directory: Path
    server: ServerId
    anchor: Path
    transport_listen: str
    consumer_listen: str = "127.0.0.1:0"
    metrics_listen: str = "127.0.0.1:0"
    client_ca: Path | None = None
    plain_loopback: tuple[SubsystemId, ...] = ()
    backends: tuple[tuple[ServiceId, str], ...] = ()
    #: The audit API's listen address (also registered as the server's audit address).
    audit_listen: str = ""
    #: The auditor console's listen address (HTTPS; empty: none).
    console_listen: str = ""
    #: How often the global configuration is fetched (None: the default).
    fetch_interval_seconds: float | None = None
    register: bool = True
    force: bool = False


# --- files ---------------------------------------------------------------------------------------


def _read_bounded(path: Path) -> bytes:
    try:
        return read_bounded(path, MAX_INPUT_FILE_BYTES)
    except FileReadError as exc:
        raise InitError(exc.message) from None


def _key_for(path: Path, *, force: bool) -> Any:
    """The EC P-256 key at ``path``: kept when it exists (unless ``force``), else generated."""
    if path.exists() and not force:
        return load_private_key(path)
    key = generate_ec_key()
    save_private_key(path, key)
    return key


def _write_csr(path: Path, key: Any, common_name: str) -> bytes:
    csr = make_csr(key, common_name)
    write_atomically(path, csr.public_bytes(serialization.Encoding.PEM))
    return csr.public_bytes(serialization.Encoding.DER)


def _write_chain(path: Path, leaf: x509.Certificate, chain: list[x509.Certificate]) -> None:
    """Leaf first, then intermediates (a self-signed anchor is left out)."""
    intermediates = [c for c in chain if c.issuer != c.subject]
    write_atomically(path, certificate_pem(leaf, *intermediates))


def _host_sans(address: str) -> tuple[list[str], list[str]]:
    host, _ = split_address(address)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return [host], []
    return [], [host]


# --- registry wire -------------------------------------------------------------------------------


async def _enrol(
    plan: InitPlan,
    target: RegistryTarget,
    *,
    auth_csr: bytes,
    sign_csr: bytes,
    log_key_text: str,
) -> tuple[x509.Certificate, x509.Certificate, list[x509.Certificate]]:
    dns, ips = _host_sans(plan.transport_listen)
    credentials = channel_credentials(target.key, target.cert, target.ca)
    async with grpc.aio.secure_channel(target.address, credentials) as channel:
        stub = registry_pb2_grpc.RegistryAdminStub(channel)
        auth = await admin_call(
            stub.IssueCertificate(
                registry_pb2.IssueCertificateRequest(
                    csr=auth_csr,
                    profile=registry_pb2.CERTIFICATE_PROFILE_AUTH,
                    server=plan.server.to_proto(),
                    dns_names=dns,
                    ip_addresses=ips,
                )
            )
        )
        sign = await admin_call(
            stub.IssueCertificate(
                registry_pb2.IssueCertificateRequest(
                    csr=sign_csr,
                    profile=registry_pb2.CERTIFICATE_PROFILE_SIGN,
                    member=plan.server.member.to_proto(),
                )
            )
        )
        auth_cert = load_certificate(auth.certificate)
        chain = [load_certificate(der) for der in auth.chain]
        if plan.register:
            await admin_call(
                stub.AddServer(
                    registry_pb2.AddServerRequest(
                        id=plan.server.to_proto(),
                        address=plan.transport_listen,
                        auth_certificate=auth.certificate,
                        audit_address=plan.audit_listen,
                        log_public_key=log_key_text,
                    )
                )
            )
    return auth_cert, load_certificate(sign.certificate), chain


# --- settings ------------------------------------------------------------------------------------


def settings_document(plan: InitPlan) -> dict[str, Any]:
    """The settings file's content for ``plan`` (every path absolute)."""
    directory = plan.directory.resolve()
    keys = directory / "keys"
    consumer: dict[str, Any] = {"listen": plan.consumer_listen}
    if plan.plain_loopback:
        consumer["allow_plain_loopback"] = True
        consumer["plain_loopback_subsystems"] = [str(s) for s in plan.plain_loopback]
    else:
        consumer["client_ca"] = str((plan.client_ca or directory / "ca.pem").resolve())
    globalconf: dict[str, Any] = {"anchor": str(directory / "anchor.toml")}
    if plan.fetch_interval_seconds is not None:
        globalconf["fetch_interval_seconds"] = plan.fetch_interval_seconds
    document: dict[str, Any] = {
        "server_id": str(plan.server),
        "data_dir": str(directory / "data"),
        "keys": {
            "auth_key": str(keys / "auth.key"),
            "auth_cert": str(keys / "auth.pem"),
            "signing_key": str(keys / "sign.key"),
            "signing_cert": str(keys / "sign.pem"),
        },
        "globalconf": globalconf,
        "consumer": consumer,
        "transport": {"listen": plan.transport_listen},
        "metrics": {"listen": plan.metrics_listen},
        "backends": [
            {"service": str(service), "address": address} for service, address in plan.backends
        ],
    }
    if plan.audit_listen:
        document["audit"] = {
            "listen": plan.audit_listen,
            "client_ca": str((plan.client_ca or directory / "ca.pem").resolve()),
        }
    if plan.console_listen:
        # Browsers' certificates chain to the trust anchors of the configuration in force.
        document["console"] = {"listen": plan.console_listen}
    return document


async def initialise(plan: InitPlan, target: RegistryTarget | None) -> Path:
    """Make the keys, CSRs, certificates (``target`` given) and settings of ``plan``.

    Returns the settings file. With ``target`` None (offline) only keys and CSRs are made unless
    ``keys/auth.pem`` and ``keys/sign.pem`` already exist (issued out of band), in which case the
    settings are written too. Raises :class:`InitError` naming the failed step.
    """
    directory = plan.directory.resolve()
    settings_path = directory / SETTINGS_FILE
    if settings_path.exists() and not plan.force:
        raise InitError(f"{SETTINGS_FILE} exists already in the directory (give --force)")
    keys = directory / "keys"
    data_keys = directory / "data" / "keys"
    for folder in (directory, keys, directory / "data", data_keys):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    anchor = ConfigurationAnchor.from_file(plan.anchor)
    if anchor.instance != plan.server.member.instance:
        raise InitError(
            f"the anchor is for instance {anchor.instance}, not {plan.server.member.instance}"
        )
    if plan.anchor.resolve() != (directory / "anchor.toml"):
        shutil.copyfile(plan.anchor, directory / "anchor.toml")

    auth_key = _key_for(keys / "auth.key", force=plan.force)
    sign_key = _key_for(keys / "sign.key", force=plan.force)
    auth_csr = _write_csr(keys / "auth.csr", auth_key, str(plan.server))
    sign_csr = _write_csr(keys / "sign.csr", sign_key, str(plan.server.member))
    log_key = load_or_create_log_key(data_keys / LOG_KEY_FILE)
    load_or_create_body_key(data_keys)
    vkey = log_vkey(str(plan.server), log_key)
    write_atomically(directory / "log.vkey", f"{vkey}\n".encode())

    if target is not None:
        auth_cert, sign_cert, chain = await _enrol(
            plan, target, auth_csr=auth_csr, sign_csr=sign_csr, log_key_text=vkey
        )
        _write_chain(keys / "auth.pem", auth_cert, chain)
        _write_chain(keys / "sign.pem", sign_cert, chain)
        anchors = [c for c in chain if c.issuer == c.subject] or chain[-1:]
        write_atomically(directory / "ca.pem", certificate_pem(*anchors))
    elif not ((keys / "auth.pem").exists() and (keys / "sign.pem").exists()):
        return keys / "auth.csr"
    elif not (directory / "ca.pem").exists() and plan.client_ca is None and not plan.plain_loopback:
        raise InitError("offline: put the CA trust anchor in ca.pem or give --client-ca")

    text = settings_toml(settings_document(plan))
    # What serve will read must load: checked before the file is put in place.
    SecurityServerSettings.from_data(tomllib.loads(text), where=f"settings file {SETTINGS_FILE}")
    write_atomically(settings_path, text.encode("utf-8"))
    return settings_path


# --- command -------------------------------------------------------------------------------------


def _parse_backend(text: str) -> tuple[ServiceId, str]:
    service, sep, address = text.rpartition("=")
    if not sep:
        raise click.BadParameter(f"{text!r}: give SERVICE=HOST:PORT")
    try:
        split_address(address)
        return ServiceId.parse(service), address
    except (IdentifierError, ValueError) as exc:
        raise click.BadParameter(f"{text!r}: {exc}") from None


def _paths_from_registry_dir(directory: Path) -> tuple[str | None, Path, Path, Path, Path]:
    """Defaults from a local registry directory: admin address (from its ready file), admin
    cert/key, TLS trust and configuration anchor."""
    ready = read_ready_file(directory / "registry.ready.json") or {}
    address = str(ready["admin"]) if "admin" in ready else None
    return (
        address,
        directory / "admin" / "admin.pem",
        directory / "admin" / "admin.key",
        directory / "ca" / "anchor.pem",
        directory / "globalconf" / "anchor.toml",
    )


_FilePath = click.Path(dir_okay=False, path_type=Path, resolve_path=True)


@click.command("init")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
    help="The server's directory (created).",
)
@click.option("--server-id", required=True, help="INSTANCE/CLASS/CODE/SERVER.")
@click.option("--transport-listen", required=True, help="HOST:PORT other servers call (fixed).")
@click.option("--consumer-listen", default="127.0.0.1:0", show_default=True)
@click.option("--metrics-listen", default="127.0.0.1:0", show_default=True)
@click.option("--anchor", type=_FilePath, help="The configuration anchor (anchor.toml).")
@click.option("--registry", "registry", help="The registry's admin API HOST:PORT.")
@click.option("--registry-cert", type=_FilePath, help="Admin client certificate (PEM).")
@click.option("--registry-key", type=_FilePath, help="Admin client key (PEM).")
@click.option("--registry-ca", type=_FilePath, help="Trust anchor of the registry's TLS cert.")
@click.option(
    "--registry-dir",
    type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
    help="A local registry directory: defaults for the five options above.",
)
@click.option("--client-ca", type=_FilePath, help="CA of backend client certs (default: ca.pem).")
@click.option(
    "--plain-loopback",
    multiple=True,
    help="Accept this subsystem's backends on plain loopback instead of mTLS (repeatable).",
)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    help="SERVICE=HOST:PORT: the backend serving one of this member's services (repeatable).",
)
@click.option(
    "--audit-listen",
    default="",
    help="HOST:PORT of the audit API (auditors over mTLS); registered as its audit address.",
)
@click.option(
    "--console-listen",
    default="",
    help="HOST:PORT of the auditor console (HTTPS, auditors' browser certificates).",
)
@click.option(
    "--fetch-interval",
    type=click.FloatRange(min=0.1, max=3600),
    help="Seconds between global configuration fetches (default: the server's).",
)
@click.option(
    "--register/--no-register",
    default=True,
    show_default=True,
    help="Also register the server (address, auth cert, log key) with the registry.",
)
@click.option("--offline", is_flag=True, help="Only make keys and CSRs (certify out of band).")
@click.option("--force", is_flag=True, help="Replace existing keys and settings.")
def init(
    *,
    directory: Path,
    server_id: str,
    transport_listen: str,
    consumer_listen: str,
    metrics_listen: str,
    anchor: Path | None,
    registry: str | None,
    registry_cert: Path | None,
    registry_key: Path | None,
    registry_ca: Path | None,
    registry_dir: Path | None,
    client_ca: Path | None,
    plain_loopback: tuple[str, ...],
    backends: tuple[str, ...],
    audit_listen: str,
    console_listen: str,
    fetch_interval: float | None,
    register: bool,
    offline: bool,
    force: bool,
) -> None:
    """Generate the server's keys, enrol it with the registry and write DIR/ss.toml.

    Keys: authentication (ECDSA P-256), message signing (ECDSA P-256), message-log checkpoints
    (Ed25519) and message-body encryption, each 0600. Prints the settings file's path; start
    the server with ``ruta ss serve --config DIR/ss.toml``.
    """
    try:
        server = ServerId.parse(server_id)
        plain = tuple(SubsystemId.parse(s) for s in plain_loopback)
        split_address(transport_listen)
        for optional in (audit_listen, console_listen):
            if optional:
                split_address(optional)
    except (IdentifierError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    if registry_dir is not None:
        address, cert, key, ca, anchor_file = _paths_from_registry_dir(registry_dir)
        registry = registry or address
        registry_cert = registry_cert or cert
        registry_key = registry_key or key
        registry_ca = registry_ca or ca
        anchor = anchor or anchor_file
    if anchor is None:
        raise click.UsageError("give --anchor (or --registry-dir)")
    target: RegistryTarget | None = None
    if not offline:
        if registry is None or registry_cert is None or registry_key is None or registry_ca is None:
            raise click.UsageError(
                "give --registry, --registry-cert, --registry-key and --registry-ca "
                "(or --registry-dir), or --offline"
            )
        target = RegistryTarget(registry, registry_cert, registry_key, registry_ca)
    plan = InitPlan(
        directory=directory,
        server=server,
        anchor=anchor,
        transport_listen=transport_listen,
        consumer_listen=consumer_listen,
        metrics_listen=metrics_listen,
        client_ca=client_ca,
        plain_loopback=plain,
        backends=tuple(_parse_backend(b) for b in backends),
        audit_listen=audit_listen,
        console_listen=console_listen,
        fetch_interval_seconds=fetch_interval,
        register=register and not offline,
        force=force,
    )
    result = asyncio.run(initialise(plan, target))
    if result.name == SETTINGS_FILE:
        click.echo(str(result))
    else:
        click.echo(
            f"wrote keys and CSRs in {result.parent}; have auth.csr and sign.csr certified "
            "(ruta registry ca issue), save them as auth.pem and sign.pem there, put the CA "
            "anchor in ca.pem and run the same init command again"
        )
