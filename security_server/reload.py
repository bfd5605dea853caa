"""Reloading a running security server's settings (SIGHUP, ``ruta ss reload``).

On SIGHUP the serving process reads its settings file again and validates it as a whole. A file
that does not load is refused: the error is logged and the server keeps every setting it had. A
file that loads is compared with the settings in force, setting by setting:

- ``backends`` and ``log.metadata_only_subsystems`` are applied at once, each swapped in one
  step (:class:`~security_server.backends.BackendChannels`, :class:`LiveSubsystems`): calls in
  flight finish with what they started with, calls that start afterwards use the new settings;
- every other changed setting (listen addresses, keys, database, limits, ...) needs a restart: it
  is reported by name and not applied, and reported again on each reload until the restart.

Each reload's outcome is logged, counted (``ruta_settings_reloads_total{outcome}``) and written
atomically to ``DATA_DIR/reload.json``, where ``ruta ss reload`` reads it back::

    {"pid": 1234, "sequence": 2, "at": "2026-12-04T18:00:00+00:00", "outcome": "needs_restart",
     "message": "...", "applied": ["backends"], "needs_restart": ["limits.max_message_bytes"],
     "backends": {"added": ["DEV/GOV/REG/vehicles/vehicles.v1.Register"], "removed": [],
                  "changed": []}}

docs/adr/0016-settings-reload.md says why a signal and a status file rather than an API.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ruta.readiness import write_ready_file
from ruta.settings import ConfigError
from security_server.backends import BackendChange, BackendChannels, BackendError
from security_server.metrics import ExchangeMetrics
from security_server.settings import SecurityServerSettings

if TYPE_CHECKING:
    from security_server.server import SecurityServerApp

__all__ = [
    "RELOADABLE_SETTINGS",
    "RELOAD_FILE",
    "LiveSubsystems",
    "ReloadOutcome",
    "ReloadResult",
    "SettingsReloader",
    "changed_settings",
    "hangup_event",
    "serve_reloads",
]

_log = logging.getLogger(__name__)

#: Name of the file in the data directory that tells the last reload's outcome.
RELOAD_FILE: Final = "reload.json"
#: Settings a reload applies; every other changed setting needs a restart.
RELOADABLE_SETTINGS: Final = frozenset({"backends", "log.metadata_only_subsystems"})


class ReloadOutcome(StrEnum):
    APPLIED = "applied"
    NEEDS_RESTART = "needs_restart"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """One reload: what was applied, what needs a restart, or why the file was refused."""

    pid: int
    sequence: int
    at: str
    outcome: ReloadOutcome
    message: str
    applied: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()
    backends: BackendChange = field(default_factory=BackendChange)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["outcome"] = str(self.outcome)
        return data


class LiveSubsystems(Set[str]):
    """A set of subsystems (text form) that a reload replaces in one step; readers see the old
    set or the new one, never a mix."""

    def __init__(self, items: Iterable[str] = ()) -> None:
        self._items = frozenset(items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def replace(self, items: Iterable[str]) -> None:
        self._items = frozenset(items)


def _leaves(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Section fields as dotted names (one level: ``limits.max_message_bytes``); lists whole."""
    leaves: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not prefix:
            leaves.update(_leaves(value, f"{name}."))
        else:
            leaves[name] = value
    return leaves


def changed_settings(old: SecurityServerSettings, new: SecurityServerSettings) -> tuple[str, ...]:
    """The settings (dotted names, sorted) whose values differ between ``old`` and ``new``."""
    before = _leaves(old.model_dump(mode="json"))
    after = _leaves(new.model_dump(mode="json"))
    return tuple(sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n)))


