"""Checkpoints: C2SP ``tlog-checkpoint`` bodies in ``signed-note`` envelopes, and cosignatures.

A security server signs the head of its message log as a checkpoint note with its Ed25519 log key;
the registry's witness adds a timestamped cosignature (C2SP ``tlog-cosignature``, cosignature/v1).
Formats follow c2sp.org/signed-note, c2sp.org/tlog-checkpoint and c2sp.org/tlog-cosignature
exactly, so standard tooling reads what Ruta writes::

    example.org/ruta/log
    20852163
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

    — example.org/ruta/log Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGz...

Parsing is strict and total: any input either parses or raises :class:`CheckpointError` (a
:class:`MalformedNoteError` for bad syntax, :class:`UnverifiedNoteError` for signatures that do
not verify); every input is bounded before work is done on it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ruta.faults import Fault, RutaError
from ruta.merkle import HASH_SIZE, MAX_TREE_SIZE

__all__ = [
    "COSIGNATURE_HEADER",
    "MAX_EXTENSION_LINES",
    "MAX_KEY_NAME_LENGTH",
    "MAX_NOTE_SIGNATURES",
    "MAX_NOTE_SIZE",
    "MAX_ORIGIN_LENGTH",
    "MAX_TIMESTAMP",
    "MAX_VKEY_LENGTH",
    "Checkpoint",
    "CheckpointError",
    "MalformedNoteError",
    "Note",
    "NoteSignature",
    "SignatureType",
    "UnverifiedNoteError",
    "VerifiedNote",
    "Verifier",
    "cosign",
    "cosignature_message",
    "key_id",
    "open_checkpoint",
    "parse_note",
    "sign_note",
    "signature_for",
    "verify_cosignature",
    "verify_note",
]

#: Longest note accepted or produced (text plus signature lines), in bytes of UTF-8.
MAX_NOTE_SIZE: Final = 64 * 1024
#: Most signature lines read from one note (the spec requires accepting at least 16).
MAX_NOTE_SIGNATURES: Final = 100
#: Longest checkpoint origin line, in bytes (tlog-cosignature encodes it with a one-byte length).
MAX_ORIGIN_LENGTH: Final = 255
#: Longest key name, in bytes.
MAX_KEY_NAME_LENGTH: Final = 255
#: Longest verifier-key text read (name, key ID and base64 of 33 bytes).
MAX_VKEY_LENGTH: Final = MAX_KEY_NAME_LENGTH + 80
#: Most extension lines after the root hash in a checkpoint body.
MAX_EXTENSION_LINES: Final = 16
#: Largest cosignature timestamp (tlog-cosignature: it MUST NOT exceed 2**63 - 1).
MAX_TIMESTAMP: Final = 2**63 - 1
#: First line of the message a cosignature/v1 signs.
COSIGNATURE_HEADER: Final = "cosignature/v1\n"

_SIG_PREFIX: Final = "\u2014 "  # em dash, space
_KEY_ID_SIZE: Final = 4
_ED25519_SIG_SIZE: Final = 64
_ED25519_KEY_SIZE: Final = 32
_TIMESTAMP_SIZE: Final = 8
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}")


class SignatureType(enum.IntEnum):
    """Signature type identifier bytes of c2sp.org/signed-note that Ruta uses."""

    ED25519 = 0x01
    COSIGNATURE_V1 = 0x04


_KNOWN_TYPES: Final = frozenset(t.value for t in SignatureType)


class CheckpointError(RutaError):
    """Root of the errors this module raises.

    The default fault is the witness's; a security server or an auditor that meets a bad note
    re-raises with its own fault.
    """

    default_fault = Fault.SERVER_REGISTRY_INVALID_CHECKPOINT


class MalformedNoteError(CheckpointError):
    """A note, signature line, checkpoint body or verifier key does not follow its grammar."""


class UnverifiedNoteError(CheckpointError):
    """No signature from a trusted key verifies, or a trusted key's signature fails."""


