"""A gateway's settings: one TOML file (``ruta gateway serve --config FILE``), overridden by
``RUTA_GW_*`` variables.

The file names the member the gateway serves, where it listens for HTTP callers and how it
authenticates them, how it reaches its member's security server (the consumer port, with the
gateway certificate), the configuration anchor, the REST backends it serves on the provider side
(the *back end*, a gRPC port its security server routes REST services to), and the bounds of every
untrusted input. Relative paths are resolved against the file's folder. ``docs/guides/rest.md``
shows a complete file. Nothing here is a secret: key files are referenced by path.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Final, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from ruta.addresses import split_address
from ruta.globalconf.client import GlobalConfSettings as ClientGlobalConfSettings
from ruta.ids import MemberId, ServiceId, SubsystemId
from ruta.settings import MemberIdText, RutaSettings, ServiceIdText, SubsystemIdText

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "GRPC_ENVELOPE_BYTES",
    "BackEndSettings",
    "CitizenSettings",
    "ConsumerPortSettings",
    "GatewaySettings",
    "HttpSettings",
    "LimitSettings",
    "MetricsSettings",
    "OpenDataSettings",
    "PublicSettings",
    "RestBackendSettings",
    "check_issuer_url",
    "is_loopback_address",
]

#: Default largest HTTP request or response body the gateway carries.
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
#: Room gRPC messages get beyond the body bound, for their envelope (and an HttpRequest's other
#: fields), so the gateway's own bounds refuse an oversized body, not gRPC's.
GRPC_ENVELOPE_BYTES: Final = 64 * 1024
#: Most REST backends one gateway serves.
MAX_REST_BACKENDS: Final = 1024
#: Request headers a REST call carries to the provider by default (besides none else).
DEFAULT_REQUEST_HEADERS: Final = ("accept", "accept-language", "content-type")
#: Response headers a REST backend's answer carries back by default.
DEFAULT_RESPONSE_HEADERS: Final = ("content-type", "content-language", "etag", "last-modified")

Address = Annotated[str, Field(min_length=3, max_length=300)]


def is_loopback_address(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address (IPv4-mapped included)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_issuer_url(url: str) -> str:
    """``url`` when it may name an OpenID Connect issuer or one of its endpoints: ``https``, or
    ``http`` on a loopback host only (the sandbox's development issuer). Raises
    :class:`ValueError` otherwise."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and is_loopback_address(parts.hostname):
        return url
    raise ValueError("an issuer URL is https (http only on a loopback host)")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Section):
    """The HTTP port callers use (``/r1/...`` and the directory services).

    With ``tls_cert``/``tls_key`` it speaks HTTPS and a caller authenticates with a client
    certificate chaining to ``client_ca`` that names its subsystem. Without them it speaks plain
    HTTP, must bind a loopback address, and a caller may claim only the subsystems in
    ``plain_loopback_subsystems``.
    """

    listen: Address = "127.0.0.1:0"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    plain_loopback_subsystems: tuple[SubsystemIdText, ...] = ()

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_address(value)
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.tls:
            if self.client_ca is None:
                raise ValueError("HTTPS needs client_ca (the CA of the callers' certificates)")
        elif not is_loopback_address(split_address(self.listen)[0]):
            raise ValueError("plain HTTP needs a loopback listen address; configure tls_cert")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def plain_subsystems(self) -> frozenset[SubsystemId]:
        return frozenset(SubsystemId.parse(text) for text in self.plain_loopback_subsystems)


class PublicSettings(_Section):
    """The public pages' own port: the service catalogue, the open-data report and the
    citizen's record of access, apart from the callers' port (``/r1/...`` is not served here).

    Plain HTTP binds a loopback address (a TLS reverse proxy on the same host publishes it);
    with ``tls_cert``/``tls_key`` it speaks HTTPS itself and may bind any address. Browsers
    present no client certificate here.
    """

    listen: Address = "127.0.0.1:0"
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_address(value)
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if not self.tls and not is_loopback_address(split_address(self.listen)[0]):
            raise ValueError("plain HTTP needs a loopback listen address; configure tls_cert")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


class ConsumerPortSettings(_Section):
    """How the gateway reaches its security server's consumer port.

    Over mutual TLS with the gateway certificate (``cert``/``key``, profile ``gateway``, naming
    this member) and ``ca`` (the CA of the port's certificate); or plaintext to a loopback port
    (``plaintext = true``) that lists the callers' subsystems as plain loopback subsystems.
    """

    address: Address
    plaintext: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @model_validator(mode="after")
    def _check_mode(self) -> Self:
        host, _ = split_address(self.address)
        if self.plaintext:
            if not is_loopback_address(host):
                raise ValueError("plaintext to the consumer port is allowed only to loopback")
        elif self.ca is None or self.cert is None or self.key is None:
            raise ValueError("the consumer port needs ca, cert and key (the gateway certificate)")
        return self


