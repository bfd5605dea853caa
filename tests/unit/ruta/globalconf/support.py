"""Shared pieces of the global-configuration tests: a settable clock, a signing identity for
the registry and a small but complete sample configuration."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from google.protobuf import timestamp_pb2

from ruta.globalconf import ConfigurationAnchor
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.pki.certs import certificate_der
from ruta.pki.keys import FileSigner
from ruta.pki.testing import Credential, TestPki
from ruta.v1 import globalconf_pb2

INSTANCE = "LAC"
POP = MemberId.parse("LAC/GOV/POP")
TAX = MemberId.parse("LAC/GOV/TAX")
POP_REGISTRY = SubsystemId(POP, "registry")
TAX_COLLECTOR = SubsystemId(TAX, "collector")
PERSON_REGISTRY = ServiceId(POP_REGISTRY, "population.v1.PersonRegistry")
POP_SS1 = ServerId(POP, "ss1")
TAX_SS1 = ServerId(TAX, "ss1")
PURPOSE = "tax-assessment"


@dataclass
class FakeClock:
    """A clock tests move by hand (the time seam of the publisher and the client)."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass(frozen=True)
class RegistryIdentity:
    """The registry's configuration-signing credential and the anchor servers start from."""

    credential: Credential
    anchor: ConfigurationAnchor

    @property
    def signer(self) -> FileSigner:
        return self.credential.signer()

    @property
    def certificate(self) -> x509.Certificate:
        return self.credential.certificate


def registry_identity(
    pki: TestPki, url: str = "http://127.0.0.1:9/globalconf", *, code: str = "REG"
) -> RegistryIdentity:
    credential = pki.sign(f"{INSTANCE}/GOV/{code}")
    anchor = ConfigurationAnchor(
        instance=INSTANCE, globalconf_url=url, certificates=(credential.certificate,)
    )
    return RegistryIdentity(credential, anchor)


def _ts(at: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def fingerprint_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sample_configuration(
    *,
    now: datetime,
    serial: int = 1,
    validity: timedelta = timedelta(seconds=600),
    trust_anchors: tuple[x509.Certificate, ...] = (),
    member_name: str = "Population Registry",
) -> globalconf_pb2.GlobalConfiguration:
    """Two members, their subsystems and servers, one service and one contract."""
    conf = globalconf_pb2.GlobalConfiguration(
        instance=INSTANCE,
        serial=serial,
        generated_at=_ts(now),
        expires_at=_ts(now + validity),
        trust_anchors=sorted(certificate_der(c) for c in trust_anchors),
        witness_public_key=b"registry+abcd1234+AAAA",
        witness_url="http://127.0.0.1:9/witness",
    )
    conf.members.add(id=POP.to_proto(), name=member_name)
    conf.members.add(id=TAX.to_proto(), name="Tax Agency")
    conf.subsystems.add(id=POP_REGISTRY.to_proto())
    conf.subsystems.add(id=TAX_COLLECTOR.to_proto())
    conf.servers.add(
        id=POP_SS1.to_proto(),
        address="127.0.0.1:5501",
        auth_cert_sha256=fingerprint_of("pop-ss1"),
        audit_address="127.0.0.1:5601",
        log_public_key="LAC/GOV/POP/ss1+0a1b2c3d+AAAA",
    )
    conf.servers.add(
        id=TAX_SS1.to_proto(), address="127.0.0.1:5502", auth_cert_sha256=fingerprint_of("tax")
    )
    conf.services.add(
        id=PERSON_REGISTRY.to_proto(),
        methods=["GetPerson", "ListPeople"],
        file_descriptor_set=b"\x0a\x00",
        description="Who lives where",
        savings=globalconf_pb2.Savings(citizen_minutes=20.0, paper_forms=1, cost=3.5),
    )
    conf.contracts.add(
        contract_id="c-0001",
        consumer=TAX_COLLECTOR.to_proto(),
        service=PERSON_REGISTRY.to_proto(),
        methods=["GetPerson"],
        purpose=PURPOSE,
        legal_basis="Tax Code art. 12",
        valid_from=_ts(now - timedelta(days=1)),
        valid_until=_ts(now + timedelta(days=30)),
    )
    return conf


def new_pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")
