"""The global-configuration client every security server and the gateway run.

It starts from a :class:`ConfigurationAnchor`, loads the last good copy from disk, then fetches
the registry's document every interval (a conditional GET: ``If-None-Match`` with the held
document's ETag), verifies it, and adopts it only when its serial is newer. When the anchor lists
several registry nodes, a fetch that fails at one node (unreachable, an error status, a refused
document) goes on to the next in the same attempt, and the node that last answered is asked first
next time. While no node can be used it keeps serving what it holds, retrying with exponential
back-off and jitter;
once that document expires :meth:`GlobalConfClient.current` raises
:class:`OutdatedGlobalConfError` (fail closed) until a fresh document arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from ruta.faults import RutaError
from ruta.files import FileProblem, FileReadError, read_bounded, write_atomically
from ruta.globalconf.anchor import ConfigurationAnchor
from ruta.globalconf.errors import (
    ConfigurationTooLargeError,
    GlobalConfError,
    GlobalConfFetchError,
    OutdatedGlobalConfError,
    SerialRegressionError,
)
from ruta.globalconf.limits import MAX_DOCUMENT_BYTES
from ruta.globalconf.signing import open_configuration
from ruta.globalconf.view import GlobalConf
from ruta.tasks import cancel_and_wait
from ruta.v1 import globalconf_pb2

__all__ = [
    "CONTENT_TYPE",
    "Clock",
    "GlobalConfClient",
    "GlobalConfSettings",
    "UpdateCallback",
    "etag_of",
]

#: Media type of a served ``SignedGlobalConfiguration``.
CONTENT_TYPE: Final = "application/vnd.ruta.globalconf+protobuf"

Clock = Callable[[], datetime]
UpdateCallback = Callable[[GlobalConf], None]

_log = logging.getLogger(__name__)
_READ_CHUNK: Final = 256 * 1024


class GlobalConfSettings(BaseModel):
    """Settings of the global configuration client, nested in a part's settings as
    ``globalconf``. (How long a document may be used is the registry's
    ``globalconf_validity_seconds``.)"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: How often a client asks the registry for a newer document.
    fetch_interval_seconds: float = Field(default=60.0, gt=0, le=24 * 3600)
    #: Bound on one fetch (connect + download).
    fetch_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: First retry delay after a failure; doubles per failure up to ``retry_max_seconds``.
    retry_initial_seconds: float = Field(default=1.0, gt=0, le=3600)
    retry_max_seconds: float = Field(default=60.0, gt=0, le=24 * 3600)
    #: Largest document accepted (at most :data:`MAX_DOCUMENT_BYTES`).
    max_document_bytes: int = Field(default=MAX_DOCUMENT_BYTES, gt=0, le=MAX_DOCUMENT_BYTES)


def etag_of(signed: bytes) -> str:
    """The strong entity tag of a signed document: lowercase hex SHA-256 of its bytes."""
    return hashlib.sha256(signed).hexdigest()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Held:
    view: GlobalConf
    etag: str
    #: SHA-256 of the signed ``configuration`` bytes: tells a re-signature from new content.
    content_digest: bytes


