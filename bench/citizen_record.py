"""The citizen's record of access across four security servers: how long the gateway takes to
read one citizen's records from every server's audit API and merge them.

    python -m bench.citizen_record [--leaves 100000] [--citizens 20000] [--reads 200] [--no-record]

Four message logs (SQLite files, one per server), each of ``--leaves`` records built by bulk
insert as bench/log_proofs.py does (leaf rows with real signed-header bytes, and the tree's
nodes, then :meth:`MessageLog.open` restores and checks each tree): request/response pairs of
exchanges about ``--citizens`` people, spread over the four servers; one more person has many
exchanges (a heavy record). Each log is served by its own ``AuditServicer`` on a real gRPC port
with mutual TLS, in this process (so the servers and the reader share one event loop and the two
cores: a pessimistic set-up). Measured: :meth:`AccessRecordReader.read` (every server asked
concurrently, pages read, records merged into one line per exchange) for random citizens, the
first call (TLS handshakes) apart. Prints, appends to ``bench/results/citizen_record.txt``;
asserts nothing (the target, < 300 ms, is recorded in bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc.aio

from gateway.console.access_record import AccessRecordReader
from ruta.globalconf import GlobalConf
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.merkle import CompactRange, leaf_hash
from ruta.pki.keys import generate_ed25519_key
from ruta.pki.testing import TestPki
from ruta.v1 import globalconf_pb2, log_pb2, transport_pb2
from security_server.audit import AuditServicer, add_audit_service, audit_server_credentials
from security_server.database import open_database
from security_server.log import BodyKey, MessageLog
from tests.unit.security_server.twin import caller_status

RESULTS = Path(__file__).parent / "results" / "citizen_record.txt"
_MEMBERS = ("POP", "TAX", "SOC", "REG")
_CLIENT = SubsystemId.parse("DEV/GOV/SOC/benefits")
_SERVICE = ServiceId.parse("DEV/GOV/POP/registry/population.v1.PopulationRegister")
_BATCH = 20_000
HEAVY = "4419999999"


def _citizen(n: int) -> str:
    return f"44{n:08d}"


def _build(db: Path, origin: str, leaves: int, citizens: int, heavy_every: int, seed: int) -> None:
    """Bulk-insert ``leaves`` records (request/response pairs) of ``origin``, their nodes, head."""
    rng = random.Random(seed)
    frontier = CompactRange()
    t0_us = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1_000_000)
    signature = transport_pb2.Signature(value=b"\x30" * 72).SerializeToString()
    header = transport_pb2.MessageHeader(
        client=_CLIENT.to_proto(),
        service=_SERVICE.to_proto(),
        method="GetPerson",
        purpose="benefit-eligibility",
        sender=ServerId.parse("DEV/GOV/SOC/ss1").to_proto(),
        receiver=ServerId.parse("DEV/GOV/POP/ss1").to_proto(),
    )
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        subject = ""
        for start in range(0, leaves, _BATCH):
            leaf_rows: list[tuple[object, ...]] = []
            node_rows: list[tuple[str, int, int, bytes]] = []
            for seq in range(start, min(start + _BATCH, leaves)):
                request = seq % 2 == 0
                if request:
                    exchange = seq // 2
                    subject = (
                        HEAVY if exchange % heavy_every == 0 else _citizen(rng.randrange(citizens))
                    )
                header.message_id = f"{seed:08d}-0000-4000-8000-{seq // 2:012d}"
                header.kind = (
                    transport_pb2.MESSAGE_KIND_REQUEST
                    if request
                    else transport_pb2.MESSAGE_KIND_RESPONSE
                )
                header.subject = subject
                header.created_at.FromMicroseconds(t0_us + seq * 1000)
                record = log_pb2.LogRecord(
                    sequence=seq,
                    direction=log_pb2.LOG_DIRECTION_RECEIVED,
                    header=header.SerializeToString(),
                    signature=signature,
                    certificate_fingerprint="ab" * 32,
                )
                record.logged_at.FromMicroseconds(t0_us + seq * 1000)
                data = record.SerializeToString()
                digest = leaf_hash(data)
                leaf_rows.append(
                    (
                        origin,
                        seq,
                        log_pb2.LOG_DIRECTION_RECEIVED,
                        t0_us + seq * 1000,
                        header.message_id,
                        "request" if request else "response",
                        str(_CLIENT),
                        str(_SERVICE),
                        "GetPerson",
                        subject,
                        t0_us + seq * 1000,
                        data,
                        digest,
                    )
                )
                node_rows.extend(
                    (origin, seq, lvl, h) for lvl, _, h in frontier.append(digest) if lvl
                )
            conn.executemany(
                "INSERT INTO log_leaves (origin, seq, direction, logged_at, message_id, kind, "
                "client, service, method, subject, created_at, record, leaf_hash) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                leaf_rows,
            )
            conn.executemany(
                "INSERT INTO log_nodes (origin, last_seq, level, hash) VALUES (?,?,?,?)", node_rows
            )
        conn.execute(
            "INSERT INTO log_heads (origin, size, root, updated_at) VALUES (?,?,?,?)",
            (origin, leaves, frontier.root(), t0_us + leaves * 1000),
        )


def _conf(audit: dict[str, str]) -> GlobalConf:
    conf = globalconf_pb2.GlobalConfiguration(instance="DEV", serial=1)
    conf.generated_at.FromDatetime(datetime(2026, 11, 1, tzinfo=UTC))
    conf.expires_at.FromDatetime(datetime(2036, 11, 1, tzinfo=UTC))
    for code in _MEMBERS:
        member = MemberId.parse(f"DEV/GOV/{code}")
        conf.members.add(id=member.to_proto(), name=f"Agency {code}")
        server = member.server("ss1")
        conf.servers.add(
            id=server.to_proto(),
            address="127.0.0.1:1",
            auth_cert_sha256=f"{len(conf.servers):064x}",
            audit_address=audit[code],
        )
    return GlobalConf.from_proto(conf)


async def _main(args: argparse.Namespace) -> list[str]:
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory(prefix="ruta-bench-citizen-") as tmp:
        pki = TestPki(Path(tmp) / "pki")
        servers: list[grpc.aio.Server] = []
        logs: list[MessageLog] = []
        audit: dict[str, str] = {}
        start = time.perf_counter()
        for n, code in enumerate(_MEMBERS):
            server_id = MemberId.parse(f"DEV/GOV/{code}").server("ss1")
            db = Path(tmp) / f"{code}.db"
            engine = await open_database(f"sqlite+aiosqlite:///{db}")
            await asyncio.to_thread(
                _build, db, str(server_id), args.leaves, args.citizens, args.heavy_every, n
            )
            log = await MessageLog.open(engine, origin=str(server_id), body_key=BodyKey.generate())
            logs.append(log)
            tls = pki.auth(server_id)
            grpc_server = grpc.aio.server()
            add_audit_service(
                grpc_server,
                AuditServicer(
                    log=log,
                    engine=engine,
                    server=str(server_id),
                    key=generate_ed25519_key(),
                    globalconf=lambda: b"",
                    callers=caller_status(pki),
                ),
            )
            port = grpc_server.add_secure_port(
                "127.0.0.1:0",
                audit_server_credentials(tls.key_path, tls.cert_path, pki.trust_path),
            )
            await grpc_server.start()
            servers.append(grpc_server)
            audit[code] = f"localhost:{port}"
        say(
            f"built    4 logs x {args.leaves} records ({args.citizens} citizens, one heavy "
            f"every {args.heavy_every} exchanges) in {time.perf_counter() - start:.1f} s"
        )
        conf = _conf(audit)
        citizen = pki.role("citizen-service")
        reader = AccessRecordReader(
            key=citizen.key_path, cert=citizen.cert_path, ca=pki.trust_path, deadline_seconds=10
        )
        try:
            rng = random.Random(2026)
            start = time.perf_counter()
            first = await reader.read(conf, _citizen(rng.randrange(args.citizens)))
            say(
                f"first    {1000 * (time.perf_counter() - start):7.1f} ms "
                f"(TLS handshakes with 4 servers; {len(first.exchanges)} exchanges)"
            )
            picks: tuple[tuple[str, Callable[[], str]], ...] = (
                ("typical", lambda: _citizen(rng.randrange(args.citizens))),
                ("heavy", lambda: HEAVY),
            )
            for name, pick in picks:
                times: list[float] = []
                sizes: list[int] = []
                for _ in range(args.reads if name == "typical" else max(10, args.reads // 10)):
                    start = time.perf_counter()
                    found = await reader.read(conf, pick())
                    times.append(1000 * (time.perf_counter() - start))
                    sizes.append(len(found.exchanges))
                    if found.unreachable:
                        raise SystemExit(f"unreachable: {found.unreachable}")
                times.sort()
                say(
                    f"{name:8} {len(times)} reads, {statistics.mean(sizes):.1f} exchanges each "
                    f"(4 servers): p50 {times[len(times) // 2]:.1f} ms, "
                    f"p95 {times[int(len(times) * 0.95) - 1]:.1f} ms, max {times[-1]:.1f} ms"
                )
        finally:
            await reader.close()
            for grpc_server in servers:
                await grpc_server.stop(None)
            for log in logs:
                await log.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leaves", type=int, default=100_000, help="records per server")
    parser.add_argument("--citizens", type=int, default=20_000)
    parser.add_argument("--heavy-every", type=int, default=500, help="exchanges per heavy one")
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--no-record", dest="record", action="store_false")
    args = parser.parse_args()
    lines = asyncio.run(_main(args))
    if args.record:
        with RESULTS.open("a", encoding="utf-8") as out:
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
            out.write(f"# {stamp}: {' '.join(f'--{k} {v}' for k, v in vars(args).items())}\n")
            out.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
