"""ruta.tasks.cancel_and_wait: the task stops; the caller's own cancellation is not swallowed."""

from __future__ import annotations

import asyncio

import pytest

from ruta.tasks import TaskOwner, cancel_and_wait


async def test_the_task_is_cancelled_and_finished() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    await started.wait()
    await cancel_and_wait(task)
    assert task.cancelled()
    await cancel_and_wait(None)
    await cancel_and_wait(task)  # already finished: nothing more happens


async def test_a_task_that_fails_while_stopping_raises() -> None:
    started = asyncio.Event()

    async def fails_on_cancel() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("cleanup failed")

    task = asyncio.create_task(fails_on_cancel())
    await started.wait()
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(task)


async def test_the_callers_cancellation_propagates() -> None:
    release = asyncio.Event()
    waiting = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            waiting.set()
            await release.wait()  # keeps finishing until released

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    outer = asyncio.create_task(cancel_and_wait(inner))
    await waiting.wait()
    outer.cancel()  # the caller is cancelled while it waits
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert outer.cancelled()


async def test_a_task_owner_cancels_and_awaits_every_task_it_started() -> None:
    owner = TaskOwner()
    finished: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            finished.append(name)

    async def failing() -> None:
        raise RuntimeError("boom")

    owner.spawn(forever("a"))
    owner.spawn(forever("b"))
    owner.spawn(failing())
    await asyncio.sleep(0)
    await owner.cancel()
    assert sorted(finished) == ["a", "b"]
    assert len(owner) == 0


async def test_a_task_owner_waits_for_tasks_started_while_it_waits() -> None:
    owner = TaskOwner()
    done: list[int] = []

    async def step(n: int) -> None:
        await asyncio.sleep(0)
        if n < 3:
            owner.spawn(step(n + 1))
        done.append(n)

    owner.spawn(step(0))
    await owner.wait()
    assert done == [0, 1, 2, 3]
