"""The citizen's record of access, gathered (docs/adr/0027): every security server the global
configuration lists with an audit address is asked, concurrently and under one deadline, for the
records whose subject is the citizen (``AccessRecords``, with the gateway's citizen-service
certificate over mutual TLS); the answers are merged into one line per exchange (the consumer's
and the provider's server log the same exchange, each its request and response), newest first.

A server that does not answer in time, or refuses, is named in :attr:`AccessRecord.unreachable`
(by its member's name) rather than failing the page. The subject is always the verified one the
caller passes in: nothing here reads it from a request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import grpc
import grpc.aio

from ruta.globalconf import GlobalConf
from ruta.ids import IdentifierError, MemberId, ServiceId, SubsystemId
from ruta.pki.tls import channel_credentials
from ruta.timestamps import from_timestamp
from ruta.v1 import audit_pb2, audit_pb2_grpc

__all__ = [
    "DEFAULT_DEADLINE_SECONDS",
    "MAX_RECORDS_PER_SERVER",
    "AccessRecord",
    "AccessRecordReader",
    "AuditTarget",
    "ExchangeLine",
    "audit_targets",
    "merge",
]

#: Default time the whole record (every server) gets.
DEFAULT_DEADLINE_SECONDS: Final = 5.0
#: Most records read from one server for one citizen (newest first; older ones are left out and
#: the page says so).
MAX_RECORDS_PER_SERVER: Final = 1000
#: Records asked for per call.
PAGE_SIZE: Final = 250
#: Most servers asked at once.
MAX_CONCURRENT_SERVERS: Final = 64

Outcome = Literal["answered", "refused", "unanswered"]


@dataclass(frozen=True, slots=True)
class AuditTarget:
    """One security server's audit API, and the member it belongs to."""

    server: str
    member: MemberId
    address: str


def audit_targets(conf: GlobalConf) -> tuple[AuditTarget, ...]:
    """Every server of ``conf`` that lists an audit address."""
    return tuple(
        AuditTarget(server=str(s.id), member=s.id.member, address=s.audit_address)
        for s in conf.servers
        if s.audit_address
    )


@dataclass(frozen=True, slots=True)
class ExchangeLine:
    """One exchange about the citizen as the page shows it."""

    when: datetime
    agency: str
    client: str
    provider: str
    service: str
    method: str
    purpose: str
    legal_basis: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """What the page shows: the exchanges, newest first, which agencies' servers could not be
    read, and whether older records were left out."""

    exchanges: tuple[ExchangeLine, ...]
    unreachable: tuple[str, ...]
    truncated: bool = False


@dataclass(slots=True)
class _Exchange:
    client: str
    service: str
    method: str
    purpose: str
    first_seen: datetime
    requested: datetime | None = None
    outcome: Outcome = "unanswered"
    kinds: set[str] = field(default_factory=set)


def _member_name(conf: GlobalConf, member: MemberId) -> str:
    found = conf.member(member)
    return found.name if found is not None and found.name else str(member)


def _contract_of(
    conf: GlobalConf, client: str, service: str, method: str, purpose: str
) -> tuple[str, str]:
    """The purpose and legal basis of the contract the signed purpose names (by purpose code
    or contract id), else the signed purpose itself and no legal basis."""
    try:
        client_id = SubsystemId.parse(client)
        service_id = ServiceId.parse(service)
    except IdentifierError:
        return purpose, ""
    for contract in conf.contracts_of(client_id):
        if (
            contract.service == service_id
            and purpose in (contract.purpose, contract.contract_id)
            and (not contract.methods or method in contract.methods)
        ):
            return contract.purpose, contract.legal_basis
    return purpose, ""


