"""Witnessed checkpoints of the message log, and the gate that stops exchanges without them.

While the log grows, :class:`Checkpointer` signs a C2SP checkpoint of its head at least every
``interval_seconds`` (origin = the log's origin, key name = the origin, Ed25519 log key), stores
it in the log's ``log_checkpoints`` table, and sends it to the registry's witness with a
consistency proof from the size the witness last cosigned. The witness's cosignature is verified
(:class:`ruta.witness_client.WitnessClient`) and stored beside the checkpoint. When the log does
not grow, the last checkpoint is resubmitted every ``refresh_seconds`` so an idle server keeps a
fresh cosignature (tlog-witness cosigns the same size again with a new timestamp).

The proxies call :meth:`Checkpointer.check_cosigned` before accepting an exchange: once the last
cosignature is older than ``cosign_window_seconds`` (default 4 h, as X-Road's equivalent) it
raises :class:`WitnessUnavailableError` with the side's ``witness_unavailable`` fault; the next
cosignature lifts the refusal at once. A witness answering 409 (another size is its last
cosigned one) is answered again from the size it names.

The log key (``log-ed25519.key``, mode 0600) is created at first start by
:func:`load_or_create_log_key`; :func:`log_vkey` gives the verifier-key text the registry
publishes in the global configuration (``SecurityServer.log_public_key``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field

from ruta.checkpoint import Checkpoint, CheckpointError, SignatureType, Verifier, sign_note
from ruta.globalconf import GlobalConf
from ruta.pki.errors import KeyFileError
from ruta.pki.keys import generate_ed25519_key, load_private_key, save_private_key
from ruta.tasks import cancel_and_wait
from ruta.witness_client import WitnessClient, WitnessClientError, WitnessSizeConflictError
from security_server.errors import WitnessUnavailableError
from security_server.log import LogError, MessageLog, StoredCheckpoint

__all__ = [
    "DEFAULT_COSIGN_WINDOW",
    "LOG_KEY_FILE",
    "MAX_CONFLICT_RETRIES",
    "CheckpointSettings",
    "Checkpointer",
    "WitnessTarget",
    "WitnessUnavailableError",
    "load_or_create_log_key",
    "log_verifier",
    "log_vkey",
    "witness_target_of",
]

#: File name of the log key inside the server's key directory.
LOG_KEY_FILE: Final = "log-ed25519.key"
#: X-Road's equivalent default: a server without a timestamp for 4 h stops exchanging.
DEFAULT_COSIGN_WINDOW: Final = timedelta(hours=4)
#: Times one tick re-answers a witness 409 from the size it names before giving up till the next.
MAX_CONFLICT_RETRIES: Final = 2

_log = logging.getLogger(__name__)


class CheckpointSettings(BaseModel):
    """How often checkpoints are issued and how long exchanges run without a cosignature."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: A new checkpoint at least this often while the log grows.
    interval_seconds: float = Field(default=1.0, gt=0, le=60)
    #: Resubmit the last checkpoint this often when the log is idle (fresh cosignature).
    refresh_seconds: float = Field(default=300.0, gt=0, le=86_400)
    #: Exchanges are refused once the last cosignature is older than this (default 4 h).
    cosign_window_seconds: float = Field(
        default=DEFAULT_COSIGN_WINDOW.total_seconds(), gt=0, le=30 * 86_400
    )
    #: Deadline of one add-checkpoint call to the witness.
    witness_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    #: The Ed25519 log key; default ``DATA_DIR/keys/log-ed25519.key`` (created if absent).
    log_key: Path | None = None


@dataclass(frozen=True, slots=True)
class WitnessTarget:
    """Where checkpoints go: the witness's URL prefix and its cosignature/v1 verifier key."""

    url: str
    verifier: Verifier


def _utc_now() -> datetime:
    return datetime.now(UTC)


