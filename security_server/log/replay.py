"""Replay protection: each client's message ids are remembered, durably, for their freshness
window, so neither a repeat nor a restart of the server lets a message through twice.

Claims are stored in ``seen_messages`` (shared by every node of one database, so a replay sent to
another node of the same agency is refused too) and written by the message log's group-commit
writer: a claim rides in the same transaction as the appends around it, costing no transaction
of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from security_server.log.errors import StaleMessageError
from security_server.log.model import InvalidLogEntryError, MessageClaim
from security_server.log.store import MessageLog

__all__ = ["MAX_FRESHNESS", "ReplayGuard"]

#: Longest freshness window accepted (the seen-ids table holds ids this long).
MAX_FRESHNESS: Final = timedelta(days=1)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ReplayGuard:
    """Refuses a message id a client has used within the freshness window. Durable."""

    def __init__(self, log: MessageLog, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._log = log
        self._clock = clock

    def claim_for(
        self, client: str, message_id: str, created_at: datetime, freshness: timedelta
    ) -> MessageClaim:
        """Check freshness and return the claim to record (for :meth:`MessageLog.append`'s
        ``claim=``, which records it atomically with the append).

        A message is fresh while ``|now - created_at| <= freshness``; its claim lasts until
        ``created_at + freshness``, after which a repeat is refused as stale anyway. Raises
        :class:`StaleMessageError` for a message outside the window, and
        :class:`InvalidLogEntryError` for a naive time, an empty or over-long id, or a freshness
        outside (0, :data:`MAX_FRESHNESS`].
        """
        if not timedelta(0) < freshness <= MAX_FRESHNESS:
            raise InvalidLogEntryError(
                f"a freshness window is positive and at most {MAX_FRESHNESS}"
            )
        claim = MessageClaim(
            client=client, message_id=message_id, expires_at=created_at + freshness
        )
        now = self._clock()
        if abs(now - created_at) > freshness:
            raise StaleMessageError(
                f"message {message_id!r} was created at {created_at.isoformat()}, outside the "
                f"{int(freshness.total_seconds())} s freshness window; check the sender's clock"
            )
        return claim

    async def check_and_record(
        self,
        client: str,
        message_id: str,
        created_at: datetime,
        freshness: timedelta,
    ) -> None:
        """Refuse a stale or repeated message id; otherwise remember it durably, then return.

        Atomic across concurrent callers and across nodes sharing the database: of two claims of
        one id exactly one succeeds. Raises :class:`StaleMessageError` (outside the window),
        :class:`ReplayedMessageError` (seen before), or :class:`LogWriteError`
        (not stored; the message must be refused).
        """
        claim = self.claim_for(client, message_id, created_at, freshness)
        await self._log.record_claim(claim)

    async def prune(self, now: datetime | None = None) -> int:
        """Forget ids whose window ended before ``now`` (default: the clock); return how many."""
        return await self._log.prune_claims(now if now is not None else self._clock())
