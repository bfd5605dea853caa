"""A security server's settings: one TOML file, overridden by ``RUTA_SS_*`` variables.

The file (``ruta ss serve --config FILE``) names the server, its data directory, the three
listening addresses, its keys and certificates, the configuration anchor, the backends that serve
its own subsystems' services, and the bounds of every untrusted input. Relative paths in the file
are resolved against the file's folder, so a server directory can be moved as a whole.
``docs/operator/security-server-config.md`` shows a complete file.

Nothing here is a secret: key files are referenced by path and read with their 0600 mode kept.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Self

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from ruta.addresses import split_address
from ruta.globalconf.client import GlobalConfSettings as ClientGlobalConfSettings
from ruta.ids import ServerId, ServiceId, SubsystemId
from ruta.node_logs import (
    MAX_NODE_LOG_NAME_LENGTH,
    MAX_WORKERS,
    NodeLogNameError,
    node_log_name,
    node_log_origin,
)
from ruta.settings import (
    ConfigError,
    RutaSettings,
    ServerIdText,
    ServiceIdText,
    SubsystemIdText,
)
from security_server.audit import AuditSettings
from security_server.checkpointer import CheckpointSettings
from security_server.console.settings import ConsoleSettings
from security_server.ratelimit import DEFAULT_MAX_RATE_BUCKETS

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "BackendSettings",
    "ConsumerSettings",
    "GlobalConfSettings",
    "KeepaliveSettings",
    "KeySettings",
    "LimitSettings",
    "ListenSettings",
    "LogSettings",
    "RateLimitSettings",
    "SecurityServerSettings",
    "ServerSettings",
    "is_loopback_address",
    "settings_toml",
]

#: Default largest request or response body (DESIGN.md: refused before anything is signed).
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
#: Most backends one server maps.
MAX_BACKENDS: Final = 1024


def is_loopback_address(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address.

    IPv4 loopback is all of 127.0.0.0/8; IPv6 loopback is ``::1`` and the IPv4-mapped form of an
    IPv4 loopback address (``::ffff:127.0.0.1``; Python before 3.13 does not count it by itself).
    The one host name judged loopback is exactly ``localhost`` (the conventional name, as a
    listen address or backend host in the settings); every other name, ``LOCALHOST`` and
    ``localhost.`` included, is not, since nothing here resolves names. The unspecified
    addresses (``0.0.0.0``, ``::``) are not loopback.
    """
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def settings_toml(document: Mapping[str, Any]) -> str:
    """A settings document as TOML text, each backend a ``[[backends]]`` table at the end (the
    form the operator docs show, so a hand-appended ``[[backends]]`` table fits in).

    Raises :class:`TypeError` for a value TOML cannot hold.
    """
    head = {key: value for key, value in document.items() if key != "backends"}
    tables = ("\n[[backends]]\n" + tomli_w.dumps(dict(b)) for b in document.get("backends", ()))
    return tomli_w.dumps(head) + "".join(tables)


def _address(value: str) -> str:
    split_address(value)
    return value


