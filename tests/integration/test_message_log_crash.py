"""SIGKILL during group-committed appends loses nothing acknowledged and leaves a consistent tree.

Each append also claims its message id (the replay guard's hot path), so the test shows that an
acknowledged claim survives the crash too.

A real child process appends with 16 concurrent callers and prints each acknowledged sequence
number; it is killed mid-way with SIGKILL. Reopening the log (which checks the stored tree against
its stored head) must find every acknowledged record with the hash the child was given, a root
over all stored leaves, valid proofs, and must continue appending from the right place.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ruta.merkle import leaf_hash, root_from_leaf_hashes, verify_consistency, verify_inclusion
from security_server.database import open_database
from security_server.log import (
    MessageLog,
    ReplayedMessageError,
    ReplayGuard,
    load_or_create_body_key,
)
from security_server.log.store import MAX_BODIES_PER_READ
from tests.integration.message_log_child import crash_body
from tests.unit.security_server.log.support import CLIENT, make_entry

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "ruta.test/crash"
#: Acknowledged appends to see before the kill (spread over many group commits).
ACKNOWLEDGED_BEFORE_KILL = 400


async def run_and_kill(
    database_url: str,
    key_dir: Path,
    *,
    kill_in_commit_after: int | None = None,
    body_size: int | None = None,
) -> dict[int, tuple[bytes, str]]:
    """Run the appending child and SIGKILL it: from here once it acknowledged
    :data:`ACKNOWLEDGED_BEFORE_KILL` appends, or, with ``kill_in_commit_after``, by itself inside
    a group commit's transaction (its bodies ``body_size`` bytes, see ``crash_body``). Returns
    seq -> (leaf hash, message id) of every acknowledged append."""
    extra: tuple[str, ...] = ()
    if kill_in_commit_after is not None:
        extra = (str(kill_in_commit_after),)
        if body_size is not None:
            extra += (str(body_size),)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.message_log_child",
        database_url,
        str(key_dir),
        ORIGIN,
        "16",
        *extra,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    acknowledged: dict[int, tuple[bytes, str]] = {}
    try:
        assert (await asyncio.wait_for(child.stdout.readline(), 60)) == b"ready\n"
        while kill_in_commit_after is not None or len(acknowledged) < ACKNOWLEDGED_BEFORE_KILL:
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            if not line and kill_in_commit_after is not None:
                break  # it killed itself in a commit
            assert line, "the child stopped before it was killed"
            seq, digest, message_id = line.decode().split()
            acknowledged[int(seq)] = (bytes.fromhex(digest), message_id)
    finally:
        if child.returncode is None and kill_in_commit_after is None:
            child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 60)
    assert child.returncode == -signal.SIGKILL
    return acknowledged


async def test_sigkill_loses_no_acknowledged_append(database_url: str, tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    acknowledged = await run_and_kill(database_url, key_dir)
    await verify_after_crash(database_url, key_dir, acknowledged)


async def verify_after_crash(
    database_url: str,
    key_dir: Path,
    acknowledged: dict[int, tuple[bytes, str]],
    *,
    body_size: int | None = None,
) -> None:
    """Reopen the crashed log and check it: every acknowledged append is there unchanged, the
    tree is the root of the stored leaves and proves, every acknowledged message id stays
    claimed, and appending continues from the right place (bodies of ``body_size`` bytes, as
    the child wrote them)."""
    engine = await open_database(database_url)
    try:
        log = await MessageLog.open(
            engine, origin=ORIGIN, body_key=load_or_create_body_key(key_dir)
        )
        try:
            size = log.size()
            assert size >= max(acknowledged, default=-1) + 1
            records = []
            for start in range(0, size, 1000):
                records.extend(await log.get_records(list(range(start, min(size, start + 1000)))))
            hashes = [leaf_hash(r.record) for r in records]
            assert [r.seq for r in records] == list(range(size))
            for seq, (digest, message_id) in acknowledged.items():
                assert hashes[seq] == digest, f"acknowledged record {seq} differs"
                assert records[seq].message_id == message_id
            head = log.head()
            assert head.root == root_from_leaf_hashes(hashes)
            for seq in sorted({0, size // 2, size - 1}) if size else ():
                verify_inclusion(hashes[seq], seq, size, await log.inclusion_proof(seq), head.root)
            if size:
                assert await log.get_body(size - 1) == crash_body(body_size)
            if body_size is not None and acknowledged:
                bodies = await log.get_bodies(sorted(acknowledged)[-MAX_BODIES_PER_READ:])
                assert set(bodies.values()) == {crash_body(body_size)}

            # Every acknowledged message id stays claimed: a replay after the crash is refused.
            guard = ReplayGuard(log)
            replays = await asyncio.gather(
                *(
                    guard.check_and_record(
                        str(CLIENT), message_id, datetime.now(UTC), timedelta(hours=1)
                    )
                    for _, message_id in acknowledged.values()
                ),
                return_exceptions=True,
            )
            assert all(isinstance(r, ReplayedMessageError) for r in replays)

            [after] = await log.append([make_entry()])
            assert after.seq == size
            if size:
                proof = await log.consistency_proof(size)
                verify_consistency(size, size + 1, proof, head.root, log.head().root)
        finally:
            await log.close()
    finally:
        await engine.dispose()


async def test_sigkill_during_wal_checkpoints_loses_no_acknowledged_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a SQLite file, with the checkpoint thread passing after every commit (docs/adr/0054):
    the kill lands beside a pass copying the write-ahead log into the database."""
    monkeypatch.setenv("RUTA_TEST_CHECKPOINT_PAGES", "1")
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'ss.db'}"
    key_dir = tmp_path / "keys"
    acknowledged = await run_and_kill(database_url, key_dir)
    await verify_after_crash(database_url, key_dir, acknowledged)
