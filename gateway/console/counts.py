"""Gathering the open-data counts (docs/adr/0028-open-data.md): every security server of the
configuration in force that lists an audit address is asked, concurrently and under a deadline,
for its monthly counts of exchanges answered, with the gateway's ``statistics`` role
certificate over mutual TLS. The gathered report is served until the refresh interval has
passed; a server not reached is named on the page, and its counts are missing, not guessed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Final, Protocol

import grpc
import grpc.aio

from gateway.console.opendata import Report, build_report
from gateway.settings import OpenDataSettings
from ruta.globalconf import GlobalConf, SecurityServer
from ruta.months import Month, MonthError
from ruta.pki.tls import channel_credentials
from ruta.v1 import audit_pb2, audit_pb2_grpc

__all__ = ["MAX_COUNT_ROWS_READ", "CountSource", "GrpcCounts", "OpenData"]

_log = logging.getLogger(__name__)

#: Most rows read from one server's answer (a server's own bound is 10 000).
MAX_COUNT_ROWS_READ: Final = 10_000
#: Largest count believed from one row (a server answering more is misbehaving).
_MAX_COUNT: Final = 2**53
#: Largest answer read from one server.
_MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024

ServerCounts = dict[tuple[Month, str], int]


class CountSource(Protocol):
    """Where one server's counts come from (gRPC to its audit port; a twin in unit tests)."""

    async def counts(self, server: SecurityServer, first: Month, last: Month) -> ServerCounts:
        """Answered exchanges by (month, service text); raises on any failure."""
        ...


class GrpcCounts:
    """A server's ``MonthlyCounts`` over mutual TLS with the statistics certificate."""

    def __init__(
        self, settings: OpenDataSettings, *, trust: Callable[[], grpc.ChannelCredentials]
    ) -> None:
        self._settings = settings
        self._credentials = trust

    @classmethod
    def from_settings(
        cls, settings: OpenDataSettings, conf: Callable[[], GlobalConf]
    ) -> GrpcCounts:
        """Credentials from the settings' files; the servers' CA is the settings' ``ca`` or
        else the trust anchors of the configuration in force."""

        def credentials() -> grpc.ChannelCredentials:
            ca = settings.ca if settings.ca is not None else conf().trust_anchors
            return channel_credentials(settings.key, settings.cert, ca)

        return cls(settings, trust=credentials)

    async def counts(self, server: SecurityServer, first: Month, last: Month) -> ServerCounts:
        options = [("grpc.max_receive_message_length", _MAX_ANSWER_BYTES)]
        async with grpc.aio.secure_channel(
            server.audit_address, self._credentials(), options=options
        ) as channel:
            answer = await audit_pb2_grpc.AuditStub(channel).MonthlyCounts(
                audit_pb2.MonthlyCountsRequest(first_month=str(first), last_month=str(last)),
                timeout=self._settings.deadline_seconds,
            )
        counted: ServerCounts = {}
        for row in answer.counts[:MAX_COUNT_ROWS_READ]:
            try:
                month = Month.parse(row.month)
            except MonthError:
                continue
            if not first <= month <= last:
                continue
            key = (month, row.service)
            counted[key] = counted.get(key, 0) + min(row.answered, _MAX_COUNT)
        return counted


def _now() -> datetime:
    return datetime.now(UTC)


class OpenData:
    """The report of the last :attr:`OpenDataSettings.months` months, gathered at most once per
    refresh interval (concurrent requests share one gathering)."""

    def __init__(
        self,
        settings: OpenDataSettings,
        *,
        conf: Callable[[], GlobalConf],
        source: CountSource,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.settings = settings
        self._conf = conf
        self._source = source
        self._clock = clock
        self._report: Report | None = None
        self._lock = asyncio.Lock()

    async def report(self) -> Report:
        """The current report; gathers anew when the held one is older than the refresh
        interval. Raises :class:`~ruta.globalconf.errors.GlobalConfError` while no
        configuration is held."""
        async with self._lock:
            held = self._report
            now = self._clock()
            if held is None or (now - held.gathered_at).total_seconds() >= (
                self.settings.refresh_seconds
            ):
                held = await self._gather(self._conf(), now)
                self._report = held
            return held

    async def _gather(self, conf: GlobalConf, now: datetime) -> Report:
        last = Month.of(now) if self.settings.current_month else Month.of(now).plus(-1)
        first = last.plus(1 - self.settings.months)
        servers = [s for s in conf.servers if s.audit_address]
        asked: list[Awaitable[ServerCounts]] = [
            asyncio.wait_for(
                self._source.counts(s, first, last), timeout=self.settings.deadline_seconds
            )
            for s in servers
        ]
        answers = await asyncio.gather(*asked, return_exceptions=True)
        total: dict[tuple[Month, str], int] = {}
        unreached = []
        for server, answer in zip(servers, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                _log.warning("open data: no counts from %s: %s", server.id, _reason(answer))
                unreached.append(str(server.id))
                continue
            _add(total, answer)
        return build_report(
            conf,
            total,
            months=first.through(last),
            gathered_at=now,
            unreached=unreached,
            currency=self.settings.currency,
        )


def _add(total: dict[tuple[Month, str], int], counts: Mapping[tuple[Month, str], int]) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value


def _reason(error: Exception) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    if isinstance(error, TimeoutError):
        return "no answer before the deadline"
    return type(error).__name__