class GlobalConfClient:
    """Keeps a verified, current global configuration for one process.

    ``cache_path`` is where the last good signed document is kept (written atomically); it is
    read at :meth:`start`. ``clock`` is the time source (tests pass their own). Use as an async
    context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        anchor: ConfigurationAnchor,
        cache_path: str | os.PathLike[str],
        settings: GlobalConfSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._anchor = anchor
        self._cache_path = Path(cache_path)
        self._settings = settings if settings is not None else GlobalConfSettings()
        self._clock: Clock = clock if clock is not None else _utcnow
        self._held: _Held | None = None
        self._callbacks: list[UpdateCallback] = []
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._failures = 0
        self._last_contact: datetime | None = None
        #: Index in the anchor's URLs of the node asked first (the one that last answered).
        self._source = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the saved copy, try one fetch, then keep fetching in the background.

        Never raises for an unreachable registry or a refused document (both are logged and
        retried); :meth:`current` tells whether a usable document is held.
        """
        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.fetch_timeout_seconds)
        )
        await self._load_saved()
        await self._attempt()
        self._task = asyncio.create_task(self._run(), name="globalconf-client")

    async def stop(self) -> None:
        """Stop fetching and release the HTTP session. The saved copy stays on disk."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- what callers read -----------------------------------------------------------------------

    def current(self, now: datetime | None = None) -> GlobalConf:
        """The held configuration, if it may be used at ``now`` (default: the clock).

        Raises :class:`OutdatedGlobalConfError` when none is held or it has expired (each
        proxy refuses with its own side's ``outdated_globalconf``).
        """
        held = self._held
        if held is None:
            raise OutdatedGlobalConfError(
                "no global configuration is available yet: the registry has not been reached "
                "and no saved copy could be used"
            )
        at = now if now is not None else self._clock()
        if held.view.is_expired(at):
            raise OutdatedGlobalConfError(
                f"the global configuration (serial {held.view.serial}) expired at "
                f"{held.view.expires_at.isoformat()} and the registry has not provided a newer "
                "one; check connectivity to the registry"
            )
        return held.view

    @property
    def held(self) -> GlobalConf | None:
        """The last good configuration, even when expired (for status pages and metrics)."""
        return self._held.view if self._held is not None else None

    @property
    def last_contact(self) -> datetime | None:
        """When the registry last answered a fetch successfully (200 or 304)."""
        return self._last_contact

    @property
    def source_url(self) -> str:
        """The configuration URL asked first: the registry node that answered last."""
        return self._anchor.globalconf_urls[self._source]

    def on_update(self, callback: UpdateCallback) -> None:
        """Call ``callback(view)`` after each newly adopted configuration (also the saved copy
        loaded at start). A callback that raises is logged and does not stop the others.

        Most adoptions are the registry re-signing unchanged content (new serial and validity
        only): ``view.content_digest`` is then unchanged, so a subscriber that derives state
        from the content can skip rebuilding it."""
        self._callbacks.append(callback)

    # -- fetching --------------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Fetch once now, from the first registry node that gives a usable answer. Returns
        ``True`` when a newer configuration was adopted.

        Nodes are asked in the anchor's order, starting at the one that answered last; a node
        that fails is skipped for the next. When every node fails, raises the first node's
        error: :class:`GlobalConfFetchError` (unreachable, unexpected status),
        :class:`OutdatedGlobalConfError` (the registry serves an expired document, or still the
        expired one held), :class:`ConfigurationTooLargeError`, :class:`SerialRegressionError`
        or another :class:`GlobalConfError` for a refused document; the held configuration is
        unchanged after any of them.
        """
        session = self._session
        if session is None:
            raise GlobalConfFetchError("the global configuration client is not started")
        urls = self._anchor.globalconf_urls
        errors: list[GlobalConfError] = []
        async with self._lock:
            for step in range(len(urls)):
                index = (self._source + step) % len(urls)
                try:
                    adopted = await self._fetch_from(session, urls[index])
                except GlobalConfError as exc:
                    if len(urls) > 1:
                        _log.info("registry node %d of %d failed: %s", index + 1, len(urls), exc)
                    errors.append(exc)
                    continue
                self._source = index
                return adopted
        if not errors:
            raise GlobalConfFetchError("the configuration anchor lists no configuration URL")
        raise errors[0]

    async def _fetch_from(self, session: aiohttp.ClientSession, url: str) -> bool:
        """One conditional GET at ``url``; adopts what it returns. Raises as :meth:`refresh`."""
        held = self._held
        headers = {"Accept": CONTENT_TYPE}
        if held is not None:
            headers["If-None-Match"] = f'"{held.etag}"'
        try:
            async with session.get(url, headers=headers) as resp:
                if resp.status == 304 and held is not None:
                    now = self._clock()
                    self._last_contact = now
                    if held.view.is_expired(now):
                        raise OutdatedGlobalConfError(
                            f"the registry still serves configuration serial "
                            f"{held.view.serial}, which expired at "
                            f"{held.view.expires_at.isoformat()}; its publisher has stopped "
                            "re-signing"
                        )
                    return False
                if resp.status != 200:
                    raise GlobalConfFetchError(
                        f"the registry answered HTTP {resp.status} for the global configuration"
                    )
                body = await self._read_body(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GlobalConfFetchError(
                f"the registry could not be reached ({type(exc).__name__})"
            ) from None
        self._last_contact = self._clock()
        candidate = await asyncio.to_thread(self._open, body, self._clock(), expired_ok=False)
        return await self._adopt(candidate)

    async def _read_body(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self._settings.max_document_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise ConfigurationTooLargeError(
                f"the registry offered a {resp.content_length}-byte configuration; "
                f"the limit is {limit}"
            )
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            body += chunk
            if len(body) > limit:
                raise ConfigurationTooLargeError(
                    f"the registry sent a configuration over the {limit}-byte limit"
                )
        return bytes(body)

    def _open(self, signed: bytes, now: datetime, *, expired_ok: bool) -> _Held:
        if len(signed) > self._settings.max_document_bytes:
            raise ConfigurationTooLargeError(
                f"the configuration is {len(signed)} bytes; the limit is "
                f"{self._settings.max_document_bytes}"
            )
        held = self._held
        view = open_configuration(
            signed, self._anchor, now=now, previous=held.view if held is not None else None
        )
        if not expired_ok and view.is_expired(now):
            raise OutdatedGlobalConfError(
                f"the registry served configuration serial {view.serial}, which expired at "
                f"{view.expires_at.isoformat()}; check the registry's clock and publisher"
            )
        envelope = globalconf_pb2.SignedGlobalConfiguration.FromString(signed)
        return _Held(
            view=view,
            etag=etag_of(signed),
            content_digest=hashlib.sha256(envelope.configuration).digest(),
        )

    async def _adopt(self, candidate: _Held) -> bool:
        held = self._held
        if held is not None:
            if candidate.view.serial < held.view.serial:
                raise SerialRegressionError(
                    f"the registry served serial {candidate.view.serial}, older than the held "
                    f"serial {held.view.serial}; refusing to go back"
                )
            if candidate.view.serial == held.view.serial:
                if candidate.content_digest != held.content_digest:
                    raise SerialRegressionError(
                        f"the registry served different content under the held serial "
                        f"{held.view.serial}; refusing it"
                    )
                return False  # the same content (perhaps signed again): nothing to adopt
        try:
            await asyncio.to_thread(_save, self._cache_path, candidate.view.signed)
        except OSError as exc:
            # Serving the newer document beats serving an older one; the next start fetches again.
            _log.error(
                "could not save the global configuration (serial %d): %s",
                candidate.view.serial,
                exc.strerror,
            )
        self._held = candidate
        _log.info(
            "global configuration serial %d adopted (expires %s)",
            candidate.view.serial,
            candidate.view.expires_at.isoformat(),
        )
        self._notify(candidate.view)
        return True

    def _notify(self, view: GlobalConf) -> None:
        for callback in self._callbacks:
            try:
                callback(view)
            except Exception:  # noqa: BLE001 - a subscriber's bug must not stop the others
                _log.exception("a global configuration update callback failed")

    async def _load_saved(self) -> None:
        try:
            signed = await asyncio.to_thread(
                read_bounded,
                self._cache_path,
                self._settings.max_document_bytes,
                what="saved global configuration",
            )
        except FileReadError as exc:
            if exc.problem is not FileProblem.MISSING:
                _log.warning("the saved global configuration cannot be read: %s", exc.message)
            return
        try:
            held = await asyncio.to_thread(self._open, signed, self._clock(), expired_ok=True)
        except RutaError as exc:
            _log.warning("the saved global configuration is not used: %s", exc)
            return
        self._held = held
        _log.info("loaded saved global configuration serial %d", held.view.serial)
        self._notify(held.view)

    async def _attempt(self) -> None:
        try:
            await self.refresh()
        except GlobalConfError as exc:
            self._failures += 1
            _log.warning("global configuration fetch failed (%d in a row): %s", self._failures, exc)
        else:
            self._failures = 0

    def _next_delay(self) -> float:
        s = self._settings
        if self._failures == 0:
            return s.fetch_interval_seconds * random.uniform(0.9, 1.0)  # noqa: S311 - jitter only
        exponent = min(self._failures - 1, 32)
        ceiling = min(s.retry_max_seconds, s.retry_initial_seconds * 2.0**exponent)
        return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter only

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._next_delay())
            try:
                await self._attempt()
            except Exception:  # noqa: BLE001 - logged with traceback; the loop must survive
                # Keep the loop alive whatever happens; the held document still expires on time.
                self._failures += 1
                _log.exception("global configuration fetch failed unexpectedly")


def _save(path: Path, data: bytes) -> None:
    """Replace the saved configuration so that a crash leaves the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)
