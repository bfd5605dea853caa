"""Fuzzing evidence bundles, which auditors receive from anyone: a real bundle mutated byte by
byte, and zips built to attack the reader (names that climb out of the folder, absolute names,
duplicates, symbolic links, members that inflate far beyond their packed size).

``open_bundle`` opens or raises :class:`BundleError`; ``verify_bundle`` never raises and never
reports a bundle with anything added, renamed or dropped as verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import stat
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ruta.evidence import BundleError, open_bundle, verify_bundle
from tests.fuzz.support import fuzz_settings, mutated
from tests.unit.security_server.evidence_support import scenario

pytestmark = pytest.mark.fuzz

HOSTILE_NAMES = [
    "../evil.txt",
    "../../etc/passwd",
    "/etc/passwd",
    "records/../../x",
    "C:\\windows\\x",
    "records/\x00.bin",
    "manifest.json/",
    "./manifest.json",
    "records//0.bin",
    "",
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    async def export() -> bytes:
        async with scenario(Path(tmp_path_factory.mktemp("bundle")), exchanges=2) as world:
            return await world.export(world.provider)

    return asyncio.run(export())


def _entries(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def _zip(entries: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of duplicate names
        with zipfile.ZipFile(out, "w") as archive:
            for info, data in entries:
                archive.writestr(info, data)
    return out.getvalue()


def _check(raw: bytes) -> bool:
    """Read and verify ``raw``; only the typed error may come out. Returns whether it verified."""
    with contextlib.suppress(BundleError), open_bundle(raw) as bundle:
        for name in sorted(bundle.names):
            bundle.read(name)
    report = verify_bundle(raw)
    return report.ok


@fuzz_settings
@given(data=st.data())
def test_mutated_bundle(bundle: bytes, data: st.DataObject) -> None:
    _check(data.draw(mutated(bundle, max_edits=6)))


@st.composite
def _hostile_entry(draw: st.DrawFn) -> tuple[zipfile.ZipInfo, bytes]:
    name = draw(st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(min_size=1, max_size=60)))
    info = zipfile.ZipInfo(name)
    kind = draw(st.sampled_from(["file", "symlink", "directory", "executable"]))
    if kind == "symlink":
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        return info, draw(st.sampled_from([b"/etc/passwd", b"../../secret", b"manifest.json"]))
    if kind == "directory":
        info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
    elif kind == "executable":
        info.create_system = 3
        info.external_attr = (stat.S_IFREG | 0o4755) << 16
    info.compress_type = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    return info, draw(st.binary(max_size=256))


@fuzz_settings
@given(data=st.data())
def test_hostile_entries_added(bundle: bytes, data: st.DataObject) -> None:
    entries = _entries(bundle)
    added = data.draw(st.lists(_hostile_entry(), min_size=1, max_size=3))
    if data.draw(st.booleans()):  # a listed name again: a duplicate of a real entry
        info, _ = data.draw(st.sampled_from(entries))
        added.append((zipfile.ZipInfo(info.filename), data.draw(st.binary(max_size=64))))
    at = data.draw(st.integers(0, len(entries)))
    raw = _zip(entries[:at] + added + entries[at:])
    assert not _check(raw), "a bundle with entries added verified"


@fuzz_settings
@given(data=st.data())
def test_entries_renamed_or_dropped(bundle: bytes, data: st.DataObject) -> None:
    entries = _entries(bundle)
    at = data.draw(st.integers(0, len(entries) - 1))
    info, content = entries[at]
    if data.draw(st.booleans()):
        del entries[at]
    else:
        renamed = zipfile.ZipInfo(data.draw(st.sampled_from(HOSTILE_NAMES[:5])) + info.filename)
        entries[at] = (renamed, content)
    assert not _check(_zip(entries))


@pytest.mark.parametrize("inflated", [8 << 20, 48 << 20])
def test_inflating_member(bundle: bytes, inflated: int) -> None:
    """A member that deflates to a sliver of its size (a zip bomb, kept small enough for CI)."""
    info = zipfile.ZipInfo("records/bomb.bin")
    info.compress_type = zipfile.ZIP_DEFLATED
    raw = _zip([*_entries(bundle), (info, b"\0" * inflated)])
    assert len(raw) < inflated // 100
    assert not _check(raw)


def test_declared_sizes_lie(bundle: bytes) -> None:
    """A member whose central directory understates its size: the reader must stop at the
    declared size (or refuse), not inflate what the data holds."""
    info = zipfile.ZipInfo("records/liar.bin")
    info.compress_type = zipfile.ZIP_DEFLATED
    raw = bytearray(_zip([*_entries(bundle), (info, b"\0" * (4 << 20))]))
    # Patch the uncompressed size of the last central directory entry to 16 bytes.
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24 : central + 28] = (16).to_bytes(4, "little")
    assert not _check(bytes(raw))
