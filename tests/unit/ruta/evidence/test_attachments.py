"""Signatures detached into a format-2 (or, for large batches, format-3) leaf and attached again:
exact bytes, digests checked."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ruta.evidence import attachments as attachments_module
from ruta.evidence.attachments import (
    SHARE_MIN_BATCH,
    AttachmentError,
    AttachmentKind,
    attach_signature,
    attachment_path,
    detach_signature,
    referenced_attachments,
    resolve_shared,
)
from ruta.v1 import log_pb2, transport_pb2
from ruta.wire import varint


def _signature(
    *, chain: int = 1, ocsp: bool = True, batch: bool = True, batch_size: int = 8
) -> transport_pb2.Signature:
    signature = transport_pb2.Signature(
        algorithm=transport_pb2.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256,
        value=secrets.token_bytes(71),
        certificate=secrets.token_bytes(528),
        chain=[secrets.token_bytes(400) for _ in range(chain)],
        ocsp_response=secrets.token_bytes(737) if ocsp else b"",
    )
    if batch:
        signature.batch.index = 3
        signature.batch.size = batch_size
        signature.batch.proof.extend(secrets.token_bytes(32) for _ in range(3))
    return signature


@given(
    chain=st.integers(0, 4),
    ocsp=st.booleans(),
    batch=st.booleans(),
    batch_size=st.sampled_from([4, 5, 64, 2, 3]),
)
def test_detach_then_attach_gives_the_signature_back(
    chain: int, ocsp: bool, batch: bool, batch_size: int
) -> None:
    original = _signature(chain=chain, ocsp=ocsp, batch=batch, batch_size=batch_size)
    logged_bytes, attachments = detach_signature(original.SerializeToString())
    logged = log_pb2.LoggedSignature.FromString(logged_bytes)
    # The bytes are those of the equivalent LoggedSignature, serialised deterministically.
    assert logged.SerializeToString(deterministic=True) == logged_bytes
    content = {a.digest: a.content for a in attachments}
    shared = batch and batch_size >= SHARE_MIN_BATCH
    assert bool(logged.shared_sha256) is shared
    resolved = resolve_shared(logged, lambda _kind, digest: content.get(digest))
    assert resolved.certificate_sha256 == hashlib.sha256(original.certificate).digest()
    assert list(resolved.chain_sha256) == [hashlib.sha256(d).digest() for d in original.chain]
    named = [*referenced_attachments(logged)]
    if shared:
        assert named == [(AttachmentKind.SHARED_SIGNATURE, logged.shared_sha256)]
        assert not (logged.value)
        assert not (logged.certificate_sha256)
        named = [*referenced_attachments(resolved), *named]
    assert named == [(a.kind, a.digest) for a in attachments]
    restored = attach_signature(logged, lambda _kind, digest: content.get(digest))
    assert restored == original


def test_the_messages_of_a_batch_share_one_attachment() -> None:
    """Two messages of one batch: the same shared part, stored once; each leaf keeps its own
    path and the shared part's digest only."""
    first = _signature(batch_size=SHARE_MIN_BATCH)
    second = transport_pb2.Signature()
    second.CopyFrom(first)
    second.batch.index = 1
    logged_first, attached_first = detach_signature(first.SerializeToString())
    logged_second, attached_second = detach_signature(second.SerializeToString())
    assert attached_first == attached_second
    assert logged_first != logged_second
    shared = attached_first[-1]
    assert shared.kind is AttachmentKind.SHARED_SIGNATURE
    part = log_pb2.LoggedSignature.FromString(shared.content)
    assert part.value == first.value
    assert not part.HasField("batch")
    # The leaf's part is the batch path and the digest: about 110 bytes less than inline.
    assert len(logged_first) == len(first.batch.SerializeToString()) + 2 + 2 + 32


def test_a_wrong_shared_part_is_refused() -> None:
    logged_bytes, attachments = detach_signature(_signature().SerializeToString())
    logged = log_pb2.LoggedSignature.FromString(logged_bytes)
    content = {a.digest: a.content for a in attachments}
    digest = logged.shared_sha256

    def with_shared(data: bytes) -> log_pb2.LoggedSignature:
        changed = log_pb2.LoggedSignature()
        changed.CopyFrom(logged)
        changed.shared_sha256 = hashlib.sha256(data).digest()
        content[changed.shared_sha256] = data
        return changed

    with pytest.raises(AttachmentError, match="is missing"):
        attach_signature(logged, lambda _k, d: None if d == digest else content[d])
    with pytest.raises(AttachmentError, match="does not match its digest"):
        attach_signature(logged, lambda _k, d: b"other" if d == digest else content[d])
    nested = log_pb2.LoggedSignature.FromString(content[digest])
    nested.batch.size = 2
    with pytest.raises(AttachmentError, match="batch path"):
        attach_signature(with_shared(nested.SerializeToString()), lambda _k, d: content.get(d))
    with pytest.raises(AttachmentError, match="not a readable"):
        attach_signature(with_shared(b"\xff\xff"), lambda _k, d: content.get(d))
    with pytest.raises(AttachmentError, match="exceeds"):
        attach_signature(with_shared(b"\x12\x00" * 2049), lambda _k, d: content.get(d))
    both = log_pb2.LoggedSignature()
    both.CopyFrom(logged)
    both.value = b"inline too"
    with pytest.raises(AttachmentError, match="also carries"):
        attach_signature(both, lambda _k, d: content.get(d))


