"""``ruta ss backup`` (security_server.backup): a copy of a log that keeps being written, in the
documented order, holds every record acknowledged before it began, whole, bodies in segment
files included; it opens as a server opens its log; what it leaves out, it says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import tomli_w
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncEngine

from security_server import backup as backup_module
from security_server.backup import MANIFEST_FILE, BackupError, BackupReport, back_up, backup
from security_server.database import open_database
from security_server.log import MessageLog, load_or_create_body_key
from security_server.log.schema import log_bodies
from security_server.server import READY_FILE
from security_server.settings import SecurityServerSettings
from tests.unit.security_server.log.support import make_entry
from tests.unit.security_server.settings_document import settings_document


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "ss.toml"
    path.write_text(tomli_w.dumps(settings_document()))
    (tmp_path / "data").mkdir(mode=0o700)
    return path


def _large(n: int) -> bytes:
    return n.to_bytes(4, "big") * 2048  # 8 KiB: a body for the segment files


async def _open(
    settings: SecurityServerSettings, data: Path | None = None
) -> tuple[MessageLog, AsyncEngine]:
    """The server's log (or the one restored in ``data``), as its server opens it."""
    data = data or settings.data_dir
    engine = await open_database(f"sqlite+aiosqlite:///{data / 'messagelog.db'}")
    try:
        log = await MessageLog.open(
            engine,
            origin=settings.log_origin(),
            body_key=load_or_create_body_key(data / "keys"),
            body_files_from=1,  # every large body to the segment files
        )
    except BaseException:
        await engine.dispose()
        raise
    return log, engine


async def _close(log: MessageLog, engine: AsyncEngine) -> None:
    await log.close()
    await engine.dispose()


def _check_copy(
    report: BackupReport, settings: SecurityServerSettings, config: Path, *, acknowledged: int
) -> int:
    """What the copy holds beside the log; returns its record count."""
    destination = report.destination
    origin = settings.log_origin()
    copied = report.records[origin]
    assert copied > acknowledged  # and some of those written while it copied
    assert report.unreadable_bodies == 0
    assert report.vanished == []
    data = destination / "data"
    assert report.database == data / "messagelog.db"
    assert not (data / READY_FILE).exists()
    assert (data / "workers" / "w0").is_dir()
    assert not (data / "workers" / "w0" / READY_FILE).exists()
    assert not (data / "elsewhere").exists()
    assert (data / "refusals.jsonl").read_text() == '{"fault": "x"}\n'
    assert (destination / "ss.toml").read_bytes() == config.read_bytes()
    key = data / "keys" / "log-body.key"
    assert key.read_bytes() == (settings.data_dir / "keys" / "log-body.key").read_bytes()
    assert key.stat().st_mode & 0o077 == 0
    assert destination.stat().st_mode & 0o777 == 0o700
    assert list((data / "messagelog.db-bodies").iterdir())  # the segment files came along
    manifest = json.loads((destination / MANIFEST_FILE).read_text())
    assert manifest["records"] == {origin: copied}
    assert manifest["database"] == "data/messagelog.db"
    assert manifest["purged_meanwhile"] == 0
    assert manifest["began_at"] <= manifest["finished_at"]
    # A link is named, not followed; the files the settings name outside the data folder (the
    # server's own keys and certificates, the trust anchor, the callers' CA) are named, not
    # copied.
    assert [line.split(" (")[0] for line in manifest["not_included"]] == [
        str(settings.data_dir.resolve() / "elsewhere"),
        *(
            str(config.parent / "keys" / name)
            for name in ("auth.key", "auth.pem", "sign.key", "sign.pem")
        ),
        str(config.parent / "anchor.toml"),
        str(config.parent / "ca.pem"),
    ]
    assert manifest["not_included"][1].endswith(
        "(named by the settings' [keys] auth_key, outside the data folder)"
    )
    return copied


