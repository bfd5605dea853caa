"""Certificates: profiles, CSRs, the identifiers certificates carry, parsing with bounds.

Profiles (DESIGN.md "Trust"); every end-entity certificate carries an AIA OCSP URL:

=============  ====================================  ===========================================
kind           extended key usage / key usage        identifier (SAN URI)
=============  ====================================  ===========================================
``auth``       serverAuth + clientAuth /             ``urn:ruta:server:INSTANCE/CLASS/CODE/SERVER``
               digitalSignature                      plus DNS/IP names of the server's address
``sign``       documentSigning (RFC 9336) /          ``urn:ruta:member:INSTANCE/CLASS/CODE``
               digitalSignature + nonRepudiation
``subsystem``  clientAuth / digitalSignature         ``urn:ruta:subsystem:INSTANCE/CLASS/CODE/SUB``
``gateway``    clientAuth / digitalSignature         ``urn:ruta:gateway:INSTANCE/CLASS/CODE``: the
                                                     member's HTTP gateway, which its own security
                                                     server lets act for any of that member's
                                                     subsystems (docs/adr/0021-gateway.md)
``role``       clientAuth / digitalSignature         ``urn:ruta:role:registry-admin``,
                                                     ``urn:ruta:role:member-admin:INSTANCE/CLASS/CODE``,
                                                     ``urn:ruta:role:auditor:INSTANCE/CLASS/CODE``,
                                                     ``urn:ruta:role:auditor-supervisor``,
                                                     ``urn:ruta:role:auditor-bodies[:MEMBER]``
``ocsp``       OCSPSigning / digitalSignature,       none (subject names the CA); OCSP no-check
=============  ====================================  ===========================================

Everything that parses untrusted bytes is bounded (:data:`MAX_CERTIFICATE_BYTES`,
:data:`MAX_CSR_BYTES`, :data:`MAX_CHAIN_LENGTH`) and raises :class:`MalformedCertificateError`,
never a library exception.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from ruta.faults import Fault
from ruta.files import FileReadError, read_bounded
from ruta.ids import IdentifierError, MemberId, ServerId, SubsystemId
from ruta.pki.errors import MalformedCertificateError, PkiError
from ruta.pki.keys import PrivateKey

__all__ = [
    "DEFAULT_VALIDITY",
    "DOCUMENT_SIGNING",
    "MAX_CERTIFICATE_BYTES",
    "MAX_CHAIN_LENGTH",
    "MAX_CSR_BYTES",
    "CertificateKind",
    "CertificateProfileError",
    "Role",
    "RoleName",
    "ca_certificate",
    "certificate_der",
    "certificate_pem",
    "check_role_set",
    "end_entity_certificate",
    "fingerprint",
    "gateway_member_of",
    "gateway_uri",
    "load_certificate",
    "load_certificates",
    "load_csr",
    "make_csr",
    "member_id_of",
    "member_uri",
    "parse_der_certificate",
    "parse_pem_certificates",
    "parse_role",
    "profile_names",
    "read_certificate_file",
    "role_uri",
    "roles_of",
    "server_id_of",
    "server_uri",
    "subsystem_id_of",
    "subsystem_uri",
]

#: Largest DER certificate accepted from anyone (a Ruta certificate is well under 2 KiB).
MAX_CERTIFICATE_BYTES: Final = 16 * 1024
#: Largest CSR accepted (DER, or PEM text which is about 4/3 of it).
MAX_CSR_BYTES: Final = 16 * 1024
#: Most certificates in a chain from a leaf up to and including its trust anchor.
MAX_CHAIN_LENGTH: Final = 4

#: id-kp-documentSigning (RFC 9336): the EKU of message-signing certificates.
DOCUMENT_SIGNING: Final = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")

_URN_SERVER: Final = "urn:ruta:server:"
_URN_MEMBER: Final = "urn:ruta:member:"
_URN_SUBSYSTEM: Final = "urn:ruta:subsystem:"
_URN_ROLE: Final = "urn:ruta:role:"
_URN_GATEWAY: Final = "urn:ruta:gateway:"


class CertificateKind(enum.StrEnum):
    """The end-entity profiles a Ruta CA issues."""

    AUTH = "auth"
    SIGN = "sign"
    SUBSYSTEM = "subsystem"
    GATEWAY = "gateway"
    ROLE = "role"
    OCSP = "ocsp"


#: Validity of what a CA issues, per kind, unless the issuer says otherwise.
DEFAULT_VALIDITY: Final[dict[CertificateKind, datetime.timedelta]] = {
    CertificateKind.AUTH: datetime.timedelta(days=730),
    CertificateKind.SIGN: datetime.timedelta(days=730),
    CertificateKind.SUBSYSTEM: datetime.timedelta(days=365),
    CertificateKind.GATEWAY: datetime.timedelta(days=365),
    CertificateKind.ROLE: datetime.timedelta(days=365),
    CertificateKind.OCSP: datetime.timedelta(days=365),
}


class RoleName(enum.StrEnum):
    """Roles an admin or audit client certificate can carry (docs/adr/0012)."""

    REGISTRY_ADMIN = "registry-admin"
    MEMBER_ADMIN = "member-admin"
    #: Reads the message logs of one member's security servers (``auditor:MEMBER``).
    AUDITOR = "auditor"
    #: Reads the message logs of every security server of the instance, and the registry.
    AUDITOR_SUPERVISOR = "auditor-supervisor"
    #: May read message bodies where the certificate's auditor role reads the log:
    #: ``auditor-bodies:MEMBER`` on that member's servers, bare ``auditor-bodies`` everywhere.
    AUDITOR_BODIES = "auditor-bodies"
    #: The citizen service: reads who accessed data about a subject (never bodies), on every
    #: security server, one subject per query (the citizen's record of access).
    CITIZEN_SERVICE = "citizen-service"
    #: Reads a server's monthly counts of answered exchanges per service (open data), nothing else.
    STATISTICS = "statistics"


#: Roles that always name a member, and roles that may.
_MEMBER_REQUIRED: Final = frozenset({RoleName.MEMBER_ADMIN, RoleName.AUDITOR})
_MEMBER_OPTIONAL: Final = frozenset({RoleName.AUDITOR_BODIES})


@dataclass(frozen=True, slots=True, order=True)
class Role:
    """A role from a client certificate; ``member`` is set for ``member-admin`` and
    ``auditor``, may be set for ``auditor-bodies`` and is never set for the others."""

    name: RoleName
    member: MemberId | None = None

    def __post_init__(self) -> None:
        if self.name in _MEMBER_REQUIRED and self.member is None:
            hint = (
                "; the instance-wide auditor is auditor-supervisor"
                if self.name is RoleName.AUDITOR
                else ""
            )
            raise CertificateProfileError(
                f"the {self.name} role names a member ({self.name}:INSTANCE/CLASS/CODE){hint}",
                fault=Fault.CLIENT_INVALID_REQUEST,
            )
        if self.member is not None and self.name not in _MEMBER_REQUIRED | _MEMBER_OPTIONAL:
            raise CertificateProfileError(
                f"the {self.name} role names no member", fault=Fault.CLIENT_INVALID_REQUEST
            )

    def __str__(self) -> str:
        """The role as written after ``urn:ruta:role:`` (``auditor:LAC/GOV/POP``)."""
        return str(self.name) if self.member is None else f"{self.name}:{self.member}"


def check_role_set(roles: Iterable[Role]) -> None:
    """Refuse a set of roles one certificate cannot sensibly carry: a body privilege
    (``auditor-bodies[:M]``) wider than the auditor roles beside it, since bodies are only read
    where the log is. Raises :class:`CertificateProfileError` (``client.invalid_request``)."""
    given = frozenset(roles)
    supervisor = Role(RoleName.AUDITOR_SUPERVISOR) in given
    for role in given:
        if role.name is not RoleName.AUDITOR_BODIES or supervisor:
            continue
        if role.member is None or Role(RoleName.AUDITOR, role.member) not in given:
            where = "every server" if role.member is None else f"{role.member}'s servers"
            need = "auditor-supervisor" if role.member is None else f"auditor:{role.member}"
            raise CertificateProfileError(
                f"{role} lets its holder read bodies on {where} but the certificate does not "
                f"read the log there; add {need}",
                fault=Fault.CLIENT_INVALID_REQUEST,
            )


class CertificateProfileError(PkiError):
    """A certificate or CSR does not fit the Ruta profile asked of it (missing or duplicate
    identifier, wrong key type, wrong options for its kind)."""

    default_fault = Fault.CLIENT_UNAUTHENTICATED


# --- identifiers in SAN URIs -------------------------------------------------------------------


def server_uri(server: ServerId) -> str:
    return f"{_URN_SERVER}{server}"


def member_uri(member: MemberId) -> str:
    return f"{_URN_MEMBER}{member}"


def subsystem_uri(subsystem: SubsystemId) -> str:
    return f"{_URN_SUBSYSTEM}{subsystem}"


def gateway_uri(member: MemberId) -> str:
    return f"{_URN_GATEWAY}{member}"


def role_uri(role: Role) -> str:
    return f"{_URN_ROLE}{role}"


def _uris(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:
        raise MalformedCertificateError("certificate extensions do not parse") from exc
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def _single(cert: x509.Certificate, prefix: str, what: str) -> str:
    found = [u[len(prefix) :] for u in _uris(cert) if u.startswith(prefix)]
    if len(found) != 1:
        problem = "no" if not found else "more than one"
        raise CertificateProfileError(f"certificate carries {problem} {what} identifier")
    return found[0]


def server_id_of(cert: x509.Certificate) -> ServerId:
    """The security server named by an authentication certificate's SAN URI.

    Raises :class:`CertificateProfileError` unless exactly one valid server URI is present.
    """
    try:
        return ServerId.parse(_single(cert, _URN_SERVER, "server"))
    except IdentifierError as exc:
        raise CertificateProfileError(f"certificate server identifier: {exc.message}") from exc


def member_id_of(cert: x509.Certificate) -> MemberId:
    """The member named by a signing certificate's SAN URI (exactly one, else
    :class:`CertificateProfileError`)."""
    try:
        return MemberId.parse(_single(cert, _URN_MEMBER, "member"))
    except IdentifierError as exc:
        raise CertificateProfileError(f"certificate member identifier: {exc.message}") from exc


def subsystem_id_of(cert: x509.Certificate) -> SubsystemId:
    """The subsystem named by a backend client certificate's SAN URI (exactly one, else
    :class:`CertificateProfileError`)."""
    try:
        return SubsystemId.parse(_single(cert, _URN_SUBSYSTEM, "subsystem"))
    except IdentifierError as exc:
        raise CertificateProfileError(f"certificate subsystem identifier: {exc.message}") from exc


def gateway_member_of(cert: x509.Certificate) -> MemberId | None:
    """The member whose HTTP gateway a client certificate names (``urn:ruta:gateway:...``), or
    ``None`` when it names none. Raises :class:`CertificateProfileError` for more than one, or
    one that does not parse."""
    found = [u[len(_URN_GATEWAY) :] for u in _uris(cert) if u.startswith(_URN_GATEWAY)]
    if not found:
        return None
    if len(found) > 1:
        raise CertificateProfileError("certificate carries more than one gateway identifier")
    try:
        return MemberId.parse(found[0])
    except IdentifierError as exc:
        raise CertificateProfileError(f"certificate gateway identifier: {exc.message}") from exc


def parse_role(text: str) -> Role:
    """Parse a role as written after ``urn:ruta:role:`` (``registry-admin``,
    ``member-admin:LAC/GOV/POP``, ``auditor:LAC/GOV/POP``, ``auditor-supervisor``,
    ``auditor-bodies[:MEMBER]``); raise :class:`CertificateProfileError` if it does not (a bare
    ``auditor``, which earlier versions issued instance-wide, among them)."""
    name, _, member = text.partition(":")
    try:
        role_name = RoleName(name)
    except ValueError as exc:
        raise CertificateProfileError("certificate carries an unknown role") from exc
    try:
        return Role(role_name, MemberId.parse(member) if member else None)
    except IdentifierError as exc:
        raise CertificateProfileError(f"certificate role member: {exc.message}") from exc


def roles_of(cert: x509.Certificate) -> frozenset[Role]:
    """Every role named by a client certificate's SAN URIs (empty when it carries none).

    Raises :class:`CertificateProfileError` for a role URI that does not parse, so a typo in a
    certificate is seen rather than silently granting less.
    """
    return frozenset(
        parse_role(u[len(_URN_ROLE) :]) for u in _uris(cert) if u.startswith(_URN_ROLE)
    )


# --- parsing and encoding ------------------------------------------------------------------------


def fingerprint(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the certificate's DER encoding."""
    return cert.fingerprint(hashes.SHA256()).hex()


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_pem(*certs: x509.Certificate) -> bytes:
    """PEM text of one or more certificates, in the given order."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def parse_der_certificate(der: bytes) -> x509.Certificate:
    """One DER certificate, parsed as cryptography's coming releases will: what it only warns
    about today (a serial number that is not positive, against RFC 5280) is refused now.

    Raises :class:`ValueError` for bytes that are not a certificate or break such a rule.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        try:
            return x509.load_der_x509_certificate(der)
        except CryptographyDeprecationWarning as exc:
            raise ValueError(f"the certificate breaks RFC 5280: {exc}") from None


