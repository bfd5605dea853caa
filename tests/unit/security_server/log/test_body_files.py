"""Large bodies on a SQLite file live in body segment files beside it (ADR 0040): written and
synced before the group commits, read back as if they were in their rows, removed with
retention once no row names them; a torn tail or a failed write is never read."""

from __future__ import annotations

import errno
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.merkle import verify_inclusion
from security_server.log import (
    BodyKey,
    BodyState,
    LogKeyError,
    LogMaintenance,
    LogWriteError,
    MessageLog,
    store,
)
from security_server.log.bodies import (
    DIRECT_ALIGNMENT,
    FILE_BODY_MIN_BYTES,
    FILE_GROUP_MIN_BODIES,
    FILE_GROUP_MIN_BYTES,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    BodySegments,
    BodySegmentWriter,
    body_file_root,
)
from security_server.log.schema import log_bodies
from tests.unit.security_server.log.support import ORIGIN, FakeClock, make_entry

LARGE = FILE_BODY_MIN_BYTES


def _large(tag: int) -> bytes:
    return bytes([tag % 251]) * LARGE + str(tag).encode()


@pytest.fixture
def url(sqlite_file: Path) -> str:
    """The URL of conftest's ``file_engine``."""
    return f"sqlite+aiosqlite:///{sqlite_file}"


async def _open(
    engine: AsyncEngine, key: BodyKey, clock: FakeClock, *, body_files_from: int = 1
) -> MessageLog:
    # Every large body to the files, one alone too (the files are what these tests are about;
    # test_few_large_bodies_stay_in_their_rows covers the default rule).
    return await MessageLog.open(
        engine, origin=ORIGIN, body_key=key, clock=clock, body_files_from=body_files_from
    )


async def _rows(engine: AsyncEngine) -> dict[int, Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(
                log_bodies.c.seq,
                log_bodies.c.ciphertext,
                log_bodies.c.segment,
                log_bodies.c.position,
                log_bodies.c.length,
            )
        )
        return {int(r.seq): r for r in rows}


def _direct_io(url: str) -> bool:
    """Whether the file system under ``url``'s database takes direct I/O (the segment writer then
    uses it: each group's first body at an aligned position, docs/adr/0051)."""
    probe = Path(url.removeprefix("sqlite+aiosqlite:///") + ".probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


def _group_start(url: str, end: int) -> int:
    """Where a group's first body goes when the segment's bytes end at ``end``."""
    return -(-end // DIRECT_ALIGNMENT) * DIRECT_ALIGNMENT if _direct_io(url) else end


def _writes_directly(writer: BodySegmentWriter) -> bool:
    return writer.direct


def _segments(url: str) -> BodySegments:
    segments = BodySegments.for_url(url, ORIGIN)
    assert segments is not None
    return segments


async def test_few_large_bodies_stay_in_their_rows(
    file_engine: AsyncEngine, url: str, body_key: BodyKey, clock: FakeClock
) -> None:
    """By default a group's large bodies go to the segment file only from
    FILE_GROUP_MIN_BODIES of them (or FILE_GROUP_MIN_BYTES together): one exchange alone at a
    time would pay the file's sync in series with the commit's for nothing shared."""
    log = await _open(file_engine, body_key, clock, body_files_from=FILE_GROUP_MIN_BODIES)
    try:
        few = [_large(i) for i in range(FILE_GROUP_MIN_BODIES - 1)]
        await log.append([make_entry(body=b) for b in few])
        enough = [_large(10 + i) for i in range(FILE_GROUP_MIN_BODIES)]
        await log.append([make_entry(body=b) for b in enough])
        huge = bytes(FILE_GROUP_MIN_BYTES)
        await log.append([make_entry(body=huge)])
        rows = await _rows(file_engine)
        in_file = [rows[seq].segment is not None for seq in sorted(rows)]
        assert in_file == [False] * len(few) + [True] * len(enough) + [True]
        everything = [*few, *enough, huge]
        assert await log.get_bodies(list(range(len(everything)))) == dict(enumerate(everything))
    finally:
        await log.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:////data/messagelog.db", Path("/data/messagelog.db-bodies")),
        ("sqlite+aiosqlite://", None),
        ("sqlite+aiosqlite:///:memory:", None),
        ("postgresql+psycopg://ruta@db/ruta", None),
    ],
)
def test_only_a_sqlite_file_keeps_body_files(url: str, expected: Path | None) -> None:
    assert body_file_root(url) == expected


