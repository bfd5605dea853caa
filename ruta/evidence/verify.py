"""Offline verification of an evidence bundle: no network, no server, only the bundle (and
optionally the auditor's own configuration anchor).

What each check proves (docs/auditor-guide.md says it for auditors):

- **configuration**: the bundled global configuration is signed by the registry (by a
  certificate of the auditor's anchor with ``--anchor``; otherwise by the certificate it
  carries, reported as *not pinned*). It names the trust anchors, OCSP responders, the witness
  key and the exporting server's log key.
- **manifest**: the manifest is signed by the exporting server's log key, and every other file's
  SHA-256 is in it, with no file unlisted: every byte of the bundle is covered.
- **checkpoints**: each is signed by the log key and cosigned by the registry's witness; the
  cosignature's timestamp is the registry's clock. Consecutive checkpoints are consistent (each
  tree is a prefix of the next): the log showed the witness one history.
- **records**: each leaf is included at its sequence number in the newest cosigned tree, and in
  the earliest cosigned checkpoint listed for it (so it existed by that cosignature's time); its
  message signature verifies with a certificate that chains to the configuration's trust anchors
  and was not revoked at signing time (stapled OCSP, checked by
  :class:`ruta.pki.signature.MessageVerifier`); a body present hashes to the digest the signed
  header carries; a response is bound to its request (``request_hash``).
- **completeness**: for an export of a whole range, no sequence number is missing.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Final

from cryptography import x509
from google.protobuf.message import DecodeError

from ruta.checkpoint import (
    CheckpointError,
    SignatureType,
    Verifier,
    open_checkpoint,
    parse_note,
    verify_cosignature,
    verify_note,
)
from ruta.evidence.bundle import (
    BODY_STATES,
    GLOBALCONF_FILE,
    LOG_KEY_FILE,
    MAX_BUNDLE_RECORDS,
    BundleError,
    ReadBundle,
    decode_hashes,
    manifest_note_text,
    read_bundle,
    sha256_hex,
)
from ruta.faults import RutaError
from ruta.globalconf import ConfigurationAnchor, GlobalConf, open_configuration
from ruta.ids import IdentifierError, ServerId, ServiceId, SubsystemId
from ruta.merkle import MerkleError, leaf_hash, verify_consistency, verify_inclusion
from ruta.pki.signature import MessageVerifier
from ruta.v1 import globalconf_pb2, log_pb2, transport_pb2

__all__ = [
    "RecordReport",
    "VerificationReport",
    "request_hash",
    "verify_bundle",
]

#: Placeholder globalconf URL of an anchor built from the bundle's own signer (never fetched).
_UNPINNED_URL: Final = "https://unpinned.invalid/globalconf"
_KINDS: Final = {
    transport_pb2.MESSAGE_KIND_REQUEST: "request",
    transport_pb2.MESSAGE_KIND_RESPONSE: "response",
}
_DIRECTIONS: Final = {
    log_pb2.LOG_DIRECTION_SENT: "sent",
    log_pb2.LOG_DIRECTION_RECEIVED: "received",
}


def request_hash(header: bytes, signature_value: bytes) -> bytes:
    """SHA-256(request header bytes || request signature value): what a response binds to."""
    return hashlib.sha256(header + signature_value).digest()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


@dataclass
class RecordReport:
    """What was found about one record (``problems`` empty: every check passed)."""

    seq: int
    message_id: str = ""
    kind: str = ""
    direction: str = ""
    client: str = ""
    service: str = ""
    method: str = ""
    logged_at: str | None = None
    witnessed_at: str | None = None
    body: str = ""
    header_sha256: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def name(self) -> str:
        """How a report names this record: ``record 5 (message <id>)``."""
        return f"record {self.seq}" + (f" (message {self.message_id})" if self.message_id else "")


@dataclass
class VerificationReport:
    """The outcome of :func:`verify_bundle`: bundle-level problems, per-record findings,
    warnings that do not fail the bundle, and what was established."""

    source: str
    server: str = ""
    origin: str = ""
    exported_at: str = ""
    tree_size: int = 0
    configuration: str = ""
    configuration_pinned: bool = False
    witness: str = ""
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: list[RecordReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.records)

    @property
    def first_failure(self) -> str | None:
        """The first failure, naming the record when a record failed; ``None`` when verified."""
        if self.problems:
            return self.problems[0]
        for record in self.records:
            if record.problems:
                return f"{record.name()}: {record.problems[0]}"
        return None

    def to_json(self) -> str:
        """The report as JSON (``ok``, ``first_failure`` and every finding)."""
        data = asdict(self)
        data["ok"] = self.ok
        data["first_failure"] = self.first_failure
        for record, raw in zip(self.records, data["records"], strict=True):
            raw["ok"] = record.ok
        return json.dumps(data, indent=2, sort_keys=True)

    def text(self) -> str:
        """A readable report for people."""
        lines = [f"Evidence bundle {self.source}"]
        if self.server:
            lines.append(f"  exported by {self.server} (log {self.origin}) at {self.exported_at}")
        if self.configuration:
            pin = "signer pinned by the anchor" if self.configuration_pinned else "NOT pinned"
            lines.append(f"  global configuration {self.configuration} ({pin})")
        if self.witness:
            lines.append(f"  witness {self.witness}")
        lines.extend(
            f"  checkpoint size {cp['size']} cosigned at {cp['cosigned_at']}"
            for cp in self.checkpoints
        )
        lines.append(f"  records: {len(self.records)}, tree size {self.tree_size}")
        for r in self.records:
            mark = "ok  " if r.ok else "FAIL"
            lines.append(
                f"  {mark} #{r.seq} {r.kind} {r.direction} {r.message_id} "
                f"{r.client} -> {r.service}/{r.method} logged {r.logged_at} "
                f"witnessed by {r.witnessed_at} body {r.body}"
            )
            lines.extend(f"         - {p}" for p in r.problems)
        lines.extend(f"  warning: {w}" for w in self.warnings)
        lines.extend(f"  problem: {p}" for p in self.problems)
        failure = self.first_failure
        lines.append("RESULT: VERIFIED" if failure is None else f"RESULT: FAILED: {failure}")
        return "\n".join(lines) + "\n"


@dataclass
class _Leaf:
    report: RecordReport
    header: bytes
    parsed: transport_pb2.MessageHeader
    signature: transport_pb2.Signature


class _FailedError(Exception):
    """Stops verification at a bundle-level failure (already recorded in the report)."""


def verify_bundle(
    source: str | bytes | IO[bytes],
    *,
    anchor: ConfigurationAnchor | None = None,
    name: str | None = None,
) -> VerificationReport:
    """Verify an evidence bundle offline and return the report (never raises for bad input).

    ``anchor`` pins the registry's configuration-signing certificate; without it the bundled
    configuration is checked against the signer certificate it carries and the report says so.
    """
    report = VerificationReport(source=name or (source if isinstance(source, str) else "bundle"))
    try:
        bundle = read_bundle(source)
    except BundleError as exc:
        report.problems.append(exc.message)
        return report
    try:
        _Verification(bundle, report, anchor).run()
    except _FailedError:
        pass
    except (KeyError, TypeError, ValueError, AttributeError):
        report.problems.append("the manifest is malformed (a field is missing or mistyped)")
    return report


class _Verification:
    def __init__(
        self, bundle: ReadBundle, report: VerificationReport, anchor: ConfigurationAnchor | None
    ) -> None:
        self.bundle = bundle
        self.report = report
        self.anchor = anchor
        self.manifest = bundle.manifest
        self.file_problems: dict[str, str] = {}
        self.roots: dict[int, bytes] = {}
        self.cosigned_at: dict[int, datetime] = {}

    def fail(self, problem: str) -> _FailedError:
        self.report.problems.append(problem)
        return _FailedError()

    def run(self) -> None:
        m = self.manifest
        report = self.report
        report.server = str(m.get("server", ""))
        report.origin = str(m.get("origin", ""))
        report.exported_at = str(m.get("exported_at", ""))
        self._check_files()
        conf, raw_conf = self._configuration()
        log_key = self._log_key(raw_conf)
        self._manifest_signature(log_key)
        witness = self._witness(conf)
        self._checkpoints(log_key, witness)
        self._records(conf)

    # --- files and signatures ------------------------------------------------------------

    def _check_files(self) -> None:
        listed = self.manifest.get("files")
        if not isinstance(listed, dict):
            raise self.fail("the manifest lists no files")
        files = self.bundle.files
        for path, digest in listed.items():
            data = files.get(path)
            if data is None:
                self.file_problems[path] = f"file {path} listed in the manifest is missing"
            elif sha256_hex(data) != digest:
                self.file_problems[path] = f"file {path} does not match its manifest digest"
        for path in files:
            if path not in listed:
                self.file_problems[path] = f"file {path} is not covered by the manifest"
        for path in (GLOBALCONF_FILE, LOG_KEY_FILE):
            if path in self.file_problems:
                raise self.fail(self.file_problems[path])
        for path, problem in self.file_problems.items():
            if not path.startswith(("records/", "bodies/")):
                self.report.problems.append(problem)

    def _configuration(self) -> tuple[GlobalConf, globalconf_pb2.GlobalConfiguration]:
        signed = self.bundle.files.get(GLOBALCONF_FILE, b"")
        envelope = globalconf_pb2.SignedGlobalConfiguration()
        conf = globalconf_pb2.GlobalConfiguration()
        try:
            envelope.ParseFromString(signed)
            conf.ParseFromString(envelope.configuration)
            signer = x509.load_der_x509_certificate(envelope.signer_certificate)
        except (DecodeError, ValueError):
            raise self.fail("the bundled global configuration does not parse") from None
        anchor = self.anchor
        if anchor is None:
            self.report.warnings.append(
                "the configuration signer is not pinned (pass --anchor with the instance's "
                "configuration anchor); signer certificate SHA-256 "
                f"{sha256_hex(envelope.signer_certificate)}"
            )
            try:
                anchor = ConfigurationAnchor(
                    instance=conf.instance, globalconf_url=_UNPINNED_URL, certificates=(signer,)
                )
            except RutaError as exc:
                raise self.fail(f"global configuration: {exc.message}") from None
        else:
            self.report.configuration_pinned = True
        generated = conf.generated_at.ToDatetime(tzinfo=UTC)
        try:
            view = open_configuration(signed, anchor, now=generated)
        except RutaError as exc:
            raise self.fail(f"global configuration: {exc.message}") from None
        self.report.configuration = f"instance {view.instance} serial {view.serial}"
        return view, conf

    def _log_key(self, conf: globalconf_pb2.GlobalConfiguration) -> Verifier:
        server = self.report.server
        published = ""
        for entry in conf.servers:
            try:
                if str(ServerId.from_proto(entry.id)) == server:
                    published = entry.log_public_key
            except IdentifierError:
                continue
        bundled = self.bundle.files.get(LOG_KEY_FILE, b"").decode("utf-8", "replace").strip()
        if published and bundled and published != bundled:
            raise self.fail("the bundled log key is not the one the global configuration lists")
        if not published:
            self.report.warnings.append(
                f"the global configuration lists no log key for {server}; "
                "the bundled log key is used"
            )
        try:
            verifier = Verifier.from_vkey(published or bundled)
        except CheckpointError as exc:
            raise self.fail(f"log key: {exc.message}") from None
        if verifier.kind is not SignatureType.ED25519 or verifier.name != self.report.origin:
            raise self.fail("the log key is not an Ed25519 key named by the log origin")
        return verifier

    def _manifest_signature(self, log_key: Verifier) -> None:
        try:
            note = verify_note(self.bundle.signature, log_key)
        except CheckpointError as exc:
            raise self.fail(f"manifest signature: {exc.message}") from None
        if note.text != manifest_note_text(self.report.origin, self.bundle.manifest_bytes):
            raise self.fail("the manifest signature does not cover this manifest")

    def _witness(self, conf: GlobalConf) -> Verifier:
        try:
            verifier = Verifier.from_vkey(conf.witness_public_key.decode("utf-8"))
        except (UnicodeDecodeError, CheckpointError):
            raise self.fail("the global configuration names no valid witness key") from None
        if verifier.kind is not SignatureType.COSIGNATURE_V1:
            raise self.fail("the configuration's witness key is not a cosignature/v1 key")
        self.report.witness = verifier.name
        return verifier

    # --- checkpoints ---------------------------------------------------------------------

    def _checkpoints(self, log_key: Verifier, witness: Verifier) -> None:
        entries = self.manifest.get("checkpoints")
        if not isinstance(entries, list) or not entries or len(entries) > MAX_BUNDLE_RECORDS + 1:
            raise self.fail("the manifest lists no checkpoints")
        sizes: list[int] = []
        for entry in entries:
            size, path = int(entry["size"]), str(entry["file"])
            note = self.bundle.files.get(path)
            if note is None or path in self.file_problems:
                raise self.fail(self.file_problems.get(path, f"checkpoint {path} is missing"))
            try:
                checkpoint, _ = open_checkpoint(note, log_key)
                timestamp = verify_cosignature(
                    checkpoint.body(), parse_note(note).signatures, witness
                )
            except CheckpointError as exc:
                raise self.fail(f"checkpoint of size {size}: {exc.message}") from None
            if checkpoint.origin != self.report.origin or checkpoint.size != size:
                raise self.fail(f"checkpoint {path} is not of this log at size {size}")
            if sizes and size <= sizes[-1]:
                raise self.fail("the manifest lists checkpoints out of order")
            sizes.append(size)
            self.roots[size] = checkpoint.root
            self.cosigned_at[size] = datetime.fromtimestamp(timestamp, UTC)
            self.report.checkpoints.append(
                {"size": size, "cosigned_at": _iso(self.cosigned_at[size])}
            )
        tree = self.manifest.get("tree", {})
        self.report.tree_size = int(tree.get("size", -1))
        if self.report.tree_size != sizes[-1]:
            raise self.fail("the bundle's tree is not its newest checkpoint")
        proofs = {
            (int(p["from"]), int(p["to"])): decode_hashes(p["proof"], "a consistency proof")
            for p in self.manifest.get("consistency", [])
        }
        for size1, size2 in itertools.pairwise(sizes):
            if size1 == 0:
                continue
            proof = proofs.get((size1, size2))
            if proof is None:
                raise self.fail(f"no consistency proof from checkpoint {size1} to {size2}")
            try:
                verify_consistency(size1, size2, proof, self.roots[size1], self.roots[size2])
            except MerkleError as exc:
                raise self.fail(
                    f"checkpoints {size1} and {size2} are not consistent: {exc.message}"
                ) from None

    # --- records -------------------------------------------------------------------------

    def _records(self, conf: GlobalConf) -> None:
        entries = self.manifest.get("records")
        if not isinstance(entries, list) or len(entries) > MAX_BUNDLE_RECORDS:
            raise self.fail(f"the manifest lists no records or more than {MAX_BUNDLE_RECORDS}")
        verifier: MessageVerifier | None = None
        try:
            verifier = MessageVerifier(
                conf.trust_anchors, trusted_responders=conf.ocsp_responder_certs
            )
        except RutaError as exc:
            self.report.problems.append(f"message signatures cannot be checked: {exc.message}")
        leaves: dict[int, _Leaf] = {}
        seen: set[int] = set()
        previous = -1
        for entry in entries:
            seq = int(entry.get("seq", -1))
            record = RecordReport(seq=seq)
            self.report.records.append(record)
            if seq <= previous:
                record.problems.append("listed out of sequence order (records reordered)")
            previous = max(previous, seq)
            seen.add(seq)
            leaf = self._record(entry, record, verifier)
            if leaf is not None:
                leaves[seq] = leaf
        self._completeness(seen)
        self._bindings(leaves)
        self.report.records.sort(key=lambda r: r.seq)

    def _record(
        self, entry: Mapping[str, Any], record: RecordReport, verifier: MessageVerifier | None
    ) -> _Leaf | None:
        seq = record.seq
        path = str(entry.get("leaf", ""))
        data = self.bundle.files.get(path)
        if path in self.file_problems or data is None:
            record.problems.append(self.file_problems.get(path, "its leaf file is missing"))
            return None
        parsed = log_pb2.LogRecord()
        header = transport_pb2.MessageHeader()
        signature = transport_pb2.Signature()
        try:
            parsed.ParseFromString(data)
            header.ParseFromString(parsed.header)
            signature.ParseFromString(parsed.signature)
        except DecodeError:
            record.problems.append("its leaf is not a readable LogRecord")
            return None
        record.message_id = header.message_id
        record.kind = _KINDS.get(header.kind, "unknown")
        record.direction = _DIRECTIONS.get(parsed.direction, "unknown")
        record.method = header.method
        record.header_sha256 = sha256_hex(parsed.header)
        try:
            logged = parsed.logged_at.ToDatetime(tzinfo=UTC)
            header.created_at.ToDatetime(tzinfo=UTC)  # checked here, used by _signature
        except ValueError:
            record.problems.append("its leaf carries a time out of range")
            return None
        record.logged_at = _iso(logged)
        try:
            record.client = str(SubsystemId.from_proto(header.client))
            record.service = str(ServiceId.from_proto(header.service))
        except IdentifierError:
            record.problems.append("its header names an invalid client or service")
            return None
        self._endpoint(parsed.direction, header, record)
        if parsed.sequence != seq:
            record.problems.append(
                f"its leaf says it is record {parsed.sequence} (records moved or reordered)"
            )
        self._placement(entry, record, data, logged)
        if verifier is not None:
            self._signature(verifier, parsed, header, signature, record)
        self._body(entry, record, header)
        return _Leaf(report=record, header=parsed.header, parsed=header, signature=signature)

    def _placement(
        self, entry: Mapping[str, Any], record: RecordReport, data: bytes, logged: datetime
    ) -> None:
        """Inclusion in the newest cosigned tree, and the earliest cosignature holding it."""
        seq = record.seq
        try:
            proof = decode_hashes(entry.get("inclusion", []), "an inclusion proof")
            verify_inclusion(
                leaf_hash(data),
                seq,
                self.report.tree_size,
                proof,
                self.roots[self.report.tree_size],
            )
        except (MerkleError, BundleError) as exc:
            record.problems.append(
                f"it is not in the log's cosigned tree at this position: {exc.message}"
            )
        witnessed_by = int(entry.get("witnessed_by", -1))
        if witnessed_by not in self.cosigned_at or not seq < witnessed_by:
            record.problems.append("no cosigned checkpoint of the bundle holds it")
            return
        record.witnessed_at = _iso(self.cosigned_at[witnessed_by])
        # Cosignature timestamps are whole seconds: allow the second they were cut to.
        if logged >= self.cosigned_at[witnessed_by] + timedelta(seconds=1):
            self.report.warnings.append(
                f"{record.name()} is logged after the cosignature that holds it (clocks differ)"
            )

    @staticmethod
    def _signature(
        verifier: MessageVerifier,
        parsed: log_pb2.LogRecord,
        header: transport_pb2.MessageHeader,
        signature: transport_pb2.Signature,
        record: RecordReport,
    ) -> None:
        """The message signature, and the certificate's status at signing time (stapled OCSP);
        a request is signed by the client's member, a response by the provider's."""
        claimed = (
            SubsystemId.from_proto(header.client).member
            if header.kind == transport_pb2.MESSAGE_KIND_REQUEST
            else ServiceId.from_proto(header.service).member
        )
        try:
            verifier.verify(
                parsed.header,
                signature,
                claimed_member=claimed,
                signed_at=header.created_at.ToDatetime(tzinfo=UTC),
            )
        except RutaError as exc:
            record.problems.append(f"its message signature fails: {exc.message}")
        if sha256_hex(signature.certificate) != parsed.certificate_fingerprint:
            record.problems.append("its certificate fingerprint is not its signer's")

    def _endpoint(
        self, direction: int, header: transport_pb2.MessageHeader, record: RecordReport
    ) -> None:
        """A sent message names this server as sender, a received one as receiver."""
        field_name = "sender" if direction == log_pb2.LOG_DIRECTION_SENT else "receiver"
        try:
            named = str(ServerId.from_proto(getattr(header, field_name)))
        except IdentifierError:
            named = "nobody"
        if named != self.report.server:
            record.problems.append(
                f"it was logged as {record.direction} by {self.report.server} but names "
                f"{named} as its {field_name}"
            )

    def _body(
        self, entry: Mapping[str, Any], record: RecordReport, header: transport_pb2.MessageHeader
    ) -> None:
        state = str(entry.get("body_state", ""))
        if state not in BODY_STATES:
            record.problems.append("its body state is unknown")
            return
        record.body = state
        path = entry.get("body")
        if state == "unreadable":
            record.problems.append("its stored body did not authenticate on export")
            return
        if state != "stored":
            if path is not None:
                record.problems.append(f"a body file is given though the body is {state}")
            return
        data = self.bundle.files.get(str(path))
        if str(path) in self.file_problems or data is None:
            record.problems.append(self.file_problems.get(str(path), "its body file is missing"))
            return
        if hashlib.sha256(data).digest() != header.body_sha256:
            record.problems.append("its body does not match the digest in the signed header")
        else:
            record.body = "stored, digest ok"

    def _completeness(self, seen: set[int]) -> None:
        claim = self.manifest.get("complete_range")
        if not claim:
            return
        start, end = int(claim["from"]), int(claim["to"])
        if not 0 <= start <= end <= self.report.tree_size:
            self.report.problems.append("the claimed complete range exceeds the cosigned tree")
            return
        for seq in range(start, end):
            if seq not in seen:
                self.report.records.append(
                    RecordReport(
                        seq=seq,
                        problems=[
                            f"it is missing: the export claims every record from {start} to "
                            f"{end - 1} and the cosigned tree holds {self.report.tree_size}"
                        ],
                    )
                )

    def _bindings(self, leaves: Mapping[int, _Leaf]) -> None:
        # A response is bound to the request its request_hash names. A log may hold several
        # requests of one client under one message id (a consumer that signed a reused id
        # before it refused them; the provider refused the replay), so the pairing is by hash
        # among the requests with the response's (client, message id).
        requests: dict[tuple[str, str], dict[bytes, _Leaf]] = {}
        for leaf in leaves.values():
            if leaf.parsed.kind == transport_pb2.MESSAGE_KIND_REQUEST:
                digest = request_hash(leaf.header, leaf.signature.value)
                key = (leaf.report.client, leaf.parsed.message_id)
                requests.setdefault(key, {})[digest] = leaf
        for leaf in leaves.values():
            if leaf.parsed.kind != transport_pb2.MESSAGE_KIND_RESPONSE:
                continue
            candidates = requests.get((leaf.report.client, leaf.parsed.message_id))
            if not candidates:
                self.report.warnings.append(
                    f"{leaf.report.name()}: its request is not in this bundle"
                )
                continue
            if leaf.parsed.request_hash not in candidates:
                seqs = ", ".join(str(r.report.seq) for r in candidates.values())
                noun = "record" if len(candidates) == 1 else "records"
                leaf.report.problems.append(
                    f"it is not bound to request {noun} {seqs} (request_hash)"
                )
