"""Alembic migrations of the security server's database (see :mod:`security_server.database`)."""
