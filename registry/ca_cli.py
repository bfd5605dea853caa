"""``ruta registry ca …`` and ``ruta registry ocsp …``: the certificate authority's commands.

See docs/operator/ca.md. Errors are Ruta faults (printed as ``error: <code>: <text>``, exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import click
from aiohttp import web

from registry.ca import CertificateAuthority, parse_reason
from registry.errors import InvalidRequestError
from registry.ocsp_server import ocsp_app
from ruta.addresses import split_address
from ruta.files import FileReadError, read_bounded, write_atomically
from ruta.ids import MemberId, ServerId, SubsystemId
from ruta.pki.certs import (
    CertificateKind,
    Role,
    RoleName,
    certificate_pem,
    load_certificate,
    load_certificates,
    parse_role,
)
from ruta.pki.keys import load_private_key
from ruta.pki.pkcs12 import pkcs12_bundle

__all__ = ["ca", "ocsp"]

#: Largest passphrase file read.
MAX_PASSPHRASE_BYTES: Final = 1024
#: Largest CSR or certificate file read from the command line.
MAX_INPUT_FILE_BYTES: Final = 64 * 1024

_DIR = click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The CA directory.",
)
_PASSPHRASE = click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File whose first line is the CA key's passphrase.",
)


def _passphrase(path: Path | None) -> bytes | None:
    if path is None:
        return None
    data = _read(path, MAX_PASSPHRASE_BYTES)
    return data.splitlines()[0] if data.strip() else None


def _read(path: Path, limit: int) -> bytes:
    try:
        return read_bounded(path, limit, what="input file")
    except FileReadError as exc:
        raise InvalidRequestError(exc.message) from None


@click.group(name="ca")
def ca() -> None:
    """The instance's certificate authority (a directory of keys and records)."""


@ca.command(name="init")
@_DIR
@click.option("--name", "common_name", default="Ruta CA", show_default=True, help="CA name (CN).")
@click.option(
    "--ocsp-url",
    required=True,
    help="URL of the OCSP responder, written into every certificate issued (AIA).",
)
@_PASSPHRASE
@click.option(
    "--parent-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Make an intermediate: the parent CA's private key (PEM, 0600).",
)
@click.option(
    "--parent-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Make an intermediate: the parent CA's certificate (PEM).",
)
@click.option(
    "--parent-chain",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The parent's own issuers up to and including the root (PEM), unless it is the root.",
)
@click.option(
    "--parent-passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File whose first line is the parent key's passphrase.",
)
def init(
    *,
    directory: Path,
    common_name: str,
    ocsp_url: str,
    passphrase_file: Path | None,
    parent_key: Path | None,
    parent_cert: Path | None,
    parent_chain: Path | None,
    parent_passphrase_file: Path | None,
) -> None:
    """Create a CA: a self-signed root, or an intermediate under --parent-key/--parent-cert."""
    authority = CertificateAuthority.initialise(
        directory,
        common_name=common_name,
        ocsp_url=ocsp_url,
        passphrase=_passphrase(passphrase_file),
        parent_key=(
            load_private_key(parent_key, _passphrase(parent_passphrase_file))
            if parent_key
            else None
        ),
        parent_certificate=(
            load_certificate(_read(parent_cert, MAX_INPUT_FILE_BYTES)) if parent_cert else None
        ),
        parent_chain=(
            load_certificates(_read(parent_chain, MAX_INPUT_FILE_BYTES)) if parent_chain else ()
        ),
    )
    kind = "intermediate" if authority.chain else "root"
    click.echo(f"initialised {kind} CA {common_name!r}; trust anchor: {directory / 'anchor.pem'}")


@ca.command(name="issue")
@_DIR
@click.option(
    "--csr",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PKCS#10 request, PEM or DER (e.g. from `openssl req`).",
)
@click.option(
    "--kind",
    required=True,
    type=click.Choice([k.value for k in CertificateKind if k is not CertificateKind.OCSP]),
    help="Certificate profile.",
)
@click.option("--server", "server", help="Security server INSTANCE/CLASS/CODE/SERVER (auth).")
@click.option(
    "--member",
    "member",
    help="Member INSTANCE/CLASS/CODE (sign, gateway; member-admin or auditor role).",
)
@click.option("--subsystem", "subsystem", help="Subsystem INSTANCE/CLASS/CODE/SUB (subsystem).")
@click.option(
    "--role",
    "roles",
    multiple=True,
    help=(
        "Role (role kind): registry-admin, member-admin or auditor (with --member, or written "
        "ROLE:MEMBER), auditor-supervisor, auditor-bodies[:MEMBER]. Repeatable."
    ),
)
@click.option(
    "--dns", "dns_names", multiple=True, help="DNS name of the server (auth). Repeatable."
)
@click.option(
    "--ip", "ip_addresses", multiple=True, help="IP address of the server (auth). Repeatable."
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the certificate (PEM).",
)
@click.option(
    "--chain-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the chain (PEM, leaf first, anchor last).",
)
@_PASSPHRASE
def issue(
    *,
    directory: Path,
    csr: Path,
    kind: str,
    server: str | None,
    member: str | None,
    subsystem: str | None,
    roles: tuple[str, ...],
    dns_names: tuple[str, ...],
    ip_addresses: tuple[str, ...],
    out: Path,
    chain_out: Path | None,
    passphrase_file: Path | None,
) -> None:
    """Issue a certificate from a CSR; prints its serial (hex)."""
    profile = CertificateKind(kind)
    member_id = MemberId.parse(member) if member else None
    parsed_roles: list[Role] = []
    if profile is CertificateKind.ROLE:
        for text in roles:
            if text in _MEMBER_SCOPED and member_id is not None:
                parsed_roles.append(Role(RoleName(text), member_id))
            else:
                parsed_roles.append(parse_role(text))
        member_id = None  # --member only qualified the member-scoped roles
    elif roles:
        raise InvalidRequestError("--role is only for --kind role")
    authority = CertificateAuthority.open(directory, passphrase=_passphrase(passphrase_file))
    cert = authority.issue(
        _read(csr, MAX_INPUT_FILE_BYTES),
        profile,
        server=ServerId.parse(server) if server else None,
        member=member_id,
        subsystem=SubsystemId.parse(subsystem) if subsystem else None,
        roles=parsed_roles,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
    )
    write_atomically(out, certificate_pem(cert))
    if chain_out is not None:
        write_atomically(chain_out, certificate_pem(cert, *authority.chain, authority.trust_anchor))
    click.echo(format(cert.serial_number, "x"))