async def test_large_bodies_go_to_a_segment_file_and_read_back(
    file_engine: AsyncEngine, url: str, body_key: BodyKey, clock: FakeClock
) -> None:
    log = await _open(file_engine, body_key, clock)
    try:
        bodies = [_large(1), b"small", _large(2), None, _large(3)]
        await log.append([make_entry(body=b) for b in bodies])
        await log.append([make_entry(body=_large(4))])
        rows = await _rows(file_engine)
        # Large ones name their file; the small one stays in its row; none is absent.
        assert [rows[s].segment is not None for s in (0, 1, 2, 4, 5)] == [
            True,
            False,
            True,
            True,
            True,
        ]
        assert rows[1].ciphertext is not None
        assert rows[0].ciphertext is None
        assert rows[0].position == _group_start(url, SEGMENT_HEADER_SIZE)
        # Back to back within a group; the next group at the next aligned position.
        assert rows[2].position == rows[0].position + rows[0].length
        assert rows[4].position == rows[2].position + rows[2].length
        assert rows[5].position == _group_start(url, rows[4].position + rows[4].length)
        assert [await log.get_body(seq) for seq in range(5)] == bodies
        assert await log.get_bodies(list(range(6))) == {
            0: bodies[0],
            1: b"small",
            2: bodies[2],
            4: bodies[4],
            5: _large(4),
        }
        sizes = await log.body_sizes(list(range(6)))
        assert sizes == {
            s: len(b) for s, b in {**dict(enumerate(bodies)), 5: _large(4)}.items() if b
        }
        states = [r.body_state for r in await log.get_records(list(range(6)))]
        assert states == [BodyState.STORED] * 3 + [BodyState.ABSENT] + [BodyState.STORED] * 2
    finally:
        await log.close()
    [segment] = _segments(url).segment_ids()
    path = _segments(url).path(segment)
    assert path.read_bytes().startswith(SEGMENT_MAGIC)
    assert path.stat().st_mode & 0o777 == 0o600
    # The bodies are sealed on disk, never in the clear.
    assert bytes([1]) * 64 not in path.read_bytes()


async def test_a_body_file_moved_or_lost_is_named_not_served(
    file_engine: AsyncEngine, url: str, body_key: BodyKey, clock: FakeClock
) -> None:
    log = await _open(file_engine, body_key, clock)
    try:
        await log.append([make_entry(body=_large(1)), make_entry(body=_large(2))])
        rows = await _rows(file_engine)
        # Record 1's row pointed at record 0's bytes: they do not open as record 1's.
        async with file_engine.begin() as conn:
            await conn.execute(
                sa.update(log_bodies)
                .where(log_bodies.c.seq == 1)
                .values(position=rows[0].position, length=rows[0].length)
            )
        found = await log.get_bodies([0, 1])
        assert found[0] == _large(1)
        assert isinstance(found[1], LogKeyError)
        # A reference out of bounds is damage too: named, never allocated or read.
        for position, length in ((rows[1].position, 1 << 40), (0, rows[1].length)):
            async with file_engine.begin() as conn:
                await conn.execute(
                    sa.update(log_bodies)
                    .where(log_bodies.c.seq == 1)
                    .values(position=position, length=length)
                )
            assert isinstance((await log.get_bodies([1]))[1], LogKeyError)
        [segment] = _segments(url).segment_ids()
        _segments(url).path(segment).unlink()
        found = await log.get_bodies([0, 1])
        assert all(isinstance(found[s], LogKeyError) for s in (0, 1))
        assert "missing from the log's body files" in str(found[0])
        with pytest.raises(LogKeyError):
            await log.get_body(0)
    finally:
        await log.close()


