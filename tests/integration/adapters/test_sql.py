"""The sql backend against real SQLite files and real PostgreSQL databases, through gRPC."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import grpc
import psycopg
import pytest

from adapters.errors import AdapterConfigError
from adapters.examples.population.make_db import ADDRESSES, PERSONS, create_population_db
from adapters.server import Adapter
from ruta.faults import Fault
from tests.conftest import free_port
from tests.integration.adapters.support import example, serving

ANA = {
    "national_id": "4410000017",
    "given_name": "Ana Lucía",
    "family_name": "Quispe Mamani",
    "birth_date": "1985-03-12",
    "address": "Calle Los Olivos 12, 15001 Villa Ruta",
}

#: Request values that would change the query if they were pasted into its text.
INJECTIONS = [
    "4410000017' OR '1'='1",
    "x' UNION SELECT national_id, given_name, family_name, birth_date, 'a' FROM persons --",
    "4410000017'; DROP TABLE persons; --",
    '4410000017" OR ""="',
    "') OR 1=1 --",
]


def _adapter_toml(url: str, *, query: str | None = None, extra: str = "", method: str = "") -> str:
    query = query or (
        "SELECT p.national_id, p.given_name, p.family_name, p.birth_date,\n"
        "  a.street || ', ' || a.postal_code || ' ' || a.city AS current_address\n"
        "FROM persons AS p LEFT JOIN addresses AS a\n"
        "  ON a.national_id = p.national_id AND a.valid_to IS NULL\n"
        "WHERE p.national_id = :national_id"
    )
    return f"""
[adapter]
service = "population.v1.PopulationRegister"
proto = "population.proto"

[backends.db]
kind = "sql"
url = "{url}"
{extra}

[methods.GetPerson]
backend = "db"
{method}
query = \"\"\"{query}\"\"\"

