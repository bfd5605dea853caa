"""The evidence bundle format (``ruta-evidence/v3``): one zip an auditor verifies offline.

Layout::

    manifest.json                   what the bundle holds, every proof, and the SHA-256 of
                                    every other file
    manifest.sig                    signed note over SHA-256(manifest.json), signed by the
                                    exporting server's Ed25519 log key (key name = log origin)
    globalconf.bin                  the SignedGlobalConfiguration in force, exactly as signed
    log-key.vkey                    the log key's vkey text (also in the configuration)
    records/<seq>.leaf              the exact leaf bytes (serialised ruta.v1.LogRecord)
    bodies/<seq>.body               message bodies, where retention and mode permit
    checkpoints/<size>.note         signed checkpoints with the witness's cosignature line
    certificates/<sha256>.der       signing certificates and chains the records name
    ocsp/<sha256>.der               the OCSP responses stapled to those signatures
    signatures/<sha256>.pb          the shared parts of batch signatures the records name

Format 2 (``ruta-evidence/v2``) differs from format 1 in one point: a leaf written since then
names its signer's certificates and OCSP response by SHA-256 (``LogRecord.signature_ref``,
:mod:`ruta.evidence.attachments`) and the bundle carries each distinct one once, under
``certificates/`` and ``ocsp/``; the verifier checks them against the digests. Leaves written
before keep them inline (``LogRecord.signature``) and stay valid in a v2 bundle. A v1 bundle
(only inline leaves) still verifies.

Format 3 (``ruta-evidence/v3``) adds one more: a leaf of a message signed in a large batch
names the part of the signature its batch shares (algorithm, value, attachment digests: a
``LoggedSignature`` without batch path) by SHA-256 (``LoggedSignature.shared_sha256``) and the
bundle carries each distinct one once under ``signatures/``. v2 and v1 bundles still verify.

The manifest lists inclusion proofs of every record against the newest cosigned checkpoint
(``tree``), the earliest cosigned checkpoint that contains each record (``witnessed_by``: its
cosignature's timestamp is the registry's word on when the record existed at the latest), and
consistency proofs between consecutive checkpoints. So every byte of the bundle is covered: the
manifest by its signature, every other file by a digest in the manifest.

This module writes bundles (:func:`write_bundle`) and reads them back with every bound checked
(:func:`open_bundle`); :mod:`ruta.evidence.verify` decides whether what they say holds.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import importlib.resources
import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Final, NamedTuple

import jsonschema
import jsonschema.exceptions
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ruta.checkpoint import MAX_NOTE_SIZE, sign_note
from ruta.evidence.attachments import MAX_SHARED_SIGNATURE_BYTES
from ruta.evidence.rules import Rule
from ruta.faults import Fault, RutaError
from ruta.pki.certs import MAX_CERTIFICATE_BYTES
from ruta.pki.ocsp import MAX_OCSP_RESPONSE_BYTES

__all__ = [
    "ALLOWED_COMPRESSION",
    "BODY_STATES",
    "FORMAT",
    "FORMATS",
    "FORMAT_V1",
    "FORMAT_V2",
    "GLOBALCONF_FILE",
    "LOG_KEY_FILE",
    "MANIFEST_FILE",
    "MANIFEST_SIGNATURE_FILE",
    "MAX_BODY_FILE_BYTES",
    "MAX_BUNDLE_BYTES",
    "MAX_BUNDLE_FILES",
    "MAX_BUNDLE_RECORDS",
    "MAX_FILE_BYTES",
    "MAX_GLOBALCONF_BYTES",
    "MAX_KEY_FILE_BYTES",
    "MAX_LEAF_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_MANIFEST_DEPTH",
    "MAX_UNPACKED_BYTES",
    "BundleArchive",
    "BundleCheckpoint",
    "BundleConsistency",
    "BundleContents",
    "BundleError",
    "BundleRecord",
    "body_path",
    "checkpoint_path",
    "decode_hashes",
    "manifest_note_text",
    "manifest_schema",
    "member_limit",
    "open_bundle",
    "parse_manifest",
    "record_path",
    "sha256_hex",
    "write_bundle",
]

#: The format this module writes.
FORMAT: Final = "ruta-evidence/v3"
#: The first format: every leaf carries its certificates and OCSP response inline.
FORMAT_V1: Final = "ruta-evidence/v1"
#: The second format: leaves name certificates and OCSP responses by digest, never a shared
#: signature.
FORMAT_V2: Final = "ruta-evidence/v2"
#: The formats a bundle may declare (what :func:`parse_manifest` accepts).
FORMATS: Final = frozenset({FORMAT_V1, FORMAT_V2, FORMAT})
MANIFEST_FILE: Final = "manifest.json"
MANIFEST_SIGNATURE_FILE: Final = "manifest.sig"
GLOBALCONF_FILE: Final = "globalconf.bin"
LOG_KEY_FILE: Final = "log-key.vkey"

#: Most records one bundle holds (export in several bundles beyond this).
MAX_BUNDLE_RECORDS: Final = 10_000
#: Most files in one bundle (records, bodies, checkpoints, certificates, OCSP, shared
#: signatures, fixed files).
MAX_BUNDLE_FILES: Final = 5 * MAX_BUNDLE_RECORDS + 64
#: Largest bundle read (zip file size).
MAX_BUNDLE_BYTES: Final = 1 << 30
#: Largest file of a kind without a bound of its own (never one a valid bundle holds).
MAX_FILE_BYTES: Final = 64 << 20
#: Largest manifest read (10,000 records with their proofs take a few MiB).
MAX_MANIFEST_BYTES: Final = 64 << 20
#: Deepest nesting of arrays and objects in a manifest (a valid one nests 4 levels).
MAX_MANIFEST_DEPTH: Final = 8
#: Largest ``globalconf.bin``.
MAX_GLOBALCONF_BYTES: Final = 64 << 20
#: Largest ``log-key.vkey`` (a vkey line is under 400 bytes).
MAX_KEY_FILE_BYTES: Final = 1024
#: Largest leaf file: a serialised LogRecord (header, signature with certificates and stapled
#: OCSP response, batch path) is a few KiB.
MAX_LEAF_BYTES: Final = 1 << 20
#: Largest body file (the largest message a security server may be configured to carry).
MAX_BODY_FILE_BYTES: Final = 64 << 20
#: Most bytes a bundle's files hold together, unpacked, as the zip directory declares them;
#: each file is also bounded by its kind (above), and zipfile never unpacks more than a member
#: declares. Bodies and other files are hashed as streams, so memory stays far below this.
MAX_UNPACKED_BYTES: Final = MAX_BUNDLE_BYTES
#: Compression methods a member may use: stored or deflated (what the exporter writes). Others
#: (bzip2, LZMA) are refused unread: zipfile inflates them without an output bound per call.
ALLOWED_COMPRESSION: Final = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_SCHEMA_FILE: Final = "manifest.schema.json"

#: What a record's ``body_state`` may say: the body is in the bundle (``stored``), was removed on
#: retention (``purged``), never kept (``absent``, metadata-only mode), left out of this export
#: (``withheld``), or stored but failed to decrypt on export (``unreadable``: a failure).
BODY_STATES: Final = frozenset({"stored", "purged", "absent", "withheld", "unreadable"})


class BundleError(RutaError):
    """A bundle cannot be written or read: malformed, over a bound, or not this format.

    ``rule`` names the rule of the specification the bundle breaks (docs/evidence-format.md).
    """

    default_fault = Fault.CLIENT_INVALID_PROOF

    def __init__(
        self, message: str, *, rule: Rule = Rule.MANIFEST_SCHEMA, fault: Fault | None = None
    ) -> None:
        super().__init__(message, fault=fault)
        self.rule = rule


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def record_path(seq: int) -> str:
    """Path of record ``seq``'s leaf file."""
    return f"records/{seq:020d}.leaf"


