"""``ruta registry init`` and ``ruta registry node add``: create registry directories.

What :func:`initialise_registry` creates in ``DIR`` (see :class:`registry.settings.RegistryLayout`):
the settings file, the store (migrated; SQLite ``registry.db`` unless a URL is given), the CA (with
its OCSP responder key), the admin listener's TLS key and certificate, the configuration-signing key
and its self-signed certificate, the configuration anchor for security servers, the witness's
Ed25519 key, and a registry-admin client key and certificate for the local operator. Private keys
are 0600 files and are never printed.

A further node on the same PostgreSQL database
(docs/adr/0025-registry-nodes-sign-with-their-own-keys.md) is made in two steps, so that its keys
are generated where they are used: :func:`prepare_registry_node` (``node init``, on the new host)
creates its own configuration-signing key and certificate and TLS key, and a request with their
public halves; :func:`add_registry_node` (``node add``, where the CA is) issues its TLS
certificate, extends the anchor, and writes a grant of public files (settings, certificates,
the witness's verifier key, the anchor) to copy into the new node's directory. Issuing, OCSP, the
admin API and the witness stay with the node that holds the CA.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from registry.ca import CertificateAuthority
from registry.errors import AlreadyExistsError, InvalidRequestError, StoreError
from registry.model import Administrator, AdminRole, admin_role_text
from registry.settings import RegistryLayout, RegistrySettings, split_address
from registry.store import RegistryStore, database_url
from ruta.checkpoint import SignatureType, Verifier
from ruta.faults import RutaError
from ruta.files import write_atomically
from ruta.globalconf import ConfigurationAnchor
from ruta.ids import MemberId, ServerId
from ruta.pki.certs import (
    CertificateKind,
    Role,
    RoleName,
    certificate_pem,
    fingerprint,
    load_certificate,
    load_csr,
    make_csr,
)
from ruta.pki.keys import (
    generate_ec_key,
    generate_ed25519_key,
    load_private_key,
    save_private_key,
)
from ruta.settings import ConfigError, describe_validation_error, read_text

__all__ = [
    "CONFIG_SIGNING_VALIDITY",
    "INIT_ACTOR",
    "MAX_NODE_REQUEST_BYTES",
    "NODE_REQUEST_FILE",
    "PUBLIC_CA_FILES",
    "REGISTRY_SERVER_CODE",
    "AddedNode",
    "InitialisedRegistry",
    "PreparedNode",
    "add_registry_node",
    "initialise_registry",
    "prepare_registry_node",
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
    console = settings.console.model_dump(mode="json", exclude_none=True)
    data.pop("console", None)
    if console:
        data["console"] = console
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
#: What ``node init`` writes for ``node add``: public material only.
NODE_REQUEST_FILE: Final = "node-request.json"
#: Largest node request read.
MAX_NODE_REQUEST_BYTES: Final = 64 * 1024
_NODE_REQUEST_VERSION: Final = 1


class _NodeRequest(BaseModel):
    """``node-request.json``: what a new node asks the CA node for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    instance: str = Field(max_length=64)
    admin_listen: str = Field(max_length=300)
    http_listen: str = Field(max_length=300)
    public_url: str | None = Field(default=None, max_length=2048)
    signing_certificate: str = Field(max_length=16 * 1024)
    tls_csr: str = Field(max_length=16 * 1024)


@dataclass(frozen=True, slots=True)
class PreparedNode:
    """What ``node init`` made (no secrets)."""

    layout: RegistryLayout
    request: Path
    signing_cert_sha256: str

    def to_json(self) -> dict[str, str]:
        return {
            "directory": str(self.layout.root),
            "request": str(self.request),
            "signing_cert_sha256": self.signing_cert_sha256,
        }


@dataclass(frozen=True, slots=True)
class AddedNode:
    """What ``node add`` made, for the operator (no secrets)."""

    grant: Path
    settings: RegistrySettings
    anchor: ConfigurationAnchor

    def to_json(self) -> dict[str, object]:
        return {
            "grant": str(self.grant),
            "instance": self.settings.instance,
            "public_url": self.settings.base_url(),
            "globalconf_urls": list(self.anchor.globalconf_urls),
        }