# --- small parsers -------------------------------------------------------------------------------


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64: valid alphabet, padding, and canonical (re-encodes to ``text``)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise MalformedNoteError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise MalformedNoteError(f"{what} is not canonical base64")
    return raw


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _check_key_name(name: str) -> None:
    if not name:
        raise MalformedNoteError("key name is empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_KEY_NAME_LENGTH:
        raise MalformedNoteError(f"key name is longer than {MAX_KEY_NAME_LENGTH} bytes")
    if "+" in name or any(c.isspace() for c in name):
        raise MalformedNoteError("key name contains a space or '+'")
    _check_text(name, "key name")


def _check_text(text: str, what: str) -> None:
    """Valid UTF-8 (no lone surrogates) and no control character other than newline."""
    for ch in text:
        if (ch < " " and ch != "\n") or "\ud800" <= ch <= "\udfff":
            raise MalformedNoteError(f"{what} contains a control character or invalid UTF-8")


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, kind: SignatureType, public_key: Ed25519PublicKey) -> bytes:
    """``SHA-256(name || 0x0A || type || public key)[:4]``, the signed-note key ID."""
    data = name.encode("utf-8") + b"\n" + bytes([kind]) + _public_bytes(public_key)
    return hashlib.sha256(data).digest()[:_KEY_ID_SIZE]


# --- notes ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID, and the signature bytes after the ID."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line, ``— <name> <base64(key ID || signature)>`` plus newline."""
        return f"{_SIG_PREFIX}{self.name} {_b64(self.key_id + self.signature)}\n"

    @classmethod
    def parse_line(cls, line: str) -> Self:
        """Parse one signature line (without or with its final newline).

        Raises :class:`MalformedNoteError` for anything but ``— <name> <base64>``, a name with
        spaces or ``+``, or a signature shorter than a key ID plus one byte.
        """
        line = line.removesuffix("\n")
        if not line.startswith(_SIG_PREFIX):
            raise MalformedNoteError("signature line does not start with an em dash and a space")
        parts = line[len(_SIG_PREFIX) :].split(" ")
        if len(parts) != 2:
            raise MalformedNoteError("signature line is not '— <key name> <signature>'")
        name, encoded = parts
        _check_key_name(name)
        raw = _b64decode(encoded, "signature")
        if len(raw) <= _KEY_ID_SIZE:
            raise MalformedNoteError("signature is too short to hold a key ID and a signature")
        return cls(name=name, key_id=raw[:_KEY_ID_SIZE], signature=raw[_KEY_ID_SIZE:])


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed signed note: the signed text (ending in newline) and its signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def format(self) -> str:
        """The note as it travels: text, a blank line, the signature lines."""
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def _check_note_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNoteError("note text does not end in a newline")
    _check_text(text, "note")


