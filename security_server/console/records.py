"""What the auditor console shows of one logged record: its signed header decoded, and its
inclusion in the latest cosigned checkpoint checked here, with the same primitives
``ruta audit verify`` uses (:mod:`ruta.checkpoint` for the log's signature and the witness's
cosignature, :mod:`ruta.merkle` for the inclusion proof).

The keys are the ones the registry publishes in the global configuration in force (the log's
verifier key for this server, the witness key), so a page that says *verified* rests on the
registry's word, not on this server's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from ruta.checkpoint import CheckpointError, Verifier, open_checkpoint, parse_note
from ruta.checkpoint import verify_cosignature as verify_witness_cosignature
from ruta.ids import IdentifierError, ServerId, ServiceId, SubsystemId
from ruta.merkle import MerkleError, leaf_hash, verify_inclusion
from ruta.timestamps import from_timestamp
from ruta.v1 import audit_pb2, log_pb2, transport_pb2

__all__ = ["DecodedRecord", "InclusionCheck", "check_inclusion", "decode_record"]

_KINDS = {
    transport_pb2.MESSAGE_KIND_REQUEST: "request",
    transport_pb2.MESSAGE_KIND_RESPONSE: "response",
}
_DIRECTIONS = {log_pb2.LOG_DIRECTION_SENT: "sent", log_pb2.LOG_DIRECTION_RECEIVED: "received"}


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """A leaf record and the signed header inside it, field by field, as text (the page
    escapes every one). ``problem`` says why a field could not be read (empty: all read)."""

    sequence: int
    direction: str
    logged_at: datetime | None
    certificate_fingerprint: str
    header_fields: tuple[tuple[str, str], ...]
    problem: str = ""


def _identifier(parse: object, value: object) -> str:
    try:
        return str(parse.from_proto(value))  # type: ignore[attr-defined]
    except IdentifierError as exc:
        return f"({exc.message})"


def _header_fields(header: transport_pb2.MessageHeader) -> tuple[tuple[str, str], ...]:
    try:
        created = from_timestamp(header.created_at).isoformat()
    except ValueError:
        created = "(out of range)"
    fields = [
        ("message_id", header.message_id),
        ("kind", _KINDS.get(header.kind, str(header.kind))),
        ("client", _identifier(SubsystemId, header.client)),
        ("service", _identifier(ServiceId, header.service)),
        ("method", header.method),
        ("purpose", header.purpose),
        ("user_id", header.user_id),
        ("subject", header.subject),
        ("created_at", created),
        ("body_sha256", header.body_sha256.hex()),
        ("sender", _identifier(ServerId, header.sender)),
        ("receiver", _identifier(ServerId, header.receiver)),
    ]
    if header.kind == transport_pb2.MESSAGE_KIND_RESPONSE:
        fields += [
            ("request_hash", header.request_hash.hex()),
            ("status_code", str(header.status_code)),
            ("fault", header.fault),
            ("backend_fault", header.backend_fault),
            ("backend_fault_id", header.backend_fault_id),
        ]
    return tuple(fields)


def decode_record(record: bytes) -> DecodedRecord:
    """The serialised ``LogRecord`` ``record`` decoded for reading (never re-encoded: proofs
    hash the stored bytes). Never raises: what cannot be read is named in ``problem``."""
    leaf = log_pb2.LogRecord()
    try:
        leaf.ParseFromString(record)
        header = transport_pb2.MessageHeader()
        header.ParseFromString(leaf.header)
    except DecodeError:
        return DecodedRecord(0, "", None, "", (), problem="the record cannot be decoded")
    try:
        logged_at: datetime | None = from_timestamp(leaf.logged_at)
    except ValueError:
        logged_at = None
    return DecodedRecord(
        sequence=leaf.sequence,
        direction=_DIRECTIONS.get(leaf.direction, str(leaf.direction)),
        logged_at=logged_at,
        certificate_fingerprint=leaf.certificate_fingerprint,
        header_fields=_header_fields(header),
    )


@dataclass(frozen=True, slots=True)
class InclusionCheck:
    """The outcome of checking one record against a cosigned checkpoint: ``problem`` empty
    means the checkpoint is signed by the log's published key, cosigned by the witness, and
    the record's leaf is at its sequence number in that tree."""

    size: int
    root: str
    note: str
    witness: str
    cosigned_at: datetime | None
    proof: tuple[str, ...]
    problem: str = ""

    @property
    def verified(self) -> bool:
        return not self.problem


def check_inclusion(  # noqa: PLR0911 - one return per step that can fail, in order
    record: audit_pb2.AuditLogRecord,
    proof: Sequence[bytes],
    checkpoint: audit_pb2.CosignedCheckpoint,
    *,
    log_key: Verifier | None,
    witness: Verifier | None,
) -> InclusionCheck:
    """Check ``record`` (with its inclusion ``proof``) against ``checkpoint``, trusting only
    ``log_key`` (the log's checkpoint key) and ``witness`` (the witness's cosignature key).
    ``log_key`` is named by the log's origin (a node or worker log's key is its server's under
    the log's name, :func:`ruta.node_logs.node_log_verifier`), and the checkpoint must be of that
    log. Never raises: a failed step is named in ``problem``."""
    witness_name = witness.name if witness is not None else ""

    def outcome(problem: str = "", cosigned_at: datetime | None = None) -> InclusionCheck:
        return InclusionCheck(
            size=checkpoint.size,
            root=checkpoint.root.hex(),
            note=checkpoint.note,
            witness=witness_name,
            cosigned_at=cosigned_at,
            proof=tuple(p.hex() for p in proof),
            problem=problem,
        )

    if log_key is None:
        return outcome("the configuration in force publishes no log key for this server")
    if witness is None:
        return outcome("the configuration in force names no witness key")
    try:
        signed, _ = open_checkpoint(checkpoint.note, log_key)
        timestamp = verify_witness_cosignature(
            signed.body(), parse_note(checkpoint.note).signatures, witness
        )
    except CheckpointError as exc:
        return outcome(f"the checkpoint does not verify: {exc.message}")
    cosigned_at = datetime.fromtimestamp(timestamp, UTC)
    if signed.origin != log_key.name:
        return outcome(
            f"the checkpoint is of log {signed.origin!r}, not of {log_key.name!r}", cosigned_at
        )
    if signed.size != checkpoint.size or signed.root != checkpoint.root:
        return outcome("the signed checkpoint is not the one the proof was made for", cosigned_at)
    if leaf_hash(record.record) != record.leaf_hash:
        return outcome("the record does not hash to its stored leaf hash", cosigned_at)
    try:
        verify_inclusion(leaf_hash(record.record), record.sequence, signed.size, proof, signed.root)
    except MerkleError as exc:
        return outcome(f"the inclusion proof does not verify: {exc.message}", cosigned_at)
    return outcome(cosigned_at=cosigned_at)
