"""Message log micro-benchmark: durable appends per second with group commit, and proofs served
per second, on a SQLite file (or any database URL). Prints results; asserts nothing.

    python -m bench.log_append [--seconds 3] [--concurrency 1 16 64] [--leaves 100000] [--url URL]

Each append is one exchange's record (a real serialised header and signature, a 1 KiB body,
encrypted) and is durable when it returns (WAL + synchronous=FULL on SQLite). The ratio between
concurrency levels shows what group commit buys: transactions per append fall as callers rise.
Each level also prints the latency of one append (p50, p99: at concurrency 1, one durable
commit), and the run starts with the fsync of 8 KiB in the same directory (p50), the floor a
commit cannot go under; it ends with the log file's bytes per record, body excluded.
Each append has a message id of its own, by default one the consumer's security server makes when
the client names none (time-ordered, version 7; ``--client-ids``: random version 4 ones).
The log is wired as the security server wires it (``security_server/server.py``, ADR 0042):
while at most one append is in flight, it commits in the event loop's thread; otherwise
through the writer's worker thread, grouped. The same transaction and durability either way.
Proof serving reads inclusion proofs for random leaves of a tree of ``--leaves`` leaves (issue 6
asks for 1000000), each from one indexed query of O(log n) nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import os
import random
import secrets
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.log_storage import measure_log_storage
from ruta.ids import ServerId, ServiceId, SubsystemId
from ruta.merkle import verify_inclusion
from ruta.v1 import transport_pb2
from security_server.database import open_database
from security_server.headers import new_message_id
from security_server.log import BodyKey, Direction, LogEntry, MessageLog

_CLIENT = SubsystemId.parse("DEV/GOV/SOC/benefits")
_SERVICE = ServiceId.parse("DEV/GOV/POP/registry/population.v1.PopulationRegister")
_BODY = secrets.token_bytes(1024)
#: One signing certificate and a few stapled OCSP responses, as a server's records carry them (a
#: member signs with one certificate; the server staples the response it holds until it
#: refreshes it). Sizes as measured in a bench run's log: 528 and 737 bytes.
_CERTIFICATE = secrets.token_bytes(528)
_OCSP_RESPONSES = [secrets.token_bytes(737) for _ in range(4)]


def _entry(body: bytes = _BODY) -> LogEntry:
    header = transport_pb2.MessageHeader(
        message_id=str(uuid.uuid4()),
        kind=transport_pb2.MESSAGE_KIND_REQUEST,
        client=_CLIENT.to_proto(),
        service=_SERVICE.to_proto(),
        method="GetPerson",
        purpose="benefit-eligibility",
        subject="EE38001085718",
        sender=ServerId.parse("DEV/GOV/SOC/ss1").to_proto(),
        receiver=ServerId.parse("DEV/GOV/POP/ss1").to_proto(),
        body_sha256=secrets.token_bytes(32),
    )
    header.created_at.FromDatetime(datetime.now(UTC))
    signature = transport_pb2.Signature(
        algorithm=transport_pb2.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256,
        value=secrets.token_bytes(72),
        certificate=_CERTIFICATE,
        ocsp_response=random.choice(_OCSP_RESPONSES),
    )
    return LogEntry.from_signed(
        direction=Direction.RECEIVED,
        header=header.SerializeToString(),
        signature=signature.SerializeToString(),
        certificate_fingerprint=hashlib.sha256(_CERTIFICATE).hexdigest(),
        body=body,
    )


#: Appends per second a pool of entries is sized for (above the target, so ids rarely repeat).
_POOL_RATE = 30_000
#: The header's first bytes: field 1 (``message_id``), a 36-character string.
_ID_FIELD = b"\x0a\x24"


def _with_message_id(entry: LogEntry, message_id: str) -> LogEntry:
    """``entry`` under another 36-character message id (field 1 of its header, the first of a
    deterministic serialisation, replaced; the benchmark's signatures are never verified)."""
    prefix = _ID_FIELD + entry.message_id.encode()
    if len(message_id) != len(entry.message_id) or not entry.header.startswith(prefix):
        raise ValueError("a benchmark entry's header starts with its 36-character message id")
    header = _ID_FIELD + message_id.encode() + entry.header[len(prefix) :]
    return dataclasses.replace(entry, header=header, message_id=message_id)


def _random_message_id() -> str:
    return str(uuid.uuid4())


def entry_pool(count: int, *, bases: int = 2000, client_ids: bool = False) -> list[LogEntry]:
    """``count`` entries, each with a message id of its own (as every exchange has), built from
    ``bases`` distinct records. By default the ids are the ones a consumer's security server
    makes when the client names none (``security_server.headers.new_message_id``: time-ordered
    version 7 UUIDs, in the order they are appended); with ``client_ids``, random version 4
    UUIDs, as clients that name their own may send."""
    base = [_entry() for _ in range(bases)]
    make = _random_message_id if client_ids else new_message_id
    return [_with_message_id(base[i % bases], make()) for i in range(count)]


async def _appends(url: str, concurrency: int, seconds: float, *, client_ids: bool) -> None:
    engine = await open_database(url)
    log = await MessageLog.open(engine, origin=f"bench/c{concurrency}", body_key=BodyKey.generate())
    in_flight = quiet_inline(log)
    entries = entry_pool(int(seconds * _POOL_RATE) + 1000, client_ids=client_ids)
    before = log.stats
    start_cpu = time.process_time()
    latencies, elapsed = await append_for(log, entries, in_flight, concurrency, seconds)
    done = len(latencies)
    cpu_us = (time.process_time() - start_cpu) * 1e6 / max(done, 1)
    stats = log.stats
    await log.close()
    await engine.dispose()
    transactions = stats.transactions - before.transactions
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(
        f"appends  concurrency={concurrency:3d}  {done / elapsed:9.0f} durable appends/s  "
        f"{done / max(transactions, 1):6.1f} appends/transaction  p50 {p50:.3f} ms  "
        f"p99 {p99:.3f} ms  CPU {cpu_us:.0f} µs/append  ({done} in {elapsed:.1f} s)"
    )


async def append_for(
    log: MessageLog,
    entries: list[LogEntry],
    in_flight: list[int],
    concurrency: int,
    seconds: float,
) -> tuple[list[float], float]:
    """``concurrency`` callers append one entry each at a time (counted in ``in_flight``, see
    :func:`quiet_inline`) for about ``seconds``; returns each append's latency in seconds and
    the time elapsed."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []

    async def caller(offset: int) -> None:
        i = offset
        while (began := time.perf_counter()) < deadline:
            in_flight[0] += 1
            try:
                await log.append([entries[i % len(entries)]])
            finally:
                in_flight[0] -= 1
            latencies.append(time.perf_counter() - began)
            i += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return latencies, time.perf_counter() - start


def quiet_inline(log: MessageLog) -> list[int]:
    """Wire ``log`` as the security server does (``security_server/server.py``): a lone append
    commits in the event loop's thread while at most one append is in flight (the server's
    "one exchange in flight", ADR 0042), otherwise through the writer's worker thread. Returns
    the in-flight counter the callers keep (a one-element list)."""
    in_flight = [0]
    log.commit_inline_while(lambda: in_flight[0] <= 1)
    return in_flight


def fsync_p50_ms(directory: Path, rounds: int = 200) -> float:
    """Median time to fsync 8 KiB just written to a file in ``directory`` (a commit's floor)."""
    path = directory / "fsync-probe"
    times: list[float] = []
    with path.open("wb") as probe:
        for _ in range(rounds):
            probe.write(b"\0" * 8192)
            probe.flush()
            began = time.perf_counter()
            os.fsync(probe.fileno())
            times.append(time.perf_counter() - began)
    path.unlink()
    return statistics.median(times) * 1000


async def _proofs(url: str, leaves: int, seconds: float) -> None:
    engine = await open_database(url)
    log = await MessageLog.open(
        engine, origin="bench/proofs", body_key=BodyKey.generate(), max_group_records=4096
    )
    entries = [_entry() for _ in range(64)]
    start = time.perf_counter()
    while log.size() < leaves:
        missing = leaves - log.size()
        batches = [entries[: min(64, missing - i * 64)] for i in range(min(64, -(-missing // 64)))]
        await asyncio.gather(*(log.append(b) for b in batches if b))
    print(f"proofs   built a tree of {log.size()} leaves in {time.perf_counter() - start:.1f} s")

    head = log.head()
    rng = random.Random(6962)
    served = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()

    async def server() -> None:
        nonlocal served
        while time.perf_counter() < deadline:
            seq = rng.randrange(head.size)
            await log.inclusion_proof(seq, head.size)
            served += 1

    await asyncio.gather(*(server() for _ in range(8)))
    elapsed = time.perf_counter() - start
    seq = rng.randrange(head.size)
    [record] = await log.get_records([seq])
    verify_inclusion(record.leaf_hash, seq, head.size, await log.inclusion_proof(seq), head.root)
    print(f"proofs   {served / elapsed:9.0f} inclusion proofs/s at size {head.size} (8 readers)")
    await log.close()
    await engine.dispose()


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ruta-bench-") as tmp:
        url = args.url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        print(f"message log benchmark on {url.split(':', 1)[0]}, load average {os.getloadavg()}")
        if args.url is None:
            print(f"fsync    8 KiB p50 {fsync_p50_ms(Path(tmp)):.3f} ms (this disk, now)")
        for concurrency in args.concurrency:
            await _appends(url, concurrency, args.seconds, client_ids=args.client_ids)
        await _proofs(url, args.leaves, args.seconds)
        if args.url is None:
            storage = measure_log_storage(Path(tmp) / "bench.db")
            print(
                f"storage  {storage['bytes_per_record']:.0f} B per record body excluded "
                f"({storage['records']} records)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--leaves", type=int, default=100_000, help="tree size for proof serving")
    parser.add_argument("--url", help="database URL (default: a fresh SQLite file)")
    parser.add_argument(
        "--client-ids",
        action="store_true",
        help="random (version 4) message ids, as clients naming their own may send, instead of "
        "the time-ordered ones a security server makes",
    )
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
