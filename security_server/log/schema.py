"""Tables of the message log (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Times are integers: microseconds since the Unix epoch, UTC. They compare, index and round-trip
exactly on both backends, with no driver's notion of time zones in between.

Several nodes of one agency may share one PostgreSQL: each node keeps its own tree under its own
``origin`` (the checkpoint origin line), so every log table is keyed by origin first.

The migrations in ``security_server/migrations/versions/`` create exactly these tables; a unit
test compares the two. On SQLite the small, key-only tables (tree nodes, heads, replay claims)
are ``WITHOUT ROWID``: each row is stored once, in its primary key's tree, instead of
in a table and again in the key's index.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

from ruta.ids import MAX_IDENTIFIER_LENGTH

__all__ = [
    "INDEXED",
    "MAX_FINGERPRINT_LENGTH",
    "MAX_KIND_LENGTH",
    "MAX_MESSAGE_ID_LENGTH",
    "MAX_METHOD_LENGTH",
    "MAX_ORIGIN_LENGTH",
    "MAX_PENDING_RECORDS",
    "MAX_SUBJECT_LENGTH",
    "log_attachments",
    "log_bodies",
    "log_checkpoints",
    "log_heads",
    "log_leaves",
    "log_nodes",
    "metadata",
    "node_idx",
    "node_last_seq",
    "purged_body",
    "seen_messages",
]

#: Longest log origin (the checkpoint origin line, e.g. ``ruta/DEV/GOV/POP/ss1``).
MAX_ORIGIN_LENGTH: Final = 255
#: Longest message id kept (a UUID is 36 characters).
MAX_MESSAGE_ID_LENGTH: Final = 128
#: Longest gRPC method name kept.
MAX_METHOD_LENGTH: Final = 255
#: Longest subject (the person the data is about) kept.
MAX_SUBJECT_LENGTH: Final = 255
#: Longest record kind ("request" / "response").
MAX_KIND_LENGTH: Final = 16
#: Longest certificate fingerprint (hex SHA-256 is 64).
MAX_FINGERPRINT_LENGTH: Final = 128
#: Most records of one origin that are not yet in the audit indexes (``log_leaves.pending``):
#: what a lookup reads on the primary key besides its index, at most.
MAX_PENDING_RECORDS: Final = 64

metadata = sa.MetaData()

#: The audit indexes' condition: a record still ``pending`` (the last few of a SQLite log, ADR
#: 0053) is in none of them yet; a lookup reads those few on the primary key instead.
INDEXED: Final = "pending IS NULL"
#: The subject index's condition: a record without a subject is in no subject lookup.
_SUBJECT_NAMED: Final = f"subject IS NOT NULL AND {INDEXED}"


def _partial_index(name: str, *columns: str, where: str = INDEXED) -> sa.Index:
    """An index of ``log_leaves`` holding only the rows that meet ``where``, on both backends."""
    return sa.Index(name, *columns, sqlite_where=sa.text(where), postgresql_where=sa.text(where))


log_leaves = sa.Table(
    "log_leaves",
    metadata,
    sa.Column("origin", sa.String(MAX_ORIGIN_LENGTH), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("direction", sa.SmallInteger, nullable=False),
    sa.Column("logged_at", sa.BigInteger, nullable=False),
    sa.Column("message_id", sa.String(MAX_MESSAGE_ID_LENGTH), nullable=False),
    sa.Column("kind", sa.String(MAX_KIND_LENGTH), nullable=False),
    sa.Column("client", sa.String(MAX_IDENTIFIER_LENGTH), nullable=False),
    sa.Column("service", sa.String(MAX_IDENTIFIER_LENGTH), nullable=False),
    sa.Column("method", sa.String(MAX_METHOD_LENGTH), nullable=False),
    sa.Column("subject", sa.String(MAX_SUBJECT_LENGTH), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # The serialised ruta.v1.LogRecord exactly as hashed, and its RFC 6962 leaf hash.
    sa.Column("record", sa.LargeBinary, nullable=False),
    sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    # 1 while the record is not yet in the audit indexes, NULL once it is (migration 0009, ADR
    # 0053). On a SQLite file the writer inserts a small group's records pending and puts them
    # in the indexes later, in one statement with a later group's commit, at most
    # MAX_PENDING_RECORDS at a time: a single exchange's commit then writes no page of the four
    # audit indexes (~4.8 of its ~12 WAL frames). Every record below the origin's
    # ``log_heads.indexed_size`` is indexed, every one from it on is pending; a lookup reads
    # the indexed ones through an index (each names the condition INDEXED) and, on SQLite, the
    # pending ones on the primary key. On PostgreSQL no record is ever pending.
    sa.Column("pending", sa.SmallInteger, nullable=True),
    # One index per audit lookup. The origin is left out of the message id, client and service
    # indexes (every row they find is checked against it): one node's database holds one
    # origin, and a shared one a handful, while the origin's text in every entry was a tenth of
    # a record's storage (bench/README.md). The subject's keeps it (migration 0002: a citizen's
    # record is read per origin, newest first), and holds only the records that name a subject
    # (migration 0006: every lookup names one). Time has no index (migration 0004): logged_at
    # never decreases along a tree, so a time range is a range of seq, found on the primary
    # key (``security_server.log.store.first_seq_logged_at_or_after``).
    # All four hold only indexed records (``pending IS NULL``, migration 0009).
    _partial_index("ix_log_leaves_message_id", "message_id"),
    _partial_index("ix_log_leaves_client_seq", "client", "seq"),
    _partial_index("ix_log_leaves_service_seq", "service", "method", "seq"),
    _partial_index(
        "ix_log_leaves_origin_subject", "origin", "subject", "seq", where=_SUBJECT_NAMED
    ),
)

# Every complete subtree of each origin's tree above the leaves: the subtree of 2**level leaves
# starting at leaf index * 2**level, for level >= 1 (level 0, the leaf hashes, is
# ``log_leaves.leaf_hash``). Appends add O(1) amortised rows; any root or proof needs O(log n).
# Keyed by the leaf that completes the subtree, ``last_seq = (index + 1) * 2**level - 1``, then
# its level (migration 0008, ADR 0046): every node an append writes has the new leaf's seq, so
# each group's rows go to the end of the key's B-tree, as the leaves' do, instead of into the
# middle of each level's range (bench/README.md, "Eighth round").
log_nodes = sa.Table(
    "log_nodes",
    metadata,
    sa.Column("origin", sa.String(MAX_ORIGIN_LENGTH), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
    sqlite_with_rowid=False,
)


def node_last_seq(level: int, idx: int) -> int:
    """The ``log_nodes.last_seq`` of the node ``(level, idx)``: its last leaf's seq."""
    return ((idx + 1) << level) - 1


