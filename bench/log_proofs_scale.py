"""Proof serving at ten million leaves: latency and rate from the log's real storage.

    python -m bench.log_proofs_scale [--leaves 10000000] [--seconds 5] [--readers 8] [--no-record]

The log is built once by ``bench/log_tree.py`` (synthetic leaves and every complete subtree
written directly, in large transactions; minutes, not the hours ten million appends take) and
kept in ``bench/data/`` (not committed), so reruns reuse it. It is then opened as a server opens
another node's log for audits (:meth:`security_server.log.LogReader.open`: frontier restored and
checked against the head) and served from its SQLite file through the log's own reading code
(aiosqlite engine from ``security_server.database.open_database``, proofs read in one query per
plan). Unless ``--no-warm``, every ``log_nodes`` page is read once first, as a server serving
proofs for a while holds them (the file, ~1.2 KB a leaf, need not fit in the page cache; the
leaves' pages stay as found). Before timing, a sample of served proofs is verified with
``ruta.merkle``'s verifiers against the root the builder computed; the run stops if one fails.

Timed, each for ``--seconds``, at random leaves of the whole tree: first one caller at a time
(the latency of one proof: p50 / p99), then ``--readers`` concurrent callers on one event loop
(the rate a server's loop sustains; p50 / p99 include waiting for the loop and the pool):

- inclusion proof of a random leaf at the head (``LogReader.inclusion_proof``);
- consistency proof from a random size to the head (``LogReader.consistency_proof``);
- a record with its inclusion proof (``get_records`` + ``inclusion_proof``): the storage work of
  the audit API's ``GetRecords`` for one record (the gRPC, TLS and checkpoint lookup around it
  are not included);
- baseline in the same run: one ``log_nodes`` row by primary key, the cheapest indexed read.

Prints the results, appends them to ``bench/results/log_proofs.txt`` and stores them under
``proof_serving_at_scale`` in ``bench/results/latest.json`` (the other fields are kept; ``make
bench`` carries this one over). Asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from bench.exchange import machine_info
from bench.loadgen import percentile
from bench.log_tree import DATA_DIR, ORIGIN, cached_log
from ruta.merkle import leaf_hash, verify_consistency, verify_inclusion
from security_server.database import open_database
from security_server.log import BodyKey, LogReader
from security_server.log.schema import log_nodes, node_last_seq

RESULTS: Final = Path(__file__).parent / "results"
#: The field of ``latest.json`` this benchmark owns.
FIELD: Final = "proof_serving_at_scale"
#: Served proofs checked with ruta.merkle's verifiers before timing.
VERIFIED_SAMPLE: Final = 200
#: What is timed, in order (see the module docstring).
KINDS: Final = (
    "baseline_node_read",
    "inclusion_proof",
    "consistency_proof",
    "record_with_inclusion_proof",
)

Call = Callable[[random.Random], Awaitable[None]]


async def _timed(seconds: float, readers: int, one: Call) -> dict[str, Any]:
    """Run ``one`` from ``readers`` concurrent callers for ``seconds``; rate and latencies."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def reader(n: int) -> None:
        rng = random.Random(6962 + n)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await one(rng)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(reader(n) for n in range(readers)))
    took = time.perf_counter() - start
    latencies.sort()
    return {
        "readers": readers,
        "ops": len(latencies),
        "per_second": round(len(latencies) / took, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
    }


async def _verify_sample(reader: LogReader, root: bytes, rng: random.Random) -> int:
    """Check served proofs against the builder's root with ruta.merkle; the number checked.

    Raises ``ruta.merkle.MerkleVerificationError`` on the first proof that does not verify.
    """
    size = reader.head().size
    for _ in range(VERIFIED_SAMPLE):
        seq = rng.randrange(size)
        [record] = await reader.get_records([seq])
        proof = await reader.inclusion_proof(seq, size)
        verify_inclusion(leaf_hash(record.record), seq, size, proof, root)
        old = rng.randrange(1, size)
        verify_consistency(
            old, size, await reader.consistency_proof(old, size), await reader.root(old), root
        )
    return VERIFIED_SAMPLE


def _warm_nodes(path: Path) -> None:
    """Read every ``log_nodes`` page once (table and key), as a server that has served proofs
    for a while holds them; the leaves' pages are left as the page cache has them."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("SELECT sum(length(hash)) FROM log_nodes").fetchone()
        conn.execute("SELECT count(*) FROM log_nodes").fetchone()
    finally:
        conn.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build or reuse the log, verify a sample, time the proof kinds; the result entry."""
    load_start = list(os.getloadavg())
    built = await cached_log(args.leaves, data_dir=args.data_dir, progress=True)
    if not built.reused:
        print(f"built {built.size:,} leaves in {built.build_seconds:.0f} s", flush=True)
    warm_seconds: float | None = None
    if args.warm:
        started = time.perf_counter()
        await asyncio.to_thread(_warm_nodes, built.path)
        warm_seconds = round(time.perf_counter() - started, 1)
        print(f"read every log_nodes page once in {warm_seconds} s", flush=True)
    engine = await open_database(f"sqlite+aiosqlite:///{built.path}")
    try:
        opened = time.perf_counter()
        reader = await LogReader.open(engine, origin=ORIGIN, body_key=BodyKey.generate())
        open_seconds = time.perf_counter() - opened
        head = reader.head()
        if (head.size, head.root) != (built.size, built.root):
            raise SystemExit("the stored head is not the tree the builder computed")
        size = head.size
        verified = await _verify_sample(reader, built.root, random.Random(17))
        print(f"verified {verified} inclusion + consistency proofs against the root", flush=True)

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
            await reader.inclusion_proof(rng.randrange(size), size)

        async def consistency(rng: random.Random) -> None:
            await reader.consistency_proof(rng.randrange(1, size), size)

        async def record_with_proof(rng: random.Random) -> None:
            seq = rng.randrange(size)
            await reader.get_records([seq])
            await reader.inclusion_proof(seq, size)

        kinds: dict[str, Call] = dict(
            zip(KINDS, (probe, inclusion, consistency, record_with_proof), strict=True)
        )
        await _timed(1.0, args.readers, inclusion)  # warm the pool and the upper levels
        measured: dict[str, Any] = {}
        for name, one in kinds.items():
            single = await _timed(args.seconds, 1, one)
            loaded = await _timed(args.seconds, args.readers, one)
            measured[name] = {"one_caller": single, "concurrent": loaded}
            print(
                f"{name:28} 1 caller: p50 {single['p50_ms']:.2f} ms, p99 "
                f"{single['p99_ms']:.2f} ms, {single['per_second']:,.0f}/s | "
                f"{args.readers} callers: {loaded['per_second']:,.0f}/s, p50 "
                f"{loaded['p50_ms']:.2f} ms, p99 {loaded['p99_ms']:.2f} ms",
                flush=True,
            )
    finally:
        await engine.dispose()
    machine = machine_info(built.path.parent)
    machine["load_average_at_start"] = load_start
    machine["load_average_at_end"] = list(os.getloadavg())
    machine["memory_mib"] = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    return {
        "recorded": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "leaves": size,
        "root": built.root.hex(),
        "database_bytes": built.path.stat().st_size,
        "build_seconds": built.build_seconds,
        "build_load_average": built.build_load_average,
        "build_reused": built.reused,
        "open_seconds": round(open_seconds, 3),
        "log_nodes_warmed_seconds": warm_seconds,
        "verified_sample": verified,
        "seconds_per_measure": args.seconds,
        "sqlite": sqlite3.sqlite_version,
        "machine": machine,
        **measured,
    }


def _record(entry: dict[str, Any], out: Path) -> None:
    """Store ``entry`` under :data:`FIELD` in ``latest.json`` (other fields kept) and append a
    line per kind to ``log_proofs.txt``."""
    latest = out / "latest.json"
    document: dict[str, Any] = json.loads(latest.read_text()) if latest.exists() else {}
    document[FIELD] = entry
    latest.write_text(json.dumps(document, indent=2) + "\n")
    warmed = "" if entry["log_nodes_warmed_seconds"] is not None else " --no-warm"
    lines = [
        f"# {entry['recorded']}, python -m bench.log_proofs_scale --leaves {entry['leaves']} "
        f"--seconds {entry['seconds_per_measure']}{warmed}; load average "
        f"{entry['machine']['load_average_at_start'][0]:.1f} at start"
    ]
    for name in KINDS:
        one, many = entry[name]["one_caller"], entry[name]["concurrent"]
        lines.append(
            f"{name}: 1 caller p50 {one['p50_ms']} ms p99 {one['p99_ms']} ms "
            f"{one['per_second']}/s; {many['readers']} callers {many['per_second']}/s "
            f"p50 {many['p50_ms']} ms p99 {many['p99_ms']} ms"
        )
    with (out / "log_proofs.txt").open("a", encoding="utf-8") as text:
        text.write("\n".join(lines) + "\n\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--leaves", type=int, default=10_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument(
        "--no-warm",
        dest="warm",
        action="store_false",
        help="time proofs with the page cache as found (default: read log_nodes once first)",
    )
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where built logs live")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--no-record", action="store_true", help="do not write to results/")
    args = parser.parse_args()
    entry = asyncio.run(run(args))
    if not args.no_record:
        _record(entry, args.out)


if __name__ == "__main__":
    main()
