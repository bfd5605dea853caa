"""Child process of the message log crash test: appends forever with group commit and prints
``SEQ LEAF_HASH_HEX`` for each append the log acknowledged, until it is killed.

Usage: ``python -m tests.integration.message_log_child DATABASE_URL KEY_DIR ORIGIN CONCURRENCY``
"""

from __future__ import annotations

import asyncio
import sys

from security_server.database import open_database
from security_server.log import MessageLog, load_or_create_body_key
from tests.unit.security_server.log.support import make_entry


async def _appender(log: MessageLog) -> None:
    while True:
        [record] = await log.append([make_entry(body=b"body " * 20)])
        sys.stdout.write(f"{record.seq} {record.leaf_hash.hex()}\n")
        sys.stdout.flush()


async def _main(url: str, key_dir: str, origin: str, concurrency: int) -> None:
    engine = await open_database(url)
    log = await MessageLog.open(engine, origin=origin, body_key=load_or_create_body_key(key_dir))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.gather(*(_appender(log) for _ in range(concurrency)))


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
