"""Pair a consumer's and a provider's evidence of the same exchanges.

Both servers log the request and the response of every exchange (one as sent, the other as
received), with the same signed header bytes. :func:`reconcile` verifies both bundles, pairs
their records by client and message id, and reports every exchange present on one side only and
every one whose request or response differs between the sides.

A response present on one side only is named for what it means. Logged as received (by the
consumer) but not by its sender: the provider sent it ahead of its own log commit and that
commit never completed (its log failed, or it stopped first; docs/adr/0038), so the consumer's
caller was refused, not answered. Logged as sent (by the provider) but not received: the
consumer never took it in (its caller gave up, the link broke, or the consumer stopped first;
docs/adr/0009, 0011), so its caller was not answered either.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ruta.evidence.verify import RecordReport, VerificationReport

__all__ = ["Discrepancy", "ReconcileReport", "reconcile"]


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One exchange the two sides do not agree on."""

    client: str
    message_id: str
    problem: str


@dataclass
class ReconcileReport:
    """Outcome of :func:`reconcile`: both verifications, matched exchanges, discrepancies."""

    a: VerificationReport
    b: VerificationReport
    matched: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.a.ok and self.b.ok and not self.discrepancies

    def to_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "a": {"source": self.a.source, "ok": self.a.ok, "failure": self.a.first_failure},
                "b": {"source": self.b.source, "ok": self.b.ok, "failure": self.b.first_failure},
                "matched": self.matched,
                "discrepancies": [asdict(d) for d in self.discrepancies],
            },
            indent=2,
            sort_keys=True,
        )

    def text(self) -> str:
        lines = []
        for side in (self.a, self.b):
            state = "verified" if side.ok else f"FAILED: {side.first_failure}"
            lines.append(f"{side.source}: {side.server} {len(side.records)} records, {state}")
        lines.append(f"exchanges on both sides and identical: {self.matched}")
        lines.extend(f"  {d.client} {d.message_id}: {d.problem}" for d in self.discrepancies)
        lines.append("RESULT: RECONCILED" if self.ok else "RESULT: DIFFERENCES FOUND")
        return "\n".join(lines) + "\n"


def _exchanges(
    report: VerificationReport,
) -> dict[tuple[str, str], dict[str, dict[str, RecordReport]]]:
    """(client, message id) -> kind -> header digest -> record. A message id may carry several
    requests: a caller that retried it after a failure it could not judge (the provider then
    refused the retry as replayed, so only the sender logged it)."""
    out: dict[tuple[str, str], dict[str, dict[str, RecordReport]]] = {}
    for record in report.records:
        if record.message_id:
            kinds = out.setdefault((record.client, record.message_id), {})
            kinds.setdefault(record.kind, {})[record.header_sha256] = record
    return out


def _compare(
    kind: str,
    one: dict[str, RecordReport],
    two: dict[str, RecordReport],
    a: VerificationReport,
    b: VerificationReport,
) -> list[str]:
    if not one or not two:
        present = one or two
        where = a.source if not two else b.source
        if kind == "response":
            directions = {record.direction for record in present.values()}
            if directions == {"received"}:
                return [
                    f"the response is only in {where}, which received it: its sender (the "
                    "provider) never logged it, as when it sends a response ahead of its log "
                    "commit and that commit fails or the provider stops first "
                    "(docs/adr/0038); the consumer answers only once that record is durable, "
                    "so its caller was refused, not answered"
                ]
            if directions == {"sent"}:
                return [
                    f"the response is only in {where}, which sent it: the consumer never "
                    "logged it as received (its caller gave up, the link broke or the "
                    "consumer stopped first; docs/adr/0009), so the caller was not answered"
                ]
        return [f"the {kind} is only in {where}"]
    common = one.keys() & two.keys()
    if not common:
        return [f"the {kind} headers differ between the sides"]
    problems = [
        f"both sides claim to have {one[digest].direction} the {kind}"
        for digest in sorted(common)
        if one[digest].direction == two[digest].direction
    ]
    for extra, side in ((one.keys() - common, a.source), (two.keys() - common, b.source)):
        if extra:
            problems.append(
                f"{len(extra)} more {kind} with this message id only in {side} (a retry the "
                "other side refused?)"
            )
    return problems


def reconcile(a: VerificationReport, b: VerificationReport) -> ReconcileReport:
    """Pair the records of two verified bundles by (client, message id) and compare them."""
    result = ReconcileReport(a=a, b=b)
    left, right = _exchanges(a), _exchanges(b)
    for key in sorted(left.keys() | right.keys()):
        client, message_id = key
        mine, theirs = left.get(key), right.get(key)
        if mine is None or theirs is None:
            side = b.source if mine is None else a.source
            result.discrepancies.append(Discrepancy(client, message_id, f"present only in {side}"))
            continue
        problems = [
            problem
            for kind in sorted(mine.keys() | theirs.keys())
            for problem in _compare(kind, mine.get(kind, {}), theirs.get(kind, {}), a, b)
        ]
        if problems:
            result.discrepancies.append(Discrepancy(client, message_id, "; ".join(problems)))
        else:
            result.matched += 1
    return result