Address = Annotated[str, Field(min_length=3, max_length=300)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenSettings(_Section):
    """Where a listener binds. Port 0 picks a free port; ``DATA_DIR/ready.json`` tells which."""

    listen: Address = "127.0.0.1:0"

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        return _address(value)


class ConsumerSettings(ListenSettings):
    """The consumer port, where the server's own backends call other agencies' services.

    Backends authenticate with a client certificate that chains to ``client_ca`` and names their
    subsystem in a SAN URI (``urn:ruta:subsystem:...``). Only when ``allow_plain_loopback`` is set
    does the port speak plaintext instead; it must then bind a loopback address, and a caller may
    claim only the subsystems listed in ``plain_loopback_subsystems``.
    """

    allow_plain_loopback: bool = False
    plain_loopback_subsystems: tuple[SubsystemIdText, ...] = ()
    #: CA certificates (PEM) that issue the backends' client certificates.
    client_ca: Path | None = None
    #: Certificate (PEM, leaf first) and key the port presents; default: the auth cert and key.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @model_validator(mode="after")
    def _check_mode(self) -> Self:
        host, _ = split_address(self.listen)
        if self.allow_plain_loopback:
            if not is_loopback_address(host):
                raise ValueError("allow_plain_loopback needs a loopback listen address")
            if not self.plain_loopback_subsystems:
                raise ValueError("allow_plain_loopback needs plain_loopback_subsystems")
        elif self.client_ca is None:
            raise ValueError("client_ca is required unless allow_plain_loopback is set")
        return self

    @property
    def plain_subsystems(self) -> frozenset[SubsystemId]:
        return frozenset(SubsystemId.parse(text) for text in self.plain_loopback_subsystems)


class KeepaliveSettings(_Section):
    """gRPC keepalive on the links between security servers, so a silently dead connection is
    noticed and replaced before the next call waits out its deadline."""

    #: Seconds between HTTP/2 pings a consumer server sends on an idle peer channel.
    time_seconds: float = Field(default=20.0, ge=1, le=3600)
    #: Seconds to wait for a ping's answer before the connection is closed as dead.
    timeout_seconds: float = Field(default=10.0, ge=1, le=600)
    #: Ping also while no call is open (keeps a frames stream's idle connection known alive).
    permit_without_calls: bool = True
    #: The transport listener accepts a peer's pings this often at most while no data flows
    #: (more often: gRPC closes the connection with GOAWAY "too_many_pings"). Keep it at or
    #: below every peer's ``time_seconds``.
    min_ping_interval_seconds: float = Field(default=5.0, ge=1, le=3600)


class TransportSettings(ListenSettings):
    """The transport port, where other security servers send signed requests, and how this
    server sends its own."""

    #: Send requests to provider servers as several messages per frame on one stream
    #: (``Transport.ExchangeFrames``; falls back to one call per message for a provider that does
    #: not offer it). Off: one ``Transport.Exchange`` call per message.
    frames: bool = True
    #: Over frames, with a peer that agrees (docs/adr/0038): as provider, send a response as soon
    #: as it is signed and commit its log record meanwhile, then a durability notice; as
    #: consumer, offer it, and answer the caller only once the notice and this server's own
    #: records are both durable. Off: each response is durable before it is sent, as over
    #: ``Exchange``.
    responses_ahead: bool = True
    #: As provider, with ``responses_ahead`` agreed: send a response ahead only while the
    #: median wall time of this server's recent durable log commits (each transaction, ``BEGIN``
    #: to ``COMMIT`` and its fsync) is at least this many milliseconds. Below it the overlap
    #: hides less than twice what the notice's extra frame costs in CPU, and the response is
    #: committed before it is sent (docs/adr/0048). 0: ahead whenever not under load.
    responses_ahead_min_commit_ms: float = Field(default=0.2, ge=0, le=60_000)
    #: Keepalive pings on the channels to provider servers (and what this listener accepts).
    keepalive: KeepaliveSettings = KeepaliveSettings()


class KeySettings(_Section):
    """Key and certificate files (PEM). Certificate files hold the leaf first, then any
    intermediates; key files are 0600."""

    auth_key: Path
    auth_cert: Path
    signing_key: Path
    signing_cert: Path


class GlobalConfSettings(ClientGlobalConfSettings):
    """Where the global configuration comes from (the anchor file) and how the client fetches
    it (``fetch_interval_seconds``, ``retry_*`` ... of :class:`ruta.globalconf.client`)."""

    #: The configuration anchor file (instance, registry URL, config-signing certificates).
    anchor: Path


class BackendSettings(_Section):
    """The backend that serves one of this server's subsystems' services."""

    service: ServiceIdText
    address: Address
    #: Plaintext is allowed only to a loopback address.
    tls: bool = False
    #: With ``tls``: CA certificates (PEM) that issue the backend's certificate.
    ca: Path | None = None
    #: With ``tls``: an optional client certificate and key presented to the backend.
    client_cert: Path | None = None
    client_key: Path | None = None

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        host, _ = split_address(self.address)
        if self.tls and self.ca is None:
            raise ValueError(f"backend {self.service}: tls needs ca")
        if not self.tls and not is_loopback_address(host):
            raise ValueError(f"backend {self.service}: plaintext is allowed only to loopback")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError(f"backend {self.service}: give both client_cert and client_key")
        return self

    @property
    def service_id(self) -> ServiceId:
        return ServiceId.parse(self.service)


#: Most subsystems one server may list in metadata-only mode.
MAX_METADATA_ONLY_SUBSYSTEMS: Final = 1000


class LogSettings(_Section):
    """The message log's database (empty ``url``: SQLite at ``DATA_DIR/messagelog.db``), body
    retention and metadata-only mode."""

    url: str = ""
    #: Bodies of records logged longer ago than this are purged (every proof stays valid, since
    #: headers carry the body digest); unset keeps bodies.
    body_retention_days: float | None = Field(default=None, gt=0, le=36_500)
    #: Exchanges whose client or provider subsystem is listed here are logged without bodies.
    metadata_only_subsystems: tuple[SubsystemIdText, ...] = Field(
        default=(), max_length=MAX_METADATA_ONLY_SUBSYSTEMS
    )
    #: How often expired replay claims are pruned and bodies past retention purged.
    maintenance_interval_seconds: float = Field(default=60.0, ge=1, le=86_400)


class LimitSettings(_Section):
    """Bounds on everything that comes from outside, and the deadlines."""

    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1024, le=64 << 20)
    max_metadata_entries: int = Field(default=64, ge=8, le=1024)
    max_metadata_bytes: int = Field(default=16 * 1024, ge=1024, le=1 << 20)
    #: How far a request's created_at may be from this server's clock (either way).
    freshness_seconds: float = Field(default=60.0, gt=0, le=3600)
    #: Deadline used when a caller sets none; and the longest honoured.
    default_deadline_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_deadline_seconds: float = Field(default=300.0, gt=0, le=3600)
    #: Most concurrent calls a listener serves at once.
    max_concurrent_calls: int = Field(default=1000, ge=1, le=100_000)
    #: How long a stapled OCSP response of our signing certificate is fresh (X-Road: 3600 s).
    ocsp_freshness_seconds: float = Field(default=3600.0, gt=0, le=7 * 86_400)


