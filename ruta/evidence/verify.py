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

import bisect
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Final

import grpc
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
from ruta.evidence.attachments import (
    AttachmentError,
    AttachmentKind,
    attach_signature,
    attachment_path,
    resolve_shared,
)
from ruta.evidence.bundle import (
    BODY_STATES,
    FORMAT_V1,
    FORMAT_V2,
    GLOBALCONF_FILE,
    LOG_KEY_FILE,
    MAX_BUNDLE_RECORDS,
    BundleArchive,
    BundleError,
    body_path,
    checkpoint_path,
    decode_hashes,
    manifest_note_text,
    open_bundle,
    record_path,
    sha256_hex,
)
from ruta.evidence.rules import Rule
from ruta.faults import BACKEND_FAULT_PREFIX, RutaError
from ruta.globalconf import ConfigurationAnchor, GlobalConf, open_configuration
from ruta.ids import IdentifierError, ServerId, ServiceId, SubsystemId
from ruta.merkle import MerkleError, leaf_hash, verify_consistency, verify_inclusion
from ruta.node_logs import node_log_verifier
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


#: gRPC status code -> name, for the status a response header carries.
_STATUS_NAMES: Final = {code.value[0]: code.name for code in grpc.StatusCode}
#: Longest header text (method, purpose, fault) a report prints; the rest is cut.
MAX_REPORTED_TEXT: Final = 200


