"""Every part's metrics registry: the process collector is on, and certificate expiry is read
when scraped (a renewed certificate shows without a restart)."""

from __future__ import annotations

from datetime import UTC, datetime

from ruta.metrics_http import CERTIFICATE_EXPIRY_METRIC, certificate_expiry, new_registry


def test_the_process_collector_is_on() -> None:
    registry = new_registry()
    assert registry.get_sample_value("process_start_time_seconds") is not None
    assert registry.get_sample_value("process_resident_memory_bytes") is not None


def test_certificate_expiry_is_read_at_scrape_time() -> None:
    registry = new_registry()
    not_after = [datetime(2030, 1, 1, tzinfo=UTC)]
    certificate_expiry(registry, {"ocsp": lambda: not_after[0]})
    labels = {"kind": "ocsp"}
    assert registry.get_sample_value(CERTIFICATE_EXPIRY_METRIC, labels) == not_after[0].timestamp()
    not_after[0] = datetime(2031, 6, 1, tzinfo=UTC)
    assert registry.get_sample_value(CERTIFICATE_EXPIRY_METRIC, labels) == not_after[0].timestamp()
