"""Who may hold a role on a security server, and revocation of the client certificates that
carry one: auditors, auditor supervisors, the citizen service and the statistics role, over the
audit API and the auditor console (docs/adr/0036-role-certificate-issuers.md).

A role is honoured only from a certificate issued directly by a **role CA**, checked by
signature (not by name). Which CAs those are, the configuration in force says
(docs/adr/0039-role-issuers-in-the-global-configuration.md):

- It names its **role issuers** (``RoleIssuers``, each one of its trust anchors): those, or only
  those of them that ``[audit] role_ca`` names. The setting narrows what the registry
  publishes and never widens it: a ``role_ca`` certificate the configuration does not name as a
  role issuer honours nobody (and stops the server at start-up, :func:`check_role_ca`).
- It does not say (a configuration from before the field), and the rule of
  docs/adr/0036-role-certificate-issuers.md holds: the trust anchor(s) ``[audit] role_ca`` names,
  or else the configuration's only trust anchor. With several anchors and no ``role_ca``, none.

A certificate from another CA (``audit.client_ca`` or ``console.client_ca`` that is not a role
CA, another trust anchor, an intermediate) completes the TLS handshake but is refused its roles.

The role CA's certificates are then checked against OCSP exactly as transport peers'
authentication certificates are (answers cached by the server's
:class:`~ruta.pki.ocsp.OcspClient`): refused when OCSP reports one revoked (or unknown), or when
its status cannot be established.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ruta.faults import Fault, RutaError
from ruta.pki.certs import fingerprint
from ruta.pki.errors import PkiError
from ruta.pki.ocsp import CertStatus
from security_server.transport import PeerStatus

__all__ = ["CallerIssuerError", "CallerRevokedError", "CallerStatus", "check_role_ca"]


class CallerRevokedError(RutaError):
    """A caller's client certificate is revoked, or its revocation status cannot be
    established (``client.permission_denied``)."""

    default_fault = Fault.CLIENT_PERMISSION_DENIED


class CallerIssuerError(RutaError):
    """A caller's client certificate was not issued by the server's role CA, so the roles it
    names are not honoured (``client.permission_denied``)."""

    default_fault = Fault.CLIENT_PERMISSION_DENIED


def check_role_ca(
    role_ca: Sequence[x509.Certificate], published: Sequence[x509.Certificate] | None
) -> None:
    """Return when ``role_ca`` (``[audit] role_ca``'s certificates) stays within the role
    issuers ``published`` by the configuration (``None``: it publishes none, so the older rule
    holds and any ``role_ca`` passes here). Raises :class:`CallerIssuerError` naming the first
    certificate that is not a published role issuer: a server's setting may narrow what the
    registry publishes, never widen it."""
    if published is None:
        return
    for cert in role_ca:
        if cert not in published:
            raise CallerIssuerError(
                f"[audit] role_ca names the CA {cert.subject.rfc4514_string()} (SHA-256 "
                f"{fingerprint(cert)}), which the configuration in force does not name as a "
                "role issuer, so no role is honoured here; a server may only narrow the "
                "registry's role issuers: remove role_ca or name one of them"
            )


def _unpublished() -> Sequence[x509.Certificate] | None:
    return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True, slots=True)
class CallerStatus:
    """Checks callers' role certificates (see the module docstring).

    ``anchors`` returns the trust anchors of the configuration in force (none while the server
    holds none); ``role_ca`` is ``[audit] role_ca`` (empty: the published role issuers, or the
    configuration's only anchor); ``role_issuers`` returns the role issuers the configuration in
    force publishes (``None`` when it publishes none: an older configuration, or none held)."""

    peers: PeerStatus
    anchors: Callable[[], Sequence[x509.Certificate]]
    role_ca: tuple[x509.Certificate, ...] = ()
    role_issuers: Callable[[], Sequence[x509.Certificate] | None] = _unpublished

    def role_issuer(self, cert: x509.Certificate) -> x509.Certificate:
        """The role CA that issued ``cert``; raises :class:`CallerIssuerError` when no role CA
        in force did."""
        issuers = self._issuers()
        issuer = next((a for a in issuers if _issued_by(cert, a)), None)
        if issuer is None:
            raise CallerIssuerError(
                f"roles are honoured only from certificates the instance's role CA issued "
                f"directly; this one was issued by {cert.issuer.rfc4514_string()}: ask for a "
                f"role certificate from the registry's CA"
            )
        return issuer

    def _issuers(self) -> tuple[x509.Certificate, ...]:
        """The role CAs in force (never empty); raises :class:`CallerIssuerError` when there
        is none."""
        published = self.role_issuers()
        if published is not None:
            check_role_ca(self.role_ca, published)
            issuers = tuple(self.role_ca) or tuple(published)
            if not issuers:
                raise CallerIssuerError(
                    "the configuration in force names no role issuer, so no role is honoured "
                    "on this instance"
                )
            return issuers
        anchors = tuple(self.anchors())
        if self.role_ca:
            issuers = tuple(a for a in anchors if a in self.role_ca)
            if not issuers:
                raise CallerIssuerError(
                    "no certificate of [audit] role_ca is a trust anchor of the configuration "
                    "in force, so no role is honoured here; the operator must name the CA that "
                    "issues role certificates"
                )
        elif len(anchors) == 1:
            issuers = anchors
        else:
            raise CallerIssuerError(
                f"the configuration in force lists {len(anchors)} trust anchors and this server "
                "names none as its role CA ([audit] role_ca), so no role is honoured here"
            )
        return issuers

    async def check(self, cert: x509.Certificate) -> None:
        """Return when ``cert``'s roles may be honoured; raise :class:`CallerIssuerError` when
        the role CA did not issue it, :class:`CallerRevokedError` when OCSP reports it other
        than good or its status cannot be established."""
        issuer = self.role_issuer(cert)
        try:
            status = (await self.peers.ocsp.status(cert, issuer)).status
        except PkiError as exc:
            raise CallerRevokedError(
                f"the revocation status of the client certificate cannot be established "
                f"({exc.message}); it is refused until it can"
            ) from None
        if status is not CertStatus.GOOD:
            raise CallerRevokedError(
                f"the client certificate is {status} according to OCSP (revoked certificates "
                f"are refused); ask for a new one"
            )