def _printable(text: str) -> str:
    """Header text as a report line may carry it: control and other unprintable characters
    escaped (a signer cannot add lines to the report), at most :data:`MAX_REPORTED_TEXT`."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text[:MAX_REPORTED_TEXT])
    return shown + ("…" if len(text) > MAX_REPORTED_TEXT else "")


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
    #: The purpose the client stated (signed in the header of requests and responses alike).
    purpose: str = ""
    #: Responses only: the gRPC status the provider answered with (``OK``, ``INVALID_ARGUMENT``
    #: ...) and the fault code it signed with a refusal (empty for a success): the provider
    #: server's own, or its backend's as the caller got it (``backend.client.invalid_request``,
    #: docs/adr/0024), with the backend's fault id.
    status: str = ""
    fault: str = ""
    fault_id: str = ""
    problems: list[str] = field(default_factory=list)
    #: The rule each problem breaks (docs/evidence-format.md), in the order of ``problems``.
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, rule: Rule, problem: str) -> None:
        """Record ``problem``, a failure of ``rule``."""
        self.problems.append(problem)
        self.reasons.append(str(rule))

    @property
    def refused(self) -> bool:
        """A response that is not a success: the provider or its backend refused the call."""
        return self.kind == "response" and bool(self.status) and self.status != "OK"

    def outcome(self) -> str:
        """The response's outcome as the report prints it: ``status OK``, or ``status
        INVALID_ARGUMENT fault client.invalid_request``; empty for a request."""
        if self.kind != "response" or not self.status:
            return ""
        return f"status {self.status}" + (f" fault {self.fault}" if self.fault else "")

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
    #: The verification parameters applied, and where they came from.
    parameters: str = ""
    witness: str = ""
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: The rule each bundle-level problem breaks, in the order of ``problems``.
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: list[RecordReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.records)

    def fail(self, rule: Rule, problem: str) -> None:
        """Record a bundle-level ``problem``, a failure of ``rule``."""
        self.problems.append(problem)
        self.reasons.append(str(rule))

    @property
    def first_reason(self) -> str | None:
        """The rule :attr:`first_failure` breaks; ``None`` when verified."""
        if self.problems:
            return self.reasons[0] if self.reasons else ""
        for record in self.records:
            if record.problems:
                return record.reasons[0] if record.reasons else ""
        return None

    @property
    def first_failure(self) -> str | None:
        """The first failure, naming the record when a record failed; ``None`` when verified."""
        if self.problems:
            return self.problems[0]
        for record in self.records:
            if record.problems:
                return f"{record.name()}: {record.problems[0]}"
        return None

    def outcomes(self) -> dict[str, int]:
        """How many responses ended how (``status OK``, ``status NOT_FOUND fault
        client.not_found``, ...), most frequent first: a refusal is signed like a success, and
        is told apart only by these."""
        counts: dict[str, int] = {}
        for record in self.records:
            outcome = record.outcome()
            if outcome:
                counts[outcome] = counts.get(outcome, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def to_json(self) -> str:
        """The report as JSON (``ok``, ``first_failure`` and every finding)."""
        data = asdict(self)
        data["ok"] = self.ok
        data["first_failure"] = self.first_failure
        data["first_reason"] = self.first_reason
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
        if self.parameters:
            lines.append(f"  signature checks: {self.parameters}")
        if self.witness:
            lines.append(f"  witness {self.witness}")
        lines.extend(
            f"  checkpoint size {cp['size']} cosigned at {cp['cosigned_at']}"
            for cp in self.checkpoints
        )
        lines.append(f"  records: {len(self.records)}, tree size {self.tree_size}")
        outcomes = self.outcomes()
        if outcomes:
            lines.append(
                "  responses: "
                + ", ".join(f"{count} {outcome}" for outcome, count in outcomes.items())
            )
        for r in self.records:
            mark = "ok  " if r.ok else "FAIL"
            outcome = f" {r.outcome()}" if r.outcome() else ""
            if r.fault_id:
                outcome += f" fault_id {r.fault_id}"
            purpose = f" purpose {r.purpose}" if r.purpose else ""
            lines.append(
                f"  {mark} #{r.seq} {r.kind} {r.direction} {r.message_id} "
                f"{r.client} -> {r.service}/{r.method}{outcome}{purpose} logged {r.logged_at} "
                f"witnessed by {r.witnessed_at} body {r.body}"
            )
            lines.extend(
                f"         - {p} [{rule}]"
                for p, rule in itertools.zip_longest(r.problems, r.reasons, fillvalue="")
            )
        lines.extend(f"  warning: {w}" for w in self.warnings)
        lines.extend(
            f"  problem: {p} [{rule}]"
            for p, rule in itertools.zip_longest(self.problems, self.reasons, fillvalue="")
        )
        failure = self.first_failure
        lines.append(
            "RESULT: VERIFIED"
            if failure is None
            else f"RESULT: FAILED: {failure} [{self.first_reason}]"
        )
        return "\n".join(lines) + "\n"


def _describe(
    record: RecordReport, parsed: log_pb2.LogRecord, header: transport_pb2.MessageHeader
) -> None:
    """Fill in what the report shows of a record from its leaf and header."""
    record.message_id = header.message_id
    record.kind = _KINDS.get(header.kind, "unknown")
    record.direction = _DIRECTIONS.get(parsed.direction, "unknown")
    record.method = _printable(header.method)
    record.purpose = _printable(header.purpose)
    if header.kind == transport_pb2.MESSAGE_KIND_RESPONSE:
        record.status = _STATUS_NAMES.get(header.status_code, f"code {header.status_code}")
        if header.fault or not header.backend_fault:
            record.fault = _printable(header.fault)
        else:
            record.fault = _printable(BACKEND_FAULT_PREFIX + header.backend_fault)
            record.fault_id = _printable(header.backend_fault_id)


@dataclass
class _Leaf:
    report: RecordReport
    header: bytes
    parsed: transport_pb2.MessageHeader
    #: The signature value (what a response's request hash binds).
    signature_value: bytes


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
    Memory stays bounded whatever the bundle: files are unpacked one at a time within the
    bounds of :mod:`ruta.evidence.bundle`, bodies and certificates hashed as streams.
    """
    report = VerificationReport(source=name or (source if isinstance(source, str) else "bundle"))
    try:
        with open_bundle(source) as bundle:
            try:
                _Verification(bundle, report, anchor).run()
            except _FailedError:
                pass
            except (KeyError, TypeError, ValueError, AttributeError):
                report.fail(
                    Rule.MANIFEST_SCHEMA,
                    "the manifest is malformed (a field is missing or mistyped)",
                )
    except BundleError as exc:
        report.fail(exc.rule, exc.message)
    return report


