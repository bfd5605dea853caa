"""Settings reload: what is applied, what needs a restart, what is refused (old settings kept)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from ruta.ids import ServiceId
from security_server.backends import BackendChannels
from security_server.metrics import ExchangeMetrics
from security_server.reload import (
    RELOAD_FILE,
    LiveSubsystems,
    ReloadOutcome,
    SettingsReloader,
    changed_settings,
)
from security_server.settings import SecurityServerSettings
from tests.unit.security_server.settings_document import settings_document

SERVICE = "DEV/GOV/POP/registry/population.v1.PopulationRegister"
OTHER = "DEV/GOV/POP/vehicles/vehicles.v1.Register"


def _document(**changes: Any) -> dict[str, Any]:
    return settings_document(
        **{"backends": [{"service": SERVICE, "address": "127.0.0.1:50051"}], **changes}
    )


class Running:
    """A reloader over real backend channels, as a started server has it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        settings = SecurityServerSettings.from_file(path)
        settings.data_dir.mkdir()
        self.backends = BackendChannels(settings.backends, max_message_bytes=1 << 20)
        self.metadata_only = LiveSubsystems(settings.log.metadata_only_subsystems)
        self.metrics = ExchangeMetrics()
        self.reloader = SettingsReloader(
            path=path,
            settings=settings,
            backends=self.backends,
            metadata_only=self.metadata_only,
            metrics=self.metrics,
        )

    def write(self, document: dict[str, Any] | str) -> None:
        self.path.write_text(document if isinstance(document, str) else tomli_w.dumps(document))

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "ruta_settings_reloads_total", {"outcome": outcome}
        )
        return value or 0.0

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = json.loads((self.path.parent / "data" / RELOAD_FILE).read_text())
        return status


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    path = tmp_path / "ss.toml"
    path.write_text(tomli_w.dumps(_document()))
    server = Running(path)
    yield server
    await server.backends.close()


async def test_unchanged_file_applies_nothing(running: Running) -> None:
    result = running.reloader.reload()
    assert result.outcome is ReloadOutcome.APPLIED
    assert result.applied == ()
    assert result.message == "nothing to apply"
    assert running.count("applied") == 1


async def test_backends_and_metadata_only_are_applied(running: Running) -> None:
    log = {"metadata_only_subsystems": ["DEV/GOV/SOC/benefits"]}
    backends = [
        {"service": SERVICE, "address": "127.0.0.1:50051"},
        {"service": OTHER, "address": "127.0.0.1:50052"},
    ]
    running.write(_document(backends=backends, log=log))
    result = running.reloader.reload()
    assert result.outcome is ReloadOutcome.APPLIED
    assert result.applied == ("backends", "log.metadata_only_subsystems")
    assert result.backends.added == (OTHER,)
    assert running.backends.get(ServiceId.parse(OTHER)) is not None
    assert "DEV/GOV/SOC/benefits" in running.metadata_only
    assert running.reloader.settings.log.metadata_only_subsystems == ("DEV/GOV/SOC/benefits",)
    status = running.status()
    assert status["outcome"] == "applied"
    assert status["sequence"] == 1
    assert status["backends"]["added"] == [OTHER]


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ("server_id = [", "is not valid TOML"),
        (
            tomli_w.dumps(_document(backends=[{"service": SERVICE, "address": "192.0.2.1:1"}])),
            "backends.0: Value error, backend "
            + SERVICE
            + ": plaintext is allowed only to loopback",
        ),
        (
            tomli_w.dumps(
                _document(
                    backends=[{"service": OTHER.replace("POP", "TAX"), "address": "127.0.0.1:1"}]
                )
            ),
            "is not a service of this member",
        ),
        (tomli_w.dumps(_document(bogus=1)), "bogus: Extra inputs are not permitted"),
    ],
)
async def test_invalid_file_is_refused_and_old_settings_kept(
    running: Running, document: str, says: str
) -> None:
    before = running.backends.get(ServiceId.parse(SERVICE))
    running.write(document)
    result = running.reloader.reload()
    assert result.outcome is ReloadOutcome.REFUSED
    assert says in result.message
    assert running.backends.get(ServiceId.parse(SERVICE)) is before
    assert running.count("refused") == 1
    assert running.status()["outcome"] == "refused"


async def test_restart_only_settings_are_reported_not_applied(running: Running) -> None:
    running.write(
        _document(
            limits={"max_message_bytes": 2048},
            consumer={"listen": "127.0.0.1:7000", "client_ca": "ca.pem"},
            backends=[],
        )
    )
    result = running.reloader.reload()
    assert result.outcome is ReloadOutcome.NEEDS_RESTART
    assert result.applied == ("backends",)
    assert result.needs_restart == ("consumer.listen", "limits.max_message_bytes")
    assert result.backends.removed == (SERVICE,)
    assert running.reloader.settings.limits.max_message_bytes != 2048
    assert running.reloader.settings.consumer.listen == "127.0.0.1:0"
    assert "needs a restart (not applied): consumer.listen, limits.max_message_bytes" in (
        result.message
    )
    # Reported again until the restart: the running settings still differ from the file.
    assert running.reloader.reload().needs_restart == result.needs_restart
    assert running.count("needs_restart") == 2


def test_changed_settings_names_fields(tmp_path: Path) -> None:
    old = SecurityServerSettings.model_validate(_document())
    new = SecurityServerSettings.model_validate(
        _document(
            keys={**_document()["keys"], "auth_key": "other.key"}, transport={"frames": False}
        )
    )
    assert changed_settings(old, new) == ("keys.auth_key", "transport.frames")
    assert changed_settings(old, old) == ()