def parse_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of PEM text, parsed as :func:`parse_der_certificate` parses one.

    Raises :class:`ValueError` for text that holds none or one that breaks such a rule.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        try:
            return x509.load_pem_x509_certificates(data)
        except CryptographyDeprecationWarning as exc:
            raise ValueError(f"a certificate breaks RFC 5280: {exc}") from None


def load_certificate(data: bytes) -> x509.Certificate:
    """Parse one certificate from PEM or DER bytes.

    Raises :class:`MalformedCertificateError` for anything over :data:`MAX_CERTIFICATE_BYTES`
    (x2 for PEM text) or not a certificate.
    """
    certs = load_certificates(data, limit=1)
    if len(certs) != 1:
        raise MalformedCertificateError("expected exactly one certificate")
    return certs[0]


def read_certificate_file(
    path: str | os.PathLike[str], *, limit: int = MAX_CHAIN_LENGTH, what: str = "certificate file"
) -> bytes:
    """The bytes of a PEM (or DER) file holding at most ``limit`` certificates, unparsed.

    The file's bound is what :func:`load_certificates` accepts for ``limit`` certificates. Raises
    :class:`MalformedCertificateError` naming it as ``what`` (and its file name, never its folder)
    when it is missing, unreadable or over that bound.
    """
    try:
        return read_bounded(path, 2 * MAX_CERTIFICATE_BYTES * limit, what=what)
    except FileReadError as exc:
        raise MalformedCertificateError(exc.message) from None


