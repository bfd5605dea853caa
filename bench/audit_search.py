"""Audit search at scale (issue 15): the auditor console's and the audit API's searches over a
message log of one million records, in server time. Prints results; asserts nothing.

    python -m bench --audit-search [--records 1000000] [--workdir DIR]

The log is filled through its own append API (``MessageLog.append``, many concurrent calls of
:data:`~security_server.log.MAX_APPEND_ENTRIES` entries, grouped by the log's writer into large
transactions): every record is a real leaf of the tree with its nodes, as an exchange leaves it,
with a real serialised header (metadata only: no body). Records spread over
:data:`CLIENTS` clients, :data:`SERVICES` services of :data:`METHODS` methods each, and one
subject per :data:`RECORDS_PER_SUBJECT` records. With ``--workdir`` the filled file is kept and
reused by the next run.

Each search is the service layer both the audit gRPC API and the console call
(``AuditServicer.query``), first page of :data:`~security_server.console.CONSOLE_PAGE_SIZE`
records, for :data:`SAMPLES` different values; "page" adds rendering the console's results
page. Times are the median and 95th percentile in milliseconds, on one reader.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import timestamp_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.ids import ServerId, ServiceId, SubsystemId
from ruta.pki.ocsp import OcspClient
from ruta.v1 import audit_pb2, transport_pb2
from security_server.audit import AuditGrant, AuditServicer
from security_server.callers import CallerStatus
from security_server.cluster import MemberLog
from security_server.console import CONSOLE_PAGE_SIZE
from security_server.console.pages import LOG_FIELD, PAGES, ChosenLog
from security_server.database import open_database, refresh_planner_statistics
from security_server.log import MAX_APPEND_ENTRIES, BodyKey, Direction, LogEntry, MessageLog
from security_server.transport import PeerStatus

__all__ = ["DEFAULT_RECORDS", "run_audit_search"]

DEFAULT_RECORDS: Final = 1_000_000
CLIENTS: Final = 20
SERVICES: Final = 10
METHODS: Final = 3
RECORDS_PER_SUBJECT: Final = 10
#: Searches timed per kind (each with another value).
SAMPLES: Final = 30
#: Append calls in flight while filling (each of MAX_APPEND_ENTRIES entries).
_FILL_CALLS: Final = 64
_ORIGIN: Final = "DEV/GOV/POP/ss1"
#: The console's log choice on a server with one log (no select shown).
_ONE_LOG: Final = ChosenLog(
    MemberLog(_ORIGIN, 0, exportable=True), (MemberLog(_ORIGIN, 0, exportable=True),)
)
_SERVER: Final = ServerId.parse(_ORIGIN)


def _client(i: int) -> SubsystemId:
    return SubsystemId.parse(f"DEV/GOV/C{i % CLIENTS:02d}/app")


def _service(i: int) -> ServiceId:
    return ServiceId.parse(f"DEV/GOV/POP/registry/svc{i % SERVICES}.v1.Register")


def _subject(i: int) -> str:
    return f"PNO{i // RECORDS_PER_SUBJECT:09d}"


def _entry(i: int, message_id: str, created: timestamp_pb2.Timestamp) -> LogEntry:
    header = transport_pb2.MessageHeader(
        message_id=message_id,
        kind=transport_pb2.MESSAGE_KIND_REQUEST,
        client=_client(i).to_proto(),
        service=_service(i // CLIENTS).to_proto(),
        method=f"Get{(i // (CLIENTS * SERVICES)) % METHODS}",
        purpose="benefit-eligibility",
        subject=_subject(i),
        created_at=created,
        sender=ServerId.parse("DEV/GOV/SOC/ss1").to_proto(),
        receiver=_SERVER.to_proto(),
        body_sha256=bytes(32),
    )
    signature = transport_pb2.Signature(
        algorithm=transport_pb2.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256, value=bytes(72)
    )
    return LogEntry.from_signed(
        direction=Direction.RECEIVED,
        header=header.SerializeToString(),
        signature=signature.SerializeToString(),
        certificate_fingerprint="0" * 64,
        body=None,
    )


async def _fill(log: MessageLog, records: int, message_ids: list[str]) -> float:
    """Append records until the log holds ``records``; returns the seconds it took."""
    start = time.perf_counter()
    created = timestamp_pb2.Timestamp()
    created.FromDatetime(datetime.now(UTC))
    chunk = _FILL_CALLS * MAX_APPEND_ENTRIES
    while (size := log.size()) < records:
        end = min(records, size + chunk)
        entries = [_entry(i, message_ids[i], created) for i in range(size, end)]
        await asyncio.gather(
            *(
                log.append(entries[j : j + MAX_APPEND_ENTRIES])
                for j in range(0, len(entries), MAX_APPEND_ENTRIES)
            )
        )
        if (end // chunk) % 40 == 0:
            print(f"  filled {end:,} of {records:,} records", flush=True)
    return time.perf_counter() - start


async def _timed(samples: list[Callable[[], Awaitable[Any]]]) -> dict[str, float]:
    times = []
    for run in samples:
        start = time.perf_counter()
        await run()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 2),
        "max_ms": round(times[-1], 2),
    }


async def run_audit_search(
    *, records: int = DEFAULT_RECORDS, workdir: Path | None = None, quick: bool = False
) -> dict[str, Any]:
    """Fill (or reuse) a log of ``records`` records and time each kind of search."""
    if quick:
        records = min(records, 20_000)
    with tempfile.TemporaryDirectory(prefix="ruta-audit-search-") as tmp:
        directory = workdir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        db = directory / f"audit-search-{records}.db"
        ids_file = directory / f"audit-search-{records}.ids"
        keep = db.exists() and ids_file.exists()
        if not keep:
            db.unlink(missing_ok=True)
        engine = await open_database(f"sqlite+aiosqlite:///{db}")
        # Records carry no body, so any body key reads the kept file.
        body_key = BodyKey.generate()
        log = await MessageLog.open(
            engine, origin=_ORIGIN, body_key=body_key, max_group_records=4096
        )
        try:
            if keep:
                message_ids = ids_file.read_text().split()
            else:
                message_ids = [str(uuid.uuid4()) for _ in range(records)]
            fill_seconds = await _fill(log, records, message_ids)
            if not keep:
                ids_file.write_text("\n".join(message_ids))
            # With no planner statistics (a server before its first refresh), then with the
            # statistics a running server keeps (refresh_planner_statistics, at start and
            # every PLANNER_STATISTICS_INTERVAL_SECONDS).
            await _drop_statistics(engine)
            result: dict[str, Any] = {
                "without_statistics": await _searches(log, engine, records, message_ids)
            }
            start = time.perf_counter()
            await refresh_planner_statistics(engine)
            result["refresh_statistics_ms"] = round((time.perf_counter() - start) * 1000, 1)
            result.update(await _searches(log, engine, records, message_ids))
            await _drop_statistics(engine)  # a kept file starts the next run as new
            result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            result["records"] = log.size()
            result["fill_seconds"] = round(fill_seconds, 1)
            result["database"] = "SQLite (WAL) file, one reader"
        finally:
            await log.close()
            await engine.dispose()
    for label, searches in (
        ("", result["searches"]),
        (" (no stats)", result["without_statistics"]["searches"]),
    ):
        for name, entry in searches.items():
            print(
                f"audit search by {name + label:34s} query median "
                f"{entry['query']['median_ms']:8.2f} ms  p95 {entry['query']['p95_ms']:8.2f} ms"
                f"  page median {entry['page']['median_ms']:8.2f} ms  ({entry['found']} found)"
            )
    return result


async def _drop_statistics(engine: AsyncEngine) -> None:
    """Forget SQLite's planner statistics; every pooled connection is closed so the next
    query plans without them."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql("DROP TABLE IF EXISTS sqlite_stat1")
    await engine.dispose()


