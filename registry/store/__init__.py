"""The registry's store: SQLAlchemy Core (async) over SQLite or PostgreSQL, Alembic migrations."""

from __future__ import annotations

from registry.store.engine import DEFAULT_DATABASE_FILE, create_engine, database_url, migrate
from registry.store.store import PublishedConfiguration, RegistryStore

__all__ = [
    "DEFAULT_DATABASE_FILE",
    "PublishedConfiguration",
    "RegistryStore",
    "create_engine",
    "database_url",
    "migrate",
]