def load_certificates(data: bytes, *, limit: int = MAX_CHAIN_LENGTH) -> list[x509.Certificate]:
    """Parse a PEM bundle (or a single DER certificate), in order, at most ``limit`` of them.

    Raises :class:`MalformedCertificateError` for an empty input, too many or too large
    certificates, or bytes that do not parse.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedCertificateError("certificate data must be bytes")
    data = bytes(data)
    if len(data) > 2 * MAX_CERTIFICATE_BYTES * limit:
        raise MalformedCertificateError("certificate data is too large")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certs = parse_pem_certificates(data)
        else:
            if len(data) > MAX_CERTIFICATE_BYTES:
                raise MalformedCertificateError("certificate is too large")
            certs = [parse_der_certificate(data)]
    except ValueError as exc:
        raise MalformedCertificateError("certificate data does not parse") from exc
    if not certs:
        raise MalformedCertificateError("no certificate found")
    if len(certs) > limit:
        raise MalformedCertificateError(f"more than {limit} certificates")
    for cert in certs:
        if len(certificate_der(cert)) > MAX_CERTIFICATE_BYTES:
            raise MalformedCertificateError("certificate is too large")
    return certs


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER certificate signing request and check its self-signature.

    Raises :class:`MalformedCertificateError` when it is too large (:data:`MAX_CSR_BYTES`), does
    not parse, or its signature does not verify.
    """
    if len(data) > MAX_CSR_BYTES:
        raise MalformedCertificateError(f"CSR is larger than {MAX_CSR_BYTES} bytes")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
        valid = csr.is_signature_valid
    except ValueError as exc:
        raise MalformedCertificateError("CSR does not parse") from exc
    except (UnsupportedAlgorithm, TypeError) as exc:
        raise MalformedCertificateError("CSR uses an unsupported algorithm") from exc
    if not valid:
        raise MalformedCertificateError("CSR signature does not verify")
    return csr


