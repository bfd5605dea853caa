"""Child process of the message log crash test: appends forever with group commit, each append
with a replay claim on its message id, and prints ``SEQ LEAF_HASH_HEX MESSAGE_ID`` for each
append the log acknowledged, until it is killed.

Usage: ``python -m tests.integration.message_log_child DATABASE_URL KEY_DIR ORIGIN CONCURRENCY
[KILL_IN_COMMIT_AFTER [BODY_SIZE]]``

With ``KILL_IN_COMMIT_AFTER`` = N the child kills itself (SIGKILL) in the middle of a group commit:
inside the transaction of the first group of several appends after N groups, once every row of the
group and the new head are written and before the commit (on a SQLite file with bodies of
``BODY_SIZE`` bytes, large enough for body segment files: after the group's bodies were written
and synced to their file, before the rows naming them commit).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from security_server.database import open_database
from security_server.log import MessageLog, ReplayGuard, _writer, load_or_create_body_key
from security_server.log._writer import GroupCommitWriter
from tests.unit.security_server.log.support import CLIENT, make_entry


def crash_body(size: int | None) -> bytes:
    """The body every append of the child carries (``size`` bytes; 100 by default)."""
    return b"body " * 20 if size is None else (b"body " * (size // 5 + 1))[:size]


async def _appender(log: MessageLog, body: bytes) -> None:
    guard = ReplayGuard(log)
    while True:
        message_id = str(uuid.uuid4())
        claim = guard.claim_for(str(CLIENT), message_id, datetime.now(UTC), timedelta(hours=1))
        [record] = await log.append([make_entry(body=body, message_id=message_id)], claim=claim)
        sys.stdout.write(f"{record.seq} {record.leaf_hash.hex()} {message_id}\n")
        sys.stdout.flush()


async def _main(url: str, key_dir: str, origin: str, concurrency: int, body: bytes) -> None:
    engine = await open_database(url)
    # Large bodies to the segment files from the first (the crash test's subject: its groups
    # may hold fewer than the default FILE_GROUP_MIN_BODIES).
    log = await MessageLog.open(
        engine, origin=origin, body_key=load_or_create_body_key(key_dir), body_files_from=1
    )
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.gather(*(_appender(log, body) for _ in range(concurrency)))


def _kill_in_commit(after_groups: int) -> None:
    """Make the writer die inside the transaction of a group of several appends."""
    write_head = GroupCommitWriter._write_head
    groups = 0

    def dying(self: GroupCommitWriter, conn: Any, frontier: Any, now_us: int, indexed: int) -> None:
        nonlocal groups
        write_head(self, conn, frontier, now_us, indexed)
        groups += 1
        if groups > after_groups and frontier.size - self._frontier.size > 1:
            os.kill(os.getpid(), signal.SIGKILL)

    GroupCommitWriter._write_head = dying  # type: ignore[method-assign]


if __name__ == "__main__":
    # The crash test of the write-ahead log's checkpoint thread: a pass after (nearly) every
    # commit, so the kill finds one in progress (docs/adr/0054).
    if os.environ.get("RUTA_TEST_CHECKPOINT_PAGES"):
        _writer._CHECKPOINT_PAGES = int(os.environ["RUTA_TEST_CHECKPOINT_PAGES"])  # type: ignore[misc]
    if len(sys.argv) > 5:
        _kill_in_commit(int(sys.argv[5]))
    body = crash_body(int(sys.argv[6]) if len(sys.argv) > 6 else None)
    asyncio.run(_main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), body))
