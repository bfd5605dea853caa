"""Alembic environment, configured in code: :func:`security_server.database.migrate` passes an
open connection in ``config.attributes["connection"]``; there is no ``alembic.ini``."""

from __future__ import annotations

from alembic import context

from security_server.database import VERSION_TABLE
from security_server.log.schema import metadata

_connection = context.config.attributes["connection"]
context.configure(
    connection=_connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=_connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
