"""Tampering with a bundle itself (not the server's database) is caught; parsers are total."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ruta.checkpoint import MalformedNoteError, SignatureType, Verifier, sign_note
from ruta.evidence import BundleError, open_bundle, verify_bundle
from ruta.evidence.bundle import MANIFEST_FILE, MANIFEST_SIGNATURE_FILE, manifest_note_text
from tests.unit.security_server.evidence_support import scenario


@pytest.fixture
async def bundle(tmp_path: Path) -> AsyncIterator[bytes]:
    async with scenario(tmp_path, exchanges=2) as world:
        yield await world.export(world.provider)


def _files(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


def _flip_leaf(files: dict[str, bytes]) -> None:
    name = sorted(n for n in files if n.startswith("records/"))[1]
    files[name] = files[name][:-1] + bytes([files[name][-1] ^ 1])


def _extra_file(files: dict[str, bytes]) -> None:
    files["notes.txt"] = b"added later"


def _drop_body(files: dict[str, bytes]) -> None:
    del files[sorted(n for n in files if n.startswith("bodies/"))[0]]


def _resign_with_another_key(files: dict[str, bytes]) -> None:
    manifest = json.loads(files[MANIFEST_FILE])
    manifest["records"] = manifest["records"][1:]
    raw = json.dumps(manifest).encode()
    origin = manifest["origin"]
    files[MANIFEST_FILE] = raw
    note = sign_note(manifest_note_text(origin, raw), origin, Ed25519PrivateKey.generate())
    files[MANIFEST_SIGNATURE_FILE] = note.encode()


def _edit_manifest(files: dict[str, bytes]) -> None:
    files[MANIFEST_FILE] = files[MANIFEST_FILE].replace(b'"seq": 0', b'"seq": 9', 1)


CASES: dict[str, tuple[Callable[[dict[str, bytes]], None], str]] = {
    "a leaf byte in the zip": (_flip_leaf, "record 1"),
    "an unlisted file": (_extra_file, "file notes.txt is not covered by the manifest"),
    "a body removed": (_drop_body, "record 0"),
    "manifest re-signed by another key": (_resign_with_another_key, "manifest signature"),
    "manifest edited": (_edit_manifest, "the manifest signature does not cover"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampered_bundle_fails(bundle: bytes, case: str) -> None:
    change, expected = CASES[case]
    files = _files(bundle)
    change(files)
    report = verify_bundle(_zip(files))
    assert not report.ok
    assert report.first_failure is not None
    assert report.first_failure.startswith(expected), report.first_failure


def test_untouched_bundle_verifies(bundle: bytes) -> None:
    report = verify_bundle(bundle)
    assert report.ok, report.first_failure


@given(st.binary(max_size=2048))
def test_open_bundle_is_total(data: bytes) -> None:
    with contextlib.suppress(BundleError), open_bundle(data) as opened:
        assert opened.manifest


@given(st.binary(max_size=512))
def test_verify_bundle_never_raises_on_a_zip_with_junk(data: bytes) -> None:
    report = verify_bundle(_zip({MANIFEST_FILE: data, MANIFEST_SIGNATURE_FILE: data}))
    assert not report.ok


@given(
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="+"),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([SignatureType.ED25519, SignatureType.COSIGNATURE_V1]),
    st.binary(min_size=32, max_size=32),
)
def test_parse_vkey_round_trips_every_key(name: str, kind: SignatureType, seed: bytes) -> None:
    verifier = Verifier.for_key(name, kind, Ed25519PrivateKey.from_private_bytes(seed))
    parsed = Verifier.from_vkey(verifier.vkey())
    assert parsed.vkey() == verifier.vkey()


@given(st.text(max_size=400))
def test_parse_vkey_is_total(text: str) -> None:
    with contextlib.suppress(MalformedNoteError):
        Verifier.from_vkey(text)


def test_unpacked_size_is_bounded(bundle: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real export, and the bound set right at (then one byte under) what it unpacks to.
    unpacked = sum(len(content) for content in _files(bundle).values())
    monkeypatch.setattr("ruta.evidence.bundle.MAX_UNPACKED_BYTES", unpacked)
    with open_bundle(bundle) as opened:
        assert opened.names
    monkeypatch.setattr("ruta.evidence.bundle.MAX_UNPACKED_BYTES", unpacked - 1)
    with pytest.raises(BundleError, match="unpacks to more than"), open_bundle(bundle):
        pass
