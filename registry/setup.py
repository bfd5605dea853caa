"""``ruta registry init`` and ``ruta registry node add``: create registry directories.

What :func:`initialise_registry` creates in ``DIR`` (see :class:`registry.settings.RegistryLayout`):
the settings file, the store (migrated; SQLite ``registry.db`` unless a URL is given), the CA (with
its OCSP responder key), the admin listener's TLS key and certificate, the configuration-signing key
and its self-signed certificate, the configuration anchor for security servers, the witness's
Ed25519 key, and a registry-admin client key and certificate for the local operator. Private keys
are 0600 files and are never printed.

What :func:`add_registry_node` creates in a new directory for a further node on the same
PostgreSQL database (docs/adr/0013-registry-nodes-sign-with-their-own-keys.md): its own
configuration-signing key and certificate, its own admin-listener TLS key (certificate issued by
the CA), a copy of the witness key, the CA's public certificates (never its keys: issuing and OCSP
stay with the node that holds the CA), its settings, and the anchor extended by the new node, which
is written back to the first node too.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from registry.ca import CertificateAuthority
from registry.errors import AlreadyExistsError, InvalidRequestError, StoreError
from registry.model import Administrator, AdminRole, admin_role_text
from registry.settings import RegistryLayout, RegistrySettings, split_address
from registry.store import RegistryStore, database_url
from ruta.files import write_atomically
from ruta.globalconf import ConfigurationAnchor
from ruta.ids import MemberId, ServerId
from ruta.pki.certs import (
    CertificateKind,
    Role,
    RoleName,
    certificate_pem,
    fingerprint,
    make_csr,
)
from ruta.pki.keys import (
    generate_ec_key,
    generate_ed25519_key,
    load_private_key,
    save_private_key,
)
from ruta.settings import ConfigError

__all__ = [
    "CONFIG_SIGNING_VALIDITY",
    "INIT_ACTOR",
    "PUBLIC_CA_FILES",
    "REGISTRY_SERVER_CODE",
    "AddedNode",
    "InitialisedRegistry",
    "add_registry_node",
    "initialise_registry",
    "registry_server_id",
    "self_signed_signing_certificate",
]

#: Validity of the self-signed configuration-signing certificate (the anchor carries it).
CONFIG_SIGNING_VALIDITY: Final = datetime.timedelta(days=10 * 365)
#: Who the audit trail names for what ``init`` does.
INIT_ACTOR: Final = "ruta registry init (local operator)"
#: Server code in the registry's own TLS certificate (``INSTANCE/RUTA/REGISTRY/registry``).
REGISTRY_SERVER_CODE: Final = "registry"


def registry_server_id(instance: str) -> ServerId:
    """The identifier the registry's own TLS certificate names."""
    return ServerId(MemberId(instance, "RUTA", "REGISTRY"), REGISTRY_SERVER_CODE)


@dataclass(frozen=True, slots=True)
class InitialisedRegistry:
    """What ``init`` made, for the operator (no secrets)."""

    layout: RegistryLayout
    settings: RegistrySettings
    admin_cert_sha256: str
    signing_cert_sha256: str

    def to_json(self) -> dict[str, str]:
        layout = self.layout
        return {
            "directory": str(layout.root),
            "instance": self.settings.instance,
            "admin_listen": self.settings.admin_listen,
            "http_listen": self.settings.http_listen,
            "public_url": self.settings.base_url(),
            "anchor": str(layout.anchor),
            "trust": str(layout.trust),
            "admin_cert": str(layout.admin_cert),
            "admin_key": str(layout.admin_key),
            "admin_cert_sha256": self.admin_cert_sha256,
            "signing_cert_sha256": self.signing_cert_sha256,
        }


def self_signed_signing_certificate(
    instance: str, key: object, now: datetime.datetime
) -> x509.Certificate:
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"{instance} Ruta configuration signing")]
    )
    public_key = key.public_key()  # type: ignore[attr-defined]
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CONFIG_SIGNING_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )


def _settings_file(settings: RegistrySettings) -> bytes:
    """``registry.toml`` for ``settings``; a database URL with a password stays out of it (only
    the environment can have given one, and ``serve`` reads it from there again)."""
    data = settings.model_dump(exclude_none=True)
    if settings.database_url is not None and _has_password(settings.database_url):
        del data["database_url"]
    return tomli_w.dumps(data).encode()


def _refuse_password(db_url: str | None) -> None:
    """Raise :class:`ConfigError` when ``--db-url`` carries a password (it would be written to
    the settings file)."""
    if db_url is not None and _has_password(db_url):
        raise ConfigError(
            "the database URL carries a password, which would be written to registry.toml; "
            "give the URL without it and set the full URL in RUTA_REGISTRY_DATABASE_URL instead"
        )


def _has_password(url: str) -> bool:
    """Whether the database URL carries a password (an unparsable one is refused later)."""
    try:
        return make_url(url).password is not None
    except ArgumentError:
        return False


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


