"""The verified global configuration as a frozen view with indexes built once per document.

A security server consults this view on every exchange (which server is at which address, which
contract lets a client call a method), so every lookup is a dictionary access; the indexes are
built once, when a document is read, and never change afterwards.

:meth:`GlobalConf.from_proto` is the only way from wire form to view. It checks the named bounds
of :mod:`ruta.globalconf.limits`, the identifier grammar, that no entry appears twice and that
every reference (a server's member, a service's subsystem, a contract's consumer and service)
points at an entry of the same document. :func:`ruta.globalconf.sign_configuration` runs the same
checks before signing, so a registry never publishes what its servers would refuse.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf import timestamp_pb2

from ruta.globalconf.errors import ConfigurationTooLargeError, InvalidConfigurationError
from ruta.globalconf.limits import (
    MAX_DESCRIPTOR_SET_BYTES,
    MAX_ENTRIES_PER_KIND,
    MAX_METHODS_PER_ENTRY,
    MAX_OCSP_CLOCK_SKEW_SECONDS,
    MAX_OCSP_FRESHNESS_SECONDS,
    MAX_OPENAPI_BYTES,
    MAX_ROLE_ISSUERS,
    MAX_TEXT_LENGTH,
)
from ruta.ids import IdentifierError, MemberId, ServerId, ServiceId, SubsystemId
from ruta.pki.certs import fingerprint, parse_der_certificate
from ruta.pki.ocsp import DEFAULT_OCSP_FRESHNESS, MAX_CLOCK_SKEW
from ruta.timestamps import to_timestamp
from ruta.v1 import globalconf_pb2, ids_pb2

__all__ = [
    "Contract",
    "GlobalConf",
    "Member",
    "Savings",
    "SecurityServer",
    "Service",
]

_FINGERPRINT: Final = re.compile(r"[0-9a-f]{64}")
#: Entries of a view's :meth:`GlobalConf.allows` memo; it starts again empty when full.
MAX_REMEMBERED_ALLOWS: Final = 1024
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_T = TypeVar("_T")
_K = TypeVar("_K")


@dataclass(frozen=True, slots=True)
class Savings:
    """What one once-only call saves, as the provider declares it (zero when undeclared)."""

    citizen_minutes: float = 0.0
    paper_forms: int = 0
    cost: float = 0.0


@dataclass(frozen=True, slots=True)
class Member:
    id: MemberId
    name: str


@dataclass(frozen=True, slots=True)
class SecurityServer:
    """A security server: where its transport listens and which auth certificate it presents."""

    id: ServerId
    #: ``host:port`` of the server-to-server transport.
    address: str
    #: Lowercase hex SHA-256 of the DER of its authentication certificate.
    auth_cert_sha256: str
    #: ``host:port`` of its audit API, or empty.
    audit_address: str = ""
    #: Its message-log Ed25519 verifier key (C2SP signed-note vkey text), or empty.
    log_public_key: str = ""


@dataclass(frozen=True, slots=True)
class Service:
    id: ServiceId
    methods: frozenset[str]
    #: Serialised ``google.protobuf.FileDescriptorSet`` (may be empty).
    file_descriptor_set: bytes = b""
    description: str = ""
    savings: Savings = field(default_factory=Savings)
    #: A REST service's OpenAPI 3 description (JSON); empty for a gRPC service.
    openapi: bytes = b""

    @property
    def is_rest(self) -> bool:
        """Whether this is a REST service (called through the fixed method ``Call``)."""
        return bool(self.openapi)


@dataclass(frozen=True, slots=True)
class Contract:
    """An active contract: ``consumer`` may call ``methods`` of ``service`` for ``purpose``."""

    contract_id: str
    consumer: SubsystemId
    service: ServiceId
    #: Allowed methods; empty means every method of the service.
    methods: frozenset[str]
    purpose: str
    legal_basis: str
    valid_from: datetime
    #: ``None`` means no end date.
    valid_until: datetime | None = None
    #: Most calls per minute under this contract, per (consumer, service); 0 means no limit.
    rate_limit_per_minute: int = 0

    def permits(self, method: str, purpose: str, at: datetime) -> bool:
        """Whether this contract covers ``method`` for ``purpose`` at instant ``at``.

        ``purpose`` matches the contract's purpose code or its contract id.
        """
        return self.covers(method, purpose) and self.in_force(at)

    def covers(self, method: str, purpose: str) -> bool:
        """Whether this contract covers ``method`` for ``purpose`` at some instant (the rule of
        :meth:`permits` but for the validity period)."""
        return (not self.methods or method in self.methods) and (
            purpose in (self.purpose, self.contract_id)
        )

    def in_force(self, at: datetime) -> bool:
        """Whether instant ``at`` is in this contract's validity period."""
        return self.valid_from <= at and (self.valid_until is None or at < self.valid_until)


