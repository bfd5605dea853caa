"""The body key file: created 0600 once, reused, refused when unsafe; the cipher binds records."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from security_server.log import BodyKey, LogKeyError, load_or_create_body_key
from security_server.log.bodies import BodyCipher
from security_server.log.keys import BODY_KEY_FILE, BODY_KEY_SIZE


def test_key_is_created_private_and_reused(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key = load_or_create_body_key(key_dir)
    path = key_dir / BODY_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == key.key
    assert load_or_create_body_key(key_dir) == key
    assert [p.name for p in key_dir.iterdir()] == [BODY_KEY_FILE]
    assert key.key.hex() not in repr(key)


@pytest.mark.parametrize(
    ("mode", "content", "problem"),
    [
        (0o644, b"k" * BODY_KEY_SIZE, "readable by others"),
        (0o600, b"short", "is not 32 bytes"),
    ],
)
def test_unsafe_or_damaged_key_files_are_refused(
    tmp_path: Path, mode: int, content: bytes, problem: str
) -> None:
    path = tmp_path / BODY_KEY_FILE
    path.write_bytes(content)
    os.chmod(path, mode)
    with pytest.raises(LogKeyError, match=problem) as info:
        load_or_create_body_key(tmp_path)
    assert str(tmp_path) not in str(info.value)


@pytest.mark.parametrize(
    ("open_origin", "open_seq"), [("origin-b", 7), ("origin-a", 8)], ids=["origin", "seq"]
)
def test_a_sealed_body_opens_only_for_its_record(open_origin: str, open_seq: int) -> None:
    cipher = BodyCipher(BodyKey.generate())
    sealed = cipher.seal("origin-a", 7, b"body")
    assert cipher.open("origin-a", 7, sealed) == b"body"
    with pytest.raises(LogKeyError):
        cipher.open(open_origin, open_seq, sealed)


def test_an_older_key_still_opens_its_bodies() -> None:
    old, new = BodyKey.generate(), BodyKey.generate()
    sealed = BodyCipher(old).seal("o", 1, b"body")
    assert BodyCipher(new, previous=[old]).open("o", 1, sealed) == b"body"
    with pytest.raises(LogKeyError, match="unknown key"):
        BodyCipher(new).open("o", 1, sealed)
