"""Throwaway PKI for tests: a CA and certificates with keys, generated at test time.

Every test that needs certificates (registry, security servers, adapters, gateway) builds them
here instead of committing key material::

    from ruta.pki.testing import TestPki

    def test_something(tmp_path):
        pki = TestPki(tmp_path)                          # root CA (+ OCSP responder cert)
        ss = pki.auth("LAC/GOV/POP/ss1")                 # TLS cert: serverAuth+clientAuth,
                                                         # DNS localhost, IP 127.0.0.1
        signer = pki.sign("LAC/GOV/POP")                 # message-signing cert of a member
        backend = pki.subsystem("LAC/GOV/POP/registry")  # a backend's client cert
        admin = pki.role("registry-admin")     # or pki.role("member-admin", "LAC/GOV/POP")
        ss.key_path, ss.cert_path, pki.trust_path        # 0600 PEM key, PEM cert, PEM anchors
        signer.signer()                                  # a ruta.pki.keys.Signer
        pki.ocsp_response(signer.certificate)            # DER OCSP response ("good", signed now)

``TestPki(tmp_path, intermediate=True)`` issues from an intermediate CA under the root
(``pki.chain`` then holds it). ``not_before``/``not_after`` make expired or not-yet-valid
certificates; ``ocsp_response(..., revoked_at=..., this_update=..., responder=...)`` makes revoked,
stale or wrongly signed responses. Nothing here talks to the network.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509

from ruta.ids import MemberId, ServerId, SubsystemId
from ruta.pki.certs import (
    CertificateKind,
    Role,
    RoleName,
    ca_certificate,
    certificate_der,
    certificate_pem,
    end_entity_certificate,
    parse_role,
    profile_names,
)
from ruta.pki.keys import FileSigner, PrivateKey, generate_ec_key, save_private_key
from ruta.pki.ocsp import CertStatus, build_ocsp_response, cert_id

__all__ = ["DEFAULT_TEST_OCSP_URL", "Credential", "TestPki"]

#: AIA OCSP URL put into test certificates unless another is given (nothing listens there).
DEFAULT_TEST_OCSP_URL: Final = "http://127.0.0.1:9/ocsp"

_HOUR = datetime.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Credential:
    """A private key and its certificate, also written as files (key 0600)."""

    name: str
    key: PrivateKey
    certificate: x509.Certificate
    key_path: Path
    cert_path: Path

    @property
    def der(self) -> bytes:
        return certificate_der(self.certificate)

    @property
    def pem(self) -> bytes:
        return certificate_pem(self.certificate)

    def signer(self) -> FileSigner:
        """A :class:`~ruta.pki.keys.Signer` over this credential's key."""
        return FileSigner(self.key)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


