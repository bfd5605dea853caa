"""Which certificates a security server honours roles from (security_server/callers.py): only
those its role CA issued directly (checked by signature, not by name), then only while OCSP
vouches for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ruta.pki.testing import TestPki
from security_server.callers import (
    CallerIssuerError,
    CallerRevokedError,
    CallerStatus,
    check_role_ca,
)
from security_server.transport import PeerStatus
from tests.unit.security_server.twin import MemoryOcsp


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("instance"))


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """Another CA, with the very same name as the instance's (names prove nothing)."""
    return TestPki(tmp_path_factory.mktemp("external"))


async def test_the_only_anchor_issues_roles(instance: TestPki) -> None:
    ocsp = MemoryOcsp(instance)
    status = CallerStatus(PeerStatus(ocsp), lambda: instance.trust_anchors)
    auditor = instance.roles("auditor-supervisor")
    await status.check(auditor.certificate)
    ocsp.revoked.add(auditor.certificate.serial_number)
    with pytest.raises(CallerRevokedError, match="revoked"):
        await status.check(auditor.certificate)


async def test_a_copied_role_from_another_ca_is_no_role(
    instance: TestPki, external: TestPki
) -> None:
    # external's certificate names the same issuer as the instance's CA and carries the role
    # URI: before, it got no revocation check at all (an issuer the server did not hold).
    status = CallerStatus(PeerStatus(MemoryOcsp(instance)), lambda: instance.trust_anchors)
    copied = external.roles("auditor-supervisor")
    assert copied.certificate.issuer == instance.root.certificate.subject
    with pytest.raises(CallerIssuerError, match="issued directly") as refused:
        await status.check(copied.certificate)
    assert refused.value.fault.value == "client.permission_denied"


async def test_an_intermediate_s_certificate_carries_no_role(tmp_path: Path) -> None:
    pki = TestPki(tmp_path, intermediate=True)
    status = CallerStatus(PeerStatus(MemoryOcsp(pki)), lambda: pki.trust_anchors)
    with pytest.raises(CallerIssuerError):
        await status.check(pki.roles("auditor-supervisor").certificate)


async def test_several_anchors_need_the_role_ca_named(instance: TestPki, external: TestPki) -> None:
    anchors = [*instance.trust_anchors, *external.trust_anchors]
    unnamed = CallerStatus(PeerStatus(MemoryOcsp(instance)), lambda: anchors)
    auditor = instance.roles("auditor-supervisor")
    with pytest.raises(CallerIssuerError, match=r"2 trust anchors.*role_ca"):
        await unnamed.check(auditor.certificate)
    named = CallerStatus(
        PeerStatus(MemoryOcsp(instance)), lambda: anchors, role_ca=(instance.root.certificate,)
    )
    await named.check(auditor.certificate)
    with pytest.raises(CallerIssuerError):
        await named.check(external.roles("auditor-supervisor").certificate)


async def test_a_role_ca_that_is_no_anchor_in_force_honours_nobody(
    instance: TestPki, external: TestPki
) -> None:
    status = CallerStatus(
        PeerStatus(MemoryOcsp(external)),
        lambda: instance.trust_anchors,
        role_ca=(external.root.certificate,),
    )
    with pytest.raises(CallerIssuerError, match="is a trust anchor of the configuration in force"):
        await status.check(external.roles("auditor-supervisor").certificate)


# -- role issuers the configuration publishes (docs/adr/0039) ---------------------------------


async def test_published_role_issuers_need_no_server_setting(
    instance: TestPki, external: TestPki
) -> None:
    anchors = [*instance.trust_anchors, *external.trust_anchors]
    status = CallerStatus(
        PeerStatus(MemoryOcsp(instance)),
        lambda: anchors,
        role_issuers=lambda: instance.trust_anchors,
    )
    await status.check(instance.roles("auditor-supervisor").certificate)
    with pytest.raises(CallerIssuerError, match="issued directly"):
        await status.check(external.roles("auditor-supervisor").certificate)


async def test_role_ca_narrows_the_published_issuers(instance: TestPki, external: TestPki) -> None:
    anchors = [*instance.trust_anchors, *external.trust_anchors]
    status = CallerStatus(
        PeerStatus(MemoryOcsp(instance)),
        lambda: anchors,
        role_ca=(instance.root.certificate,),
        role_issuers=lambda: anchors,
    )
    await status.check(instance.roles("auditor-supervisor").certificate)
    with pytest.raises(CallerIssuerError, match="issued directly"):
        await status.check(external.roles("auditor-supervisor").certificate)


async def test_role_ca_never_widens_the_published_issuers(
    instance: TestPki, external: TestPki
) -> None:
    # external is a trust anchor in force, but the configuration names only instance as a role
    # issuer: naming external in role_ca honours nobody, external's certificates included.
    anchors = [*instance.trust_anchors, *external.trust_anchors]
    status = CallerStatus(
        PeerStatus(MemoryOcsp(external)),
        lambda: anchors,
        role_ca=(external.root.certificate,),
        role_issuers=lambda: instance.trust_anchors,
    )
    for who in (external, instance):
        with pytest.raises(CallerIssuerError, match="does not name as a role issuer") as refused:
            await status.check(who.roles("auditor-supervisor").certificate)
        assert refused.value.fault.value == "client.permission_denied"
    with pytest.raises(CallerIssuerError, match=r"role_ca names the CA .*SHA-256"):
        check_role_ca((external.root.certificate,), instance.trust_anchors)
    check_role_ca((instance.root.certificate,), instance.trust_anchors)
    check_role_ca((external.root.certificate,), None)  # an older configuration: ADR 0036's rule


async def test_no_published_issuer_honours_nobody(instance: TestPki) -> None:
    status = CallerStatus(
        PeerStatus(MemoryOcsp(instance)), lambda: instance.trust_anchors, role_issuers=tuple
    )
    with pytest.raises(CallerIssuerError, match="names no role issuer"):
        await status.check(instance.roles("auditor-supervisor").certificate)


async def test_published_issuers_are_still_asked_about_over_ocsp(instance: TestPki) -> None:
    ocsp = MemoryOcsp(instance)
    status = CallerStatus(
        PeerStatus(ocsp),
        lambda: instance.trust_anchors,
        role_issuers=lambda: instance.trust_anchors,
    )
    auditor = instance.roles("auditor-supervisor")
    ocsp.revoked.add(auditor.certificate.serial_number)
    with pytest.raises(CallerRevokedError, match="revoked"):
        await status.check(auditor.certificate)