def body_path(seq: int) -> str:
    """Path of record ``seq``'s body file."""
    return f"bodies/{seq:020d}.body"


def checkpoint_path(size: int) -> str:
    """Path of the checkpoint of tree size ``size``."""
    return f"checkpoints/{size:020d}.note"


def manifest_note_text(origin: str, manifest: bytes, bundle_format: str = FORMAT) -> str:
    """The signed-note text of a manifest: format line, origin, base64 SHA-256 of the manifest."""
    digest = _b64(hashlib.sha256(manifest).digest())
    return f"{bundle_format}\n{origin}\n{digest}\n"


@dataclass(frozen=True, slots=True)
class BundleRecord:
    """One record as exported: exact leaf bytes, body if permitted, its inclusion proof in the
    bundle's tree and the size of the first cosigned checkpoint holding it."""

    seq: int
    leaf: bytes = field(repr=False)
    body: bytes | None = field(repr=False)
    body_state: str
    inclusion_proof: tuple[bytes, ...]
    witnessed_by: int


@dataclass(frozen=True, slots=True)
class BundleCheckpoint:
    """A signed checkpoint note including the witness's cosignature line(s)."""

    size: int
    note: str


@dataclass(frozen=True, slots=True)
class BundleConsistency:
    """A consistency proof between two checkpoints of the bundle."""

    size1: int
    size2: int
    proof: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class BundleContents:
    """Everything an exporter puts in a bundle (the manifest is derived from it).

    ``complete_range`` ``(start, until)`` claims that every record with
    ``start <= seq < until`` is included (half-open: ``until`` itself is not). It is set only
    when the export had no filter other than a sequence range; the verifier then names any
    missing record. ``tree_size`` is the size of the newest cosigned checkpoint,
    against which the inclusion proofs run.
    """

    server: str
    origin: str
    exported_at: datetime
    query: Mapping[str, Any]
    tree_size: int
    checkpoints: tuple[BundleCheckpoint, ...]
    consistency: tuple[BundleConsistency, ...]
    records: tuple[BundleRecord, ...]
    globalconf: bytes = field(repr=False)
    log_vkey: str
    certificates: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    ocsp_responses: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    #: Shared parts of batch signatures (serialised ``LoggedSignature``), by hex SHA-256.
    shared_signatures: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    complete_range: tuple[int, int] | None = None