def merge(
    conf: GlobalConf, answers: Sequence[Sequence[audit_pb2.AccessRecord]]
) -> tuple[ExchangeLine, ...]:
    """One line per exchange (client and message id) from every server's records, newest
    first. An exchange is answered when a response with status 0 and no fault was logged,
    refused when a response says otherwise, unanswered when no response was logged anywhere."""
    exchanges: dict[tuple[str, str], _Exchange] = {}
    for records in answers:
        for record in records:
            key = (record.client, record.message_id)
            created = from_timestamp(record.created_at)
            found = exchanges.get(key)
            if found is None:
                found = exchanges[key] = _Exchange(
                    record.client, record.service, record.method, record.purpose, created
                )
            found.first_seen = min(found.first_seen, created)
            if record.kind == "request":
                found.requested = (
                    created if found.requested is None else min(found.requested, created)
                )
            elif record.kind == "response":
                ok = record.status_code == 0 and not record.fault
                if ok:
                    found.outcome = "answered"
                elif found.outcome != "answered":
                    found.outcome = "refused"
            found.kinds.add(record.kind)
    lines = []
    for exchange in exchanges.values():
        when = exchange.requested or exchange.first_seen
        try:
            client = SubsystemId.parse(exchange.client)
            service = ServiceId.parse(exchange.service)
            agency = _member_name(conf, client.member)
            provider = _member_name(conf, service.subsystem.member)
            service_name = service.service_name
        except IdentifierError:
            agency, provider, service_name = exchange.client, "", exchange.service
        purpose, legal_basis = _contract_of(
            conf, exchange.client, exchange.service, exchange.method, exchange.purpose
        )
        lines.append(
            ExchangeLine(
                when=when,
                agency=agency,
                client=exchange.client,
                provider=provider,
                service=service_name,
                method=exchange.method,
                purpose=purpose,
                legal_basis=legal_basis,
                outcome=exchange.outcome,
            )
        )
    lines.sort(key=lambda line: (line.when, line.client), reverse=True)
    return tuple(lines)


class AccessRecordReader:
    """Reads citizens' records of access from the servers ``targets`` lists, with the
    citizen-service certificate (``cert``/``key``, servers trusted through ``ca``). Channels are
    opened once per address and kept; close with :meth:`close`."""

    def __init__(
        self,
        *,
        key: Path,
        cert: Path,
        ca: Path,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        max_records_per_server: int = MAX_RECORDS_PER_SERVER,
    ) -> None:
        self._credentials = channel_credentials(key, cert, ca)
        self._deadline = deadline_seconds
        self._max_records = max_records_per_server
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_SERVERS)

    def _stub(self, address: str) -> Any:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.secure_channel(address, self._credentials)
        return audit_pb2_grpc.AuditStub(channel)

    async def _read_one(
        self, target: AuditTarget, subject: str, until: float
    ) -> tuple[list[audit_pb2.AccessRecord], bool]:
        """The server's records about ``subject`` (newest first) and whether more were left."""
        stub = self._stub(target.address)
        records: list[audit_pb2.AccessRecord] = []
        token = ""
        async with self._limit:
            while True:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                page = await stub.AccessRecords(
                    audit_pb2.AccessRecordsRequest(
                        subject=subject,
                        page_size=min(PAGE_SIZE, self._max_records - len(records)),
                        page_token=token,
                    ),
                    timeout=remaining,
                )
                records.extend(page.records)
                token = page.next_page_token
                if not token:
                    return records, False
                if len(records) >= self._max_records:
                    return records, True

    async def read(self, conf: GlobalConf, subject: str) -> AccessRecord:
        """The record of access of ``subject`` (a verified citizen id) across every server of
        ``conf`` with an audit address. Never raises for a server that fails: it is named in
        :attr:`AccessRecord.unreachable`."""
        targets = audit_targets(conf)
        await self._forget_channels_but({t.address for t in targets})
        until = time.monotonic() + self._deadline
        results = await asyncio.gather(
            *(self._read_one(t, subject, until) for t in targets), return_exceptions=True
        )
        answers: list[list[audit_pb2.AccessRecord]] = []
        unreachable: set[str] = set()
        truncated = False
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, grpc.aio.AioRpcError | TimeoutError | OSError):
                unreachable.add(_member_name(conf, target.member))
            elif isinstance(result, BaseException):
                raise result
            else:
                answers.append(result[0])
                truncated = truncated or result[1]
        return AccessRecord(
            exchanges=merge(conf, answers),
            unreachable=tuple(sorted(unreachable, key=str.casefold)),
            truncated=truncated,
        )

    async def _forget_channels_but(self, addresses: set[str]) -> None:
        """Close the channels to servers the configuration no longer lists."""
        for address in [a for a in self._channels if a not in addresses]:
            await self._channels.pop(address).close()

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()
