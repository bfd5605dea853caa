from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ruta.checkpoint import (
    MAX_EXTENSION_LINES,
    MAX_NOTE_SIGNATURES,
    MAX_NOTE_SIZE,
    MAX_ORIGIN_LENGTH,
    Checkpoint,
    CheckpointError,
    MalformedNoteError,
    Note,
    NoteSignature,
    SignatureType,
    UnverifiedNoteError,
    Verifier,
    cosign,
    cosignature_message,
    key_id,
    open_checkpoint,
    parse_note,
    sign_note,
    verify_cosignature,
    verify_note,
)
from ruta.faults import Fault
from ruta.merkle import EMPTY_ROOT

# Known answers from golang.org/x/mod/sumdb/note (note_test.go / package doc): the Ed25519 seed
# behind "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz".
GO_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
# A type 0x04 (cosignature/v1) verifier key from transparency-dev/formats note tests.
COSIG_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"

ROOT = hashlib.sha256(b"root").digest()


def test_go_known_answer_sign() -> None:
    key = Ed25519PrivateKey.from_private_bytes(GO_SEED)
    assert sign_note(GO_TEXT, "PeterNeumann", key) == GO_NOTE
    verifier = Verifier.for_key("PeterNeumann", SignatureType.ED25519, key)
    assert verifier.vkey() == GO_VKEY


def test_go_known_answer_verify() -> None:
    verifier = Verifier.from_vkey(GO_VKEY)
    verified = verify_note(GO_NOTE, verifier)
    assert verified.text == GO_TEXT
    assert verified.verified == ((verifier, None),)
    with pytest.raises(UnverifiedNoteError):
        verify_note(GO_NOTE.replace("cryptography", "cryptographY"), verifier)


def test_cosignature_vkey_known_answer() -> None:
    verifier = Verifier.from_vkey(COSIG_VKEY)
    assert verifier.kind is SignatureType.COSIGNATURE_V1
    assert verifier.vkey() == COSIG_VKEY


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
        "PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
        "x" * 1000,
    ],
)
def test_bad_vkeys(vkey: str) -> None:
    with pytest.raises(MalformedNoteError):
        Verifier.from_vkey(vkey)


def _log_key() -> tuple[Ed25519PrivateKey, Verifier]:
    key = Ed25519PrivateKey.generate()
    return key, Verifier.for_key("example.org/log", SignatureType.ED25519, key)


def test_checkpoint_round_trip() -> None:
    key, verifier = _log_key()
    cp = Checkpoint(origin="example.org/log", size=20852163, root=ROOT, extensions=("ext a",))
    body = cp.body()
    assert body == f"example.org/log\n20852163\n{base64.b64encode(ROOT).decode()}\next a\n"
    signed = sign_note(body, "example.org/log", key)
    parsed, verified = open_checkpoint(signed, [verifier])
    assert parsed == cp
    assert verified.note.format() == signed


@pytest.mark.parametrize(
    "body",
    [
        "",
        "origin\n1\n",
        "origin\n1\n" + base64.b64encode(ROOT).decode(),  # no final newline
        "\n1\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n01\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n-1\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n+1\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n 1\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n18446744073709551616\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n1\n" + base64.b64encode(ROOT[:31]).decode() + "\n",
        "origin\n1\nnot base64!\n",
        "origin\n1\n" + base64.b64encode(ROOT).decode().rstrip("=") + "\n",
        "origin\n1\n" + base64.b64encode(ROOT).decode() + "\n\n",  # empty extension line
        "origin\n1\n" + base64.b64encode(ROOT).decode() + "\n" + "e\n" * (MAX_EXTENSION_LINES + 1),
        "o" * (MAX_ORIGIN_LENGTH + 1) + "\n1\n" + base64.b64encode(ROOT).decode() + "\n",
        "ori\x00gin\n1\n" + base64.b64encode(ROOT).decode() + "\n",
    ],
)
def test_bad_checkpoint_bodies(body: str) -> None:
    with pytest.raises(MalformedNoteError) as info:
        Checkpoint.from_body(body)
    assert info.value.fault is Fault.SERVER_REGISTRY_INVALID_CHECKPOINT


