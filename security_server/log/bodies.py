"""Sealing log bodies at rest: AES-256-GCM with associated data binding origin and sequence;
and, on SQLite, the body segment files that keep the large ones outside the database.

A sealed body opens only under the same origin and sequence number it was sealed for, so a body
moved to another record (or another node's tree) fails to open instead of passing as that
record's body, wherever it is stored (ADR 0040: a large body on SQLite lives in an append-only
segment file, synced before the row naming it commits).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from security_server.database import sqlite_file
from security_server.log.errors import LogKeyError
from security_server.log.keys import BodyKey

__all__ = [
    "DIRECT_ALIGNMENT",
    "FILE_BODY_MIN_BYTES",
    "FILE_GROUP_MIN_BODIES",
    "FILE_GROUP_MIN_BYTES",
    "MAX_FILE_BODY_BYTES",
    "MAX_SEGMENT_BYTES",
    "NONCE_SIZE",
    "SEGMENT_HEADER_SIZE",
    "SEGMENT_MAGIC",
    "TAG_SIZE",
    "BodyCipher",
    "BodySegmentWriter",
    "BodySegments",
    "SealedBody",
    "body_file_root",
]

#: AES-GCM nonce size in bytes (random per body).
NONCE_SIZE: Final = 12
#: AES-GCM tag size in bytes: a sealed body's ciphertext is this much longer than the body.
TAG_SIZE: Final = 16
_AAD_CONTEXT: Final = b"ruta log body v1\x00"


#: A record's sequence number in the associated data.
_SEQ: Final = struct.Struct(">Q")


def _associated_prefix(origin: str) -> bytes:
    origin_bytes = origin.encode("utf-8")
    return _AAD_CONTEXT + struct.pack(">H", len(origin_bytes)) + origin_bytes


def _associated_data(origin: str, seq: int) -> bytes:
    return _associated_prefix(origin) + _SEQ.pack(seq)


class SealedBody:
    """A body as stored: the key it was sealed with, the nonce and the ciphertext (with tag)."""

    __slots__ = ("ciphertext", "key_id", "nonce")

    def __init__(self, *, key_id: str, nonce: bytes, ciphertext: bytes) -> None:
        self.key_id = key_id
        self.nonce = nonce
        self.ciphertext = ciphertext


class BodyCipher:
    """Seals with the current key; opens with the current key or any older one it was given."""

    def __init__(self, current: BodyKey, *, previous: Sequence[BodyKey] = ()) -> None:
        self._current = current
        self._current_id = current.key_id
        self._sealer = AESGCM(current.key)
        self._openers = {k.key_id: AESGCM(k.key) for k in (*previous, current)}

    @property
    def key_id(self) -> str:
        """Public id of the key new bodies are sealed with."""
        return self._current_id

    def seal(self, origin: str, seq: int, body: bytes) -> SealedBody:
        """Encrypt ``body`` for record ``seq`` of ``origin`` under a fresh random nonce."""
        nonce = os.urandom(NONCE_SIZE)
        ciphertext = self._sealer.encrypt(nonce, body, _associated_data(origin, seq))
        return SealedBody(key_id=self._current_id, nonce=nonce, ciphertext=ciphertext)

    def seal_many(
        self, origin: str, bodies: Sequence[tuple[int, bytes]]
    ) -> list[tuple[int, bytes, bytes]]:
        """:meth:`seal` for each ``(seq, body)``, as ``(seq, nonce, ciphertext)`` all under
        :attr:`key_id` (no object per body: the log's writer seals a group's bodies at once):
        one read of the system's random source for every nonce of the group (each nonce still
        fresh and random, never reused)."""
        randomness = os.urandom(NONCE_SIZE * len(bodies))
        prefix = _associated_prefix(origin)
        encrypt = self._sealer.encrypt
        pack = _SEQ.pack
        sealed: list[tuple[int, bytes, bytes]] = []
        start = 0
        for seq, body in bodies:
            nonce = randomness[start : start + NONCE_SIZE]
            sealed.append((seq, nonce, encrypt(nonce, body, prefix + pack(seq))))
            start += NONCE_SIZE
        return sealed

    def open(self, origin: str, seq: int, sealed: SealedBody) -> bytes:
        """Decrypt a stored body. Raises :class:`LogKeyError` if its key is unknown or it does not
        authenticate for this origin and sequence (tampered, moved, or another key)."""
        opener = self._openers.get(sealed.key_id)
        if opener is None:
            raise LogKeyError(f"the body of record {seq} was sealed with an unknown key")
        try:
            return opener.decrypt(sealed.nonce, sealed.ciphertext, _associated_data(origin, seq))
        except InvalidTag:
            raise LogKeyError(f"the stored body of record {seq} does not authenticate") from None


# --- body segment files (SQLite) ---------------------------------------------------------------

#: On a SQLite file, a sealed body at least this long is kept in a body segment file beside the
#: database, its row naming where (ADR 0040): a body this size no longer fits on one 4 KiB page
#: and went through the write-ahead log and the checkpoint as overflow pages, twice each.
FILE_BODY_MIN_BYTES: Final = 4096
#: A group's large bodies go to the segment file only when it holds at least this many of them
#: (or :data:`FILE_GROUP_MIN_BYTES` of them together); fewer stay in their rows. The file's
#: sync is a second one in series with the commit's (and, as the file grows, a journal
#: commit): shared by a loaded group's bodies it costs less than their pages through the
#: write-ahead log and the checkpoint, but an exchange alone (one or two bodies) paid it in
#: full, about a millisecond on this machine's disk (bench/README.md, "Sixth round
#: (branch perf-bodyfile)").
FILE_GROUP_MIN_BODIES: Final = 4
#: A group's large bodies go to the segment file, however few, once they reach this many bytes.
FILE_GROUP_MIN_BYTES: Final = 1 << 20
#: A segment file takes no more bodies once it holds this many bytes (the next one is begun).
MAX_SEGMENT_BYTES: Final = 64 << 20
#: The first bytes of every segment file (its format); bodies follow, back to back within a
#: group, each group at a :data:`DIRECT_ALIGNMENT` boundary where it was written with direct I/O.
SEGMENT_MAGIC: Final = b"ruta-bodies/v1\n\x00"
#: Where a segment's first body starts without direct I/O (with it: :data:`DIRECT_ALIGNMENT`).
SEGMENT_HEADER_SIZE: Final = len(SEGMENT_MAGIC)
_SEGMENT_SUFFIX: Final = ".seg"
_SEGMENT_DIGITS: Final = 10
#: The longest sealed body a row may name in a segment (a message is at most 64 MiB, the
#: bound of ``[limits] max_message_bytes``, plus the tag): a longer reference is damage, read as
#: missing instead of allocated.
MAX_FILE_BODY_BYTES: Final = (64 << 20) + TAG_SIZE
#: Buffers handed to one ``pwritev`` (below Linux's IOV_MAX of 1024).
_MAX_IOV: Final = 512
#: A group's bodies are written with direct I/O where the file system takes it (docs/adr/0051):
#: from a buffer aligned to this, at a position aligned to it, this many bytes at a time (a
#: multiple of every logical block size in use: 512 B and 4 KiB). Each group's first body
#: starts at such a boundary; the bytes between one group's last body and the next boundary
#: are zeros no row names.
DIRECT_ALIGNMENT: Final = 4096
#: The aligned write buffer a writer keeps between groups (a larger group's is made for it and
#: dropped).
_KEPT_BUFFER_BYTES: Final = 4 << 20
#: Names tried when a new segment's name is taken (by a file this writer did not list).
_MAX_NAME_ATTEMPTS: Final = 16


def body_file_root(url: str | sa.URL) -> Path | None:
    """The directory of a SQLite file database's body segment files (``<file>-bodies``, beside
    its ``-wal``); ``None`` for PostgreSQL and in-memory SQLite, which keep bodies in the table."""
    database = sqlite_file(url)
    return None if database is None else Path(database + "-bodies")


def _origin_directory_name(origin: str) -> str:
    """A file name for ``origin`` (any text): readable, and unique by the origin's digest."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", origin)[:100]
    return f"{readable}-{hashlib.sha256(origin.encode('utf-8')).hexdigest()[:16]}"


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_directories(path: Path) -> None:
    """Create ``path`` and any missing parents (0700), each durably named in its parent."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        _fsync_directory(directory.parent)


class BodySegments:
    """One origin's body segment files: ``<root>/<origin name>/<segment>.seg``, each the
    :data:`SEGMENT_MAGIC` and then sealed bodies, back to back within a group (groups written
    with direct I/O start at 4 KiB boundaries, docs/adr/0051). A ``log_bodies`` row names its
    body's segment, position and length; bytes no committed row names (a group that failed
    after its bodies were written, the zeros before a boundary) are never read. Readers may use
    it from any thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def for_url(cls, url: str | sa.URL, origin: str) -> BodySegments | None:
        """``origin``'s segments beside the SQLite file of ``url``; ``None`` where bodies stay
        in the table (see :func:`body_file_root`)."""
        root = body_file_root(url)
        return None if root is None else cls(root / _origin_directory_name(origin))

    def path(self, segment: int) -> Path:
        """The file of ``segment``."""
        return self.directory / f"{segment:0{_SEGMENT_DIGITS}d}{_SEGMENT_SUFFIX}"

    def segment_ids(self) -> list[int]:
        """The segments on disk, ascending (none if the directory does not exist yet)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        ids = [
            int(name[: -len(_SEGMENT_SUFFIX)])
            for name in names
            if name.endswith(_SEGMENT_SUFFIX) and name[: -len(_SEGMENT_SUFFIX)].isdigit()
        ]
        return sorted(ids)

    def read_many(self, refs: Sequence[tuple[int, int, int]]) -> list[bytes | None]:
        """The stored bytes at each ``(segment, position, length)``, in the order given;
        ``None`` for one whose file is missing or too short, or a reference out of bounds
        (lost or damaged: the caller names the record). Each segment file is opened once."""
        found: list[bytes | None] = [None] * len(refs)
        by_segment: dict[int, list[int]] = {}
        for i, (segment, _, _) in enumerate(refs):
            by_segment.setdefault(segment, []).append(i)
        for segment, indexes in by_segment.items():
            try:
                fd = os.open(self.path(segment), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                for i in indexes:
                    _, position, length = refs[i]
                    if position < SEGMENT_HEADER_SIZE or not 0 <= length <= MAX_FILE_BODY_BYTES:
                        continue
                    data = os.pread(fd, length, position)
                    if len(data) == length:
                        found[i] = data
            finally:
                os.close(fd)
        return found

    def remove(self, segments: Sequence[int]) -> int:
        """Delete these segment files (absent ones are skipped); return how many went. The
        caller has checked that no committed row names them and that they are not the newest
        (which its writer may still be filling)."""
        removed = 0
        for segment in segments:
            with contextlib.suppress(FileNotFoundError):
                self.path(segment).unlink()
                removed += 1
        if removed:
            _fsync_directory(self.directory)
        return removed


class BodySegmentWriter:
    """Appends one origin's sealed bodies to its segment files, for its log's one writer
    thread. Each process begins a new segment of its own at its first write (a segment is
    never appended to by a later writer, so a torn tail left by a crash is never built on) and
    the next one when a segment is full."""

    def __init__(
        self,
        segments: BodySegments,
        *,
        after_segment: int = 0,
        max_segment_bytes: int = MAX_SEGMENT_BYTES,
    ) -> None:
        """``after_segment``: the newest segment committed rows name; new ones are numbered
        above it (and above every file there), even if its file was lost."""
        self._segments = segments
        self._max = max_segment_bytes
        self._fd: int | None = None
        # The same file opened for direct I/O (None where the file system refuses it: bodies
        # then go through the page cache, back to back as before).
        self._direct_fd: int | None = None
        self._direct = True
        self._buffer: mmap.mmap | None = None
        self._segment = after_segment
        self._end = 0

    @property
    def direct(self) -> bool:
        """Whether the current segment is written with direct I/O."""
        return self._direct_fd is not None

    def write(self, ciphertexts: Sequence[bytes]) -> tuple[int, int]:
        """Write ``ciphertexts`` back to back (with direct I/O where the file system takes it,
        from the next 4 KiB boundary) and make them durable (``fdatasync``) before
        returning ``(segment, position of the first)``: the caller may then commit rows
        naming them. Raises :class:`OSError` if they could not be written or synced; nothing
        written then is named by any row (the same position is written again next time, or,
        after a failed sync, a new segment is begun)."""
        total = sum(len(c) for c in ciphertexts)
        # Where this group would start (a direct write starts at the next boundary).
        next_start = _aligned(self._end) if self._direct_fd is not None else self._end
        if self._fd is None or (self._end > SEGMENT_HEADER_SIZE and next_start + total > self._max):
            self._begin_segment()
        assert self._fd is not None  # noqa: S101 - _begin_segment opened it or raised
        start = self._end
        if self._direct_fd is not None:
            start = _aligned(start)
            try:
                self._write_direct(self._direct_fd, ciphertexts, total, start)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # The file system took the open but not the write: the page cache from now on.
                self._stop_direct()
                start = self._end
                _pwrite_all(self._fd, ciphertexts, start)
        else:
            _pwrite_all(self._fd, ciphertexts, start)
        try:
            os.fdatasync(self._fd)
        except OSError:
            # After a failed sync the kernel may have dropped the pages: never build on them.
            self.close()
            raise
        self._end = start + total
        return self._segment, start

    def _write_direct(self, fd: int, ciphertexts: Sequence[bytes], total: int, start: int) -> None:
        """Copy ``ciphertexts`` back to back into an aligned buffer, zeros up to the next
        boundary, and write it at ``start`` (aligned) bypassing the page cache: what a buffered
        write costs the kernel per page (allocating, dirtying, writing back and later reclaiming
        it) is not paid for bytes read back only by audits and exports."""
        size = _aligned(total)
        buffer = self._buffer
        if buffer is None or len(buffer) < size:
            # Page-aligned; pages become resident as they are first written.
            buffer = mmap.mmap(-1, max(size, _KEPT_BUFFER_BYTES))
            if size <= _KEPT_BUFFER_BYTES:
                if self._buffer is not None:
                    self._buffer.close()
                self._buffer = buffer
        try:
            view = memoryview(buffer)
            try:
                offset = 0
                for ciphertext in ciphertexts:
                    view[offset : offset + len(ciphertext)] = ciphertext
                    offset += len(ciphertext)
                view[offset:size] = bytes(size - offset)
                _pwrite_all(fd, [view[:size]], start)
            finally:
                view.release()
        finally:
            if buffer is not self._buffer:
                buffer.close()

    def _stop_direct(self) -> None:
        fd, self._direct_fd = self._direct_fd, None
        self._direct = False
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Close the current segment (its bodies are synced already) and let go of the aligned
        buffer; the next write begins a new segment (and buffer)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        direct, self._direct_fd = self._direct_fd, None
        if direct is not None:
            os.close(direct)
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            buffer.close()

    def _begin_segment(self) -> None:
        self.close()
        _make_directories(self._segments.directory)
        existing = self._segments.segment_ids()
        segment = max(self._segment, existing[-1] if existing else 0) + 1
        for _ in range(_MAX_NAME_ATTEMPTS):
            path = self._segments.path(segment)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                segment += 1
                continue
            try:
                _pwrite_all(fd, [SEGMENT_MAGIC], 0)
                _fsync_directory(self._segments.directory)
            except OSError:
                os.close(fd)
                with contextlib.suppress(OSError):
                    path.unlink()
                raise
            self._fd, self._segment, self._end = fd, segment, SEGMENT_HEADER_SIZE
            self._direct_fd = self._open_direct(path) if self._direct else None
            return
        raise FileExistsError(f"no free body segment name in {self._segments.directory}")

    def _open_direct(self, path: Path) -> int | None:
        """``path`` opened for direct I/O, or ``None`` (and never tried again by this writer)
        where the file system or platform does not offer it."""
        flag = getattr(os, "O_DIRECT", 0)
        if not flag:
            self._direct = False
            return None
        try:
            return os.open(path, os.O_WRONLY | os.O_CLOEXEC | flag)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            self._direct = False
            return None


def _aligned(position: int) -> int:
    """``position`` rounded up to :data:`DIRECT_ALIGNMENT`."""
    return -(-position // DIRECT_ALIGNMENT) * DIRECT_ALIGNMENT


def _pwrite_all(fd: int, buffers: Sequence[bytes] | Sequence[memoryview], position: int) -> None:
    """Write every byte of ``buffers`` at ``position`` on, in as few calls as the kernel takes."""
    pending = [memoryview(b) for b in buffers if b]
    batch: list[memoryview] = []
    try:
        while pending:
            batch = pending[:_MAX_IOV]
            written = os.pwritev(fd, batch, position)
            if written <= 0:
                raise OSError(errno.EIO, "a body segment write made no progress")
            position += written
            consumed = 0
            while consumed < len(batch) and written >= len(batch[consumed]):
                written -= len(batch[consumed])
                consumed += 1
            rest = pending[consumed:]
            if written:
                rest[0] = rest[0][written:]
            pending = rest
    finally:
        # The views go with this call even when a write raises: the traceback keeps this frame,
        # and a view still alive would stop the caller closing its buffer (an mmap).
        for view in (*pending, *batch):
            view.release()
        del pending, batch, buffers