@dataclass(frozen=True, slots=True, eq=True)
class GlobalConf:
    """One verified global configuration, read-only, with lookups in O(1).

    Build it with :meth:`from_proto` (or :func:`ruta.globalconf.verify_configuration`); the
    constructor checks duplicates and references and raises
    :class:`~ruta.globalconf.errors.InvalidConfigurationError` naming the first offending entry.
    """

    instance: str
    serial: int
    generated_at: datetime
    expires_at: datetime
    trust_anchors: tuple[x509.Certificate, ...]
    ocsp_responder_certs: tuple[x509.Certificate, ...]
    members: tuple[Member, ...]
    subsystems: tuple[SubsystemId, ...]
    servers: tuple[SecurityServer, ...]
    services: tuple[Service, ...]
    contracts: tuple[Contract, ...]
    witness_public_key: bytes = b""
    witness_url: str = ""
    #: ``VerificationParameters`` as published (0: the default); see :attr:`ocsp_freshness`.
    ocsp_freshness_seconds: int = 0
    ocsp_clock_skew_seconds: int = 0
    #: The trust anchors whose directly issued certificates carry roles (``RoleIssuers``), each
    #: one of :attr:`trust_anchors`; ``None`` when the document does not say (one from before
    #: the field: each server's own rule applies), empty when no certificate carries a role.
    role_issuers: tuple[x509.Certificate, ...] | None = None
    #: The ``SignedGlobalConfiguration`` bytes this view was verified from (empty when built
    #: locally); what an evidence bundle stores as "the configuration in force".
    signed: bytes = field(default=b"", compare=False)
    #: SHA-256 of the document without its serial and timestamps (empty when not computed):
    #: equal digests mean equal content, so a re-signed document can reuse these indexes.
    content_digest: bytes = field(default=b"", compare=False, repr=False)

    _members: dict[MemberId, Member] = field(init=False, repr=False, compare=False)
    _subsystems: frozenset[SubsystemId] = field(init=False, repr=False, compare=False)
    _servers: dict[ServerId, SecurityServer] = field(init=False, repr=False, compare=False)
    _servers_by_member: dict[MemberId, tuple[SecurityServer, ...]] = field(
        init=False, repr=False, compare=False
    )
    _servers_by_cert: dict[str, SecurityServer] = field(init=False, repr=False, compare=False)
    _services: dict[ServiceId, Service] = field(init=False, repr=False, compare=False)
    _services_by_subsystem: dict[SubsystemId, tuple[Service, ...]] = field(
        init=False, repr=False, compare=False
    )
    #: service -> client -> contracts (one hash of each id per lookup).
    _contracts: dict[ServiceId, dict[SubsystemId, tuple[Contract, ...]]] = field(
        init=False, repr=False, compare=False
    )
    _contracts_by_client: dict[SubsystemId, tuple[Contract, ...]] = field(
        init=False, repr=False, compare=False
    )
    #: :meth:`allows`'s candidates (see there) by the client and service objects asked about
    #: and the method and purpose; each entry keeps its objects, checked with ``is``. Emptied
    #: when full. Belongs to this document's content: a view under a new serial with the same
    #: content shares it, a new document starts its own.
    _allowed: dict[
        tuple[int, int, str, str], tuple[SubsystemId, ServiceId, tuple[Contract, ...]]
    ] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        members = _unique("member", self.members, lambda m: m.id)
        subsystems = frozenset(_unique("subsystem", self.subsystems, lambda s: s).keys())
        for sub in self.subsystems:
            if sub.member not in members:
                raise InvalidConfigurationError(f"subsystem {sub} names an unlisted member")
        servers = _unique("server", self.servers, lambda s: s.id)
        by_member: dict[MemberId, list[SecurityServer]] = {}
        by_cert: dict[str, SecurityServer] = {}
        for server in self.servers:
            if server.id.member not in members:
                raise InvalidConfigurationError(f"server {server.id} names an unlisted member")
            if not _FINGERPRINT.fullmatch(server.auth_cert_sha256):
                raise InvalidConfigurationError(
                    f"server {server.id} has an auth_cert_sha256 that is not 64 lowercase hex"
                )
            if by_cert.setdefault(server.auth_cert_sha256, server) is not server:
                raise InvalidConfigurationError(
                    f"server {server.id} shares its authentication certificate with another"
                )
            by_member.setdefault(server.id.member, []).append(server)
        services = _unique("service", self.services, lambda s: s.id)
        by_subsystem: dict[SubsystemId, list[Service]] = {}
        for service in self.services:
            if service.id.subsystem not in subsystems:
                raise InvalidConfigurationError(f"service {service.id} names an unlisted subsystem")
            by_subsystem.setdefault(service.id.subsystem, []).append(service)
        _unique("contract", self.contracts, lambda c: c.contract_id)
        contracts: dict[ServiceId, dict[SubsystemId, list[Contract]]] = {s: {} for s in services}
        by_client: dict[SubsystemId, list[Contract]] = {s: [] for s in subsystems}
        for contract in self.contracts:
            for_service = contracts.get(contract.service)
            if for_service is None:
                raise InvalidConfigurationError(
                    f"contract {contract.contract_id!r} names an unlisted service"
                )
            of_client = by_client.get(contract.consumer)
            if of_client is None:
                raise InvalidConfigurationError(
                    f"contract {contract.contract_id!r} names an unlisted consumer subsystem"
                )
            of_client.append(contract)
            for_service.setdefault(contract.consumer, []).append(contract)
        put = object.__setattr__
        put(self, "_members", members)
        put(self, "_subsystems", subsystems)
        put(self, "_servers", servers)
        put(self, "_servers_by_member", {k: tuple(v) for k, v in by_member.items()})
        put(self, "_servers_by_cert", by_cert)
        put(self, "_services", services)
        put(self, "_services_by_subsystem", {k: tuple(v) for k, v in by_subsystem.items()})
        put(
            self,
            "_contracts",
            {
                service: {client: tuple(found) for client, found in per_client.items()}
                for service, per_client in contracts.items()
                if per_client
            },
        )
        put(self, "_contracts_by_client", {k: tuple(v) for k, v in by_client.items() if v})
        put(self, "_allowed", {})
        if self.role_issuers is not None:
            _check_role_issuers(self.role_issuers, self.trust_anchors)

    def _restamped(
        self, *, serial: int, generated_at: datetime, expires_at: datetime, signed: bytes
    ) -> GlobalConf:
        """This view under a new serial and validity (same content): shares every index."""
        view = copy.copy(self)
        put = object.__setattr__
        put(view, "serial", serial)
        put(view, "generated_at", generated_at)
        put(view, "expires_at", expires_at)
        put(view, "signed", signed)
        return view

    def __repr__(self) -> str:
        return (
            f"GlobalConf(instance={self.instance!r}, serial={self.serial}, "
            f"expires_at={self.expires_at.isoformat()}, members={len(self.members)}, "
            f"servers={len(self.servers)}, services={len(self.services)}, "
            f"contracts={len(self.contracts)})"
        )

    # -- lookups (hot path) ---------------------------------------------------------------

    def member(self, member: MemberId) -> Member | None:
        return self._members.get(member)

    def has_subsystem(self, subsystem: SubsystemId) -> bool:
        return subsystem in self._subsystems

    def server(self, server: ServerId) -> SecurityServer | None:
        """The listed server with this id, or ``None``."""
        return self._servers.get(server)

    def servers_of(self, member: MemberId) -> tuple[SecurityServer, ...]:
        """The member's servers in document order (empty when it has none)."""
        return self._servers_by_member.get(member, ())

    def server_by_auth_cert(self, sha256_hex: str) -> SecurityServer | None:
        """The server whose authentication certificate has this SHA-256 fingerprint, or ``None``."""
        return self._servers_by_cert.get(sha256_hex.lower())

    def service(self, service: ServiceId) -> Service | None:
        """The listed service with this id, or ``None``."""
        return self._services.get(service)

    def services_of(self, subsystem: SubsystemId) -> tuple[Service, ...]:
        return self._services_by_subsystem.get(subsystem, ())

    def contracts_of(self, client: SubsystemId) -> tuple[Contract, ...]:
        """Every active contract whose consumer is ``client``."""
        return self._contracts_by_client.get(client, ())

    def allows(
        self, client: SubsystemId, service: ServiceId, method: str, purpose: str, at: datetime
    ) -> Contract | None:
        """The contract that lets ``client`` call ``service``/``method`` for ``purpose`` at ``at``.

        Deny by default: ``None`` unless the service is listed, offers ``method`` (when it lists
        its methods) and one of the client's contracts for it permits the call.

        What does not depend on ``at`` (the service, its methods, the contracts for this client
        and service that cover ``method`` and ``purpose``, in document order) is remembered by
        the identifier objects asked about (a server hands the same ones call after call), so a
        repeated call checks only the candidates' validity at ``at``: the same answer, without
        hashing and comparing three identifiers again.
        """
        key = (id(client), id(service), method, purpose)
        known = self._allowed.get(key)
        if known is None or known[0] is not client or known[1] is not service:
            known = (client, service, self._candidates(client, service, method, purpose))
            allowed = self._allowed
            if len(allowed) >= MAX_REMEMBERED_ALLOWS:
                allowed.clear()
            allowed[key] = known
        for contract in known[2]:
            if contract.in_force(at):
                return contract
        return None

    def _candidates(
        self, client: SubsystemId, service: ServiceId, method: str, purpose: str
    ) -> tuple[Contract, ...]:
        """The contracts that would let ``client`` call ``service``/``method`` for ``purpose``
        at some instant (:meth:`Contract.permits` but for the validity period), in document
        order; empty when the service is not listed or does not offer ``method``."""
        entry = self._services.get(service)
        if entry is None or (entry.methods and method not in entry.methods):
            return ()
        per_client = self._contracts.get(service)
        if per_client is None:
            return ()
        return tuple(
            contract for contract in per_client.get(client, ()) if contract.covers(method, purpose)
        )

    @property
    def ocsp_freshness(self) -> timedelta:
        """How long a stapled OCSP response proves its certificate's status (default 1 h)."""
        if not self.ocsp_freshness_seconds:
            return DEFAULT_OCSP_FRESHNESS
        return timedelta(seconds=self.ocsp_freshness_seconds)

    @property
    def ocsp_clock_skew(self) -> timedelta:
        """How far after the signing time an OCSP thisUpdate may lie (default 5 min)."""
        if not self.ocsp_clock_skew_seconds:
            return MAX_CLOCK_SKEW
        return timedelta(seconds=self.ocsp_clock_skew_seconds)

    def is_expired(self, now: datetime) -> bool:
        """Whether the document must no longer be used at ``now`` (``now >= expires_at``)."""
        return now >= self.expires_at

    # -- wire form ---------------------------------------------------------------------------

    @classmethod
    def from_proto(
        cls,
        conf: globalconf_pb2.GlobalConfiguration,
        *,
        signed: bytes = b"",
        content_digest: bytes = b"",
    ) -> GlobalConf:
        """Read a ``GlobalConfiguration`` message into a view.

        ``signed`` and ``content_digest`` are recorded as given (see the fields). Raises
        :class:`ConfigurationTooLargeError` over a bound and
        :class:`InvalidConfigurationError` for anything malformed, naming the entry.
        """
        return _Reader().read(conf, signed, content_digest)

    def to_proto(self) -> globalconf_pb2.GlobalConfiguration:
        """The document in canonical order (what a registry signs for this content)."""
        conf = globalconf_pb2.GlobalConfiguration(
            instance=self.instance,
            serial=self.serial,
            generated_at=to_timestamp(self.generated_at),
            expires_at=to_timestamp(self.expires_at),
            trust_anchors=sorted(_der(c) for c in self.trust_anchors),
            ocsp_responder_certs=sorted(_der(c) for c in self.ocsp_responder_certs),
            witness_public_key=self.witness_public_key,
            witness_url=self.witness_url,
        )
        if self.role_issuers is not None:
            conf.role_issuers.SetInParent()
            conf.role_issuers.anchor_sha256.extend(
                sorted(fingerprint(c) for c in self.role_issuers)
            )
        if self.ocsp_freshness_seconds or self.ocsp_clock_skew_seconds:
            conf.verification.ocsp_freshness_seconds = self.ocsp_freshness_seconds
            conf.verification.ocsp_clock_skew_seconds = self.ocsp_clock_skew_seconds
        for m in sorted(self.members, key=lambda m: m.id):
            conf.members.add(id=m.id.to_proto(), name=m.name)
        for sub in sorted(self.subsystems):
            conf.subsystems.add(id=sub.to_proto())
        for s in sorted(self.servers, key=lambda s: s.id):
            conf.servers.add(
                id=s.id.to_proto(),
                address=s.address,
                auth_cert_sha256=s.auth_cert_sha256,
                audit_address=s.audit_address,
                log_public_key=s.log_public_key,
            )
        for svc in sorted(self.services, key=lambda s: s.id):
            conf.services.add(
                id=svc.id.to_proto(),
                methods=sorted(svc.methods),
                file_descriptor_set=svc.file_descriptor_set,
                openapi=svc.openapi,
                description=svc.description,
                savings=globalconf_pb2.Savings(
                    citizen_minutes=svc.savings.citizen_minutes,
                    paper_forms=svc.savings.paper_forms,
                    cost=svc.savings.cost,
                ),
            )
        for c in sorted(self.contracts, key=lambda c: c.contract_id):
            entry = conf.contracts.add(
                contract_id=c.contract_id,
                consumer=c.consumer.to_proto(),
                service=c.service.to_proto(),
                methods=sorted(c.methods),
                purpose=c.purpose,
                legal_basis=c.legal_basis,
                valid_from=to_timestamp(c.valid_from),
                rate_limit_per_minute=c.rate_limit_per_minute,
            )
            if c.valid_until is not None:
                entry.valid_until.CopyFrom(to_timestamp(c.valid_until))
        return conf


