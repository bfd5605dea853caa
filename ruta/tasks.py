"""Stopping a background task: cancel it and wait until it has finished.

Every long-running part (configuration publisher and client, checkpointer, log maintenance,
registry change watcher) owns background tasks and stops them the same way, through
:func:`cancel_and_wait`.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


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