def test_empty_tree_checkpoint() -> None:
    cp = Checkpoint(origin="o", size=0, root=EMPTY_ROOT)
    assert cp.body().splitlines()[1] == "0"
    assert Checkpoint.from_body(cp.body()) == cp


_VALID_SIG = "— k " + base64.b64encode(b"\x01\x02\x03\x04" + b"s" * 64).decode() + "\n"


@pytest.mark.parametrize(
    "note",
    [
        "",
        "text\n",
        "text\n\n",
        "text\n\n— k AQIDBA==\n",  # key ID only, no signature
        "text\n\n— k !!!!\n",
        "text\n\n- k " + _VALID_SIG[4:],  # hyphen instead of em dash
        "text\n\n" + _VALID_SIG.rstrip("\n"),  # no final newline
        "text\n\n" + _VALID_SIG.replace("— k", "— k+x"),
        "text\n\n" + _VALID_SIG.replace("— k", "— k x"),
        "text\n\n" + _VALID_SIG.replace("— k", "—  k"),
        "text\n\n" + _VALID_SIG + "\n",  # blank line after signatures
        "te\x01xt\n\n" + _VALID_SIG,
        "te\rxt\n\n" + _VALID_SIG,
        "text\n\n" + _VALID_SIG * (MAX_NOTE_SIGNATURES + 1),
        "x" * MAX_NOTE_SIZE + "\n\n" + _VALID_SIG,
        "no final newline\n" + _VALID_SIG,
    ],
)
def test_bad_notes(note: str) -> None:
    with pytest.raises(MalformedNoteError):
        parse_note(note)


def test_invalid_utf8_note() -> None:
    with pytest.raises(MalformedNoteError):
        parse_note(b"text\xff\n\n" + _VALID_SIG.encode())


def test_note_text_may_hold_blank_lines() -> None:
    note = parse_note("a\n\nb\n\n" + _VALID_SIG)
    assert note.text == "a\n\nb\n"
    assert note.signatures[0].name == "k"


def test_unknown_keys_are_ignored_and_bad_known_signature_rejects() -> None:
    key, verifier = _log_key()
    other, _ = _log_key()
    body = Checkpoint(origin="example.org/log", size=1, root=ROOT).body()
    signed = sign_note(body, "example.org/log", key)
    # Another key under the same name (different key ID) is ignored.
    foreign = sign_note(body, "example.org/log", other).split("\n\n")[1]
    assert len(verify_note(signed + foreign, verifier).verified) == 1
    # No trusted signature at all.
    with pytest.raises(UnverifiedNoteError):
        verify_note(body + "\n" + foreign, verifier)
    # A line claiming the trusted key (same name and ID) with a bad signature rejects the note.
    good = parse_note(signed).signatures[0]
    forged = NoteSignature(good.name, good.key_id, bytes(64))
    with pytest.raises(UnverifiedNoteError):
        verify_note(Note(text=body, signatures=(good, forged)).format(), verifier)


def test_cosignature_round_trip_and_message() -> None:
    log_key, log_verifier = _log_key()
    witness_key = Ed25519PrivateKey.generate()
    witness = Verifier.for_key(
        "registry.example/witness", SignatureType.COSIGNATURE_V1, witness_key
    )
    body = Checkpoint(origin="example.org/log", size=5, root=ROOT).body()
    assert cosignature_message(body, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\n" + body.encode()
    )
    sig = cosign(body, "registry.example/witness", witness_key, 1679315147)
    assert sig.key_id == key_id(
        "registry.example/witness", SignatureType.COSIGNATURE_V1, witness_key.public_key()
    )
    assert sig.signature[:8] == (1679315147).to_bytes(8, "big")
    assert len(sig.signature) == 72
    assert verify_cosignature(body, sig.line(), witness) == 1679315147
    assert verify_cosignature(body, [sig], witness) == 1679315147
    # Appended to the signed checkpoint, the note verifies with both keys (spec: concatenate).
    note = sign_note(body, "example.org/log", log_key) + sig.line()
    verified = verify_note(note, [log_verifier, witness])
    assert [t for _, t in verified.verified] == [None, 1679315147]
    # The cosignature does not verify over another body or as a plain signature.
    other = Checkpoint(origin="example.org/log", size=6, root=ROOT).body()
    with pytest.raises(UnverifiedNoteError):
        verify_cosignature(other, sig.line(), witness)
    plain = Verifier.for_key("registry.example/witness", SignatureType.ED25519, witness_key)
    with pytest.raises(MalformedNoteError):
        verify_cosignature(body, sig.line(), plain)
    with pytest.raises(UnverifiedNoteError):
        verify_note(body + "\n" + sig.line(), plain)