def node_idx(level: int, last_seq: int) -> int:
    """The index within its level of the node of ``level`` whose last leaf is ``last_seq``."""
    return ((last_seq + 1) >> level) - 1


# Certificates and OCSP responses the leaves name by SHA-256 (a ``LoggedSignature``, evidence
# format v2), each stored once whatever the number of records naming it, shared by every origin
# of the database. Never deleted: the leaves that name one must stay verifiable.
log_attachments = sa.Table(
    "log_attachments",
    metadata,
    sa.Column("digest", sa.LargeBinary(32), primary_key=True),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
)

# The committed size and root of each origin's tree, written in the same transaction as the
# leaves, so a restart can check the stored tree against it; and how many of its leaves are in
# the audit indexes (``indexed_size``: the leaves from it to ``size`` are pending; NULL, as a
# head written without it has, when none is; migration 0009).
log_heads = sa.Table(
    "log_heads",
    metadata,
    sa.Column("origin", sa.String(MAX_ORIGIN_LENGTH), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("root", sa.LargeBinary(32), nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("indexed_size", sa.BigInteger, nullable=True),
    sqlite_with_rowid=False,
)

# Bodies beside the tree, AES-256-GCM encrypted; the associated data binds origin and seq. The
# ciphertext is in the row, or (a large body on a SQLite file, migration 0005, ADR 0040) in
# the origin's body segment file ``segment`` at ``position``, ``length`` bytes
# (security_server.log.bodies). A purged body keeps its row (purged_at set, nonce, ciphertext
# and file reference cleared).
log_bodies = sa.Table(
    "log_bodies",
    metadata,
    sa.Column("origin", sa.String(MAX_ORIGIN_LENGTH), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("nonce", sa.LargeBinary(12), nullable=True),
    sa.Column("ciphertext", sa.LargeBinary, nullable=True),
    sa.Column("purged_at", sa.BigInteger, nullable=True),
    sa.Column("segment", sa.BigInteger, nullable=True),
    sa.Column("position", sa.BigInteger, nullable=True),
    sa.Column("length", sa.BigInteger, nullable=True),
    sa.ForeignKeyConstraint(
        ["origin", "seq"],
        ["log_leaves.origin", "log_leaves.seq"],
        name="fk_log_bodies_leaf",
    ),
    # Which segments unpurged rows still name (retention deletes a segment no row names);
    # only rows with a file reference are in it.
    sa.Index(
        "ix_log_bodies_segment",
        "origin",
        "segment",
        sqlite_where=sa.text("segment IS NOT NULL"),
        postgresql_where=sa.text("segment IS NOT NULL"),
    ),
)


def purged_body(at_us: int) -> dict[str, int | None]:
    """The values that purge a ``log_bodies`` row at ``at_us``: the row stays (the leaf still
    names a body), its ciphertext, nonce and file reference go."""
    return {
        "nonce": None,
        "ciphertext": None,
        "segment": None,
        "position": None,
        "length": None,
        "purged_at": at_us,
    }


# Message ids seen from each client, kept until the freshness window of the message has passed.
# A claim is kept as its key, 16 bytes of SHA-256 over client and message id
# (``security_server.log.model.claim_key``; migration 0007): a third of the text's bytes in the
# row and in the expiry index, which repeats the key.
seen_messages = sa.Table(
    "seen_messages",
    metadata,
    sa.Column("claim_key", sa.LargeBinary(16), primary_key=True),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_seen_messages_expires_at", "expires_at"),
    sqlite_with_rowid=False,
)

# Signed checkpoints of each origin's tree (C2SP tlog-checkpoint note text) and the witness's
# cosignature once received.
log_checkpoints = sa.Table(
    "log_checkpoints",
    metadata,
    sa.Column("origin", sa.String(MAX_ORIGIN_LENGTH), primary_key=True),
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root", sa.LargeBinary(32), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("cosignature", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("cosigned_at", sa.BigInteger, nullable=True),
)
