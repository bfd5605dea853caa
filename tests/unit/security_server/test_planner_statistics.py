"""Planner statistics: a running server keeps SQLite's fresh, so an audit search by subject or
message id goes through its index instead of walking the log (bench/README.md, "Audit
search"); on PostgreSQL autovacuum does it and the refresh does nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from security_server.database import PlannerStatistics, open_database, refresh_planner_statistics

_PLAN = (
    "EXPLAIN QUERY PLAN SELECT seq FROM log_leaves WHERE origin = 'o' AND seq < 1000000 "
    "AND subject = 's' AND pending IS NULL ORDER BY seq LIMIT 51"
)


async def _statistics_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        tables = {
            row[0]
            for row in await conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
        if "sqlite_stat1" not in tables:
            return 0
        return int(
            (
                await conn.exec_driver_sql(
                    "SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'log_leaves'"
                )
            ).scalar_one()
        )


async def test_sqlite_gets_statistics_and_searches_by_subject_use_its_index(
    database_url: str,
) -> None:
    engine = await open_database(database_url)
    try:
        await refresh_planner_statistics(engine)  # on PostgreSQL: nothing, and no error
        if engine.dialect.name != "sqlite":
            return
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "WITH RECURSIVE n(value) AS (SELECT 0 UNION ALL SELECT value + 1 FROM n "
                "WHERE value < 4999) "
                "INSERT INTO log_leaves (origin, seq, direction, logged_at, message_id, kind, "
                "client, service, method, subject, created_at, record, leaf_hash) "
                "SELECT 'o', value, 1, value, 'm' || value, 'request', 'c', 's', 'M', "
                "'subject-' || (value / 10), value, x'00', zeroblob(32) FROM n"
            )
        await refresh_planner_statistics(engine)
        assert await _statistics_rows(engine) > 0
        async with engine.connect() as conn:
            plan = " ".join(str(row[-1]) for row in await conn.exec_driver_sql(_PLAN))
        assert "subject" in plan, plan
    finally:
        await engine.dispose()


async def test_a_running_server_refreshes_them_until_stopped(tmp_path: Path) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path}/ss.db")
    try:
        statistics = PlannerStatistics(engine, interval=0.01)
        statistics.start()
        for _ in range(200):
            async with engine.connect() as conn:
                found = (
                    await conn.exec_driver_sql(
                        "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"
                    )
                ).scalar_one()
            if found:
                break
            await asyncio.sleep(0.01)
        await statistics.stop()
        await statistics.stop()  # idempotent
        assert found
    finally:
        await engine.dispose()
