"""Ready files: what a serving process writes is what its readers get, and anything else is
``None`` (never an exception for a reader that only looks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ruta.readiness import MAX_READY_FILE_BYTES, read_ready_file, write_ready_file


def test_what_is_written_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ready.json"
    write_ready_file(path, {"address": "127.0.0.1:5000", "pid": 1234})
    assert read_ready_file(path) == {"address": "127.0.0.1:5000", "pid": 1234}


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "missing"),
        (b"{", "not JSON (a writer without the atomic writer, half written)"),
        (b"[1, 2]", "JSON but not an object"),
        (b"\xff\xfe", "not text"),
        (b'{"pid": 1, "pad": "' + b"x" * MAX_READY_FILE_BYTES + b'"}', "over the bound"),
    ],
)
def test_no_usable_ready_file_is_none(tmp_path: Path, content: bytes | None, why: str) -> None:
    path = tmp_path / "ready.json"
    if content is not None:
        path.write_bytes(content)
    assert read_ready_file(path) is None, why


def test_a_folder_is_none(tmp_path: Path) -> None:
    (tmp_path / "ready.json").mkdir()
    assert read_ready_file(tmp_path / "ready.json") is None