def witness_target_of(view: GlobalConf | None) -> WitnessTarget | None:
    """The witness a global configuration names (``witness_url`` and ``witness_public_key``),
    or ``None`` when it names none or its key text does not parse."""
    if view is None or not view.witness_url or not view.witness_public_key:
        return None
    try:
        verifier = Verifier.from_vkey(view.witness_public_key.decode("utf-8"))
    except (UnicodeDecodeError, CheckpointError):
        return None
    if verifier.kind is not SignatureType.COSIGNATURE_V1:
        return None
    return WitnessTarget(url=view.witness_url, verifier=verifier)


def load_or_create_log_key(path: str | Path) -> Ed25519PrivateKey:
    """The server's Ed25519 log key from ``path``; generated (mode 0600) when the file is absent.

    Raises :class:`ruta.pki.errors.KeyFileError` for a file that is not an Ed25519 key, is
    readable by others, or cannot be written.
    """
    target = Path(path)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        save_private_key(target, generate_ed25519_key())
    key = load_private_key(target)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError("the log key file does not hold an Ed25519 key")
    return key


def log_verifier(origin: str, key: Ed25519PrivateKey) -> Verifier:
    """The signed-note verifier (type 0x01) of the log key, named by the log's origin."""
    return Verifier.for_key(origin, SignatureType.ED25519, key)


def log_vkey(origin: str, key: Ed25519PrivateKey) -> str:
    """The C2SP vkey text of the log key (``<origin>+<key ID>+<base64>``): what the registry
    publishes as ``SecurityServer.log_public_key``."""
    return log_verifier(origin, key).vkey()


