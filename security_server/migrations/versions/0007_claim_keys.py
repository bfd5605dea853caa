"""Replay claims kept as 16-byte keys: ``seen_messages (claim_key, expires_at)``.

A claim was the client's identifier and the message id as text (about 56 bytes), as the
primary key and again in the expiry index (on SQLite a ``WITHOUT ROWID`` table's index repeats
its key): ~165 bytes per claim, ~80 bytes per record of a provider's log while claims are
kept. It is now the first 16 bytes of SHA-256 over the client, a zero byte and the message id
(``security_server.log.model.claim_key``; the formula is repeated here, as a migration must
not change when the code does): ~70 bytes per claim (ADR 0041, bench/README.md "Sixth round").
Refusing a replay needs only equality of claims, never their text (the refusal names the id
from the message being refused).

Upgrade copies every claim (the table holds one freshness window's worth) into the new
table under its key. Downgrade cannot turn keys back into ids: it leaves the old table empty,
so ids claimed within the window just before a downgrade could be used once more; downgrade
only with the provider stopped for one freshness window, or not at all.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_IDENTIFIER = 324  # ruta.ids.MAX_IDENTIFIER_LENGTH at the time of writing
_MESSAGE_ID = 128
_KEY_BYTES = 16
_INDEX = "ix_seen_messages_expires_at"
#: Claims copied per statement.
_BATCH = 1000


def _key(client: str, message_id: str) -> bytes:
    data = client.encode("utf-8", "surrogatepass") + b"\x00"
    data += message_id.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).digest()[:_KEY_BYTES]


def upgrade() -> None:
    op.create_table(
        "seen_messages_keyed",
        sa.Column("claim_key", sa.LargeBinary(_KEY_BYTES), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    keyed = sa.table(
        "seen_messages_keyed", sa.column("claim_key", sa.LargeBinary), sa.column("expires_at")
    )
    bind = op.get_bind()
    rows: dict[bytes, int] = {}
    for client, message_id, expires_at in bind.execute(
        sa.text("SELECT client, message_id, expires_at FROM seen_messages")
    ):
        key = _key(str(client), str(message_id))
        rows[key] = max(int(expires_at), rows.get(key, 0))
    items = [{"claim_key": k, "expires_at": e} for k, e in rows.items()]
    for start in range(0, len(items), _BATCH):
        bind.execute(keyed.insert(), items[start : start + _BATCH])
    op.drop_index(_INDEX, table_name="seen_messages")
    op.drop_table("seen_messages")
    op.rename_table("seen_messages_keyed", "seen_messages")
    if bind.dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE seen_messages RENAME CONSTRAINT seen_messages_keyed_pkey "
            "TO seen_messages_pkey"
        )
    op.create_index(_INDEX, "seen_messages", ["expires_at"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="seen_messages")
    op.drop_table("seen_messages")
    op.create_table(
        "seen_messages",
        sa.Column("client", sa.String(_IDENTIFIER), primary_key=True),
        sa.Column("message_id", sa.String(_MESSAGE_ID), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index(_INDEX, "seen_messages", ["expires_at"])
