"""The registry's witness: cosigns security servers' log checkpoints (C2SP ``tlog-witness``).

A security server sends each new checkpoint with a consistency proof from the last checkpoint the
witness cosigned. The witness verifies the log's signature, checks that the server's old size is
the size it last cosigned for that origin, verifies consistency, records the new tree head with an
atomic compare-and-set, and only then returns a timestamped cosignature (cosignature/v1). So a log
can never show two auditors two histories that both carry the registry's cosignature.

A server's nodes and workers keep node logs (``<server origin>/<name>``, :mod:`ruta.node_logs`),
signed with the server's registered log key: the witness trusts each as its server's own.

State lives behind the narrow :class:`WitnessStateStore` protocol: :class:`MemoryWitnessStateStore`
here for unit tests, :class:`registry.witness_store.SqlWitnessStateStore` for the registry.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ruta.checkpoint import (
    MAX_NOTE_SIZE,
    Checkpoint,
    MalformedNoteError,
    SignatureType,
    UnverifiedNoteError,
    Verifier,
    cosign,
    parse_note,
    verify_note,
)
from ruta.faults import Fault, RutaError
from ruta.merkle import EMPTY_ROOT, HASH_SIZE, MerkleVerificationError, verify_consistency
from ruta.node_logs import node_log_verifier, split_node_log_origin

__all__ = [
    "MAX_ADD_CHECKPOINT_BODY",
    "MAX_PROOF_LINES",
    "MAX_WITNESS_TREE_SIZE",
    "AddCheckpointRequest",
    "MemoryWitnessStateStore",
    "TreeHead",
    "UnknownLogError",
    "Witness",
    "WitnessConflictError",
    "WitnessError",
    "WitnessProofError",
    "WitnessRequestError",
    "WitnessSignatureError",
    "WitnessStateStore",
    "parse_add_checkpoint_request",
]

#: Most consistency proof lines in one request (tlog-witness: a client sends at most 63).
MAX_PROOF_LINES: Final = 63
#: Largest tree size the witness records (stored as a signed 64-bit integer).
MAX_WITNESS_TREE_SIZE: Final = 2**63 - 1
#: Largest add-checkpoint request body: old size line, proof lines and the checkpoint note.
MAX_ADD_CHECKPOINT_BODY: Final = MAX_NOTE_SIZE + 4096

_log = logging.getLogger(__name__)
_OLD_LINE = re.compile(r"old (0|[1-9][0-9]{0,18})")


class TreeHead(NamedTuple):
    """A tree size and its root hash: what the witness remembers per log origin."""

    size: int
    root: bytes


class WitnessStateStore(Protocol):
    """Latest cosigned tree head per log origin, updated only by atomic compare-and-set."""

    async def get(self, origin: str) -> TreeHead | None:
        """The tree head last cosigned for ``origin``, or ``None`` if never."""
        ...

    async def compare_and_set(self, origin: str, old: TreeHead | None, new: TreeHead) -> bool:
        """Store ``new`` for ``origin`` if the stored head is still ``old`` (``None``: absent).

        Returns whether it stored. Durable before it returns ``True``.
        """
        ...


class MemoryWitnessStateStore:
    """An in-memory :class:`WitnessStateStore` (tests, tools). Atomic within one event loop."""

    def __init__(self) -> None:
        self._heads: dict[str, TreeHead] = {}

    async def get(self, origin: str) -> TreeHead | None:
        """The tree head last stored for ``origin``."""
        return self._heads.get(origin)

    async def compare_and_set(self, origin: str, old: TreeHead | None, new: TreeHead) -> bool:
        """Store ``new`` if the current head equals ``old``; no await between check and set."""
        if self._heads.get(origin) != old:
            return False
        self._heads[origin] = TreeHead(new.size, bytes(new.root))
        return True


class WitnessError(RutaError):
    """Root of the witness's refusals; ``http_status`` is the tlog-witness status code."""

    default_fault = Fault.SERVER_REGISTRY_INVALID_CHECKPOINT
    http_status: int = 400


class WitnessRequestError(WitnessError):
    """The request or the checkpoint is malformed, or the old size exceeds the checkpoint's."""

    http_status = 400


class WitnessSignatureError(WitnessError):
    """No signature on the checkpoint verifies with a key the witness trusts for its origin."""

    http_status = 403


class UnknownLogError(WitnessError):
    """The checkpoint's origin is not a log the witness knows."""

    http_status = 404


