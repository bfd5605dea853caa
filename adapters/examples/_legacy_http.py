"""Running an example legacy HTTP service until SIGTERM/SIGINT: what the tax and business
examples share (bind, announce, ready file, clean shutdown)."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from ruta.addresses import join_address, split_address
from ruta.readiness import stop_event, write_ready_file

__all__ = ["run_legacy_service"]


async def _serve(
    app: web.Application,
    listen: str,
    *,
    name: str,
    url_path: str,
    ready_extra: Callable[[str], dict[str, object]],
    ready_file: Path | None,
) -> None:
    host, port = split_address(listen)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses[0][1]
        address = join_address(host, bound)
        url = f"http://{address}{url_path}"
        print(f"{name} listening on {url}", flush=True)  # noqa: T201
        if ready_file is not None:
            content: dict[str, object] = {"address": address, "url": url}
            write_ready_file(ready_file, {**content, **ready_extra(url), "pid": os.getpid()})
        await stop_event().wait()
    finally:
        await runner.cleanup()


def run_legacy_service(
    argv: list[str] | None,
    make_app: Callable[[], web.Application],
    *,
    name: str,
    description: str,
    default_listen: str,
    url_path: str = "",
    ready_extra: Callable[[str], dict[str, object]] = lambda _url: {},
) -> int:
    """Parse ``--listen HOST:PORT`` and ``--ready-file PATH`` from ``argv``, then serve
    ``make_app()`` until SIGTERM/SIGINT. Once listening, prints where and writes the ready file
    (``address``, ``url``, ``pid`` and ``ready_extra(url)``). Returns the exit status; a
    malformed ``--listen`` exits with argparse's usage error."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--listen", default=default_listen, metavar="HOST:PORT")
    parser.add_argument(
        "--ready-file", type=Path, default=None, help="once listening, write the address here"
    )
    args = parser.parse_args(argv)
    try:
        split_address(args.listen, what="--listen")
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(
        _serve(
            make_app(),
            args.listen,
            name=name,
            url_path=url_path,
            ready_extra=ready_extra,
            ready_file=args.ready_file,
        )
    )
    return 0