async def test_purge_removes_segments_no_row_names(
    file_engine: AsyncEngine, url: str, body_key: BodyKey, clock: FakeClock
) -> None:
    # Each opening of the log begins a segment of its own: three openings, three segments.
    for round_ in range(3):
        log = await _open(file_engine, body_key, clock)
        try:
            await log.append([make_entry(body=_large(10 * round_ + i)) for i in range(3)])
            if round_ == 1:
                await log.append([make_entry(body=b"small")])
        finally:
            await log.close()
        clock.advance(3600)
    segments = _segments(url)
    assert segments.segment_ids() == [1, 2, 3]
    log = await _open(file_engine, body_key, clock)
    try:
        root = log.head().root
        # Past retention: the first opening's bodies (records 0-2, all of segment 1).
        assert await log.purge_bodies(clock.now - timedelta(hours=2)) == 3
        # Segment 1 is named by no row any more; 2 holds records 3-5; 3 is the newest.
        assert segments.segment_ids() == [2, 3]
        assert await log.get_body(4) == _large(11)
        assert await log.get_body(6) == b"small"
        assert [await log.get_body(s) for s in range(3)] == [None] * 3
        states = [r.body_state for r in await log.get_records(list(range(10)))]
        assert states == [BodyState.PURGED] * 3 + [BodyState.STORED] * 7
        rows = await _rows(file_engine)
        assert all(rows[s].segment is None and rows[s].ciphertext is None for s in range(3))
        # Everything past retention: segment 2 goes, the newest stays (a writer may fill it).
        assert await log.purge_bodies(clock.now) == 7
        assert segments.segment_ids() == [3]
        assert await log.remove_purged_body_files() == 0
        assert log.head().root == root
        for record in await log.get_records(list(range(10))):
            assert record.body_state is BodyState.PURGED
            proof = await log.inclusion_proof(record.seq)
            verify_inclusion(record.leaf_hash, record.seq, 10, proof, root)
    finally:
        await log.close()


async def test_a_torn_tail_is_never_read_and_never_built_on(
    file_engine: AsyncEngine, url: str, body_key: BodyKey, clock: FakeClock
) -> None:
    log = await _open(file_engine, body_key, clock)
    try:
        await log.append([make_entry(body=_large(1)), make_entry(body=_large(2))])
    finally:
        await log.close()
    segments = _segments(url)
    [first] = segments.segment_ids()
    # A crash between the body write and the commit left bytes no row names (and a torn one).
    with segments.path(first).open("ab") as torn:
        torn.write(os.urandom(LARGE + 7))
    log = await _open(file_engine, body_key, clock)
    try:
        await log.append([make_entry(body=_large(3))])
        assert segments.segment_ids() == [first, first + 1]
        assert [await log.get_body(s) for s in range(3)] == [_large(1), _large(2), _large(3)]
        rows = await _rows(file_engine)
        assert (rows[2].segment, rows[2].position) == (
            first + 1,
            _group_start(url, SEGMENT_HEADER_SIZE),
        )
    finally:
        await log.close()


