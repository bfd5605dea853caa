"""The registry store: members, subsystems, servers, services, contracts and administrators.

Every change runs in one transaction together with the admin-audit-trail entry that records it
(who, what, when, before/after), so the trail can never miss a change nor record one that did not
happen. Reads return :mod:`registry.model` objects; lists are pages ordered by identifier.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Row, and_, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from registry import limits
from registry.errors import AlreadyExistsError, InvalidRequestError, NotFoundError, StoreError
from registry.model import (
    Administrator,
    AuditEntry,
    Contract,
    ContractState,
    Member,
    RegistrySnapshot,
    Savings,
    SecurityServer,
    Service,
    Subsystem,
)
from registry.store import tables as t
from registry.store.engine import create_engine, migrate
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId

__all__ = ["PublishedConfiguration", "RegistryStore"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: How often :meth:`RegistryStore.snapshot` retries when a change lands while it reads.
_SNAPSHOT_ATTEMPTS: Final = 5


_STATES: Final = {state.value: state for state in ContractState}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _us(at: datetime) -> int:
    if at.tzinfo is None:
        raise InvalidRequestError("instants must carry a time zone")
    return (at - _EPOCH) // timedelta(microseconds=1)


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _opt_dt(us: int | None) -> datetime | None:
    return None if us is None else _dt(us)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class PublishedConfiguration:
    """A signed global configuration the registry has published, as stored."""

    serial: int
    change_seq: int
    generated_at: datetime
    expires_at: datetime
    document: bytes


class _Ids:
    """Parses each identifier text (and method list) once per read: a snapshot of a large
    instance names the same subsystems and services in many contracts."""

    def __init__(self) -> None:
        self._subsystems: dict[str, SubsystemId] = {}
        self._services: dict[str, ServiceId] = {}
        self._methods: dict[str, tuple[str, ...]] = {}

    def subsystem(self, text: str) -> SubsystemId:
        found = self._subsystems.get(text)
        if found is None:
            found = self._subsystems[text] = SubsystemId.parse(text)
        return found

    def service(self, text: str) -> ServiceId:
        found = self._services.get(text)
        if found is None:
            subsystem, _, name = text.rpartition("/")
            found = self._services[text] = ServiceId(self.subsystem(subsystem), name)
        return found

    def methods(self, text: str) -> tuple[str, ...]:
        found = self._methods.get(text)
        if found is None:
            found = self._methods[text] = tuple(json.loads(text))
        return found


def _member(row: Row[Any]) -> Member:
    return Member(
        id=MemberId.parse(row.member_id), name=row.name, created_at=_dt(row.created_at_us)
    )


def _subsystem(row: Row[Any], ids: _Ids | None = None) -> Subsystem:
    return Subsystem(
        id=(ids or _Ids()).subsystem(row.subsystem_id), created_at=_dt(row.created_at_us)
    )


def _server(row: Row[Any]) -> SecurityServer:
    return SecurityServer(
        id=ServerId.parse(row.server_id),
        address=row.address,
        audit_address=row.audit_address,
        auth_cert_der=bytes(row.auth_cert_der),
        created_at=_dt(row.created_at_us),
        log_public_key=row.log_public_key,
    )


def _service(row: Row[Any], ids: _Ids | None = None) -> Service:
    ids = ids or _Ids()
    return Service(
        id=ids.service(row.service_id),
        methods=ids.methods(row.methods_json),
        file_descriptor_set=bytes(row.file_descriptor_set),
        openapi=bytes(row.openapi) if row.openapi else b"",
        description=row.description,
        savings=Savings(
            citizen_minutes=float(row.savings_citizen_minutes),
            paper_forms=int(row.savings_paper_forms),
            cost=float(row.savings_cost),
        ),
        created_at=_dt(row.created_at_us),
    )


def _contract(row: Row[Any], ids: _Ids | None = None) -> Contract:
    ids = ids or _Ids()
    return Contract(
        id=row.contract_id,
        consumer=ids.subsystem(row.consumer_id),
        service=ids.service(row.service_id),
        methods=ids.methods(row.methods_json),
        purpose=row.purpose,
        legal_basis=row.legal_basis,
        valid_from=_dt(row.valid_from_us),
        valid_until=_opt_dt(row.valid_until_us),
        state=_STATES[row.state],
        requested_by=row.requested_by,
        requested_at=_dt(row.requested_at_us),
        approved_by=row.approved_by,
        approved_at=_opt_dt(row.approved_at_us),
        activated_by=row.activated_by,
        activated_at=_opt_dt(row.activated_at_us),
        revoked_by=row.revoked_by,
        revoked_at=_opt_dt(row.revoked_at_us),
        rate_limit_per_minute=row.rate_limit_per_minute,
    )


def _check_rate_limit(per_minute: int) -> None:
    if not 0 <= per_minute <= limits.MAX_RATE_LIMIT_PER_MINUTE:
        raise InvalidRequestError(
            "the rate limit must be 0 (none) to "
            f"{limits.MAX_RATE_LIMIT_PER_MINUTE} calls per minute"
        )


def _administrator(row: Row[Any]) -> Administrator:
    return Administrator(
        name=row.name,
        roles=tuple(json.loads(row.roles)),
        cert_sha256=row.cert_sha256,
        created_at=_dt(row.created_at_us),
    )


def _audit(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        seq=int(row.seq),
        at=_dt(row.at_us),
        actor=row.actor,
        action=row.action,
        object_id=row.object_id,
        before=None if row.before_json is None else json.loads(row.before_json),
        after=None if row.after_json is None else json.loads(row.after_json),
    )


class RegistryStore:
    """Async access to the registry's database (SQLite or PostgreSQL, one code path).

    Build with :meth:`open`; :meth:`close` disposes of the engine. Methods raise
    :class:`~registry.errors.NotFoundError`, :class:`~registry.errors.AlreadyExistsError` or
    :class:`~registry.errors.InvalidRequestError` for the caller's mistakes and
    :class:`~registry.errors.StoreError` when the database fails; a failed change leaves nothing
    behind (neither the change nor its audit entry).
    """

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._clock = clock

    @classmethod
    async def open(
        cls, url: str, *, run_migrations: bool = True, clock: Callable[[], datetime] = _utcnow
    ) -> RegistryStore:
        """Open the store at ``url`` (an async SQLAlchemy URL), migrating its schema first."""
        engine = create_engine(url)
        try:
            if run_migrations:
                await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, clock=clock)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        await self._engine.dispose()

    # -- helpers ---------------------------------------------------------------------------

    async def _audit(
        self,
        conn: AsyncConnection,
        *,
        at: datetime,
        actor: str,
        action: str,
        object_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        await conn.execute(
            insert(t.audit_trail).values(
                at_us=_us(at),
                actor=actor,
                action=action,
                object_id=object_id,
                before_json=None if before is None else _json(before),
                after_json=None if after is None else _json(after),
            )
        )

    async def _one(self, conn: AsyncConnection, statement: Any) -> Row[Any] | None:
        return (await conn.execute(statement)).first()

    async def _require_member(self, conn: AsyncConnection, member: MemberId) -> None:
        row = await self._one(
            conn, select(t.members.c.member_id).where(t.members.c.member_id == str(member))
        )
        if row is None:
            raise NotFoundError(f"member {member} is not registered")

    async def _require_subsystem(self, conn: AsyncConnection, subsystem: SubsystemId) -> None:
        row = await self._one(
            conn,
            select(t.subsystems.c.subsystem_id).where(
                t.subsystems.c.subsystem_id == str(subsystem)
            ),
        )
        if row is None:
            raise NotFoundError(f"subsystem {subsystem} is not registered")

    async def _insert(self, conn: AsyncConnection, statement: Any, what: str) -> None:
        try:
            await conn.execute(statement)
        except IntegrityError:
            raise AlreadyExistsError(f"{what} is already registered") from None

    def _write(self) -> _Write:
        return _Write(self._engine)

    # -- members, subsystems, servers ------------------------------------------------------

    async def add_member(self, member_id: MemberId, *, name: str, actor: str) -> Member:
        """Admit a member; raises AlreadyExistsError when it is already registered."""
        now = self._clock()
        member = Member(id=member_id, name=name, created_at=now)
        async with self._write() as conn:
            await self._insert(
                conn,
                insert(t.members).values(
                    member_id=str(member_id), name=name, created_at_us=_us(now)
                ),
                f"member {member_id}",
            )
            await self._audit(
                conn,
                at=now,
                actor=actor,
                action="member.add",
                object_id=str(member_id),
                before=None,
                after=member.to_json(),
            )
        return member

    async def get_member(self, member_id: MemberId) -> Member:
        async with self._read() as conn:
            row = await self._one(
                conn, select(t.members).where(t.members.c.member_id == str(member_id))
            )
        if row is None:
            raise NotFoundError(f"member {member_id} is not registered")
        return _member(row)

    async def list_members(self, *, after: str = "", limit: int) -> list[Member]:
        """Members ordered by identifier text, starting after ``after``."""
        statement = (
            select(t.members)
            .where(t.members.c.member_id > after)
            .order_by(t.members.c.member_id)
            .limit(limit)
        )
        async with self._read() as conn:
            return [_member(r) for r in await conn.execute(statement)]

    async def add_subsystem(self, subsystem_id: SubsystemId, *, actor: str) -> Subsystem:
        """Register a subsystem of an existing member."""
        now = self._clock()
        subsystem = Subsystem(id=subsystem_id, created_at=now)
        async with self._write() as conn:
            await self._require_member(conn, subsystem_id.member)
            await self._insert(
                conn,
                insert(t.subsystems).values(
                    subsystem_id=str(subsystem_id),
                    member_id=str(subsystem_id.member),
                    created_at_us=_us(now),
                ),
                f"subsystem {subsystem_id}",
            )
            await self._audit(
                conn,
                at=now,
                actor=actor,
                action="subsystem.add",
                object_id=str(subsystem_id),
                before=None,
                after=subsystem.to_json(),
            )
        return subsystem

    async def list_subsystems(
        self, *, member: MemberId | None = None, after: str = "", limit: int
    ) -> list[Subsystem]:
        statement = select(t.subsystems).where(t.subsystems.c.subsystem_id > after)
        if member is not None:
            statement = statement.where(t.subsystems.c.member_id == str(member))
        statement = statement.order_by(t.subsystems.c.subsystem_id).limit(limit)
        async with self._read() as conn:
            return [_subsystem(r) for r in await conn.execute(statement)]

    async def add_server(
        self,
        server_id: ServerId,
        *,
        address: str,
        auth_cert_der: bytes,
        audit_address: str = "",
        log_public_key: str = "",
        actor: str,
    ) -> SecurityServer:
        """Register a member's security server with its authentication certificate (DER).

        Raises AlreadyExistsError when the server id or the certificate is already registered.
        """
        now = self._clock()
        server = SecurityServer(
            id=server_id,
            address=address,
            audit_address=audit_address,
            auth_cert_der=auth_cert_der,
            created_at=now,
            log_public_key=log_public_key,
        )
        async with self._write() as conn:
            await self._require_member(conn, server_id.member)
            await self._insert(
                conn,
                insert(t.servers).values(
                    server_id=str(server_id),
                    member_id=str(server_id.member),
                    address=address,
                    audit_address=audit_address,
                    auth_cert_der=auth_cert_der,
                    auth_cert_sha256=server.auth_cert_sha256,
                    log_public_key=log_public_key,
                    created_at_us=_us(now),
                ),
                f"server {server_id} (or its authentication certificate)",
            )
            await self._audit(
                conn,
                at=now,
                actor=actor,
                action="server.add",
                object_id=str(server_id),
                before=None,
                after=server.to_json(),
            )
        return server

    async def update_server(
        self,
        server_id: ServerId,
        *,
        address: str | None = None,
        auth_cert_der: bytes | None = None,
        audit_address: str | None = None,
        log_public_key: str | None = None,
        actor: str,
    ) -> SecurityServer:
        """Change what is given (None keeps a value): a new address, a renewed authentication
        certificate, the audit address or the log key. Raises NotFoundError for an unknown
        server and AlreadyExistsError for a certificate another server holds."""
        now = self._clock()
        async with self._write() as conn:
            row = await self._one(
                conn, select(t.servers).where(t.servers.c.server_id == str(server_id))
            )
            if row is None:
                raise NotFoundError(f"server {server_id} is not registered")
            before = _server(row)
            after = SecurityServer(
                id=server_id,
                address=before.address if address is None else address,
                audit_address=before.audit_address if audit_address is None else audit_address,
                auth_cert_der=before.auth_cert_der if auth_cert_der is None else auth_cert_der,
                created_at=before.created_at,
                log_public_key=(
                    before.log_public_key if log_public_key is None else log_public_key
                ),
            )
            await self._insert(
                conn,
                update(t.servers)
                .where(t.servers.c.server_id == str(server_id))
                .values(
                    address=after.address,
                    audit_address=after.audit_address,
                    auth_cert_der=after.auth_cert_der,
                    auth_cert_sha256=after.auth_cert_sha256,
                    log_public_key=after.log_public_key,
                ),
                "that authentication certificate",
            )
            await self._audit(
                conn,
                at=now,
                actor=actor,
                action="server.update",
                object_id=str(server_id),
                before=before.to_json(),
                after=after.to_json(),
            )
        return after

    async def list_servers(
        self, *, member: MemberId | None = None, after: str = "", limit: int
    ) -> list[SecurityServer]:
        statement = select(t.servers).where(t.servers.c.server_id > after)
        if member is not None:
            statement = statement.where(t.servers.c.member_id == str(member))
        statement = statement.order_by(t.servers.c.server_id).limit(limit)
        async with self._read() as conn:
            return [_server(r) for r in await conn.execute(statement)]

    # -- services --------------------------------------------------------------------------

    async def add_service(
        self,
        service_id: ServiceId,
        *,
        methods: Sequence[str],
        file_descriptor_set: bytes,
        description: str,
        savings: Savings,
        actor: str,
        openapi: bytes = b"",
    ) -> Service:
        """Register a service of an existing subsystem with its descriptors (a gRPC service) or
        its OpenAPI description (a REST service)."""
        now = self._clock()
        service = Service(
            id=service_id,
            methods=tuple(sorted(set(methods))),
            file_descriptor_set=file_descriptor_set,
            description=description,
            savings=savings,
            created_at=now,
            openapi=openapi,
        )
        async with self._write() as conn:
            await self._require_subsystem(conn, service_id.subsystem)
            await self._insert(
                conn,
                insert(t.services).values(
                    service_id=str(service_id),
                    subsystem_id=str(service_id.subsystem),
                    member_id=str(service_id.member),
                    methods_json=_json(list(service.methods)),
                    file_descriptor_set=file_descriptor_set,
                    openapi=openapi,
                    description=description,
                    savings_citizen_minutes=savings.citizen_minutes,
                    savings_paper_forms=savings.paper_forms,
                    savings_cost=savings.cost,
                    created_at_us=_us(now),
                ),
                f"service {service_id}",
            )
            await self._audit(
                conn,
                at=now,
                actor=actor,
                action="service.add",
                object_id=str(service_id),
                before=None,
                after=service.to_json(),
            )
        return service

    async def get_service(self, service_id: ServiceId) -> Service:
        async with self._read() as conn:
            row = await self._one(
                conn, select(t.services).where(t.services.c.service_id == str(service_id))
            )
        if row is None:
            raise NotFoundError(f"service {service_id} is not registered")
        return _service(row)

    async def list_services(
        self, *, member: MemberId | None = None, after: str = "", limit: int
    ) -> list[Service]:
        statement = select(t.services).where(t.services.c.service_id > after)
        if member is not None:
            statement = statement.where(t.services.c.member_id == str(member))
        statement = statement.order_by(t.services.c.service_id).limit(limit)
        async with self._read() as conn:
            return [_service(r) for r in await conn.execute(statement)]

    # -- contracts -------------------------------------------------------------------------

    async def request_contract(
        self,
        *,
        consumer: SubsystemId,
        service: ServiceId,
        methods: Sequence[str],
        purpose: str,
        legal_basis: str,
        valid_from: datetime,
        valid_until: datetime | None,
        actor: str,
        rate_limit_per_minute: int = 0,
    ) -> Contract:
        """Record a consumer's request to call ``service``; the contract starts ``requested``.
        ``rate_limit_per_minute`` (0: none) is the most calls per minute asked for.

        Raises NotFoundError for an unknown consumer or service, InvalidRequestError for methods
        the service does not offer, an empty validity window or a rate limit out of bounds.
        """
        now = self._clock()
        if valid_until is not None and valid_until <= valid_from:
            raise InvalidRequestError("valid_until must be later than valid_from")
        _check_rate_limit(rate_limit_per_minute)
        contract = Contract(
            id=str(uuid.uuid4()),
            consumer=consumer,
            service=service,
            methods=tuple(sorted(set(methods))),
            purpose=purpose,
            legal_basis=legal_basis,
            valid_from=valid_from,
            valid_until=valid_until,
            state=ContractState.REQUESTED,
            requested_by=actor,
            requested_at=now,
            rate_limit_per_minute=rate_limit_per_minute,
        )
        async with self._write() as conn:
            await self._require_subsystem(conn, consumer)
            row = await self._one(
                conn,
                select(t.services.c.methods_json).where(t.services.c.service_id == str(service)),
            )
            if row is None:
                raise NotFoundError(f"service {service} is not registered")
            offered = set(json.loads(row.methods_json))
            unknown = sorted(set(contract.methods) - offered)
            if unknown:
                raise InvalidRequestError(
                    f"service {service} has no method(s) {', '.join(unknown)}"
                )
            await conn.execute(
                insert(t.contracts).values(
                    contract_id=contract.id,
                    consumer_id=str(consumer),
                    consumer_member_id=str(consumer.member),
                    service_id=str(service),
                    provider_member_id=str(service.member),
                    methods_json=_json(list(contract.methods)),
                    purpose=purpose,
                    legal_basis=legal_basis,
                    valid_from_us=_us(valid_from),
                    valid_until_us=None if valid_until is None else _us(valid_until),
                    state=str(ContractState.REQUESTED),
                    requested_by=actor,
                    requested_at_us=_us(now),
                    rate_limit_per_minute=rate_limit_per_minute,
                )
            )
            await self._audit(
                conn,
                at=now,
                actor=actor,
                action="contract.request",
                object_id=contract.id,
                before=None,
                after=contract.to_json(),
            )
        return contract

    async def get_contract(self, contract_id: str) -> Contract:
        async with self._read() as conn:
            row = await self._one(
                conn, select(t.contracts).where(t.contracts.c.contract_id == contract_id)
            )
        if row is None:
            raise NotFoundError(f"contract {contract_id} does not exist")
        return _contract(row)

    async def _step(
        self,
        contract_id: str,
        *,
        actor: str,
        action: str,
        allowed_from: tuple[ContractState, ...],
        to: ContractState,
        by_column: str,
        at_column: str,
        expected: Contract | None,
        changes: dict[str, Any] | None = None,
    ) -> Contract:
        now = self._clock()
        async with self._write() as conn:
            row = await self._one(
                conn, select(t.contracts).where(t.contracts.c.contract_id == contract_id)
            )
            if row is None:
                raise NotFoundError(f"contract {contract_id} does not exist")
            before = _contract(row)
            if expected is not None and before.state is not expected.state:
                raise InvalidRequestError(
                    f"contract {contract_id} changed meanwhile (now {before.state}); retry"
                )
            if before.state not in allowed_from:
                verb = action.rsplit(".", maxsplit=1)[-1]
                raise InvalidRequestError(
                    f"contract {contract_id} is {before.state}; cannot {verb} it"
                )
            result = await conn.execute(
                update(t.contracts)
                .where(
                    and_(
                        t.contracts.c.contract_id == contract_id,
                        t.contracts.c.state == str(before.state),
                    )
                )
                .values(
                    {"state": str(to), by_column: actor, at_column: _us(now), **(changes or {})}
                )
            )
            if result.rowcount != 1:
                raise InvalidRequestError(f"contract {contract_id} changed meanwhile; retry")
            after_row = await self._one(
                conn, select(t.contracts).where(t.contracts.c.contract_id == contract_id)
            )
            if after_row is None:
                raise StoreError(f"contract {contract_id} vanished meanwhile; retry")
            after = _contract(after_row)
            await self._audit(
                conn,
                at=now,
                actor=actor,
                action=action,
                object_id=contract_id,
                before=before.to_json(),
                after=after.to_json(),
            )
        return after

    async def approve_contract(
        self,
        contract_id: str,
        *,
        actor: str,
        expected: Contract | None = None,
        rate_limit_per_minute: int | None = None,
    ) -> Contract:
        """Provider's approval: ``requested`` -> ``approved``.

        ``expected`` (as read by the caller for its permission check) guards against the state
        changing between that check and this step. ``rate_limit_per_minute`` (None: keep the
        requested one; 0: none) is the limit the provider grants.
        """
        changes: dict[str, Any] = {}
        if rate_limit_per_minute is not None:
            _check_rate_limit(rate_limit_per_minute)
            changes["rate_limit_per_minute"] = rate_limit_per_minute
        return await self._step(
            contract_id,
            actor=actor,
            action="contract.approve",
            allowed_from=(ContractState.REQUESTED,),
            to=ContractState.APPROVED,
            by_column="approved_by",
            at_column="approved_at_us",
            expected=expected,
            changes=changes,
        )

    async def activate_contract(
        self, contract_id: str, *, actor: str, expected: Contract | None = None
    ) -> Contract:
        """Registry's activation: ``approved`` -> ``active`` (in force within its validity)."""
        return await self._step(
            contract_id,
            actor=actor,
            action="contract.activate",
            allowed_from=(ContractState.APPROVED,),
            to=ContractState.ACTIVE,
            by_column="activated_by",
            at_column="activated_at_us",
            expected=expected,
        )

    async def revoke_contract(
        self, contract_id: str, *, actor: str, expected: Contract | None = None
    ) -> Contract:
        """Revoke a contract in any state but ``revoked``."""
        return await self._step(
            contract_id,
            actor=actor,
            action="contract.revoke",
            allowed_from=(ContractState.REQUESTED, ContractState.APPROVED, ContractState.ACTIVE),
            to=ContractState.REVOKED,
            by_column="revoked_by",
            at_column="revoked_at_us",
            expected=expected,
        )

    async def list_contracts(
        self,
        *,
        member: MemberId | None = None,
        state: ContractState | None = None,
        after: str = "",
        limit: int,
    ) -> list[Contract]:
        """Contracts ordered by id; ``member`` keeps those where it is consumer or provider."""
        statement = select(t.contracts).where(t.contracts.c.contract_id > after)
        if member is not None:
            statement = statement.where(
                or_(
                    t.contracts.c.consumer_member_id == str(member),
                    t.contracts.c.provider_member_id == str(member),
                )
            )
        if state is not None:
            statement = statement.where(t.contracts.c.state == str(state))
        statement = statement.order_by(t.contracts.c.contract_id).limit(limit)
        async with self._read() as conn:
            return [_contract(r) for r in await conn.execute(statement)]

    # -- administrators and the audit trail ------------------------------------------------

    async def add_administrator(self, administrator: Administrator, *, actor: str) -> None:
        """Record an administrator's certificate (issued by the CA) and all its roles."""
        async with self._write() as conn:
            await self._insert(
                conn,
                insert(t.administrators).values(
                    cert_sha256=administrator.cert_sha256,
                    name=administrator.name,
                    roles=json.dumps(list(administrator.roles)),
                    created_at_us=_us(administrator.created_at),
                ),
                f"administrator certificate {administrator.cert_sha256[:16]}",
            )
            await self._audit(
                conn,
                at=administrator.created_at,
                actor=actor,
                action="administrator.add",
                object_id=administrator.name,
                before=None,
                after=administrator.to_json(),
            )

    async def administrator(self, cert_sha256: str) -> Administrator | None:
        """The administrator recorded for a certificate fingerprint, or None."""
        async with self._read() as conn:
            row = await self._one(
                conn,
                select(t.administrators).where(t.administrators.c.cert_sha256 == cert_sha256),
            )
        return None if row is None else _administrator(row)

    async def list_administrators(self, *, after: str = "", limit: int) -> list[Administrator]:
        statement = (
            select(t.administrators)
            .where(t.administrators.c.cert_sha256 > after)
            .order_by(t.administrators.c.cert_sha256)
            .limit(limit)
        )
        async with self._read() as conn:
            return [_administrator(r) for r in await conn.execute(statement)]

    async def record(
        self,
        *,
        actor: str,
        action: str,
        object_id: str,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Append an audit entry for a change made outside the store (e.g. a certificate the CA
        issued), so the trail covers it too."""
        async with self._write() as conn:
            await self._audit(
                conn,
                at=self._clock(),
                actor=actor,
                action=action,
                object_id=object_id,
                before=before,
                after=after,
            )

    async def list_audit(self, *, after_seq: int = 0, limit: int) -> list[AuditEntry]:
        """Audit entries in commit order, starting after ``after_seq``."""
        statement = (
            select(t.audit_trail)
            .where(t.audit_trail.c.seq > after_seq)
            .order_by(t.audit_trail.c.seq)
            .limit(limit)
        )
        async with self._read() as conn:
            return [_audit(r) for r in await conn.execute(statement)]

    async def change_seq(self) -> int:
        """Sequence number of the newest audit entry (0 for an empty store)."""
        async with self._read() as conn:
            return await self._change_seq(conn)

    async def _change_seq(self, conn: AsyncConnection) -> int:
        value = (await conn.execute(select(func.max(t.audit_trail.c.seq)))).scalar()
        return int(value or 0)

    # -- configuration generation ----------------------------------------------------------

    async def snapshot(self) -> RegistrySnapshot:
        """Everything the global configuration is built from, consistent as of one change.

        Reads until no change lands while reading (every change bumps the audit sequence in its
        own transaction); raises StoreError if changes keep landing.
        """
        for _ in range(_SNAPSHOT_ATTEMPTS):
            ids = _Ids()
            async with self._read() as conn:
                if conn.dialect.name == "postgresql":
                    # One MVCC snapshot for every table: the re-check below then always agrees.
                    await conn.execution_options(isolation_level="REPEATABLE READ")
                seq = await self._change_seq(conn)
                members = tuple(
                    _member(r)
                    for r in await conn.execute(select(t.members).order_by(t.members.c.member_id))
                )
                subsystems = tuple(
                    _subsystem(r, ids)
                    for r in await conn.execute(
                        select(t.subsystems).order_by(t.subsystems.c.subsystem_id)
                    )
                )
                servers = tuple(
                    _server(r)
                    for r in await conn.execute(select(t.servers).order_by(t.servers.c.server_id))
                )
                services = tuple(
                    _service(r, ids)
                    for r in await conn.execute(
                        select(t.services).order_by(t.services.c.service_id)
                    )
                )
                contracts = tuple(
                    _contract(r, ids)
                    for r in await conn.execute(
                        select(t.contracts)
                        .where(t.contracts.c.state == str(ContractState.ACTIVE))
                        .order_by(t.contracts.c.contract_id)
                    )
                )
                if await self._change_seq(conn) == seq:
                    return RegistrySnapshot(
                        change_seq=seq,
                        members=members,
                        subsystems=subsystems,
                        servers=servers,
                        services=services,
                        contracts=contracts,
                    )
        raise StoreError("the registry kept changing while its configuration was read; retry")

    async def latest_configuration(self) -> PublishedConfiguration | None:
        """The newest published configuration, or None before the first one."""
        async with self._read() as conn:
            row = await self._one(
                conn,
                select(t.published_configurations)
                .order_by(t.published_configurations.c.serial.desc())
                .limit(1),
            )
        if row is None:
            return None
        return PublishedConfiguration(
            serial=int(row.serial),
            change_seq=int(row.change_seq),
            generated_at=_dt(row.generated_at_us),
            expires_at=_dt(row.expires_at_us),
            document=bytes(row.document),
        )

    async def save_configuration(self, published: PublishedConfiguration, *, keep: int) -> bool:
        """Store a newly signed configuration; False when another node already took its serial
        (the caller then serves :meth:`latest_configuration`). Keeps the newest ``keep``."""
        try:
            async with self._write() as conn:
                await conn.execute(
                    insert(t.published_configurations).values(
                        serial=published.serial,
                        change_seq=published.change_seq,
                        generated_at_us=_us(published.generated_at),
                        expires_at_us=_us(published.expires_at),
                        document=published.document,
                    )
                )
                await conn.execute(
                    t.published_configurations.delete().where(
                        t.published_configurations.c.serial <= published.serial - keep
                    )
                )
        except AlreadyExistsError:
            return False
        return True

    # -- transactions ----------------------------------------------------------------------

    def _read(self) -> _Read:
        return _Read(self._engine)


class _Write:
    """``async with``: one write transaction; database failures become StoreError, integrity
    conflicts AlreadyExistsError; the transaction rolls back on any error."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> AsyncConnection:
        try:
            self._conn = await self._engine.connect()
            await self._conn.begin()
        except (OSError, DBAPIError) as exc:
            if self._conn is not None:
                await self._conn.close()
            raise StoreError(
                f"the registry database is unavailable ({type(exc).__name__})"
            ) from None
        return self._conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        conn = self._conn
        if conn is None:  # __aenter__ failed: nothing to finish
            return
        try:
            if exc_type is None:
                await conn.commit()
            else:
                await conn.rollback()
        except IntegrityError:
            raise AlreadyExistsError("the object is already registered") from None
        except (OSError, DBAPIError) as error:
            raise StoreError(f"the registry database failed ({type(error).__name__})") from None
        finally:
            await conn.close()
        if isinstance(exc, IntegrityError):
            raise AlreadyExistsError("the object is already registered") from None
        if isinstance(exc, (OSError, DBAPIError)):
            raise StoreError(f"the registry database failed ({type(exc).__name__})") from None


class _Read:
    """``async with``: one read-only connection; database failures become StoreError."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> AsyncConnection:
        try:
            self._conn = await self._engine.connect()
        except (OSError, DBAPIError) as exc:
            raise StoreError(
                f"the registry database is unavailable ({type(exc).__name__})"
            ) from None
        return self._conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        conn = self._conn
        if conn is None:  # __aenter__ failed: nothing to finish
            return
        try:
            await conn.rollback()
        finally:
            await conn.close()
        if isinstance(exc, (OSError, DBAPIError)):
            raise StoreError(f"the registry database failed ({type(exc).__name__})") from None