class Checkpointer:
    """Issues, stores and gets cosigned the checkpoints of one :class:`MessageLog`.

    ``witness`` returns the current :class:`WitnessTarget` (from the global configuration in
    force) or ``None`` when none is configured; ``session`` is owned by the caller. Use
    :meth:`open` (reads the stored state), then :meth:`start`/:meth:`stop`, or drive it with
    :meth:`tick` in tests.
    """

    def __init__(
        self,
        *,
        log: MessageLog,
        key: Ed25519PrivateKey,
        witness: Callable[[], WitnessTarget | None],
        session: aiohttp.ClientSession,
        settings: CheckpointSettings | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        """Internal: use :meth:`open`."""
        self._log = log
        self._key = key
        self._witness = witness
        self._session = session
        self._settings = settings if settings is not None else CheckpointSettings()
        self._clock = clock
        self._origin = log.origin
        self._verifier = log_verifier(self._origin, key)
        self._latest: StoredCheckpoint | None = None
        self._cosigned: StoredCheckpoint | None = None
        self._cosigned_at: datetime | None = None
        self._started_at = clock()
        self._task: asyncio.Task[None] | None = None
        self._last_error: str | None = None

    @classmethod
    async def open(
        cls,
        *,
        log: MessageLog,
        key: Ed25519PrivateKey,
        witness: Callable[[], WitnessTarget | None],
        session: aiohttp.ClientSession,
        settings: CheckpointSettings | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> Checkpointer:
        """A checkpointer resuming from the checkpoints already stored for ``log``: the window
        runs from the last stored cosignature (from now when there is none)."""
        self = cls(
            log=log, key=key, witness=witness, session=session, settings=settings, clock=clock
        )
        self._latest = await log.latest_checkpoint()
        self._cosigned = await log.latest_checkpoint(cosigned=True)
        if self._cosigned is not None:
            self._cosigned_at = self._cosigned.cosigned_at
        return self

    # --- what the proxies and the audit API read ----------------------------------------------

    @property
    def origin(self) -> str:
        """The checkpoint origin (= the log's origin = the log key's name)."""
        return self._origin

    @property
    def verifier(self) -> Verifier:
        """The log key's signed-note verifier."""
        return self._verifier

    @property
    def vkey(self) -> str:
        """The log key's vkey text (for the global configuration)."""
        return self._verifier.vkey()

    @property
    def cosigned(self) -> StoredCheckpoint | None:
        """The latest checkpoint the witness cosigned, as stored."""
        return self._cosigned

    @property
    def last_cosigned_at(self) -> datetime | None:
        """When the last cosignature was received (this server's clock)."""
        return self._cosigned_at

    @property
    def last_error(self) -> str | None:
        """Why the last submission failed (``None`` after a success); no secrets."""
        return self._last_error

    def cosignature_age(self, now: datetime | None = None) -> timedelta:
        """Time since the last cosignature (since start when there was none)."""
        at = now if now is not None else self._clock()
        return at - (self._cosigned_at if self._cosigned_at is not None else self._started_at)

    def check_cosigned(self, now: datetime | None = None) -> None:
        """Return when the last cosignature is within the window; otherwise raise
        :class:`~security_server.errors.WitnessUnavailableError` (side-neutral: each proxy
        names its own witness_unavailable fault). O(1), no I/O."""
        window = timedelta(seconds=self._settings.cosign_window_seconds)
        age = self.cosignature_age(now)
        if age > window:
            raise WitnessUnavailableError(
                f"this security server has had no witness cosignature of its message log for "
                f"{int(age.total_seconds())} s (limit {int(window.total_seconds())} s); "
                "exchanges resume as soon as the registry's witness cosigns again"
            )

    # --- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background task (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"checkpointer {self._origin}")

    async def stop(self) -> None:
        """Stop the background task; a submission in flight is cancelled (it is retried at the
        next start, nothing is lost)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop must outlive any single failure
                _log.exception("checkpointer tick failed")
            await asyncio.sleep(self._settings.interval_seconds)

    async def tick(self) -> StoredCheckpoint | None:
        """One round: checkpoint the head if it grew, then submit the newest uncosigned
        checkpoint (or refresh an old cosignature). Returns the checkpoint cosigned in this
        round, if any. Witness failures are recorded in :attr:`last_error`, never raised."""
        head = self._log.head()
        latest = self._latest
        if latest is None or head.size > latest.size:
            body = Checkpoint(origin=self._origin, size=head.size, root=head.root).body()
            note = sign_note(body, self._origin, self._key)
            latest = await self._log.save_checkpoint(size=head.size, root=head.root, note=note)
            self._latest = latest
        cosigned = self._cosigned
        now = self._clock()
        if cosigned is not None and cosigned.size == latest.size:
            stale = now - (self._cosigned_at or now)
            if stale < timedelta(seconds=self._settings.refresh_seconds):
                return None
        target = self._witness()
        if target is None:
            self._last_error = "no witness is configured in the global configuration"
            return None
        return await self._submit(target, latest)

    async def _submit(
        self, target: WitnessTarget, checkpoint: StoredCheckpoint
    ) -> StoredCheckpoint | None:
        client = WitnessClient(
            url=target.url,
            verifier=target.verifier,
            session=self._session,
            timeout=self._settings.witness_timeout_seconds,
        )
        old_size = self._cosigned.size if self._cosigned is not None else 0
        for _ in range(MAX_CONFLICT_RETRIES + 1):
            try:
                proof = await self._log.consistency_proof(old_size, checkpoint.size)
                cosignature = await client.add_checkpoint(old_size, proof, checkpoint.note)
            except WitnessSizeConflictError as exc:
                known = exc.known_size
                if known is None or known > checkpoint.size or known == old_size:
                    self._fail(f"the witness knows another size of this log ({known})")
                    return None
                old_size = known
                continue
            except WitnessClientError as exc:
                self._fail(exc.message)
                return None
            except LogError as exc:
                self._fail(f"the log cannot prove consistency: {exc.message}")
                return None
            received = self._clock()
            await self._log.save_cosignature(checkpoint.size, cosignature.line, received)
            self._cosigned = StoredCheckpoint(
                origin=checkpoint.origin,
                size=checkpoint.size,
                root=checkpoint.root,
                note=checkpoint.note,
                created_at=checkpoint.created_at,
                cosignature=cosignature.line,
                cosigned_at=received,
            )
            self._cosigned_at = received
            if self._last_error is not None:
                _log.info("witness cosigns again (size %d)", checkpoint.size)
            self._last_error = None
            return self._cosigned
        self._fail("the witness kept answering with another size")
        return None

    def _fail(self, reason: str) -> None:
        if reason != self._last_error:
            _log.warning("checkpoint not cosigned: %s", reason)
        self._last_error = reason
