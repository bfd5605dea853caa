"""deploy/grafana/ruta-dashboard.json: it parses as a Grafana dashboard, and every metric its
queries name is one a Ruta part exports (names collected from the metric definitions in the
code, and from the process collector every part registers)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any, Final

from prometheus_client import Counter, Gauge, Histogram, Summary

from ruta.metrics_http import CERTIFICATE_EXPIRY_METRIC, new_registry

ROOT: Final = Path(__file__).resolve().parents[2]
DASHBOARD: Final = ROOT / "deploy" / "grafana" / "ruta-dashboard.json"
PARTS: Final = ("ruta", "registry", "security_server", "adapters", "gateway")
_METRIC_CLASSES: Final = {cls.__name__: cls for cls in (Counter, Gauge, Histogram, Summary)}
#: Series names a metric of each type exposes besides its own name.
_SUFFIXES: Final = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("_sum", "_count", "_created"),
}
_METRIC_IN_QUERY: Final = re.compile(r"\b((?:ruta|process)_[a-z0-9_]+)\b")


def _defined_in_code() -> set[str]:
    """Every ``Counter("name", ...)``-style definition in the parts, with its series names."""
    constants = {"CERTIFICATE_EXPIRY_METRIC": CERTIFICATE_EXPIRY_METRIC}
    names: set[str] = set()
    for part in PARTS:
        for path in (ROOT / part).rglob("*.py"):
            if "/v1/" in path.as_posix():
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                kind = getattr(node.func, "id", getattr(node.func, "attr", None))
                if kind not in _METRIC_CLASSES:
                    continue
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    name = first.value
                elif isinstance(first, ast.Name) and first.id in constants:
                    name = constants[first.id]
                else:
                    continue
                names.add(name)
                names.update(name + suffix for suffix in _SUFFIXES[kind])
    return names


def _process_collector() -> set[str]:
    return {sample.name for family in new_registry().collect() for sample in family.samples}


def _queries(dashboard: dict[str, Any]) -> list[str]:
    queries: list[str] = []
    for panel in dashboard["panels"]:
        queries.extend(target["expr"] for target in panel.get("targets", []))
    queries.extend(
        variable["query"]
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    )
    return queries


def test_the_dashboard_parses_and_queries_only_metrics_ruta_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"]
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exported = _defined_in_code() | _process_collector()
    queries = _queries(dashboard)
    assert queries
    for query in queries:
        named = _METRIC_IN_QUERY.findall(query)
        assert named, f"a query names no Ruta metric: {query}"
        unknown = set(named) - exported
        assert not unknown, f"{query} names metrics no part exports: {sorted(unknown)}"


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    queried = " ".join(_queries(json.loads(DASHBOARD.read_text(encoding="utf-8"))))
    for metric in (
        "ruta_exchanges_total",
        "ruta_exchange_seconds_bucket",
        "ruta_log_size",
        "ruta_checkpoint_cosignature_age_seconds",
        "ruta_globalconf_generated_timestamp_seconds",
        CERTIFICATE_EXPIRY_METRIC,
        "ruta_listener_restarts_total",
        "process_resident_memory_bytes",
    ):
        assert metric in queried, metric


def test_the_code_scan_finds_the_metrics_it_should() -> None:
    """The scan above is not vacuous: it sees definitions in every part that has metrics."""
    defined = _defined_in_code()
    for name in (
        "ruta_exchanges_total",
        "ruta_listener_up",
        "ruta_gateway_requests_total",
        CERTIFICATE_EXPIRY_METRIC,
    ):
        assert name in defined, name
