"""The GlobalConf view: lookups, deny-by-default contracts, consistency checks and bounds."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruta.faults import Fault
from ruta.globalconf import (
    MAX_DESCRIPTOR_SET_BYTES,
    MAX_METHODS_PER_ENTRY,
    MAX_TEXT_LENGTH,
    ConfigurationTooLargeError,
    Contract,
    GlobalConf,
    InvalidConfigurationError,
    Member,
    Savings,
    SecurityServer,
    Service,
)
from ruta.globalconf.limits import MAX_OPENAPI_BYTES
from ruta.globalconf.view import MAX_REMEMBERED_ALLOWS
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.timestamps import from_timestamp, to_timestamp
from ruta.v1 import globalconf_pb2
from tests.unit.ruta.globalconf.support import (
    PERSON_REGISTRY,
    POP,
    POP_REGISTRY,
    POP_SS1,
    PURPOSE,
    TAX,
    TAX_COLLECTOR,
    fingerprint_of,
    sample_configuration,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def view() -> GlobalConf:
    return GlobalConf.from_proto(sample_configuration(now=NOW))


def test_lookups(view: GlobalConf) -> None:
    assert view.instance == "LAC"
    assert view.expires_at == NOW + timedelta(seconds=600)
    pop = view.member(POP)
    assert pop is not None
    assert pop.name == "Population Registry"
    server = view.server(POP_SS1)
    assert server is not None
    assert server.address == "127.0.0.1:5501"
    assert server.audit_address == "127.0.0.1:5601"
    assert server.log_public_key == "LAC/GOV/POP/ss1+0a1b2c3d+AAAA"
    assert view.servers_of(POP) == (server,)
    assert view.servers_of(MemberId.parse("LAC/GOV/NONE")) == ()
    assert view.server_by_auth_cert(fingerprint_of("pop-ss1").upper()) == server
    assert view.server(ServerId(POP, "ss9")) is None
    service = view.service(PERSON_REGISTRY)
    assert service is not None
    assert service.methods == frozenset({"GetPerson", "ListPeople"})
    assert service.savings == Savings(citizen_minutes=20.0, paper_forms=1, cost=3.5)
    assert view.services_of(POP_REGISTRY) == (service,)
    assert view.has_subsystem(TAX_COLLECTOR)
    assert not view.has_subsystem(SubsystemId(TAX, "other"))
    assert [c.contract_id for c in view.contracts_of(TAX_COLLECTOR)] == ["c-0001"]
    assert view.witness_url == "http://127.0.0.1:9/witness"


@pytest.mark.parametrize(
    ("client", "service", "method", "purpose", "at", "allowed"),
    [
        (TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, NOW, True),
        (TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", "c-0001", NOW, True),  # contract id
        (TAX_COLLECTOR, PERSON_REGISTRY, "ListPeople", PURPOSE, NOW, False),  # not in contract
        (TAX_COLLECTOR, PERSON_REGISTRY, "DeletePerson", PURPOSE, NOW, False),  # not offered
        (TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", "marketing", NOW, False),
        (TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", "", NOW, False),
        (TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, NOW - timedelta(days=2), False),
        (TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, NOW + timedelta(days=30), False),
        (POP_REGISTRY, PERSON_REGISTRY, "GetPerson", PURPOSE, NOW, False),  # no contract
        (TAX_COLLECTOR, ServiceId(POP_REGISTRY, "other.v1.S"), "GetPerson", PURPOSE, NOW, False),
    ],
)
def test_allows_is_deny_by_default(
    view: GlobalConf,
    client: SubsystemId,
    service: ServiceId,
    method: str,
    purpose: str,
    at: datetime,
    allowed: bool,
) -> None:
    contract = view.allows(client, service, method, purpose, at)
    assert (contract is not None) is allowed
    if contract is not None:
        assert contract.contract_id == "c-0001"


def test_contract_without_methods_covers_every_offered_method() -> None:
    conf = sample_configuration(now=NOW)
    del conf.contracts[0].methods[:]
    view = GlobalConf.from_proto(conf)
    assert view.allows(TAX_COLLECTOR, PERSON_REGISTRY, "ListPeople", PURPOSE, NOW) is not None
    assert view.allows(TAX_COLLECTOR, PERSON_REGISTRY, "Other", PURPOSE, NOW) is None


def test_contract_without_end_date() -> None:
    conf = sample_configuration(now=NOW)
    conf.contracts[0].ClearField("valid_until")
    view = GlobalConf.from_proto(conf)
    assert view.contracts[0].valid_until is None
    far = NOW + timedelta(days=3650)
    assert view.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, far) is not None


def test_is_expired(view: GlobalConf) -> None:
    assert not view.is_expired(NOW)
    assert view.is_expired(view.expires_at)


def _duplicate_member(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.members.add().CopyFrom(c.members[0])


def _dangling_server(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.servers[0].id.member.member_code = "NONE"


def _dangling_service(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.services[0].id.subsystem.subsystem_code = "nowhere"


def _dangling_contract_service(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.contracts[0].service.service_name = "missing.v1.S"


def _dangling_contract_consumer(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.contracts[0].consumer.subsystem_code = "ghost"


def _dangling_subsystem(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.subsystems[0].id.member.member_code = "GHOST"


def _bad_identifier(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.members[1].id.member_code = "../etc"


def _bad_fingerprint(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.servers[0].auth_cert_sha256 = "ABC"


def _shared_fingerprint(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.servers[1].auth_cert_sha256 = c.servers[0].auth_cert_sha256


def _duplicate_contract(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.contracts.add().CopyFrom(c.contracts[0])


def _no_expiry(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.ClearField("expires_at")


def _bad_trust_anchor(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.trust_anchors.append(b"not a certificate")


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (_duplicate_member, "listed twice"),
        (_duplicate_contract, "listed twice"),
        (_dangling_server, "unlisted member"),
        (_dangling_subsystem, "unlisted member"),
        (_dangling_service, "unlisted subsystem"),
        (_dangling_contract_service, "unlisted service"),
        (_dangling_contract_consumer, "unlisted consumer"),
        (_bad_identifier, r"members\[1\] has an invalid identifier"),
        (_bad_fingerprint, "64 lowercase hex"),
        (_shared_fingerprint, "shares its authentication certificate"),
        (_no_expiry, "expires_at"),
        (_bad_trust_anchor, r"trust_anchors\[0\]"),
    ],
)
def test_inconsistent_documents_are_refused(
    damage: Callable[[globalconf_pb2.GlobalConfiguration], None], words: str
) -> None:
    conf = sample_configuration(now=NOW)
    damage(conf)
    with pytest.raises(InvalidConfigurationError, match=words) as info:
        GlobalConf.from_proto(conf)
    assert info.value.fault is Fault.SERVER_CONSUMER_INVALID_GLOBALCONF


def _big_descriptor(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.services[0].file_descriptor_set = b"\0" * (MAX_DESCRIPTOR_SET_BYTES + 1)


def _big_openapi(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.services[0].openapi = b"{" + b" " * MAX_OPENAPI_BYTES + b"}"


def _many_methods(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.services[0].methods.extend(f"M{i}" for i in range(MAX_METHODS_PER_ENTRY))


def _long_name(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.members[0].name = "x" * (MAX_TEXT_LENGTH + 1)


def _long_purpose(c: globalconf_pb2.GlobalConfiguration) -> None:
    c.contracts[0].purpose = "p" * (MAX_TEXT_LENGTH + 1)


@pytest.mark.parametrize(
    "damage", [_big_descriptor, _big_openapi, _many_methods, _long_name, _long_purpose]
)
def test_bounds(damage: Callable[[globalconf_pb2.GlobalConfiguration], None]) -> None:
    conf = sample_configuration(now=NOW)
    damage(conf)
    with pytest.raises(ConfigurationTooLargeError):
        GlobalConf.from_proto(conf)


# -- property: view -> wire -> view keeps everything ----------------------------------------

_part = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,6}", fullmatch=True)
_text = st.text(max_size=24)
_instant = st.datetimes(
    min_value=datetime(1971, 1, 1),  # noqa: DTZ001 - hypothesis adds the zone below
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
_amount = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def _views(draw: st.DrawFn) -> GlobalConf:
    instance = draw(_part)
    member_ids = draw(
        st.lists(st.builds(lambda c, m: MemberId(instance, c, m), _part, _part), unique=True)
        .map(tuple)
        .filter(lambda ids: len(ids) <= 6)
    )
    members = tuple(Member(m, draw(_text)) for m in member_ids)
    subsystems: list[SubsystemId] = []
    servers: list[SecurityServer] = []
    services: list[Service] = []
    contracts: list[Contract] = []
    if member_ids:
        subsystems = draw(
            st.lists(st.builds(SubsystemId, st.sampled_from(member_ids), _part), unique=True)
        )[:6]
        server_ids = draw(
            st.lists(st.builds(ServerId, st.sampled_from(member_ids), _part), unique=True)
        )[:6]
        servers = [
            SecurityServer(
                id=sid,
                address=draw(_text),
                auth_cert_sha256=hashlib.sha256(str(sid).encode()).hexdigest(),
                audit_address=draw(_text),
                log_public_key=draw(_text),
            )
            for sid in server_ids
        ]
    if subsystems:
        service_ids = draw(
            st.lists(st.builds(ServiceId, st.sampled_from(subsystems), _part), unique=True)
        )[:6]
        services = [
            Service(
                id=sid,
                methods=frozenset(draw(st.sets(_part, max_size=3))),
                file_descriptor_set=draw(st.binary(max_size=16)),
                description=draw(_text),
                savings=Savings(
                    citizen_minutes=draw(_amount),
                    paper_forms=draw(st.integers(0, 2**32 - 1)),
                    cost=draw(_amount),
                ),
            )
            for sid in service_ids
        ]
    if services:
        contracts = [
            Contract(
                contract_id=f"c-{n}",
                consumer=draw(st.sampled_from(subsystems)),
                service=draw(st.sampled_from(services)).id,
                methods=frozenset(draw(st.sets(_part, max_size=3))),
                purpose=draw(_text),
                legal_basis=draw(_text),
                valid_from=draw(_instant),
                valid_until=draw(st.none() | _instant),
            )
            for n in range(draw(st.integers(0, 6)))
        ]
    generated = draw(_instant)
    return GlobalConf(
        instance=instance,
        serial=draw(st.integers(0, 2**64 - 1)),
        generated_at=generated,
        expires_at=generated + timedelta(seconds=draw(st.integers(1, 10**6))),
        trust_anchors=(),
        ocsp_responder_certs=(),
        members=members,
        subsystems=tuple(subsystems),
        servers=tuple(servers),
        services=tuple(services),
        contracts=tuple(contracts),
        witness_public_key=draw(st.binary(max_size=40)),
        witness_url=draw(_text),
    )


@settings(max_examples=150, deadline=None)
@given(_views())
def test_round_trip_through_the_wire_form(view: GlobalConf) -> None:
    wire = view.to_proto()
    back = GlobalConf.from_proto(
        globalconf_pb2.GlobalConfiguration.FromString(wire.SerializeToString(deterministic=True))
    )
    assert back.to_proto() == wire
    assert set(back.members) == set(view.members)
    assert set(back.subsystems) == set(view.subsystems)
    assert set(back.servers) == set(view.servers)
    assert set(back.services) == set(view.services)
    assert set(back.contracts) == set(view.contracts)
    assert (back.instance, back.serial, back.generated_at, back.expires_at) == (
        view.instance,
        view.serial,
        view.generated_at,
        view.expires_at,
    )
    for server in view.servers:
        assert back.server(server.id) == server
        assert server in back.servers_of(server.id.member)
    for service in view.services:
        assert back.service(service.id) == service
    for contract in view.contracts:
        assert contract in back.contracts_of(contract.consumer)


def test_wire_timestamps_are_the_shared_helpers_encoding() -> None:
    # The view writes its instants with ruta.timestamps (one encoding for the whole code base),
    # to the microsecond, and the shared reader gives the same instants back.
    at = NOW + timedelta(microseconds=123_456)
    conf = sample_configuration(now=at)
    conf.contracts[0].valid_until.CopyFrom(to_timestamp(at + timedelta(days=1, microseconds=7)))
    wire = GlobalConf.from_proto(conf).to_proto()
    assert wire.generated_at == to_timestamp(at)
    assert from_timestamp(wire.generated_at) == at
    contract = GlobalConf.from_proto(conf).contracts[0]
    assert wire.contracts[0].valid_from == to_timestamp(contract.valid_from)
    assert wire.contracts[0].valid_until == to_timestamp(at + timedelta(days=1, microseconds=7))
    assert from_timestamp(wire.expires_at) == GlobalConf.from_proto(conf).expires_at


# -- verification parameters (docs/evidence-format.md, section 2) ---------------------------


def test_verification_parameters_default_when_unpublished() -> None:
    view = GlobalConf.from_proto(sample_configuration(now=NOW))
    assert view.ocsp_freshness == timedelta(seconds=3600)
    assert view.ocsp_clock_skew == timedelta(seconds=300)
    assert not view.to_proto().HasField("verification")


def test_verification_parameters_are_read_and_kept() -> None:
    conf = sample_configuration(now=NOW)
    conf.verification.ocsp_freshness_seconds = 7200
    conf.verification.ocsp_clock_skew_seconds = 60
    view = GlobalConf.from_proto(conf)
    assert view.ocsp_freshness == timedelta(seconds=7200)
    assert view.ocsp_clock_skew == timedelta(seconds=60)
    assert view.to_proto().verification == conf.verification


@pytest.mark.parametrize(
    ("freshness", "skew"), [(7 * 24 * 3600 + 1, 0), (0, 3601), (2**32 - 1, 2**32 - 1)]
)
def test_verification_parameters_over_their_bounds_are_refused(freshness: int, skew: int) -> None:
    conf = sample_configuration(now=NOW)
    conf.verification.ocsp_freshness_seconds = freshness
    conf.verification.ocsp_clock_skew_seconds = skew
    with pytest.raises(InvalidConfigurationError, match="over its bound"):
        GlobalConf.from_proto(conf)


def test_a_rest_services_openapi_description_round_trips() -> None:
    conf = sample_configuration(now=NOW)
    conf.services[0].openapi = b'{"openapi":"3.0.3"}'
    view = GlobalConf.from_proto(conf)
    service = view.services[0]
    assert service.is_rest
    assert service.openapi == b'{"openapi":"3.0.3"}'
    assert view.to_proto().services[0].openapi == b'{"openapi":"3.0.3"}'
    assert not GlobalConf.from_proto(sample_configuration(now=NOW)).services[0].is_rest


def test_a_contracts_rate_limit_round_trips() -> None:
    conf = sample_configuration(now=NOW)
    conf.contracts[0].rate_limit_per_minute = 600
    view = GlobalConf.from_proto(conf)
    assert view.contracts[0].rate_limit_per_minute == 600
    assert view.to_proto().contracts[0].rate_limit_per_minute == 600


def _allows_by_the_rule(
    view: GlobalConf,
    client: SubsystemId,
    service: ServiceId,
    method: str,
    purpose: str,
    at: datetime,
) -> Contract | None:
    """What ``allows`` answers, read off the document without any index or memo."""
    entry = next((s for s in view.services if s.id == service), None)
    if entry is None or (entry.methods and method not in entry.methods):
        return None
    return next(
        (
            c
            for c in view.contracts
            if c.consumer == client and c.service == service and c.permits(method, purpose, at)
        ),
        None,
    )


def _copy(identifier: SubsystemId | ServiceId) -> SubsystemId | ServiceId:
    """An equal identifier that is another object (the memo is keyed by objects)."""
    return type(identifier).parse(str(identifier))


@settings(max_examples=150, deadline=None)
@given(_views(), st.data())
def test_allows_remembered_answers_as_the_rule_does(view: GlobalConf, data: st.DataObject) -> None:
    """Asked again and again (the same objects, equal copies, other instants), ``allows``
    answers as the document's rule does: its memo keeps only what does not depend on time."""
    if not view.subsystems or not view.services:
        return
    for _ in range(6):
        client = data.draw(st.sampled_from(view.subsystems))
        service = data.draw(st.sampled_from(view.services)).id
        contracts = [c for c in view.contracts if c.service == service]
        method = data.draw(
            st.sampled_from(sorted({m for c in contracts for m in c.methods} | {"Other"}))
        )
        purpose = data.draw(st.sampled_from([c.purpose for c in contracts] + ["", "c-0"]))
        for at in data.draw(st.lists(_instant, min_size=1, max_size=4)):
            for asked_client, asked_service in (
                (client, service),
                (_copy(client), _copy(service)),
                (client, service),
            ):
                assert isinstance(asked_client, SubsystemId)
                assert isinstance(asked_service, ServiceId)
                assert view.allows(
                    asked_client, asked_service, method, purpose, at
                ) is _allows_by_the_rule(view, client, service, method, purpose, at)


