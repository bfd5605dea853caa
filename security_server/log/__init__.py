"""The security server's message log: a tamper-evident, durable record of every signed message.

Open the database with :func:`security_server.database.open_database`, then::

    log = await MessageLog.open(engine, origin=ORIGIN, body_key=load_or_create_body_key(KEY_DIR))
    guard = ReplayGuard(log)
    await guard.check_and_record(client, message_id, created_at, freshness)
    [record] = await log.append([entry])
    proof = await log.inclusion_proof(record.seq)
"""

from security_server.log.bodies import BodyCipher
from security_server.log.errors import (
    LogError,
    LogIntegrityError,
    LogKeyError,
    LogRangeError,
    LogWriteError,
    ReplayedMessageError,
    StaleMessageError,
)
from security_server.log.keys import BodyKey, load_or_create_body_key
from security_server.log.maintenance import LogMaintenance, MaintenanceRound
from security_server.log.model import (
    AppendedRecord,
    BodyState,
    Direction,
    InvalidLogEntryError,
    LogEntry,
    MessageClaim,
    RecordKind,
    RecordPage,
    StoredCheckpoint,
    StoredRecord,
    TreeHead,
    WriterStats,
)
from security_server.log.replay import MAX_FRESHNESS, ReplayGuard
from security_server.log.store import (
    MAX_APPEND_ENTRIES,
    MAX_ATTACHMENTS_PER_READ,
    MAX_BODIES_PER_READ,
    MAX_PAGE_SIZE,
    LogReader,
    MessageLog,
)

__all__ = [
    "MAX_APPEND_ENTRIES",
    "MAX_ATTACHMENTS_PER_READ",
    "MAX_BODIES_PER_READ",
    "MAX_FRESHNESS",
    "MAX_PAGE_SIZE",
    "AppendedRecord",
    "BodyCipher",
    "BodyKey",
    "BodyState",
    "Direction",
    "InvalidLogEntryError",
    "LogEntry",
    "LogError",
    "LogIntegrityError",
    "LogKeyError",
    "LogMaintenance",
    "LogRangeError",
    "LogReader",
    "LogWriteError",
    "MaintenanceRound",
    "MessageClaim",
    "MessageLog",
    "RecordKind",
    "RecordPage",
    "ReplayGuard",
    "ReplayedMessageError",
    "StaleMessageError",
    "StoredCheckpoint",
    "StoredRecord",
    "TreeHead",
    "WriterStats",
    "load_or_create_body_key",
]
