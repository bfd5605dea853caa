"""Client side of c2sp.org/tlog-witness: ask the registry's witness to cosign a checkpoint.

A security server calls :meth:`WitnessClient.add_checkpoint` with the size the witness last
cosigned, a consistency proof from there, and its newly signed checkpoint. The answer is checked
before it is believed: the returned line must be a valid cosignature/v1 from the configured witness
key over exactly that checkpoint.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp

from ruta.checkpoint import (
    CheckpointError,
    NoteSignature,
    SignatureType,
    Verifier,
    parse_note,
    verify_cosignature,
)
from ruta.faults import Fault, RutaError
from ruta.http_body import read_bounded

__all__ = [
    "ADD_CHECKPOINT_PATH",
    "MAX_WITNESS_RESPONSE",
    "Cosignature",
    "WitnessClient",
    "WitnessClientError",
    "WitnessRefusedError",
    "WitnessSizeConflictError",
    "format_add_checkpoint_request",
]

#: Path of the witness's submission endpoint below its URL prefix.
ADD_CHECKPOINT_PATH: Final = "/add-checkpoint"
#: Largest witness response read (cosignature lines or a size).
MAX_WITNESS_RESPONSE: Final = 16 * 1024
#: Most consistency proof lines a client may send (tlog-witness).
_MAX_PROOF_LINES: Final = 63
_SIZE = re.compile(r"(0|[1-9][0-9]{0,19})\n")


class WitnessClientError(RutaError):
    """The witness could not be reached, refused, or answered something unverifiable."""

    default_fault = Fault.SERVER_PROVIDER_WITNESS_UNAVAILABLE


class WitnessRefusedError(WitnessClientError):
    """The witness answered with a refusal; ``status`` is its HTTP status code."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class WitnessSizeConflictError(WitnessRefusedError):
    """The old size sent is not the witness's last cosigned size, ``known_size`` (HTTP 409)."""

    def __init__(self, message: str, *, known_size: int | None) -> None:
        super().__init__(message, status=409)
        self.known_size = known_size


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A verified cosignature: its signature line (ending in newline) and POSIX timestamp."""

    line: str
    timestamp: int


def format_add_checkpoint_request(
    old_size: int, proof: Sequence[bytes], signed_checkpoint: str
) -> bytes:
    """The ``add-checkpoint`` request body: ``old <size>``, proof lines, empty line, checkpoint.

    Raises :class:`WitnessClientError` for a negative size or more than 63 proof hashes.
    """
    if old_size < 0 or len(proof) > _MAX_PROOF_LINES:
        raise WitnessClientError("invalid old size or too long a consistency proof")
    lines = [f"old {old_size}", *(base64.b64encode(h).decode("ascii") for h in proof)]
    return ("\n".join(lines) + "\n\n" + signed_checkpoint).encode("utf-8")


class WitnessClient:
    """Submits checkpoints to one witness over HTTP (the caller owns ``session``).

    ``url`` is the witness's submission prefix (``http(s)://host:port[/prefix]``); ``verifier``
    its cosignature/v1 key, as published in the global configuration.
    """

    def __init__(
        self,
        *,
        url: str,
        verifier: Verifier,
        session: aiohttp.ClientSession,
        timeout: float = 10.0,
    ) -> None:
        if verifier.kind is not SignatureType.COSIGNATURE_V1:
            raise WitnessClientError("the witness key must be a cosignature/v1 (type 0x04) key")
        self._url = url.rstrip("/") + ADD_CHECKPOINT_PATH
        self._verifier = verifier
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def add_checkpoint(
        self, old_size: int, proof: Sequence[bytes], signed_checkpoint: str
    ) -> Cosignature:
        """Ask for a cosignature of ``signed_checkpoint``; return it once verified.

        Raises :class:`WitnessSizeConflictError` (carrying the witness's known size) when
        ``old_size`` is not what the witness last cosigned, :class:`WitnessRefusedError` for any
        other refusal, and :class:`WitnessClientError` when the witness cannot be reached or its
        answer is not a valid cosignature over this checkpoint.
        """
        try:
            body = parse_note(signed_checkpoint).text
        except CheckpointError as exc:
            raise WitnessClientError(
                f"the checkpoint to submit is malformed: {exc.message}"
            ) from None
        data = format_add_checkpoint_request(old_size, proof, signed_checkpoint)
        try:
            async with self._session.post(
                self._url, data=data, timeout=self._timeout, allow_redirects=False
            ) as response:
                status = response.status
                content_type = response.headers.get("Content-Type", "")
                raw = await read_bounded(response.content, MAX_WITNESS_RESPONSE)
        except (aiohttp.ClientError, TimeoutError):
            raise WitnessClientError("the witness could not be reached") from None
        if raw is None:
            raise WitnessClientError("the witness answered with an oversized response")
        text = raw.decode("utf-8", "replace")
        if status == 409:
            match = _SIZE.fullmatch(text) if content_type.startswith("text/x.tlog.size") else None
            raise WitnessSizeConflictError(
                "the witness has cosigned another size of this log",
                known_size=int(match.group(1)) if match else None,
            )
        if status != 200:
            raise WitnessRefusedError(
                f"the witness refused the checkpoint (HTTP {status})", status=status
            )
        return self._verified(body, text)

    def _verified(self, body: str, text: str) -> Cosignature:
        if not text.endswith("\n"):
            raise WitnessClientError("the witness answer is not signature lines")
        try:
            signatures = [NoteSignature.parse_line(line) for line in text[:-1].split("\n")]
            mine = [s for s in signatures if self._verifier.matches(s)]
            timestamp = verify_cosignature(body, mine, self._verifier)
        except CheckpointError as exc:
            raise WitnessClientError(
                f"the witness cosignature does not verify: {exc.message}"
            ) from None
        line = next(s.line() for s in mine if s.signature[:8] == timestamp.to_bytes(8, "big"))
        return Cosignature(line=line, timestamp=timestamp)
