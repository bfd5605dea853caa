"""The write-ahead log's checkpoint thread (docs/adr/0054) through a log's life: stopped while a
pass runs, stopped twice, logs reopened in one process, a disposed engine, several origins and
processes on one file (their passes meet), and a process that exits without closing its log."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from security_server.database import sqlite_sync_engine
from security_server.log import BodyKey, MessageLog
from security_server.log import _writer as writer_module
from security_server.log.schema import log_heads
from tests.unit.security_server.log.support import ORIGIN, FakeClock, make_entry

_NAME = "ruta-log-wal-checkpoint"


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == _NAME}


def test_stop_waits_for_a_pass_in_progress_and_a_second_stop_returns(
    sqlite_file: Path, file_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    del file_engine  # the schema is there
    sync = sqlite_sync_engine(f"sqlite:///{sqlite_file}")
    assert sync is not None
    started, release = threading.Event(), threading.Event()

    def slow(dbapi: object) -> None:
        started.set()
        assert release.wait(10)

    monkeypatch.setattr(writer_module, "_run_checkpoint", slow)
    before = _threads()
    checkpointer = writer_module._WalCheckpointer(sync)
    try:
        checkpointer.committed(3 * writer_module._CHECKPOINT_PAGES)
        assert started.wait(10)
        stopper = threading.Thread(target=checkpointer.stop)
        stopper.start()
        stopper.join(0.2)
        assert stopper.is_alive()  # waits for the pass
        release.set()
        stopper.join(10)
        assert not stopper.is_alive()
        assert _threads() <= before
        checkpointer.stop()  # again: returns at once
        checkpointer.committed(3 * writer_module._CHECKPOINT_PAGES)  # after: harmless
    finally:
        release.set()
        checkpointer.stop()
        # Its connection went back to the pool: nothing checked out is left behind.
        assert sync.pool.checkedout() == 0  # type: ignore[attr-defined]
        sync.dispose()


async def test_logs_reopened_in_one_process_leave_no_thread_behind(
    file_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "_CHECKPOINT_PAGES", 10)
    before = _threads()
    key = BodyKey.generate()
    size = 0
    for _ in range(4):
        log = await MessageLog.open(file_engine, origin=ORIGIN, body_key=key, clock=FakeClock())
        try:
            assert len(_threads() - before) == 1
            await asyncio.gather(*(log.append([make_entry()]) for _ in range(40)))
            size += 40
            assert log.head().size == size
        finally:
            await log.close()
            await log.close()  # twice: nothing more to stop
        assert _threads() <= before


async def test_a_pass_on_a_disposed_engine_is_no_failure(
    sqlite_file: Path, file_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    del file_engine
    sync = sqlite_sync_engine(f"sqlite:///{sqlite_file}")
    assert sync is not None
    checkpointer = writer_module._WalCheckpointer(sync)
    try:
        checkpointer.committed(writer_module._CHECKPOINT_PAGES)
        sync.dispose()  # under the thread, its connection perhaps checked out
        checkpointer.committed(writer_module._CHECKPOINT_PAGES)
        await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(checkpointer.stop)
        sync.dispose()
    assert "checkpointing the write-ahead log failed" not in caplog.text


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from security_server.database import open_database
    from security_server.log import BodyKey, MessageLog
    from security_server.log import _writer as writer_module
    from tests.unit.security_server.log.support import FakeClock, make_entry

    writer_module._CHECKPOINT_PAGES = 5

    async def main(url, origin, rounds, close):
        engine = await open_database(url)
        log = await MessageLog.open(
            engine, origin=origin, body_key=BodyKey.generate(), clock=FakeClock()
        )
        for _ in range(rounds):
            await asyncio.gather(*(log.append([make_entry()]) for _ in range(16)))
        print(log.head().size, flush=True)
        if close:
            await log.close()
            await engine.dispose()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "close"))
    """
)


def _child(url: str, origin: str, rounds: int, *, close: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, origin, str(rounds), "close" if close else "exit"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[4],
    )