def _files_of(contents: BundleContents) -> dict[str, bytes]:
    files: dict[str, bytes] = {
        GLOBALCONF_FILE: contents.globalconf,
        LOG_KEY_FILE: (contents.log_vkey + "\n").encode("utf-8"),
    }
    for record in contents.records:
        files[record_path(record.seq)] = record.leaf
        if record.body is not None:
            files[body_path(record.seq)] = record.body
    for checkpoint in contents.checkpoints:
        files[checkpoint_path(checkpoint.size)] = checkpoint.note.encode("utf-8")
    for digest, der in sorted(contents.certificates.items()):
        files[f"certificates/{digest}.der"] = der
    for digest, der in sorted(contents.ocsp_responses.items()):
        files[f"ocsp/{digest}.der"] = der
    for digest, data in sorted(contents.shared_signatures.items()):
        files[f"signatures/{digest}.pb"] = data
    return files


def _manifest(contents: BundleContents, files: Mapping[str, bytes]) -> dict[str, Any]:
    start_end = contents.complete_range
    return {
        "format": FORMAT,
        "server": contents.server,
        "origin": contents.origin,
        "exported_at": contents.exported_at.astimezone(UTC).isoformat(),
        "query": dict(contents.query),
        "complete_range": (
            None if start_end is None else {"from": start_end[0], "until": start_end[1]}
        ),
        "tree": {"size": contents.tree_size, "checkpoint": checkpoint_path(contents.tree_size)},
        "globalconf": GLOBALCONF_FILE,
        "log_key": LOG_KEY_FILE,
        "checkpoints": [
            {"size": c.size, "file": checkpoint_path(c.size)} for c in contents.checkpoints
        ],
        "consistency": [
            {"from": c.size1, "to": c.size2, "proof": [_b64(h) for h in c.proof]}
            for c in contents.consistency
        ],
        "records": [
            {
                "seq": r.seq,
                "leaf": record_path(r.seq),
                "body": body_path(r.seq) if r.body is not None else None,
                "body_state": r.body_state,
                "inclusion": [_b64(h) for h in r.inclusion_proof],
                "witnessed_by": r.witnessed_by,
            }
            for r in contents.records
        ],
        "files": {name: sha256_hex(data) for name, data in sorted(files.items())},
    }


