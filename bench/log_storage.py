"""What a SQLite message log file costs per record: the file's bytes over its records, bodies
excluded (``python -m bench`` reports it for both servers' logs; bench/log_export.py too).

Bodies are the payload, sized by the caller and purged on retention; everything else (leaves,
their indexes, tree nodes, attachments, replay claims, checkpoints) is what the log adds. The
pages of ``log_bodies`` and its key are counted with SQLite's ``dbstat`` table and taken out;
bodies kept in body segment files beside the database (``<file>-bodies/``, ADR 0040) are body
bytes too, counted apart (``body_file_bytes``) and never in the file's size.
Replay claims (``seen_messages``, a provider's) are counted, and also given apart: they are
deleted once their message's freshness window has passed, so a long-lived log holds only the
last few minutes' worth, while a benchmark's log still holds every one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from security_server.log.bodies import body_file_root

__all__ = ["body_file_bytes", "exchange_log_storage", "measure_log_storage"]


def body_file_bytes(db: Path) -> int:
    """Bytes of the body segment files beside the SQLite log file ``db`` (0 if it has none)."""
    root = body_file_root(f"sqlite:///{db}")
    if root is None or not root.is_dir():
        return 0
    total = 0
    for directory, _, files in os.walk(root):
        total += sum(os.path.getsize(os.path.join(directory, name)) for name in files)
    return total


def measure_log_storage(db: Path) -> dict[str, Any]:
    """Records, file size, body bytes (the body pages and the body segment files) and bytes per
    record (body excluded) of the SQLite log file ``db``, and what a million records take.
    Reads the files only (after a checkpoint of the WAL, so the file holds every page)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        records = int(conn.execute("SELECT count(*) FROM log_leaves").fetchone()[0])
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        by_table = {
            str(name): int(size)
            for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
        }
    file_bytes = page_size * pages
    body_bytes = sum(
        size for name, size in by_table.items() if name == "log_bodies" or "log_bodies" in name
    )
    in_files = body_file_bytes(db)
    claim_bytes = sum(size for name, size in by_table.items() if "seen_messages" in name)
    without_bodies = file_bytes - body_bytes - free * page_size
    per_record = without_bodies / records if records else 0.0
    return {
        "records": records,
        "file_bytes": file_bytes,
        "body_bytes": body_bytes + in_files,
        "body_file_bytes": in_files,
        "claim_bytes": claim_bytes,
        "bytes_per_record": round(per_record, 1),
        "bytes_per_record_without_claims": (
            round((without_bodies - claim_bytes) / records, 1) if records else 0.0
        ),
        "bytes_per_million_records": round(per_record * 1_000_000),
        "by_table_bytes": dict(sorted(by_table.items(), key=lambda kv: -kv[1])),
    }


def exchange_log_storage(db: Path) -> dict[str, Any]:
    """:func:`measure_log_storage` as ``python -m bench`` records it per server: bytes per
    record and per million exchanges (each exchange is two records in each server's log:
    request and response), body excluded, and the file's size."""
    measured = measure_log_storage(db)
    per_record = float(measured["bytes_per_record"])
    return {
        "records": measured["records"],
        "file_bytes": measured["file_bytes"],
        "body_bytes": measured["body_bytes"],
        "body_file_bytes": measured["body_file_bytes"],
        "claim_bytes": measured["claim_bytes"],
        "bytes_per_record": per_record,
        "bytes_per_record_without_claims": measured["bytes_per_record_without_claims"],
        "bytes_per_million_exchanges": round(per_record * 2 * 1_000_000),
    }
