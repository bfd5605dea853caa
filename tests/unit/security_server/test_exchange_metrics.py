"""The exchange metrics: the in-flight gauge reads the exchanges being handled when scraped,
by role, and every exchange is counted and timed once."""

from __future__ import annotations

import pytest

from security_server.metrics import ExchangeMetrics


def _value(metrics: ExchangeMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_in_flight_is_read_at_scrape_time_by_role() -> None:
    metrics = ExchangeMetrics()
    with metrics.exchange("consumer"), metrics.exchange("consumer"):
        with metrics.exchange("provider"):
            assert _value(metrics, "ruta_exchanges_in_flight", role="consumer") == 2
            assert _value(metrics, "ruta_exchanges_in_flight", role="provider") == 1
        assert _value(metrics, "ruta_exchanges_in_flight", role="provider") == 0
    assert _value(metrics, "ruta_exchanges_in_flight", role="consumer") == 0
    labels = {"role": "consumer", "client": "unknown", "service": "unknown", "method": "unknown"}
    assert _value(metrics, "ruta_exchanges_total", **labels, fault="none") == 2
    assert (
        _value(
            metrics,
            "ruta_exchange_seconds_count",
            role="consumer",
            service="unknown",
            method="unknown",
        )
        == 2
    )


def test_a_failed_exchange_leaves_the_gauge_at_zero() -> None:
    metrics = ExchangeMetrics()
    with pytest.raises(RuntimeError), metrics.exchange("provider"):
        raise RuntimeError("boom")
    assert _value(metrics, "ruta_exchanges_in_flight", role="provider") == 0