class _NodeSettings(RegistrySettings):
    """A new node's settings exactly as its grant writes them: this host's ``RUTA_REGISTRY_*``
    environment (the first node's overrides) does not apply to another node."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _without_password(url: str | None) -> str | None:
    """``url`` with any password removed (``None`` stays ``None``)."""
    if url is None:
        return None
    parsed = make_url(url)
    if parsed.password is None:
        return url
    return URL.create(
        parsed.drivername,
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=parsed.query,
    ).render_as_string(hide_password=False)


def _is_postgresql(url: str | None) -> bool:
    if url is None:
        return False
    try:
        return make_url(url).get_backend_name() == "postgresql"
    except ArgumentError:
        return False


def prepare_registry_node(
    node: Path,
    *,
    instance: str,
    admin_listen: str = "127.0.0.1:4470",
    http_listen: str = "127.0.0.1:4480",
    public_url: str | None = None,
) -> PreparedNode:
    """Start a further registry node in ``node`` (on the host that will run it): its own
    configuration-signing key and certificate, its own TLS key, and ``node-request.json`` with
    the public half of both for ``node add``. The private keys never leave ``node``.

    Raises :class:`AlreadyExistsError` when ``node`` already holds a registry or a request and
    :class:`ruta.settings.ConfigError` for invalid listeners or URL. The directory is not a
    registry (``serve`` refuses it) until the grant from ``node add`` is copied in.
    """
    layout = RegistryLayout(node)
    request_path = layout.root / NODE_REQUEST_FILE
    if layout.settings.exists() or layout.ca.exists() or request_path.exists():
        raise AlreadyExistsError("the node directory already holds a registry or a request")
    try:
        RegistrySettings(
            instance=instance,
            admin_listen=admin_listen,
            http_listen=http_listen,
            public_url=public_url,
        )
    except ValueError as exc:
        raise ConfigError(f"node settings are invalid: {exc}") from None
    if public_url is None and split_address(http_listen)[1] == 0:
        raise InvalidRequestError("with an HTTP port of 0, give --public-url")
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the node directory ({exc.strerror})") from None
    now = datetime.datetime.now(datetime.UTC)
    signing_key = generate_ec_key()
    signing_cert = self_signed_signing_certificate(instance, signing_key, now)
    layout.signing_key.parent.mkdir(parents=True, exist_ok=True)
    save_private_key(layout.signing_key, signing_key)
    _write_public(layout.signing_cert, certificate_pem(signing_cert))
    tls_key = generate_ec_key()
    layout.tls_key.parent.mkdir(parents=True, exist_ok=True)
    save_private_key(layout.tls_key, tls_key)
    request = _NodeRequest(
        version=_NODE_REQUEST_VERSION,
        instance=instance,
        admin_listen=admin_listen,
        http_listen=http_listen,
        public_url=public_url,
        signing_certificate=certificate_pem(signing_cert).decode("ascii"),
        tls_csr=make_csr(tls_key, "registry").public_bytes(Encoding.PEM).decode("ascii"),
    )
    _write_public(request_path, request.model_dump_json(indent=2).encode() + b"\n")
    return PreparedNode(
        layout=layout, request=request_path, signing_cert_sha256=fingerprint(signing_cert)
    )


def _read_request(path: Path) -> _NodeRequest:
    text = read_text(path, what="node request", limit=MAX_NODE_REQUEST_BYTES)
    try:
        return _NodeRequest.model_validate_json(text)
    except ValidationError as exc:
        raise ConfigError(
            f"node request {path.name} is invalid: {describe_validation_error(exc)}"
        ) from None


def _node_settings(first: RegistrySettings, request: _NodeRequest) -> _NodeSettings:
    """The new node's settings: the first node's, with the request's listeners and URL."""
    # A node without the CA serves no admin API, so no console either.
    values = first.model_dump(exclude_none=True, exclude={"console"}) | {
        "admin_listen": request.admin_listen,
        "http_listen": request.http_listen,
        "public_url": request.public_url,
        # The same database; a password stays out of the grant (the new node reads the full URL
        # from RUTA_REGISTRY_DATABASE_URL, as the first one does).
        "database_url": _without_password(first.database_url),
        # One witness for every node: the configuration's content is the same.
        "witness_url": first.witness_url or f"{first.base_url()}/witness",
    }
    try:
        return _NodeSettings(**{key: v for key, v in values.items() if v is not None})
    except ValueError as exc:
        raise ConfigError(f"node settings are invalid: {exc}") from None