@pytest.mark.parametrize("timestamp", [-1, 2**63])
def test_cosign_timestamp_bounds(timestamp: int) -> None:
    body = Checkpoint(origin="o", size=1, root=ROOT).body()
    with pytest.raises(MalformedNoteError):
        cosign(body, "w", Ed25519PrivateKey.generate(), timestamp)


def test_cosignature_with_wrong_length_fails() -> None:
    key = Ed25519PrivateKey.generate()
    witness = Verifier.for_key("w", SignatureType.COSIGNATURE_V1, key)
    body = Checkpoint(origin="o", size=1, root=ROOT).body()
    short = NoteSignature("w", witness.key_id, bytes(64))
    with pytest.raises(UnverifiedNoteError):
        verify_cosignature(body, [short], witness)
    with pytest.raises(UnverifiedNoteError):
        verify_cosignature(body, [], witness)


@pytest.mark.parametrize(
    ("name", "body"),
    [("", "t\n"), ("a b", "t\n"), ("a+b", "t\n"), ("ok", "no newline"), ("ok", "t\x07\n")],
)
def test_sign_refuses_invalid_input(name: str, body: str) -> None:
    with pytest.raises(MalformedNoteError):
        sign_note(body, name, Ed25519PrivateKey.generate())


# --- properties: the parsers are total -----------------------------------------------------------

_note_alphabet = st.sampled_from(
    ["\n", "\n\n", "— ", "—", " ", "+", "=", "a", "A", "/", "0", "\x00", "é"]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(_note_alphabet, max_size=60).map("".join)))
def test_parse_note_is_total(text: str) -> None:
    try:
        note = parse_note(text)
    except CheckpointError:
        return
    assert note.format() == text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_note_bytes_is_total(data: bytes) -> None:
    try:
        note = parse_note(data)
    except CheckpointError:
        return
    assert note.format().encode() == data


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_checkpoint_parser_is_total(text: str) -> None:
    try:
        cp = Checkpoint.from_body(text)
    except CheckpointError:
        return
    assert cp.body() == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_vkey_parser_is_total(text: str) -> None:
    try:
        verifier = Verifier.from_vkey(text)
    except CheckpointError:
        return
    assert verifier.vkey() == text.strip()


@settings(max_examples=100, deadline=None)
@given(
    st.text(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Zs", "Zl", "Zp", "Cs")),
        min_size=1,
        max_size=40,
    ).filter(lambda s: "+" not in s and not any(c.isspace() for c in s)),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
)
def test_checkpoint_round_trips(origin: str, size: int, root: bytes) -> None:
    cp = Checkpoint(origin=origin, size=size, root=root)
    assert Checkpoint.from_body(cp.body()) == cp


def test_verifier_key_whose_base64_contains_plus_parses() -> None:
    """Base64 may contain '+', the vkey field separator: only the first two '+' separate."""
    for _ in range(200):
        key = Ed25519PrivateKey.generate()
        verifier = Verifier.for_key("example.org/log", SignatureType.ED25519, key)
        text = verifier.vkey()
        if "+" in text.split("+", 2)[2]:
            break
    else:  # pragma: no cover - probability about 2**-200
        pytest.fail("no key with '+' in its base64 was generated")
    parsed = Verifier.from_vkey(text)
    assert parsed.key_id == verifier.key_id
    assert parsed.vkey() == text
