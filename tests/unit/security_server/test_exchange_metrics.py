"""The exchange metrics: the in-flight gauge reads the exchanges being handled when scraped,
by role, and every exchange is counted and timed once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from ruta.globalconf import GlobalConf
from ruta.ids import ServiceId, SubsystemId
from security_server.metrics import OTHER_METHOD, UNKNOWN, ExchangeMetrics, Outcome


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


class _Conf:
    """What :meth:`Outcome.identify` reads of a configuration, counting the reads."""

    def __init__(self, subsystems: set[SubsystemId], services: dict[ServiceId, tuple[str, ...]]):
        self._subsystems = subsystems
        self._services = services
        self.reads = 0

    def has_subsystem(self, subsystem: SubsystemId) -> bool:
        self.reads += 1
        return subsystem in self._subsystems

    def service(self, service: ServiceId) -> SimpleNamespace | None:
        self.reads += 1
        methods = self._services.get(service)
        return None if methods is None else SimpleNamespace(methods=methods)


def _labels(conf: _Conf, client: SubsystemId, service: ServiceId, method: str) -> tuple[str, ...]:
    outcome = Outcome()
    outcome.identify(cast(GlobalConf, conf), client, service, method)
    return outcome.client, outcome.service, outcome.method


def test_identify_labels_what_the_configuration_lists_once_per_configuration() -> None:
    client = SubsystemId.parse("DEV/GOV/SOC/benefits")
    stranger = SubsystemId.parse("DEV/GOV/TAX/audit")
    service = ServiceId.parse("DEV/GOV/POP/registry/pop.Registry")
    unlisted = ServiceId.parse("DEV/GOV/POP/registry/pop.Other")
    conf = _Conf({client}, {service: ("GetPerson",)})
    listed = ("DEV/GOV/SOC/benefits", "DEV/GOV/POP/registry/pop.Registry", "GetPerson")
    assert _labels(conf, client, service, "GetPerson") == listed
    assert _labels(conf, client, service, "Other") == (*listed[:2], OTHER_METHOD)
    assert _labels(conf, stranger, unlisted, "GetPerson") == (UNKNOWN, UNKNOWN, UNKNOWN)
    assert _labels(conf, client, unlisted, "GetPerson") == (listed[0], UNKNOWN, UNKNOWN)
    reads = conf.reads
    for _ in range(3):
        assert _labels(conf, client, service, "GetPerson") == listed
    assert conf.reads == reads  # remembered
    # An equal but distinct identifier is looked up again, with the same answer.
    again = SubsystemId.parse("DEV/GOV/SOC/benefits")
    assert _labels(conf, again, service, "GetPerson") == listed
    assert conf.reads > reads
    # Another configuration in force: what the old one said is dropped.
    newer = _Conf(set(), {})
    assert _labels(newer, client, service, "GetPerson") == (UNKNOWN, UNKNOWN, UNKNOWN)
    assert newer.reads == 2


def test_each_label_set_counts_its_own_exchanges_and_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exchange's latency and count, and a frame's two counters, are found in one lookup
    per label set: each set still counts only its own, also past the cache's bound."""
    monkeypatch.setattr("security_server.metrics.MAX_CACHED_LABEL_SETS", 2)
    metrics = ExchangeMetrics()
    for fault in ("none", "a.b", "c.d", "a.b", "none", "e.f"):
        with metrics.exchange("provider") as outcome:
            outcome.client, outcome.service, outcome.method = "c", "s", "m"
            outcome.fault = fault
    labels = {"role": "provider", "client": "c", "service": "s", "method": "m"}
    counts = {
        fault: _value(metrics, "ruta_exchanges_total", **labels, fault=fault)
        for fault in ("none", "a.b", "c.d", "e.f")
    }
    assert counts == {"none": 2, "a.b": 2, "c.d": 1, "e.f": 1}
    seconds = {"role": "provider", "service": "s", "method": "m"}
    assert _value(metrics, "ruta_exchange_seconds_count", **seconds) == 6
    assert len(metrics._exchange_children) == 2
    for role, messages in (("consumer", 3), ("provider", 1), ("consumer", 2), ("x", 1)):
        metrics.frame_written(role, messages)
    assert len(metrics._frame_children) == 2
    frames = {
        r: _value(metrics, "ruta_transport_frames_total", role=r)
        for r in ("consumer", "provider", "x")
    }
    assert frames == {"consumer": 2, "provider": 1, "x": 1}
    framed = {
        r: _value(metrics, "ruta_transport_framed_messages_total", role=r)
        for r in ("consumer", "provider", "x")
    }
    assert framed == {"consumer": 5, "provider": 1, "x": 1}


def test_a_backend_time_series_appears_with_its_first_backend_time() -> None:
    """The backend's time is kept with the exchange's other children, but made only once an
    exchange of those labels had a backend time: one refused before its backend shows none."""
    metrics = ExchangeMetrics()
    backend = {"service": "s", "method": "m"}
    with metrics.exchange("provider") as outcome:
        outcome.client, outcome.service, outcome.method = "c", "s", "m"
    assert _value(metrics, "ruta_backend_seconds_count", **backend) is None
    assert b"ruta_backend_seconds_count{" not in metrics.render()
    for seconds in (0.002, 0.003):
        with metrics.exchange("provider") as outcome:
            outcome.client, outcome.service, outcome.method = "c", "s", "m"
            outcome.backend_seconds = seconds
    assert _value(metrics, "ruta_backend_seconds_count", **backend) == 2
    assert _value(metrics, "ruta_backend_seconds_sum", **backend) == pytest.approx(0.005)
    assert _value(metrics, "ruta_exchange_seconds_count", role="provider", **backend) == 3
