"""The one bounded reader and the one atomic writer (ruta.files), and the key and certificate
readers built on them: a file over its bound is a clear error, never silently cut."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ruta.files import FileProblem, FileReadError, atomic_file, read_bounded, write_atomically
from ruta.pki.certs import MAX_CERTIFICATE_BYTES, read_certificate_file
from ruta.pki.errors import KeyFileError, MalformedCertificateError
from ruta.pki.keys import MAX_KEY_FILE_BYTES, generate_ec_key, load_private_key, save_private_key
from ruta.pki.tls import channel_credentials

# --- read_bounded -------------------------------------------------------------------------------


def test_reads_a_file_of_exactly_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, 100) == b"x" * 100


def test_a_file_over_its_bound_is_refused_never_truncated(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 101)
    with pytest.raises(FileReadError) as caught:
        read_bounded(path, 100, what="input file")
    assert caught.value.problem is FileProblem.TOO_LARGE
    assert caught.value.message == (
        "input file f.bin is 101 bytes, larger than allowed: the limit is 100"
    )


def test_a_file_whose_size_is_not_told_is_bounded_by_what_is_read() -> None:
    # /proc files report size 0: only reading one byte past the bound tells.
    proc = Path("/proc/self/status")
    if not proc.exists():
        pytest.skip("needs /proc")
    with pytest.raises(FileReadError) as caught:
        read_bounded(proc, 16)
    assert caught.value.problem is FileProblem.TOO_LARGE
    assert "larger than allowed: the limit is 16 bytes" in caught.value.message


@pytest.mark.parametrize(
    ("make", "problem", "text"),
    [
        (lambda p: None, FileProblem.MISSING, "does not exist"),
        (lambda p: p.mkdir(), FileProblem.DIRECTORY, "is a directory"),
    ],
)
def test_refusals_name_the_file_never_its_folder(
    tmp_path: Path, make: object, problem: FileProblem, text: str
) -> None:
    path = tmp_path / "secret-folder" / "thing.pem"
    path.parent.mkdir()
    make(path)  # type: ignore[operator]
    with pytest.raises(FileReadError) as caught:
        read_bounded(path, 10, what="certificate file")
    assert caught.value.problem is problem
    assert caught.value.message == f"certificate file thing.pem {text}"
    assert "secret-folder" not in caught.value.message


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(FileReadError) as caught:
        read_bounded(path, 10)
    assert caught.value.problem is FileProblem.DENIED


def test_without_show_name_only_what_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileReadError) as caught:
        read_bounded(tmp_path / "auth.key", 10, what="private key file", show_name=False)
    assert caught.value.message == "private key file does not exist"


def test_a_key_file_over_its_bound_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "auth.key"
    save_private_key(path, generate_ec_key())
    with path.open("ab") as out:
        out.write(b"\n" * MAX_KEY_FILE_BYTES)
    with pytest.raises(KeyFileError, match="larger than allowed") as caught:
        load_private_key(path)
    assert "auth.key" not in caught.value.message  # key messages carry no file names


def test_a_certificate_file_over_its_bound_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "chain.pem"
    path.write_bytes(b"-" * (2 * MAX_CERTIFICATE_BYTES + 1))
    with pytest.raises(MalformedCertificateError, match=r"chain\.pem is .* larger than allowed"):
        read_certificate_file(path, limit=1)
    trust = tmp_path / "trust.pem"
    trust.write_bytes(b"-" * (4 << 20))  # over the bound of any trust file (64 certificates)
    with pytest.raises(MalformedCertificateError, match=r"trust\.pem is .* larger than allowed"):
        channel_credentials(tmp_path / "client.key", path, trust)


# --- write_atomically / atomic_file -------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[None]:
    """Run with a strict umask (0o277), restoring the process's afterwards."""
    old = os.umask(0o277)
    try:
        yield
    finally:
        os.umask(old)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_and_replaces_whole(tmp_path: Path) -> None:
    path = tmp_path / "ready.json"
    write_atomically(path, b"old")
    write_atomically(path, b"new content")
    assert path.read_bytes() == b"new content"
    assert _leftovers(tmp_path) == []


def test_a_private_mode_is_exact_whatever_the_umask(tmp_path: Path, umask: None) -> None:
    path = tmp_path / "auth.key"
    write_atomically(path, b"k", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_shared_mode_is_subject_to_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomically(tmp_path / "ca.pem", b"c")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ca.pem").stat().st_mode) == 0o644


def test_exclusive_never_replaces_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "claim"
    write_atomically(path, b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_atomically(path, b"second", exclusive=True)
    assert path.read_bytes() == b"first"
    assert _leftovers(tmp_path) == []


def test_an_error_while_writing_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"old")

    class _StopError(Exception):
        pass

    def write_half() -> None:
        with atomic_file(path) as sink:
            sink.write(b"half of a new")
            raise _StopError

    with pytest.raises(_StopError):
        write_half()
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_a_missing_folder_is_an_os_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomically(tmp_path / "absent" / "f", b"x")
    assert list(tmp_path.iterdir()) == []


def test_a_stream_appears_only_when_whole(tmp_path: Path) -> None:
    path = tmp_path / "bundle.zip"
    with atomic_file(path, mode=0o600) as sink:
        for chunk in (b"a" * 10, b"b" * 10):
            sink.write(chunk)
            assert not path.exists()
    assert path.read_bytes() == b"a" * 10 + b"b" * 10
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
