"""The evidence bundle format (``ruta-evidence/v1``): one zip an auditor verifies offline.

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
    certificates/<sha256>.der       signing certificates and chains the records carry
    ocsp/<sha256>.der               the OCSP responses stapled to those signatures

The manifest lists inclusion proofs of every record against the newest cosigned checkpoint
(``tree``), the earliest cosigned checkpoint that contains each record (``witnessed_by``: its
cosignature's timestamp is the registry's word on when the record existed at the latest), and
consistency proofs between consecutive checkpoints. So every byte of the bundle is covered: the
manifest by its signature, every other file by a digest in the manifest.

This module writes bundles (:func:`write_bundle`) and reads them back with every bound checked
(:func:`read_bundle`); :mod:`ruta.evidence.verify` decides whether what they say holds.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ruta.checkpoint import sign_note
from ruta.faults import Fault, RutaError

__all__ = [
    "BODY_STATES",
    "FORMAT",
    "GLOBALCONF_FILE",
    "LOG_KEY_FILE",
    "MANIFEST_FILE",
    "MANIFEST_SIGNATURE_FILE",
    "MAX_BUNDLE_BYTES",
    "MAX_BUNDLE_FILES",
    "MAX_BUNDLE_RECORDS",
    "MAX_FILE_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_UNPACKED_BYTES",
    "BundleCheckpoint",
    "BundleConsistency",
    "BundleContents",
    "BundleError",
    "BundleRecord",
    "ReadBundle",
    "body_path",
    "checkpoint_path",
    "decode_hashes",
    "manifest_note_text",
    "read_bundle",
    "record_path",
    "sha256_hex",
    "write_bundle",
]

FORMAT: Final = "ruta-evidence/v1"
MANIFEST_FILE: Final = "manifest.json"
MANIFEST_SIGNATURE_FILE: Final = "manifest.sig"
GLOBALCONF_FILE: Final = "globalconf.bin"
LOG_KEY_FILE: Final = "log-key.vkey"

#: Most records one bundle holds (export in several bundles beyond this).
MAX_BUNDLE_RECORDS: Final = 10_000
#: Most files in one bundle (records, bodies, checkpoints, certificates, OCSP, fixed files).
MAX_BUNDLE_FILES: Final = 4 * MAX_BUNDLE_RECORDS + 64
#: Largest bundle read (zip file size).
MAX_BUNDLE_BYTES: Final = 1 << 30
#: Largest single file inside a bundle (uncompressed); a body is bounded far lower on the bus.
MAX_FILE_BYTES: Final = 64 << 20
#: Largest manifest read.
MAX_MANIFEST_BYTES: Final = 64 << 20
#: Most bytes a bundle's files hold together, uncompressed (a zip of a few MiB can otherwise
#: unpack to far more than memory holds; an export carries at most 256 MiB of bodies).
MAX_UNPACKED_BYTES: Final = MAX_BUNDLE_BYTES

#: What a record's ``body_state`` may say: the body is in the bundle (``stored``), was removed on
#: retention (``purged``), never kept (``absent``, metadata-only mode), left out of this export
#: (``withheld``), or stored but failed to decrypt on export (``unreadable``: a failure).
BODY_STATES: Final = frozenset({"stored", "purged", "absent", "withheld", "unreadable"})


class BundleError(RutaError):
    """A bundle cannot be written or read: malformed, over a bound, or not this format."""

    default_fault = Fault.CLIENT_INVALID_PROOF


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


def manifest_note_text(origin: str, manifest: bytes) -> str:
    """The signed-note text of a manifest: format line, origin, base64 SHA-256 of the manifest."""
    digest = _b64(hashlib.sha256(manifest).digest())
    return f"{FORMAT}\n{origin}\n{digest}\n"


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

    ``complete_range`` ``(start, end)`` claims that every record with ``start <= seq < end`` is
    included (set only when the export had no filter other than a sequence range); the verifier
    then names any missing record. ``tree_size`` is the size of the newest cosigned checkpoint,
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
    return files


def _manifest(contents: BundleContents, files: Mapping[str, bytes]) -> dict[str, Any]:
    start_end = contents.complete_range
    return {
        "format": FORMAT,
        "server": contents.server,
        "origin": contents.origin,
        "exported_at": contents.exported_at.astimezone(UTC).isoformat(),
        "query": dict(contents.query),
        "complete_range": None if start_end is None else {"from": start_end[0], "to": start_end[1]},
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
    manifest = json.dumps(_manifest(contents, files), indent=1, sort_keys=True).encode("utf-8")
    signature = sign_note(manifest_note_text(contents.origin, manifest), contents.origin, key)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST_FILE, manifest)
        archive.writestr(MANIFEST_SIGNATURE_FILE, signature.encode("utf-8"))
        for name, data in files.items():
            archive.writestr(name, data)


@dataclass(frozen=True, slots=True)
class ReadBundle:
    """A bundle's raw parts, read within every bound; nothing is verified yet."""

    manifest_bytes: bytes = field(repr=False)
    manifest: Mapping[str, Any]
    signature: str
    files: Mapping[str, bytes] = field(repr=False)


