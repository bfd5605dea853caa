"""A trivial REST backend for benchmarks: ``POST /echo`` answers with the request's own body.

python -m bench.rest_echo --ready-file F     # writes {"url": "http://127.0.0.1:PORT", "pid"}
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Final

from aiohttp import web

from ruta.readiness import stop_event, write_ready_file

__all__ = ["OPENAPI", "serve"]

#: The OpenAPI description a registry would carry for it.
OPENAPI: Final = {
    "openapi": "3.0.3",
    "info": {"title": "Benchmark REST echo", "version": "1"},
    "paths": {"/echo": {"post": {"responses": {"200": {"description": "the request's body"}}}}},
}


async def _echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), content_type="application/octet-stream")


async def serve(ready_file: Path) -> None:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/echo", _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stop = stop_event()
    write_ready_file(ready_file, {"url": f"http://127.0.0.1:{port}", "pid": os.getpid()})
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.ready_file))


if __name__ == "__main__":
    main()
