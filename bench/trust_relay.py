"""A relay of the benchmark's *trust floor*: the relay floor (:mod:`bench.relay`) plus only the
trust operations the design requires per exchange, each in its cheapest faithful form.

    python -m bench.trust_relay --role consumer|provider --listen 127.0.0.1:0 --target HOST:PORT \
        [--link unary|stream] --sign-key PEM --peer-cert PEM --log DB --stages-file F \
        --ready-file F \
        [--tls-cert PEM --tls-key PEM --tls-client-ca PEM]         # serve mutual TLS
        [--target-ca PEM --target-cert PEM --target-key PEM]       # call the target over mTLS

``bench/exchange.py`` chains two of them like the relay floor (``--trust-floor``): load generator
-> trust relay 1 (``consumer``, plaintext loopback) -> mutual TLS -> trust relay 2 (``provider``)
-> echo backend. Per exchange, and nothing else (no protobuf, no identifiers, no contracts, no
metrics, no frames stream, no hash tree):

- consumer: hash the body (SHA-256), build a ~200-byte header holding the digest and sign it
  (ECDSA P-256 over SHA-256, ``cryptography``); send ``envelope(header, signature, body)`` as the
  call's bytes; on the answer, check the response body's digest and the request hash its header
  carries and verify the provider's signature (public key from ``--peer-cert``, loaded once);
  commit the request and response records in one durable transaction; answer with the body.
- provider: check the request body's digest and verify the consumer's signature; commit the
  replay claim (a unique message id) and the request record in one durable transaction before
  the backend is called; call it; sign the response header (message id, body digest, request
  hash); answer; commit the response record after the answer is handed to gRPC (the bus overlaps
  that commit with the consumer's work, docs/adr/0038).

``--link stream`` (the consumer's choice; a provider serves both): one bidirectional stream
between the two (:data:`LINK_PATH`, tagged frames) instead of a unary call per exchange; the
provider writes the answer's frame, commits the response record, then writes a durability
notice frame, and the consumer answers its caller only once the notice has come (the bus's
shape and ADR 0038's guarantee: both records durable in both logs before the caller's answer).

The log is the stdlib ``sqlite3`` on the event loop's thread, like the bus's quiet path (docs/adr/
0045): a real file, WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` ... ``COMMIT``; a record is a
row with an indexed message id and a blob of its signed header and signature.

Each stage's time is kept (``time.perf_counter_ns``); SIGUSR1 writes the medians since the last
SIGUSR1 to ``--stages-file`` (as JSON, replaced atomically) and starts afresh, so the harness can
read the measured calls apart from the warm-up. Runs on uvloop like ``ruta ss serve``; writes
``{"address": "HOST:PORT", "pid": N}`` to the ready file once it serves; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import os
import signal
import sqlite3
import statistics
import struct
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.aio
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.relay import _loop_factory, add_link_arguments, check_link_arguments, relay_server
from ruta.readiness import stop_event

__all__ = ["decode_envelope", "encode_envelope", "serve"]

_SIGNATURE: Final = ec.ECDSA(hashes.SHA256())
#: Envelope prefix: header length, signature length.
_PREFIX: Final = struct.Struct("!HB")
#: Record kinds in the log.
_REQUEST: Final = 0
_RESPONSE: Final = 1
#: The header's fixed part, about as long as the bus's serialised MessageHeader's names.
_NAMES: Final = (
    b"client=DEV/GOV/SOC/BENEFITS;service=DEV/GOV/POP/REGISTRY/bench.v1.Echo;"
    b"method=Echo;purpose=benchmark;sender=DEV/GOV/SOC/ss1;receiver=DEV/GOV/POP/ss1;"
)
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, message_id BLOB NOT NULL,"
    " kind INTEGER NOT NULL, record BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS records_message_id ON records (message_id)",
    "CREATE TABLE IF NOT EXISTS claims (message_id BLOB PRIMARY KEY) WITHOUT ROWID",
)
_INSERT_RECORD: Final = "INSERT INTO records (message_id, kind, record) VALUES (?, ?, ?)"
_INSERT_CLAIM: Final = "INSERT INTO claims (message_id) VALUES (?)"
#: The stream link's method (``--link stream``) and its frames: consumer -> provider
#: ``tag, timeout_ms, len(path), path, envelope``; provider -> consumer ``tag, kind, payload``.
LINK_PATH: Final = "/bench.TrustFloor/Link"
_TAG: Final = struct.Struct("!Q")
_TIMEOUT: Final = struct.Struct("!I")
_ANSWER: Final = b"A"
_NOTICE: Final = b"N"
_FAULT: Final = b"F"


class TrustError(Exception):
    """A message failed its check (digest, signature, envelope, or a replayed message id);
    ``code`` is the gRPC status a caller is refused with."""

    def __init__(
        self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED
    ) -> None:
        super().__init__(message)
        self.code = code


def encode_envelope(header: bytes, signature: bytes, body: bytes) -> bytes:
    """``header`` and ``signature`` in front of ``body``, with their lengths."""
    return b"".join((_PREFIX.pack(len(header), len(signature)), header, signature, body))


def decode_envelope(data: bytes) -> tuple[bytes, bytes, bytes]:
    """``(header, signature, body)`` of :func:`encode_envelope`'s bytes; :class:`TrustError`
    if they do not hold one."""
    if len(data) < _PREFIX.size:
        raise TrustError("short envelope")
    header_len, signature_len = _PREFIX.unpack_from(data)
    start = _PREFIX.size
    body_at = start + header_len + signature_len
    if len(data) < body_at:
        raise TrustError("short envelope")
    view = memoryview(data)
    return (
        bytes(view[start : start + header_len]),
        bytes(view[start + header_len : body_at]),
        bytes(view[body_at:]),
    )


class Stages:
    """Nanoseconds per stage since the last :meth:`drain`."""

    def __init__(self) -> None:
        self._samples: dict[str, list[int]] = defaultdict(list)

    def add(self, stage: str, nanoseconds: int) -> None:
        self._samples[stage].append(nanoseconds)

    def drain(self) -> dict[str, dict[str, float]]:
        """Median and count of each stage (µs), then forget them."""
        out = {
            stage: {"median_us": round(statistics.median(times) / 1e3, 1), "count": len(times)}
            for stage, times in self._samples.items()
            if times
        }
        self._samples.clear()
        return out


class TrustLog:
    """The floor's durable log: one SQLite file, every transaction committed on the calling
    (loop's) thread, ``synchronous=FULL``."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def commit(self, records: tuple[tuple[bytes, int, bytes], ...], claim: bytes | None) -> None:
        """Write ``records`` (and the replay ``claim``, first) in one durable transaction;
        :class:`TrustError` if the claim was already taken (nothing written)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if claim is not None:
                db.execute(_INSERT_CLAIM, (claim,))
            db.executemany(_INSERT_RECORD, records)
        except sqlite3.IntegrityError as exc:
            db.execute("ROLLBACK")
            raise TrustError("replayed message id", grpc.StatusCode.ALREADY_EXISTS) from exc
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


def _header(message_id: bytes, body_digest: bytes, request_hash: bytes = b"") -> bytes:
    return b"".join(
        (
            b"id=",
            message_id,
            b";",
            _NAMES,
            b"created=",
            str(time.time_ns()).encode(),
            b";body_sha256=",
            body_digest,
            b";request_hash=",
            request_hash,
        )
    )


def _field(header: bytes, name: bytes) -> bytes:
    """The 32-byte digest after ``name`` in a header built by :func:`_header`."""
    at = header.find(name)
    if at < 0:
        raise TrustError(f"no {name!r} in the header")
    start = at + len(name)
    return header[start : start + 32]


def _encode_request_frame(tag: bytes, timeout_ms: int, path: str, envelope: bytes) -> bytes:
    route = path.encode()
    return b"".join((tag, _TIMEOUT.pack(timeout_ms), bytes((len(route),)), route, envelope))


def _decode_request_frame(frame: bytes) -> tuple[bytes, int, str, bytes]:
    """``(tag, timeout_ms, path, envelope)`` of :func:`_encode_request_frame`'s bytes."""
    at = _TAG.size
    (timeout_ms,) = _TIMEOUT.unpack_from(frame, at)
    at += _TIMEOUT.size
    route_len = frame[at]
    path = frame[at + 1 : at + 1 + route_len].decode()
    return frame[: _TAG.size], timeout_ms, path, frame[at + 1 + route_len :]


class _ConsumerLink:
    """The consumer's end of the stream link (``--link stream``): one bidirectional stream to
    the provider, opened on first use; request frames are tagged, and a reader task hands each
    answer and durability notice to the exchange waiting for it."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._open: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
            LINK_PATH
        )
        self._stream: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[bytes, tuple[asyncio.Future[bytes], asyncio.Future[None]]] = {}
        self._sent = 0
        self._writing = asyncio.Lock()

    async def send(
        self, path: str, envelope: bytes, time_left: float | None
    ) -> tuple[bytes, asyncio.Future[None]]:
        """Send one request; return its answer's envelope and a future settled by its notice.
        Raises :class:`TrustError` if the provider refused it or the stream broke."""
        if self._stream is None:
            self._stream = self._open()
            self._reader = asyncio.create_task(self._read(self._stream))
        stream = self._stream
        self._sent += 1
        tag = _TAG.pack(self._sent)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()
        notice: asyncio.Future[None] = loop.create_future()
        self._pending[tag] = (answer, notice)
        timeout_ms = 0 if time_left is None else max(1, int(time_left * 1e3))
        async with self._writing:
            await stream.write(_encode_request_frame(tag, timeout_ms, path, envelope))
        return await answer, notice

    async def _read(self, stream: Any) -> None:
        reason = "link closed"
        try:
            while (frame := await stream.read()) is not grpc.aio.EOF:
                tag, kind, payload = frame[: _TAG.size], frame[_TAG.size], frame[_TAG.size + 1 :]
                waiting = self._pending.get(tag)
                if waiting is None:
                    continue
                answer, notice = waiting
                if kind == _ANSWER[0]:
                    answer.set_result(payload)
                    continue
                del self._pending[tag]
                if kind == _NOTICE[0]:
                    notice.set_result(None)
                else:
                    fault = TrustError(
                        payload.decode(errors="replace"), grpc.StatusCode.UNAVAILABLE
                    )
                    answer.set_exception(fault)
                    notice.cancel()
        except grpc.aio.AioRpcError as exc:
            reason = f"link failed: {exc.code().name}"
        finally:
            if self._stream is stream:
                self._stream = None
            pending, self._pending = self._pending, {}
            for answer, notice in pending.values():
                if not answer.done():
                    answer.set_exception(TrustError(reason, grpc.StatusCode.UNAVAILABLE))
                    notice.cancel()
                elif not notice.done():
                    notice.set_exception(TrustError(reason, grpc.StatusCode.UNAVAILABLE))


class _Relay(grpc.GenericRpcHandler):
    """Every unary method: the role's trust work around a forward of the body to the target."""

    def __init__(
        self,
        *,
        role: str,
        channel: grpc.aio.Channel,
        key: ec.EllipticCurvePrivateKey,
        peer: ec.EllipticCurvePublicKey,
        log: TrustLog,
        stages: Stages,
        link: str = "unary",
    ) -> None:
        self._role = role
        self._channel = channel
        self._key = key
        self._peer = peer
        self._log = log
        self._stages = stages
        self._handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}
        self._calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        self._link = _ConsumerLink(channel) if link == "stream" and role == "consumer" else None

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        path = handler_call_details.method
        handler = self._handlers.get(path)
        if handler is None:
            if path == LINK_PATH:
                if self._role != "provider":
                    return None
                handler = grpc.stream_stream_rpc_method_handler(
                    self._provider_link(), request_deserializer=None, response_serializer=None
                )
            else:
                behaviour = (
                    self._consumer(path) if self._role == "consumer" else self._provider(path)
                )
                handler = grpc.unary_unary_rpc_method_handler(
                    behaviour, request_deserializer=None, response_serializer=None
                )
            self._handlers[path] = handler
        return handler

    def _call(self, path: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        """The target's unary method ``path`` (one callable per path)."""
        call = self._calls.get(path)
        if call is None:
            call = self._calls[path] = self._channel.unary_unary(path)
        return call

    def _verify(
        self, header: bytes, signature: bytes, body: bytes, request_hash: bytes | None = None
    ) -> None:
        """:class:`TrustError` unless ``body`` has the digest ``header`` holds (and the request
        hash, if given) and ``signature`` is the peer's over ``header``."""
        if hashlib.sha256(body).digest() != _field(header, b";body_sha256="):
            raise TrustError("body digest")
        if request_hash is not None and _field(header, b";request_hash=") != request_hash:
            raise TrustError("request hash")
        try:
            self._peer.verify(signature, header, _SIGNATURE)
        except InvalidSignature as exc:
            raise TrustError("signature") from exc

    def _consumer(
        self, path: str
    ) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Any]:
        stages, key, log = self._stages, self._key, self._log
        clock = time.perf_counter_ns
        call, link = self._call(path), self._link

        async def send(
            envelope: bytes, time_left: float | None
        ) -> tuple[bytes, asyncio.Future[None] | None]:
            if link is not None:
                return await link.send(path, envelope, time_left)
            return await call(envelope, timeout=time_left), None

        async def exchange(body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            t0 = clock()
            message_id = os.urandom(16).hex().encode()
            header = _header(message_id, hashlib.sha256(body).digest())
            signature = key.sign(header, _SIGNATURE)
            t1 = clock()
            stages.add("sign", t1 - t0)
            try:
                answer, notice = await send(
                    encode_envelope(header, signature, body), context.time_remaining()
                )
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
                raise  # not reached: abort raises
            except TrustError as exc:
                await context.abort(exc.code, str(exc))
                raise  # not reached
            t2 = clock()
            stages.add("upstream", t2 - t1)
            try:
                r_header, r_signature, r_body = decode_envelope(answer)
                request_hash = hashlib.sha256(header + signature).digest()
                self._verify(r_header, r_signature, r_body, request_hash)
            except TrustError as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
                raise  # not reached
            t3 = clock()
            stages.add("verify", t3 - t2)
            log.commit(
                (
                    (message_id, _REQUEST, header + signature),
                    (message_id, _RESPONSE, r_header + r_signature),
                ),
                None,
            )
            t4 = clock()
            stages.add("commit", t4 - t3)
            if notice is not None:  # the stream link: answer once the provider's is durable
                try:
                    await notice
                except TrustError as exc:
                    await context.abort(exc.code, str(exc))
                    raise  # not reached
                stages.add("notice_wait", clock() - t4)
            return r_body

        return exchange

    def _provider(
        self, path: str
    ) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Any]:
        call = self._call(path)
        commit_response = self._commit_response

        async def exchange(data: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            try:
                envelope, message_id, record = await self._provide(
                    call, data, context.time_remaining()
                )
            except TrustError as exc:
                await context.abort(exc.code, str(exc))
                raise  # not reached
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
                raise  # not reached
            # Runs once this handler has returned and gRPC holds the answer (a lower bound of
            # the bus's response commit, which overlaps the consumer's work).
            asyncio.get_running_loop().call_soon(commit_response, message_id, record)
            return envelope

        return exchange

    def _commit_response(self, message_id: bytes, record: bytes) -> None:
        started = time.perf_counter_ns()
        self._log.commit(((message_id, _RESPONSE, record),), None)
        self._stages.add("commit_response", time.perf_counter_ns() - started)

    async def _provide(
        self,
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
        data: bytes,
        time_left: float | None,
    ) -> tuple[bytes, bytes, bytes]:
        """The provider's work before its answer: verify, commit the claim and the request
        record, call the backend, sign. Returns the answer's envelope, the message id and the
        response record to commit; raises :class:`TrustError` (with its status code) or the
        backend call's error."""
        stages, clock = self._stages, time.perf_counter_ns
        t0 = clock()
        try:
            header, signature, body = decode_envelope(data)
            self._verify(header, signature, body)
            message_id = header[3 : header.index(b";")]
        except ValueError as exc:
            raise TrustError("no message id") from exc
        t1 = clock()
        stages.add("verify", t1 - t0)
        self._log.commit(((message_id, _REQUEST, header + signature),), message_id)
        t2 = clock()
        stages.add("commit_request", t2 - t1)
        answer = await call(body, timeout=time_left)
        t3 = clock()
        stages.add("backend", t3 - t2)
        r_header = _header(
            message_id,
            hashlib.sha256(answer).digest(),
            hashlib.sha256(header + signature).digest(),
        )
        r_signature = self._key.sign(r_header, _SIGNATURE)
        stages.add("sign", clock() - t3)
        return encode_envelope(r_header, r_signature, answer), message_id, r_header + r_signature

    def _provider_link(
        self,
    ) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[bytes, bytes]], Any]:
        """The provider's end of the stream link: each request frame handled in a task of its
        own; its response frame written, then its response record committed, then its
        durability notice written (the bus's order, docs/adr/0038)."""

        async def link(
            frames: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> None:
            writing = asyncio.Lock()
            tasks: set[asyncio.Task[None]] = set()

            async def write(frame: bytes) -> None:
                async with writing:
                    await context.write(frame)

            async def handle(frame: bytes) -> None:
                tag, timeout_ms, path, data = _decode_request_frame(frame)
                try:
                    envelope, message_id, record = await self._provide(
                        self._call(path), data, timeout_ms / 1e3 if timeout_ms else None
                    )
                except TrustError as exc:
                    await write(tag + _FAULT + str(exc).encode())
                    return
                except grpc.aio.AioRpcError as exc:
                    await write(tag + _FAULT + (exc.details() or "backend").encode())
                    return
                await write(tag + _ANSWER + envelope)
                self._commit_response(message_id, record)
                await write(tag + _NOTICE)

            async for frame in frames:
                task = asyncio.create_task(handle(frame))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)

        return link


