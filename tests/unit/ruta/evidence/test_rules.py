"""Every rule of the ``ruta-evidence/v1`` specification (docs/evidence-format.md) is enforced:
one bundle per rule, each breaking that rule alone (the others kept, forgeries re-signed with
the real keys where the rule sits behind a signature), refused by ``verify_bundle`` with the
rule's name as its first reason. The specification and ``Rule`` list the same names."""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ruta.checkpoint import cosign, parse_note, sign_note
from ruta.evidence import verify_bundle
from ruta.evidence.attachments import SHARE_MIN_BATCH
from ruta.evidence.bundle import (
    FORMAT_V2,
    GLOBALCONF_FILE,
    LOG_KEY_FILE,
    MANIFEST_FILE,
    MANIFEST_SIGNATURE_FILE,
    MAX_LEAF_BYTES,
    manifest_note_text,
    record_path,
)
from ruta.evidence.rules import Rule
from ruta.globalconf import sign_configuration
from ruta.v1 import globalconf_pb2, log_pb2, transport_pb2
from security_server.checkpointer import log_vkey
from tests.unit.security_server.evidence_support import Scenario, cosign_head, scenario

SPEC = Path(__file__).resolve().parents[4] / "docs" / "evidence-format.md"


@dataclass
class Bed:
    """An honest provider export (records 0-3, checkpoints 2 and 4) and what forges it."""

    world: Scenario
    files: dict[str, bytes]
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch

    def manifest(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.files[MANIFEST_FILE])
        return loaded

    def zipped(self, files: dict[str, bytes] | None = None, **kwargs: Any) -> bytes:
        return _zip(list((files or self.files).items()), **kwargs)

    def resigned(
        self,
        change: Callable[[dict[str, Any]], None] = lambda _m: None,
        files: dict[str, bytes] | None = None,
    ) -> bytes:
        """The bundle with ``change`` applied to its manifest, every listed digest brought up
        to date and the manifest signed again with the real log key (a dishonest server)."""
        files = dict(files or self.files)
        manifest = json.loads(files[MANIFEST_FILE])
        change(manifest)
        for name in manifest["files"]:
            if name in files:
                manifest["files"][name] = hashlib.sha256(files[name]).hexdigest()
        raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
        origin = manifest["origin"]
        files[MANIFEST_FILE] = raw
        files[MANIFEST_SIGNATURE_FILE] = sign_note(
            manifest_note_text(origin, raw), origin, self.world.provider.key
        ).encode()
        return self.zipped(files)

    def with_leaf(self, seq: int, change: Callable[[log_pb2.LogRecord], None]) -> bytes:
        files = dict(self.files)
        record = log_pb2.LogRecord.FromString(files[record_path(seq)])
        change(record)
        files[record_path(seq)] = record.SerializeToString()
        return self.resigned(files=files)

    def with_conf(self, change: Callable[[globalconf_pb2.GlobalConfiguration], None]) -> bytes:
        files = dict(self.files)
        files[GLOBALCONF_FILE] = resigned_conf(self.world, change)
        return self.resigned(files=files)


def resigned_conf(
    world: Scenario, change: Callable[[globalconf_pb2.GlobalConfiguration], None]
) -> bytes:
    """The scenario's configuration changed and signed again by the registry."""
    envelope = globalconf_pb2.SignedGlobalConfiguration.FromString(world.signed_globalconf)
    conf = globalconf_pb2.GlobalConfiguration.FromString(envelope.configuration)
    change(conf)
    signer = world.registry_signer
    return sign_configuration(conf, signer=signer.signer(), certificate=signer.certificate)


