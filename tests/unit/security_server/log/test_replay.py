"""The replay guard on real databases: atomic, durable across restarts, batched with appends."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.faults import Fault
from security_server.log import (
    BodyKey,
    InvalidLogEntryError,
    LogMaintenance,
    LogWriteError,
    MaintenanceRound,
    MessageLog,
    ReplayedMessageError,
    ReplayGuard,
    StaleMessageError,
)
from tests.unit.security_server.log.support import CLIENT, ORIGIN, FakeClock, make_entry

FRESHNESS = timedelta(minutes=5)


async def test_a_repeated_id_is_refused(log: MessageLog, clock: FakeClock) -> None:
    guard = ReplayGuard(log, clock=clock)
    await guard.check_and_record(str(CLIENT), "m-1", clock.now, FRESHNESS)
    with pytest.raises(ReplayedMessageError) as info:
        await guard.check_and_record(str(CLIENT), "m-1", clock.now, FRESHNESS)
    assert info.value.fault is Fault.SERVER_PROVIDER_REPLAYED_MESSAGE
    # The same id from another client is another message.
    await guard.check_and_record(str(CLIENT.member.subsystem("other")), "m-1", clock.now, FRESHNESS)


async def test_concurrent_claims_of_one_id_admit_exactly_one(
    log: MessageLog, clock: FakeClock
) -> None:
    guard = ReplayGuard(log, clock=clock)
    outcomes = await asyncio.gather(
        *(guard.check_and_record(str(CLIENT), "same", clock.now, FRESHNESS) for _ in range(10)),
        *(guard.check_and_record(str(CLIENT), f"id-{i}", clock.now, FRESHNESS) for i in range(50)),
        return_exceptions=True,
    )
    same, distinct = outcomes[:10], outcomes[10:]
    assert sum(o is None for o in same) == 1
    assert all(isinstance(o, ReplayedMessageError) for o in same if o is not None)
    assert all(o is None for o in distinct)
    assert log.stats.transactions <= 3
    assert log.stats.claims == 51


async def test_the_guard_survives_a_restart(
    engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> None:
    first = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key, clock=clock)
    await ReplayGuard(first, clock=clock).check_and_record(str(CLIENT), "m", clock.now, FRESHNESS)
    await first.close()
    second = await MessageLog.open(engine, origin=ORIGIN, body_key=body_key, clock=clock)
    try:
        with pytest.raises(ReplayedMessageError):
            await ReplayGuard(second, clock=clock).check_and_record(
                str(CLIENT), "m", clock.now, FRESHNESS
            )
    finally:
        await second.close()


@pytest.mark.parametrize("offset", [-301, 301, -3600])
async def test_stale_messages_are_refused(log: MessageLog, clock: FakeClock, offset: int) -> None:
    guard = ReplayGuard(log, clock=clock)
    with pytest.raises(StaleMessageError) as info:
        await guard.check_and_record(
            str(CLIENT), "m", clock.now + timedelta(seconds=offset), FRESHNESS
        )
    assert info.value.fault is Fault.SERVER_PROVIDER_STALE_MESSAGE


@pytest.mark.parametrize(
    ("message_id", "freshness"),
    [("", FRESHNESS), ("x" * 129, FRESHNESS), ("m", timedelta(0)), ("m", timedelta(days=2))],
)
async def test_bad_claims_are_refused(
    log: MessageLog, clock: FakeClock, message_id: str, freshness: timedelta
) -> None:
    with pytest.raises(InvalidLogEntryError):
        await ReplayGuard(log, clock=clock).check_and_record(
            str(CLIENT), message_id, clock.now, freshness
        )


async def test_prune_forgets_expired_ids_only(log: MessageLog, clock: FakeClock) -> None:
    guard = ReplayGuard(log, clock=clock)
    created = clock.now
    await guard.check_and_record(str(CLIENT), "old", created, FRESHNESS)
    clock.advance(200)
    await guard.check_and_record(str(CLIENT), "young", clock.now, FRESHNESS)
    clock.advance(200)  # "old" expired 100 s ago; "young" has 100 s left

    assert await guard.prune() == 1
    with pytest.raises(ReplayedMessageError):
        await guard.check_and_record(
            str(CLIENT), "young", clock.now - timedelta(seconds=200), FRESHNESS
        )


async def test_an_expired_unpruned_claim_can_be_reused(log: MessageLog, clock: FakeClock) -> None:
    guard = ReplayGuard(log, clock=clock)
    await guard.check_and_record(str(CLIENT), "m", clock.now, FRESHNESS)
    clock.advance(FRESHNESS.total_seconds() + 1)
    await guard.check_and_record(str(CLIENT), "m", clock.now, FRESHNESS)


async def test_append_with_claim_is_atomic(log: MessageLog, clock: FakeClock) -> None:
    guard = ReplayGuard(log, clock=clock)
    claim = guard.claim_for(str(CLIENT), "m-1", clock.now, FRESHNESS)
    [record] = await log.append([make_entry(message_id="m-1")], claim=claim)
    assert record.seq == 0

    with pytest.raises(ReplayedMessageError):
        await log.append([make_entry(message_id="m-1")], claim=claim)
    assert log.size() == 1
    with pytest.raises(ReplayedMessageError):
        await guard.check_and_record(str(CLIENT), "m-1", clock.now, FRESHNESS)


async def test_a_closed_log_refuses_claims(log: MessageLog, clock: FakeClock) -> None:
    await log.close()
    with pytest.raises(LogWriteError) as info:
        await ReplayGuard(log, clock=clock).check_and_record(str(CLIENT), "m", clock.now, FRESHNESS)
    assert "closed" in info.value.message


async def test_nodes_sharing_a_database_refuse_each_others_replays(
    engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> None:
    node1 = await MessageLog.open(engine, origin="ruta.test/node1", body_key=body_key, clock=clock)
    node2 = await MessageLog.open(engine, origin="ruta.test/node2", body_key=body_key, clock=clock)
    try:
        await ReplayGuard(node1, clock=clock).check_and_record(
            str(CLIENT), "m", clock.now, FRESHNESS
        )
        with pytest.raises(ReplayedMessageError):
            await ReplayGuard(node2, clock=clock).check_and_record(
                str(CLIENT), "m", clock.now, FRESHNESS
            )
    finally:
        await node1.close()
        await node2.close()


async def test_nodes_claiming_the_same_ids_at_once_admit_each_exactly_once(
    engine: AsyncEngine, body_key: BodyKey, clock: FakeClock
) -> None:
    """Two nodes' writers claim overlapping ids in opposite orders at the same time: each id is
    granted to exactly one of them and no group fails (on PostgreSQL their transactions lock
    the claims in one order, so they queue instead of deadlocking)."""
    node1 = await MessageLog.open(engine, origin="ruta.test/node1", body_key=body_key, clock=clock)
    node2 = await MessageLog.open(engine, origin="ruta.test/node2", body_key=body_key, clock=clock)
    ids = [f"m-{i:02d}" for i in range(24)]
    try:
        attempts = [
            ReplayGuard(node, clock=clock).check_and_record(str(CLIENT), m, clock.now, FRESHNESS)
            for node, order in ((node1, ids), (node2, ids[::-1]))
            for m in order
        ]
        outcomes = await asyncio.gather(*attempts, return_exceptions=True)
    finally:
        await node1.close()
        await node2.close()
    first, second = outcomes[: len(ids)], outcomes[len(ids) :][::-1]
    for mine, theirs in zip(first, second, strict=True):
        assert [o is None for o in (mine, theirs)].count(True) == 1, (mine, theirs)
        assert all(o is None or isinstance(o, ReplayedMessageError) for o in (mine, theirs))


async def test_maintenance_prunes_claims_and_purges_old_bodies(
    log: MessageLog, clock: FakeClock
) -> None:
    guard = ReplayGuard(log, clock=clock)
    await guard.check_and_record(str(CLIENT), "m", clock.now, FRESHNESS)
    await log.append([make_entry(body=b"old")])
    clock.advance(2 * 86_400)
    await log.append([make_entry(body=b"new")])

    keep_forever = LogMaintenance(log, clock=clock)
    assert await keep_forever.run_once() == MaintenanceRound(claims_pruned=1, bodies_purged=0)
    one_day = LogMaintenance(log, body_retention=timedelta(days=1), clock=clock)
    assert await one_day.run_once() == MaintenanceRound(claims_pruned=0, bodies_purged=1)
    assert (await log.get_body(0), await log.get_body(1)) == (None, b"new")

    one_day.start()
    await one_day.stop()
