"""The instance's certificate authority: a directory of keys, certificates and revocations.

Layout of a CA directory (docs/adr/0004-trust-ca-files-and-signing-time.md)::

    ca.json                 settings: OCSP responder URL, whether ca.key is encrypted
    ca.key   (0600)         the CA's private key, optionally passphrase-encrypted
    ca.pem                  the CA's certificate
    anchor.pem              the trust anchor: ca.pem for a root CA, the root for an intermediate
    parents.pem             certificates between this CA and the anchor (intermediates only)
    ocsp.key (0600)         the OCSP responder's key (never encrypted: the responder is unattended)
    ocsp.pem                the OCSP signing certificate (EKU OCSPSigning, issued by this CA)
    issued/SERIAL.pem       every certificate issued, by lowercase hex serial
    revoked/SERIAL.json     one file per revocation: time and reason

Each file is written beside its target and renamed into place, and a revocation is created with
an exclusive link, so several processes (CLI, OCSP responder, registry) may share a directory: a
revocation is visible to the responder the moment ``revoke`` returns, and two revocations of one
serial cannot both win.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self

from cryptography import x509

from registry.errors import AlreadyExistsError, InvalidRequestError, NotFoundError, StoreError
from ruta.files import FileProblem, FileReadError, read_bounded, write_atomically
from ruta.ids import MemberId, ServerId, SubsystemId
from ruta.pki.certs import (
    DEFAULT_VALIDITY,
    MAX_CHAIN_LENGTH,
    CertificateKind,
    Role,
    ca_certificate,
    certificate_pem,
    end_entity_certificate,
    load_certificates,
    load_csr,
    profile_names,
)
from ruta.pki.errors import MalformedCertificateError
from ruta.pki.keys import PrivateKey, generate_ec_key, load_private_key, save_private_key
from ruta.pki.ocsp import CertStatus

__all__ = [
    "MAX_CA_FILE_BYTES",
    "MAX_REVOCATION_RECORD_BYTES",
    "CertificateAuthority",
    "Revocation",
    "parse_reason",
]

#: Largest certificate file read from a CA directory.
MAX_CA_FILE_BYTES: Final = 64 * 1024
#: Largest revocation record read.
MAX_REVOCATION_RECORD_BYTES: Final = 4 * 1024
#: Validity of a new root CA certificate.
ROOT_VALIDITY: Final = datetime.timedelta(days=20 * 365)
#: Validity of a new intermediate CA certificate (cut to its parent's end).
INTERMEDIATE_VALIDITY: Final = datetime.timedelta(days=10 * 365)
#: How far back ``not_before`` is set, so a peer with a slightly slow clock accepts a new cert.
BACKDATE: Final = datetime.timedelta(minutes=5)

_SETTINGS = "ca.json"
_SERIAL = re.compile(r"[0-9a-f]{1,40}")


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revoked serial: when and why."""

    serial_number: int
    revoked_at: datetime.datetime
    reason: x509.ReasonFlags


def parse_reason(text: str) -> x509.ReasonFlags:
    """An RFC 5280 revocation reason from its name (``keyCompromise`` or ``key_compromise``).

    Raises :class:`InvalidRequestError` listing the accepted names.
    """
    for flag in x509.ReasonFlags:
        if text in (flag.value, flag.name) and flag is not x509.ReasonFlags.remove_from_crl:
            return flag
    names = ", ".join(
        f.value for f in x509.ReasonFlags if f is not x509.ReasonFlags.remove_from_crl
    )
    raise InvalidRequestError(f"unknown revocation reason; use one of: {names}")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _serial_hex(serial: int) -> str:
    return format(serial, "x")


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        write_atomically(path, data)
    except OSError as exc:
        raise StoreError(f"cannot write the CA directory ({exc.strerror})") from exc


def _read_bounded(path: Path, limit: int) -> bytes | None:
    """The CA file at ``path``, ``None`` when there is none; :class:`StoreError` when it cannot
    be read or is over ``limit``."""
    try:
        return read_bounded(path, limit, what="CA file")
    except FileReadError as exc:
        if exc.problem is FileProblem.MISSING:
            return None
        raise StoreError(exc.message) from None


def _read_required(path: Path, limit: int) -> bytes:
    data = _read_bounded(path, limit)
    if data is None:
        raise NotFoundError("no certificate authority in that directory")
    return data


