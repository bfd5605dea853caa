"""HTTP face of the witness: ``POST <prefix>/add-checkpoint`` per c2sp.org/tlog-witness.

``witness_routes(witness)`` gives routes to mount in the registry's aiohttp application;
``witness_app(witness)`` wraps them in an application of their own. Status codes follow the spec:
200 with cosignature lines, 400 malformed, 403 no trusted signature, 404 unknown origin, 409 old
size conflict (body: the known size, ``Content-Type: text/x.tlog.size``), 422 bad proof. Every
refusal also carries the fault code in a ``ruta-fault`` header.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from registry.errors import StoreError
from registry.witness import MAX_ADD_CHECKPOINT_BODY, Witness, WitnessConflictError, WitnessError
from ruta.faults import FAULT_HEADER, Fault
from ruta.http_body import read_bounded

__all__ = ["ADD_CHECKPOINT_PATH", "SIZE_CONTENT_TYPE", "witness_app", "witness_routes"]

#: Path of the submission endpoint, below the witness's submission prefix.
ADD_CHECKPOINT_PATH: Final = "/add-checkpoint"
#: Content type of a 409 body (the known tree size).
SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"

_log = logging.getLogger(__name__)


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The request body, or ``None`` when it is longer than ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    return await read_bounded(request.content, limit)


def _refusal(status: int, fault: Fault, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers={FAULT_HEADER: str(fault)})


def witness_routes(witness: Witness, *, prefix: str = "") -> list[web.RouteDef]:
    """Routes serving ``witness`` under ``prefix`` (for example ``""`` or ``"/witness"``)."""

    async def add_checkpoint(request: web.Request) -> web.Response:
        body = await _read_bounded(request, MAX_ADD_CHECKPOINT_BODY)
        if body is None:
            return _refusal(
                413,
                Fault.SERVER_REGISTRY_INVALID_CHECKPOINT,
                f"request body is larger than {MAX_ADD_CHECKPOINT_BODY} bytes",
            )
        try:
            lines = await witness.add_checkpoint_request(body)
        except WitnessConflictError as exc:
            _log.info("witness refused fault=%s status=409: %s", exc.fault, exc.message)
            return web.Response(
                status=409,
                body=f"{exc.known_size}\n".encode("ascii"),
                headers={"Content-Type": SIZE_CONTENT_TYPE, FAULT_HEADER: str(exc.fault)},
            )
        except WitnessError as exc:
            _log.info("witness refused fault=%s status=%d: %s", exc.fault, exc.http_status, exc)
            return _refusal(exc.http_status, exc.fault, exc.message)
        except StoreError as exc:
            _log.warning("witness store failed: %s", exc)
            return _refusal(503, exc.fault, "the witness cannot record checkpoints right now")
        return web.Response(status=200, text=lines, content_type="text/plain", charset="utf-8")

    return [web.post(prefix.rstrip("/") + ADD_CHECKPOINT_PATH, add_checkpoint)]


def witness_app(witness: Witness) -> web.Application:
    """An aiohttp application serving only the witness (mountable with ``add_subapp``)."""
    app = web.Application(client_max_size=MAX_ADD_CHECKPOINT_BODY + 1)
    app.add_routes(witness_routes(witness))
    return app
