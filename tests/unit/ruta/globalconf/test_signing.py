"""Signing and verifying a configuration: determinism and every refusal."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ruta.faults import Fault
from ruta.globalconf import (
    MAX_DOCUMENT_BYTES,
    ConfigurationAnchor,
    ConfigurationSignatureError,
    ConfigurationTooLargeError,
    GlobalConfError,
    InvalidConfigurationError,
    OutdatedGlobalConfError,
    canonicalise,
    open_configuration,
    sign_configuration,
    verify_configuration,
)
from ruta.pki.keys import FileSigner
from ruta.v1 import globalconf_pb2
from tests.unit.ruta.globalconf.support import (
    PERSON_REGISTRY,
    PURPOSE,
    TAX_COLLECTOR,
    RegistryIdentity,
    new_pki,
    registry_identity,
    sample_configuration,
)

NOW = datetime.now(UTC).replace(microsecond=0)
#: One signed sample shared by the property test's examples (signing is randomised).
_SIGNED_SAMPLE: dict[str, bytes] = {}


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> RegistryIdentity:
    return registry_identity(new_pki(tmp_path_factory.mktemp("signing")))


def _sign(identity: RegistryIdentity, conf: globalconf_pb2.GlobalConfiguration) -> bytes:
    return sign_configuration(conf, signer=identity.signer, certificate=identity.certificate)


def _shuffled(conf: globalconf_pb2.GlobalConfiguration) -> globalconf_pb2.GlobalConfiguration:
    out = globalconf_pb2.GlobalConfiguration()
    out.CopyFrom(conf)
    rng = random.Random(7)
    for name in ("members", "subsystems", "servers"):
        field = getattr(out, name)
        items = [type(x)() for x in field]
        for copy, item in zip(items, field, strict=True):
            copy.CopyFrom(item)
        rng.shuffle(items)
        items.reverse()
        del field[:]
        field.extend(items)
    out.services[0].methods.reverse()
    return out


def test_sign_then_verify(identity: RegistryIdentity) -> None:
    signed = _sign(identity, sample_configuration(now=NOW))
    view = verify_configuration(signed, identity.anchor, now=NOW)
    assert view.serial == 1
    assert view.signed == signed
    assert view.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, NOW) is not None


def test_canonical_configuration_bytes_do_not_depend_on_input_order(
    identity: RegistryIdentity,
) -> None:
    conf = sample_configuration(now=NOW)
    shuffled = _shuffled(conf)
    assert shuffled != conf
    assert canonicalise(conf) is conf  # already canonical: no copy
    a = globalconf_pb2.SignedGlobalConfiguration.FromString(_sign(identity, conf))
    b = globalconf_pb2.SignedGlobalConfiguration.FromString(_sign(identity, shuffled))
    assert a.configuration == b.configuration
    assert shuffled == _shuffled(conf)  # the input was not modified


def test_ed25519_signing_is_byte_identical(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "LAC config signing")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, None)
    )
    signer = FileSigner(key)
    conf = sample_configuration(now=NOW)
    first = sign_configuration(conf, signer=signer, certificate=cert)
    again = sign_configuration(_shuffled(conf), signer=signer, certificate=cert)
    assert first == again
    anchor = ConfigurationAnchor(instance="LAC", globalconf_url="http://x/", certificates=(cert,))
    assert verify_configuration(first, anchor, now=NOW).serial == 1


def _flip_content(signed: bytes) -> bytes:
    envelope = globalconf_pb2.SignedGlobalConfiguration.FromString(signed)
    conf = globalconf_pb2.GlobalConfiguration.FromString(envelope.configuration)
    conf.members[0].name = "Evil Registry"
    envelope.configuration = conf.SerializeToString(deterministic=True)
    return envelope.SerializeToString()


def _flip_signature(signed: bytes) -> bytes:
    envelope = globalconf_pb2.SignedGlobalConfiguration.FromString(signed)
    envelope.signature = envelope.signature[:-1] + bytes([envelope.signature[-1] ^ 1])
    return envelope.SerializeToString()


def test_tampered_content_is_refused(identity: RegistryIdentity) -> None:
    signed = _sign(identity, sample_configuration(now=NOW))
    with pytest.raises(ConfigurationSignatureError, match="does not verify"):
        verify_configuration(_flip_content(signed), identity.anchor, now=NOW)


def test_tampered_signature_is_refused(identity: RegistryIdentity) -> None:
    signed = _sign(identity, sample_configuration(now=NOW))
    with pytest.raises(ConfigurationSignatureError):
        verify_configuration(_flip_signature(signed), identity.anchor, now=NOW)


def test_wrong_signer_is_refused(identity: RegistryIdentity, tmp_path: Path) -> None:
    other = registry_identity(new_pki(tmp_path), code="EVIL")
    signed = _sign(other, sample_configuration(now=NOW))
    with pytest.raises(ConfigurationSignatureError, match="anchor does not list") as info:
        verify_configuration(signed, identity.anchor, now=NOW)
    assert info.value.fault is Fault.SERVER_CONSUMER_INVALID_GLOBALCONF


def test_signer_swapped_into_envelope_is_refused(
    identity: RegistryIdentity, tmp_path: Path
) -> None:
    """A document signed by another key but carrying the anchor's certificate."""
    other = registry_identity(new_pki(tmp_path), code="EVIL")
    signed = _sign(other, sample_configuration(now=NOW))
    envelope = globalconf_pb2.SignedGlobalConfiguration.FromString(signed)
    envelope.signer_certificate = identity.credential.der
    with pytest.raises(ConfigurationSignatureError, match="does not verify"):
        verify_configuration(envelope.SerializeToString(), identity.anchor, now=NOW)


