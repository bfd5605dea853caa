"""Message signatures: the table of bad inputs (each its own fault and reason, never a crash)."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp as x509_ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from ruta.faults import Fault
from ruta.ids import MemberId
from ruta.pki.certs import CertificateKind
from ruta.pki.errors import (
    CertificateInvalidError,
    CertificateRevokedError,
    InvalidSignatureError,
    OcspInvalidError,
    PkiError,
    Reason,
    SignatureError,
    SignerMismatchError,
)
from ruta.pki.keys import FileSigner, generate_ec_key, generate_ed25519_key
from ruta.pki.ocsp import CertStatus, unsuccessful_ocsp_response
from ruta.pki.signature import (
    BATCH_SIGNATURE_CONTEXT,
    MessageSigner,
    MessageVerifier,
    sign_message,
)
from ruta.pki.testing import Credential, TestPki
from ruta.v1 import transport_pb2

POP = MemberId.parse("LAC/GOV/POP")
TAX = MemberId.parse("LAC/GOV/TAX")
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
MINUTE = datetime.timedelta(minutes=1)


@dataclass
class World:
    pki: TestPki
    stranger: TestPki
    pop: Credential
    tax: Credential
    now: datetime.datetime
    header: bytes

    def staple(self, cred: Credential, **options: object) -> bytes:
        return self.pki.ocsp_response(cred.certificate, **options)  # type: ignore[arg-type]

    def sign(
        self, cred: Credential, *, header: bytes | None = None, ocsp: bytes | None = None
    ) -> transport_pb2.Signature:
        return sign_message(
            self.header if header is None else header,
            signer=cred.signer(),
            certificate=cred.certificate,
            chain=self.pki.chain,
            ocsp_response=self.staple(cred) if ocsp is None else ocsp,
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    pki = TestPki(tmp_path_factory.mktemp("pki"), intermediate=True)
    stranger = TestPki(tmp_path_factory.mktemp("stranger"))
    header = transport_pb2.MessageHeader(
        message_id="7c0f6a52-4cb7-4b8e-9d0b-0a5cf3c5f0a1", method="GetPerson", purpose="benefits"
    ).SerializeToString()
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return World(pki, stranger, pki.sign(POP), pki.sign(TAX), now, header)


@pytest.fixture(scope="module")
def verifier(world: World) -> MessageVerifier:
    return MessageVerifier(world.pki.trust_anchors)


Case = Callable[[World], tuple[bytes, transport_pb2.Signature]]


def _tampered_header(w: World) -> tuple[bytes, transport_pb2.Signature]:
    return w.header + b"\x00", w.sign(w.pop)


def _other_members_key(w: World) -> tuple[bytes, transport_pb2.Signature]:
    sig = w.sign(w.pop)
    sig.value = w.tax.signer().sign(w.header)
    return w.header, sig


def _other_members_certificate(w: World) -> tuple[bytes, transport_pb2.Signature]:
    return w.header, w.sign(w.tax)


def _unknown_ca(w: World) -> tuple[bytes, transport_pb2.Signature]:
    cred = w.stranger.sign(POP)
    sig = sign_message(
        w.header,
        signer=cred.signer(),
        certificate=cred.certificate,
        ocsp_response=w.stranger.ocsp_response(cred.certificate),
    )
    return w.header, sig


def _expired(w: World) -> tuple[bytes, transport_pb2.Signature]:
    cred = w.pki.sign(POP, not_before=w.now - 10 * DAY, not_after=w.now - DAY)
    return w.header, w.sign(cred)


def _not_yet_valid(w: World) -> tuple[bytes, transport_pb2.Signature]:
    cred = w.pki.sign(POP, not_before=w.now + DAY, not_after=w.now + 10 * DAY)
    return w.header, w.sign(cred)


def _revoked_before_signing(w: World) -> tuple[bytes, transport_pb2.Signature]:
    return w.header, w.sign(w.pop, ocsp=w.staple(w.pop, revoked_at=w.now - HOUR))


def _missing_ocsp(w: World) -> tuple[bytes, transport_pb2.Signature]:
    sig = w.sign(w.pop)
    sig.ocsp_response = b""
    return w.header, sig


def _stale_ocsp(w: World) -> tuple[bytes, transport_pb2.Signature]:
    return w.header, w.sign(w.pop, ocsp=w.staple(w.pop, this_update=w.now - 2 * HOUR))


def _ocsp_from_future(w: World) -> tuple[bytes, transport_pb2.Signature]:
    return w.header, w.sign(w.pop, ocsp=w.staple(w.pop, this_update=w.now + HOUR))


def _ocsp_by_wrong_key(w: World) -> tuple[bytes, transport_pb2.Signature]:
    # Signed by a certificate of the right CA that lacks the OCSPSigning EKU.
    return w.header, w.sign(w.pop, ocsp=w.staple(w.pop, responder=w.tax))


def _ocsp_by_other_ca(w: World) -> tuple[bytes, transport_pb2.Signature]:
    return w.header, w.sign(w.pop, ocsp=w.staple(w.pop, responder=w.stranger.ocsp_responder))


def _ocsp_bad_signature(w: World) -> tuple[bytes, transport_pb2.Signature]:
    der = w.staple(w.pop)
    value = x509_ocsp.load_der_ocsp_response(der).signature
    at = der.index(value) + len(value) // 2
    forged = der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1 :]
    return w.header, w.sign(w.pop, ocsp=forged)


def _ocsp_for_other_certificate(w: World) -> tuple[bytes, transport_pb2.Signature]:
    return w.header, w.sign(w.pop, ocsp=w.staple(w.tax))


def _ocsp_unknown(w: World) -> tuple[bytes, transport_pb2.Signature]:
    return w.header, w.sign(w.pop, ocsp=w.staple(w.pop, status=CertStatus.UNKNOWN))


def _ocsp_malformed(w: World) -> tuple[bytes, transport_pb2.Signature]:
    return w.header, w.sign(w.pop, ocsp=b"\x30\x03\x0a\x01\x00garbage")


def _ocsp_unsuccessful(w: World) -> tuple[bytes, transport_pb2.Signature]:
    der = unsuccessful_ocsp_response(x509_ocsp.OCSPResponseStatus.TRY_LATER)
    return w.header, w.sign(w.pop, ocsp=der)


def _wrong_eku(w: World) -> tuple[bytes, transport_pb2.Signature]:
    cred = w.pki.auth("LAC/GOV/POP/ss1")
    sig = w.sign(w.pop)
    sig.certificate = cred.der
    sig.value = cred.signer().sign(w.header)
    return w.header, sig


def _wrong_key_type(w: World) -> tuple[bytes, transport_pb2.Signature]:
    # The sign profile refuses P-384 keys; forge such a certificate with the CA's own key.
    key = ec.generate_private_key(ec.SECP384R1())
    template = w.pop.certificate
    builder = (
        x509.CertificateBuilder()
        .subject_name(template.subject)
        .issuer_name(template.issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(template.not_valid_before_utc)
        .not_valid_after(template.not_valid_after_utc)
    )
    for extension in template.extensions:
        if not isinstance(extension.value, x509.SubjectKeyIdentifier):
            builder = builder.add_extension(extension.value, extension.critical)
    cert = builder.sign(w.pki.ca.key, hashes.SHA256())
    sig = w.sign(w.pop)
    sig.certificate = cert.public_bytes(serialization.Encoding.DER)
    sig.value = key.sign(w.header, ec.ECDSA(hashes.SHA256()))
    return w.header, sig


def _malformed_certificate(w: World) -> tuple[bytes, transport_pb2.Signature]:
    sig = w.sign(w.pop)
    sig.certificate = b"\x30\x82\x01\x00" + b"\x00" * 40
    return w.header, sig


def _malformed_chain(w: World) -> tuple[bytes, transport_pb2.Signature]:
    sig = w.sign(w.pop)
    sig.chain[0] = b"\x30\x01\x00"
    return w.header, sig


def _chain_too_long(w: World) -> tuple[bytes, transport_pb2.Signature]:
    sig = w.sign(w.pop)
    sig.chain.extend([sig.chain[0]] * 5)
    return w.header, sig


def _malformed_signature_value(w: World) -> tuple[bytes, transport_pb2.Signature]:
    sig = w.sign(w.pop)
    sig.value = b"\x30\x06\x02\x01\x01\x02\x01"
    return w.header, sig


def _oversized_signature_value(w: World) -> tuple[bytes, transport_pb2.Signature]:
    sig = w.sign(w.pop)
    sig.value = b"\x30" * 4096
    return w.header, sig


def _unsupported_algorithm(w: World) -> tuple[bytes, transport_pb2.Signature]:
    sig = w.sign(w.pop)
    sig.algorithm = transport_pb2.SIGNATURE_ALGORITHM_UNSPECIFIED
    return w.header, sig


BAD: list[tuple[Case, type[SignatureError], Reason]] = [
    (_tampered_header, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (_other_members_key, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (_other_members_certificate, SignerMismatchError, Reason.SIGNER_NOT_CLAIMED_MEMBER),
    (_unknown_ca, CertificateInvalidError, Reason.UNKNOWN_ISSUER),
    (_expired, CertificateInvalidError, Reason.EXPIRED),
    (_not_yet_valid, CertificateInvalidError, Reason.NOT_YET_VALID),
    (_revoked_before_signing, CertificateRevokedError, Reason.REVOKED),
    (_missing_ocsp, OcspInvalidError, Reason.OCSP_MISSING),
    (_stale_ocsp, OcspInvalidError, Reason.OCSP_STALE),
    (_ocsp_from_future, OcspInvalidError, Reason.OCSP_FROM_FUTURE),
    (_ocsp_by_wrong_key, OcspInvalidError, Reason.OCSP_UNTRUSTED_RESPONDER),
    (_ocsp_by_other_ca, OcspInvalidError, Reason.OCSP_UNTRUSTED_RESPONDER),
    (_ocsp_bad_signature, OcspInvalidError, Reason.OCSP_BAD_SIGNATURE),
    (_ocsp_for_other_certificate, OcspInvalidError, Reason.OCSP_WRONG_CERTIFICATE),
    (_ocsp_unknown, OcspInvalidError, Reason.OCSP_UNKNOWN_STATUS),
    (_ocsp_malformed, OcspInvalidError, Reason.OCSP_MALFORMED),
    (_ocsp_unsuccessful, OcspInvalidError, Reason.OCSP_NOT_SUCCESSFUL),
    (_wrong_eku, CertificateInvalidError, Reason.WRONG_KEY_USAGE),
    (_wrong_key_type, CertificateInvalidError, Reason.WRONG_KEY_TYPE),
    (_malformed_certificate, CertificateInvalidError, Reason.MALFORMED_CERTIFICATE),
    (_malformed_chain, CertificateInvalidError, Reason.MALFORMED_CERTIFICATE),
    (_chain_too_long, CertificateInvalidError, Reason.CHAIN_TOO_LONG),
    (_malformed_signature_value, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (_oversized_signature_value, InvalidSignatureError, Reason.MALFORMED_SIGNATURE),
    (_unsupported_algorithm, InvalidSignatureError, Reason.UNSUPPORTED_ALGORITHM),
]


@pytest.mark.parametrize(
    ("case", "error", "reason"), BAD, ids=[c[0].__name__.strip("_") for c in BAD]
)
def test_bad_inputs_each_refused_with_their_own_reason(
    world: World,
    verifier: MessageVerifier,
    case: Case,
    error: type[SignatureError],
    reason: Reason,
) -> None:
    header, sig = case(world)
    with pytest.raises(error) as info:
        verifier.verify(header, sig, claimed_member=POP, signed_at=world.now)
    assert info.value.reason is reason
    # Side-neutral: the verifying server maps the class to its own fault at its boundary.
    assert info.value.fault is Fault.CLIENT_INVALID_REQUEST
    # The text says what is wrong without leaking paths or key material.
    assert str(world.pki.directory) not in info.value.message


def test_signature_errors_name_no_side() -> None:
    """Which server refuses is decided where it refuses (security_server.errors), not here."""
    for error in (
        InvalidSignatureError,
        SignerMismatchError,
        CertificateInvalidError,
        CertificateRevokedError,
        OcspInvalidError,
    ):
        assert not str(error.default_fault).startswith("server.")


def test_the_table_distinguishes_every_failure() -> None:
    names = [c[0].__name__ for c in BAD]
    assert len(set(names)) == len(names)
    # Distinct situations map to distinct reasons except where they are the same failure
    # (a wrong key, a tampered header and a garbled value are all "signature does not match").
    same = {
        Reason.SIGNATURE_MISMATCH,
        Reason.OCSP_UNTRUSTED_RESPONDER,
        Reason.MALFORMED_CERTIFICATE,
    }
    reasons = [c[2] for c in BAD if c[2] not in same]
    assert len(set(reasons)) == len(reasons)


def test_good_signature_verifies_and_is_cached(world: World) -> None:
    verifier = MessageVerifier(world.pki.trust_anchors)
    sig = world.sign(world.pop)
    for _ in range(3):
        cert = verifier.verify(world.header, sig, claimed_member=POP, signed_at=world.now)
        assert cert == world.pop.certificate
    assert len(verifier._signers) == 1
    assert len(verifier._ocsp) == 1


def test_revoked_after_signing_still_verifies_with_the_stapled_response(world: World) -> None:
    """A message signed while the certificate was good, with the OCSP response of that moment,
    stays valid after the certificate is revoked; a signature made after revocation does not."""
    signed_at = world.now
    sig = world.sign(world.pop, ocsp=world.staple(world.pop, this_update=signed_at - 5 * MINUTE))
    # Later: the certificate is revoked; the responder now says so.
    revoked_at = signed_at + HOUR
    later = world.staple(world.pop, revoked_at=revoked_at, this_update=revoked_at)
    verifier = MessageVerifier(world.pki.trust_anchors)
    assert verifier.verify(world.header, sig, claimed_member=POP, signed_at=signed_at)
    # A signature made after the revocation, stapling the new response, is refused.
    after = world.sign(world.pop, ocsp=later)
    with pytest.raises(CertificateRevokedError):
        verifier.verify(world.header, after, claimed_member=POP, signed_at=revoked_at + HOUR / 2)
    # A response saying "revoked, but only later than signing" does not refuse the signature.
    late_revocation = world.staple(world.pop, revoked_at=signed_at + HOUR, this_update=signed_at)
    early = world.sign(world.pop, ocsp=late_revocation)
    assert verifier.verify(world.header, early, claimed_member=POP, signed_at=signed_at)


def test_delegated_responder_pinned_or_issuer_signed(world: World) -> None:
    # The CA itself may sign OCSP responses for what it issued.
    by_issuer = world.staple(world.pop, responder=world.pki.ca)
    verifier = MessageVerifier(world.pki.trust_anchors)
    sig = world.sign(world.pop, ocsp=by_issuer)
    verifier.verify(world.header, sig, claimed_member=POP, signed_at=world.now)
    # A pinned responder is accepted even without the OCSPSigning EKU.
    pinned = MessageVerifier(world.pki.trust_anchors, trusted_responders=[world.tax.certificate])
    sig = world.sign(world.pop, ocsp=world.staple(world.pop, responder=world.tax))
    pinned.verify(world.header, sig, claimed_member=POP, signed_at=world.now)


def test_sign_message_refusals(world: World) -> None:
    with pytest.raises(PkiError, match="does not belong"):
        sign_message(
            world.header,
            signer=world.tax.signer(),
            certificate=world.pop.certificate,
            ocsp_response=b"",
        )
    with pytest.raises(PkiError, match="ECDSA P-256"):
        sign_message(
            world.header,
            signer=FileSigner(generate_ed25519_key()),
            certificate=world.pop.certificate,
            ocsp_response=b"",
        )
    with pytest.raises(PkiError):
        MessageVerifier([])


def test_issue_with_unrelated_key_is_another_key(world: World, tmp_path: Path) -> None:
    # Sanity check of the helpers used above: a certificate for a key given from outside.
    key = generate_ec_key()
    cred = world.pki.issue(CertificateKind.SIGN, member=POP, key=key)
    assert cred.certificate.public_key() == key.public_key()


@settings(max_examples=150, deadline=None)
@given(
    value=st.binary(max_size=200),
    certificate=st.binary(max_size=600),
    chain=st.lists(st.binary(max_size=300), max_size=4),
    ocsp=st.binary(max_size=400),
    algorithm=st.sampled_from(list(transport_pb2.SignatureAlgorithm.values())),
)
def test_random_signatures_never_crash(
    world: World,
    verifier: MessageVerifier,
    value: bytes,
    certificate: bytes,
    chain: list[bytes],
    ocsp: bytes,
    algorithm: transport_pb2.SignatureAlgorithm.ValueType,
) -> None:
    sig = transport_pb2.Signature(
        algorithm=algorithm, value=value, certificate=certificate, chain=chain, ocsp_response=ocsp
    )
    with pytest.raises(SignatureError):
        verifier.verify(world.header, sig, claimed_member=POP, signed_at=world.now)


@settings(max_examples=100, deadline=None)
@given(ocsp=st.binary(max_size=600))
def test_random_ocsp_with_valid_certificate_never_crashes(
    world: World, verifier: MessageVerifier, ocsp: bytes
) -> None:
    sig = world.sign(world.pop, ocsp=ocsp or b"\x00")
    with pytest.raises(OcspInvalidError):
        verifier.verify(world.header, sig, claimed_member=POP, signed_at=world.now)


def test_the_latest_signer_and_staple_shortcut_keeps_every_check(world: World) -> None:
    """The verifier compares a signature's certificate and staple with the latest ones it
    looked up before asking its caches: every check still applies to what it finds there."""
    verifier = MessageVerifier(world.pki.trust_anchors)
    good = world.sign(world.pop)
    assert verifier.verify(world.header, good, claimed_member=POP, signed_at=world.now)
    # The same certificate, used outside its validity: refused as the slow path refuses it.
    after_expiry = world.pop.certificate.not_valid_after_utc + DAY
    with pytest.raises(CertificateInvalidError) as expired:
        verifier.verify(world.header, good, claimed_member=POP, signed_at=after_expiry)
    assert expired.value.reason is Reason.EXPIRED
    # The same certificate and staple, claimed for another member.
    with pytest.raises(SignerMismatchError):
        verifier.verify(world.header, good, claimed_member=TAX, signed_at=world.now)
    # The same certificate with another staple (revoked before signing): that staple's status.
    revoked = world.sign(world.pop, ocsp=world.staple(world.pop, revoked_at=world.now - HOUR))
    with pytest.raises(CertificateRevokedError):
        verifier.verify(world.header, revoked, claimed_member=POP, signed_at=world.now)
    # Another member's certificate after it, then the first again: each its own.
    assert verifier.verify(
        world.header, world.sign(world.tax), claimed_member=TAX, signed_at=world.now
    )
    assert verifier.verify(world.header, good, claimed_member=POP, signed_at=world.now)
    # The same instant in another time zone, or naive (read as UTC), verifies alike.
    elsewhere = world.now.astimezone(datetime.timezone(datetime.timedelta(hours=-3)))
    assert verifier.verify(world.header, good, claimed_member=POP, signed_at=elsewhere)
    naive = world.now.replace(tzinfo=None)
    assert verifier.verify(world.header, good, claimed_member=POP, signed_at=naive)
    with pytest.raises(CertificateInvalidError):
        verifier.verify(
            world.header, good, claimed_member=POP, signed_at=after_expiry.replace(tzinfo=None)
        )
    # The caches keep one entry per certificate chain and per staple, as before.
    assert len(verifier._signers) == 2
    assert len(verifier._ocsp) == 3


class _FixedValueSigner:
    """A signer whose value is a function of the data (to compare two ways of writing one
    signature byte for byte); the rest is the real signer's."""

    def __init__(self, real: FileSigner) -> None:
        self._real = real
        self.algorithm = real.algorithm

    def public_key(self) -> object:
        return self._real.public_key()

    def sign(self, data: bytes) -> bytes:
        return hashlib.sha256(data).digest() + b"\x01" * (len(data) % 5)