def make_csr(key: PrivateKey, common_name: str) -> x509.CertificateSigningRequest:
    """A CSR for ``key`` with subject ``CN=common_name``. The CA decides every extension from
    the profile it is asked to issue, so the CSR carries none."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    return builder.sign(key, _hash_for(key))


# --- profiles ------------------------------------------------------------------------------------


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _check_subject_key(kind: CertificateKind, key: CertificatePublicKeyTypes) -> None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        allowed = (ec.SECP256R1,) if kind is CertificateKind.SIGN else (ec.SECP256R1, ec.SECP384R1)
        if isinstance(key.curve, allowed):
            return
        raise CertificateProfileError(
            f"EC curve {key.curve.name} is not allowed for {kind} certificates",
            fault=Fault.CLIENT_INVALID_REQUEST,
        )
    if isinstance(key, rsa.RSAPublicKey) and kind is not CertificateKind.SIGN:
        if key.key_size >= 2048:
            return
        raise CertificateProfileError(
            "RSA keys must have at least 2048 bits", fault=Fault.CLIENT_INVALID_REQUEST
        )
    need = "an EC P-256" if kind is CertificateKind.SIGN else "an EC P-256/P-384 or RSA"
    raise CertificateProfileError(
        f"{kind} certificates need {need} key", fault=Fault.CLIENT_INVALID_REQUEST
    )


def profile_names(
    kind: CertificateKind,
    *,
    server: ServerId | None = None,
    member: MemberId | None = None,
    subsystem: SubsystemId | None = None,
    roles: Sequence[Role] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> tuple[str, list[x509.GeneralName]]:
    """The subject common name and SAN entries of a certificate of ``kind``.

    Exactly the identifier the kind needs must be given (``auth``: server, plus optional DNS/IP
    names; ``sign``: member; ``subsystem``: subsystem; ``role``: one or more roles). Raises
    :class:`CertificateProfileError` (fault ``client.invalid_request``) otherwise.
    """
    given = {
        "server": server is not None,
        "member": member is not None,
        "subsystem": subsystem is not None,
        "role": bool(roles),
    }
    needed = {
        CertificateKind.AUTH: "server",
        CertificateKind.SIGN: "member",
        CertificateKind.SUBSYSTEM: "subsystem",
        CertificateKind.GATEWAY: "member",
        CertificateKind.ROLE: "role",
    }.get(kind)
    extra = sorted(k for k, v in given.items() if v and k != needed)
    if needed is None or not given[needed] or extra:
        wanted = f"a {needed} identifier" if needed else "no identifier"
        bad = f"; not {', '.join(extra)}" if extra else ""
        raise CertificateProfileError(
            f"{kind} certificates need {wanted}{bad}", fault=Fault.CLIENT_INVALID_REQUEST
        )
    if (dns_names or ip_addresses) and kind is not CertificateKind.AUTH:
        raise CertificateProfileError(
            "only auth certificates carry DNS or IP names", fault=Fault.CLIENT_INVALID_REQUEST
        )
    names: list[x509.GeneralName] = []
    if server is not None:
        common_name = str(server)
        names.append(x509.UniformResourceIdentifier(server_uri(server)))
    elif member is not None:
        common_name = str(member)
        uri = gateway_uri(member) if kind is CertificateKind.GATEWAY else member_uri(member)
        names.append(x509.UniformResourceIdentifier(uri))
    elif subsystem is not None:
        common_name = str(subsystem)
        names.append(x509.UniformResourceIdentifier(subsystem_uri(subsystem)))
    else:
        check_role_set(roles)
        ordered = sorted(set(roles), key=str)
        common_name = role_uri(ordered[0])
        names.extend(x509.UniformResourceIdentifier(role_uri(r)) for r in ordered)
    names.extend(x509.DNSName(dns) for dns in dns_names)
    for ip in ip_addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError as exc:
            raise CertificateProfileError(
                "an IP address SAN does not parse", fault=Fault.CLIENT_INVALID_REQUEST
            ) from exc
    return common_name, names


def _usage(
    *, signature: bool, content_commitment: bool = False, cert_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


_EKU: Final[dict[CertificateKind, list[x509.ObjectIdentifier]]] = {
    CertificateKind.AUTH: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    CertificateKind.SIGN: [DOCUMENT_SIGNING],
    CertificateKind.SUBSYSTEM: [ExtendedKeyUsageOID.CLIENT_AUTH],
    CertificateKind.GATEWAY: [ExtendedKeyUsageOID.CLIENT_AUTH],
    CertificateKind.ROLE: [ExtendedKeyUsageOID.CLIENT_AUTH],
    CertificateKind.OCSP: [ExtendedKeyUsageOID.OCSP_SIGNING],
}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def end_entity_certificate(
    kind: CertificateKind,
    *,
    public_key: CertificatePublicKeyTypes,
    common_name: str,
    names: Iterable[x509.GeneralName],
    issuer_certificate: x509.Certificate,
    issuer_key: PrivateKey,
    ocsp_url: str | None,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    serial: int | None = None,
) -> x509.Certificate:
    """Sign an end-entity certificate of ``kind`` (see the module table) for ``public_key``.

    ``names`` come from :func:`profile_names`. Every kind except ``ocsp`` gets the AIA OCSP URL
    (required for them); ``ocsp`` gets the OCSP no-check extension instead. Raises
    :class:`CertificateProfileError` for a key type the profile does not allow.
    """
    _check_subject_key(kind, public_key)
    if kind is not CertificateKind.OCSP and not ocsp_url:
        raise CertificateProfileError(
            "an OCSP URL is required for end-entity certificates",
            fault=Fault.CLIENT_INVALID_REQUEST,
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_certificate.subject)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _usage(signature=True, content_commitment=kind is CertificateKind.SIGN), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage(_EKU[kind]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_certificate.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    san = list(names)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if kind is CertificateKind.OCSP:
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    elif ocsp_url:  # required for every other kind (checked above)
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(ocsp_url),
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, _hash_for(issuer_key))


def ca_certificate(
    *,
    key: PrivateKey,
    common_name: str,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    issuer_certificate: x509.Certificate | None = None,
    issuer_key: PrivateKey | None = None,
    path_length: int | None = None,
) -> x509.Certificate:
    """A CA certificate for ``key``: self-signed (a root) when no issuer is given, else an
    intermediate signed by ``issuer_key``. The key must be EC P-256 or P-384."""
    public_key = key.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1 | ec.SECP384R1
    ):
        raise CertificateProfileError(
            "CA keys must be EC P-256 or P-384", fault=Fault.CLIENT_INVALID_REQUEST
        )
    signing_key = issuer_key if issuer_key is not None else key
    issuer_name = (
        issuer_certificate.subject if issuer_certificate is not None else _name(common_name)
    )
    authority_key = (
        issuer_certificate.public_key() if issuer_certificate is not None else public_key
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_usage(signature=True, cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key),  # type: ignore[arg-type]
            critical=False,
        )
    )
    return builder.sign(signing_key, _hash_for(signing_key))
