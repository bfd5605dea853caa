"""Batch signatures: one ECDSA signature over the Merkle root of n headers, each message carrying
its inclusion path (docs/adr/0010-batch-signatures.md). Every message verifies on its own; every
bad path, header or shape is refused with its reason; the root cache lets nothing unverified
through."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from ruta.faults import Fault
from ruta.ids import MemberId
from ruta.merkle import leaf_hash, root_and_inclusion_proofs
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
from ruta.pki.signature import (
    BATCH_SIGNATURE_CONTEXT,
    MAX_BATCH_PROOF_LENGTH,
    MAX_BATCH_SIZE,
    MessageSigner,
    MessageVerifier,
    _batch_root,
)
from ruta.pki.testing import Credential, TestPki
from ruta.v1 import transport_pb2

POP = MemberId.parse("LAC/GOV/POP")
TAX = MemberId.parse("LAC/GOV/TAX")
HOUR = datetime.timedelta(hours=1)


@dataclass
class World:
    pki: TestPki
    pop: Credential
    tax: Credential
    now: datetime.datetime

    def signer(self, cred: Credential | None = None) -> MessageSigner:
        cred = cred or self.pop
        return MessageSigner(
            signer=cred.signer(), certificate=cred.certificate, chain=self.pki.chain
        )

    def staple(self, cred: Credential | None = None, **options: object) -> bytes:
        cred = cred or self.pop
        return self.pki.ocsp_response(cred.certificate, **options)  # type: ignore[arg-type]

    def batch(
        self, n: int, *, cred: Credential | None = None, tag: str = "m", ocsp: bytes | None = None
    ) -> tuple[list[bytes], list[transport_pb2.Signature]]:
        headers = [header(f"{tag}-{i}") for i in range(n)]
        sigs = self.signer(cred).sign_batch(
            headers, ocsp_response=self.staple(cred) if ocsp is None else ocsp
        )
        return headers, sigs


def header(message_id: str) -> bytes:
    return transport_pb2.MessageHeader(
        message_id=message_id, method="GetPerson", purpose="benefits"
    ).SerializeToString()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    pki = TestPki(tmp_path_factory.mktemp("pki"), intermediate=True)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return World(pki, pki.sign(POP), pki.sign(TAX), now)


@pytest.fixture(scope="module")
def batch5(world: World) -> tuple[list[bytes], list[transport_pb2.Signature]]:
    return world.batch(5)


def verify(
    verifier: MessageVerifier,
    world: World,
    header_bytes: bytes,
    sig: transport_pb2.Signature,
    member: MemberId = POP,
) -> None:
    verifier.verify(header_bytes, sig, claimed_member=member, signed_at=world.now)


# --- good batches --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 16, MAX_BATCH_SIZE])
def test_every_message_of_a_batch_verifies(world: World, n: int) -> None:
    headers, sigs = world.batch(n)
    assert len(sigs) == n
    assert len({s.value for s in sigs}) == 1  # one ECDSA signature for the batch
    for i, s in enumerate(sigs):
        assert s.HasField("batch")
        assert (s.batch.index, s.batch.size) == (i, n)
        assert len(s.batch.proof) <= MAX_BATCH_PROOF_LENGTH
        assert s.certificate == world.pop.der
    verifier = MessageVerifier(world.pki.trust_anchors)
    for h, s in zip(headers, sigs, strict=True):
        assert verifier.verify(h, s, claimed_member=POP, signed_at=world.now) == (
            world.pop.certificate
        )
    # Each message alone, with a fresh verifier (no cached root): still verifies.
    for i in {0, n // 2, n - 1}:
        verify(MessageVerifier(world.pki.trust_anchors), world, headers[i], sigs[i])


def test_a_batch_of_one_is_a_plain_signature(world: World) -> None:
    headers, sigs = world.batch(1)
    assert len(sigs) == 1
    assert not sigs[0].HasField("batch")
    verify(MessageVerifier(world.pki.trust_anchors), world, headers[0], sigs[0])
    assert world.signer().sign_batch([], ocsp_response=world.staple()) == []


def test_batch_signs_context_size_and_root(world: World) -> None:
    headers, sigs = world.batch(3)
    root, _ = root_and_inclusion_proofs([leaf_hash(h) for h in headers])
    key = world.pop.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    signed = BATCH_SIGNATURE_CONTEXT + (3).to_bytes(8, "big") + root
    key.verify(sigs[0].value, signed, ec.ECDSA(hashes.SHA256()))
    # The context can never begin a serialised protobuf message (field number 0 is invalid).
    assert BATCH_SIGNATURE_CONTEXT.startswith(b"\x00")
    with pytest.raises(DecodeError):
        transport_pb2.MessageHeader.FromString(signed)


def test_the_size_is_signed_even_where_the_path_leads_to_the_same_root(world: World) -> None:
    """Leaf 2 has the same path directions in batches of 5 and 6: the recomputed root is the
    same, so only the signed size tells the false claim apart."""
    headers, sigs = world.batch(5)
    claimed = _copy(sigs[2])
    claimed.batch.size = 6
    assert _batch_root(headers[2], claimed.batch) == _batch_root(headers[2], sigs[2].batch)
    with pytest.raises(InvalidSignatureError) as info:
        verify(MessageVerifier(world.pki.trust_anchors), world, headers[2], claimed)
    assert info.value.reason is Reason.SIGNATURE_MISMATCH


def test_root_cache_spares_the_ecdsa_check_for_the_rest_of_the_batch(
    world: World, batch5: tuple[list[bytes], list[transport_pb2.Signature]]
) -> None:
    headers, sigs = batch5
    verifier = MessageVerifier(world.pki.trust_anchors)
    for h, s in zip(headers, sigs, strict=True):
        verify(verifier, world, h, s)
    assert len(verifier._roots) == 1


# --- bad batches ---------------------------------------------------------------------------------

Case = Callable[
    [World, list[bytes], list[transport_pb2.Signature]], tuple[bytes, transport_pb2.Signature]
]


def _copy(sig: transport_pb2.Signature) -> transport_pb2.Signature:
    out = transport_pb2.Signature()
    out.CopyFrom(sig)
    return out


def _tampered_header(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    return hs[2] + b"\x00", ss[2]


def _header_of_another_index(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    return hs[1], ss[2]


def _swapped_path(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    sig.batch.proof[0], sig.batch.proof[1] = ss[2].batch.proof[1], ss[2].batch.proof[0]
    return hs[2], sig


def _wrong_path_hash(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    sig.batch.proof[0] = bytes(32)
    return hs[2], sig


def _wrong_index_same_depth(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    sig.batch.index = 3  # leaves 0..3 of 5 have paths of three hashes
    return hs[2], sig


def _wrong_index_other_depth(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    sig.batch.index = 4  # leaf 4 of 5 has a path of one hash
    return hs[2], sig


def _index_outside_batch(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    sig.batch.index = 5
    return hs[2], sig


def _wrong_size_same_depth(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    sig.batch.size = 6  # leaf 2 has a path of three hashes in batches of 5 and 6
    return hs[2], sig


def _wrong_size_other_depth(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    sig.batch.size = 4
    return hs[2], sig


def _proof_too_long(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    sig.batch.proof.append(bytes(32))
    return hs[2], sig


def _proof_over_the_bound(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    sig.batch.size = 2**63
    sig.batch.proof.extend([bytes(32)] * 60)
    return hs[2], sig


def _proof_too_short(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    del sig.batch.proof[-1]
    return hs[2], sig


def _proof_hash_of_wrong_length(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    sig.batch.proof[0] = bytes(31)
    return hs[2], sig


def _size_over_the_bound(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    sig.batch.size = MAX_BATCH_SIZE + 1
    return hs[2], sig


def _size_one(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[0])
    sig.batch.size = 1
    sig.batch.index = 0
    del sig.batch.proof[:]
    return hs[0], sig


def _empty_batch_field(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[0])
    sig.batch.Clear()
    sig.batch.SetInParent()
    return hs[0], sig


def _signature_of_another_batch(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    _, others = w.batch(5, tag="other")
    sig = _copy(ss[2])
    sig.value = others[2].value
    return hs[2], sig


def _batch_reused_for_another_header(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    return header("not-in-the-batch"), ss[2]


def _batch_signature_as_plain(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = _copy(ss[2])
    sig.ClearField("batch")
    return hs[2], sig


def _batch_signature_as_plain_over_context_and_root(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    root, _ = root_and_inclusion_proofs([leaf_hash(h) for h in hs])
    sig = _copy(ss[2])
    sig.ClearField("batch")
    return BATCH_SIGNATURE_CONTEXT + root, sig


def _plain_signature_with_a_path(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    sig = w.signer().sign(hs[2], ocsp_response=w.staple())
    sig.batch.CopyFrom(ss[2].batch)
    return hs[2], sig


def _another_members_batch(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    headers, sigs = w.batch(5, cred=w.tax)
    return headers[2], sigs[2]


def _revoked_before_signing(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    headers, sigs = w.batch(5, ocsp=w.staple(revoked_at=w.now - HOUR))
    return headers[2], sigs[2]


def _stale_ocsp(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    headers, sigs = w.batch(5, ocsp=w.staple(this_update=w.now - 2 * HOUR))
    return headers[2], sigs[2]


def _expired_certificate(
    w: World, hs: list[bytes], ss: list[transport_pb2.Signature]
) -> tuple[bytes, transport_pb2.Signature]:
    day = datetime.timedelta(days=1)
    cred = w.pki.sign(POP, not_before=w.now - 10 * day, not_after=w.now - day)
    headers, sigs = w.batch(5, cred=cred)
    return headers[2], sigs[2]


BAD: list[tuple[Case, type[SignatureError], Reason]] = [
    (_tampered_header, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (_header_of_another_index, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (_swapped_path, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (_wrong_path_hash, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (_wrong_index_same_depth, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (_wrong_index_other_depth, InvalidSignatureError, Reason.MALFORMED_BATCH),
    (_index_outside_batch, InvalidSignatureError, Reason.MALFORMED_BATCH),
    (_wrong_size_same_depth, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (_wrong_size_other_depth, InvalidSignatureError, Reason.MALFORMED_BATCH),
    (_proof_too_long, InvalidSignatureError, Reason.MALFORMED_BATCH),
    (_proof_over_the_bound, InvalidSignatureError, Reason.MALFORMED_BATCH),
    (_proof_too_short, InvalidSignatureError, Reason.MALFORMED_BATCH),
    (_proof_hash_of_wrong_length, InvalidSignatureError, Reason.MALFORMED_BATCH),
    (_size_over_the_bound, InvalidSignatureError, Reason.MALFORMED_BATCH),
    (_size_one, InvalidSignatureError, Reason.MALFORMED_BATCH),
    (_empty_batch_field, InvalidSignatureError, Reason.MALFORMED_BATCH),
    (_signature_of_another_batch, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (_batch_reused_for_another_header, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (_batch_signature_as_plain, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (
        _batch_signature_as_plain_over_context_and_root,
        InvalidSignatureError,
        Reason.SIGNATURE_MISMATCH,
    ),
    (_plain_signature_with_a_path, InvalidSignatureError, Reason.SIGNATURE_MISMATCH),
    (_another_members_batch, SignerMismatchError, Reason.SIGNER_NOT_CLAIMED_MEMBER),
    (_revoked_before_signing, CertificateRevokedError, Reason.REVOKED),
    (_stale_ocsp, OcspInvalidError, Reason.OCSP_STALE),
    (_expired_certificate, CertificateInvalidError, Reason.EXPIRED),
]


@pytest.mark.parametrize(
    ("case", "error", "reason"), BAD, ids=[c[0].__name__.strip("_") for c in BAD]
)
def test_bad_batches_each_refused_with_their_reason(
    world: World,
    batch5: tuple[list[bytes], list[transport_pb2.Signature]],
    case: Case,
    error: type[SignatureError],
    reason: Reason,
) -> None:
    headers, sigs = batch5
    header_bytes, sig = case(world, headers, sigs)
    # A verifier that already verified the genuine batch (its root is cached) and a fresh one.
    warm = MessageVerifier(world.pki.trust_anchors)
    for h, s in zip(headers, sigs, strict=True):
        verify(warm, world, h, s)
    for verifier in (warm, MessageVerifier(world.pki.trust_anchors)):
        with pytest.raises(error) as info:
            verify(verifier, world, header_bytes, sig)
        assert info.value.reason is reason
        assert info.value.fault is Fault.CLIENT_INVALID_REQUEST


def test_the_table_names_every_case_once() -> None:
    names = [c[0].__name__ for c in BAD]
    assert len(set(names)) == len(names)


def test_a_plain_signature_never_verifies_as_a_batch(world: World) -> None:
    h = header("plain")
    plain = world.signer().sign(h, ocsp_response=world.staple())
    other = header("other")
    # Pretend the plain signature covers a batch of [h, other]: the root is not what was signed.
    _, proofs = root_and_inclusion_proofs([leaf_hash(h), leaf_hash(other)])
    sig = _copy(plain)
    sig.batch.CopyFrom(transport_pb2.BatchPath(index=0, size=2, proof=proofs[0]))
    with pytest.raises(InvalidSignatureError) as info:
        verify(MessageVerifier(world.pki.trust_anchors), world, h, sig)
    assert info.value.reason is Reason.SIGNATURE_MISMATCH


def test_the_root_cache_lets_no_forged_value_through(
    world: World, batch5: tuple[list[bytes], list[transport_pb2.Signature]]
) -> None:
    headers, sigs = batch5
    verifier = MessageVerifier(world.pki.trust_anchors)
    verify(verifier, world, headers[0], sigs[0])  # the root is now cached
    forged = _copy(sigs[1])
    forged.value = world.pop.signer().sign(b"something else")  # well-formed, wrong
    with pytest.raises(InvalidSignatureError) as info:
        verify(verifier, world, headers[1], forged)
    assert info.value.reason is Reason.SIGNATURE_MISMATCH
    # Another signer's certificate with the cached root and value: not a cache hit either.
    foreign = _copy(sigs[1])
    foreign.certificate = world.tax.der
    with pytest.raises(InvalidSignatureError) as info:
        verify(verifier, world, headers[1], foreign, TAX)
    assert info.value.reason is Reason.SIGNATURE_MISMATCH
    # The genuine message still verifies.
    verify(verifier, world, headers[1], sigs[1])


def test_a_cached_root_does_not_skip_the_per_message_checks(
    world: World, batch5: tuple[list[bytes], list[transport_pb2.Signature]]
) -> None:
    headers, sigs = batch5
    verifier = MessageVerifier(world.pki.trust_anchors)
    verify(verifier, world, headers[0], sigs[0])
    # Same root and value, but the claimed member differs / the OCSP staple is gone.
    with pytest.raises(SignerMismatchError):
        verify(verifier, world, headers[1], sigs[1], TAX)
    no_ocsp = _copy(sigs[1])
    no_ocsp.ocsp_response = b""
    with pytest.raises(OcspInvalidError):
        verify(verifier, world, headers[1], no_ocsp)
    # Signed before the certificate was valid: the chain check at signing time still runs.
    with pytest.raises(CertificateInvalidError):
        verifier.verify(
            headers[1],
            sigs[1],
            claimed_member=POP,
            signed_at=world.pop.certificate.not_valid_before_utc - HOUR,
        )


def test_sign_batch_refusals(world: World) -> None:
    signer = world.signer()
    with pytest.raises(PkiError, match="at most"):
        signer.sign_batch([b"x"] * (MAX_BATCH_SIZE + 1), ocsp_response=world.staple())
    with pytest.raises(PkiError, match="context"):
        signer.sign(BATCH_SIGNATURE_CONTEXT + bytes(32), ocsp_response=world.staple())
    with pytest.raises(PkiError, match="context"):
        signer.sign_batch([BATCH_SIGNATURE_CONTEXT], ocsp_response=world.staple())


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=40),
    data=st.data(),
)
def test_any_batch_verifies_and_any_changed_path_does_not(
    world: World, n: int, data: st.DataObject
) -> None:
    # Distinct headers, as real batches have (each carries its own message id): with two equal
    # leaves, moving a path to the other's index still proves the same header bytes, which is
    # harmless (the signature authenticates header bytes, not positions) but not a "change".
    drawn = data.draw(
        st.lists(st.binary(min_size=1, max_size=40), min_size=n, max_size=n, unique=True)
    )
    headers = [b"\x0a" + h for h in drawn]  # never starts with 0x00
    sigs = world.signer().sign_batch(headers, ocsp_response=world.staple())
    verifier = MessageVerifier(world.pki.trust_anchors)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    verify(verifier, world, headers[i], sigs[i])
    bad = _copy(sigs[i])
    change = data.draw(st.sampled_from(["index", "size", "proof", "header"]))
    h = headers[i]
    if change == "index":
        bad.batch.index = data.draw(st.integers(0, 2 * n).filter(lambda j: j != i))
    elif change == "size":
        bad.batch.size = data.draw(st.integers(0, 2 * n).filter(lambda m: m != n))
    elif change == "proof" and bad.batch.proof:
        k = data.draw(st.integers(0, len(bad.batch.proof) - 1))
        bad.batch.proof[k] = bytes(a ^ 1 for a in bad.batch.proof[k])
    else:
        h = h + b"\x00"
    if h == headers[i] and bad == sigs[i]:
        return
    with pytest.raises(InvalidSignatureError) as info:
        verify(verifier, world, h, bad)
    assert info.value.reason in {Reason.SIGNATURE_MISMATCH, Reason.MALFORMED_BATCH}
