"""The one bounded file reader and the one atomic file writer every part uses.

:func:`read_bounded` reads a whole file of at most ``limit`` bytes: a file over its bound (even one
that grows while it is read, or a special file whose size the folder does not tell) is a clear
:class:`FileReadError`, never silently cut to the bound. Its messages name what the file is (and,
unless asked not to, its file name), never its folder.

:func:`write_atomically` (bytes) and :func:`atomic_file` (a stream) put a file at a path whole
or not at all: it is written and synced under a temporary name beside the target, then renamed
over it (or, ``exclusive``, linked into place only if nothing is there yet), and the folder is
synced. A crash leaves the old file or the new one, never half of one; a reader never sees a
partial file.
"""

from __future__ import annotations

import contextlib
import enum
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ruta.faults import Fault, RutaError

__all__ = [
    "DEFAULT_FILE_MODE",
    "FileProblem",
    "FileReadError",
    "atomic_file",
    "read_bounded",
    "write_atomically",
]

#: Permissions of a file :func:`write_atomically` creates unless told otherwise (before umask).
DEFAULT_FILE_MODE = 0o644


class FileProblem(enum.StrEnum):
    """Why a file could not be read (side-neutral: each caller maps it to its own error)."""

    MISSING = "missing"
    DIRECTORY = "directory"
    DENIED = "denied"
    UNREADABLE = "unreadable"
    TOO_LARGE = "too_large"


class FileReadError(RutaError):
    """A file could not be read whole: missing, a folder, not readable, or over its bound."""

    default_fault = Fault.CLIENT_INVALID_CONFIG

    def __init__(self, message: str, *, problem: FileProblem, fault: Fault | None = None) -> None:
        super().__init__(message, fault=fault)
        self.problem = problem


def read_bounded(
    path: str | os.PathLike[str], limit: int, *, what: str = "file", show_name: bool = True
) -> bytes:
    """The whole content of the file at ``path``, which must be at most ``limit`` bytes.

    Raises :class:`FileReadError` (with its :class:`FileProblem`) when the file is missing, a
    folder, not readable, or larger than ``limit``: checked against its size before reading and
    against what was actually read (one byte past the bound is read to tell), so it is never
    truncated. The message names it as ``what`` plus its file name (without ``show_name``: only
    ``what``), never its folder.
    """
    target = Path(path)
    name = f"{what} {target.name}" if show_name else what
    try:
        with target.open("rb") as source:
            size = os.fstat(source.fileno()).st_size
            if size > limit:
                raise FileReadError(
                    f"{name} is {size} bytes, larger than allowed: the limit is {limit}",
                    problem=FileProblem.TOO_LARGE,
                )
            data = source.read(limit + 1)
    except FileNotFoundError:
        raise FileReadError(f"{name} does not exist", problem=FileProblem.MISSING) from None
    except IsADirectoryError:
        raise FileReadError(f"{name} is a directory", problem=FileProblem.DIRECTORY) from None
    except PermissionError:
        raise FileReadError(
            f"{name} cannot be read (permission denied)", problem=FileProblem.DENIED
        ) from None
    except OSError as exc:
        raise FileReadError(
            f"{name} cannot be read ({exc.strerror or 'I/O error'})",
            problem=FileProblem.UNREADABLE,
        ) from None
    if len(data) > limit:
        raise FileReadError(
            f"{name} is larger than allowed: the limit is {limit} bytes",
            problem=FileProblem.TOO_LARGE,
        )
    return data


def write_atomically(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = DEFAULT_FILE_MODE,
    exclusive: bool = False,
) -> None:
    """Put ``data`` at ``path``, whole or not at all (see :func:`atomic_file`)."""
    with atomic_file(path, mode=mode, exclusive=exclusive) as sink:
        sink.write(data)


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike[str], *, mode: int = DEFAULT_FILE_MODE, exclusive: bool = False
) -> Iterator[BinaryIO]:
    """A file to write that appears at ``path`` only, whole, when the block ends without error.

    What is written goes to a temporary file beside ``path`` (created with permissions ``mode``:
    a private ``mode``, without group or other bits as for keys, is set exactly whatever the
    umask; any other is subject to the umask), synced and renamed over ``path`` at the end of the
    block, then the folder is synced. ``exclusive``: linked into place only if nothing is at
    ``path`` yet (:class:`FileExistsError` otherwise, leaving what is there), so two writers racing
    to create a file never replace each other's. An error in the block, or an :class:`OSError`
    (the folder must exist), removes the temporary file and leaves ``path`` as it was.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as sink:
            if not mode & 0o077:
                os.fchmod(sink.fileno(), mode)
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        if exclusive:
            os.link(tmp, target)
        else:
            os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):  # gone already once renamed into place
            tmp.unlink()
    _sync_folder(target.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename durable. Some file systems cannot sync a folder: the file is in place
    anyway, so that is not an error."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