#: Roles ``--member`` completes when written bare (``auditor-bodies`` bare means everywhere).
_MEMBER_SCOPED: Final = frozenset({RoleName.MEMBER_ADMIN, RoleName.AUDITOR})


@ca.command(name="revoke")
@_DIR
@click.option("--serial", required=True, help="Serial number of the certificate, hex.")
@click.option(
    "--reason",
    default="unspecified",
    show_default=True,
    help="RFC 5280 reason: keyCompromise, superseded, cessationOfOperation, ...",
)
def revoke(directory: Path, serial: str, reason: str) -> None:
    """Revoke a certificate this CA issued; the OCSP responder reports it revoked at once."""
    text = serial.lower().removeprefix("0x").replace(":", "")
    try:
        number = int(text, 16)
    except ValueError as exc:
        raise InvalidRequestError("--serial must be a hexadecimal number") from exc
    authority = CertificateAuthority.open(directory)
    record = authority.revoke(number, parse_reason(reason))
    click.echo(f"revoked {format(number, 'x')} at {record.revoked_at.isoformat()} ({reason})")


@ca.command(name="p12")
@click.option(
    "--key",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The private key (PEM, 0600) the certificate was issued for.",
)
@click.option(
    "--cert",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The certificate (PEM or DER), e.g. what `ca issue` or the console issued.",
)
@click.option(
    "--chain",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Its issuers up to the anchor (PEM), e.g. the CA directory's anchor.pem.",
)
@click.option(
    "--p12-passphrase-file",
    "passphrase_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File whose first line is the passphrase that will protect the .p12 (8+ characters).",
)
@click.option("--name", default="Ruta administrator", show_default=True, help="Friendly name.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the .p12 (mode 0600).",
)
def p12(
    *, key: Path, cert: Path, chain: Path | None, passphrase_file: Path, name: str, out: Path
) -> None:
    """Write a key and its certificate as a passphrase-protected PKCS#12 file, the form a
    browser imports (docs/operator/console-certificates.md). The passphrase is never printed."""
    passphrase = _passphrase(passphrase_file)
    if passphrase is None:
        raise InvalidRequestError("the passphrase file is empty")
    bundle = pkcs12_bundle(
        key=load_private_key(key),
        certificate=load_certificate(_read(cert, MAX_INPUT_FILE_BYTES)),
        chain=load_certificates(_read(chain, MAX_INPUT_FILE_BYTES)) if chain else (),
        passphrase=passphrase,
        name=name,
    )
    write_atomically(out, bundle, mode=0o600)
    click.echo(f"wrote {out} (PKCS#12, key and certificate; import it into a browser)")


@ca.command(name="renew-ocsp")
@_DIR
@_PASSPHRASE
def renew_ocsp(directory: Path, passphrase_file: Path | None) -> None:
    """Replace the OCSP responder's key and certificate; restart the responder afterwards."""
    authority = CertificateAuthority.open(directory, passphrase=_passphrase(passphrase_file))
    cert = authority.renew_ocsp_responder()
    click.echo(f"new OCSP signing certificate valid until {cert.not_valid_after_utc.isoformat()}")


@ca.command(name="list")
@_DIR
def list_issued(directory: Path) -> None:
    """List issued certificates: serial, status, valid until, subject."""
    authority = CertificateAuthority.open(directory)
    for serial in sorted(authority.issued_serials()):
        cert = authority.issued(serial)
        if cert is None:
            continue
        status, _ = authority.status(serial)
        click.echo(
            f"{format(serial, 'x')}\t{status}\t{cert.not_valid_after_utc.date().isoformat()}"
            f"\t{cert.subject.rfc4514_string()}"
        )


@click.group(name="ocsp")
def ocsp() -> None:
    """The OCSP responder of a CA directory."""


def _listen(text: str) -> tuple[str, int]:
    try:
        host, port = split_address(text)
    except ValueError:
        raise InvalidRequestError("--listen must be HOST:PORT") from None
    if port == 0:
        raise InvalidRequestError("--listen must be HOST:PORT")
    return host, port


@ocsp.command(name="serve")
@_DIR
@click.option("--listen", required=True, help="HOST:PORT to listen on, e.g. 127.0.0.1:8888.")
@click.option(
    "--path", default=None, help="URL path to answer on (default: the CA's OCSP URL path)."
)
def serve(directory: Path, listen: str, path: str | None) -> None:
    """Answer OCSP (RFC 6960, GET and POST) for the CA in --dir until interrupted."""
    host, port = _listen(listen)
    authority = CertificateAuthority.open(directory)
    click.echo(f"OCSP responder listening on {host}:{port}", err=True)
    web.run_app(ocsp_app(authority, path=path), host=host, port=port, print=None, access_log=None)