async def test_a_copy_made_under_load_holds_every_acknowledged_record_whole(
    config: Path, tmp_path: Path
) -> None:
    settings = SecurityServerSettings.from_file(config)
    (settings.data_dir / READY_FILE).write_text("{}")  # a running server's, not for a backup
    (settings.data_dir / "workers" / "w0").mkdir(parents=True)
    (settings.data_dir / "workers" / "w0" / READY_FILE).write_text("{}")  # nor a worker's
    (settings.data_dir / "elsewhere").symlink_to(tmp_path)
    (settings.data_dir / "refusals.jsonl").write_text('{"fault": "x"}\n')
    log, engine = await _open(settings)
    bodies: dict[int, bytes] = {}
    stop = asyncio.Event()

    async def append(n: int) -> None:
        # Groups of two: one large body (to a segment file) and one small (in its row).
        [large, small] = await log.append(
            [make_entry(body=_large(n)), make_entry(body=b"small %d" % n)]
        )
        bodies[large.seq], bodies[small.seq] = _large(n), b"small %d" % n

    async def keep_appending() -> None:
        n = 1000
        while not stop.is_set():
            await asyncio.gather(*(append(n + i) for i in range(4)))
            n += 4

    try:
        for n in range(40):
            await append(n)
        acknowledged = dict(bodies)
        writer = asyncio.create_task(keep_appending())
        await asyncio.sleep(0.05)
        destination = tmp_path / "backup"
        report = await asyncio.to_thread(back_up, settings, config, destination)
        stop.set()
        await writer
    finally:
        await _close(log, engine)

    copied = _check_copy(report, settings, config, acknowledged=len(acknowledged))
    data = destination / "data"

    # Restored: the log opens (its tree checked against its head), and every record in it,
    # the acknowledged ones and those the copy caught mid-load, has its body.
    restored, engine = await _open(settings, data)
    try:
        assert restored.size() == copied
        async with engine.connect() as conn:
            in_files = await conn.scalar(
                sa.select(sa.func.count()).where(log_bodies.c.segment.is_not(None))
            )
        assert in_files is not None
        assert in_files >= len(acknowledged) // 2
        for seq in range(copied):
            assert await restored.get_body(seq) == bodies[seq]
    finally:
        await _close(restored, engine)


def test_a_destination_that_exists_is_refused_untouched(config: Path, tmp_path: Path) -> None:
    destination = tmp_path / "backup"
    destination.mkdir()
    (destination / "kept").write_text("mine")
    result = CliRunner().invoke(backup, ["--config", str(config), str(destination)])
    assert result.exit_code == 1
    assert "exists; a backup goes into a new folder" in result.output
    assert sorted(p.name for p in destination.iterdir()) == ["kept"]


def test_a_destination_inside_the_data_folder_is_refused(config: Path, tmp_path: Path) -> None:
    destination = tmp_path / "data" / "backup"
    result = CliRunner().invoke(backup, ["--config", str(config), str(destination)])
    assert result.exit_code == 1
    assert "which it would copy into itself" in result.output
    assert not destination.exists()


def test_a_postgresql_log_is_named_as_not_in_the_copy(tmp_path: Path) -> None:
    config = tmp_path / "ss.toml"
    config.write_text(
        tomli_w.dumps(
            settings_document(log={"url": "postgresql+asyncpg://postgres@127.0.0.1:5432/ruta"})
        )
    )
    (tmp_path / "data" / "keys").mkdir(parents=True, mode=0o700)
    (tmp_path / "data" / "keys" / "log-body.key").write_bytes(os.urandom(32))
    destination = tmp_path / "backup"
    result = CliRunner().invoke(backup, ["--config", str(config), str(destination)])
    assert result.exit_code == 0, result.output
    assert "not in the backup: the message log's database (not a SQLite file)" in result.output
    manifest = json.loads((destination / MANIFEST_FILE).read_text())
    assert manifest["database"] is None
    assert manifest["records"] == {}
    assert (destination / "data" / "keys" / "log-body.key").exists()


def test_a_missing_database_is_a_clear_refusal(config: Path, tmp_path: Path) -> None:
    settings = SecurityServerSettings.from_file(config)
    with pytest.raises(BackupError, match=r"messagelog\.db does not exist"):
        back_up(settings, config, tmp_path / "backup")


async def test_the_command_reports_what_it_copied(config: Path, tmp_path: Path) -> None:
    settings = SecurityServerSettings.from_file(config)
    log, engine = await _open(settings)
    try:
        await log.append([make_entry(body=_large(1)), make_entry()])
    finally:
        await _close(log, engine)
    destination = tmp_path / "backup"
    result = await asyncio.to_thread(
        CliRunner().invoke, backup, ["--config", str(config), str(destination)]
    )
    assert result.exit_code == 0, result.output
    assert f"log {settings.log_origin()}: 2 records, tree checked against its head" in (
        result.output
    )
    assert "not in the backup: " + str(tmp_path / "keys" / "auth.key") in result.output