class RestBackendSettings(_Section):
    """A REST service of this member and the base URL of the HTTP backend that serves it."""

    service: ServiceIdText
    base_url: Annotated[str, Field(min_length=8, max_length=2000)]
    #: Longest the backend may take to answer one call.
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def service_id(self) -> ServiceId:
        return ServiceId.parse(self.service)


class BackEndSettings(_Section):
    """The provider-side back end: a gRPC port (plaintext, loopback) that this member's security
    server lists as the backend of its REST services, and the HTTP backends behind it."""

    listen: Address = "127.0.0.1:0"
    rest: tuple[RestBackendSettings, ...] = Field(default=(), max_length=MAX_REST_BACKENDS)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, _ = split_address(value)
        if not is_loopback_address(host):
            raise ValueError("the back end listens on loopback only, next to its server")
        return value


class MetricsSettings(_Section):
    """Where ``GET /metrics`` (Prometheus) is served, apart from the callers' port."""

    listen: Address = "127.0.0.1:0"

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_address(value)
        return value


class LimitSettings(_Section):
    """Bounds on what callers and backends send."""

    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0, le=64 * 1024 * 1024)
    #: Deadline of one call through the bus.
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: Request headers a REST call carries to the provider (lower case).
    request_headers: tuple[str, ...] = DEFAULT_REQUEST_HEADERS
    #: Response headers a REST answer carries back (lower case).
    response_headers: tuple[str, ...] = DEFAULT_RESPONSE_HEADERS
    #: Most headers carried each way, and their total size.
    max_headers: int = Field(default=32, gt=0, le=256)
    max_header_bytes: int = Field(default=8 * 1024, gt=0, le=64 * 1024)


class OpenDataSettings(_Section):
    """The open-data report (docs/adr/0028-open-data.md): the ``statistics`` role certificate
    the gateway reads each security server's monthly counts with, and how it publishes them."""

    #: The gateway's client certificate with the ``statistics`` role, and its key.
    cert: Path
    key: Path
    #: CA certificates (PEM) of the servers' audit ports; default: the configuration's anchors.
    ca: Path | None = None
    #: Months published, ending with the last closed month (or the current one, below).
    months: int = Field(default=12, ge=1, le=36)
    #: Publish the month in progress too. Off by default: its figures move as exchanges happen,
    #: so two snapshots minutes apart would show how many exchanges (perhaps one citizen's)
    #: happened in between, below the threshold that hides small counts. The sandbox turns it
    #: on to show the demo's own exchanges.
    current_month: bool = False
    #: How long gathered counts are served before they are gathered again.
    refresh_seconds: float = Field(default=600.0, ge=1, le=86_400)
    #: Deadline of one server's answer; a server past it is named on the page as not reached.
    deadline_seconds: float = Field(default=10.0, gt=0, le=120)
    #: ISO 4217 code of the agencies' declared cost per call.
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    #: The published data's licence (dct:license).
    license: str = Field(
        default="http://creativecommons.org/licenses/by/4.0/", min_length=8, max_length=500
    )
    #: The URL the gateway is reached at by the public (for the DCAT-AP links); default: the
    #: scheme and host of each request.
    public_url: str = Field(default="", max_length=500, pattern=r"^(https?://[^\s/]+)?$")


class CitizenSettings(_Section):
    """The citizen's record of access (``/citizen``, docs/adr/0031-citizen-sign-in.md).

    Citizens sign in at ``issuer`` (OpenID Connect, authorization code flow) as client
    ``client_id``, whose secret is read from ``client_secret_file``; ``subject_claim`` names the
    ID token claim holding the citizen's id (what the logs record as the subject).
    ``public_url`` is the gateway's address as browsers reach it (the redirect URI is
    ``public_url`` + ``/citizen/callback``). The gateway reads each security server's audit API
    with the citizen-service certificate ``cert``/``key``, trusting servers through ``ca``.
    """

    issuer: Annotated[str, Field(min_length=8, max_length=2000)]
    client_id: Annotated[str, Field(min_length=1, max_length=255)]
    client_secret_file: Path
    subject_claim: Annotated[str, Field(min_length=1, max_length=64)] = "sub"
    public_url: Annotated[str, Field(min_length=8, max_length=2000)]
    cert: Path
    key: Path
    ca: Path
    #: Time the whole record (every server) gets.
    deadline_seconds: float = Field(default=5.0, gt=0, le=60)
    #: A session ends after this long without a request, and after ``session_max_minutes``.
    session_idle_minutes: float = Field(default=15, gt=0, le=24 * 60)
    session_max_minutes: float = Field(default=8 * 60, gt=0, le=7 * 24 * 60)

    @field_validator("issuer")
    @classmethod
    def _check_issuer(cls, value: str) -> str:
        return check_issuer_url(value)

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError("public_url is the gateway's http(s) address, without a query")
        return value.rstrip("/")


