"""``ruta ss backup``: a consistent copy of a security server's state while it runs.

The copy is made in the order ``docs/operator/security-server-config.md`` ("Backups") gives, so
every record in it is whole:

1. the message log's SQLite database, through SQLite's online backup (one read transaction:
   every record committed before it began, none half-written, whatever the writers do);
2. then the log's body segment files (``<database>-bodies/``): a body is written and synced
   before the record naming it commits, so every body the copied database names is already on
   disk when this step reads it;
3. then the rest of the data folder (the body key and log key in ``keys/``, the last good
   configuration, the refusal records), and the settings file.

Then the copy is checked as a server checks its log when it opens it: each origin's stored tree
against its head, and every body reference against the copied segment files. ``backup.json`` in
the copy says what it holds, and what it does not: a PostgreSQL log (back it up with the
database's own tools), and key or certificate files the settings name outside the data folder.

Restoring: stop the server, put ``data/`` back as the data folder (and, for a ``[log] url``
outside it, ``log/<file>`` and ``log/<file>-bodies/`` where that URL names), then start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import click
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.settings import ConfigError
from security_server.database import SQLITE_BUSY_TIMEOUT_MS, create_engine, sqlite_file
from security_server.log import BodyKey, LogIntegrityError, LogKeyError, LogReader
from security_server.log.bodies import BodySegments, body_file_root
from security_server.log.keys import BODY_KEY_FILE, load_or_create_body_key
from security_server.log.schema import log_bodies, log_heads, purged_body
from security_server.server import READY_FILE
from security_server.settings import SecurityServerSettings
from security_server.settings_cli import CONFIG_OPTION

__all__ = ["MANIFEST_FILE", "BackupError", "BackupReport", "back_up", "backup"]

#: What the copy holds, written last (its presence says the copy finished).
MANIFEST_FILE: Final = "backup.json"
#: The copy of the data folder, inside the backup.
DATA_FOLDER: Final = "data"
#: Where a log database outside the data folder goes, inside the backup.
LOG_FOLDER: Final = "log"
#: How long a read of the live log waits for another connection's lock: the server's own bound.
_BUSY_SECONDS: Final = SQLITE_BUSY_TIMEOUT_MS / 1000
#: Records looked up in one query of the live log.
_SEQS_PER_QUERY: Final = 500


class BackupError(Exception):
    """The backup could not be made (the message names why); a partial copy is left as it is
    and holds no manifest."""


@dataclass
class BackupReport:
    """What one backup copied and checked (also written as the manifest)."""

    destination: Path
    began_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The log database's copy, inside the backup; None for a PostgreSQL log.
    database: Path | None = None
    #: Records per origin in the copied log, each origin's tree checked against its head.
    records: dict[str, int] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0
    #: Files that went away while being copied (a segment retention deleted, a rotated file).
    vanished: list[str] = field(default_factory=list)
    #: Bodies the copied rows name but the copied segment files lack (the copy then fails).
    unreadable_bodies: int = 0
    #: Bodies retention purged on the live log while the copy was made, purged in it too.
    purged_meanwhile: int = 0
    #: What the backup does not hold and the operator must keep otherwise.
    not_included: list[str] = field(default_factory=list)

    def manifest(self, settings: SecurityServerSettings) -> dict[str, Any]:
        return {
            "format": 1,
            # The log is as of a commit between these two.
            "began_at": self.began_at.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "server_id": settings.server_id,
            "data_dir": str(settings.data_dir),
            "database": None
            if self.database is None
            else str(self.database.relative_to(self.destination)),
            "records": self.records,
            "files": self.files,
            "bytes": self.bytes,
            "vanished": self.vanished,
            "purged_meanwhile": self.purged_meanwhile,
            "not_included": self.not_included,
        }


def back_up(settings: SecurityServerSettings, config: Path, destination: Path) -> BackupReport:
    """Copy the server described by ``settings`` (read from ``config``) into ``destination``, a
    folder that must not exist yet (its parent must). Raises :class:`BackupError`."""
    try:
        return _back_up(settings, config, destination)
    except OSError as exc:  # a full disk, a file that cannot be read, a mode that cannot be set
        where = f" ({exc.filename})" if exc.filename else ""
        raise BackupError(f"the backup could not be made: {exc.strerror or exc}{where}") from None


def _back_up(settings: SecurityServerSettings, config: Path, destination: Path) -> BackupReport:
    data_dir = settings.data_dir.resolve()
    database = sqlite_file(settings.log_url)
    bodies = body_file_root(settings.log_url)
    _create(destination, inside=(data_dir, None if bodies is None else bodies.resolve()))
    report = BackupReport(destination=destination)
    skip: set[Path] = set()
    if database is None:
        report.not_included.append(
            "the message log's database (not a SQLite file): back it up with the database's "
            "own tools (pg_dump), before this copy of the data folder"
        )
    else:
        source = Path(database).resolve()
        if source.is_relative_to(data_dir):
            copy = destination / DATA_FOLDER / source.relative_to(data_dir)
        else:
            copy = destination / LOG_FOLDER / source.name
        _make_folders(copy.parent)
        _copy_database(source, copy)
        report.database = copy
        report.files += 1
        report.bytes += copy.stat().st_size
        if bodies is not None:
            bodies = bodies.resolve()
            if bodies.is_dir():
                _copy_tree(bodies, Path(f"{copy}-bodies"), report, skip=set())
            skip.add(bodies)
        skip |= {source, Path(f"{source}-wal"), Path(f"{source}-shm"), Path(f"{source}-journal")}
    if data_dir.is_dir():
        _copy_tree(data_dir, destination / DATA_FOLDER, report, skip=skip)
    else:
        raise BackupError(f"the data folder {data_dir} does not exist")
    if not config.resolve().is_relative_to(data_dir):  # else it is in data/ already
        _copy_file(config, destination / config.name, report)
    report.not_included.extend(_outside(settings, data_dir))
    if report.database is not None:
        _check(report, source, destination / DATA_FOLDER / "keys")
    manifest = destination / MANIFEST_FILE
    manifest.write_text(json.dumps(report.manifest(settings), indent=2) + "\n")
    manifest.chmod(0o600)
    return report


def _create(destination: Path, *, inside: tuple[Path | None, ...]) -> None:
    """Make the backup's folder (0700): new, and not inside a folder it copies."""
    for folder in inside:
        if folder is not None and destination.resolve().is_relative_to(folder):
            raise BackupError(f"{destination} is inside {folder}, which it would copy into itself")
    try:
        destination.mkdir(mode=0o700)
    except FileExistsError:
        raise BackupError(f"{destination} exists; a backup goes into a new folder") from None
    except OSError as exc:
        raise BackupError(f"{destination} cannot be created ({exc.strerror})") from None