def _zip(members: list[tuple[str, bytes]], *, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names, on purpose
        with zipfile.ZipFile(out, "w") as archive:
            for name, content in members:
                archive.writestr(name, content, compress_type=method)
    return out.getvalue()


def _files(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A manifest change: the value at a ``/``-separated path."""

    def change(manifest: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = manifest
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _corrupt(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
    out = bytearray(data)
    offset = info.header_offset
    start = offset + 30 + int.from_bytes(out[offset + 26 : offset + 28], "little")
    start += int.from_bytes(out[offset + 28 : offset + 30], "little")
    out[start : start + info.compress_size] = b"\xff" * info.compress_size
    return bytes(out)


async def _provider_only(bed: Bed, **deviation: Any) -> bytes:
    """A fresh export after one exchange the provider logged with ``deviation``."""
    await bed.world.provider_only_exchange(**deviation)
    await cosign_head(bed.world.provider, bed.world.witness)
    return await bed.world.export(bed.world.provider)


def _recosigned(bed: Bed, times: dict[int, int]) -> bytes:
    """Checkpoints cosigned again by the real witness key at the given POSIX times."""
    files = dict(bed.files)
    for size, at in times.items():
        path = f"checkpoints/{size:020d}.note"
        note = parse_note(files[path])
        body = note.text
        own = [s for s in note.signatures if s.name == bed.world.provider.log.origin]
        line = cosign(body, bed.world.witness.verifier.name, bed.world.witness_key, at)
        files[path] = type(note)(body, (*own, line)).format().encode()
    return bed.resigned(files=files)


def _checkpoints_out_of_order(manifest: dict[str, Any]) -> None:
    manifest["checkpoints"].reverse()


def _first_hash_flipped(proof: list[str]) -> list[str]:
    first = hashlib.sha256(proof[0].encode()).digest()
    import base64  # noqa: PLC0415 - one use

    return [base64.b64encode(first).decode(), *proof[1:]]


def _without_files(
    bed: Bed, names: tuple[str, ...], change: Callable[[dict[str, Any]], None]
) -> bytes:
    """The manifest changed and the files ``names`` gone from the zip and from its list."""

    def drop(manifest: dict[str, Any]) -> None:
        change(manifest)
        for name in names:
            del manifest["files"][name]

    return bed.resigned(drop, {k: v for k, v in bed.files.items() if k not in names})


def _attachment_swapped(bed: Bed) -> bytes:
    """Record 0's signing certificate replaced, under its digest's name, by the other
    certificate of the bundle (listed with its true digest: only the leaf's digest catches it)."""
    files = dict(bed.files)
    named = log_pb2.LogRecord.FromString(files[record_path(0)]).signature_ref.certificate_sha256
    target = f"certificates/{named.hex()}.der"
    [other] = [n for n in files if n.startswith("certificates/") and n != target]
    files[target] = files[other]
    return bed.resigned(files=files)


def _drop_record(bed: Bed) -> bytes:
    return _without_files(
        bed,
        ("records/00000000000000000002.leaf", "bodies/00000000000000000002.body"),
        lambda m: m["records"].pop(2),
    )


def _body_unreadable(bed: Bed) -> bytes:
    return _without_files(
        bed,
        ("bodies/00000000000000000001.body",),
        lambda m: m["records"][1].update(body_state="unreadable", body=None),
    )


def _swap_leaves(manifest: dict[str, Any]) -> None:
    records = manifest["records"]
    records[1]["leaf"], records[2]["leaf"] = records[2]["leaf"], records[1]["leaf"]


def _swap_records(manifest: dict[str, Any]) -> None:
    records = manifest["records"]
    records[1], records[2] = records[2], records[1]


def _header_field(seq_change: Callable[[transport_pb2.MessageHeader], None]) -> Any:
    def change(record: log_pb2.LogRecord) -> None:
        header = transport_pb2.MessageHeader.FromString(record.header)
        seq_change(header)
        record.header = header.SerializeToString()

    return change


def _bad_client(header: transport_pb2.MessageHeader) -> None:
    header.client.subsystem_code = "not valid!"


def _other_log_key(bed: Bed) -> bytes:
    files = dict(bed.files)
    files[LOG_KEY_FILE] = (
        log_vkey(bed.world.provider.log.origin, Ed25519PrivateKey.generate()) + "\n"
    ).encode()
    return bed.resigned(files=files)


def _extra(bed: Bed, name: str, data: bytes, *, listed: bool) -> bytes:
    files = {**bed.files, name: data}
    if not listed:
        return bed.zipped(files)
    return bed.resigned(lambda m: m["files"].update({name: "0" * 64}), files)


def _broken_witness_key(conf: globalconf_pb2.GlobalConfiguration) -> None:
    conf.witness_public_key = b"not a vkey"


def _deep(bed: Bed) -> bytes:
    return bed.zipped({**bed.files, MANIFEST_FILE: b"[" * 50 + b"]" * 50})


def _duplicate_key(bed: Bed) -> bytes:
    raw = bed.files[MANIFEST_FILE]
    return bed.zipped({**bed.files, MANIFEST_FILE: b'{"server": "x",' + raw[1:]})


def _bounded(bed: Bed, name: str, value: int) -> bytes:
    bed.monkeypatch.setattr(f"ruta.evidence.bundle.{name}", value)
    return bed.zipped()


Case = Callable[[Bed], Awaitable[bytes | str] | bytes | str]

CASES: dict[Rule, Case] = {
    Rule.BUNDLE_UNREADABLE: lambda bed: str(bed.tmp_path / "absent.zip"),
    Rule.BUNDLE_TOO_LARGE: lambda bed: _bounded(bed, "MAX_BUNDLE_BYTES", 1000),
    Rule.BUNDLE_NOT_ZIP: lambda bed: b"PK but not a zip",
    Rule.BUNDLE_TOO_MANY_FILES: lambda bed: _bounded(bed, "MAX_BUNDLE_FILES", 3),
    Rule.BUNDLE_UNSAFE_NAME: lambda bed: _extra(bed, "records/../x.leaf", b"x", listed=False),
    Rule.BUNDLE_DUPLICATE_ENTRY: lambda bed: _zip(
        [*bed.files.items(), (record_path(1), bed.files[record_path(1)])]
    ),
    Rule.BUNDLE_COMPRESSION: lambda bed: bed.zipped(method=zipfile.ZIP_LZMA),
    Rule.BUNDLE_MEMBER_TOO_LARGE: lambda bed: _extra(
        bed, record_path(99), bytes(MAX_LEAF_BYTES + 1), listed=False
    ),
    Rule.BUNDLE_UNPACKED_TOO_LARGE: lambda bed: _bounded(bed, "MAX_UNPACKED_BYTES", 1000),
    Rule.BUNDLE_CORRUPT_MEMBER: lambda bed: _corrupt(bed.zipped(), GLOBALCONF_FILE),
    Rule.BUNDLE_NO_MANIFEST: lambda bed: bed.zipped(
        {k: v for k, v in bed.files.items() if k != MANIFEST_SIGNATURE_FILE}
    ),
    Rule.MANIFEST_NOT_JSON: lambda bed: bed.zipped({**bed.files, MANIFEST_FILE: b"{not json"}),
    Rule.MANIFEST_TOO_DEEP: _deep,
    Rule.MANIFEST_DUPLICATE_KEY: _duplicate_key,
    Rule.MANIFEST_FORMAT: lambda bed: bed.resigned(_set("format", "ruta-evidence/v9")),
    Rule.MANIFEST_SCHEMA: lambda bed: bed.resigned(_set("exported_at", "yesterday")),
    Rule.FILES_UNLISTED: lambda bed: _extra(bed, record_path(99), b"x", listed=False),
    Rule.FILES_MISSING: lambda bed: bed.zipped(
        {k: v for k, v in bed.files.items() if not k.startswith("certificates/")}
    ),
    Rule.FILES_DIGEST: lambda bed: bed.zipped(
        {k: (v + b"x" if k.startswith("ocsp/") else v) for k, v in bed.files.items()}
    ),
    Rule.FILES_UNREFERENCED: lambda bed: _extra(bed, record_path(99), b"x", listed=True),
    Rule.GLOBALCONF_INVALID: lambda bed: bed.resigned(
        files={**bed.files, GLOBALCONF_FILE: b"\xff\xff\xff"}
    ),
    Rule.LOG_KEY_MISMATCH: _other_log_key,
    Rule.LOG_KEY_INVALID: lambda bed: bed.zipped(
        {**bed.files, MANIFEST_FILE: bed.files[MANIFEST_FILE].replace(b"DEV/GOV/POP/ss1", b"x", 1)}
    ),
    Rule.MANIFEST_SIGNATURE: lambda bed: bed.zipped(
        {**bed.files, MANIFEST_FILE: bed.files[MANIFEST_FILE].replace(b'"seq": 0', b'"seq": 9')}
    ),
    Rule.WITNESS_KEY: lambda bed: bed.with_conf(_broken_witness_key),
    Rule.CHECKPOINT_INVALID: lambda bed: bed.resigned(
        files={
            **bed.files,
            "checkpoints/00000000000000000002.note": bed.files[
                "checkpoints/00000000000000000002.note"
            ].replace(b"\n2\n", b"\n3\n", 1),
        }
    ),
    Rule.CHECKPOINT_ORDER: lambda bed: bed.resigned(_checkpoints_out_of_order),
    Rule.CHECKPOINT_TIME_BACKWARDS: lambda bed: _recosigned(
        bed, {2: 2_000_000_000, 4: 1_900_000_000}
    ),
    Rule.TREE_NOT_NEWEST: lambda bed: bed.resigned(_set("tree/size", 2)),
    Rule.CONSISTENCY_MISSING: lambda bed: bed.resigned(_set("consistency", [])),
    Rule.CONSISTENCY_INVALID: lambda bed: bed.resigned(
        lambda m: m["consistency"][0].update(
            proof=_first_hash_flipped(m["consistency"][0]["proof"])
        )
    ),
    Rule.RECORD_ORDER: lambda bed: bed.resigned(_swap_records),
    Rule.RECORD_LEAF_PATH: lambda bed: bed.resigned(_swap_leaves),
    Rule.RECORD_UNREADABLE: lambda bed: bed.resigned(
        files={**bed.files, record_path(1): b"\xff\xff\xff"}
    ),
    Rule.RECORD_TIME: lambda bed: bed.with_leaf(
        1, lambda r: setattr(r.logged_at, "seconds", 2**62)
    ),
    Rule.RECORD_IDENTIFIERS: lambda bed: bed.with_leaf(1, _header_field(_bad_client)),
    Rule.RECORD_ENDPOINT: lambda bed: bed.with_leaf(
        1, lambda r: setattr(r, "direction", log_pb2.LOG_DIRECTION_RECEIVED)
    ),
    Rule.RECORD_SEQUENCE: lambda bed: bed.with_leaf(1, lambda r: setattr(r, "sequence", 7)),
    Rule.RECORD_INCLUSION: lambda bed: bed.resigned(
        lambda m: m["records"][1].update(
            inclusion=_first_hash_flipped(m["records"][1]["inclusion"])
        )
    ),
    Rule.RECORD_WITNESSED_BY: lambda bed: bed.resigned(_set("records/0/witnessed_by", 4)),
    Rule.RECORD_SIGNATURE: lambda bed: _provider_only(bed, request_signer=bed.world.pop_signer),
    Rule.RECORD_FINGERPRINT: _attachment_swapped,
    Rule.RECORD_BODY_STATE: _body_unreadable,
    Rule.RECORD_BODY_DIGEST: lambda bed: bed.resigned(
        files={**bed.files, "bodies/00000000000000000001.body": b"Person(someone-else)"}
    ),
    Rule.RECORD_BINDING: lambda bed: _provider_only(bed, request_hash=bytes(32)),
    Rule.RANGE_INVALID: lambda bed: bed.resigned(_set("complete_range/until", 5)),
    Rule.RANGE_MISSING_RECORD: _drop_record,
}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[Scenario]:
    async with scenario(tmp_path, exchanges=2) as built:
        yield built


@pytest.fixture
async def bed(world: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bed:
    return Bed(world, _files(await world.export(world.provider)), tmp_path, monkeypatch)


def test_every_rule_has_a_case() -> None:
    assert set(CASES) == set(Rule)


def test_the_specification_names_every_rule() -> None:
    named = set(re.findall(r"`([a-z_]+\.[a-z_]+)`", SPEC.read_text("utf-8")))
    assert {str(rule) for rule in Rule} <= named


async def test_the_honest_export_verifies(bed: Bed) -> None:
    report = verify_bundle(bed.zipped())
    assert report.ok, report.first_failure
    assert report.first_reason is None


@pytest.mark.parametrize("rule", list(Rule), ids=str)
async def test_each_rule_is_enforced(bed: Bed, rule: Rule) -> None:
    made = CASES[rule](bed)
    source = await made if not isinstance(made, bytes | str) else made
    report = verify_bundle(source)
    assert not report.ok
    assert report.first_reason == rule, report.first_failure
    assert report.first_failure


async def test_ocsp_parameters_come_from_the_configuration(world: Scenario) -> None:
    """Staples dated 10 minutes after signing fail under the default clock skew (5 min) and
    pass once the signed configuration allows 15 minutes: the offline verifier takes the
    parameter from the configuration, not from any server's settings."""
    later = datetime.now(UTC) + timedelta(minutes=10)
    await world.provider_only_exchange(ocsp_this_update=later)
    await cosign_head(world.provider, world.witness)
    report = verify_bundle(await world.export(world.provider))
    assert report.first_reason == Rule.RECORD_SIGNATURE
    assert "dated after" in (report.first_failure or "")
    assert "clock skew 300 s (defaults)" in report.parameters

    def allow_skew(conf: globalconf_pb2.GlobalConfiguration) -> None:
        conf.verification.ocsp_clock_skew_seconds = 900

    world.signed_globalconf = resigned_conf(world, allow_skew)
    report = verify_bundle(await world.export(world.provider))
    assert report.ok, report.first_failure
    assert "clock skew 900 s (the configuration)" in report.parameters


async def test_a_response_whose_request_is_elsewhere_is_a_warning(world: Scenario) -> None:
    from security_server.evidence import EvidenceFilter  # noqa: PLC0415

    report = verify_bundle(
        await world.export(world.provider, EvidenceFilter(from_seq=1, until_seq=2))
    )
    assert report.ok, report.first_failure
    assert any("its request is not in this bundle" in w for w in report.warnings)


async def test_a_shared_batch_signature_needs_a_v3_bundle(
    world: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leaves naming the shared part of their batch signature (form 3) verify in a v3 bundle,
    whose signatures/ carries it; the same bundle declared v2 fails them as unreadable."""
    await world.exchanges([f"b-{i}" for i in range(SHARE_MIN_BATCH)], batched=True)
    await cosign_head(world.provider, world.witness)
    bed = Bed(world, _files(await world.export(world.provider)), tmp_path, monkeypatch)
    assert any(name.startswith("signatures/") for name in bed.files)
    report = verify_bundle(bed.zipped())
    assert report.ok, report.first_failure
    files = dict(bed.files)
    manifest = json.loads(files[MANIFEST_FILE])
    manifest["format"] = FORMAT_V2
    raw = json.dumps(manifest, sort_keys=True).encode()
    origin = manifest["origin"]
    files[MANIFEST_FILE] = raw
    files[MANIFEST_SIGNATURE_FILE] = sign_note(
        manifest_note_text(origin, raw, FORMAT_V2), origin, world.provider.key
    ).encode()
    report = verify_bundle(bed.zipped(files))
    assert report.first_reason == Rule.RECORD_UNREADABLE, report.first_failure
    assert "v2 bundle cannot" in (report.first_failure or "")
