"""Child process of the fault suite: the example population backend, which appends each call's
``ruta-message-id`` to a file before answering (an O_APPEND write, so it survives a SIGKILL).

Usage: ``python -m tests.faults.backend_child LISTEN ACTED_FILE READY_FILE``
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import grpc.aio

from sandbox.examples.population import PopulationBackend


class _CountingBackend(PopulationBackend):
    acted_fd: int = -1

    async def _get_person(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        message_id = metadata.get("ruta-message-id", "none")
        text = message_id.decode() if isinstance(message_id, bytes) else message_id
        os.write(self.acted_fd, f"{text}\n".encode())
        return await super()._get_person(raw, context)


async def _main(listen: str, acted: str, ready: str) -> None:
    backend = _CountingBackend()
    backend.acted_fd = os.open(acted, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    server, _ = await backend.start(listen)
    with open(ready, "w") as out:  # noqa: ASYNC230 - once, at start-up
        out.write("{}")
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], sys.argv[3]))
