"""The configuration's role issuers (docs/adr/0039-role-issuers-in-the-global-configuration.md):
read, bounded, checked against the trust anchors, signed and verified; an older document
without the field reads as "not said"."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509

from ruta.faults import Fault
from ruta.globalconf import (
    ConfigurationTooLargeError,
    GlobalConf,
    InvalidConfigurationError,
    sign_configuration,
    verify_configuration,
)
from ruta.globalconf.limits import MAX_ROLE_ISSUERS
from ruta.pki.certs import fingerprint
from ruta.pki.testing import TestPki
from ruta.v1 import globalconf_pb2
from tests.unit.ruta.globalconf.support import (
    RegistryIdentity,
    new_pki,
    registry_identity,
    sample_configuration,
)

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def role_ca(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return new_pki(tmp_path_factory.mktemp("role-ca"))


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """An anchor that issues members' certificates, not roles."""
    return new_pki(tmp_path_factory.mktemp("external"))


@pytest.fixture(scope="module")
def identity(role_ca: TestPki) -> RegistryIdentity:
    return registry_identity(role_ca)


def _conf(role_ca: TestPki, external: TestPki, *issuers: str) -> globalconf_pb2.GlobalConfiguration:
    conf = sample_configuration(
        now=NOW, trust_anchors=(role_ca.root.certificate, external.root.certificate)
    )
    conf.role_issuers.SetInParent()
    conf.role_issuers.anchor_sha256.extend(issuers)
    return conf


def _anchors(role_ca: TestPki, external: TestPki) -> tuple[x509.Certificate, x509.Certificate]:
    return role_ca.root.certificate, external.root.certificate


def test_a_configuration_without_the_field_does_not_say(role_ca: TestPki) -> None:
    view = GlobalConf.from_proto(
        sample_configuration(now=NOW, trust_anchors=(role_ca.root.certificate,))
    )
    assert view.role_issuers is None
    assert not view.to_proto().HasField("role_issuers")


def test_named_anchors_are_the_role_issuers(role_ca: TestPki, external: TestPki) -> None:
    issuer, other = _anchors(role_ca, external)
    view = GlobalConf.from_proto(_conf(role_ca, external, fingerprint(issuer)))
    assert view.role_issuers == (issuer,)
    assert other in view.trust_anchors
    wire = view.to_proto()
    assert list(wire.role_issuers.anchor_sha256) == [fingerprint(issuer)]
    assert GlobalConf.from_proto(wire) == view


def test_an_empty_list_says_no_certificate_carries_a_role(
    role_ca: TestPki, external: TestPki
) -> None:
    view = GlobalConf.from_proto(_conf(role_ca, external))
    assert view.role_issuers == ()
    wire = view.to_proto()
    assert wire.HasField("role_issuers")
    assert not wire.role_issuers.anchor_sha256
    assert GlobalConf.from_proto(wire).role_issuers == ()


@pytest.mark.parametrize(
    ("issuer", "match"),
    [
        ("0" * 64, "names no trust anchor"),
        ("A" * 64, "not 64 lowercase hex"),
        ("ab:cd", "not 64 lowercase hex"),
        ("", "not 64 lowercase hex"),
    ],
)
def test_a_role_issuer_that_is_no_trust_anchor_is_refused(
    role_ca: TestPki, external: TestPki, issuer: str, match: str
) -> None:
    conf = _conf(role_ca, external, fingerprint(role_ca.root.certificate), issuer)
    with pytest.raises(InvalidConfigurationError, match=match) as refused:
        GlobalConf.from_proto(conf)
    assert "role_issuers.anchor_sha256[1]" in refused.value.message
    assert refused.value.fault is Fault.SERVER_CONSUMER_INVALID_GLOBALCONF


def test_an_issuer_of_a_configuration_without_anchors_is_refused(role_ca: TestPki) -> None:
    conf = sample_configuration(now=NOW)
    conf.role_issuers.anchor_sha256.append(fingerprint(role_ca.root.certificate))
    with pytest.raises(InvalidConfigurationError, match="names no trust anchor"):
        GlobalConf.from_proto(conf)


def test_a_role_issuer_listed_twice_is_refused(role_ca: TestPki, external: TestPki) -> None:
    sha256 = fingerprint(role_ca.root.certificate)
    with pytest.raises(InvalidConfigurationError, match="listed twice"):
        GlobalConf.from_proto(_conf(role_ca, external, sha256, sha256))


def test_role_issuers_over_their_bound_are_refused(role_ca: TestPki, external: TestPki) -> None:
    conf = _conf(role_ca, external, *[f"{i:064x}" for i in range(MAX_ROLE_ISSUERS + 1)])
    with pytest.raises(ConfigurationTooLargeError, match=f"limit is {MAX_ROLE_ISSUERS}"):
        GlobalConf.from_proto(conf)


def test_a_view_built_locally_is_checked_too(role_ca: TestPki, external: TestPki) -> None:
    view = GlobalConf.from_proto(
        sample_configuration(now=NOW, trust_anchors=(role_ca.root.certificate,))
    )
    with pytest.raises(InvalidConfigurationError, match="is not a trust anchor"):
        GlobalConf(
            instance=view.instance,
            serial=view.serial,
            generated_at=view.generated_at,
            expires_at=view.expires_at,
            trust_anchors=view.trust_anchors,
            ocsp_responder_certs=(),
            members=view.members,
            subsystems=view.subsystems,
            servers=view.servers,
            services=view.services,
            contracts=view.contracts,
            role_issuers=(external.root.certificate,),
        )


def test_signed_and_verified_in_canonical_order(
    identity: RegistryIdentity, role_ca: TestPki, external: TestPki
) -> None:
    first, second = sorted(fingerprint(c) for c in _anchors(role_ca, external))
    ordered = sign_configuration(
        _conf(role_ca, external, first, second),
        signer=identity.signer,
        certificate=identity.certificate,
    )
    reversed_ = sign_configuration(
        _conf(role_ca, external, second, first),
        signer=identity.signer,
        certificate=identity.certificate,
    )
    content = globalconf_pb2.SignedGlobalConfiguration.FromString
    assert content(ordered).configuration == content(reversed_).configuration
    view = verify_configuration(ordered, identity.anchor, now=NOW)
    assert {fingerprint(c) for c in view.role_issuers or ()} == {first, second}


def test_the_registry_refuses_to_sign_an_issuer_that_is_no_anchor(
    identity: RegistryIdentity, role_ca: TestPki, external: TestPki
) -> None:
    conf = sample_configuration(now=NOW, trust_anchors=(role_ca.root.certificate,))
    conf.role_issuers.anchor_sha256.append(fingerprint(external.root.certificate))
    with pytest.raises(InvalidConfigurationError, match="names no trust anchor"):
        sign_configuration(conf, signer=identity.signer, certificate=identity.certificate)