def write_bundle(contents: BundleContents, key: Ed25519PrivateKey, out: IO[bytes]) -> None:
    """Write ``contents`` as a bundle zip to ``out``, the manifest signed with ``key`` (the
    exporting server's log key, named by ``contents.origin``).

    Raises :class:`BundleError` for more than :data:`MAX_BUNDLE_RECORDS` records or a body state
    outside :data:`BODY_STATES`.
    """
    if len(contents.records) > MAX_BUNDLE_RECORDS:
        raise BundleError(f"a bundle holds at most {MAX_BUNDLE_RECORDS} records")
    for record in contents.records:
        if record.body_state not in BODY_STATES:
            raise BundleError(f"record {record.seq} has an unknown body state")
    files = _files_of(contents)
    # One line, by the C encoder (an indented manifest is encoded in pure Python: a second for
    # 10,000 records); pretty-print it to read it.
    manifest = json.dumps(_manifest(contents, files), sort_keys=True).encode("utf-8")
    signature = sign_note(manifest_note_text(contents.origin, manifest), contents.origin, key)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST_FILE, manifest)
        archive.writestr(MANIFEST_SIGNATURE_FILE, signature.encode("utf-8"))
        for name, data in files.items():
            archive.writestr(name, data, compress_type=_compression_of(name))


#: Members stored as they are: one per record (leaves, bodies) or DER. A deflate stream per
#: small member cost more than the rest of an export together (bench/README.md), for little:
#: bodies are often compressed or encrypted already, leaves are a few hundred bytes.
_STORED_PREFIXES: Final = ("records/", "bodies/", "certificates/", "ocsp/", "signatures/")


def _compression_of(name: str) -> int:
    return zipfile.ZIP_STORED if name.startswith(_STORED_PREFIXES) else zipfile.ZIP_DEFLATED


class _MemberKind(NamedTuple):
    pattern: re.Pattern[str]
    limit: int