def test_the_leaf_bytes_are_those_of_the_record_with_signature_ref_set() -> None:
    from security_server.log._writer import _serialise_record  # noqa: PLC0415
    from tests.unit.security_server.log.support import make_entry  # noqa: PLC0415

    entry = make_entry()
    logged_bytes, _ = detach_signature(entry.signature)
    leaf = _serialise_record(entry, logged_bytes, 300, 1_764_158_400_123_456)
    record = log_pb2.LogRecord.FromString(leaf)
    assert record.SerializeToString(deterministic=True) == leaf
    assert record.signature_ref == log_pb2.LoggedSignature.FromString(logged_bytes)
    assert (record.sequence, record.header) == (300, entry.header)


@given(
    seq=st.one_of(st.just(0), st.integers(0, 2**63 - 1)),
    logged_at_us=st.one_of(
        st.sampled_from([0, 1, 999_999, 1_000_000, 1_764_158_400_000_000]),
        st.integers(-(10**15), 4 * 10**15),
    ),
    received=st.booleans(),
    header=st.binary(max_size=300),
)
def test_the_writer_writes_the_leaf_protobuf_would(
    seq: int, logged_at_us: int, received: bool, header: bytes
) -> None:
    """The writer serialises a leaf by hand: byte for byte what protobuf's deterministic
    serialisation of the same record gives, whatever the values (0 and defaults left out)."""
    from dataclasses import replace  # noqa: PLC0415

    from security_server.log import Direction  # noqa: PLC0415
    from security_server.log._writer import _serialise_record  # noqa: PLC0415
    from tests.unit.security_server.log.support import make_entry  # noqa: PLC0415

    direction = Direction.RECEIVED if received else Direction.SENT
    entry = replace(make_entry(), direction=direction, header=header)
    logged_bytes, _ = detach_signature(_signature(batch=True).SerializeToString())
    record = log_pb2.LogRecord(sequence=seq, direction=int(direction), header=header)  # type: ignore[arg-type]
    record.logged_at.FromMicroseconds(logged_at_us)
    record.signature_ref.ParseFromString(logged_bytes)
    expected = record.SerializeToString(deterministic=True)
    assert _serialise_record(entry, logged_bytes, seq, logged_at_us) == expected


def test_a_missing_or_different_attachment_is_refused() -> None:
    original = _signature(batch_size=2)
    logged_bytes, attachments = detach_signature(original.SerializeToString())
    logged = log_pb2.LoggedSignature.FromString(logged_bytes)
    content = {a.digest: a.content for a in attachments}
    certificate = logged.certificate_sha256
    with pytest.raises(AttachmentError, match="is missing"):
        attach_signature(logged, lambda _k, d: None if d == certificate else content[d])
    with pytest.raises(AttachmentError, match="does not match its digest"):
        attach_signature(logged, lambda _k, d: b"other" if d == certificate else content[d])
    logged.ocsp_response_sha256 = b"short"
    with pytest.raises(AttachmentError, match="not a SHA-256"):
        attach_signature(logged, lambda _k, d: content.get(d))


def test_an_unreadable_signature_or_long_chain_is_refused() -> None:
    with pytest.raises(AttachmentError, match="not a readable"):
        detach_signature(b"\xff\xff")
    with pytest.raises(AttachmentError, match="chain certificates"):
        detach_signature(_signature(chain=5).SerializeToString())


def test_attachment_paths() -> None:
    digest = bytes(range(32))
    assert attachment_path(AttachmentKind.CERTIFICATE, digest) == f"certificates/{digest.hex()}.der"
    assert attachment_path(AttachmentKind.OCSP_RESPONSE, digest) == f"ocsp/{digest.hex()}.der"
    assert (
        attachment_path(AttachmentKind.SHARED_SIGNATURE, digest) == f"signatures/{digest.hex()}.pb"
    )


def test_a_certificate_or_ocsp_response_seen_again_gives_the_same_attachment() -> None:
    """The attachments of DER detached before are remembered by kind and bytes: the same digest,
    kind and content as hashing them again, also when the same bytes arrive as another kind."""
    signature = _signature(chain=2)
    first = detach_signature(signature.SerializeToString(deterministic=True))
    again = _signature(chain=2)
    again.CopyFrom(signature)
    again.value = secrets.token_bytes(71)
    second = detach_signature(again.SerializeToString(deterministic=True))
    assert second[1][:-1] == first[1][:-1]  # the last, the shared part, holds the value
    for attached in second[1][:-1]:
        assert attached.digest == hashlib.sha256(attached.content).digest()
    # The same bytes as a certificate and as an OCSP response: two attachments, kinds kept.
    twin = _signature(chain=0, batch=False)
    twin.ocsp_response = twin.certificate
    _, (certificate, response) = detach_signature(twin.SerializeToString(deterministic=True))
    assert certificate.kind is AttachmentKind.CERTIFICATE
    assert response.kind is AttachmentKind.OCSP_RESPONSE
    assert certificate.digest == response.digest


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2]) + varint(len(payload)) + payload


