"""What goes into the message log and what comes out: frozen values, no I/O."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, NoReturn

from google.protobuf.message import DecodeError

from ruta.faults import Fault
from ruta.ids import IdentifierError, ServiceId, SubsystemId, id_text
from ruta.timestamps import from_timestamp
from ruta.v1 import log_pb2, transport_pb2
from security_server.log.errors import LogError
from security_server.log.schema import (
    MAX_FINGERPRINT_LENGTH,
    MAX_MESSAGE_ID_LENGTH,
    MAX_METHOD_LENGTH,
    MAX_SUBJECT_LENGTH,
)

__all__ = [
    "CLAIM_KEY_BYTES",
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_SIGNATURE_BYTES",
    "AppendedRecord",
    "BodyState",
    "Direction",
    "InvalidLogEntryError",
    "LogEntry",
    "MessageClaim",
    "RecordKind",
    "RecordPage",
    "StoredCheckpoint",
    "StoredRecord",
    "TreeHead",
    "WriterStats",
    "claim_key",
    "from_micros",
    "to_micros",
]

#: Largest signed header the log accepts (a MessageHeader is a few hundred bytes).
MAX_HEADER_BYTES: Final = 64 * 1024
#: Largest serialised Signature the log accepts (certificate, chain and OCSP response included).
MAX_SIGNATURE_BYTES: Final = 256 * 1024
#: Largest body the log stores; the proxies refuse larger messages long before this.
MAX_BODY_BYTES: Final = 64 * 1024 * 1024


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidLogEntryError(LogError):
    """An entry does not fit the log's bounds or its header cannot be read; nothing was logged."""

    default_fault = Fault.SERVER_PROVIDER_INVALID_MESSAGE


class Direction(enum.IntEnum):
    """Whether the logging server sent or received the message (values of ``LogDirection``)."""

    SENT = log_pb2.LOG_DIRECTION_SENT
    RECEIVED = log_pb2.LOG_DIRECTION_RECEIVED


class RecordKind(enum.StrEnum):
    """Request or response, as the signed header says."""

    REQUEST = "request"
    RESPONSE = "response"


