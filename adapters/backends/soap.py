"""The soap backend: operations of a legacy SOAP service, called with zeep in worker threads.

This is the one module that touches zeep, requests and lxml (all untyped). XML is parsed safely:
zeep runs with ``forbid_dtd``, ``forbid_entities`` and ``forbid_external`` (no DOCTYPE, no entity
declarations, no fetching of anything the WSDL imports) and without lxml's huge-tree mode. Every
HTTP answer and the WSDL are read up to a byte bound. The WSDL is loaded on first use (or by a
check), so an adapter starts while its SOAP service is down and serves once it is back.

zeep is synchronous: calls run in a small thread pool per backend. When the call's time runs out
the caller stops waiting; the thread ends at the transport timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any, Final

import requests
import zeep
import zeep.exceptions
import zeep.helpers
import zeep.transports
from lxml import etree  # type: ignore[import-untyped]

from adapters.backends import Backend, BoundCall
from adapters.errors import (
    AdapterConfigError,
    AdapterError,
    InvalidLegacyAnswerError,
    InvalidRequestError,
    LegacyNotFoundError,
    LegacyTimeoutError,
    LegacyUnavailableError,
    ResultTooLargeError,
)
from adapters.spec import MethodSpec, SoapBackendSpec

__all__ = ["MAX_WSDL_BYTES", "SoapBackend"]

_log = logging.getLogger(__name__)
# zeep logs whole SOAP payloads (debug) and the values it cannot parse (error, with traceback):
# legacy answers carry personal data, so none of that may reach the adapter's log.
logging.getLogger("zeep").setLevel(logging.CRITICAL)

#: Largest WSDL document loaded.
MAX_WSDL_BYTES: Final = 4 * 1024 * 1024
_CHUNK: Final = 64 * 1024


class _TooLargeError(Exception):
    pass


def _read_bounded(response: requests.Response, limit: int) -> bytes:
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _TooLargeError
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


class _BoundedTransport(zeep.transports.Transport):
    """zeep's transport with byte bounds on every answer and on the WSDL."""

    def __init__(self, *, session: requests.Session, timeout: float, max_bytes: int) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            timeout=timeout, operation_timeout=timeout, session=session
        )
        self.max_bytes = max_bytes
        self.session.headers["User-Agent"] = "Ruta-adapter"

    def post(self, address: str, message: bytes, headers: dict[str, str]) -> requests.Response:
        response = self.session.post(
            address, data=message, headers=headers, timeout=self.operation_timeout, stream=True
        )
        with closing(response):
            content = _read_bounded(response, self.max_bytes)
        # zeep reads .content; the body was read here, under the bound, so hand it over.
        response._content = content
        return response

    def _load_remote_data(self, url: str) -> bytes:
        response = self.session.get(url, timeout=self.load_timeout, stream=True)
        with closing(response):
            response.raise_for_status()
            return _read_bounded(response, MAX_WSDL_BYTES)