#: Rests (the bytes after the value) that change what the value's bytes mean, or carry what
#: the log drops: none may be detached by the remembered rest.
_TRICKY_RESTS = (
    _field(2, b"another value"),  # a second value: the last one counts
    _field(2, b""),  # an empty one, as well
    b"\x08\x02",  # another algorithm
    _field(6, b"\x08\x01\x10\x02"),  # a batch path
    _field(9, b"unknown"),  # an unknown field (dropped)
)
#: A rest that is still plain: a certificate, then a chain certificate whose length is written
#: in two bytes where one does (parsing reads it the same; the log writes it in one).
_PADDED_REST = _field(3, b"\x01" * 40) + b"\x22\x85\x00" + b"\x02" * 5


@given(
    value_length=st.sampled_from([1, 70, 71, 72, 127, 128, 300, 16383, 16384]),
    algorithm=st.sampled_from([0, 1, 2, 127, 128]),
    chain=st.integers(0, 2),
    ocsp=st.booleans(),
    batch_size=st.sampled_from([0, 2, 4]),
    tricky=st.sampled_from([b"", _PADDED_REST, *_TRICKY_RESTS]),
)
def test_a_remembered_rest_detaches_as_parsing_does(
    value_length: int, algorithm: int, chain: int, ocsp: bool, batch_size: int, tricky: bytes
) -> None:
    """Signatures sharing everything after their value are detached from the remembered rest:
    always the bytes and attachments parsing and serialising give, whatever the rest holds."""
    signature = _signature(chain=chain, ocsp=ocsp, batch=batch_size > 0, batch_size=batch_size)
    signature.algorithm = algorithm  # type: ignore[assignment]
    for _ in range(3):
        signature.value = secrets.token_bytes(value_length)
        serialised = signature.SerializeToString(deterministic=True) + tricky
        assert detach_signature(serialised) == attachments_module._detach(serialised)[:2]
    # Only a canonical head and a rest of certificates and an OCSP response is remembered.
    plain = (
        tricky in (b"", _PADDED_REST)
        and not batch_size
        and 0 < algorithm < 0x80
        and value_length < 0x4000
    )
    remembered = [r for r in attachments_module._DETACHED_RESTS if serialised.endswith(r)]
    if plain:
        assert serialised[(5 if value_length >= 0x80 else 4) + value_length :] in remembered
    else:
        assert not [r for r in remembered if r]  # (an empty rest ends every signature)


def test_a_non_canonical_value_length_is_detached_as_parsing_does() -> None:
    value = secrets.token_bytes(71)
    rest = _field(3, secrets.token_bytes(528))
    canonical = b"\x08\x01\x12" + varint(71) + value + rest
    padded = b"\x08\x01\x12\xc7\x00" + value + rest  # 71 in two bytes
    for serialised in (canonical, padded, canonical, padded):
        assert detach_signature(serialised) == attachments_module._detach(serialised)[:2]


def test_remembered_rests_are_bounded_and_never_unreadable_ones() -> None:
    attachments_module._DETACHED_RESTS.clear()
    attachments_module._DETACHED_REST_LENGTHS.clear()
    for n in range(attachments_module._MAX_DETACHED_RESTS + 10):
        signature = _signature(batch=False)
        signature.ocsp_response += bytes(n)  # rests of many lengths
        serialised = signature.SerializeToString(deterministic=True)
        assert detach_signature(serialised) == detach_signature(serialised)
        assert detach_signature(serialised) == attachments_module._detach(serialised)[:2]
    assert len(attachments_module._DETACHED_RESTS) == attachments_module._MAX_DETACHED_RESTS
    # The lengths looked up are those of the rests remembered (the oldest's went with it).
    assert (
        set(map(len, attachments_module._DETACHED_RESTS))
        == attachments_module._DETACHED_REST_LENGTHS
    )
    attachments_module._DETACHED_RESTS.clear()
    attachments_module._DETACHED_REST_LENGTHS.clear()
    broken = b"\x08\x01\x12\x01\x00" + b"\x1a\x05abc"  # a certificate cut short
    long_chain = _signature(chain=5, batch=False).SerializeToString(deterministic=True)
    for _ in range(2):
        with pytest.raises(AttachmentError, match="not a readable"):
            detach_signature(broken)
        with pytest.raises(AttachmentError, match="chain certificates"):
            detach_signature(long_chain)
    assert not attachments_module._DETACHED_RESTS