def _node_public_keys(
    request: _NodeRequest,
) -> tuple[x509.Certificate, x509.CertificateSigningRequest]:
    """The request's signing certificate (valid now) and TLS CSR (self-signature checked)."""
    try:
        signing_cert = load_certificate(request.signing_certificate.encode())
        csr = load_csr(request.tls_csr.encode())
    except RutaError as exc:
        raise InvalidRequestError(f"the node request is unreadable: {exc.message}") from None
    now = datetime.datetime.now(datetime.UTC)
    if not signing_cert.not_valid_before_utc <= now < signing_cert.not_valid_after_utc:
        raise InvalidRequestError("the node's signing certificate is not valid now")
    return signing_cert, csr


def add_registry_node(source: Path, request_path: Path, grant: Path) -> AddedNode:
    """Admit the node that wrote ``request_path`` to the registry in ``source`` (the directory
    ``init`` made, holding the CA; run this where it is), and write into ``grant`` what the new
    node needs besides its own keys: its settings, its TLS certificate (issued by the CA), the
    CA's public certificates, the witness's verifier key and the anchor extended by the new
    node's configuration URL and signing certificate. ``source``'s anchor is rewritten to the
    extended one: hand it to every security server. Nothing secret is written to ``grant``.

    Raises :class:`InvalidRequestError` when the store is not PostgreSQL, the request is for
    another instance, or the anchor is full or lists its URL already;
    :class:`ruta.settings.ConfigError` for an unreadable
    request; :class:`AlreadyExistsError` when ``grant`` exists. A failure leaves ``source``
    unchanged.
    """
    origin = RegistryLayout(source)
    if grant.exists():
        raise AlreadyExistsError("the grant directory exists already")
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
    request = _read_request(request_path)
    if request.instance != first.instance:
        raise InvalidRequestError("the node request is for another instance")
    settings = _node_settings(first, request)
    signing_cert, csr = _node_public_keys(request)
    url = f"{settings.base_url()}/globalconf"
    listed = ConfigurationAnchor.from_file(origin.anchor)
    if url in listed.globalconf_urls:
        raise InvalidRequestError(
            f"the anchor already lists {url}: give the new node its own --public-url"
        )
    anchor = listed.with_node(url=url, certificate=signing_cert)
    witness_key = load_private_key(origin.witness_key)
    if not isinstance(witness_key, Ed25519PrivateKey):
        raise StoreError("the witness key must be an Ed25519 key")
    witness_vkey = Verifier.for_key(
        settings.witness_name, SignatureType.COSIGNATURE_V1, witness_key
    ).vkey()
    ca = CertificateAuthority.open(origin.ca)
    dns_names, ip_addresses = _tls_names(settings.admin_listen)
    tls_cert = ca.issue(
        csr,
        CertificateKind.AUTH,
        server=registry_server_id(settings.instance),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
    )

    out = RegistryLayout(grant)
    try:
        out.root.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise AlreadyExistsError("the grant directory exists already") from None
    except OSError as exc:
        raise StoreError(f"cannot create the grant directory ({exc.strerror})") from None
    for name in PUBLIC_CA_FILES:
        if (origin.ca / name).exists():
            _write_public(out.ca / name, (origin.ca / name).read_bytes())
    _write_public(out.tls_cert, certificate_pem(tls_cert, *ca.chain))
    _write_public(out.witness_vkey, witness_vkey.encode() + b"\n")
    _write_public(out.anchor, anchor.to_toml().encode())
    _write_public(out.settings, _settings_file(settings))
    # Last: the first node's anchor lists the new node only once the grant is complete.
    _write_public(origin.anchor, anchor.to_toml().encode())
    return AddedNode(grant=out.root, settings=settings, anchor=anchor)
