"""Evidence export at scale: 10,000 records out of a 265,000-record log, milliseconds per record.

    python -m bench.log_export [--leaves 265000] [--export 10000] [--db FILE] [--repeat 3]
                                   [--profile FILE] [--no-record]

The log is built through :class:`MessageLog` itself (the real writer: encrypted 512 B bodies,
records of bench/log_append.py's shape, whose certificate and OCSP response repeat as a server's
do), with a witnessed checkpoint every 1,000 records as a server under load writes one a second.
``--db`` keeps the built file and reuses it on the next run (the build takes a while). Then
:func:`security_server.evidence.build_bundle` exports the range ``[200000, 210000)`` with bodies
(the auditor's month of one agency, in one bundle), ``--repeat`` times; the best and the median
are printed. ``--profile FILE`` runs one more export under cProfile and prints its top functions
(py-spy is not installed here). Also printed: the log's bytes per record, body excluded
(``bench.log_storage``). Appends the lines to ``bench/results/log_export.txt``; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import io
import os
import pstats
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.log_append import _entry as log_entry
from bench.log_storage import measure_log_storage
from security_server.database import open_database
from security_server.evidence import EvidenceFilter, build_bundle
from security_server.log import BodyKey, MessageLog

ORIGIN = "DEV/GOV/POP/ss1"
RESULTS = Path(__file__).parent / "results" / "log_export.txt"
#: Records between two checkpoints of the built log (one a second at 1,000 records a second).
CHECKPOINT_EVERY = 1000
_KEY_SEED = b"ruta bench log export key 000001"


async def _build(log: MessageLog, leaves: int) -> None:
    entries = [log_entry(body=secrets.token_bytes(512)) for _ in range(256)]
    i = 0
    while log.size() < leaves:
        missing = leaves - log.size()
        calls = min(64, missing)
        batch = [entries[(i + n) % len(entries)] for n in range(calls)]
        i += calls
        await asyncio.gather(*(log.append([e]) for e in batch))
        size = log.size()
        if size // CHECKPOINT_EVERY != (size - calls) // CHECKPOINT_EVERY or size == leaves:
            root = await log.root(size)
            text = f"{ORIGIN}\n{size}\n{base64.b64encode(root).decode()}\n"
            await log.save_checkpoint(size=size, root=root, note=text + "\n— bench sig\n")
            await log.save_cosignature(size, "— witness sig\n", datetime.now(UTC))


async def _main(args: argparse.Namespace) -> list[str]:
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory(prefix="ruta-bench-") as tmp:
        db = args.db or Path(tmp) / "export.db"
        engine = await open_database(f"sqlite+aiosqlite:///{db}")
        key_file = db.with_suffix(".bodykey")
        if key_file.exists():
            body_key = BodyKey(key=bytes.fromhex(key_file.read_text()))
        else:
            body_key = BodyKey.generate()
            key_file.write_text(body_key.key.hex())
        log = await MessageLog.open(
            engine, origin=ORIGIN, body_key=body_key, max_group_records=4096
        )
        if log.size() < args.leaves:
            start = time.perf_counter()
            await _build(log, args.leaves)
            say(
                f"built    {log.size()} records through the log in "
                f"{time.perf_counter() - start:.1f} s"
            )
        storage = measure_log_storage(db)
        say(
            f"storage  {storage['bytes_per_record']:.0f} B per record body excluded "
            f"({storage['records']} records, file {storage['file_bytes']} B, bodies "
            f"{storage['body_bytes']} B)"
        )
        key = Ed25519PrivateKey.from_private_bytes(_KEY_SEED)
        globalconf = secrets.token_bytes(64 * 1024)
        start_seq = min(200_000, max(0, log.size() - args.export))
        query = EvidenceFilter(from_seq=start_seq, until_seq=start_seq + args.export)

        async def export() -> bytes:
            return await build_bundle(
                log=log,
                engine=engine,
                server=ORIGIN,
                key=key,
                globalconf=globalconf,
                query=query,
                bodies_permitted=lambda _: True,
            )

        times: list[float] = []
        cpu: list[float] = []
        size = 0
        for _ in range(args.repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            size = len(await export())
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        best, median = min(times), statistics.median(times)
        per = 1000 / args.export
        say(
            f"export   {args.export} records of {log.size()}: best {best:.2f} s "
            f"({best * per:.3f} ms/record), median {median:.2f} s ({median * per:.3f} ms/record); "
            f"CPU best {min(cpu) * per:.3f} ms/record, median {statistics.median(cpu) * per:.3f}; "
            f"bundle {size / 1e6:.1f} MB; load average {os.getloadavg()[0]:.1f}"
        )
        if args.profile is not None:
            profile = cProfile.Profile()
            profile.enable()
            await export()
            profile.disable()
            profile.dump_stats(args.profile)
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())
        await log.close()
        await engine.dispose()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--leaves", type=int, default=265_000)
    parser.add_argument("--export", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", type=Path, default=None, help="keep (and reuse) the log here")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile one export to FILE")
    parser.add_argument("--no-record", action="store_true", help="do not append to results/")
    args = parser.parse_args()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = asyncio.run(_main(args))
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write(f"# {stamp}, bench/log_export.py --leaves {args.leaves}\n")
            out.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