class _Verification:
    def __init__(
        self, bundle: BundleArchive, report: VerificationReport, anchor: ConfigurationAnchor | None
    ) -> None:
        self.bundle = bundle
        self.report = report
        self.anchor = anchor
        self.manifest = bundle.manifest
        self.listed: dict[str, str] = {}
        #: Files found wrong (missing, corrupt, not matching their digest), with the rule broken.
        self.file_problems: dict[str, tuple[Rule, str]] = {}
        #: Listed files a check has used (the rest are hashed at the end).
        self.used: set[str] = set()
        self.roots: dict[int, bytes] = {}
        #: Checkpoint sizes of the bundle, increasing.
        self.sizes: list[int] = []
        self.cosigned_at: dict[int, datetime] = {}
        #: Attachments (certificates, OCSP responses) read so far, by digest; ``None``: not
        #: usable (the reason in :attr:`file_problems`).
        self.attachments: dict[bytes, bytes | None] = {}

    def fail(self, rule: Rule, problem: str) -> _FailedError:
        self.report.fail(rule, problem)
        return _FailedError()

    def run(self) -> None:
        m = self.manifest
        report = self.report
        report.server = str(m.get("server", ""))
        report.origin = str(m.get("origin", ""))
        report.exported_at = str(m.get("exported_at", ""))
        self._check_listing()
        conf, raw_conf = self._configuration()
        log_key = self._log_key(raw_conf)
        self._manifest_signature(log_key)
        witness = self._witness(conf)
        self._checkpoints(log_key, witness)
        self._records(conf)
        self._remaining_files()

    # --- files and signatures ------------------------------------------------------------

    def _check_listing(self) -> None:
        """Every file of the zip is listed in the manifest, before any is unpacked."""
        listed = self.manifest.get("files")
        if not isinstance(listed, dict):
            raise self.fail(Rule.MANIFEST_SCHEMA, "the manifest lists no files")
        self.listed = {str(path): str(digest) for path, digest in listed.items()}
        unlisted = sorted(self.bundle.names - self.listed.keys())
        for path in unlisted:
            self.report.fail(Rule.FILES_UNLISTED, f"file {path} is not covered by the manifest")
        if unlisted:
            raise _FailedError()

    def _problem_of(self, path: str) -> tuple[Rule, str] | None:
        """Why the listed file ``path`` cannot be used (``None``: it can)."""
        if path not in self.listed:
            return Rule.FILES_MISSING, f"file {path} is not listed in the manifest"
        if path not in self.bundle.names:
            return Rule.FILES_MISSING, f"file {path} listed in the manifest is missing"
        return self.file_problems.get(path)

    def _load(self, path: str, *, stream: bool = False) -> bytes | None:
        """The bytes of listed file ``path`` (``stream``: only its SHA-256, hashed as a stream),
        checked against the manifest's digest; ``None`` when missing or wrong, the reason kept in
        :attr:`file_problems`."""
        self.used.add(path)
        problem = self._problem_of(path)
        if problem is not None:
            self.file_problems[path] = problem
            return None
        try:
            data = b"" if stream else self.bundle.read(path)
            digest = self.bundle.sha256(path) if stream else hashlib.sha256(data).digest()
        except BundleError as exc:
            self.file_problems[path] = (exc.rule, exc.message)
            return None
        if digest.hex() != self.listed[path]:
            self.file_problems[path] = (
                Rule.FILES_DIGEST,
                f"file {path} does not match its manifest digest",
            )
            return None
        return digest if stream else data

    def _load_or_fail(self, path: str) -> bytes:
        data = self._load(path)
        if data is None:
            raise self.fail(*self.file_problems[path])
        return data

    def _remaining_files(self) -> None:
        """Listed files no check used (certificate and OCSP copies) still match their digests;
        a leaf or body file no record refers to is refused."""
        for path in sorted(self.listed.keys() - self.used):
            if path.startswith(("records/", "bodies/")):
                self.report.fail(
                    Rule.FILES_UNREFERENCED, f"file {path} is listed but no record refers to it"
                )
            elif self._load(path, stream=True) is None:
                self.report.fail(*self.file_problems[path])

    def _configuration(self) -> tuple[GlobalConf, globalconf_pb2.GlobalConfiguration]:
        signed = self._load_or_fail(GLOBALCONF_FILE)
        envelope = globalconf_pb2.SignedGlobalConfiguration()
        conf = globalconf_pb2.GlobalConfiguration()
        try:
            envelope.ParseFromString(signed)
            conf.ParseFromString(envelope.configuration)
            signer = x509.load_der_x509_certificate(envelope.signer_certificate)
        except (DecodeError, ValueError):
            raise self.fail(
                Rule.GLOBALCONF_INVALID, "the bundled global configuration does not parse"
            ) from None
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
                raise self.fail(
                    Rule.GLOBALCONF_INVALID, f"global configuration: {exc.message}"
                ) from None
        else:
            self.report.configuration_pinned = True
        try:
            generated = conf.generated_at.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            raise self.fail(
                Rule.GLOBALCONF_INVALID, "the configuration's generated_at is out of range"
            ) from None
        try:
            view = open_configuration(signed, anchor, now=generated)
        except RutaError as exc:
            raise self.fail(
                Rule.GLOBALCONF_INVALID, f"global configuration: {exc.message}"
            ) from None
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
        bundled = self._load_or_fail(LOG_KEY_FILE).decode("utf-8", "replace").strip()
        published = self._node_log_key(published)
        if published and bundled and published != bundled:
            raise self.fail(
                Rule.LOG_KEY_MISMATCH,
                "the bundled log key is not the one the global configuration lists",
            )
        if not published:
            self.report.warnings.append(
                f"the global configuration lists no log key for {server}; "
                "the bundled log key is used"
            )
        try:
            verifier = Verifier.from_vkey(published or bundled)
        except CheckpointError as exc:
            raise self.fail(Rule.LOG_KEY_INVALID, f"log key: {exc.message}") from None
        if verifier.kind is not SignatureType.ED25519 or verifier.name != self.report.origin:
            raise self.fail(
                Rule.LOG_KEY_INVALID, "the log key is not an Ed25519 key named by the log origin"
            )
        return verifier

    def _node_log_key(self, published: str) -> str:
        """The published key's text for the bundle's log: itself, or, for a node log of the
        server (docs/adr/0030), the same key named by the node log's origin."""
        if not published:
            return published
        try:
            verifier = Verifier.from_vkey(published)
        except CheckpointError:
            return published  # reported as invalid below
        derived = node_log_verifier(verifier, self.report.origin)
        return published if derived is None else derived.vkey()

    def _manifest_signature(self, log_key: Verifier) -> None:
        try:
            note = verify_note(self.bundle.signature, log_key)
        except CheckpointError as exc:
            raise self.fail(Rule.MANIFEST_SIGNATURE, f"manifest signature: {exc.message}") from None
        if note.text != manifest_note_text(
            self.report.origin, self.bundle.manifest_bytes, str(self.manifest.get("format"))
        ):
            raise self.fail(
                Rule.MANIFEST_SIGNATURE, "the manifest signature does not cover this manifest"
            )

    def _witness(self, conf: GlobalConf) -> Verifier:
        try:
            verifier = Verifier.from_vkey(conf.witness_public_key.decode("utf-8"))
        except (UnicodeDecodeError, CheckpointError):
            raise self.fail(
                Rule.WITNESS_KEY, "the global configuration names no valid witness key"
            ) from None
        if verifier.kind is not SignatureType.COSIGNATURE_V1:
            raise self.fail(
                Rule.WITNESS_KEY, "the configuration's witness key is not a cosignature/v1 key"
            )
        self.report.witness = verifier.name
        return verifier

    # --- checkpoints ---------------------------------------------------------------------

    def _checkpoints(self, log_key: Verifier, witness: Verifier) -> None:
        entries = self.manifest.get("checkpoints")
        if not isinstance(entries, list) or not entries or len(entries) > MAX_BUNDLE_RECORDS + 1:
            raise self.fail(Rule.MANIFEST_SCHEMA, "the manifest lists no checkpoints")
        sizes: list[int] = []
        for entry in entries:
            size, path = int(entry["size"]), str(entry["file"])
            if path != checkpoint_path(size):
                raise self.fail(
                    Rule.CHECKPOINT_INVALID,
                    f"the checkpoint of size {size} is not at {checkpoint_path(size)}",
                )
            note = self._load_or_fail(path)
            try:
                checkpoint, _ = open_checkpoint(note, log_key)
                timestamp = verify_cosignature(
                    checkpoint.body(), parse_note(note).signatures, witness
                )
            except CheckpointError as exc:
                raise self.fail(
                    Rule.CHECKPOINT_INVALID, f"checkpoint of size {size}: {exc.message}"
                ) from None
            if checkpoint.origin != self.report.origin or checkpoint.size != size:
                raise self.fail(
                    Rule.CHECKPOINT_INVALID, f"checkpoint {path} is not of this log at size {size}"
                )
            if sizes and size <= sizes[-1]:
                raise self.fail(
                    Rule.CHECKPOINT_ORDER, "the manifest lists checkpoints out of order"
                )
            cosigned_at = datetime.fromtimestamp(timestamp, UTC)
            if sizes and cosigned_at < self.cosigned_at[sizes[-1]]:
                raise self.fail(
                    Rule.CHECKPOINT_TIME_BACKWARDS,
                    f"the witness cosigned checkpoint {size} at {_iso(cosigned_at)}, before the "
                    f"smaller checkpoint {sizes[-1]} ({_iso(self.cosigned_at[sizes[-1]])})",
                )
            sizes.append(size)
            self.roots[size] = checkpoint.root
            self.cosigned_at[size] = cosigned_at
            self.report.checkpoints.append(
                {"size": size, "cosigned_at": _iso(self.cosigned_at[size])}
            )
        tree = self.manifest.get("tree", {})
        self.report.tree_size = int(tree.get("size", -1))
        if self.report.tree_size != sizes[-1] or tree.get("checkpoint") != checkpoint_path(
            sizes[-1]
        ):
            raise self.fail(Rule.TREE_NOT_NEWEST, "the bundle's tree is not its newest checkpoint")
        self.sizes = sizes
        self._consistency(sizes)

    def _consistency(self, sizes: list[int]) -> None:
        """One consistency proof between each two consecutive checkpoints, and no other."""
        consecutive = set(itertools.pairwise(sizes))
        proofs: dict[tuple[int, int], tuple[bytes, ...]] = {}
        for p in self.manifest.get("consistency", []):
            pair = (int(p["from"]), int(p["to"]))
            if pair not in consecutive or pair in proofs:
                raise self.fail(
                    Rule.CONSISTENCY_INVALID,
                    f"a consistency proof from {pair[0]} to {pair[1]} is listed twice or is not "
                    "between consecutive checkpoints of the bundle",
                )
            proofs[pair] = decode_hashes(p["proof"], "a consistency proof")
        for size1, size2 in itertools.pairwise(sizes):
            if size1 == 0:
                continue
            proof = proofs.get((size1, size2))
            if proof is None:
                raise self.fail(
                    Rule.CONSISTENCY_MISSING,
                    f"no consistency proof from checkpoint {size1} to {size2}",
                )
            try:
                verify_consistency(size1, size2, proof, self.roots[size1], self.roots[size2])
            except MerkleError as exc:
                raise self.fail(
                    Rule.CONSISTENCY_INVALID,
                    f"checkpoints {size1} and {size2} are not consistent: {exc.message}",
                ) from None

    # --- records -------------------------------------------------------------------------

    def _records(self, conf: GlobalConf) -> None:
        entries = self.manifest.get("records")
        if not isinstance(entries, list) or len(entries) > MAX_BUNDLE_RECORDS:
            raise self.fail(
                Rule.MANIFEST_SCHEMA,
                f"the manifest lists no records or more than {MAX_BUNDLE_RECORDS}",
            )
        verifier: MessageVerifier | None = None
        try:
            verifier = MessageVerifier(
                conf.trust_anchors,
                ocsp_freshness=conf.ocsp_freshness,
                ocsp_clock_skew=conf.ocsp_clock_skew,
                trusted_responders=conf.ocsp_responder_certs,
            )
            published = conf.ocsp_freshness_seconds or conf.ocsp_clock_skew_seconds
            origin = "the configuration" if published else "defaults"
            self.report.parameters = (
                f"OCSP freshness {int(conf.ocsp_freshness.total_seconds())} s, clock skew "
                f"{int(conf.ocsp_clock_skew.total_seconds())} s ({origin})"
            )
        except RutaError as exc:
            self.report.fail(
                Rule.GLOBALCONF_INVALID, f"message signatures cannot be checked: {exc.message}"
            )
        leaves: dict[int, _Leaf] = {}
        seen: set[int] = set()
        previous = -1
        for entry in entries:
            seq = int(entry.get("seq", -1))
            record = RecordReport(seq=seq)
            self.report.records.append(record)
            if seq <= previous:
                record.fail(Rule.RECORD_ORDER, "listed out of sequence order (records reordered)")
            previous = max(previous, seq)
            seen.add(seq)
            # The record's files count as referenced whether or not its checks get to them.
            self.used.update(str(entry[key]) for key in ("leaf", "body") if entry.get(key))
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
        body = entry.get("body")
        if path != record_path(seq) or body not in (None, body_path(seq)):
            record.fail(
                Rule.RECORD_LEAF_PATH,
                f"its files are not at {record_path(seq)} and {body_path(seq)}",
            )
            return None
        data = self._load(path)
        if data is None:
            record.fail(*self.file_problems[path])
            return None
        parsed = log_pb2.LogRecord()
        header = transport_pb2.MessageHeader()
        signature = transport_pb2.Signature()
        try:
            parsed.ParseFromString(data)
            header.ParseFromString(parsed.header)
            signature.ParseFromString(parsed.signature)
            unreadable = self._form_problem(parsed)
        except DecodeError:
            unreadable = "its leaf is not a readable LogRecord"
        if unreadable is not None:
            record.fail(Rule.RECORD_UNREADABLE, unreadable)
            return None
        signature_value = signature.value
        if parsed.HasField("signature_ref"):
            try:
                signature_value = resolve_shared(parsed.signature_ref, self._attachment).value
            except AttachmentError:
                signature_value = b""  # the signature check names the record and its problem
        _describe(record, parsed, header)
        record.header_sha256 = sha256_hex(parsed.header)
        try:
            logged = parsed.logged_at.ToDatetime(tzinfo=UTC)
            header.created_at.ToDatetime(tzinfo=UTC)  # checked here, used by _signature
        except ValueError:
            record.fail(Rule.RECORD_TIME, "its leaf carries a time out of range")
            return None
        record.logged_at = _iso(logged)
        try:
            record.client = str(SubsystemId.from_proto(header.client))
            record.service = str(ServiceId.from_proto(header.service))
        except IdentifierError:
            record.fail(Rule.RECORD_IDENTIFIERS, "its header names an invalid client or service")
            return None
        self._endpoint(parsed.direction, header, record)
        if parsed.sequence != seq:
            record.fail(
                Rule.RECORD_SEQUENCE,
                f"its leaf says it is record {parsed.sequence} (records moved or reordered)",
            )
        self._placement(entry, record, data, logged)
        if verifier is not None:
            self._signature(verifier, parsed, header, signature, record)
        self._body(entry, record, header)
        return _Leaf(
            report=record, header=parsed.header, parsed=header, signature_value=signature_value
        )

    def _form_problem(self, parsed: log_pb2.LogRecord) -> str | None:
        """Why a leaf's signature is in neither form of section 6.3 (``None``: it is)."""
        if not parsed.HasField("signature_ref"):
            return None
        if parsed.signature or parsed.certificate_fingerprint:
            return "its leaf names its attachments by digest but also carries them inline"
        if self.manifest.get("format") == FORMAT_V1:
            return f"its leaf names its attachments by digest, which a {FORMAT_V1} bundle cannot"
        if parsed.signature_ref.shared_sha256 and self.manifest.get("format") == FORMAT_V2:
            return (
                "its leaf names the shared part of its batch signature by digest, which a "
                f"{FORMAT_V2} bundle cannot"
            )
        return None

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
            record.fail(
                Rule.RECORD_INCLUSION,
                f"it is not in the log's cosigned tree at this position: {exc.message}",
            )
        witnessed_by = int(entry.get("witnessed_by", -1))
        above = bisect.bisect_right(self.sizes, seq)
        if above == len(self.sizes) or witnessed_by != self.sizes[above]:
            record.fail(
                Rule.RECORD_WITNESSED_BY,
                "its witnessed_by is not the smallest checkpoint of the bundle that holds it",
            )
            return
        record.witnessed_at = _iso(self.cosigned_at[witnessed_by])
        # Cosignature timestamps are whole seconds: allow the second they were cut to.
        if logged >= self.cosigned_at[witnessed_by] + timedelta(seconds=1):
            self.report.warnings.append(
                f"{record.name()} is logged after the cosignature that holds it (clocks differ)"
            )

    def _attachment(self, kind: AttachmentKind, digest: bytes) -> bytes | None:
        """The bundle's copy of an attachment a leaf names (read once, checked against the
        manifest's digest); ``None`` if missing or wrong (the reason in :attr:`file_problems`)."""
        if digest not in self.attachments:
            self.attachments[digest] = self._load(attachment_path(kind, digest))
        return self.attachments[digest]

    def _attached(
        self, logged: log_pb2.LoggedSignature, record: RecordReport
    ) -> transport_pb2.Signature | None:
        """The full signature of a format-2 leaf, its attachments taken from the bundle and
        checked against the digests the leaf names them by (``None``: failed, recorded)."""
        try:
            return attach_signature(logged, self._attachment)
        except AttachmentError as exc:
            paths = []
            if logged.shared_sha256:
                paths.append(attachment_path(AttachmentKind.SHARED_SIGNATURE, logged.shared_sha256))
                try:
                    logged = resolve_shared(logged, self._attachment)
                except AttachmentError:
                    logged = log_pb2.LoggedSignature()
            paths += [
                attachment_path(AttachmentKind.CERTIFICATE, logged.certificate_sha256),
                attachment_path(AttachmentKind.OCSP_RESPONSE, logged.ocsp_response_sha256),
                *(attachment_path(AttachmentKind.CERTIFICATE, d) for d in logged.chain_sha256),
            ]
            problems = [self.file_problems[path] for path in paths if path in self.file_problems]
            if problems:
                record.fail(*problems[0])
            else:
                record.fail(Rule.RECORD_FINGERPRINT, f"its signature: {exc.message}")
            return None

    def _signature(
        self,
        verifier: MessageVerifier,
        parsed: log_pb2.LogRecord,
        header: transport_pb2.MessageHeader,
        signature: transport_pb2.Signature,
        record: RecordReport,
    ) -> None:
        """The message signature, and the certificate's status at signing time (stapled OCSP);
        a request is signed by the client's member, a response by the provider's. A format-2
        leaf's certificates and OCSP response come from the bundle, each matching the digest
        the leaf names it by."""
        if parsed.HasField("signature_ref"):
            attached = self._attached(parsed.signature_ref, record)
            if attached is None:
                return
            signature = attached
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
            record.fail(Rule.RECORD_SIGNATURE, f"its message signature fails: {exc.message}")
        inline = not parsed.HasField("signature_ref")
        if inline and sha256_hex(signature.certificate) != parsed.certificate_fingerprint:
            record.fail(Rule.RECORD_FINGERPRINT, "its certificate fingerprint is not its signer's")

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
            record.fail(
                Rule.RECORD_ENDPOINT,
                f"it was logged as {record.direction} by {self.report.server} but names "
                f"{named} as its {field_name}",
            )

    def _body(
        self, entry: Mapping[str, Any], record: RecordReport, header: transport_pb2.MessageHeader
    ) -> None:
        state = str(entry.get("body_state", ""))
        if state not in BODY_STATES:
            record.fail(Rule.RECORD_BODY_STATE, "its body state is unknown")
            return
        record.body = state
        path = entry.get("body")
        if state == "unreadable":
            record.fail(Rule.RECORD_BODY_STATE, "its stored body did not authenticate on export")
            return
        if state != "stored":
            if path is not None:
                record.fail(
                    Rule.RECORD_BODY_STATE, f"a body file is given though the body is {state}"
                )
            return
        digest = self._load(str(path), stream=True)
        if digest is None:
            record.fail(*self.file_problems[str(path)])
            return
        if digest != header.body_sha256:
            record.fail(
                Rule.RECORD_BODY_DIGEST, "its body does not match the digest in the signed header"
            )
        else:
            record.body = "stored, digest ok"

    def _completeness(self, seen: set[int]) -> None:
        claim = self.manifest.get("complete_range")
        if not claim:
            return
        start, end = int(claim["from"]), int(claim["until"])
        if not 0 <= start <= end <= self.report.tree_size:
            self.report.fail(
                Rule.RANGE_INVALID, "the claimed complete range exceeds the cosigned tree"
            )
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
                        reasons=[str(Rule.RANGE_MISSING_RECORD)],
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
                digest = request_hash(leaf.header, leaf.signature_value)
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
                leaf.report.fail(
                    Rule.RECORD_BINDING,
                    f"it is not bound to request {noun} {seqs} (request_hash)",
                )
