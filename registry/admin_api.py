"""The registry's admin API (``ruta.v1.RegistryAdmin``), served with grpc.aio over mutual TLS.

Who may do what comes from the caller's client certificate (its ``urn:ruta:role:`` SAN URIs):

========================  ======================================================================
role                      may
========================  ======================================================================
``registry-admin``        everything
``member-admin:M``        request contracts for M's subsystems; approve (requested -> approved)
                          contracts on M's services; list objects and M's contracts
``auditor:M``             list objects and M's contracts
``auditor-supervisor``    list everything, including the admin audit trail
========================  ======================================================================

Anything else is refused with ``client.permission_denied``. Every request is checked against the
bounds in :mod:`registry.limits` before it reaches the store, and every refusal carries its fault
code (:func:`ruta.faults.abort`). Each change calls ``on_change`` so the configuration is
republished.

The operations live in :class:`RegistryAdmin` (one per RPC, taking the request message and the
authenticated :class:`Caller`); :class:`RegistryAdminServicer` is its gRPC face, and the registry
console (``registry/console/``) calls the same object (docs/adr/0029).
"""

# gRPC method names are CamelCase by protocol.
# ruff: noqa: N802

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf import timestamp_pb2

from registry import limits, protomap
from registry.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from registry.log_keys import parse_vkey
from registry.model import (
    Administrator,
    ContractState,
    Savings,
)
from registry.openapi import REST_METHOD, canonical_openapi
from registry.store import RegistryStore
from ruta.addresses import split_address
from ruta.checkpoint import SignatureType
from ruta.faults import Fault, RutaError, abort
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.pki.certs import (
    CertificateKind,
    Role,
    RoleName,
    fingerprint,
    load_certificate,
    load_csr,
    roles_of,
)
from ruta.pki.tls import peer_certificate
from ruta.protos import ProtoCompileError, service_descriptor
from ruta.timestamps import from_timestamp
from ruta.v1 import globalconf_pb2, registry_pb2, registry_pb2_grpc

__all__ = [
    "READER_ROLES",
    "REGISTRY_ADMIN",
    "Caller",
    "CertificateIssuer",
    "IssueRequest",
    "IssuedCertificate",
    "RegistryAdmin",
    "RegistryAdminServicer",
    "caller_of",
]

_log = logging.getLogger(__name__)
#: Administrator names cached by certificate fingerprint (cleared when full).
_MAX_CACHED_NAMES: Final = 1024
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the client certificate's common name, fingerprint and roles."""

    name: str
    cert_sha256: str
    roles: frozenset[Role]

    @property
    def actor(self) -> str:
        """How the audit trail names this caller."""
        return f"{self.name} (sha256:{self.cert_sha256[:16]})"

    @property
    def is_registry_admin(self) -> bool:
        return any(r.name is RoleName.REGISTRY_ADMIN for r in self.roles)

    @property
    def is_auditor(self) -> bool:
        """The instance-wide (supervisory) auditor, who reads everything."""
        return any(r.name is RoleName.AUDITOR_SUPERVISOR for r in self.roles)

    @property
    def administered_members(self) -> frozenset[MemberId]:
        return frozenset(
            r.member for r in self.roles if r.name is RoleName.MEMBER_ADMIN and r.member is not None
        )

    @property
    def read_members(self) -> frozenset[MemberId]:
        """Members whose contracts the caller may list: those it administers or audits."""
        audited = frozenset(
            r.member for r in self.roles if r.name is RoleName.AUDITOR and r.member is not None
        )
        return self.administered_members | audited

    def administers(self, member: MemberId) -> bool:
        """True for a registry admin, or an administrator of ``member``."""
        return self.is_registry_admin or member in self.administered_members


def caller_of(certificate: x509.Certificate | None) -> Caller:
    """The caller a client certificate describes.

    Raises :class:`RutaError` ``client.unauthenticated`` without a certificate and
    ``client.permission_denied`` when it carries no (valid) role.
    """
    if certificate is None:
        raise RutaError(
            "the admin API needs a client certificate", fault=Fault.CLIENT_UNAUTHENTICATED
        )
    try:
        roles = roles_of(certificate)
    except RutaError:
        raise PermissionDeniedError("the client certificate carries a malformed role") from None
    if not roles:
        raise PermissionDeniedError("the client certificate carries no registry role")
    name = _common_name(certificate.subject) or "(no common name)"
    return Caller(name=name[:128], cert_sha256=fingerprint(certificate), roles=roles)


def _common_name(subject: x509.Name) -> str:
    names = subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


