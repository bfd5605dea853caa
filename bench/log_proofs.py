"""Proof serving at one million leaves: a log built fast by bulk insert, then proofs per second.

    python bench/log_proofs.py [--leaves 1000000] [--seconds 3] [--readers 8] [--no-record]

The tree is not built through 1M exchanges (bench/log_append.py measures appends): leaf records
and every complete-subtree node are computed with :class:`ruta.merkle.CompactRange` and
bulk-inserted into a migrated SQLite file, exactly the rows the log's writer would have written,
then :meth:`MessageLog.open` restores and checks the tree as a restarting server does. Measured,
each for ``--seconds`` with ``--readers`` concurrent readers on one event loop:

- inclusion proofs (``MessageLog.inclusion_proof``, what the audit API serves per record);
- consistency proofs between random sizes (what the checkpointer sends the witness);
- records with proofs (``get_records`` + ``inclusion_proof``, the audit API's GetRecords);
- baseline in the same run: single-node primary-key reads of ``log_nodes`` (one indexed probe),
  so the ratio shows what an O(log n) proof costs over the cheapest possible read;
- offline verification (``verify_inclusion``) per second, what ``ruta audit verify`` pays.

Prints results, appends them to ``bench/results/log_proofs.txt``; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from ruta.ids import ServerId, ServiceId, SubsystemId
from ruta.merkle import CompactRange, leaf_hash, verify_consistency, verify_inclusion
from ruta.v1 import log_pb2, transport_pb2
from security_server.database import open_database
from security_server.log import BodyKey, MessageLog
from security_server.log.schema import log_nodes, node_last_seq

ORIGIN = "DEV/GOV/POP/ss1"
RESULTS = Path(__file__).parent / "results" / "log_proofs.txt"
_CLIENT = SubsystemId.parse("DEV/GOV/SOC/benefits")
_SERVICE = ServiceId.parse("DEV/GOV/POP/registry/population.v1.PopulationRegister")
_BATCH = 50_000


def _rows(
    start: int, stop: int, frontier: CompactRange, t0_us: int
) -> tuple[list[tuple[object, ...]], list[tuple[str, int, int, bytes]]]:
    header = transport_pb2.MessageHeader(
        kind=transport_pb2.MESSAGE_KIND_REQUEST,
        client=_CLIENT.to_proto(),
        service=_SERVICE.to_proto(),
        method="GetPerson",
        purpose="benefit-eligibility",
        sender=ServerId.parse("DEV/GOV/SOC/ss1").to_proto(),
        receiver=ServerId.parse("DEV/GOV/POP/ss1").to_proto(),
    )
    signature = transport_pb2.Signature(value=b"\x30" * 72).SerializeToString()
    leaves: list[tuple[object, ...]] = []
    nodes: list[tuple[str, int, int, bytes]] = []
    for seq in range(start, stop):
        header.message_id = f"00000000-0000-4000-8000-{seq:012d}"
        header.created_at.FromMicroseconds(t0_us + seq)
        record = log_pb2.LogRecord(
            sequence=seq,
            direction=log_pb2.LOG_DIRECTION_RECEIVED,
            header=header.SerializeToString(),
            signature=signature,
            certificate_fingerprint="ab" * 32,
        )
        record.logged_at.FromMicroseconds(t0_us + seq)
        data = record.SerializeToString()
        digest = leaf_hash(data)
        leaves.append(
            (
                ORIGIN,
                seq,
                log_pb2.LOG_DIRECTION_RECEIVED,
                t0_us + seq,
                header.message_id,
                "request",
                str(_CLIENT),
                str(_SERVICE),
                "GetPerson",
                None,
                t0_us + seq,
                data,
                digest,
            )
        )
        # Level 0 is the leaf's own leaf_hash (ADR 0033): log_nodes holds the levels above.
        nodes.extend((ORIGIN, seq, level, h) for level, _, h in frontier.append(digest) if level)
    return leaves, nodes


def _bulk_build(db: Path, leaves: int) -> bytes:
    """Insert ``leaves`` leaves, their nodes and the head; return the root."""
    frontier = CompactRange()
    t0_us = int(datetime(2026, 11, 26, tzinfo=UTC).timestamp() * 1_000_000)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        for start in range(0, leaves, _BATCH):
            leaf_rows, node_rows = _rows(start, min(start + _BATCH, leaves), frontier, t0_us)
            conn.executemany(
                "INSERT INTO log_leaves (origin, seq, direction, logged_at, message_id, kind, "
                "client, service, method, subject, created_at, record, leaf_hash) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                leaf_rows,
            )
            conn.executemany(
                "INSERT INTO log_nodes (origin, last_seq, level, hash) VALUES (?,?,?,?)", node_rows
            )
        root = frontier.root()
        conn.execute(
            "INSERT INTO log_heads (origin, size, root, updated_at) VALUES (?,?,?,?)",
            (ORIGIN, leaves, root, t0_us + leaves),
        )
    return root


async def _rate(
    seconds: float, readers: int, one: Callable[[random.Random], Awaitable[None]]
) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def reader(n: int) -> None:
        nonlocal done
        rng = random.Random(6962 + n)
        while time.perf_counter() < deadline:
            await one(rng)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(reader(n) for n in range(readers)))
    return done / (time.perf_counter() - start)


async def _main(args: argparse.Namespace) -> list[str]:
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory(prefix="ruta-bench-") as tmp:
        db = Path(tmp) / "proofs.db"
        engine = await open_database(f"sqlite+aiosqlite:///{db}")
        start = time.perf_counter()
        root = await asyncio.to_thread(_bulk_build, db, args.leaves)
        say(f"built    {args.leaves} leaves by bulk insert in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        log = await MessageLog.open(engine, origin=ORIGIN, body_key=BodyKey.generate())
        took = time.perf_counter() - start
        say(f"opened   the log (frontier restored and checked) in {took:.2f} s")
        head = log.head()
        if head.root != root or head.size != args.leaves:
            raise SystemExit("the restored tree is not the one built")
        size = head.size

        async def probe(rng: random.Random) -> None:
            async with engine.connect() as conn:
                await conn.execute(
                    sa.select(log_nodes.c.hash).where(
                        log_nodes.c.origin == ORIGIN,
                        log_nodes.c.last_seq == node_last_seq(1, rng.randrange(size // 2)),
                        log_nodes.c.level == 1,
                    )
                )

        async def inclusion(rng: random.Random) -> None:
            await log.inclusion_proof(rng.randrange(size), size)

        async def consistency(rng: random.Random) -> None:
            await log.consistency_proof(rng.randrange(1, size), size)

        async def records(rng: random.Random) -> None:
            seq = rng.randrange(size)
            await log.get_records([seq])
            await log.inclusion_proof(seq, size)

        base = await _rate(args.seconds, args.readers, probe)
        say(f"baseline {base:9.0f} single-node reads/s ({args.readers} readers)")
        for name, fn in (
            ("inclusion proofs", inclusion),
            ("consistency proofs", consistency),
            ("records with proofs", records),
        ):
            rate = await _rate(args.seconds, args.readers, fn)
            say(f"serving  {rate:9.0f} {name}/s at size {size} ({base / rate:.1f}x a single read)")

        seq = 123_457 % size
        [record] = await log.get_records([seq])
        proof = await log.inclusion_proof(seq, size)
        cproof = await log.consistency_proof(size // 3, size)
        old_root = await log.root(size // 3)
        count = 0
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            verify_inclusion(leaf_hash(record.record), seq, size, proof, root)
            verify_consistency(size // 3, size, cproof, old_root, root)
            count += 1
        say(
            f"verify   {count / (time.perf_counter() - start):9.0f} inclusion+consistency "
            f"verifications/s offline (proofs of {len(proof)} and {len(cproof)} hashes)"
        )
        await log.close()
        await engine.dispose()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--no-record", action="store_true", help="do not append to results/")
    args = parser.parse_args()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = asyncio.run(_main(args))
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write(f"# {stamp}, bench/log_proofs.py --leaves {args.leaves}\n")
            out.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
