"""A crash in the middle of a group commit: the writer's process dies (SIGKILL) inside the
transaction of a group of several appends, after every row and the new head are written and
before the commit. The log opens again, its tree verifies, and every append acknowledged before
the crash is there (tests/integration/test_message_log_crash.py kills at arbitrary moments; this
one aims at the commit itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from security_server.log.bodies import BodySegments
from tests.integration.test_message_log_crash import ORIGIN, run_and_kill, verify_after_crash

pytestmark = [pytest.mark.faults, pytest.mark.integration]

#: A body large enough for the body segment files.
BODY_SIZE = 64 * 1024


@pytest.mark.parametrize("groups_before", [0, 25])
async def test_crash_inside_a_group_commit(
    database_url: str, tmp_path: Path, groups_before: int
) -> None:
    key_dir = tmp_path / "keys"
    acknowledged = await run_and_kill(database_url, key_dir, kill_in_commit_after=groups_before)
    if groups_before:
        assert acknowledged, "no group committed before the crash"
    await verify_after_crash(database_url, key_dir, acknowledged)


@pytest.mark.parametrize("groups_before", [0, 25])
async def test_crash_between_the_body_file_write_and_the_commit(
    tmp_path: Path, groups_before: int
) -> None:
    """On a SQLite file, 64 KiB bodies go to body segment files, written and synced before
    the rows naming them commit (ADR 0040): the kill lands after the group's bodies reached
    their file. Every acknowledged body opens after the restart; the dying group's bytes are
    named by no row (a restarted log writes a segment of its own: test_body_files.py)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ss.db'}"
    key_dir = tmp_path / "keys"
    acknowledged = await run_and_kill(
        url, key_dir, kill_in_commit_after=groups_before, body_size=BODY_SIZE
    )
    if groups_before:
        assert acknowledged, "no group committed before the crash"
    segments = BodySegments.for_url(url, ORIGIN)
    assert segments is not None
    written = segments.segment_ids()
    assert written, "the crashed group wrote no body file"
    # The bytes of the dying group are there, past every body a committed row names.
    assert segments.path(written[-1]).stat().st_size > BODY_SIZE
    await verify_after_crash(url, key_dir, acknowledged, body_size=BODY_SIZE)