async def test_bodies_the_copied_rows_name_but_the_files_lack_fail_the_backup(
    config: Path, tmp_path: Path
) -> None:
    settings = SecurityServerSettings.from_file(config)
    log, engine = await _open(settings)
    try:
        await log.append([make_entry(body=_large(1)), make_entry(body=_large(2))])
    finally:
        await _close(log, engine)
    # What a copy taken bodies first could hold: a segment that ends where the first body does.
    [segment] = list((settings.data_dir / "messagelog.db-bodies").rglob("*.seg"))
    with contextlib.closing(sqlite3.connect(settings.data_dir / "messagelog.db")) as db:
        [(end,)] = db.execute("SELECT position + length FROM log_bodies WHERE seq = 0").fetchall()
    os.truncate(segment, end)
    destination = tmp_path / "backup"
    result = await asyncio.to_thread(
        CliRunner().invoke, backup, ["--config", str(config), str(destination)]
    )
    assert result.exit_code == 1
    assert "1 bodies named by the copied log are missing from the copied body files" in (
        result.output
    )
    assert not (destination / MANIFEST_FILE).exists()  # a copy that does not check has none


async def test_bodies_retention_purges_while_copied_are_purged_in_the_copy(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = SecurityServerSettings.from_file(config)
    for _ in range(2):  # two starts: two segments, so retention may delete the first
        log, engine = await _open(settings)
        try:
            await log.append([make_entry(body=_large(n)) for n in range(4)])
        finally:
            await _close(log, engine)
    log, engine = await _open(settings)
    loop = asyncio.get_running_loop()
    copy_database = backup_module._copy_database

    def then_retention(source: Path, copy: Path) -> None:
        copy_database(source, copy)
        # The server's maintenance round, between the database's copy and the body files'.
        purge = log.purge_bodies(datetime.now(UTC) + timedelta(days=1))
        assert asyncio.run_coroutine_threadsafe(purge, loop).result() == 8

    monkeypatch.setattr(backup_module, "_copy_database", then_retention)
    try:
        destination = tmp_path / "backup"
        result = await asyncio.to_thread(
            CliRunner().invoke, backup, ["--config", str(config), str(destination)]
        )
    finally:
        await _close(log, engine)
    assert result.exit_code == 0, result.output
    manifest = json.loads((destination / MANIFEST_FILE).read_text())
    # The first segment's four are purged in the copy as on the live log (the segment was
    # deleted before it was copied); the newest segment stays on disk, so its four were copied
    # whole, as of the database's copy.
    assert manifest["purged_meanwhile"] == 4
    assert "4 bodies were purged by retention while copied" in result.output
    restored, engine = await _open(settings, destination / "data")
    try:
        assert [await restored.get_body(seq) for seq in range(8)] == [None] * 4 + [
            _large(n) for n in range(4)
        ]
    finally:
        await _close(restored, engine)


async def test_a_copy_without_the_body_key_fails(config: Path, tmp_path: Path) -> None:
    settings = SecurityServerSettings.from_file(config)
    log, engine = await _open(settings)
    try:
        await log.append([make_entry(body=b"kept")])
    finally:
        await _close(log, engine)
    # keys/ a link to where the key really is: the copy names the link and lacks the key.
    (settings.data_dir / "keys").rename(tmp_path / "real-keys")
    (settings.data_dir / "keys").symlink_to(tmp_path / "real-keys")
    destination = tmp_path / "backup"
    result = await asyncio.to_thread(
        CliRunner().invoke, backup, ["--config", str(config), str(destination)]
    )
    assert result.exit_code == 1
    assert "the body key file log-body.key is not in the copy" in result.output
    assert not (destination / MANIFEST_FILE).exists()


async def test_a_disk_error_is_a_clear_refusal(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = SecurityServerSettings.from_file(config)
    log, engine = await _open(settings)
    try:
        await log.append([make_entry()])
    finally:
        await _close(log, engine)

    def full(source: Path, target: Path, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr("security_server.backup.shutil.copy2", full)
    result = await asyncio.to_thread(
        CliRunner().invoke, backup, ["--config", str(config), str(tmp_path / "backup")]
    )
    assert result.exit_code == 1
    assert "Error: the backup could not be made: No space left on device (" in result.output
    assert not (tmp_path / "backup" / MANIFEST_FILE).exists()