class SoapBackend(Backend):
    """A legacy SOAP service."""

    kind = "soap"

    def __init__(self, name: str, spec: SoapBackendSpec, base_dir: Path) -> None:
        super().__init__(name, timeout=spec.timeout_seconds)
        self.spec = spec
        wsdl = spec.wsdl
        if "://" not in wsdl:
            wsdl = str(base_dir / wsdl) if not Path(wsdl).is_absolute() else wsdl
        self._wsdl = wsdl
        self._client: Any = None
        self._session: requests.Session | None = None
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=spec.threads, thread_name_prefix=f"ruta-soap-{name}"
        )

    def bind(
        self,
        method: str,
        spec: MethodSpec,
        params: frozenset[str],
        *,
        lists: Mapping[str, int] | None = None,
    ) -> BoundCall:
        """Return the call of the method's operation (checked against the WSDL by a probe)."""
        if spec.operation is None:  # AdapterFile validation requires it; an API caller may not
            raise AdapterConfigError(f"methods.{method}: a soap method needs an operation")
        return _SoapCall(self, method, spec, spec.operation, params)

    def client(self) -> Any:
        """The zeep client, loading the WSDL on first use (in a worker thread)."""
        with self._lock:
            if self._client is None:
                session = requests.Session()
                session.trust_env = False
                transport = _BoundedTransport(
                    session=session,
                    timeout=self.spec.timeout_seconds,
                    max_bytes=self.spec.max_response_bytes,
                )
                settings = zeep.Settings(
                    strict=True,
                    xml_huge_tree=False,
                    forbid_dtd=True,
                    forbid_entities=True,
                    forbid_external=True,
                )
                try:
                    client = zeep.Client(  # type: ignore[no-untyped-call]
                        self._wsdl,
                        transport=transport,
                        settings=settings,
                        service_name=self.spec.service,
                        port_name=self.spec.port,
                    )
                except BaseException:
                    session.close()
                    raise
                self._session = session
                self._client = client
            return self._client

    def failure(self, exc: BaseException, what: str) -> AdapterError:  # noqa: PLR0911
        """The adapter error for an exception raised by zeep, requests or lxml."""
        name = self.name
        _log.warning("backend %s: %s failed (%s)", name, what, type(exc).__name__)
        if isinstance(exc, _TooLargeError):
            return ResultTooLargeError(
                f"SOAP backend {name} answered {what} with more than "
                f"{self.spec.max_response_bytes} bytes"
            )
        if isinstance(exc, requests.Timeout):
            return LegacyTimeoutError(f"SOAP backend {name} did not answer {what} in time")
        if isinstance(exc, requests.RequestException | OSError):
            return LegacyUnavailableError(f"SOAP backend {name} cannot be reached")
        if isinstance(exc, zeep.exceptions.TransportError):
            if 200 <= int(getattr(exc, "status_code", 0) or 0) < 300:
                return InvalidLegacyAnswerError(
                    f"SOAP backend {name} answered {what} with something that is not SOAP XML"
                )
            return LegacyUnavailableError(f"SOAP backend {name} failed (HTTP error)")
        if isinstance(
            exc,
            zeep.exceptions.DTDForbidden
            | zeep.exceptions.EntitiesForbidden
            | zeep.exceptions.ExternalReferenceForbidden,
        ):
            return InvalidLegacyAnswerError(
                f"SOAP backend {name} sent XML with a DTD, entities or external references "
                f"for {what}; refused"
            )
        if isinstance(
            exc,
            zeep.exceptions.Error
            | etree.Error
            | ValueError
            | TypeError
            | AttributeError
            | KeyError
            | IndexError,
        ):
            return InvalidLegacyAnswerError(
                f"SOAP backend {name} answered {what} with XML that does not fit its WSDL"
            )
        return LegacyUnavailableError(f"SOAP backend {name} failed")

    async def run(self, what: str, budget: float, work: Any, *args: Any) -> Any:
        """Run ``work(*args)`` in the backend's threads within ``budget`` seconds; map failures."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, work, *args)
        try:
            async with asyncio.timeout(budget):
                return await future
        except TimeoutError:
            raise LegacyTimeoutError(
                f"SOAP backend {self.name} did not answer {what} within {budget:.1f}s"
            ) from None
        except AdapterError:
            raise
        except Exception as exc:  # noqa: BLE001  (zeep/requests/lxml raise many unrelated types)
            raise self.failure(exc, what) from None

    async def aclose(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)
        with self._lock:
            session, self._session, self._client = self._session, None, None
        if session is not None:
            session.close()


class _SoapCall(BoundCall):
    def __init__(
        self,
        backend: SoapBackend,
        method: str,
        spec: MethodSpec,
        operation: str,
        params: frozenset[str],
    ) -> None:
        self.backend = backend
        self.params = params
        self.method = method
        self.operation = operation
        self.not_found = tuple(spec.not_found_faults)

    def _operation(self, client: Any, params: Mapping[str, Any]) -> Any:
        try:
            operation = getattr(client.service, self.operation)
        except AttributeError:
            raise LegacyUnavailableError(
                f"SOAP backend {self.backend.name}: the WSDL has no operation {self.operation}"
            ) from None
        try:
            client.create_message(client.service, self.operation, **params)
        except TypeError:
            raise AdapterError(
                f"SOAP operation {self.operation} does not take the parameters "
                f"{', '.join(sorted(params)) or '(none)'}; fix the adapter's params"
            ) from None
        return operation

    def _call(self, params: Mapping[str, Any]) -> Any:
        operation = self._operation(self.backend.client(), params)
        try:
            result = operation(**params)
        except zeep.exceptions.Fault as fault:
            code = str(fault.code or "")
            text = str(fault.message or "")
            if any(marker in code or marker in text for marker in self.not_found):
                raise LegacyNotFoundError(f"no record found for {self.method}") from None
            _log.warning("backend %s: SOAP fault (code %s)", self.backend.name, code[:64])
            if code.rpartition(":")[2] in {"Client", "Sender"}:
                raise InvalidRequestError(
                    f"SOAP backend {self.backend.name} refused the request for {self.method}"
                ) from None
            raise LegacyUnavailableError(
                f"SOAP backend {self.backend.name} failed {self.method} (SOAP fault)"
            ) from None
        return zeep.helpers.serialize_object(result, dict)  # type: ignore[no-untyped-call]

    async def fetch(self, params: Mapping[str, Any], budget: float) -> Any:
        return await self.backend.run(self.method, budget, self._call, dict(params))

    def _probe(self) -> None:
        self._operation(self.backend.client(), dict.fromkeys(self.params))

    async def probe(self, budget: float) -> frozenset[str] | None:
        await self.backend.run(f"the WSDL for {self.method}", budget, self._probe)
        return None
