"""The witness client against hostile or absent witnesses (real HTTP over loopback)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import ClientSession, web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ruta.checkpoint import Checkpoint, SignatureType, Verifier, cosign, sign_note
from ruta.faults import Fault
from ruta.witness_client import (
    MAX_WITNESS_RESPONSE,
    WitnessClient,
    WitnessClientError,
    WitnessRefusedError,
    WitnessSizeConflictError,
    format_add_checkpoint_request,
)
from tests.conftest import free_port

WITNESS_KEY = Ed25519PrivateKey.generate()
WITNESS = Verifier.for_key("w.example", SignatureType.COSIGNATURE_V1, WITNESS_KEY)
LOG_KEY = Ed25519PrivateKey.generate()
BODY = Checkpoint(origin="log.example", size=3, root=hashlib.sha256(b"r").digest()).body()
SIGNED = sign_note(BODY, "log.example", LOG_KEY)

Answer = Callable[[bytes], web.Response]


def test_format_request() -> None:
    root = hashlib.sha256(b"x").digest()
    body = format_add_checkpoint_request(2, [root], SIGNED)
    assert body.decode().split("\n")[:3] == [
        "old 2",
        base64.b64encode(root).decode(),
        "",
    ]
    assert body.decode().endswith(SIGNED)
    with pytest.raises(WitnessClientError):
        format_add_checkpoint_request(-1, [], SIGNED)
    with pytest.raises(WitnessClientError):
        format_add_checkpoint_request(1, [root] * 64, SIGNED)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(answer: Answer) -> str:
        async def handler(request: web.Request) -> web.Response:
            return answer(await request.read())

        app = web.Application()
        app.router.add_post("/add-checkpoint", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _good(_: bytes) -> web.Response:
    return web.Response(text=cosign(BODY, "w.example", WITNESS_KEY, 1234).line())


@pytest.mark.parametrize(
    ("answer", "error", "check"),
    [
        (_good, None, None),
        (
            lambda _: web.Response(status=409, text="17\n", content_type="text/x.tlog.size"),
            WitnessSizeConflictError,
            lambda e: e.known_size == 17,
        ),
        (
            lambda _: web.Response(status=409, text="garbage"),
            WitnessSizeConflictError,
            lambda e: e.known_size is None,
        ),
        (lambda _: web.Response(status=403), WitnessRefusedError, lambda e: e.status == 403),
        (lambda _: web.Response(text="not a signature line\n"), WitnessClientError, None),
        (lambda _: web.Response(text=""), WitnessClientError, None),
        (lambda _: web.Response(text="x" * (MAX_WITNESS_RESPONSE + 10)), WitnessClientError, None),
        (
            # A valid cosignature, but over another checkpoint.
            lambda _: web.Response(
                text=cosign(BODY.replace("\n3\n", "\n4\n"), "w.example", WITNESS_KEY, 1).line()
            ),
            WitnessClientError,
            None,
        ),
        (
            # Signed by another key under the witness's name.
            lambda _: web.Response(
                text=cosign(BODY, "w.example", Ed25519PrivateKey.generate(), 1).line()
            ),
            WitnessClientError,
            None,
        ),
    ],
)
async def test_client_checks_answers(
    serve: Callable[[Answer], Awaitable[str]],
    answer: Answer,
    error: type[Exception] | None,
    check: Callable[[object], bool] | None,
) -> None:
    url = await serve(answer)
    async with ClientSession() as session:
        client = WitnessClient(url=url, verifier=WITNESS, session=session)
        if error is None:
            cosig = await client.add_checkpoint(0, [], SIGNED)
            assert cosig.timestamp == 1234
            return
        with pytest.raises(error) as info:
            await client.add_checkpoint(0, [], SIGNED)
        assert getattr(info.value, "fault", None) is Fault.SERVER_PROVIDER_WITNESS_UNAVAILABLE
        if check is not None:
            assert check(info.value)


async def test_unreachable_witness() -> None:
    async with ClientSession() as session:
        client = WitnessClient(
            url=f"http://127.0.0.1:{free_port()}", verifier=WITNESS, session=session
        )
        with pytest.raises(WitnessClientError):
            await client.add_checkpoint(0, [], SIGNED)


async def test_refuses_plain_key_and_malformed_checkpoint() -> None:
    async with ClientSession() as session:
        plain = Verifier.for_key("w.example", SignatureType.ED25519, WITNESS_KEY)
        with pytest.raises(WitnessClientError):
            WitnessClient(url="http://127.0.0.1:1", verifier=plain, session=session)
        client = WitnessClient(url="http://127.0.0.1:1", verifier=WITNESS, session=session)
        with pytest.raises(WitnessClientError):
            await client.add_checkpoint(0, [], "not a note")
