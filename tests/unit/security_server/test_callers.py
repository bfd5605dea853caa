"""Which certificates a security server honours roles from (security_server/callers.py): only
those its role CA issued directly (checked by signature, not by name), then only while OCSP
vouches for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ruta.pki.testing import TestPki
from security_server.callers import CallerIssuerError, CallerRevokedError, CallerStatus
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