class WitnessConflictError(WitnessError):
    """The old size is not the last cosigned size (or the same size has another root).

    ``known_size`` is the size the witness last cosigned for the origin (0 if never).
    """

    http_status = 409

    def __init__(self, message: str, *, known_size: int) -> None:
        super().__init__(message)
        self.known_size = known_size


class WitnessProofError(WitnessError):
    """The consistency proof from the last cosigned checkpoint does not verify."""

    http_status = 422


@dataclass(frozen=True, slots=True)
class AddCheckpointRequest:
    """A parsed ``add-checkpoint`` body: old size, consistency proof, signed checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: str


def parse_add_checkpoint_request(body: bytes) -> AddCheckpointRequest:
    """Parse an ``add-checkpoint`` request body per c2sp.org/tlog-witness.

    The body is ``old <size>``, zero to 63 base64 hash lines, an empty line, then the signed
    checkpoint. Raises :class:`WitnessRequestError` for anything else or a body larger than
    :data:`MAX_ADD_CHECKPOINT_BODY`.
    """
    if len(body) > MAX_ADD_CHECKPOINT_BODY:
        raise WitnessRequestError(f"request body is larger than {MAX_ADD_CHECKPOINT_BODY} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessRequestError("request body is not valid UTF-8") from None
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise WitnessRequestError("request has no empty line before the checkpoint")
    lines = head.split("\n")
    match = _OLD_LINE.fullmatch(lines[0])
    if match is None:
        raise WitnessRequestError("first line is not 'old <size>' in decimal without zeros")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessRequestError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = tuple(_proof_hash(line) for line in lines[1:])
    return AddCheckpointRequest(old_size=int(match.group(1)), proof=proof, checkpoint=checkpoint)


def _proof_hash(line: str) -> bytes:
    try:
        raw = base64.b64decode(line.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise WitnessRequestError("a consistency proof line is not base64") from None
    if len(raw) != HASH_SIZE or base64.b64encode(raw).decode("ascii") != line:
        raise WitnessRequestError(f"a consistency proof line is not a {HASH_SIZE}-byte hash")
    return raw


class Witness:
    """Verifies and cosigns checkpoints of the logs it knows (see the module docstring).

    ``logs`` maps each log origin to the verifiers (type 0x01) of the keys trusted to sign it;
    :meth:`set_logs` replaces it when the registry's servers change. ``clock`` returns POSIX
    seconds (the registry's clock is the trusted time of a cosignature). Cosignature times of
    one log never go backwards while the process runs, even if the clock steps back: an
    auditor's verifier refuses a larger checkpoint cosigned earlier (docs/evidence-format.md,
    ``checkpoint.time_backwards``). Registry nodes sharing a store must keep their clocks
    synchronised for the same to hold across nodes.
    """

    def __init__(
        self,
        *,
        name: str,
        key: Ed25519PrivateKey,
        logs: Mapping[str, Sequence[Verifier]],
        store: WitnessStateStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = Verifier.for_key(name, SignatureType.COSIGNATURE_V1, key)
        self._name = name
        self._key = key
        self._store = store
        self._clock = clock
        self._logs: dict[str, tuple[Verifier, ...]] = {}
        #: The last cosignature time given per log origin (monotonic within this process).
        self._last_cosigned: dict[str, int] = {}
        self.set_logs(logs)

    @property
    def verifier(self) -> Verifier:
        """The witness's own cosignature verifier; ``.vkey()`` is what clients configure."""
        return self._verifier

    def set_logs(self, logs: Mapping[str, Sequence[Verifier]]) -> None:
        """Replace the known origins and their trusted keys (only type 0x01 keys are used)."""
        self._logs = {
            origin: tuple(v for v in verifiers if v.kind is SignatureType.ED25519)
            for origin, verifiers in logs.items()
        }

    async def add_checkpoint(
        self, old_size: int, consistency_proof: Sequence[bytes], signed_checkpoint: str | bytes
    ) -> list[str]:
        """Verify ``signed_checkpoint`` against the last cosigned state; cosign and record it.

        Returns the cosignature lines (each ending in newline) to send back. Raises
        :class:`WitnessRequestError` (malformed, old size above the checkpoint size, or a
        non-empty proof from size 0), :class:`UnknownLogError`, :class:`WitnessSignatureError`,
        :class:`WitnessConflictError` (old size not the last cosigned one, a different root for
        the same size, or a concurrent update won), or :class:`WitnessProofError`. On any
        refusal the stored state is unchanged.
        """
        checkpoint = self._verified_checkpoint(signed_checkpoint)
        if not 0 <= old_size <= checkpoint.size:
            raise WitnessRequestError(
                f"old size {old_size} is larger than the checkpoint size {checkpoint.size}"
            )
        if len(consistency_proof) > MAX_PROOF_LINES:
            raise WitnessRequestError(f"more than {MAX_PROOF_LINES} consistency proof hashes")
        state = await self._store.get(checkpoint.origin)
        known = state.size if state is not None else 0
        if old_size != known:
            raise WitnessConflictError(
                f"old size {old_size} is not the last cosigned size {known} of this log",
                known_size=known,
            )
        try:
            self._check_consistency(state, old_size, consistency_proof, checkpoint)
        except (WitnessProofError, WitnessConflictError) as exc:
            # Signed by the log yet inconsistent with what it showed before: possible evidence
            # of misbehaviour (tlog-witness allows logging it), never cosigned.
            _log.warning(
                "witness: inconsistent checkpoint origin=%r old_size=%d size=%d: %s",
                checkpoint.origin,
                old_size,
                checkpoint.size,
                exc.message,
            )
            raise
        new = TreeHead(checkpoint.size, checkpoint.root)
        if not await self._store.compare_and_set(checkpoint.origin, state, new):
            latest = await self._store.get(checkpoint.origin)
            raise WitnessConflictError(
                "another checkpoint of this log was cosigned at the same time; retry",
                known_size=latest.size if latest is not None else 0,
            )
        timestamp = max(int(self._clock()), self._last_cosigned.get(checkpoint.origin, 0))
        self._last_cosigned[checkpoint.origin] = timestamp
        return [cosign(checkpoint.body(), self._name, self._key, timestamp).line()]

    async def add_checkpoint_request(self, body: bytes) -> str:
        """Handle a raw ``add-checkpoint`` body; return the response body (cosignature lines).

        Raises what :func:`parse_add_checkpoint_request` and :meth:`add_checkpoint` raise.
        """
        request = parse_add_checkpoint_request(body)
        lines = await self.add_checkpoint(request.old_size, request.proof, request.checkpoint)
        return "".join(lines)

    def _verified_checkpoint(self, signed: str | bytes) -> Checkpoint:
        try:
            note = parse_note(signed)
            checkpoint = Checkpoint.from_body(note.text)
        except MalformedNoteError as exc:
            raise WitnessRequestError(f"malformed checkpoint: {exc.message}") from None
        if checkpoint.size > MAX_WITNESS_TREE_SIZE:
            raise WitnessRequestError("checkpoint size is larger than the witness records")
        trusted = self._trusted(checkpoint.origin)
        if not trusted:
            raise UnknownLogError(f"log origin {checkpoint.origin[:80]!r} is not known here")
        try:
            verify_note(signed, trusted)
        except UnverifiedNoteError:
            raise WitnessSignatureError(
                "no signature on the checkpoint verifies with a trusted key of its log"
            ) from None
        return checkpoint

    def _trusted(self, origin: str) -> tuple[Verifier, ...]:
        """The keys trusted to sign log ``origin``: its own registered keys, or for a node log
        of a registered server (``<server origin>/<name>``, docs/adr/0030) the server's keys
        named by that origin."""
        own = self._logs.get(origin)
        if own:
            return own
        split = split_node_log_origin(origin)
        if split is None:
            return ()
        derived = (node_log_verifier(v, origin) for v in self._logs.get(split[0], ()))
        return tuple(v for v in derived if v is not None)

    @staticmethod
    def _check_consistency(
        state: TreeHead | None, old_size: int, proof: Sequence[bytes], checkpoint: Checkpoint
    ) -> None:
        if old_size == 0:
            if proof:
                raise WitnessRequestError("the consistency proof must be empty from size 0")
            if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
                raise WitnessProofError("a checkpoint of size 0 must carry the empty root")
            return
        if state is None:  # cannot happen: old_size equals the known size and is not 0
            raise WitnessConflictError("this log was never cosigned", known_size=0)
        if old_size == checkpoint.size and state.root != checkpoint.root:
            raise WitnessConflictError(
                f"the log already has another root at size {old_size}", known_size=state.size
            )
        try:
            verify_consistency(old_size, checkpoint.size, proof, state.root, checkpoint.root)
        except MerkleVerificationError as exc:
            raise WitnessProofError(f"consistency proof does not verify: {exc.message}") from None