def _unique(kind: str, items: Iterable[_T], key: Callable[[_T], _K]) -> dict[_K, _T]:
    index: dict[_K, _T] = {}
    for item in items:
        k = key(item)
        if index.setdefault(k, item) is not item:
            raise InvalidConfigurationError(f"{kind} {k} is listed twice")
    return index


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _check_role_issuers(
    issuers: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]
) -> None:
    if len(issuers) > MAX_ROLE_ISSUERS:
        raise ConfigurationTooLargeError(
            f"the configuration names {len(issuers)} role issuers; the limit is {MAX_ROLE_ISSUERS}"
        )
    in_force = set(anchors)
    seen: set[x509.Certificate] = set()
    for issuer in issuers:
        if issuer not in in_force:
            raise InvalidConfigurationError(
                f"role issuer {fingerprint(issuer)} is not a trust anchor of the configuration; "
                "only a trust anchor may issue role certificates"
            )
        if issuer in seen:
            raise InvalidConfigurationError(f"role issuer {fingerprint(issuer)} is listed twice")
        seen.add(issuer)


class _Reader:
    """Reads one document; interns identifiers so each distinct id is parsed once."""

    def __init__(self) -> None:
        self._members: dict[tuple[str, str, str], MemberId] = {}
        self._subsystems: dict[tuple[str, str, str, str], SubsystemId] = {}
        self._services: dict[tuple[str, str, str, str, str], ServiceId] = {}
        # Where the reader is, for error messages (formatted only when one is raised).
        self._kind = "the configuration"
        self._index = -1

    @property
    def _where(self) -> str:
        return self._kind if self._index < 0 else f"{self._kind}[{self._index}]"

    def _at(self, kind: str, index: int = -1) -> None:
        self._kind = kind
        self._index = index

    def read(
        self, conf: globalconf_pb2.GlobalConfiguration, signed: bytes, content_digest: bytes
    ) -> GlobalConf:
        for kind in (
            "trust_anchors",
            "ocsp_responder_certs",
            "members",
            "subsystems",
            "servers",
            "services",
            "contracts",
        ):
            count = len(getattr(conf, kind))
            if count > MAX_ENTRIES_PER_KIND:
                raise ConfigurationTooLargeError(
                    f"the configuration lists {count} {kind}; the limit is {MAX_ENTRIES_PER_KIND}"
                )
        if not conf.HasField("generated_at") or not conf.HasField("expires_at"):
            raise InvalidConfigurationError("the configuration has no generated_at or expires_at")
        self._at("instance")
        self._text(conf.instance)
        self._at("witness_url")
        self._text(conf.witness_url)
        if len(conf.role_issuers.anchor_sha256) > MAX_ROLE_ISSUERS:
            raise ConfigurationTooLargeError(
                f"the configuration names {len(conf.role_issuers.anchor_sha256)} role issuers; "
                f"the limit is {MAX_ROLE_ISSUERS}"
            )
        freshness = conf.verification.ocsp_freshness_seconds
        skew = conf.verification.ocsp_clock_skew_seconds
        if freshness > MAX_OCSP_FRESHNESS_SECONDS or skew > MAX_OCSP_CLOCK_SKEW_SECONDS:
            raise InvalidConfigurationError(
                f"the configuration's OCSP freshness ({freshness} s) or clock skew ({skew} s) is "
                f"over its bound ({MAX_OCSP_FRESHNESS_SECONDS} s, {MAX_OCSP_CLOCK_SKEW_SECONDS} s)"
            )
        try:
            trust_anchors = self._certs("trust_anchors", conf.trust_anchors)
            return GlobalConf(
                instance=conf.instance,
                serial=conf.serial,
                generated_at=_datetime(conf.generated_at),
                expires_at=_datetime(conf.expires_at),
                trust_anchors=trust_anchors,
                ocsp_responder_certs=self._certs("ocsp_responder_certs", conf.ocsp_responder_certs),
                members=tuple(self._member(i, m) for i, m in enumerate(conf.members)),
                subsystems=tuple(
                    self._subsystem_entry(i, s) for i, s in enumerate(conf.subsystems)
                ),
                servers=tuple(self._server(i, s) for i, s in enumerate(conf.servers)),
                services=tuple(self._service(i, s) for i, s in enumerate(conf.services)),
                contracts=self._contracts(conf.contracts),
                witness_public_key=conf.witness_public_key,
                witness_url=conf.witness_url,
                ocsp_freshness_seconds=freshness,
                ocsp_clock_skew_seconds=skew,
                role_issuers=self._role_issuers(conf, trust_anchors),
                signed=signed,
                content_digest=content_digest,
            )
        except IdentifierError as exc:
            raise InvalidConfigurationError(
                f"{self._where} has an invalid identifier: {exc.message}"
            ) from None
        except (ValueError, OverflowError) as exc:
            raise InvalidConfigurationError(f"{self._where} is malformed: {exc}") from None

    # Identifiers, interned.

    def _member_id(self, m: ids_pb2.MemberId) -> MemberId:
        key = (m.instance, m.member_class, m.member_code)
        found = self._members.get(key)
        if found is None:
            found = self._members[key] = MemberId(*key)
        return found

    def _subsystem_id(self, s: ids_pb2.SubsystemId) -> SubsystemId:
        m = s.member
        key = (m.instance, m.member_class, m.member_code, s.subsystem_code)
        found = self._subsystems.get(key)
        if found is None:
            found = self._subsystems[key] = SubsystemId(self._member_id(m), s.subsystem_code)
        return found

    def _service_id(self, s: ids_pb2.ServiceId) -> ServiceId:
        sub = s.subsystem
        m = sub.member
        key = (m.instance, m.member_class, m.member_code, sub.subsystem_code, s.service_name)
        found = self._services.get(key)
        if found is None:
            found = self._services[key] = ServiceId(self._subsystem_id(sub), s.service_name)
        return found

    # Entries.

    def _text(self, value: str) -> str:
        if len(value) > MAX_TEXT_LENGTH:
            raise ConfigurationTooLargeError(
                f"{self._where} has a text longer than {MAX_TEXT_LENGTH} characters"
            )
        return value

    def _methods(self, methods: Sequence[str]) -> frozenset[str]:
        if len(methods) > MAX_METHODS_PER_ENTRY:
            raise ConfigurationTooLargeError(
                f"{self._where} lists {len(methods)} methods; the limit is {MAX_METHODS_PER_ENTRY}"
            )
        for name in methods:
            self._text(name)
        return frozenset(methods)

    def _certs(self, kind: str, ders: Iterable[bytes]) -> tuple[x509.Certificate, ...]:
        certs = []
        for i, der in enumerate(ders):
            self._at(kind, i)
            try:
                certs.append(parse_der_certificate(der))
            except ValueError:
                raise InvalidConfigurationError(
                    f"{kind}[{i}] is not a DER X.509 certificate"
                ) from None
        return tuple(certs)

    def _role_issuers(
        self, conf: globalconf_pb2.GlobalConfiguration, anchors: Sequence[x509.Certificate]
    ) -> tuple[x509.Certificate, ...] | None:
        if not conf.HasField("role_issuers"):
            return None
        listed = conf.role_issuers.anchor_sha256
        if not listed:
            return ()
        by_fingerprint = {fingerprint(a): a for a in anchors}
        issuers = []
        for i, sha256 in enumerate(listed):
            self._at("role_issuers.anchor_sha256", i)
            if not _FINGERPRINT.fullmatch(sha256):
                raise InvalidConfigurationError(f"{self._where} is not 64 lowercase hex")
            anchor = by_fingerprint.get(sha256)
            if anchor is None:
                raise InvalidConfigurationError(
                    f"{self._where} names no trust anchor of the configuration; only a trust "
                    "anchor may issue role certificates"
                )
            issuers.append(anchor)
        return tuple(issuers)

    def _member(self, i: int, m: globalconf_pb2.Member) -> Member:
        self._at("members", i)
        return Member(id=self._member_id(m.id), name=self._text(m.name))

    def _subsystem_entry(self, i: int, s: globalconf_pb2.Subsystem) -> SubsystemId:
        self._at("subsystems", i)
        return self._subsystem_id(s.id)

    def _server(self, i: int, s: globalconf_pb2.SecurityServer) -> SecurityServer:
        self._at("servers", i)
        return SecurityServer(
            id=ServerId(self._member_id(s.id.member), s.id.server_code),
            address=self._text(s.address),
            auth_cert_sha256=self._text(s.auth_cert_sha256),
            audit_address=self._text(s.audit_address),
            log_public_key=self._text(s.log_public_key),
        )

    def _service(self, i: int, s: globalconf_pb2.Service) -> Service:
        self._at("services", i)
        if len(s.file_descriptor_set) > MAX_DESCRIPTOR_SET_BYTES:
            raise ConfigurationTooLargeError(
                f"{self._where} has a descriptor set of {len(s.file_descriptor_set)} bytes; "
                f"the limit is {MAX_DESCRIPTOR_SET_BYTES}"
            )
        if len(s.openapi) > MAX_OPENAPI_BYTES:
            raise ConfigurationTooLargeError(
                f"{self._where} has an OpenAPI description of {len(s.openapi)} bytes; "
                f"the limit is {MAX_OPENAPI_BYTES}"
            )
        return Service(
            id=self._service_id(s.id),
            methods=self._methods(s.methods),
            file_descriptor_set=s.file_descriptor_set,
            openapi=s.openapi,
            description=self._text(s.description),
            savings=Savings(
                citizen_minutes=s.savings.citizen_minutes,
                paper_forms=s.savings.paper_forms,
                cost=s.savings.cost,
            ),
        )

    def _contract(self, i: int, c: globalconf_pb2.Contract) -> Contract:
        self._index = i  # _kind is set once by _contracts
        text = self._text
        return Contract(
            contract_id=text(c.contract_id),
            consumer=self._subsystem_id(c.consumer),
            service=self._service_id(c.service),
            methods=self._methods(c.methods),
            purpose=text(c.purpose),
            legal_basis=text(c.legal_basis),
            valid_from=_datetime(c.valid_from) if c.HasField("valid_from") else _EPOCH,
            valid_until=_datetime(c.valid_until) if c.HasField("valid_until") else None,
            rate_limit_per_minute=c.rate_limit_per_minute,
        )

    def _contracts(self, contracts: Sequence[globalconf_pb2.Contract]) -> tuple[Contract, ...]:
        self._at("contracts", 0)
        return tuple(self._contract(i, c) for i, c in enumerate(contracts))


def _datetime(ts: timestamp_pb2.Timestamp) -> datetime:
    # Timestamp.ToDatetime is several times slower; a document holds two per contract.
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