async def _searches(
    log: MessageLog, engine: AsyncEngine, records: int, message_ids: list[str]
) -> dict[str, Any]:
    servicer = AuditServicer(
        log=log,
        engine=engine,
        server=_ORIGIN,
        key=Ed25519PrivateKey.generate(),
        globalconf=lambda: b"",
        # Searches are called here as the console calls them, past the caller check.
        callers=CallerStatus(PeerStatus(OcspClient()), lambda: ()),
    )
    grant = AuditGrant(bodies=False)
    rng = random.Random(15)
    first = (await log.get_records([0]))[0].logged_at
    last = (await log.get_records([records - 1]))[0].logged_at
    span = (last - first).total_seconds()

    def window() -> audit_pb2.AuditFilter:
        since = first + timedelta(seconds=rng.uniform(0, max(span - 1, 0)))
        filt = audit_pb2.AuditFilter()
        filt.since.FromDatetime(since)
        filt.until.FromDatetime(since + timedelta(seconds=1))
        return filt

    kinds: dict[str, Callable[[], audit_pb2.AuditFilter]] = {
        "subject": lambda: audit_pb2.AuditFilter(subject=_subject(rng.randrange(records))),
        "message id": lambda: audit_pb2.AuditFilter(message_id=message_ids[rng.randrange(records)]),
        "client": lambda: audit_pb2.AuditFilter(client=str(_client(rng.randrange(CLIENTS)))),
        "service": lambda: audit_pb2.AuditFilter(service=str(_service(rng.randrange(SERVICES)))),
        "service and method": lambda: audit_pb2.AuditFilter(
            service=str(_service(rng.randrange(SERVICES))), method=f"Get{rng.randrange(METHODS)}"
        ),
        "client and subject": lambda: audit_pb2.AuditFilter(
            client=str(_client(0)), subject=_subject(rng.randrange(records // CLIENTS) * CLIENTS)
        ),
        "time range (1 s)": window,
        # What matches nothing (or a rare value) costs what the plan reads to find that out.
        "subject, none": lambda: audit_pb2.AuditFilter(subject=f"NONE{rng.randrange(10**6)}"),
        "client, none": lambda: audit_pb2.AuditFilter(client=f"DEV/GOV/N{rng.randrange(99)}/app"),
        "service, none": lambda: audit_pb2.AuditFilter(
            service=f"DEV/GOV/POP/registry/none{rng.randrange(99)}.v1.Register"
        ),
    }
    found: list[int] = []

    def query(filt: audit_pb2.AuditFilter) -> Callable[[], Awaitable[Any]]:
        async def run() -> audit_pb2.QueryResponse:
            page = await servicer.query(grant, filt, page_size=CONSOLE_PAGE_SIZE, page_token="")
            found.append(len(page.records))
            return page

        return run

    def page(filt: audit_pb2.AuditFilter) -> Callable[[], Awaitable[Any]]:
        async def run() -> str:
            result = await servicer.query(grant, filt, page_size=CONSOLE_PAGE_SIZE, page_token="")
            return _render(result)

        return run

    searches: dict[str, Any] = {}
    for name, make in kinds.items():
        filters = [make() for _ in range(SAMPLES)]
        await query(filters[0])()  # warm the cache once
        found.clear()
        searches[name] = {
            "query": await _timed([query(f) for f in filters]),
            "page": await _timed([page(f) for f in filters]),
            "found": f"{min(found, default=0)}-{max(found, default=0)} per page",
        }
    return {"page_size": CONSOLE_PAGE_SIZE, "samples": SAMPLES, "searches": searches}


def _render(page: audit_pb2.QueryResponse) -> str:
    """The console's results page for ``page`` (what a browser gets, minus TLS)."""
    return PAGES.render(
        "search.html",
        "en",
        path="/",
        csrf_field="csrf_token",
        csrf_token="0" * 64,
        who="CN=bench",
        server=_ORIGIN,
        bodies=False,
        values=dict.fromkeys(("message_id", "client", "service", "method", "subject"), "")
        | {"since": "", "until": ""},
        searched=True,
        records=[(r, r.logged_at.ToDatetime(tzinfo=UTC)) for r in page.records],
        next_query={"search": "1", "after": page.next_page_token} if page.next_page_token else None,
        page_size=CONSOLE_PAGE_SIZE,
        log=_ONE_LOG,
        log_field=LOG_FIELD,
    )
