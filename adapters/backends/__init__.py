"""Backends: clients of the legacy systems an adapter answers from (sql, rest, soap, csv).

Each backend is built from its ``[backends.NAME]`` table without any I/O, binds each method that
uses it (checking the method's backend keys, so a file that cannot work fails at load), and talks
to its legacy system only when a call or a check needs it. A bound call returns the legacy answer
as JSON-like values (a list of records for sql and csv) and raises only
:class:`~adapters.errors.AdapterError` subclasses, whose texts name the backend, never its
address, credentials or the legacy system's own error text.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.spec import (
    BackendSpec,
    CsvBackendSpec,
    MethodSpec,
    RestBackendSpec,
    SoapBackendSpec,
    SqlBackendSpec,
)

__all__ = ["Backend", "BoundCall", "build_backend"]


class BoundCall(abc.ABC):
    """One method's call to the legacy system, checked and ready."""

    @abc.abstractmethod
    async def fetch(self, params: Mapping[str, Any], budget: float) -> Any:
        """Ask the legacy system; return its answer as JSON-like values.

        ``budget`` is the time left for this call (the caller also enforces it). Raises
        :class:`~adapters.errors.AdapterError` subclasses only.
        """

    @abc.abstractmethod
    async def probe(self, budget: float) -> frozenset[str] | None:
        """Check the legacy system is reachable and fits this call, without changing anything.

        Returns the names of the record fields it will answer with, where the system can say
        (sql columns, csv header), else ``None``. Raises
        :class:`~adapters.errors.AdapterError` describing what does not fit.
        """


class Backend(abc.ABC):
    """A client of one legacy system, shared by the methods that use it."""

    kind: str
    #: Every answer is a list of records (sql rows, csv lines), never one record by itself.
    answers_rows: bool = False
    #: Every value of a record is text or missing (csv cells): nothing nests inside one.
    text_cells: bool = False

    def __init__(self, name: str, *, timeout: float) -> None:
        self.name = name
        #: Seconds a call may take when its method sets no timeout (the caller's deadline wins).
        self.timeout = timeout

    @abc.abstractmethod
    def bind(
        self,
        method: str,
        spec: MethodSpec,
        params: frozenset[str],
        *,
        lists: Mapping[str, int] | None = None,
    ) -> BoundCall:
        """Check ``spec`` (the method's table) against this backend and return its call.

        ``params`` are the names of the legacy parameters the request provides; ``lists`` maps
        those that carry a list (repeated request fields) to their elements' protobuf type.
        Raises :class:`~adapters.errors.AdapterConfigError` naming ``methods.<method>.<key>``.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections, sessions and threads. Safe to call twice."""


def build_backend(name: str, spec: BackendSpec, base_dir: Path) -> Backend:
    """Build the backend for ``spec`` (no I/O); relative paths resolve against ``base_dir``."""
    # Imported here so that an adapter without SOAP backends never imports zeep.
    if isinstance(spec, SqlBackendSpec):
        from adapters.backends.sql import SqlBackend  # noqa: PLC0415

        return SqlBackend(name, spec, base_dir)
    if isinstance(spec, RestBackendSpec):
        from adapters.backends.rest import RestBackend  # noqa: PLC0415

        return RestBackend(name, spec)
    if isinstance(spec, SoapBackendSpec):
        from adapters.backends.soap import SoapBackend  # noqa: PLC0415

        return SoapBackend(name, spec, base_dir)
    if isinstance(spec, CsvBackendSpec):
        from adapters.backends.csv import CsvBackend  # noqa: PLC0415

        return CsvBackend(name, spec, base_dir)
    raise AssertionError(f"unknown backend kind {spec!r}")  # pragma: no cover
