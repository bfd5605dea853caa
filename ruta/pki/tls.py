"""Mutual-TLS credentials for grpc.aio servers and channels, and the peer's certificate.

Every link in Ruta is mutual TLS: servers require a client certificate that chains to ``trust``;
channels present theirs. Keys and certificates may be given as objects, PEM bytes or file paths.
gRPC checks the chain and, on the client side, that the server's certificate names the target host
(DNS/IP SAN; use the ``grpc.ssl_target_name_override`` channel option when dialling an address the
certificate does not name). Ruta's own checks (fingerprint from the global configuration, OCSP,
roles) read :func:`peer_certificate` afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ruta.pki.certs import (
    certificate_pem,
    load_certificate,
    load_certificates,
    read_certificate_file,
)
from ruta.pki.errors import MalformedCertificateError
from ruta.pki.keys import PrivateKey, load_private_key

__all__ = [
    "CertificateSource",
    "KeySource",
    "channel_credentials",
    "peer_certificate",
    "server_credentials",
]

#: A private key: an object, or the path of a 0600 PEM file.
KeySource = PrivateKey | str | os.PathLike[str]
#: Certificates: one or several objects (leaf first), PEM bytes, or the path of a PEM file.
CertificateSource = x509.Certificate | Sequence[x509.Certificate] | bytes | str | os.PathLike[str]

#: Most certificates read from one certificate or trust file.
_MAX_TRUST_CERTIFICATES = 64


def _key_pem(key: KeySource, passphrase: bytes | None) -> bytes:
    obj = key if not isinstance(key, str | os.PathLike) else load_private_key(key, passphrase)
    return obj.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certs(source: CertificateSource, limit: int) -> list[x509.Certificate]:
    if isinstance(source, x509.Certificate):
        return [source]
    if isinstance(source, bytes):
        return load_certificates(source, limit=limit)
    if isinstance(source, str | os.PathLike):
        return load_certificates(read_certificate_file(source, limit=limit), limit=limit)
    certs = list(source)
    if not certs:
        raise MalformedCertificateError("no certificate given")
    return certs


def server_credentials(
    key: KeySource,
    cert: CertificateSource,
    trust: CertificateSource,
    require_client_auth: bool = True,
    *,
    passphrase: bytes | None = None,
) -> grpc.ServerCredentials:
    """Credentials for ``server.add_secure_port``: present ``cert`` (leaf first, then any
    intermediates) with ``key``; accept client certificates that chain to ``trust``.

    Raises :class:`KeyFileError` / :class:`MalformedCertificateError` for unreadable inputs.
    """
    pem_chain = certificate_pem(*_certs(cert, _MAX_TRUST_CERTIFICATES))
    return grpc.ssl_server_credentials(
        [(_key_pem(key, passphrase), pem_chain)],
        root_certificates=certificate_pem(*_certs(trust, _MAX_TRUST_CERTIFICATES)),
        require_client_auth=require_client_auth,
    )


def channel_credentials(
    key: KeySource,
    cert: CertificateSource,
    trust: CertificateSource,
    *,
    passphrase: bytes | None = None,
) -> grpc.ChannelCredentials:
    """Credentials for ``grpc.aio.secure_channel``: present ``cert`` with ``key``; accept a
    server whose certificate chains to ``trust``.

    Raises :class:`KeyFileError` / :class:`MalformedCertificateError` for unreadable inputs.
    """
    return grpc.ssl_channel_credentials(
        root_certificates=certificate_pem(*_certs(trust, _MAX_TRUST_CERTIFICATES)),
        private_key=_key_pem(key, passphrase),
        certificate_chain=certificate_pem(*_certs(cert, _MAX_TRUST_CERTIFICATES)),
    )


def peer_certificate(context: grpc.aio.ServicerContext[Any, Any]) -> x509.Certificate | None:
    """The client certificate the peer of the current call presented, or ``None`` (plaintext
    or no client certificate). Raises :class:`MalformedCertificateError` if gRPC hands over
    something that does not parse (it should not)."""
    values = list(context.auth_context().get("x509_pem_cert") or ())
    if not values:
        return None
    return load_certificate(values[0])
