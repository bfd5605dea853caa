"""The adapter: a gRPC server answering a ``.proto`` service's methods from legacy systems.

:meth:`Adapter.load` reads the adapter file, builds the service's message classes from its
descriptors, builds the backends and checks every method's mapping, all before anything listens.
:func:`start_server` serves it with grpc.aio through a generic handler (raw bytes in and out, so
sizes are checked before parsing and after serialising), next to the standard
``grpc.health.v1.Health`` service, under the listener watchdog (:mod:`ruta.listeners`: a server
loop that ends is reported NOT_SERVING and restarted on the same address), and, when the file sets
``[server] metrics_listen``, Prometheus ``/metrics`` over HTTP (the listener, the process collector
and, with TLS, the expiry of the server certificate).

Each call: bound request size, parse, check and extract parameters, ask the legacy system within
the smaller of the method's timeout and the caller's remaining deadline, shape the answer (one
record or many), fill the response, bound its size. A refusal is a gRPC status with the
``ruta-fault`` and ``ruta-fault-id`` trailers (:func:`ruta.faults.abort`). Each call logs one
``info`` line with its method, status, fault, fault id, message id and duration, never request
or answer values.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf.message import DecodeError, Message

from adapters.backends import Backend, BoundCall, build_backend
from adapters.descriptors import MethodModel, ServiceModel, load_service
from adapters.errors import (
    AdapterConfigError,
    AdapterError,
    InvalidLegacyAnswerError,
    InvalidRequestError,
    LegacyNotFoundError,
    LegacyTimeoutError,
    RequestTooLargeError,
    ResultTooLargeError,
)
from adapters.mapping import (
    RequestPlan,
    ResponsePlan,
    build_request_plan,
    build_response_plan,
    check_answer_shape,
    extract_params,
    fill_message,
    lookup,
)
from adapters.spec import LoadedAdapterFile, MethodSpec, ServerSpec, load_adapter_file, parse_listen
from ruta.addresses import join_address
from ruta.call_metadata import MESSAGE_ID_HEADER
from ruta.faults import RutaError, abort, status_of
from ruta.files import FileReadError, read_bounded
from ruta.listeners import ListenerError, Listeners, ListenerSpec
from ruta.metrics_http import certificate_expiry, metrics_handler
from ruta.pki.certs import load_certificate, read_certificate_file
from ruta.pki.errors import MalformedCertificateError
from ruta.pki.keys import MAX_KEY_FILE_BYTES

__all__ = ["Adapter", "BoundMethod", "RunningServer", "start_server"]

_log = logging.getLogger(__name__)

#: Most certificates in the CA file that backends' client certificates must chain to.
MAX_CLIENT_CA_CERTIFICATES: Final = 64


@dataclass(frozen=True, slots=True)
class BoundMethod:
    """One served method: its descriptors, mapping plans and legacy call."""

    name: str
    model: MethodModel
    spec: MethodSpec
    backend: Backend
    call: BoundCall
    request_plan: RequestPlan
    response_plan: ResponsePlan
    timeout: float


class Adapter:
    """A loaded adapter file: the service, its backends and its bound methods."""

    def __init__(
        self,
        *,
        file: LoadedAdapterFile,
        service: ServiceModel,
        backends: Mapping[str, Backend],
        methods: Mapping[str, BoundMethod],
    ) -> None:
        self.file = file
        self.service = service
        self.backends = dict(backends)
        self.methods = dict(methods)

    @property
    def server_spec(self) -> ServerSpec:
        return self.file.spec.server

    @classmethod
    def load(cls, path: str | Path) -> Adapter:
        """Load and check the adapter file at ``path`` (no legacy system is contacted).

        Raises :class:`AdapterConfigError` listing every problem found: file syntax and schema,
        the ``.proto``, methods unknown or streaming, mappings that do not fit the messages,
        queries that are not read-only, parameters that do not exist.
        """
        return cls.from_loaded(load_adapter_file(path))

    @classmethod
    def from_loaded(cls, file: LoadedAdapterFile) -> Adapter:
        """Build the adapter from an already validated file (see :meth:`load`)."""
        spec = file.spec
        section = spec.adapter
        service = load_service(
            section.service,
            proto=file.resolve(section.proto) if section.proto else None,
            descriptor_set=file.resolve(section.descriptor_set) if section.descriptor_set else None,
            include=[file.resolve(p) for p in section.include],
        )
        backends = {
            name: build_backend(name, backend, file.base_dir)
            for name, backend in spec.backends.items()
        }
        problems: list[str] = []
        methods: dict[str, BoundMethod] = {}
        for name, method in spec.methods.items():
            try:
                methods[name] = _bind(name, method, service, backends[method.backend])
            except AdapterConfigError as exc:
                problems.append(exc.message)
        if problems:
            raise AdapterConfigError(
                f"{file.name} does not fit its service:\n  " + "\n  ".join(problems)
            )
        return cls(file=file, service=service, backends=backends, methods=methods)

    async def answer(
        self, method: BoundMethod, request: Message, remaining: float | None
    ) -> Message:
        """Answer one request from the legacy system.

        ``remaining`` is the caller's remaining deadline in seconds (``None``: no deadline).
        Raises :class:`AdapterError` subclasses only; nothing is kept between calls.
        """
        params = extract_params(method.request_plan, request)
        timeout = method.timeout
        if remaining is not None:
            if remaining <= 0:
                raise LegacyTimeoutError(f"the deadline for {method.name} had passed")
            timeout = min(timeout, remaining)
        try:
            async with asyncio.timeout(timeout):
                raw = await method.call.fetch(params, timeout)
        except TimeoutError:
            raise LegacyTimeoutError(
                f"{method.backend.kind} backend {method.backend.name} did not answer "
                f"{method.name} within {timeout:.1f}s"
            ) from None
        record = _shape(raw, method)
        response = method.model.output_class()
        fill_message(response, method.response_plan, record)
        return response

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler serving every bound method (unknown methods: UNIMPLEMENTED)."""
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            name: grpc.unary_unary_rpc_method_handler(self._unary(method))
            for name, method in self.methods.items()
        }
        return grpc.method_handlers_generic_handler(self.service.name, handlers)

    def _unary(self, method: BoundMethod) -> Any:
        limits = self.server_spec

        async def unary(  # noqa: RET503  (abort never returns)
            request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> bytes:
            started = time.monotonic()
            message_id = _message_id(context)
            error: RutaError
            try:
                data = await self._serve_one(method, request, context.time_remaining(), limits)
            except AdapterError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001  (a refusal, never a traceback on the wire)
                _log.error("method %s failed unexpectedly (%s)", method.name, type(exc).__name__)
                error = AdapterError(f"the adapter failed answering {method.name}")
            else:
                _log_call(
                    method,
                    status=grpc.StatusCode.OK,
                    error=None,
                    fault_id=None,
                    message_id=message_id,
                    started=started,
                )
                return data
            fault_id = str(uuid.uuid4())
            _log_call(
                method,
                status=status_of(error.fault),
                error=error,
                fault_id=fault_id,
                message_id=message_id,
                started=started,
            )
            await abort(context, error, fault_id=fault_id)

        return unary

    async def _serve_one(
        self, method: BoundMethod, request: bytes, remaining: float | None, limits: ServerSpec
    ) -> bytes:
        if len(request) > limits.max_request_bytes:
            raise RequestTooLargeError(
                f"request is {len(request)} bytes; the limit is {limits.max_request_bytes}"
            )
        try:
            message = method.model.input_class.FromString(request)
        except DecodeError:
            raise InvalidRequestError(
                f"request is not a valid {method.model.input.full_name}"
            ) from None
        response = await self.answer(method, message, remaining)
        data = response.SerializeToString()
        if len(data) > limits.max_response_bytes:
            raise ResultTooLargeError(
                f"the answer to {method.name} is over {limits.max_response_bytes} bytes"
            )
        return data

    async def aclose(self) -> None:
        """Close every backend (connections, sessions, threads)."""
        for backend in self.backends.values():
            await backend.aclose()


_MESSAGE_ID_RE = re.compile(r"[0-9A-Fa-f-]{1,64}")


def _message_id(context: grpc.aio.ServicerContext[bytes, bytes]) -> str:
    """The caller's ``ruta-message-id`` (set by the provider security server), for the log line
    that pairs this call with the signed exchange; ``-`` when absent or not an id."""
    for key, value in context.invocation_metadata() or ():
        if key == MESSAGE_ID_HEADER and isinstance(value, str) and _MESSAGE_ID_RE.fullmatch(value):
            return value
    return "-"


def _log_call(
    method: BoundMethod,
    *,
    status: grpc.StatusCode,
    error: RutaError | None,
    fault_id: str | None,
    message_id: str,
    started: float,
) -> None:
    """The one ``info`` line per call: method, status, fault and fault id, message id, duration
    (never request or answer values). With ``--log-format json`` the same fields are keys."""
    ms = int((time.monotonic() - started) * 1000)
    fault = str(error.fault) if error is not None else "none"
    _log.info(
        "call %s status=%s fault=%s fault_id=%s message_id=%s ms=%d",
        method.model.path,
        status.name,
        fault,
        fault_id or "-",
        message_id,
        ms,
        extra={
            "method": method.model.path,
            "status": status.name,
            "fault": None if error is None else fault,
            "fault_id": fault_id,
            "message_id": None if message_id == "-" else message_id,
            "duration_ms": ms,
        },
    )


def _bind(name: str, spec: MethodSpec, service: ServiceModel, backend: Backend) -> BoundMethod:
    model = service.methods.get(name)
    where = f"methods.{name}"
    if model is None:
        raise AdapterConfigError(
            f"{where}: {service.name} has no method {name} "
            f"(methods: {', '.join(sorted(service.methods)) or 'none'})"
        )
    if not model.unary:
        raise AdapterConfigError(f"{where}: streaming methods are not supported; only unary")
    request_plan = build_request_plan(
        model.input,
        params=spec.params,
        required=spec.required,
        patterns=spec.patterns,
        where=where,
    )
    response_plan = build_response_plan(
        model.output, spec.fields, auto=spec.auto_fields, where=f"{where}.fields"
    )
    call = backend.bind(name, spec, request_plan.names, lists=request_plan.lists)
    problems = check_answer_shape(
        response_plan,
        many=spec.expect == "many",
        answers_rows=backend.answers_rows,
        text_cells=backend.text_cells,
        where=f"{where}.fields",
    )
    if problems:
        raise AdapterConfigError("\n  ".join(problems))
    return BoundMethod(
        name=name,
        model=model,
        spec=spec,
        backend=backend,
        call=call,
        request_plan=request_plan,
        response_plan=response_plan,
        timeout=spec.timeout_seconds or backend.timeout,
    )


def _shape(raw: Any, method: BoundMethod) -> Any:
    """The record the response is filled from: one record, or ``{"rows": [...]}`` for many."""
    spec = method.spec
    answer = lookup(raw, spec.result_path.split(".")) if spec.result_path else raw
    if spec.expect == "many":
        if answer is None:
            rows: list[Any] = []
        elif isinstance(answer, list | tuple):
            rows = list(answer)
        else:
            rows = [answer]
        if not rows and spec.not_found_when_empty:
            raise LegacyNotFoundError(f"no record found for {method.name}")
        return {"rows": rows}
    if isinstance(answer, list | tuple):
        if not answer:
            raise LegacyNotFoundError(f"no record found for {method.name}")
        if len(answer) > 1:
            raise InvalidLegacyAnswerError(
                f"{method.backend.kind} backend {method.backend.name} returned more than one "
                f"record for {method.name}, which expects one"
            )
        answer = answer[0]
    if answer is None:
        raise LegacyNotFoundError(f"no record found for {method.name}")
    if not isinstance(answer, Mapping):
        raise InvalidLegacyAnswerError(
            f"{method.backend.kind} backend {method.backend.name} answered {method.name} with "
            "something that is not a record"
        )
    return answer


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started adapter: its watched gRPC listener, the bound port, and the metrics endpoint's
    address (``None`` when the file sets no ``metrics_listen``)."""

    listeners: Listeners
    port: int
    metrics_url: str | None = None
    metrics_runner: web.AppRunner | None = None

    async def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING, then stop, letting calls in flight finish within ``grace``."""
        await self.listeners.stop(grace)
        if self.metrics_runner is not None:
            await self.metrics_runner.cleanup()


@dataclass(frozen=True, slots=True)
class _Tls:
    """The server's TLS files as read at start."""

    cert: bytes
    key: bytes
    client_ca: bytes | None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def not_after(self) -> datetime:
        return load_certificate(self.cert).not_valid_after_utc


def _tls(file: LoadedAdapterFile) -> _Tls | None:
    """The server's TLS files (read now, so an unreadable one fails the start), or ``None`` for
    plaintext."""
    spec = file.spec.server
    if spec.tls_cert is None or spec.tls_key is None:
        return None
    try:
        cert = read_certificate_file(file.resolve(spec.tls_cert), what="server.tls_cert")
        key = read_bounded(file.resolve(spec.tls_key), MAX_KEY_FILE_BYTES, what="server.tls_key")
        ca = (
            read_certificate_file(
                file.resolve(spec.tls_client_ca),
                limit=MAX_CLIENT_CA_CERTIFICATES,
                what="server.tls_client_ca",
            )
            if spec.tls_client_ca
            else None
        )
        tls = _Tls(cert=cert, key=key, client_ca=ca)
        tls.not_after()
    except (FileReadError, MalformedCertificateError) as exc:
        raise AdapterConfigError(exc.message) from None
    return tls


async def _serve_metrics(listeners: Listeners, listen: str) -> tuple[web.AppRunner, str]:
    """Serve ``/metrics`` on ``listen``; return the runner and the URL."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(listeners.registry))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = parse_listen(listen)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise AdapterConfigError(
            f"cannot listen on {listen} for metrics ({exc.strerror})"
        ) from None
    bound = runner.addresses[0][1]
    return runner, f"http://{join_address(host, bound)}/metrics"


async def start_server(adapter: Adapter, listen: str | None = None) -> RunningServer:
    """Start serving ``adapter`` (and the health service) on ``listen`` or the file's address,
    under the listener watchdog.

    Port 0 picks a free port (see :attr:`RunningServer.port`). Raises
    :class:`AdapterConfigError` when the address (or ``metrics_listen``) cannot be bound; nothing
    keeps listening then.
    """
    spec = adapter.server_spec
    address = listen or spec.listen
    try:
        parse_listen(address)
    except ValueError as exc:
        raise AdapterConfigError(f"--listen: {exc}") from None
    listeners = Listeners(grace_seconds=spec.shutdown_grace_seconds)
    tls = _tls(adapter.file)
    if tls is not None:
        certificate_expiry(listeners.registry, {"tls": tls.not_after})
    handler = adapter.handler()
    try:
        listener = listeners.bind(
            ListenerSpec(
                name="adapter",
                listen=address,
                add_services=lambda server: server.add_generic_rpc_handlers((handler,)),
                health_names=(adapter.service.name,),
                credentials=None if tls is None else tls.credentials,
                options=(
                    ("grpc.max_receive_message_length", spec.max_request_bytes),
                    ("grpc.max_send_message_length", spec.max_response_bytes),
                ),
                max_concurrent_calls=spec.max_concurrent_calls,
            )
        )
    except ListenerError:
        raise AdapterConfigError(f"cannot listen on {address}") from None
    runner: web.AppRunner | None = None
    metrics_url: str | None = None
    try:
        if spec.metrics_listen is not None:
            runner, metrics_url = await _serve_metrics(listeners, spec.metrics_listen)
        await listeners.start()
    except BaseException:
        await listeners.stop(None)
        if runner is not None:
            await runner.cleanup()
        raise
    return RunningServer(
        listeners=listeners, port=listener.port, metrics_url=metrics_url, metrics_runner=runner
    )