@pytest.mark.parametrize("chained", [False, True])
def test_a_serialised_signature_is_the_message_serialised(world: World, chained: bool) -> None:
    chain = world.pki.chain if chained else []
    signer = MessageSigner(
        signer=_FixedValueSigner(world.pop.signer()),  # type: ignore[arg-type]
        certificate=world.pop.certificate,
        chain=chain,
    )
    staples = [world.staple(world.pop), world.staple(world.pop, this_update=world.now), b""]
    for staple in [*staples, staples[0]]:  # the latest staple's field is remembered
        for header in (world.header, world.header + b"\x00", b""):
            value, encoded = signer.sign_serialised(header, ocsp_response=staple)
            signature = signer.sign(header, ocsp_response=staple)
            assert value == signature.value
            assert encoded == signature.SerializeToString(deterministic=True)
    with pytest.raises(PkiError):
        signer.sign_serialised(BATCH_SIGNATURE_CONTEXT + bytes(32), ocsp_response=staples[0])
    # With the real key (and the chain this world's anchors need): what it writes verifies.
    real = MessageSigner(
        signer=world.pop.signer(), certificate=world.pop.certificate, chain=world.pki.chain
    )
    value, encoded = real.sign_serialised(world.header, ocsp_response=staples[0])
    parsed = transport_pb2.Signature.FromString(encoded)
    assert parsed.value == value
    verifier = MessageVerifier(world.pki.trust_anchors)
    assert verifier.verify(world.header, parsed, claimed_member=POP, signed_at=world.now)
