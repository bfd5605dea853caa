"""Consoles authenticated by a TLS client certificate (registry administration, the auditor's):
the listener's TLS context, the certificate a browser presented, and its roles.

The context asks for a client certificate but does not require one, so a browser without a
certificate gets a page that says what to do rather than a bare handshake failure; a certificate
that does not chain to the instance's CA still fails the handshake. Every role check is made on
the verified certificate of the connection the request came on.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509

from ruta.pki.certs import Role, fingerprint, load_certificate, roles_of
from ruta.pki.errors import PkiError

__all__ = ["ClientCertificate", "client_certificate", "console_tls_context", "peer_certificate"]


def console_tls_context(*, cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """A server context presenting ``cert``/``key``, TLS 1.2 or later, asking browsers for a
    client certificate that chains to ``client_ca`` (optional: see the module's description).

    Raises :class:`OSError` / :class:`ssl.SSLError` when a file cannot be read or used.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=str(client_ca))
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The verified certificate a request's connection presented, and the roles it names
    (empty when it names none, or a role that does not parse). The names are claims: a console
    honours them only after its own issuer and revocation check (a security server's:
    ``security_server.callers``; the registry's console trusts its own CA alone)."""

    certificate: x509.Certificate
    fingerprint: str
    roles: frozenset[Role]

    @property
    def subject(self) -> str:
        """The certificate's subject, as RFC 4514 text (for pages and audit trails)."""
        return self.certificate.subject.rfc4514_string()


def peer_certificate(request: web.Request) -> x509.Certificate | None:
    """The verified client certificate of ``request``'s TLS connection, or None when there is
    none (plain HTTP, a browser or caller that presented none, or one that does not parse)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return load_certificate(der)
    except PkiError:
        return None


def client_certificate(request: web.Request) -> ClientCertificate | None:
    """The client certificate of ``request``'s TLS connection with its roles, or None when
    there is none (see :func:`peer_certificate`)."""
    certificate = peer_certificate(request)
    if certificate is None:
        return None
    try:
        roles = roles_of(certificate)
    except PkiError:
        roles = frozenset()
    return ClientCertificate(certificate, fingerprint(certificate), roles)
