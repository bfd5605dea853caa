"""Owning background tasks: stopping one (cancel it and wait until it has finished) and a group
of them that ends with its owner.

Every long-running part (configuration publisher and client, checkpointer, log maintenance,
registry change watcher) owns background tasks and stops them the same way, through
:func:`cancel_and_wait`. Work started per stream, per link or per call belongs to a
:class:`TaskOwner`, so no task outlives what started it and a stop can wait for what is still
pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

__all__ = ["TaskOwner", "cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (``None``: nothing to do) and return once it has finished.

    The task's own cancellation is absorbed; if the *caller* is cancelled while it waits, that
    cancellation propagates (a plain ``suppress(CancelledError)`` would swallow it). An
    exception the task raised while finishing propagates too.
    """
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


class TaskOwner:
    """The tasks one stream, link or recorder started: kept referenced while they run, and
    ended with their owner (:meth:`cancel`) or awaited (:meth:`wait`).

    Unlike :class:`asyncio.TaskGroup` it is not bound to one ``async with`` block (a link lives
    across many calls) and one task's failure does not cancel the others (each request on a
    stream stands alone); a task's exception stays with whoever awaits that task.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(
        self, coroutine: Coroutine[Any, Any, _T], *, name: str | None = None
    ) -> asyncio.Task[_T]:
        """Run ``coroutine`` as a task of this owner."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait(self) -> None:
        """Return once every task (also those started meanwhile) has finished."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def cancel(self) -> None:
        """Cancel every task and return once all have finished (their exceptions are theirs;
        a cancellation of the caller propagates)."""
        while self._tasks:
            tasks = set(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            for task in tasks:
                if not task.cancelled():
                    task.exception()  # retrieved: a failure while stopping is not an error here