async def test_a_failed_body_write_fails_its_group_and_leaves_nothing_named(
    file_engine: AsyncEngine,
    url: str,
    body_key: BodyKey,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = await _open(file_engine, body_key, clock)
    try:
        await log.append([make_entry(body=_large(1))])
        real_fdatasync = os.fdatasync
        failures = iter([OSError(errno.EIO, "injected")])

        def failing_fdatasync(fd: int) -> None:
            error = next(failures, None)
            if error is not None:
                raise error
            real_fdatasync(fd)

        monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
        with pytest.raises(LogWriteError):
            await log.append([make_entry(body=_large(2))])
        assert log.size() == 1
        # The next group begins a new segment (the failed sync's pages are never trusted).
        [after] = await log.append([make_entry(body=_large(3))])
        assert after.seq == 1
        assert [await log.get_body(s) for s in range(2)] == [_large(1), _large(3)]
        assert _segments(url).segment_ids() == [1, 2]
        rows = await _rows(file_engine)
        assert rows[1].segment == 2
    finally:
        await log.close()


async def test_a_failed_body_write_is_retried_in_place(
    file_engine: AsyncEngine,
    url: str,
    body_key: BodyKey,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = await _open(file_engine, body_key, clock)
    try:
        await log.append([make_entry(body=_large(1))])
        real_pwritev = os.pwritev
        full = [True]

        def full_volume(fd: int, buffers: list[memoryview], offset: int) -> int:
            if full[0]:
                full[0] = False
                # A torn part (a block: what a direct write leaves too), then full.
                real_pwritev(fd, [buffers[0][:DIRECT_ALIGNMENT]], offset)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_pwritev(fd, buffers, offset)

        monkeypatch.setattr(os, "pwritev", full_volume)
        with pytest.raises(LogWriteError):
            await log.append([make_entry(body=_large(2))])
        [after] = await log.append([make_entry(body=_large(3))])
        assert [await log.get_body(s) for s in range(after.seq + 1)] == [_large(1), _large(3)]
        rows = await _rows(file_engine)
        assert rows[1].segment == rows[0].segment
        assert rows[1].position == _group_start(url, rows[0].position + rows[0].length)
    finally:
        await log.close()


async def test_maintenance_rounds_remove_body_files_past_retention(
    file_engine: AsyncEngine, url: str, body_key: BodyKey, clock: FakeClock
) -> None:
    for _ in range(2):
        log = await _open(file_engine, body_key, clock)
        try:
            await log.append([make_entry(body=_large(i)) for i in range(2)])
        finally:
            await log.close()
        clock.advance(86_400 * 2)
    log = await _open(file_engine, body_key, clock)
    try:
        await log.append([make_entry(body=_large(7))])
        maintenance = LogMaintenance(log, body_retention=timedelta(days=1), clock=clock)
        done = await maintenance.run_once()
        assert done.bodies_purged == 4
        # Segments 1 and 2 held only purged bodies; 3 is the newest (and holds record 4).
        assert _segments(url).segment_ids() == [3]
        assert await log.get_body(4) == _large(7)
    finally:
        await log.close()


async def test_a_round_looks_at_a_bounded_number_of_segments(
    file_engine: AsyncEngine,
    url: str,
    body_key: BodyKey,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for round_ in range(3):
        log = await _open(file_engine, body_key, clock)
        try:
            await log.append([make_entry(body=_large(round_))])
        finally:
            await log.close()
        clock.advance(3600)
    monkeypatch.setattr(store, "_MAX_SEGMENTS_PER_ROUND", 1)
    log = await _open(file_engine, body_key, clock)
    try:
        assert await log.purge_bodies(clock.now - timedelta(minutes=90)) == 2
        # The oldest first, one a round; the newest never.
        assert _segments(url).segment_ids() == [2, 3]
        assert await log.remove_purged_body_files() == 1
        assert _segments(url).segment_ids() == [3]
        assert await log.get_body(2) == _large(2)
    finally:
        await log.close()


async def test_a_log_restored_without_its_body_files_says_so_and_reuses_no_name(
    file_engine: AsyncEngine,
    url: str,
    body_key: BodyKey,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = await _open(file_engine, body_key, clock)
    try:
        await log.append([make_entry(body=_large(1))])
    finally:
        await log.close()
    segments = _segments(url)
    for segment in segments.segment_ids():
        segments.path(segment).unlink()
    with caplog.at_level(logging.WARNING, logger="security_server.log.store"):
        log = await _open(file_engine, body_key, clock)
    try:
        assert "body segment 1, which committed records name, is missing" in caplog.text
        await log.append([make_entry(body=_large(2))])
        # The new body takes a new name: a row naming segment 1 never reads another's bytes.
        assert segments.segment_ids() == [2]
        assert isinstance((await log.get_bodies([0]))[0], LogKeyError)
        assert await log.get_body(1) == _large(2)
    finally:
        await log.close()


def test_a_writer_aligns_groups_for_direct_io_and_reads_stay_exact(tmp_path: Path) -> None:
    # docs/adr/0051: each group's first body at an aligned position, zeros no row names between
    # groups; a group larger than the buffer kept between groups is written from its own.
    segments = BodySegments(tmp_path / "origin")
    writer = BodySegmentWriter(segments)
    groups = [[os.urandom(5000), os.urandom(70_000)], [os.urandom(4097)], [os.urandom(5 << 20)]]
    refs: list[tuple[int, int, int]] = []
    try:
        for group in groups:
            segment, position = writer.write(group)
            for body in group:
                refs.append((segment, position, len(body)))
                position += len(body)
        direct = writer.direct
    finally:
        writer.close()
    assert segments.read_many(refs) == [body for group in groups for body in group]
    starts = [refs[0][1], refs[2][1], refs[3][1]]
    if direct:
        assert all(start % DIRECT_ALIGNMENT == 0 for start in starts)
        data = segments.path(refs[0][0]).read_bytes()
        assert data[: len(SEGMENT_MAGIC)] == SEGMENT_MAGIC
        end_of_first = refs[1][1] + refs[1][2]
        assert set(data[end_of_first : refs[2][1]]) <= {0}
    else:
        assert starts == [SEGMENT_HEADER_SIZE, refs[1][1] + refs[1][2], refs[2][1] + refs[2][2]]


def test_without_direct_io_bodies_go_back_to_back_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_direct(path: Any, flags: int, *args: Any) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return int(real_open(path, flags, *args))

    monkeypatch.setattr(os, "open", no_direct)
    segments = BodySegments(tmp_path / "origin")
    writer = BodySegmentWriter(segments)
    try:
        first = writer.write([b"a" * 5000])
        second = writer.write([b"b" * 6000])
        assert not writer.direct
    finally:
        writer.close()
    assert first == (1, SEGMENT_HEADER_SIZE)
    assert second == (1, SEGMENT_HEADER_SIZE + 5000)
    assert segments.read_many([(1, first[1], 5000), (1, second[1], 6000)]) == [
        b"a" * 5000,
        b"b" * 6000,
    ]


# A group that fits the writer's kept aligned buffer, and one larger (its own buffer, dropped
# after the write: a refused write must not leave views of it alive that stop it closing).
@pytest.mark.parametrize("size", [6000, (4 << 20) + 6000])
def test_a_direct_write_the_file_system_refuses_falls_back_to_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    segments = BodySegments(tmp_path / "origin")
    writer = BodySegmentWriter(segments)
    try:
        writer.write([b"a" * 5000])
        if not _writes_directly(writer):
            pytest.skip("this file system offers no direct I/O")
        real_pwritev = os.pwritev
        refused: list[int] = []

        def refuse_direct(fd: int, buffers: Any, offset: int) -> int:
            if offset % DIRECT_ALIGNMENT == 0 and not refused:
                refused.append(offset)
                raise OSError(errno.EINVAL, "Invalid argument")
            return int(real_pwritev(fd, buffers, offset))

        monkeypatch.setattr(os, "pwritev", refuse_direct)
        segment, position = writer.write([b"b" * size])
        assert refused
        assert not _writes_directly(writer)
        # Written where the last body ended, through the page cache, and read back exactly.
        assert position == DIRECT_ALIGNMENT + 5000
        later = writer.write([b"c" * 7000])
        assert later == (segment, position + size)
    finally:
        writer.close()
    assert segments.read_many([(segment, position, size), (segment, position + size, 7000)]) == [
        b"b" * size,
        b"c" * 7000,
    ]


def test_a_segment_stays_within_its_bound_with_the_alignment_counted(tmp_path: Path) -> None:
    # With direct I/O each group starts at the next 4 KiB boundary: the writer counts that
    # padding when it decides whether a group still fits the segment, so no segment file grows
    # past its bound (a group alone larger than the bound still goes, alone).
    bound = 4 * DIRECT_ALIGNMENT
    segments = BodySegments(tmp_path / "origin")
    writer = BodySegmentWriter(segments, max_segment_bytes=bound)
    try:
        placed = [
            (*writer.write([bytes([size % 251]) * size]), size)
            for size in (5000, 5000, 3000, 100, 5000)
        ]
    finally:
        writer.close()
    for segment in segments.segment_ids():
        assert segments.path(segment).stat().st_size <= bound
    assert len(segments.segment_ids()) > 1
    assert segments.read_many(placed) == [bytes([size % 251]) * size for *_, size in placed]