#: Each file a bundle may hold, by name, and the most bytes it may unpack to.
_MEMBER_KINDS: Final = (
    _MemberKind(re.compile(re.escape(MANIFEST_FILE)), MAX_MANIFEST_BYTES),
    _MemberKind(re.compile(re.escape(MANIFEST_SIGNATURE_FILE)), MAX_NOTE_SIZE),
    _MemberKind(re.compile(re.escape(GLOBALCONF_FILE)), MAX_GLOBALCONF_BYTES),
    _MemberKind(re.compile(re.escape(LOG_KEY_FILE)), MAX_KEY_FILE_BYTES),
    _MemberKind(re.compile(r"records/[0-9]{20}\.leaf"), MAX_LEAF_BYTES),
    _MemberKind(re.compile(r"bodies/[0-9]{20}\.body"), MAX_BODY_FILE_BYTES),
    _MemberKind(re.compile(r"checkpoints/[0-9]{20}\.note"), MAX_NOTE_SIZE),
    _MemberKind(re.compile(r"certificates/[0-9a-f]{64}\.der"), MAX_CERTIFICATE_BYTES),
    _MemberKind(re.compile(r"ocsp/[0-9a-f]{64}\.der"), MAX_OCSP_RESPONSE_BYTES),
    _MemberKind(re.compile(r"signatures/[0-9a-f]{64}\.pb"), MAX_SHARED_SIGNATURE_BYTES),
)
#: A member name a bundle may carry at all: relative, ``/``-separated, plain characters, no
#: ``.`` or ``..`` segment (nothing an unzip tool could place outside its target directory).
_SAFE_NAME: Final = re.compile(r"(?!.*(?:^|/)\.{1,2}(?:/|$))[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
#: Bytes read from a member at a time while it is hashed as a stream.
_READ_CHUNK: Final = 64 * 1024


def member_limit(name: str) -> int | None:
    """The most bytes the bundle file ``name`` may unpack to; ``None`` for a name that is no
    file of the layout (such a file is never listed by a valid manifest)."""
    for kind in _MEMBER_KINDS:
        if kind.pattern.fullmatch(name):
            return kind.limit
    return None


class BundleArchive:
    """An opened bundle: its zip directory checked against every bound, its manifest read and
    parsed strictly; every other file is unpacked only on demand (:meth:`read`,
    :meth:`sha256`), each within its own bound. Nothing is verified yet.

    Obtained from :func:`open_bundle`; valid until that context ends.
    """

    def __init__(
        self,
        *,
        archive: zipfile.ZipFile,
        members: Mapping[str, zipfile.ZipInfo],
        manifest_bytes: bytes,
        manifest: Mapping[str, Any],
        signature: str,
    ) -> None:
        self._archive = archive
        self._members = dict(members)
        self.manifest_bytes = manifest_bytes
        self.manifest = manifest
        self.signature = signature

    @property
    def names(self) -> frozenset[str]:
        """Every file of the bundle except ``manifest.json`` and ``manifest.sig``."""
        return frozenset(self._members)

    def read(self, name: str) -> bytes:
        """The unpacked bytes of file ``name`` (a file the caller checked is in :attr:`names`).

        Raises :class:`BundleError` when the member does not unpack (corrupt data, CRC or size
        mismatch) or would exceed its bound; nothing beyond the bound is ever unpacked.
        """
        return b"".join(self._chunks(name))

    def sha256(self, name: str) -> bytes:
        """SHA-256 of file ``name``, hashed as a stream (memory stays one chunk); raises as
        :meth:`read` does."""
        digest = hashlib.sha256()
        for chunk in self._chunks(name):
            digest.update(chunk)
        return digest.digest()

    def _chunks(self, name: str) -> Iterator[bytes]:
        info = self._members[name]
        yield from _member_chunks(self._archive, info, member_limit(name) or MAX_FILE_BYTES)


def _corrupt(name: str) -> BundleError:
    return BundleError(
        f"{name!r} cannot be unpacked (corrupt compressed data, or its size or CRC is not the "
        "one the zip directory declares)",
        rule=Rule.BUNDLE_CORRUPT_MEMBER,
    )


def _member_chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> Iterator[bytes]:
    """The member's bytes in chunks; never more than ``limit`` (nor than its declared size:
    zipfile stops there and checks the CRC at the end)."""
    total = 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(_READ_CHUNK):
                total += len(chunk)
                if total > limit:
                    raise BundleError(
                        f"{info.filename!r} is larger than {limit} bytes",
                        rule=Rule.BUNDLE_MEMBER_TOO_LARGE,
                    )
                yield chunk
    except (
        zipfile.BadZipFile,
        zlib.error,
        OSError,
        EOFError,
        ValueError,
        NotImplementedError,
        RuntimeError,
    ):
        raise _corrupt(info.filename) from None


@contextmanager
def open_bundle(source: str | bytes | IO[bytes]) -> Iterator[BundleArchive]:
    """Open a bundle zip (a path, its bytes or a binary file) and check its container.

    Checked before any file but the manifest is unpacked, in this order: the zip is at most
    :data:`MAX_BUNDLE_BYTES` and parses; at most :data:`MAX_BUNDLE_FILES` entries; every name is
    safe (relative, no ``..``), no name twice, no directory entries; every member is stored or
    deflated (:data:`ALLOWED_COMPRESSION`) and not encrypted; each declares at most the bound of
    its kind and all together at most :data:`MAX_UNPACKED_BYTES`. Then ``manifest.json`` and
    ``manifest.sig`` are read and the manifest parsed strictly (:func:`parse_manifest`).

    Raises :class:`BundleError` naming the broken rule; nothing stays open then.
    """
    try:
        with contextlib.ExitStack() as stack:
            if isinstance(source, bytes):
                stream: IO[bytes] = io.BytesIO(source)
            elif isinstance(source, str):
                stream = stack.enter_context(open(source, "rb"))
            else:
                stream = source
            stream.seek(0, io.SEEK_END)
            if stream.tell() > MAX_BUNDLE_BYTES:
                raise BundleError(
                    f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes",
                    rule=Rule.BUNDLE_TOO_LARGE,
                )
            stream.seek(0)
            try:
                archive = stack.enter_context(zipfile.ZipFile(stream))
            except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError):
                raise BundleError(
                    "the bundle is not a zip file", rule=Rule.BUNDLE_NOT_ZIP
                ) from None
            yield _open_archive(archive)
    except OSError as exc:
        raise BundleError(
            f"the bundle cannot be read ({exc.strerror or 'I/O error'})",
            rule=Rule.BUNDLE_UNREADABLE,
        ) from None


