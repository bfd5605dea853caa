"""Hostile bundles (issue 12, findings 4 to 6): real exports with files added, zip bombs,
corrupt or exotic compression, duplicate entries and deeply nested manifests. Each is refused
with a named rule and a clear message, never a traceback, within bounded memory."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
import warnings
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ruta.checkpoint import sign_note
from ruta.evidence import VerificationReport, verify_bundle
from ruta.evidence.bundle import (
    MANIFEST_FILE,
    MANIFEST_SIGNATURE_FILE,
    body_path,
    manifest_note_text,
    record_path,
)
from ruta.evidence.cli import group
from ruta.evidence.rules import Rule
from tests.unit.security_server.evidence_support import scenario

#: What the review's zip bomb held: 15 members of 64 MiB of zeros (about 1 MB zipped at level 6).
BOMB_MEMBERS = 15
BOMB_MEMBER_BYTES = 64 << 20
#: Peak memory verification may take on any of these bundles (the bomb reached ~1.1 GB).
MAX_PEAK_BYTES = 32 << 20


@dataclass(frozen=True)
class Exported:
    """A real provider export and the log key that signed its manifest."""

    bundle: bytes
    key: Ed25519PrivateKey


@pytest.fixture(scope="module")
def zeros() -> bytes:
    return bytes(BOMB_MEMBER_BYTES)


@pytest.fixture
async def exported(tmp_path: Path) -> AsyncIterator[Exported]:
    async with scenario(tmp_path, exchanges=2) as world:
        yield Exported(await world.export(world.provider), world.provider.key)


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _zip(
    members: Iterable[tuple[str, bytes]],
    *,
    compression: Callable[[str], int] = lambda _name: zipfile.ZIP_DEFLATED,
) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of duplicate names
        with zipfile.ZipFile(out, "w") as archive:
            for name, content in members:
                archive.writestr(name, content, compress_type=compression(name), compresslevel=1)
    return out.getvalue()


def _resigned(members: dict[str, bytes], key: Ed25519PrivateKey) -> dict[str, bytes]:
    """The files digests brought up to date and the manifest signed again with the real log
    key: what a dishonest exporting server itself can do."""
    manifest = json.loads(members[MANIFEST_FILE])
    for name in manifest["files"]:
        manifest["files"][name] = hashlib.sha256(members[name]).hexdigest()
    raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
    origin = manifest["origin"]
    note = sign_note(manifest_note_text(origin, raw), origin, key)
    return {**members, MANIFEST_FILE: raw, MANIFEST_SIGNATURE_FILE: note.encode()}


def _verify_measured(data: bytes) -> tuple[VerificationReport, int]:
    tracemalloc.start()
    try:
        report = verify_bundle(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return report, peak


def _cli(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "hostile.zip"
    path.write_bytes(data)
    result = CliRunner().invoke(group, ["verify", str(path)])
    # A refusal is exit status 1 with a report, never an exception escaping the verifier.
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert "RESULT: VERIFIED" not in result.output
    return result.output


# --- finding 4: files the manifest does not list -------------------------------------------


@pytest.mark.parametrize(
    "added",
    [
        record_path(99),
        body_path(99),
        "records/extra.leaf",
        "bodies/00000000000000000000.body.orig",
    ],
)
def test_unlisted_files_fail(exported: Exported, tmp_path: Path, added: str) -> None:
    members = _members(exported.bundle)
    report = verify_bundle(_zip([*members.items(), (added, b"not in the manifest")]))
    assert not report.ok
    assert report.first_reason == Rule.FILES_UNLISTED
    assert report.first_failure == f"file {added} is not covered by the manifest"
    assert f"RESULT: FAILED: file {added} is not covered" in _cli(
        tmp_path, _zip([*members.items(), (added, b"x")])
    )


@pytest.mark.parametrize(
    "name",
    ["records/../evil.leaf", "../evil", "/etc/evil", "bodies/./x.body", "records\\x.leaf", "a//b"],
)
def test_unsafe_names_fail(exported: Exported, tmp_path: Path, name: str) -> None:
    data = _zip([*_members(exported.bundle).items(), (name, b"x")])
    report = verify_bundle(data)
    assert report.first_reason == Rule.BUNDLE_UNSAFE_NAME, report.first_failure
    assert "unsafe" in _cli(tmp_path, data)


def test_duplicate_entries_fail(exported: Exported, tmp_path: Path) -> None:
    members = _members(exported.bundle)
    leaf = record_path(1)
    data = _zip([*members.items(), (leaf, members[leaf])])
    report = verify_bundle(data)
    assert report.first_reason == Rule.BUNDLE_DUPLICATE_ENTRY
    assert report.first_failure == f"the bundle holds {leaf!r} twice (duplicate zip entries)"
    _cli(tmp_path, data)


# --- finding 5: decompression amplification ------------------------------------------------


def test_zip_bomb_of_unlisted_bodies_is_refused_before_inflating(
    exported: Exported, tmp_path: Path, zeros: bytes
) -> None:
    bomb = [(body_path(1000 + i), zeros) for i in range(BOMB_MEMBERS)]
    data = _zip([*_members(exported.bundle).items(), *bomb])
    assert len(data) < 8 << 20  # the review's was 1 MB
    report, peak = _verify_measured(data)
    assert report.first_reason == Rule.FILES_UNLISTED
    assert peak < MAX_PEAK_BYTES, peak
    _cli(tmp_path, data)


def test_zip_bomb_over_a_members_bound_is_refused_from_the_directory(
    exported: Exported, zeros: bytes
) -> None:
    # 64 MiB declared for a leaf (bounded at 1 MiB) is refused before anything is unpacked.
    data = _zip([*_members(exported.bundle).items(), (record_path(1000), zeros)])
    report, peak = _verify_measured(data)
    assert report.first_reason == Rule.BUNDLE_MEMBER_TOO_LARGE
    assert peak < MAX_PEAK_BYTES, peak


def test_zip_bomb_listed_and_signed_by_the_server_is_hashed_in_bounded_memory(
    exported: Exported, zeros: bytes
) -> None:
    """The exporting server itself (holding the log key) lists 64 MiB bodies: they are hashed
    as streams, never held, and each record names its body as not the signed one."""
    members = _members(exported.bundle)
    bodies = sorted(name for name in members if name.startswith("bodies/"))
    assert len(bodies) == 4
    members.update(dict.fromkeys(bodies, zeros))
    data = _zip(_resigned(members, exported.key).items())
    report, peak = _verify_measured(data)
    assert not report.ok
    assert not report.problems
    assert [r.reasons for r in report.records] == [[Rule.RECORD_BODY_DIGEST]] * 4
    assert peak < MAX_PEAK_BYTES, peak


# --- finding 6: tracebacks instead of faults -----------------------------------------------


def _corrupt_member(data: bytes, name: str) -> bytes:
    """``data`` with the compressed bytes of member ``name`` overwritten by 0xFF (a deflate
    block of the reserved type: zlib refuses it)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
    out = bytearray(data)
    name_length = int.from_bytes(out[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_length = int.from_bytes(out[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_length + extra_length
    out[start : start + info.compress_size] = b"\xff" * info.compress_size
    return bytes(out)


@pytest.mark.parametrize("member", [MANIFEST_FILE, "globalconf.bin", record_path(2)])
def test_corrupt_deflate_member_fails_with_its_rule(
    exported: Exported, tmp_path: Path, member: str
) -> None:
    data = _corrupt_member(exported.bundle, member)
    report = verify_bundle(data)
    assert not report.ok
    assert report.first_reason == Rule.BUNDLE_CORRUPT_MEMBER, report.first_failure
    assert "cannot be unpacked" in (report.first_failure or "")
    assert "cannot be unpacked" in _cli(tmp_path, data)


@pytest.mark.parametrize("method", [zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2])
@pytest.mark.parametrize("corrupt", [False, True])
def test_other_compression_methods_fail(
    exported: Exported, tmp_path: Path, method: int, corrupt: bool
) -> None:
    data = _zip(
        _members(exported.bundle).items(),
        compression=lambda name: method if name == "globalconf.bin" else zipfile.ZIP_DEFLATED,
    )
    if corrupt:
        data = _corrupt_member(data, "globalconf.bin")
    report = verify_bundle(data)
    assert report.first_reason == Rule.BUNDLE_COMPRESSION, report.first_failure
    assert "stored or deflated" in _cli(tmp_path, data)


@pytest.mark.parametrize(
    "manifest",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"format": "ruta-evidence/v1", "x": ' + b"[" * 9 + b"]" * 9 + b"}",
    ],
)
def test_deeply_nested_manifest_fails(exported: Exported, tmp_path: Path, manifest: bytes) -> None:
    members = {**_members(exported.bundle), MANIFEST_FILE: manifest}
    data = _zip(members.items())
    report = verify_bundle(data)
    assert report.first_reason == Rule.MANIFEST_TOO_DEEP, report.first_failure
    assert "nested levels" in _cli(tmp_path, data)


def test_strings_do_not_count_as_nesting(exported: Exported) -> None:
    members = _members(exported.bundle)
    manifest = json.loads(members[MANIFEST_FILE])
    manifest["query"]["subject"] = '[[[[[[[[[[[[{{{{{{{{{{\\"]]'
    members[MANIFEST_FILE] = json.dumps(manifest).encode()
    report = verify_bundle(_zip(members.items()))
    # Parsed fine; it fails only because the manifest no longer matches its signature.
    assert report.first_reason == Rule.MANIFEST_SIGNATURE, report.first_failure
