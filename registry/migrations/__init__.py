"""Alembic migrations of the registry store; run in code by :func:`registry.store.migrate`."""