def _tls_names(admin_listen: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    host, _ = split_address(admin_listen)
    dns = {"localhost"}
    ips = {"127.0.0.1"}
    if host not in {"0.0.0.0", "::", ""}:  # noqa: S104 - naming the wildcard, not binding it
        try:
            ips.add(str(ipaddress.ip_address(host)))
        except ValueError:
            dns.add(host)
    return tuple(sorted(dns)), tuple(sorted(ips))


async def initialise_registry(
    directory: Path,
    *,
    instance: str,
    db_url: str | None = None,
    admin_listen: str = "127.0.0.1:4470",
    http_listen: str = "127.0.0.1:4480",
    public_url: str | None = None,
) -> InitialisedRegistry:
    """Create a new registry in ``directory`` (an absolute path; created if missing).

    Raises :class:`AlreadyExistsError` when the directory already holds a registry,
    :class:`ruta.settings.ConfigError` for invalid settings, and :class:`StoreError` when the
    store cannot be created. A failure part-way leaves a directory without ``registry.toml``
    (``serve`` refuses it); remove it and run ``init`` again.
    """
    layout = RegistryLayout(directory)
    if layout.settings.exists() or layout.ca.exists():
        raise AlreadyExistsError("the directory already holds a registry")
    _refuse_password(db_url)
    values: dict[str, object] = {
        "instance": instance,
        "admin_listen": admin_listen,
        "http_listen": http_listen,
    }
    if db_url is not None:
        values["database_url"] = db_url
    if public_url is not None:
        values["public_url"] = public_url
    try:
        settings = RegistrySettings(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(f"registry settings are invalid: {exc}") from None
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the registry directory ({exc.strerror})") from None
    if settings.public_url is None and split_address(settings.http_listen)[1] == 0:
        raise InvalidRequestError(
            "with an HTTP port of 0, give --public-url (certificates name the OCSP URL)"
        )
    base = settings.base_url()
    now = datetime.datetime.now(datetime.UTC)

    store = await RegistryStore.open(database_url(settings.database_url, layout.root))
    try:
        ca = CertificateAuthority.initialise(
            layout.ca, common_name=f"{instance} Ruta CA", ocsp_url=f"{base}/ocsp"
        )

        tls_key = generate_ec_key()
        dns_names, ip_addresses = _tls_names(settings.admin_listen)
        tls_cert = ca.issue(
            make_csr(tls_key, "registry"),
            CertificateKind.AUTH,
            server=registry_server_id(instance),
            dns_names=dns_names,
            ip_addresses=ip_addresses,
        )
        layout.tls_key.parent.mkdir(parents=True, exist_ok=True)
        save_private_key(layout.tls_key, tls_key)
        _write_public(layout.tls_cert, certificate_pem(tls_cert, *ca.chain))

        signing_key = generate_ec_key()
        signing_cert = self_signed_signing_certificate(instance, signing_key, now)
        layout.signing_key.parent.mkdir(parents=True, exist_ok=True)
        save_private_key(layout.signing_key, signing_key)
        _write_public(layout.signing_cert, certificate_pem(signing_cert))
        anchor = ConfigurationAnchor(
            instance=instance, globalconf_url=f"{base}/globalconf", certificates=(signing_cert,)
        )
        _write_public(layout.anchor, anchor.to_toml().encode())

        layout.witness_key.parent.mkdir(parents=True, exist_ok=True)
        save_private_key(layout.witness_key, generate_ed25519_key())

        admin_key = generate_ec_key()
        admin_cert = ca.issue(
            make_csr(admin_key, "local operator"),
            CertificateKind.ROLE,
            roles=(Role(RoleName.REGISTRY_ADMIN),),
        )
        layout.admin_key.parent.mkdir(parents=True, exist_ok=True)
        save_private_key(layout.admin_key, admin_key)
        _write_public(layout.admin_cert, certificate_pem(admin_cert, *ca.chain))
        await store.add_administrator(
            Administrator(
                name="local operator",
                roles=(admin_role_text(AdminRole.REGISTRY_ADMIN),),
                cert_sha256=fingerprint(admin_cert),
                created_at=now,
            ),
            actor=INIT_ACTOR,
        )
    finally:
        await store.close()

    # Written last: its presence marks a complete registry directory.
    _write_public(layout.settings, _settings_file(settings))
    return InitialisedRegistry(
        layout=layout,
        settings=settings,
        admin_cert_sha256=fingerprint(admin_cert),
        signing_cert_sha256=fingerprint(signing_cert),
    )


#: Public files of the CA directory a further node needs (what it publishes in the configuration
#: and trusts admin clients by); never ``ca.key``, ``ocsp.key`` or the CA's records.
PUBLIC_CA_FILES: Final = ("ca.pem", "anchor.pem", "parents.pem", "ocsp.pem")


@dataclass(frozen=True, slots=True)
class AddedNode:
    """What ``node add`` made, for the operator (no secrets)."""

    layout: RegistryLayout
    settings: RegistrySettings
    anchor: ConfigurationAnchor
    signing_cert_sha256: str

    def to_json(self) -> dict[str, object]:
        return {
            "directory": str(self.layout.root),
            "instance": self.settings.instance,
            "admin_listen": self.settings.admin_listen,
            "http_listen": self.settings.http_listen,
            "public_url": self.settings.base_url(),
            "anchor": str(self.layout.anchor),
            "globalconf_urls": list(self.anchor.globalconf_urls),
            "signing_cert_sha256": self.signing_cert_sha256,
        }


def _is_postgresql(url: str | None) -> bool:
    if url is None:
        return False
    try:
        return make_url(url).get_backend_name() == "postgresql"
    except ArgumentError:
        return False


def add_registry_node(
    source: Path,
    node: Path,
    *,
    admin_listen: str = "127.0.0.1:4470",
    http_listen: str = "127.0.0.1:4480",
    public_url: str | None = None,
) -> AddedNode:
    """Create the directory ``node`` for a further registry node of the registry in ``source``
    (a directory made by ``init``, holding the CA; run this where that directory is).

    The new node shares the source's PostgreSQL database and settings, except where it listens
    and its public URL. It gets keys of its own; ``source``'s anchor is rewritten to list the new
    node's configuration URL and signing certificate (hand the new anchor to every security
    server). Raises :class:`AlreadyExistsError` when ``node`` already holds a registry,
    :class:`InvalidRequestError` when the store is not PostgreSQL or the anchor is full, and
    :class:`ruta.settings.ConfigError` for a source that is not a registry or invalid settings.
    A failure part-way leaves ``node`` without ``registry.toml`` and ``source`` unchanged.
    """
    origin = RegistryLayout(source)
    layout = RegistryLayout(node)
    if layout.settings.exists() or layout.ca.exists():
        raise AlreadyExistsError("the node directory already holds a registry")
    first = RegistrySettings.load(origin.root)
    if not _is_postgresql(first.database_url):
        raise InvalidRequestError(
            "registry nodes share one PostgreSQL database; this registry's store is not "
            "PostgreSQL (give --db postgresql://... to init)"
        )
    if not origin.holds_ca:
        raise InvalidRequestError(
            "run node add on the node that holds the CA (the directory init created)"
        )
    try:
        settings = RegistrySettings(
            **(
                first.model_dump(exclude_none=True)
                | {
                    "admin_listen": admin_listen,
                    "http_listen": http_listen,
                    "public_url": public_url,
                    # One witness URL for every node: the configuration's content is the same.
                    "witness_url": first.witness_url or f"{first.base_url()}/witness",
                }
            )
        )
    except ValueError as exc:
        raise ConfigError(f"node settings are invalid: {exc}") from None
    if settings.public_url is None and split_address(settings.http_listen)[1] == 0:
        raise InvalidRequestError("with an HTTP port of 0, give --public-url")
    url = f"{settings.base_url()}/globalconf"
    anchor_before = ConfigurationAnchor.from_file(origin.anchor)
    now = datetime.datetime.now(datetime.UTC)
    signing_key = generate_ec_key()
    signing_cert = self_signed_signing_certificate(settings.instance, signing_key, now)
    anchor = anchor_before.with_node(url=url, certificate=signing_cert)

    ca = CertificateAuthority.open(origin.ca)
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.ca.mkdir(exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the node directory ({exc.strerror})") from None
    for name in PUBLIC_CA_FILES:
        if (origin.ca / name).exists():
            _write_public(layout.ca / name, (origin.ca / name).read_bytes())

    tls_key = generate_ec_key()
    dns_names, ip_addresses = _tls_names(settings.admin_listen)
    tls_cert = ca.issue(
        make_csr(tls_key, "registry"),
        CertificateKind.AUTH,
        server=registry_server_id(settings.instance),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
    )
    layout.tls_key.parent.mkdir(parents=True, exist_ok=True)
    save_private_key(layout.tls_key, tls_key)
    _write_public(layout.tls_cert, certificate_pem(tls_cert, *ca.chain))

    layout.signing_key.parent.mkdir(parents=True, exist_ok=True)
    save_private_key(layout.signing_key, signing_key)
    _write_public(layout.signing_cert, certificate_pem(signing_cert))

    # The configuration names one witness key, so every node holds the same one.
    layout.witness_key.parent.mkdir(parents=True, exist_ok=True)
    save_private_key(layout.witness_key, load_private_key(origin.witness_key))

    _write_public(layout.anchor, anchor.to_toml().encode())
    _write_public(layout.settings, _settings_file(settings))
    # Last: the first node's anchor lists the new node only once the node is complete.
    _write_public(origin.anchor, anchor.to_toml().encode())
    return AddedNode(
        layout=layout,
        settings=settings,
        anchor=anchor,
        signing_cert_sha256=fingerprint(signing_cert),
    )