class BodyState(enum.StrEnum):
    """What the log holds of a record's body."""

    #: Stored, encrypted; :meth:`MessageLog.get_body` returns it.
    STORED = "stored"
    #: Removed on retention; every proof stays valid (the header keeps the body's digest).
    PURGED = "purged"
    #: Never stored (metadata-only mode for the subsystem).
    ABSENT = "absent"


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (how the log stores times).

    Raises :class:`InvalidLogEntryError` for a naive datetime (its zone would be a guess)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidLogEntryError("times given to the message log must carry a time zone")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime of a stored time."""
    return _EPOCH + timedelta(microseconds=micros)


_KIND_OF: Final = {
    transport_pb2.MESSAGE_KIND_REQUEST: RecordKind.REQUEST,
    transport_pb2.MESSAGE_KIND_RESPONSE: RecordKind.RESPONSE,
}


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One signed message to log: the leaf's parts, the query columns and the body.

    ``header`` and ``signature`` are the exact bytes that travelled (a serialised
    ``MessageHeader`` and a serialised ``Signature``). The leaf keeps the header as it is and the
    signature as a ``LoggedSignature`` (evidence format v2): its certificates and OCSP response
    named by SHA-256 and stored once beside the tree, so ``certificate_fingerprint`` is checked
    for its bound but not stored (the leaf's certificate digest is the same fingerprint). The
    query columns repeat what the header says so the log can be searched without parsing every
    leaf; build them with :meth:`from_signed`. ``body`` is ``None`` in
    metadata-only mode. The log assigns the sequence number and ``logged_at``.

    Raises :class:`InvalidLogEntryError` if a field exceeds its bound or a time is naive.
    """

    direction: Direction
    header: bytes
    signature: bytes = field(repr=False)
    certificate_fingerprint: str
    message_id: str
    kind: RecordKind
    client: str
    service: str
    method: str
    created_at: datetime
    subject: str | None = None
    body: bytes | None = field(default=None, repr=False)
    #: ``created_at`` in microseconds since the epoch (as the log stores it), computed once.
    created_at_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        subject, body = self.subject, self.body
        # Every bound compared on the way through; the loop below names the one exceeded.
        if (
            len(self.header) > MAX_HEADER_BYTES
            or len(self.signature) > MAX_SIGNATURE_BYTES
            or len(self.certificate_fingerprint) > MAX_FINGERPRINT_LENGTH
            or len(self.message_id) > MAX_MESSAGE_ID_LENGTH
            or len(self.method) > MAX_METHOD_LENGTH
            or (subject is not None and len(subject) > MAX_SUBJECT_LENGTH)
            or (body is not None and len(body) > MAX_BODY_BYTES)
        ):
            self._refuse_oversized()
        if not self.message_id:
            raise InvalidLogEntryError("a logged message needs a message id")
        object.__setattr__(self, "created_at_us", to_micros(self.created_at))

    def _refuse_oversized(self) -> NoReturn:
        bounds = (
            ("header", len(self.header), MAX_HEADER_BYTES),
            ("signature", len(self.signature), MAX_SIGNATURE_BYTES),
            ("certificate fingerprint", len(self.certificate_fingerprint), MAX_FINGERPRINT_LENGTH),
            ("message id", len(self.message_id), MAX_MESSAGE_ID_LENGTH),
            ("method", len(self.method), MAX_METHOD_LENGTH),
            ("subject", len(self.subject or ""), MAX_SUBJECT_LENGTH),
            ("body", len(self.body or b""), MAX_BODY_BYTES),
        )
        for name, size, limit in bounds:
            if size > limit:
                raise InvalidLogEntryError(
                    f"the {name} to log is {size} long; the limit is {limit}"
                )
        raise AssertionError("unreachable: called only for an entry over a bound")

    @classmethod
    def from_signed(
        cls,
        *,
        direction: Direction,
        header: bytes,
        signature: bytes,
        certificate_fingerprint: str,
        body: bytes | None,
    ) -> LogEntry:
        """Build an entry from a signed message's exact bytes, reading the query columns from
        the header.

        Raises :class:`InvalidLogEntryError` if the header is not a ``MessageHeader`` with a
        known kind and valid identifiers, or exceeds a bound.
        """
        if len(header) > MAX_HEADER_BYTES:
            raise InvalidLogEntryError(f"the header to log exceeds {MAX_HEADER_BYTES} bytes")
        parsed = transport_pb2.MessageHeader()
        try:
            parsed.ParseFromString(header)
            client = SubsystemId.from_proto(parsed.client)
            service = ServiceId.from_proto(parsed.service)
        except (DecodeError, IdentifierError) as exc:
            raise InvalidLogEntryError(f"the header to log cannot be read: {exc}") from None
        try:
            created_at = from_timestamp(parsed.created_at)
        except ValueError:
            raise InvalidLogEntryError("the header to log has a created_at out of range") from None
        return cls.from_parsed(
            direction=direction,
            header=header,
            parsed=parsed,
            client=client,
            service=service,
            created_at=created_at,
            signature=signature,
            certificate_fingerprint=certificate_fingerprint,
            body=body,
        )

    @classmethod
    def from_parsed(
        cls,
        *,
        direction: Direction,
        header: bytes,
        parsed: transport_pb2.MessageHeader,
        client: SubsystemId,
        service: ServiceId,
        created_at: datetime,
        signature: bytes,
        certificate_fingerprint: str,
        body: bytes | None,
    ) -> LogEntry:
        """:meth:`from_signed` for a header the caller already parsed from ``header`` (or built
        and serialised into it), with its identifiers and creation time read: nothing is parsed
        twice on the exchange path.

        Raises :class:`InvalidLogEntryError` for a header of no known kind or over a bound.
        """
        kind = _KIND_OF.get(parsed.kind)
        if kind is None:
            raise InvalidLogEntryError("the header to log has no message kind")
        if len(header) > MAX_HEADER_BYTES:
            raise InvalidLogEntryError(f"the header to log exceeds {MAX_HEADER_BYTES} bytes")
        return cls(
            direction=direction,
            header=header,
            signature=signature,
            certificate_fingerprint=certificate_fingerprint,
            message_id=parsed.message_id,
            kind=kind,
            client=id_text(client),
            service=id_text(service),
            method=parsed.method,
            created_at=created_at,
            subject=parsed.subject or None,
            body=body,
        )