def _make_folders(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _copy_database(source: Path, copy: Path) -> None:
    """SQLite's online backup of ``source`` into ``copy``, all pages in one step: one read
    transaction, so the copy is the database as of one commit (writers go on meanwhile)."""
    if not source.is_file():
        raise BackupError(f"the message log's database {source} does not exist")
    try:
        with (
            contextlib.closing(sqlite3.connect(source, timeout=_BUSY_SECONDS)) as reader,
            contextlib.closing(sqlite3.connect(copy)) as writer,
        ):
            reader.backup(writer)
    except sqlite3.Error as exc:
        raise BackupError(f"the message log's database could not be copied ({exc})") from None
    copy.chmod(0o600)


def _copy_tree(source: Path, target: Path, report: BackupReport, *, skip: set[Path]) -> None:
    """Copy the regular files and folders under ``source`` to ``target`` (modes kept, folders
    0700 at most), leaving out the paths in ``skip``; a file that goes away meanwhile is noted,
    not an error."""
    _make_folders(target)
    for entry in _entries(source, report):
        path = Path(entry.path)
        if path in skip or entry.name == READY_FILE:  # a running process's, not its state
            continue
        try:
            if entry.is_symlink():
                report.not_included.append(f"{path} (a symbolic link: copy what it names)")
            elif entry.is_dir(follow_symlinks=False):
                _copy_tree(path, target / entry.name, report, skip=skip)
            elif entry.is_file(follow_symlinks=False):
                _copy_file(path, target / entry.name, report)
        except FileNotFoundError:
            report.vanished.append(str(path))


def _entries(folder: Path, report: BackupReport) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            yield from sorted(entries, key=lambda e: e.name)
    except FileNotFoundError:
        report.vanished.append(str(folder))


def _copy_file(source: Path, target: Path, report: BackupReport) -> None:
    shutil.copy2(source, target, follow_symlinks=False)
    mode = stat.S_IMODE(target.stat().st_mode)
    target.chmod(mode & 0o700 if mode & 0o077 and _is_secret(source) else mode)
    report.files += 1
    report.bytes += target.stat().st_size


def _is_secret(path: Path) -> bool:
    """Key files keep no group or other bits in the copy, whatever the original had."""
    return path.suffix == ".key" or path.parent.name == "keys"


def _outside(settings: SecurityServerSettings, data_dir: Path) -> list[str]:
    """The files the settings name outside the data folder (keys, certificates, trust anchors),
    each with the setting that names it; the sections :meth:`SecurityServerSettings.resolved`
    reads paths from."""
    sections: list[tuple[str, BaseModel]] = [
        ("keys", settings.keys),
        ("globalconf", settings.globalconf),
        ("consumer", settings.consumer),
        ("checkpoints", settings.checkpoints),
        ("audit", settings.audit),
        ("console", settings.console),
        *(("backends", backend) for backend in settings.backends),
    ]
    return [
        f"{value} (named by the settings' [{section}] {name}, outside the data folder)"
        for section, model in sections
        for name, value in model
        if isinstance(value, Path) and not value.resolve().is_relative_to(data_dir)
    ]


def _check(report: BackupReport, live: Path, key_dir: Path) -> None:
    """Open the copied log as a server would: each origin's tree against its head; each copied
    row's body file reference against the copied files (a body retention purged on the live
    log since the copy's snapshot, its segment then deleted, is purged in the copy too); and one
    body per body key with the copied key. Raises :class:`BackupError` if the copy is not whole.
    """
    assert report.database is not None  # noqa: S101 - only called with a database copy
    url = f"sqlite+aiosqlite:///{report.database}"
    key_file = key_dir / BODY_KEY_FILE
    try:
        key = load_or_create_body_key(key_dir) if key_file.is_file() else None
        asyncio.run(_read_back(report, url, live, key))
    except LogIntegrityError as exc:
        raise BackupError(f"the copied log does not check: {exc.message}") from None
    except LogKeyError as exc:
        raise BackupError(f"the copied body key does not open the copied bodies: {exc}") from None
    if report.unreadable_bodies:
        raise BackupError(
            f"{report.unreadable_bodies} bodies named by the copied log are missing from the "
            "copied body files; the copy is incomplete"
        )


async def _read_back(report: BackupReport, url: str, live: Path, key: BodyKey | None) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            origins = (await conn.execute(sa.select(log_heads.c.origin))).scalars().all()
            ends = (
                await conn.execute(
                    sa.select(
                        log_bodies.c.origin,
                        log_bodies.c.segment,
                        sa.func.max(log_bodies.c.position + log_bodies.c.length),
                    )
                    .where(log_bodies.c.segment.is_not(None))
                    .group_by(log_bodies.c.origin, log_bodies.c.segment)
                )
            ).all()
        for origin, segment, end in ends:
            segments = BodySegments.for_url(url, origin)
            assert segments is not None  # noqa: S101 - a SQLite file's log
            try:
                size = segments.path(segment).stat().st_size
            except FileNotFoundError:
                size = 0
            if size < end:  # rare: the rows that reach past the copied file's end
                await _short_segment(
                    report, engine, live=live, origin=origin, segment=segment, size=size
                )
        for origin in sorted(origins):
            reader = await LogReader.open(engine, origin=origin, body_key=key or BodyKey.generate())
            report.records[origin] = reader.size()
            await _open_one_body_per_key(engine, reader, key)
    finally:
        await engine.dispose()


async def _short_segment(
    report: BackupReport, engine: AsyncEngine, *, live: Path, origin: str, segment: int, size: int
) -> None:
    """The copied rows of ``segment`` that its copied file is too short for: those the live
    log has purged since (retention deletes a segment once no row names it) are purged in the
    copy as they were there; the rest are missing."""
    short = (
        log_bodies.c.origin == origin,
        log_bodies.c.segment == segment,
        log_bodies.c.position + log_bodies.c.length > size,
    )
    async with engine.begin() as conn:
        seqs = [
            int(s)
            for s in (await conn.execute(sa.select(log_bodies.c.seq).where(*short))).scalars()
        ]
        purged = _purged_on_the_live_log(live, origin, seqs)
        for seq, purged_at in purged.items():
            await conn.execute(
                sa.update(log_bodies)
                .where(log_bodies.c.origin == origin, log_bodies.c.seq == seq)
                .values(purged_body(purged_at))
            )
    report.purged_meanwhile += len(purged)
    report.unreadable_bodies += len(seqs) - len(purged)


def _purged_on_the_live_log(live: Path, origin: str, seqs: list[int]) -> dict[int, int]:
    """When each of these records' bodies was purged on the live log (opened read only), if it
    was."""
    purged: dict[int, int] = {}
    if not seqs:
        return purged
    engine = sa.create_engine(
        f"sqlite+pysqlite:///file:{live}?mode=ro&uri=true",
        connect_args={"timeout": _BUSY_SECONDS},
    )
    try:
        with engine.connect() as conn:
            for start in range(0, len(seqs), _SEQS_PER_QUERY):
                rows = conn.execute(
                    sa.select(log_bodies.c.seq, log_bodies.c.purged_at).where(
                        log_bodies.c.origin == origin,
                        log_bodies.c.purged_at.is_not(None),
                        log_bodies.c.seq.in_(seqs[start : start + _SEQS_PER_QUERY]),
                    )
                )
                purged.update({int(row.seq): int(row.purged_at) for row in rows})
    finally:
        engine.dispose()
    return purged


async def _open_one_body_per_key(
    engine: AsyncEngine, reader: LogReader, key: BodyKey | None
) -> None:
    """Open the first stored body under each body key the copied rows name, with the copied
    key: a copy whose key cannot open its bodies is no backup. Raises :class:`LogKeyError`."""
    async with engine.connect() as conn:
        firsts = (
            (
                await conn.execute(
                    sa.select(sa.func.min(log_bodies.c.seq))
                    .where(log_bodies.c.origin == reader.origin, log_bodies.c.purged_at.is_(None))
                    .group_by(log_bodies.c.key_id)
                )
            )
            .scalars()
            .all()
        )
    if firsts and key is None:
        raise LogKeyError(f"the body key file {BODY_KEY_FILE} is not in the copy")
    for seq in firsts:
        await reader.get_body(int(seq))


@click.command("backup")
@CONFIG_OPTION
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
def backup(config: Path, destination: Path) -> None:
    """Copy the server's message log, its bodies, its data folder and its settings file into
    DESTINATION (a new folder), while the server runs.

    The log is copied as of one commit, then its bodies, then the rest (the order that keeps
    every copied record whole), and the copy is checked as the server checks its log on start.
    DESTINATION/backup.json says what the copy holds and what it does not. Exits 1 if the copy
    could not be made or does not check.
    """
    try:
        settings = SecurityServerSettings.from_file(config)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    try:
        report = back_up(settings, config, destination)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    for origin, size in report.records.items():
        click.echo(f"log {origin}: {size} records, tree checked against its head")
    click.echo(f"{report.files} files, {report.bytes} bytes in {destination}")
    for path in report.vanished:
        click.echo(f"went away while copied (not in the backup): {path}")
    for what in report.not_included:
        click.echo(f"not in the backup: {what}")
    if report.purged_meanwhile:
        click.echo(
            f"{report.purged_meanwhile} bodies were purged by retention while copied; "
            "they are purged in the copy too"
        )
