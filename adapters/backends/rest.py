"""The rest backend: calls to a legacy HTTP/JSON service with aiohttp.

A method names the HTTP method, a path template (``/persons/{national_id}``: each value is
percent-encoded as one path segment, so a value can never change the path), query parameters,
headers and, for POST/PUT, a JSON body built from request parameters. Calls that are idempotent
(GET, HEAD, PUT, DELETE, OPTIONS, or a method marked ``idempotent = true``) are retried on
connection failures, timeouts and 429/502/503/504 answers, with exponential back-off, while the
call's time allows. Answers are read up to ``max_response_bytes`` and parsed as JSON.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import string
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from adapters.backends import Backend, BoundCall
from adapters.errors import (
    AdapterConfigError,
    InvalidLegacyAnswerError,
    InvalidRequestError,
    LegacyNotFoundError,
    LegacyTimeoutError,
    LegacyUnavailableError,
    ResultTooLargeError,
)
from adapters.spec import MethodSpec, RestBackendSpec

__all__ = ["RestBackend"]

_log = logging.getLogger(__name__)

_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_RETRY_STATUS: Final = frozenset({429, 502, 503, 504})
_CLIENT_REFUSAL: Final = frozenset({400, 409, 422})
_CHUNK: Final = 64 * 1024


class _RetryableError(Exception):
    """An attempt failed in a way another attempt may not."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class RestBackend(Backend):
    """A legacy HTTP/JSON service."""

    kind = "rest"

    def __init__(self, name: str, spec: RestBackendSpec) -> None:
        super().__init__(name, timeout=spec.timeout_seconds)
        self.spec = spec
        self.base_url = spec.base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The shared client session, created on first use inside the running loop."""
        if self._session is None or self._session.closed:
            headers = {k: v.get_secret_value() for k, v in self.spec.headers.items()}
            self._session = aiohttp.ClientSession(
                headers=headers, trust_env=False, raise_for_status=False
            )
        return self._session

    def bind(
        self,
        method: str,
        spec: MethodSpec,
        params: frozenset[str],
        *,
        lists: Mapping[str, int] | None = None,
    ) -> BoundCall:
        """Check the path template, query and body against the request parameters."""
        if spec.path is None:  # AdapterFile validation requires it; an API caller may not
            raise AdapterConfigError(f"methods.{method}: a rest method needs a path")
        if not spec.path.startswith("/"):
            raise AdapterConfigError(f"methods.{method}.path: must start with '/'")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(spec.path) if f is not None]
        except ValueError:
            raise AdapterConfigError(f"methods.{method}.path: unbalanced braces") from None
        for field in fields:
            if not field.isidentifier():
                raise AdapterConfigError(
                    f"methods.{method}.path: {{{field}}} must name a parameter, nothing more"
                )
        used = {f"path {{{f}}}": f for f in fields} | {
            f"query_params.{k}": v for k, v in spec.query_params.items()
        }
        used |= {f"body.{k}": v for k, v in (spec.body or {}).items()}
        for where, name in used.items():
            if name not in params:
                raise AdapterConfigError(
                    f"methods.{method}.{where}: no request parameter {name!r} "
                    f"(parameters: {', '.join(sorted(params)) or 'none'})"
                )
        if spec.body is not None and spec.http_method in {"GET", "HEAD"}:
            raise AdapterConfigError(f"methods.{method}.body: {spec.http_method} takes no body")
        idempotent = (
            spec.idempotent if spec.idempotent is not None else (spec.http_method in _IDEMPOTENT)
        )
        return _RestCall(self, method, spec, spec.path, idempotent=idempotent)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class _RestCall(BoundCall):
    def __init__(
        self, backend: RestBackend, method: str, spec: MethodSpec, path: str, *, idempotent: bool
    ) -> None:
        self.backend = backend
        self.method = method
        self.spec = spec
        #: The method's path template (``spec.path``, checked by :meth:`RestBackend.bind`).
        self.path = path
        self.attempts = 1 + (backend.spec.retries if idempotent else 0)

    def _url(self, params: Mapping[str, Any]) -> str:
        encoded = {name: quote(_text(value), safe="") for name, value in params.items()}
        path = self.path.format_map(encoded)
        # quote() keeps dots, and URLs drop "." and ".." segments (even as %2E): a request
        # value must not move the call to another path on the legacy host.
        if any(segment in {".", ".."} for segment in path.split("?", 1)[0].split("/")):
            raise InvalidRequestError(
                f"a request value of {self.method} would form a '.' or '..' segment of the "
                "legacy path; refused"
            )
        return self.backend.base_url + path

    def _query(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        query: list[tuple[str, str]] = []
        for key, name in self.spec.query_params.items():
            value = params[name]
            items = value if isinstance(value, list) else [value]
            query.extend((key, _text(item)) for item in items)
        return query

    async def fetch(self, params: Mapping[str, Any], budget: float) -> Any:
        backend = self.backend
        deadline = time.monotonic() + budget
        body = (
            {k: _json_value(params[v]) for k, v in self.spec.body.items()}
            if self.spec.body
            else None
        )
        url, query = self._url(params), self._query(params)
        last: Exception | None = None
        for attempt in range(self.attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return await self._attempt(url, query, body, remaining)
            except _RetryableError as retry:
                last = retry.error
            pause = min(backend.spec.backoff_seconds * (2**attempt), deadline - time.monotonic())
            if attempt + 1 < self.attempts and pause > 0:
                await asyncio.sleep(pause)
        if isinstance(last, LegacyUnavailableError):
            raise last
        raise LegacyTimeoutError(
            f"REST backend {backend.name} did not answer {self.method} within {budget:.1f}s"
        )

    async def _attempt(
        self, url: str, query: list[tuple[str, str]], body: Any, remaining: float
    ) -> Any:
        backend = self.backend
        try:
            async with backend.session().request(
                self.spec.http_method,
                url,
                params=query,
                json=body,
                headers=self.spec.headers,
                timeout=aiohttp.ClientTimeout(total=remaining),
                allow_redirects=False,
            ) as response:
                status = response.status
                if status in self.spec.not_found_status:
                    raise LegacyNotFoundError(f"no record found for {self.method}")
                if status in _RETRY_STATUS or status >= 500:
                    _log.warning("backend %s: HTTP status %d", backend.name, status)
                    error = LegacyUnavailableError(
                        f"REST backend {backend.name} failed (HTTP {status})"
                    )
                    if status in _RETRY_STATUS:
                        raise _RetryableError(error)
                    raise error
                if status in _CLIENT_REFUSAL:
                    raise InvalidRequestError(
                        f"REST backend {backend.name} refused the request (HTTP {status})"
                    )
                if not 200 <= status < 300:
                    _log.warning("backend %s: unexpected HTTP status %d", backend.name, status)
                    raise LegacyUnavailableError(
                        f"REST backend {backend.name} answered HTTP {status}; "
                        "check the adapter's address and credentials"
                    )
                raw = await self._read(response)
        except TimeoutError as exc:
            raise _RetryableError(exc) from None
        except aiohttp.ClientError as exc:
            _log.warning("backend %s: request failed (%s)", backend.name, type(exc).__name__)
            raise _RetryableError(
                LegacyUnavailableError(f"REST backend {backend.name} cannot be reached")
            ) from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidLegacyAnswerError(
                f"REST backend {backend.name} answered {self.method} with something that is not "
                "JSON"
            ) from None

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.backend.spec.max_response_bytes
        too_large = ResultTooLargeError(
            f"REST backend {self.backend.name} answered {self.method} with more than {limit} bytes"
        )
        if response.content_length is not None and response.content_length > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def probe(self, budget: float) -> frozenset[str] | None:
        backend = self.backend
        try:
            async with backend.session().get(
                backend.base_url + "/",
                timeout=aiohttp.ClientTimeout(total=budget),
                allow_redirects=False,
            ) as response:
                await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            _log.warning("backend %s: probe failed (%s)", backend.name, type(exc).__name__)
            raise LegacyUnavailableError(f"REST backend {backend.name} cannot be reached") from None
        return None


def _json_value(value: Any) -> Any:
    """A request value as JSON can carry it: bytes as base64, times as ISO 8601."""
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)