@dataclass(frozen=True, slots=True)
class AppendedRecord:
    """An acknowledged append: durable in the log as leaf ``seq`` of ``origin``'s tree."""

    origin: str
    seq: int
    leaf_hash: bytes
    logged_at: datetime


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A logged record as read back: the exact leaf bytes, their hash and the query columns."""

    origin: str
    seq: int
    direction: Direction
    logged_at: datetime
    message_id: str
    kind: RecordKind
    client: str
    service: str
    method: str
    subject: str | None
    created_at: datetime
    #: The serialised ``ruta.v1.LogRecord`` exactly as hashed into the tree.
    record: bytes = field(repr=False)
    leaf_hash: bytes
    body_state: BodyState

    def log_record(self) -> log_pb2.LogRecord:
        """The parsed leaf record (for reading only: hash :attr:`record`, never a re-encoding)."""
        parsed = log_pb2.LogRecord()
        parsed.ParseFromString(self.record)
        return parsed


@dataclass(frozen=True, slots=True)
class RecordPage:
    """One page of a query; pass ``next_after`` back as ``after`` for the next page (``None``:
    this was the last page)."""

    records: tuple[StoredRecord, ...]
    next_after: int | None


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A committed size of the log's tree and its root (what a checkpoint signs)."""

    origin: str
    size: int
    root: bytes


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A signed checkpoint of the log's tree as stored, with the witness's cosignature once
    received. ``note`` and ``cosignature`` are the C2SP texts exactly as signed."""

    origin: str
    size: int
    root: bytes
    note: str
    created_at: datetime
    cosignature: str | None
    cosigned_at: datetime | None


#: Length of a replay claim's key (:func:`claim_key`).
CLAIM_KEY_BYTES: Final = 16


def claim_key(client: str, message_id: str) -> bytes:
    """What ``seen_messages`` keeps of a claim: the first 16 bytes of SHA-256 over the client,
    a zero byte and the message id, UTF-8 (a client identifier holds no zero byte, so distinct
    pairs are distinct inputs).

    Two claims share a key only if they are the same claim or SHA-256 collides in 128 bits: a
    chance of about n**2 / 2**129 among n claims kept (below 10**-14 for 10**12 claims), and an
    effort of 2**128 to aim one at another client's future id. The key is a third of the
    (client, message id) text it stands for, and so is every entry of its two B-trees
    (migration 0007)."""
    data = (
        client.encode("utf-8", "surrogatepass")
        + b"\x00"
        + message_id.encode("utf-8", "surrogatepass")
    )
    return hashlib.sha256(data).digest()[:CLAIM_KEY_BYTES]


@dataclass(frozen=True, slots=True)
class MessageClaim:
    """A claim that ``client`` has not used ``message_id`` before; kept until ``expires_at``."""

    client: str
    message_id: str
    expires_at: datetime
    #: The claim's key in ``seen_messages`` (:func:`claim_key`), computed once.
    key: bytes = field(init=False, repr=False, compare=False)
    #: ``expires_at`` in microseconds since the epoch, as stored.
    expires_at_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.message_id or len(self.message_id) > MAX_MESSAGE_ID_LENGTH:
            raise InvalidLogEntryError(
                f"a message id is 1 to {MAX_MESSAGE_ID_LENGTH} characters long"
            )
        if not self.client:
            raise InvalidLogEntryError("a replay claim needs the client")
        object.__setattr__(self, "expires_at_us", to_micros(self.expires_at))
        object.__setattr__(self, "key", claim_key(self.client, self.message_id))


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters of the log's single writer (for tests, metrics and the benchmark)."""

    #: Write transactions committed (each holds one group of appends and claims).
    transactions: int
    #: Write transactions that failed; every caller waiting on one got a LogWriteError.
    failed_transactions: int
    #: Records appended.
    records: int
    #: Replay claims recorded.
    claims: int
    #: Most jobs (appends and claims) committed in one transaction.
    largest_group: int