def test_allows_checks_the_validity_on_every_call(view: GlobalConf) -> None:
    """The same question at other instants: the remembered candidates are checked at each."""
    contract = view.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, NOW)
    assert contract is not None
    assert contract.valid_until is not None
    ended = contract.valid_until
    assert view.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, ended) is None
    before = contract.valid_from - timedelta(microseconds=1)
    assert view.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, before) is None
    assert view.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, NOW) is contract


def test_allows_of_a_reloaded_configuration_is_its_own() -> None:
    """A configuration read again (a reload) answers from its own document, with the very
    identifier objects an earlier one remembered: a withdrawn contract no longer allows."""
    old = GlobalConf.from_proto(sample_configuration(now=NOW))
    assert old.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, NOW) is not None
    withdrawn = sample_configuration(now=NOW)
    del withdrawn.contracts[:]
    new = GlobalConf.from_proto(withdrawn)
    assert new.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, NOW) is None
    assert old.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, NOW) is not None
    narrowed = sample_configuration(now=NOW)
    narrowed.contracts[0].purpose = "other-purpose"
    again = GlobalConf.from_proto(narrowed)
    assert again.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, NOW) is None
    assert again.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", "other-purpose", NOW)


def test_allows_memo_is_bounded(view: GlobalConf) -> None:
    """Questions past the memo's bound (purposes are the caller's) still get the rule's answer,
    and the memo never holds more than its bound."""
    for n in range(MAX_REMEMBERED_ALLOWS + 10):
        assert view.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", f"p-{n}", NOW) is None
        assert len(view._allowed) <= MAX_REMEMBERED_ALLOWS
    assert view.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, NOW) is not None
