"""Child process of the message log crash test: appends forever with group commit, each append
with a replay claim on its message id, and prints ``SEQ LEAF_HASH_HEX MESSAGE_ID`` for each
append the log acknowledged, until it is killed.

Usage: ``python -m tests.integration.message_log_child DATABASE_URL KEY_DIR ORIGIN CONCURRENCY``
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta

from security_server.database import open_database
from security_server.log import MessageLog, ReplayGuard, load_or_create_body_key
from tests.unit.security_server.log.support import CLIENT, make_entry


async def _appender(log: MessageLog) -> None:
    guard = ReplayGuard(log)
    while True:
        message_id = str(uuid.uuid4())
        claim = guard.claim_for(str(CLIENT), message_id, datetime.now(UTC), timedelta(hours=1))
        [record] = await log.append(
            [make_entry(body=b"body " * 20, message_id=message_id)], claim=claim
        )
        sys.stdout.write(f"{record.seq} {record.leaf_hash.hex()} {message_id}\n")
        sys.stdout.flush()


async def _main(url: str, key_dir: str, origin: str, concurrency: int) -> None:
    engine = await open_database(url)
    log = await MessageLog.open(engine, origin=origin, body_key=load_or_create_body_key(key_dir))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.gather(*(_appender(log) for _ in range(concurrency)))


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