def test_anchor_listing_several_certificates(identity: RegistryIdentity, tmp_path: Path) -> None:
    """During a key roll-over the anchor lists the old and the new certificate."""
    new = registry_identity(new_pki(tmp_path), code="REG2")
    anchor = ConfigurationAnchor(
        instance="LAC",
        globalconf_url="http://x/",
        certificates=(identity.certificate, new.certificate),
    )
    for who in (identity, new):
        assert verify_configuration(_sign(who, sample_configuration(now=NOW)), anchor, now=NOW)


def test_signer_certificate_outside_its_validity_is_refused(tmp_path: Path) -> None:
    pki = new_pki(tmp_path)
    credential = pki.sign("LAC/GOV/REG", not_after=NOW + timedelta(hours=1))
    anchor = ConfigurationAnchor(
        instance="LAC", globalconf_url="http://x/", certificates=(credential.certificate,)
    )
    signed = sign_configuration(
        sample_configuration(now=NOW),
        signer=credential.signer(),
        certificate=credential.certificate,
    )
    later = NOW + timedelta(hours=2)
    with pytest.raises(ConfigurationSignatureError, match="not valid now"):
        verify_configuration(signed, anchor, now=later)


def test_signer_key_must_match_the_certificate(identity: RegistryIdentity, tmp_path: Path) -> None:
    other = registry_identity(new_pki(tmp_path), code="EVIL")
    with pytest.raises(ConfigurationSignatureError, match="does not match"):
        sign_configuration(
            sample_configuration(now=NOW), signer=other.signer, certificate=identity.certificate
        )


def test_expired_document_is_refused(identity: RegistryIdentity) -> None:
    signed = _sign(identity, sample_configuration(now=NOW))
    with pytest.raises(OutdatedGlobalConfError) as info:
        verify_configuration(signed, identity.anchor, now=NOW + timedelta(seconds=600))
    assert info.value.fault is Fault.SERVER_CONSUMER_OUTDATED_GLOBALCONF


def test_other_instance_is_refused(identity: RegistryIdentity) -> None:
    conf = sample_configuration(now=NOW)
    conf.instance = "EE"
    for entry in conf.members:
        entry.id.instance = "EE"
    conf.ClearField("subsystems")
    conf.ClearField("servers")
    conf.ClearField("services")
    conf.ClearField("contracts")
    with pytest.raises(InvalidConfigurationError, match="instance 'EE'"):
        verify_configuration(_sign(identity, conf), identity.anchor, now=NOW)


@pytest.mark.parametrize("garbage", [b"", b"\xff\xff\xff", b"\x0a\xff\xff\xff\x0f"])
def test_garbage_is_refused(identity: RegistryIdentity, garbage: bytes) -> None:
    with pytest.raises(ConfigurationSignatureError):
        verify_configuration(garbage, identity.anchor, now=NOW)


def test_oversize_document_is_refused_before_parsing(identity: RegistryIdentity) -> None:
    with pytest.raises(ConfigurationTooLargeError):
        verify_configuration(b"\0" * (MAX_DOCUMENT_BYTES + 1), identity.anchor, now=NOW)


def test_registry_refuses_to_sign_what_clients_refuse(identity: RegistryIdentity) -> None:
    conf = sample_configuration(now=NOW)
    conf.contracts[0].service.service_name = "missing.v1.S"
    with pytest.raises(InvalidConfigurationError):
        _sign(identity, conf)


def test_resigned_unchanged_content_reuses_the_previous_indexes(
    identity: RegistryIdentity,
) -> None:
    first = verify_configuration(
        _sign(identity, sample_configuration(now=NOW, serial=1)), identity.anchor, now=NOW
    )
    later = NOW + timedelta(seconds=60)
    again = sample_configuration(now=NOW, serial=2)
    again.generated_at.FromDatetime(later)
    again.expires_at.FromDatetime(later + timedelta(seconds=600))
    resigned = _sign(identity, again)
    second = open_configuration(resigned, identity.anchor, now=later, previous=first)
    assert (second.serial, second.generated_at, second.signed) == (2, later, resigned)
    assert second.expires_at == later + timedelta(seconds=600)
    assert second.contracts is first.contracts  # shared, not rebuilt
    assert second.allows(TAX_COLLECTOR, PERSON_REGISTRY, "GetPerson", PURPOSE, later)
    assert (first.serial, first.generated_at) == (1, NOW)  # the previous view is unchanged

    changed = _sign(identity, sample_configuration(now=later, serial=3, member_name="Other"))
    third = open_configuration(changed, identity.anchor, now=later, previous=second)
    assert third.contracts is not first.contracts
    assert third.content_digest != first.content_digest


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_every_single_byte_corruption_is_refused(
    identity: RegistryIdentity, data: st.DataObject
) -> None:
    signed = _SIGNED_SAMPLE.setdefault("doc", _sign(identity, sample_configuration(now=NOW)))
    index = data.draw(st.integers(0, len(signed) - 1))
    flip = data.draw(st.integers(1, 255))
    damaged = signed[:index] + bytes([signed[index] ^ flip]) + signed[index + 1 :]
    with pytest.raises(GlobalConfError):
        verify_configuration(damaged, identity.anchor, now=NOW)