class ServerSettings(_Section):
    """How this node runs: its name within a cluster of the server's nodes and how many worker
    processes it runs (docs/operator/clusters.md, docs/adr/0030).

    Each worker of each node keeps its own message-log tree, a node log of the server named
    ``<server id>/<node>[.w<i>]`` (:mod:`ruta.node_logs`); worker 0 of the unnamed node keeps
    the server's own log, as a server without clusters does."""

    #: This node's name among the server's nodes sharing one database (empty: the only node,
    #: or the first). Every node of one server needs a name of its own.
    node: str = Field(default="", max_length=MAX_NODE_LOG_NAME_LENGTH)
    #: Worker processes on this node, sharing its ports (SO_REUSEPORT); one per core.
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)

    @field_validator("node")
    @classmethod
    def _check_node(cls, value: str) -> str:
        if value:
            try:
                node_log_name(value, MAX_WORKERS - 1)
            except NodeLogNameError as exc:
                raise ValueError(str(exc)) from None
        return value


#: Highest local rate limit (calls per minute): 100,000 a second, the registry's bound too.
MAX_RATE_LIMIT_PER_MINUTE: Final = 6_000_000


class RateLimitSettings(_Section):
    """This server's own rate limits as a provider (docs/adr/0023). The contract's limit, set
    centrally, applies per (client subsystem, service); these can only lower it."""

    #: Most calls per minute of one client subsystem to one service, whatever its contract
    #: allows (0: the contract's limit alone).
    max_per_minute: int = Field(default=0, ge=0, le=MAX_RATE_LIMIT_PER_MINUTE)
    #: Most calls per minute to one service from all clients together (0: none).
    service_per_minute: int = Field(default=0, ge=0, le=MAX_RATE_LIMIT_PER_MINUTE)
    #: Most token buckets kept (the least recently used are evicted first).
    max_buckets: int = Field(default=DEFAULT_MAX_RATE_BUCKETS, ge=16, le=1_000_000)


