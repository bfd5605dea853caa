"""The registry store on SQLite and PostgreSQL: changes, their audit entries, refusals, pages."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.exc import DBAPIError

from registry import migrations, protomap
from registry.errors import AlreadyExistsError, InvalidRequestError, NotFoundError
from registry.model import ContractState, Savings
from registry.store import RegistryStore, database_url, tables
from registry.store.engine import create_engine
from registry.store.store import PublishedConfiguration
from registry.witness import TreeHead
from registry.witness_store import SqlWitnessStateStore, witness_checkpoints
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId

POP = MemberId.parse("LAC/GOV/POP")
TAX = MemberId.parse("LAC/GOV/TAX")
POP_REG = SubsystemId.parse("LAC/GOV/POP/registry")
TAX_APP = SubsystemId.parse("LAC/GOV/TAX/app")
PERSONS = ServiceId.parse("LAC/GOV/POP/registry/population.v1.PersonRegistry")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return database_url(None, tmp_path)
    pg: str = request.getfixturevalue("postgres_url")
    return database_url(pg, tmp_path)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[RegistryStore]:
    opened = await RegistryStore.open(store_url, clock=_Clock())
    try:
        yield opened
    finally:
        await opened.close()


async def _populate(store: RegistryStore) -> None:
    await store.add_member(POP, name="Population Registry", actor="admin")
    await store.add_member(TAX, name="Tax Office", actor="admin")
    await store.add_subsystem(POP_REG, actor="admin")
    await store.add_subsystem(TAX_APP, actor="admin")
    await store.add_service(
        PERSONS,
        methods=["GetPerson", "FindPeople"],
        file_descriptor_set=b"\x0a\x00",
        description="People by id",
        savings=Savings(citizen_minutes=12.5, paper_forms=1, cost=3.0),
        actor="admin",
    )


async def test_migrations_are_idempotent(store_url: str) -> None:
    for _ in range(2):
        opened = await RegistryStore.open(store_url)
        await opened.close()


async def test_each_change_is_audited_with_before_and_after(store: RegistryStore) -> None:
    await _populate(store)
    server = await store.add_server(
        ServerId(POP, "ss1"), address="pop.example:8443", auth_cert_der=b"cert", actor="admin"
    )
    assert server.auth_cert_sha256 == hashlib.sha256(b"cert").hexdigest()
    audit = await store.list_audit(limit=100)
    assert [e.action for e in audit] == [
        "member.add",
        "member.add",
        "subsystem.add",
        "subsystem.add",
        "service.add",
        "server.add",
    ]
    assert [e.seq for e in audit] == sorted(e.seq for e in audit)
    assert audit[0].before is None
    assert audit[0].after is not None
    assert audit[0].after["name"] == "Population Registry"
    assert all(e.actor == "admin" for e in audit)
    assert await store.change_seq() == audit[-1].seq


async def test_contract_life_cycle(store: RegistryStore) -> None:
    await _populate(store)
    contract = await store.request_contract(
        consumer=TAX_APP,
        service=PERSONS,
        methods=["GetPerson"],
        purpose="tax-assessment",
        legal_basis="Tax Act s. 12",
        valid_from=T0,
        valid_until=None,
        actor="tax-admin",
    )
    assert contract.state is ContractState.REQUESTED
    assert (await store.snapshot()).contracts == ()
    approved = await store.approve_contract(contract.id, actor="pop-admin", expected=contract)
    assert approved.state is ContractState.APPROVED
    assert approved.approved_by == "pop-admin"
    active = await store.activate_contract(contract.id, actor="registry")
    assert active.state is ContractState.ACTIVE
    assert active.activated_by == "registry"
    snapshot = await store.snapshot()
    assert [c.id for c in snapshot.contracts] == [contract.id]
    revoked = await store.revoke_contract(contract.id, actor="registry")
    assert revoked.state is ContractState.REVOKED
    assert revoked.approved_by == "pop-admin"
    assert (await store.snapshot()).contracts == ()
    audit = await store.list_audit(after_seq=snapshot.change_seq - 3, limit=10)
    assert [e.action for e in audit] == [
        "contract.request",
        "contract.approve",
        "contract.activate",
        "contract.revoke",
    ]
    assert audit[1].before is not None
    assert audit[1].after is not None
    assert (audit[1].before["state"], audit[1].after["state"]) == ("requested", "approved")
    with pytest.raises(InvalidRequestError):
        await store.approve_contract(contract.id, actor="pop-admin")


async def test_a_contracts_rate_limit_is_kept_and_published(store: RegistryStore) -> None:
    await _populate(store)
    contract = await store.request_contract(
        consumer=TAX_APP,
        service=PERSONS,
        methods=[],
        purpose="tax-assessment",
        legal_basis="Tax Act s. 12",
        valid_from=T0,
        valid_until=None,
        actor="tax-admin",
        rate_limit_per_minute=600,
    )
    assert contract.rate_limit_per_minute == 600
    approved = await store.approve_contract(contract.id, actor="pop", rate_limit_per_minute=120)
    assert approved.rate_limit_per_minute == 120
    await store.activate_contract(contract.id, actor="registry")
    (published,) = (await store.snapshot()).contracts
    assert published.rate_limit_per_minute == 120
    assert protomap.contract_entry(published).rate_limit_per_minute == 120
    audit = await store.list_audit(after_seq=0, limit=100)
    approval = next(e for e in audit if e.action == "contract.approve")
    assert approval.after is not None
    assert approval.after["rate_limit_per_minute"] == 120


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"consumer": SubsystemId.parse("LAC/GOV/TAX/none")}, NotFoundError),
        ({"service": ServiceId.parse("LAC/GOV/POP/registry/x.Nothing")}, NotFoundError),
        ({"methods": ["Delete"]}, InvalidRequestError),
        ({"valid_until": T0}, InvalidRequestError),
        ({"rate_limit_per_minute": -1}, InvalidRequestError),
        ({"rate_limit_per_minute": 6_000_001}, InvalidRequestError),
    ],
)
async def test_contract_request_refusals(
    store: RegistryStore, kwargs: dict[str, object], error: type[Exception]
) -> None:
    await _populate(store)
    before = await store.change_seq()
    args: dict[str, object] = {
        "consumer": TAX_APP,
        "service": PERSONS,
        "methods": ["GetPerson"],
        "purpose": "p",
        "legal_basis": "l",
        "valid_from": T0,
        "valid_until": None,
        "actor": "a",
    }
    args.update(kwargs)
    with pytest.raises(error):
        await store.request_contract(**args)  # type: ignore[arg-type]
    assert await store.change_seq() == before


async def test_refused_changes_leave_no_trace(store: RegistryStore) -> None:
    await _populate(store)
    before = await store.change_seq()
    with pytest.raises(AlreadyExistsError):
        await store.add_member(POP, name="again", actor="admin")
    with pytest.raises(NotFoundError):
        await store.add_subsystem(SubsystemId.parse("LAC/GOV/NONE/x"), actor="admin")
    await store.add_server(ServerId(POP, "ss1"), address="a:1", auth_cert_der=b"c", actor="x")
    with pytest.raises(AlreadyExistsError):
        await store.add_server(ServerId(TAX, "ss1"), address="a:1", auth_cert_der=b"c", actor="x")
    assert await store.change_seq() == before + 1
    assert [m.name for m in await store.list_members(limit=10)] == [
        "Population Registry",
        "Tax Office",
    ]


async def test_lists_page_in_identifier_order(store: RegistryStore) -> None:
    for code in ("C", "A", "B"):
        await store.add_member(MemberId("LAC", "GOV", code), name=code, actor="admin")
    first = await store.list_members(limit=2)
    assert [str(m.id) for m in first] == ["LAC/GOV/A", "LAC/GOV/B"]
    rest = await store.list_members(after=str(first[-1].id), limit=2)
    assert [str(m.id) for m in rest] == ["LAC/GOV/C"]
    await _populate(store)
    assert [str(s.id) for s in await store.list_subsystems(member=TAX, limit=10)] == [str(TAX_APP)]


async def test_published_configurations_keep_serials_unique(store: RegistryStore) -> None:
    assert await store.latest_configuration() is None
    doc = PublishedConfiguration(
        serial=1, change_seq=0, generated_at=T0, expires_at=T0, document=b"one"
    )
    assert await store.save_configuration(doc, keep=2)
    assert not await store.save_configuration(doc, keep=2)
    for serial in (2, 3):
        await store.save_configuration(
            PublishedConfiguration(
                serial=serial, change_seq=0, generated_at=T0, expires_at=T0, document=b"n"
            ),
            keep=2,
        )
    latest = await store.latest_configuration()
    assert latest is not None
    assert latest.serial == 3


def _schema_differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection)
    combined = MetaData()
    for table in (*tables.metadata.tables.values(), witness_checkpoints):
        table.to_metadata(combined)
    return list(compare_metadata(context, combined))


async def test_migrations_create_exactly_the_declared_tables(store: RegistryStore) -> None:
    async with store.engine.connect() as conn:
        differences = await conn.run_sync(_schema_differences)
    assert [d for d in differences if "alembic_version" not in str(d)] == []


async def test_witness_state_lives_in_the_registry_database(store: RegistryStore) -> None:
    witness = SqlWitnessStateStore(store.engine)
    head = TreeHead(3, b"\x01" * 32)
    assert await witness.compare_and_set("example.org/log", None, head)
    assert await witness.get("example.org/log") == head


async def test_server_update_is_audited_and_keeps_certificates_unique(store: RegistryStore) -> None:
    await _populate(store)
    ss1, ss2 = ServerId(POP, "ss1"), ServerId(POP, "ss2")
    await store.add_server(ss1, address="a:1", auth_cert_der=b"one", actor="x")
    await store.add_server(ss2, address="b:1", auth_cert_der=b"two", actor="x")
    updated = await store.update_server(ss1, log_public_key="origin+abcd+key", actor="y")
    assert (updated.address, updated.log_public_key) == ("a:1", "origin+abcd+key")
    entry = (await store.list_audit(after_seq=await store.change_seq() - 1, limit=1))[0]
    assert entry.action == "server.update"
    assert entry.before is not None
    assert entry.after is not None
    assert (entry.before["log_public_key"], entry.after["log_public_key"]) == (
        "",
        "origin+abcd+key",
    )
    with pytest.raises(AlreadyExistsError):
        await store.update_server(ss1, auth_cert_der=b"two", actor="y")
    with pytest.raises(NotFoundError):
        await store.update_server(ServerId(TAX, "none"), address="c:1", actor="y")
    assert [s.log_public_key for s in (await store.snapshot()).servers] == ["origin+abcd+key", ""]


@pytest.mark.postgres
async def test_nodes_starting_together_migrate_once(postgres_url: str, tmp_path: Path) -> None:
    url = database_url(postgres_url, tmp_path)
    stores = await asyncio.gather(*(RegistryStore.open(url) for _ in range(3)))
    try:
        await stores[0].add_member(POP, name="Population", actor="a")
        assert [m.id for m in await stores[2].list_members(limit=5)] == [POP]
    finally:
        for opened in stores:
            await opened.close()


async def test_a_failing_statement_does_not_carry_its_bound_values(store_url: str) -> None:
    # Database errors end up in log lines: the values a statement bound must not be in them.
    marker = "bound-value-marker-4f1c9a"
    engine = create_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE hide_parameters_probe (id TEXT PRIMARY KEY)"))
            await conn.execute(
                text("INSERT INTO hide_parameters_probe VALUES (:id)"), {"id": marker}
            )
        with pytest.raises(DBAPIError) as caught:
            async with engine.begin() as conn:
                await conn.execute(
                    text("INSERT INTO hide_parameters_probe VALUES (:id)"), {"id": marker}
                )
        error = caught.value
        assert "parameters hidden" in str(error)
        # SQLAlchemy's rendering (statement, parameters) withholds the value. PostgreSQL's own
        # DETAIL line ("Key (id)=(...) already exists.") echoes key values whatever the engine
        # options, so the whole text is checked only where the database does not echo them.
        assert marker not in str(error).replace(str(error.orig), "")
        if engine.dialect.name == "sqlite":
            assert marker not in str(error)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS hide_parameters_probe"))
        await engine.dispose()


def _migrate_to(connection: Connection, revision: str, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["connection"] = connection
    if down:
        command.downgrade(config, revision)
    else:
        command.upgrade(config, revision)


async def test_administrators_recorded_with_one_role_keep_it_as_a_list(store_url: str) -> None:
    # Rows written before the administrators table held every role keep their one role.
    engine = create_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate_to, "0003")
            await conn.execute(
                text(
                    "INSERT INTO administrators (cert_sha256, name, role, member_id, created_at_us)"
                    " VALUES ('aa', 'ops', 'member-admin', 'LAC/GOV/POP', 1),"
                    " ('bb', 'root', 'registry-admin', NULL, 2)"
                )
            )
        opened = await RegistryStore.open(store_url)
        try:
            pop = await opened.administrator("aa")
            root = await opened.administrator("bb")
        finally:
            await opened.close()
        assert pop is not None
        assert pop.roles == ("member-admin:LAC/GOV/POP",)
        assert root is not None
        assert root.roles == ("registry-admin",)
        async with engine.begin() as conn:
            await conn.run_sync(_migrate_to, "0003", True)  # and back: the first role is kept
            rows = await conn.execute(
                text("SELECT cert_sha256, role, member_id FROM administrators ORDER BY 1")
            )
            assert [tuple(r) for r in rows] == [
                ("aa", "member-admin", "LAC/GOV/POP"),
                ("bb", "registry-admin", None),
            ]
    finally:
        await engine.dispose()
