"""Revocation of the client certificates that carry roles on a security server: auditors,
auditor supervisors, the citizen service and the statistics role, over the audit API and the
auditor console.

Their certificates are checked against OCSP exactly as transport peers' authentication
certificates are (:class:`~security_server.transport.PeerStatus`, answers cached by the server's
:class:`~ruta.pki.ocsp.OcspClient`): a certificate issued by a trust anchor of the configuration
in force is refused when OCSP reports it revoked (or unknown), or when its status cannot be
established; one issued by another CA (``audit.client_ca``, an intermediate) is not asked about.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509

from ruta.faults import Fault, RutaError
from ruta.pki.errors import PkiError
from ruta.pki.ocsp import CertStatus
from security_server.transport import PeerStatus

__all__ = ["CallerRevokedError", "CallerStatus"]


class CallerRevokedError(RutaError):
    """A caller's client certificate is revoked, or its revocation status cannot be
    established (``client.permission_denied``)."""

    default_fault = Fault.CLIENT_PERMISSION_DENIED


@dataclass(frozen=True, slots=True)
class CallerStatus:
    """Checks callers' client certificates for revocation (see the module docstring).

    ``anchors`` returns the trust anchors of the configuration in force (none while the server
    holds none)."""

    peers: PeerStatus
    anchors: Callable[[], Sequence[x509.Certificate]]

    async def check(self, cert: x509.Certificate) -> None:
        """Return when ``cert`` may still be honoured; raise :class:`CallerRevokedError` when
        OCSP reports it other than good or its status cannot be established."""
        try:
            status = await self.peers.status_of(cert, self.anchors())
        except PkiError as exc:
            raise CallerRevokedError(
                f"the revocation status of the client certificate cannot be established "
                f"({exc.message}); it is refused until it can"
            ) from None
        if status is not None and status is not CertStatus.GOOD:
            raise CallerRevokedError(
                f"the client certificate is {status} according to OCSP (revoked certificates "
                f"are refused); ask for a new one"
            )
