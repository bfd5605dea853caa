"""Helpers shared by the message log tests (and the crash test's child process)."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

from ruta.ids import ServerId, ServiceId, SubsystemId
from ruta.v1 import transport_pb2
from security_server.database import MIGRATIONS_DIR
from security_server.log import Direction, LogEntry
from security_server.log.schema import log_leaves

__all__ = [
    "CLIENT",
    "ORIGIN",
    "SERVICE",
    "FakeClock",
    "downgrade",
    "make_entry",
    "take_leaf_behind_the_logs_back",
]

CLIENT = SubsystemId.parse("DEV/GOV/SOC/benefits")
SERVICE = ServiceId.parse("DEV/GOV/POP/registry/population.v1.PopulationRegister")
ORIGIN = "ruta.test/DEV/GOV/POP/ss1"


def downgrade(connection: sa.Connection, revision: str) -> None:
    """Migrate the security server's database on ``connection`` down to ``revision`` (for
    ``run_sync``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


class FakeClock:
    """A settable clock (aware UTC)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_entry(
    *,
    client: SubsystemId = CLIENT,
    service: ServiceId = SERVICE,
    method: str = "GetPerson",
    subject: str = "",
    body: bytes | None = b"body",
    created_at: datetime | None = None,
    kind: int = transport_pb2.MESSAGE_KIND_REQUEST,
    direction: Direction = Direction.RECEIVED,
    message_id: str | None = None,
) -> LogEntry:
    """An entry built from a real serialised header and signature (the log does not verify)."""
    header = transport_pb2.MessageHeader(
        message_id=message_id or str(uuid.uuid4()),
        kind=kind,  # type: ignore[arg-type]
        client=client.to_proto(),
        service=service.to_proto(),
        method=method,
        purpose="benefit-eligibility",
        subject=subject,
        sender=ServerId.parse("DEV/GOV/SOC/ss1").to_proto(),
        receiver=ServerId.parse("DEV/GOV/POP/ss1").to_proto(),
    )
    header.created_at.FromDatetime(created_at or datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    signature = transport_pb2.Signature(
        algorithm=transport_pb2.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256,
        value=secrets.token_bytes(72),
        certificate=secrets.token_bytes(300),
    )
    return LogEntry.from_signed(
        direction=direction,
        header=header.SerializeToString(),
        signature=signature.SerializeToString(),
        certificate_fingerprint=secrets.token_hex(32),
        body=body,
    )


async def take_leaf_behind_the_logs_back(engine: AsyncEngine, seq: int) -> None:
    """Another writer inserts leaf ``seq`` of :data:`ORIGIN` behind the log's back, so the log's
    next group insert fails for real (a primary-key conflict); delete it to let the log recover."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(log_leaves).values(
                origin=ORIGIN,
                seq=seq,
                direction=1,
                logged_at=0,
                message_id="intruder",
                kind="request",
                client="x",
                service="y",
                method="z",
                created_at=0,
                record=b"x",
                leaf_hash=b"\x00" * 32,
            )
        )
