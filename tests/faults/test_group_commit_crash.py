"""A crash in the middle of a group commit: the writer's process dies (SIGKILL) inside the
transaction of a group of several appends, after every row and the new head are written and
before the commit. The log opens again, its tree verifies, and every append acknowledged before
the crash is there (tests/integration/test_message_log_crash.py kills at arbitrary moments; this
one aims at the commit itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_message_log_crash import run_and_kill, verify_after_crash

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.mark.parametrize("groups_before", [0, 25])
async def test_crash_inside_a_group_commit(
    database_url: str, tmp_path: Path, groups_before: int
) -> None:
    key_dir = tmp_path / "keys"
    acknowledged = await run_and_kill(database_url, key_dir, kill_in_commit_after=groups_before)
    if groups_before:
        assert acknowledged, "no group committed before the crash"
    await verify_after_crash(database_url, key_dir, acknowledged)
