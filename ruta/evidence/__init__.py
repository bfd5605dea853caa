"""Evidence bundles: the format a security server exports and the offline verifier auditors run.

``ruta audit verify BUNDLE`` needs nothing but this package and the bundle: see
:mod:`ruta.evidence.bundle` for the format, :mod:`ruta.evidence.verify` for what is checked and
:mod:`ruta.evidence.reconcile` for pairing a consumer's and a provider's bundles.
"""

from __future__ import annotations

from ruta.evidence.bundle import (
    FORMAT,
    MAX_BUNDLE_RECORDS,
    BundleCheckpoint,
    BundleConsistency,
    BundleContents,
    BundleError,
    BundleRecord,
    open_bundle,
    write_bundle,
)
from ruta.evidence.reconcile import Discrepancy, ReconcileReport, reconcile
from ruta.evidence.rules import Rule
from ruta.evidence.verify import RecordReport, VerificationReport, request_hash, verify_bundle

__all__ = [
    "FORMAT",
    "MAX_BUNDLE_RECORDS",
    "BundleCheckpoint",
    "BundleConsistency",
    "BundleContents",
    "BundleError",
    "BundleRecord",
    "Discrepancy",
    "ReconcileReport",
    "RecordReport",
    "Rule",
    "VerificationReport",
    "open_bundle",
    "reconcile",
    "request_hash",
    "verify_bundle",
    "write_bundle",
]