class SecurityServerSettings(RutaSettings):
    """Everything one security server needs to run (``ruta ss serve --config FILE``)."""

    model_config = SettingsConfigDict(
        env_prefix="RUTA_SS_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    server_id: ServerIdText
    data_dir: Path
    keys: KeySettings
    globalconf: GlobalConfSettings
    consumer: ConsumerSettings
    transport: TransportSettings = TransportSettings()
    metrics: ListenSettings = ListenSettings()
    backends: tuple[BackendSettings, ...] = Field(default=(), max_length=MAX_BACKENDS)
    log: LogSettings = LogSettings()
    limits: LimitSettings = LimitSettings()
    #: This server's own rate limits as a provider (lower than the contracts' only).
    rate_limits: RateLimitSettings = RateLimitSettings()
    #: Witnessed checkpoints of the message log (interval, cosignature window, log key file).
    checkpoints: CheckpointSettings = CheckpointSettings()
    #: The audit API port (empty ``listen``: none) and what it may hand out.
    audit: AuditSettings = AuditSettings()
    #: This node's name in a cluster and its worker processes.
    server: ServerSettings = ServerSettings()
    #: The auditor console (HTTPS; empty ``listen``: none), docs/adr/0027.
    console: ConsoleSettings = ConsoleSettings()

    @model_validator(mode="after")
    def _check_backends(self) -> Self:
        seen: set[str] = set()
        server = ServerId.parse(self.server_id)
        for backend in self.backends:
            if backend.service in seen:
                raise ValueError(f"backend for {backend.service} is given twice")
            seen.add(backend.service)
            if backend.service_id.member != server.member:
                raise ValueError(f"backend {backend.service} is not a service of this member")
        return self

    @property
    def server_identifier(self) -> ServerId:
        """The server this node is (``server_id`` parsed)."""
        return ServerId.parse(self.server_id)

    def log_origin(self, worker: int = 0) -> str:
        """The origin of ``worker``'s message-log tree on this node (:mod:`ruta.node_logs`)."""
        return node_log_origin(self.server_id, node_log_name(self.server.node, worker))

    @property
    def log_url(self) -> str:
        return self.log.url or f"sqlite+aiosqlite:///{self.data_dir / 'messagelog.db'}"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None) -> Self:
        """Load the file (see :meth:`RutaSettings.from_file`), then resolve every relative path
        against the file's folder. Raises :class:`ConfigError`."""
        settings = super().from_file(path)
        if path is None:
            return settings
        return settings.resolved(Path(path).resolve().parent)

    def to_toml(self) -> str:
        """The settings as a file :meth:`from_file` reads back unchanged (what a sandbox or an
        installer writes)."""
        return settings_toml(self.model_dump(mode="json", exclude_none=True))

    def resolved(self, base: Path) -> Self:
        """A copy with every relative path made absolute against ``base``."""

        def fix(value: Path | None) -> Path | None:
            if value is None or value.is_absolute():
                return value
            return base / value

        def fix_all(section: BaseModel) -> dict[str, Path | None]:
            return {
                name: fix(getattr(section, name))
                for name, value in section
                if isinstance(value, Path)
            }

        try:
            return self.model_copy(
                update={
                    "data_dir": fix(self.data_dir),
                    "keys": self.keys.model_copy(update=fix_all(self.keys)),
                    "globalconf": self.globalconf.model_copy(update=fix_all(self.globalconf)),
                    "consumer": self.consumer.model_copy(update=fix_all(self.consumer)),
                    "checkpoints": self.checkpoints.model_copy(update=fix_all(self.checkpoints)),
                    "audit": self.audit.model_copy(update=fix_all(self.audit)),
                    "console": self.console.model_copy(update=fix_all(self.console)),
                    "backends": tuple(b.model_copy(update=fix_all(b)) for b in self.backends),
                }
            )
        except ValueError as exc:  # pragma: no cover - model_copy does not validate
            raise ConfigError(f"settings are invalid: {exc}") from None
