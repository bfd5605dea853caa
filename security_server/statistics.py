"""Open-data counts of one security server (docs/adr/0028-open-data.md): how many once-only
exchanges it answered as provider, per service, method and UTC month.

An exchange is counted where it was answered, so it is counted once across the instance: a
response this server signed and sent (``direction`` sent, ``kind`` response) whose signed header
says status OK. The count reads the log's metadata columns and each response's signed header
(for its status) and nothing else: never clients, subjects, user ids or bodies.

This is a read of the message log's tables outside :mod:`security_server.log`'s query API
(which pages through records one by one); it reads only the columns the log documents and
only rows below the log's committed size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.months import Month, MonthError
from ruta.v1 import log_pb2, transport_pb2
from security_server.log import Direction, LogReader, RecordKind
from security_server.log.model import from_micros, to_micros
from security_server.log.schema import log_heads, log_leaves
from security_server.log.store import first_seq_logged_at_or_after

__all__ = [
    "MAX_COUNT_ROWS",
    "MAX_MONTHS",
    "MonthlyCount",
    "MonthlyCounts",
    "count_answered",
    "months_between",
]

#: Most months one request spans (three years of monthly figures).
MAX_MONTHS: Final = 36
#: Most (month, service, method) rows one answer carries; more are left out and flagged.
MAX_COUNT_ROWS: Final = 10_000
#: Rows fetched from the database per round trip while counting.
_FETCH_ROWS: Final = 5_000
_OK: Final = grpc.StatusCode.OK.value[0]


@dataclass(frozen=True, slots=True)
class MonthlyCount:
    month: Month
    service: str
    method: str
    answered: int


@dataclass(frozen=True, slots=True)
class MonthlyCounts:
    """The counts in (month, service, method) order; ``truncated`` when rows were left out."""

    counts: tuple[MonthlyCount, ...]
    truncated: bool


def months_between(first: str, last: str) -> tuple[Month, Month]:
    """The span ``first``..``last`` (``YYYY-MM``, inclusive). Raises :class:`MonthError` for a
    malformed month, a span that runs backwards or one longer than :data:`MAX_MONTHS`."""
    start, end = Month.parse(first), Month.parse(last)
    if end < start:
        raise MonthError("the last month must not be before the first")
    if end.index - start.index + 1 > MAX_MONTHS:
        raise MonthError(f"at most {MAX_MONTHS} months are counted at once")
    return start, end


def _answered(record: bytes) -> bool:
    """Whether the logged response ``record`` carries status OK in its signed header."""
    leaf = log_pb2.LogRecord()
    leaf.ParseFromString(record)
    header = transport_pb2.MessageHeader()
    header.ParseFromString(leaf.header)
    return header.status_code == _OK


async def count_answered(
    engine: AsyncEngine,
    log: LogReader,
    first: Month,
    last: Month,
    *,
    server: str | None = None,
) -> MonthlyCounts:
    """The responses ``log``'s server answered with status OK in months ``first``..``last``
    (give a span checked by :func:`months_between`), per month, service and method, at the
    log's committed head. With ``server``, every tree of that server in the database counts
    (its own and its nodes' and workers', docs/operator/clusters.md), so a node run as workers
    answers for all of them. Reads only; leaves nothing behind."""
    # Each tree counted and the size it is read to: this log's at its head, another's (a node
    # or worker of the same server) at its stored head, written with its rows.
    trees = {log.origin: log.head().size}
    tally: dict[tuple[Month, str, str], int] = {}
    async with engine.connect() as conn:
        if server:
            stored = await conn.execute(
                sa.select(log_heads.c.origin, log_heads.c.size).where(
                    sa.or_(
                        log_heads.c.origin == server,
                        log_heads.c.origin.startswith(server + "/", autoescape=True),
                    )
                )
            )
            trees = {str(o): trees.get(str(o), int(size)) for o, size in stored}
        for origin, size in sorted(trees.items()):
            # The months are a range of sequence numbers (logged_at never decreases along a
            # tree), read on the primary key.
            begin = await first_seq_logged_at_or_after(conn, origin, size, to_micros(first.start))
            end = await first_seq_logged_at_or_after(conn, origin, size, to_micros(last.end))
            if begin >= end:
                continue
            stmt = (
                sa.select(
                    log_leaves.c.logged_at,
                    log_leaves.c.service,
                    log_leaves.c.method,
                    log_leaves.c.record,
                )
                .where(
                    log_leaves.c.origin == origin,
                    log_leaves.c.seq >= begin,
                    log_leaves.c.seq < end,
                    log_leaves.c.direction == int(Direction.SENT),
                    log_leaves.c.kind == str(RecordKind.RESPONSE),
                )
                .execution_options(yield_per=_FETCH_ROWS)
            )
            result = await conn.stream(stmt)
            async for row in result:
                if not _answered(bytes(row.record)):
                    continue
                month = Month.of(from_micros(int(row.logged_at)))
                key = (month, str(row.service), str(row.method))
                tally[key] = tally.get(key, 0) + 1
    keys = sorted(tally)
    return MonthlyCounts(
        counts=tuple(
            MonthlyCount(month=m, service=s, method=f, answered=tally[(m, s, f)])
            for m, s, f in keys[:MAX_COUNT_ROWS]
        ),
        truncated=len(keys) > MAX_COUNT_ROWS,
    )
