"""Building the global configuration: deterministic, canonical, active contracts only."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from registry.globalconf_build import build_configuration
from registry.model import (
    Contract,
    ContractState,
    Member,
    RegistrySnapshot,
    Savings,
    SecurityServer,
    Service,
    Subsystem,
)
from ruta.globalconf import (
    ConfigurationAnchor,
    canonicalise,
    sign_configuration,
    verify_configuration,
)
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.pki.certs import CertificateKind
from ruta.pki.testing import TestPki
from ruta.v1 import globalconf_pb2

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
LATER = NOW + timedelta(minutes=10)


def _contract(cid: str, state: ContractState, **kwargs: object) -> Contract:
    base = Contract(
        id=cid,
        consumer=SubsystemId.parse("LAC/GOV/TAX/app"),
        service=ServiceId.parse("LAC/GOV/POP/reg/pop.v1.People"),
        methods=("Get", "Find"),
        purpose="tax",
        legal_basis="Tax Act",
        valid_from=T0,
        valid_until=None,
        state=state,
        requested_by="x",
        requested_at=T0,
    )
    return replace(base, **kwargs)  # type: ignore[arg-type]


def _snapshot() -> RegistrySnapshot:
    members = [
        Member(id=MemberId("LAC", "GOV", code), name=code, created_at=T0)
        for code in ("TAX", "POP", "A.x", "A")
    ]
    subsystems = [
        Subsystem(id=SubsystemId.parse(s), created_at=T0)
        for s in ("LAC/GOV/TAX/app", "LAC/GOV/POP/reg", "LAC/GOV/A/z")
    ]
    servers = [
        SecurityServer(
            id=ServerId.parse(f"LAC/GOV/{m}/ss1"),
            address=f"{m.lower()}:1",
            auth_cert_der=m.encode(),
            audit_address="",
            created_at=T0,
        )
        for m in ("TAX", "POP")
    ]
    services = [
        Service(
            id=ServiceId.parse("LAC/GOV/POP/reg/pop.v1.People"),
            methods=("Get", "Find"),
            file_descriptor_set=b"\x0a\x00",
            description="people",
            savings=Savings(citizen_minutes=5, paper_forms=1, cost=2.5),
            created_at=T0,
        )
    ]
    contracts = [
        _contract("c-active", ContractState.ACTIVE),
        _contract("b-active-later", ContractState.ACTIVE, valid_from=NOW + timedelta(minutes=5)),
        _contract("d-future", ContractState.ACTIVE, valid_from=LATER + timedelta(days=1)),
        _contract("e-ended", ContractState.ACTIVE, valid_until=NOW - timedelta(seconds=1)),
        _contract("f-approved", ContractState.APPROVED),
        _contract("g-revoked", ContractState.REVOKED),
        _contract("h-requested", ContractState.REQUESTED),
    ]
    return RegistrySnapshot(
        change_seq=7,
        members=tuple(members),
        subsystems=tuple(subsystems),
        servers=tuple(servers),
        services=tuple(services),
        contracts=tuple(contracts),
    )


def _shuffled(snapshot: RegistrySnapshot, seed: int) -> RegistrySnapshot:
    rng = random.Random(seed)

    def mix(items: tuple[object, ...]) -> tuple[object, ...]:
        out = list(items)
        rng.shuffle(out)
        return tuple(out)

    return replace(
        snapshot,
        members=mix(snapshot.members),  # type: ignore[arg-type]
        subsystems=mix(snapshot.subsystems),  # type: ignore[arg-type]
        servers=mix(snapshot.servers),  # type: ignore[arg-type]
        contracts=mix(snapshot.contracts),  # type: ignore[arg-type]
    )


def _build(snapshot: RegistrySnapshot) -> bytes:
    conf = build_configuration(
        snapshot,
        instance="LAC",
        serial=3,
        generated_at=NOW,
        expires_at=LATER,
        trust_anchors=[b"b", b"a"],
    )
    assert canonicalise(conf) is conf
    return conf.SerializeToString(deterministic=True)


@pytest.mark.parametrize("seed", range(5))
def test_same_content_gives_same_bytes(seed: int) -> None:
    assert _build(_shuffled(_snapshot(), seed)) == _build(_snapshot())


def test_only_contracts_in_force_during_the_document_are_published() -> None:
    conf = build_configuration(
        _snapshot(),
        instance="LAC",
        serial=1,
        generated_at=NOW,
        expires_at=LATER,
        trust_anchors=[],
    )
    assert [c.contract_id for c in conf.contracts] == ["b-active-later", "c-active"]
    assert not conf.contracts[1].HasField("valid_until")
    assert list(conf.contracts[1].methods) == ["Find", "Get"]


def test_built_document_signs_and_verifies(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    signer = pki.issue(CertificateKind.SIGN, member=MemberId.parse("LAC/GOV/REG"), name="conf")
    now = datetime.now(UTC)
    conf = build_configuration(
        _snapshot(),
        instance="LAC",
        serial=9,
        generated_at=now,
        expires_at=now + timedelta(minutes=10),
        trust_anchors=[pki.root.der],
        witness_public_key=b"witness+abcd",
        witness_url="http://127.0.0.1:1/witness",
    )
    signed = sign_configuration(conf, signer=signer.signer(), certificate=signer.certificate)
    anchor = ConfigurationAnchor(
        instance="LAC",
        globalconf_url="http://127.0.0.1:1/globalconf",
        certificates=(signer.certificate,),
    )
    view = verify_configuration(signed, anchor, now=now)
    assert view.serial == 9
    assert view.service(ServiceId.parse("LAC/GOV/POP/reg/pop.v1.People")) is not None
    assert view.server(ServerId.parse("LAC/GOV/POP/ss1")) is not None


def test_verification_parameters_are_published() -> None:
    conf = build_configuration(
        _snapshot(),
        instance="LAC",
        serial=1,
        generated_at=NOW,
        expires_at=LATER,
        trust_anchors=[],
        verification=globalconf_pb2.VerificationParameters(
            ocsp_freshness_seconds=1800, ocsp_clock_skew_seconds=120
        ),
    )
    assert conf.verification.ocsp_freshness_seconds == 1800
    assert conf.verification.ocsp_clock_skew_seconds == 120


def test_role_issuers_are_published_sorted_or_left_out() -> None:
    def build(role_issuers: list[str] | None) -> globalconf_pb2.GlobalConfiguration:
        return build_configuration(
            _snapshot(),
            instance="LAC",
            serial=1,
            generated_at=NOW,
            expires_at=LATER,
            trust_anchors=[],
            role_issuers=role_issuers,
        )

    assert not build(None).HasField("role_issuers")
    empty = build([])
    assert empty.HasField("role_issuers")
    assert not empty.role_issuers.anchor_sha256
    named = build(["b" * 64, "a" * 64, "b" * 64])
    assert list(named.role_issuers.anchor_sha256) == ["a" * 64, "b" * 64]
    assert canonicalise(named) is named