class CertificateAuthority:
    """A CA held in a directory. Build with :meth:`initialise` or :meth:`open`.

    The CA key is read on the first :meth:`issue` only, so a process that only answers OCSP
    (needing ``ocsp.key``) never touches it.
    """

    def __init__(
        self,
        *,
        directory: Path,
        certificate: x509.Certificate,
        parents: Sequence[x509.Certificate],
        trust_anchor: x509.Certificate,
        ocsp_url: str,
        ocsp_certificate: x509.Certificate,
        ocsp_key: PrivateKey,
        passphrase: bytes | None = None,
    ) -> None:
        self.directory = directory
        self.certificate = certificate
        self.parents = tuple(parents)
        self.trust_anchor = trust_anchor
        self.ocsp_url = ocsp_url
        self.ocsp_certificate = ocsp_certificate
        self.ocsp_key = ocsp_key
        self._passphrase = passphrase
        self._key: PrivateKey | None = None

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def initialise(
        cls,
        directory: str | os.PathLike[str],
        *,
        common_name: str,
        ocsp_url: str,
        passphrase: bytes | None = None,
        parent_key: PrivateKey | None = None,
        parent_certificate: x509.Certificate | None = None,
        parent_chain: Sequence[x509.Certificate] = (),
        now: datetime.datetime | None = None,
    ) -> Self:
        """Create a new CA in ``directory`` (created if missing; must hold no CA yet).

        Without a parent this makes a self-signed root. With ``parent_key`` and
        ``parent_certificate`` it makes an intermediate under that CA; ``parent_chain`` lists the
        parent's own issuers up to and including the root (empty when the parent is the root).
        Also issues the OCSP signing certificate. Raises :class:`AlreadyExistsError` when the
        directory already holds a CA and :class:`InvalidRequestError` for a bad parent or URL.
        A failure part-way leaves a directory without ``ca.json``, which :meth:`open` refuses.
        """
        root = Path(directory)
        if not ocsp_url.startswith(("http://", "https://")):
            raise InvalidRequestError("the OCSP URL must be an http:// or https:// URL")
        if (parent_key is None) != (parent_certificate is None):
            raise InvalidRequestError(
                "an intermediate CA needs both the parent key and certificate"
            )
        if len(parent_chain) + 2 > MAX_CHAIN_LENGTH:
            raise InvalidRequestError(f"chains longer than {MAX_CHAIN_LENGTH} are not supported")
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / "issued").mkdir(exist_ok=True)
            (root / "revoked").mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the CA directory ({exc.strerror})") from exc
        if (root / _SETTINGS).exists() or (root / "ca.key").exists():
            raise AlreadyExistsError("the directory already holds a CA")

        start = (now or _now()) - BACKDATE
        key = generate_ec_key()
        if parent_key is not None and parent_certificate is not None:
            if parent_certificate.public_key() != parent_key.public_key():
                raise InvalidRequestError(
                    "the parent key does not belong to the parent certificate"
                )
            end = min(start + INTERMEDIATE_VALIDITY, parent_certificate.not_valid_after_utc)
            cert = ca_certificate(
                key=key,
                common_name=common_name,
                not_before=start,
                not_after=end,
                issuer_certificate=parent_certificate,
                issuer_key=parent_key,
                path_length=0,
            )
            chain = [parent_certificate, *parent_chain]
            parents, anchor = chain[:-1], chain[-1]
        else:
            cert = ca_certificate(
                key=key, common_name=common_name, not_before=start, not_after=start + ROOT_VALIDITY
            )
            parents, anchor = [], cert

        save_private_key(root / "ca.key", key, passphrase)
        _write_atomic(root / "ca.pem", certificate_pem(cert))
        _write_atomic(root / "anchor.pem", certificate_pem(anchor))
        if parents:
            _write_atomic(root / "parents.pem", certificate_pem(*parents))

        _write_ocsp_responder(root, cert, key, start)
        settings = {"version": 1, "ocsp_url": ocsp_url, "key_encrypted": bool(passphrase)}
        _write_atomic(root / _SETTINGS, json.dumps(settings, indent=2).encode() + b"\n")
        ca = cls.open(root, passphrase=passphrase)
        ca._key = key
        return ca

    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, passphrase: bytes | None = None) -> Self:
        """Open the CA in ``directory``. ``passphrase`` is needed (later, to issue) when the CA
        key is encrypted. Raises :class:`NotFoundError` when there is no CA there and
        :class:`StoreError` when its files are damaged."""
        root = Path(directory)
        try:
            settings: dict[str, Any] = json.loads(_read_required(root / _SETTINGS, 4096))
            ocsp_url = str(settings["ocsp_url"])
            cert = _one_cert(root / "ca.pem")
            anchor = _one_cert(root / "anchor.pem")
            parents_pem = _read_bounded(root / "parents.pem", MAX_CA_FILE_BYTES)
            parents = load_certificates(parents_pem) if parents_pem is not None else []
            ocsp_cert = _one_cert(root / "ocsp.pem")
            ocsp_key = load_private_key(root / "ocsp.key")
        except FileNotFoundError as exc:
            raise NotFoundError("no certificate authority in that directory") from exc
        except (OSError, ValueError, KeyError, TypeError, MalformedCertificateError) as exc:
            raise StoreError("the CA directory is damaged or unreadable") from exc
        return cls(
            directory=root,
            certificate=cert,
            parents=parents,
            trust_anchor=anchor,
            ocsp_url=ocsp_url,
            ocsp_certificate=ocsp_cert,
            ocsp_key=ocsp_key,
            passphrase=passphrase,
        )

    # --- what others read -----------------------------------------------------------------------

    @property
    def chain(self) -> list[x509.Certificate]:
        """Certificates a leaf needs between itself and the trust anchor (empty for a root CA):
        this CA and its parents, when this CA is an intermediate."""
        if self.certificate == self.trust_anchor:
            return []
        return [self.certificate, *self.parents]

    def issued(self, serial_number: int) -> x509.Certificate | None:
        """The certificate issued with ``serial_number``, or ``None``."""
        path = self.directory / "issued" / f"{_serial_hex(serial_number)}.pem"
        try:
            return _one_cert(path)
        except FileNotFoundError:
            return None
        except (OSError, MalformedCertificateError) as exc:
            raise StoreError("an issued-certificate record is damaged") from exc

    def issued_serials(self) -> Iterator[int]:
        """Serial numbers of everything issued, in no particular order."""
        for path in (self.directory / "issued").glob("*.pem"):
            if _SERIAL.fullmatch(path.stem):
                yield int(path.stem, 16)

    def revocation(self, serial_number: int) -> Revocation | None:
        """The revocation of ``serial_number``, or ``None`` if it is not revoked."""
        path = self.directory / "revoked" / f"{_serial_hex(serial_number)}.json"
        try:
            data = _read_bounded(path, MAX_REVOCATION_RECORD_BYTES)
            if data is None:
                return None
            record = json.loads(data)
            return Revocation(
                serial_number,
                datetime.datetime.fromisoformat(record["revoked_at"]),
                x509.ReasonFlags(record["reason"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError("a revocation record is damaged") from exc

    def status(self, serial_number: int) -> tuple[CertStatus, Revocation | None]:
        """What the OCSP responder says about a serial: unknown (never issued here), revoked
        (with its record) or good. Reads the directory each time, so it sees other processes'
        revocations at once."""
        revoked = self.revocation(serial_number)
        if revoked is not None:
            return CertStatus.REVOKED, revoked
        path = self.directory / "issued" / f"{_serial_hex(serial_number)}.pem"
        return (CertStatus.GOOD if path.exists() else CertStatus.UNKNOWN), None

    # --- issuing and revoking -------------------------------------------------------------------

    def issue(
        self,
        csr: x509.CertificateSigningRequest | bytes,
        kind: CertificateKind,
        *,
        server: ServerId | None = None,
        member: MemberId | None = None,
        subsystem: SubsystemId | None = None,
        roles: Sequence[Role] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        validity: datetime.timedelta | None = None,
        now: datetime.datetime | None = None,
    ) -> x509.Certificate:
        """Issue a certificate of ``kind`` for the CSR's public key and record it.

        The CSR (PEM or DER, e.g. made by OpenSSL) contributes only its key; the profile decides
        subject, extensions and the AIA OCSP URL. Raises
        :class:`~ruta.pki.errors.MalformedCertificateError` for a bad CSR,
        :class:`~ruta.pki.certs.CertificateProfileError` for identifiers that do not fit the
        kind or a key type it forbids, :class:`InvalidRequestError` for the ``ocsp`` kind.
        Nothing is recorded when it fails.
        """
        if kind is CertificateKind.OCSP:
            raise InvalidRequestError("OCSP signing certificates are made by initialise only")
        request = csr if isinstance(csr, x509.CertificateSigningRequest) else load_csr(csr)
        common_name, names = profile_names(
            kind,
            server=server,
            member=member,
            subsystem=subsystem,
            roles=roles,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
        )
        start = (now or _now()) - BACKDATE
        end = min(
            start + (validity or DEFAULT_VALIDITY[kind]), self.certificate.not_valid_after_utc
        )
        cert = end_entity_certificate(
            kind,
            public_key=request.public_key(),
            common_name=common_name,
            names=names,
            issuer_certificate=self.certificate,
            issuer_key=self._ca_key(),
            ocsp_url=self.ocsp_url,
            not_before=start,
            not_after=end,
        )
        _write_atomic(
            self.directory / "issued" / f"{_serial_hex(cert.serial_number)}.pem",
            certificate_pem(cert),
        )
        return cert

    def revoke(
        self,
        serial_number: int,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
        *,
        at: datetime.datetime | None = None,
    ) -> Revocation:
        """Revoke a certificate this CA issued, effective ``at`` (default now).

        Raises :class:`NotFoundError` for a serial never issued here and
        :class:`AlreadyExistsError` when it is already revoked (the first revocation stands).
        """
        if reason is x509.ReasonFlags.remove_from_crl:
            raise InvalidRequestError("removeFromCRL is not a revocation reason")
        if self.issued(serial_number) is None:
            raise NotFoundError(
                f"no certificate with serial {_serial_hex(serial_number)} was issued"
            )
        record = Revocation(serial_number, (at or _now()).astimezone(datetime.UTC), reason)
        path = self.directory / "revoked" / f"{_serial_hex(serial_number)}.json"
        body = {"revoked_at": record.revoked_at.isoformat(), "reason": reason.value}
        try:
            # Exclusive: fails if another revocation won.
            write_atomically(path, json.dumps(body).encode(), exclusive=True)
        except FileExistsError as exc:
            raise AlreadyExistsError(
                f"certificate {_serial_hex(serial_number)} is already revoked"
            ) from exc
        except OSError as exc:
            raise StoreError(f"cannot write the revocation ({exc.strerror})") from exc
        return record

    def renew_ocsp_responder(self, *, now: datetime.datetime | None = None) -> x509.Certificate:
        """Replace the OCSP signing key and certificate (for example before the old one expires;
        it is valid for a year). Needs the CA key. A running responder keeps the old pair until it
        is restarted."""
        start = (now or _now()) - BACKDATE
        self.ocsp_certificate, self.ocsp_key = _write_ocsp_responder(
            self.directory, self.certificate, self._ca_key(), start
        )
        return self.ocsp_certificate

    def _ca_key(self) -> PrivateKey:
        if self._key is None:
            self._key = load_private_key(self.directory / "ca.key", self._passphrase)
        return self._key


def _write_ocsp_responder(
    root: Path, ca_cert: x509.Certificate, ca_key: PrivateKey, start: datetime.datetime
) -> tuple[x509.Certificate, PrivateKey]:
    ocsp_key = generate_ec_key()
    common_name = ca_cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(common_name[0].value) if common_name else "Ruta CA"
    ocsp_cert = end_entity_certificate(
        CertificateKind.OCSP,
        public_key=ocsp_key.public_key(),
        common_name=f"{name} OCSP responder",
        names=(),
        issuer_certificate=ca_cert,
        issuer_key=ca_key,
        ocsp_url=None,
        not_before=start,
        not_after=min(start + DEFAULT_VALIDITY[CertificateKind.OCSP], ca_cert.not_valid_after_utc),
    )
    # Key first: a reader that sees the new certificate also finds its key.
    save_private_key(root / "ocsp.key", ocsp_key)
    _write_atomic(root / "ocsp.pem", certificate_pem(ocsp_cert))
    return ocsp_cert, ocsp_key


def _one_cert(path: Path) -> x509.Certificate:
    certs = load_certificates(_read_required(path, MAX_CA_FILE_BYTES), limit=1)
    return certs[0]