@dataclass
class TestPki:
    """A root CA (and optionally an intermediate) in ``directory``, issuing Ruta profiles.

    ``ca`` is the issuing CA (the intermediate when there is one), ``root`` the trust anchor,
    ``ocsp_responder`` a delegated OCSP signing credential issued by ``ca``.
    """

    __test__ = False  # not a pytest test class, despite the name

    directory: Path
    intermediate: bool = False
    ocsp_url: str = DEFAULT_TEST_OCSP_URL
    root: Credential = field(init=False)
    ca: Credential = field(init=False)
    ocsp_responder: Credential = field(init=False)
    _count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        now = _now()
        root_key = generate_ec_key()
        root_cert = ca_certificate(
            key=root_key,
            common_name="Ruta Test Root CA",
            not_before=now - _HOUR,
            not_after=now + datetime.timedelta(days=3650),
        )
        self.root = self._write("root-ca", root_key, root_cert)
        if self.intermediate:
            ca_key = generate_ec_key()
            ca_cert = ca_certificate(
                key=ca_key,
                common_name="Ruta Test Issuing CA",
                not_before=now - _HOUR,
                not_after=now + datetime.timedelta(days=1825),
                issuer_certificate=root_cert,
                issuer_key=root_key,
                path_length=0,
            )
            self.ca = self._write("issuing-ca", ca_key, ca_cert)
        else:
            self.ca = self.root
        self.ocsp_responder = self.issue(CertificateKind.OCSP, name="ocsp-responder")

    # --- what tests read ----------------------------------------------------------------------

    @property
    def trust_anchors(self) -> list[x509.Certificate]:
        return [self.root.certificate]

    @property
    def trust_path(self) -> Path:
        """A PEM file with the trust anchor(s)."""
        return self.root.cert_path

    @property
    def chain(self) -> list[x509.Certificate]:
        """Intermediate certificates between an issued leaf and the anchor (may be empty)."""
        return [self.ca.certificate] if self.intermediate else []

    # --- issuing ------------------------------------------------------------------------------

    def issue(
        self,
        kind: CertificateKind,
        *,
        name: str | None = None,
        server: ServerId | None = None,
        member: MemberId | None = None,
        subsystem: SubsystemId | None = None,
        roles: tuple[Role, ...] = (),
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        key: PrivateKey | None = None,
        issuer: Credential | None = None,
    ) -> Credential:
        """Issue any profile with full control; the named helpers below cover the usual cases."""
        now = _now()
        key = key if key is not None else generate_ec_key()
        names: list[x509.GeneralName] = []
        if kind is CertificateKind.OCSP:
            common_name = f"{self.ca.certificate.subject.rfc4514_string()} OCSP"
        else:
            common_name, names = profile_names(
                kind,
                server=server,
                member=member,
                subsystem=subsystem,
                roles=roles,
                dns_names=dns_names,
                ip_addresses=ip_addresses,
            )
        issuer = issuer if issuer is not None else self.ca
        cert = end_entity_certificate(
            kind,
            public_key=key.public_key(),
            common_name=common_name,
            names=names,
            issuer_certificate=issuer.certificate,
            issuer_key=issuer.key,
            ocsp_url=self.ocsp_url,
            not_before=not_before if not_before is not None else now - _HOUR,
            not_after=not_after if not_after is not None else now + datetime.timedelta(days=30),
        )
        self._count += 1
        return self._write(name or f"{kind}-{self._count}", key, cert)

    def auth(
        self,
        server: ServerId | str,
        *,
        dns_names: tuple[str, ...] = ("localhost",),
        ip_addresses: tuple[str, ...] = ("127.0.0.1",),
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Credential:
        """A security server's authentication (TLS) certificate."""
        sid = server if isinstance(server, ServerId) else ServerId.parse(server)
        return self.issue(
            CertificateKind.AUTH,
            server=sid,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            not_before=not_before,
            not_after=not_after,
        )

    def sign(
        self,
        member: MemberId | str,
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        issuer: Credential | None = None,
    ) -> Credential:
        """A member's message-signing certificate."""
        mid = member if isinstance(member, MemberId) else MemberId.parse(member)
        return self.issue(
            CertificateKind.SIGN,
            member=mid,
            not_before=not_before,
            not_after=not_after,
            issuer=issuer,
        )

    def subsystem(self, subsystem: SubsystemId | str) -> Credential:
        """A backend's client certificate for its own security server."""
        sub = subsystem if isinstance(subsystem, SubsystemId) else SubsystemId.parse(subsystem)
        return self.issue(CertificateKind.SUBSYSTEM, subsystem=sub)

    def gateway(self, member: MemberId | str) -> Credential:
        """A member's HTTP gateway client certificate for its own security server."""
        mid = member if isinstance(member, MemberId) else MemberId.parse(member)
        return self.issue(CertificateKind.GATEWAY, member=mid)

    def role(self, role: RoleName | str, member: MemberId | str | None = None) -> Credential:
        """An admin/audit client certificate carrying one role."""
        mid = MemberId.parse(member) if isinstance(member, str) else member
        return self.issue(CertificateKind.ROLE, roles=(Role(RoleName(role), mid),))

    def roles(self, *texts: str, name: str | None = None) -> Credential:
        """An admin/audit client certificate carrying every role written in ``texts``, each as
        after ``urn:ruta:role:`` (``"auditor:LAC/GOV/POP", "auditor-bodies:LAC/GOV/POP"``)."""
        return self.issue(
            CertificateKind.ROLE, name=name, roles=tuple(parse_role(t) for t in texts)
        )

    def unchecked_role(self, text: str) -> Credential:
        """A role certificate whose SAN URI is ``urn:ruta:role:TEXT`` as given, without the
        profile's checks: what an earlier version or a careless CA may have issued (for
        example the bare ``auditor`` role)."""
        key = generate_ec_key()
        uri = f"urn:ruta:role:{text}"
        cert = end_entity_certificate(
            CertificateKind.ROLE,
            public_key=key.public_key(),
            common_name=uri,
            names=[x509.UniformResourceIdentifier(uri)],
            issuer_certificate=self.ca.certificate,
            issuer_key=self.ca.key,
            ocsp_url=self.ocsp_url,
            not_before=_now() - _HOUR,
            not_after=_now() + datetime.timedelta(days=30),
        )
        self._count += 1
        return self._write(f"role-{self._count}", key, cert)

    # --- OCSP -------------------------------------------------------------------------------

    def ocsp_response(
        self,
        cert: x509.Certificate,
        *,
        status: CertStatus = CertStatus.GOOD,
        this_update: datetime.datetime | None = None,
        revoked_at: datetime.datetime | None = None,
        reason: x509.ReasonFlags | None = None,
        responder: Credential | None = None,
        issuer: Credential | None = None,
    ) -> bytes:
        """A DER OCSP response about ``cert`` signed by ``responder`` (default: this CA's
        delegated OCSP responder). ``revoked_at`` implies status revoked."""
        if revoked_at is not None:
            status = CertStatus.REVOKED
        responder = responder if responder is not None else self.ocsp_responder
        issuer = issuer if issuer is not None else self.ca
        return build_ocsp_response(
            cert_id(cert, issuer.certificate),
            status=status,
            responder=responder.certificate,
            responder_key=responder.key,
            this_update=this_update if this_update is not None else _now(),
            revocation_time=revoked_at if revoked_at is not None else _now(),
            revocation_reason=reason,
        )

    # --- files --------------------------------------------------------------------------------

    def _write(self, name: str, key: PrivateKey, cert: x509.Certificate) -> Credential:
        key_path = self.directory / f"{name}.key"
        cert_path = self.directory / f"{name}.pem"
        save_private_key(key_path, key)
        cert_path.write_bytes(certificate_pem(cert))
        return Credential(name, key, cert, key_path, cert_path)
