"""Housekeeping of the message log: forget expired replay claims, purge bodies past retention.

A server runs one :class:`LogMaintenance` beside its log. Each round is short (purging works in
bounded chunks) and a failed round is logged and retried at the next interval; neither ever
touches a leaf or a tree node, so every proof stays valid. On a SQLite file, purging also deletes
the body segment files no row names any more (ADR 0040); a round interrupted between the two
leaves those files for the next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import sqlalchemy as sa

from ruta.tasks import cancel_and_wait
from security_server.log.errors import LogError
from security_server.log.store import MessageLog

__all__ = ["DEFAULT_MAINTENANCE_INTERVAL", "LogMaintenance", "MaintenanceRound"]

#: How often a round runs unless told otherwise.
DEFAULT_MAINTENANCE_INTERVAL: Final = timedelta(minutes=1)

_log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class MaintenanceRound:
    """What one round removed."""

    claims_pruned: int
    bodies_purged: int


class LogMaintenance:
    """Runs :meth:`run_once` every ``interval`` until stopped.

    ``body_retention`` ``None`` keeps bodies forever; otherwise bodies of records logged more than
    that long ago are purged.
    """

    def __init__(
        self,
        log: MessageLog,
        *,
        body_retention: timedelta | None = None,
        interval: timedelta = DEFAULT_MAINTENANCE_INTERVAL,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if interval <= timedelta(0):
            raise ValueError("the maintenance interval must be positive")
        if body_retention is not None and body_retention < timedelta(0):
            raise ValueError("body retention cannot be negative")
        self._log = log
        self._retention = body_retention
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> MaintenanceRound:
        """Prune expired claims and purge bodies past retention, now. Raises :class:`LogError`
        or a database error if the store cannot be written (nothing is half-removed: each chunk
        is one transaction)."""
        now = self._clock()
        claims = await self._log.prune_claims(now)
        bodies = 0
        if self._retention is not None:
            bodies = await self._log.purge_bodies(now - self._retention)
        return MaintenanceRound(claims_pruned=claims, bodies_purged=bodies)

    def start(self) -> None:
        """Start the periodic rounds on the running loop (the first one right away)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"ruta-log-maintenance:{self._log.origin}"
            )

    async def stop(self) -> None:
        """Stop the rounds; a round in progress is cancelled between its transactions."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            try:
                done = await self.run_once()
                if done.claims_pruned or done.bodies_purged:
                    _log.info(
                        "log maintenance: %d replay claims pruned, %d bodies purged",
                        done.claims_pruned,
                        done.bodies_purged,
                    )
            except (LogError, sa.exc.SQLAlchemyError, OSError) as exc:
                _log.warning("log maintenance round failed (%s); retrying", type(exc).__name__)
            await asyncio.sleep(self._interval.total_seconds())
