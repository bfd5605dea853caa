"""Fixtures every test layer shares: free ports, real PostgreSQL databases, and a check that
every evidence bundle a test exports follows the manifest's JSON Schema.

PostgreSQL tests carry the ``postgres`` marker and take the ``postgres_url`` fixture. They skip
with the reason when no server can be reached, except under CI (``CI`` set), where an unreachable
server is an error: CI must not skip them.
"""

from __future__ import annotations

import atexit
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
from playwright.async_api import Browser

import ruta.evidence.bundle
from sandbox.ports import PortClaims
from tests.browser import chromium

#: Admin connection used to create and drop one database per test.
POSTGRES_ADMIN_URL = os.environ.get(
    "RUTA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


#: The JSON Schema of ``manifest.json`` as shipped (docs/evidence-format.md).
MANIFEST_SCHEMA_PATH = (
    Path(__file__).resolve().parents[1] / "ruta" / "evidence" / "manifest.schema.json"
)
_MANIFEST_VALIDATOR = jsonschema.Draft202012Validator(
    json.loads(MANIFEST_SCHEMA_PATH.read_text("utf-8"))
)


@pytest.fixture(autouse=True)
def exported_manifests_follow_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bundle written in a test's process (by any exporter: the audit API, the evidence
    helpers, the CLI against an in-process server) has its manifest validated against the
    shipped JSON Schema with ``jsonschema``, independently of the verifier's own check; a
    manifest that does not follow it fails the test that exported it."""
    write_manifest = ruta.evidence.bundle._manifest

    def checked(*args: Any, **kwargs: Any) -> dict[str, Any]:
        manifest = write_manifest(*args, **kwargs)
        _MANIFEST_VALIDATOR.validate(json.loads(json.dumps(manifest)))
        return manifest

    monkeypatch.setattr(ruta.evidence.bundle, "_manifest", checked)


#: Ports handed out by :func:`free_port` in this test process (released when it ends).
_PORT_CLAIMS = PortClaims()
atexit.register(_PORT_CLAIMS.release)


def free_port() -> int:
    """A TCP port on 127.0.0.1, free now and claimed for this test process: chosen below the
    kernel's ephemeral range (where port-0 binds and outgoing connections never land) and
    claimed as the sandbox claims its ports, so nothing else on the machine takes it between
    choosing and binding (a port-0 probe's port was once taken by an outgoing connection)."""
    [port] = _PORT_CLAIMS.take(1)
    return port


def _postgres_reachable() -> str | None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({type(exc).__name__})"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database as a SQLAlchemy URL (psycopg 3 driver); dropped after."""
    problem = _postgres_reachable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}; CI must run the PostgreSQL tests")
        pytest.skip(problem)
    name = f"ruta_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against a SQLite file and a fresh PostgreSQL database (async URLs)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'ss.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian chromium under Playwright (tests/browser.py); skips where chromium cannot
    be found, fails instead under CI."""
    async with chromium() as launched:
        yield launched