def _check_directory(infos: Sequence[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    if len(infos) > MAX_BUNDLE_FILES:
        raise BundleError(
            f"the bundle holds more than {MAX_BUNDLE_FILES} files", rule=Rule.BUNDLE_TOO_MANY_FILES
        )
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        if not _SAFE_NAME.fullmatch(name):
            raise BundleError(
                f"the bundle holds a file with an unsafe or unexpected name ({name[:100]!r})",
                rule=Rule.BUNDLE_UNSAFE_NAME,
            )
        if name in members:
            raise BundleError(
                f"the bundle holds {name!r} twice (duplicate zip entries)",
                rule=Rule.BUNDLE_DUPLICATE_ENTRY,
            )
        if info.compress_type not in ALLOWED_COMPRESSION or info.flag_bits & 0x1:
            raise BundleError(
                f"{name!r} is encrypted or compressed with a method other than stored or deflated",
                rule=Rule.BUNDLE_COMPRESSION,
            )
        limit = member_limit(name) or MAX_FILE_BYTES
        if info.file_size > limit:
            raise BundleError(
                f"{name!r} declares {info.file_size} bytes unpacked; at most {limit} are allowed",
                rule=Rule.BUNDLE_MEMBER_TOO_LARGE,
            )
        total += info.file_size
        members[name] = info
    if total > MAX_UNPACKED_BYTES:
        raise BundleError(
            f"the bundle unpacks to more than {MAX_UNPACKED_BYTES} bytes",
            rule=Rule.BUNDLE_UNPACKED_TOO_LARGE,
        )
    return members


def _open_archive(archive: zipfile.ZipFile) -> BundleArchive:
    members = _check_directory(archive.infolist())
    manifest_info = members.pop(MANIFEST_FILE, None)
    signature_info = members.pop(MANIFEST_SIGNATURE_FILE, None)
    if manifest_info is None or signature_info is None:
        raise BundleError(
            "the bundle has no manifest or no manifest signature", rule=Rule.BUNDLE_NO_MANIFEST
        )
    manifest_bytes = b"".join(_member_chunks(archive, manifest_info, MAX_MANIFEST_BYTES))
    signature = b"".join(_member_chunks(archive, signature_info, MAX_NOTE_SIZE))
    manifest = parse_manifest(manifest_bytes)
    try:
        signature_text = signature.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(
            "the manifest signature is not UTF-8 text", rule=Rule.MANIFEST_SIGNATURE
        ) from None
    return BundleArchive(
        archive=archive,
        members=members,
        manifest_bytes=manifest_bytes,
        manifest=manifest,
        signature=signature_text,
    )


_JSON_STRING: Final = re.compile(rb'"(?:[^"\\]+|\\.)*"')
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


def _within_depth(data: bytes, depth: int) -> bool:
    """Whether the JSON text nests at most ``depth`` arrays and objects (checked on the text,
    before any parser recurses into it). Unbalanced text answers ``False`` too."""
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(depth):
        if not brackets:
            return True
        shorter = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if shorter == brackets:
            return False
        brackets = shorter
    return not brackets


def _balanced(data: bytes) -> bool:
    """Whether the JSON text opens as many arrays and objects as it closes."""
    brackets = _JSON_STRING.sub(b"", data)
    return brackets.count(b"[") == brackets.count(b"]") and brackets.count(b"{") == brackets.count(
        b"}"
    )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BundleError(
                f"the manifest gives the key {key[:64]!r} twice in one object",
                rule=Rule.MANIFEST_DUPLICATE_KEY,
            )
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_manifest(data: bytes) -> dict[str, Any]:
    """Parse manifest bytes strictly: UTF-8 JSON (RFC 8259: no ``NaN``/``Infinity``), an object,
    at most :data:`MAX_MANIFEST_DEPTH` levels deep, no key twice in one object, ``format`` one
    of :data:`FORMATS`, and valid against :func:`manifest_schema`.

    Raises :class:`BundleError` naming the broken rule.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError("the manifest is not UTF-8", rule=Rule.MANIFEST_NOT_JSON) from None
    if not _within_depth(data, MAX_MANIFEST_DEPTH):
        if not _balanced(data):
            raise BundleError("the manifest is not JSON", rule=Rule.MANIFEST_NOT_JSON)
        raise BundleError(
            f"the manifest is not JSON of at most {MAX_MANIFEST_DEPTH} nested levels",
            rule=Rule.MANIFEST_TOO_DEEP,
        )
    try:
        manifest = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant
        )
    except (ValueError, RecursionError):
        raise BundleError("the manifest is not JSON", rule=Rule.MANIFEST_NOT_JSON) from None
    if not isinstance(manifest, dict) or manifest.get("format") not in FORMATS:
        raise BundleError(
            f"the manifest is not a {FORMAT} (or {FORMAT_V2}, {FORMAT_V1}) manifest",
            rule=Rule.MANIFEST_FORMAT,
        )
    error = jsonschema.exceptions.best_match(_manifest_validator().iter_errors(manifest))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path)[:200] or "the top level"
        raise BundleError(
            f"the manifest does not follow its JSON Schema at {where}: {error.message[:300]}",
            rule=Rule.MANIFEST_SCHEMA,
        )
    return manifest


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of ``manifest.json`` (``ruta/evidence/manifest.schema.json``), which
    :func:`parse_manifest` enforces."""
    text = importlib.resources.files("ruta.evidence").joinpath(_SCHEMA_FILE).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _manifest_validator() -> jsonschema.protocols.Validator:
    schema = manifest_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def decode_hashes(values: Sequence[Any], what: str) -> tuple[bytes, ...]:
    """Base64 hashes from a manifest list; raises :class:`BundleError` when malformed."""
    if not isinstance(values, list) or len(values) > 64:
        raise BundleError(f"{what} is not a list of at most 64 hashes")
    out = []
    for value in values:
        try:
            raw = base64.b64decode(str(value).encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            raise BundleError(f"{what} holds a value that is not base64") from None
        if len(raw) != 32:
            raise BundleError(f"{what} holds a hash that is not 32 bytes")
        out.append(raw)
    return tuple(out)
