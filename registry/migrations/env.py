"""Alembic environment, configured in code: :func:`registry.store.migrate` passes an open
connection in ``config.attributes["connection"]``; there is no ``alembic.ini``."""

from __future__ import annotations

from alembic import context

from registry.store.tables import metadata

_connection = context.config.attributes["connection"]
context.configure(
    connection=_connection,
    target_metadata=metadata,
    render_as_batch=_connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