def parse_note(data: str | bytes) -> Note:
    """Parse a signed note without verifying any signature.

    The text is separated from the signatures by the last blank line. Raises
    :class:`MalformedNoteError` for a note larger than :data:`MAX_NOTE_SIZE`, invalid UTF-8, a
    control character, no or more than :data:`MAX_NOTE_SIGNATURES` signature lines, or a malformed
    signature line.
    """
    if len(data) > MAX_NOTE_SIZE:
        raise MalformedNoteError(f"note is larger than {MAX_NOTE_SIZE} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedNoteError("note is not valid UTF-8") from None
    if len(data.encode("utf-8", "surrogatepass")) > MAX_NOTE_SIZE:
        raise MalformedNoteError(f"note is larger than {MAX_NOTE_SIZE} bytes")
    _check_text(data, "note")
    split = data.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("note has no blank line before its signatures")
    text, block = data[: split + 1], data[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNoteError("the last signature line does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_NOTE_SIGNATURES:
        raise MalformedNoteError(f"note has more than {MAX_NOTE_SIGNATURES} signatures")
    return Note(text=text, signatures=tuple(NoteSignature.parse_line(x) for x in lines))


def _sign_ed25519(text: str, name: str, key: Ed25519PrivateKey) -> NoteSignature:
    kid = key_id(name, SignatureType.ED25519, key.public_key())
    return NoteSignature(name=name, key_id=kid, signature=key.sign(text.encode("utf-8")))


def signature_for(text: str, name: str, key: Ed25519PrivateKey) -> NoteSignature:
    """The Ed25519 note signature (type 0x01) of ``name``'s ``key`` over note text ``text``.

    Raises :class:`MalformedNoteError` for an invalid name or text.
    """
    _check_key_name(name)
    _check_note_text(text)
    return _sign_ed25519(text, name, key)


def sign_note(body: str, name: str, key: Ed25519PrivateKey) -> str:
    """Sign note text ``body`` (ending in newline) with Ed25519; return the whole signed note.

    Raises :class:`MalformedNoteError` for an invalid name or body, or a result larger than
    :data:`MAX_NOTE_SIZE`.
    """
    note = Note(text=body, signatures=(signature_for(body, name, key),)).format()
    if len(note.encode("utf-8")) > MAX_NOTE_SIZE:
        raise MalformedNoteError(f"signed note would be larger than {MAX_NOTE_SIZE} bytes")
    return note


# --- verifiers -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verifier:
    """A trusted key: name, signature type and Ed25519 public key (key ID derived).

    Type 0x01 verifies plain note signatures (a log's checkpoint key); type 0x04 verifies
    cosignature/v1 lines (a witness key).
    """

    name: str
    kind: SignatureType
    public_key: Ed25519PublicKey

    def __post_init__(self) -> None:
        _check_key_name(self.name)

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID of this (name, type, key)."""
        return key_id(self.name, self.kind, self.public_key)

    def matches(self, signature: NoteSignature) -> bool:
        """Whether a signature line claims to be from this key (same name and key ID)."""
        return signature.name == self.name and signature.key_id == self.key_id

    def verify(self, text: str, signature: NoteSignature) -> int | None:
        """Verify ``signature`` over note ``text``; return the cosignature timestamp, if any.

        Returns ``None`` for a valid type-0x01 signature and the POSIX timestamp for a valid
        cosignature. Raises :class:`UnverifiedNoteError` if the signature does not verify.
        """
        if self.kind is SignatureType.ED25519:
            self._check(signature.signature, text.encode("utf-8"))
            return None
        raw = signature.signature
        if len(raw) != _TIMESTAMP_SIZE + _ED25519_SIG_SIZE:
            raise UnverifiedNoteError(f"cosignature from {self.name} has the wrong length")
        timestamp = int.from_bytes(raw[:_TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            raise UnverifiedNoteError(f"cosignature from {self.name} has an invalid timestamp")
        self._check(raw[_TIMESTAMP_SIZE:], cosignature_message(text, timestamp))
        return timestamp

    def _check(self, sig: bytes, message: bytes) -> None:
        try:
            self.public_key.verify(sig, message)
        except InvalidSignature:
            raise UnverifiedNoteError(f"signature from {self.name} does not verify") from None

    def vkey(self) -> str:
        """Verifier-key text: ``<name>+<hex key ID>+<base64(type || public key)>``."""
        material = bytes([self.kind]) + _public_bytes(self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{_b64(material)}"

    @classmethod
    def from_vkey(cls, text: str) -> Self:
        """Parse verifier-key text (as :meth:`vkey` writes it).

        Raises :class:`MalformedNoteError` for bad syntax, an unknown signature type, a key
        that is not 32 bytes, or a key ID that does not match the name and key.
        """
        if len(text) > MAX_VKEY_LENGTH:
            raise MalformedNoteError("verifier key is too long")
        # Key names never contain "+", but base64 may: split at the first two only (as Go's
        # note.NewVerifier does).
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise MalformedNoteError("verifier key is not '<name>+<key ID>+<key>'")
        name, hex_id, encoded = parts
        _check_key_name(name)
        if not _HEX_KEY_ID.fullmatch(hex_id):
            raise MalformedNoteError("verifier key ID is not 8 lowercase hex digits")
        raw = _b64decode(encoded, "verifier key")
        if len(raw) != 1 + _ED25519_KEY_SIZE or raw[0] not in _KNOWN_TYPES:
            raise MalformedNoteError("verifier key is not an Ed25519 key of a known type")
        verifier = cls(
            name=name,
            kind=SignatureType(raw[0]),
            public_key=Ed25519PublicKey.from_public_bytes(raw[1:]),
        )
        if verifier.key_id.hex() != hex_id:
            raise MalformedNoteError("verifier key ID does not match its name and key")
        return verifier

    @classmethod
    def for_key(cls, name: str, kind: SignatureType, key: Ed25519PrivateKey) -> Self:
        """The verifier of a private key (convenience for signers and tests)."""
        return cls(name=name, kind=kind, public_key=key.public_key())


@dataclass(frozen=True, slots=True)
class VerifiedNote:
    """A note with at least one verified signature.

    ``verified`` holds the verifiers whose signatures verified, each with its cosignature
    timestamp (``None`` for a plain signature).
    """

    note: Note
    verified: tuple[tuple[Verifier, int | None], ...]

    @property
    def text(self) -> str:
        """The signed note text."""
        return self.note.text


def verify_note(data: str | bytes, verifiers: Verifier | Iterable[Verifier]) -> VerifiedNote:
    """Parse a note and verify its signatures from trusted keys, per c2sp.org/signed-note.

    Lines from unknown keys (name or key ID differ from every verifier) are ignored. Raises
    :class:`MalformedNoteError` for a malformed note, and :class:`UnverifiedNoteError` when any
    line from a trusted key fails to verify, or when no line from a trusted key is present.
    """
    trusted = (verifiers,) if isinstance(verifiers, Verifier) else tuple(verifiers)
    note = parse_note(data)
    verified = [
        (verifier, verifier.verify(note.text, sig))
        for sig in note.signatures
        for verifier in trusted
        if verifier.matches(sig)
    ]
    if not verified:
        raise UnverifiedNoteError("the note carries no signature from a trusted key")
    return VerifiedNote(note=note, verified=tuple(verified))


# --- checkpoints ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: origin, size and root hash, plus optional extension lines.

    Construction validates every field; raises :class:`MalformedNoteError` otherwise.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise MalformedNoteError("checkpoint origin is empty or has a newline")
        if len(self.origin.encode("utf-8", "surrogatepass")) > MAX_ORIGIN_LENGTH:
            raise MalformedNoteError(f"checkpoint origin is longer than {MAX_ORIGIN_LENGTH} bytes")
        _check_text(self.origin, "checkpoint origin")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise MalformedNoteError("checkpoint tree size is out of range")
        if len(self.root) != HASH_SIZE:
            raise MalformedNoteError(f"checkpoint root hash is not {HASH_SIZE} bytes")
        if len(self.extensions) > MAX_EXTENSION_LINES:
            raise MalformedNoteError(f"checkpoint has more than {MAX_EXTENSION_LINES} extensions")
        for ext in self.extensions:
            if not ext or "\n" in ext:
                raise MalformedNoteError("checkpoint extension line is empty or has a newline")
            _check_text(ext, "checkpoint extension line")

    def body(self) -> str:
        """The note text: origin, size, base64 root, extension lines, each ending in newline."""
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_body(cls, text: str) -> Self:
        """Parse a checkpoint note text (as :meth:`body` writes it).

        Raises :class:`MalformedNoteError` for fewer than three lines, an empty line, a size with
        leading zeros or out of range, or a root hash that is not base64 of 32 bytes.
        """
        if len(text) > MAX_NOTE_SIZE:
            raise MalformedNoteError(f"checkpoint is larger than {MAX_NOTE_SIZE} bytes")
        if not text.endswith("\n"):
            raise MalformedNoteError("checkpoint text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedNoteError("checkpoint has fewer than three lines")
        if len(lines) > 3 + MAX_EXTENSION_LINES:
            raise MalformedNoteError(f"checkpoint has more than {MAX_EXTENSION_LINES} extensions")
        origin, size_text, root_text, *extensions = lines
        if not _DECIMAL.fullmatch(size_text):
            raise MalformedNoteError("checkpoint tree size is not a decimal without leading zeros")
        size = int(size_text)
        root = _b64decode(root_text, "checkpoint root hash")
        return cls(origin=origin, size=size, root=root, extensions=tuple(extensions))


def open_checkpoint(
    data: str | bytes, verifiers: Verifier | Iterable[Verifier]
) -> tuple[Checkpoint, VerifiedNote]:
    """Verify a signed checkpoint note and parse its body.

    Raises what :func:`verify_note` and :meth:`Checkpoint.from_body` raise.
    """
    verified = verify_note(data, verifiers)
    return Checkpoint.from_body(verified.text), verified


# --- cosignatures --------------------------------------------------------------------------------


def cosignature_message(body: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signs: header line, ``time <timestamp>`` line, checkpoint body."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{body}".encode()


def cosign(body: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> NoteSignature:
    """The cosignature/v1 of witness ``name`` over checkpoint text ``body`` at ``timestamp``.

    ``body`` is the note text of the checkpoint (no signature lines); ``timestamp`` is POSIX
    seconds. ``.line()`` of the result is the signature line to return. Raises
    :class:`MalformedNoteError` for an invalid name or body, or a timestamp outside
    ``0..2**63-1``.
    """
    _check_key_name(name)
    _check_note_text(body)
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise MalformedNoteError("cosignature timestamp is out of range")
    signature = key.sign(cosignature_message(body, timestamp))
    return NoteSignature(
        name=name,
        key_id=key_id(name, SignatureType.COSIGNATURE_V1, key.public_key()),
        signature=timestamp.to_bytes(_TIMESTAMP_SIZE, "big") + signature,
    )


def verify_cosignature(
    body: str, signatures: Sequence[NoteSignature] | str, verifier: Verifier
) -> int:
    """Verify the cosignature of ``verifier`` (type 0x04) over checkpoint text ``body``.

    ``signatures`` is parsed signature lines or the text of one or more lines (a witness
    response). Returns the timestamp of the cosignature. Raises :class:`MalformedNoteError` for
    malformed lines or a verifier of the wrong type, and :class:`UnverifiedNoteError` if no line
    from the verifier is present or one fails to verify.
    """
    if verifier.kind is not SignatureType.COSIGNATURE_V1:
        raise MalformedNoteError("a cosignature needs a cosignature/v1 (type 0x04) verifier")
    if isinstance(signatures, str):
        if len(signatures) > MAX_NOTE_SIZE:
            raise MalformedNoteError(f"cosignature lines are larger than {MAX_NOTE_SIZE} bytes")
        if not signatures.endswith("\n"):
            raise MalformedNoteError("the last signature line does not end in a newline")
        lines = signatures[:-1].split("\n")
        if len(lines) > MAX_NOTE_SIGNATURES:
            raise MalformedNoteError(f"more than {MAX_NOTE_SIGNATURES} signature lines")
        signatures = [NoteSignature.parse_line(line) for line in lines]
    _check_note_text(body)
    timestamps = [verifier.verify(body, s) for s in signatures if verifier.matches(s)]
    if not timestamps:
        raise UnverifiedNoteError(f"no cosignature from {verifier.name}")
    return max(t for t in timestamps if t is not None)