def _write_stages(path: Path, stages: Stages) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(stages.drain()))
    temporary.replace(path)


async def serve(args: argparse.Namespace) -> None:
    """Relay ``args.listen`` -> ``args.target`` with the role's trust work until SIGTERM."""
    stop = stop_event()
    key = serialization.load_pem_private_key(args.sign_key.read_bytes(), password=None)
    peer = x509.load_pem_x509_certificate(args.peer_cert.read_bytes()).public_key()
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
        peer, ec.EllipticCurvePublicKey
    ):
        raise SystemExit("--sign-key and --peer-cert must hold EC keys")
    stages = Stages()
    log = TrustLog(args.log)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, _write_stages, args.stages_file, stages)
    relay = functools.partial(
        _Relay, role=args.role, key=key, peer=peer, log=log, stages=stages, link=args.link
    )
    try:
        async with relay_server(args, lambda channel: relay(channel=channel)):
            await stop.wait()
    finally:
        await asyncio.sleep(0)  # the last response commit, if one is pending
        log.close()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.trust_relay", description=__doc__)
    parser.add_argument("--role", choices=("consumer", "provider"), required=True)
    add_link_arguments(parser)
    parser.add_argument(
        "--link",
        choices=("unary", "stream"),
        default="unary",
        help="consumer to provider: one unary call per exchange, or one bidirectional stream "
        "with a durability notice per exchange (the bus's shape)",
    )
    parser.add_argument("--sign-key", type=Path, required=True, help="this side's signing key")
    parser.add_argument("--peer-cert", type=Path, required=True, help="the other side's cert")
    parser.add_argument("--log", type=Path, required=True, help="the SQLite log file")
    parser.add_argument("--stages-file", type=Path, required=True, help="SIGUSR1 writes here")
    args = parser.parse_args(argv)
    check_link_arguments(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module's text)."""
    args = _parse(argv)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
