"""``ruta adapter check``: validate an adapter file against its ``.proto`` and its legacy systems.

Loading the adapter checks the file, the ``.proto`` and every mapping (:meth:`Adapter.load`):
names, types, defaults, and the shape of the answer it is filled from (one record or ``rows``,
text cells).
Then, unless told not to, each method's legacy system is probed without changing anything: the
database answers the query's columns, the CSV file its header, the SOAP WSDL its operations, the
REST service any HTTP answer. Mapped record fields that the legacy system does not have are
reported. Nothing here raises for a problem: everything found goes into the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from adapters.errors import AdapterError
from adapters.mapping import ROWS
from adapters.server import Adapter, BoundMethod

__all__ = ["PROBE_TIMEOUT_SECONDS", "CheckReport", "check_adapter"]

#: Longest a check waits for one legacy system.
PROBE_TIMEOUT_SECONDS: Final = 10.0


@dataclass(slots=True)
class CheckReport:
    """What a check found: problems (the file cannot work as written) and notes."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        """The report as text, one finding per line."""
        lines = [f"problem: {p}" for p in self.problems] + [f"note: {n}" for n in self.notes]
        lines.append("ok" if self.ok else f"{len(self.problems)} problem(s)")
        return "\n".join(lines)


def _missing_columns(method: BoundMethod, columns: frozenset[str]) -> list[str]:
    """Record fields the file names explicitly that the legacy system does not answer with."""
    plan = method.response_plan
    if method.spec.expect != "many":
        wanted = {f.source[0] for f in plan.fields if f.explicit}
    else:
        # The record is {"rows": [...]}: the columns are named inside 'each' or 'rows.N.NAME'.
        wanted = set()
        for item in plan.fields:
            if not item.explicit or item.source[0].casefold() != ROWS:
                continue
            if len(item.source) > 2:
                wanted.add(item.source[2])
            elif item.nested is not None:
                wanted |= {f.source[0] for f in item.nested.fields if f.explicit}
    folded = {c.casefold() for c in columns}
    return sorted(w for w in wanted if w.casefold() not in folded)


async def check_adapter(
    path: str | Path, *, reach: bool = True, probe_seconds: float = PROBE_TIMEOUT_SECONDS
) -> CheckReport:
    """Check the adapter file at ``path``; with ``reach``, probe its legacy systems too."""
    report = CheckReport()
    try:
        adapter = Adapter.load(path)
    except AdapterError as exc:
        report.problems.append(exc.message)
        return report
    try:
        served = set(adapter.methods)
        for name in sorted(set(adapter.service.methods) - served):
            report.notes.append(f"{adapter.service.name}/{name} is not in the file: UNIMPLEMENTED")
        report.notes.append(
            f"{adapter.service.name}: {len(served)} method(s) mapped: {', '.join(sorted(served))}"
        )
        if not reach:
            return report
        for name, method in sorted(adapter.methods.items()):
            where = f"methods.{name} ({method.backend.kind} backend {method.backend.name})"
            try:
                columns = await method.call.probe(probe_seconds)
            except AdapterError as exc:
                report.problems.append(f"{where}: {exc.message}")
                continue
            if columns is not None:
                missing = _missing_columns(method, columns)
                if missing:
                    report.problems.append(
                        f"{where}: the legacy system has no field {', '.join(missing)} "
                        f"(it has: {', '.join(sorted(columns))})"
                    )
            report.notes.append(f"{where}: reachable")
    finally:
        await adapter.aclose()
    return report