class SettingsReloader:
    """Reloads one server's settings file into the parts that can change while serving."""

    def __init__(
        self,
        *,
        path: Path,
        settings: SecurityServerSettings,
        backends: BackendChannels,
        metadata_only: LiveSubsystems,
        metrics: ExchangeMetrics,
        status_dir: Path | None = None,
    ) -> None:
        self._path = path
        #: Where ``reload.json`` goes: the data directory, or a worker's own folder.
        self._status_dir = status_dir
        #: The settings in force: as started, with every reload's applied settings.
        self.settings = settings
        self._backends = backends
        self._metadata_only = metadata_only
        self._metrics = metrics
        self._sequence = 0

    @classmethod
    def for_app(cls, app: SecurityServerApp, path: Path) -> SettingsReloader:
        """The reloader of a started server whose settings came from ``path``."""
        if app.backends is None or app.metadata_only is None:
            raise RuntimeError("the server has not started")
        return cls(
            path=path.resolve(),
            settings=app.settings,
            backends=app.backends,
            metadata_only=app.metadata_only,
            metrics=app.metrics,
            status_dir=app.run_dir,
        )

    def reload(self) -> ReloadResult:
        """Read the file again and apply what can change while serving (see the module).

        Never raises for a bad file: the result says ``refused`` and why, and the settings in
        force stay as they were. The result is logged, counted and written to
        ``DATA_DIR/reload.json``.
        """
        self._sequence += 1
        result = self._reload()
        self._metrics.settings_reloads.labels(str(result.outcome)).inc()
        if result.outcome is ReloadOutcome.REFUSED:
            _log.error("settings reload refused, the old settings stay: %s", result.message)
        elif result.outcome is ReloadOutcome.NEEDS_RESTART:
            _log.warning("settings reloaded: %s", result.message)
        else:
            _log.info("settings reloaded: %s", result.message)
        try:
            status_dir = self._status_dir or self.settings.data_dir
            write_ready_file(status_dir / RELOAD_FILE, result.to_json())
        except OSError as exc:
            _log.error("cannot write %s: %s", RELOAD_FILE, exc.strerror or "I/O error")
        return result

    def _result(self, outcome: ReloadOutcome, message: str, **kwargs: Any) -> ReloadResult:
        return ReloadResult(
            pid=os.getpid(),
            sequence=self._sequence,
            at=datetime.now(UTC).isoformat(timespec="seconds"),
            outcome=outcome,
            message=message,
            **kwargs,
        )

    def _reload(self) -> ReloadResult:
        try:
            new = SecurityServerSettings.from_file(self._path)
        except ConfigError as exc:
            return self._result(ReloadOutcome.REFUSED, exc.message)
        old = self.settings
        changed = changed_settings(old, new)
        applied = tuple(name for name in changed if name in RELOADABLE_SETTINGS)
        restart = tuple(name for name in changed if name not in RELOADABLE_SETTINGS)
        change = BackendChange()
        if "backends" in applied:
            try:
                change = self._backends.replace(new.backends)
            except BackendError as exc:
                return self._result(ReloadOutcome.REFUSED, exc.message)
        if "log.metadata_only_subsystems" in applied:
            self._metadata_only.replace(new.log.metadata_only_subsystems)
        self.settings = old.model_copy(
            update={
                "backends": new.backends,
                "log": old.log.model_copy(
                    update={"metadata_only_subsystems": new.log.metadata_only_subsystems}
                ),
            }
        )
        parts = [f"applied {', '.join(applied)}" if applied else "nothing to apply"]
        if change:
            parts.append(
                "backends "
                + "; ".join(
                    f"{what}: {', '.join(services)}"
                    for what, services in (
                        ("added", change.added),
                        ("removed", change.removed),
                        ("changed", change.changed),
                    )
                    if services
                )
            )
        if restart:
            parts.append(f"needs a restart (not applied): {', '.join(restart)}")
        return self._result(
            ReloadOutcome.NEEDS_RESTART if restart else ReloadOutcome.APPLIED,
            "; ".join(parts),
            applied=applied,
            needs_restart=restart,
            backends=change,
        )


def hangup_event() -> asyncio.Event:
    """An event set when SIGHUP arrives, from now on (installed at once, so a SIGHUP during
    start-up asks for a reload instead of ending the process). Raises :class:`RuntimeError`
    outside a running loop."""
    event = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, event.set)
    return event


async def serve_reloads(hangups: asyncio.Event, reloader: SettingsReloader) -> None:
    """Reload on each SIGHUP until cancelled; signals that arrive during a reload make one more
    reload, not one each."""
    while True:
        await hangups.wait()
        hangups.clear()
        try:
            reloader.reload()
        except Exception:  # noqa: BLE001 - a bug in one reload must not end the next ones
            _log.exception("settings reload failed unexpectedly; the old settings stay")