async def test_origins_and_processes_sharing_a_file_checkpoint_beside_each_other(
    sqlite_file: Path,
    file_engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(writer_module, "_CHECKPOINT_PAGES", 5)
    url = f"sqlite+aiosqlite:///{sqlite_file}"
    caplog.set_level(logging.WARNING, logger=writer_module.__name__)
    children = [
        _child(url, "ruta.test/DEV/GOV/POP/child1", 30, close=True),
        _child(url, "ruta.test/DEV/GOV/POP/child2", 30, close=False),  # exits unclosed
    ]
    logs = [
        await MessageLog.open(
            file_engine, origin=f"{ORIGIN}/{n}", body_key=BodyKey.generate(), clock=FakeClock()
        )
        for n in range(3)
    ]
    try:
        for _ in range(30):
            await asyncio.gather(*(log.append([make_entry()]) for log in logs for _ in range(8)))
    finally:
        for log in logs:
            await log.close()
    outputs = [await asyncio.to_thread(child.communicate, timeout=120) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        assert out.split() == [str(30 * 16)], err
        assert "Traceback" not in err, err
    assert "checkpointing the write-ahead log failed" not in caplog.text
    # Every origin's stored tree is whole: reopening checks the frontier against the head.
    async with file_engine.connect() as conn:
        heads = dict((await conn.execute(sa.select(log_heads.c.origin, log_heads.c.size))).all())
    assert sorted(heads.values()) == [240] * 3 + [480] * 2
    for origin in heads:
        log = await MessageLog.open(
            file_engine, origin=origin, body_key=BodyKey.generate(), clock=FakeClock()
        )
        await log.close()


async def test_a_close_cancelled_during_a_pass_still_closes_the_worker(
    file_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "_CHECKPOINT_PAGES", 10)
    started, release = threading.Event(), threading.Event()

    def slow(dbapi: object) -> None:
        started.set()
        assert release.wait(10)

    monkeypatch.setattr(writer_module, "_run_checkpoint", slow)
    before = {t for t in threading.enumerate() if t.name in (_NAME, "ruta-log-sqlite")}
    log = await MessageLog.open(
        file_engine, origin=ORIGIN, body_key=BodyKey.generate(), clock=FakeClock()
    )
    try:
        await asyncio.gather(*(log.append([make_entry()]) for _ in range(40)))
        assert await asyncio.to_thread(started.wait, 10)
        closing = asyncio.create_task(log.close())
        await asyncio.sleep(0.1)
        closing.cancel()  # a stop's deadline, say, while the pass runs
        with pytest.raises(asyncio.CancelledError):
            await closing
    finally:
        release.set()
    # The worker still closes its connections and stops, and the checkpoint thread with it.
    for _ in range(100):
        left = {t for t in threading.enumerate() if t.name in (_NAME, "ruta-log-sqlite")}
        if left <= before:
            break
        await asyncio.sleep(0.05)
    assert left <= before


def _log_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name in {_NAME, "ruta-log-sqlite"}}


async def test_a_log_whose_writer_fails_to_open_leaves_no_thread_behind(
    file_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer's last step before its threads fails (here its body files): they never start.
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("no body files here")

    monkeypatch.setattr(writer_module, "BodySegmentWriter", refuse)
    before = _log_threads()
    with pytest.raises(OSError, match="no body files here"):
        await MessageLog.open(
            file_engine, origin=ORIGIN, body_key=BodyKey.generate(), clock=FakeClock()
        )
    assert _log_threads() <= before


def test_a_worker_whose_thread_cannot_start_stops_its_checkpoint_thread(
    sqlite_file: Path, file_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    del file_engine  # the schema is there
    start = threading.Thread.start

    def start_unless_the_worker(thread: threading.Thread) -> None:
        if thread.name == "ruta-log-sqlite":
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_unless_the_worker)
    before = _log_threads()
    with pytest.raises(RuntimeError, match="can't start new thread"):
        writer_module._SqliteWorker.for_url(
            sa.make_url(f"sqlite:///{sqlite_file}"), writer_module.CommitTimes()
        )
    assert _log_threads() <= before