class GlobalConfSettings(ClientGlobalConfSettings):
    """Where the global configuration comes from (the anchor file)."""

    anchor: Path


class GatewaySettings(RutaSettings):
    """Everything a gateway needs; see the module docstring."""

    model_config = SettingsConfigDict(env_prefix="RUTA_GW_")

    #: The member whose gateway this is (``INSTANCE/CLASS/CODE``).
    member: MemberIdText
    data_dir: Path = Path("data")
    http: HttpSettings = HttpSettings()
    consumer: ConsumerPortSettings
    globalconf: GlobalConfSettings
    backend: BackEndSettings | None = None
    metrics: MetricsSettings | None = None
    limits: LimitSettings = LimitSettings()
    #: The public open-data report; ``None``: not served.
    open_data: OpenDataSettings | None = None
    #: The citizen's record of access; ``None``: not served.
    citizen: CitizenSettings | None = None
    #: The public pages' own port; ``None``: they are served on the callers' port, which is
    #: refused for the open-data and citizen pages when that port trusts plain loopback callers.
    public: PublicSettings | None = None

    @model_validator(mode="after")
    def _check_own(self) -> Self:
        member = MemberId.parse(self.member)
        for sub in self.http.plain_subsystems:
            if sub.member != member:
                raise ValueError(f"plain loopback subsystem {sub} is not a subsystem of {member}")
        for rest in self.backend.rest if self.backend else ():
            if rest.service_id.subsystem.member != member:
                raise ValueError(f"REST service {rest.service} is not a service of {member}")
        self._check_public()
        return self

    def _check_public(self) -> None:
        """Public pages never share a port that trusts plain loopback callers: behind a reverse
        proxy on the same host every request comes from loopback, so ``/r1/...`` on that port
        would believe any caller header."""
        public_pages = [
            name
            for name, section in (("open_data", self.open_data), ("citizen", self.citizen))
            if section is not None
        ]
        if self.public is None:
            if public_pages and not self.http.tls and self.http.plain_loopback_subsystems:
                raise ValueError(
                    f"[{'] and ['.join(public_pages)}] pages are public, and [http] trusts plain "
                    "loopback callers (plain_loopback_subsystems): behind a reverse proxy on this "
                    "host every request would come from loopback and /r1/... would believe its "
                    "X-Road-Client header. Serve the public pages on their own port: "
                    '[public] listen = "127.0.0.1:PORT" (proxy that port alone)'
                )
            return
        if self.public.listen == self.http.listen and not self.http.listen.endswith(":0"):
            raise ValueError("[public] listen must differ from [http] listen (its own port)")

    @property
    def member_id(self) -> MemberId:
        return MemberId.parse(self.member)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """:meth:`from_file`, with relative paths resolved against the file's folder."""
        settings = cls.from_file(path)
        return settings.resolved(Path(path).resolve().parent)

    def resolved(self, base: Path) -> Self:
        """These settings with every relative path made absolute against ``base``."""

        def fix(value: Path | None) -> Path | None:
            return value if value is None or value.is_absolute() else base / value

        return self.model_copy(
            update={
                "data_dir": fix(self.data_dir),
                "http": self.http.model_copy(
                    update={
                        "tls_cert": fix(self.http.tls_cert),
                        "tls_key": fix(self.http.tls_key),
                        "client_ca": fix(self.http.client_ca),
                    }
                ),
                "consumer": self.consumer.model_copy(
                    update={
                        "ca": fix(self.consumer.ca),
                        "cert": fix(self.consumer.cert),
                        "key": fix(self.consumer.key),
                    }
                ),
                "globalconf": self.globalconf.model_copy(
                    update={"anchor": fix(self.globalconf.anchor)}
                ),
                "open_data": None
                if self.open_data is None
                else self.open_data.model_copy(
                    update={
                        "cert": fix(self.open_data.cert),
                        "key": fix(self.open_data.key),
                        "ca": fix(self.open_data.ca),
                    }
                ),
                "public": None
                if self.public is None
                else self.public.model_copy(
                    update={
                        "tls_cert": fix(self.public.tls_cert),
                        "tls_key": fix(self.public.tls_key),
                    }
                ),
                "citizen": None
                if self.citizen is None
                else self.citizen.model_copy(
                    update={
                        "client_secret_file": fix(self.citizen.client_secret_file),
                        "cert": fix(self.citizen.cert),
                        "key": fix(self.citizen.key),
                        "ca": fix(self.citizen.ca),
                    }
                ),
            }
        )