[methods.GetPerson.fields]
birth_date = {{ from = "birth_date", convert = "date" }}
address = {{ from = "current_address", default = "(no registered address)" }}
"""


@pytest.fixture
def population_db(tmp_path: Path) -> Path:
    path = tmp_path / "population.db"
    create_population_db(path)
    return path


def _content(path: Path) -> bytes:
    return path.read_bytes()


def _row_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        count: int = conn.execute("SELECT count(*) FROM persons").fetchone()[0]
        return count
    finally:
        conn.close()


async def test_example_serves_persons_from_sqlite(
    tmp_path: Path, population_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUTA_POPULATION_DB", str(population_db))
    async with serving(example(tmp_path, "population")) as served:
        assert await served.call("GetPerson", {"national_id": "4410000017"}) == ANA
        moved = await served.call("GetPerson", {"national_id": "4410000041"})
        assert moved["address"] == "Calle Nueva 77, 15004 San Muestra"
        missing = await served.refuse("GetPerson", {"national_id": "4410009999"})
        assert missing.code is grpc.StatusCode.NOT_FOUND
        assert missing.fault is Fault.CLIENT_NOT_FOUND
        bad = await served.refuse("GetPerson", {"national_id": "4410000017' --"})
        assert bad.code is grpc.StatusCode.INVALID_ARGUMENT
        assert bad.details == "request field national_id has an invalid format"
        empty = await served.refuse("GetPerson", {})
        assert empty.details == "request field national_id is required"


@pytest.mark.parametrize("injection", INJECTIONS)
async def test_sql_injection_text_changes_nothing_sqlite(
    tmp_path: Path, population_db: Path, injection: str
) -> None:
    """Without any pattern check, injection text is only ever a value: no match, no change."""
    path = _write(tmp_path, _adapter_toml(f"sqlite+aiosqlite:///{population_db}"))
    before = _content(population_db)
    async with serving(path) as served:
        refusal = await served.refuse("GetPerson", {"national_id": injection})
        assert refusal.code is grpc.StatusCode.NOT_FOUND
        assert await served.call("GetPerson", {"national_id": "4410000017"}) == ANA
    assert _row_count(population_db) == len(PERSONS)
    assert _content(population_db) == before


def _write(tmp_path: Path, toml: str) -> Path:
    folder = example(tmp_path, "population").parent
    path = folder / "custom.toml"
    path.write_text(toml, encoding="utf-8")
    return path


async def test_legacy_down_and_bounds_sqlite(tmp_path: Path, population_db: Path) -> None:
    missing = _write(tmp_path, _adapter_toml(f"sqlite+aiosqlite:///{tmp_path}/gone.db"))
    async with serving(missing) as served:
        down = await served.refuse("GetPerson", {"national_id": "4410000017"})
        assert down.code is grpc.StatusCode.UNAVAILABLE
        assert down.fault is Fault.SERVER_PROVIDER_LEGACY_UNAVAILABLE
        assert down.details == "database backend db is unavailable or failed"
        assert not (tmp_path / "gone.db").exists(), "a read-only adapter never creates a database"

    many = _write(
        tmp_path,
        _adapter_toml(
            f"sqlite+aiosqlite:///{population_db}",
            query="SELECT * FROM persons WHERE national_id <> :national_id",
            extra="max_rows = 2",
        ),
    )
    async with serving(many) as served:
        big = await served.refuse("GetPerson", {"national_id": "x"})
        assert big.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert big.fault is Fault.SERVER_PROVIDER_RESULT_TOO_LARGE

    two = _write(
        tmp_path,
        _adapter_toml(
            f"sqlite+aiosqlite:///{population_db}",
            query="SELECT * FROM addresses WHERE national_id = :national_id",
        ),
    )
    async with serving(two) as served:
        ambiguous = await served.refuse("GetPerson", {"national_id": "4410000041"})
        assert ambiguous.code is grpc.StatusCode.INTERNAL
        assert ambiguous.fault is Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER
        assert "more than one record" in ambiguous.details


async def test_malformed_legacy_values_are_refused_by_field(
    tmp_path: Path, population_db: Path
) -> None:
    conn = sqlite3.connect(population_db)
    with conn:
        conn.execute(
            "UPDATE persons SET birth_date = 'thirty-first of never'"
            " WHERE national_id = '4410000025'"
        )
    conn.close()
    path = _write(tmp_path, _adapter_toml(f"sqlite+aiosqlite:///{population_db}"))
    async with serving(path) as served:
        refusal = await served.refuse("GetPerson", {"national_id": "4410000025"})
        assert refusal.code is grpc.StatusCode.INTERNAL
        assert (
            refusal.details
            == "legacy value for birth_date does not fit: not a date in the expected format"
        )
        assert "never" not in refusal.details


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("DELETE FROM persons WHERE national_id = :national_id", "must start with SELECT or WITH"),
        ("SELECT * FROM persons WHERE national_id = :nid", "uses :nid but the request provides"),
        ("SELECT 1; DROP TABLE persons", "single statement"),
    ],
)
def test_queries_that_could_write_or_cannot_bind_fail_at_load(
    tmp_path: Path, query: str, message: str
) -> None:
    path = _write(tmp_path, _adapter_toml("sqlite+aiosqlite:///x.db", query=query))
    with pytest.raises(AdapterConfigError, match=message):
        Adapter.load(path)


# --- PostgreSQL -------------------------------------------------------------------------------


def _fill_postgres(url: str) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        conn.execute(
            "CREATE TABLE persons (national_id text PRIMARY KEY, given_name text, "
            "family_name text, birth_date date)"
        )
        conn.execute(
            "CREATE TABLE addresses (id serial PRIMARY KEY, national_id text, street text, "
            "postal_code text, city text, valid_from date, valid_to date)"
        )
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO persons VALUES (%s, %s, %s, %s)", PERSONS)
            cur.executemany(
                "INSERT INTO addresses (national_id, street, postal_code, city, valid_from, "
                "valid_to) VALUES (%s, %s, %s, %s, %s, %s)",
                ADDRESSES,
            )


def _count_postgres(url: str) -> int:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        row = conn.execute("SELECT count(*) FROM persons").fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.postgres
async def test_postgres_mapping_not_found_and_injection(tmp_path: Path, postgres_url: str) -> None:
    _fill_postgres(postgres_url)
    path = _write(tmp_path, _adapter_toml(postgres_url))
    async with serving(path) as served:
        assert await served.call("GetPerson", {"national_id": "4410000017"}) == ANA
        missing = await served.refuse("GetPerson", {"national_id": "4410009999"})
        assert missing.code is grpc.StatusCode.NOT_FOUND
        for injection in INJECTIONS:
            refusal = await served.refuse("GetPerson", {"national_id": injection})
            assert refusal.code is grpc.StatusCode.NOT_FOUND
    assert _count_postgres(postgres_url) == len(PERSONS)


@pytest.mark.postgres
async def test_postgres_calls_run_read_only(tmp_path: Path, postgres_url: str) -> None:
    """Even a function that writes is stopped by the read-only transaction."""
    _fill_postgres(postgres_url)
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        conn.execute(
            "CREATE FUNCTION wipe(id text) RETURNS text LANGUAGE sql AS "
            "$$ DELETE FROM persons RETURNING national_id $$"
        )
    path = _write(
        tmp_path,
        _adapter_toml(postgres_url, query="SELECT wipe(:national_id) AS national_id"),
    )
    async with serving(path) as served:
        refusal = await served.refuse("GetPerson", {"national_id": "x"})
        assert refusal.code is grpc.StatusCode.UNAVAILABLE
    assert _count_postgres(postgres_url) == len(PERSONS)


@pytest.mark.postgres
async def test_postgres_timeouts_and_caller_deadline(tmp_path: Path, postgres_url: str) -> None:
    _fill_postgres(postgres_url)
    slow = "SELECT p.*, pg_sleep(30) AS waited FROM persons AS p WHERE national_id = :national_id"
    path = _write(tmp_path, _adapter_toml(postgres_url, query=slow, method="timeout_seconds = 0.5"))
    async with serving(path) as served:
        refusal = await served.refuse("GetPerson", {"national_id": "4410000017"})
        assert refusal.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert refusal.fault is Fault.SERVER_PROVIDER_LEGACY_TIMEOUT
    # The method allows 60 s; the caller allows 0.5 s, and that is what counts.
    path = _write(tmp_path, _adapter_toml(postgres_url, query=slow, method="timeout_seconds = 60"))
    async with serving(path) as served:
        refusal = await served.refuse("GetPerson", {"national_id": "4410000017"}, deadline=0.5)
        assert refusal.code is grpc.StatusCode.DEADLINE_EXCEEDED


SECRET = "S3cret-Pa55word-never-shown"


@pytest.mark.postgres
async def test_password_in_url_never_reaches_statuses_or_logs(
    tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A password in the database URL appears in no status text and no log record, whether
    the server is down, the query fails, or the call works."""
    caplog.set_level(logging.DEBUG)
    _fill_postgres(postgres_url)
    with_password = postgres_url.replace("postgres@", f"postgres:{SECRET}@", 1)
    assert SECRET in with_password
    down = with_password.replace(":5432/", f":{free_port()}/", 1)
    details: list[str] = []
    codes: list[grpc.StatusCode] = []
    for url, query in [
        (down, None),
        (with_password, "SELECT * FROM no_such_table WHERE x = :national_id"),
        (with_password, None),
    ]:
        path = _write(tmp_path, _adapter_toml(url, query=query))
        async with serving(path) as served:
            try:
                await served.call("GetPerson", {"national_id": "4410000017"})
            except grpc.aio.AioRpcError as error:
                details.append(error.details() or "")
                codes.append(error.code())
    assert codes == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    logged = [r.getMessage() + (r.exc_text or "") + str(r.args) for r in caplog.records]
    assert logged, "the failures were logged"
    for text in details + logged:
        assert SECRET not in text
        assert "5432" not in text