@dataclass(frozen=True, slots=True)
class IssueRequest:
    """What the CA is asked to certify (exactly the identifier the profile needs is set)."""

    csr: x509.CertificateSigningRequest
    kind: CertificateKind
    server: ServerId | None = None
    member: MemberId | None = None
    subsystem: SubsystemId | None = None
    roles: tuple[Role, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


class CertificateIssuer(Protocol):
    """The registry's CA as the admin API uses it (``registry/ca.py`` behind an adapter)."""

    def issue(self, request: IssueRequest) -> IssuedCertificate:
        """Issue a certificate; raise :class:`RutaError` for a request the CA refuses."""
        ...

    def revoke(self, serial_number: int, reason: x509.ReasonFlags) -> datetime:
        """Revoke a certificate it issued and return when; raise :class:`RutaError` for a serial
        it never issued or one already revoked (the first revocation stands)."""
        ...

    def issued(self, serial_number: int) -> x509.Certificate | None:
        """The certificate it issued with ``serial_number``, or None."""
        ...


# --- conversions ---------------------------------------------------------------------------


def _instant(what: str, ts: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    """``ts`` as an aware datetime (``None`` when absent); :class:`InvalidRequestError` when its
    seconds or nanos are out of range."""
    if not present:
        return None
    try:
        return from_timestamp(ts)
    except ValueError:
        raise InvalidRequestError(f"{what} is not a valid time") from None


# --- request validation ----------------------------------------------------------------------


def _text(what: str, value: str, *, limit: int = limits.MAX_TEXT_LENGTH, empty: bool = True) -> str:
    if len(value) > limit:
        raise InvalidRequestError(f"{what} is longer than {limit} characters")
    if not empty and not value.strip():
        raise InvalidRequestError(f"{what} must not be empty")
    if any(ord(ch) < 0x20 and ch not in "\n\t" for ch in value):
        raise InvalidRequestError(f"{what} contains control characters")
    return value


def _address(what: str, value: str, *, required: bool) -> str:
    if not value and not required:
        return ""
    _text(what, value, limit=limits.MAX_ADDRESS_LENGTH, empty=False)
    try:
        _, port = split_address(value)
    except ValueError:
        raise InvalidRequestError(f"{what} must be host:port") from None
    if port == 0:
        raise InvalidRequestError(f"{what} must be host:port")
    if any(ch.isspace() for ch in value):
        raise InvalidRequestError(f"{what} must not contain spaces")
    return value


def _log_key(text: str) -> str:
    """A server's log verifier key: empty, or C2SP vkey text of an Ed25519 (type 0x01) key."""
    if not text:
        return ""
    _text("log_public_key", text, limit=limits.MAX_LOG_KEY_LENGTH, empty=False)
    parse_vkey(text, kind=SignatureType.ED25519)
    return text.strip()


def _auth_certificate(data: bytes) -> bytes:
    """The DER of an authentication certificate given as DER or PEM."""
    if not data:
        raise InvalidRequestError("the server's authentication certificate is missing")
    if len(data) > limits.MAX_CERTIFICATE_BYTES:
        raise InvalidRequestError(
            f"the authentication certificate is larger than {limits.MAX_CERTIFICATE_BYTES} bytes"
        )
    try:
        certificate = load_certificate(data)
    except RutaError:
        raise InvalidRequestError(
            "the authentication certificate is not a DER or PEM X.509 certificate"
        ) from None
    return certificate.public_bytes(_DER)


def _methods(what: str, names: Sequence[str]) -> list[str]:
    if len(names) > limits.MAX_METHODS:
        raise InvalidRequestError(
            f"{what} names {len(names)} methods; the limit is {limits.MAX_METHODS}"
        )
    for name in names:
        _text(f"a method name in {what}", name, limit=limits.MAX_METHOD_NAME_LENGTH, empty=False)
        if not name.isidentifier():
            raise InvalidRequestError(f"method name {name[:40]!r} is not a valid identifier")
    return sorted(set(names))


def _savings(msg: globalconf_pb2.Savings) -> Savings:
    values = (msg.citizen_minutes, float(msg.paper_forms), msg.cost)
    if any(not math.isfinite(v) or v < 0 or v > limits.MAX_SAVINGS_VALUE for v in values):
        raise InvalidRequestError(
            f"savings must be finite, not negative and at most {limits.MAX_SAVINGS_VALUE:g}"
        )
    return protomap.savings_from_proto(msg)


def _page_size(requested: int) -> int:
    if requested == 0:
        return limits.DEFAULT_PAGE_SIZE
    if requested > limits.MAX_PAGE_SIZE:
        raise InvalidRequestError(f"page_size is {requested}; the limit is {limits.MAX_PAGE_SIZE}")
    return requested


def _page_token(token: str) -> str:
    return _text("page_token", token, limit=limits.MAX_TEXT_LENGTH)


def service_methods(file_descriptor_set: bytes, service_name: str) -> list[str]:
    """The methods ``service_name`` declares in a serialised FileDescriptorSet.

    Raises :class:`InvalidRequestError` when the set is over the size bound, does not parse,
    does not build (missing imports), or does not declare the service.
    """
    if len(file_descriptor_set) > limits.MAX_DESCRIPTOR_SET_BYTES:
        raise InvalidRequestError(
            f"the descriptor set is {len(file_descriptor_set)} bytes; "
            f"the limit is {limits.MAX_DESCRIPTOR_SET_BYTES}"
        )
    try:
        service = service_descriptor(file_descriptor_set, service_name)
    except ProtoCompileError as exc:
        raise InvalidRequestError(f"the descriptor set is refused: {exc.message}") from None
    return sorted(m.name for m in service.methods)


def _id(kind: str, msg: Any, has: bool, parse: Callable[[Any], _Resp]) -> _Resp:
    if not has:
        raise InvalidRequestError(f"{kind} is missing")
    return parse(msg)


async def _nothing() -> None:
    return None


# --- the service ------------------------------------------------------------------------------

#: The role names a refusal cites (see the module's table).
REGISTRY_ADMIN: Final = str(RoleName.REGISTRY_ADMIN)
READER_ROLES: Final = (
    f"{RoleName.REGISTRY_ADMIN}, {RoleName.AUDITOR_SUPERVISOR}, "
    f"{RoleName.MEMBER_ADMIN}:MEMBER, {RoleName.AUDITOR}:MEMBER"
)


class RegistryAdmin:
    """The admin API's operations over a :class:`RegistryStore`, one per ``RegistryAdmin`` RPC
    and named like it, each taking the RPC's request message and the authenticated
    :class:`Caller`. The gRPC servicer (:class:`RegistryAdminServicer`) and the registry's web
    console (``registry/console/``) both call these, so both check the same roles, bounds and
    states and write the same audit trail. Every refusal is a :class:`RutaError` with its fault
    code; a refused call changes nothing.

    ``instance`` is the registry's instance: identifiers of other instances are refused.
    ``revoked`` says whether a (chain-verified) client certificate has been revoked; such callers
    are refused with ``client.unauthenticated`` (required: there is no unchecked mode).
    ``issuer`` issues and revokes certificates (None: both are refused). ``on_change`` runs after
    every committed change.
    """

    def __init__(
        self,
        *,
        store: RegistryStore,
        instance: str,
        issuer: CertificateIssuer | None = None,
        on_change: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        revoked: Callable[[x509.Certificate], bool],
    ) -> None:
        self._store = store
        self._instance = instance
        self._issuer = issuer
        self._on_change = on_change or _nothing
        self._clock = clock
        self._names: dict[str, str] = {}
        self._revoked = revoked

    @property
    def instance(self) -> str:
        return self._instance

    async def authenticate(self, certificate: x509.Certificate | None) -> Caller:
        """The caller a verified client certificate describes; raises ``client.unauthenticated``
        without a certificate or with a revoked one, ``client.permission_denied`` without a
        role."""
        if certificate is not None and self._revoked(certificate):
            raise RutaError(
                "the client certificate has been revoked", fault=Fault.CLIENT_UNAUTHENTICATED
            )
        return await self._identify(caller_of(certificate))

    async def _identify(self, caller: Caller) -> Caller:
        """Name the caller as the administrators table records its certificate, if it does."""
        name = self._names.get(caller.cert_sha256)
        if name is None:
            administrator = await self._store.administrator(caller.cert_sha256)
            if administrator is None:
                return caller
            if len(self._names) >= _MAX_CACHED_NAMES:
                self._names.clear()
            name = self._names[caller.cert_sha256] = administrator.name[:128]
        return replace(caller, name=name)

    def _own(self, member: MemberId) -> MemberId:
        if member.instance != self._instance:
            raise InvalidRequestError(
                f"member {member} is not of instance {self._instance}; this registry serves "
                f"only {self._instance}"
            )
        return member

    @staticmethod
    def _require_registry_admin(caller: Caller, what: str) -> None:
        if not caller.is_registry_admin:
            raise PermissionDeniedError(
                f"only a registry administrator may {what}", role=REGISTRY_ADMIN
            )

    @staticmethod
    def _require_reader(caller: Caller) -> None:
        if not (caller.is_registry_admin or caller.is_auditor or caller.read_members):
            raise PermissionDeniedError(
                "the caller has no role that may read the registry", role=READER_ROLES
            )

    def _member_filter(self, request: Any) -> MemberId | None:
        if not request.HasField("member"):
            return None
        return MemberId.from_proto(request.member)

    # -- members, subsystems, servers, services ---------------------------------------------

    async def AddMember(
        self, request: registry_pb2.AddMemberRequest, caller: Caller
    ) -> registry_pb2.MemberRecord:
        self._require_registry_admin(caller, "add members")
        member_id = self._own(
            _id("member id", request.id, request.HasField("id"), MemberId.from_proto)
        )
        name = _text("member name", request.name, limit=limits.MAX_NAME_LENGTH, empty=False)
        member = await self._store.add_member(member_id, name=name, actor=caller.actor)
        await self._on_change()
        return protomap.member_record(member)

    async def ListMembers(
        self, request: registry_pb2.ListRequest, caller: Caller
    ) -> registry_pb2.ListMembersResponse:
        self._require_reader(caller)
        size = _page_size(request.page_size)
        member = self._member_filter(request)
        if member is not None:
            return registry_pb2.ListMembersResponse(
                members=[protomap.member_record(await self._store.get_member(member))]
            )
        members = await self._store.list_members(after=_page_token(request.page_token), limit=size)
        return registry_pb2.ListMembersResponse(
            members=[protomap.member_record(m) for m in members],
            next_page_token=str(members[-1].id) if len(members) == size else "",
        )

    async def AddSubsystem(
        self, request: registry_pb2.AddSubsystemRequest, caller: Caller
    ) -> registry_pb2.SubsystemRecord:
        self._require_registry_admin(caller, "add subsystems")
        subsystem_id = _id(
            "subsystem id", request.id, request.HasField("id"), SubsystemId.from_proto
        )
        self._own(subsystem_id.member)
        subsystem = await self._store.add_subsystem(subsystem_id, actor=caller.actor)
        await self._on_change()
        return protomap.subsystem_record(subsystem)

    async def ListSubsystems(
        self, request: registry_pb2.ListRequest, caller: Caller
    ) -> registry_pb2.ListSubsystemsResponse:
        self._require_reader(caller)
        size = _page_size(request.page_size)
        items = await self._store.list_subsystems(
            member=self._member_filter(request), after=_page_token(request.page_token), limit=size
        )
        return registry_pb2.ListSubsystemsResponse(
            subsystems=[protomap.subsystem_record(s) for s in items],
            next_page_token=str(items[-1].id) if len(items) == size else "",
        )

    async def AddServer(
        self, request: registry_pb2.AddServerRequest, caller: Caller
    ) -> registry_pb2.ServerRecord:
        self._require_registry_admin(caller, "add security servers")
        server_id = _id("server id", request.id, request.HasField("id"), ServerId.from_proto)
        self._own(server_id.member)
        address = _address("address", request.address, required=True)
        audit_address = _address("audit_address", request.audit_address, required=False)
        server = await self._store.add_server(
            server_id,
            address=address,
            audit_address=audit_address,
            auth_cert_der=_auth_certificate(request.auth_certificate),
            log_public_key=_log_key(request.log_public_key),
            actor=caller.actor,
        )
        await self._on_change()
        return protomap.server_record(server)

    async def UpdateServer(
        self, request: registry_pb2.UpdateServerRequest, caller: Caller
    ) -> registry_pb2.ServerRecord:
        self._require_registry_admin(caller, "change security servers")
        server_id = _id("server id", request.id, request.HasField("id"), ServerId.from_proto)
        self._own(server_id.member)
        server = await self._store.update_server(
            server_id,
            address=(
                _address("address", request.address, required=True)
                if request.HasField("address")
                else None
            ),
            auth_cert_der=(
                _auth_certificate(request.auth_certificate)
                if request.HasField("auth_certificate")
                else None
            ),
            audit_address=(
                _address("audit_address", request.audit_address, required=False)
                if request.HasField("audit_address")
                else None
            ),
            log_public_key=(
                _log_key(request.log_public_key) if request.HasField("log_public_key") else None
            ),
            actor=caller.actor,
        )
        await self._on_change()
        return protomap.server_record(server)

    async def ListServers(
        self, request: registry_pb2.ListRequest, caller: Caller
    ) -> registry_pb2.ListServersResponse:
        self._require_reader(caller)
        size = _page_size(request.page_size)
        items = await self._store.list_servers(
            member=self._member_filter(request), after=_page_token(request.page_token), limit=size
        )
        return registry_pb2.ListServersResponse(
            servers=[protomap.server_record(s) for s in items],
            next_page_token=str(items[-1].id) if len(items) == size else "",
        )

    async def AddService(
        self, request: registry_pb2.AddServiceRequest, caller: Caller
    ) -> registry_pb2.ServiceRecord:
        self._require_registry_admin(caller, "add services")
        service_id = _id("service id", request.id, request.HasField("id"), ServiceId.from_proto)
        self._own(service_id.member)
        if request.openapi:
            if request.file_descriptor_set or request.methods:
                raise InvalidRequestError(
                    "a REST service (with an OpenAPI description) has no descriptor set and no "
                    f"methods: it is called through the fixed method {REST_METHOD}"
                )
            service = await self._store.add_service(
                service_id,
                methods=(REST_METHOD,),
                file_descriptor_set=b"",
                openapi=canonical_openapi(request.openapi),
                description=_text("description", request.description),
                savings=_savings(request.savings),
                actor=caller.actor,
            )
            await self._on_change()
            return protomap.service_record(service)
        declared = service_methods(request.file_descriptor_set, service_id.service_name)
        asked = _methods("the service", request.methods)
        unknown = sorted(set(asked) - set(declared))
        if unknown:
            raise InvalidRequestError(
                f"service {service_id.service_name} declares no method(s) {', '.join(unknown)}"
            )
        methods = asked or declared
        if not methods:
            raise InvalidRequestError(f"service {service_id.service_name} declares no methods")
        service = await self._store.add_service(
            service_id,
            methods=methods,
            file_descriptor_set=request.file_descriptor_set,
            description=_text("description", request.description),
            savings=_savings(request.savings),
            actor=caller.actor,
        )
        await self._on_change()
        return protomap.service_record(service)

    async def ListServices(
        self, request: registry_pb2.ListRequest, caller: Caller
    ) -> registry_pb2.ListServicesResponse:
        self._require_reader(caller)
        size = _page_size(request.page_size)
        items = await self._store.list_services(
            member=self._member_filter(request), after=_page_token(request.page_token), limit=size
        )
        return registry_pb2.ListServicesResponse(
            services=[protomap.service_record(s) for s in items],
            next_page_token=str(items[-1].id) if len(items) == size else "",
        )

    # -- contracts ---------------------------------------------------------------------------

    async def RequestContract(
        self, request: registry_pb2.RequestContractRequest, caller: Caller
    ) -> registry_pb2.ContractRecord:
        consumer = _id(
            "consumer", request.consumer, request.HasField("consumer"), SubsystemId.from_proto
        )
        service = _id("service", request.service, request.HasField("service"), ServiceId.from_proto)
        if not caller.administers(consumer.member):
            raise PermissionDeniedError(
                f"only an administrator of {consumer.member} may request contracts for {consumer}",
                role=f"{RoleName.MEMBER_ADMIN}:{consumer.member}",
            )
        self._own(consumer.member)
        self._own(service.member)
        valid_from = _instant("valid_from", request.valid_from, request.HasField("valid_from"))
        valid_until = _instant("valid_until", request.valid_until, request.HasField("valid_until"))
        contract = await self._store.request_contract(
            consumer=consumer,
            service=service,
            methods=_methods("the contract", request.methods),
            purpose=_text("purpose", request.purpose, limit=limits.MAX_NAME_LENGTH, empty=False),
            legal_basis=_text("legal basis", request.legal_basis, empty=False),
            valid_from=valid_from or self._clock(),
            valid_until=valid_until,
            actor=caller.actor,
            rate_limit_per_minute=request.rate_limit_per_minute,
        )
        await self._on_change()
        return protomap.contract_record(contract)

    def _contract_id(self, request: registry_pb2.ContractRef) -> str:
        return _text("contract_id", request.contract_id, limit=64, empty=False)

    async def ApproveContract(
        self, request: registry_pb2.ContractRef, caller: Caller
    ) -> registry_pb2.ContractRecord:
        contract = await self._store.get_contract(self._contract_id(request))
        if contract.state is ContractState.REQUESTED:
            if not caller.administers(contract.service.member):
                raise PermissionDeniedError(
                    f"only an administrator of {contract.service.member} may approve contracts "
                    f"on {contract.service}",
                    role=f"{RoleName.MEMBER_ADMIN}:{contract.service.member}",
                )
            updated = await self._store.approve_contract(
                contract.id,
                actor=caller.actor,
                expected=contract,
                rate_limit_per_minute=(
                    request.rate_limit_per_minute
                    if request.HasField("rate_limit_per_minute")
                    else None
                ),
            )
        elif contract.state is ContractState.APPROVED:
            self._require_registry_admin(caller, "activate an approved contract")
            updated = await self._store.activate_contract(
                contract.id, actor=caller.actor, expected=contract
            )
        else:
            if not (caller.is_registry_admin or caller.administers(contract.service.member)):
                raise PermissionDeniedError(
                    f"only an administrator of {contract.service.member} may approve contracts "
                    f"on {contract.service}",
                    role=f"{RoleName.MEMBER_ADMIN}:{contract.service.member}",
                )
            raise InvalidRequestError(
                f"contract {contract.id} is {contract.state}; nothing to approve"
            )
        await self._on_change()
        return protomap.contract_record(updated)

    async def RevokeContract(
        self, request: registry_pb2.ContractRef, caller: Caller
    ) -> registry_pb2.ContractRecord:
        self._require_registry_admin(caller, "revoke contracts")
        contract = await self._store.get_contract(self._contract_id(request))
        updated = await self._store.revoke_contract(
            contract.id, actor=caller.actor, expected=contract
        )
        await self._on_change()
        return protomap.contract_record(updated)

    async def ListContracts(
        self, request: registry_pb2.ListContractsRequest, caller: Caller
    ) -> registry_pb2.ListContractsResponse:
        self._require_reader(caller)
        member = self._member_filter(request)
        if not (caller.is_registry_admin or caller.is_auditor):
            own = caller.read_members
            if member is None and len(own) == 1:
                member = next(iter(own))
            if member is None or member not in own:
                raise PermissionDeniedError(
                    "a member's administrator or auditor may only list that member's contracts;"
                    " name it",
                    role=READER_ROLES,
                )
        state: ContractState | None = None
        if request.state:
            try:
                state = ContractState(request.state)
            except ValueError:
                raise InvalidRequestError(
                    "state must be one of " + ", ".join(s.value for s in ContractState)
                ) from None
        size = _page_size(request.page_size)
        items = await self._store.list_contracts(
            member=member, state=state, after=_page_token(request.page_token), limit=size
        )
        return registry_pb2.ListContractsResponse(
            contracts=[protomap.contract_record(c) for c in items],
            next_page_token=items[-1].id if len(items) == size else "",
        )

    # -- audit trail and certificates ---------------------------------------------------------

    async def ListAuditTrail(
        self, request: registry_pb2.ListAuditRequest, caller: Caller
    ) -> registry_pb2.ListAuditResponse:
        if not (caller.is_registry_admin or caller.is_auditor):
            raise PermissionDeniedError(
                "only a registry administrator or a supervisory auditor (auditor-supervisor) may"
                " read the audit trail",
                role=f"{RoleName.REGISTRY_ADMIN}, {RoleName.AUDITOR_SUPERVISOR}",
            )
        size = _page_size(request.page_size)
        entries = await self._store.list_audit(after_seq=request.after_seq, limit=size)
        return registry_pb2.ListAuditResponse(
            entries=[protomap.audit_record(e) for e in entries],
            next_after_seq=entries[-1].seq if len(entries) == size else 0,
        )

    async def IssueCertificate(
        self, request: registry_pb2.IssueCertificateRequest, caller: Caller
    ) -> registry_pb2.IssueCertificateResponse:
        self._require_registry_admin(caller, "issue certificates")
        issuer = self._require_issuer()
        issue = _issue_request(request, self._own)
        issued = await asyncio.to_thread(issuer.issue, issue)
        cert = issued.certificate
        if issue.kind is CertificateKind.ROLE:
            # An admin certificate: recorded as an administrator (which is audited), with every
            # role it carries, since it grants them all.
            await self._store.add_administrator(
                Administrator(
                    name=_common_name(issue.csr.subject) or cert.subject.rfc4514_string(),
                    roles=tuple(str(r) for r in issue.roles),
                    cert_sha256=fingerprint(cert),
                    created_at=self._clock(),
                ),
                actor=caller.actor,
            )
        else:
            await self._store.record(
                actor=caller.actor,
                action="certificate.issue",
                object_id=format(cert.serial_number, "x"),
                after={
                    "profile": str(issue.kind),
                    "subject": cert.subject.rfc4514_string(),
                    "sha256": fingerprint(cert),
                    "not_after": cert.not_valid_after_utc.isoformat(),
                },
            )
        return registry_pb2.IssueCertificateResponse(
            certificate=cert.public_bytes(_DER),
            chain=[c.public_bytes(_DER) for c in issued.chain],
        )

    async def RevokeCertificate(
        self, request: registry_pb2.RevokeCertificateRequest, caller: Caller
    ) -> registry_pb2.RevokeCertificateResponse:
        self._require_registry_admin(caller, "revoke certificates")
        issuer = self._require_issuer()
        serial = _serial_number(request.serial)
        reason = _revocation_reason(request.reason)
        revoked_at = await asyncio.to_thread(issuer.revoke, serial, reason)
        await self._store.record(
            actor=caller.actor,
            action="certificate.revoke",
            object_id=format(serial, "x"),
            after={"reason": reason.value, "revoked_at": revoked_at.isoformat()},
        )
        response = registry_pb2.RevokeCertificateResponse(serial=format(serial, "x"))
        response.revoked_at.FromDatetime(revoked_at)
        return response

    async def issued_certificate(self, serial: str, caller: Caller) -> x509.Certificate:
        """The certificate the CA issued with hex ``serial`` (for a registry administrator to
        download what was just issued). Raises ``client.permission_denied``,
        ``client.invalid_request`` for a malformed serial, ``client.not_found`` for an unknown one.
        """
        self._require_registry_admin(caller, "read issued certificates")
        issuer = self._require_issuer()
        certificate = await asyncio.to_thread(issuer.issued, _serial_number(serial))
        if certificate is None:
            raise NotFoundError(f"no certificate with serial {serial[:40]} was issued here")
        return certificate

    def _require_issuer(self) -> CertificateIssuer:
        if self._issuer is None:
            raise InvalidRequestError("this registry runs no certificate authority")
        return self._issuer


#: Longest certificate serial accepted, in hex digits (RFC 5280: at most 20 octets).
MAX_SERIAL_HEX_DIGITS: Final = 40


def _serial_number(text: str) -> int:
    digits = text.strip().lower().removeprefix("0x").replace(":", "")
    if not digits or len(digits) > MAX_SERIAL_HEX_DIGITS:
        raise InvalidRequestError("the serial must be a hexadecimal number of at most 20 octets")
    try:
        return int(digits, 16)
    except ValueError:
        raise InvalidRequestError("the serial must be a hexadecimal number") from None


def _revocation_reason(text: str) -> x509.ReasonFlags:
    if not text:
        return x509.ReasonFlags.unspecified
    _text("reason", text, limit=64, empty=False)
    for flag in x509.ReasonFlags:
        if text in (flag.value, flag.name) and flag is not x509.ReasonFlags.remove_from_crl:
            return flag
    raise InvalidRequestError(
        "unknown revocation reason; use one of: "
        + ", ".join(f.value for f in x509.ReasonFlags if f is not x509.ReasonFlags.remove_from_crl)
    )


# --- the gRPC servicer ---------------------------------------------------------------------------


def _rpc(operation: Callable[[RegistryAdmin, _Req, Caller], Awaitable[_Resp]]) -> Any:
    """The RPC handler of ``operation``: authenticate the caller by its TLS client certificate,
    run the operation, and turn every refusal into a Ruta fault. (Typed ``Any``: the generated
    base class declares its methods over grpc's untyped context.)"""

    @functools.wraps(operation)
    async def handler(
        self: RegistryAdminServicer, request: _Req, context: grpc.aio.ServicerContext[Any, Any]
    ) -> _Resp:
        try:
            caller = await self.admin.authenticate(peer_certificate(context))
            return await operation(self.admin, request, caller)
        except RutaError as error:
            await abort(context, error)
        except Exception:  # noqa: BLE001 - last resort: logged with traceback, caller sees a fault
            _log.exception("admin API %s failed", operation.__name__)
            await abort(
                context,
                RutaError(
                    "the registry failed to handle the request; see its log",
                    fault=Fault.SERVER_REGISTRY_INTERNAL_ERROR,
                ),
            )

    return handler


class RegistryAdminServicer(registry_pb2_grpc.RegistryAdminServicer):
    """``RegistryAdmin`` over gRPC: each RPC is the :class:`RegistryAdmin` operation of its
    name, called with the caller its client certificate describes. Takes
    :class:`RegistryAdmin`'s arguments; :attr:`admin` is the service, for the console to share.
    """

    def __init__(
        self,
        *,
        store: RegistryStore,
        instance: str,
        issuer: CertificateIssuer | None = None,
        on_change: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        revoked: Callable[[x509.Certificate], bool],
    ) -> None:
        self.admin = RegistryAdmin(
            store=store,
            instance=instance,
            issuer=issuer,
            on_change=on_change,
            clock=clock,
            revoked=revoked,
        )

    AddMember = _rpc(RegistryAdmin.AddMember)
    ListMembers = _rpc(RegistryAdmin.ListMembers)
    AddSubsystem = _rpc(RegistryAdmin.AddSubsystem)
    ListSubsystems = _rpc(RegistryAdmin.ListSubsystems)
    AddServer = _rpc(RegistryAdmin.AddServer)
    UpdateServer = _rpc(RegistryAdmin.UpdateServer)
    ListServers = _rpc(RegistryAdmin.ListServers)
    AddService = _rpc(RegistryAdmin.AddService)
    ListServices = _rpc(RegistryAdmin.ListServices)
    RequestContract = _rpc(RegistryAdmin.RequestContract)
    ApproveContract = _rpc(RegistryAdmin.ApproveContract)
    RevokeContract = _rpc(RegistryAdmin.RevokeContract)
    ListContracts = _rpc(RegistryAdmin.ListContracts)
    ListAuditTrail = _rpc(RegistryAdmin.ListAuditTrail)
    IssueCertificate = _rpc(RegistryAdmin.IssueCertificate)
    RevokeCertificate = _rpc(RegistryAdmin.RevokeCertificate)


_DER = Encoding.DER

_PROFILES = {
    registry_pb2.CERTIFICATE_PROFILE_AUTH: CertificateKind.AUTH,
    registry_pb2.CERTIFICATE_PROFILE_SIGN: CertificateKind.SIGN,
    registry_pb2.CERTIFICATE_PROFILE_SUBSYSTEM: CertificateKind.SUBSYSTEM,
    registry_pb2.CERTIFICATE_PROFILE_ROLE: CertificateKind.ROLE,
    registry_pb2.CERTIFICATE_PROFILE_GATEWAY: CertificateKind.GATEWAY,
}

#: Most roles, DNS names or IP addresses one certificate request may name.
MAX_CERTIFICATE_NAMES = 16


def _parse_role(text: str, own: Callable[[MemberId], MemberId]) -> Role:
    name, _, member = text.partition(":")
    try:
        role_name = RoleName(name)
    except ValueError:
        raise InvalidRequestError(
            "roles are registry-admin, member-admin:MEMBER, auditor:MEMBER, auditor-supervisor,"
            " auditor-bodies[:MEMBER], citizen-service or statistics"
        ) from None
    member_id = own(MemberId.parse(member)) if member else None
    try:
        return Role(role_name, member_id)
    except RutaError as exc:
        raise InvalidRequestError(exc.message) from None


def _issue_request(
    request: registry_pb2.IssueCertificateRequest, own: Callable[[MemberId], MemberId]
) -> IssueRequest:
    kind = _PROFILES.get(request.profile)
    if kind is None:
        raise InvalidRequestError("profile must be auth, sign, subsystem, role or gateway")
    for what, values in (
        ("roles", request.roles),
        ("dns_names", request.dns_names),
        ("ip_addresses", request.ip_addresses),
    ):
        if len(values) > MAX_CERTIFICATE_NAMES:
            raise InvalidRequestError(f"at most {MAX_CERTIFICATE_NAMES} {what}")
        for value in values:
            _text(what, value, limit=limits.MAX_ADDRESS_LENGTH, empty=False)
    try:
        csr = load_csr(request.csr)
    except RutaError:
        raise InvalidRequestError(
            "the CSR is not a valid PKCS#10 request (or is too large)"
        ) from None
    server = ServerId.from_proto(request.server) if request.HasField("server") else None
    member = MemberId.from_proto(request.member) if request.HasField("member") else None
    subsystem = SubsystemId.from_proto(request.subsystem) if request.HasField("subsystem") else None
    for named in (server, member, subsystem):
        if named is not None:
            own(named if isinstance(named, MemberId) else named.member)
    return IssueRequest(
        csr=csr,
        kind=kind,
        server=server,
        member=member,
        subsystem=subsystem,
        roles=tuple(_parse_role(r, own) for r in request.roles),
        dns_names=tuple(request.dns_names),
        ip_addresses=tuple(request.ip_addresses),
    )