def read_bundle(source: str | bytes | IO[bytes]) -> ReadBundle:
    """Read a bundle zip (a path, its bytes or a binary file) within every bound.

    Raises :class:`BundleError` for something that is not a zip, larger than
    :data:`MAX_BUNDLE_BYTES`, more than :data:`MAX_BUNDLE_FILES` entries, a file over
    :data:`MAX_FILE_BYTES`, more than :data:`MAX_UNPACKED_BYTES` in all, duplicate names, or
    a missing or unparsable manifest.
    """
    try:
        if isinstance(source, bytes):
            if len(source) > MAX_BUNDLE_BYTES:
                raise BundleError(f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
            stream: IO[bytes] = io.BytesIO(source)
        elif isinstance(source, str):
            stream = open(source, "rb")  # noqa: SIM115 - closed below
        else:
            stream = source
        try:
            stream.seek(0, io.SEEK_END)
            if stream.tell() > MAX_BUNDLE_BYTES:
                raise BundleError(f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
            stream.seek(0)
            return _read_zip(stream)
        finally:
            if isinstance(source, str):
                stream.close()
    except OSError as exc:
        raise BundleError(f"the bundle cannot be read ({exc.strerror or 'I/O error'})") from None


def _read_zip(stream: IO[bytes]) -> ReadBundle:
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, ValueError):
        raise BundleError("the bundle is not a zip file") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_BUNDLE_FILES:
            raise BundleError(f"the bundle holds more than {MAX_BUNDLE_FILES} files")
        # zipfile never yields more than a member's declared size, so the declared total bounds
        # what is unpacked below.
        if sum(info.file_size for info in infos) > MAX_UNPACKED_BYTES:
            raise BundleError(f"the bundle unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        files: dict[str, bytes] = {}
        for info in infos:
            if info.is_dir():
                continue
            if info.filename in files:
                raise BundleError(f"the bundle holds {info.filename!r} twice")
            limit = MAX_MANIFEST_BYTES if info.filename == MANIFEST_FILE else MAX_FILE_BYTES
            if info.file_size > limit:
                raise BundleError(f"{info.filename!r} is larger than {limit} bytes")
            try:
                with archive.open(info) as member:
                    data = member.read(limit + 1)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError):
                raise BundleError(f"{info.filename!r} cannot be read from the zip") from None
            if len(data) > limit:
                raise BundleError(f"{info.filename!r} is larger than {limit} bytes")
            files[info.filename] = data
    manifest_bytes = files.pop(MANIFEST_FILE, None)
    signature = files.pop(MANIFEST_SIGNATURE_FILE, None)
    if manifest_bytes is None or signature is None:
        raise BundleError("the bundle has no manifest or no manifest signature")
    try:
        manifest = json.loads(manifest_bytes)
        signature_text = signature.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise BundleError("the manifest is not JSON or its signature is not text") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"the manifest is not a {FORMAT} manifest")
    return ReadBundle(
        manifest_bytes=manifest_bytes, manifest=manifest, signature=signature_text, files=files
    )


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