BATCH_PROTO = """
syntax = "proto3";
package batch.v1;
service Batch { rpc GetPeople(GetPeopleRequest) returns (People); }
message GetPeopleRequest { repeated string national_ids = 1; }
message Person { string national_id = 1; string given_name = 2; }
message People { repeated Person people = 1; }
"""


def _batch(tmp_path: Path, url: str) -> Path:
    (tmp_path / "batch.proto").write_text(BATCH_PROTO, encoding="utf-8")
    path = tmp_path / "batch.toml"
    path.write_text(
        f"""
[adapter]
service = "batch.v1.Batch"
proto = "batch.proto"

[backends.db]
kind = "sql"
url = "{url}"

[methods.GetPeople]
backend = "db"
params = {{ ids = "national_ids" }}
expect = "many"
query = "SELECT national_id, given_name FROM persons WHERE national_id IN :ids ORDER BY national_id"

[methods.GetPeople.fields.people]
from = "rows"
""",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_repeated_request_field_binds_as_a_list(
    tmp_path: Path, population_db: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        _fill_postgres(url)
    else:
        url = f"sqlite+aiosqlite:///{population_db}"
    async with serving(_batch(tmp_path, url)) as served:
        found = await served.call(
            "GetPeople", {"national_ids": ["4410000033", "4410000017", "4410000017') OR ('1'='1"]}
        )
        assert found == {
            "people": [
                {"national_id": "4410000017", "given_name": "Ana Lucía"},
                {"national_id": "4410000033", "given_name": "Valentina"},
            ]
        }
        assert await served.call("GetPeople", {"national_ids": []}) == {}
