"""The named rules of ``ruta-evidence`` v2 and v1 verification (docs/evidence-format.md, 7).

Every failure ``ruta audit verify`` reports carries one of these names, next to a sentence for
people. The names are stable: a script, another verifier or a test may rely on them. They are
listed in the order the specification applies them.
"""

from __future__ import annotations

import enum

__all__ = ["Rule"]


class Rule(enum.StrEnum):
    """A rule of the specification a bundle can break. Never rename one."""

    # 1. The container (zip), before anything but the manifest is inflated.
    BUNDLE_UNREADABLE = "bundle.unreadable"
    BUNDLE_TOO_LARGE = "bundle.too_large"
    BUNDLE_NOT_ZIP = "bundle.not_zip"
    BUNDLE_TOO_MANY_FILES = "bundle.too_many_files"
    BUNDLE_UNSAFE_NAME = "bundle.unsafe_name"
    BUNDLE_DUPLICATE_ENTRY = "bundle.duplicate_entry"
    BUNDLE_COMPRESSION = "bundle.compression"
    BUNDLE_MEMBER_TOO_LARGE = "bundle.member_too_large"
    BUNDLE_UNPACKED_TOO_LARGE = "bundle.unpacked_too_large"
    BUNDLE_CORRUPT_MEMBER = "bundle.corrupt_member"
    BUNDLE_NO_MANIFEST = "bundle.no_manifest"

    # 2. The manifest as JSON.
    MANIFEST_NOT_JSON = "manifest.not_json"
    MANIFEST_TOO_DEEP = "manifest.too_deep"
    MANIFEST_DUPLICATE_KEY = "manifest.duplicate_key"
    MANIFEST_FORMAT = "manifest.format"
    MANIFEST_SCHEMA = "manifest.schema"

    # 3. The file list.
    FILES_UNLISTED = "files.unlisted"
    FILES_MISSING = "files.missing"
    FILES_DIGEST = "files.digest"
    FILES_UNREFERENCED = "files.unreferenced"

    # 4. The configuration, the log key and the manifest signature.
    GLOBALCONF_INVALID = "globalconf.invalid"
    LOG_KEY_MISMATCH = "log_key.mismatch"
    LOG_KEY_INVALID = "log_key.invalid"
    MANIFEST_SIGNATURE = "manifest.signature"
    WITNESS_KEY = "witness.key"

    # 5. Checkpoints.
    CHECKPOINT_INVALID = "checkpoint.invalid"
    CHECKPOINT_ORDER = "checkpoint.order"
    CHECKPOINT_TIME_BACKWARDS = "checkpoint.time_backwards"
    TREE_NOT_NEWEST = "tree.not_newest"
    CONSISTENCY_MISSING = "consistency.missing"
    CONSISTENCY_INVALID = "consistency.invalid"

    # 6. Records.
    RECORD_ORDER = "record.order"
    RECORD_LEAF_PATH = "record.leaf_path"
    RECORD_UNREADABLE = "record.unreadable"
    RECORD_TIME = "record.time"
    RECORD_IDENTIFIERS = "record.identifiers"
    RECORD_ENDPOINT = "record.endpoint"
    RECORD_SEQUENCE = "record.sequence"
    RECORD_INCLUSION = "record.inclusion"
    RECORD_WITNESSED_BY = "record.witnessed_by"
    RECORD_SIGNATURE = "record.signature"
    RECORD_FINGERPRINT = "record.fingerprint"
    RECORD_BODY_STATE = "record.body_state"
    RECORD_BODY_DIGEST = "record.body_digest"
    RECORD_BINDING = "record.binding"

    # 7. Completeness of a range export.
    RANGE_INVALID = "range.invalid"
    RANGE_MISSING_RECORD = "range.missing_record"
