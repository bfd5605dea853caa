"""Helpers for adapter tests: serve an adapter on loopback, call it, run small legacy services."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf import json_format

from adapters.server import Adapter, start_server
from ruta.faults import Fault, fault_from_rpc_error
from tests.conftest import free_port

EXAMPLES = Path(__file__).resolve().parents[3] / "adapters" / "examples"


@dataclass(frozen=True)
class Refusal:
    """What a refused call carried back."""

    code: grpc.StatusCode
    details: str
    fault: Fault | None
    fault_id: str | None = None


@dataclass(frozen=True)
class Served:
    """An adapter serving on a loopback port, with a client channel to it."""

    adapter: Adapter
    channel: grpc.aio.Channel
    port: int

    async def call(
        self, method: str, request: dict[str, Any], *, deadline: float = 10.0
    ) -> dict[str, Any]:
        """Call ``method`` with a request built from ``request`` (a dynamic stub); return the
        answer as a dict with proto field names. Raises AioRpcError on refusal."""
        model = self.adapter.methods[method].model
        stub: grpc.aio.UnaryUnaryMultiCallable[Any, Any] = self.channel.unary_unary(
            model.path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=model.output_class.FromString,
        )
        message = json_format.ParseDict(request, model.input_class())
        answer = await stub(message, timeout=deadline)
        return json_format.MessageToDict(answer, preserving_proto_field_name=True)

    async def refuse(
        self, method: str, request: dict[str, Any], *, deadline: float = 10.0
    ) -> Refusal:
        """Call ``method`` expecting a refusal; return its status, text and fault code."""
        try:
            answer = await self.call(method, request, deadline=deadline)
        except grpc.aio.AioRpcError as error:
            fault, fault_id = fault_from_rpc_error(error)
            return Refusal(
                code=error.code(), details=error.details() or "", fault=fault, fault_id=fault_id
            )
        raise AssertionError(f"expected a refusal, got {answer}")


@asynccontextmanager
async def serving(path: Path) -> AsyncIterator[Served]:
    """Load the adapter file at ``path`` and serve it on a free loopback port."""
    adapter = Adapter.load(path)
    try:
        running = await start_server(adapter, "127.0.0.1:0")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                yield Served(adapter=adapter, channel=channel, port=running.port)
        finally:
            await running.stop(None)
    finally:
        await adapter.aclose()


@asynccontextmanager
async def running_app(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on a free loopback port; yield its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def example(tmp_path: Path, name: str, toml: str | None = None) -> Path:
    """Copy example ``name`` into ``tmp_path``; optionally replace its adapter file text."""
    folder = tmp_path / name
    shutil.copytree(
        EXAMPLES / name,
        folder,
        ignore=shutil.ignore_patterns("__pycache__", "*.db"),
        dirs_exist_ok=True,
    )
    path = folder / "adapter.toml"
    if toml is not None:
        path.write_text(toml, encoding="utf-8")
    return path
